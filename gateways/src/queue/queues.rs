//! Task queues: listing and getting them, their pending and claimed counts (one or a batch)
//! and the pending and claimed listings; the deprecated pendingTasks.

use super::call::*;
use super::json::task_json;
use crate::error::ApiError;
use crate::hawk::Auth;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::ids::TaskQueueId;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_projections::queue_view::{ClaimRecord, TaskQueueRecord};
use taskledger_projections::{keys, QueueView};

type St = State<Arc<AppState>>;

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

pub(super) fn all_queues(st: &AppState) -> Result<Vec<(String, TaskQueueRecord)>, ApiError> {
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
pub(crate) fn offset_page<T: Clone>(
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

pub(super) fn paged(mut v: Value, token: Option<String>) -> Response {
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

/// The sub-resource a `/task-queues/<rest>` path names, told apart on the raw path: clients
/// send the task queue id as one `%2F`-encoded segment, so `p%2Fpending` is getTaskQueue of
/// `p/pending`, and only a raw `/counts`, `/pending` or `/claimed` after it is a sub-resource.
fn sub_resource<'r>(uri: &Uri, rest: &'r str) -> Option<(&'r str, &'static str)> {
    let raw = uri.path().split_once("/task-queues/")?.1;
    let raw = raw.strip_suffix('/').unwrap_or(raw);
    let (_, last) = raw.rsplit_once('/')?;
    let name = ["counts", "pending", "claimed"]
        .into_iter()
        .find(|n| *n == last)?;
    Some((rest.strip_suffix(name)?.strip_suffix('/')?, name))
}

/// `/task-queues/<rest>`: getTaskQueue, or the counts, pending and claimed sub-resources.
pub async fn task_queue_routes(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(rest): Path<String>,
    uri: Uri,
) -> Response {
    // one trailing `/` is optional, as on every route (the wildcard would keep it)
    let rest = rest.strip_suffix('/').unwrap_or(&rest).to_string();
    let sub = sub_resource(&uri, &rest);
    if let Some((queue, "counts")) = sub {
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
    if let Some((queue, "pending")) = sub {
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
                    "task": task_json(t), "inserted": inserted.to_rfc3339(),
                }))
            },
        };
        return list.answer(&st, &auth, &uri, queue).await;
    }
    if let Some((queue, "claimed")) = sub {
        let list = QueueList {
            name: "listClaimedTasks",
            scope: "claimed-list",
            cf: keys::CF_CLAIMS,
            render: |t, run_id, value| {
                let c: ClaimRecord = QueueView::decode(value)?;
                Ok(json!({
                    "taskId": t.task_id.to_string(), "runId": run_id,
                    "workerGroup": c.worker_group, "workerId": c.worker_id,
                    "claimed": c.claimed.to_rfc3339(), "task": task_json(t),
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
            let ids = counts_request(&body.input()?)?;
            let mut required = Vec::new();
            for id in &ids {
                required.push(s(format!("queue:pending-count:{id}")));
                required.push(s(format!("queue:claimed-count:{id}")));
            }
            caller.require(&ScopeExpr::all(required))?;
            let mut out = Vec::with_capacity(ids.len());
            for q in &ids {
                let (pending, claimed) = counts(&st, q)?;
                out.push(json!({
                    "provisionerId": q.provisioner_id(), "workerType": q.worker_type(),
                    "taskQueueId": q.as_str(), "pendingTasks": pending, "claimedTasks": claimed,
                }));
            }
            Ok(ok(json!({ "taskQueueCounts": out })))
        })
        .await
}

const COUNTS_REQUEST_SCHEMA: &str = "/schemas/queue/v1/task-queue-counts-request.json#";

/// taskQueueCountsBatch's body, checked as its schema does (an object of `taskQueueIds` only:
/// up to 1,000 distinct task queue ids) before any scope is asked for.
fn counts_request(body: &Value) -> Result<Vec<TaskQueueId>, ApiError> {
    let fail = |msg: String| ApiError::validation(COUNTS_REQUEST_SCHEMA, &[msg]);
    let obj = object_with_only(body, COUNTS_REQUEST_SCHEMA, "taskQueueIds")?;
    let items = match obj.get("taskQueueIds") {
        None => {
            return Err(fail(
                "data should have required property 'taskQueueIds'".into(),
            ))
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(fail("data.taskQueueIds should be array".into())),
    };
    if items.len() > 1000 {
        return Err(fail(
            "data.taskQueueIds should NOT have more than 1000 items".into(),
        ));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item
            .as_str()
            .ok_or_else(|| fail(format!("data.taskQueueIds[{i}] should be string")))?;
        let q = id.parse::<TaskQueueId>().map_err(|_| {
            fail(format!(
                "data.taskQueueIds[{i}] should match pattern \"{TASK_QUEUE_RE}\""
            ))
        })?;
        ids.push(q);
    }
    if let Some((later, i)) = repeated_item(ids.iter().map(TaskQueueId::as_str).enumerate()) {
        return Err(fail(format!(
            "data.taskQueueIds should NOT have duplicate items (items ## {later} and {i} are identical)"
        )));
    }
    Ok(ids)
}
