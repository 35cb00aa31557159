//! The embedded event log: records in the `log` column family, appended with a synced write.

use crate::keys;
use crate::store::cf;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::log::{EventLog, LogError, Record, Stored};

/// What a log entry holds besides its position: key, event-type header, encoded envelope.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    event_type: String,
    value: Vec<u8>,
}

pub struct EmbeddedLog {
    db: Arc<DB>,
    /// Next offset per (topic, partition); loaded lazily from the last key.
    ends: Mutex<HashMap<(String, u32), u64>>,
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
        let mut ends = self.ends.lock().expect("log offsets lock");
        if let Some(end) = ends.get(&(topic.to_string(), partition)) {
            return Ok(*end);
        }
        let end = self.stored_end(topic, partition)?;
        ends.insert((topic.to_string(), partition), end);
        Ok(end)
    }

    /// Synchronous append; the async trait method wraps it.
    pub fn append_sync(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<u64, LogError> {
        let first = self.end(topic, partition)?;
        let cf = cf(&self.db, keys::CF_LOG).map_err(unavailable)?;
        let mut batch = WriteBatch::default();
        let n = records.len() as u64;
        for (i, r) in records.into_iter().enumerate() {
            let entry = Entry {
                key: r.key,
                event_type: r.event_type.to_string(),
                value: r.value,
            };
            let bytes = codec::encode(&entry).map_err(unavailable)?;
            batch.put_cf(cf, keys::log_key(topic, partition, first + i as u64), bytes);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(unavailable)?;
        self.ends
            .lock()
            .expect("log offsets lock")
            .insert((topic.to_string(), partition), first + n);
        Ok(first)
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
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item.map_err(unavailable)?;
            if !k.starts_with(&prefix) || out.len() >= max {
                break;
            }
            let entry: Entry = codec::decode(&v).map_err(|e| LogError::Corrupt(e.to_string()))?;
            out.push(Stored {
                partition,
                offset: keys::offset_from_log_key(&k)
                    .ok_or_else(|| LogError::Corrupt("bad log key".into()))?,
                key: entry.key,
                value: entry.value,
            });
        }
        Ok(out)
    }
}

impl EventLog for EmbeddedLog {
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<u64, LogError> {
        self.append_sync(topic, partition, records)
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<Vec<Stored>, LogError> {
        self.read_sync(topic, partition, offset, max)
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.end(topic, partition)
    }
}
