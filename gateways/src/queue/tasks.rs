//! Task endpoints: create, read, schedule, rerun, cancel, priority; the helpers the run
//! (`runs`) and group (`groups`) endpoints share.

use super::call::*;
use super::json::{parse_task_definition, task_json, TaskJson};
use crate::error::ApiError;
use crate::hawk::{actor, Auth, Caller};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::ids::TaskId;
use taskledger_core::queue::json::TaskStatus;
use taskledger_core::queue::{Priority, QueueError, Task};
use taskledger_core::scopes::ScopeExpr;
use taskledger_projections::{EngineError, Outcome, QueueCommand};

pub(super) type St = State<Arc<AppState>>;

/// The task `id`, which `method` reads (its 404 worded as upstream words that call's).
pub(super) fn load(state: &AppState, method: &str, id: &TaskId) -> Result<Task, ApiError> {
    state
        .engine
        .view()
        .task(id)?
        .ok_or_else(|| task_not_found(method, id))
}

pub(super) async fn exec_task(
    state: &AppState,
    caller: &Caller,
    cmd: QueueCommand,
) -> Result<Task, ApiError> {
    exec_named(state, caller, cmd, "").await
}

/// `exec_task` for `method`, whose missing task is worded as `task_not_found` words it.
pub(super) async fn exec_named(
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
            Err(ApiError::internal(format!(
                "unexpected outcome: {}",
                other.kind()
            )))
        }
    }
}

/// `{"status": ...}`, written straight from the task.
pub(super) fn status_reply(task: &Task) -> Response {
    ok_json_bytes(status_body(TaskStatus::of(task)))
}

/// `{"status": ...}`'s bytes (`TaskStatus::write_json`).
pub(super) fn status_body(status: TaskStatus<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024);
    body.extend_from_slice(b"{\"status\":");
    status.write_json(&mut body);
    body.push(b'}');
    body
}

/// Upstream's 404 text for a task `method` did not find; the calls that resolve, claim,
/// reclaim or cancel share `QueueError::TaskNotFound`'s.
pub(super) fn task_not_found(method: &str, id: &TaskId) -> ApiError {
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
            Ok(ok_json(&TaskJson::of(&load(&st, "task", &id)?)))
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
    let obj = object_with_only(&body, SCHEMA, "taskIds")?;
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
            |st, id| Ok(st.engine.view().task(id)?.map(|t| task_json(&t))),
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
            let task = create(&st, caller, id, &body.input()?).await?;
            Ok(status_reply(&task))
        })
        .await
}

/// createTask once the request itself is checked: the definition read from `body`, the
/// scopes it needs held by `caller`, the task created (or found, for the same definition).
/// The hooks service creates its tasks through here, as its own caller.
pub(crate) async fn create(
    st: &AppState,
    caller: &Caller,
    id: TaskId,
    body: &Value,
) -> Result<Task, ApiError> {
    let def = parse_task_definition(body, id)?;
    let mut required: Vec<ScopeExpr> = def.scopes.iter().cloned().map(ScopeExpr::scope).collect();
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
    exec_task(
        st,
        caller,
        QueueCommand::CreateTask {
            task_id: id,
            definition: def,
        },
    )
    .await
}

/// The three alternatives of schedule/rerun/cancel (§12).
pub(super) fn manipulate_scopes(verb: &str, t: &Task) -> ScopeExpr {
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
pub(super) fn sole_property<'b>(
    body: &'b Value,
    schema: &str,
    key: &str,
) -> Result<&'b Value, ApiError> {
    object_with_only(body, schema, key)?
        .get(key)
        .ok_or_else(|| {
            ApiError::validation(
                schema,
                &[format!("data should have required property '{key}'")],
            )
        })
}

pub(super) fn new_priority(body: &Value) -> Result<Priority, ApiError> {
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
