//! The event log abstraction. Implementations live in `projections` (embedded RocksDB, Kafka);
//! nothing in the domain knows which one runs.
//!
//! Positions are offsets within a partition. They are increasing but not always consecutive:
//! a Kafka partition holds transaction markers and ownership markers that readers never see, so
//! every consumer carries on from the `next` position a read or an append reports, never from
//! `first + count`.

use std::future::Future;

/// Topics: one per service (`taskledger.queue`, ...).
pub const QUEUE_TOPIC: &str = "taskledger.queue";

/// A record as the log stores it: key = stream id, value = encoded envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: String,
    /// Event type name, carried as a header so consumers can route without decoding.
    pub event_type: &'static str,
    /// The envelope's event id, carried as a header (Kafka) for the same reason.
    pub event_id: String,
    pub value: Vec<u8>,
}

impl Record {
    /// `envelope` as the log stores it: keyed by its stream, its type and id as headers.
    pub fn of<E: serde::Serialize>(
        envelope: &crate::envelope::Envelope<E>,
        event_type: &'static str,
    ) -> Result<Record, crate::codec::CodecError> {
        Ok(Record {
            key: envelope.stream_id.clone(),
            event_type,
            event_id: envelope.event_id.to_string(),
            value: crate::codec::encode(envelope)?,
        })
    }
}

/// A record larger than its log takes (`EventLog::max_record_bytes`); its text is what the
/// refused caller reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "This request would record an event of {bytes} bytes; the event log takes at most {max} \
     bytes per event"
)]
pub struct Oversized {
    pub bytes: usize,
    pub max: usize,
}

/// The largest of `records` when it is larger than `max` allows (none: no limit).
pub fn oversized(records: &[Record], max: Option<usize>) -> Option<Oversized> {
    let max = max?;
    let bytes = records.iter().map(|r| r.value.len()).max()?;
    (bytes > max).then_some(Oversized { bytes, max })
}

/// A stored record with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub value: Vec<u8>,
}

/// What one read returned: the records, and the position to read from next (past the last
/// record returned and past any marker the read skipped). An empty batch whose `next` equals
/// the requested offset means the reader reached the partition's end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub records: Vec<Stored>,
    pub next: u64,
}

/// Where an append landed.
#[derive(Clone, Debug, PartialEq)]
pub struct Appended {
    /// The position just past the last record readers could see before these records. When it
    /// equals where the writer thought the log ended, nobody else's records came in between.
    pub prior: u64,
    /// Each record's offset, in order.
    pub offsets: Vec<u64>,
    /// The position just past the last record.
    pub next: u64,
}

impl Appended {
    /// An append of `count` records at consecutive offsets from `first`.
    pub fn consecutive(first: u64, count: usize) -> Appended {
        Appended {
            prior: first,
            offsets: (first..first + count as u64).collect(),
            next: first + count as u64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log unavailable: {0}")]
    Unavailable(String),
    #[error("writer fenced: another writer owns the partition")]
    Fenced,
    #[error("log corrupted: {0}")]
    Corrupt(String),
    #[error("this node does not write the partition")]
    NotWriter,
}

/// An append-only, partitioned log. `append` returns only once the records are durable (and,
/// on Kafka, known to belong to the partition's current writer epoch).
pub trait EventLog: Send + Sync {
    /// Appends records to one partition of a topic, all or nothing.
    fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Appended, LogError>> + Send;

    /// Reads up to `max` records of a partition from `offset` on.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<Batch, LogError>> + Send;

    /// The position past the partition's last record (an upper bound for `Batch::next`).
    fn end_offset(
        &self,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// The largest record value this log takes, if it has a limit (a Kafka broker refuses
    /// larger messages). Writers refuse a command whose event would exceed it, instead of
    /// failing the whole append (and with it every other command of the write).
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }

    /// Whether this process is meant to write the partition now. A node of a group of writers
    /// writes only the partitions the group assigned it; a log with a single writer always
    /// says yes.
    fn assigned(&self, _topic: &str, _partition: u32) -> bool {
        true
    }

    /// Whether this process still holds the partition it took (a group's revocation, even one
    /// followed at once by the same assignment, drops it, and the engine must take it again).
    fn holds(&self, _topic: &str, _partition: u32) -> bool {
        true
    }

    /// Makes this process the partition's writer before it decides anything: afterwards no
    /// earlier writer can append, so a projection caught up from here on is the whole truth.
    /// Returns the position a projection must have folded before this writer decides (past
    /// its ownership marker, or its own last append). A log with a single writer has nothing
    /// to take, and its reads always reach the end: 0.
    fn acquire(
        &self,
        _topic: &str,
        _partition: u32,
    ) -> impl Future<Output = Result<u64, LogError>> + Send {
        async { Ok(0) }
    }

    /// Where the partition's writer can be reached (the address its ownership announcement
    /// named), as far as this process has read; `None` when it does not know.
    fn writer_address(&self, _topic: &str, _partition: u32) -> Option<String> {
        None
    }
}
