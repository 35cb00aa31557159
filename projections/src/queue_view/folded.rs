//! A fold's writes, per column family, the last per key.

use crate::keys;
use std::collections::{BTreeMap, HashMap};

/// The fold's per-batch maps: hashed with Fx, several times faster than SipHash on these
/// short keys (a rebuild spends much of its fold in them). A batch's keys come from the log
/// and are bounded by the batch, so a slow worst case stays bounded too.
pub(super) type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A write's place: a column family and a key.
pub(super) type Place = (&'static str, Vec<u8>);

/// Keys and values read from a column family, in key order.
pub(super) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// The column families a fold writes, each with a map of its own in `Folded`: a write hashes
/// (or orders) its key alone, a read through a batch looks its key up without copying it,
/// and a batch is sorted one column family at a time. The last `SCANNED` of them are scanned
/// by prefix when a task expires (its dependents and artifacts), so their writes are kept
/// in key order.
pub(super) const FOLDED_CFS: [&str; 14] = [
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
pub(super) const SCANNED: usize = 2;
pub(super) const HASHED: usize = FOLDED_CFS.len() - SCANNED;

/// `cf_name`'s place in `FOLDED_CFS`. Every caller names one of the fold's own column
/// families (constants of this file), so any other name is a bug here, not bad input.
pub(super) fn folded_slot(cf_name: &str) -> usize {
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
pub(super) type Writes = FastMap<Vec<u8>, Option<Vec<u8>>>;
pub(super) type OrderedWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key and what a batch does to it: the value it puts, or `None` for a delete.
pub(super) type KeyWrite<'a> = (&'a Vec<u8>, &'a Option<Vec<u8>>);

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
    pub(super) hashed: [Writes; HASHED],
    /// The `SCANNED` others, in order for prefix scans.
    pub(super) scanned: [OrderedWrites; SCANNED],
}

impl Folded {
    /// Empty, with room for a batch of `events` events: about 1.4 writes per event in a run
    /// of full lifecycles, most of them to streams, expiries and timers.
    pub(super) fn for_events(events: usize) -> Folded {
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

    pub(super) fn set(&mut self, cf_name: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        match folded_slot(cf_name) {
            i if i < HASHED => self.hashed[i].insert(key, value),
            i => self.scanned[i - HASHED].insert(key, value),
        };
    }
    pub(super) fn put(
        &mut self,
        cf_name: &'static str,
        key: impl Into<Vec<u8>>,
        value: impl AsRef<[u8]>,
    ) {
        self.set(cf_name, key.into(), Some(value.as_ref().to_vec()));
    }
    pub(super) fn delete(&mut self, cf_name: &'static str, key: impl Into<Vec<u8>>) {
        self.set(cf_name, key.into(), None);
    }

    /// `key`'s value as written here: None if this batch does not write the key, Some(None)
    /// if it deletes it.
    pub(super) fn get(&self, cf_name: &'static str, key: &[u8]) -> Option<Option<&[u8]>> {
        let found = match folded_slot(cf_name) {
            i if i < HASHED => self.hashed[i].get(key),
            i => self.scanned[i - HASHED].get(key),
        };
        found.map(|v| v.as_deref())
    }

    /// The writes to keys of `cf_name` (one of the scanned column families) that start with
    /// `prefix`.
    pub(super) fn prefixed<'f>(
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
    pub(super) fn in_order(&self) -> impl Iterator<Item = (&'static str, Vec<KeyWrite<'_>>)> {
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
    pub(super) fn into_hashed(
        self,
    ) -> impl Iterator<Item = (&'static str, Vec<u8>, Option<Vec<u8>>)> {
        self.hashed
            .into_iter()
            .enumerate()
            .flat_map(|(i, writes)| writes.into_iter().map(move |(k, v)| (FOLDED_CFS[i], k, v)))
    }
}
