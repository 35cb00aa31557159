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
}

impl WorkerRecord {
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

/// The fold's per-batch maps: hashed with Fx, several times faster than SipHash on these
/// short keys (a rebuild spends much of its fold in them). A batch's keys come from the log
/// and are bounded by the batch, so a slow worst case stays bounded too.
type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A write's place: a column family and a key.
type Place = (&'static str, Vec<u8>);

/// Keys and values read from a column family, in key order.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// The column families a fold writes, each with a map of its own in `Folded`: a write hashes
/// (or orders) its key alone, a read through a batch looks its key up without copying it,
/// and a batch is sorted one column family at a time. The last `SCANNED` of them are scanned
/// by prefix when a task expires (its dependents and artifacts), so their writes are kept
/// in key order.
const FOLDED_CFS: [&str; 14] = [
    keys::CF_META,
    keys::CF_LOG_INDEX,
    keys::CF_STREAMS,
    keys::CF_TASKS,
    keys::CF_GROUPS,
    keys::CF_GROUP_MEMBERS,
    keys::CF_PENDING,
    keys::CF_CLAIMS,
    keys::CF_TIMERS,
    keys::CF_WORKERS,
    keys::CF_TASK_QUEUES,
    keys::CF_EXPIRIES,
    keys::CF_DEPENDENTS,
    keys::CF_ARTIFACTS,
];
const SCANNED: usize = 2;
const HASHED: usize = FOLDED_CFS.len() - SCANNED;

/// `cf_name`'s place in `FOLDED_CFS`. Every caller names one of the fold's own column
/// families (constants of this file), so any other name is a bug here, not bad input.
fn folded_slot(cf_name: &str) -> usize {
    match cf_name {
        keys::CF_META => 0,
        keys::CF_LOG_INDEX => 1,
        keys::CF_STREAMS => 2,
        keys::CF_TASKS => 3,
        keys::CF_GROUPS => 4,
        keys::CF_GROUP_MEMBERS => 5,
        keys::CF_PENDING => 6,
        keys::CF_CLAIMS => 7,
        keys::CF_TIMERS => 8,
        keys::CF_WORKERS => 9,
        keys::CF_TASK_QUEUES => 10,
        keys::CF_EXPIRIES => 11,
        keys::CF_DEPENDENTS => 12,
        keys::CF_ARTIFACTS => 13,
        other => unreachable!("the queue fold does not write column family {other}"),
    }
}

/// One column family's writes in a batch, the last per key (None deletes).
type Writes = FastMap<Vec<u8>, Option<Vec<u8>>>;
type OrderedWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key and what a batch does to it: the value it puts, or `None` for a delete.
type KeyWrite<'a> = (&'a Vec<u8>, &'a Option<Vec<u8>>);

/// A stored key and its value.
pub type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The writes of one fold, the last per key (None deletes): applied to RocksDB in one batch,
/// then to the in-memory mirror. A fold of many events puts and deletes the same pending,
/// claim and timer keys again and again; only the final state of each key reaches the
/// database. A rebuild folds the next batch while this one is written, reading through it
/// (see `QueueView::fold_batch`).
#[derive(Default)]
pub struct Folded {
    /// The first `HASHED` of `FOLDED_CFS`, hashed for point reads.
    hashed: [Writes; HASHED],
    /// The `SCANNED` others, in order for prefix scans.
    scanned: [OrderedWrites; SCANNED],
}

impl Folded {
    /// Empty, with room for a batch of `events` events: about 1.4 writes per event in a run
    /// of full lifecycles, most of them to streams, expiries and timers.
    fn for_events(events: usize) -> Folded {
        let mut f = Folded::default();
        for (slot, room) in [
            (keys::CF_STREAMS, events / 2),
            (keys::CF_TASKS, events / 4),
            (keys::CF_GROUPS, events / 4),
            (keys::CF_GROUP_MEMBERS, events / 4),
            (keys::CF_PENDING, events / 4),
            (keys::CF_CLAIMS, events / 4),
            (keys::CF_TIMERS, events / 2),
            (keys::CF_EXPIRIES, events / 2),
        ] {
            f.hashed[folded_slot(slot)].reserve(room);
        }
        f
    }

    fn set(&mut self, cf_name: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        match folded_slot(cf_name) {
            i if i < HASHED => self.hashed[i].insert(key, value),
            i => self.scanned[i - HASHED].insert(key, value),
        };
    }
    fn put(&mut self, cf_name: &'static str, key: impl Into<Vec<u8>>, value: impl AsRef<[u8]>) {
        self.set(cf_name, key.into(), Some(value.as_ref().to_vec()));
    }
    fn delete(&mut self, cf_name: &'static str, key: impl Into<Vec<u8>>) {
        self.set(cf_name, key.into(), None);
    }

    /// `key`'s value as written here: None if this batch does not write the key, Some(None)
    /// if it deletes it.
    fn get(&self, cf_name: &'static str, key: &[u8]) -> Option<Option<&[u8]>> {
        let found = match folded_slot(cf_name) {
            i if i < HASHED => self.hashed[i].get(key),
            i => self.scanned[i - HASHED].get(key),
        };
        found.map(|v| v.as_deref())
    }

    /// The writes to keys of `cf_name` (one of the scanned column families) that start with
    /// `prefix`.
    fn prefixed<'f>(
        &'f self,
        cf_name: &'static str,
        prefix: &'f [u8],
    ) -> impl Iterator<Item = (&'f Vec<u8>, &'f Option<Vec<u8>>)> + 'f {
        let slot = folded_slot(cf_name);
        debug_assert!(slot >= HASHED, "{cf_name} is not kept in order");
        slot.checked_sub(HASHED)
            .and_then(|i| self.scanned.get(i))
            .into_iter()
            .flat_map(move |w| {
                w.range::<[u8], _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
            })
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Every column family with its writes, each in key order: the memtable's skip list
    /// then finds each insert's place next to the previous one's instead of searching from
    /// the top.
    fn in_order(&self) -> impl Iterator<Item = (&'static str, Vec<KeyWrite<'_>>)> {
        let hashed = self.hashed.iter().enumerate().map(|(i, writes)| {
            let mut sorted: Vec<_> = writes.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
            (FOLDED_CFS[i], sorted)
        });
        let scanned = self
            .scanned
            .iter()
            .enumerate()
            .map(|(i, writes)| (FOLDED_CFS[HASHED + i], writes.iter().collect()));
        hashed
            .chain(scanned)
            .filter(|(_, writes): &(_, Vec<_>)| !writes.is_empty())
    }

    /// The writes to the hashed column families, each with its column family.
    fn into_hashed(self) -> impl Iterator<Item = (&'static str, Vec<u8>, Option<Vec<u8>>)> {
        self.hashed
            .into_iter()
            .enumerate()
            .flat_map(|(i, writes)| writes.into_iter().map(move |(k, v)| (FOLDED_CFS[i], k, v)))
    }
}

/// The column families `Recent` holds: the rows every command and every status read looks up
/// for the tasks just touched (the task, and its stream's last sequence).
const RECENT: [&str; 2] = [keys::CF_TASKS, keys::CF_STREAMS];

/// Rows each of `Recent`'s two generations holds per column family before the older is
/// dropped (a handful in tests, so they drop generations too)...
const RECENT_ROWS: usize = if cfg!(test) { 8 } else { 32 * 1024 };
/// ...or bytes (keys and rows; a task row is as large as its definition, which may be
/// megabytes), whichever comes first: at most twice this per column family is held.
const RECENT_BYTES: usize = 16 << 20;

/// A bounded write-through cache of the rows of `RECENT` that the last folds wrote, in front
/// of RocksDB's point lookups (a memtable skip-list search each, and a search of the files
/// for a row not in it). Only a fold fills it, with its writes once they are in the database
/// and before the `folding` lock is released, and a read never does; so an entry is never
/// newer than the database's row, and it is older only between a fold's write and its
/// update here (as the mirror), with no fold in between. Deletes are kept (`None`).
/// `write_folded`, which runs outside the lock, empties it instead.
///
/// A generation's map is made at its full size and reused: growing one by doubling rehashed
/// up to 16 k rows inside a fold (0.5-7 ms on the writer, with every reader waiting on the
/// lock), and the dropped generation's rows are freed outside the lock, on a thread of their
/// own (`Evicted`).
#[derive(Default)]
struct Recent {
    current: [RecentRows; 2],
    previous: [RecentRows; 2],
    /// Bytes inserted into each `current` (a key written twice counts twice).
    current_bytes: [usize; 2],
    /// An emptied generation's map, kept for the next generation.
    spare: [Option<RecentRows>; 2],
}

type RecentRows = HashMap<Vec<u8>, Option<bytes::Bytes>>;

/// A generation `Recent` dropped, still holding its rows: emptied by its taker outside the
/// lock, then given back (`Recent::give_back`) to be the next generation's map.
struct Evicted(usize, RecentRows);

impl Recent {
    fn slot(cf_name: &str) -> Option<usize> {
        RECENT.iter().position(|c| *c == cf_name)
    }

    /// None: not held here (ask the database). Some(None): deleted.
    fn get(&self, slot: usize, key: &[u8]) -> Option<Option<bytes::Bytes>> {
        self.current[slot]
            .get(key)
            .or_else(|| self.previous[slot].get(key))
            .cloned()
    }

    /// Holds `key`'s row; when `current` is full, it becomes `previous` first, and the
    /// generation before is returned, rows and all, for the caller to empty.
    fn insert(&mut self, slot: usize, key: Vec<u8>, value: Option<Vec<u8>>) -> Option<Evicted> {
        let mut evicted = None;
        if self.current[slot].len() >= RECENT_ROWS || self.current_bytes[slot] >= RECENT_BYTES {
            let fresh = self.spare[slot]
                .take()
                .unwrap_or_else(|| HashMap::with_capacity(RECENT_ROWS));
            let full = std::mem::replace(&mut self.current[slot], fresh);
            evicted = Some(Evicted(
                slot,
                std::mem::replace(&mut self.previous[slot], full),
            ));
            self.current_bytes[slot] = 0;
        }
        self.current_bytes[slot] += key.len() + value.as_ref().map_or(0, Vec::len);
        self.current[slot].insert(key, value.map(bytes::Bytes::from));
        evicted
    }

    /// Keeps an evicted generation's map, emptied, for the next generation (unless it was
    /// never full-sized: the first `previous` starts empty).
    fn give_back(&mut self, Evicted(slot, rows): Evicted) {
        if rows.is_empty() && rows.capacity() >= RECENT_ROWS {
            self.spare[slot] = Some(rows);
        }
    }

    /// Empty, its first generations made at full size.
    fn new() -> Recent {
        let sized = || HashMap::with_capacity(RECENT_ROWS);
        Recent {
            current: [sized(), sized()],
            ..Recent::default()
        }
    }

    fn clear(&mut self) {
        *self = Recent::new();
    }
}

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

/// The state the events of one batch are folded over: read through to the database, written
/// back into the batch once at the end.
struct Fold<'a> {
    db: &'a DB,
    /// The previous batch's writes while they are still on their way to the database (a
    /// rebuild's overlap). Reads look here before the database.
    overlay: Option<&'a Folded>,
    /// The view's recent rows, read after the overlay and before the database.
    recent: Option<&'a Mutex<Recent>>,
    /// Boxed: a task is moved out and back in for each of its events, and a batch's map of
    /// them is allocated anew for each fold.
    tasks: FastMap<TaskId, Option<Box<Task>>>,
    groups: FastMap<TaskId, Option<TaskGroup>>,
    workers: FastMap<Vec<u8>, Option<WorkerRecord>>,
    queues: FastMap<String, Option<TaskQueueRecord>>,
    artifacts: FastMap<Vec<u8>, Option<Artifact>>,
    streams: FastMap<String, u64>,
    /// The run index entries the database holds for the tasks this fold read from it.
    indexed: FastMap<TaskId, Vec<IndexEntry>>,
}

/// A task's entry in one of the run indexes: column family, key, value.
type IndexEntry = (&'static str, Vec<u8>, Vec<u8>);

/// The run indexes' entries for `task`, a function of its state alone: its last run in the
/// pending queue while pending, in the claims and the claim-expiry timers while running, and
/// its deadline timer until it is resolved. A fold writes the difference between a task's
/// entries before the batch and after it, so a task put in the pending queue and claimed
/// within one batch never reaches the pending column family.
fn run_index(task: &Task) -> Result<Vec<IndexEntry>, StoreError> {
    let mut entries = Vec::with_capacity(3);
    let id = &task.task_id;
    let queue = task.definition.task_queue_id.as_str();
    if let Some(run) = task.last_run() {
        match run.state {
            RunState::Pending => entries.push((
                keys::CF_PENDING,
                keys::pending(queue, task.priority.rank(), run.scheduled, id, run.run_id),
                Vec::new(),
            )),
            RunState::Running => {
                let claim = ClaimRecord {
                    taken_until: run.taken_until.unwrap_or_default(),
                    worker_group: run.worker_group.clone().unwrap_or_default(),
                    worker_id: run.worker_id.clone().unwrap_or_default(),
                    claimed: run.started.unwrap_or_default(),
                };
                entries.push((
                    keys::CF_TIMERS,
                    keys::timer(claim.taken_until, TimerKind::ClaimExpiry, id, run.run_id),
                    Vec::new(),
                ));
                entries.push((
                    keys::CF_CLAIMS,
                    keys::claim(queue, id, run.run_id),
                    codec::encode(&claim)?,
                ));
            }
            RunState::Completed | RunState::Failed | RunState::Exception => {}
        }
    }
    if task.resolution().is_none() {
        entries.push((
            keys::CF_TIMERS,
            keys::timer(task.definition.deadline, TimerKind::Deadline, id, 0),
            Vec::new(),
        ));
    }
    Ok(entries)
}

impl<'a> Fold<'a> {
    /// A row's bytes as the database will hold them once the overlay is written, read by
    /// `read`.
    fn read_raw<R>(
        &self,
        cf_name: &'static str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        if let Some(unwritten) = self.overlay.and_then(|o| o.get(cf_name, key)) {
            return unwritten.map(read).transpose();
        }
        read_row(self.db, self.recent, cf_name, key, read)
    }

    /// A row as the database will hold it once the overlay is written.
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.read_raw(cf_name, key, decode_row)
    }

    /// The rows of `cf_name` under `prefix`, the overlay's writes included.
    fn prefixed(&self, cf_name: &'static str, prefix: &[u8]) -> Result<Rows, StoreError> {
        let mut found = BTreeMap::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(cf(self.db, cf_name)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            found.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self
            .overlay
            .into_iter()
            .flat_map(|o| o.prefixed(cf_name, prefix))
        {
            match v {
                Some(v) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        Ok(found.into_iter().collect())
    }

    /// The task, taken out of the fold (no copy of its definition); the caller puts it back.
    /// A task read from the database has its run index recorded as it is stored, for the
    /// fold's end to compare with the task's final state.
    fn take_task(&mut self, id: &TaskId) -> Result<Option<Box<Task>>, StoreError> {
        if let Some(t) = self.tasks.remove(id) {
            return Ok(t);
        }
        let stored: Option<Box<Task>> = self.get(keys::CF_TASKS, &keys::task(id))?;
        if let Some(t) = &stored {
            self.indexed.insert(*id, run_index(t)?);
        }
        Ok(stored)
    }
    fn group(&mut self, id: &TaskId) -> Result<Option<TaskGroup>, StoreError> {
        if let Some(g) = self.groups.get(id) {
            return Ok(g.clone());
        }
        let g: Option<TaskGroup> = self.get(keys::CF_GROUPS, &keys::task(id))?;
        self.groups.insert(*id, g.clone());
        Ok(g)
    }
    fn worker(&mut self, key: &[u8]) -> Result<Option<WorkerRecord>, StoreError> {
        if let Some(w) = self.workers.get(key) {
            return Ok(w.clone());
        }
        let w: Option<WorkerRecord> = self.get(keys::CF_WORKERS, key)?;
        self.workers.insert(key.to_vec(), w.clone());
        Ok(w)
    }
    fn queue(&mut self, q: &str) -> Result<Option<TaskQueueRecord>, StoreError> {
        if let Some(r) = self.queues.get(q) {
            return Ok(r.clone());
        }
        let r: Option<TaskQueueRecord> = self.get(keys::CF_TASK_QUEUES, &keys::task_queue(q))?;
        self.queues.insert(q.to_string(), r.clone());
        Ok(r)
    }
    fn artifact(&mut self, key: &[u8]) -> Result<Option<Artifact>, StoreError> {
        if let Some(a) = self.artifacts.get(key) {
            return Ok(a.clone());
        }
        let a: Option<Artifact> = self.get(keys::CF_ARTIFACTS, key)?;
        self.artifacts.insert(key.to_vec(), a.clone());
        Ok(a)
    }
    fn stream_seq(&mut self, stream: &str) -> Result<u64, StoreError> {
        if let Some(s) = self.streams.get(stream) {
            return Ok(*s);
        }
        let s = self
            .read_raw(keys::CF_STREAMS, stream.as_bytes(), decode_count)?
            .unwrap_or(0);
        self.streams.insert(stream.to_string(), s);
        Ok(s)
    }
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
        const MARKER: &[u8] = b"expiries-indexed-2";
        let db = &*self.db;
        let meta = cf(db, keys::CF_META)?;
        if db.get_pinned_cf(meta, MARKER)?.is_some() {
            return Ok(());
        }
        let _folding = self.folding.lock().expect("fold lock");
        let expiries = cf(db, keys::CF_EXPIRIES)?;
        let mut wb = WriteBatch::default();
        // in batches of bounded size: the database may be large
        let flush = |wb: &mut WriteBatch| -> Result<(), StoreError> {
            if wb.len() >= 10_000 {
                db.write(std::mem::take(wb))?;
            }
            Ok(())
        };
        for item in db.iterator_cf(cf(db, keys::CF_TASKS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let t: Task = codec::decode(&v)?;
            let key = keys::expiry(t.definition.expires, &Expiring::Task(t.task_id));
            wb.put_cf(expiries, key, []);
            flush(&mut wb)?;
        }
        for item in db.iterator_cf(cf(db, keys::CF_GROUPS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let g: TaskGroup = codec::decode(&v)?;
            let key = keys::expiry(g.expires, &Expiring::TaskGroup(g.task_group_id));
            wb.put_cf(expiries, key, []);
            flush(&mut wb)?;
        }
        for item in db.iterator_cf(cf(db, keys::CF_ARTIFACTS)?, IteratorMode::Start) {
            let (k, v) = item?;
            let a: Artifact = codec::decode(&v)?;
            if let Some((task, run)) = keys::task_run_of_artifact(&k) {
                let what = Expiring::Artifact(task, run, a.name);
                wb.put_cf(expiries, keys::expiry(a.expires, &what), []);
                flush(&mut wb)?;
            }
        }
        wb.put_cf(meta, MARKER, []);
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

    /// The first half of `apply`: folds the envelopes into the writes that `write_folded`
    /// then stores. `unwritten` is the previous batch while it is still being written (a
    /// rebuild overlaps the two): the fold reads through it, as if it were in the database.
    /// The caller runs one fold or write at a time, each batch's write after its
    /// predecessor's, and passes as `unwritten` every batch whose write has not finished.
    #[allow(clippy::too_many_arguments)]
    pub fn fold_batch(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<QueueEvent>],
        unwritten: Option<&Folded>,
    ) -> Result<Folded, StoreError> {
        let db = &*self.db;
        // sized for the batch, so a rebuild's batch of 32,768 events does not grow its maps
        // a doubling at a time: about 1.4 writes per event, a stream per 2.5 events and a
        // task per 5 in a run of full lifecycles
        let n = envelopes.len();
        let mut batch = Folded::for_events(n);
        let mut fold = Fold {
            db,
            overlay: unwritten,
            recent: self.recent.as_deref(),
            tasks: FastMap::with_capacity_and_hasher(n / 4, Default::default()),
            groups: FastMap::with_capacity_and_hasher(n / 4, Default::default()),
            workers: FastMap::default(),
            queues: FastMap::default(),
            artifacts: FastMap::default(),
            streams: FastMap::with_capacity_and_hasher(n / 2, Default::default()),
            indexed: FastMap::default(),
        };
        for (env, &offset) in envelopes.iter().zip(offsets) {
            // an envelope at or below the stream's applied sequence was applied already
            if env.sequence <= fold.stream_seq(&env.stream_id)? {
                continue;
            }
            fold.streams.insert(env.stream_id.clone(), env.sequence);
            if self.index_streams {
                batch.put(
                    keys::CF_LOG_INDEX,
                    keys::log_index(topic, partition, &env.stream_id, offset),
                    [],
                );
            }
            self.fold_event(&mut batch, &mut fold, &env.payload)?;
        }
        // each task's run index as its final state has it, against what the database holds
        let mut indexed = std::mem::take(&mut fold.indexed);
        for (id, t) in &fold.tasks {
            let before = indexed.remove(id).unwrap_or_default();
            let after = match t {
                Some(t) => run_index(t)?,
                None => Vec::new(),
            };
            for (cf_name, key, _) in &before {
                if !after.iter().any(|(c, k, _)| c == cf_name && k == key) {
                    batch.delete(cf_name, key.clone());
                }
            }
            for entry in after {
                if !before.contains(&entry) {
                    let (cf_name, key, value) = entry;
                    batch.put(cf_name, key, value);
                }
            }
        }
        for (id, t) in &fold.tasks {
            if let Some(t) = t {
                batch.put(keys::CF_TASKS, keys::task(id), codec::encode(t)?);
            }
        }
        for (id, g) in &fold.groups {
            if let Some(g) = g {
                batch.put(keys::CF_GROUPS, keys::task(id), codec::encode(g)?);
            }
        }
        for (k, w) in &fold.workers {
            if let Some(w) = w {
                batch.put(keys::CF_WORKERS, k.clone(), codec::encode(w)?);
            }
        }
        for (q, r) in &fold.queues {
            if let Some(r) = r {
                batch.put(keys::CF_TASK_QUEUES, keys::task_queue(q), codec::encode(r)?);
            }
        }
        for (k, a) in &fold.artifacts {
            if let Some(a) = a {
                batch.put(keys::CF_ARTIFACTS, k.clone(), codec::encode(a)?);
            }
        }
        for (s, seq) in &fold.streams {
            batch.put(keys::CF_STREAMS, s.as_bytes(), seq.to_be_bytes());
        }
        batch.put(
            keys::CF_META,
            keys::consumer_offset(consumer, topic, partition),
            next.to_be_bytes(),
        );
        {
            // a key of a mirrored column family that the mirror lacks is not in the database
            // either: deleting it would only add a tombstone (the key was put and deleted
            // within this fold). For a key the unwritten batch writes, that batch says instead.
            let mirror = self.mirror.read().expect("mirror lock");
            for (i, writes) in batch.hashed.iter_mut().enumerate() {
                let cf_name = FOLDED_CFS[i];
                let Some(mirrored) = mirror.get(cf_name) else {
                    // not mirrored: a delete stays, as the database may hold the key
                    continue;
                };
                let before = unwritten.map(|o| &o.hashed[i]);
                writes.retain(|key, value| {
                    value.is_some()
                        || match before.and_then(|b| b.get(key)) {
                            Some(before) => before.is_some(),
                            None => mirrored.contains_key(key),
                        }
                });
            }
        }
        Ok(batch)
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

    fn fold_event(
        &self,
        batch: &mut Folded,
        fold: &mut Fold,
        event: &QueueEvent,
    ) -> Result<(), StoreError> {
        match event {
            // changes nothing (it only has its messages published again)
            QueueEvent::Repeated { .. } => {}
            QueueEvent::TaskDefined {
                task_id,
                definition,
                unsatisfied,
            } => {
                let task = Task::defined(
                    *task_id,
                    TaskDefinition::clone(definition),
                    unsatisfied.clone(),
                );
                batch.put(
                    keys::CF_GROUP_MEMBERS,
                    keys::pair(&definition.task_group_id, task_id),
                    [],
                );
                for dep in &definition.dependencies {
                    batch.put(keys::CF_DEPENDENTS, keys::pair(dep, task_id), []);
                }
                batch.put(
                    keys::CF_EXPIRIES,
                    keys::expiry(definition.expires, &Expiring::Task(*task_id)),
                    [],
                );
                fold.tasks.insert(*task_id, Some(Box::new(task)));
            }
            QueueEvent::TaskExpired { task_id } => {
                if let Some(task) = fold.take_task(task_id)? {
                    self.forget_task(batch, fold, &task)?;
                }
                fold.tasks.insert(*task_id, None);
            }
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => {
                let before = fold.group(task_group_id)?;
                if let Some(g) = &before {
                    let key = keys::expiry(g.expires, &Expiring::TaskGroup(*task_group_id));
                    batch.delete(keys::CF_EXPIRIES, key);
                }
                let after = TaskGroup::apply(before, event);
                match &after {
                    Some(g) => batch.put(
                        keys::CF_EXPIRIES,
                        keys::expiry(g.expires, &Expiring::TaskGroup(*task_group_id)),
                        [],
                    ),
                    None => batch.delete(keys::CF_GROUPS, keys::task(task_group_id)),
                }
                fold.groups.insert(*task_group_id, after);
            }
            QueueEvent::ArtifactCreated {
                task_id,
                run_id,
                artifact,
            } => {
                let key = keys::artifact(task_id, *run_id, &artifact.name);
                let what = Expiring::Artifact(*task_id, *run_id, artifact.name.clone());
                // a compatible re-creation may extend `expires`
                if let Some(old) = fold.artifact(&key)? {
                    batch.delete(keys::CF_EXPIRIES, keys::expiry(old.expires, &what));
                }
                batch.put(keys::CF_EXPIRIES, keys::expiry(artifact.expires, &what), []);
                fold.artifacts.insert(key, Some(artifact.clone()));
            }
            QueueEvent::ArtifactExpired {
                task_id,
                run_id,
                name,
            } => {
                let key = keys::artifact(task_id, *run_id, name);
                if let Some(old) = fold.artifact(&key)? {
                    let what = Expiring::Artifact(*task_id, *run_id, name.clone());
                    batch.delete(keys::CF_EXPIRIES, keys::expiry(old.expires, &what));
                    batch.delete(keys::CF_ARTIFACTS, key.clone());
                }
                fold.artifacts.insert(key, None);
            }
            QueueEvent::ArtifactFinished {
                task_id,
                run_id,
                name,
            } => {
                let key = keys::artifact(task_id, *run_id, name);
                if let Some(mut a) = fold.artifact(&key)? {
                    a.present = true;
                    fold.artifacts.insert(key, Some(a));
                }
            }
            QueueEvent::WorkerSeen {
                task_queue_id,
                worker_group,
                worker_id,
                at,
                expires,
            } => {
                let key = keys::worker(task_queue_id.as_str(), worker_group, worker_id);
                let mut w = fold.worker(&key)?.unwrap_or(WorkerRecord {
                    first_claim: *at,
                    ..Default::default()
                });
                w.last_date_active = Some(*at);
                w.expires = w.expires.max(*expires);
                fold.workers.insert(key, Some(w));
                self.queue_seen(fold, task_queue_id, *at, *expires)?;
            }
            QueueEvent::WorkerQuarantined {
                task_queue_id,
                worker_group,
                worker_id,
                until,
                info,
                ..
            } => {
                let key = keys::worker(task_queue_id.as_str(), worker_group, worker_id);
                if let Some(mut w) = fold.worker(&key)? {
                    w.quarantine_until = Some(*until);
                    w.quarantine_info = Some(info.clone());
                    fold.workers.insert(key, Some(w));
                }
            }
            QueueEvent::RunScheduled { .. }
            | QueueEvent::RunClaimed { .. }
            | QueueEvent::RunReclaimed { .. }
            | QueueEvent::RunResolved { .. }
            | QueueEvent::RunExceptionRecorded { .. }
            | QueueEvent::DependencySatisfied { .. }
            | QueueEvent::PriorityChanged { .. }
            | QueueEvent::GroupPriorityApplied { .. } => self.fold_task_event(fold, event)?,
        }
        Ok(())
    }

    /// Everything a task left in the projection, for `TaskExpired`: its row, membership,
    /// dependency records (both ways), timers, expiry entry and artifacts. Its stream's
    /// sequence stays, so a task created later under the same id numbers its events on.
    fn forget_task(
        &self,
        batch: &mut Folded,
        fold: &mut Fold,
        task: &Task,
    ) -> Result<(), StoreError> {
        let id = &task.task_id;
        let def = &task.definition;
        batch.delete(keys::CF_TASKS, keys::task(id));
        batch.delete(keys::CF_GROUP_MEMBERS, keys::pair(&def.task_group_id, id));
        for dep in &def.dependencies {
            batch.delete(keys::CF_DEPENDENTS, keys::pair(dep, id));
        }
        batch.delete(
            keys::CF_EXPIRIES,
            keys::expiry(def.expires, &Expiring::Task(*id)),
        );
        // its dependents' records, in the database and put earlier in this fold
        let mut dependents: Vec<Vec<u8>> = fold
            .prefixed(keys::CF_DEPENDENTS, &id.0)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        dependents.extend(
            batch
                .prefixed(keys::CF_DEPENDENTS, &id.0)
                .map(|(k, _)| k.clone()),
        );
        for key in dependents {
            batch.delete(keys::CF_DEPENDENTS, key);
        }
        // the artifacts, this fold's own first (the database does not hold them yet)
        let mut artifacts: HashMap<Vec<u8>, Option<Artifact>> = HashMap::new();
        for run in 0..task.runs.len() as u32 {
            for (key, v) in fold.prefixed(keys::CF_ARTIFACTS, &keys::artifact_prefix(id, run))? {
                artifacts.insert(key, Some(codec::decode(&v)?));
            }
        }
        for (key, a) in fold.artifacts.iter_mut() {
            if key.starts_with(&id.0) {
                artifacts.insert(key.clone(), a.take());
            }
        }
        for (key, a) in artifacts {
            if let (Some(a), Some((_, run))) = (a, keys::task_run_of_artifact(&key)) {
                let what = Expiring::Artifact(*id, run, a.name.clone());
                batch.delete(keys::CF_EXPIRIES, keys::expiry(a.expires, &what));
            }
            batch.delete(keys::CF_ARTIFACTS, key.clone());
            fold.artifacts.insert(key, None);
        }
        Ok(())
    }

    fn queue_seen(
        &self,
        fold: &mut Fold,
        q: &TaskQueueId,
        at: Millis,
        expires: Millis,
    ) -> Result<(), StoreError> {
        let r = fold.queue(q.as_str())?;
        let expires = r.as_ref().map_or(expires, |r| r.expires.max(expires));
        fold.queues.insert(
            q.as_str().to_string(),
            Some(TaskQueueRecord {
                expires,
                last_date_active: at,
            }),
        );
        Ok(())
    }

    /// Run-level events: the task (its run indexes follow it at the end of the fold, see
    /// `run_index`) and, for a claim, its worker.
    fn fold_task_event(&self, fold: &mut Fold, event: &QueueEvent) -> Result<(), StoreError> {
        let task_id = match event.stream() {
            taskledger_core::queue::Stream::Task(t) => t,
            taskledger_core::queue::Stream::TaskGroup(_)
            | taskledger_core::queue::Stream::Worker(_) => return Ok(()),
        };
        let Some(mut task) = fold.take_task(&task_id)? else {
            fold.tasks.insert(task_id, None);
            return Ok(());
        };
        task.apply(event);
        if let QueueEvent::RunClaimed {
            task_queue_id,
            worker_group,
            worker_id,
            run_id,
            at,
            ..
        } = event
        {
            let key = keys::worker(task_queue_id.as_str(), worker_group, worker_id);
            let mut w = fold.worker(&key)?.unwrap_or(WorkerRecord {
                first_claim: *at,
                expires: at.plus(DAY),
                ..Default::default()
            });
            w.recent_tasks.push((task_id, *run_id));
            if w.recent_tasks.len() > 20 {
                w.recent_tasks.remove(0);
            }
            fold.workers.insert(key, Some(w));
        }
        fold.tasks.insert(task_id, Some(task));
        Ok(())
    }

    // ---- reads ----

    pub fn task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        read_row(
            &self.db,
            self.recent.as_deref(),
            keys::CF_TASKS,
            &keys::task(id),
            decode_row,
        )
    }

    /// `f` over the task's status, read from its stored bytes without decoding the rest of
    /// the task (`TaskStatusRow`): its payload, metadata and lists are never copied.
    pub fn task_status<R>(
        &self,
        id: &TaskId,
        f: impl FnOnce(TaskStatus<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        read_row(
            &self.db,
            self.recent.as_deref(),
            keys::CF_TASKS,
            &keys::task(id),
            |bytes| {
                let row: TaskStatusRow = codec::decode_borrowed(bytes)?;
                Ok(f(row.status()))
            },
        )
    }

    /// The last sequence applied on `stream` (0 before its first event).
    pub fn stream_sequence(&self, stream: &str) -> Result<u64, StoreError> {
        let seq = read_row(
            &self.db,
            self.recent.as_deref(),
            keys::CF_STREAMS,
            stream.as_bytes(),
            decode_count,
        )?;
        Ok(seq.unwrap_or(0))
    }

    pub fn group(&self, id: &TaskId) -> Result<Option<TaskGroup>, StoreError> {
        get(&self.db, keys::CF_GROUPS, &keys::task(id))
    }

    pub fn artifact(
        &self,
        task: &TaskId,
        run: u32,
        name: &str,
    ) -> Result<Option<Artifact>, StoreError> {
        get(
            &self.db,
            keys::CF_ARTIFACTS,
            &keys::artifact(task, run, name),
        )
    }

    pub fn worker(
        &self,
        q: &str,
        group: &str,
        id: &str,
    ) -> Result<Option<WorkerRecord>, StoreError> {
        get(&self.db, keys::CF_WORKERS, &keys::worker(q, group, id))
    }

    /// A task queue's record, expired or not.
    pub fn task_queue(&self, q: &str) -> Result<Option<TaskQueueRecord>, StoreError> {
        get(&self.db, keys::CF_TASK_QUEUES, &keys::task_queue(q))
    }

    pub fn consumer_offset(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
    ) -> Result<u64, StoreError> {
        let key = keys::consumer_offset(consumer, topic, partition);
        Ok(read_row(&self.db, None, keys::CF_META, &key, decode_count)?.unwrap_or(0))
    }

    pub fn store_consumer_offset(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), StoreError> {
        self.db.put_cf(
            cf(&self.db, keys::CF_META)?,
            keys::consumer_offset(consumer, topic, partition),
            next.to_be_bytes(),
        )?;
        Ok(())
    }

    /// Keys and values under `prefix`, starting after `after` (exclusive), at most `limit`.
    pub fn scan(
        &self,
        cf_name: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let start = match after {
            Some(a) => {
                let mut s = a.to_vec();
                s.push(0);
                s
            }
            None => prefix.to_vec(),
        };
        let mut out = Vec::new();
        self.visit(cf_name, prefix, &start, |k, v| {
            if out.len() >= limit {
                return false;
            }
            out.push((k.into(), v.into()));
            true
        })?;
        Ok(out)
    }

    /// Hands each key and value under `prefix`, from `start` on in key order, to `visit`
    /// until it returns false: from the mirror when it holds `cf_name`, else the database.
    fn visit(
        &self,
        cf_name: &'static str,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        if let Some(map) = self.mirror.read().expect("mirror lock").get(cf_name) {
            for (k, v) in map.range(start.to_vec()..) {
                if !k.starts_with(prefix) || !visit(k, v) {
                    break;
                }
            }
            return Ok(());
        }
        for item in self.db.iterator_cf(
            cf(&self.db, cf_name)?,
            IteratorMode::From(start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Pending runs of a queue in claim order: priority, then time pending.
    pub fn pending(&self, queue: &str, limit: usize) -> Result<Vec<(TaskId, u32)>, StoreError> {
        Ok(self
            .scan(keys::CF_PENDING, &keys::queue_prefix(queue), None, limit)?
            .iter()
            .filter_map(|(k, _)| keys::task_run_suffix(k))
            .collect())
    }

    pub fn count(&self, cf_name: &'static str, queue: &str) -> Result<usize, StoreError> {
        // counted in place: a queue may hold a million pending runs, and copying each entry
        // (as `scan` does) while holding the mirror's lock would stall the writer's folds
        let prefix = keys::queue_prefix(queue);
        let mut n = 0;
        self.visit(cf_name, &prefix, &prefix, |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Timers due at or before `now`, earliest first.
    pub fn due_timers(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, TimerKind, TaskId, u32)>, StoreError> {
        let mut out = Vec::new();
        let mirror = self.mirror.read().expect("mirror lock");
        for k in mirror
            .get(keys::CF_TIMERS)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let Some(t) = keys::parse_timer(k) else {
                continue;
            };
            if t.0 > now || out.len() >= limit {
                break;
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The time of the earliest timer.
    pub fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        let mirror = self.mirror.read().expect("mirror lock");
        Ok(mirror
            .get(keys::CF_TIMERS)
            .and_then(|m| m.keys().next())
            .and_then(|k| keys::parse_timer(k))
            .map(|t| t.0))
    }

    pub fn dependents(
        &self,
        task: &TaskId,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        // lets a crash test make the dependency reactor panic on a resolution
        #[cfg(feature = "failpoints")]
        fail::fail_point!("read-dependents");
        self.pairs(keys::CF_DEPENDENTS, task, after, limit)
    }

    pub fn group_members(
        &self,
        group: &TaskId,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.pairs(keys::CF_GROUP_MEMBERS, group, after, limit)
    }

    /// The group's members whose slugid text starts with the base64url digit `digit`
    /// (0 to 63): one bucket of a listing in taskId text order (see `pairs_with_first_digit`).
    pub fn group_members_with_first_digit(
        &self,
        group: &TaskId,
        digit: u8,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.pairs_with_first_digit(keys::CF_GROUP_MEMBERS, group, digit)
    }

    /// The task's dependents whose slugid text starts with the base64url digit `digit`.
    pub fn dependents_with_first_digit(
        &self,
        task: &TaskId,
        digit: u8,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.pairs_with_first_digit(keys::CF_DEPENDENTS, task, digit)
    }

    /// The second ids of `first`'s pairs whose first byte's top six bits are `digit`: the ids
    /// whose slugid text starts with that digit's character, a contiguous run of the keys.
    fn pairs_with_first_digit(
        &self,
        cf_name: &'static str,
        first: &TaskId,
        digit: u8,
    ) -> Result<Vec<TaskId>, StoreError> {
        let prefix = keys::task(first);
        let mut start = prefix.clone();
        start.push(digit << 2);
        let mut out = Vec::new();
        self.visit(cf_name, &prefix, &start, |k, _| {
            match (k.get(prefix.len()), keys::second_of_pair(k)) {
                (Some(b), Some(id)) if b >> 2 == digit => {
                    out.push(id);
                    true
                }
                _ => false,
            }
        })?;
        Ok(out)
    }

    fn pairs(
        &self,
        cf_name: &'static str,
        first: &TaskId,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let after_key = after.map(|a| keys::pair(first, a));
        Ok(self
            .scan(cf_name, &keys::task(first), after_key.as_deref(), limit)?
            .iter()
            .filter_map(|(k, _)| keys::second_of_pair(k))
            .collect())
    }

    pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
        Ok(codec::decode(bytes)?)
    }
}

#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use taskledger_core::envelope::{Actor, EventId};
    use taskledger_core::ids::Slug;
    use taskledger_core::queue::{
        self, Limits, Priority, ReasonResolved, Requires, TaskDefinition,
    };
    use taskledger_core::time::HOUR;

    pub(crate) fn definition(now: Millis, group: Slug) -> TaskDefinition {
        TaskDefinition {
            task_queue_id: "prov/wt".parse().unwrap(),
            scheduler_id: "-".into(),
            project_id: "none".into(),
            task_group_id: group,
            dependencies: vec![],
            requires: Requires::AllCompleted,
            routes: vec![],
            priority: Priority::Lowest,
            retries: 1,
            created: now,
            deadline: now.plus(HOUR),
            expires: now.plus(2 * HOUR),
            scopes: vec![],
            payload: queue::JsonText("{}".into()),
            metadata: queue::Metadata {
                name: "n".into(),
                description: "d".into(),
                owner: "o@example.com".into(),
                source: "https://example.com".into(),
            },
            tags: queue::JsonText("{}".into()),
            extra: queue::JsonText("{}".into()),
        }
    }

    /// Tasks in a few groups: some left pending, some claimed, some completed, one retried
    /// after an exception, so every index (pending, claims, timers) ends with entries that a
    /// fold put and others it put and deleted again.
    fn workload(now: Millis) -> Vec<Envelope<QueueEvent>> {
        let limits = Limits::default();
        let groups = [Slug::nice(), Slug::nice()];
        let mut events = Vec::new();
        for i in 0..40u32 {
            let id = Slug::nice();
            let def = definition(now, groups[i as usize % 2]);
            let mut batch =
                queue::create_task(None, None, &[], id, def.clone(), now, &limits).expect("create");
            let mut task = Task::defined(id, def, vec![]);
            batch.iter().for_each(|e| task.apply(e));
            let mut step = |task: &mut Task, evs: Vec<QueueEvent>| {
                evs.iter().for_each(|e| task.apply(e));
                batch.extend(evs);
            };
            if i % 4 >= 1 {
                let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).expect("claim");
                step(&mut task, claimed);
            }
            let artifact = queue::Artifact {
                name: format!("public/{i}"),
                storage: queue::ArtifactStorage::Reference {
                    url: "https://example.com".into(),
                },
                content_type: "text/plain".into(),
                expires: now.plus(HOUR),
                present: true,
            };
            if i % 4 == 3 {
                let created = queue::create_artifact(Some(&task), 0, None, artifact.clone(), now)
                    .expect("artifact");
                step(&mut task, created);
            }
            if i % 4 >= 2 {
                let reason = if i % 8 == 2 {
                    ReasonResolved::WorkerShutdown
                } else {
                    ReasonResolved::Completed
                };
                let done = queue::report(&task, 0, reason, now).expect("report");
                step(&mut task, done);
            }
            if i % 4 == 3 {
                // a dependent defined, then the artifact and the task expire: the dependency
                // record of a task defined in the same fold goes too
                let mut dependent = definition(now, groups[0]);
                dependent.dependencies = vec![id];
                let found = queue::DependencyState {
                    resolution: task.resolution(),
                    expires: task.definition.expires,
                };
                let view = [queue::DependencyView {
                    task_id: id,
                    found: Some(found),
                }];
                let b =
                    queue::create_task(None, None, &view, Slug::nice(), dependent, now, &limits)
                        .expect("dependent");
                batch.extend(b);
                batch.extend(queue::expire_artifact(id, 0, &artifact, artifact.expires).unwrap());
                let gone = queue::expire_task(&task, task.definition.expires).unwrap();
                assert_eq!(gone.len(), 1);
                batch.extend(gone);
            }
            events.extend(batch);
        }
        events.into_iter().map(numbered(now)).collect()
    }

    /// Wraps events in envelopes at `now`, numbering each stream's 1, 2, 3, ... in order.
    fn numbered(now: Millis) -> impl FnMut(QueueEvent) -> Envelope<QueueEvent> {
        let mut seqs: HashMap<String, u64> = HashMap::new();
        move |payload| {
            let stream_id = payload.stream().id();
            let seq = seqs.entry(stream_id.clone()).or_insert(0);
            *seq += 1;
            Envelope {
                event_id: EventId::new(),
                stream_id,
                sequence: *seq,
                time: now,
                actor: Actor {
                    client_id: "c".into(),
                    request_id: None,
                },
                causation_id: None,
                writer_epoch: 1,
                payload,
            }
        }
    }

    fn contents(db: &DB) -> Vec<(&'static str, Rows)> {
        keys::ALL_CFS
            .iter()
            .map(|name| {
                let rows = db
                    .iterator_cf(cf(db, name).unwrap(), IteratorMode::Start)
                    .map(|r| {
                        let (k, v) = r.unwrap();
                        (k.to_vec(), v.to_vec())
                    })
                    .collect();
                (*name, rows)
            })
            .collect()
    }

    /// A view in a database at `path` that folded `envs` one event per batch, as the live
    /// engine may.
    fn fold_one_by_one(path: &std::path::Path, envs: &[Envelope<QueueEvent>]) -> QueueView {
        let view = QueueView::new(crate::store::open(path).unwrap())
            .unwrap()
            .with_stream_index();
        for (i, env) in envs.iter().enumerate() {
            let i = i as u64;
            view.apply("c", "t", 0, &[i], i + 1, std::slice::from_ref(env))
                .unwrap();
        }
        view
    }

    /// A task's run index entries follow its state at the end of each fold: a life folded
    /// in one batch writes nothing to the pending queue, claims or timers; the same life
    /// folded a step per batch leaves exactly the entries of each step's state.
    #[test]
    fn run_indexes_follow_the_state_at_the_end_of_each_fold() {
        let now = Millis::now();
        let limits = Limits::default();
        let id = Slug::nice();
        let def = definition(now, id);
        let created = queue::create_task(None, None, &[], id, def.clone(), now, &limits).unwrap();
        let mut task = Task::defined(id, def.clone(), vec![]);
        created.iter().for_each(|e| task.apply(e));
        let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
        claimed.iter().for_each(|e| task.apply(e));
        let taken_until = task.last_run().unwrap().taken_until.unwrap();
        let done = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
        let mut envelope = numbered(now);
        let steps: Vec<Vec<Envelope<QueueEvent>>> = [created, claimed, done]
            .into_iter()
            .map(|evs| evs.into_iter().map(&mut envelope).collect())
            .collect();
        let index_cfs = [keys::CF_PENDING, keys::CF_CLAIMS, keys::CF_TIMERS];
        let dir = tempfile::tempdir().unwrap();

        // the whole life in one fold: no write to any run index
        let view = QueueView::new(crate::store::open(&dir.path().join("one")).unwrap()).unwrap();
        let all: Vec<_> = steps.concat();
        let offsets: Vec<u64> = (0..all.len() as u64).collect();
        let folded = view
            .fold_batch("c", "t", 0, &offsets, all.len() as u64, &all, None)
            .unwrap();
        for name in index_cfs {
            let writes = &folded.hashed[folded_slot(name)];
            assert!(writes.is_empty(), "{name}: {} writes", writes.len());
        }

        // a step per fold: each index holds the entries of the step's state
        let view = QueueView::new(crate::store::open(&dir.path().join("steps")).unwrap()).unwrap();
        let queue = def.task_queue_id.as_str();
        let deadline = keys::timer(def.deadline, TimerKind::Deadline, &id, 0);
        let expected: [[Vec<Vec<u8>>; 3]; 3] = [
            [
                vec![keys::pending(queue, def.priority.rank(), now, &id, 0)],
                vec![],
                vec![deadline.clone()],
            ],
            [vec![], vec![keys::claim(queue, &id, 0)], {
                let mut t = vec![
                    deadline.clone(),
                    keys::timer(taken_until, TimerKind::ClaimExpiry, &id, 0),
                ];
                t.sort();
                t
            }],
            [vec![], vec![], vec![]],
        ];
        let mut offset = 0;
        for (step, want) in steps.iter().zip(expected) {
            let offsets: Vec<u64> = (offset..offset + step.len() as u64).collect();
            offset += step.len() as u64;
            view.apply("c", "t", 0, &offsets, offset, step).unwrap();
            for (name, want) in index_cfs.iter().zip(want) {
                let have: Vec<Vec<u8>> = view
                    .db()
                    .iterator_cf(cf(view.db(), name).unwrap(), IteratorMode::Start)
                    .map(|r| r.unwrap().0.to_vec())
                    .collect();
                assert_eq!(have, want, "{name} after {offset} events");
                let mirrored: Vec<Vec<u8>> =
                    view.mirror.read().unwrap()[name].keys().cloned().collect();
                assert_eq!(mirrored, want, "{name} mirrored after {offset} events");
            }
        }
    }

    /// `folded_slot` names each column family's place in `FOLDED_CFS` (the two lists are
    /// kept by hand).
    #[test]
    fn folded_slots_follow_the_folded_column_families() {
        for (i, name) in FOLDED_CFS.iter().enumerate() {
            assert_eq!(folded_slot(name), i, "{name}");
        }
    }

    /// A dropped generation comes back to its taker with its rows, and its map, emptied and
    /// given back, is a later generation's: every generation's map is full-sized from the
    /// start, so none grows by rehashing.
    #[test]
    fn recent_generations_reuse_their_maps() {
        let mut recent = Recent::new();
        let mut evictions = 0;
        for i in 0..(5 * RECENT_ROWS) as u32 {
            let key = i.to_be_bytes().to_vec();
            if let Some(Evicted(slot, mut rows)) = recent.insert(1, key, Some(vec![1])) {
                evictions += 1;
                assert_eq!(slot, 1);
                // the first eviction is the empty generation `previous` started as
                let expected = if evictions == 1 { 0 } else { RECENT_ROWS };
                assert_eq!(rows.len(), expected, "eviction {evictions}");
                rows.clear();
                recent.give_back(Evicted(slot, rows));
            }
            assert!(recent.current[1].capacity() >= RECENT_ROWS, "row {i}");
        }
        assert_eq!(evictions, 4);
        assert!(recent
            .get(1, &(5 * RECENT_ROWS as u32 - 1).to_be_bytes())
            .is_some());
        assert_eq!(recent.get(1, &0u32.to_be_bytes()), None);
    }

    /// Large rows drop a generation by their bytes, long before its row count: the cache
    /// holds at most twice `RECENT_BYTES` (plus one row) per column family.
    #[test]
    fn recent_rows_are_bounded_by_bytes() {
        // the row count must not be what drops the generations here
        const { assert!(RECENT_ROWS > 5) };
        let mut recent = Recent::default();
        let row = |i: u8| (vec![i], Some(vec![i; RECENT_BYTES / 2 + 1]));
        for i in 0..5 {
            let (key, value) = row(i);
            recent.insert(0, key, value);
            let held: usize = [&recent.current[0], &recent.previous[0]]
                .iter()
                .flat_map(|m| m.values())
                .map(|v| v.as_ref().map_or(0, |b| b.len()))
                .sum();
            assert!(
                held <= 2 * RECENT_BYTES + RECENT_BYTES / 2 + 1,
                "{held} bytes held"
            );
        }
        // rows 0 and 1 went with the first generation dropped; 2..5 are held
        assert_eq!(recent.get(0, &[0]), None);
        assert_eq!(recent.get(0, &[1]), None);
        for i in 2..5 {
            assert_eq!(
                recent.get(0, &[i]).unwrap().unwrap().len(),
                RECENT_BYTES / 2 + 1
            );
        }
    }

    /// The recent rows a live view reads instead of the database are the database's rows:
    /// after every fold, every task and every stream's sequence read through the view equal
    /// those read from the database directly (expired tasks included, and generations
    /// dropped, since tests keep only a handful of rows per generation); at the end, every
    /// row held equals the database's.
    #[test]
    fn recent_rows_are_the_database_rows() {
        let envs = workload(Millis::now());
        let dir = tempfile::tempdir().unwrap();
        let view = QueueView::new(crate::store::open(dir.path()).unwrap()).unwrap();
        let tasks: BTreeSet<TaskId> = envs
            .iter()
            .filter_map(|e| match &e.payload {
                QueueEvent::TaskDefined { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .collect();
        let streams: BTreeSet<&str> = envs.iter().map(|e| e.stream_id.as_str()).collect();
        let mut held = 0;
        for (i, env) in envs.iter().enumerate() {
            let i = i as u64;
            view.apply("c", "t", 0, &[i], i + 1, std::slice::from_ref(env))
                .unwrap();
            let recent = view.recent.as_ref().unwrap().lock().unwrap();
            held = held.max(recent.current[0].len() + recent.previous[0].len());
            drop(recent);
            for id in &tasks {
                let direct: Option<Task> = get(view.db(), keys::CF_TASKS, &keys::task(id)).unwrap();
                assert_eq!(view.task(id).unwrap(), direct, "task {id} after event {i}");
            }
            for stream in &streams {
                let direct = view
                    .db()
                    .get_cf(cf(view.db(), keys::CF_STREAMS).unwrap(), stream.as_bytes())
                    .unwrap()
                    .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
                assert_eq!(view.stream_sequence(stream).unwrap(), direct);
            }
        }
        // and every row held, of each column family, is the database's
        let recent = view.recent.as_ref().unwrap().lock().unwrap();
        let mut checked = [0; RECENT.len()];
        for (slot, cf_name) in RECENT.iter().enumerate() {
            let current = recent.current[slot].iter();
            // a row of the older generation written again since is read from the newer one
            let previous = recent.previous[slot]
                .iter()
                .filter(|(key, _)| !recent.current[slot].contains_key(*key));
            for (key, value) in current.chain(previous) {
                let direct = view
                    .db()
                    .get_cf(cf(view.db(), cf_name).unwrap(), key)
                    .unwrap();
                assert_eq!(value.as_deref(), direct.as_deref(), "{cf_name} row");
                checked[slot] += 1;
            }
        }
        drop(recent);
        assert!(checked.iter().all(|n| *n > 0), "rows checked: {checked:?}");
        assert!(held > RECENT_ROWS, "the test never dropped a generation");
        assert!(
            tasks.iter().any(|id| view.task(id).unwrap().is_none()),
            "no task expired"
        );
    }

    /// A whole log folded at once (a rebuild: writes coalesced per key, deletes of keys put
    /// within the fold dropped) leaves exactly the state of folding it one event at a time.
    #[test]
    fn one_fold_of_everything_equals_a_fold_per_event() {
        let now = Millis::now();
        let envs = workload(now);
        let offsets: Vec<u64> = (0..envs.len() as u64).collect();
        let dir = tempfile::tempdir().unwrap();
        let one_by_one = fold_one_by_one(&dir.path().join("a"), &envs);
        let at_once = QueueView::new(crate::store::open(&dir.path().join("b")).unwrap())
            .unwrap()
            .with_stream_index()
            .for_rebuild();
        at_once
            .apply("c", "t", 0, &offsets, envs.len() as u64, &envs)
            .unwrap();
        at_once.flush().unwrap();
        let (a, b) = (contents(one_by_one.db()), contents(at_once.db()));
        assert_eq!(a, b);
        let rows = |name: &str| a.iter().find(|(n, _)| *n == name).unwrap().1.len();
        // 10 pending, 10 running (+5 retried after worker-shutdown, pending again), 10
        // dependents pending (their dependency completed, then expired)
        assert_eq!(rows(keys::CF_PENDING), 25);
        assert_eq!(rows(keys::CF_CLAIMS), 10);
        // the expired tasks left no artifacts, dependency records or expiry entries
        assert_eq!(rows(keys::CF_ARTIFACTS), 0);
        assert_eq!(rows(keys::CF_DEPENDENTS), 0);
        assert_eq!(rows(keys::CF_TASKS), 40 + 10 - 10);
        assert_eq!(rows(keys::CF_EXPIRIES), 40 + 2);
        assert!(rows(keys::CF_LOG_INDEX) == envs.len());
        // re-applying the same events changes nothing
        at_once
            .apply("c", "t", 0, &offsets, envs.len() as u64, &envs)
            .unwrap();
        assert_eq!(contents(at_once.db()), b);
        // the mirror agrees with the database
        let mirror = at_once.mirror.read().unwrap();
        assert_eq!(mirror[keys::CF_PENDING].len(), 25);
        assert_eq!(mirror[keys::CF_CLAIMS].len(), 10);
        drop(mirror);
        // per task queue, counted in place as the scan lists them, and all of them in all
        let queues: std::collections::BTreeSet<String> = envs
            .iter()
            .filter_map(|e| match &e.payload {
                QueueEvent::TaskDefined { definition, .. } => {
                    Some(definition.task_queue_id.as_str().to_string())
                }
                _ => None,
            })
            .collect();
        for (name, all) in [(keys::CF_PENDING, 25), (keys::CF_CLAIMS, 10)] {
            let mut total = 0;
            for q in &queues {
                let n = at_once.count(name, q).unwrap();
                let listed = at_once.scan(name, &keys::queue_prefix(q), None, usize::MAX);
                assert_eq!(n, listed.unwrap().len(), "{name} of {q}");
                total += n;
            }
            assert_eq!(total, all, "{name} over {} queues", queues.len());
        }
    }

    /// A rebuild folds each batch through the previous one's writes before they reach the
    /// database: batch by batch, every fold done before its predecessor's write, leaves the
    /// state of folding one event at a time (expiries included, which scan by prefix).
    #[test]
    fn folding_through_an_unwritten_batch_equals_a_fold_per_event() {
        let now = Millis::now();
        let envs = workload(now);
        let dir = tempfile::tempdir().unwrap();
        let one_by_one = fold_one_by_one(&dir.path().join("a"), &envs);
        let expected = contents(one_by_one.db());
        for size in [1, 3, 17, 64] {
            let view = QueueView::new(
                crate::store::open(&dir.path().join(format!("overlap-{size}"))).unwrap(),
            )
            .unwrap()
            .with_stream_index()
            .for_rebuild();
            let mut unwritten: Option<Folded> = None;
            let mut start = 0;
            for chunk in envs.chunks(size) {
                let offsets: Vec<u64> = (start..start + chunk.len() as u64).collect();
                start += chunk.len() as u64;
                let folded = view
                    .fold_batch("c", "t", 0, &offsets, start, chunk, unwritten.as_ref())
                    .unwrap();
                if let Some(previous) = unwritten.take() {
                    view.write_folded(&previous).unwrap();
                }
                unwritten = Some(folded);
            }
            view.write_folded(&unwritten.unwrap()).unwrap();
            view.flush().unwrap();
            assert_eq!(contents(view.db()), expected, "batches of {size}");
            let mirror = view.mirror.read().unwrap();
            assert_eq!(mirror[keys::CF_PENDING].len(), 25, "batches of {size}");
            assert_eq!(mirror[keys::CF_CLAIMS].len(), 10, "batches of {size}");
        }
    }
}
