//! The log as the source of truth anyone can question: hash-chain verification, a stream's
//! history, decoded records for humans and scripts, and rebuilding the projections from offset
//! zero to compare them with the live ones.
//!
//! Everything here reads the database only; it works on the data directory of a stopped server
//! and, through a secondary instance (`store::open_secondary`), beside a running one.

use crate::auth_view::{AuthView, AUTH_CONSUMER, AUTH_PARTITION};
use crate::embedded_log::{chain_link, EmbeddedLog, CHAIN_START};
use crate::engine::{apply_queue, QUEUE_PARTITION, VIEW_CONSUMER};
use crate::kafka_log::{ChainCheck, KafkaLog};
use crate::keys;
use crate::object_view::{ObjectView, OBJECT_CONSUMER, OBJECT_PARTITION};
use crate::queue_view::{Folded, QueueView};
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
use taskledger_core::access::{AuthEvent, AUTH_TOPIC};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::log::{EventLog, LogError, Stored, QUEUE_TOPIC};
use taskledger_core::object::{ObjectEvent, OBJECT_TOPIC};
use taskledger_core::queue::QueueEvent;
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
        let span = (offsets[last] - from + 1) as usize;
        let batch = log.read(topic, 0, from, span).await?;
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
        let batch = log.read(topic, 0, offset, 8192).await?;
        if batch.next <= offset {
            break;
        }
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

/// Where a rebuilt projection first differs from the live one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub cf: &'static str,
    /// Hex of the first differing key.
    pub key: String,
    pub detail: String,
}

/// The result of a replay.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub seconds: f64,
    /// SHA-256 over every projection column family, rebuilt and live (when compared).
    pub rebuilt_digest: String,
    pub live_digest: Option<String>,
    pub difference: Option<Difference>,
}

impl ReplayReport {
    /// Events folded per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// Projections `replay` knows.
pub const PROJECTIONS: &[&str] = &["queue", "auth", "worker-manager", "object"];

/// The column families a projection owns.
fn projection_cfs(name: &str) -> Vec<&'static str> {
    match name {
        "auth" => vec![keys::CF_AUTH],
        "worker-manager" => vec![keys::CF_WORKER_MANAGER],
        "object" => vec![keys::CF_OBJECTS],
        _ => keys::PROJECTION_CFS
            .iter()
            .copied()
            .filter(|c| ![keys::CF_AUTH, keys::CF_WORKER_MANAGER, keys::CF_OBJECTS].contains(c))
            .collect(),
    }
}

fn digest_cfs(db: &DB, cfs: &[&'static str]) -> Result<String, StoreError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for name in cfs {
        ctx.update(name.as_bytes());
        for item in db.iterator_cf(cf(db, name)?, IteratorMode::Start) {
            let (k, v) = item?;
            ctx.update(&(k.len() as u64).to_be_bytes());
            ctx.update(&k);
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(&v);
        }
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn first_difference(
    a: &DB,
    b: &DB,
    cfs: &[&'static str],
) -> Result<Option<Difference>, StoreError> {
    for name in cfs {
        let mut ia = a.iterator_cf(cf(a, name)?, IteratorMode::Start);
        let mut ib = b.iterator_cf(cf(b, name)?, IteratorMode::Start);
        loop {
            match (ia.next().transpose()?, ib.next().transpose()?) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    return Ok(Some(Difference {
                        cf: name,
                        key: hex(&k),
                        detail: "only in the rebuilt projection".into(),
                    }))
                }
                (None, Some((k, _))) => {
                    return Ok(Some(Difference {
                        cf: name,
                        key: hex(&k),
                        detail: "only in the live projection".into(),
                    }))
                }
                (Some((ka, va)), Some((kb, vb))) => {
                    if ka != kb {
                        let (key, side) = if ka < kb {
                            (ka, "rebuilt")
                        } else {
                            (kb, "live")
                        };
                        return Ok(Some(Difference {
                            cf: name,
                            key: hex(&key),
                            detail: format!("only in the {side} projection"),
                        }));
                    }
                    if va != vb {
                        return Ok(Some(Difference {
                            cf: name,
                            key: hex(&ka),
                            detail: "values differ".into(),
                        }));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// Rebuilds `projection` from offset zero into the fresh database `scratch`, up to the offset
/// the live projection has consumed, calling `progress(done, total)` as it goes; with
/// `verify`, compares the rebuilt column families with the live ones. Reads the embedded log
/// in `live`.
pub fn replay(
    live: &Arc<DB>,
    scratch: &Arc<DB>,
    projection: &str,
    verify: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, StoreError> {
    let log = EmbeddedLog::new(live.clone());
    // the embedded log never waits: its reads complete on the first poll
    futures::executor::block_on(replay_from(
        &log, live, scratch, projection, verify, progress,
    ))
}

/// Events a rebuild reads, decodes and folds at a time: large, so a fold sees most of a
/// task's life and its pending, claim and timer keys come and go without reaching the
/// database.
const REBUILD_BATCH: usize = 32_768;

/// One read's worth of decoded events, on its way from the reading task to the folding thread.
enum Decoded {
    Queue(Vec<Envelope<QueueEvent>>),
    Auth(Vec<Envelope<AuthEvent>>),
    WorkerManager(Vec<Envelope<WorkerEvent>>),
    Object(Vec<Envelope<ObjectEvent>>),
}

/// The rebuilt projection, folding on a thread of its own.
enum Rebuilt {
    Queue(QueueView),
    Auth(AuthView),
    WorkerManager(WorkerManagerView),
    Object(ObjectView),
}

impl Rebuilt {
    fn apply(&self, offsets: &[u64], next: u64, decoded: &Decoded) -> Result<(), StoreError> {
        match (self, decoded) {
            (Rebuilt::Queue(q), Decoded::Queue(envs)) => apply_queue(q, offsets, next, envs),
            (Rebuilt::Auth(a), Decoded::Auth(envs)) => a.apply(offsets, next, envs),
            (Rebuilt::WorkerManager(w), Decoded::WorkerManager(envs)) => {
                w.apply(offsets, next, envs)
            }
            (Rebuilt::Object(o), Decoded::Object(envs)) => o.apply(offsets, next, envs),
            _ => unreachable!("events are decoded for the projection being rebuilt"),
        }
    }

    fn decode(&self, records: &[Stored]) -> Result<Decoded, StoreError> {
        fn all<E: serde::de::DeserializeOwned>(
            records: &[Stored],
        ) -> Result<Vec<Envelope<E>>, StoreError> {
            // sized up front: collecting through `Result` would grow the vector a doubling
            // at a time, copying a batch of large envelopes (a task definition is inline)
            // again and again
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                out.push(codec::decode::<Envelope<E>>(&r.value)?);
            }
            Ok(out)
        }
        Ok(match self {
            Rebuilt::Queue(_) => Decoded::Queue(all(records)?),
            Rebuilt::Auth(_) => Decoded::Auth(all(records)?),
            Rebuilt::WorkerManager(_) => Decoded::WorkerManager(all(records)?),
            Rebuilt::Object(_) => Decoded::Object(all(records)?),
        })
    }
}

/// `replay` reading the events from `log` (embedded or Kafka); the live projections are in
/// `live`. Reading and decoding run here while a thread of its own folds the previous batch.
pub async fn replay_from<L: EventLog>(
    log: &L,
    live: &Arc<DB>,
    scratch: &Arc<DB>,
    projection: &str,
    verify: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, StoreError> {
    let started = std::time::Instant::now();
    let (topic, partition, consumer) = match projection {
        "auth" => (AUTH_TOPIC, AUTH_PARTITION, AUTH_CONSUMER),
        "worker-manager" => (
            WORKER_MANAGER_TOPIC,
            WORKER_MANAGER_PARTITION,
            WORKER_MANAGER_CONSUMER,
        ),
        "object" => (OBJECT_TOPIC, OBJECT_PARTITION, OBJECT_CONSUMER),
        _ => (QUEUE_TOPIC, QUEUE_PARTITION, VIEW_CONSUMER),
    };
    let live_offset = match live.get_cf(
        cf(live, keys::CF_META)?,
        keys::consumer_offset(consumer, topic, partition),
    )? {
        Some(b) => u64::from_be_bytes(b.as_slice().try_into().unwrap_or([0; 8])),
        None => 0,
    };
    let rebuilt = match projection {
        "auth" => Rebuilt::Auth(AuthView::open(scratch.clone())?),
        "worker-manager" => Rebuilt::WorkerManager(WorkerManagerView::open(scratch.clone())?),
        "object" => Rebuilt::Object(ObjectView::open(scratch.clone())?),
        _ => Rebuilt::Queue(QueueView::new(scratch.clone())?.for_rebuild()),
    };
    let rebuilt = Arc::new(rebuilt);
    // two batches in flight: one folding, one decoded and waiting
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u64>, u64, Decoded)>(1);
    // folded batches come back to be freed here, where they were allocated: the reading side
    // waits for the fold anyway, and frees across threads cost the fold thread more
    let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Decoded>();
    let folder = {
        let rebuilt = rebuilt.clone();
        // named, so a profile can tell the fold from the reading side
        std::thread::Builder::new()
            .name("replay-fold".into())
            .spawn(move || -> Result<(), StoreError> {
                if let Rebuilt::Queue(q) = &*rebuilt {
                    fold_queue_overlapped(q, rx, spent_tx)?;
                    return q.flush();
                }
                for (offsets, next, decoded) in rx {
                    rebuilt.apply(&offsets, next, &decoded)?;
                    let _ = spent_tx.send(decoded);
                }
                Ok(())
            })
            .map_err(|e| StoreError::Log(LogError::Unavailable(e.to_string())))?
    };
    let mut offset = 0u64;
    let mut events = 0u64;
    let mut read_error = None;
    while offset < live_offset {
        let max = (live_offset - offset).min(REBUILD_BATCH as u64) as usize;
        let batch = match log.read(topic, partition, offset, max).await {
            Ok(b) => b,
            Err(e) => {
                read_error = Some(StoreError::from(e));
                break;
            }
        };
        if batch.next <= offset {
            break;
        }
        // only what the live projection has consumed
        let next = batch.next.min(live_offset);
        let records: Vec<_> = batch
            .records
            .into_iter()
            .filter(|r| r.offset < live_offset)
            .collect();
        events += records.len() as u64;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let decoded = match rebuilt.decode(&records) {
            Ok(d) => d,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if tx.send((offsets, next, decoded)).is_err() {
            // the folder stopped on an error, which joining it reports
            break;
        }
        spent_rx.try_iter().for_each(drop);
        offset = next;
        progress(offset, live_offset);
    }
    drop(tx);
    folder
        .join()
        .map_err(|_| StoreError::Log(LogError::Corrupt("the folding thread panicked".into())))??;
    if let Some(e) = read_error {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cfs = projection_cfs(projection);
    let rebuilt_digest = digest_cfs(scratch, &cfs)?;
    let (live_digest, difference) = if verify {
        (
            Some(digest_cfs(live, &cfs)?),
            first_difference(scratch, live, &cfs)?,
        )
    } else {
        (None, None)
    };
    Ok(ReplayReport {
        events,
        seconds,
        rebuilt_digest,
        live_digest,
        difference,
    })
}

/// The queue projection's fold, with each batch's write overlapping the next batch's fold:
/// a thread of its own writes batch k while this one folds batch k+1, reading through k's
/// writes (`QueueView::fold_batch`). Batches are written in order, one at a time, and a fold
/// waits for the write before its own to finish, so only one batch is ever unwritten.
fn fold_queue_overlapped(
    view: &QueueView,
    batches: std::sync::mpsc::Receiver<(Vec<u64>, u64, Decoded)>,
    spent: std::sync::mpsc::Sender<Decoded>,
) -> Result<(), StoreError> {
    use std::sync::mpsc::channel;
    let (write_tx, write_rx) = channel::<Arc<Folded>>();
    let (written_tx, written_rx) = channel::<()>();
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("replay-write".into())
            .spawn_scoped(scope, move || -> Result<(), StoreError> {
                for folded in write_rx {
                    view.write_folded(&folded)?;
                    drop(folded);
                    if written_tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(())
            })
            .map_err(|e| StoreError::Log(LogError::Unavailable(e.to_string())))?;
        let folding = (|| -> Result<(), StoreError> {
            let mut unwritten: Option<Arc<Folded>> = None;
            for (offsets, next, decoded) in batches {
                let Decoded::Queue(envs) = &decoded else {
                    unreachable!("queue events are decoded for the queue projection");
                };
                let folded = view.fold_batch(
                    VIEW_CONSUMER,
                    QUEUE_TOPIC,
                    QUEUE_PARTITION,
                    &offsets,
                    next,
                    envs,
                    unwritten.as_deref(),
                )?;
                // the previous write must finish before this batch's may start
                if unwritten.is_some() && written_rx.recv().is_err() {
                    // the writer stopped on an error, which joining it reports
                    return Ok(());
                }
                let folded = Arc::new(folded);
                if write_tx.send(folded.clone()).is_err() {
                    return Ok(());
                }
                unwritten = Some(folded);
                let _ = spent.send(decoded);
            }
            Ok(())
        })();
        drop(write_tx);
        let written = writer.join().map_err(|_| {
            StoreError::Log(LogError::Corrupt("the writing thread panicked".into()))
        })?;
        folding.and(written)
    })
}

/// Reads every record of every partition in order (the raw sequential read rate, for the
/// replay benchmark's ratio); returns how many.
pub fn read_all(db: &DB) -> Result<u64, StoreError> {
    let mut n = 0;
    for item in db.iterator_cf(cf(db, keys::CF_LOG)?, IteratorMode::Start) {
        let (_, v) = item?;
        std::hint::black_box(&v);
        n += 1;
    }
    Ok(n)
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
        _ => return Ok(None),
    }))
}

// ---- signed checkpoints ----

/// A signed statement that the first `count` records of a partition hash-chain to `head`.
/// An auditor who keeps checkpoints can later prove that the server's log still begins with
/// exactly what was signed, without trusting the server: the signature covers the head, and
/// the head covers every record before it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub topic: String,
    pub partition: u32,
    pub count: u64,
    /// The chain link after record `count - 1` (hex; all zeros for an empty partition).
    pub head: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// The signer's Ed25519 public key (hex).
    pub public_key: String,
    /// Ed25519 over `signed_text()` (hex).
    pub signature: String,
}

impl Checkpoint {
    fn signed_text(&self) -> String {
        format!(
            "taskledger-checkpoint-v1\n{}\n{}\n{}\n{}\n{}",
            self.topic, self.partition, self.count, self.head, self.time
        )
    }

    /// Signs the head of a partition with `key`.
    pub fn sign(
        key: &ring::signature::Ed25519KeyPair,
        topic: &str,
        partition: u32,
        count: u64,
        head: &str,
        time: &str,
    ) -> Checkpoint {
        use ring::signature::KeyPair;
        let mut cp = Checkpoint {
            topic: topic.to_string(),
            partition,
            count,
            head: head.to_string(),
            time: time.to_string(),
            public_key: hex(key.public_key().as_ref()),
            signature: String::new(),
        };
        cp.signature = hex(key.sign(cp.signed_text().as_bytes()).as_ref());
        cp
    }

    /// Whether the signature holds for the key the checkpoint names.
    pub fn signature_ok(&self) -> bool {
        let (Some(key), Some(sig)) = (unhex(&self.public_key), unhex(&self.signature)) else {
            return false;
        };
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(self.signed_text().as_bytes(), &sig)
            .is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Carries each topic's chain walk (partition 0) on from `walked` (one per topic) to the
/// topic's end, and reports them as `verify_chain` reports the embedded log's partitions.
/// Walking on from an earlier result reads only what came since.
pub async fn walk_kafka_chains(
    log: &KafkaLog,
    topics: &[&str],
    walked: &mut [ChainCheck],
) -> Result<ChainReport, StoreError> {
    let mut report = ChainReport::default();
    for (topic, check) in topics.iter().zip(walked.iter_mut()) {
        *check = log.walk_chain(topic, 0, check.clone(), u64::MAX).await?;
        report.partitions.push((topic.to_string(), 0, check.events));
        report.heads.push(hex(&check.head));
        if let Some(offset) = check.broken_at {
            report.broken.get_or_insert(BrokenLink {
                topic: topic.to_string(),
                partition: 0,
                offset,
                reason: format!(
                    "the chain link does not follow from the {} events before it",
                    check.events
                ),
            });
        }
    }
    Ok(report)
}

/// Signs the heads a chain walk verified; `None` if it found a break.
pub fn sign_heads(
    report: &ChainReport,
    key: &ring::signature::Ed25519KeyPair,
    time: &str,
) -> Option<Vec<Checkpoint>> {
    if report.broken.is_some() {
        return None;
    }
    let cps = report
        .partitions
        .iter()
        .zip(&report.heads)
        .map(|((topic, partition, count), head)| {
            Checkpoint::sign(key, topic, *partition, *count, head, time)
        })
        .collect();
    Some(cps)
}

/// Checks a checkpoint against a Kafka topic: the signature, then the chain of the first
/// `count` valid events (each one's link header recomputed) must end in the signed head.
pub async fn verify_kafka_checkpoint(log: &KafkaLog, cp: &Checkpoint) -> Result<(), String> {
    if !cp.signature_ok() {
        return Err("the signature does not hold".into());
    }
    let check = log
        .walk_chain(&cp.topic, cp.partition, ChainCheck::start(), cp.count)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(offset) = check.broken_at {
        return Err(format!(
            "the chain breaks at offset {offset}, after {} events",
            check.events
        ));
    }
    prefix_verdict(cp, check.events, &check.head, "the topic", "events")
}

/// A checkpoint's verdict once the partition's first records were walked: `walked` of them
/// (at most `cp.count`) chained to `head`.
fn prefix_verdict(
    cp: &Checkpoint,
    walked: u64,
    head: &[u8; 32],
    holder: &str,
    unit: &str,
) -> Result<(), String> {
    if walked < cp.count {
        return Err(format!(
            "{holder} holds {walked} {unit}, {} were signed",
            cp.count
        ));
    }
    if hex(head) != cp.head {
        return Err(format!(
            "the first {} {unit} no longer chain to the signed head",
            cp.count
        ));
    }
    Ok(())
}

/// Checks a checkpoint against the log: the signature, then the chain recomputed from the
/// partition's first record up to `count` must end in the signed head. The error says which
/// holds no longer.
pub fn verify_checkpoint(db: &DB, cp: &Checkpoint) -> Result<(), String> {
    if !cp.signature_ok() {
        return Err("the signature does not hold".into());
    }
    let log = cf(db, keys::CF_LOG).map_err(|e| e.to_string())?;
    let start = keys::log_key(&cp.topic, cp.partition, 0);
    let prefix = keys::log_prefix(&cp.topic, cp.partition);
    let mut link = CHAIN_START;
    let mut n = 0u64;
    for item in db.iterator_cf(log, IteratorMode::From(&start, Direction::Forward)) {
        if n == cp.count {
            break;
        }
        let (k, v) = item.map_err(|e| e.to_string())?;
        if !k.starts_with(&prefix) {
            break;
        }
        if keys::parse_log_key(&k).map(|(_, _, o)| o) != Some(n) {
            return Err(format!("gap at offset {n}"));
        }
        link = chain_link(&link, n, &v);
        n += 1;
    }
    prefix_verdict(cp, n, &link, "the log", "records")
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;

    fn key() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn a_checkpoint_signs_exactly_its_fields() {
        let k = key();
        let cp = Checkpoint::sign(
            &k,
            "taskledger.queue",
            0,
            42,
            &"ab".repeat(32),
            "2026-11-28T00:00:00Z",
        );
        assert!(cp.signature_ok());
        for tampered in [
            Checkpoint {
                count: 41,
                ..cp.clone()
            },
            Checkpoint {
                head: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                topic: "taskledger.auth".into(),
                ..cp.clone()
            },
            Checkpoint {
                public_key: Checkpoint::sign(&key(), "t", 0, 0, "", "").public_key,
                ..cp.clone()
            },
            Checkpoint {
                signature: "00".into(),
                ..cp.clone()
            },
        ] {
            assert!(!tampered.signature_ok(), "{tampered:?}");
        }
    }
}
