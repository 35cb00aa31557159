//! Events -> Pulse messages (reference/pulse.md): exchange names, routing keys, CC routes and
//! bodies, from the state *after* the command that produced the events.
//!
//! **Invariant:** pure; the caller folds the state and owns persistence. An event maps to at
//! most one message, whose id is the event id.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};
use taskledger_core::access::AuthEvent;
use taskledger_core::queue::json::{artifact_info, StatusJson};
use taskledger_core::queue::{
    Artifact, ArtifactStorage, QueueEvent, ReasonResolved, Repeat, RunState, Task, TaskGroup,
};
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

pub const WORKER_MANAGER_EXCHANGE_PREFIX: &str = "exchange/taskcluster-worker-manager/v1/";
pub const WORKER_MANAGER_EXCHANGES: &[&str] = &[
    "worker-pool-created",
    "worker-pool-updated",
    "worker-pool-error",
    "worker-requested",
    "worker-running",
    "worker-stopped",
    "worker-removed",
    // declared for consumers' bindings; static pools have no launch configurations, so they
    // never fire
    "launch-config-created",
    "launch-config-updated",
    "launch-config-archived",
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
        body: bytes(&body),
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
        let body = m.json();
        assert!(body.get("workerId").is_none() && body.get("workerGroup").is_none());
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00.000Z");
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

#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for
mod queue_body_tests {
    use super::*;
    use taskledger_core::ids::Slug;
    use taskledger_core::queue::json::status_json;
    use taskledger_core::queue::{self, JsonText, Limits, Priority, ReasonResolved};
    use taskledger_core::time::HOUR;

    /// A queue message's body as the bridge built it before typed bodies: a `Value`, field by
    /// field.
    fn as_value(event: &QueueEvent, t: &Task) -> Option<Value> {
        let tags = json!({ "tags": serde_json::from_str::<Value>(&t.definition.tags.0).unwrap() });
        let worker = |run_id: u32, mut body: Value| {
            if let Some((g, w)) = run_worker(t, run_id) {
                body["workerGroup"] = json!(g);
                body["workerId"] = json!(w);
            }
            body
        };
        Some(match event {
            QueueEvent::TaskDefined { .. } => {
                json!({ "version": 1, "status": status_json(t), "task": tags })
            }
            QueueEvent::RunScheduled { run_id, .. } => {
                json!({ "version": 1, "status": status_json(t), "runId": run_id, "task": tags })
            }
            QueueEvent::RunClaimed {
                run_id,
                worker_group,
                worker_id,
                taken_until,
                ..
            } => json!({
                "version": 1, "status": status_json(t), "runId": run_id,
                "workerGroup": worker_group, "workerId": worker_id,
                "takenUntil": taken_until.to_rfc3339(), "task": tags,
            }),
            QueueEvent::RunResolved { run_id, .. }
            | QueueEvent::RunExceptionRecorded { run_id, .. } => worker(
                *run_id,
                json!({ "version": 1, "status": status_json(t), "runId": run_id, "task": tags }),
            ),
            QueueEvent::ArtifactCreated {
                run_id, artifact, ..
            } => json!({
                "version": 1, "status": status_json(t), "runId": run_id,
                "workerGroup": t.runs[*run_id as usize].worker_group,
                "workerId": t.runs[*run_id as usize].worker_id,
                "artifact": artifact_json(artifact),
            }),
            QueueEvent::PriorityChanged { old, new, .. } => json!({
                "version": 1, "status": status_json(t),
                "oldPriority": old.as_str(), "newPriority": new.as_str(),
            }),
            _ => return None,
        })
    }

    /// Every task message's typed body is, byte for byte, what the `Value` wrote: tags with
    /// keys out of order and characters to escape, a run resolved with and without a worker,
    /// an artifact, a priority change.
    #[test]
    fn typed_bodies_write_the_bytes_a_value_wrote() {
        let now = Millis(1_780_000_000_000);
        let limits = Limits::default();
        let mut def = crate::testing::definition(now);
        def.scheduler_id = "sched".into();
        def.routes = vec!["index.a.b".into()];
        def.priority = Priority::Low;
        def.retries = 1;
        def.tags = JsonText(r#"{"zeta":"\"q\" é\n","Alpha":"1","kind":"it"}"#.into());
        let id = Slug::nice();
        let mut task = Task::defined(id, def.clone(), vec![]);
        let mut checked = 0;
        let mut check = |events: Vec<QueueEvent>, task: &mut Task| {
            for e in &events {
                task.apply(e);
                let Some(expected) = as_value(e, task) else {
                    continue;
                };
                let m = queue_message(e, Some(task), None, None).expect("a message");
                assert_eq!(
                    String::from_utf8(m.body).unwrap(),
                    serde_json::to_string(&expected).unwrap(),
                    "{e:?}"
                );
                checked += 1;
            }
        };
        let created = queue::create_task(None, None, &[], id, def, now, &limits).unwrap();
        check(created, &mut task);
        let bumped = queue::change_priority(&task, Priority::High, false, now).unwrap();
        check(bumped, &mut task);
        // an exception resolved before any worker claimed the run: no worker fields
        let cancelled = queue::cancel_task(&task, now).unwrap();
        check(cancelled, &mut task);
        let rerun = queue::rerun_task(&task, now).unwrap();
        check(rerun, &mut task);
        let claimed = queue::claim_run(&task, 1, "g", "w", now, &limits).unwrap();
        check(claimed, &mut task);
        let artifact = Artifact {
            name: "public/ref".into(),
            storage: ArtifactStorage::Reference {
                url: "https://example.com/a".into(),
            },
            content_type: "text/plain".into(),
            expires: now.plus(HOUR),
            present: true,
        };
        let made = queue::create_artifact(Some(&task), 1, None, artifact, now).unwrap();
        check(made, &mut task);
        let failed = queue::report(&task, 1, ReasonResolved::Failed, now).unwrap();
        check(failed, &mut task);
        // and the usual task, without tags
        let (plain_id, plain_def) = (Slug::nice(), crate::testing::definition(now));
        let mut plain = Task::defined(plain_id, plain_def.clone(), vec![]);
        let created = queue::create_task(None, None, &[], plain_id, plain_def, now, &limits);
        check(created.unwrap(), &mut plain);
        // defined, pending, priority, exception, pending, running, artifact, failed; defined,
        // pending
        assert_eq!(checked, 10);
    }

    /// client-deleted is deleteClient's: the expiry reactor's removal publishes nothing.
    #[test]
    fn an_expired_clients_removal_publishes_nothing() {
        let deleted = |expired| AuthEvent::ClientDeleted {
            client_id: "c".into(),
            expired,
        };
        let called = auth_message(&deleted(false)).expect("deleteClient publishes");
        assert_eq!(
            called.exchange,
            format!("{AUTH_EXCHANGE_PREFIX}client-deleted")
        );
        assert!(auth_message(&deleted(true)).is_none());
    }

    /// A running run resolved by its deadline: task-exception names no worker, neither in the
    /// body nor in the routing key (queue.md §6.3); a worker's own exception report does.
    #[test]
    fn a_deadline_exception_names_no_worker() {
        let (now, limits) = (Millis::now(), Limits::default());
        let exception = |deadline: bool| {
            let (id, def) = (Slug::nice(), crate::testing::definition(now));
            let mut task = Task::defined(id, def.clone(), vec![]);
            let run = |events: Vec<QueueEvent>, task: &mut Task| {
                events.iter().for_each(|e| task.apply(e));
                events
            };
            run(
                queue::create_task(None, None, &[], id, def, now, &limits).unwrap(),
                &mut task,
            );
            run(
                queue::claim_run(&task, 0, "wg", "wid", now, &limits).unwrap(),
                &mut task,
            );
            let resolved = if deadline {
                run(
                    queue::exceed_deadline(&task, now.plus(2 * HOUR)).unwrap(),
                    &mut task,
                )
            } else {
                let reason = ReasonResolved::MalformedPayload;
                run(queue::report(&task, 0, reason, now).unwrap(), &mut task)
            };
            let event = resolved
                .iter()
                .find(|e| matches!(e, QueueEvent::RunResolved { .. }))
                .expect("the run is resolved");
            let m = queue_message(event, Some(&task), None, None).expect("a message");
            assert!(m.exchange.ends_with("task-exception"), "{}", m.exchange);
            (m.routing_key.clone(), m.json())
        };
        let (key, body) = exception(true);
        assert_eq!(key.split('.').nth(3), Some("_"), "{key}");
        assert_eq!(key.split('.').nth(4), Some("_"), "{key}");
        assert!(body.get("workerGroup").is_none() && body.get("workerId").is_none());
        assert_eq!(
            body["status"]["runs"][0]["reasonResolved"],
            "deadline-exceeded"
        );
        let (key, body) = exception(false);
        assert_eq!(key.split('.').nth(3), Some("wg"), "{key}");
        assert_eq!(body["workerId"], "wid");
    }
}
