//! Run endpoints: claimWork, claimTask, reclaimTask and the three reports.

use super::call::*;
use super::json::{Checks, TaskJson};
use super::tasks::*;
use crate::error::ApiError;
use crate::hawk::{actor, Auth};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::queue::json::StatusJson;
use taskledger_core::queue::{ReasonResolved, Task};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Rfc3339;
use taskledger_projections::{Outcome, QueueCommand};

/// One claimed run as claimWork and claimTask answer it (keys in sorted order, as elsewhere).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Claimed<'a> {
    credentials: CredentialsJson,
    run_id: u32,
    status: StatusJson<'a>,
    taken_until: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<TaskJson<'a>>,
    worker_group: String,
    worker_id: String,
}

fn claim_json<'a>(st: &AppState, task: &'a Task, run_id: u32, with_task: bool) -> Claimed<'a> {
    let run = &task.runs[run_id as usize];
    let taken_until = run.taken_until.unwrap_or_default();
    let wg = run.worker_group.clone().unwrap_or_default();
    let wi = run.worker_id.clone().unwrap_or_default();
    let client_id = format!(
        "task-client/{}/{run_id}/on/{wg}/{wi}/until/{}",
        task.task_id,
        unix_seconds(taken_until)
    );
    let mut scopes = vec![
        format!("queue:reclaim-task:{}/{run_id}", task.task_id),
        format!("queue:resolve-task:{}/{run_id}", task.task_id),
        format!("queue:create-artifact:{}/{run_id}", task.task_id),
    ];
    scopes.extend(task.definition.scopes.iter().cloned());
    Claimed {
        credentials: credentials(st, &client_id, &scopes, taken_until),
        run_id,
        status: StatusJson(task),
        taken_until: taken_until.rfc3339(),
        task: with_task.then_some(TaskJson::of(task)),
        worker_group: wg,
        worker_id: wi,
    }
}

/// The worker of a claimWork or claimTask body, checked as their schemas do (an object of
/// `workerGroup` and `workerId`, identifiers, and for claimWork `tasks`, 1 to 32, by default
/// 1; nothing else), every error listed. The number of tasks is 1 for claimTask.
fn claim_request(
    body: &Value,
    schema: &str,
    with_tasks: bool,
) -> Result<(String, String, usize), ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::validation(schema, &["data should be object".into()]))?;
    let mut c = Checks::default();
    for k in obj.keys() {
        if k != "workerGroup" && k != "workerId" && !(with_tasks && k == "tasks") {
            c.fail(format!(
                "data should NOT have additional properties: {}",
                Value::from(k.as_str())
            ));
        }
    }
    let ident = |c: &mut Checks, key: &str| -> Option<String> {
        let v = c.string(obj, key, true)?;
        c.identifier(|| format!("data.{key}"), v);
        Some(v.to_string())
    };
    let group = ident(&mut c, "workerGroup");
    let id = ident(&mut c, "workerId");
    let mut tasks = 1;
    if let Some(v) = obj.get("tasks").filter(|_| with_tasks) {
        match v.as_f64() {
            Some(n) if v.is_i64() || v.is_u64() || n.fract() == 0.0 => {
                if n < 1.0 {
                    c.fail("data.tasks should be >= 1".into());
                } else if n > 32.0 {
                    c.fail("data.tasks should be <= 32".into());
                } else {
                    tasks = n as usize;
                }
            }
            _ => c.fail("data.tasks should be integer".into()),
        }
    }
    c.finish(schema)?;
    match (group, id) {
        (Some(g), Some(w)) => Ok((g, w, tasks)),
        _ => Err(ApiError::internal("checked worker fields are missing")),
    }
}

pub async fn claim_work(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_queue_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("claimWork", json!({ "taskQueueId": task_queue_id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let queue = queue_param(&task_queue_id)?;
            no_query(&uri)?;
            let body = body.input()?;
            let schema = "/schemas/queue/v1/claim-work-request.json#";
            let (wg, wi, max) = claim_request(&body, schema, true)?;
            caller.require(&ScopeExpr::all(vec![
                s(format!("queue:claim-work:{queue}")),
                s(format!("queue:worker-id:{wg}/{wi}")),
            ]))?;
            let deadline = tokio::time::Instant::now() + st.claim_work_poll;
            let notify = st.engine.pending_notify();
            loop {
                // register for wake-ups before looking, so a task made pending meanwhile wakes us
                let woken = notify.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let cmd = QueueCommand::ClaimWork {
                    task_queue_id: queue.clone(),
                    worker_group: wg.clone(),
                    worker_id: wi.clone(),
                    max,
                };
                let claims = match st.engine.execute(actor(caller), cmd).await? {
                    Outcome::Claims(c) => c,
                    other @ (Outcome::Task(_)
                    | Outcome::Group(_)
                    | Outcome::Artifact(_)
                    | Outcome::Done) => {
                        return Err(ApiError::internal(format!(
                            "unexpected outcome: {}",
                            other.kind()
                        )))
                    }
                };
                if !claims.is_empty() {
                    #[derive(serde::Serialize)]
                    struct Tasks<'a> {
                        tasks: Vec<Claimed<'a>>,
                    }
                    let tasks = claims
                        .iter()
                        .map(|(t, r)| claim_json(&st, t, *r, true))
                        .collect();
                    return Ok(ok_json(&Tasks { tasks }));
                }
                if tokio::time::timeout_at(deadline, woken).await.is_err() {
                    return Ok(ok(json!({ "tasks": [] })));
                }
            }
        })
        .await
}

pub async fn claim_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("claimTask", json!({ "taskId": task_id, "runId": run_id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let id = slug_param("taskId", &task_id)?;
            let run = run_param(&run_id)?;
            no_query(&uri)?;
            let schema = "/schemas/queue/v1/task-claim-request.json#";
            let (wg, wi, _) = claim_request(&body.input()?, schema, false)?;
            let t = load(&st, "claimTask", &id)?;
            caller.require(&ScopeExpr::all(vec![
                s(format!("queue:claim-task:{}", t.definition.task_queue_id)),
                s(format!("queue:worker-id:{wg}/{wi}")),
            ]))?;
            let command = QueueCommand::ClaimTask {
                task_id: id,
                run_id: run,
                worker_group: wg,
                worker_id: wi,
            };
            match st.engine.execute(actor(caller), command).await? {
                Outcome::Task(t) => Ok(ok_json(&claim_json(&st, &t, run, true))),
                // a quarantined worker: no claim
                Outcome::Claims(none) if none.is_empty() => Ok(ok(json!({}))),
                other @ (Outcome::Claims(_)
                | Outcome::Group(_)
                | Outcome::Artifact(_)
                | Outcome::Done) => Err(ApiError::internal(format!(
                    "unexpected outcome: {}",
                    other.kind()
                ))),
            }
        })
        .await
}

pub async fn reclaim_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id)): Path<(String, String)>,
) -> Response {
    Call::new("reclaimTask", json!({ "taskId": task_id, "runId": run_id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("queue:reclaim-task:{task_id}/{run_id}")))?;
            let id = slug_param("taskId", &task_id)?;
            let run = run_param(&run_id)?;
            no_query(&uri)?;
            load(&st, "reclaimTask", &id)?;
            let t = exec_task(
                &st,
                caller,
                QueueCommand::ReclaimTask {
                    task_id: id,
                    run_id: run,
                },
            )
            .await?;
            Ok(ok_json(&claim_json(&st, &t, run, false)))
        })
        .await
}

/// The three `queue:resolve-task` routes share their path parameters and body.
type ReportRequest = (Uri, Arc<AppState>, Auth, (String, String), HeaderMap, Bytes);

/// reportCompleted, reportFailed and reportException: the body read first (step 1), the
/// reason taken from it once the URL and query string passed (step 5).
async fn report(
    name: &'static str,
    (uri, st, auth, (task_id, run_id), headers, body): ReportRequest,
    reason: fn(Body) -> Result<ReasonResolved, ApiError>,
) -> Response {
    Call::new(name, json!({ "taskId": task_id, "runId": run_id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            caller.require(&s(format!("queue:resolve-task:{task_id}/{run_id}")))?;
            let id = slug_param("taskId", &task_id)?;
            let run = run_param(&run_id)?;
            no_query(&uri)?;
            let reason = reason(body)?;
            // an unknown task is the command's own 404: no read first
            let cmd = QueueCommand::Report {
                task_id: id,
                run_id: run,
                reason,
            };
            Ok(status_reply(&exec_named(&st, caller, cmd, name).await?))
        })
        .await
}

pub async fn report_completed(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = (uri, st, auth, ids, headers, body);
    // legacy: `{"success": false}` reports a failure
    report("reportCompleted", request, |b| {
        match b.or_empty().get("success") {
            Some(Value::Bool(false)) => Ok(ReasonResolved::Failed),
            _ => Ok(ReasonResolved::Completed),
        }
    })
    .await
}

pub async fn report_failed(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = (uri, st, auth, ids, headers, body);
    report("reportFailed", request, |_| Ok(ReasonResolved::Failed)).await
}

pub async fn report_exception(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = (uri, st, auth, ids, headers, body);
    report("reportException", request, |b| {
        const SCHEMA: &str = "/schemas/queue/v1/task-exception-request.json#";
        sole_property(&b.input()?, SCHEMA, "reason")?
            .as_str()
            .and_then(ReasonResolved::parse_worker_reason)
            .ok_or_else(|| {
                ApiError::validation(
                    SCHEMA,
                    &["data.reason should be equal to one of the allowed values".into()],
                )
            })
    })
    .await
}

/// Long-poll length, exposed so a drained shutdown does not wait on it.
pub fn default_claim_work_poll() -> Duration {
    Duration::from_secs(20)
}
