//! taskledger-bridge: the log republished to Pulse (AMQP 0-9-1, lapin) in Taskcluster's
//! exchanges, routing keys and bodies (`messages`), with publisher confirms.
//!
//! The bridge tails each topic of the log from its own offsets, folds the task, task-group and
//! pending-artifact state a message needs, publishes a batch, waits until the broker confirmed
//! every message of it, and only then stores the new state and offsets in one RocksDB batch of
//! its own database. Meanwhile the next batch is rendered through the unstored one's changes
//! and published. A crash or a broker restart therefore re-sends at most the two unconfirmed
//! batches: at-least-once, never a loss; duplicates share their message id (= the event id).
//!
//! **Invariant:** no domain rule lives here; the messages are a pure function of events and
//! folded state (`core`'s `apply`).

pub mod messages;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use messages::Message;
use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::access::{AuthEvent, AUTH_TOPIC};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::log::{EventLog, QUEUE_TOPIC};
use taskledger_core::queue::{
    Artifact, ArtifactStorage, JsonText, Metadata, QueueEvent, Repeat, Task, TaskDefinition,
    TaskGroup,
};
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{WorkerEvent, WorkerKey, WORKER_MANAGER_TOPIC};
use taskledger_projections::EmbeddedLog;
use tokio::sync::watch;

/// Records read (and published) per confirmed batch.
const BATCH: usize = 512;
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) a message")]
    Nacked,
    #[error("state: {0}")]
    State(#[from] rocksdb::Error),
    #[error("codec: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("log: {0}")]
    Log(#[from] taskledger_core::log::LogError),
}

/// Counters for operators (and the tests).
#[derive(Default, Debug)]
pub struct BridgeStats {
    pub published: AtomicU64,
    pub reconnects: AtomicU64,
    /// Events of the log not yet confirmed by the broker, after the last batch.
    pub lag_events: AtomicU64,
    /// Messages published and awaiting the broker's confirm right now.
    pub confirms_pending: AtomicU64,
    /// When the bridge last had nothing left to publish (ms since the epoch; 0: never).
    pub caught_up_at_ms: AtomicI64,
    /// AMQP channels the connected bridge publishes on (0 while disconnected).
    pub channels: AtomicU64,
}

impl BridgeStats {
    /// Seconds the bridge is behind the log: 0 when caught up, else the time since it last was.
    pub fn lag_seconds(&self, now_ms: i64) -> f64 {
        if self.lag_events.load(Ordering::Relaxed) == 0 {
            return 0.0;
        }
        match self.caught_up_at_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => (now_ms - t).max(0) as f64 / 1000.0,
        }
    }

    /// The Prometheus text exposition of these figures.
    pub fn prometheus(&self, now_ms: i64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "taskledger_bridge_published_total",
            "counter",
            "Messages the Pulse bridge published and the broker confirmed.",
            get(&self.published),
        );
        metric(
            "taskledger_bridge_reconnects_total",
            "counter",
            "Times the Pulse bridge reconnected to the broker.",
            get(&self.reconnects),
        );
        metric(
            "taskledger_bridge_lag_events",
            "gauge",
            "Events in the log the Pulse bridge has not had confirmed yet.",
            get(&self.lag_events),
        );
        metric(
            "taskledger_bridge_lag_seconds",
            "gauge",
            "Seconds since the Pulse bridge was last caught up with the log (0 when it is).",
            format!("{:.3}", self.lag_seconds(now_ms)),
        );
        metric(
            "taskledger_bridge_confirms_pending",
            "gauge",
            "Messages published and awaiting the broker's confirm.",
            get(&self.confirms_pending),
        );
        metric(
            "taskledger_bridge_channels",
            "gauge",
            "AMQP channels the Pulse bridge publishes on (0 while disconnected).",
            get(&self.channels),
        );
        out
    }
}

/// The bridge's own database: offsets and the folded state its messages need.
pub struct BridgeState {
    db: DB,
    /// Whether the per-group counts of never-resolved tasks were kept from the log's start
    /// (false for a bridge database older than them: task-group-resolved stays off rather
    /// than fire early).
    group_counts: bool,
}

/// Marks a bridge database whose group counts start at offset 0.
const GROUP_COUNTS_MARKER: &[u8] = b"v:group-counts";

fn offset_key(topic: &str) -> Vec<u8> {
    [b"o".as_slice(), topic.as_bytes()].concat()
}
fn task_key(id: &[u8]) -> Vec<u8> {
    [b"t".as_slice(), id].concat()
}
fn group_key(id: &[u8]) -> Vec<u8> {
    [b"g".as_slice(), id].concat()
}
/// Never-resolved tasks of a group.
fn unresolved_key(group: &[u8]) -> Vec<u8> {
    [b"u".as_slice(), group].concat()
}

/// Present once a task was counted as resolved in its group.
fn counted_key(task: &[u8]) -> Vec<u8> {
    [b"r".as_slice(), task].concat()
}

/// A worker pool's current provider.
fn pool_key(pool: &str) -> Vec<u8> {
    [b"mp".as_slice(), pool.as_bytes()].concat()
}

/// A static worker's provider and capacity.
fn worker_key(worker: &WorkerKey) -> Vec<u8> {
    [b"mw".as_slice(), worker.path().as_bytes()].concat()
}

/// Where the unfinished object artifacts of every run of `task` are kept.
fn task_artifacts_prefix(task: &[u8]) -> Vec<u8> {
    [b"a".as_slice(), task].concat()
}
fn artifact_key(task: &[u8], run: u32, name: &str) -> Vec<u8> {
    [
        task_artifacts_prefix(task).as_slice(),
        &run.to_be_bytes(),
        name.as_bytes(),
    ]
    .concat()
}

impl BridgeState {
    pub fn open(dir: &Path) -> Result<BridgeState, BridgeError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        let mut state = BridgeState {
            db,
            group_counts: false,
        };
        state.group_counts = state.db.get(GROUP_COUNTS_MARKER)?.is_some();
        if !state.group_counts && state.offset(QUEUE_TOPIC)? == 0 {
            state.db.put(GROUP_COUNTS_MARKER, b"1")?;
            state.group_counts = true;
        }
        if !state.group_counts {
            tracing::warn!(
                "this bridge database predates task-group-resolved bookkeeping; \
                 task-group-resolved is not published (delete <data-dir>/bridge to rebuild it)"
            );
        }
        Ok(state)
    }

    pub fn offset(&self, topic: &str) -> Result<u64, BridgeError> {
        Ok(self
            .db
            .get(offset_key(topic))?
            .and_then(|v| v.as_slice().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, BridgeError> {
        match self.db.get(key)? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }
}

/// `map[key]`, else `parent[key]` (the previous batch's unstored changes), else the stored
/// value (remembered in `map`, so later reads see this batch's changes).
fn through<T: serde::de::DeserializeOwned + Clone>(
    state: &BridgeState,
    parent: Option<&HashMap<Vec<u8>, Option<T>>>,
    map: &mut HashMap<Vec<u8>, Option<T>>,
    key: Vec<u8>,
) -> Result<Option<T>, BridgeError> {
    Ok(load(state, parent, map, key)?.clone())
}

/// `through` without the copy: the entry in `map`, loaded there first if need be.
fn load<'m, T: serde::de::DeserializeOwned + Clone>(
    state: &BridgeState,
    parent: Option<&HashMap<Vec<u8>, Option<T>>>,
    map: &'m mut HashMap<Vec<u8>, Option<T>>,
    key: Vec<u8>,
) -> Result<&'m mut Option<T>, BridgeError> {
    use std::collections::hash_map::Entry;
    match map.entry(key) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(e) => {
            let v: Option<T> = match parent.and_then(|p| p.get(e.key())) {
                Some(v) => v.clone(),
                None => state.get(e.key())?,
            };
            Ok(e.insert(v))
        }
    }
}

/// Writes each folded value, or deletes its key when it is gone.
fn put_all<T: serde::Serialize>(
    batch: &mut WriteBatch,
    map: &HashMap<Vec<u8>, Option<T>>,
) -> Result<(), BridgeError> {
    for (k, v) in map {
        match v {
            Some(v) => batch.put(k, codec::encode(v)?),
            None => batch.delete(k),
        }
    }
    Ok(())
}

/// A rendered batch's changes to the folded state, kept until its messages are confirmed and
/// they are stored; the next batch renders through them meanwhile (`Overlay::parent`).
#[derive(Default)]
struct Changes {
    tasks: HashMap<Vec<u8>, Option<Task>>,
    groups: HashMap<Vec<u8>, Option<TaskGroup>>,
    artifacts: HashMap<Vec<u8>, Option<Artifact>>,
    /// Never-resolved task counts by group (`None`: the group expired), and whether a task was
    /// already counted as resolved (`false`: the task expired).
    counts: HashMap<Vec<u8>, Option<u64>>,
    counted: HashMap<Vec<u8>, bool>,
    /// Worker-manager facts: pools' providers, workers' (provider, capacity).
    pools: HashMap<Vec<u8>, Option<String>>,
    workers: HashMap<Vec<u8>, Option<(String, u32)>>,
}

impl Changes {
    fn commit(&self, batch: &mut WriteBatch) -> Result<(), BridgeError> {
        put_all(batch, &self.tasks)?;
        put_all(batch, &self.groups)?;
        put_all(batch, &self.artifacts)?;
        for (k, n) in &self.counts {
            match n {
                Some(n) => batch.put(k, n.to_be_bytes()),
                None => batch.delete(k),
            }
        }
        for (k, counted) in &self.counted {
            if *counted {
                batch.put(k, b"1");
            } else {
                batch.delete(k);
            }
        }
        put_all(batch, &self.pools)?;
        put_all(batch, &self.workers)?;
        Ok(())
    }
}

/// A batch's view of the folded state: the stored state, then the changes of the batch
/// before it that are not stored yet (`parent`), then this batch's changes.
struct Overlay<'a> {
    state: &'a BridgeState,
    parent: Option<Arc<Changes>>,
    changes: Changes,
}

impl<'a> Overlay<'a> {
    fn new(state: &'a BridgeState, parent: Option<Arc<Changes>>) -> Self {
        Overlay {
            state,
            parent,
            changes: Changes::default(),
        }
    }

    fn pool_provider(&mut self, pool: &str) -> Result<Option<String>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.pools);
        through(self.state, parent, &mut self.changes.pools, pool_key(pool))
    }

    fn worker_facts(&mut self, worker: &WorkerKey) -> Result<Option<(String, u32)>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.workers);
        through(
            self.state,
            parent,
            &mut self.changes.workers,
            worker_key(worker),
        )
    }

    fn count(&mut self, key: &[u8]) -> Result<u64, BridgeError> {
        if let Some(n) = self.changes.counts.get(key) {
            return Ok(n.unwrap_or(0));
        }
        let n = match self.parent.as_deref().and_then(|p| p.counts.get(key)) {
            Some(n) => n.unwrap_or(0),
            None => self
                .state
                .db
                .get(key)?
                .and_then(|v| v.as_slice().try_into().ok())
                .map_or(0, u64::from_be_bytes),
        };
        self.changes.counts.insert(key.to_vec(), Some(n));
        Ok(n)
    }

    /// The first time `task` is resolved, it leaves its group's never-resolved count.
    /// Returns the count after this resolution.
    fn resolve_in_group(&mut self, task: &Task) -> Result<u64, BridgeError> {
        let group = unresolved_key(&task.definition.task_group_id.0);
        let n = self.count(&group)?;
        let key = counted_key(&task.task_id.0);
        let parent = self.parent.as_deref();
        let already = match self
            .changes
            .counted
            .get(&key)
            .or_else(|| parent.and_then(|p| p.counted.get(&key)))
        {
            Some(b) => *b,
            None => self.state.db.get(&key)?.is_some(),
        };
        if already {
            return Ok(n);
        }
        self.changes.counted.insert(key, true);
        self.changes.counts.insert(group, Some(n.saturating_sub(1)));
        Ok(n.saturating_sub(1))
    }

    fn task(&mut self, key: Vec<u8>) -> Result<Option<Task>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.tasks);
        through(self.state, parent, &mut self.changes.tasks, key)
    }

    /// The task as this batch has it, without copying it (a task is large: its definition).
    fn task_mut(&mut self, key: Vec<u8>) -> Result<Option<&mut Task>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.tasks);
        Ok(load(self.state, parent, &mut self.changes.tasks, key)?.as_mut())
    }

    fn group(&mut self, key: Vec<u8>) -> Result<Option<TaskGroup>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.groups);
        through(self.state, parent, &mut self.changes.groups, key)
    }

    fn artifact(&mut self, key: Vec<u8>) -> Result<Option<Artifact>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.artifacts);
        through(self.state, parent, &mut self.changes.artifacts, key)
    }

    /// Folds one queue event; returns the artifact an `ArtifactFinished` finished (or a
    /// repeated finishArtifact names).
    fn apply(&mut self, event: &QueueEvent) -> Result<Option<Artifact>, BridgeError> {
        match event {
            QueueEvent::Repeated { repeat, .. } => {
                return match repeat {
                    Repeat::ArtifactCreated {
                        task_id,
                        run_id,
                        name,
                    } => self.artifact(artifact_key(&task_id.0, *run_id, name)),
                    Repeat::TaskDefined { .. }
                    | Repeat::RunPending { .. }
                    | Repeat::RunResolved { .. }
                    | Repeat::TaskGroupSealed { .. } => Ok(None),
                };
            }
            QueueEvent::TaskDefined {
                task_id,
                definition,
                ..
            } => {
                let t = Task::defined(*task_id, kept_definition(definition), Vec::new());
                self.changes.tasks.insert(task_key(&task_id.0), Some(t));
                let group = unresolved_key(&definition.task_group_id.0);
                let n = self.count(&group)?;
                self.changes.counts.insert(group, Some(n + 1));
            }
            // expiry publishes nothing upstream; the bridge just forgets what it kept: the
            // task, its resolved mark and its runs' unfinished object artifacts
            QueueEvent::TaskExpired { task_id } => {
                self.changes.tasks.insert(task_key(&task_id.0), None);
                self.changes.counted.insert(counted_key(&task_id.0), false);
                let prefix = &task_artifacts_prefix(&task_id.0);
                let stored = self
                    .state
                    .db
                    .prefix_iterator(prefix)
                    .map(|kv| kv.map(|(k, _)| k.to_vec()))
                    .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(prefix)))
                    .collect::<Result<Vec<_>, _>>()?;
                // this batch's, and those of the batch before it not stored yet
                let pending: Vec<Vec<u8>> = self
                    .changes
                    .artifacts
                    .keys()
                    .chain(self.parent.iter().flat_map(|p| p.artifacts.keys()))
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect();
                for key in stored.into_iter().chain(pending) {
                    self.changes.artifacts.insert(key, None);
                }
            }
            QueueEvent::ArtifactExpired {
                task_id,
                run_id,
                name,
            } => {
                self.changes
                    .artifacts
                    .insert(artifact_key(&task_id.0, *run_id, name), None);
            }
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => {
                let key = group_key(&task_group_id.0);
                let g = TaskGroup::apply(self.group(key.clone())?, event);
                self.changes.groups.insert(key, g);
                if matches!(event, QueueEvent::TaskGroupExpired { .. }) {
                    self.changes
                        .counts
                        .insert(unresolved_key(&task_group_id.0), None);
                }
            }
            QueueEvent::ArtifactCreated {
                task_id,
                run_id,
                artifact,
            } => {
                if matches!(artifact.storage, ArtifactStorage::Object { .. }) {
                    let key = artifact_key(&task_id.0, *run_id, &artifact.name);
                    self.changes.artifacts.insert(key, Some(artifact.clone()));
                }
            }
            QueueEvent::ArtifactFinished {
                task_id,
                run_id,
                name,
            } => {
                // kept, finished, until it or its task expires: a repeated finishArtifact
                // publishes artifact-created again
                let key = artifact_key(&task_id.0, *run_id, name);
                let a = self.artifact(key.clone())?.map(|mut a| {
                    a.present = true;
                    a
                });
                self.changes.artifacts.insert(key, a.clone());
                return Ok(a);
            }
            QueueEvent::WorkerSeen { .. } | QueueEvent::WorkerQuarantined { .. } => {}
            QueueEvent::RunScheduled { task_id, .. }
            | QueueEvent::RunClaimed { task_id, .. }
            | QueueEvent::RunReclaimed { task_id, .. }
            | QueueEvent::RunResolved { task_id, .. }
            | QueueEvent::RunExceptionRecorded { task_id, .. }
            | QueueEvent::DependencySatisfied { task_id, .. }
            | QueueEvent::PriorityChanged { task_id, .. }
            | QueueEvent::GroupPriorityApplied { task_id, .. } => {
                if let Some(t) = self.task_mut(task_key(&task_id.0))? {
                    t.apply(event);
                }
            }
        }
        Ok(None)
    }
}

/// What the bridge keeps of a task's definition: the fields that messages, routing keys and
/// CC routes read (queue, scheduler, project, group, routes, times, tags, and the priority and
/// retries `Task::defined` starts from). The payload, metadata, scopes, extra and dependencies
/// are left empty: no message carries them, and a real payload alone is often kilobytes that
/// every fold of the task would decode and write again. The task's unsatisfied dependencies
/// are not kept either, for the same reason.
fn kept_definition(d: &TaskDefinition) -> TaskDefinition {
    TaskDefinition {
        task_queue_id: d.task_queue_id.clone(),
        scheduler_id: d.scheduler_id.clone(),
        project_id: d.project_id.clone(),
        task_group_id: d.task_group_id,
        dependencies: Vec::new(),
        requires: d.requires,
        routes: d.routes.clone(),
        priority: d.priority,
        retries: d.retries,
        created: d.created,
        deadline: d.deadline,
        expires: d.expires,
        scopes: Vec::new(),
        payload: JsonText("{}".into()),
        metadata: Metadata {
            name: String::new(),
            description: String::new(),
            owner: String::new(),
            source: String::new(),
        },
        tags: d.tags.clone(),
        extra: JsonText("{}".into()),
    }
}

/// One outgoing message with its envelope's identity.
struct Outgoing {
    message: Message,
    event_id: String,
    stream: String,
    sequence: u64,
    /// When the event happened.
    time: Millis,
}

impl Outgoing {
    /// `message`, identified by the envelope it renders.
    fn of<E>(env: &Envelope<E>, message: Message) -> Outgoing {
        Outgoing {
            message,
            event_id: env.event_id.to_string(),
            stream: env.stream_id.clone(),
            sequence: env.sequence,
            time: env.time,
        }
    }
}

/// Envelopes of one command: same stream, time, actor and cause, back to back. The actor
/// holds the command's request id, which every command has had since reactors got one each
/// (`Actor::system`); in a log older than that, two commands of one reactor on one stream in
/// one millisecond (the built-in worker's claim and report) read as one.
fn same_command<E>(a: &Envelope<E>, b: &Envelope<E>) -> bool {
    a.stream_id == b.stream_id
        && a.time == b.time
        && a.actor == b.actor
        && a.causation_id == b.causation_id
}

/// How many of a read's records to render now: all of them, except, when more of the log
/// follows, the events at the end that belong to one command (which the read may have cut:
/// a command's messages render from the state after all its events, and a task-exception
/// followed by its retry's run must not look like a resolution of the group). All of them
/// when that command is the whole read.
fn whole_commands(
    topic: &str,
    records: &[taskledger_core::log::Stored],
    more_follows: bool,
) -> Result<usize, BridgeError> {
    if topic != QUEUE_TOPIC || !more_follows {
        return Ok(records.len());
    }
    let Some(last) = records.last() else {
        return Ok(0);
    };
    let last = codec::decode::<Envelope<QueueEvent>>(&last.value)?;
    let mut keep = records.len() - 1;
    while keep > 0 {
        let before = codec::decode::<Envelope<QueueEvent>>(&records[keep - 1].value)?;
        if !same_command(&before, &last) {
            break;
        }
        keep -= 1;
    }
    Ok(if keep == 0 { records.len() } else { keep })
}

/// Messages for a batch of queue records; the state after each command renders its messages.
fn queue_batch(
    overlay: &mut Overlay,
    envelopes: &[Envelope<QueueEvent>],
) -> Result<Vec<Outgoing>, BridgeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < envelopes.len() {
        let mut j = i + 1;
        while j < envelopes.len() && same_command(&envelopes[i], &envelopes[j]) {
            j += 1;
        }
        let mut finished = Vec::new();
        for env in &envelopes[i..j] {
            finished.push(overlay.apply(&env.payload)?);
        }
        for (env, fin) in envelopes[i..j].iter().zip(finished) {
            let (payload, fin) = (&env.payload, fin.as_ref());
            let message = match payload.stream() {
                taskledger_core::queue::Stream::Task(id) => {
                    let task = overlay.task_mut(task_key(&id.0))?;
                    messages::queue_message(payload, task.as_deref(), None, fin)
                }
                taskledger_core::queue::Stream::TaskGroup(id) => {
                    let group = overlay.group(group_key(&id.0))?;
                    messages::queue_message(payload, None, group.as_ref(), fin)
                }
                taskledger_core::queue::Stream::Worker(_) => {
                    messages::queue_message(payload, None, None, fin)
                }
            };
            if let Some(message) = message {
                out.push(Outgoing::of(env, message));
            }
        }
        if overlay.state.group_counts {
            out.extend(group_resolved(overlay, &envelopes[i..j])?);
        }
        i = j;
    }
    Ok(out)
}

/// task-group-resolved after a command that resolved a task (queue.md §8): when no task of its
/// group is still never-resolved. Derived, not an event of its own: it carries the resolving
/// event's stream and sequence, and that event's id suffixed `/task-group-resolved`.
fn group_resolved(
    overlay: &mut Overlay,
    command: &[Envelope<QueueEvent>],
) -> Result<Option<Outgoing>, BridgeError> {
    let Some(env) = command.iter().find(|e| {
        matches!(
            e.payload,
            QueueEvent::RunResolved { .. } | QueueEvent::RunExceptionRecorded { .. }
        )
    }) else {
        return Ok(None);
    };
    let taskledger_core::queue::Stream::Task(id) = env.payload.stream() else {
        return Ok(None);
    };
    // an exception that is retried leaves the task pending: not resolved
    let Some(task) = overlay
        .task(task_key(&id.0))?
        .filter(|t| t.resolution().is_some())
    else {
        return Ok(None);
    };
    if overlay.resolve_in_group(&task)? > 0 {
        return Ok(None);
    }
    let Some(group) = overlay.group(group_key(&task.definition.task_group_id.0))? else {
        return Ok(None);
    };
    Ok(Some(Outgoing {
        message: messages::group_message("task-group-resolved", &group),
        event_id: format!("{}/task-group-resolved", env.event_id),
        stream: env.stream_id.clone(),
        sequence: env.sequence,
        time: env.time,
    }))
}

fn properties(o: &Outgoing) -> BasicProperties {
    let mut headers = FieldTable::default();
    if !o.message.cc.is_empty() {
        let cc: Vec<AMQPValue> = o
            .message
            .cc
            .iter()
            .map(|r| AMQPValue::LongString(LongString::from(r.as_str())))
            .collect();
        headers.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(cc)));
    }
    headers.insert(
        "taskledger-stream".into(),
        AMQPValue::LongString(LongString::from(o.stream.as_str())),
    );
    headers.insert(
        "taskledger-sequence".into(),
        AMQPValue::LongLongInt(o.sequence as i64),
    );
    // when the event happened (ms since the epoch): consumers can measure their lag
    headers.insert("taskledger-time".into(), AMQPValue::LongLongInt(o.time.0));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id(o.event_id.as_str().into())
        .with_headers(headers)
}

/// The messages of a batch of `topic`'s records, and the folded state after them.
/// `parent` is the previous batch of the same topic while it is not stored yet.
fn render(
    state: &BridgeState,
    parent: Option<Arc<Changes>>,
    topic: &str,
    records: &[taskledger_core::log::Stored],
) -> Result<(Changes, Vec<Outgoing>), BridgeError> {
    let mut overlay = Overlay::new(state, parent);
    let outgoing = if topic == QUEUE_TOPIC {
        let envs = records
            .iter()
            .map(|r| codec::decode::<Envelope<QueueEvent>>(&r.value))
            .collect::<Result<Vec<_>, _>>()?;
        queue_batch(&mut overlay, &envs)?
    } else if topic == WORKER_MANAGER_TOPIC {
        let envs = records
            .iter()
            .map(|r| codec::decode::<Envelope<WorkerEvent>>(&r.value))
            .collect::<Result<Vec<_>, _>>()?;
        worker_manager_batch(&mut overlay, &envs)?
    } else {
        records
            .iter()
            .filter_map(|r| {
                let env = match codec::decode::<Envelope<AuthEvent>>(&r.value) {
                    Ok(env) => env,
                    Err(e) => return Some(Err(e.into())),
                };
                let message = messages::auth_message(&env.payload)?;
                Some(Ok(Outgoing::of(&env, message)))
            })
            .collect::<Result<Vec<_>, BridgeError>>()?
    };
    Ok((overlay.changes, outgoing))
}

/// The messages of worker-manager events (reference/worker-manager.md §3). A static worker is
/// created running (worker-running) and removeWorker removes it (worker-removed); its
/// registrations and updates publish nothing, as upstream. Pools and workers are remembered
/// for the provider and capacity later messages carry.
fn worker_manager_batch(
    overlay: &mut Overlay,
    envs: &[Envelope<WorkerEvent>],
) -> Result<Vec<Outgoing>, BridgeError> {
    let mut out = Vec::new();
    for env in envs {
        let message = match &env.payload {
            WorkerEvent::WorkerPoolCreated {
                worker_pool_id,
                provider_id,
                ..
            } => {
                overlay
                    .changes
                    .pools
                    .insert(pool_key(worker_pool_id.as_str()), Some(provider_id.clone()));
                Some(messages::pool_message(
                    "worker-pool-created",
                    worker_pool_id,
                    provider_id,
                    None,
                ))
            }
            WorkerEvent::WorkerPoolUpdated {
                worker_pool_id,
                provider_id,
                ..
            } => {
                let previous = overlay.pool_provider(worker_pool_id.as_str())?;
                overlay
                    .changes
                    .pools
                    .insert(pool_key(worker_pool_id.as_str()), Some(provider_id.clone()));
                Some(messages::pool_message(
                    "worker-pool-updated",
                    worker_pool_id,
                    provider_id,
                    previous.as_deref(),
                ))
            }
            WorkerEvent::WorkerCreated {
                worker,
                provider_id,
                capacity,
                ..
            } => {
                overlay
                    .changes
                    .workers
                    .insert(worker_key(worker), Some((provider_id.clone(), *capacity)));
                Some(messages::worker_message(
                    "worker-running",
                    worker,
                    provider_id,
                    *capacity,
                    env.time,
                    None,
                ))
            }
            WorkerEvent::WorkerUpdated {
                worker, capacity, ..
            } => {
                if let Some((provider, _)) = overlay.worker_facts(worker)? {
                    overlay
                        .changes
                        .workers
                        .insert(worker_key(worker), Some((provider, *capacity)));
                }
                None
            }
            WorkerEvent::WorkerRemoved { worker } => {
                overlay.worker_facts(worker)?.map(|(provider, capacity)| {
                    messages::worker_message(
                        "worker-removed",
                        worker,
                        &provider,
                        capacity,
                        env.time,
                        Some(messages::REMOVE_WORKER_REASON),
                    )
                })
            }
            WorkerEvent::WorkerRegistered { .. } => None,
            e @ WorkerEvent::WorkerErrorReported { worker_pool_id, .. } => {
                let provider = overlay
                    .pool_provider(worker_pool_id.as_str())?
                    .unwrap_or_else(|| "_".into());
                messages::pool_error_message(e, &provider, env.time)
            }
        };
        if let Some(message) = message {
            out.push(Outgoing::of(env, message));
        }
    }
    Ok(out)
}

/// Publishes every `(exchange, routing key, message, properties)` and waits for the broker to
/// confirm each; `pending` counts the confirms still awaited. Any nack or channel error fails
/// the whole batch (the caller publishes it again). Returns how many were confirmed.
///
/// Messages are spread over `channels` by their stream, so one stream's messages always
/// travel on one channel, in order, while the broker works on the channels in parallel
/// (each channel is one process inside RabbitMQ).
async fn publish_confirmed<'o>(
    channels: &[lapin::Channel],
    items: impl Iterator<Item = (&'o str, &'o str, &'o Outgoing, BasicProperties)>,
    pending: &AtomicU64,
) -> Result<u64, BridgeError> {
    let confirms = publish(channels, items, pending).await?;
    confirmed(confirms, pending).await
}

/// Publishes every `(exchange, routing key, message, properties)` (see `publish_confirmed`);
/// returns the confirms to await, counted in `pending`.
async fn publish<'o>(
    channels: &[lapin::Channel],
    items: impl Iterator<Item = (&'o str, &'o str, &'o Outgoing, BasicProperties)>,
    pending: &AtomicU64,
) -> Result<Vec<lapin::PublisherConfirm>, BridgeError> {
    let publishes = items.map(|(exchange, routing_key, o, props)| {
        channels[shard(&o.stream, channels.len())].basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &o.message.body,
            props,
        )
    });
    let confirms = publish_in_order(publishes).await?;
    pending.fetch_add(confirms.len() as u64, Ordering::Relaxed);
    Ok(confirms)
}

/// Drives lapin `basic_publish` futures together and returns their confirms, in order.
///
/// Each publish hands its frames to the connection when first polled, then waits for the
/// connection's I/O thread to write them. Awaited one after the other, every message costs a
/// round trip between this task and that thread (two thread switches); here every future is
/// polled once, in the given order, so the frames queue in that order (one stream's messages
/// stay in order on their channel), and the I/O thread writes them in a few large writes while
/// this task waits once.
///
/// This relies on lapin queuing a publish's frames, and taking its confirm's delivery tag,
/// before the future's first wait (lapin 4's `basic_publish` does; the end-to-end test
/// `on_several_channels_each_tasks_messages_keep_their_order` checks the order on a real
/// broker). After the first round the futures are polled from the first unfinished one and
/// only while they are ready, since the I/O thread finishes them in order: an error behind an
/// unfinished publish is seen once that one finishes (lapin fails every publish of a broken
/// connection).
pub async fn publish_in_order<F, T, E>(publishes: impl Iterator<Item = F>) -> Result<Vec<T>, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    use std::task::Poll;
    let mut futures: Vec<_> = publishes.map(Box::pin).collect();
    let mut confirms: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    // the first future not finished yet; before the first round, every one is still unpolled
    let mut first = 0;
    let mut polled_all = false;
    std::future::poll_fn(|cx| {
        let mut i = first;
        while i < futures.len() {
            if confirms[i].is_none() {
                match futures[i].as_mut().poll(cx) {
                    Poll::Ready(Ok(confirm)) => confirms[i] = Some(confirm),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    // after the first round every pending future holds our waker: the frames
                    // are written in order, so the rest waits for this one
                    Poll::Pending if polled_all => break,
                    Poll::Pending => {}
                }
            }
            if confirms[i].is_some() && i == first {
                first += 1;
            }
            i += 1;
        }
        polled_all = true;
        if first == futures.len() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(confirms.into_iter().flatten().collect())
}

/// Awaits `confirms` (see `publish_confirmed`).
async fn confirmed(
    confirms: Vec<lapin::PublisherConfirm>,
    pending: &AtomicU64,
) -> Result<u64, BridgeError> {
    let mut confirmed = 0;
    for c in confirms {
        let answer = c.await;
        pending.fetch_sub(1, Ordering::Relaxed);
        let acked = match answer {
            Ok(conf) => conf.is_ack(),
            Err(e) => {
                pending.store(0, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        if !acked {
            pending.store(0, Ordering::Relaxed);
            return Err(BridgeError::Nacked);
        }
        confirmed += 1;
    }
    Ok(confirmed)
}

/// The channel (of `n`) that carries `stream`'s messages.
fn shard(stream: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if n <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stream.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// AMQP topic matching (what a binding does): words split on `.`, `*` is one word, `#` zero
/// or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((w, rest)) => k
                .split_first()
                .is_some_and(|(kw, krest)| (*w == "*" || w == kw) && go(rest, krest)),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// What `taskledger bridge replay` selects from the history.
pub struct ReplayFilter {
    /// The full exchange name.
    pub exchange: String,
    /// A binding pattern, matched against the routing key and every CC'd route.
    pub routing_key: String,
    /// Events before this instant are skipped.
    pub since: Millis,
}

/// Republishes the history matching `filter` into the existing queue `queue` (through the
/// default exchange, so only that queue receives it), with publisher confirms. The messages
/// are the bridge's own (same bodies, message ids and headers) plus `taskledger-exchange` and
/// `taskledger-routing-key` headers naming where they were first published. The fold state
/// lives in `scratch`, a fresh directory. Returns how many messages were republished.
pub async fn replay(
    log: &EmbeddedLog,
    url: &str,
    filter: &ReplayFilter,
    queue: &str,
    scratch: &Path,
) -> Result<u64, BridgeError> {
    let state = BridgeState::open(scratch)?;
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut published = 0;
    for topic in [QUEUE_TOPIC, AUTH_TOPIC, WORKER_MANAGER_TOPIC] {
        let mut offset = 0;
        loop {
            let records = log.read_sync(topic, 0, offset, BATCH)?;
            let Some(last) = records.last() else {
                break;
            };
            offset = last.offset + 1;
            let (changes, outgoing) = render(&state, None, topic, &records)?;
            let mut batch = WriteBatch::default();
            changes.commit(&mut batch)?;
            state.db.write(batch)?;
            let selected = outgoing.iter().filter(|o| {
                o.message.exchange == filter.exchange
                    && o.time >= filter.since
                    && (topic_matches(&filter.routing_key, &o.message.routing_key)
                        || o.message
                            .cc
                            .iter()
                            .any(|r| topic_matches(&filter.routing_key, r)))
            });
            // through the default exchange: only `queue` receives them
            let items = selected.map(|o| {
                let props = properties(o);
                let mut headers = props.headers().clone().unwrap_or_default();
                headers.insert(
                    "taskledger-exchange".into(),
                    AMQPValue::LongString(LongString::from(o.message.exchange.as_str())),
                );
                headers.insert(
                    "taskledger-routing-key".into(),
                    AMQPValue::LongString(LongString::from(o.message.routing_key.as_str())),
                );
                ("", queue, o, props.with_headers(headers))
            });
            published +=
                publish_confirmed(std::slice::from_ref(&channel), items, &AtomicU64::new(0))
                    .await?;
        }
    }
    let _ = conn.close(200, "replay done".into()).await;
    Ok(published)
}

/// Runs the bridge until the process ends: reconnects with backoff, never skips an event.
/// `wake` (the queue engine's commit counter) shortens the idle wait; without it (a
/// standalone bridge on a secondary instance of the server's database) the bridge polls, and
/// calls `refresh` (to catch up with the primary) before each read. With `channels` = 1 the
/// messages reach the broker in log order; more channels (at most 16) spread them by stream:
/// each stream's messages keep their order, messages of different streams (a task and its
/// group, a pool and its workers) may overtake each other, and the broker works on the
/// channels in parallel.
pub async fn run<L: EventLog>(
    log: Arc<L>,
    refresh: Option<Arc<dyn Fn() + Send + Sync>>,
    state: Arc<BridgeState>,
    url: String,
    channels: usize,
    mut wake: Option<watch::Receiver<u64>>,
    stats: Arc<BridgeStats>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let r = session(
            &*log,
            refresh.as_deref(),
            &state,
            &url,
            channels.clamp(1, 16),
            &mut wake,
            &stats,
            &mut backoff,
        );
        let ended = r.await;
        stats.channels.store(0, Ordering::Relaxed);
        match ended {
            Ok(()) => return,
            Err(e) => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "pulse bridge: reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection's life: opens its channels, then publishes what the log holds beyond the
/// bridge's position, batch after batch; it returns only when the connection or a publish
/// fails.
// the loop's state (position, wake-up, stats, backoff) is its caller's, lent for the session
#[allow(clippy::too_many_arguments)]
async fn session<L: EventLog>(
    log: &L,
    refresh: Option<&(dyn Fn() + Send + Sync)>,
    state: &BridgeState,
    url: &str,
    n_channels: usize,
    wake: &mut Option<watch::Receiver<u64>>,
    stats: &BridgeStats,
    backoff: &mut Duration,
) -> Result<(), BridgeError> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut channels = Vec::with_capacity(n_channels);
    for _ in 0..n_channels {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    let channel = &channels[0];
    let exchanges = messages::QUEUE_EXCHANGES
        .iter()
        .map(|e| format!("{}{e}", messages::QUEUE_EXCHANGE_PREFIX))
        .chain(
            messages::AUTH_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::AUTH_EXCHANGE_PREFIX)),
        )
        .chain(
            messages::WORKER_MANAGER_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::WORKER_MANAGER_EXCHANGE_PREFIX)),
        );
    for exchange in exchanges {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    tracing::info!(channels = channels.len(), "pulse bridge connected");
    stats
        .channels
        .store(channels.len() as u64, Ordering::Relaxed);
    *backoff = Duration::from_millis(100);
    // confirms a failed session left unawaited are gone with it
    stats.confirms_pending.store(0, Ordering::Relaxed);
    // The batch published last, not stored yet: the next batch of its topic renders through
    // its changes and is published before its confirms are awaited, so the broker has work
    // while the bridge reads, renders and stores. Batches are stored in order, each once its
    // own confirms are in: a failure anywhere ends the session before the batch's offset is
    // stored, and the next session publishes it again.
    let mut in_flight: Option<InFlight> = None;
    loop {
        let mut progressed = false;
        // events of the log this pass did not read
        let mut unread = 0u64;
        if let Some(refresh) = refresh {
            refresh();
        }
        for topic in [QUEUE_TOPIC, AUTH_TOPIC, WORKER_MANAGER_TOPIC] {
            let offset = match &in_flight {
                Some(f) if f.topic == topic => f.next,
                _ => state.offset(topic)?,
            };
            let read = log.read(topic, 0, offset, BATCH).await?;
            if read.next <= offset {
                continue;
            }
            progressed = true;
            let end = log.end_offset(topic, 0).await?;
            // a read may stop inside a command: its last events wait for the next read
            let keep = whole_commands(topic, &read.records, read.next < end)?;
            let (records, next) = match read.records.get(keep) {
                Some(first_left) if keep > 0 => (&read.records[..keep], first_left.offset),
                _ => (&read.records[..], read.next),
            };
            // a batch renders only through a batch of its own topic
            if let Some(f) = in_flight.take_if(|f| f.topic != topic) {
                f.store(state, stats).await?;
            }
            let parent = in_flight.as_ref().map(|f| f.changes.clone());
            let (changes, outgoing) = render(state, parent, topic, records)?;
            let items = outgoing.iter().map(|o| {
                (
                    o.message.exchange.as_str(),
                    o.message.routing_key.as_str(),
                    o,
                    properties(o),
                )
            });
            let confirms = publish(&channels, items, &stats.confirms_pending).await?;
            if let Some(previous) = in_flight.take() {
                previous.store(state, stats).await?;
            }
            in_flight = Some(InFlight {
                topic,
                changes: Arc::new(changes),
                confirms,
                next,
                start: offset,
                messages: outgoing.len() as u64,
            });
            unread += end.saturating_sub(next);
        }
        if !progressed {
            if let Some(f) = in_flight.take() {
                // nothing more to publish: store what is out before waiting
                f.store(state, stats).await?;
                continue;
            }
        }
        // not yet confirmed: what is left to read, and the batch awaiting its confirms
        let unconfirmed = in_flight.as_ref().map_or(0, |f| f.next - f.start);
        stats
            .lag_events
            .store(unread + unconfirmed, Ordering::Relaxed);
        // nothing left to publish: only the confirms of what is out may be awaited
        if unread == 0 {
            stats
                .caught_up_at_ms
                .store(taskledger_core::time::Millis::now().0, Ordering::Relaxed);
        }
        if !progressed {
            match wake.as_mut() {
                Some(w) => {
                    let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// A published batch awaiting its confirms.
struct InFlight {
    topic: &'static str,
    changes: Arc<Changes>,
    confirms: Vec<lapin::PublisherConfirm>,
    /// The batch's first offset, and the offset after it.
    start: u64,
    next: u64,
    messages: u64,
}

impl InFlight {
    /// Awaits the batch's confirms, then stores its changes and its topic's offset in one
    /// write.
    async fn store(self, state: &BridgeState, stats: &BridgeStats) -> Result<(), BridgeError> {
        confirmed(self.confirms, &stats.confirms_pending).await?;
        let mut batch = WriteBatch::default();
        self.changes.commit(&mut batch)?;
        batch.put(offset_key(self.topic), self.next.to_be_bytes());
        state.db.write(batch)?;
        stats.published.fetch_add(self.messages, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod replay_tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_as_amqp_bindings_do() {
        assert!(topic_matches("primary.#", "primary.abc._._"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("primary.*.0.#", "primary.t1.0.g.w"));
        assert!(!topic_matches("primary.*.0.#", "primary.t1.1.g.w"));
        assert!(topic_matches(
            "primary.#.grp.#",
            "primary.t.0._._.p.w.-.grp._"
        ));
        assert!(topic_matches("route.it.#", "route.it.x.done"));
        assert!(!topic_matches("route.it.*", "route.it.x.done"));
        assert!(topic_matches("a.#.b", "a.b"));
        assert!(!topic_matches("a.*", "a"));
        assert!(topic_matches("_", "_"));
    }
}

#[cfg(test)]
mod publish_in_order_tests {
    use super::publish_in_order;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Which publishes were first polled, in order.
    type FirstPolls = Arc<Mutex<Vec<usize>>>;
    /// Each publish's result, sent when a test decides.
    type Results = Vec<oneshot::Sender<Result<usize, String>>>;

    /// Futures standing in for publishes: each notes its first poll (where lapin queues the
    /// frames), then waits for its own result.
    fn publishes(
        n: usize,
    ) -> (
        FirstPolls,
        Results,
        Vec<impl std::future::Future<Output = Result<usize, String>>>,
    ) {
        let first_polls = Arc::new(Mutex::new(Vec::new()));
        let (mut senders, mut futures) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (tx, rx) = oneshot::channel();
            senders.push(tx);
            let polls = first_polls.clone();
            futures.push(async move {
                polls.lock().unwrap().push(i);
                rx.await.unwrap_or_else(|_| Err("dropped".into()))
            });
        }
        (first_polls, senders, futures)
    }

    /// The spawned `publish_in_order`'s result; it must not wait forever.
    async fn finished<T>(all: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("publish_in_order finished")
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// Every future is first polled in the given order before any finishes; finishing out of
    /// order still returns the results in the given order, and nothing waits forever.
    #[test]
    fn first_polls_go_in_order_and_results_come_back_in_order() {
        runtime().block_on(async {
            let (first_polls, senders, futures) = publishes(5);
            let all = tokio::spawn(publish_in_order(futures.into_iter()));
            tokio::task::yield_now().await;
            assert_eq!(*first_polls.lock().unwrap(), vec![0, 1, 2, 3, 4]);
            let mut senders: Vec<_> = senders.into_iter().map(Some).collect();
            for i in [3, 1, 4, 0, 2] {
                senders[i].take().unwrap().send(Ok(i * 10)).unwrap();
                tokio::task::yield_now().await;
            }
            assert_eq!(finished(all).await, Ok(vec![0, 10, 20, 30, 40]));
            // each future was polled first exactly once per position
            assert_eq!(first_polls.lock().unwrap().len(), 5);
        });
    }

    /// An error fails the whole batch, once the publishes before it are through.
    #[test]
    fn an_error_fails_the_batch() {
        runtime().block_on(async {
            let (_, senders, futures) = publishes(3);
            let all = tokio::spawn(publish_in_order(futures.into_iter()));
            tokio::task::yield_now().await;
            let mut senders = senders.into_iter();
            let (a, b, c) = (
                senders.next().unwrap(),
                senders.next().unwrap(),
                senders.next().unwrap(),
            );
            c.send(Ok(2)).unwrap();
            b.send(Err("nacked".into())).unwrap();
            a.send(Ok(0)).unwrap();
            assert_eq!(finished(all).await, Err("nacked".to_string()));
            // and nothing to publish is nothing to wait for
            let none =
                publish_in_order(std::iter::empty::<std::future::Ready<Result<u8, String>>>());
            assert_eq!(none.await, Ok(vec![]));
        });
    }
}

#[cfg(test)]
mod testing {
    use taskledger_core::ids::Slug;
    use taskledger_core::queue::{JsonText, Metadata, Priority, Requires, TaskDefinition};
    use taskledger_core::time::{Millis, HOUR};

    /// A small task definition for the bridge's tests.
    pub fn definition(now: Millis) -> TaskDefinition {
        TaskDefinition {
            task_queue_id: "prov/wt".parse().unwrap(),
            scheduler_id: "-".into(),
            project_id: "none".into(),
            task_group_id: Slug::nice(),
            dependencies: vec![],
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
}

#[cfg(test)]
mod expiry_tests {
    use super::*;
    use taskledger_core::envelope::{Actor, EventId};
    use taskledger_core::ids::{Slug, TaskId};
    use taskledger_core::log::Stored;
    use taskledger_core::queue::{self, Limits, ReasonResolved};
    use taskledger_core::time::HOUR;

    use crate::testing::definition;

    /// Folds `events` as one batch of the queue topic and stores the result.
    fn fold(state: &BridgeState, events: Vec<QueueEvent>, first: u64, now: Millis) {
        let records = records(events, first, now);
        let (changes, _) = render(state, None, QUEUE_TOPIC, &records).unwrap();
        let mut batch = WriteBatch::default();
        changes.commit(&mut batch).unwrap();
        state.db.write(batch).unwrap();
    }

    /// An object artifact `name` of `task`'s run 0, created and not uploaded yet.
    fn unfinished_object(task: TaskId, name: &str, now: Millis) -> QueueEvent {
        QueueEvent::ArtifactCreated {
            task_id: task,
            run_id: 0,
            artifact: Artifact {
                name: name.into(),
                storage: ArtifactStorage::Object {
                    upload_id: Slug::nice(),
                    content_length: None,
                },
                content_type: "text/plain".into(),
                expires: now.plus(HOUR),
                present: false,
            },
        }
    }

    /// `events` as the log's records from offset `first`.
    fn records(events: Vec<QueueEvent>, first: u64, now: Millis) -> Vec<Stored> {
        stored(events, first, |_| now, |e| e.stream().id())
    }

    /// `events` as the log's records from offset `first`, each at its own instant from `at`
    /// on, so that none of them is taken for a part of the command before it.
    fn records_at(events: Vec<QueueEvent>, first: u64, at: Millis) -> Vec<Stored> {
        stored(
            events,
            first,
            |i| Millis(at.0 + i as i64),
            |e| e.stream().id(),
        )
    }

    /// A read that may stop inside a command leaves its last command's events for the next
    /// read, unless the log ends there or that command is the whole read; other topics' reads
    /// are rendered whole.
    #[test]
    fn reads_are_rendered_up_to_their_last_whole_command() {
        let now = Millis::now();
        let task = TaskId::nice();
        let one = |i: i64, events: Vec<QueueEvent>, first: u64| {
            stored(events, first, |_| Millis(now.0 + i), |e| e.stream().id())
        };
        let scheduled = QueueEvent::RunScheduled {
            task_id: task,
            run_id: 0,
            reason: taskledger_core::queue::ReasonCreated::Scheduled,
            retries_left: 5,
            at: now,
        };
        let mut log = one(0, vec![scheduled.clone(), scheduled.clone()], 0);
        log.extend(one(1, vec![scheduled.clone()], 2));
        log.extend(one(
            2,
            vec![scheduled.clone(), scheduled.clone(), scheduled],
            3,
        ));
        assert_eq!(whole_commands(QUEUE_TOPIC, &log[..5], true).unwrap(), 3);
        assert_eq!(whole_commands(QUEUE_TOPIC, &log[..6], true).unwrap(), 3);
        assert_eq!(whole_commands(QUEUE_TOPIC, &log[..6], false).unwrap(), 6);
        // a read cannot tell that its last command ended: it waits for the next read
        assert_eq!(whole_commands(QUEUE_TOPIC, &log[..3], true).unwrap(), 2);
        assert_eq!(whole_commands(QUEUE_TOPIC, &log[..2], true).unwrap(), 2);
        assert_eq!(whole_commands(QUEUE_TOPIC, &log[..1], true).unwrap(), 1);
        assert_eq!(whole_commands(AUTH_TOPIC, &log[..5], true).unwrap(), 5);
    }

    /// Calls repeated to the same effect publish their messages again, rendered from the
    /// state as it is: createTask's task-defined and task-pending, rerunTask's task-pending,
    /// finishArtifact's artifact-created and a report's resolution.
    #[test]
    fn repeated_calls_publish_their_messages_again() {
        let (now, limits) = (Millis::now(), Limits::default());
        let id = Slug::nice();
        let def = definition(now);
        let mut task = queue::Task::defined(id, def.clone(), vec![]);
        let mut events = Vec::new();
        let step = |task: &mut queue::Task, events: &mut Vec<QueueEvent>, evs: Vec<QueueEvent>| {
            evs.iter().for_each(|e| task.apply(e));
            events.extend(evs);
        };
        let created = queue::create_task(None, None, &[], id, def.clone(), now, &limits).unwrap();
        step(&mut task, &mut events, created);
        let again = queue::create_task(Some(&task), None, &[], id, def, now, &limits).unwrap();
        step(&mut task, &mut events, again);
        let rerun = queue::rerun_task(&task, now).unwrap();
        step(&mut task, &mut events, rerun);
        let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
        step(&mut task, &mut events, claimed);
        let mut object = unfinished_object(id, "public/out", now);
        events.push(object.clone());
        let finished = QueueEvent::ArtifactFinished {
            task_id: id,
            run_id: 0,
            name: "public/out".into(),
        };
        events.push(finished);
        if let QueueEvent::ArtifactCreated { artifact, .. } = &mut object {
            artifact.present = true;
            let repeat = queue::finish_artifact(id, 0, Some(artifact), Slug::NIL, Slug::NIL, now);
            events.extend(repeat.unwrap());
        }
        let done = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
        step(&mut task, &mut events, done);
        let reported = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
        step(&mut task, &mut events, reported);
        let dir = std::env::temp_dir().join(format!(
            "taskledger-bridge-repeat-{}-{}",
            std::process::id(),
            Millis::now().0
        ));
        let state = BridgeState::open(&dir).unwrap();
        let out = render_chained(&state, QUEUE_TOPIC, &records_at(events, 0, now), 512);
        let names: Vec<&str> = out
            .iter()
            .map(|o| o.message.exchange.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "task-defined",
                "task-pending",
                "task-defined",
                "task-pending",
                "task-pending",
                "task-running",
                "artifact-created",
                "artifact-created",
                "task-completed",
                "task-group-resolved",
                "task-completed",
            ]
        );
        assert_eq!(out[2].message.routing_key, out[0].message.routing_key);
        assert_eq!(out[7].message.body, out[6].message.body);
        assert_eq!(out[10].message.routing_key, out[8].message.routing_key);
        assert_eq!(out[10].message.body, out[8].message.body);
        drop(state);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `events` as records from offset `first`, the i-th at `time(i)` on stream `stream(e)`, all
    /// by one actor and request (events of one stream at one time are then one command).
    fn stored<E: serde::Serialize>(
        events: Vec<E>,
        first: u64,
        time: impl Fn(usize) -> Millis,
        stream: impl Fn(&E) -> String,
    ) -> Vec<Stored> {
        let actor = Actor::system("test");
        stored_by(events, first, time, stream, |_| actor.clone())
    }

    /// `stored`, the i-th event by `actor(i)`.
    fn stored_by<E: serde::Serialize>(
        events: Vec<E>,
        first: u64,
        time: impl Fn(usize) -> Millis,
        stream: impl Fn(&E) -> String,
        actor: impl Fn(usize) -> Actor,
    ) -> Vec<Stored> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let env = Envelope {
                    event_id: EventId::new(),
                    stream_id: stream(&payload),
                    sequence: first + i as u64,
                    time: time(i),
                    actor: actor(i),
                    causation_id: None,
                    writer_epoch: 1,
                    payload,
                };
                Stored {
                    partition: 0,
                    offset: first + i as u64,
                    key: env.stream_id.clone(),
                    value: codec::encode(&env).unwrap(),
                }
            })
            .collect()
    }

    /// `records` rendered in batches of `size` as the bridge pipelines them: each through the
    /// previous batch's changes, which are stored only afterwards; the last stored at the end.
    fn render_chained(
        state: &BridgeState,
        topic: &str,
        records: &[Stored],
        size: usize,
    ) -> Vec<Outgoing> {
        let store = |changes: &Changes| {
            let mut batch = WriteBatch::default();
            changes.commit(&mut batch).unwrap();
            state.db.write(batch).unwrap();
        };
        let mut out = Vec::new();
        let mut unstored: Option<Arc<Changes>> = None;
        for chunk in records.chunks(size) {
            let (changes, rendered) = render(state, unstored.clone(), topic, chunk).unwrap();
            if let Some(previous) = unstored.take() {
                store(&previous);
            }
            unstored = Some(Arc::new(changes));
            out.extend(rendered);
        }
        if let Some(last) = unstored {
            store(&last);
        }
        out
    }

    /// Every stored key and value.
    fn contents(state: &BridgeState) -> Vec<(Vec<u8>, Vec<u8>)> {
        state
            .db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    /// Worker-manager messages rendered through an unstored batch: a pool's update names the
    /// provider an unstored batch gave it, and a worker's removal the provider and capacity an
    /// unstored batch created it with.
    #[test]
    fn worker_manager_renders_through_an_unstored_batch() {
        use taskledger_core::access::seal::SealKey;
        let now = Millis::now();
        let pool: taskledger_core::worker_manager::WorkerPoolId = "prov/wt".parse().unwrap();
        let worker = WorkerKey {
            worker_pool_id: pool.clone(),
            worker_group: "g".into(),
            worker_id: "w".into(),
        };
        let sealed = SealKey::new([7; 32]).seal("o@example.com", "secret", [1; 12]);
        let pool_event = |provider: &str, previous: Option<&str>| {
            let (description, config, owner) = (String::new(), "{}".to_string(), "o@example.com");
            match previous {
                None => WorkerEvent::WorkerPoolCreated {
                    worker_pool_id: pool.clone(),
                    provider_id: provider.into(),
                    description,
                    config,
                    owner: owner.into(),
                    email_on_error: false,
                },
                Some(p) => WorkerEvent::WorkerPoolUpdated {
                    worker_pool_id: pool.clone(),
                    provider_id: provider.into(),
                    previous_provider_ids: vec![p.into()],
                    description,
                    config,
                    owner: owner.into(),
                    email_on_error: false,
                },
            }
        };
        let events = vec![
            pool_event("static-a", None),
            pool_event("static-b", Some("static-a")),
            WorkerEvent::WorkerCreated {
                worker: worker.clone(),
                provider_id: "static-b".into(),
                capacity: 3,
                expires: now.plus(HOUR),
                static_secret: sealed,
            },
            WorkerEvent::WorkerRemoved { worker },
        ];
        let records = stored(events, 0, |i| Millis(now.0 + i as i64), |e| e.stream_id());
        let dir = std::env::temp_dir().join(format!(
            "taskledger-bridge-wm-chain-{}-{}",
            std::process::id(),
            Millis::now().0
        ));
        let state = BridgeState::open(&dir).unwrap();
        let bodies: Vec<_> = render_chained(&state, WORKER_MANAGER_TOPIC, &records, 1)
            .iter()
            .map(|o| o.message.json())
            .collect();
        assert_eq!(bodies.len(), 4, "{bodies:?}");
        // the update names the provider before it; the removal the worker's provider and
        // capacity
        assert_eq!(bodies[1]["previousProviderId"], "static-a", "{}", bodies[1]);
        assert_eq!(bodies[3]["providerId"], "static-b", "{}", bodies[3]);
        assert_eq!(bodies[3]["capacity"], 3, "{}", bodies[3]);
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The bridge renders a batch through the previous one's changes while that batch awaits
    /// its confirms (`Overlay::parent`). Batch by batch, that gives the same messages and the
    /// same stored state as rendering each batch after the previous one was stored: tasks
    /// spanning batches, a shared group's count reaching zero, object artifacts finished or
    /// left behind, and tasks and the group expiring.
    #[test]
    fn rendering_through_an_unstored_batch_equals_rendering_after_it() {
        let (now, limits) = (Millis::now(), Limits::default());
        let group = Slug::nice();
        let mut events = Vec::new();
        // all six defined first, so the group's count of unresolved tasks runs down from six
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let id = Slug::nice();
            let mut def = definition(now);
            def.task_group_id = group;
            let created =
                queue::create_task(None, None, &[], id, def.clone(), now, &limits).expect("create");
            let mut task = queue::Task::defined(id, def, vec![]);
            created.iter().for_each(|e| task.apply(e));
            events.extend(created);
            tasks.push(task);
        }
        for (i, task) in tasks.iter_mut().enumerate() {
            let id = task.task_id;
            let claimed = queue::claim_run(task, 0, "g", "w", now, &limits).expect("claim");
            claimed.iter().for_each(|e| task.apply(e));
            events.extend(claimed);
            let name = format!("public/{i}");
            events.push(unfinished_object(id, &name, now));
            if i % 2 == 0 {
                events.push(QueueEvent::ArtifactFinished {
                    task_id: id,
                    run_id: 0,
                    name,
                });
            }
            let done = queue::report(task, 0, ReasonResolved::Completed, now).expect("report");
            done.iter().for_each(|e| task.apply(e));
            events.extend(done);
            if i % 3 == 1 {
                // resolved again after a rerun: the group counts the task once
                for step in 0..3 {
                    let evs = match step {
                        0 => queue::rerun_task(task, now).expect("rerun"),
                        1 => queue::claim_run(task, 1, "g", "w", now, &limits).expect("claim"),
                        _ => {
                            queue::report(task, 1, ReasonResolved::Completed, now).expect("report")
                        }
                    };
                    evs.iter().for_each(|e| task.apply(e));
                    events.extend(evs);
                }
            }
        }
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id).collect();
        // later, each its own command: the last task first, its unfinished artifact created a
        // few events before
        let mut expiries: Vec<QueueEvent> = ids
            .iter()
            .rev()
            .take(3)
            .map(|id| QueueEvent::TaskExpired { task_id: *id })
            .collect();
        expiries.push(QueueEvent::TaskGroupExpired {
            task_group_id: group,
        });
        let n = events.len() as u64;
        let mut records = records(events, 0, now);
        records.extend(records_at(expiries, n, now.plus(3 * HOUR)));
        let rendered = |o: &Outgoing| {
            (
                o.message.exchange.clone(),
                o.message.routing_key.clone(),
                o.message.body.clone(),
                o.event_id.clone(),
            )
        };
        let dir = std::env::temp_dir().join(format!(
            "taskledger-bridge-chain-{}-{}",
            std::process::id(),
            Millis::now().0
        ));
        for size in [1, 2, 3, 4, 5, 7] {
            // each batch rendered after the one before it is stored
            let stored = BridgeState::open(&dir.join(format!("stored-{size}"))).unwrap();
            let mut expected = Vec::new();
            for chunk in records.chunks(size) {
                let (changes, out) = render(&stored, None, QUEUE_TOPIC, chunk).unwrap();
                let mut batch = WriteBatch::default();
                changes.commit(&mut batch).unwrap();
                stored.db.write(batch).unwrap();
                expected.extend(out.iter().map(rendered));
            }
            // each batch rendered through the one before it, which is stored afterwards
            let chained = BridgeState::open(&dir.join(format!("chained-{size}"))).unwrap();
            let got: Vec<_> = render_chained(&chained, QUEUE_TOPIC, &records, size)
                .iter()
                .map(rendered)
                .collect();
            assert_eq!(got, expected, "batches of {size}");
            assert_eq!(contents(&chained), contents(&stored), "batches of {size}");
            let exchanges: Vec<&str> = expected.iter().map(|m| m.0.as_str()).collect();
            for name in ["task-completed", "artifact-created", "task-group-resolved"] {
                assert!(
                    exchanges.iter().any(|e| e.ends_with(name)),
                    "no {name} message in batches of {size}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The bridge keeps a slim copy of each task (`kept_definition`), yet every message of a
    /// task with a large, full definition (payload, scopes, metadata, extra, dependencies,
    /// tags, routes) is what the full task renders; and the payload is not stored.
    #[test]
    fn messages_from_the_kept_task_equal_those_of_the_full_task() {
        use taskledger_core::queue::{DependencyState, DependencyView, Priority, Resolution};
        let (now, limits) = (Millis::now(), Limits::default());
        let (id, dependency) = (Slug::nice(), Slug::nice());
        let marker = "payload-that-the-bridge-does-not-keep";
        let mut def = definition(now);
        def.payload = JsonText(format!(r#"{{"command":["{}"]}}"#, marker.repeat(100)));
        def.scopes = vec!["secrets:get:project/x".into()];
        def.extra = JsonText(r#"{"treeherder":{"symbol":"B"}}"#.into());
        def.tags = JsonText(r#"{"kind":"build","label":"a \"quoted\" one"}"#.into());
        def.routes = vec!["index.project.x.latest".into(), "tc-treeherder.v2.x".into()];
        def.dependencies = vec![dependency];
        let unresolved = DependencyView {
            task_id: dependency,
            found: Some(DependencyState {
                resolution: None,
                expires: now.plus(HOUR),
            }),
        };
        let mut full = queue::Task::defined(id, def.clone(), vec![dependency]);
        let mut events = Vec::new();
        let mut step = |evs: Vec<QueueEvent>, full: &mut queue::Task| {
            evs.iter().for_each(|e| full.apply(e));
            events.extend(evs);
        };
        let created = queue::create_task(None, None, &[unresolved], id, def, now, &limits);
        step(created.expect("create"), &mut full);
        let satisfied = queue::satisfy_dependency(&full, dependency, Resolution::Completed, now);
        step(satisfied.expect("satisfy"), &mut full);
        let raised = queue::change_priority(&full, Priority::High, false, now).expect("priority");
        step(raised, &mut full);
        let claimed = queue::claim_run(&full, 0, "g", "w", now, &limits).expect("claim");
        step(claimed, &mut full);
        let failed = queue::report(&full, 0, ReasonResolved::Failed, now).expect("report");
        step(failed, &mut full);

        // each event its own command, so the task after each event renders its message
        let mut reference: Option<queue::Task> = None;
        let mut expected = Vec::new();
        for e in &events {
            if let QueueEvent::TaskDefined { definition, .. } = e {
                reference = Some(queue::Task::defined(
                    id,
                    (**definition).clone(),
                    vec![dependency],
                ));
            }
            if let (queue::Stream::Task(_), Some(task)) = (e.stream(), reference.as_mut()) {
                task.apply(e);
                expected.extend(messages::queue_message(e, Some(task), None, None));
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "taskledger-bridge-kept-{}-{}",
            std::process::id(),
            Millis::now().0
        ));
        let state = BridgeState::open(&dir).unwrap();
        let records = records_at(events, 0, now);
        let stream = queue::Stream::Task(id).id();
        let got: Vec<Message> = render_chained(&state, QUEUE_TOPIC, &records, 2)
            .into_iter()
            .filter(|o| o.stream == stream && !o.message.exchange.ends_with("group-resolved"))
            .map(|o| o.message)
            .collect();
        let exchanges: Vec<&str> = got.iter().map(|m| m.exchange.as_str()).collect();
        for name in [
            "defined",
            "pending",
            "priority-changed",
            "running",
            "failed",
        ] {
            assert!(
                exchanges
                    .iter()
                    .any(|e| e.ends_with(&format!("task-{name}"))),
                "no task-{name} in {exchanges:?}"
            );
        }
        assert_eq!(got, expected);
        let stored = state
            .db
            .get(task_key(&id.0))
            .unwrap()
            .expect("the task is kept");
        assert!(!String::from_utf8_lossy(&stored).contains(marker));
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every stored key that is not an offset or a marker.
    fn kept(state: &BridgeState) -> Vec<Vec<u8>> {
        state
            .db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0.to_vec())
            .filter(|k| !k.starts_with(b"o") && !k.starts_with(b"v:"))
            .collect()
    }

    #[test]
    fn expiry_leaves_nothing_of_the_task_or_its_group_behind() {
        let dir = std::env::temp_dir().join(format!(
            "taskledger-bridge-expiry-{}-{}",
            std::process::id(),
            Millis::now().0
        ));
        let state = BridgeState::open(&dir).unwrap();
        let (now, limits) = (Millis::now(), Limits::default());
        let (id, def) = (Slug::nice(), definition(now));
        let group = def.task_group_id;
        let mut events =
            queue::create_task(None, None, &[], id, def.clone(), now, &limits).expect("create");
        let mut task = queue::Task::defined(id, def, vec![]);
        events.iter().for_each(|e| task.apply(e));
        let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).expect("claim");
        claimed.iter().for_each(|e| task.apply(e));
        events.extend(claimed);
        // an object artifact whose upload never finished: the bridge keeps it until then
        events.push(unfinished_object(id, "public/never-finished", now));
        events.extend(queue::report(&task, 0, ReasonResolved::Completed, now).expect("report"));
        let n = events.len() as u64;
        fold(&state, events, 0, now);
        // the task, its resolved mark, the artifact, the group and its count are kept
        let before = kept(&state);
        for prefix in [b't', b'r', b'a', b'g', b'u'] {
            assert!(
                before.iter().any(|k| k[0] == prefix),
                "no {} key before expiry: {before:?}",
                prefix as char
            );
        }
        fold(
            &state,
            vec![
                QueueEvent::TaskExpired { task_id: id },
                QueueEvent::TaskGroupExpired {
                    task_group_id: group,
                },
            ],
            n,
            now,
        );
        assert_eq!(kept(&state), Vec::<Vec<u8>>::new());
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reactor's claim and its report of the same task in the same millisecond (the
    /// built-in worker's) are two commands, each with a request id of its own: task-running
    /// renders the running run, task-completed the completed one. One actor for both (a log
    /// from before reactors had request ids) merges them, and task-running then shows the
    /// completed run.
    #[test]
    fn a_reactors_two_commands_in_one_millisecond_render_apart() {
        let (now, limits) = (Millis::now(), Limits::default());
        let id = Slug::nice();
        let mut task = queue::Task::defined(id, definition(now), vec![]);
        let created = queue::create_task(None, None, &[], id, definition(now), now, &limits);
        let created = created.unwrap();
        created.iter().for_each(|e| task.apply(e));
        let claimed = queue::claim_run(&task, 0, "built-in", "built-in", now, &limits).unwrap();
        claimed.iter().for_each(|e| task.apply(e));
        let completed = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
        // the index of the command (create, claim, report) each event belongs to
        let command: Vec<usize> = [created.len(), claimed.len(), completed.len()]
            .iter()
            .enumerate()
            .flat_map(|(c, n)| std::iter::repeat_n(c, *n))
            .collect();
        let events: Vec<QueueEvent> = [created, claimed, completed].concat();
        let render_with = |actors: [Actor; 3]| {
            let records = stored_by(
                events.clone(),
                0,
                |_| now,
                |e| e.stream().id(),
                |i| actors[command[i]].clone(),
            );
            let dir = std::env::temp_dir().join(format!(
                "taskledger-bridge-same-ms-{}-{}",
                std::process::id(),
                EventId::new()
            ));
            let state = BridgeState::open(&dir).unwrap();
            let (_, out) = render(&state, None, QUEUE_TOPIC, &records).unwrap();
            drop(state);
            let _ = std::fs::remove_dir_all(&dir);
            out.into_iter()
                .filter_map(|o| {
                    let kind = o.message.exchange.rsplit('/').next()?.to_string();
                    let state = o.message.json()["status"]["runs"][0]["state"].clone();
                    Some((kind, state.as_str().unwrap_or("-").to_string()))
                })
                .collect::<Vec<_>>()
        };
        let reactor = || Actor::system("built-in-workers");
        let apart = render_with([Actor::system("creator"), reactor(), reactor()]);
        let shared = reactor();
        let merged = render_with([Actor::system("creator"), shared.clone(), shared]);
        let running = |got: &[(String, String)]| {
            got.iter()
                .find(|(kind, _)| kind == "task-running")
                .map(|(_, state)| state.clone())
        };
        assert_eq!(running(&apart).as_deref(), Some("running"), "{apart:?}");
        assert_eq!(running(&merged).as_deref(), Some("completed"), "{merged:?}");
        assert!(apart
            .iter()
            .any(|(k, s)| k == "task-completed" && s == "completed"));
    }
}
