//! Provisioners, worker types and workers: their listings and records, quarantine and
//! declareWorker.

use super::call::*;
use super::json::Checks;
use super::queues::{all_queues, offset_page, paged};
use crate::error::{ApiError, ErrorCode};
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
use taskledger_projections::queue_view::{TaskQueueRecord, WorkerRecord};
use taskledger_projections::{keys, QueueCommand, QueueView};

type St = State<Arc<AppState>>;

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

pub(crate) fn worker_summary(g: &str, id: &str, w: &WorkerRecord, now: Millis) -> Value {
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
        let want = quarantined_filter(&q)?;
        let all: Vec<Value> = live_workers(&st, &p, &w, want, now)?
            .iter()
            .map(|(g, id, r)| worker_summary(g, id, r, now))
            .collect();
        let (page, token) = offset_page(&all, &q)?;
        Ok(paged(json!({ "workers": page }), token))
    })
    .await
}

/// The `quarantined` query value: `true`, `false` or absent.
pub(crate) fn quarantined_filter(
    q: &std::collections::HashMap<String, String>,
) -> Result<Option<bool>, ApiError> {
    match q.get("quarantined").map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            format!("Query-string parameter: quarantined=\"{other}\" does not match expression: /^(true|false)$/"),
        )),
    }
}

/// The live workers of task queue `p/w` (quarantined or not, as `want` says), in (group, id)
/// order: what listWorkers lists, in the queue and in the worker-manager.
pub(crate) fn live_workers(
    st: &AppState,
    p: &str,
    w: &str,
    want: Option<bool>,
    now: Millis,
) -> Result<Vec<(String, String, WorkerRecord)>, ApiError> {
    Ok(workers_of(st, &format!("{p}/{w}"))?
        .into_iter()
        .filter(|(_, _, r)| want.is_none_or(|want| want == r.quarantined(now)) && r.live(now))
        .collect())
}

/// The worker getWorker shows, or None: a worker outlives its expiry while quarantined, but
/// not its task queue's (as upstream).
pub(crate) fn live_worker(
    st: &AppState,
    queue: &str,
    g: &str,
    id: &str,
    now: Millis,
) -> Result<Option<WorkerRecord>, ApiError> {
    let view = st.engine.view();
    let Some(r) = view.worker(queue, g, id)?.filter(|r| r.live(now)) else {
        return Ok(None);
    };
    let queue_live = view.task_queue(queue)?.is_some_and(|q| q.expires > now);
    Ok(queue_live.then_some(r))
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

pub(crate) fn worker_full(p: &str, w: &str, g: &str, id: &str, r: &WorkerRecord) -> Value {
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
        let r =
            live_worker(&st, &format!("{p}/{w}"), &g, &id, Millis::now())?.ok_or_else(|| {
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
        let (until, info) = quarantine_request(&body)?;
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
            by: caller.actor_id(),
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
pub(crate) fn worker_not_found(p: &str, w: &str, g: &str, id: &str) -> String {
    format!(
        "Worker with workerId `{id}`, workerGroup `{g}`,worker-type `{w}` and provisionerId `{p}` not found."
    )
}

/// The four identifiers of a worker route, each 1 to 38 of `[a-zA-Z0-9-_]`.
pub(crate) fn worker_params(p: &str, w: &str, g: &str, id: &str) -> Result<(), ApiError> {
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

/// quarantineWorker's body, checked as its schema does: an object of `quarantineUntil` (a
/// date-time, required) and `quarantineInfo` (a string of at most 4,000 characters; upstream
/// stores `[unspecified]` without one), every error listed.
fn quarantine_request(body: &Value) -> Result<(Millis, String), ApiError> {
    const SCHEMA: &str = "/schemas/queue/v1/quarantine-worker-request.json#";
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::validation(SCHEMA, &["data should be object".into()]))?;
    let mut c = Checks::default();
    for k in obj.keys() {
        if k != "quarantineUntil" && k != "quarantineInfo" {
            c.fail(format!(
                "data should NOT have additional properties: {}",
                Value::from(k.as_str())
            ));
        }
    }
    let until = c.string(obj, "quarantineUntil", true).and_then(|u| {
        let t = Millis::parse_rfc3339(u);
        if t.is_none() {
            c.fail("data.quarantineUntil should match format \"date-time\"".into());
        }
        t
    });
    let info = c.string(obj, "quarantineInfo", false).map(str::to_string);
    if info.as_ref().is_some_and(|i| i.chars().count() > 4000) {
        c.fail("data.quarantineInfo should NOT be longer than 4000 characters".into());
    }
    c.finish(SCHEMA)?;
    let until = until.ok_or_else(|| ApiError::internal("a checked date is missing"))?;
    Ok((until, info.unwrap_or_else(|| "[unspecified]".into())))
}
