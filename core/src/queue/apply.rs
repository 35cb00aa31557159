//! `apply`: how each event moves a task or a task group. No rules live here; `decide` made
//! them.

use super::events::QueueEvent;
use super::model::{ReasonCreated, Run, RunState, Task, TaskDefinition, TaskGroup};
use crate::ids::TaskId;

impl Task {
    /// The state a `TaskDefined` event creates.
    pub fn defined(task_id: TaskId, definition: TaskDefinition, unsatisfied: Vec<TaskId>) -> Task {
        Task {
            task_id,
            priority: definition.priority,
            retries_left: definition.retries,
            definition,
            runs: Vec::new(),
            unsatisfied,
        }
    }

    /// Moves state; no rules. Events of other aggregates are ignored.
    pub fn apply(&mut self, event: &QueueEvent) {
        match event {
            QueueEvent::TaskDefined { .. } => {}
            QueueEvent::RunScheduled {
                run_id,
                reason,
                retries_left,
                at,
                ..
            } => {
                self.retries_left = *retries_left;
                self.runs.push(Run {
                    run_id: *run_id,
                    state: RunState::Pending,
                    reason_created: *reason,
                    reason_resolved: None,
                    worker_group: None,
                    worker_id: None,
                    taken_until: None,
                    scheduled: *at,
                    started: None,
                    resolved: None,
                });
            }
            QueueEvent::RunClaimed {
                run_id,
                worker_group,
                worker_id,
                taken_until,
                at,
                ..
            } => {
                if let Some(run) = self.runs.get_mut(*run_id as usize) {
                    run.state = RunState::Running;
                    run.worker_group = Some(worker_group.clone());
                    run.worker_id = Some(worker_id.clone());
                    run.taken_until = Some(*taken_until);
                    run.started = Some(*at);
                }
            }
            QueueEvent::RunReclaimed {
                run_id,
                taken_until,
                ..
            } => {
                if let Some(run) = self.runs.get_mut(*run_id as usize) {
                    run.taken_until = Some(*taken_until);
                }
            }
            QueueEvent::RunResolved {
                run_id, reason, at, ..
            } => {
                if let Some(run) = self.runs.get_mut(*run_id as usize) {
                    run.state = reason.state();
                    run.reason_resolved = Some(*reason);
                    run.resolved = Some(*at);
                }
            }
            QueueEvent::RunExceptionRecorded {
                run_id, reason, at, ..
            } => self.runs.push(Run {
                run_id: *run_id,
                state: RunState::Exception,
                reason_created: ReasonCreated::Exception,
                reason_resolved: Some(*reason),
                worker_group: None,
                worker_id: None,
                taken_until: None,
                scheduled: *at,
                started: None,
                resolved: Some(*at),
            }),
            QueueEvent::DependencySatisfied { dependency, .. } => {
                self.unsatisfied.retain(|d| d != dependency);
            }
            QueueEvent::PriorityChanged { new, .. }
            | QueueEvent::GroupPriorityApplied { new, .. } => self.priority = *new,
            QueueEvent::TaskGroupDefined { .. }
            | QueueEvent::TaskGroupExpiresRaised { .. }
            | QueueEvent::TaskGroupSealed { .. }
            | QueueEvent::ArtifactCreated { .. }
            | QueueEvent::ArtifactFinished { .. }
            | QueueEvent::WorkerSeen { .. }
            | QueueEvent::WorkerQuarantined { .. }
            | QueueEvent::TaskGroupPriorityChanged { .. }
            | QueueEvent::TaskGroupExpired { .. }
            | QueueEvent::ArtifactExpired { .. }
            | QueueEvent::Repeated { .. } => {}
            // the task is gone: its holder drops it (see `Task::survives`)
            QueueEvent::TaskExpired { .. } => {}
        }
    }

    /// Whether the task still exists after `event` (of its own stream).
    pub fn survives(event: &QueueEvent) -> bool {
        !matches!(event, QueueEvent::TaskExpired { .. })
    }
}

impl TaskGroup {
    pub fn apply(group: Option<TaskGroup>, event: &QueueEvent) -> Option<TaskGroup> {
        match event {
            QueueEvent::TaskGroupDefined {
                task_group_id,
                scheduler_id,
                expires,
            } => Some(TaskGroup {
                task_group_id: *task_group_id,
                scheduler_id: scheduler_id.clone(),
                expires: *expires,
                sealed: None,
            }),
            QueueEvent::TaskGroupExpiresRaised { expires, .. } => group.map(|mut g| {
                g.expires = *expires;
                g
            }),
            QueueEvent::TaskGroupSealed { at, .. } => group.map(|mut g| {
                g.sealed = Some(*at);
                g
            }),
            QueueEvent::TaskGroupExpired { .. } => None,
            QueueEvent::TaskDefined { .. }
            | QueueEvent::RunScheduled { .. }
            | QueueEvent::RunClaimed { .. }
            | QueueEvent::RunReclaimed { .. }
            | QueueEvent::RunResolved { .. }
            | QueueEvent::RunExceptionRecorded { .. }
            | QueueEvent::DependencySatisfied { .. }
            | QueueEvent::PriorityChanged { .. }
            | QueueEvent::GroupPriorityApplied { .. }
            | QueueEvent::ArtifactCreated { .. }
            | QueueEvent::ArtifactFinished { .. }
            | QueueEvent::WorkerSeen { .. }
            | QueueEvent::WorkerQuarantined { .. }
            | QueueEvent::TaskGroupPriorityChanged { .. }
            | QueueEvent::TaskExpired { .. }
            | QueueEvent::ArtifactExpired { .. }
            | QueueEvent::Repeated { .. } => group,
        }
    }
}
