//! The event log abstraction. Implementations live in `projections` (embedded RocksDB, Kafka);
//! nothing in the domain knows which one runs.

use std::future::Future;

/// Topics: one per service (`taskledger.queue`, ...).
pub const QUEUE_TOPIC: &str = "taskledger.queue";

/// A record as the log stores it: key = stream id, value = encoded envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: String,
    /// Event type name, carried as a header so consumers can route without decoding.
    pub event_type: &'static str,
    pub value: Vec<u8>,
}

/// A stored record with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub value: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log unavailable: {0}")]
    Unavailable(String),
    #[error("writer fenced: another writer owns the partition")]
    Fenced,
    #[error("log corrupted: {0}")]
    Corrupt(String),
}

/// An append-only, partitioned log. `append` returns only once the records are durable.
pub trait EventLog: Send + Sync {
    /// Appends records to one partition of a topic, all or nothing; returns the first offset.
    fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// Reads up to `max` records of a partition from `offset` on.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Stored>, LogError>> + Send;

    /// The offset the next append to that partition will get.
    fn end_offset(
        &self,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<u64, LogError>> + Send;
}
