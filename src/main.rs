//! The `taskledger` binary: CLI wiring only.

/// mimalloc: the system allocator cost a fifth of the CPU under load (perf, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod checks;
mod cluster;
mod commands;
mod metrics;
mod secrets;
mod serve;
mod static_clients;
mod worker_cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::github::GITHUB_TOPIC;
use taskledger_core::hooks::HOOKS_TOPIC;
use taskledger_core::index::INDEX_TOPIC;
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_core::notify::NOTIFY_TOPIC;
use taskledger_core::object::OBJECT_TOPIC;
use taskledger_core::secrets::SECRETS_TOPIC;
use taskledger_core::worker_manager::WORKER_MANAGER_TOPIC;
use taskledger_projections::{KafkaConfig, KafkaLog};

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
    /// Run the queue, auth, worker-manager, object, secrets, index, hooks, notify, github and purge-cache APIs, their reactors and
    /// the event log (embedded, or in Kafka) in one process.
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
        /// A new bridge (its `<data-dir>/bridge` made by this start) starts at the log's
        /// present end: the history is folded, not published. By default it publishes the
        /// whole log.
        #[arg(long)]
        skip_history: bool,
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
        /// queue, auth, worker-manager, object, secrets, index, hooks, notify, github or all.
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
    /// `<hookGroupId>/<hookId>`
    #[arg(long)]
    hook: Option<String>,
}

impl Entity {
    fn kind_and_id(&self) -> (&'static str, String) {
        let pairs = [
            ("task", &self.task),
            ("task-group", &self.task_group),
            ("client", &self.client),
            ("role", &self.role),
            ("hook", &self.hook),
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
    /// queue, auth, worker-manager, object, secrets, index, hooks, notify, github or all.
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
    /// How often expired tasks, task groups, objects, secrets, worker-manager workers and
    /// worker-pool errors are looked for and removed (Taskcluster's expiry crons run daily).
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
    /// A new bridge (its `<data-dir>/bridge` made by this start) starts at the log's present
    /// end: the history is folded, not published. By default a new bridge publishes the
    /// whole log.
    #[arg(long, env = "TASKLEDGER_PULSE_SKIP_HISTORY", requires = "pulse_url")]
    pulse_skip_history: bool,
    /// The durable queue, in the Pulse user's namespace (`queue/<user>/<name>`), through which
    /// task routes `notify.*` reach the notify service. Every deployment sharing a broker
    /// needs its own; the nodes of one deployment share it.
    #[arg(
        long,
        env = "TASKLEDGER_NOTIFY_QUEUE",
        default_value = "taskledger-notify"
    )]
    notify_queue: String,
    /// Send notify's emails by SMTP: smtp://[user:password@]host[:port] (plain; add
    /// ?tls=required for STARTTLS) or smtps://... (TLS). Without it, each email is written as
    /// an .eml file into <data-dir>/mail.
    #[arg(long, env = "TASKLEDGER_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// The sender of notify's emails (upstream's `sourceEmail`).
    #[arg(
        long,
        env = "TASKLEDGER_EMAIL_FROM",
        default_value = "Taskcluster Notify <notify@localhost>"
    )]
    email_from: String,
    /// The GitHub App this server acts as: its id (with --github-private-key). Without one,
    /// webhooks are still recorded and published, and create no task.
    #[arg(
        long,
        env = "TASKLEDGER_GITHUB_APP_ID",
        requires = "github_private_key"
    )]
    github_app_id: Option<String>,
    /// The GitHub App's private key: a PEM file, as GitHub hands it out.
    #[arg(
        long,
        env = "TASKLEDGER_GITHUB_PRIVATE_KEY",
        requires = "github_app_id"
    )]
    github_private_key: Option<std::path::PathBuf>,
    /// A secret GitHub signs webhooks with (repeat the flag, or separate secrets with commas,
    /// while rotating; prefer the environment variable, which `ps` does not show). Without
    /// one, unsigned webhooks are taken and signed ones refused; with an App, a start without
    /// one is refused unless --github-allow-unsigned-webhooks.
    #[arg(
        long,
        env = "TASKLEDGER_GITHUB_WEBHOOK_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    github_webhook_secret: Vec<String>,
    /// Run a GitHub App that takes unsigned webhooks (tests, a private network).
    #[arg(long, env = "TASKLEDGER_GITHUB_ALLOW_UNSIGNED_WEBHOOKS")]
    github_allow_unsigned_webhooks: bool,
    /// GitHub's REST API (GitHub Enterprise: https://<host>/api/v3).
    #[arg(
        long,
        env = "TASKLEDGER_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    github_api_url: String,
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

/// Every topic of the log, one per service.
const ALL_TOPICS: [&str; 9] = [
    QUEUE_TOPIC,
    AUTH_TOPIC,
    WORKER_MANAGER_TOPIC,
    OBJECT_TOPIC,
    SECRETS_TOPIC,
    INDEX_TOPIC,
    HOOKS_TOPIC,
    NOTIFY_TOPIC,
    GITHUB_TOPIC,
];

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
    // the bounded child that evaluates an unvetted JSON-e template for the GitHub integration
    // (`sandbox`): no runtime, no logging, nothing else
    let sandbox = taskledger_gateways::github::sandbox::SUBCOMMAND;
    if std::env::args_os().nth(1).is_some_and(|a| a == sandbox) {
        return Ok(taskledger_gateways::github::sandbox::serve_child()?);
    }
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
            let served = rt.block_on(serve::serve(args));
            // every engine handle lived in the runtime's tasks; with them gone the writer
            // threads finish and close the database before the process exits
            drop(rt);
            taskledger_projections::engine::join_writers();
            if let Some(refused) = served
                .as_ref()
                .err()
                .and_then(|e| e.downcast_ref::<serve::Refusal>())
            {
                eprintln!("Error: {refused}");
                std::process::exit(serve::EXIT_REFUSED);
            }
            served
        }
        Command::Auth(cmd) => rt.block_on(commands::auth_command(cmd)),
        Command::Events(cmd) => commands::events_command(cmd, &rt),
        Command::Audit(cmd) => commands::audit_command(cmd, &rt),
        Command::Replay(args) => commands::replay_command(args, &rt),
        Command::Bridge(cmd) => rt.block_on(commands::bridge_command(cmd)),
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
