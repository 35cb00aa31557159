//! taskledger-bridge: the log republished to Pulse (AMQP 0-9-1, lapin) in Taskcluster's
//! exchanges, routing keys and bodies (`messages`), with publisher confirms.
//!
//! The bridge tails each topic of the log from its own offsets, folds the task, task-group and
//! pending-artifact state a message needs, publishes a batch, waits until the broker confirmed
//! every message of it, and only then stores the new state and offsets in one RocksDB batch of
//! its own database. Meanwhile the next batch is rendered through the unstored one's changes
//! and published. A crash or a broker restart therefore re-sends at most the two unconfirmed
//! batches: at-least-once, never a loss; duplicates share their message id (= the event id).
//!
//! **Invariant:** no domain rule lives here; the messages are a pure function of events and
//! folded state (`core`'s `apply`).

pub mod messages;
mod publish;
mod render;
mod replay;
mod state;

pub use publish::publish_in_order;
pub use replay::{replay, topic_matches, ReplayFilter};
pub use state::BridgeState;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use publish::{confirmed, publish};
use render::{properties, render, whole_commands};
use rocksdb::WriteBatch;
use state::{offset_key, Changes};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::codec;
use taskledger_core::github::GITHUB_TOPIC;
use taskledger_core::hooks::HOOKS_TOPIC;
use taskledger_core::log::{EventLog, Stored, QUEUE_TOPIC};
use taskledger_core::notify::NOTIFY_TOPIC;
use taskledger_core::worker_manager::WORKER_MANAGER_TOPIC;
use taskledger_projections::audit;
use tokio::sync::watch;

/// Records read (and published) per confirmed batch.
pub(crate) const BATCH: usize = 512;
/// The topics the bridge publishes, in the order it reads them.
pub(crate) const TOPICS: [&str; 6] = [
    QUEUE_TOPIC,
    AUTH_TOPIC,
    WORKER_MANAGER_TOPIC,
    HOOKS_TOPIC,
    NOTIFY_TOPIC,
    GITHUB_TOPIC,
];
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) a message")]
    Nacked,
    #[error("state: {0}")]
    State(#[from] rocksdb::Error),
    #[error("codec: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("log: {0}")]
    Log(#[from] taskledger_core::log::LogError),
    #[error("the Pulse URL is not a valid AMQP URL (amqp://user:password@host:port/vhost)")]
    BadUrl,
}

/// Checks a Pulse URL before any connection: a malformed one is refused with a text that
/// never quotes it (the parser's own error would, password included, in every reconnect's
/// log line).
pub fn check_url(url: &str) -> Result<(), BridgeError> {
    url.parse::<lapin::uri::AMQPUri>()
        .map(drop)
        .map_err(|_| BridgeError::BadUrl)
}

/// Counters for operators (and the tests).
#[derive(Default, Debug)]
pub struct BridgeStats {
    pub published: AtomicU64,
    pub reconnects: AtomicU64,
    /// Events of the log not yet confirmed by the broker, after the last batch.
    pub lag_events: AtomicU64,
    /// Messages published and awaiting the broker's confirm right now.
    pub confirms_pending: AtomicU64,
    /// When the bridge last had nothing left to publish (ms since the epoch; 0: never).
    pub caught_up_at_ms: AtomicI64,
    /// AMQP channels the connected bridge publishes on (0 while disconnected).
    pub channels: AtomicU64,
}

impl BridgeStats {
    /// Seconds the bridge is behind the log: 0 when caught up, else the time since it last was.
    pub fn lag_seconds(&self, now_ms: i64) -> f64 {
        if self.lag_events.load(Ordering::Relaxed) == 0 {
            return 0.0;
        }
        match self.caught_up_at_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => (now_ms - t).max(0) as f64 / 1000.0,
        }
    }

    /// The Prometheus text exposition of these figures.
    pub fn prometheus(&self, now_ms: i64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        metric(
            "taskledger_bridge_published_total",
            "counter",
            "Messages the Pulse bridge published and the broker confirmed.",
            get(&self.published),
        );
        metric(
            "taskledger_bridge_reconnects_total",
            "counter",
            "Times the Pulse bridge reconnected to the broker.",
            get(&self.reconnects),
        );
        metric(
            "taskledger_bridge_lag_events",
            "gauge",
            "Events in the log the Pulse bridge has not had confirmed yet.",
            get(&self.lag_events),
        );
        metric(
            "taskledger_bridge_lag_seconds",
            "gauge",
            "Seconds since the Pulse bridge was last caught up with the log (0 when it is).",
            format!("{:.3}", self.lag_seconds(now_ms)),
        );
        metric(
            "taskledger_bridge_confirms_pending",
            "gauge",
            "Messages published and awaiting the broker's confirm.",
            get(&self.confirms_pending),
        );
        metric(
            "taskledger_bridge_channels",
            "gauge",
            "AMQP channels the Pulse bridge publishes on (0 while disconnected).",
            get(&self.channels),
        );
        out
    }
}

/// Runs the bridge until the process ends: reconnects with backoff, never skips an event.
/// `wake` (the queue engine's commit counter) shortens the idle wait; without it (a
/// standalone bridge on a secondary instance of the server's database) the bridge polls, and
/// calls `refresh` (to catch up with the primary) before each read. With `channels` = 1 the
/// messages reach the broker in log order; more channels (at most 16) spread them by stream:
/// each stream's messages keep their order, messages of different streams (a task and its
/// group, a pool and its workers) may overtake each other, and the broker works on the
/// channels in parallel.
// the bridge's wiring, handed over once by `serve` or `bridge run`
#[allow(clippy::too_many_arguments)]
pub async fn run<L: EventLog>(
    log: Arc<L>,
    refresh: Option<Arc<dyn Fn() + Send + Sync>>,
    state: Arc<BridgeState>,
    url: String,
    channels: usize,
    mut wake: Option<watch::Receiver<u64>>,
    stats: Arc<BridgeStats>,
    skip: bool,
) {
    let mut backoff = Duration::from_millis(100);
    // `skip`: a new bridge starts at the log's end; a fold cut short is finished regardless
    while skip || state.skipping().unwrap_or(false) {
        if let Some(refresh) = &refresh {
            refresh();
        }
        match skip_history(&*log, &state).await {
            Ok(folded) => {
                if folded > 0 {
                    tracing::info!(folded, "pulse bridge: history folded, not published");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "pulse bridge: folding the history failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    backoff = Duration::from_millis(100);
    loop {
        let r = session(
            &*log,
            refresh.as_deref(),
            &state,
            &url,
            channels.clamp(1, 16),
            &mut wake,
            &stats,
            &mut backoff,
        );
        let ended = r.await;
        stats.channels.store(0, Ordering::Relaxed);
        match ended {
            Ok(()) => return,
            Err(e) => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, "pulse bridge: reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection's life: opens its channels, then publishes what the log holds beyond the
/// bridge's position, batch after batch; it returns only when the connection or a publish
/// fails.
// the loop's state (position, wake-up, stats, backoff) is its caller's, lent for the session
#[allow(clippy::too_many_arguments)]
async fn session<L: EventLog>(
    log: &L,
    refresh: Option<&(dyn Fn() + Send + Sync)>,
    state: &BridgeState,
    url: &str,
    n_channels: usize,
    wake: &mut Option<watch::Receiver<u64>>,
    stats: &BridgeStats,
    backoff: &mut Duration,
) -> Result<(), BridgeError> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut channels = Vec::with_capacity(n_channels);
    for _ in 0..n_channels {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    let channel = &channels[0];
    let exchanges = messages::QUEUE_EXCHANGES
        .iter()
        .map(|e| format!("{}{e}", messages::QUEUE_EXCHANGE_PREFIX))
        .chain(
            messages::AUTH_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::AUTH_EXCHANGE_PREFIX)),
        )
        .chain(
            messages::WORKER_MANAGER_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::WORKER_MANAGER_EXCHANGE_PREFIX)),
        )
        .chain(
            messages::HOOKS_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::HOOKS_EXCHANGE_PREFIX)),
        )
        .chain(
            messages::NOTIFY_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::NOTIFY_EXCHANGE_PREFIX)),
        )
        .chain(
            messages::GITHUB_EXCHANGES
                .iter()
                .map(|e| format!("{}{e}", messages::GITHUB_EXCHANGE_PREFIX)),
        );
    for exchange in exchanges {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    tracing::info!(channels = channels.len(), "pulse bridge connected");
    stats
        .channels
        .store(channels.len() as u64, Ordering::Relaxed);
    *backoff = Duration::from_millis(100);
    // confirms a failed session left unawaited are gone with it
    stats.confirms_pending.store(0, Ordering::Relaxed);
    // The batch published last, not stored yet: the next batch of its topic renders through
    // its changes and is published before its confirms are awaited, so the broker has work
    // while the bridge reads, renders and stores. Batches are stored in order, each once its
    // own confirms are in: a failure anywhere ends the session before the batch's offset is
    // stored, and the next session publishes it again.
    let mut in_flight: Option<InFlight> = None;
    loop {
        let mut progressed = false;
        // events of the log this pass did not read
        let mut unread = 0u64;
        if let Some(refresh) = refresh {
            refresh();
        }
        for topic in TOPICS {
            let offset = match &in_flight {
                Some(f) if f.topic == topic => f.next,
                _ => state.offset(topic)?,
            };
            let Some(WholeRead { records, next, end }) = read_whole(log, topic, offset).await?
            else {
                continue;
            };
            progressed = true;
            // a batch renders only through a batch of its own topic
            if let Some(f) = in_flight.take_if(|f| f.topic != topic) {
                f.store(state, stats).await?;
            }
            let parent = in_flight.as_ref().map(|f| f.changes.clone());
            let (changes, outgoing) = render(state, parent, topic, &records)?;
            let items = outgoing.iter().map(|o| {
                (
                    o.message.exchange.as_str(),
                    o.message.routing_key.as_str(),
                    o,
                    properties(o),
                )
            });
            let confirms = publish(&channels, items, &stats.confirms_pending).await?;
            if let Some(previous) = in_flight.take() {
                previous.store(state, stats).await?;
            }
            in_flight = Some(InFlight {
                topic,
                changes: Arc::new(changes),
                confirms,
                next,
                start: offset,
                messages: outgoing.len() as u64,
            });
            unread += end.saturating_sub(next);
        }
        if !progressed {
            if let Some(f) = in_flight.take() {
                // nothing more to publish: store what is out before waiting
                f.store(state, stats).await?;
                continue;
            }
        }
        // not yet confirmed: what is left to read, and the batch awaiting its confirms
        let unconfirmed = in_flight.as_ref().map_or(0, |f| f.next - f.start);
        stats
            .lag_events
            .store(unread + unconfirmed, Ordering::Relaxed);
        // nothing left to publish: only the confirms of what is out may be awaited
        if unread == 0 {
            stats
                .caught_up_at_ms
                .store(taskledger_core::time::Millis::now().0, Ordering::Relaxed);
        }
        if !progressed {
            match wake.as_mut() {
                Some(w) => {
                    let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// One read of a topic, cut after its last whole command.
pub(crate) struct WholeRead {
    pub records: Vec<Stored>,
    /// The offset after `records`: where the next read starts.
    pub next: u64,
    /// The log's end when it was read.
    pub end: u64,
}

/// Reads `topic` from `offset` (at most `BATCH` records); when the log goes on after the
/// read, the events at its end that belong to one command are left for the next read
/// (`whole_commands`: a command's messages render from the state after all its events).
/// `None` when nothing follows `offset`.
pub(crate) async fn read_whole<L: EventLog>(
    log: &L,
    topic: &str,
    offset: u64,
) -> Result<Option<WholeRead>, BridgeError> {
    read_whole_upto(log, topic, offset, BATCH, None).await
}

/// `read_whole` of at most `max` records. With `known_end`, a position the log is known to
/// hold, a read short of it that comes back empty (a slow Kafka broker) is tried again
/// (`audit::read_onward`) rather than taken for the end.
async fn read_whole_upto<L: EventLog>(
    log: &L,
    topic: &str,
    offset: u64,
    max: usize,
    known_end: Option<u64>,
) -> Result<Option<WholeRead>, BridgeError> {
    let read = match known_end {
        Some(end) => {
            let patience = audit::READ_PATIENCE;
            audit::read_onward(log, topic, 0, offset, max, end, patience).await?
        }
        None => log.read(topic, 0, offset, max).await?,
    };
    if read.next <= offset {
        return Ok(None);
    }
    let end = log.end_offset(topic, 0).await?;
    let keep = whole_commands(topic, &read.records, read.next < end)?;
    let mut records = read.records;
    let next = match records.get(keep) {
        Some(first_left) if keep > 0 => {
            let next = first_left.offset;
            records.truncate(keep);
            next
        }
        _ => read.next,
    };
    Ok(Some(WholeRead { records, next, end }))
}

/// Starts a new bridge at the log's present end: folds every topic's history, up to the ends
/// the log has when this starts, into `state`, publishing nothing, so that only events from
/// then on reach Pulse (for a bridge added to a server with history, whose consumers must
/// not see old events as new; `bridge replay` still serves history on request). Only a bridge
/// database created by this process's open that has stored no position is skipped: one that
/// has a position, or that an earlier run created (it may owe the broker everything it could
/// not publish yet), publishes what it has not published. A fold cut short (a crash) is
/// finished by the next `run`, with or without the flag. Returns the events folded.
pub async fn skip_history<L: EventLog>(log: &L, state: &BridgeState) -> Result<u64, BridgeError> {
    let mut fresh = state.created_now;
    for topic in TOPICS {
        fresh &= state.offset(topic)? == 0;
    }
    if !fresh && !state.skipping()? {
        return Ok(0);
    }
    state.set_skipping(true)?;
    // every topic's end first: what is written while the fold runs is published
    let mut ends = Vec::with_capacity(TOPICS.len());
    for topic in TOPICS {
        ends.push(log.end_offset(topic, 0).await?);
    }
    let mut folded = 0;
    for (topic, until) in TOPICS.into_iter().zip(ends) {
        let mut offset = state.offset(topic)?;
        while offset < until {
            let max = usize::try_from(until - offset).map_or(BATCH, |n| n.min(BATCH));
            let Some(read) = read_whole_upto(log, topic, offset, max, Some(until)).await? else {
                break;
            };
            let (changes, _) = render(state, None, topic, &read.records)?;
            store(state, &changes, topic, read.next)?;
            folded += read.next - offset;
            offset = read.next;
        }
    }
    state.set_skipping(false)?;
    Ok(folded)
}

/// A published batch awaiting its confirms.
struct InFlight {
    topic: &'static str,
    changes: Arc<Changes>,
    confirms: Vec<lapin::PublisherConfirm>,
    /// The batch's first offset, and the offset after it.
    start: u64,
    next: u64,
    messages: u64,
}

impl InFlight {
    /// Awaits the batch's confirms, then stores its changes and its topic's offset in one
    /// write.
    async fn store(self, state: &BridgeState, stats: &BridgeStats) -> Result<(), BridgeError> {
        confirmed(self.confirms, &stats.confirms_pending).await?;
        store(state, &self.changes, self.topic, self.next)?;
        stats.published.fetch_add(self.messages, Ordering::Relaxed);
        Ok(())
    }
}

/// Stores a rendered batch's changes and its topic's new offset in one write.
fn store(
    state: &BridgeState,
    changes: &Changes,
    topic: &str,
    next: u64,
) -> Result<(), BridgeError> {
    let mut batch = WriteBatch::default();
    changes.commit(&mut batch)?;
    batch.put(offset_key(topic), next.to_be_bytes());
    state.db.write(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod testing {
    use taskledger_core::ids::Slug;
    use taskledger_core::queue::{JsonText, Metadata, Priority, Requires, TaskDefinition};
    use taskledger_core::time::{Millis, HOUR};

    /// A small task definition for the bridge's tests.
    pub fn definition(now: Millis) -> TaskDefinition {
        TaskDefinition {
            task_queue_id: "prov/wt".parse().unwrap(),
            scheduler_id: "-".into(),
            project_id: "none".into(),
            task_group_id: Slug::nice(),
            dependencies: vec![],
            requires: Requires::AllCompleted,
            routes: vec![],
            priority: Priority::Lowest,
            retries: 5,
            created: now,
            deadline: now.plus(HOUR),
            expires: now.plus(2 * HOUR),
            scopes: vec![],
            payload: JsonText("{}".into()),
            metadata: Metadata {
                name: "t".into(),
                description: "d".into(),
                owner: "o@example.com".into(),
                source: "https://example.com".into(),
            },
            tags: JsonText("{}".into()),
            extra: JsonText("{}".into()),
        }
    }
}
