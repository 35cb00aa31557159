//! The queue projection: folds queue events into tasks, groups, the pending queues, claims,
//! timers, artifacts and worker records, and answers the gateway's reads.

use crate::keys::{self, Expiring, TimerKind};
use crate::store::{cf, StoreError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::ids::{TaskId, TaskQueueId};
use taskledger_core::queue::json::TaskStatus;
use taskledger_core::queue::{
    Artifact, QueueEvent, RunState, Task, TaskDefinition, TaskGroup, TaskStatusRow,
};
use taskledger_core::time::{Millis, DAY};

/// A worker as the queue knows it (derived from claims, sightings and quarantines).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkerRecord {
    pub first_claim: Millis,
    pub last_date_active: Option<Millis>,
    pub expires: Millis,
    pub quarantine_until: Option<Millis>,
    pub quarantine_info: Option<String>,
    /// The last 20 claims, oldest first.
    pub recent_tasks: Vec<(TaskId, u32)>,
    /// quarantineWorker calls, oldest first, the last `QUARANTINE_HISTORY` of them (calls
    /// recorded before the caller was kept have none). Rows written before it existed are
    /// rewritten at start (`QueueView::rewrite_worker_rows`).
    pub quarantine_details: Vec<QuarantineDetail>,
}

/// One quarantineWorker call, as worker-manager's getWorker shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuarantineDetail {
    pub client_id: String,
    pub updated_at: Millis,
    pub until: Millis,
    pub info: String,
}

/// How many quarantineWorker calls a worker's row keeps (each up to 4,000 characters of
/// reason, so at most about 80 KB): a bound on the row, which every claim by the worker
/// rewrites and reads.
pub const QUARANTINE_HISTORY: usize = 20;

/// A `workers` row as written before rows ended with their quarantine history: read only by
/// `QueueView::rewrite_worker_rows`, which rewrites such rows once at start.
#[derive(Serialize, Deserialize)]
struct WorkerRecordBefore {
    first_claim: Millis,
    last_date_active: Option<Millis>,
    expires: Millis,
    quarantine_until: Option<Millis>,
    quarantine_info: Option<String>,
    recent_tasks: Vec<(TaskId, u32)>,
}

impl From<WorkerRecordBefore> for WorkerRecord {
    fn from(w: WorkerRecordBefore) -> WorkerRecord {
        WorkerRecord {
            first_claim: w.first_claim,
            last_date_active: w.last_date_active,
            expires: w.expires,
            quarantine_until: w.quarantine_until,
            quarantine_info: w.quarantine_info,
            recent_tasks: w.recent_tasks,
            quarantine_details: Vec::new(),
        }
    }
}

impl WorkerRecord {
    /// Adds a quarantineWorker call to the history, dropping the oldest past
    /// `QUARANTINE_HISTORY`.
    pub fn record_quarantine(&mut self, detail: QuarantineDetail) {
        self.quarantine_details.push(detail);
        let over = self
            .quarantine_details
            .len()
            .saturating_sub(QUARANTINE_HISTORY);
        self.quarantine_details.drain(..over);
    }

    pub fn quarantined(&self, now: Millis) -> bool {
        self.quarantine_until.is_some_and(|q| q > now)
    }

    /// Still listed and found (`queue::worker_live`).
    pub fn live(&self, now: Millis) -> bool {
        taskledger_core::queue::worker_live(self.expires, self.quarantine_until, now)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskQueueRecord {
    pub expires: Millis,
    pub last_date_active: Millis,
}

/// A claimed run as listed by `listClaimedTasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub taken_until: Millis,
    pub worker_group: String,
    pub worker_id: String,
    pub claimed: Millis,
}

/// Column families kept in memory too: their keys are inserted and deleted constantly, and a
/// RocksDB scan would walk every tombstone since the last compaction.
const MIRRORED: &[&str] = &[keys::CF_PENDING, keys::CF_CLAIMS, keys::CF_TIMERS];

type Mirror = HashMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

mod fold;
mod folded;
mod reads;
mod recent;
#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for
pub(crate) mod tests;

pub use folded::{Folded, KeyValue};
use folded::{Place, FOLDED_CFS};
use recent::{Evicted, Recent};

/// Read and fold access to the queue's projection.
#[derive(Clone)]
pub struct QueueView {
    db: Arc<DB>,
    mirror: Arc<RwLock<Mirror>>,
    /// Write the stream index (`log_index`) as events are folded: for a log that does not
    /// keep one in this database itself (Kafka), so an entity's history can be found.
    index_streams: bool,
    write_options: Arc<WriteOptions>,
    /// Held through a fold: the mirror check of a fold's deletes relies on no other fold
    /// changing the database meanwhile.
    folding: Arc<Mutex<()>>,
    /// Rows the last folds wrote (None in a rebuild, which reads them back only through its
    /// own batches).
    recent: Option<Arc<Mutex<Recent>>>,
}

fn get<T: serde::de::DeserializeOwned>(
    db: &DB,
    cf_name: &'static str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    read_row(db, None, cf_name, key, decode_row)
}

fn decode_row<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(codec::decode(bytes)?)
}

/// A stored big-endian count (a stream's sequence, a consumer's offset); 0 if malformed.
fn decode_count(bytes: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8])))
}

/// A row read by `read`: from `recent` when it holds the row's column family and key, else
/// from the database.
/// Writes `wb` once it holds 10,000 writes, so that a migration of a large database goes in
/// parts of bounded size.
fn flush_large(db: &DB, wb: &mut WriteBatch) -> Result<(), StoreError> {
    if wb.len() >= 10_000 {
        db.write(std::mem::take(wb))?;
    }
    Ok(())
}

fn read_row<R>(
    db: &DB,
    recent: Option<&Mutex<Recent>>,
    cf_name: &'static str,
    key: &[u8],
    read: impl FnOnce(&[u8]) -> Result<R, StoreError>,
) -> Result<Option<R>, StoreError> {
    if let (Some(recent), Some(slot)) = (recent, Recent::slot(cf_name)) {
        let held = recent.lock().expect("recent lock").get(slot, key);
        if let Some(row) = held {
            return row.map(|b| read(&b)).transpose();
        }
    }
    db.get_pinned_cf(cf(db, cf_name)?, key)?
        .map(|b| read(&b))
        .transpose()
}

impl QueueView {
    /// Opens the view, loading the mirrored column families into memory.
    pub fn new(db: Arc<DB>) -> Result<QueueView, StoreError> {
        let mut mirror = Mirror::new();
        for name in MIRRORED {
            let mut map = BTreeMap::new();
            for item in db.iterator_cf(cf(&db, name)?, IteratorMode::Start) {
                let (k, v) = item?;
                map.insert(k.to_vec(), v.to_vec());
            }
            mirror.insert(name, map);
        }
        Ok(QueueView {
            db,
            mirror: Arc::new(RwLock::new(mirror)),
            index_streams: false,
            write_options: Arc::new(WriteOptions::default()),
            folding: Arc::new(Mutex::new(())),
            recent: Some(Arc::new(Mutex::new(Recent::new()))),
        })
    }

    /// Fills the `expiries` index from the tasks, groups and artifacts of a database written before it
    /// existed (once; a marker in `meta` says it was done), so they expire too and a rebuild
    /// from the log compares equal.
    pub fn index_expiries(&self) -> Result<(), StoreError> {
        self.migrate_once(b"expiries-indexed-2", |db, wb| {
            let expiries = cf(db, keys::CF_EXPIRIES)?;
            for item in db.iterator_cf(cf(db, keys::CF_TASKS)?, IteratorMode::Start) {
                let (_, v) = item?;
                let t: Task = codec::decode(&v)?;
                let key = keys::expiry(t.definition.expires, &Expiring::Task(t.task_id));
                wb.put_cf(expiries, key, []);
                flush_large(db, wb)?;
            }
            for item in db.iterator_cf(cf(db, keys::CF_GROUPS)?, IteratorMode::Start) {
                let (_, v) = item?;
                let g: TaskGroup = codec::decode(&v)?;
                let key = keys::expiry(g.expires, &Expiring::TaskGroup(g.task_group_id));
                wb.put_cf(expiries, key, []);
                flush_large(db, wb)?;
            }
            for item in db.iterator_cf(cf(db, keys::CF_ARTIFACTS)?, IteratorMode::Start) {
                let (k, v) = item?;
                let a: Artifact = codec::decode(&v)?;
                if let Some((task, run)) = keys::task_run_of_artifact(&k) {
                    let what = Expiring::Artifact(task, run, a.name);
                    wb.put_cf(expiries, keys::expiry(a.expires, &what), []);
                    flush_large(db, wb)?;
                }
            }
            Ok(())
        })
    }

    /// Rewrites every `workers` row written before rows ended with their quarantine history
    /// (once; a marker in `meta` says it was done), so the stored bytes are the ones a
    /// rebuild from the log writes and digests compare equal.
    pub fn rewrite_worker_rows(&self) -> Result<(), StoreError> {
        self.migrate_once(b"worker-rows-with-quarantine-history", |db, wb| {
            let workers = cf(db, keys::CF_WORKERS)?;
            for item in db.iterator_cf(workers, IteratorMode::Start) {
                let (k, v) = item?;
                let today = match codec::decode::<WorkerRecord>(&v) {
                    Ok(_) => continue,
                    Err(e) => e,
                };
                // a row of the layout before, byte for byte; anything else is an error
                let before: WorkerRecordBefore = codec::decode(&v)?;
                if codec::encode(&before)?[..] != v[..] {
                    return Err(today.into());
                }
                wb.put_cf(workers, k, codec::encode(&WorkerRecord::from(before))?);
                flush_large(db, wb)?;
            }
            Ok(())
        })
    }

    /// Runs `migrate` once per database, under the fold lock: unless `meta` holds `marker`,
    /// it fills a batch (written in parts as it grows, `flush_large`), and the marker is
    /// written with the batch's last part.
    fn migrate_once(
        &self,
        marker: &[u8],
        migrate: impl FnOnce(&DB, &mut WriteBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let db = &*self.db;
        let meta = cf(db, keys::CF_META)?;
        if db.get_pinned_cf(meta, marker)?.is_some() {
            return Ok(());
        }
        let _folding = self.folding.lock().expect("fold lock");
        let mut wb = WriteBatch::default();
        migrate(db, &mut wb)?;
        wb.put_cf(meta, marker, []);
        db.write(wb)?;
        Ok(())
    }

    /// Tasks, task groups and artifacts whose expiry is in `from..=now`, earliest first, at
    /// most `limit`, each with its expiry. Starting at `from` (the earliest expiry a previous
    /// scan left) skips the deletions of everything expired before.
    pub fn expiries_due(
        &self,
        from: Millis,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, Expiring)>, StoreError> {
        let db = &*self.db;
        let start = (from.0.max(0) as u64).to_be_bytes();
        let mode = IteratorMode::From(&start, Direction::Forward);
        let mut out = Vec::new();
        for item in db.iterator_cf(cf(db, keys::CF_EXPIRIES)?, mode) {
            let (k, _) = item?;
            let Some((at, what)) = keys::parse_expiry(&k) else {
                continue;
            };
            if at > now || out.len() == limit {
                break;
            }
            out.push((at, what));
        }
        Ok(out)
    }

    /// A view rebuilding its projection into a scratch database (`replay`): writes skip the
    /// write-ahead log, since a rebuild that dies is started over; `flush` makes it durable.
    pub fn for_rebuild(mut self) -> QueueView {
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.write_options = Arc::new(wo);
        self.recent = None;
        self
    }

    /// Writes what the memtables hold to disk (after a rebuild without the write-ahead log).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in keys::ALL_CFS {
            self.db.flush_cf(cf(&self.db, name)?)?;
        }
        Ok(())
    }

    /// This view also records which stream each folded event belongs to (see `index_streams`).
    pub fn with_stream_index(mut self) -> QueueView {
        self.index_streams = true;
        self
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    /// Folds envelopes read from `topic`/`partition` at `offsets`, and stores `next` (the
    /// position to read from afterwards) as the consumer's offset in the same write batch.
    pub fn apply(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<QueueEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("fold lock");
        let folded = self.fold_batch(consumer, topic, partition, offsets, next, envelopes, None)?;
        self.write_ops(&folded)?;
        // written: now the recent rows and the mirror (see `Recent`)
        let mut recent = self.recent.as_ref().map(|r| r.lock().expect("recent lock"));
        let mut mirrored = Vec::new();
        let mut evicted = Vec::new();
        for (cf_name, key, value) in folded.into_hashed() {
            match (recent.as_mut(), Recent::slot(cf_name)) {
                (Some(recent), Some(slot)) => evicted.extend(recent.insert(slot, key, value)),
                _ if MIRRORED.contains(&cf_name) => mirrored.push(((cf_name, key), value)),
                _ => {}
            }
        }
        drop(recent);
        self.mirror_ops(mirrored.into_iter());
        if let Some(recent) = self.recent.as_ref().filter(|_| !evicted.is_empty()) {
            // freeing a generation's 32 k rows takes milliseconds: neither while readers wait
            // on the lock nor on the writer's time (if no thread starts, the rows are freed
            // here, and the next generation's map is made afresh)
            let recent = recent.clone();
            let _ = std::thread::Builder::new()
                .name("queue-recent-free".into())
                .spawn(move || {
                    for Evicted(_, rows) in &mut evicted {
                        rows.clear();
                    }
                    let mut recent = recent.lock().expect("recent lock");
                    for e in evicted {
                        recent.give_back(e);
                    }
                });
        }
        Ok(())
    }
    /// The second half of `apply` for a rebuild, which keeps the batch to fold the next one
    /// through: stores the folded batch in one write, then mirrors it.
    pub fn write_folded(&self, folded: &Folded) -> Result<(), StoreError> {
        self.write_ops(folded)?;
        // outside the `folding` lock: forget the recent rows rather than update them
        if let Some(recent) = &self.recent {
            recent.lock().expect("recent lock").clear();
        }
        self.mirror_ops(
            folded
                .hashed
                .iter()
                .enumerate()
                .filter(|(i, _)| MIRRORED.contains(&FOLDED_CFS[*i]))
                .flat_map(|(i, writes)| {
                    writes
                        .iter()
                        .map(move |(k, v)| ((FOLDED_CFS[i], k.clone()), v.clone()))
                }),
        );
        Ok(())
    }

    fn write_ops(&self, folded: &Folded) -> Result<(), StoreError> {
        let db = &*self.db;
        let mut wb = WriteBatch::default();
        for (cf_name, writes) in folded.in_order() {
            let family = cf(db, cf_name)?;
            for (key, value) in writes {
                match value {
                    Some(v) => wb.put_cf(family, key, v),
                    None => wb.delete_cf(family, key),
                }
            }
        }
        db.write_opt(wb, &self.write_options)?;
        Ok(())
    }

    /// Once their write is in the database: the writes to mirrored column families, mirrored.
    fn mirror_ops(&self, ops: impl Iterator<Item = (Place, Option<Vec<u8>>)>) {
        let mut mirror = self.mirror.write().expect("mirror lock");
        for ((cf_name, key), value) in ops {
            if let Some(map) = mirror.get_mut(cf_name) {
                match value {
                    Some(v) => map.insert(key, v),
                    None => map.remove(&key),
                };
            }
        }
    }
}
