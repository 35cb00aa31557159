//! The `taskledger` binary: CLI wiring only.

/// mimalloc: the system allocator cost a fifth of the CPU under load (perf, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod metrics;
mod worker_cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::access::seal::SealKey;
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::auth::ClientRecord;
use taskledger_core::log::{EventLog, QUEUE_TOPIC};
use taskledger_core::object::OBJECT_TOPIC;
use taskledger_core::queue::Limits;
use taskledger_core::worker_manager::WORKER_MANAGER_TOPIC;
use taskledger_gateways::hawk::Clients;
use taskledger_gateways::AppState;
use taskledger_projections::{
    store, AuthEngine, AuthView, EmbeddedLog, Engine, KafkaConfig, KafkaLog, ObjectEngine,
    ObjectView, QueueView, WorkerManagerEngine, WorkerManagerView,
};

#[derive(Parser)]
#[command(
    name = "taskledger",
    version,
    about = "A Taskcluster-compatible task platform on an append-only event log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the queue, auth, worker-manager and object APIs, their reactors and the event log
    /// (embedded, or in Kafka) in one process.
    Serve(ServeArgs),
    /// Manage clients and roles of a running server (needs credentials with auth scopes).
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Read the event log.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Question the log: verify its hash chain, an entity's history, its state at an instant.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Rebuild projections from offset zero into a fresh database; `--verify` compares them
    /// with the live ones.
    Replay(ReplayArgs),
    /// The Pulse bridge's tools.
    #[command(subcommand)]
    Bridge(BridgeCmd),
    /// Run tasks: generic-worker's protocol and process engine, against any
    /// Taskcluster-compatible queue.
    Worker(worker_cli::WorkerArgs),
    /// Create a task running CMD ARGS, stream its live log here, exit with its result.
    RunTask(worker_cli::RunTaskArgs),
}

#[derive(Subcommand)]
enum BridgeCmd {
    /// Run the Pulse bridge as its own process beside a running server (or on a stopped
    /// server's data directory): the same component `serve --pulse-url` runs inside.
    Run {
        #[arg(long, env = "TASKLEDGER_PULSE_URL", hide_env_values = true)]
        pulse_url: String,
        /// AMQP channels to publish on (1-16); see `serve --pulse-channels`.
        #[arg(long, env = "TASKLEDGER_PULSE_CHANNELS", default_value_t = 1,
              value_parser = clap::value_parser!(u8).range(1..=16))]
        pulse_channels: u8,
        #[command(flatten)]
        data: DataDir,
    },
    /// Republish the matching history into one consumer's queue (e.g. after the queue was
    /// deleted for growing too large): same bodies and message ids as first published.
    Replay {
        /// The exchange, e.g. task-completed or exchange/taskcluster-queue/v1/task-completed.
        #[arg(long)]
        exchange: String,
        /// A binding pattern matched against the routing key and the CC'd routes.
        #[arg(long, default_value = "#")]
        routing_key: String,
        /// Only events at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// The (existing) queue to fill.
        #[arg(long)]
        to_queue: String,
        #[arg(long, env = "TASKLEDGER_PULSE_URL", hide_env_values = true)]
        pulse_url: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// The data directory the log tools read (a stopped server's, or beside a running one).
#[derive(clap::Args, Clone)]
struct DataDir {
    #[arg(long, env = "TASKLEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum EventsCmd {
    /// Decoded events as JSON lines (secrets shown as [redacted]).
    Tail {
        /// queue, auth, worker-manager, object or all.
        #[arg(long, default_value = "all")]
        service: String,
        #[arg(long, default_value_t = 0)]
        from_offset: u64,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Keep waiting for new events.
        #[arg(long)]
        follow: bool,
        /// JSON lines: the one format `tail` prints, taken so scripts may say so.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        kafka: KafkaSource,
        #[command(flatten)]
        data: DataDir,
    },
}

/// Which entity: exactly one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Entity {
    #[arg(long)]
    task: Option<String>,
    #[arg(long)]
    task_group: Option<String>,
    #[arg(long)]
    client: Option<String>,
    #[arg(long)]
    role: Option<String>,
}

impl Entity {
    fn kind_and_id(&self) -> (&'static str, String) {
        let pairs = [
            ("task", &self.task),
            ("task-group", &self.task_group),
            ("client", &self.client),
            ("role", &self.role),
        ];
        pairs
            .into_iter()
            .find_map(|(k, v)| v.clone().map(|v| (k, v)))
            .expect("clap requires one entity")
    }
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the log and prove its hash chain intact, or name the first broken link.
    Verify {
        /// Also check these signed checkpoints (JSON lines, as `serve` writes them into
        /// `<data-dir>/checkpoints.jsonl`; keep your own copy): the log must still begin with
        /// exactly what each one signed.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// The signer's Ed25519 public key (hex), as `serve` printed it; without it a
        /// checkpoint is only checked against the key it names itself.
        #[arg(long)]
        public_key: Option<String>,
        /// Walk the Kafka topics' chains instead (each event's `taskledger-chain` header).
        #[command(flatten)]
        kafka: KafkaSource,
        #[command(flatten)]
        data: DataDir,
    },
    /// Every event of one entity: time, actor, request id, what changed.
    History {
        #[command(flatten)]
        entity: Entity,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read the Kafka topic itself (every record, no server's index).
        #[command(flatten)]
        kafka: KafkaSource,
        #[command(flatten)]
        data: DataDir,
    },
    /// The entity as it was at TIME (RFC 3339), folded from its events.
    AsOf {
        time: String,
        #[command(flatten)]
        entity: Entity,
        #[command(flatten)]
        kafka: KafkaSource,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// queue, auth, worker-manager, object or all.
    #[arg(long, default_value = "all")]
    projection: String,
    /// Compare the rebuilt projection with the live one; fail naming the first differing key.
    #[arg(long)]
    verify: bool,
    /// Keep the rebuilt database here (default: a temporary directory, removed afterwards).
    #[arg(long)]
    into: Option<PathBuf>,
    #[command(flatten)]
    kafka: KafkaSource,
    #[command(flatten)]
    data: DataDir,
}

/// Where a log tool reads the events when the server keeps its log in Kafka.
#[derive(clap::Args)]
struct KafkaSource {
    /// Read the events from Kafka (`host:port,...`) instead of the data directory's log.
    #[arg(long, env = "TASKLEDGER_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// The topic prefix the server was started with.
    #[arg(
        long,
        env = "TASKLEDGER_KAFKA_TOPIC_PREFIX",
        default_value = "taskledger."
    )]
    kafka_topic_prefix: String,
}

impl KafkaSource {
    /// The Kafka log, when one was named, with the given topics.
    async fn connect(&self, topics: &[&str]) -> Result<Option<KafkaLog>> {
        let Some(brokers) = &self.kafka_brokers else {
            return Ok(None);
        };
        let config = KafkaConfig {
            topic_prefix: self.kafka_topic_prefix.clone(),
            ..KafkaConfig::new(brokers)
        };
        let log = KafkaLog::open_existing(config, topics)
            .await
            .with_context(|| {
                format!(
                    "reading Kafka at {brokers} (topic prefix {:?})",
                    self.kafka_topic_prefix
                )
            })?;
        Ok(Some(log))
    }
}

/// Where the server is and who is asking; the usual Taskcluster environment variables.
#[derive(clap::Args)]
struct Connection {
    #[arg(
        long,
        env = "TASKCLUSTER_ROOT_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    root_url: String,
    #[arg(
        long,
        env = "TASKCLUSTER_CLIENT_ID",
        default_value = "static/taskcluster/root"
    )]
    client_id: String,
    #[arg(long, env = "TASKCLUSTER_ACCESS_TOKEN", hide_env_values = true)]
    access_token: String,
}

#[derive(Subcommand)]
enum AuthCmd {
    /// Create a client; prints it with its access token (shown only this once).
    CreateClient {
        /// The new client's id.
        #[arg(value_name = "CLIENT_ID")]
        new_client_id: String,
        /// A scope to grant (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long, default_value = "created with taskledger auth create-client")]
        description: String,
        /// Lifetime in days.
        #[arg(long, default_value_t = 365)]
        expires_in_days: i64,
        #[command(flatten)]
        conn: Connection,
    },
    /// Create a role (or update it when it exists).
    CreateRole {
        role_id: String,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long, default_value = "created with taskledger auth create-role")]
        description: String,
        #[command(flatten)]
        conn: Connection,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TASKLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where the log, the projections and artifact blobs live.
    #[arg(long, env = "TASKLEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// The rootUrl clients use; defaults to http://<listen>.
    #[arg(long, env = "TASKLEDGER_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long a claim lasts before it must be reclaimed (Taskcluster: 1200 s).
    #[arg(long, env = "TASKLEDGER_CLAIM_TIMEOUT_SECS", default_value_t = 1200)]
    claim_timeout_secs: u64,
    /// How long claimWork waits for a task (Taskcluster: 20 s).
    #[arg(long, env = "TASKLEDGER_CLAIM_WORK_POLL_SECS", default_value_t = 20)]
    claim_work_poll_secs: u64,
    /// How often expired tasks, task groups and objects are looked for and removed
    /// (Taskcluster's expiry crons run daily).
    #[arg(long, env = "TASKLEDGER_EXPIRY_SCAN_SECS", default_value_t = 60)]
    expiry_scan_secs: u64,
    /// How often the log's hash chain is verified and each partition's head signed into
    /// `<data-dir>/checkpoints.jsonl` (Ed25519 key from TASKLEDGER_CHECKPOINT_KEY, base64
    /// PKCS#8, or generated into the data directory); 0 turns it off.
    #[arg(long, env = "TASKLEDGER_CHECKPOINT_SECS", default_value_t = 3600)]
    checkpoint_secs: u64,
    /// How often every projection is rebuilt from the log beside the live one and compared
    /// with it (`replay --verify` in the background; the outcome on /metrics as
    /// `taskledger_projection_verified`); 0, the default, turns it off. A rebuild folds the
    /// whole log, so pick a period that the log's size allows.
    #[arg(long, env = "TASKLEDGER_VERIFY_PROJECTIONS_SECS", default_value_t = 0)]
    verify_projections_secs: u64,
    /// The most RocksDB's flushes and compactions may write, in MB a second; 0, the default,
    /// leaves them unbounded. On a disk where a flush written out at once makes every
    /// durable commit's sync wait behind it, a bound such as 64 spreads the flush out; it
    /// must stay well above what the load flushes and compacts.
    #[arg(long, env = "TASKLEDGER_BACKGROUND_WRITE_MB", default_value_t = 0)]
    background_write_mb: u64,
    /// Republish every event to Pulse (AMQP), e.g. amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, env = "TASKLEDGER_PULSE_URL", hide_env_values = true)]
    pulse_url: Option<String>,
    /// AMQP channels the Pulse bridge publishes on (1-16). With 1, the default, consumers
    /// receive the messages in log order. More channels raise the broker's throughput
    /// (RabbitMQ works on channels in parallel) but only keep each stream's order: a task's
    /// messages stay in order, a task's and its group's (or a pool's and its workers') may
    /// overtake each other.
    #[arg(long, env = "TASKLEDGER_PULSE_CHANNELS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=16))]
    pulse_channels: u8,
    /// More static clients: a JSON array of {clientId, accessToken, scopes?, description?}
    /// (upstream's STATIC_CLIENTS). Ids must start with `static/`.
    #[arg(long, env = "TASKLEDGER_STATIC_CLIENTS", hide_env_values = true)]
    static_clients: Option<String>,
    /// Also accept Taskcluster's conformance client `tester` / `no-secret` (never in production).
    #[arg(long, env = "TASKLEDGER_TEST_CLIENTS", default_value_t = false)]
    test_clients: bool,
    /// Keep the event log in Kafka (`host:port[,host:port...]`) instead of the embedded log;
    /// the projections stay in the data directory.
    #[arg(long, env = "TASKLEDGER_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Kafka topic names: this prefix replaces `taskledger.` (`<prefix>queue`, `<prefix>auth`).
    #[arg(
        long,
        env = "TASKLEDGER_KAFKA_TOPIC_PREFIX",
        default_value = "taskledger."
    )]
    kafka_topic_prefix: String,
    /// Partitions of the topics taskledger creates (events use partition 0 for now).
    #[arg(long, env = "TASKLEDGER_KAFKA_PARTITIONS", default_value_t = 1)]
    kafka_partitions: i32,
    /// Replication factor of the topics taskledger creates (production: 3).
    #[arg(long, env = "TASKLEDGER_KAFKA_REPLICATION", default_value_t = 1)]
    kafka_replication: i32,
    /// Append through a transactional producer per partition (the broker then fences a
    /// superseded writer too). Off, writer epochs alone fence it.
    #[arg(long, env = "TASKLEDGER_KAFKA_TRANSACTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    kafka_transactions: bool,
    /// How long a command waits for Kafka before it answers 503.
    #[arg(long, env = "TASKLEDGER_KAFKA_TIMEOUT_MS", default_value_t = 10_000)]
    kafka_timeout_ms: u64,
    /// Run as one node of several: nodes with the same group share the partitions through
    /// this Kafka consumer group of writers, forward commands to the partition's writer and
    /// serve reads themselves. Every node of a group needs the same secrets
    /// (TASKLEDGER_ROOT_ACCESS_TOKEN, TASKLEDGER_CRYPTO_KEY, TASKLEDGER_QUEUE_ACCESS_TOKEN,
    /// TASKLEDGER_URL_SIGNING_KEY, TASKLEDGER_WORKER_MANAGER_ACCESS_TOKEN).
    #[arg(long, env = "TASKLEDGER_KAFKA_GROUP", requires = "kafka_brokers")]
    kafka_group: Option<String>,
    /// How long a silent node stays in the writer group before its partitions move (brokers
    /// accept 6 s to 30 min by default).
    #[arg(
        long,
        env = "TASKLEDGER_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    kafka_session_timeout_ms: u64,
    /// How the other nodes reach this one (announced when it takes a partition); defaults to
    /// http://<listen>.
    #[arg(long, env = "TASKLEDGER_NODE_URL")]
    node_url: Option<String>,
}

impl ServeArgs {
    fn node_url(&self) -> String {
        self.node_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }
}

/// A secret from the environment variable `var` when set (several nodes share it), else
/// from `path` in the data directory (made there on first start).
fn shared_secret(var: &str, path: &Path) -> Result<String> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => Ok(stored_secret(path, access_token)?.0),
    }
}

/// Reads a secret from `path`, or makes one and stores it there (mode 0600).
fn stored_secret(path: &Path, make: impl FnOnce() -> String) -> Result<(String, bool)> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok((s.trim().to_string(), false));
    }
    let s = make();
    std::fs::write(path, &s).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((s, true))
}

fn access_token() -> String {
    format!("{}{}", slugid::v4(), slugid::v4())
}

/// Static clients never expire: +1000 years, as upstream.
fn far_future() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::days(1000 * 365)
}

/// The key that seals access tokens in events: `TASKLEDGER_CRYPTO_KEY` (base64, 32 bytes) or
/// a key generated once into the data directory.
fn seal_key(data_dir: &Path) -> Result<SealKey> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = match std::env::var("TASKLEDGER_CRYPTO_KEY") {
        Ok(k) if !k.is_empty() => k,
        _ => {
            stored_secret(&data_dir.join("crypto-key"), || {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .expect("system randomness");
                b64.encode(key)
            })?
            .0
        }
    };
    let bytes = b64
        .decode(text.trim())
        .context("TASKLEDGER_CRYPTO_KEY must be base64")?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the crypto key must be 32 bytes (base64-encoded)"))?;
    Ok(SealKey::new(key))
}

/// The worker-manager's own client: the issuer of worker credentials.
const WORKER_MANAGER_CLIENT: &str = "static/taskcluster/worker-manager";

/// What worker credentials may hold (worker-manager.md §2), plus naming them `worker/...`.
const WORKER_MANAGER_SCOPES: &[&str] = &[
    "assume:worker-type:*",
    "assume:worker-pool:*",
    "assume:worker-id:*",
    "queue:worker-id:*",
    "secrets:get:worker-type:*",
    "secrets:get:worker-pool:*",
    "queue:claim-work:*",
    "worker-manager:remove-worker:*",
    "worker-manager:reregister-worker:*",
    "worker-manager:should-worker-terminate:*",
    "auth:create-client:worker/*",
];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaticClientConfig {
    client_id: String,
    access_token: String,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn serve(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen))
        .trim_end_matches('/')
        .to_string();

    let (root_token, generated) = match std::env::var("TASKLEDGER_ROOT_ACCESS_TOKEN") {
        Ok(t) if !t.is_empty() => (t, false),
        _ => stored_secret(&args.data_dir.join("root-access-token"), access_token)?,
    };
    let queue_token = shared_secret(
        "TASKLEDGER_QUEUE_ACCESS_TOKEN",
        &args.data_dir.join("queue-access-token"),
    )?;
    // signs blob URLs and derives object artifacts' upload ids: changing it voids the URLs
    // handed out and the upload ids of artifacts whose upload has not finished
    let url_key = shared_secret(
        "TASKLEDGER_URL_SIGNING_KEY",
        &args.data_dir.join("url-signing-key"),
    )?;
    let worker_manager_token = shared_secret(
        "TASKLEDGER_WORKER_MANAGER_ACCESS_TOKEN",
        &args.data_dir.join("worker-manager-access-token"),
    )?;

    let background_writes = (args.background_write_mb > 0).then(|| {
        i64::try_from(args.background_write_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX)
    });
    let db = store::open_limited(&args.data_dir.join("db"), background_writes)
        .context("opening the database")?;
    let secrets = Secrets {
        root_token,
        generated,
        queue_token,
        url_key,
        worker_manager_token,
    };
    match args.kafka_brokers.clone() {
        None => {
            let log = Arc::new(EmbeddedLog::new(db.clone()));
            println!(
                "event log: embedded ({})",
                args.data_dir.join("db").display()
            );
            let walk = embedded_chain_walk(db.clone());
            run_services(args, public_url, secrets, db, log, true, walk, None).await
        }
        Some(brokers) => {
            let config = KafkaConfig {
                topic_prefix: args.kafka_topic_prefix.clone(),
                partitions: args.kafka_partitions,
                replication: args.kafka_replication,
                transactions: args.kafka_transactions,
                node: args.node_url(),
                timeout: Duration::from_millis(args.kafka_timeout_ms),
                ..KafkaConfig::new(&brokers)
            };
            let topics = ALL_TOPICS;
            let log = KafkaLog::connect(config, &topics)
                .await
                .with_context(|| format!("connecting to Kafka at {brokers}"))?;
            if let Some(group) = &args.kafka_group {
                // the engines take what the group assigns and follow the rest
                log.join_group(
                    group,
                    &topics,
                    Duration::from_millis(args.kafka_session_timeout_ms),
                )
                .with_context(|| format!("joining the writer group {group}"))?;
                println!(
                    "event log: Kafka at {brokers} (writer {}, node {} of group {group})",
                    log.writer_id(),
                    args.node_url()
                );
            } else {
                // take every partition before the projections catch up, so they see this
                // node's ownership markers
                for topic in topics {
                    log.acquire(topic, 0)
                        .await
                        .with_context(|| format!("taking ownership of {topic}"))?;
                }
                println!("event log: Kafka at {brokers} (writer {})", log.writer_id());
            }
            let log = Arc::new(log);
            let expel: Option<cluster::Expel> = args.kafka_group.is_some().then(|| {
                let log = log.clone();
                Arc::new(move |node: String| {
                    let log = log.clone();
                    Box::pin(async move {
                        match log.expel(&node).await {
                            Ok(n) => tracing::warn!(%node, members = n, "removed from the writer group"),
                            Err(e) => tracing::warn!(%node, error = %e, "cannot remove from the writer group"),
                        }
                    }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
                }) as cluster::Expel
            });
            let walk = kafka_chain_walk(log.clone());
            run_services(args, public_url, secrets, db, log, false, walk, expel).await
        }
    }
}

/// Every topic of the log, one per service.
const ALL_TOPICS: [&str; 4] = [QUEUE_TOPIC, AUTH_TOPIC, WORKER_MANAGER_TOPIC, OBJECT_TOPIC];

/// The secrets `serve` keeps in the data directory.
struct Secrets {
    root_token: String,
    generated: bool,
    queue_token: String,
    url_key: String,
    worker_manager_token: String,
}

/// Spawns one of `serve`'s background services (reactors, expiry, the Pulse bridge,
/// checkpoints). One that panicked would leave the server answering while claims no longer
/// expire or events no longer reach Pulse; the process exits instead (status 70), as it does
/// for a panicked writer, so that its supervisor restarts it and the service resumes from its
/// checkpoint or rescans the projection.
fn spawn_service<F>(name: &'static str, service: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let running = tokio::spawn(service);
    tokio::spawn(async move {
        if running.await.is_err_and(|e| e.is_panic()) {
            taskledger_projections::engine::exit_after_panic(name);
        }
    });
}

/// Everything `serve` runs, on whichever log.
// what `serve` opened before choosing the log, handed over once
#[allow(clippy::too_many_arguments)]
async fn run_services<L: EventLog + 'static>(
    args: ServeArgs,
    public_url: String,
    secrets: Secrets,
    db: Arc<rocksdb::DB>,
    log: Arc<L>,
    embedded: bool,
    chain_walk: ChainWalk,
    expel: Option<cluster::Expel>,
) -> Result<()> {
    let Secrets {
        root_token,
        generated,
        queue_token,
        url_key,
        worker_manager_token,
    } = secrets;
    // the embedded log indexes streams itself; on Kafka the projections do, for history
    let mut auth_view = AuthView::open(db.clone()).context("loading the auth projection")?;
    let mut view = QueueView::new(db.clone()).context("loading the queue projection")?;
    view.index_expiries()
        .context("indexing the expiry of tasks written before the index")?;
    if !embedded {
        auth_view = auth_view.with_stream_index();
        view = view.with_stream_index();
    }
    let auth_view = Arc::new(auth_view);
    let auth = AuthEngine::start(auth_view.clone(), log.clone())
        .await
        .context("starting the auth engine")?;
    let worker_manager_view = Arc::new(
        WorkerManagerView::open(db.clone()).context("loading the worker-manager projection")?,
    );
    let worker_manager = WorkerManagerEngine::start(worker_manager_view, log.clone())
        .await
        .context("starting the worker-manager engine")?;
    let object_view =
        Arc::new(ObjectView::open(db.clone()).context("loading the object projection")?);
    let object = ObjectEngine::start(object_view, log.clone())
        .await
        .context("starting the object engine")?;
    let mut clients = Clients::new(auth_view, seal_key(&args.data_dir)?);
    let static_client = |id: &str, token: &str, scopes: &[&str]| ClientRecord {
        client_id: id.to_string(),
        access_token: token.to_string(),
        scopes: Arc::new(scopes.iter().map(|s| s.to_string()).collect()),
        final_scopes: false,
        expires: far_future(),
        disabled: false,
    };
    clients.insert(static_client(
        "static/taskcluster/root",
        &root_token,
        &["*"],
    ));
    clients.insert(static_client(
        "static/taskcluster/queue",
        &queue_token,
        &["*"],
    ));
    clients.insert(static_client(
        WORKER_MANAGER_CLIENT,
        &worker_manager_token,
        WORKER_MANAGER_SCOPES,
    ));
    if let Some(json) = &args.static_clients {
        let list: Vec<StaticClientConfig> =
            serde_json::from_str(json).context("TASKLEDGER_STATIC_CLIENTS must be a JSON array")?;
        for c in list {
            anyhow::ensure!(
                c.client_id.starts_with("static/"),
                "static client ids start with `static/`: {}",
                c.client_id
            );
            let scopes: Vec<&str> = c.scopes.iter().map(String::as_str).collect();
            clients.insert(static_client(&c.client_id, &c.access_token, &scopes));
        }
    }
    if args.test_clients {
        clients.insert(static_client("tester", "no-secret", &["test:*"]));
    }

    let limits = Limits {
        claim_timeout_ms: args.claim_timeout_secs as i64 * 1000,
        ..Limits::default()
    };
    let engine = Engine::start(view, log.clone(), limits)
        .await
        .context("starting the queue engine")?;

    let blob_dir = args.data_dir.join("blobs");
    std::fs::create_dir_all(&blob_dir)?;
    let blobs = Arc::new(object_store_local(&blob_dir)?);

    spawn_service("timers", taskledger_workers::run_timers(engine.clone()));
    spawn_service(
        "dependencies",
        taskledger_workers::run_dependencies(engine.clone(), log.clone()),
    );
    spawn_service(
        "built-in workers",
        taskledger_workers::run_builtin_workers(engine.clone()),
    );
    spawn_service(
        "client expiry",
        taskledger_workers::run_client_expiry(auth.clone()),
    );
    {
        let blobs = blobs.clone();
        spawn_service(
            "object expiry",
            taskledger_workers::run_object_expiry(
                object.clone(),
                Duration::from_secs(args.expiry_scan_secs.max(1)),
                move |name: String, upload: [u8; 32]| {
                    let blobs = blobs.clone();
                    async move {
                        taskledger_gateways::object::delete_bytes(blobs.as_ref(), &name, &upload)
                            .await
                    }
                },
            ),
        );
    }
    {
        let blobs = blobs.clone();
        spawn_service(
            "task expiry",
            taskledger_workers::run_task_expiry(
                engine.clone(),
                Duration::from_secs(args.expiry_scan_secs.max(1)),
                move |what| {
                    let blobs = blobs.clone();
                    async move {
                        taskledger_gateways::queue::artifacts::delete_expired_bytes(
                            blobs.as_ref(),
                            &what,
                        )
                        .await
                    }
                },
            ),
        );
    }
    let mut bridge_stats = None;
    if let Some(url) = &args.pulse_url {
        let state = taskledger_bridge::BridgeState::open(&args.data_dir.join("bridge"))
            .context("opening the bridge's state")?;
        let stats = Arc::new(taskledger_bridge::BridgeStats::default());
        bridge_stats = Some(stats.clone());
        spawn_service(
            "pulse bridge",
            taskledger_bridge::run(
                log.clone(),
                None,
                Arc::new(state),
                url.clone(),
                usize::from(args.pulse_channels),
                Some(engine.committed()),
                stats,
            ),
        );
        println!("  republishing events to Pulse (AMQP)");
    }

    let state = Arc::new(AppState {
        records: log.clone(),
        engine,
        auth,
        clients,
        queue_client: ("static/taskcluster/queue".into(), queue_token),
        worker_manager,
        worker_manager_client: (WORKER_MANAGER_CLIENT.into(), worker_manager_token),
        object,
        public_url: public_url.clone(),
        blobs,
        url_key: url_key.into_bytes(),
        claim_work_poll: Duration::from_secs(args.claim_work_poll_secs),
        started: Instant::now(),
        started_at: chrono::Utc::now(),
        ends: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!(
        "taskledger is serving Taskcluster's queue, auth, worker-manager and object APIs at {public_url}/api/"
    );
    println!("  TASKCLUSTER_ROOT_URL={public_url}");
    println!("  TASKCLUSTER_CLIENT_ID=static/taskcluster/root");
    if generated {
        println!("  TASKCLUSTER_ACCESS_TOKEN={root_token}");
        println!(
            "  (generated now and kept in {}; shown only this once)",
            args.data_dir.join("root-access-token").display()
        );
    } else if std::env::var("TASKLEDGER_ROOT_ACCESS_TOKEN").is_ok() {
        println!("  TASKCLUSTER_ACCESS_TOKEN=<from TASKLEDGER_ROOT_ACCESS_TOKEN>");
    } else {
        println!(
            "  TASKCLUSTER_ACCESS_TOKEN=$(cat {})",
            args.data_dir.join("root-access-token").display()
        );
    }
    tracing::info!(listen = %args.listen, "ready");
    let audit_stats = Arc::new(metrics::AuditStats::default());
    audit_stats
        .chain_ok
        .store(-1, std::sync::atomic::Ordering::Relaxed);
    if args.checkpoint_secs > 0 {
        use ring::signature::KeyPair;
        let key = checkpoint_key(&args.data_dir)?;
        let public: String = key
            .public_key()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let file = args.data_dir.join("checkpoints.jsonl");
        println!(
            "  signing log checkpoints every {} s into {} (Ed25519 public key {public})",
            args.checkpoint_secs,
            file.display()
        );
        spawn_service(
            "checkpoints",
            run_checkpoints(
                chain_walk,
                Arc::new(key),
                file,
                Duration::from_secs(args.checkpoint_secs),
                audit_stats.clone(),
            ),
        );
    }
    if args.verify_projections_secs > 0 {
        println!(
            "  rebuilding and comparing every projection every {} s",
            args.verify_projections_secs
        );
        spawn_service(
            "projection checks",
            run_projection_checks(
                log.clone(),
                args.data_dir.clone(),
                Duration::from_secs(args.verify_projections_secs),
                audit_stats.clone(),
            ),
        );
    }
    let roles: metrics::Roles = Arc::new(vec![
        (QUEUE_TOPIC, state.engine.role().clone()),
        (AUTH_TOPIC, state.auth.role().clone()),
        (WORKER_MANAGER_TOPIC, state.worker_manager.role().clone()),
        (OBJECT_TOPIC, state.object.role().clone()),
    ]);
    let cluster = if args.kafka_group.is_some() {
        // the same order as `roles`
        let prefixes = [
            "/api/queue/v1/",
            "/api/auth/v1/",
            "/api/worker-manager/v1/",
            "/api/object/v1/",
        ];
        let log = log.clone();
        Some(Arc::new(cluster::Cluster {
            node_url: args.node_url(),
            services: roles
                .iter()
                .zip(prefixes)
                .map(|((topic, role), prefix)| cluster::Service {
                    prefix,
                    topic,
                    role: role.clone(),
                })
                .collect(),
            writer: Arc::new(move |topic: &str| log.writer_address(topic, 0)),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // a frozen writer must not hold requests forever; claimWork long-polls
                .connect_timeout(Duration::from_secs(2))
                .timeout(
                    Duration::from_secs(args.claim_work_poll_secs + 30)
                        + Duration::from_millis(args.kafka_timeout_ms),
                )
                .build()
                .context("building the forwarding HTTP client")?,
        }))
    } else {
        None
    };
    let queue_stats = state.engine.stats().clone();
    let request_times = Arc::new(metrics::RequestTimes::default());
    use axum::ServiceExt as _;
    use tower::Layer as _;
    // each middleware wraps the whole application once (see `taskledger_gateways::app`)
    let app = metrics::Front::new(
        metrics::router(
            log.clone(),
            roles,
            bridge_stats,
            audit_stats,
            queue_stats,
            request_times.clone(),
        ),
        taskledger_gateways::app(state),
        request_times,
    );
    // answers leave at once rather than wait on Nagle's algorithm for an earlier segment's ACK
    // (clients whose requests do not carry it would see delayed-ACK stalls)
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY");
        }
    });
    match cluster {
        Some(cluster) => {
            if let Some(expel) = expel {
                spawn_service(
                    "writer watch",
                    cluster::watch_writers(cluster.clone(), expel),
                );
            }
            let app = axum::middleware::from_fn_with_state(cluster, cluster::forward).layer(app);
            axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
        None => {
            axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(shutdown_signal())
                .await
        }
    }
    .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}

fn object_store_local(dir: &Path) -> Result<taskledger_gateways::LocalBlobs> {
    taskledger_gateways::LocalBlobs::new_with_prefix(dir).context("opening the blob directory")
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// No transparent huge pages for this process. mimalloc asks for them on its large regions, and
/// the first touch of each then zeroes 2 MB at once inside whatever allocated: on the queue's
/// writer, stalls of 5-10 ms of CPU a few times a second under load (perf, BENCHMARKS.md),
/// every command of the batch waiting. Databases commonly run without them for this reason.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> Result<()> {
    without_huge_pages();
    // crash tests arm fail points from FAILPOINTS (built with the `failpoints` feature only)
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let served = rt.block_on(serve(args));
            // every engine handle lived in the runtime's tasks; with them gone the writer
            // threads finish and close the database before the process exits
            drop(rt);
            taskledger_projections::engine::join_writers();
            served
        }
        Command::Auth(cmd) => rt.block_on(auth_command(cmd)),
        Command::Events(cmd) => events_command(cmd, &rt),
        Command::Audit(cmd) => audit_command(cmd, &rt),
        Command::Replay(args) => replay_command(args, &rt),
        Command::Bridge(cmd) => rt.block_on(bridge_command(cmd)),
        Command::Worker(args) => {
            let code = rt.block_on(worker_cli::worker_command(args))?;
            std::process::exit(code);
        }
        Command::RunTask(args) => {
            let code = rt.block_on(worker_cli::run_task_command(args))?;
            std::process::exit(code);
        }
    }
}

fn auth_client(conn: &Connection) -> Result<taskcluster::Auth> {
    taskcluster::Auth::new(taskcluster::ClientBuilder::new(&conn.root_url).credentials(
        taskcluster::Credentials::new(&conn.client_id, &conn.access_token),
    ))
}

/// `taskledger auth ...`: the official Rust client against a running server.
async fn auth_command(cmd: AuthCmd) -> Result<()> {
    match cmd {
        AuthCmd::CreateClient {
            new_client_id: client_id,
            scopes,
            description,
            expires_in_days,
            conn,
        } => {
            let expires = chrono::Utc::now() + chrono::Duration::days(expires_in_days);
            let body = serde_json::json!({
                "description": description,
                "expires": expires.to_rfc3339(),
                "scopes": scopes,
            });
            let created = auth_client(&conn)?
                .createClient(&client_id, &body)
                .await
                .context("createClient")?;
            println!("{}", serde_json::to_string_pretty(&created)?);
        }
        AuthCmd::CreateRole {
            role_id,
            scopes,
            description,
            conn,
        } => {
            let client = auth_client(&conn)?;
            let body = serde_json::json!({ "description": description, "scopes": scopes });
            let role = match client.createRole(&role_id, &body).await {
                Ok(r) => r,
                Err(e) if taskcluster::err_status_code(&e).map(|s| s.as_u16()) == Some(409) => {
                    client
                        .updateRole(&role_id, &body)
                        .await
                        .context("updateRole")?
                }
                Err(e) => return Err(e.context("createRole")),
            };
            println!("{}", serde_json::to_string_pretty(&role)?);
        }
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(format!(
            "taskledger-{what}-{}-{}",
            std::process::id(),
            slugid::nice()
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The data directory's database, read-only beside whatever else has it open.
fn open_read_only(data: &DataDir) -> Result<(Arc<rocksdb::DB>, TempDir)> {
    let db_dir = data.data_dir.join("db");
    anyhow::ensure!(
        db_dir.exists(),
        "no database under {}",
        data.data_dir.display()
    );
    let secondary = TempDir::new("secondary");
    let db = store::open_secondary(&db_dir, &secondary.0)
        .with_context(|| format!("opening {}", db_dir.display()))?;
    Ok((db, secondary))
}

fn topics(service: &str) -> Result<Vec<&'static str>> {
    Ok(match service {
        "queue" => vec![QUEUE_TOPIC],
        "auth" => vec![AUTH_TOPIC],
        "worker-manager" => vec![WORKER_MANAGER_TOPIC],
        "object" => vec![OBJECT_TOPIC],
        "all" => ALL_TOPICS.to_vec(),
        other => {
            anyhow::bail!("unknown service {other}: queue, auth, worker-manager, object or all")
        }
    })
}

/// `taskledger bridge run|replay`.
async fn bridge_command(cmd: BridgeCmd) -> Result<()> {
    match cmd {
        BridgeCmd::Run {
            pulse_url,
            pulse_channels,
            data,
        } => bridge_run(pulse_url, pulse_channels, data).await,
        BridgeCmd::Replay {
            exchange,
            routing_key,
            since,
            to_queue,
            pulse_url,
            data,
        } => bridge_replay(exchange, routing_key, since, to_queue, pulse_url, data).await,
    }
}

/// `taskledger bridge replay`.
async fn bridge_replay(
    exchange: String,
    routing_key: String,
    since: Option<String>,
    to_queue: String,
    pulse_url: String,
    data: DataDir,
) -> Result<()> {
    use taskledger_bridge::messages::{
        AUTH_EXCHANGES, AUTH_EXCHANGE_PREFIX, QUEUE_EXCHANGES, QUEUE_EXCHANGE_PREFIX,
        WORKER_MANAGER_EXCHANGES, WORKER_MANAGER_EXCHANGE_PREFIX,
    };
    let services = [
        (QUEUE_EXCHANGE_PREFIX, QUEUE_EXCHANGES),
        (AUTH_EXCHANGE_PREFIX, AUTH_EXCHANGES),
        (WORKER_MANAGER_EXCHANGE_PREFIX, WORKER_MANAGER_EXCHANGES),
    ];
    let exchange = if exchange.contains('/') {
        exchange
    } else if let Some((prefix, _)) = services
        .iter()
        .find(|(_, names)| names.contains(&exchange.as_str()))
    {
        format!("{prefix}{exchange}")
    } else {
        anyhow::bail!(
            "unknown exchange {exchange}; the queue's are {QUEUE_EXCHANGES:?}, auth's \
             {AUTH_EXCHANGES:?}, worker-manager's {WORKER_MANAGER_EXCHANGES:?}"
        );
    };
    let since = match since {
        Some(t) => taskledger_core::time::Millis::parse_rfc3339(&t)
            .with_context(|| format!("--since {t} is not an RFC 3339 time"))?,
        None => taskledger_core::time::Millis(0),
    };
    let (db, _secondary) = open_read_only(&data)?;
    let log = EmbeddedLog::new(db.clone());
    let scratch = TempDir::new("bridge-replay");
    let filter = taskledger_bridge::ReplayFilter {
        exchange,
        routing_key,
        since,
    };
    let n = taskledger_bridge::replay(&log, &pulse_url, &filter, &to_queue, &scratch.0)
        .await
        .context("replaying into the queue")?;
    println!("republished {n} messages into {to_queue}");
    Ok(())
}

/// `taskledger bridge run`: the bridge on a secondary instance of the data directory's
/// database, its position in `<data-dir>/bridge` (so it cannot run twice, nor beside
/// `serve --pulse-url`), until SIGTERM or Ctrl-C.
async fn bridge_run(pulse_url: String, channels: u8, data: DataDir) -> Result<()> {
    let (db, _secondary) = open_read_only(&data)?;
    let log = Arc::new(EmbeddedLog::new(db));
    let follower = log.clone();
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || follower.follow_primary());
    let state = taskledger_bridge::BridgeState::open(&data.data_dir.join("bridge"))
        .context("opening the bridge's state (is another bridge running on this data dir?)")?;
    eprintln!(
        "taskledger bridge: republishing {} to Pulse",
        data.data_dir.display()
    );
    let stats = Arc::new(taskledger_bridge::BridgeStats::default());
    tokio::select! {
        _ = taskledger_bridge::run(log, Some(refresh), Arc::new(state), pulse_url, usize::from(channels), None, stats) => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// `audit verify --checkpoints`: every checkpoint must be signed by the expected key and
/// still match the log; exits 1 naming the first that does not.
fn verify_checkpoints(
    path: &Path,
    public_key: Option<&str>,
    mut check: impl FnMut(&taskledger_projections::audit::Checkpoint) -> Result<(), String>,
) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if public_key.is_none() {
        eprintln!(
            "warning: no --public-key: each checkpoint is checked only against the key it names"
        );
    }
    let mut n = 0;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let cp: taskledger_projections::audit::Checkpoint = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a checkpoint", path.display(), i + 1))?;
        let verdict = match public_key {
            Some(k) if !k.eq_ignore_ascii_case(&cp.public_key) => {
                Err("signed by another key".to_string())
            }
            _ => check(&cp),
        };
        if let Err(why) = verdict {
            eprintln!(
                "BROKEN: checkpoint {}:{} ({}/{} at {} records, signed {}): {why}",
                path.display(),
                i + 1,
                cp.topic,
                cp.partition,
                cp.count,
                cp.time
            );
            std::process::exit(1);
        }
        n += 1;
    }
    println!("ok: {n} signed checkpoints hold");
    Ok(())
}

/// The Ed25519 key that signs checkpoints: TASKLEDGER_CHECKPOINT_KEY or the data directory's.
fn checkpoint_key(data_dir: &Path) -> Result<ring::signature::Ed25519KeyPair> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded = match std::env::var("TASKLEDGER_CHECKPOINT_KEY") {
        Ok(k) if !k.is_empty() => k,
        _ => {
            stored_secret(&data_dir.join("checkpoint-key"), || {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .expect("the system RNG works");
                b64.encode(pkcs8.as_ref())
            })?
            .0
        }
    };
    let der = b64
        .decode(encoded.trim())
        .context("the checkpoint key is not base64")?;
    ring::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow::anyhow!("the checkpoint key is not an Ed25519 PKCS#8 key: {e}"))
}

/// One walk of the log's hash chains (every partition), as `run_checkpoints` repeats it.
type ChainWalk = Box<
    dyn FnMut() -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<taskledger_projections::audit::ChainReport>>
                    + Send,
            >,
        > + Send,
>;

/// The embedded log's walk: the whole chain each time (it runs at ~1 M events/s).
fn embedded_chain_walk(db: Arc<rocksdb::DB>) -> ChainWalk {
    Box::new(move || {
        let db = db.clone();
        Box::pin(async move {
            let report = tokio::task::spawn_blocking(move || {
                taskledger_projections::audit::verify_chain(&db)
            })
            .await??;
            Ok(report)
        })
    })
}

/// The Kafka topics' walk: each walk carries on from where the previous one stopped, so only
/// new events are read (a restart walks from offset 0 once).
fn kafka_chain_walk(log: Arc<KafkaLog>) -> ChainWalk {
    use taskledger_projections::kafka_log::ChainCheck;
    let walked = Arc::new(tokio::sync::Mutex::new(vec![
        ChainCheck::start();
        ALL_TOPICS.len()
    ]));
    Box::new(move || {
        let (log, walked) = (log.clone(), walked.clone());
        Box::pin(async move {
            let mut walked = walked.lock().await;
            Ok(
                taskledger_projections::audit::walk_kafka_chains(&log, &ALL_TOPICS, &mut walked)
                    .await?,
            )
        })
    })
}

/// Every `every`: walk the chains, record the outcome for /metrics, and append signed
/// checkpoints of the verified heads to `<data-dir>/checkpoints.jsonl`.
async fn run_checkpoints(
    mut walk: ChainWalk,
    key: Arc<ring::signature::Ed25519KeyPair>,
    file: PathBuf,
    every: Duration,
    stats: Arc<metrics::AuditStats>,
) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(every).await;
        let done = async {
            let report = walk().await?;
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            stats.verified_events.store(
                report.partitions.iter().map(|p| p.2).sum(),
                Ordering::Relaxed,
            );
            stats
                .last_run
                .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
            let Some(cps) = taskledger_projections::audit::sign_heads(&report, &key, &time) else {
                stats.chain_ok.store(0, Ordering::Relaxed);
                if let Some(b) = report.broken {
                    tracing::error!(
                        topic = b.topic,
                        offset = b.offset,
                        reason = b.reason,
                        "the log's hash chain is broken"
                    );
                }
                return Ok(());
            };
            stats.chain_ok.store(1, Ordering::Relaxed);
            let mut lines = String::new();
            for cp in cps {
                lines.push_str(&serde_json::to_string(&cp)?);
                lines.push('\n');
            }
            use tokio::io::AsyncWriteExt;
            let mut out = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .await?;
            out.write_all(lines.as_bytes()).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "checkpointing failed");
        }
    }
}

/// Every `every`: rebuild each projection from the log into a scratch database and compare it
/// with the live one as it stood when the run began (a secondary instance of the server's
/// database, caught up once), like `replay --verify`; the outcome goes to /metrics and, when a
/// projection differs, to the log naming the first differing key.
async fn run_projection_checks<L: EventLog + 'static>(
    log: Arc<L>,
    data_dir: PathBuf,
    every: Duration,
    stats: Arc<metrics::AuditStats>,
) {
    use taskledger_projections::audit;
    loop {
        tokio::time::sleep(every).await;
        let (log, data_dir, stats) = (log.clone(), data_dir.clone(), stats.clone());
        let handle = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || -> Result<()> {
            let secondary_dir = data_dir.join("verify-secondary");
            let scratch_dir = data_dir.join("verify-scratch");
            let _ = std::fs::remove_dir_all(&secondary_dir);
            let live = store::open_secondary(&data_dir.join("db"), &secondary_dir)?;
            let mut results = Vec::new();
            for name in audit::PROJECTIONS {
                let _ = std::fs::remove_dir_all(&scratch_dir);
                let scratch = store::open(&scratch_dir)?;
                let report = handle.block_on(audit::replay_from(
                    &*log,
                    &live,
                    &scratch,
                    name,
                    true,
                    &mut |_, _| {},
                ))?;
                drop(scratch);
                let _ = std::fs::remove_dir_all(&scratch_dir);
                match &report.difference {
                    None => tracing::info!(
                        projection = name,
                        events = report.events,
                        "the projection rebuilt from the log equals the live one"
                    ),
                    Some(d) => tracing::error!(
                        projection = name,
                        cf = d.cf,
                        key = d.key,
                        detail = d.detail,
                        "the projection rebuilt from the log differs from the live one"
                    ),
                }
                results.push((
                    *name,
                    i64::from(report.difference.is_none()),
                    report.events,
                    report.rate(),
                ));
            }
            drop(live);
            let _ = std::fs::remove_dir_all(&secondary_dir);
            *stats.projections.lock().expect("projection checks") = results;
            stats.projections_last_run.store(
                chrono::Utc::now().timestamp(),
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok(())
        })
        .await;
        if let Ok(Err(e)) | Err(e) = done.map_err(anyhow::Error::from) {
            tracing::error!(error = %e, "verifying the projections failed");
        }
    }
}

fn events_command(cmd: EventsCmd, rt: &tokio::runtime::Runtime) -> Result<()> {
    let EventsCmd::Tail {
        service,
        from_offset,
        since,
        follow,
        json: _,
        kafka,
        data,
    } = cmd;
    let since = match since {
        Some(t) => Some(
            taskledger_core::time::Millis::parse_rfc3339(&t)
                .with_context(|| format!("--since {t} is not an RFC 3339 time"))?,
        ),
        None => None,
    };
    let topics = topics(&service)?;
    let tail = Tail {
        topics: &topics,
        from_offset,
        since,
        follow,
    };
    match rt.block_on(kafka.connect(&topics))? {
        Some(log) => rt.block_on(tail.run(&log, || Ok(()))),
        None => {
            let (db, _secondary) = open_read_only(&data)?;
            let log = EmbeddedLog::new(db.clone());
            rt.block_on(tail.run(&log, || {
                db.try_catch_up_with_primary()
                    .context("following the running server")
            }))
        }
    }
}

/// `events tail` on either log.
struct Tail<'a> {
    topics: &'a [&'static str],
    from_offset: u64,
    since: Option<taskledger_core::time::Millis>,
    follow: bool,
}

impl Tail<'_> {
    /// Prints every event from the start offset on as JSON lines; with `follow`, keeps
    /// waiting, calling `refresh` before each new look at the log.
    async fn run<L: EventLog>(&self, log: &L, refresh: impl Fn() -> Result<()>) -> Result<()> {
        use std::io::Write;
        let mut offsets: Vec<u64> = vec![self.from_offset; self.topics.len()];
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        loop {
            let mut any = false;
            for (topic, offset) in self.topics.iter().zip(offsets.iter_mut()) {
                loop {
                    let batch = log.read(topic, 0, *offset, 1024).await?;
                    if batch.next <= *offset {
                        break;
                    }
                    any = true;
                    for r in &batch.records {
                        let line = taskledger_projections::audit::record_json(topic, r)?;
                        let at = line["envelope"]["time"].as_i64().unwrap_or(i64::MAX);
                        if self.since.is_none_or(|s| at >= s.0) {
                            writeln!(out, "{line}")?;
                        }
                    }
                    *offset = batch.next;
                }
            }
            out.flush()?;
            if !self.follow {
                return Ok(());
            }
            if !any {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            refresh()?;
        }
    }
}

/// `audit verify`'s report: each partition's events and head, then `ok` with the rate, or
/// exit 1 naming the first broken link.
fn print_chain_report(report: taskledger_projections::audit::ChainReport, started: Instant) {
    let total: u64 = report.partitions.iter().map(|p| p.2).sum();
    for ((topic, partition, n), head) in report.partitions.iter().zip(&report.heads) {
        println!("{topic}/{partition}: {n} events, head {head}");
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(b) = report.broken {
        eprintln!(
            "BROKEN: {}/{} offset {}: {}",
            b.topic, b.partition, b.offset, b.reason
        );
        std::process::exit(1);
    }
    println!(
        "ok: {total} events verified in {secs:.2} s ({:.0} events/s)",
        total as f64 / secs.max(1e-9)
    );
}

fn audit_command(cmd: AuditCmd, rt: &tokio::runtime::Runtime) -> Result<()> {
    use taskledger_projections::audit;
    match cmd {
        AuditCmd::Verify {
            checkpoints,
            public_key,
            kafka,
            data,
        } => {
            let topics = ALL_TOPICS;
            if let Some(log) = rt.block_on(kafka.connect(&topics))? {
                if let Some(path) = checkpoints {
                    verify_checkpoints(&path, public_key.as_deref(), |cp| {
                        rt.block_on(audit::verify_kafka_checkpoint(&log, cp))
                    })?;
                }
                let started = Instant::now();
                let mut walked =
                    vec![taskledger_projections::kafka_log::ChainCheck::start(); topics.len()];
                let report = rt.block_on(audit::walk_kafka_chains(&log, &topics, &mut walked))?;
                print_chain_report(report, started);
                return Ok(());
            }
            let (db, _secondary) = open_read_only(&data)?;
            if let Some(path) = checkpoints {
                verify_checkpoints(&path, public_key.as_deref(), |cp| {
                    audit::verify_checkpoint(&db, cp)
                })?;
            }
            let started = Instant::now();
            print_chain_report(audit::verify_chain(&db)?, started);
        }
        AuditCmd::History {
            entity,
            json,
            kafka,
            data,
        } => {
            let (kind, id) = entity.kind_and_id();
            let (topic, records) = entity_records(kind, &id, &kafka, &data, rt)?;
            anyhow::ensure!(!records.is_empty(), "no events for {kind} {id}");
            for r in &records {
                let line = audit::record_json(topic, r)?;
                if json {
                    println!("{line}");
                    continue;
                }
                let env = &line["envelope"];
                let payload = env["payload"].as_object().and_then(|o| o.values().next());
                println!(
                    "{}  {:<28} {:<38} {:<22} {}",
                    env["timeIso"].as_str().unwrap_or("?"),
                    env["actor"]["client_id"].as_str().unwrap_or("?"),
                    env["actor"]["request_id"].as_str().unwrap_or("-"),
                    line["eventType"].as_str().unwrap_or("?"),
                    payload.map(|p| p.to_string()).unwrap_or_default()
                );
            }
        }
        AuditCmd::AsOf {
            time,
            entity,
            kafka,
            data,
        } => {
            let (kind, id) = entity.kind_and_id();
            let at = taskledger_core::time::Millis::parse_rfc3339(&time)
                .with_context(|| format!("{time} is not an RFC 3339 time"))?;
            let (_, records) = entity_records(kind, &id, &kafka, &data, rt)?;
            let state = audit::as_of(&records, kind, &id, at)?.context("unknown entity kind")?;
            let value = match state {
                audit::AsOf::Task(Some(t)) => taskledger_gateways::queue::json::status_json(&t),
                audit::AsOf::TaskGroup(Some(g)) => serde_json::to_value(&g)?,
                audit::AsOf::Client(Some(c)) => serde_json::to_value(&c)?,
                audit::AsOf::Role(Some(r)) => serde_json::to_value(&r)?,
                audit::AsOf::Task(None)
                | audit::AsOf::TaskGroup(None)
                | audit::AsOf::Client(None)
                | audit::AsOf::Role(None) => anyhow::bail!("{kind} {id} did not exist at {time}"),
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
    }
    Ok(())
}

/// The topic of one entity's stream and its records, oldest first: from the Kafka topic when
/// one is named (a scan of the whole partition), else through the data directory's stream
/// index.
fn entity_records(
    kind: &str,
    id: &str,
    kafka: &KafkaSource,
    data: &DataDir,
    rt: &tokio::runtime::Runtime,
) -> Result<(&'static str, Vec<taskledger_core::log::Stored>)> {
    use taskledger_projections::audit;
    let (topic, stream) = audit::stream_of(kind, id).context("unknown entity kind")?;
    if let Some(log) = rt.block_on(kafka.connect(&[topic]))? {
        return Ok((
            topic,
            rt.block_on(audit::scan_stream(&log, topic, &stream))?,
        ));
    }
    let (db, _secondary) = open_read_only(data)?;
    let log = EmbeddedLog::new(db.clone());
    Ok((
        topic,
        rt.block_on(audit::stream_records(&log, &db, topic, &stream))?,
    ))
}

fn replay_command(args: ReplayArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    use taskledger_projections::audit;
    let names: Vec<&str> = match args.projection.as_str() {
        "all" => audit::PROJECTIONS.to_vec(),
        p if audit::PROJECTIONS.contains(&p) => vec![p],
        other => anyhow::bail!(
            "unknown projection {other}: {} or all",
            audit::PROJECTIONS.join(", ")
        ),
    };
    let (live, _secondary) = open_read_only(&args.data)?;
    let kafka = rt.block_on(args.kafka.connect(&ALL_TOPICS))?;
    let mut failed = false;
    for name in names {
        let temp = TempDir::new("replay");
        let dir = match &args.into {
            Some(d) => d.join(name),
            None => temp.0.clone(),
        };
        anyhow::ensure!(
            !dir.exists(),
            "{} exists; replay writes a fresh database",
            dir.display()
        );
        let scratch = store::open(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>6} [{bar:40}] {pos}/{len} events  {per_sec}  eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        let mut progress = |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        };
        let report = match &kafka {
            Some(log) => rt.block_on(audit::replay_from(
                log,
                &live,
                &scratch,
                name,
                args.verify,
                &mut progress,
            ))?,
            None => audit::replay(&live, &scratch, name, args.verify, &mut progress)?,
        };
        bar.finish_and_clear();
        println!(
            "{name}: {} events in {:.2} s ({:.0} events/s), digest {}",
            report.events,
            report.seconds,
            report.rate(),
            report.rebuilt_digest
        );
        if let Some(live_digest) = &report.live_digest {
            match &report.difference {
                None => println!("{name}: verified, live digest {live_digest}"),
                Some(d) => {
                    failed = true;
                    eprintln!(
                        "{name}: DIFFERS from the live projection: column family {}, key {}: {}",
                        d.cf, d.key, d.detail
                    );
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
