//! Queue events: past-tense facts. This enum is also wire format V1: postcard tags variants by
//! index, so variants are only ever appended, never edited, reordered or removed.

use super::model::{Artifact, Priority, ReasonCreated, ReasonResolved, TaskDefinition};
use crate::ids::{TaskGroupId, TaskId, TaskQueueId};
use crate::time::Millis;
use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum QueueEvent {
    TaskDefined {
        task_id: TaskId,
        /// Boxed: a definition is several times larger than any other event, and events are
        /// decoded and moved by the batch (postcard encodes a box as its contents).
        definition: Box<TaskDefinition>,
        /// dependencies not satisfied at creation, sorted
        unsatisfied: Vec<TaskId>,
    },
    /// A new `pending` run.
    RunScheduled {
        task_id: TaskId,
        run_id: u32,
        reason: ReasonCreated,
        retries_left: u32,
        at: Millis,
    },
    RunClaimed {
        task_id: TaskId,
        run_id: u32,
        task_queue_id: TaskQueueId,
        worker_group: String,
        worker_id: String,
        taken_until: Millis,
        at: Millis,
    },
    RunReclaimed {
        task_id: TaskId,
        run_id: u32,
        taken_until: Millis,
    },
    RunResolved {
        task_id: TaskId,
        run_id: u32,
        reason: ReasonResolved,
        at: Millis,
    },
    /// An unscheduled task canceled or past its deadline: run 0 born as `exception`.
    RunExceptionRecorded {
        task_id: TaskId,
        run_id: u32,
        reason: ReasonResolved,
        at: Millis,
    },
    DependencySatisfied {
        task_id: TaskId,
        dependency: TaskId,
    },
    PriorityChanged {
        task_id: TaskId,
        old: Priority,
        new: Priority,
    },
    TaskGroupDefined {
        task_group_id: TaskGroupId,
        scheduler_id: String,
        expires: Millis,
    },
    TaskGroupExpiresRaised {
        task_group_id: TaskGroupId,
        expires: Millis,
    },
    TaskGroupSealed {
        task_group_id: TaskGroupId,
        at: Millis,
    },
    ArtifactCreated {
        task_id: TaskId,
        run_id: u32,
        artifact: Artifact,
    },
    ArtifactFinished {
        task_id: TaskId,
        run_id: u32,
        name: String,
    },
    WorkerSeen {
        task_queue_id: TaskQueueId,
        worker_group: String,
        worker_id: String,
        at: Millis,
        expires: Millis,
    },
    WorkerQuarantined {
        task_queue_id: TaskQueueId,
        worker_group: String,
        worker_id: String,
        until: Millis,
        info: String,
        by: String,
        at: Millis,
    },
    /// changeTaskGroupPriority finished: `tasks_affected` tasks of the group were changed to
    /// `priority`, each by its own `GroupPriorityApplied` (`PriorityChanged` in logs written
    /// before that variant existed).
    TaskGroupPriorityChanged {
        task_group_id: TaskGroupId,
        priority: Priority,
        tasks_affected: u32,
        at: Millis,
    },
    /// The task passed its `expires`: it, its runs, artifacts and dependency records are gone
    /// (its events stay in the log).
    TaskExpired {
        task_id: TaskId,
    },
    /// The task group passed its `expires`.
    TaskGroupExpired {
        task_group_id: TaskGroupId,
    },
    /// The artifact passed its own `expires` (before its task's): it is gone.
    ArtifactExpired {
        task_id: TaskId,
        run_id: u32,
        name: String,
    },
    /// A call repeated to the same effect (createTask with the same definition, a report of
    /// the run's own resolution, ...). Nothing changes, but Taskcluster publishes the call's
    /// message again, and so does the bridge: a consumer that missed it can get it by
    /// repeating the call. The log also tells who repeated what, when.
    Repeated {
        repeat: Repeat,
        at: Millis,
    },
    /// One task's share of changeTaskGroupPriority: its priority changed as by
    /// `PriorityChanged`, but Taskcluster publishes no task-priority-changed for it, only the
    /// group's task-group-priority-changed that closes the call. Last in the enum (see above).
    GroupPriorityApplied {
        task_id: TaskId,
        old: Priority,
        new: Priority,
    },
}

/// What a repeated call publishes again.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Repeat {
    /// createTask: task-defined.
    TaskDefined { task_id: TaskId },
    /// createTask or rerunTask of a task whose run is pending: task-pending.
    RunPending { task_id: TaskId, run_id: u32 },
    /// A report of the run's resolution, or cancelTask of a canceled task: the run's
    /// task-completed, task-failed or task-exception.
    RunResolved { task_id: TaskId, run_id: u32 },
    /// createArtifact or finishArtifact of an artifact already there: artifact-created.
    ArtifactCreated {
        task_id: TaskId,
        run_id: u32,
        name: String,
    },
    /// sealTaskGroup of a sealed group: task-group-sealed.
    TaskGroupSealed { task_group_id: TaskGroupId },
}

impl Repeat {
    pub fn stream(&self) -> Stream {
        match self {
            Repeat::TaskDefined { task_id }
            | Repeat::RunPending { task_id, .. }
            | Repeat::RunResolved { task_id, .. }
            | Repeat::ArtifactCreated { task_id, .. } => Stream::Task(*task_id),
            Repeat::TaskGroupSealed { task_group_id } => Stream::TaskGroup(*task_group_id),
        }
    }
}

/// The aggregate an event belongs to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Stream {
    Task(TaskId),
    TaskGroup(TaskGroupId),
    Worker(String),
}

impl Stream {
    pub fn id(&self) -> String {
        match self {
            Stream::Task(t) => format!("task/{t}"),
            Stream::TaskGroup(g) => format!("task-group/{g}"),
            Stream::Worker(w) => format!("worker/{w}"),
        }
    }
}

pub fn worker_key(q: &TaskQueueId, group: &str, id: &str) -> String {
    format!("{q}/{group}/{id}")
}

/// Whether an encoded queue event resolves a run, read without decoding the event's fields:
/// postcard writes an enum's variant index before its fields, and the codec only ever appends
/// variants (golden tests pin the order). Decode an `Envelope<RunResolution>` to learn it;
/// readers that care about a few kinds of event (the dependency reactor) skip the rest cheaply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RunResolution(pub bool);

impl RunResolution {
    /// `QueueEvent::RunResolved` and `QueueEvent::RunExceptionRecorded`.
    const VARIANTS: [u32; 2] = [4, 5];
}

impl<'de> Deserialize<'de> for RunResolution {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Peek;
        impl<'de> serde::de::Visitor<'de> for Peek {
            type Value = RunResolution;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a queue event")
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> Result<RunResolution, A::Error> {
                // the variant's fields stay unread: the payload is the envelope's last field
                let (index, _fields): (u32, _) = data.variant()?;
                Ok(RunResolution(RunResolution::VARIANTS.contains(&index)))
            }
        }
        d.deserialize_enum("QueueEvent", &[], Peek)
    }
}

impl QueueEvent {
    pub fn stream(&self) -> Stream {
        match self {
            QueueEvent::TaskDefined { task_id, .. }
            | QueueEvent::RunScheduled { task_id, .. }
            | QueueEvent::RunClaimed { task_id, .. }
            | QueueEvent::RunReclaimed { task_id, .. }
            | QueueEvent::RunResolved { task_id, .. }
            | QueueEvent::RunExceptionRecorded { task_id, .. }
            | QueueEvent::DependencySatisfied { task_id, .. }
            | QueueEvent::PriorityChanged { task_id, .. }
            | QueueEvent::GroupPriorityApplied { task_id, .. }
            | QueueEvent::ArtifactCreated { task_id, .. }
            | QueueEvent::ArtifactFinished { task_id, .. }
            | QueueEvent::TaskExpired { task_id }
            | QueueEvent::ArtifactExpired { task_id, .. } => Stream::Task(*task_id),
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => Stream::TaskGroup(*task_group_id),
            QueueEvent::WorkerSeen {
                task_queue_id,
                worker_group,
                worker_id,
                ..
            }
            | QueueEvent::WorkerQuarantined {
                task_queue_id,
                worker_group,
                worker_id,
                ..
            } => Stream::Worker(worker_key(task_queue_id, worker_group, worker_id)),
            QueueEvent::Repeated { repeat, .. } => repeat.stream(),
        }
    }

    /// The event's type name, carried in log headers.
    pub fn type_name(&self) -> &'static str {
        match self {
            QueueEvent::TaskDefined { .. } => "TaskDefined",
            QueueEvent::RunScheduled { .. } => "RunScheduled",
            QueueEvent::RunClaimed { .. } => "RunClaimed",
            QueueEvent::RunReclaimed { .. } => "RunReclaimed",
            QueueEvent::RunResolved { .. } => "RunResolved",
            QueueEvent::RunExceptionRecorded { .. } => "RunExceptionRecorded",
            QueueEvent::DependencySatisfied { .. } => "DependencySatisfied",
            QueueEvent::PriorityChanged { .. } => "PriorityChanged",
            QueueEvent::TaskGroupDefined { .. } => "TaskGroupDefined",
            QueueEvent::TaskGroupExpiresRaised { .. } => "TaskGroupExpiresRaised",
            QueueEvent::TaskGroupSealed { .. } => "TaskGroupSealed",
            QueueEvent::ArtifactCreated { .. } => "ArtifactCreated",
            QueueEvent::ArtifactFinished { .. } => "ArtifactFinished",
            QueueEvent::WorkerSeen { .. } => "WorkerSeen",
            QueueEvent::WorkerQuarantined { .. } => "WorkerQuarantined",
            QueueEvent::TaskGroupPriorityChanged { .. } => "TaskGroupPriorityChanged",
            QueueEvent::TaskExpired { .. } => "TaskExpired",
            QueueEvent::TaskGroupExpired { .. } => "TaskGroupExpired",
            QueueEvent::ArtifactExpired { .. } => "ArtifactExpired",
            QueueEvent::Repeated { .. } => "Repeated",
            QueueEvent::GroupPriorityApplied { .. } => "GroupPriorityApplied",
        }
    }
}
