//! The rules outside a task's own runs: task groups (sealing, the record of a group's priority
//! change), workers seen and declared, and expiry of tasks, artifacts and groups.

use super::decide::{repeated, Decision};
use super::events::{QueueEvent, Repeat};
use super::model::{Artifact, Priority, Task, TaskGroup};
use crate::ids::{TaskId, TaskQueueId};
use crate::time::{Millis, DAY, MINUTE};

/// A task past its `expires` goes, once resolved (every task resolves by its deadline, which
/// is never after `expires`; one the deadline reactor has not reached yet waits for it).
pub fn expire_task(task: &Task, now: Millis) -> Decision {
    Ok(
        if task.definition.expires <= now && task.resolution().is_some() {
            vec![QueueEvent::TaskExpired {
                task_id: task.task_id,
            }]
        } else {
            vec![]
        },
    )
}

/// An artifact past its own `expires` goes (its task may live on; upstream's expire-artifacts).
pub fn expire_artifact(task_id: TaskId, run_id: u32, artifact: &Artifact, now: Millis) -> Decision {
    Ok(if artifact.expires <= now {
        vec![QueueEvent::ArtifactExpired {
            task_id,
            run_id,
            name: artifact.name.clone(),
        }]
    } else {
        vec![]
    })
}

/// A task group past its `expires` (at least an hour after its last task's) goes.
pub fn expire_group(group: &TaskGroup, now: Millis) -> Decision {
    Ok(if group.expires <= now {
        vec![QueueEvent::TaskGroupExpired {
            task_group_id: group.task_group_id,
        }]
    } else {
        vec![]
    })
}

pub fn seal_group(group: &TaskGroup, now: Millis) -> Decision {
    if group.sealed.is_some() {
        return Ok(repeated(
            Repeat::TaskGroupSealed {
                task_group_id: group.task_group_id,
            },
            now,
        ));
    }
    Ok(vec![QueueEvent::TaskGroupSealed {
        task_group_id: group.task_group_id,
        at: now,
    }])
}

/// The record that changeTaskGroupPriority finished, after its per-task changes (upstream
/// publishes task-group-priority-changed then, even when no task changed).
pub fn record_group_priority_change(
    group: &TaskGroup,
    priority: Priority,
    tasks_affected: u32,
    now: Millis,
) -> Decision {
    Ok(vec![QueueEvent::TaskGroupPriorityChanged {
        task_group_id: group.task_group_id,
        priority,
        tasks_affected,
        at: now,
    }])
}

/// A worker seen by claimWork, recorded at most every 30 minutes per worker.
pub fn worker_seen(
    task_queue_id: &TaskQueueId,
    worker_group: &str,
    worker_id: &str,
    last_seen: Option<Millis>,
    now: Millis,
) -> Vec<QueueEvent> {
    if last_seen.is_some_and(|t| now < t.plus(30 * MINUTE)) {
        return vec![];
    }
    vec![QueueEvent::WorkerSeen {
        task_queue_id: task_queue_id.clone(),
        worker_group: worker_group.to_string(),
        worker_id: worker_id.to_string(),
        at: now,
        expires: now.plus(DAY),
    }]
}

/// Whether a worker is still listed and found: until its expiry, and past it while
/// quarantined (as upstream, so a quarantine stays visible).
pub fn worker_live(expires: Millis, quarantine_until: Option<Millis>, now: Millis) -> bool {
    expires > now || quarantine_until.is_some_and(|q| q > now)
}

/// declareWorker's expiry: the one given, or, without one (upstream's coalesce), a live
/// worker's own (`stored`: its expiry and quarantine), and a day for a new or expired one.
pub fn declared_expiry(
    given: Option<Millis>,
    stored: Option<(Millis, Option<Millis>)>,
    now: Millis,
) -> Millis {
    given.unwrap_or_else(|| {
        stored
            .filter(|(expires, quarantine_until)| worker_live(*expires, *quarantine_until, now))
            .map_or(now.plus(DAY), |(expires, _)| expires)
    })
}
