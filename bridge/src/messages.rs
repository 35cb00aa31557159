//! Events -> Pulse messages (reference/pulse.md): exchange names, routing keys, CC routes and
//! bodies, from the state *after* the command that produced the events.
//!
//! **Invariant:** pure; the caller folds the state and owns persistence. An event maps to at
//! most one message, whose id is the event id.

use serde_json::{json, Value};
use taskledger_core::access::AuthEvent;
use taskledger_core::queue::json::{artifact_info, status_json};
use taskledger_core::queue::{Artifact, ArtifactStorage, QueueEvent, RunState, Task, TaskGroup};
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{WorkerEvent, WorkerKey, WorkerPoolId};

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
        QueueEvent::TaskGroupPriorityChanged {
            priority,
            tasks_affected,
            ..
        } => {
            let g = group?;
            let mut m = group_message("task-group-priority-changed", g);
            m.body = json!({
                "version": 1,
                "taskGroupId": g.task_group_id.to_string(),
                "schedulerId": g.scheduler_id,
                "newPriority": priority.as_str(),
                "tasksAffected": tasks_affected,
            });
            Some(m)
        }
        QueueEvent::RunReclaimed { .. }
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

pub const WORKER_MANAGER_EXCHANGE_PREFIX: &str = "exchange/taskcluster-worker-manager/v1/";
pub const WORKER_MANAGER_EXCHANGES: &[&str] = &[
    "worker-pool-created",
    "worker-pool-updated",
    "worker-pool-error",
    "worker-requested",
    "worker-running",
    "worker-stopped",
    "worker-removed",
];

/// The reason worker-removed carries for a removeWorker call (Taskcluster's own wording).
pub const REMOVE_WORKER_REASON: &str = "workerManager.removeWorker API call";

/// `primary.<providerId>.<provisionerId>.<workerType>.<workerGroup>.<workerId>.<launchConfigId>._`,
/// `_` for what is absent.
fn worker_routing_key(
    provider_id: &str,
    pool: &WorkerPoolId,
    worker_group: Option<&str>,
    worker_id: Option<&str>,
    launch_config_id: Option<&str>,
) -> String {
    format!(
        "primary.{provider_id}.{}.{}.{}.{}.{}._",
        pool.provisioner_id(),
        pool.worker_type(),
        worker_group.unwrap_or("_"),
        worker_id.unwrap_or("_"),
        launch_config_id.unwrap_or("_"),
    )
}

fn worker_manager_message(name: &str, routing_key: String, body: Value) -> Message {
    Message {
        exchange: format!("{WORKER_MANAGER_EXCHANGE_PREFIX}{name}"),
        routing_key,
        cc: vec![],
        body,
    }
}

/// worker-pool-created / worker-pool-updated: `{workerPoolId, providerId, previousProviderId?}`,
/// routing key all `_`.
pub fn pool_message(
    name: &str,
    pool: &WorkerPoolId,
    provider_id: &str,
    previous_provider_id: Option<&str>,
) -> Message {
    let mut body = json!({ "workerPoolId": pool.as_str(), "providerId": provider_id });
    if let Some(p) = previous_provider_id {
        body["previousProviderId"] = json!(p);
    }
    worker_manager_message(name, "primary._._._._._._._".into(), body)
}

/// worker-requested / -running / -stopped / -removed: `{workerPoolId, providerId, workerId,
/// workerGroup, capacity, timestamp}`, plus `reason` for worker-removed.
pub fn worker_message(
    name: &str,
    worker: &WorkerKey,
    provider_id: &str,
    capacity: u32,
    timestamp: Millis,
    reason: Option<&str>,
) -> Message {
    let mut body = json!({
        "workerPoolId": worker.worker_pool_id.as_str(),
        "providerId": provider_id,
        "workerId": worker.worker_id,
        "workerGroup": worker.worker_group,
        "capacity": capacity,
        "timestamp": timestamp.to_rfc3339(),
    });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let key = worker_routing_key(
        provider_id,
        &worker.worker_pool_id,
        Some(&worker.worker_group),
        Some(&worker.worker_id),
        None,
    );
    worker_manager_message(name, key, body)
}

/// worker-pool-error: `{workerPoolId, providerId, errorId, kind, title, timestamp, workerId?,
/// workerGroup?, launchConfigId?}`, the routing key filled from it.
pub fn pool_error_message(
    event: &WorkerEvent,
    provider_id: &str,
    timestamp: Millis,
) -> Option<Message> {
    let WorkerEvent::WorkerErrorReported {
        worker_pool_id,
        error_id,
        worker_group,
        worker_id,
        kind,
        title,
        launch_config_id,
        ..
    } = event
    else {
        return None;
    };
    let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (group, id) = (given(worker_group), given(worker_id));
    let mut body = json!({
        "workerPoolId": worker_pool_id.as_str(),
        "providerId": provider_id,
        "errorId": error_id.to_string(),
        "kind": kind,
        "title": title,
        "timestamp": timestamp.to_rfc3339(),
    });
    if let Some(g) = &group {
        body["workerGroup"] = json!(g);
    }
    if let Some(w) = &id {
        body["workerId"] = json!(w);
    }
    if let Some(l) = launch_config_id {
        body["launchConfigId"] = json!(l);
    }
    let key = worker_routing_key(
        provider_id,
        worker_pool_id,
        group.as_deref(),
        id.as_deref(),
        launch_config_id.as_deref(),
    );
    Some(worker_manager_message("worker-pool-error", key, body))
}

#[cfg(test)]
mod worker_manager_tests {
    use super::*;
    use taskledger_core::ids::Slug;

    #[test]
    fn a_pool_error_without_a_worker_routes_with_underscores() {
        let event = WorkerEvent::WorkerErrorReported {
            worker_pool_id: "prov-a/type-b".parse().unwrap(),
            error_id: Slug::nice(),
            worker_group: String::new(),
            worker_id: String::new(),
            kind: "k".into(),
            title: "t".into(),
            description: "d".into(),
            extra: "{}".into(),
            launch_config_id: None,
        };
        let m = pool_error_message(&event, "static", Millis(0)).unwrap();
        assert_eq!(m.routing_key, "primary.static.prov-a.type-b._._._._");
        assert_eq!(
            m.exchange,
            format!("{WORKER_MANAGER_EXCHANGE_PREFIX}worker-pool-error")
        );
        assert!(m.body.get("workerId").is_none() && m.body.get("workerGroup").is_none());
        assert_eq!(m.body["timestamp"], "1970-01-01T00:00:00.000Z");
        // every other event is not an error
        let created = WorkerEvent::WorkerRemoved {
            worker: WorkerKey {
                worker_pool_id: "prov-a/type-b".parse().unwrap(),
                worker_group: "g".into(),
                worker_id: "w".into(),
            },
        };
        assert!(pool_error_message(&created, "static", Millis(0)).is_none());
    }
}
