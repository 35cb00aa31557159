//! The one RocksDB instance: the embedded log and every projection, in column families.

use crate::keys;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};
use std::path::Path;
use std::sync::Arc;
use taskledger_core::codec;
use taskledger_core::time::Millis;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("codec: {0}")]
    Codec(#[from] taskledger_core::codec::CodecError),
    #[error("missing column family {0}")]
    MissingCf(&'static str),
    #[error("log: {0}")]
    Log(#[from] taskledger_core::log::LogError),
}

/// Opens (or creates) the database under `dir`: a server's, or the scratch database a rebuild
/// (`replay`) fills from offset zero.
pub fn open(dir: &Path) -> Result<Arc<DB>, StoreError> {
    open_limited(dir, None)
}

/// `open`, with flushes and compactions writing at most `background_writes` bytes a second
/// (`None`: as fast as the disk takes them), in 10 ms slices, so that a flush does not fill
/// the disk's queue and cache at once and every WAL sync behind it (each group commit's)
/// waits. Measured in BENCHMARKS.md (seventeenth session): it helped while this machine's
/// disk was slow and made no difference while it was not, so `serve` leaves it off unless
/// asked (`--background-write-mb`).
pub fn open_limited(dir: &Path, background_writes: Option<i64>) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    // flushes and compactions hand their files to the disk a megabyte at a time instead of
    // leaving the kernel a burst of dirty pages to write back at once, which the WAL's sync,
    // and the whole machine, then waited behind (BENCHMARKS.md, sixteenth session)
    opts.set_bytes_per_sync(1 << 20);
    if let Some(rate) = background_writes {
        // refilled every 10 ms, fairness 10 (flushes before compactions)
        opts.set_ratelimiter(rate, 10_000, 10);
    }
    // one block cache for every column family; bloom filters make point lookups of absent
    // keys (new tasks, new streams) cheap instead of probing every level
    let cache = Cache::new_lru_cache(256 << 20);
    let cfs = keys::ALL_CFS.iter().map(|name| {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        let mut cf = Options::default();
        let memtable = write_buffer_size(name);
        cf.set_write_buffer_size(memtable);
        if memtable == SMALL_MEMTABLE {
            // flushed four at a time: L0 files, and so compactions, as large as 16 MB
            // memtables would make
            cf.set_max_write_buffer_number(6);
            cf.set_min_write_buffer_number_to_merge(4);
        }
        cf.set_block_based_table_factory(&table);
        cf.set_memtable_prefix_bloom_ratio(0.02);
        cf.set_memtable_whole_key_filtering(true);
        // LZ4 on every level: flushes and compactions write about half the bytes (the
        // envelopes' and task rows' field names, queue ids and JSON text repeat), for a few
        // percent of a core; files written before keep their own (no) compression
        cf.set_compression_type(DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(*name, cf)
    });
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

/// A column family's memtable size. The log's keys only grow, so its memtable is appended at
/// its end; a projection's keys (task ids, stream ids) land all over its memtable's skip list,
/// and each insert searches it from the top, a cache miss per level. Small memtables keep
/// that search in the CPU's caches: the queue's lifecycle spent about a quarter of the
/// server's CPU in memtables with 32 MB ones, and 4 MB ones cost 6-17 % less CPU per task; a
/// rebuild, with 128 MB ones before, became 13-34 % faster (BENCHMARKS.md). Flushing them one
/// by one made five times as many compactions in a 90 s run, so they are flushed four at a
/// time.
fn write_buffer_size(cf_name: &str) -> usize {
    match cf_name {
        keys::CF_LOG | keys::CF_LOG_CHAIN => 32 << 20,
        _ => SMALL_MEMTABLE,
    }
}

const SMALL_MEMTABLE: usize = 4 << 20;

/// Opens the database under `primary` read-only as a secondary instance (its own state in
/// `secondary`), so tools can read beside a running server; works on a stopped one too. Opens
/// the column families the database has: one written by an older taskledger lacks those of
/// later projections (a secondary cannot create them), which readers then find missing.
pub fn open_secondary(primary: &Path, secondary: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.set_max_open_files(-1);
    let present = DB::list_cf(&opts, primary)?;
    let cfs = keys::ALL_CFS
        .iter()
        .copied()
        .filter(|name| present.iter().any(|p| p == name));
    let db = DB::open_cf_as_secondary(&opts, primary, secondary, cfs)?;
    db.try_catch_up_with_primary()?;
    Ok(Arc::new(db))
}

/// Records `identity`, the log this process folds (the embedded one, or Kafka topics under a
/// prefix), the first time a database is served, and compares it afterwards: the log the
/// database was served from before, when it is another. An offset into one log names other
/// events in another, so projections folded from one must not go on from the other. A
/// database served before this record existed takes the identity it is served with now.
pub fn log_identity(db: &DB, identity: &str) -> Result<Option<String>, StoreError> {
    let meta = cf(db, keys::CF_META)?;
    match db.get_cf(meta, keys::LOG_IDENTITY)? {
        Some(stored) if stored == identity.as_bytes() => Ok(None),
        Some(stored) => Ok(Some(String::from_utf8_lossy(&stored).into_owned())),
        None => {
            db.put_cf(meta, keys::LOG_IDENTITY, identity.as_bytes())?;
            Ok(None)
        }
    }
}

/// The big-endian u64 at `key` of `cf_name` (a stream's last sequence, a consumed offset), 0
/// when there is none.
pub(crate) fn read_u64(db: &DB, cf_name: &'static str, key: &[u8]) -> Result<u64, StoreError> {
    Ok(db
        .get_pinned_cf(cf(db, cf_name)?, key)?
        .map(|b| u64::from_be_bytes(b.as_ref().try_into().unwrap_or([0; 8])))
        .unwrap_or(0))
}

/// An expiry index's entries from the key `start` on, in key order (time, then name), while
/// `due` says yes to their time and at most `limit`. `parse` reads an entry's key and says
/// `None` past the index.
pub(crate) fn scan_expiry_index(
    db: &DB,
    cf_name: &'static str,
    start: &[u8],
    parse: fn(&[u8]) -> Option<(Millis, &str)>,
    due: impl Fn(Millis) -> bool,
    limit: usize,
) -> Result<Vec<(Millis, String)>, StoreError> {
    let mut out = Vec::new();
    for item in db.iterator_cf(
        cf(db, cf_name)?,
        rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
    ) {
        let (k, _) = item?;
        let Some((at, name)) = parse(&k) else {
            break;
        };
        if !due(at) || out.len() == limit {
            break;
        }
        out.push((at, name.to_string()));
    }
    Ok(out)
}

/// One page of a listing: the rows, and the last name taken when more rows remain (a next
/// page may then be empty, as upstream's).
pub type Page<T> = (Vec<T>, Option<String>);

/// The rows of `cf_name` whose keys are `prefix`, a name and a 0 byte (`keys::name_after`),
/// in key order, after the name `after`, that `visible` keeps, at most `limit`, each with its
/// name; and the last name taken when more rows remain.
pub(crate) fn keyset_page<T: serde::de::DeserializeOwned>(
    db: &DB,
    cf_name: &'static str,
    prefix: &[u8],
    after: Option<&str>,
    limit: usize,
    visible: impl Fn(&T) -> bool,
) -> Result<Page<(String, T)>, StoreError> {
    let start = match after {
        // the key just past `after`'s
        Some(last) => {
            let mut k = prefix.to_vec();
            k.extend_from_slice(last.as_bytes());
            k.extend_from_slice(&[0, 0]);
            k
        }
        None => prefix.to_vec(),
    };
    let mut rows: Vec<(String, T)> = Vec::new();
    let iter = db.iterator_cf(
        cf(db, cf_name)?,
        rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
    );
    for item in iter {
        let (k, v) = item?;
        let Some(name) = keys::name_after(&k, prefix) else {
            break;
        };
        if rows.len() == limit {
            let last = rows.last().map(|(n, _)| n.clone());
            return Ok((rows, last));
        }
        let row: T = codec::decode(&v)?;
        if visible(&row) {
            rows.push((name.to_string(), row));
        }
    }
    Ok((rows, None))
}

pub(crate) fn cf<'a>(
    db: &'a DB,
    name: &'static str,
) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingCf(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_keeps_the_identity_of_the_log_it_was_first_served_from() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path()).unwrap();
        assert_eq!(log_identity(&db, "embedded").unwrap(), None);
        assert_eq!(log_identity(&db, "embedded").unwrap(), None);
        assert_eq!(
            log_identity(&db, "Kafka topics taskledger.*").unwrap(),
            Some("embedded".to_string())
        );
        drop(db);
        let db = open(dir.path()).unwrap();
        assert_eq!(
            log_identity(&db, "Kafka topics other.*").unwrap(),
            Some("embedded".to_string())
        );
    }

    /// A database from before a projection existed (no `secrets` column family): the tools'
    /// secondary instance still opens it, and tells the projection is not there.
    #[test]
    fn a_secondary_opens_a_database_without_a_later_projection() {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("db");
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let older = keys::ALL_CFS.iter().filter(|c| **c != keys::CF_SECRETS);
            DB::open_cf(&opts, &primary, older).unwrap();
        }
        let db = open_secondary(&primary, &dir.path().join("secondary")).unwrap();
        assert!(db.cf_handle(keys::CF_LOG).is_some());
        assert!(db.cf_handle(keys::CF_SECRETS).is_none());
        assert!(crate::audit::projection_present(&db, "queue"));
        assert!(!crate::audit::projection_present(&db, "secrets"));
    }
}
