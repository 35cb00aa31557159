//! Task queues, provisioners, worker types, workers, counts and pending/claimed listings.

use super::call::*;
use super::json::task_json;
use crate::error::ApiError;
use crate::hawk::actor;
use crate::hawk::Auth;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use taskledger_core::ids::TaskQueueId;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_projections::queue_view::{ClaimRecord, TaskQueueRecord, WorkerRecord};
use taskledger_projections::{keys, QueueCommand, QueueView};

type St = State<Arc<AppState>>;

fn s(scope: String) -> ScopeExpr {
    ScopeExpr::scope(scope)
}

fn counts(st: &AppState, q: &TaskQueueId) -> Result<(usize, usize), ApiError> {
    let view = st.engine.view();
    Ok((
        view.count(keys::CF_PENDING, q.as_str())?,
        view.count(keys::CF_CLAIMS, q.as_str())?,
    ))
}

pub async fn pending_tasks(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(queue): Path<String>,
) -> Response {
    Call::new("pendingTasks", json!({ "taskQueueId": queue }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:pending-count:{queue}")))?;
            let q = queue_param(&queue)?;
            no_query(&uri)?;
            let (pending, _) = counts(&st, &q)?;
            Ok(ok(json!({
                "provisionerId": q.provisioner_id(), "workerType": q.worker_type(),
                "taskQueueId": q.as_str(), "pendingTasks": pending,
            })))
        })
        .await
}

fn all_queues(st: &AppState) -> Result<Vec<(String, TaskQueueRecord)>, ApiError> {
    let rows = st
        .engine
        .view()
        .scan(keys::CF_TASK_QUEUES, b"", None, usize::MAX)?;
    let now = Millis::now();
    let mut out = Vec::new();
    for (k, v) in rows {
        let r: TaskQueueRecord = QueueView::decode(&v)?;
        if r.expires > now {
            out.push((String::from_utf8_lossy(&k).into_owned(), r));
        }
    }
    Ok(out)
}

fn queue_json(id: &str, r: &TaskQueueRecord) -> Value {
    json!({
        "taskQueueId": id, "expires": r.expires.to_rfc3339(), "lastDateActive": r.last_date_active.to_rfc3339(),
        "description": "", "stability": "experimental",
    })
}

/// An offset page over an in-memory list; the token is the offset.
fn offset_page<T: Clone>(
    items: &[T],
    q: &std::collections::HashMap<String, String>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match decode_token(q)? {
        Some(t) => String::from_utf8(t)
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            .ok_or_else(|| ApiError::input("Invalid continuation token"))?,
        None => 0,
    };
    let lim = limit(q);
    let page: Vec<T> = items.iter().skip(start).take(lim).cloned().collect();
    // a client's token may be any number: the next page's start saturates
    let next = start.saturating_add(lim);
    let token = (next < items.len()).then(|| encode_token(next.to_string().as_bytes()));
    Ok((page, token))
}

fn paged(mut v: Value, token: Option<String>) -> Response {
    if let Some(t) = token {
        v["continuationToken"] = json!(t);
    }
    ok(v)
}

pub async fn list_task_queues(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
    Call::new("listTaskQueues", json!({}))
        .run(async {
            auth.caller()?
                .require(&s("queue:list-task-queues".into()))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let queues: Vec<Value> = all_queues(&st)?
                .iter()
                .map(|(id, r)| queue_json(id, r))
                .collect();
            let (page, token) = offset_page(&queues, &q)?;
            Ok(paged(json!({ "taskQueues": page }), token))
        })
        .await
}

/// `/task-queues/<rest>`: getTaskQueue, or the counts, pending and claimed sub-resources.
pub async fn task_queue_routes(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(rest): Path<String>,
    uri: Uri,
) -> Response {
    if let Some(queue) = rest.strip_suffix("/counts") {
        let call = Call::new("taskQueueCounts", json!({ "taskQueueId": queue }));
        return call.run(async {
            auth.caller()?.require(&ScopeExpr::all(vec![
                s(format!("queue:pending-count:{queue}")),
                s(format!("queue:claimed-count:{queue}")),
            ]))?;
            let q = queue_param(queue)?;
            no_query(&uri)?;
            let (pending, claimed) = counts(&st, &q)?;
            Ok(ok(json!({
                "provisionerId": q.provisioner_id(), "workerType": q.worker_type(), "taskQueueId": q.as_str(),
                "pendingTasks": pending, "claimedTasks": claimed,
            })))
        }).await;
    }
    if let Some(queue) = rest.strip_suffix("/pending") {
        let list = QueueList {
            name: "listPendingTasks",
            scope: "pending-list",
            cf: keys::CF_PENDING,
            render: |t, run_id, _| {
                let inserted = t
                    .runs
                    .get(run_id as usize)
                    .map(|r| r.scheduled)
                    .unwrap_or_default();
                Ok(json!({
                    "taskId": t.task_id.to_string(), "runId": run_id,
                    "task": task_json(&t.definition), "inserted": inserted.to_rfc3339(),
                }))
            },
        };
        return list.answer(&st, &auth, &uri, queue).await;
    }
    if let Some(queue) = rest.strip_suffix("/claimed") {
        let list = QueueList {
            name: "listClaimedTasks",
            scope: "claimed-list",
            cf: keys::CF_CLAIMS,
            render: |t, run_id, value| {
                let c: ClaimRecord = QueueView::decode(value)?;
                Ok(json!({
                    "taskId": t.task_id.to_string(), "runId": run_id,
                    "workerGroup": c.worker_group, "workerId": c.worker_id,
                    "claimed": c.claimed.to_rfc3339(), "task": task_json(&t.definition),
                }))
            },
        };
        return list.answer(&st, &auth, &uri, queue).await;
    }
    Call::new("getTaskQueue", json!({ "taskQueueId": rest }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:get-task-queue:{rest}")))?;
            let q = queue_param(&rest)?;
            no_query(&uri)?;
            let found = all_queues(&st)?
                .into_iter()
                .find(|(id, _)| id == q.as_str());
            let (id, r) = found.ok_or_else(|| {
                ApiError::not_found(format!(
                    "Task queue with `{q}` not found. Are you sure it was created?"
                ))
            })?;
            Ok(ok(queue_json(&id, &r)))
        })
        .await
}

/// listPendingTasks and listClaimedTasks: a task queue's entries in one of the run index's
/// column families, in key order, paged by key, each rendered with its task.
struct QueueList {
    name: &'static str,
    /// `queue:<scope>:<taskQueueId>`
    scope: &'static str,
    cf: &'static str,
    /// The entry of a task's run, from the task and the index entry's value.
    render: fn(&taskledger_core::queue::Task, u32, &[u8]) -> Result<Value, ApiError>,
}

impl QueueList {
    async fn answer(self, st: &AppState, auth: &Auth, uri: &Uri, queue: &str) -> Response {
        let params = json!({ "taskQueueId": queue });
        Call::new(self.name, params)
            .run(async {
                auth.caller()?
                    .require(&s(format!("queue:{}:{queue}", self.scope)))?;
                let q = queue_param(queue)?;
                let qs = query(uri, &["continuationToken", "limit"])?;
                let prefix = keys::queue_prefix(q.as_str());
                // a token from elsewhere starts again too
                let after = keyset_token(&qs).filter(|k| k.starts_with(&prefix));
                let lim = limit(&qs);
                let view = st.engine.view();
                let rows = view.scan(self.cf, &prefix, after.as_deref(), lim + 1)?;
                let mut out = Vec::new();
                for (k, v) in rows.iter().take(lim) {
                    let Some((task_id, run_id)) = keys::task_run_suffix(k) else {
                        continue;
                    };
                    if let Some(t) = view.task(&task_id)? {
                        out.push((self.render)(&t, run_id, v)?);
                    }
                }
                let token = (rows.len() > lim).then(|| encode_token(&rows[lim - 1].0));
                Ok(paged(json!({ "tasks": out }), token))
            })
            .await
    }
}

pub async fn task_queue_counts_batch(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("taskQueueCountsBatch", json!({}))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            no_query(&uri)?;
            let body = body.input()?;
            let ids: Vec<String> = body
                .get("taskQueueIds")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .ok_or_else(|| {
                    ApiError::validation(
                        "/schemas/queue/v1/task-queue-counts-request.json#",
                        &["data should have required property 'taskQueueIds'".into()],
                    )
                })?;
            let mut required = Vec::new();
            for id in &ids {
                required.push(s(format!("queue:pending-count:{id}")));
                required.push(s(format!("queue:claimed-count:{id}")));
            }
            caller.require(&ScopeExpr::all(required))?;
            let mut out = Vec::new();
            // a queue named twice is counted once
            let mut counted: std::collections::HashMap<&str, (usize, usize)> =
                std::collections::HashMap::new();
            for id in &ids {
                let (pending, claimed) = match counted.get(id.as_str()) {
                    Some(c) => *c,
                    None => {
                        let c = counts(&st, &queue_param(id)?)?;
                        *counted.entry(id.as_str()).or_insert(c)
                    }
                };
                out.push(
                    json!({ "taskQueueId": id, "pendingTasks": pending, "claimedTasks": claimed }),
                );
            }
            Ok(ok(json!({ "counts": out })))
        })
        .await
}

/// Provisioners: the distinct first halves of live task queues.
fn provisioners(st: &AppState) -> Result<BTreeMap<String, (Millis, Millis)>, ApiError> {
    let mut out: BTreeMap<String, (Millis, Millis)> = BTreeMap::new();
    for (id, r) in all_queues(st)? {
        let p = id.split('/').next().unwrap_or("").to_string();
        let e = out.entry(p).or_insert((r.expires, r.last_date_active));
        e.0 = e.0.max(r.expires);
        e.1 = e.1.max(r.last_date_active);
    }
    Ok(out)
}

fn provisioner_json(p: &str, (expires, last): (Millis, Millis)) -> Value {
    json!({ "provisionerId": p, "expires": expires.to_rfc3339(), "lastDateActive": last.to_rfc3339(), "description": "", "stability": "experimental" })
}

pub async fn list_provisioners(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
    Call::new("listProvisioners", json!({}))
        .run(async {
            auth.caller()?
                .require(&s("queue:list-provisioners".into()))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let all: Vec<Value> = provisioners(&st)?
                .into_iter()
                .map(|(p, t)| provisioner_json(&p, t))
                .take(limit(&q))
                .collect();
            Ok(ok(json!({ "provisioners": all })))
        })
        .await
}

pub async fn get_provisioner(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(p): Path<String>,
) -> Response {
    Call::new("getProvisioner", json!({ "provisionerId": p }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:get-provisioner:{p}")))?;
            ident_param("provisionerId", &p)?;
            no_query(&uri)?;
            let all = provisioners(&st)?;
            let t = all.get(&p).ok_or_else(|| {
                ApiError::not_found(format!(
                    "Provisioner `{p}` not found. Are you sure it was created?"
                ))
            })?;
            let mut provisioner = provisioner_json(&p, *t);
            provisioner["actions"] = json!([]);
            Ok(ok(provisioner))
        })
        .await
}

fn worker_type_json(id: &str, r: &TaskQueueRecord) -> Value {
    let (p, w) = id.split_once('/').unwrap_or((id, ""));
    json!({
        "provisionerId": p, "workerType": w, "taskQueueId": id, "expires": r.expires.to_rfc3339(),
        "lastDateActive": r.last_date_active.to_rfc3339(), "description": "", "stability": "experimental",
    })
}

pub async fn list_worker_types(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(p): Path<String>,
    uri: Uri,
) -> Response {
    Call::new("listWorkerTypes", json!({ "provisionerId": p }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:list-worker-types:{p}")))?;
            ident_param("provisionerId", &p)?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let prefix = format!("{p}/");
            let all: Vec<Value> = all_queues(&st)?
                .iter()
                .filter(|(id, _)| id.starts_with(&prefix))
                .map(|(id, r)| worker_type_json(id, r))
                .collect();
            let (page, token) = offset_page(&all, &q)?;
            Ok(paged(json!({ "workerTypes": page }), token))
        })
        .await
}

pub async fn get_worker_type(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w)): Path<(String, String)>,
) -> Response {
    Call::new(
        "getWorkerType",
        json!({ "provisionerId": p, "workerType": w }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("queue:get-worker-type:{p}/{w}")))?;
        ident_param("provisionerId", &p)?;
        ident_param("workerType", &w)?;
        no_query(&uri)?;
        let id = format!("{p}/{w}");
        let found = all_queues(&st)?.into_iter().find(|(q, _)| *q == id);
        let (id, r) = found.ok_or_else(|| {
            ApiError::not_found(format!(
                "Worker-type `{w}` with Provisioner `{p}` not found. Are you sure it was created?"
            ))
        })?;
        let mut worker_type = worker_type_json(&id, &r);
        worker_type["actions"] = json!([]);
        Ok(ok(worker_type))
    })
    .await
}

fn workers_of(st: &AppState, queue: &str) -> Result<Vec<(String, String, WorkerRecord)>, ApiError> {
    let rows = st.engine.view().scan(
        keys::CF_WORKERS,
        &keys::queue_prefix(queue),
        None,
        usize::MAX,
    )?;
    let mut out = Vec::new();
    for (k, v) in rows {
        let parts: Vec<&[u8]> = k.split(|b| *b == 0).collect();
        if parts.len() >= 3 {
            let w: WorkerRecord = QueueView::decode(&v)?;
            out.push((
                String::from_utf8_lossy(parts[1]).into_owned(),
                String::from_utf8_lossy(parts[2]).into_owned(),
                w,
            ));
        }
    }
    Ok(out)
}

fn worker_summary(g: &str, id: &str, w: &WorkerRecord, now: Millis) -> Value {
    let mut v =
        json!({ "workerGroup": g, "workerId": id, "firstClaim": w.first_claim.to_rfc3339() });
    if let Some(l) = w.last_date_active {
        v["lastDateActive"] = json!(l.to_rfc3339());
    }
    if let Some((t, r)) = w.recent_tasks.last() {
        v["latestTask"] = json!({ "taskId": t.to_string(), "runId": r });
    }
    if let Some(q) = w.quarantine_until.filter(|q| *q > now) {
        v["quarantineUntil"] = json!(q.to_rfc3339());
    }
    v
}

pub async fn list_workers(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    Call::new(
        "listWorkers",
        json!({ "provisionerId": p, "workerType": w }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("queue:list-workers:{p}/{w}")))?;
        ident_param("provisionerId", &p)?;
        ident_param("workerType", &w)?;
        let q = query(&uri, &["continuationToken", "limit", "quarantined"])?;
        let now = Millis::now();
        let want = q.get("quarantined").map(|v| v == "true");
        let all: Vec<Value> = workers_of(&st, &format!("{p}/{w}"))?
            .iter()
            .filter(|(_, _, r)| want.is_none_or(|want| want == r.quarantined(now)) && r.live(now))
            .map(|(g, id, r)| worker_summary(g, id, r, now))
            .collect();
        let (page, token) = offset_page(&all, &q)?;
        Ok(paged(json!({ "workers": page }), token))
    })
    .await
}

/// A never-quarantined worker's `quarantineUntil`: upstream creates every worker with one ten
/// years before its first sighting, so the field is always a date (Postgres' interval
/// arithmetic, like chrono's months, turns Feb 29 into Feb 28).
fn never_quarantined(first_claim: Millis) -> Millis {
    let first = first_claim.to_datetime();
    first
        .checked_sub_months(chrono::Months::new(120))
        .map_or(first_claim, Millis::from)
}

fn worker_full(p: &str, w: &str, g: &str, id: &str, r: &WorkerRecord) -> Value {
    let quarantine_until = r
        .quarantine_until
        .unwrap_or_else(|| never_quarantined(r.first_claim));
    let mut v = json!({
        "provisionerId": p, "workerType": w, "taskQueueId": format!("{p}/{w}"), "workerGroup": g, "workerId": id,
        "recentTasks": r.recent_tasks.iter().map(|(t, run)| json!({ "taskId": t.to_string(), "runId": run })).collect::<Vec<_>>(),
        "expires": r.expires.to_rfc3339(), "firstClaim": r.first_claim.to_rfc3339(),
        "quarantineUntil": quarantine_until.to_rfc3339(),
        "actions": [],
    });
    if let Some(l) = r.last_date_active {
        v["lastDateActive"] = json!(l.to_rfc3339());
    }
    v
}

pub async fn get_worker(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w, g, id)): Path<(String, String, String, String)>,
) -> Response {
    Call::new(
        "getWorker",
        json!({ "provisionerId": p, "workerType": w, "workerGroup": g, "workerId": id }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("queue:get-worker:{p}/{w}/{g}/{id}")))?;
        worker_params(&p, &w, &g, &id)?;
        no_query(&uri)?;
        let now = Millis::now();
        let queue = format!("{p}/{w}");
        let view = st.engine.view();
        // as upstream: a worker outlives its expiry while quarantined, but not its task queue's
        let queue_live = || -> Result<bool, ApiError> {
            Ok(view.task_queue(&queue)?.is_some_and(|r| r.expires > now))
        };
        let r = view
            .worker(&queue, &g, &id)?
            .filter(|r| r.live(now))
            .map(|r| queue_live().map(|live| live.then_some(r)))
            .transpose()?
            .flatten()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "{} Are you sure it was created?",
                    worker_not_found(&p, &w, &g, &id)
                ))
            })?;
        Ok(ok(worker_full(&p, &w, &g, &id, &r)))
    })
    .await
}

pub async fn quarantine_worker(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w, g, id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(
        "quarantineWorker",
        json!({ "provisionerId": p, "workerType": w, "workerGroup": g, "workerId": id }),
    )
    .with_body(&headers, &body)
    .run(async {
        let body = auth.body()?;
        let caller = auth.caller()?;
        caller.require(&s(format!("queue:quarantine-worker:{p}/{w}/{g}/{id}")))?;
        worker_params(&p, &w, &g, &id)?;
        no_query(&uri)?;
        let body = body.input()?;
        let schema = "/schemas/queue/v1/quarantine-worker-request.json#";
        let until = body
            .get("quarantineUntil")
            .and_then(|v| v.as_str())
            .and_then(Millis::parse_rfc3339)
            .ok_or_else(|| {
                ApiError::validation(
                    schema,
                    &["data.quarantineUntil should match format \"date-time\"".into()],
                )
            })?;
        let info = body
            .get("quarantineInfo")
            .and_then(|v| v.as_str())
            .unwrap_or("[unspecified]")
            .to_string();
        if info.chars().count() > 4000 {
            return Err(ApiError::validation(
                schema,
                &["data.quarantineInfo should NOT be longer than 4000 characters".into()],
            ));
        }
        let not_found = || ApiError::not_found(worker_not_found(&p, &w, &g, &id));
        let queue = TaskQueueId::new(&p, &w).map_err(|_| not_found())?;
        if st.engine.view().worker(queue.as_str(), &g, &id)?.is_none() {
            return Err(not_found());
        }
        let cmd = QueueCommand::QuarantineWorker {
            task_queue_id: queue.clone(),
            worker_group: g.clone(),
            worker_id: id.clone(),
            until,
            info,
        };
        st.engine.execute(actor(caller), cmd).await?;
        let r = st
            .engine
            .view()
            .worker(queue.as_str(), &g, &id)?
            .ok_or_else(not_found)?;
        Ok(ok(worker_full(&p, &w, &g, &id, &r)))
    })
    .await
}

/// Upstream's 404 text for a worker (getWorker adds a question).
fn worker_not_found(p: &str, w: &str, g: &str, id: &str) -> String {
    format!(
        "Worker with workerId `{id}`, workerGroup `{g}`,worker-type `{w}` and provisionerId `{p}` not found."
    )
}

/// The four identifiers of a worker route, each 1 to 38 of `[a-zA-Z0-9-_]`.
fn worker_params(p: &str, w: &str, g: &str, id: &str) -> Result<(), ApiError> {
    for (n, v) in [
        ("provisionerId", p),
        ("workerType", w),
        ("workerGroup", g),
        ("workerId", id),
    ] {
        ident_param(n, v)?;
    }
    Ok(())
}

/// declareWorker: creates or extends the worker and its task queue; one scope per body
/// property (`queue:declare-worker:<p>/<w>/<g>/<id>#<property>`).
pub async fn declare_worker(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w, g, id)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(
        "declareWorker",
        json!({ "provisionerId": p, "workerType": w, "workerGroup": g, "workerId": id }),
    )
    .with_body(&headers, &body)
    .run(async {
        let body = auth.body()?;
        let caller = auth.caller()?;
        worker_params(&p, &w, &g, &id)?;
        no_query(&uri)?;
        let body = body.input()?;
        let schema = "/schemas/queue/v1/update-worker-request.json#";
        let obj = object_with_only(&body, schema, "expires")?;
        caller.require(&ScopeExpr::all(
            obj.keys()
                .map(|k| s(format!("queue:declare-worker:{p}/{w}/{g}/{id}#{k}")))
                .collect(),
        ))?;
        let queue = TaskQueueId::new(&p, &w)
            .map_err(|e| ApiError::input(format!("invalid task queue {p}/{w}: {e}")))?;
        // (none given: the engine keeps a live worker's, as upstream's coalesce)
        let expires = match obj.get("expires") {
            None => None,
            Some(v) => Some(v.as_str().and_then(Millis::parse_rfc3339).ok_or_else(|| {
                ApiError::validation(
                    schema,
                    &["data.expires should match format \"date-time\"".into()],
                )
            })?),
        };
        let cmd = QueueCommand::DeclareWorker {
            task_queue_id: queue.clone(),
            worker_group: g.clone(),
            worker_id: id.clone(),
            expires,
        };
        st.engine.execute(actor(caller), cmd).await?;
        let r = st
            .engine
            .view()
            .worker(queue.as_str(), &g, &id)?
            .ok_or_else(|| ApiError::not_found(worker_not_found(&p, &w, &g, &id)))?;
        Ok(ok(worker_full(&p, &w, &g, &id, &r)))
    })
    .await
}
