//! The command engine: load state -> decide -> append -> apply -> answer.
//!
//! One writer thread owns the queue partition. It drains every command waiting in its channel,
//! decides each against the projection plus the effects of the commands before it in the same
//! batch, appends all resulting events in one durable write (group commit), folds them into the
//! projection, and only then answers the callers: once a call returns, every read sees it.

use crate::latency::CommitStats;
use crate::queue_view::QueueView;
use crate::role::{
    fold_until, tend, unseen_append, Reached, WriterRole, FOLLOW_POLL, WRITER_CHECK,
};
use crate::store::StoreError;
use rustc_hash::FxHashMap as HashMap;
use serde::de::DeserializeOwned;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use taskledger_core::codec;
use taskledger_core::envelope::{Actor, Envelope, EventId};
use taskledger_core::ids::{TaskId, TaskQueueId};
use taskledger_core::log::{oversized, EventLog, LogError, Oversized, Record, QUEUE_TOPIC};
use taskledger_core::queue::{
    self, Artifact, DependencyState, DependencyView, Limits, Priority, QueueError, QueueEvent,
    ReasonResolved, Resolution, Task, TaskDefinition, TaskGroup,
};
use taskledger_core::time::Millis;
use tokio::sync::{mpsc, oneshot, watch, Notify};

mod decide;
#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for
pub(crate) mod tests;
mod writer;

use writer::Writer;

/// The queue's single partition (more come with the Kafka log).
pub const QUEUE_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const VIEW_CONSUMER: &str = "queue-view";
/// Most commands decided in one group commit.
const MAX_BATCH: usize = 1024;

/// What callers ask of the queue. Imperative; the engine may refuse.
// createTask, the largest, is also the most common: boxing it would cost it an allocation
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum QueueCommand {
    CreateTask {
        task_id: TaskId,
        definition: TaskDefinition,
    },
    ScheduleTask {
        task_id: TaskId,
    },
    RerunTask {
        task_id: TaskId,
    },
    CancelTask {
        task_id: TaskId,
    },
    ClaimWork {
        task_queue_id: TaskQueueId,
        worker_group: String,
        worker_id: String,
        max: usize,
    },
    ClaimTask {
        task_id: TaskId,
        run_id: u32,
        worker_group: String,
        worker_id: String,
    },
    ReclaimTask {
        task_id: TaskId,
        run_id: u32,
    },
    Report {
        task_id: TaskId,
        run_id: u32,
        reason: ReasonResolved,
    },
    ExpireClaim {
        task_id: TaskId,
        run_id: u32,
        taken_until: Millis,
    },
    ExceedDeadline {
        task_id: TaskId,
    },
    SatisfyDependency {
        task_id: TaskId,
        dependency: TaskId,
        resolution: Resolution,
    },
    ChangePriority {
        task_id: TaskId,
        priority: Priority,
        /// changeTaskGroupPriority's change of one member (published only as the group's).
        in_group: bool,
    },
    SealTaskGroup {
        task_group_id: TaskId,
    },
    /// changeTaskGroupPriority's closing record (after its members' `ChangePriority`s).
    RecordGroupPriorityChange {
        task_group_id: TaskId,
        priority: Priority,
        tasks_affected: u32,
    },
    CreateArtifact {
        task_id: TaskId,
        run_id: u32,
        artifact: Artifact,
    },
    FinishArtifact {
        task_id: TaskId,
        run_id: u32,
        name: String,
        /// The id the caller sent.
        upload_id: TaskId,
        /// The id the gateway derives for this artifact (matched when it stores none).
        derived_upload_id: TaskId,
    },
    QuarantineWorker {
        task_queue_id: TaskQueueId,
        worker_group: String,
        worker_id: String,
        until: Millis,
        info: String,
        /// The caller's clientId, kept in the worker's quarantine history.
        by: String,
    },
    /// declareWorker: creates or extends the worker and task queue records.
    /// `expires` as the caller gave it, if at all.
    DeclareWorker {
        task_queue_id: TaskQueueId,
        worker_group: String,
        worker_id: String,
        expires: Option<Millis>,
    },
    /// The expiry reactor: removes a task past its `expires` (once resolved).
    ExpireTask {
        task_id: TaskId,
    },
    /// The expiry reactor: removes a task group past its `expires`.
    ExpireTaskGroup {
        task_group_id: TaskId,
    },
    /// The expiry reactor: removes an artifact past its own `expires`.
    ExpireArtifact {
        task_id: TaskId,
        run_id: u32,
        name: String,
    },
}

/// The state a command leaves behind, for the answer.
// a task, the largest, is also the most common answer: boxing it would cost an allocation
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Outcome {
    Task(Task),
    Claims(Vec<(Task, u32)>),
    Group(TaskGroup),
    Artifact(Artifact),
    Done,
}

impl Outcome {
    /// Which answer this is, for an error that names an unexpected one without printing a
    /// task's definition.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Task(_) => "task",
            Outcome::Claims(_) => "claims",
            Outcome::Group(_) => "task group",
            Outcome::Artifact(_) => "artifact",
            Outcome::Done => "done",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Domain(#[from] QueueError),
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// An event larger than the log takes (`EventLog::max_record_bytes`).
    #[error("{0}")]
    TooLarge(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

struct Job {
    arrived: std::time::Instant,
    actor: Actor,
    causation: Option<EventId>,
    command: QueueCommand,
    reply: oneshot::Sender<Answer>,
}

/// A command's result and the instant the writer sent it, so the caller can time its own
/// wake-up.
struct Answer {
    result: Result<Outcome, EngineError>,
    sent: std::time::Instant,
}

impl Job {
    fn answer(self, result: Result<Outcome, EngineError>) {
        let sent = std::time::Instant::now();
        let _ = self.reply.send(Answer { result, sent });
    }
}

/// A handle to the queue's writer. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Job>,
    view: QueueView,
    pending: Arc<Notify>,
    role: WriterRole,
    limits: Limits,
    stats: Arc<CommitStats>,
}

impl Engine {
    /// Catches the projection up with the log, then starts the writer thread, which writes
    /// while the log assigns this process the queue partition and follows its writer otherwise.
    pub async fn start<L: EventLog + 'static>(
        view: QueueView,
        log: Arc<L>,
        limits: Limits,
    ) -> Result<Engine, EngineError> {
        let handle = tokio::runtime::Handle::current();
        let end = catch_up(&view, &*log, None).await?;
        let (tx, rx) = mpsc::channel(8192);
        let pending = Arc::new(Notify::new());
        let role = WriterRole::new("queue", end);
        let stats = Arc::new(CommitStats::default());
        let writer = Writer {
            stats: stats.clone(),
            view: view.clone(),
            log,
            handle,
            limits,
            pending: pending.clone(),
            role: role.clone(),
            next_offset: end,
        };
        let thread = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run(rx)));
                if ran.is_err() {
                    crate::exits::exit_after_panic("queue");
                }
            })
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        WRITERS.lock().expect("writer list").push(thread);
        Ok(Engine {
            tx,
            view,
            pending,
            role,
            limits,
            stats,
        })
    }

    pub async fn execute(
        &self,
        actor: Actor,
        command: QueueCommand,
    ) -> Result<Outcome, EngineError> {
        self.execute_caused(actor, None, command).await
    }

    pub async fn execute_caused(
        &self,
        actor: Actor,
        causation: Option<EventId>,
        command: QueueCommand,
    ) -> Result<Outcome, EngineError> {
        let (reply, rx) = oneshot::channel();
        let arrived = std::time::Instant::now();
        self.tx
            .send(Job {
                arrived,
                actor,
                causation,
                command,
                reply,
            })
            .await
            .map_err(|_| EngineError::Unavailable("writer stopped".into()))?;
        let answer = rx
            .await
            .map_err(|_| EngineError::Unavailable("writer stopped".into()))?;
        let now = std::time::Instant::now();
        self.stats.command.observe_duration(now - arrived);
        self.stats.resume.observe_duration(now - answer.sent);
        answer.result
    }

    /// The writer's latency and batch histograms (for `/metrics`).
    pub fn stats(&self) -> &Arc<CommitStats> {
        &self.stats
    }

    pub fn view(&self) -> &QueueView {
        &self.view
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Woken whenever a run becomes pending.
    pub fn pending_notify(&self) -> Arc<Notify> {
        self.pending.clone()
    }

    /// The log position the projection has applied, after each group commit (or, while
    /// following another writer, after each fold).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.role.applied()
    }

    /// Whether this process writes the queue partition, and how far its projection is.
    pub fn role(&self) -> &WriterRole {
        &self.role
    }
}

/// The writer threads started in this process.
static WRITERS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits for every writer thread to finish. A writer ends once the last `Engine` handle is
/// dropped, and it closes the database it holds on its way out; a process that returned from
/// `main` while a writer still ran would tear RocksDB down under it (exit's destructors), so
/// call this after the runtime that held the engines is gone.
pub fn join_writers() {
    let threads: Vec<_> = std::mem::take(&mut *WRITERS.lock().expect("writer list"));
    for t in threads {
        let _ = t.join();
    }
}

/// Why folding the log into a projection stopped.
#[derive(Debug)]
pub enum FoldError {
    Log(LogError),
    Store(StoreError),
}

/// Reads a partition from `offset` to its end in batches, decodes each record's envelope and
/// hands each batch, with the records' offsets and the position after the batch, to `apply`;
/// returns the position reached (a Kafka read may come back short of the end: see
/// `role::fold_until`). With `progress`, each applied batch's position is published on that
/// role at once, so a forwarded command waiting for its position need not wait for the end of
/// a long catch-up. Every projection's catch-up is this loop.
pub async fn fold_log<L: EventLog, E: DeserializeOwned>(
    log: &L,
    topic: &str,
    partition: u32,
    mut offset: u64,
    progress: Option<&WriterRole>,
    mut apply: impl FnMut(&[u64], u64, &[Envelope<E>]) -> Result<(), StoreError>,
) -> Result<u64, FoldError> {
    loop {
        let batch = log
            .read(topic, partition, offset, 4096)
            .await
            .map_err(FoldError::Log)?;
        if batch.next <= offset {
            return Ok(offset);
        }
        let offsets: Vec<u64> = batch.records.iter().map(|r| r.offset).collect();
        let envelopes = batch
            .records
            .iter()
            .map(|r| codec::decode::<Envelope<E>>(&r.value))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FoldError::Store(e.into()))?;
        apply(&offsets, batch.next, &envelopes).map_err(FoldError::Store)?;
        if let Some(role) = progress {
            role.set_applied(batch.next);
        }
        offset = batch.next;
    }
}

impl From<FoldError> for EngineError {
    fn from(e: FoldError) -> Self {
        match e {
            FoldError::Log(e) => EngineError::Unavailable(e.to_string()),
            FoldError::Store(e) => EngineError::Store(e),
        }
    }
}

/// Folds queue events read at `offsets` into the queue projection, `next` being the position to
/// read from afterwards.
pub(crate) fn apply_queue(
    view: &QueueView,
    offsets: &[u64],
    next: u64,
    envelopes: &[Envelope<QueueEvent>],
) -> Result<(), StoreError> {
    view.apply(
        VIEW_CONSUMER,
        QUEUE_TOPIC,
        QUEUE_PARTITION,
        offsets,
        next,
        envelopes,
    )
}

/// Applies the log records the projection has not seen yet (`fold_log`, publishing on
/// `progress`); returns the position reached.
pub async fn catch_up<L: EventLog>(
    view: &QueueView,
    log: &L,
    progress: Option<&WriterRole>,
) -> Result<u64, EngineError> {
    let from = view.consumer_offset(VIEW_CONSUMER, QUEUE_TOPIC, QUEUE_PARTITION)?;
    Ok(fold_log(
        log,
        QUEUE_TOPIC,
        QUEUE_PARTITION,
        from,
        progress,
        |offsets, next, envs| apply_queue(view, offsets, next, envs),
    )
    .await?)
}
