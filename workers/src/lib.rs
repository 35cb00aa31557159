//! taskledger-workers: reactors that turn events and time into commands.
//!
//! - `timers`: claim expiry and deadlines, from the projection's time-ordered `timers` column
//!   family; each fires within milliseconds of its instant.
//! - `dependencies`: tails the queue log from its own checkpoint; when a task resolves, tells
//!   each dependent.
//! - `builtin`: Taskcluster's built-in workers, `built-in/succeed` and `built-in/fail`.
//! - `expiry`: clients, workers, pool errors, tasks, artifacts, groups, objects, secrets and
//!   index entries and namespaces past their `expires`, removed by events.
//! - `index`: tails the queue log from its own checkpoint; when a run completes, indexes its
//!   task under its `index.` routes.
//! - `worker`: `taskledger worker`, generic-worker's protocol and process engine, which talks
//!   to any Taskcluster-compatible queue over HTTP.
//!
//! Boundary: reactors only send commands to the engine; every rule stays in `core`.

mod expiry;
mod index;
pub mod mail;
pub mod worker;

pub use expiry::{
    run_client_expiry, run_index_expiry, run_object_expiry, run_secret_expiry, run_task_expiry,
    run_worker_expiry,
};
pub use index::{run_indexing, INDEXER_CONSUMER};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::codec;
use taskledger_core::envelope::{Actor, Envelope};
use taskledger_core::log::{EventLog, QUEUE_TOPIC};
use taskledger_core::queue::{QueueEvent, ReasonResolved, RunResolution};
use taskledger_core::time::Millis;
use taskledger_projections::engine::QUEUE_PARTITION;
use taskledger_projections::keys::TimerKind;
use taskledger_projections::role::WriterRole;
use taskledger_projections::{Engine, Outcome, QueueCommand};

/// Longest sleep between timer scans when nothing wakes the reactor earlier.
const IDLE: Duration = Duration::from_secs(1);

/// Returns at once when this process writes the partition; otherwise waits until it does
/// (another node's reactors act meanwhile) and returns false, so the caller starts over.
async fn writing(role: &WriterRole) -> bool {
    if role.is_writer() {
        return true;
    }
    let mut changes = role.writer_changes();
    let _ = changes.wait_for(|w| *w).await;
    false
}

/// Fires claim-expiry and deadline timers as they come due.
pub async fn run_timers(engine: Engine) {
    let mut committed = engine.committed();
    let mut fired: HashSet<(Millis, u8, [u8; 16], u32)> = HashSet::new();
    loop {
        if !writing(engine.role()).await {
            fired.clear();
            continue;
        }
        let now = Millis::now();
        let due = match engine.view().due_timers(now, 512) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "timer scan failed");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        let keys: HashSet<_> = due
            .iter()
            .map(|(t, k, id, r)| (*t, *k as u8, id.0, *r))
            .collect();
        fired.retain(|k| keys.contains(k));
        for (at, kind, task_id, run_id) in due {
            if !fired.insert((at, kind as u8, task_id.0, run_id)) {
                continue;
            }
            let (name, cmd) = match kind {
                TimerKind::ClaimExpiry => (
                    "claim-resolver",
                    QueueCommand::ExpireClaim {
                        task_id,
                        run_id,
                        taken_until: at,
                    },
                ),
                TimerKind::Deadline => (
                    "deadline-resolver",
                    QueueCommand::ExceedDeadline { task_id },
                ),
            };
            if let Err(e) = engine.execute(Actor::system(name), cmd).await {
                tracing::warn!(error = %e, %task_id, "timer command failed");
            }
        }
        let wait = match engine.view().next_timer() {
            Ok(Some(t)) => Duration::from_millis(
                (t.0 - Millis::now().0).clamp(0, IDLE.as_millis() as i64) as u64,
            ),
            _ => IDLE,
        };
        if wait.is_zero() && !fired.is_empty() {
            // everything due was fired already; wait for its effect or for new timers
            let _ = tokio::time::timeout(IDLE / 10, committed.changed()).await;
        } else {
            let _ = tokio::time::timeout(wait, committed.changed()).await;
        }
    }
}

/// The dependency reactor's checkpoint name.
pub const DEPENDENCY_CONSUMER: &str = "dependency-reactor";

/// How often at most a reactor tailing the queue log (dependencies, route indexer) writes its
/// checkpoint while events keep coming.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Tells dependents when a task resolves. Resumes from its stored offset after a restart;
/// commands are idempotent, so replaying a few events twice is harmless.
///
/// The cursor lives in memory (`QueueCursor`); the checkpoint follows it within a second of
/// the last event handled, so a crash replays at most a second of events, which the
/// idempotent commands absorb.
pub async fn run_dependencies<L: EventLog + 'static>(engine: Engine, log: Arc<L>) {
    let mut committed = engine.committed();
    let view = engine.view().clone();
    // None until read from the checkpoint, and again whenever the role was lost, so a
    // regained partition starts from it
    let mut cursor: Option<QueueCursor> = None;
    loop {
        if !writing(engine.role()).await {
            cursor = None;
            continue;
        }
        let cursor = match &mut cursor {
            Some(c) => c,
            None => match view.consumer_offset(DEPENDENCY_CONSUMER, QUEUE_TOPIC, QUEUE_PARTITION) {
                Ok(o) => cursor.insert(QueueCursor::new(&view, DEPENDENCY_CONSUMER, o)),
                Err(e) => {
                    tracing::error!(error = %e, "dependency checkpoint unreadable");
                    tokio::time::sleep(IDLE).await;
                    continue;
                }
            },
        };
        let offset = cursor.at;
        let batch = match log.read(QUEUE_TOPIC, QUEUE_PARTITION, offset, 1024).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "dependency reactor cannot read the log");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        if batch.records.is_empty() {
            // caught up (or only markers the log skips, which move the position past them)
            cursor.advance(batch.next);
            if cursor.at == offset {
                let _ = tokio::time::timeout(cursor.idle_wait(), committed.changed()).await;
            }
            continue;
        }
        let mut handled = offset;
        for r in &batch.records {
            if let Some(env) = resolution(r) {
                if let Err(e) = on_event(&engine, &env).await {
                    tracing::warn!(error = %e, "dependency resolution failed; will retry");
                    tokio::time::sleep(IDLE).await;
                    break;
                }
            }
            handled = r.offset + 1;
        }
        cursor.advance(handled);
    }
}

/// A reactor's position in the queue log, and the checkpoint that follows it under the
/// reactor's consumer name: written when there is progress and the last write is a second
/// old (`CHECKPOINT_EVERY`). Writing it after every group commit cost a RocksDB write per
/// commit beside the writer's own.
struct QueueCursor {
    view: taskledger_projections::QueueView,
    consumer: &'static str,
    /// Where the reactor reads next.
    at: u64,
    /// The checkpoint as last written, and when.
    stored: u64,
    stored_at: std::time::Instant,
}

impl QueueCursor {
    fn new(
        view: &taskledger_projections::QueueView,
        consumer: &'static str,
        at: u64,
    ) -> QueueCursor {
        QueueCursor {
            view: view.clone(),
            consumer,
            at,
            stored: at,
            stored_at: std::time::Instant::now(),
        }
    }

    /// Moves on to `next` (never back), writing the checkpoint if it is due.
    fn advance(&mut self, next: u64) {
        self.at = self.at.max(next);
        if self.at <= self.stored || self.stored_at.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        let (view, consumer) = (&self.view, self.consumer);
        match view.store_consumer_offset(consumer, QUEUE_TOPIC, QUEUE_PARTITION, self.at) {
            Ok(()) => (self.stored, self.stored_at) = (self.at, std::time::Instant::now()),
            Err(e) => tracing::error!(consumer, error = %e, "reactor checkpoint write failed"),
        }
    }

    /// How long a reactor that caught up waits for the next commit: until progress not
    /// written yet is due to be, or `IDLE`.
    fn idle_wait(&self) -> Duration {
        if self.stored < self.at {
            CHECKPOINT_EVERY.saturating_sub(self.stored_at.elapsed())
        } else {
            IDLE
        }
    }
}

/// The event of `record` if it resolves a run (`RunResolved`, `RunExceptionRecorded`). Most
/// events resolve none: that is learnt from the variant index alone, without decoding the
/// event (a task definition is most of the log's bytes).
fn resolution(record: &taskledger_core::log::Stored) -> Option<Envelope<QueueEvent>> {
    let resolves =
        codec::decode::<Envelope<RunResolution>>(&record.value).is_ok_and(|head| head.payload.0);
    resolves
        .then(|| codec::decode::<Envelope<QueueEvent>>(&record.value).ok())
        .flatten()
}

async fn on_event(
    engine: &Engine,
    env: &Envelope<QueueEvent>,
) -> Result<(), taskledger_projections::EngineError> {
    let (task_id, run_id) = match &env.payload {
        QueueEvent::RunResolved {
            task_id, run_id, ..
        }
        | QueueEvent::RunExceptionRecorded {
            task_id, run_id, ..
        } => (*task_id, *run_id),
        // no run resolved (a repeated resolution was handled when it first happened)
        QueueEvent::TaskDefined { .. }
        | QueueEvent::RunScheduled { .. }
        | QueueEvent::RunClaimed { .. }
        | QueueEvent::RunReclaimed { .. }
        | QueueEvent::DependencySatisfied { .. }
        | QueueEvent::PriorityChanged { .. }
        | QueueEvent::TaskGroupDefined { .. }
        | QueueEvent::TaskGroupExpiresRaised { .. }
        | QueueEvent::TaskGroupSealed { .. }
        | QueueEvent::TaskGroupPriorityChanged { .. }
        | QueueEvent::GroupPriorityApplied { .. }
        | QueueEvent::ArtifactCreated { .. }
        | QueueEvent::ArtifactFinished { .. }
        | QueueEvent::ArtifactExpired { .. }
        | QueueEvent::WorkerSeen { .. }
        | QueueEvent::WorkerQuarantined { .. }
        | QueueEvent::TaskExpired { .. }
        | QueueEvent::TaskGroupExpired { .. }
        | QueueEvent::Repeated { .. } => return Ok(()),
    };
    // most tasks have no dependents: look for them before reading the task
    let mut page = engine.view().dependents(&task_id, None, 500)?;
    if page.is_empty() {
        return Ok(());
    }
    let Some(task) = engine.view().task(&task_id)? else {
        return Ok(());
    };
    // the resolution this event made, whatever the task did since (a rerun that is pending
    // again still satisfied its dependents by completing); one followed by a retry made none
    let Some(resolution) = task.resolution_by_run(run_id) else {
        return Ok(());
    };
    loop {
        let Some(last) = page.last().copied() else {
            return Ok(());
        };
        for dependent in page {
            let cmd = QueueCommand::SatisfyDependency {
                task_id: dependent,
                dependency: task_id,
                resolution,
            };
            match engine
                .execute_caused(
                    Actor::system("dependency-resolver"),
                    Some(env.event_id),
                    cmd,
                )
                .await
            {
                Ok(_) | Err(taskledger_projections::EngineError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        page = engine.view().dependents(&task_id, Some(&last), 500)?;
    }
}

/// Runs Taskcluster's built-in workers: tasks on `built-in/succeed` complete, tasks on
/// `built-in/fail` fail, as soon as they are pending.
pub async fn run_builtin_workers(engine: Engine) {
    let notify = engine.pending_notify();
    loop {
        if !writing(engine.role()).await {
            continue;
        }
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let mut claimed_any = false;
        for (queue, reason) in [
            ("built-in/succeed", ReasonResolved::Completed),
            ("built-in/fail", ReasonResolved::Failed),
        ] {
            // every commit that makes any run pending wakes this loop: ask the writer only
            // when the projection shows work here (a wake-up registered above covers a run
            // made pending after this look)
            if engine.view().pending(queue, 1).is_ok_and(|p| p.is_empty()) {
                continue;
            }
            let Ok(task_queue_id) = queue.parse() else {
                continue;
            };
            let cmd = QueueCommand::ClaimWork {
                task_queue_id,
                worker_group: "built-in".into(),
                worker_id: "built-in".into(),
                max: 32,
            };
            let Ok(Outcome::Claims(claims)) =
                engine.execute(Actor::system("built-in-workers"), cmd).await
            else {
                continue;
            };
            for (task, run_id) in claims {
                claimed_any = true;
                let cmd = QueueCommand::Report {
                    task_id: task.task_id,
                    run_id,
                    reason,
                };
                if let Err(e) = engine.execute(Actor::system("built-in-workers"), cmd).await {
                    tracing::warn!(error = %e, "built-in worker could not resolve a task");
                }
            }
        }
        if !claimed_any {
            let _ = tokio::time::timeout(Duration::from_secs(5), woken).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::ids::{Slug, TaskId};
    use taskledger_core::queue::{JsonText, Limits, Metadata, Priority, Requires, TaskDefinition};
    use taskledger_core::time::HOUR;
    use taskledger_projections::{store, EmbeddedLog, QueueView};

    fn definition(dependencies: Vec<TaskId>, now: Millis) -> TaskDefinition {
        TaskDefinition {
            task_queue_id: "prov/wt".parse().unwrap(),
            scheduler_id: "-".into(),
            project_id: "none".into(),
            task_group_id: Slug::nice(),
            dependencies,
            requires: Requires::AllCompleted,
            routes: vec![],
            priority: Priority::Lowest,
            retries: 5,
            created: now,
            deadline: now.plus(HOUR),
            expires: now.plus(2 * HOUR),
            scopes: vec![],
            payload: JsonText("{}".into()),
            metadata: Metadata {
                name: "t".into(),
                description: "d".into(),
                owner: "o@example.com".into(),
                source: "https://example.com".into(),
            },
            tags: JsonText("{}".into()),
            extra: JsonText("{}".into()),
        }
    }

    /// A dependency completed and then rerun before the reactor gets to its completion: the
    /// completion still satisfies the dependent (the reactor once read the task's state then,
    /// pending again, and dropped the event).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_completion_read_after_a_rerun_still_satisfies_its_dependents() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = QueueView::new(db).unwrap();
        let engine = Engine::start(view, log.clone(), Limits::default())
            .await
            .unwrap();
        let now = Millis::now();
        let (dependency, dependent) = (Slug::nice(), Slug::nice());
        let run = |cmd| engine.execute(Actor::system("test"), cmd);
        for (task_id, deps) in [(dependency, vec![]), (dependent, vec![dependency])] {
            let definition = definition(deps, now);
            run(QueueCommand::CreateTask {
                task_id,
                definition,
            })
            .await
            .unwrap();
        }
        run(QueueCommand::ClaimTask {
            task_id: dependency,
            run_id: 0,
            worker_group: "wg".into(),
            worker_id: "wi".into(),
        })
        .await
        .unwrap();
        run(QueueCommand::Report {
            task_id: dependency,
            run_id: 0,
            reason: ReasonResolved::Completed,
        })
        .await
        .unwrap();
        run(QueueCommand::RerunTask {
            task_id: dependency,
        })
        .await
        .unwrap();
        let completion = log
            .read(QUEUE_TOPIC, QUEUE_PARTITION, 0, 1000)
            .await
            .unwrap()
            .records
            .iter()
            .map(|r| codec::decode::<Envelope<QueueEvent>>(&r.value).unwrap())
            .find(|e| {
                matches!(e.payload, QueueEvent::RunResolved { task_id, .. } if task_id == dependency)
            })
            .expect("the completion is in the log");
        let waiting = engine.view().task(&dependent).unwrap().unwrap();
        assert_eq!(waiting.unsatisfied, vec![dependency]);
        on_event(&engine, &completion).await.unwrap();
        let scheduled = engine.view().task(&dependent).unwrap().unwrap();
        assert!(scheduled.unsatisfied.is_empty(), "{scheduled:?}");
        assert_eq!(scheduled.runs.len(), 1);
    }
}
