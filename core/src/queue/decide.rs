//! The queue's rules: `decide` functions turn a command and the current state into events or a
//! refusal (the artifacts' in `artifacts.rs`; groups', workers' and expiry's in `upkeep.rs`);
//! `apply` (`apply.rs`) moves state and holds no rules. The clock is an argument.

use super::events::{QueueEvent, Repeat};
use super::model::{
    Priority, ReasonCreated, ReasonResolved, Resolution, Run, RunState, Task, TaskDefinition,
    TaskGroup,
};
use crate::ids::TaskId;
use crate::time::{Millis, DAY, HOUR, MINUTE};

/// Maximum runs per task.
pub const MAX_RUNS: usize = 50;
/// How far `created` may stray from the server's clock.
pub const DRIFT_MS: i64 = 15 * MINUTE;
/// Artifacts are accepted this long after a run resolved as `exception`.
pub const ARTIFACT_GRACE_MS: i64 = 25 * MINUTE;

/// Deployment settings the rules depend on.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub claim_timeout_ms: i64,
    pub max_deadline_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            claim_timeout_ms: 1200 * 1000,
            max_deadline_ms: 5 * DAY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The text of the calls that resolve, claim, reclaim or cancel (the gateway words
    /// other calls' 404s as upstream does for each).
    #[error("Task `{0}` not found. Are you sure it was created?")]
    TaskNotFound(TaskId),
    #[error("Run {run_id} not found on task `{task_id}`.")]
    RunNotFound { task_id: TaskId, run_id: u32 },
    #[error("Artifact not found")]
    ArtifactNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Input(String),
}

pub(super) type Decision = Result<Vec<QueueEvent>, QueueError>;

/// What createTask needs to know about one dependency.
#[derive(Clone, Copy, Debug)]
pub struct DependencyView {
    pub task_id: TaskId,
    /// `None` when the task does not exist.
    pub found: Option<DependencyState>,
}

#[derive(Clone, Copy, Debug)]
pub struct DependencyState {
    pub resolution: Option<Resolution>,
    pub expires: Millis,
}

fn satisfies(requires: super::model::Requires, resolution: Resolution) -> bool {
    resolution == Resolution::Completed || requires == super::model::Requires::AllResolved
}

/// From the deadline's own millisecond on, which is when the deadline timer fires (upstream
/// refuses calls a millisecond later, from `deadline < now`).
fn past_deadline(task: &Task, now: Millis) -> bool {
    now >= task.definition.deadline
}

/// Upstream's 409 for a call past the deadline (scheduleTask words it "at", the others "of").
fn deadline_conflict(task: &Task, what: &str) -> QueueError {
    let preposition = if what == "scheduled" { "at" } else { "of" };
    QueueError::Conflict(format!(
        "Task `{}` can't be {what} past its deadline {preposition} {}.",
        task.task_id, task.definition.deadline
    ))
}

/// createTask (reference/queue.md §2.1, steps 5 to 9).
pub fn create_task(
    existing: Option<&Task>,
    group: Option<&TaskGroup>,
    dependencies: &[DependencyView],
    task_id: TaskId,
    def: TaskDefinition,
    now: Millis,
    limits: &Limits,
) -> Decision {
    if def.created < now.minus(DRIFT_MS) {
        return Err(QueueError::Input(
            "`created` cannot be in the past (max 15min drift)".into(),
        ));
    }
    if def.created > now.plus(DRIFT_MS) {
        return Err(QueueError::Input(
            "`created` cannot be in the future (max 15min drift)".into(),
        ));
    }
    if def.created > def.deadline {
        return Err(QueueError::Input(
            "`deadline` cannot be later than `created`".into(),
        ));
    }
    if def.deadline < now {
        return Err(QueueError::Input("`deadline` cannot be in the past".into()));
    }
    if def.deadline > now.plus(limits.max_deadline_ms + DRIFT_MS) {
        return Err(QueueError::Input(format!(
            "`deadline` cannot be more than {} days into the future",
            limits.max_deadline_ms / DAY
        )));
    }
    if def.expires < def.deadline {
        return Err(QueueError::Input(
            "`expires` cannot be before `deadline`".into(),
        ));
    }
    if def.scopes.iter().any(|s| s.ends_with("**")) {
        return Err(QueueError::Input("scopes must not end with `**`".into()));
    }
    // the group's checks come before the task's own, as upstream's do: a repeat of a task
    // into a group sealed since gets 409 too
    if let Some(g) = group {
        if g.scheduler_id != def.scheduler_id {
            return Err(QueueError::Conflict(format!(
                "Task group `{}` contains tasks with a schedulerId other\nthan `{}`. All tasks in the same task-group must have\nthe same schedulerId.",
                g.task_group_id, def.scheduler_id
            )));
        }
        if g.sealed.is_some() {
            return Err(QueueError::Conflict(format!(
                "Task group `{}` is sealed and does not accept new tasks.",
                g.task_group_id
            )));
        }
    }
    if let Some(task) = existing {
        // as upstream compares its row: the definition with the task's current priority
        let same = task.definition.priority == task.priority && task.definition == def
            || task.definition.priority != task.priority && {
                let mut now_reads = task.definition.clone();
                now_reads.priority = task.priority;
                now_reads == def
            };
        return if same {
            Ok(repeated_definition(task, now))
        } else {
            Err(QueueError::Conflict(format!(
                "taskId `{task_id}` already used by another task.\nThis could be the result of faulty idempotency!"
            )))
        };
    }

    let mut events = Vec::new();
    let group_expires = def.expires.plus(HOUR);
    match group {
        Some(g) => {
            if g.expires < group_expires {
                events.push(QueueEvent::TaskGroupExpiresRaised {
                    task_group_id: g.task_group_id,
                    expires: group_expires,
                });
            }
        }
        None => events.push(QueueEvent::TaskGroupDefined {
            task_group_id: def.task_group_id,
            scheduler_id: def.scheduler_id.clone(),
            expires: group_expires,
        }),
    }

    // as upstream's dependency tracker: missing tasks first; only when none is missing, the
    // ones that expire before this task's deadline (in the order given)
    let missing: Vec<String> = dependencies
        .iter()
        .filter(|d| d.task_id != task_id && d.found.is_none())
        .map(|d| d.task_id.to_string())
        .collect();
    let mut expiring = Vec::new();
    let mut unsatisfied = Vec::new();
    for dep in dependencies {
        if dep.task_id == task_id {
            unsatisfied.push(task_id);
            continue;
        }
        match dep.found {
            Some(state) if state.expires < def.deadline => expiring.push(dep.task_id.to_string()),
            Some(state) if !state.resolution.is_some_and(|r| satisfies(def.requires, r)) => {
                unsatisfied.push(dep.task_id)
            }
            None | Some(_) => {}
        }
    }
    if !missing.is_empty() {
        expiring.clear();
    }
    if !missing.is_empty() || !expiring.is_empty() {
        let mut msg = String::new();
        if !missing.is_empty() {
            msg.push_str("`task.dependencies` references non-existing tasks: \n");
            let items: Vec<String> = missing.iter().map(|t| format!(" * {t}")).collect();
            msg.push_str(&items.join("\n"));
            msg.push_str("\nAll taskIds in `task.dependencies` **must** exist\nbefore the task is created.\n");
        }
        if !expiring.is_empty() {
            msg.push_str("`task.dependencies` references tasks that expires\nbefore `task.deadline` this is not allowed, see tasks: \n");
            let items: Vec<String> = expiring.iter().map(|t| format!(" * {t},")).collect();
            msg.push_str(&items.join("\n"));
            msg.push_str("\nAll taskIds in `task.dependencies` **must** have\n`task.expires` greater than the `deadline` for this task.\n");
        }
        return Err(QueueError::Input(msg));
    }
    unsatisfied.sort();
    unsatisfied.dedup();

    let schedule = unsatisfied.is_empty();
    let retries = def.retries;
    events.push(QueueEvent::TaskDefined {
        task_id,
        definition: Box::new(def),
        unsatisfied,
    });
    if schedule {
        events.push(QueueEvent::RunScheduled {
            task_id,
            run_id: 0,
            reason: ReasonCreated::Scheduled,
            retries_left: retries,
            at: now,
        });
    }
    Ok(events)
}

/// scheduleTask: run 0 of an unscheduled task, ignoring dependencies.
pub fn schedule_task(task: &Task, now: Millis) -> Decision {
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "scheduled"));
    }
    if !task.runs.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![QueueEvent::RunScheduled {
        task_id: task.task_id,
        run_id: 0,
        reason: ReasonCreated::Scheduled,
        retries_left: task.retries_left,
        at: now,
    }])
}

/// rerunTask (transitions 15 and 16).
pub fn rerun_task(task: &Task, now: Millis) -> Decision {
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "rescheduled"));
    }
    match task.last_run() {
        // upstream sends task-pending again for a pending run; a running one, nothing
        Some(r) if r.state == RunState::Pending => {
            return Ok(repeated(
                Repeat::RunPending {
                    task_id: task.task_id,
                    run_id: r.run_id,
                },
                now,
            ))
        }
        Some(r) if !r.state.is_resolved() => return Ok(vec![]),
        _ => {}
    }
    if task.runs.len() >= MAX_RUNS {
        return Err(QueueError::Conflict(format!(
            "Maximum number of runs reached ({MAX_RUNS})."
        )));
    }
    let run_id = task.runs.len() as u32;
    let retries_left = task
        .definition
        .retries
        .min((MAX_RUNS - task.runs.len() - 1) as u32);
    Ok(vec![QueueEvent::RunScheduled {
        task_id: task.task_id,
        run_id,
        reason: ReasonCreated::Rerun,
        retries_left,
        at: now,
    }])
}

/// Ends the task with `reason` and no retry: cancelTask (2, 5) and the deadline (3, 6).
fn end_task(task: &Task, reason: ReasonResolved, now: Millis) -> Vec<QueueEvent> {
    match task.last_run() {
        None => vec![QueueEvent::RunExceptionRecorded {
            task_id: task.task_id,
            run_id: 0,
            reason,
            at: now,
        }],
        Some(run) if !run.state.is_resolved() => vec![QueueEvent::RunResolved {
            task_id: task.task_id,
            run_id: run.run_id,
            reason,
            at: now,
        }],
        Some(_) => vec![],
    }
}

pub fn cancel_task(task: &Task, now: Millis) -> Decision {
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "canceled"));
    }
    match task.last_run() {
        // canceled already: task-exception again, as upstream
        Some(r)
            if r.state == RunState::Exception
                && r.reason_resolved == Some(ReasonResolved::Canceled) =>
        {
            Ok(repeated(
                Repeat::RunResolved {
                    task_id: task.task_id,
                    run_id: r.run_id,
                },
                now,
            ))
        }
        _ => Ok(end_task(task, ReasonResolved::Canceled, now)),
    }
}

/// The deadline reactor's command: a no-op before the deadline or on a resolved task.
pub fn exceed_deadline(task: &Task, now: Millis) -> Decision {
    if !past_deadline(task, now) {
        return Ok(vec![]);
    }
    Ok(end_task(task, ReasonResolved::DeadlineExceeded, now))
}

fn run_of(task: &Task, run_id: u32) -> Result<&Run, QueueError> {
    task.runs
        .get(run_id as usize)
        .ok_or(QueueError::RunNotFound {
            task_id: task.task_id,
            run_id,
        })
}

fn is_last(task: &Task, run_id: u32) -> bool {
    task.runs.len() == run_id as usize + 1
}

/// claimWork / claimTask (transition 4).
pub fn claim_run(
    task: &Task,
    run_id: u32,
    worker_group: &str,
    worker_id: &str,
    now: Millis,
    limits: &Limits,
) -> Decision {
    let run = run_of(task, run_id)?;
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "claimed"));
    }
    if !is_last(task, run_id) || run.state != RunState::Pending {
        return Err(QueueError::Conflict(format!(
            "Run {run_id} was already claimed by another worker."
        )));
    }
    Ok(vec![QueueEvent::RunClaimed {
        task_id: task.task_id,
        run_id,
        task_queue_id: task.definition.task_queue_id.clone(),
        worker_group: worker_group.to_string(),
        worker_id: worker_id.to_string(),
        taken_until: now.plus(limits.claim_timeout_ms),
        at: now,
    }])
}

/// claimTask's check before it looks at the worker (upstream's order: the task, the scopes,
/// the deadline, then a quarantined worker's empty answer, then the run).
pub fn claimable_before_deadline(task: &Task, now: Millis) -> Result<(), QueueError> {
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "claimed"));
    }
    Ok(())
}

/// reclaimTask (transition 7): never moves `takenUntil` backwards.
pub fn reclaim_run(task: &Task, run_id: u32, now: Millis, limits: &Limits) -> Decision {
    let run = run_of(task, run_id)?;
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "reclaimed"));
    }
    if !is_last(task, run_id) || run.state != RunState::Running {
        return Err(QueueError::Conflict(format!(
            "Run {run_id} on task `{}` is resolved or not running.",
            task.task_id
        )));
    }
    let taken_until = now
        .plus(limits.claim_timeout_ms)
        .max(run.taken_until.unwrap_or(now));
    Ok(vec![QueueEvent::RunReclaimed {
        task_id: task.task_id,
        run_id,
        taken_until,
    }])
}

/// Resolution of the running run with `reason`, plus the retry it earns.
fn resolve_running(task: &Task, run: &Run, reason: ReasonResolved, now: Millis) -> Vec<QueueEvent> {
    let mut events = vec![QueueEvent::RunResolved {
        task_id: task.task_id,
        run_id: run.run_id,
        reason,
        at: now,
    }];
    if let Some(retry) = reason.retry_reason() {
        if task.retries_left > 0 && task.runs.len() < MAX_RUNS {
            events.push(QueueEvent::RunScheduled {
                task_id: task.task_id,
                run_id: run.run_id + 1,
                reason: retry,
                retries_left: task.retries_left - 1,
                at: now,
            });
        }
    }
    events
}

/// reportCompleted / reportFailed / reportException (transitions 8 to 12). A report repeated
/// to the same effect is idempotent while the run is still the last one, or for an
/// exception, while at most one run follows it (its retry, or a rerun); otherwise, as for
/// a report that does not match the run, 409 (queue.md §6.1, as Taskcluster's queue checks).
pub fn report(task: &Task, run_id: u32, reason: ReasonResolved, now: Millis) -> Decision {
    let run = run_of(task, run_id)?;
    if is_last(task, run_id) && run.state == RunState::Running {
        return Ok(resolve_running(task, run, reason, now));
    }
    let runs_after = task.runs.len() - 1 - run_id as usize;
    let same = run.state == reason.state()
        && match reason.state() {
            RunState::Exception => run.reason_resolved == Some(reason) && runs_after <= 1,
            RunState::Completed | RunState::Failed => runs_after == 0,
            RunState::Pending | RunState::Running => false,
        };
    if same {
        return Ok(repeated(
            Repeat::RunResolved {
                task_id: task.task_id,
                run_id,
            },
            now,
        ));
    }
    // reportCompleted and reportFailed first refuse a run that is in neither state
    if matches!(reason.state(), RunState::Completed | RunState::Failed)
        && run.state != RunState::Running
        && run.state != reason.state()
    {
        return Err(QueueError::Conflict(format!(
            "Run {run_id} of task `{}` is not running or {}.",
            task.task_id,
            reason.state().as_str()
        )));
    }
    Err(QueueError::Conflict(format!(
        "Run {run_id} on task `{}` is resolved or not running.",
        task.task_id
    )))
}

/// Claim expiry (transition 13): only when the claim is still exactly the one that expired.
pub fn expire_claim(task: &Task, run_id: u32, taken_until: Millis, now: Millis) -> Decision {
    let Ok(run) = run_of(task, run_id) else {
        return Ok(vec![]);
    };
    let current = is_last(task, run_id)
        && run.state == RunState::Running
        && run.taken_until == Some(taken_until)
        && now >= taken_until;
    if !current || past_deadline(task, now) {
        return Ok(vec![]);
    }
    Ok(resolve_running(
        task,
        run,
        ReasonResolved::ClaimExpired,
        now,
    ))
}

/// A dependency resolved: mark the edge, and schedule run 0 when it was the last one.
pub fn satisfy_dependency(
    task: &Task,
    dependency: TaskId,
    resolution: Resolution,
    now: Millis,
) -> Decision {
    if !task.unsatisfied.contains(&dependency) || !satisfies(task.definition.requires, resolution) {
        return Ok(vec![]);
    }
    let mut events = vec![QueueEvent::DependencySatisfied {
        task_id: task.task_id,
        dependency,
    }];
    if task.unsatisfied.len() == 1 && task.runs.is_empty() && !past_deadline(task, now) {
        events.push(QueueEvent::RunScheduled {
            task_id: task.task_id,
            run_id: 0,
            reason: ReasonCreated::Scheduled,
            retries_left: task.retries_left,
            at: now,
        });
    }
    Ok(events)
}

/// changeTaskPriority (§8), or one task's share of changeTaskGroupPriority (`in_group`),
/// which is held to the same rules but recorded as `GroupPriorityApplied`.
pub fn change_priority(task: &Task, new: Priority, in_group: bool, now: Millis) -> Decision {
    if past_deadline(task, now) {
        return Err(deadline_conflict(task, "reprioritized"));
    }
    // "never resolved" (§8): a task resolved and then rerun is not reprioritized either
    if task.ever_resolved() || task.priority == new {
        return Err(QueueError::Conflict(format!(
            "Task `{}` is already resolved and cannot be reprioritized.",
            task.task_id
        )));
    }
    let (task_id, old) = (task.task_id, task.priority);
    Ok(vec![if in_group {
        QueueEvent::GroupPriorityApplied { task_id, old, new }
    } else {
        QueueEvent::PriorityChanged { task_id, old, new }
    }])
}

/// The one event of a call repeated to the same effect.
pub(super) fn repeated(repeat: Repeat, at: Millis) -> Vec<QueueEvent> {
    vec![QueueEvent::Repeated { repeat, at }]
}

/// createTask repeated with the same definition: task-defined again, and task-pending when
/// the first run is still pending (as upstream).
fn repeated_definition(task: &Task, at: Millis) -> Vec<QueueEvent> {
    let task_id = task.task_id;
    let mut events = repeated(Repeat::TaskDefined { task_id }, at);
    if task.runs.len() == 1 && task.runs[0].state == RunState::Pending {
        events.extend(repeated(Repeat::RunPending { task_id, run_id: 0 }, at));
    }
    events
}
