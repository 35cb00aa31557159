//! The log as the source of truth anyone can question: hash-chain verification, a stream's
//! history, decoded records for humans and scripts, and rebuilding the projections from offset
//! zero to compare them with the live ones.
//!
//! Everything here reads the database only; it works on the data directory of a stopped server
//! and, through a secondary instance (`store::open_secondary`), beside a running one.

mod checkpoint;
mod replay;
#[cfg(test)]
mod tests;

pub use checkpoint::*;
pub use replay::*;

use crate::auth_view::{AuthView, AUTH_CONSUMER, AUTH_PARTITION};
use crate::embedded_log::{chain_link, EmbeddedLog, CHAIN_START};
use crate::engine::{apply_queue, QUEUE_PARTITION, VIEW_CONSUMER};
use crate::github_view::{GithubView, GITHUB_CONSUMER, GITHUB_PARTITION};
use crate::hooks_view::{HooksView, HOOKS_CONSUMER, HOOKS_PARTITION};
use crate::index_view::{IndexView, INDEX_CONSUMER, INDEX_PARTITION};
use crate::kafka_log::{ChainCheck, KafkaLog};
use crate::keys;
use crate::notify_view::{NotifyView, NOTIFY_CONSUMER, NOTIFY_PARTITION};
use crate::object_view::{ObjectView, OBJECT_CONSUMER, OBJECT_PARTITION};
use crate::queue_view::{Folded, QueueView};
use crate::secrets_view::{SecretsView, SECRETS_CONSUMER, SECRETS_PARTITION};
use crate::single::Service;
use crate::store::{cf, StoreError};
use crate::worker_manager_view::{
    WorkerManagerView, WORKER_MANAGER_CONSUMER, WORKER_MANAGER_PARTITION,
};
use rocksdb::{Direction, IteratorMode, DB};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::access::{AuthEvent, AUTH_TOPIC};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::github::{GithubEvent, GITHUB_TOPIC};
use taskledger_core::hooks::{HookEvent, HOOKS_TOPIC};
use taskledger_core::index::{IndexEvent, INDEX_TOPIC};
use taskledger_core::log::{Batch, EventLog, LogError, Stored, QUEUE_TOPIC};
use taskledger_core::notify::{NotifyEvent, NOTIFY_TOPIC};
use taskledger_core::object::{ObjectEvent, OBJECT_TOPIC};
use taskledger_core::queue::QueueEvent;
use taskledger_core::secrets::{SecretEvent, SECRETS_TOPIC};
use taskledger_core::worker_manager::{WorkerEvent, WORKER_MANAGER_TOPIC};

/// The first place the chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: String,
}

/// What `verify_chain` saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Records checked per (topic, partition), in key order.
    pub partitions: Vec<(String, u32, u64)>,
    /// The last link of each partition (hex), for checkpoints.
    pub heads: Vec<String>,
    pub broken: Option<BrokenLink>,
}

/// Bytes as lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (either case) as bytes; `None` for an odd length or a non-digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Walks every partition of the log, recomputing the hash chain, and compares each link with
/// the stored one. Stops at the first mismatch, gap or missing link.
pub fn verify_chain(db: &DB) -> Result<ChainReport, StoreError> {
    let log = cf(db, keys::CF_LOG)?;
    let chain = cf(db, keys::CF_LOG_CHAIN)?;
    let mut report = ChainReport::default();
    let mut current: Option<(String, u32)> = None;
    let mut expected_offset = 0u64;
    let mut link = CHAIN_START;
    let mut count = 0u64;
    let finish =
        |report: &mut ChainReport, cur: &Option<(String, u32)>, count: u64, link: &[u8; 32]| {
            if let Some((t, p)) = cur {
                report.partitions.push((t.clone(), *p, count));
                report.heads.push(hex(link));
            }
        };
    // both column families have the same keys: walk them side by side
    let mut links = db.iterator_cf(chain, IteratorMode::Start);
    for item in db.iterator_cf(log, IteratorMode::Start) {
        let (k, v) = item?;
        let Some((topic, partition, offset)) = keys::parse_log_key(&k) else {
            report.broken = Some(BrokenLink {
                topic: String::from_utf8_lossy(&k).into_owned(),
                partition: 0,
                offset: 0,
                reason: "unparsable log key".into(),
            });
            return Ok(report);
        };
        if current.as_ref() != Some(&(topic.clone(), partition)) {
            finish(&mut report, &current, count, &link);
            current = Some((topic.clone(), partition));
            expected_offset = 0;
            link = CHAIN_START;
            count = 0;
        }
        let broken = |reason: &str| BrokenLink {
            topic: topic.clone(),
            partition,
            offset,
            reason: reason.to_string(),
        };
        if offset != expected_offset {
            report.broken = Some(broken(&format!("gap: expected offset {expected_offset}")));
            return Ok(report);
        }
        link = chain_link(&link, offset, &v);
        match links.next().transpose()? {
            Some((lk, stored)) if *lk == *k && *stored == link => {}
            Some((lk, _)) if *lk == *k => {
                report.broken = Some(broken(
                    "hash mismatch: the record or an earlier one changed",
                ));
                return Ok(report);
            }
            _ => {
                report.broken = Some(broken("missing chain link"));
                return Ok(report);
            }
        }
        expected_offset += 1;
        count += 1;
    }
    finish(&mut report, &current, count, &link);
    Ok(report)
}

/// The topic holding a kind of entity, and its stream id.
pub fn stream_of(kind: &str, id: &str) -> Option<(&'static str, String)> {
    match kind {
        "task" => Some((QUEUE_TOPIC, format!("task/{id}"))),
        "task-group" => Some((QUEUE_TOPIC, format!("task-group/{id}"))),
        "worker" => Some((QUEUE_TOPIC, format!("worker/{id}"))),
        "client" => Some((AUTH_TOPIC, format!("client/{id}"))),
        "role" => Some((AUTH_TOPIC, format!("role/{id}"))),
        // `<hookGroupId>/<hookId>`
        "hook" => Some((HOOKS_TOPIC, taskledger_core::hooks::stream_id_of(id))),
        _ => None,
    }
}

/// The offsets of one stream's records, increasing, from the stream index: the embedded log
/// writes it with each append; on Kafka the projections write it as they fold (in the same
/// batch as their state), so it lists exactly the records that count.
pub fn stream_offsets(db: &DB, topic: &str, stream: &str) -> Result<Vec<u64>, StoreError> {
    let index = cf(db, keys::CF_LOG_INDEX)?;
    let prefix = keys::log_index_prefix(topic, 0, stream);
    let mut out = Vec::new();
    for item in db.iterator_cf(index, IteratorMode::From(&prefix, Direction::Forward)) {
        let (k, _) = item?;
        if !k.starts_with(&prefix) {
            break;
        }
        if let Some(offset) = keys::offset_from_log_key(&k) {
            out.push(offset);
        }
    }
    Ok(out)
}

/// How long reading waits for a log that keeps coming back with nothing short of a position
/// it is known to hold: a Kafka consumer returns empty when the broker is slow, which must end
/// neither a history nor a rebuild early. As long as a writer waits to reach its own append.
pub const READ_PATIENCE: Duration = crate::role::REACH_PATIENCE;

/// Reads at most `max` records from `offset` of a partition known to hold records (or
/// transaction markers) up to `end`. A read that comes back without moving (a slow broker) is
/// tried again until `patience` runs out, and then is an error, so no scan ever mistakes a
/// slow read for the end of the partition. On Kafka `end` is the last stable offset, so the
/// last thing before it is a transaction marker, which a read moves past by the consumer's
/// position (`kafka_log::Inner::poll`): reaching `end` never waits for a record that cannot come.
pub async fn read_onward<L: EventLog + ?Sized>(
    log: &L,
    topic: &str,
    partition: u32,
    offset: u64,
    max: usize,
    end: u64,
    patience: Duration,
) -> Result<Batch, LogError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let batch = log.read(topic, partition, offset, max).await?;
        if batch.next > offset || offset >= end {
            return Ok(batch);
        }
        if started.elapsed() >= patience {
            return Err(LogError::Unavailable(format!(
                "{topic}: the log returned nothing at offset {offset} within {:?}, though it \
                 holds records up to offset {end}",
                patience
            )));
        }
        // an embedded log never comes back short, so only a Kafka log (which runs on tokio)
        // waits here; a caller outside tokio (an embedded rebuild) sleeps the thread
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::sleep(pause).await;
        } else {
            std::thread::sleep(pause);
        }
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// How far apart two wanted records may lie and still be fetched by one read.
const NEARBY: u64 = 64;

/// The records at `offsets` (increasing) of a topic's partition 0, read from the log itself;
/// records close together come in one read. A wanted offset the log does not hold is an error.
pub async fn records_at<L: EventLog + ?Sized>(
    log: &L,
    topic: &str,
    offsets: &[u64],
) -> Result<Vec<Stored>, StoreError> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut i = 0;
    while i < offsets.len() {
        let from = offsets[i];
        let mut last = i;
        while last + 1 < offsets.len() && offsets[last + 1] - from < NEARBY {
            last += 1;
        }
        let end = offsets[last] + 1;
        let batch = read_onward(
            log,
            topic,
            0,
            from,
            (end - from) as usize,
            end,
            READ_PATIENCE,
        )
        .await?;
        let before = i;
        for r in batch.records {
            while i <= last && offsets[i] < r.offset {
                i += 1;
            }
            if i <= last && offsets[i] == r.offset {
                out.push(r);
                i += 1;
            }
        }
        if i == before {
            return Err(StoreError::Log(LogError::Corrupt(format!(
                "{topic}: the log has no record at offset {from}"
            ))));
        }
    }
    Ok(out)
}

/// Reading records by offset, and where a partition ends, from whichever log a server runs on
/// (`EventLog` itself is not object safe).
pub trait RecordReader: Send + Sync {
    fn read_at<'a>(
        &'a self,
        topic: &'a str,
        offsets: &'a [u64],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Stored>, StoreError>> + Send + 'a>>;

    /// The position past the partition's last record.
    fn end_offset<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'a>>;
}

impl<L: EventLog> RecordReader for L {
    fn read_at<'a>(
        &'a self,
        topic: &'a str,
        offsets: &'a [u64],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Stored>, StoreError>> + Send + 'a>> {
        Box::pin(records_at(self, topic, offsets))
    }

    fn end_offset<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
    ) -> Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            EventLog::end_offset(self, topic, partition)
                .await
                .map_err(StoreError::Log)
        })
    }
}

/// Every record of one stream, oldest first: the stream index of `db`, the records from `log`.
pub async fn stream_records(
    log: &dyn RecordReader,
    db: &DB,
    topic: &str,
    stream: &str,
) -> Result<Vec<Stored>, StoreError> {
    let offsets = stream_offsets(db, topic, stream)?;
    log.read_at(topic, &offsets).await
}

/// Every record of one stream, found by reading the whole partition: what an auditor does who
/// trusts no server's index (`audit history --kafka-brokers`).
pub async fn scan_stream<L: EventLog>(
    log: &L,
    topic: &str,
    stream: &str,
) -> Result<Vec<Stored>, StoreError> {
    let end = log.end_offset(topic, 0).await?;
    let mut offset = 0;
    let mut out = Vec::new();
    while offset < end {
        let batch = read_onward(log, topic, 0, offset, 8192, end, READ_PATIENCE).await?;
        out.extend(batch.records.into_iter().filter(|r| r.key == stream));
        offset = batch.next;
    }
    Ok(out)
}

/// An object artifact's `upload_id` is a capability (whoever knows it may finish the upload),
/// so audit output shows it as `[redacted]`, as the object service keeps only its digest.
fn redact_upload_ids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, field) in map.iter_mut() {
                if k == "upload_id" {
                    *field = json!("[redacted]");
                } else {
                    redact_upload_ids(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_upload_ids),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// A record as JSON: position, envelope fields, the event as `{"Type": {...}}`. Sealed
/// secrets, and object artifacts' upload ids, render as `[redacted]` (see
/// `core::access::seal`).
pub fn record_json(topic: &str, record: &Stored) -> Result<Value, StoreError> {
    let (event_type, envelope) = match topic {
        t if t == QUEUE_TOPIC => {
            let env: Envelope<QueueEvent> = codec::decode(&record.value)?;
            let mut json = serde_json::to_value(&env);
            if let Ok(v) = json.as_mut() {
                redact_upload_ids(v);
            }
            (env.payload.type_name(), json)
        }
        t if t == AUTH_TOPIC => {
            let env: Envelope<AuthEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        t if t == WORKER_MANAGER_TOPIC => {
            let env: Envelope<WorkerEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        t if t == OBJECT_TOPIC => {
            let env: Envelope<ObjectEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        // values are sealed, and a sealed value renders as "[redacted]"
        t if t == SECRETS_TOPIC => {
            let env: Envelope<SecretEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        t if t == INDEX_TOPIC => {
            let env: Envelope<IndexEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        // trigger tokens are sealed, and render as "[redacted]"
        t if t == HOOKS_TOPIC => {
            let env: Envelope<HookEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        t if t == NOTIFY_TOPIC => {
            let env: Envelope<NotifyEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        t if t == GITHUB_TOPIC => {
            let env: Envelope<GithubEvent> = codec::decode(&record.value)?;
            (env.payload.type_name(), serde_json::to_value(&env))
        }
        _ => ("unknown", Ok(Value::Null)),
    };
    let mut v = envelope.unwrap_or(Value::Null);
    if let Some(t) = v.get("time").and_then(Value::as_i64) {
        v["timeIso"] = json!(taskledger_core::time::Millis(t).to_rfc3339());
    }
    Ok(json!({
        "topic": topic,
        "partition": record.partition,
        "offset": record.offset,
        "eventType": event_type,
        "envelope": v,
    }))
}

/// An entity as it was at an instant, folded from its events up to then.
// one value per `audit as-of` call: its size does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum AsOf {
    Task(Option<taskledger_core::queue::Task>),
    TaskGroup(Option<taskledger_core::queue::TaskGroup>),
    Client(Option<taskledger_core::access::Client>),
    Role(Option<taskledger_core::access::Role>),
    Hook(Option<taskledger_core::hooks::Hook>),
}

/// The entity `kind`/`id` as of `at`, folded from its stream's `records` (oldest first): only
/// events whose time is at or before `at` count (time travel). None for an unknown kind.
pub fn as_of(
    records: &[Stored],
    kind: &str,
    id: &str,
    at: taskledger_core::time::Millis,
) -> Result<Option<AsOf>, StoreError> {
    use taskledger_core::queue::{Task, TaskGroup};
    Ok(Some(match kind {
        "task" | "task-group" => {
            let mut task: Option<Task> = None;
            let mut group: Option<TaskGroup> = None;
            for r in records {
                let env: Envelope<QueueEvent> = codec::decode(&r.value)?;
                if env.time > at {
                    break;
                }
                // every other event goes to the task's and the group's own folds, whose
                // matches name each one
                #[allow(clippy::wildcard_enum_match_arm)]
                match &env.payload {
                    QueueEvent::TaskDefined {
                        task_id,
                        definition,
                        unsatisfied,
                    } => {
                        task = Some(Task::defined(
                            *task_id,
                            taskledger_core::queue::TaskDefinition::clone(definition),
                            unsatisfied.clone(),
                        ))
                    }
                    other if !Task::survives(other) => task = None,
                    other => {
                        if let Some(t) = task.as_mut() {
                            t.apply(other);
                        }
                        group = TaskGroup::apply(group, other);
                    }
                }
            }
            if kind == "task" {
                AsOf::Task(task)
            } else {
                AsOf::TaskGroup(group)
            }
        }
        "client" | "role" => {
            let mut state = taskledger_core::access::AuthState::default();
            for r in records {
                let env: Envelope<AuthEvent> = codec::decode(&r.value)?;
                if env.time > at {
                    break;
                }
                state.apply(&env.payload, env.time);
            }
            if kind == "client" {
                AsOf::Client(state.clients.remove(id))
            } else {
                AsOf::Role(state.roles.remove(id))
            }
        }
        "hook" => {
            let mut hook = None;
            for r in records {
                let env: Envelope<HookEvent> = codec::decode(&r.value)?;
                if env.time > at {
                    break;
                }
                hook = taskledger_core::hooks::apply(hook, &env.payload);
            }
            AsOf::Hook(hook)
        }
        _ => return Ok(None),
    }))
}
