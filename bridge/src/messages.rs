//! Events -> Pulse messages (reference/pulse.md): exchange names, routing keys, CC routes and
//! bodies, from the state *after* the command that produced the events.
//!
//! **Invariant:** pure; the caller folds the state and owns persistence. An event maps to at
//! most one message, whose id is the event id.

use serde_json::{json, Value};
use taskledger_core::access::AuthEvent;
use taskledger_core::queue::json::{artifact_info, status_json};
use taskledger_core::queue::{Artifact, ArtifactStorage, QueueEvent, RunState, Task, TaskGroup};

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
    pub body: Value,
}

fn tags(task: &Task) -> Value {
    json!({ "tags": serde_json::from_str::<Value>(&task.definition.tags.0).unwrap_or(json!({})) })
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
    body: Value,
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
    let worker_fields = |t: &Task, run_id: u32, mut body: Value| {
        if let Some((g, w)) = run_worker(t, run_id) {
            body["workerGroup"] = json!(g);
            body["workerId"] = json!(w);
        }
        body
    };
    match event {
        QueueEvent::TaskDefined { .. } => {
            let t = task?;
            Some(task_message(
                t,
                "task-defined",
                None,
                None,
                json!({
                    "version": 1, "status": status_json(t), "task": tags(t),
                }),
            ))
        }
        QueueEvent::RunScheduled { run_id, .. } => {
            let t = task?;
            Some(task_message(
                t,
                "task-pending",
                Some(*run_id),
                None,
                json!({
                    "version": 1, "status": status_json(t), "runId": run_id, "task": tags(t),
                }),
            ))
        }
        QueueEvent::RunClaimed {
            run_id,
            worker_group,
            worker_id,
            taken_until,
            ..
        } => {
            let t = task?;
            Some(task_message(
                t,
                "task-running",
                Some(*run_id),
                Some((worker_group, worker_id)),
                json!({
                    "version": 1, "status": status_json(t), "runId": run_id,
                    "workerGroup": worker_group, "workerId": worker_id,
                    "takenUntil": taken_until.to_rfc3339(), "task": tags(t),
                }),
            ))
        }
        QueueEvent::RunResolved { run_id, reason, .. }
        | QueueEvent::RunExceptionRecorded { run_id, reason, .. } => {
            let t = task?;
            let name = match reason.state() {
                RunState::Completed => "task-completed",
                RunState::Failed => "task-failed",
                _ => "task-exception",
            };
            let body =
                json!({ "version": 1, "status": status_json(t), "runId": run_id, "task": tags(t) });
            let body = worker_fields(t, *run_id, body);
            let worker = run_worker(t, *run_id);
            Some(task_message(
                t,
                name,
                Some(*run_id),
                worker.as_ref().map(|(g, w)| (g.as_str(), w.as_str())),
                body,
            ))
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
        QueueEvent::PriorityChanged { old, new, .. } => {
            let t = task?;
            Some(task_message(
                t,
                "task-priority-changed",
                None,
                None,
                json!({
                    "version": 1, "status": status_json(t),
                    "oldPriority": old.as_str(), "newPriority": new.as_str(),
                }),
            ))
        }
        QueueEvent::TaskGroupSealed { .. } => Some(group_message("task-group-sealed", group?)),
        QueueEvent::RunReclaimed { .. }
        | QueueEvent::DependencySatisfied { .. }
        | QueueEvent::TaskGroupDefined { .. }
        | QueueEvent::TaskGroupExpiresRaised { .. }
        | QueueEvent::WorkerSeen { .. }
        | QueueEvent::WorkerQuarantined { .. } => None,
    }
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
        body,
    }
}

fn artifact_message(task: Option<&Task>, run_id: u32, artifact: &Artifact) -> Option<Message> {
    let t = task?;
    let (g, w) = run_worker(t, run_id)?;
    Some(task_message(
        t,
        "artifact-created",
        Some(run_id),
        Some((&g, &w)),
        json!({
            "version": 1, "status": status_json(t), "runId": run_id,
            "workerGroup": g, "workerId": w, "artifact": artifact_json(artifact),
        }),
    ))
}

/// The message for an auth event: `{version, clientId}` or `{version, roleId}`, routing key `_`;
/// None for a client's recorded use, which Taskcluster does not publish.
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
        AuthEvent::ClientDeleted { client_id, .. } => {
            ("client-deleted", json!({ "clientId": client_id }))
        }
        AuthEvent::RoleCreated { role_id, .. } => ("role-created", json!({ "roleId": role_id })),
        AuthEvent::RoleUpdated { role_id, .. } => ("role-updated", json!({ "roleId": role_id })),
        AuthEvent::RoleDeleted { role_id } => ("role-deleted", json!({ "roleId": role_id })),
        AuthEvent::ClientUsed { .. } => return None,
    };
    let mut body = body;
    body["version"] = json!(1);
    Some(Message {
        exchange: format!("{AUTH_EXCHANGE_PREFIX}{name}"),
        routing_key: "_".into(),
        cc: vec![],
        body,
    })
}
