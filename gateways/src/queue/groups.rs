//! Task-group endpoints (getTaskGroup, listTaskGroup, sealTaskGroup, cancelTaskGroup,
//! changeTaskGroupPriority) and listDependentTasks, which pages a task set the same way.

use super::call::*;
use super::json::{status_json, task_json};
use super::tasks::*;
use crate::error::ApiError;
use crate::hawk::{actor, Auth, Caller};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use taskledger_core::ids::TaskId;
use taskledger_core::queue::{self, QueueError, Task};
use taskledger_projections::{EngineError, Outcome, QueueCommand};

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
            out.push(json!({ "status": status_json(&t), "task": task_json(&t) }));
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
                | Outcome::Done) => Err(ApiError::internal(format!(
                    "unexpected outcome: {}",
                    other.kind()
                ))),
            }
        })
        .await
}

/// Every member of a group, for cancel and priority changes and the GitHub integration's
/// commit statuses.
pub(crate) fn all_members(st: &AppState, id: &TaskId) -> Result<Vec<Task>, ApiError> {
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

/// Cancels every member of a sealed group that is open and before its deadline; the group's
/// size and the tasks whose state the cancel changed. The GitHub integration cancels the
/// builds a newer push replaces through here.
pub(crate) async fn cancel_members(
    st: &AppState,
    caller: &Caller,
    id: &TaskId,
) -> Result<(usize, Vec<String>), ApiError> {
    let members = all_members(st, id)?;
    let now = taskledger_core::time::Millis::now();
    let mut canceled = Vec::new();
    for t in &members {
        let open = t.last_run().is_none_or(|r| !r.state.is_resolved());
        if open && now < t.definition.deadline {
            let after =
                exec_task(st, caller, QueueCommand::CancelTask { task_id: t.task_id }).await?;
            if after.runs.len() != t.runs.len() || after.last_run() != t.last_run() {
                canceled.push(t.task_id.to_string());
            }
        }
    }
    Ok((members.len(), canceled))
}

/// Seals a group (if it exists and is not sealed yet); whether it exists.
pub(crate) async fn seal(st: &AppState, caller: &Caller, id: &TaskId) -> Result<bool, ApiError> {
    match st.engine.view().group(id)? {
        None => Ok(false),
        Some(g) if g.sealed.is_some() => Ok(true),
        Some(_) => {
            st.engine
                .execute(
                    actor(caller),
                    QueueCommand::SealTaskGroup { task_group_id: *id },
                )
                .await?;
            Ok(true)
        }
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
            let (members, canceled) = cancel_members(&st, caller, &id).await?;
            Ok(ok(json!({
                "taskGroupId": group,
                "taskGroupSize": members,
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
