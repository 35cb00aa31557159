//! `Recent`: the rows the last folds wrote, in front of RocksDB's point lookups.

use crate::keys;
use std::collections::HashMap;

/// The column families `Recent` holds: the rows every command and every status read looks up
/// for the tasks just touched (the task, and its stream's last sequence).
pub(super) const RECENT: [&str; 2] = [keys::CF_TASKS, keys::CF_STREAMS];

/// Rows each of `Recent`'s two generations holds per column family before the older is
/// dropped (a handful in tests, so they drop generations too)...
pub(super) const RECENT_ROWS: usize = if cfg!(test) { 8 } else { 32 * 1024 };
/// ...or bytes (keys and rows; a task row is as large as its definition, which may be
/// megabytes), whichever comes first: at most twice this per column family is held.
pub(super) const RECENT_BYTES: usize = 16 << 20;

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
pub(super) struct Recent {
    pub(super) current: [RecentRows; 2],
    pub(super) previous: [RecentRows; 2],
    /// Bytes inserted into each `current` (a key written twice counts twice).
    pub(super) current_bytes: [usize; 2],
    /// An emptied generation's map, kept for the next generation.
    pub(super) spare: [Option<RecentRows>; 2],
}

pub(super) type RecentRows = HashMap<Vec<u8>, Option<bytes::Bytes>>;

/// A generation `Recent` dropped, still holding its rows: emptied by its taker outside the
/// lock, then given back (`Recent::give_back`) to be the next generation's map.
pub(super) struct Evicted(pub(super) usize, pub(super) RecentRows);

impl Recent {
    pub(super) fn slot(cf_name: &str) -> Option<usize> {
        RECENT.iter().position(|c| *c == cf_name)
    }

    /// None: not held here (ask the database). Some(None): deleted.
    pub(super) fn get(&self, slot: usize, key: &[u8]) -> Option<Option<bytes::Bytes>> {
        self.current[slot]
            .get(key)
            .or_else(|| self.previous[slot].get(key))
            .cloned()
    }

    /// Holds `key`'s row; when `current` is full, it becomes `previous` first, and the
    /// generation before is returned, rows and all, for the caller to empty.
    pub(super) fn insert(
        &mut self,
        slot: usize,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> Option<Evicted> {
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
    pub(super) fn give_back(&mut self, Evicted(slot, rows): Evicted) {
        if rows.is_empty() && rows.capacity() >= RECENT_ROWS {
            self.spare[slot] = Some(rows);
        }
    }

    /// Empty, its first generations made at full size.
    pub(super) fn new() -> Recent {
        let sized = || HashMap::with_capacity(RECENT_ROWS);
        Recent {
            current: [sized(), sized()],
            ..Recent::default()
        }
    }

    pub(super) fn clear(&mut self) {
        *self = Recent::new();
    }
}
