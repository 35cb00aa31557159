//! The command engine: load state -> decide -> append -> apply -> answer.
//!
//! One writer thread owns the queue partition. It drains every command waiting in its channel,
//! decides each against the projection plus the effects of the commands before it in the same
//! batch, appends all resulting events in one durable write (group commit), folds them into the
//! projection, and only then answers the callers: once a call returns, every read sees it.

use crate::latency::CommitStats;
use crate::queue_view::QueueView;
use crate::role::{tend, WriterRole, FOLLOW_POLL, WRITER_CHECK};
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
        let end = catch_up(&view, &*log).await?;
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
/// returns the end position. Every projection's catch-up is this loop.
pub async fn fold_log<L: EventLog, E: DeserializeOwned>(
    log: &L,
    topic: &str,
    partition: u32,
    mut offset: u64,
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

/// Applies every log record the projection has not seen yet; returns the log's end offset.
pub async fn catch_up<L: EventLog>(view: &QueueView, log: &L) -> Result<u64, EngineError> {
    let from = view.consumer_offset(VIEW_CONSUMER, QUEUE_TOPIC, QUEUE_PARTITION)?;
    Ok(fold_log(
        log,
        QUEUE_TOPIC,
        QUEUE_PARTITION,
        from,
        |offsets, next, envs| apply_queue(view, offsets, next, envs),
    )
    .await?)
}

struct Writer<L> {
    view: QueueView,
    log: Arc<L>,
    handle: tokio::runtime::Handle,
    limits: Limits,
    pending: Arc<Notify>,
    role: WriterRole,
    next_offset: u64,
    stats: Arc<CommitStats>,
}

/// The batch's view of state: the projection plus what earlier commands of the batch did.
struct Overlay<'a> {
    view: &'a QueueView,
    tasks: HashMap<TaskId, Option<Task>>,
    groups: HashMap<TaskId, Option<TaskGroup>>,
    artifacts: HashMap<(TaskId, u32, String), Option<Artifact>>,
    streams: HashMap<String, u64>,
    workers_seen: HashMap<String, Option<Millis>>,
    /// Quarantines recorded earlier in the batch, by worker key.
    quarantined: HashMap<String, Millis>,
    claimed_in_batch: HashMap<String, usize>,
}

impl<'a> Overlay<'a> {
    fn new(view: &'a QueueView) -> Overlay<'a> {
        Overlay {
            view,
            tasks: HashMap::default(),
            groups: HashMap::default(),
            artifacts: HashMap::default(),
            streams: HashMap::default(),
            workers_seen: HashMap::default(),
            quarantined: HashMap::default(),
            claimed_in_batch: HashMap::default(),
        }
    }
    /// The task as the batch has it so far (read from the projection the first time), lent:
    /// a command's rules only look at it, and only its outcome takes a copy.
    fn task(&mut self, id: &TaskId) -> Result<Option<&Task>, StoreError> {
        let slot = match self.tasks.entry(*id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.view.task(id)?),
        };
        Ok(slot.as_ref())
    }
    fn existing_task(&mut self, id: &TaskId) -> Result<&Task, EngineError> {
        self.task(id)?
            .ok_or(EngineError::Domain(QueueError::TaskNotFound(*id)))
    }
    fn group(&mut self, id: &TaskId) -> Result<Option<TaskGroup>, StoreError> {
        if let Some(g) = self.groups.get(id) {
            return Ok(g.clone());
        }
        let g = self.view.group(id)?;
        self.groups.insert(*id, g.clone());
        Ok(g)
    }
    fn artifact(
        &mut self,
        t: &TaskId,
        run: u32,
        name: &str,
    ) -> Result<Option<Artifact>, StoreError> {
        let key = (*t, run, name.to_string());
        if let Some(a) = self.artifacts.get(&key) {
            return Ok(a.clone());
        }
        if matches!(self.tasks.get(t), Some(None)) {
            // the task is gone (expired earlier in this batch), its artifacts with it
            return Ok(None);
        }
        let a = self.view.artifact(t, run, name)?;
        self.artifacts.insert(key, a.clone());
        Ok(a)
    }
    fn next_sequence(&mut self, stream: &str) -> Result<u64, StoreError> {
        let current = match self.streams.get(stream) {
            Some(s) => *s,
            None => self.view.stream_sequence(stream)?,
        };
        self.streams.insert(stream.to_string(), current + 1);
        Ok(current + 1)
    }
    fn apply(&mut self, event: &QueueEvent) {
        match event {
            // changes nothing (it only has its messages published again)
            QueueEvent::Repeated { .. } => {}
            QueueEvent::TaskDefined {
                task_id,
                definition,
                unsatisfied,
            } => {
                self.tasks.insert(
                    *task_id,
                    Some(Task::defined(
                        *task_id,
                        TaskDefinition::clone(definition),
                        unsatisfied.clone(),
                    )),
                );
            }
            QueueEvent::ArtifactExpired {
                task_id,
                run_id,
                name,
            } => {
                self.artifacts
                    .insert((*task_id, *run_id, name.clone()), None);
            }
            QueueEvent::TaskExpired { task_id } => {
                self.tasks.insert(*task_id, None);
                for ((t, _, _), a) in self.artifacts.iter_mut() {
                    if t == task_id {
                        *a = None;
                    }
                }
            }
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => {
                let g = self.groups.get(task_group_id).cloned().flatten();
                self.groups
                    .insert(*task_group_id, TaskGroup::apply(g, event));
            }
            QueueEvent::ArtifactCreated {
                task_id,
                run_id,
                artifact,
            } => {
                self.artifacts.insert(
                    (*task_id, *run_id, artifact.name.clone()),
                    Some(artifact.clone()),
                );
            }
            QueueEvent::ArtifactFinished {
                task_id,
                run_id,
                name,
            } => {
                if let Some(Some(a)) = self.artifacts.get_mut(&(*task_id, *run_id, name.clone())) {
                    a.present = true;
                }
            }
            QueueEvent::WorkerSeen {
                task_queue_id,
                worker_group,
                worker_id,
                at,
                ..
            } => {
                self.workers_seen.insert(
                    queue::worker_key(task_queue_id, worker_group, worker_id),
                    Some(*at),
                );
            }
            QueueEvent::WorkerQuarantined {
                task_queue_id,
                worker_group,
                worker_id,
                until,
                ..
            } => {
                self.quarantined.insert(
                    queue::worker_key(task_queue_id, worker_group, worker_id),
                    *until,
                );
            }
            QueueEvent::RunScheduled { task_id, .. }
            | QueueEvent::RunClaimed { task_id, .. }
            | QueueEvent::RunReclaimed { task_id, .. }
            | QueueEvent::RunResolved { task_id, .. }
            | QueueEvent::RunExceptionRecorded { task_id, .. }
            | QueueEvent::DependencySatisfied { task_id, .. }
            | QueueEvent::PriorityChanged { task_id, .. }
            | QueueEvent::GroupPriorityApplied { task_id, .. } => {
                if let Some(Some(t)) = self.tasks.get_mut(task_id) {
                    t.apply(event);
                }
            }
        }
    }
}

impl<L: EventLog + 'static> Writer<L> {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let (view, log) = (&self.view, &*self.log);
            let took = self.handle.block_on(tend(
                &self.role,
                log,
                QUEUE_TOPIC,
                QUEUE_PARTITION,
                || async move { catch_up(view, log).await.map_err(|e| e.to_string()) },
            ));
            if let Some(position) = took {
                self.next_offset = position;
                // runs the projection had not shown before may be pending
                self.pending.notify_waiters();
            }
            let writing = self.role.is_writer();
            let wait = if writing { WRITER_CHECK } else { FOLLOW_POLL };
            // the timer must be made inside the runtime
            let next = self
                .handle
                .block_on(async { tokio::time::timeout(wait, rx.recv()).await });
            let first = match next {
                Err(_) => continue,
                Ok(None) => return,
                Ok(Some(job)) => job,
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if !writing {
                for job in jobs {
                    let refused = EngineError::Unavailable(LogError::NotWriter.to_string());
                    job.answer(Err(refused));
                }
                continue;
            }
            if !self.commit(jobs) {
                self.role.lost();
            }
        }
    }

    /// Decides, appends and applies a batch and answers its callers; false when the append
    /// failed (this process may no longer write the partition).
    fn commit(&mut self, mut jobs: Vec<Job>) -> bool {
        let now = Millis::now();
        let started = std::time::Instant::now();
        self.stats.batch.observe(jobs.len() as f64);
        for job in &jobs {
            self.stats
                .wait
                .observe_duration(started.duration_since(job.arrived));
        }
        let max = self.log.max_record_bytes();
        let decided = loop {
            match self.decide_batch(&jobs, now, max) {
                Ok(decided) => break decided,
                // those commands are refused, and the rest decided again without them (an
                // event's size is its command's, so a second pass rarely finds another)
                Err(Undecided::TooLarge(refused)) => {
                    for (i, why) in refused.into_iter().rev() {
                        jobs.remove(i)
                            .answer(Err(EngineError::TooLarge(why.to_string())));
                    }
                }
                // the batch's events cannot all be numbered and encoded: none is written
                Err(Undecided::Failed(e)) => {
                    tracing::error!(error = %e, "group commit failed");
                    for job in jobs {
                        job.answer(Err(EngineError::Unavailable(e.to_string())));
                    }
                    return false;
                }
            }
        };
        let DecidedBatch {
            envelopes,
            records,
            results,
            became_pending,
        } = decided;
        if !envelopes.is_empty() {
            if let Err(e) = self.append_and_apply(&envelopes, records) {
                tracing::error!(error = %e, "group commit failed");
                for (job, result) in jobs.into_iter().zip(results) {
                    job.answer(result.and(Err(EngineError::Unavailable(e.to_string()))));
                }
                return false;
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            job.answer(result);
        }
        self.stats.commit.observe_duration(started.elapsed());
        if became_pending {
            self.pending.notify_waiters();
        }
        true
    }

    /// Decides every job of a batch against the projection and the jobs before it, and
    /// numbers and encodes their events.
    fn decide_batch(
        &self,
        jobs: &[Job],
        now: Millis,
        max: Option<usize>,
    ) -> Result<DecidedBatch, Undecided> {
        let mut overlay = Overlay::new(&self.view);
        let mut out = DecidedBatch {
            envelopes: Vec::new(),
            records: Vec::new(),
            results: Vec::with_capacity(jobs.len()),
            became_pending: false,
        };
        let mut refused = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let first = out.records.len();
            let (events, outcome) = match decide(&mut overlay, &job.command, now, &self.limits) {
                Ok(decided) => decided,
                Err(e) => {
                    out.results.push(Err(e));
                    continue;
                }
            };
            for event in events {
                out.became_pending |= matches!(event, QueueEvent::RunScheduled { .. });
                let stream_id = event.stream().id();
                let sequence = overlay
                    .next_sequence(&stream_id)
                    .map_err(|e| Undecided::Failed(e.into()))?;
                let envelope = Envelope {
                    event_id: EventId::new(),
                    stream_id,
                    sequence,
                    time: now,
                    actor: job.actor.clone(),
                    causation_id: job.causation,
                    writer_epoch: 1,
                    payload: event,
                };
                let record = Record::of(&envelope, envelope.payload.type_name())
                    .map_err(|e| Undecided::Failed(StoreError::from(e).into()))?;
                out.records.push(record);
                out.envelopes.push(envelope);
            }
            if let Some(why) = oversized(&out.records[first..], max) {
                refused.push((i, why));
            }
            out.results.push(Ok(outcome));
        }
        if refused.is_empty() {
            Ok(out)
        } else {
            Err(Undecided::TooLarge(refused))
        }
    }

    fn append_and_apply(
        &mut self,
        envelopes: &[Envelope<QueueEvent>],
        records: Vec<Record>,
    ) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let appended = self
            .handle
            .block_on(self.log.append(QUEUE_TOPIC, QUEUE_PARTITION, records))
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        self.stats.append.observe_duration(started.elapsed());
        // a crash here leaves the log ahead of the projection: the next start folds the rest
        #[cfg(feature = "failpoints")]
        fail::fail_point!("queue-after-append");
        if appended.prior != self.next_offset {
            // records this writer had not seen came first (or markers it skips): fold from the
            // log, which brings our own events along
            self.handle.block_on(catch_up(&self.view, &*self.log))?;
        } else {
            apply_queue(&self.view, &appended.offsets, appended.next, envelopes)?;
        }
        self.next_offset = appended.next;
        self.role.set_applied(self.next_offset);
        Ok(())
    }
}

/// A batch decided: its envelopes and their encoded records, each job's result in the jobs'
/// order, and whether a run became pending.
struct DecidedBatch {
    envelopes: Vec<Envelope<QueueEvent>>,
    records: Vec<Record>,
    results: Vec<Result<Outcome, EngineError>>,
    became_pending: bool,
}

/// Why a batch was not decided.
enum Undecided {
    /// These jobs (by index) would record events larger than the log takes.
    TooLarge(Vec<(usize, Oversized)>),
    /// An event could not be numbered or encoded.
    Failed(EngineError),
}

type Decided = Result<(Vec<QueueEvent>, Outcome), EngineError>;

/// A command that answers nothing but its events: they join the batch's view, and it is done.
fn done(overlay: &mut Overlay, events: Vec<QueueEvent>) -> Decided {
    events.iter().for_each(|e| overlay.apply(e));
    Ok((events, Outcome::Done))
}

fn task_outcome(overlay: &mut Overlay, id: &TaskId, events: Vec<QueueEvent>) -> Decided {
    for e in &events {
        overlay.apply(e);
    }
    let task = overlay.existing_task(id)?.clone();
    Ok((events, Outcome::Task(task)))
}

fn decide(overlay: &mut Overlay, command: &QueueCommand, now: Millis, limits: &Limits) -> Decided {
    match command {
        QueueCommand::CreateTask {
            task_id,
            definition,
        } => {
            let existing = overlay.task(task_id)?.cloned();
            let group = overlay.group(&definition.task_group_id)?;
            let mut deps = Vec::with_capacity(definition.dependencies.len());
            for dep in &definition.dependencies {
                let found = overlay.task(dep)?.map(|t| DependencyState {
                    resolution: t.resolution(),
                    expires: t.definition.expires,
                });
                deps.push(DependencyView {
                    task_id: *dep,
                    found,
                });
            }
            let events = queue::create_task(
                existing.as_ref(),
                group.as_ref(),
                &deps,
                *task_id,
                definition.clone(),
                now,
                limits,
            )?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ScheduleTask { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::schedule_task(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::RerunTask { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::rerun_task(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::CancelTask { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::cancel_task(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ClaimWork {
            task_queue_id,
            worker_group,
            worker_id,
            max,
        } => {
            let key = queue::worker_key(task_queue_id, worker_group, worker_id);
            // earlier commands of the batch first; the stored worker, read once, for the rest
            let seen_in_batch = overlay.workers_seen.get(&key).copied();
            let quarantined_in_batch = overlay.quarantined.get(&key).copied();
            let stored = match (seen_in_batch, quarantined_in_batch) {
                (Some(_), Some(_)) => None,
                _ => overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?,
            };
            let last_seen =
                seen_in_batch.unwrap_or_else(|| stored.as_ref().and_then(|w| w.last_date_active));
            let quarantine_until =
                quarantined_in_batch.or_else(|| stored.as_ref().and_then(|w| w.quarantine_until));
            let mut events =
                queue::worker_seen(task_queue_id, worker_group, worker_id, last_seen, now);
            for e in &events {
                overlay.apply(e);
            }
            let quarantined = quarantine_until.is_some_and(|q| q > now);
            let mut claims = Vec::new();
            if !quarantined {
                let skip = overlay
                    .claimed_in_batch
                    .get(task_queue_id.as_str())
                    .copied()
                    .unwrap_or(0);
                let candidates = overlay
                    .view
                    .pending(task_queue_id.as_str(), skip + max * 2 + 8)?;
                for (task_id, run_id) in candidates {
                    if claims.len() >= *max {
                        break;
                    }
                    let Some(task) = overlay.task(&task_id)? else {
                        continue;
                    };
                    let Ok(claimed) =
                        queue::claim_run(task, run_id, worker_group, worker_id, now, limits)
                    else {
                        continue;
                    };
                    for e in &claimed {
                        overlay.apply(e);
                    }
                    events.extend(claimed);
                    if let Some(t) = overlay.task(&task_id)? {
                        claims.push((t.clone(), run_id));
                    }
                }
                *overlay
                    .claimed_in_batch
                    .entry(task_queue_id.as_str().to_string())
                    .or_default() += claims.len();
            }
            Ok((events, Outcome::Claims(claims)))
        }
        QueueCommand::ClaimTask {
            task_id,
            run_id,
            worker_group,
            worker_id,
        } => {
            let t = overlay.existing_task(task_id)?;
            queue::claimable_before_deadline(t, now)?;
            // a quarantined worker claims nothing (answered `{}`), as claimWork gives it none
            let task_queue_id = t.definition.task_queue_id.clone();
            let key = queue::worker_key(&task_queue_id, worker_group, worker_id);
            let quarantine_until = match overlay.quarantined.get(&key).copied() {
                Some(until) => Some(until),
                None => overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?
                    .and_then(|w| w.quarantine_until),
            };
            if quarantine_until.is_some_and(|q| q > now) {
                return Ok((vec![], Outcome::Claims(vec![])));
            }
            let t = overlay.existing_task(task_id)?;
            let events = queue::claim_run(t, *run_id, worker_group, worker_id, now, limits)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ReclaimTask { task_id, run_id } => {
            let t = overlay.existing_task(task_id)?;
            let mut events = queue::reclaim_run(t, *run_id, now, limits)?;
            // upstream counts a reclaim as its worker being seen (lastDateActive, expiry)
            let run = t.runs.get(*run_id as usize);
            if let Some((Some(group), Some(worker))) =
                run.map(|r| (r.worker_group.clone(), r.worker_id.clone()))
            {
                let queue_id = t.definition.task_queue_id.clone();
                let key = queue::worker_key(&queue_id, &group, &worker);
                let last_seen = match overlay.workers_seen.get(&key) {
                    Some(seen) => *seen,
                    None => overlay
                        .view
                        .worker(queue_id.as_str(), &group, &worker)?
                        .and_then(|w| w.last_date_active),
                };
                events.extend(queue::worker_seen(
                    &queue_id, &group, &worker, last_seen, now,
                ));
            }
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::Report {
            task_id,
            run_id,
            reason,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::report(t, *run_id, *reason, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ExpireClaim {
            task_id,
            run_id,
            taken_until,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::expire_claim(t, *run_id, *taken_until, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ExceedDeadline { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::exceed_deadline(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::SatisfyDependency {
            task_id,
            dependency,
            resolution,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::satisfy_dependency(t, *dependency, *resolution, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ChangePriority {
            task_id,
            priority,
            in_group,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::change_priority(t, *priority, *in_group, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ExpireTask { task_id } => {
            let events = match overlay.task(task_id)? {
                Some(t) => queue::expire_task(t, now)?,
                None => vec![],
            };
            done(overlay, events)
        }
        QueueCommand::ExpireArtifact {
            task_id,
            run_id,
            name,
        } => {
            let events = match overlay.artifact(task_id, *run_id, name)? {
                Some(a) => queue::expire_artifact(*task_id, *run_id, &a, now)?,
                None => vec![],
            };
            done(overlay, events)
        }
        QueueCommand::ExpireTaskGroup { task_group_id } => {
            let events = match overlay.group(task_group_id)? {
                Some(g) => queue::expire_group(&g, now)?,
                None => vec![],
            };
            done(overlay, events)
        }
        QueueCommand::SealTaskGroup { task_group_id } => {
            let g = overlay.group(task_group_id)?.ok_or_else(|| {
                QueueError::Input(format!("task group {task_group_id} not found"))
            })?;
            let events = queue::seal_group(&g, now)?;
            for e in &events {
                overlay.apply(e);
            }
            let g = overlay.group(task_group_id)?.unwrap_or(g);
            Ok((events, Outcome::Group(g)))
        }
        QueueCommand::RecordGroupPriorityChange {
            task_group_id,
            priority,
            tasks_affected,
        } => {
            let g = overlay.group(task_group_id)?.ok_or_else(|| {
                QueueError::Input(format!("task group {task_group_id} not found"))
            })?;
            let events = queue::record_group_priority_change(&g, *priority, *tasks_affected, now)?;
            for e in &events {
                overlay.apply(e);
            }
            Ok((events, Outcome::Group(g)))
        }
        QueueCommand::CreateArtifact {
            task_id,
            run_id,
            artifact,
        } => {
            let t = overlay.task(task_id)?.cloned();
            let existing = overlay.artifact(task_id, *run_id, &artifact.name)?;
            let events = queue::create_artifact(
                t.as_ref(),
                *run_id,
                existing.as_ref(),
                artifact.clone(),
                now,
            )?;
            for e in &events {
                overlay.apply(e);
            }
            let stored = overlay
                .artifact(task_id, *run_id, &artifact.name)?
                .unwrap_or_else(|| artifact.clone());
            Ok((events, Outcome::Artifact(stored)))
        }
        QueueCommand::FinishArtifact {
            task_id,
            run_id,
            name,
            upload_id,
            derived_upload_id,
        } => {
            let existing = overlay.artifact(task_id, *run_id, name)?;
            let events = queue::finish_artifact(
                *task_id,
                *run_id,
                existing.as_ref(),
                *upload_id,
                *derived_upload_id,
                now,
            )?;
            done(overlay, events)
        }
        QueueCommand::QuarantineWorker {
            task_queue_id,
            worker_group,
            worker_id,
            until,
            info,
        } => {
            // a worker declared earlier in the batch counts
            let key = queue::worker_key(task_queue_id, worker_group, worker_id);
            if !overlay.workers_seen.contains_key(&key)
                && overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?
                    .is_none()
            {
                return Err(QueueError::Input("worker not found".into()).into());
            }
            let events = vec![QueueEvent::WorkerQuarantined {
                task_queue_id: task_queue_id.clone(),
                worker_group: worker_group.clone(),
                worker_id: worker_id.clone(),
                until: *until,
                info: info.clone(),
                by: String::new(),
                at: now,
            }];
            done(overlay, events)
        }
        QueueCommand::DeclareWorker {
            task_queue_id,
            worker_group,
            worker_id,
            expires,
        } => {
            // without an expiry, as upstream's coalesce: a live worker keeps its own, a new or
            // expired one gets a day
            let stored = match expires {
                Some(_) => None,
                None => overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?
                    .map(|w| (w.expires, w.quarantine_until)),
            };
            let expires = queue::declared_expiry(*expires, stored, now);
            // the records' expiry is never shortened (the projection keeps the later one)
            let events = vec![QueueEvent::WorkerSeen {
                task_queue_id: task_queue_id.clone(),
                worker_group: worker_group.clone(),
                worker_id: worker_id.clone(),
                at: now,
                expires,
            }];
            done(overlay, events)
        }
    }
}

#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for
mod tests {
    use super::*;
    use crate::queue_view::tests::definition;
    use crate::{audit, store, EmbeddedLog};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;
    use taskledger_core::ids::Slug;
    use taskledger_core::queue::RunState;
    use taskledger_core::time::{DAY, HOUR, MINUTE};

    async fn start(dir: &std::path::Path) -> (Arc<rocksdb::DB>, Arc<EmbeddedLog>, Engine) {
        let db = store::open(dir).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = QueueView::new(db.clone()).unwrap();
        let engine = Engine::start(view, log.clone(), Limits::default())
            .await
            .unwrap();
        (db, log, engine)
    }

    /// The embedded log, taking records of at most `.1` bytes (as a Kafka log takes ~1 MB).
    struct Limited(Arc<EmbeddedLog>, usize);

    impl EventLog for Limited {
        fn max_record_bytes(&self) -> Option<usize> {
            Some(self.1)
        }
        async fn append(
            &self,
            topic: &str,
            partition: u32,
            records: Vec<Record>,
        ) -> Result<taskledger_core::log::Appended, LogError> {
            self.0.append(topic, partition, records).await
        }
        async fn read(
            &self,
            topic: &str,
            partition: u32,
            offset: u64,
            max: usize,
        ) -> Result<taskledger_core::log::Batch, LogError> {
            self.0.read(topic, partition, offset, max).await
        }
        async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
            self.0.end_offset(topic, partition).await
        }
    }

    /// One group commit holding small and oversized createTasks: each oversized one is
    /// refused with `TooLarge`, every other is answered in its own order and written, and the
    /// log holds no event of a refused task.
    #[test]
    fn oversized_commands_are_refused_alone_in_their_group_commit() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = QueueView::new(db.clone()).unwrap();
        let now = Millis::now();
        let mut writer = Writer {
            view: view.clone(),
            log: Arc::new(Limited(log.clone(), 4096)),
            handle: rt.handle().clone(),
            limits: Limits::default(),
            pending: Arc::new(Notify::new()),
            role: WriterRole::new("queue", 0),
            next_offset: 0,
            stats: Arc::new(CommitStats::default()),
        };
        // small, oversized, small, oversized, small: the small ones share one group
        let group = Slug::nice();
        let mut jobs = Vec::new();
        let mut replies = Vec::new();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut def = definition(now, group);
            if i % 2 == 1 {
                def.payload = queue::JsonText(format!(r#"{{"blob":"{}"}}"#, "x".repeat(8000)));
            }
            let task_id = Slug::nice();
            let (reply, rx) = oneshot::channel();
            jobs.push(Job {
                arrived: std::time::Instant::now(),
                actor: Actor::system("test"),
                causation: None,
                command: QueueCommand::CreateTask {
                    task_id,
                    definition: def,
                },
                reply,
            });
            replies.push(rx);
            ids.push(task_id);
        }
        assert!(writer.commit(jobs), "the writer keeps writing");
        for (i, rx) in replies.into_iter().enumerate() {
            let answer = rx.blocking_recv().expect("every job is answered").result;
            match (i % 2, answer) {
                (0, Ok(Outcome::Task(t))) => assert_eq!(t.task_id, ids[i]),
                (1, Err(EngineError::TooLarge(m))) => assert!(m.contains("4096"), "{m}"),
                (_, other) => panic!("job {i}: {:?}", other.map(|_| "answered")),
            }
            let stored = view.task(&ids[i]).unwrap();
            assert_eq!(stored.is_some(), i % 2 == 0, "task {i} in the projection");
        }
        // in the log: the group and three tasks' definitions and pending runs, nothing more
        let read = rt
            .block_on(log.read(QUEUE_TOPIC, QUEUE_PARTITION, 0, 100))
            .unwrap();
        let events: Vec<Envelope<QueueEvent>> = read
            .records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let defined: Vec<TaskId> = events
            .iter()
            .filter_map(|e| match &e.payload {
                QueueEvent::TaskDefined { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .collect();
        assert_eq!(defined, vec![ids[0], ids[2], ids[4]]);
        assert!(events
            .iter()
            .all(|e| e.payload.stream() != queue::Stream::Task(ids[1])));
    }

    fn claim_work(worker_id: &str) -> QueueCommand {
        QueueCommand::ClaimWork {
            task_queue_id: "prov/wt".parse().unwrap(),
            worker_group: "g".into(),
            worker_id: worker_id.into(),
            max: 1,
        }
    }

    /// A group's change of one member's priority re-keys its pending run as a change of the
    /// task alone does: raised, the newer task is claimed before the older one.
    #[tokio::test]
    async fn a_member_raised_by_its_group_is_claimed_first() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _log, engine) = start(&dir.path().join("live")).await;
        let actor = || Actor::system("test");
        let (older, newer) = (Slug::nice(), Slug::nice());
        for id in [older, newer] {
            let definition = definition(Millis::now(), Slug::nice());
            let create = QueueCommand::CreateTask {
                task_id: id,
                definition,
            };
            engine.execute(actor(), create).await.unwrap();
            // pending since distinct milliseconds: the older is first unless re-keyed
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let raise = QueueCommand::ChangePriority {
            task_id: newer,
            priority: Priority::VeryHigh,
            in_group: true,
        };
        engine.execute(actor(), raise).await.unwrap();
        for expected in [newer, older] {
            let Outcome::Claims(claims) = engine.execute(actor(), claim_work("w")).await.unwrap()
            else {
                panic!("not a claim");
            };
            let claimed: Vec<_> = claims.iter().map(|(t, _)| t.task_id).collect();
            assert_eq!(claimed, [expected]);
        }
    }

    /// Many callers at once fill every group commit, each claimWork racing the others for
    /// whatever is pending: still every task runs exactly once, each stream's sequence numbers
    /// run 1, 2, 3, ... without a gap or a repeat, and the projection equals a fold of the log
    /// from scratch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_leave_the_projection_equal_to_the_log() {
        const TASKS: usize = 400;
        let dir = tempfile::tempdir().unwrap();
        let (db, log, engine) = start(&dir.path().join("live")).await;
        let group = Slug::nice();
        let mut callers = tokio::task::JoinSet::new();
        for i in 0..TASKS {
            let engine = engine.clone();
            callers.spawn(async move {
                let actor = Actor::system("test");
                let create = QueueCommand::CreateTask {
                    task_id: Slug::nice(),
                    definition: definition(Millis::now(), group),
                };
                engine.execute(actor.clone(), create).await.unwrap();
                // claim whatever is pending, maybe another caller's task, and complete it
                loop {
                    let claimed = engine.execute(actor.clone(), claim_work(&format!("w{i}")));
                    let Outcome::Claims(claims) = claimed.await.unwrap() else {
                        panic!("claimWork answers claims");
                    };
                    if let Some((task, run_id)) = claims.into_iter().next() {
                        let report = QueueCommand::Report {
                            task_id: task.task_id,
                            run_id,
                            reason: ReasonResolved::Completed,
                        };
                        engine.execute(actor, report).await.unwrap();
                        return task.task_id;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
        let mut completed = BTreeSet::new();
        let all = async {
            while let Some(done) = callers.join_next().await {
                completed.insert(done.unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("every caller claims a task within a minute");
        assert_eq!(completed.len(), TASKS, "no task was claimed twice");
        for id in &completed {
            let task = engine.view().task(id).unwrap().unwrap();
            let states: Vec<_> = task.runs.iter().map(|r| r.state).collect();
            assert_eq!(states, [RunState::Completed], "task {id}");
        }

        let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut offset = 0;
        loop {
            let batch = log
                .read(QUEUE_TOPIC, QUEUE_PARTITION, offset, 4096)
                .await
                .unwrap();
            if batch.next <= offset {
                break;
            }
            for record in &batch.records {
                let envelope: Envelope<QueueEvent> = codec::decode(&record.value).unwrap();
                sequences
                    .entry(envelope.stream_id)
                    .or_default()
                    .push(envelope.sequence);
            }
            offset = batch.next;
        }
        // each task's stream, the group's and the workers'
        assert!(sequences.len() > TASKS, "{} streams", sequences.len());
        for (stream, seqs) in &sequences {
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, &expected, "stream {stream}");
        }

        let scratch = store::open(&dir.path().join("scratch")).unwrap();
        let report = audit::replay(&db, &scratch, "queue", true, &mut |_, _| {}).unwrap();
        assert!(
            report.difference.is_none(),
            "the projection differs from the log's fold: {:?}",
            report.difference
        );
        assert_eq!(report.live_digest.as_ref(), Some(&report.rebuilt_digest));
    }

    /// One group commit's decisions, in order: a worker declared, then quarantined (which
    /// finds it declared), then claiming work, which gets nothing although a task is pending
    /// (another worker's claimWork, decided apart, gets it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quarantine_counts_for_the_commands_after_it_in_the_same_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _log, engine) = start(dir.path()).await;
        let pending = QueueCommand::CreateTask {
            task_id: Slug::nice(),
            definition: definition(Millis::now(), Slug::nice()),
        };
        engine
            .execute(Actor::system("test"), pending)
            .await
            .unwrap();
        let (now, limits) = (Millis::now(), Limits::default());
        let task_queue_id: TaskQueueId = "prov/wt".parse().unwrap();
        let (worker_group, worker_id) = ("g".to_string(), "quarantined".to_string());
        let mut batch = Overlay::new(engine.view());
        let declare = QueueCommand::DeclareWorker {
            task_queue_id: task_queue_id.clone(),
            worker_group: worker_group.clone(),
            worker_id: worker_id.clone(),
            expires: Some(now.plus(HOUR)),
        };
        decide(&mut batch, &declare, now, &limits).unwrap();
        let quarantine = QueueCommand::QuarantineWorker {
            task_queue_id,
            worker_group,
            worker_id,
            until: now.plus(HOUR),
            info: "test".into(),
        };
        decide(&mut batch, &quarantine, now, &limits)
            .expect("the worker declared earlier in the batch is found");
        let claimed = |overlay: &mut Overlay, id: &str| match decide(
            overlay,
            &claim_work(id),
            now,
            &limits,
        ) {
            Ok((_, Outcome::Claims(claims))) => claims.len(),
            other => panic!("claimWork decided {other:?}"),
        };
        assert_eq!(claimed(&mut batch, "quarantined"), 0);
        assert_eq!(claimed(&mut Overlay::new(engine.view()), "other"), 1);
    }

    /// As upstream, a reclaim counts as its worker being seen: a worker busy with one long
    /// task, reclaiming it, keeps its lastDateActive and expiry current (at most every 30
    /// minutes, as claimWork does).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reclaim_counts_as_the_worker_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, _log, engine) = start(dir.path()).await;
        let task_id = Slug::nice();
        let create = QueueCommand::CreateTask {
            task_id,
            definition: definition(Millis::now(), Slug::nice()),
        };
        engine.execute(Actor::system("test"), create).await.unwrap();
        engine
            .execute(Actor::system("test"), claim_work("busy"))
            .await
            .unwrap();
        let limits = Limits::default();
        let reclaim = QueueCommand::ReclaimTask { task_id, run_id: 0 };
        let seen = |now: Millis| -> Vec<QueueEvent> {
            let (events, _) = decide(&mut Overlay::new(engine.view()), &reclaim, now, &limits)
                .expect("the run is running");
            events
                .into_iter()
                .filter(|e| matches!(e, QueueEvent::WorkerSeen { .. }))
                .collect()
        };
        // seen by its claimWork just now: not again yet
        assert_eq!(seen(Millis::now()), vec![]);
        let later = Millis::now().plus(31 * MINUTE);
        let events = seen(later);
        let [QueueEvent::WorkerSeen {
            worker_id,
            at,
            expires,
            ..
        }] = events.as_slice()
        else {
            panic!("no sighting 31 minutes later");
        };
        assert_eq!(worker_id, "busy");
        assert_eq!((*at, *expires), (later, later.plus(DAY)));
    }
}
