//! The `taskledger` binary: CLI wiring only.

/// mimalloc: the system allocator cost a fifth of the CPU under load (perf, BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::access::seal::SealKey;
use taskledger_core::auth::ClientRecord;
use taskledger_core::queue::Limits;
use taskledger_gateways::hawk::Clients;
use taskledger_gateways::AppState;
use taskledger_projections::{store, AuthEngine, AuthView, EmbeddedLog, Engine, QueueView};

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
    /// Run the queue and auth APIs, their reactors and the embedded log in one process.
    Serve(ServeArgs),
    /// Manage clients and roles of a running server (needs credentials with auth scopes).
    #[command(subcommand)]
    Auth(AuthCmd),
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
        client_id: String,
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
    /// More static clients: a JSON array of {clientId, accessToken, scopes?, description?}
    /// (upstream's STATIC_CLIENTS). Ids must start with `static/`.
    #[arg(long, env = "TASKLEDGER_STATIC_CLIENTS", hide_env_values = true)]
    static_clients: Option<String>,
    /// Also accept Taskcluster's conformance client `tester` / `no-secret` (never in production).
    #[arg(long, env = "TASKLEDGER_TEST_CLIENTS", default_value_t = false)]
    test_clients: bool,
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
    let (queue_token, _) = stored_secret(&args.data_dir.join("queue-access-token"), access_token)?;
    let (url_key, _) = stored_secret(&args.data_dir.join("url-signing-key"), access_token)?;

    let db = store::open(&args.data_dir.join("db")).context("opening the database")?;
    let log = Arc::new(EmbeddedLog::new(db.clone()));
    let auth_view = Arc::new(AuthView::open(db.clone()).context("loading the auth projection")?);
    let auth = AuthEngine::start(auth_view.clone(), log.clone())
        .await
        .context("starting the auth engine")?;
    let mut clients = Clients::new(auth_view, seal_key(&args.data_dir)?);
    let static_client = |id: &str, token: &str, scopes: &[&str]| ClientRecord {
        client_id: id.to_string(),
        access_token: token.to_string(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
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

    let view = QueueView::new(db).context("loading the queue projection")?;
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

    tokio::spawn(taskledger_workers::run_timers(engine.clone()));
    tokio::spawn(taskledger_workers::run_dependencies(engine.clone(), log));
    tokio::spawn(taskledger_workers::run_builtin_workers(engine.clone()));
    tokio::spawn(taskledger_workers::run_client_expiry(auth.clone()));

    let state = Arc::new(AppState {
        engine,
        auth,
        clients,
        queue_client: ("static/taskcluster/queue".into(), queue_token),
        public_url: public_url.clone(),
        blobs,
        url_key: url_key.into_bytes(),
        claim_work_poll: Duration::from_secs(args.claim_work_poll_secs),
        started: Instant::now(),
        started_at: chrono::Utc::now(),
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("taskledger is serving Taskcluster's queue and auth APIs at {public_url}/api/");
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
    axum::serve(listener, taskledger_gateways::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
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

fn main() -> Result<()> {
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
        Command::Serve(args) => rt.block_on(serve(args)),
        Command::Auth(cmd) => rt.block_on(auth_command(cmd)),
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
            client_id,
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
