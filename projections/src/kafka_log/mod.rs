//! The Kafka event log (rdkafka): one topic per service, records keyed by stream id, headers
//! carrying the event type, schema version, event id and the writer's epoch.
//!
//! **One writer per partition.** A writer takes a partition by (1) initialising a transactional
//! producer whose `transactional.id` is the partition's, which makes the broker fence any
//! earlier producer of that partition, and (2) appending an `OwnershipTaken` marker with an
//! epoch above every epoch the partition has seen. Every record it appends afterwards is
//! stamped with that epoch and the writer's id. Readers keep an [`EpochIndex`] per partition and
//! drop every record whose stamp is not the owner announced by the last effective marker before
//! it, so even a broker with incomplete transaction isolation cannot let a superseded writer
//! reach a projection. A writer acknowledges an append only once its records are committed and
//! no newer marker precedes them.
//!
//! **Several nodes.** With [`KafkaLog::join_group`], a node writes only the partitions a Kafka
//! consumer group of writers assigns it (the group's consumer never reads; it only takes part
//! in assignments); the engines follow the other partitions' writers and learn where they are
//! from the `node` their ownership marker announced ([`EventLog::writer_address`]).
//!
//! Everything here blocks (librdkafka's transactional calls are synchronous); the `EventLog`
//! methods run it on tokio's blocking pool.

use crate::audit::hex;
use crate::keys;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use taskledger_core::log::{oversized, Appended, Batch, EventLog, LogError, Record, Stored};

mod chain;
mod epochs;
mod group;
mod inner;
mod readers;
#[cfg(test)]
mod tests;

use chain::unhex;
pub use chain::{chain_link, ChainCheck, CHAIN_START};
pub use epochs::{EpochIndex, Owner, Seen};
use group::{left_out, GroupContext};
use inner::{consumer, decode_kept, retire_writer};

/// Header names. Values are UTF-8 text so any Kafka tool can show them.
pub const H_EVENT_TYPE: &str = "taskledger-event-type";
pub const H_SCHEMA: &str = "taskledger-schema-version";
pub const H_EVENT_ID: &str = "taskledger-event-id";
pub const H_EPOCH: &str = "taskledger-epoch";
pub const H_WRITER: &str = "taskledger-writer";
pub const H_MARKER: &str = "taskledger-marker";
/// Hex SHA-256 link of the partition's hash chain (see [`chain_link`]).
pub const H_CHAIN: &str = "taskledger-chain";
/// The key of ownership markers (no stream id starts with `$`).
pub const MARKER_KEY: &str = "$ownership";
const SCHEMA_VERSION: &str = "1";

/// How a node reaches Kafka.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Replaces the `taskledger.` prefix of topic names (`taskledger.queue` -> `<prefix>queue`).
    pub topic_prefix: String,
    /// Partitions of topics this node creates.
    pub partitions: i32,
    /// Replication factor of topics this node creates.
    pub replication: i32,
    /// Use a transactional producer per partition. Off, only the epoch stamps fence a
    /// superseded writer (tests prove that this alone suffices).
    pub transactions: bool,
    /// Names this process in ownership markers.
    pub node: String,
    /// How long a command may wait for the broker before it fails as unavailable.
    pub timeout: Duration,
}

impl KafkaConfig {
    pub fn new(brokers: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.to_string(),
            topic_prefix: "taskledger.".into(),
            partitions: 1,
            replication: 1,
            transactions: true,
            node: format!("pid-{}", std::process::id()),
            timeout: Duration::from_secs(10),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn is_fencing(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

fn log_error(e: KafkaError) -> LogError {
    if is_fencing(&e) {
        LogError::Fenced
    } else {
        unavailable(e)
    }
}

/// A consumer assigned to one partition, positioned at `next`.
struct Reader {
    topic: String,
    partition: u32,
    next: u64,
    consumer: BaseConsumer,
}

/// The owner of one partition in this process.
struct PartitionWriter {
    producer: FutureProducer,
    owner: Owner,
    /// Offset of this writer's last record (or its marker).
    last_own: u64,
    /// The position past the last record readers can see, as far as this writer knows.
    known_end: u64,
    /// The hash-chain link of the partition's last valid event.
    link: [u8; 32],
}

/// What one fetch passed: the valid events, the last offset it saw (valid or not), and each
/// event's chain link header (parallel to `batch.records`).
struct Fetched {
    batch: Batch,
    last_seen: Option<u64>,
    links: Vec<Option<[u8; 32]>>,
}

/// A topic and one of its partitions.
type Partition = (String, u32);

/// The writer of one partition, created on its first append.
type WriterSlot = Arc<Mutex<Option<PartitionWriter>>>;

struct Inner {
    config: KafkaConfig,
    /// Unique per process start: two writers never share a stamp.
    writer_id: String,
    writers: Mutex<HashMap<Partition, WriterSlot>>,
    readers: Mutex<Vec<Reader>>,
    /// Asks for watermarks; never assigned.
    meta: BaseConsumer,
    epochs: Mutex<HashMap<Partition, EpochIndex>>,
    /// Where copies of the epoch indexes are kept between starts (the server's database), if
    /// anywhere: a restart resumes observing each partition where its copy ends.
    store: OnceLock<Arc<rocksdb::DB>>,
    /// Where and when each partition's index was last copied to the store.
    kept: Mutex<HashMap<Partition, (u64, Instant)>>,
    /// In a group of writers, the partitions the group assigned this process (`None`: a
    /// single writer, which writes every partition).
    assigned: Mutex<Option<HashSet<Partition>>>,
    /// The writer group this process joined, if any.
    group: Mutex<Option<String>>,
}

/// The Kafka implementation of [`EventLog`]. Cheap to share behind an `Arc`.
pub struct KafkaLog {
    inner: Arc<Inner>,
}

/// Most idle consumers kept for reuse.
const READER_POOL: usize = 8;
/// The largest record value appended: librdkafka's and Kafka's default `message.max.bytes`
/// (1,000,000) less room for the key, the headers and the batch's framing. A larger record
/// would be refused by the producer after the transaction began, and the partition's writer
/// retired with it.
pub const MAX_RECORD_BYTES: usize = 1_000_000 - 16 * 1024;
/// How long a read waits for records it knows exist before returning what it has.
const READ_PATIENCE: Duration = Duration::from_millis(300);
/// The first byte of a kept epoch index: the layout of what follows (postcard).
const INDEX_FORMAT: u8 = 1;
/// A partition's index is copied to the store once it has moved on by this many positions...
const KEEP_EVERY: u64 = 50_000;
/// ...or by any, this long after the last copy.
const KEEP_AFTER: Duration = Duration::from_secs(1);

impl KafkaLog {
    fn new(config: KafkaConfig) -> Result<KafkaLog, LogError> {
        let writer_id = uuid::Uuid::new_v4().to_string();
        let meta = consumer(&config.brokers, &writer_id)?;
        Ok(KafkaLog {
            inner: Arc::new(Inner {
                writer_id,
                meta,
                config,
                writers: Mutex::new(HashMap::new()),
                readers: Mutex::new(Vec::new()),
                epochs: Mutex::new(HashMap::new()),
                store: OnceLock::new(),
                kept: Mutex::new(HashMap::new()),
                assigned: Mutex::new(None),
                group: Mutex::new(None),
            }),
        })
    }

    /// Keeps copies of the partitions' epoch indexes in `db` (the server's database, beside
    /// the projections' positions), and starts from the copies kept there: a restart then
    /// observes each partition from where its copy ends, not from offset 0. Call it before
    /// anything reads; the read-only tools, which trust no copy, never do.
    pub fn keep_indexes_in(&self, db: Arc<rocksdb::DB>) {
        let _ = self.inner.store.set(db);
    }

    /// Checks every kept copy of the given topics' indexes against the broker (see
    /// `Inner::check_kept`): an error means the topics are not the log the store was built
    /// from. Call it after `keep_indexes_in` and before anything reads.
    pub async fn check_kept_indexes(&self, topics: &[&str]) -> Result<(), LogError> {
        let inner = self.inner.clone();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        blocking(move || {
            let Some(db) = inner.store.get() else {
                return Ok(());
            };
            let meta = crate::store::cf(db, keys::CF_META)
                .map_err(|e| LogError::Corrupt(e.to_string()))?;
            for topic in topics {
                let prefix = keys::kafka_epochs_of(&inner.kafka_topic(&topic));
                let copies = db
                    .iterator_cf(
                        meta,
                        rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
                    )
                    .map_while(Result::ok)
                    .take_while(|(key, _)| key.starts_with(&prefix));
                for (key, copy) in copies {
                    let Ok(tail) = <[u8; 4]>::try_from(&key[prefix.len()..]) else {
                        continue;
                    };
                    let partition = u32::from_be_bytes(tail);
                    if let Some(ix) = decode_kept(&topic, partition, &copy) {
                        inner.check_kept(&topic, partition, &ix)?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Writes the copy of every partition's index that moved on since its last copy, now (a
    /// graceful stop: the next start then reads nothing again).
    pub async fn keep_all_indexes(&self) {
        let inner = self.inner.clone();
        let kept = blocking(move || {
            let partitions: Vec<Partition> = inner
                .epochs
                .lock()
                .expect("epochs lock")
                .keys()
                .cloned()
                .collect();
            for (topic, partition) in partitions {
                inner.keep_index(&topic, partition, true);
            }
            Ok(())
        });
        if let Err(error) = kept.await {
            tracing::warn!(%error, "cannot keep the epoch indexes");
        }
    }

    /// Connects to topics that must exist already (the read-only tools: a wrong prefix is an
    /// error, not a set of new empty topics).
    pub async fn open_existing(config: KafkaConfig, topics: &[&str]) -> Result<KafkaLog, LogError> {
        let log = KafkaLog::new(config)?;
        let inner = log.inner.clone();
        let names: Vec<String> = topics.iter().map(|t| inner.kafka_topic(t)).collect();
        blocking(move || {
            for name in names {
                let md = inner
                    .meta
                    .fetch_metadata(Some(&name), inner.config.timeout)
                    .map_err(unavailable)?;
                let missing = md
                    .topics()
                    .iter()
                    .all(|t| t.name() != name || t.error().is_some() || t.partitions().is_empty());
                if missing {
                    return Err(unavailable(format!("topic {name} does not exist")));
                }
            }
            Ok(())
        })
        .await?;
        Ok(log)
    }

    /// Connects and creates the given topics (taskledger names) if they are missing.
    pub async fn connect(config: KafkaConfig, topics: &[&str]) -> Result<KafkaLog, LogError> {
        let log = KafkaLog::new(config)?;
        let inner = log.inner.clone();
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &inner.config.brokers)
            .create()
            .map_err(unavailable)?;
        let names: Vec<String> = topics.iter().map(|t| inner.kafka_topic(t)).collect();
        // A write counts once a majority of the replicas hold it (2 of 3), so acks=all
        // survives the loss of a broker without acknowledging what only one broker holds.
        let min_insync =
            (inner.config.replication > 1).then(|| (inner.config.replication / 2 + 1).to_string());
        let new: Vec<NewTopic> = names
            .iter()
            .map(|n| {
                let topic = NewTopic::new(
                    n,
                    inner.config.partitions,
                    TopicReplication::Fixed(inner.config.replication),
                );
                match &min_insync {
                    Some(m) => topic.set("min.insync.replicas", m),
                    None => topic,
                }
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(inner.config.timeout));
        let results = tokio::time::timeout(inner.config.timeout, admin.create_topics(&new, &opts))
            .await
            .map_err(|_| unavailable("creating topics timed out"))?
            .map_err(unavailable)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(unavailable(format!("cannot create topic {topic}: {code}")))
                }
            }
        }
        Ok(log)
    }

    /// The Kafka topic a taskledger topic lives in.
    pub fn kafka_topic(&self, topic: &str) -> String {
        self.inner.kafka_topic(topic)
    }

    /// This process's writer id (in its stamps and markers).
    pub fn writer_id(&self) -> &str {
        &self.inner.writer_id
    }

    /// Walks a partition's valid events, checking that each one's chain header follows from
    /// its predecessor (`audit verify` on Kafka): carries the walk `from` on up to the partition's current end, or until `limit` events
    /// were walked in all; stops at the first link that does not follow. Walking on from an
    /// earlier result checks only what came since (the periodic checkpoints).
    pub async fn walk_chain(
        &self,
        topic: &str,
        partition: u32,
        from: ChainCheck,
        limit: u64,
    ) -> Result<ChainCheck, LogError> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        blocking(move || {
            let end = inner.end(&topic, partition)?;
            let mut check = from;
            // a walk that stopped at a slow read would report a shorter chain than the topic
            // holds
            let mut stall = readers::Stall::new();
            while check.broken_at.is_none() && check.events < limit && check.next < end {
                let want = (limit - check.events).min(4096) as usize;
                let fetched = inner.fetch(&topic, partition, check.next, want, end)?;
                if fetched.batch.next <= check.next {
                    if !stall.wait() {
                        return Err(unavailable(format!(
                            "{topic}/{partition}: nothing came back at offset {} within {:?}, \
                             though the partition ends at {end}",
                            check.next,
                            crate::audit::READ_PATIENCE
                        )));
                    }
                    continue;
                }
                stall.moved();
                let mut next = fetched.batch.next;
                for (r, claimed) in fetched.batch.records.iter().zip(&fetched.links) {
                    if check.events == limit {
                        next = r.offset;
                        break;
                    }
                    let expected = chain_link(&check.head, &r.key, &r.value);
                    if *claimed != Some(expected) {
                        check.broken_at = Some(r.offset);
                        return Ok(check);
                    }
                    check.head = expected;
                    check.events += 1;
                }
                check.next = next;
            }
            Ok(check)
        })
        .await
    }

    /// Takes ownership of a partition now rather than at its first append, so projections
    /// that catch up afterwards have already seen the marker.
    pub async fn acquire(&self, topic: &str, partition: u32) -> Result<Owner, LogError> {
        self.acquire_at(topic, partition)
            .await
            .map(|(owner, _)| owner)
    }

    /// `acquire`, and the position a projection must reach before this writer decides: past
    /// its marker, or past its own last append when it already held the partition.
    async fn acquire_at(&self, topic: &str, partition: u32) -> Result<(Owner, u64), LogError> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        blocking(move || {
            let slot = inner.writer_slot(&topic, partition);
            let mut slot = slot.lock().expect("writer slot");
            // under the slot's lock: a revocation either came before (and this refuses) or
            // waits for this and then retires what it took
            if !inner.is_assigned(&topic, partition) {
                return Err(LogError::NotWriter);
            }
            if let Some(held) = slot.as_ref() {
                // still the latest owner? (another writer may have come and gone meanwhile)
                let end = inner.end(&topic, partition)?;
                inner.observe_until(&topic, partition, end)?;
                let latest = inner.with_index(&topic, partition, |ix| ix.max_epoch());
                if latest != held.owner.epoch {
                    retire_writer(slot.take());
                }
            }
            if slot.is_none() {
                *slot = Some(inner.acquire(&topic, partition)?);
            }
            let held = slot.as_ref().expect("just set");
            Ok((held.owner.clone(), held.known_end))
        })
        .await
    }

    /// Joins the consumer group `group` of writers for `topics` (taskledger names): from now
    /// on this process writes only the partitions the group assigns it, and gives a partition
    /// up (its producer retired) the moment the group revokes it. The group's consumer reads
    /// nothing; a thread polls it so assignments and heartbeats flow. A node that stops
    /// polling or dies leaves the group after `session_timeout`, and its partitions move to
    /// the others.
    pub fn join_group(
        &self,
        group: &str,
        topics: &[&str],
        session_timeout: Duration,
    ) -> Result<(), LogError> {
        *self.inner.assigned.lock().expect("assigned lock") = Some(HashSet::new());
        let names: HashMap<String, String> = topics
            .iter()
            .map(|t| (self.inner.kafka_topic(t), t.to_string()))
            .collect();
        let session_ms = session_timeout.as_millis().max(1000);
        let context = GroupContext {
            inner: Arc::downgrade(&self.inner),
            names: names.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.inner.config.brokers)
            .set("group.id", group)
            .set("client.id", &self.inner.config.node)
            .set("partition.assignment.strategy", "roundrobin")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / 4).to_string())
            // also the rebalance timeout: a round waits this long for a member that does not
            // rejoin (a dead one the broker has not expired) before it completes without it
            .set("max.poll.interval.ms", session_ms.to_string())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "latest")
            .set("enable.partition.eof", "false")
            .create_with_context(context)
            .map_err(unavailable)?;
        let kafka_topics: Vec<&str> = names.keys().map(String::as_str).collect();
        consumer.subscribe(&kafka_topics).map_err(unavailable)?;
        *self.inner.group.lock().expect("group lock") = Some(group.to_string());
        let inner = Arc::downgrade(&self.inner);
        let group = group.to_string();
        let partitions = names.len() * self.inner.config.partitions.max(1) as usize;
        // how long this member may hold nothing before it checks whether it was left out
        let starving = 2 * Duration::from_millis(session_ms as u64);
        std::thread::Builder::new()
            .name("kafka-writer-group".into())
            .spawn(move || {
                // a member that stopped polling would hold its partitions without serving
                // rebalances: a panic here exits the process, as a panicked writer does
                let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    // polling serves rebalances; records (none: every assigned partition is
                    // paused) are ignored
                    let mut empty_since: Option<Instant> = None;
                    while let Some(strong) = inner.upgrade() {
                        let holds_nothing = strong
                            .assigned
                            .lock()
                            .expect("assigned lock")
                            .as_ref()
                            .is_some_and(|set| set.is_empty());
                        drop(strong);
                        empty_since =
                            holds_nothing.then(|| empty_since.unwrap_or_else(Instant::now));
                        if empty_since.is_some_and(|t| t.elapsed() >= starving)
                            && left_out(&consumer, &group, partitions)
                        {
                            empty_since = None;
                        }
                        let _ = consumer.poll(Duration::from_millis(100));
                    }
                }));
                if polled.is_err() {
                    crate::exits::exit_after_panic("kafka writer group");
                }
            })
            .map_err(unavailable)?;
        Ok(())
    }

    /// Removes the node whose `--node-url` is `node` from the writer group (every member it
    /// joined with), so its partitions move now rather than when the broker expires it (or
    /// never, on a broker that does not: `kafka_group`). Returns how many members went.
    pub async fn expel(&self, node: &str) -> Result<usize, LogError> {
        let inner = self.inner.clone();
        let node = node.to_string();
        blocking(move || {
            let group = inner
                .group
                .lock()
                .expect("group lock")
                .clone()
                .ok_or(LogError::NotWriter)?;
            let list = inner
                .meta
                .fetch_group_list(Some(&group), inner.config.timeout)
                .map_err(unavailable)?;
            let members: Vec<String> = list
                .groups()
                .iter()
                .filter(|g| g.name() == group)
                .flat_map(|g| g.members())
                .filter(|m| m.client_id() == node)
                .map(|m| m.id().to_string())
                .collect();
            crate::kafka_group::remove_members(
                &inner.config.brokers,
                &group,
                &members,
                inner.config.timeout,
            )
            .map_err(unavailable)
        })
        .await
    }
}

/// A test's slow broker (fail point `kafka-read-short`): a fetch (behind every read, chain
/// walk and observation) comes back with nothing, as when the records it should return have
/// not reached this consumer within its patience.
fn read_comes_back_short() -> bool {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("kafka-read-short", |_| true);
    false
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(format!("log task failed: {e}")))?
}

impl EventLog for KafkaLog {
    fn max_record_bytes(&self) -> Option<usize> {
        Some(MAX_RECORD_BYTES)
    }

    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Appended, LogError> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        blocking(move || inner.append(&topic, partition, records)).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<Batch, LogError> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        blocking(move || {
            let end = inner.end(&topic, partition)?;
            if offset >= end {
                return Ok(Batch {
                    records: vec![],
                    next: offset,
                });
            }
            Ok(inner.fetch(&topic, partition, offset, max, end)?.batch)
        })
        .await
    }

    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        blocking(move || inner.end(&topic, partition)).await
    }

    fn assigned(&self, topic: &str, partition: u32) -> bool {
        self.inner.is_assigned(topic, partition)
    }

    fn holds(&self, topic: &str, partition: u32) -> bool {
        if !self.inner.in_group() {
            // a single writer takes its partition again within its next append
            return true;
        }
        let slot = self.inner.writer_slot(topic, partition);
        let held = match slot.try_lock() {
            Ok(slot) => slot.is_some(),
            // busy appending or being retired: the next append tells
            Err(_) => true,
        };
        held
    }

    async fn acquire(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.acquire_at(topic, partition)
            .await
            .map(|(_, known_end)| known_end)
    }

    fn writer_address(&self, topic: &str, partition: u32) -> Option<String> {
        self.inner.with_index(topic, partition, |ix| {
            let epoch = ix.owner_before(u64::MAX)?.epoch;
            ix.node(epoch).map(str::to_string)
        })
    }
}
