//! Task endpoints: create, read, schedule, rerun, cancel, priority, claims, reports, groups,
//! dependents.

use super::call::*;
use super::json::{parse_task_definition, status_json, task_json, TaskJson};
use crate::error::ApiError;
use crate::hawk::{actor, Auth, Caller};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::ids::TaskId;
use taskledger_core::queue::json::{StatusJson, TaskStatus};
use taskledger_core::queue::{self, Priority, QueueError, ReasonResolved, Task};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Rfc3339;
use taskledger_projections::{EngineError, Outcome, QueueCommand};

type St = State<Arc<AppState>>;

fn s(scope: String) -> ScopeExpr {
    ScopeExpr::scope(scope)
}

/// The task `id`, which `method` reads (its 404 worded as upstream words that call's).
fn load(state: &AppState, method: &str, id: &TaskId) -> Result<Task, ApiError> {
    state
        .engine
        .view()
        .task(id)?
        .ok_or_else(|| task_not_found(method, id))
}

async fn exec_task(state: &AppState, caller: &Caller, cmd: QueueCommand) -> Result<Task, ApiError> {
    exec_named(state, caller, cmd, "").await
}

/// `exec_task` for `method`, whose missing task is worded as `task_not_found` words it.
async fn exec_named(
    state: &AppState,
    caller: &Caller,
    cmd: QueueCommand,
    method: &str,
) -> Result<Task, ApiError> {
    let outcome = match state.engine.execute(actor(caller), cmd).await {
        Err(EngineError::Domain(QueueError::TaskNotFound(id))) => {
            return Err(task_not_found(method, &id))
        }
        outcome => outcome?,
    };
    match outcome {
        Outcome::Task(t) => Ok(t),
        other @ (Outcome::Claims(_) | Outcome::Group(_) | Outcome::Artifact(_) | Outcome::Done) => {
            Err(ApiError::internal(format!("unexpected outcome {other:?}")))
        }
    }
}

/// `{"status": ...}`, written straight from the task.
fn status_reply(task: &Task) -> Response {
    ok_json_bytes(status_body(TaskStatus::of(task)))
}

/// `{"status": ...}`'s bytes (`TaskStatus::write_json`).
fn status_body(status: TaskStatus<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"status\":");
    status.write_json(&mut body);
    body.push(b'}');
    body
}

/// Upstream's 404 text for a task `method` did not find; the calls that resolve, claim,
/// reclaim or cancel share `QueueError::TaskNotFound`'s.
fn task_not_found(method: &str, id: &TaskId) -> ApiError {
    ApiError::not_found(match method {
        "task" => format!(
            "`{id}` does not correspond to a task that exists.\n\
             Are you sure this task has already been submitted?"
        ),
        "status" => format!(
            "`{id}` does not correspond to a task that exists.\nAre you sure this task exists?"
        ),
        "rerunTask" => format!(
            "`{id}` does not correspond to a task that exists.\n\
             Are you sure this task has been submitted before?"
        ),
        "scheduleTask" => format!("taskId `{id}` not found. Are you sure it exists?"),
        "reportException" => format!("Task `{id}` not found. Are you sure it exists?"),
        "listDependentTasks" => format!("Task with taskId: `{id}` was not found"),
        _ => QueueError::TaskNotFound(*id).to_string(),
    })
}

pub async fn task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
) -> Response {
    Call::new("task", json!({ "taskId": task_id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("queue:get-task:{task_id}")))?;
            let id = slug_param("taskId", &task_id)?;
            no_query(&uri)?;
            Ok(ok_json(&TaskJson(&load(&st, "task", &id)?.definition)))
        })
        .await
}

pub async fn status(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
) -> Response {
    Call::new("status", json!({ "taskId": task_id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("queue:status:{task_id}")))?;
            let id = slug_param("taskId", &task_id)?;
            no_query(&uri)?;
            // the status alone, read straight from the stored task
            let body = st
                .engine
                .view()
                .task_status(&id, status_body)?
                .ok_or_else(|| task_not_found("status", &id))?;
            Ok(ok_json_bytes(body))
        })
        .await
}

/// `tasks` and `statuses`: several ids at once, unknown ones skipped.
async fn many(
    st: &AppState,
    auth: &Auth,
    uri: &Uri,
    scope: &str,
    // the reply's list and each entry's key: `tasks`/`task`, `statuses`/`status`
    (list, item): (&str, &str),
    render: fn(&AppState, &TaskId) -> Result<Option<Value>, ApiError>,
) -> Result<Response, ApiError> {
    let body = auth.body()?;
    let caller = auth.caller()?;
    let q = query(uri, &["continuationToken", "limit"])?;
    let body = body.input()?;
    const SCHEMA: &str = "/schemas/queue/v1/tasks-request.json#";
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::validation(SCHEMA, &["data should be object".into()]))?;
    if let Some(extra) = obj.keys().find(|k| *k != "taskIds") {
        return Err(ApiError::validation(
            SCHEMA,
            &[format!(
                "data should NOT have additional properties ({extra})"
            )],
        ));
    }
    // `taskIds` defaults to none; its items are any strings (one that is not a slugid names
    // no task and is skipped, after the scope check, as upstream)
    let items: &[Value] = match obj.get("taskIds") {
        None => &[],
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::validation(
                SCHEMA,
                &["data.taskIds should be array".into()],
            ))
        }
    };
    let mut texts: Vec<&str> = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match v.as_str() {
            Some(t) => texts.push(t),
            None => errors.push(format!("data.taskIds[{i}] should be string")),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(SCHEMA, &errors));
    }
    caller.require(&ScopeExpr::all(
        texts.iter().map(|i| s(format!("{scope}:{i}"))).collect(),
    ))?;
    let start = match decode_token(&q)? {
        Some(t) => String::from_utf8(t)
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
            .ok_or_else(|| ApiError::input("Invalid continuation token"))?,
        None => 0,
    };
    let lim = limit(&q);
    // upstream pages over the tasks found, each once: the offset counts found tasks, so
    // unknown ids take no place on a page; only the page's own tasks are rendered
    let mut once = std::collections::HashSet::with_capacity(texts.len());
    let mut found = 0usize;
    let mut out = Vec::new();
    let mut more = false;
    for text in texts {
        let Ok(id) = text.parse::<TaskId>() else {
            continue;
        };
        if !once.insert(id) {
            continue;
        }
        if found < start {
            found += usize::from(st.engine.view().task(&id)?.is_some());
            continue;
        }
        if out.len() == lim {
            if st.engine.view().task(&id)?.is_some() {
                more = true;
                break;
            }
            continue;
        }
        if let Some(rendered) = render(st, &id)? {
            found += 1;
            out.push(json!({ "taskId": text, item: rendered }));
        }
    }
    let mut v = json!({ list: out });
    if more {
        // a client's token may be any number: the next page's start saturates
        v["continuationToken"] = json!(encode_token(
            start.saturating_add(lim).to_string().as_bytes()
        ));
    }
    Ok(ok(v))
}

pub async fn tasks(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("tasks", json!({}))
        .with_body(&headers, &body)
        .run(many(
            &st,
            &auth,
            &uri,
            "queue:get-task",
            ("tasks", "task"),
            |st, id| Ok(st.engine.view().task(id)?.map(|t| task_json(&t.definition))),
        ))
        .await
}

pub async fn statuses(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("statuses", json!({}))
        .with_body(&headers, &body)
        .run(many(
            &st,
            &auth,
            &uri,
            "queue:status",
            ("statuses", "status"),
            // each status read from its stored task alone, as getTaskStatus reads it
            |st, id| {
                // a map of strings and numbers always converts
                let value = |s: TaskStatus<'_>| serde_json::to_value(s).unwrap_or(Value::Null);
                Ok(st.engine.view().task_status(id, value)?)
            },
        ))
        .await
}

pub async fn create_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("createTask", json!({ "taskId": task_id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let id = slug_param("taskId", &task_id)?;
            no_query(&uri)?;
            let def = parse_task_definition(&body.input()?, id)?;
            let mut required: Vec<ScopeExpr> =
                def.scopes.iter().cloned().map(ScopeExpr::scope).collect();
            required.extend(def.routes.iter().map(|r| s(format!("queue:route:{r}"))));
            required.push(s(format!("queue:create-task:project:{}", def.project_id)));
            required.push(s(format!("queue:scheduler-id:{}", def.scheduler_id)));
            required.push(ScopeExpr::any(
                def.priority
                    .at_least()
                    .map(|p| {
                        s(format!(
                            "queue:create-task:{}:{}",
                            p.as_str(),
                            def.task_queue_id
                        ))
                    })
                    .collect(),
            ));
            caller.require(&ScopeExpr::all(required))?;
            let task = exec_task(
                &st,
                caller,
                QueueCommand::CreateTask {
                    task_id: id,
                    definition: def,
                },
            )
            .await?;
            Ok(status_reply(&task))
        })
        .await
}

/// The three alternatives of schedule/rerun/cancel (§12).
fn manipulate_scopes(verb: &str, t: &Task) -> ScopeExpr {
    let d = &t.definition;
    ScopeExpr::any(vec![
        s(format!(
            "queue:{verb}:{}/{}/{}",
            d.scheduler_id, d.task_group_id, t.task_id
        )),
        s(format!("queue:{verb}-in-project:{}", d.project_id)),
        ScopeExpr::all(vec![
            s(format!("queue:{verb}")),
            s(format!(
                "assume:scheduler-id:{}/{}",
                d.scheduler_id, d.task_group_id
            )),
        ]),
    ])
}

async fn manipulate(
    st: &AppState,
    auth: &Auth,
    uri: &Uri,
    task_id: &str,
    (method, verb): (&str, &str),
    cmd: fn(TaskId) -> QueueCommand,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    let id = slug_param("taskId", task_id)?;
    no_query(uri)?;
    let t = load(st, method, &id)?;
    caller.require(&manipulate_scopes(verb, &t))?;
    Ok(status_reply(&exec_task(st, caller, cmd(id)).await?))
}

pub async fn schedule_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
) -> Response {
    Call::new("scheduleTask", json!({ "taskId": task_id }))
        .run(manipulate(
            &st,
            &auth,
            &uri,
            &task_id,
            ("scheduleTask", "schedule-task"),
            |task_id| QueueCommand::ScheduleTask { task_id },
        ))
        .await
}

pub async fn rerun_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
) -> Response {
    Call::new("rerunTask", json!({ "taskId": task_id }))
        .run(manipulate(
            &st,
            &auth,
            &uri,
            &task_id,
            ("rerunTask", "rerun-task"),
            |task_id| QueueCommand::RerunTask { task_id },
        ))
        .await
}

pub async fn cancel_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
) -> Response {
    Call::new("cancelTask", json!({ "taskId": task_id }))
        .run(manipulate(
            &st,
            &auth,
            &uri,
            &task_id,
            ("cancelTask", "cancel-task"),
            |task_id| QueueCommand::CancelTask { task_id },
        ))
        .await
}

/// The value of a body whose schema has exactly one property, required, and no others
/// (task-exception-request, change-task-priority-request).
fn sole_property<'b>(body: &'b Value, schema: &str, key: &str) -> Result<&'b Value, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::validation(schema, &["data should be object".into()]))?;
    if let Some(extra) = obj.keys().find(|k| *k != key) {
        return Err(ApiError::validation(
            schema,
            &[format!(
                "data should NOT have additional properties ({extra})"
            )],
        ));
    }
    obj.get(key).ok_or_else(|| {
        ApiError::validation(
            schema,
            &[format!("data should have required property '{key}'")],
        )
    })
}

fn new_priority(body: &Value) -> Result<Priority, ApiError> {
    const SCHEMA: &str = "/schemas/queue/v1/change-task-priority-request.json#";
    sole_property(body, SCHEMA, "newPriority")?
        .as_str()
        .and_then(Priority::parse)
        .ok_or_else(|| {
            ApiError::validation(
                SCHEMA,
                &["data.newPriority should be equal to one of the allowed values".into()],
            )
        })
}

pub async fn change_task_priority(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("changeTaskPriority", json!({ "taskId": task_id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let id = slug_param("taskId", &task_id)?;
            no_query(&uri)?;
            let priority = new_priority(&body.input()?)?;
            let t = load(&st, "changeTaskPriority", &id)?;
            caller.require(&ScopeExpr::any(vec![
                s(format!("queue:change-task-priority:{id}")),
                s(format!(
                    "queue:change-task-priority-in-queue:{}",
                    t.definition.task_queue_id
                )),
            ]))?;
            Ok(status_reply(
                &exec_task(
                    &st,
                    caller,
                    QueueCommand::ChangePriority {
                        task_id: id,
                        priority,
                        in_group: false,
                    },
                )
                .await?,
            ))
        })
        .await
}

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
        task: with_task.then_some(TaskJson(&task.definition)),
        worker_group: wg,
        worker_id: wi,
    }
}

fn worker_fields(body: &Value, schema: &str) -> Result<(String, String), ApiError> {
    let get = |k: &str| {
        body.get(k)
            .and_then(|v| v.as_str())
            .filter(|v| taskledger_core::ids::is_ident38(v))
            .map(str::to_string)
    };
    match (get("workerGroup"), get("workerId")) {
        (Some(g), Some(w)) => Ok((g, w)),
        _ => Err(ApiError::validation(
            schema,
            &[
                "data.workerGroup and data.workerId should match pattern \"^([a-zA-Z0-9-_]*)$\""
                    .into(),
            ],
        )),
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
            let (wg, wi) = worker_fields(&body, schema)?;
            let max = match body.get("tasks") {
                None => 1,
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=32) => n as usize,
                    _ => {
                        return Err(ApiError::validation(
                            schema,
                            &["data.tasks should be an integer from 1 to 32".into()],
                        ))
                    }
                },
            };
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
                        return Err(ApiError::internal(format!("unexpected outcome {other:?}")))
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
            let (wg, wi) =
                worker_fields(&body.input()?, "/schemas/queue/v1/task-claim-request.json#")?;
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
                | Outcome::Done) => {
                    Err(ApiError::internal(format!("unexpected outcome {other:?}")))
                }
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

fn group_json(g: &taskledger_core::queue::TaskGroup) -> Value {
    let mut v = json!({
        "taskGroupId": g.task_group_id.to_string(),
        "schedulerId": g.scheduler_id,
        "expires": g.expires.to_rfc3339(),
    });
    if let Some(sealed) = g.sealed {
        v["sealed"] = json!(sealed.to_rfc3339());
    }
    v
}

fn load_group(st: &AppState, id: &TaskId) -> Result<taskledger_core::queue::TaskGroup, ApiError> {
    st.engine
        .view()
        .group(id)?
        .ok_or_else(|| ApiError::not_found(format!("No task-group with taskGroupId: `{id}`")))
}

pub async fn get_task_group(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(group): Path<String>,
) -> Response {
    Call::new("getTaskGroup", json!({ "taskGroupId": group }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:list-task-group:{group}")))?;
            let id = slug_param("taskGroupId", &group)?;
            no_query(&uri)?;
            Ok(ok(group_json(&load_group(&st, &id)?)))
        })
        .await
}

/// The base64url digits (0 to 63) in the order of their characters' ASCII codes: `-`, `0`-`9`,
/// `A`-`Z`, `_`, `a`-`z`. A slugid's text order is the order of its digits by this rank.
const DIGITS_IN_TEXT_ORDER: [u8; 64] = {
    let mut order = [0u8; 64];
    let mut i = 0;
    order[i] = 62;
    i += 1;
    let mut d = 52;
    while d < 62 {
        order[i] = d;
        i += 1;
        d += 1;
    }
    d = 0;
    while d < 26 {
        order[i] = d;
        i += 1;
        d += 1;
    }
    order[i] = 63;
    i += 1;
    d = 26;
    while d < 52 {
        order[i] = d;
        i += 1;
        d += 1;
    }
    order
};

/// A page of tasks by id (group members or dependents), in taskId order as upstream lists
/// them: the ids' text, which is not the order of their bytes (a slugid's alphabet is not in
/// ASCII order). The ids whose text starts with one character are one run of the index's
/// keys, so a page reads those runs in the characters' order, sorting each, from the token's
/// run on, until it has one more id than it shows. The token is the page's last id.
fn task_page(
    st: &AppState,
    q: &std::collections::HashMap<String, String>,
    with_first_digit: impl Fn(u8) -> Result<Vec<TaskId>, ApiError>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let after = match decode_token(q)? {
        Some(b) => {
            Some(taskledger_core::ids::Slug(b.try_into().map_err(|_| {
                ApiError::input("Invalid continuation token")
            })?))
        }
        None => None,
    };
    let lim = limit(q);
    let after_text = after.map(|a| a.to_string());
    let mut ids: Vec<(String, TaskId)> = Vec::new();
    let digits = DIGITS_IN_TEXT_ORDER
        .iter()
        .skip_while(|d| after.is_some_and(|a| a.0[0] >> 2 != **d));
    for digit in digits {
        let mut run: Vec<(String, TaskId)> = with_first_digit(*digit)?
            .into_iter()
            .map(|id| (id.to_string(), id))
            .filter(|(text, _)| after_text.as_ref().is_none_or(|a| text > a))
            .collect();
        run.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        ids.extend(run);
        if ids.len() > lim {
            break;
        }
    }
    let more = ids.len() > lim;
    let mut out = Vec::new();
    for (_, id) in ids.iter().take(lim) {
        if let Some(t) = st.engine.view().task(id)? {
            out.push(json!({ "status": status_json(&t), "task": task_json(&t.definition) }));
        }
    }
    let token = if more {
        ids.get(lim - 1).map(|(_, last)| encode_token(&last.0))
    } else {
        None
    };
    Ok((out, token))
}

pub async fn list_task_group(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(group): Path<String>,
    uri: Uri,
) -> Response {
    Call::new("listTaskGroup", json!({ "taskGroupId": group }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:list-task-group:{group}")))?;
            let id = slug_param("taskGroupId", &group)?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let g = load_group(&st, &id)?;
            let (tasks, token) = task_page(&st, &q, |digit| {
                Ok(st
                    .engine
                    .view()
                    .group_members_with_first_digit(&id, digit)?)
            })?;
            let mut v = group_json(&g);
            v["tasks"] = json!(tasks);
            if let Some(t) = token {
                v["continuationToken"] = json!(t);
            }
            Ok(ok(v))
        })
        .await
}

pub async fn list_dependent_tasks(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
    uri: Uri,
) -> Response {
    Call::new("listDependentTasks", json!({ "taskId": task_id }))
        .run(async {
            auth.caller()?
                .require(&s(format!("queue:list-dependent-tasks:{task_id}")))?;
            let id = slug_param("taskId", &task_id)?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            load(&st, "listDependentTasks", &id)?;
            let (tasks, token) = task_page(&st, &q, |digit| {
                Ok(st.engine.view().dependents_with_first_digit(&id, digit)?)
            })?;
            let mut v = json!({ "taskId": task_id, "tasks": tasks });
            if let Some(t) = token {
                v["continuationToken"] = json!(t);
            }
            Ok(ok(v))
        })
        .await
}

pub async fn seal_task_group(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(group): Path<String>,
) -> Response {
    Call::new("sealTaskGroup", json!({ "taskGroupId": group }))
        .run(async {
            let caller = auth.caller()?;
            let id = slug_param("taskGroupId", &group)?;
            no_query(&uri)?;
            let g = load_group(&st, &id)?;
            caller.require(&s(format!("queue:seal-task-group:{}/{id}", g.scheduler_id)))?;
            match st
                .engine
                .execute(
                    actor(caller),
                    QueueCommand::SealTaskGroup { task_group_id: id },
                )
                .await?
            {
                Outcome::Group(g) => Ok(ok(group_json(&g))),
                other @ (Outcome::Task(_)
                | Outcome::Claims(_)
                | Outcome::Artifact(_)
                | Outcome::Done) => {
                    Err(ApiError::internal(format!("unexpected outcome {other:?}")))
                }
            }
        })
        .await
}

/// Every member of a group, for cancel and priority changes.
fn all_members(st: &AppState, id: &TaskId) -> Result<Vec<Task>, ApiError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = st.engine.view().group_members(id, after.as_ref(), 1000)?;
        let Some(last) = page.last().copied() else {
            return Ok(out);
        };
        for t in &page {
            if let Some(task) = st.engine.view().task(t)? {
                out.push(task);
            }
        }
        after = Some(last);
    }
}

pub async fn cancel_task_group(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(group): Path<String>,
) -> Response {
    Call::new("cancelTaskGroup", json!({ "taskGroupId": group }))
        .run(async {
            let caller = auth.caller()?;
            let id = slug_param("taskGroupId", &group)?;
            no_query(&uri)?;
            let g = load_group(&st, &id)?;
            if g.sealed.is_none() {
                return Err(ApiError::conflict("Cannot cancel unsealed task group"));
            }
            caller.require(&s(format!(
                "queue:cancel-task-group:{}/{id}",
                g.scheduler_id
            )))?;
            let members = all_members(&st, &id)?;
            let now = taskledger_core::time::Millis::now();
            let mut canceled = Vec::new();
            for t in &members {
                let open = t.last_run().is_none_or(|r| !r.state.is_resolved());
                if open && now < t.definition.deadline {
                    let after =
                        exec_task(&st, caller, QueueCommand::CancelTask { task_id: t.task_id })
                            .await?;
                    if after.runs.len() != t.runs.len() || after.last_run() != t.last_run() {
                        canceled.push(t.task_id.to_string());
                    }
                }
            }
            Ok(ok(json!({
                "taskGroupId": group,
                "taskGroupSize": members.len(),
                "cancelledCount": canceled.len(),
                "taskIds": canceled,
            })))
        })
        .await
}

pub async fn change_task_group_priority(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(group): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("changeTaskGroupPriority", json!({ "taskGroupId": group }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let id = slug_param("taskGroupId", &group)?;
            no_query(&uri)?;
            let priority = new_priority(&body.input()?)?;
            let g = load_group(&st, &id)?;
            caller.require(&s(format!(
                "queue:change-task-group-priority:{}/{id}",
                g.scheduler_id
            )))?;
            let now = taskledger_core::time::Millis::now();
            let mut changed = Vec::new();
            for t in all_members(&st, &id)? {
                // the domain's own rules, asked here first so that members they leave alone
                // cost no trip to the writer
                if queue::change_priority(&t, priority, true, now).is_ok() {
                    let command = QueueCommand::ChangePriority {
                        task_id: t.task_id,
                        priority,
                        in_group: true,
                    };
                    match st.engine.execute(actor(caller), command).await {
                        Ok(_) => changed.push(t.task_id.to_string()),
                        // resolved, past its deadline, changed or expired since it was read:
                        // not affected
                        Err(EngineError::Domain(
                            QueueError::Conflict(_) | QueueError::TaskNotFound(_),
                        )) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            // the closing record, which Pulse republishes as task-group-priority-changed
            st.engine
                .execute(
                    actor(caller),
                    QueueCommand::RecordGroupPriorityChange {
                        task_group_id: id,
                        priority,
                        tasks_affected: changed.len() as u32,
                    },
                )
                .await?;
            Ok(ok(json!({
                "taskGroupId": group,
                "schedulerId": g.scheduler_id,
                "newPriority": priority.as_str(),
                "tasksAffected": changed.len(),
                "taskIds": changed,
            })))
        })
        .await
}

/// Long-poll length, exposed so a drained shutdown does not wait on it.
pub fn default_claim_work_poll() -> Duration {
    Duration::from_secs(20)
}

#[cfg(test)]
mod text_order_tests {
    use super::DIGITS_IN_TEXT_ORDER;

    /// Each digit's character, taken in `DIGITS_IN_TEXT_ORDER`, comes out in ASCII order,
    /// every digit once.
    #[test]
    fn the_digits_are_in_their_characters_order() {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let chars: Vec<u8> = DIGITS_IN_TEXT_ORDER
            .iter()
            .map(|d| ALPHABET[usize::from(*d)])
            .collect();
        let mut sorted = ALPHABET.to_vec();
        sorted.sort_unstable();
        assert_eq!(chars, sorted);
    }
}
