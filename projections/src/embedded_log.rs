//! The embedded event log: records in the `log` column family, appended with a synced write.
//!
//! Each append also writes, in the same batch, the record's link of the partition's hash chain
//! (`log_chain`: SHA-256 of the previous link, the offset and the stored bytes) and its entry in
//! the stream index (`log_index`), so `audit verify` can prove the log untampered and
//! `audit history` can find a stream's events without scanning the log.

use crate::keys;
use crate::store::cf;
use ring::digest;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::log::{Appended, Batch, EventLog, LogError, Record, Stored};

/// What a log entry holds besides its position: key, event-type header, encoded envelope.
/// Borrowed both ways: postcard then writes and reads the envelope as one slice (its length,
/// then the bytes) instead of element by element as it would a `Vec<u8>`, with the same bytes
/// on disk (a `u8` element is one byte).
#[derive(Serialize, Deserialize)]
pub struct Entry<'a> {
    pub key: &'a str,
    pub event_type: &'a str,
    pub value: &'a [u8],
}

fn decode_entry(bytes: &[u8]) -> Result<Entry<'_>, LogError> {
    codec::decode_borrowed(bytes).map_err(|e| LogError::Corrupt(e.to_string()))
}

/// The link of the hash chain before offset 0.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// The chain link of the record stored as `bytes` at `offset` after link `prev`.
pub fn chain_link(prev: &[u8; 32], offset: u64, bytes: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(&offset.to_be_bytes());
    ctx.update(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The stream key of a stored record's bytes (for the index).
pub fn entry_key(bytes: &[u8]) -> Result<String, LogError> {
    Ok(decode_entry(bytes)?.key.to_string())
}

/// Where a partition ends: the next offset and the last chain link.
#[derive(Clone, Copy)]
struct End {
    next: u64,
    link: [u8; 32],
}

pub struct EmbeddedLog {
    db: Arc<DB>,
    /// Per (topic, partition); loaded lazily from the last key.
    ends: Mutex<HashMap<(String, u32), End>>,
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

impl EmbeddedLog {
    pub fn new(db: Arc<DB>) -> EmbeddedLog {
        EmbeddedLog {
            db,
            ends: Mutex::new(HashMap::new()),
        }
    }

    fn stored_end(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let cf = cf(&self.db, keys::CF_LOG).map_err(unavailable)?;
        let prefix = keys::log_prefix(topic, partition);
        let upper = keys::log_key(topic, partition, u64::MAX);
        let mut it = self
            .db
            .iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse));
        match it.next() {
            Some(Ok((k, _))) if k.starts_with(&prefix) => keys::offset_from_log_key(&k)
                .map(|o| o + 1)
                .ok_or_else(|| LogError::Corrupt("bad log key".into())),
            Some(Err(e)) => Err(unavailable(e)),
            _ => Ok(0),
        }
    }

    fn end(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        Ok(self.end_and_link(topic, partition)?.next)
    }

    fn end_and_link(&self, topic: &str, partition: u32) -> Result<End, LogError> {
        let mut ends = self.ends.lock().expect("log offsets lock");
        if let Some(end) = ends.get(&(topic.to_string(), partition)) {
            return Ok(*end);
        }
        let next = self.stored_end(topic, partition)?;
        let link = if next == 0 {
            CHAIN_START
        } else {
            let chain = cf(&self.db, keys::CF_LOG_CHAIN).map_err(unavailable)?;
            match self
                .db
                .get_cf(chain, keys::log_key(topic, partition, next - 1))
                .map_err(unavailable)?
            {
                Some(v) => v
                    .as_slice()
                    .try_into()
                    .map_err(|_| LogError::Corrupt("bad chain link".into()))?,
                None => self.backfill(topic, partition)?,
            }
        };
        let end = End { next, link };
        ends.insert((topic.to_string(), partition), end);
        Ok(end)
    }

    /// Writes the chain and the stream index of a partition written before they existed;
    /// returns the last link.
    fn backfill(&self, topic: &str, partition: u32) -> Result<[u8; 32], LogError> {
        tracing::info!(
            topic,
            partition,
            "building the log's hash chain and stream index"
        );
        let log = cf(&self.db, keys::CF_LOG).map_err(unavailable)?;
        let chain = cf(&self.db, keys::CF_LOG_CHAIN).map_err(unavailable)?;
        let index = cf(&self.db, keys::CF_LOG_INDEX).map_err(unavailable)?;
        let prefix = keys::log_prefix(topic, partition);
        let mut link = CHAIN_START;
        let mut batch = WriteBatch::default();
        for item in self
            .db
            .iterator_cf(log, IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(unavailable)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let offset = keys::offset_from_log_key(&k)
                .ok_or_else(|| LogError::Corrupt("bad log key".into()))?;
            link = chain_link(&link, offset, &v);
            batch.put_cf(chain, &k, link);
            batch.put_cf(
                index,
                keys::log_index(topic, partition, &entry_key(&v)?, offset),
                [],
            );
            if batch.len() >= 4096 {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(unavailable)?;
            }
        }
        self.db.write(batch).map_err(unavailable)?;
        Ok(link)
    }

    /// Synchronous append; the async trait method wraps it.
    pub fn append_sync(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<u64, LogError> {
        let End {
            next: first,
            mut link,
        } = self.end_and_link(topic, partition)?;
        let log = cf(&self.db, keys::CF_LOG).map_err(unavailable)?;
        let chain = cf(&self.db, keys::CF_LOG_CHAIN).map_err(unavailable)?;
        let index = cf(&self.db, keys::CF_LOG_INDEX).map_err(unavailable)?;
        let mut batch = WriteBatch::default();
        let n = records.len() as u64;
        for (i, r) in records.into_iter().enumerate() {
            let offset = first + i as u64;
            batch.put_cf(index, keys::log_index(topic, partition, &r.key, offset), []);
            let entry = Entry {
                key: &r.key,
                event_type: r.event_type,
                value: &r.value,
            };
            let bytes = codec::encode(&entry).map_err(unavailable)?;
            link = chain_link(&link, offset, &bytes);
            let key = keys::log_key(topic, partition, offset);
            batch.put_cf(chain, &key, link);
            batch.put_cf(log, key, bytes);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(unavailable)?;
        self.ends.lock().expect("log offsets lock").insert(
            (topic.to_string(), partition),
            End {
                next: first + n,
                link,
            },
        );
        Ok(first)
    }

    /// The offset the next append will get, read from storage (not the writer's cache), so a
    /// reader beside another process's writer sees it move.
    pub fn end_offset_sync(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.stored_end(topic, partition)
    }

    /// For a log opened as a secondary instance (`store::open_secondary`): see what the
    /// primary wrote since, ends included (a secondary never appends, so the ends it knew
    /// are forgotten and read again). A no-op error on a primary, which is ignored.
    pub fn follow_primary(&self) {
        if self.db.try_catch_up_with_primary().is_ok() {
            self.ends.lock().expect("log offsets lock").clear();
        }
    }

    pub fn read_sync(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<Vec<Stored>, LogError> {
        let cf = cf(&self.db, keys::CF_LOG).map_err(unavailable)?;
        let prefix = keys::log_prefix(topic, partition);
        let start = keys::log_key(topic, partition, offset);
        let mut out = Vec::new();
        // a raw iterator lends each key and value instead of copying them into boxes
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(&start);
        while out.len() < max {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let entry = decode_entry(v)?;
            out.push(Stored {
                partition,
                offset: keys::offset_from_log_key(k)
                    .ok_or_else(|| LogError::Corrupt("bad log key".into()))?,
                key: entry.key.to_string(),
                value: entry.value.to_vec(),
            });
            it.next();
        }
        it.status().map_err(unavailable)?;
        Ok(out)
    }
}

impl EventLog for EmbeddedLog {
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Appended, LogError> {
        let n = records.len();
        let first = self.append_sync(topic, partition, records)?;
        Ok(Appended::consecutive(first, n))
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<Batch, LogError> {
        let records = self.read_sync(topic, partition, offset, max)?;
        let next = records.last().map_or(offset, |r| r.offset + 1);
        Ok(Batch { records, next })
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.end(topic, partition)
    }
}

/// Test support: the embedded log, counting its appends, and failing the first one as a
/// broker that went away would when `fail_first` is set.
#[cfg(test)]
pub(crate) struct Watched {
    pub log: EmbeddedLog,
    pub appends: std::sync::atomic::AtomicUsize,
    pub fail_first: bool,
}

#[cfg(test)]
impl Watched {
    pub fn new(db: Arc<DB>, fail_first: bool) -> Watched {
        Watched {
            log: EmbeddedLog::new(db),
            appends: 0.into(),
            fail_first,
        }
    }
}

#[cfg(test)]
impl EventLog for Watched {
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Appended, LogError> {
        let before = self
            .appends
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail_first && before == 0 {
            return Err(LogError::Unavailable("gone".into()));
        }
        self.log.append(topic, partition, records).await
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<Batch, LogError> {
        self.log.read(topic, partition, offset, max).await
    }
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.log.end_offset(topic, partition).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout entries had on disk before `Entry` borrowed its fields.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct OwnedEntry {
        key: String,
        event_type: String,
        value: Vec<u8>,
    }

    /// A log followed as a secondary instance learns the primary's new end at each
    /// `follow_primary`, not only its records (a reader deciding whether more follows a read
    /// relies on it).
    #[test]
    fn a_secondary_sees_the_primarys_end_move() {
        let dir = tempfile::tempdir().unwrap();
        let primary = EmbeddedLog::new(crate::store::open(&dir.path().join("db")).unwrap());
        let record = |i: u32| Record {
            key: format!("s/{i}"),
            event_type: "T",
            event_id: i.to_string(),
            value: vec![i as u8],
        };
        primary
            .append_sync("t", 0, (0..3).map(record).collect())
            .unwrap();
        let secondary = EmbeddedLog::new(
            crate::store::open_secondary(&dir.path().join("db"), &dir.path().join("sec")).unwrap(),
        );
        assert_eq!(secondary.end("t", 0).unwrap(), 3);
        primary
            .append_sync("t", 0, (3..5).map(record).collect())
            .unwrap();
        secondary.follow_primary();
        assert_eq!(secondary.end("t", 0).unwrap(), 5);
        assert_eq!(secondary.read_sync("t", 0, 3, 10).unwrap().len(), 2);
    }

    /// Entries written before and after the borrowed layout are the same bytes, so logs
    /// written by earlier versions read unchanged and their hash chains still verify.
    #[test]
    fn borrowed_entries_keep_the_bytes_on_disk() {
        let value: Vec<u8> = (0..=255u8).chain(0..44).collect();
        let owned = OwnedEntry {
            key: "task/abc".into(),
            event_type: "TaskDefined".into(),
            value: value.clone(),
        };
        let borrowed = Entry {
            key: "task/abc",
            event_type: "TaskDefined",
            value: &value,
        };
        let old = codec::encode(&owned).unwrap();
        assert_eq!(codec::encode(&borrowed).unwrap(), old);
        let read = decode_entry(&old).unwrap();
        assert_eq!(
            (read.key, read.event_type, read.value),
            ("task/abc", "TaskDefined", &value[..])
        );
        assert_eq!(
            codec::decode::<OwnedEntry>(&codec::encode(&borrowed).unwrap()).unwrap(),
            owned
        );
        assert_eq!(entry_key(&old).unwrap(), "task/abc");
    }
}
