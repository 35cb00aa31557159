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
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use taskledger_core::log::{oversized, Appended, Batch, EventLog, LogError, Record, Stored};

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

/// The link before a partition's first event.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// The hash-chain link of an event after link `prev`: SHA-256 of `prev`, the key's length
/// and bytes, and the value. Offsets are not part of it (a writer does not know them before
/// the broker assigns them); only valid events are links, markers and superseded writers'
/// records are not.
pub fn chain_link(prev: &[u8; 32], key: &str, value: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key.as_bytes());
    ctx.update(value);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The outcome of walking a partition's hash chain; also where a later walk carries on.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainCheck {
    /// Valid events walked (up to the break, if any).
    pub events: u64,
    /// The last verified link.
    pub head: [u8; 32],
    /// The offset of the first event whose link does not follow from its predecessor.
    pub broken_at: Option<u64>,
    /// The offset a walk continuing this one starts from.
    pub next: u64,
}

impl ChainCheck {
    /// Before the partition's first event.
    pub fn start() -> ChainCheck {
        ChainCheck {
            events: 0,
            head: CHAIN_START,
            broken_at: None,
            next: 0,
        }
    }
}

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

/// The writer a record was stamped by: its epoch and its unique id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub epoch: u64,
    pub writer: String,
}

/// What a reader saw at one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// An `OwnershipTaken` marker.
    Marker(Owner),
    /// An event stamped by this writer (`None`: no stamp).
    Event(Option<Owner>),
}

/// The ownership history of one partition, built by observing it in offset order: which
/// markers took effect (an epoch above every earlier effective one) and how far it has been
/// observed. An event is valid exactly when its stamp is the owner of the last effective
/// marker before it — a deterministic rule every reader applies alike.
#[derive(Debug, Default)]
pub struct EpochIndex {
    markers: BTreeMap<u64, Owner>,
    /// Every position below this has been observed.
    scanned: u64,
}

impl EpochIndex {
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// The owner in force just before `offset`.
    pub fn owner_before(&self, offset: u64) -> Option<&Owner> {
        self.markers.range(..offset).next_back().map(|(_, o)| o)
    }

    /// The highest epoch that took effect.
    pub fn max_epoch(&self) -> u64 {
        self.markers.values().next_back().map_or(0, |o| o.epoch)
    }

    /// Records what is at `offset` and says whether it is a valid event. Positions must be
    /// observed in increasing order the first time; observing one again is harmless.
    pub fn observe(&mut self, offset: u64, seen: &Seen) -> bool {
        if offset >= self.scanned {
            self.scanned = offset + 1;
            if let Seen::Marker(owner) = seen {
                if owner.epoch > self.max_epoch() {
                    self.markers.insert(offset, owner.clone());
                }
                return false;
            }
        }
        match seen {
            Seen::Marker(_) => false,
            Seen::Event(stamp) => stamp.is_some() && stamp.as_ref() == self.owner_before(offset),
        }
    }

    /// Notes that positions below `next` hold nothing a reader can see (transaction markers).
    pub fn skip_to(&mut self, next: u64) {
        self.scanned = self.scanned.max(next);
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
    /// The offset and claimed chain link of each partition's last valid event seen.
    links: Mutex<HashMap<Partition, (u64, [u8; 32])>>,
    /// In a group of writers, the partitions the group assigned this process (`None`: a
    /// single writer, which writes every partition).
    assigned: Mutex<Option<HashSet<Partition>>>,
    /// The `node` each ownership marker announced, by partition and epoch.
    nodes: Mutex<HashMap<(String, u32, u64), String>>,
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
                links: Mutex::new(HashMap::new()),
                assigned: Mutex::new(None),
                nodes: Mutex::new(HashMap::new()),
                group: Mutex::new(None),
            }),
        })
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
            while check.broken_at.is_none() && check.events < limit && check.next < end {
                let want = (limit - check.events).min(4096) as usize;
                let fetched = inner.fetch(&topic, partition, check.next, want, end)?;
                if fetched.batch.next <= check.next {
                    break;
                }
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
            Ok(slot.as_ref().expect("just set").owner.clone())
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

/// Turns the writer group's assignments into this process's partitions to write.
/// A member holding no partition while the group has fewer members than partitions was left
/// out of a rebalance (seen on noida-db after a member was removed: a survivor's rejoin got
/// lost and the other survivor kept everything). It leaves and joins again, which starts a
/// new round; returns whether it did.
fn left_out(consumer: &BaseConsumer<GroupContext>, group: &str, partitions: usize) -> bool {
    let members = match consumer.fetch_group_list(Some(group), Duration::from_secs(5)) {
        Ok(list) => list
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum::<usize>(),
        Err(_) => return false,
    };
    if members >= partitions {
        // more members than partitions: holding nothing is this member's fair share
        return false;
    }
    let topics: Vec<String> = consumer
        .subscription()
        .map(|tpl| {
            let mut names: Vec<String> = tpl
                .elements()
                .iter()
                .map(|e| e.topic().to_string())
                .collect();
            names.sort();
            names.dedup();
            names
        })
        .unwrap_or_default();
    if topics.is_empty() {
        return false;
    }
    tracing::warn!(
        group,
        members,
        partitions,
        "this writer holds no partition while others hold several; joining the group again"
    );
    consumer.unsubscribe();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&refs) {
        tracing::warn!(error = %e, "cannot join the writer group again");
    }
    true
}

struct GroupContext {
    inner: Weak<Inner>,
    /// Kafka topic name -> taskledger topic.
    names: HashMap<String, String>,
}

impl GroupContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<(String, u32)> {
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let topic = self.names.get(e.topic())?;
                Some((topic.clone(), u32::try_from(e.partition()).ok()?))
            })
            .collect()
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Rebalance::Revoke(tpl), Some(inner)) = (rebalance, self.inner.upgrade()) else {
            return;
        };
        for (topic, partition) in self.partitions(tpl) {
            if let Some(set) = inner.assigned.lock().expect("assigned lock").as_mut() {
                set.remove(&(topic.clone(), partition));
            }
            // no append of this process may start under the old ownership any more
            let slot = inner.writer_slot(&topic, partition);
            retire_writer(slot.lock().expect("writer slot").take());
            tracing::info!(
                topic,
                partition,
                node = inner.config.node,
                "the writer group revoked the partition"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Rebalance::Assign(tpl), Some(inner)) = (rebalance, self.inner.upgrade()) else {
            return;
        };
        // the group's consumer only takes part in assignments; it never fetches
        if let Err(e) = consumer.pause(tpl) {
            tracing::warn!(error = %e, "cannot pause the writer group's partitions");
        }
        for (topic, partition) in self.partitions(tpl) {
            tracing::info!(
                topic,
                partition,
                node = inner.config.node,
                "the writer group assigned the partition"
            );
            if let Some(set) = inner.assigned.lock().expect("assigned lock").as_mut() {
                set.insert((topic, partition));
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(format!("log task failed: {e}")))?
}

impl Inner {
    /// Whether this process writes as one node of a group (else it is the single writer).
    fn in_group(&self) -> bool {
        self.assigned.lock().expect("assigned lock").is_some()
    }

    fn is_assigned(&self, topic: &str, partition: u32) -> bool {
        match &*self.assigned.lock().expect("assigned lock") {
            None => true,
            Some(set) => set.contains(&(topic.to_string(), partition)),
        }
    }

    fn kafka_topic(&self, topic: &str) -> String {
        let rest = topic.strip_prefix("taskledger.").unwrap_or(topic);
        format!("{}{rest}", self.config.topic_prefix)
    }

    fn writer_slot(&self, topic: &str, partition: u32) -> Arc<Mutex<Option<PartitionWriter>>> {
        self.writers
            .lock()
            .expect("writers lock")
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// The partition's writer in `slot`, taking the partition first if this process does not
    /// hold it (yet, or any more after a failed append).
    fn owned<'s>(
        &self,
        slot: &'s mut Option<PartitionWriter>,
        topic: &str,
        partition: u32,
    ) -> Result<&'s mut PartitionWriter, LogError> {
        if slot.is_none() {
            // in a group, only the engine's explicit acquisition (after which it folds the log
            // before deciding) may take a partition, never an append on its own
            if self.in_group() {
                return Err(LogError::NotWriter);
            }
            *slot = Some(self.acquire(topic, partition)?);
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// A producer for the partition's writer of `epoch`; transactional with the id
    /// `<topic>-<partition>-<epoch>`, initialised (which fences an earlier producer of that id).
    fn producer(
        &self,
        topic: &str,
        partition: u32,
        epoch: u64,
    ) -> Result<FutureProducer, LogError> {
        let timeout_ms = self.config.timeout.as_millis().to_string();
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // after a commit the broker may answer the next transaction's first request with
            // CONCURRENT_TRANSACTIONS until its markers are written; retry at once, not after
            // the default 100 ms
            .set("retry.backoff.ms", "1")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("transaction.timeout.ms", &timeout_ms);
        if self.config.transactions {
            cfg.set(
                "transactional.id",
                format!("{}-{partition}-{epoch}", self.kafka_topic(topic)),
            );
        }
        let producer: FutureProducer = cfg.create().map_err(unavailable)?;
        if self.config.transactions {
            producer
                .init_transactions(self.config.timeout)
                .map_err(log_error)?;
        }
        Ok(producer)
    }

    /// Produces records to a partition (in one transaction when enabled); their offsets.
    fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: u32,
        records: &[(String, OwnedHeaders, Vec<u8>)],
    ) -> Result<Vec<u64>, LogError> {
        let kafka_topic = self.kafka_topic(topic);
        if self.config.transactions {
            producer.begin_transaction().map_err(log_error)?;
        }
        let sent: Result<Vec<_>, LogError> = records
            .iter()
            .map(|(key, headers, value)| {
                let record = FutureRecord::to(&kafka_topic)
                    .partition(partition as i32)
                    .key(key.as_str())
                    .payload(value.as_slice())
                    .headers(headers.clone());
                producer.send_result(record).map_err(|(e, _)| log_error(e))
            })
            .collect();
        let outcome = sent.and_then(|futures| {
            // deliveries first (each ends within `message.timeout.ms`): committing with records
            // in flight makes librdkafka flush, which waits in polls of 100 ms
            let offsets = futures::executor::block_on(join_all(futures))
                .into_iter()
                .map(|d| match d {
                    Ok(Ok(d)) => Ok(d.offset as u64),
                    Ok(Err((e, _))) => Err(log_error(e)),
                    Err(_) => Err(unavailable("delivery cancelled")),
                })
                .collect::<Result<Vec<u64>, LogError>>()?;
            if self.config.transactions {
                producer
                    .commit_transaction(self.config.timeout)
                    .map_err(log_error)?;
            }
            Ok(offsets)
        });
        if outcome.is_err() && self.config.transactions {
            let _ = producer.abort_transaction(self.config.timeout);
        }
        outcome
    }

    fn stamp(owner: &Owner, headers: OwnedHeaders) -> OwnedHeaders {
        headers
            .insert(Header {
                key: H_EPOCH,
                value: Some(owner.epoch.to_string().as_str()),
            })
            .insert(Header {
                key: H_WRITER,
                value: Some(owner.writer.as_str()),
            })
    }

    /// Takes a partition: fences the current owner at the broker, announces a new epoch, and
    /// checks that the announcement took effect (a concurrent claimant may have won).
    ///
    /// Transactional ids are `<topic>-<partition>-<epoch>`: initialising the current owner's
    /// id fences it (and aborts its open transaction), and the new owner writes under an id of
    /// its own, so no broker's bookkeeping of the aborted transaction can touch its records.
    fn acquire(&self, topic: &str, partition: u32) -> Result<PartitionWriter, LogError> {
        for _ in 0..5 {
            let end = self.end(topic, partition)?;
            self.observe_until(topic, partition, end)?;
            let current = self.with_index(topic, partition, |ix| ix.max_epoch());
            if current > 0 && self.config.transactions {
                retire(self.producer(topic, partition, current)?);
            }
            let epoch = current + 1;
            let producer = self.producer(topic, partition, epoch)?;
            let owner = Owner {
                epoch,
                writer: self.writer_id.clone(),
            };
            let body = serde_json::json!({
                "marker": "OwnershipTaken",
                "epoch": epoch,
                "writer": owner.writer,
                "node": self.config.node,
                "time": chrono::Utc::now().to_rfc3339(),
            })
            .to_string()
            .into_bytes();
            let headers = Self::stamp(
                &owner,
                OwnedHeaders::new().insert(Header {
                    key: H_MARKER,
                    value: Some("ownership-taken"),
                }),
            );
            let offsets = self.produce(
                &producer,
                topic,
                partition,
                &[(MARKER_KEY.to_string(), headers, body)],
            )?;
            let marker = offsets[0];
            self.observe_until(topic, partition, marker + 1)?;
            let took = self.with_index(topic, partition, |ix| {
                ix.owner_before(marker + 1) == Some(&owner)
            });
            if took {
                tracing::info!(topic, partition, epoch, "took ownership of the partition");
                let link = self
                    .links
                    .lock()
                    .expect("links lock")
                    .get(&(topic.to_string(), partition))
                    .map_or(CHAIN_START, |l| l.1);
                return Ok(PartitionWriter {
                    producer,
                    owner,
                    last_own: marker,
                    known_end: marker + 1,
                    link,
                });
            }
            tracing::warn!(
                topic,
                partition,
                epoch,
                "another writer announced the same epoch"
            );
        }
        Err(LogError::Fenced)
    }

    fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Appended, LogError> {
        // refused before the producer sees it, which would otherwise cost the writer its role
        if let Some(refused) = oversized(&records, Some(MAX_RECORD_BYTES)) {
            return Err(LogError::Unavailable(refused.to_string()));
        }
        let slot = self.writer_slot(topic, partition);
        let mut slot = slot.lock().expect("writer slot");
        let writer = self.owned(&mut slot, topic, partition)?;
        let mut link = writer.link;
        let prepared: Vec<(String, OwnedHeaders, Vec<u8>)> = records
            .into_iter()
            .map(|r| {
                link = chain_link(&link, &r.key, &r.value);
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: H_EVENT_TYPE,
                        value: Some(r.event_type),
                    })
                    .insert(Header {
                        key: H_SCHEMA,
                        value: Some(SCHEMA_VERSION),
                    })
                    .insert(Header {
                        key: H_EVENT_ID,
                        value: Some(r.event_id.as_str()),
                    })
                    .insert(Header {
                        key: H_CHAIN,
                        value: Some(hex(&link).as_str()),
                    });
                (r.key, Self::stamp(&writer.owner, headers), r.value)
            })
            .collect();
        let offsets = match self.produce(&writer.producer, topic, partition, &prepared) {
            Ok(o) if !o.is_empty() => o,
            Ok(_) => return Err(LogError::Corrupt("append of no records".into())),
            Err(e) => {
                // the producer may be unusable (fenced, fatal, timed out mid-transaction): the
                // next append takes the partition afresh
                retire_writer(slot.take());
                return Err(e);
            }
        };
        let first = offsets[0];
        let last = *offsets.last().expect("not empty");
        // with transactions each commit leaves one control record after the last record
        let gap = if self.config.transactions { 2 } else { 1 };
        let prior = if first == writer.last_own + gap {
            writer.known_end
        } else {
            // something came between: see what, and whether it superseded us
            let before = self.observe_until(topic, partition, first)?;
            self.observe_until(topic, partition, last + 1)?;
            let ours = self.with_index(topic, partition, |ix| {
                ix.owner_before(first) == Some(&writer.owner)
            });
            if !ours {
                retire_writer(slot.take());
                return Err(LogError::Fenced);
            }
            before.map_or(writer.known_end, |o| o + 1)
        };
        writer.last_own = last;
        writer.known_end = last + 1;
        writer.link = link;
        Ok(Appended {
            prior,
            offsets,
            next: last + 1,
        })
    }

    /// Records the address an ownership marker announced for its epoch.
    fn note_node(&self, topic: &str, partition: u32, epoch: u64, marker: &impl Message) {
        let node = marker
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
            .and_then(|v| v.get("node").and_then(|n| n.as_str()).map(str::to_string));
        if let Some(node) = node {
            self.nodes
                .lock()
                .expect("nodes lock")
                .insert((topic.to_string(), partition, epoch), node);
        }
    }

    fn with_index<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&mut EpochIndex) -> T,
    ) -> T {
        let mut epochs = self.epochs.lock().expect("epochs lock");
        f(epochs.entry((topic.to_string(), partition)).or_default())
    }

    /// The partition's high watermark.
    fn end(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.meta
            .fetch_watermarks(
                &self.kafka_topic(topic),
                partition as i32,
                self.config.timeout,
            )
            .map(|(_, high)| high.max(0) as u64)
            .map_err(unavailable)
    }

    fn new_reader(&self, topic: &str, partition: u32, at: u64) -> Result<Reader, LogError> {
        let mut reader = Reader {
            topic: topic.to_string(),
            partition,
            next: u64::MAX,
            consumer: consumer(&self.config.brokers, &self.writer_id)?,
        };
        self.position(&mut reader, at)?;
        Ok(reader)
    }

    /// Assigns a new reader's consumer its partition at `at` (once: see `take_reader`).
    fn position(&self, reader: &mut Reader, at: u64) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.kafka_topic(&reader.topic),
            reader.partition as i32,
            Offset::Offset(at as i64),
        )
        .map_err(unavailable)?;
        reader.consumer.assign(&tpl).map_err(unavailable)?;
        reader.next = at;
        Ok(())
    }

    /// A reader of the partition positioned at `at`: an idle one already there if any, else a
    /// new one. A reader's consumer is assigned once, never moved: re-assigning a librdkafka
    /// consumer before it has processed the removal of its previous assignment can stop the
    /// same partition twice, and the second stop's reply aborts the process (an assertion in
    /// `rd_kafka_assignment_partition_stopped`; librdkafka issue 5573, which the bundled 2.12.1
    /// has). It happened under broker outages, when polls lag.
    fn take_reader(&self, topic: &str, partition: u32, at: u64) -> Result<Reader, LogError> {
        let found = {
            let mut pool = self.readers.lock().expect("readers lock");
            pool.iter()
                .position(|r| r.topic == topic && r.partition == partition && r.next == at)
                .map(|i| pool.swap_remove(i))
        };
        match found {
            Some(r) => Ok(r),
            None => self.new_reader(topic, partition, at),
        }
    }

    /// Keeps an idle reader for the next read where it stopped; the oldest idle one goes when
    /// the pool is full (its consumer closed on a thread of its own, as closing may wait for
    /// an unreachable broker).
    fn put_reader(&self, reader: Reader) {
        let evicted = {
            let mut pool = self.readers.lock().expect("readers lock");
            pool.push(reader);
            (pool.len() > READER_POOL).then(|| pool.remove(0))
        };
        if let Some(old) = evicted {
            close_apart(old, "kafka-reader-drop");
        }
    }

    /// Observes the partition up to `until` (exclusive), so the index knows every marker
    /// before it; returns the last offset this call saw (none if the index had seen them all).
    fn observe_until(
        &self,
        topic: &str,
        partition: u32,
        until: u64,
    ) -> Result<Option<u64>, LogError> {
        let mut last_seen = None;
        loop {
            let from = self.with_index(topic, partition, |ix| ix.scanned());
            if from >= until {
                return Ok(last_seen);
            }
            let fetched = self.fetch(topic, partition, from, 4096, until)?;
            last_seen = fetched.last_seen.or(last_seen);
            if self.with_index(topic, partition, |ix| ix.scanned()) <= from {
                return Err(unavailable(format!(
                    "{topic}/{partition}: cannot read up to offset {until}"
                )));
            }
        }
    }

    /// Reads from `from`: at most `max` valid events, not past `until`. Classifies everything
    /// it passes with the partition's epoch index.
    fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        until: u64,
    ) -> Result<Fetched, LogError> {
        // markers before `from` must be known to judge what follows
        let scanned = self.with_index(topic, partition, |ix| ix.scanned());
        if scanned < from {
            self.observe_until(topic, partition, from)?;
        }
        let mut reader = self.take_reader(topic, partition, from)?;
        let result = self.poll(&mut reader, from, max, until);
        if result.is_ok() {
            self.put_reader(reader);
        }
        result
    }

    fn poll(
        &self,
        reader: &mut Reader,
        from: u64,
        max: usize,
        until: u64,
    ) -> Result<Fetched, LogError> {
        let kafka_topic = self.kafka_topic(&reader.topic);
        let (topic, partition) = (reader.topic.clone(), reader.partition);
        let mut records = Vec::new();
        let mut last_seen = None;
        let mut links = Vec::new();
        // the last valid event's claimed chain link, recorded for a writer taking over
        let mut last_link = None;
        let mut next = from;
        let mut last_progress = Instant::now();
        let mut overshot = false;
        while records.len() < max && next < until {
            match reader.consumer.poll(Duration::from_millis(10)) {
                Some(Ok(msg)) => {
                    let offset = msg.offset() as u64;
                    if offset < next {
                        // a record read before: no progress, so patience still runs out
                        if last_progress.elapsed() >= READ_PATIENCE {
                            break;
                        }
                        continue;
                    }
                    if offset >= until {
                        // consumed past the bound: the next read must seek
                        overshot = true;
                        break;
                    }
                    let seen = classify(&msg);
                    if let Seen::Marker(owner) = &seen {
                        self.note_node(&topic, partition, owner.epoch, &msg);
                    }
                    let valid = self.with_index(&topic, partition, |ix| ix.observe(offset, &seen));
                    last_seen = Some(offset);
                    next = offset + 1;
                    last_progress = Instant::now();
                    if valid {
                        let link = header(&msg, H_CHAIN).and_then(unhex);
                        if let Some(link) = link {
                            last_link = Some((offset, link));
                        }
                        links.push(link);
                        records.push(Stored {
                            partition,
                            offset,
                            key: msg
                                .key()
                                .map(|k| String::from_utf8_lossy(k).into_owned())
                                .unwrap_or_default(),
                            value: msg.payload().unwrap_or_default().to_vec(),
                        });
                    }
                }
                Some(Err(e)) => return Err(unavailable(e)),
                None => {
                    // past the last visible record: transaction markers may remain, which the
                    // consumer's position moves past
                    let position = reader
                        .consumer
                        .position()
                        .ok()
                        .and_then(|tpl| {
                            tpl.find_partition(&kafka_topic, partition as i32)
                                .and_then(|p| p.offset().to_raw())
                        })
                        .filter(|&p| p >= 0)
                        .map(|p| p as u64)
                        .unwrap_or(next);
                    if position > next {
                        next = position.min(until);
                        self.with_index(&topic, partition, |ix| ix.skip_to(next));
                        continue;
                    }
                    if last_progress.elapsed() >= READ_PATIENCE {
                        break;
                    }
                }
            }
        }
        if let Some((offset, link)) = last_link {
            let mut known = self.links.lock().expect("links lock");
            let last = known.entry((topic, partition)).or_insert((0, CHAIN_START));
            if offset >= last.0 {
                *last = (offset, link);
            }
        }
        reader.next = if overshot { u64::MAX } else { next };
        Ok(Fetched {
            batch: Batch { records, next },
            last_seen,
            links,
        })
    }
}

/// Destroys a producer on a thread of its own: librdkafka's destroy waits for its broker
/// threads, which can take long while the broker is unreachable, and no command should wait
/// for that.
fn retire(producer: FutureProducer) {
    close_apart(producer, "kafka-producer-drop");
}

/// Drops a librdkafka client on a thread named `name`: closing one may wait for an
/// unreachable broker.
fn close_apart(client: impl Send + 'static, name: &str) {
    let _ = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || drop(client));
}

/// Gives up a partition's writer (after a failed append): its producer is retired.
fn retire_writer(writer: Option<PartitionWriter>) {
    if let Some(w) = writer {
        retire(w.producer);
    }
}

/// A read-committed consumer that never joins its group or commits (projections keep their
/// offsets in RocksDB); positions come from `assign`.
fn consumer(brokers: &str, writer_id: &str) -> Result<BaseConsumer, LogError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("taskledger-reader-{writer_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(unavailable)
}

fn header<'a>(msg: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn classify(msg: &impl Message) -> Seen {
    let owner = match (
        header(msg, H_EPOCH).and_then(|e| e.parse().ok()),
        header(msg, H_WRITER),
    ) {
        (Some(epoch), Some(writer)) => Some(Owner {
            epoch,
            writer: writer.to_string(),
        }),
        _ => None,
    };
    match (header(msg, H_MARKER), owner) {
        (Some("ownership-taken"), Some(owner)) => Seen::Marker(owner),
        (_, owner) => Seen::Event(owner),
    }
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

    async fn acquire(&self, topic: &str, partition: u32) -> Result<(), LogError> {
        KafkaLog::acquire(self, topic, partition).await.map(|_| ())
    }

    fn writer_address(&self, topic: &str, partition: u32) -> Option<String> {
        let epoch = self.inner.with_index(topic, partition, |ix| {
            ix.owner_before(u64::MAX).map(|o| o.epoch)
        })?;
        self.inner
            .nodes
            .lock()
            .expect("nodes lock")
            .get(&(topic.to_string(), partition, epoch))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(epoch: u64, writer: &str) -> Owner {
        Owner {
            epoch,
            writer: writer.into(),
        }
    }

    #[test]
    fn events_count_only_under_the_owner_announced_before_them() {
        let mut ix = EpochIndex::default();
        let a = owner(1, "a");
        let b = owner(2, "b");
        assert!(
            !ix.observe(0, &Seen::Event(Some(a.clone()))),
            "no owner yet"
        );
        assert!(!ix.observe(1, &Seen::Marker(a.clone())));
        assert!(ix.observe(2, &Seen::Event(Some(a.clone()))));
        assert!(!ix.observe(3, &Seen::Event(None)), "unstamped");
        assert!(!ix.observe(4, &Seen::Marker(b.clone())));
        assert!(
            !ix.observe(5, &Seen::Event(Some(a.clone()))),
            "a was superseded"
        );
        assert!(ix.observe(6, &Seen::Event(Some(b.clone()))));
        // a marker that does not raise the epoch takes no effect
        assert!(!ix.observe(7, &Seen::Marker(owner(2, "c"))));
        assert!(!ix.observe(8, &Seen::Event(Some(owner(2, "c")))));
        assert!(ix.observe(9, &Seen::Event(Some(b.clone()))));
        // re-observing earlier positions gives the same verdicts
        assert!(ix.observe(2, &Seen::Event(Some(a.clone()))));
        assert!(!ix.observe(5, &Seen::Event(Some(a))));
        assert_eq!(ix.max_epoch(), 2);
        assert_eq!(ix.scanned(), 10);
    }

    /// What lands in a partition: writers take it over (announcing the epoch they believe
    /// comes next, possibly stale) and append, superseded ones included.
    #[derive(Clone, Debug)]
    enum Step {
        /// Writer `w` announces max-known-epoch + 1, where its knowledge lags by `stale`.
        TakeOver { w: u8, stale: u8 },
        /// Writer `w` appends under the last epoch it announced.
        Append { w: u8 },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..4, 0u8..2).prop_map(|(w, stale)| Step::TakeOver { w, stale }),
            (0u8..4).prop_map(|w| Step::Append { w }),
            (0u8..4).prop_map(|w| Step::Append { w }),
        ]
    }

    fn build(steps: &[Step]) -> Vec<Seen> {
        let mut log = Vec::new();
        let mut announced: HashMap<u8, Owner> = HashMap::new();
        let mut max = 0u64;
        for s in steps {
            match *s {
                Step::TakeOver { w, stale } => {
                    let epoch = max.saturating_sub(stale as u64) + 1;
                    max = max.max(epoch);
                    let o = owner(epoch, &format!("w{w}"));
                    announced.insert(w, o.clone());
                    log.push(Seen::Marker(o));
                }
                Step::Append { w } => log.push(Seen::Event(announced.get(&w).cloned())),
            }
        }
        log
    }

    proptest::proptest! {
        /// Readers agree whatever they read first; a valid event's writer owns the partition at
        /// that point (no other writer's marker took effect since its own); and an owner's
        /// appends count until someone takes over.
        #[test]
        fn epochs_fence_superseded_writers(steps in proptest::collection::vec(step(), 1..60), restart in 0usize..60) {
            let log = build(&steps);
            let mut one = EpochIndex::default();
            let verdicts: Vec<bool> = log.iter().enumerate().map(|(i, s)| one.observe(i as u64, s)).collect();

            // a second reader that re-reads from an earlier point gives the same verdicts
            let restart = restart.min(log.len());
            let mut two = EpochIndex::default();
            for (i, s) in log.iter().enumerate() {
                two.observe(i as u64, s);
            }
            for (i, s) in log.iter().enumerate().skip(restart) {
                proptest::prop_assert_eq!(two.observe(i as u64, s), verdicts[i]);
            }

            let mut owner_now: Option<Owner> = None;
            let mut max = 0;
            for (i, s) in log.iter().enumerate() {
                match s {
                    Seen::Marker(o) => {
                        if o.epoch > max {
                            max = o.epoch;
                            owner_now = Some(o.clone());
                        }
                    }
                    Seen::Event(stamp) => {
                        let by_owner = stamp.is_some() && stamp == &owner_now;
                        proptest::prop_assert_eq!(verdicts[i], by_owner, "position {}", i);
                    }
                }
            }
        }
    }
}
