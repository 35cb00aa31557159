//! Events -> Pulse messages (reference/pulse.md): exchange names, routing keys, CC routes and
//! bodies, from the state *after* the command that produced the events.
//!
//! **Invariant:** pure; the caller folds the state and owns persistence. An event maps to at
//! most one message, whose id is the event id. The worker-manager's messages are in
//! `worker_manager.rs`, the hooks service's in `hooks.rs`, the notify service's in `notify.rs`, the GitHub integration's in `github.rs`.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};
use taskledger_core::access::{AuthEvent, AuthRepeat};
use taskledger_core::queue::json::{artifact_info, StatusJson};
use taskledger_core::queue::{
    Artifact, ArtifactStorage, QueueEvent, ReasonResolved, Repeat, RunState, Task, TaskGroup,
};

mod github;
mod hooks;
mod notify;
#[cfg(test)]
mod tests;
mod worker_manager;

pub use github::{github_message, GITHUB_EXCHANGES, GITHUB_EXCHANGE_PREFIX};
pub use hooks::{hook_message, HOOKS_EXCHANGES, HOOKS_EXCHANGE_PREFIX};
pub use notify::{notify_message, NOTIFY_EXCHANGES, NOTIFY_EXCHANGE_PREFIX};

pub use worker_manager::{
    pool_error_message, pool_message, worker_message, REMOVE_WORKER_REASON,
    WORKER_MANAGER_EXCHANGES, WORKER_MANAGER_EXCHANGE_PREFIX,
};

pub const QUEUE_EXCHANGE_PREFIX: &str = "exchange/taskcluster-queue/v1/";
pub const AUTH_EXCHANGE_PREFIX: &str = "exchange/taskcluster-auth/v1/";

/// Every exchange the bridge publishes to (declared on start).
pub const QUEUE_EXCHANGES: &[&str] = &[
    "task-defined",
    "task-pending",
    "task-running",
    "artifact-created",
    "task-completed",
    "task-failed",
    "task-exception",
    "task-group-resolved",
    "task-group-sealed",
    "task-priority-changed",
    "task-group-priority-changed",
];
pub const AUTH_EXCHANGES: &[&str] = &[
    "client-created",
    "client-updated",
    "client-deleted",
    "role-created",
    "role-updated",
    "role-deleted",
];

/// One message to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    /// Extra routing keys (`route.<r>`), sent in the `CC` header.
    pub cc: Vec<String>,
    /// The body, JSON as published.
    pub body: Vec<u8>,
}

impl Message {
    /// The body as a JSON value (for tests and tools; publishing sends the bytes).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// JSON bytes of a body built as a value (the low-volume messages).
fn bytes(body: &Value) -> Vec<u8> {
    // a value always serializes
    serde_json::to_vec(body).unwrap_or_default()
}

/// One field of a queue message's body.
enum Field<'a> {
    Number(u64),
    Str(&'a str),
    Text(String),
    Status(&'a Task),
    /// `{"tags": <the task's tags>}`
    Tags(&'a Task),
    Artifact(&'a Artifact),
}

/// A queue message's body, written straight from the task: the hot messages (a task's
/// defined, pending, running and resolved) skip building a `serde_json::Value`. Keys are
/// written sorted, as a `Value` object writes them, so the bytes are the same as before.
struct Body<'a>(Vec<(&'static str, Field<'a>)>);

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut fields: Vec<&(&str, Field)> = self.0.iter().collect();
        fields.sort_by_key(|(key, _)| *key);
        let mut m = serializer.serialize_map(Some(fields.len()))?;
        for (key, field) in fields {
            match field {
                Field::Number(n) => m.serialize_entry(key, n)?,
                Field::Str(s) => m.serialize_entry(key, s)?,
                Field::Text(s) => m.serialize_entry(key, s)?,
                Field::Status(t) => m.serialize_entry(key, &StatusJson(t))?,
                Field::Tags(t) => m.serialize_entry(key, &Tags(t))?,
                Field::Artifact(a) => m.serialize_entry(key, &artifact_json(a))?,
            }
        }
        m.end()
    }
}

/// `{"tags": ...}`. Stored tags are JSON text of an object, written by a `Value`, so usually
/// `{}`; others are parsed and written again, as before, which keeps their bytes canonical.
struct Tags<'a>(&'a Task);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = &self.0.definition.tags.0;
        let mut m = serializer.serialize_map(Some(1))?;
        if text == "{}" {
            m.serialize_entry("tags", &serde_json::Map::new())?;
        } else {
            let tags = serde_json::from_str::<Value>(text).unwrap_or(json!({}));
            m.serialize_entry("tags", &tags)?;
        }
        m.end()
    }
}

/// A task message's body: `version` 1 and the task's `status`, then `fields`.
fn task_body<'a>(
    task: &'a Task,
    fields: impl IntoIterator<Item = (&'static str, Field<'a>)>,
) -> Vec<u8> {
    let mut body = vec![
        ("version", Field::Number(1)),
        ("status", Field::Status(task)),
    ];
    body.extend(fields);
    // strings, numbers and maps of them always serialize
    serde_json::to_vec(&Body(body)).unwrap_or_default()
}

/// `primary.<taskId>.<runId>.<workerGroup>.<workerId>.<prov>.<wt>.<schedulerId>.<group>._`
pub fn task_routing_key(task: &Task, run: Option<u32>, worker: Option<(&str, &str)>) -> String {
    let d = &task.definition;
    let run = run.map_or("_".to_string(), |r| r.to_string());
    let (wg, wid) = worker.unwrap_or(("_", "_"));
    format!(
        "primary.{}.{run}.{wg}.{wid}.{}.{}.{}.{}._",
        task.task_id,
        d.task_queue_id.provisioner_id(),
        d.task_queue_id.worker_type(),
        d.scheduler_id,
        d.task_group_id
    )
}

fn task_message(
    task: &Task,
    name: &str,
    run: Option<u32>,
    worker: Option<(&str, &str)>,
    body: Vec<u8>,
) -> Message {
    Message {
        exchange: format!("{QUEUE_EXCHANGE_PREFIX}{name}"),
        routing_key: task_routing_key(task, run, worker),
        cc: task
            .definition
            .routes
            .iter()
            .map(|r| format!("route.{r}"))
            .collect(),
        body,
    }
}

/// The worker that held run `run_id`, if it was claimed.
fn run_worker(task: &Task, run_id: u32) -> Option<(String, String)> {
    let run = task.runs.iter().find(|r| r.run_id == run_id)?;
    Some((run.worker_group.clone()?, run.worker_id.clone()?))
}

/// The API's artifact info without `contentLength`, which the message schema does not allow
/// (reference/pulse.md §5.1).
fn artifact_json(a: &Artifact) -> Value {
    let mut v = artifact_info(a);
    if let Some(o) = v.as_object_mut() {
        o.remove("contentLength");
    }
    v
}

/// The message for a queue event, given the task (and group) state after the command, and the
/// artifact an `ArtifactFinished` finishes.
pub fn queue_message(
    event: &QueueEvent,
    task: Option<&Task>,
    group: Option<&TaskGroup>,
    finished: Option<&Artifact>,
) -> Option<Message> {
    use Field::*;
    match event {
        QueueEvent::TaskDefined { .. } => Some(defined_message(task?)),
        QueueEvent::RunScheduled { run_id, .. } => Some(pending_message(task?, *run_id)),
        QueueEvent::RunClaimed {
            run_id,
            worker_group,
            worker_id,
            taken_until,
            ..
        } => {
            let t = task?;
            let body = task_body(
                t,
                [
                    ("runId", Number((*run_id).into())),
                    ("workerGroup", Str(worker_group)),
                    ("workerId", Str(worker_id)),
                    ("takenUntil", Text(taken_until.to_rfc3339())),
                    ("task", Tags(t)),
                ],
            );
            Some(task_message(
                t,
                "task-running",
                Some(*run_id),
                Some((worker_group, worker_id)),
                body,
            ))
        }
        QueueEvent::RunResolved { run_id, reason, .. }
        | QueueEvent::RunExceptionRecorded { run_id, reason, .. } => {
            Some(resolution_message(task?, *run_id, *reason))
        }
        QueueEvent::ArtifactCreated {
            run_id, artifact, ..
        } => {
            let publish_now = matches!(
                artifact.storage,
                ArtifactStorage::Reference { .. }
                    | ArtifactStorage::Link { .. }
                    | ArtifactStorage::Error { .. }
            );
            publish_now
                .then(|| artifact_message(task, *run_id, artifact))
                .flatten()
        }
        QueueEvent::ArtifactFinished { run_id, .. } => {
            let a = finished?;
            matches!(a.storage, ArtifactStorage::Object { .. })
                .then(|| artifact_message(task, *run_id, a))
                .flatten()
        }
        // a call repeated to the same effect: its message again, from the state now
        QueueEvent::Repeated { repeat, .. } => match repeat {
            Repeat::TaskDefined { .. } => Some(defined_message(task?)),
            Repeat::RunPending { run_id, .. } => Some(pending_message(task?, *run_id)),
            Repeat::RunResolved { run_id, .. } => {
                let t = task?;
                let reason = t.runs.get(*run_id as usize)?.reason_resolved?;
                Some(resolution_message(t, *run_id, reason))
            }
            Repeat::ArtifactCreated { run_id, .. } => {
                let a = finished?;
                (!matches!(a.storage, ArtifactStorage::S3 { .. }))
                    .then(|| artifact_message(task, *run_id, a))
                    .flatten()
            }
            Repeat::TaskGroupSealed { .. } => Some(group_message("task-group-sealed", group?)),
        },
        QueueEvent::PriorityChanged { old, new, .. } => {
            let t = task?;
            let body = task_body(
                t,
                [
                    ("oldPriority", Str(old.as_str())),
                    ("newPriority", Str(new.as_str())),
                ],
            );
            Some(task_message(t, "task-priority-changed", None, None, body))
        }
        QueueEvent::TaskGroupSealed { .. } => Some(group_message("task-group-sealed", group?)),
        QueueEvent::TaskGroupPriorityChanged {
            priority,
            tasks_affected,
            ..
        } => {
            let g = group?;
            let mut m = group_message("task-group-priority-changed", g);
            m.body = bytes(&json!({
                "version": 1,
                "taskGroupId": g.task_group_id.to_string(),
                "schedulerId": g.scheduler_id,
                "newPriority": priority.as_str(),
                "tasksAffected": tasks_affected,
            }));
            Some(m)
        }
        // Taskcluster publishes a group's change once, as task-group-priority-changed
        QueueEvent::RunReclaimed { .. }
        | QueueEvent::GroupPriorityApplied { .. }
        | QueueEvent::DependencySatisfied { .. }
        | QueueEvent::TaskGroupDefined { .. }
        | QueueEvent::TaskGroupExpiresRaised { .. }
        | QueueEvent::WorkerSeen { .. }
        | QueueEvent::WorkerQuarantined { .. }
        | QueueEvent::TaskExpired { .. }
        | QueueEvent::TaskGroupExpired { .. }
        | QueueEvent::ArtifactExpired { .. } => None,
    }
}

/// task-defined: the task's status and tags.
fn defined_message(t: &Task) -> Message {
    let body = task_body(t, [("task", Field::Tags(t))]);
    task_message(t, "task-defined", None, None, body)
}

/// task-pending for run `run_id`.
fn pending_message(t: &Task, run_id: u32) -> Message {
    let body = task_body(
        t,
        [
            ("runId", Field::Number(run_id.into())),
            ("task", Field::Tags(t)),
        ],
    );
    task_message(t, "task-pending", Some(run_id), None, body)
}

/// task-completed, task-failed or task-exception for a run resolved with `reason`.
fn resolution_message(t: &Task, run_id: u32, reason: ReasonResolved) -> Message {
    use Field::*;
    let name = match reason.state() {
        RunState::Completed => "task-completed",
        RunState::Failed => "task-failed",
        RunState::Exception | RunState::Pending | RunState::Running => "task-exception",
    };
    // a deadline's task-exception names no worker, even for a running run (queue.md §6.3,
    // pulse.md §5.1)
    let worker = if reason == ReasonResolved::DeadlineExceeded {
        None
    } else {
        run_worker(t, run_id)
    };
    let mut fields = vec![("runId", Number(run_id.into())), ("task", Tags(t))];
    if let Some((g, w)) = &worker {
        fields.push(("workerGroup", Str(g)));
        fields.push(("workerId", Str(w)));
    }
    let body = task_body(t, fields);
    task_message(
        t,
        name,
        Some(run_id),
        worker.as_ref().map(|(g, w)| (g.as_str(), w.as_str())),
        body,
    )
}

/// task-group-sealed / task-group-resolved: `{taskGroupId, schedulerId, expires, sealed?}`,
/// routing key `primary.<taskGroupId>.<schedulerId>._` (pulse.md §3.2).
pub fn group_message(name: &str, g: &TaskGroup) -> Message {
    let mut body = json!({
        "version": 1,
        "taskGroupId": g.task_group_id.to_string(),
        "schedulerId": g.scheduler_id,
        "expires": g.expires.to_rfc3339(),
    });
    if let Some(at) = g.sealed {
        body["sealed"] = json!(at.to_rfc3339());
    }
    Message {
        exchange: format!("{QUEUE_EXCHANGE_PREFIX}{name}"),
        routing_key: format!("primary.{}.{}._", g.task_group_id, g.scheduler_id),
        cc: vec![],
        body: bytes(&body),
    }
}

fn artifact_message(task: Option<&Task>, run_id: u32, artifact: &Artifact) -> Option<Message> {
    use Field::*;
    let t = task?;
    let (g, w) = run_worker(t, run_id)?;
    let body = task_body(
        t,
        [
            ("runId", Number(run_id.into())),
            ("workerGroup", Str(&g)),
            ("workerId", Str(&w)),
            ("artifact", Artifact(artifact)),
        ],
    );
    Some(task_message(
        t,
        "artifact-created",
        Some(run_id),
        Some((&g, &w)),
        body,
    ))
}

/// The message for an auth event: `{version, clientId}` or `{version, roleId}`, routing key `_`;
/// None for a client's recorded use, and for an expired client's removal (upstream's purge
/// job publishes nothing: client-deleted is deleteClient's, pulse.md §6).
pub fn auth_message(event: &AuthEvent) -> Option<Message> {
    let (name, body) = match event {
        AuthEvent::ClientCreated { client_id, .. } => {
            ("client-created", json!({ "clientId": client_id }))
        }
        AuthEvent::ClientUpdated { client_id, .. }
        | AuthEvent::AccessTokenReset { client_id, .. }
        | AuthEvent::ClientEnabled { client_id }
        | AuthEvent::ClientDisabled { client_id } => {
            ("client-updated", json!({ "clientId": client_id }))
        }
        AuthEvent::ClientDeleted { expired: true, .. } => return None,
        AuthEvent::ClientDeleted {
            client_id,
            expired: false,
        } => ("client-deleted", json!({ "clientId": client_id })),
        AuthEvent::RoleCreated { role_id, .. } => ("role-created", json!({ "roleId": role_id })),
        AuthEvent::RoleUpdated { role_id, .. } => ("role-updated", json!({ "roleId": role_id })),
        AuthEvent::RoleDeleted { role_id } => ("role-deleted", json!({ "roleId": role_id })),
        AuthEvent::ClientUsed { .. } => return None,
        // the call's message again, as upstream publishes on every call
        AuthEvent::Repeated { repeat } => match repeat {
            AuthRepeat::ClientEnabled { client_id } | AuthRepeat::ClientDisabled { client_id } => {
                ("client-updated", json!({ "clientId": client_id }))
            }
            AuthRepeat::ClientDeleted { client_id } => {
                ("client-deleted", json!({ "clientId": client_id }))
            }
            AuthRepeat::RoleCreated { role_id } => ("role-created", json!({ "roleId": role_id })),
            AuthRepeat::RoleDeleted { role_id } => ("role-deleted", json!({ "roleId": role_id })),
        },
    };
    let mut body = body;
    body["version"] = json!(1);
    Some(Message {
        exchange: format!("{AUTH_EXCHANGE_PREFIX}{name}"),
        routing_key: "_".into(),
        cc: vec![],
        body: bytes(&body),
    })
}
