//! `taskledger serve`: the secrets it keeps in the data directory, the log it runs on, the
//! services it starts beside the HTTP API, and its shutdown.

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::github::GITHUB_TOPIC;
use taskledger_core::hooks::HOOKS_TOPIC;
use taskledger_core::index::INDEX_TOPIC;
use taskledger_core::log::{EventLog, LogError, QUEUE_TOPIC};
use taskledger_core::notify::NOTIFY_TOPIC;
use taskledger_core::object::OBJECT_TOPIC;
use taskledger_core::queue::Limits;
use taskledger_core::secrets::SECRETS_TOPIC;
use taskledger_core::worker_manager::WORKER_MANAGER_TOPIC;
use taskledger_gateways::hawk::Clients;
use taskledger_gateways::AppState;
use taskledger_projections::exits::{self, PanicExits};
use taskledger_projections::{
    store, AuthEngine, AuthView, EmbeddedLog, Engine, GithubEngine, GithubView, HooksEngine,
    HooksView, IndexEngine, IndexView, KafkaConfig, KafkaLog, NotifyEngine, NotifyView,
    ObjectEngine, ObjectView, QueueView, SecretsEngine, SecretsView, WorkerManagerEngine,
    WorkerManagerView,
};

use crate::checks::{
    checkpoint_key, embedded_chain_walk, kafka_chain_walk, run_checkpoints, run_projection_checks,
    ChainWalk,
};
use crate::secrets::{access_token, seal_key, shared_secret, stored_secret, Secrets};
use crate::static_clients::{insert_static_clients, StaticTokens, WORKER_MANAGER_CLIENT};
use crate::{cluster, metrics, ServeArgs, ALL_TOPICS};

/// A start refused because the data directory and the log do not belong together. `main`
/// exits with `EXIT_REFUSED` (78, EX_CONFIG) for it, which a supervisor should not restart
/// into (systemd: `RestartPreventExitStatus=78`), unlike a broker that is down (exit 1).
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

pub(crate) const EXIT_REFUSED: i32 = 78;

/// The webhook secrets given, without empty ones (a trailing comma, an empty variable), which
/// anyone could sign with.
fn github_webhook_secrets(args: &ServeArgs) -> Vec<String> {
    args.github_webhook_secret
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect()
}

pub(crate) async fn serve(args: ServeArgs) -> Result<()> {
    if let Some(url) = &args.pulse_url {
        taskledger_bridge::check_url(url)?;
    }
    let github_webhook_secrets = github_webhook_secrets(&args);
    // an App that takes unsigned webhooks creates tasks for anyone who can reach the server
    if args.github_app_id.is_some()
        && github_webhook_secrets.is_empty()
        && !args.github_allow_unsigned_webhooks
    {
        return Err(Refusal(
            "--github-app-id needs --github-webhook-secret (the secret GitHub signs the App's webhooks with): without one, anyone who can reach this server could have tasks created as any repository's role; --github-allow-unsigned-webhooks takes that risk".into(),
        )
        .into());
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let panic_exits = Arc::new(panic_exits(&args.data_dir));
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
    // the log the projections are folded from: another one's offsets mean other events
    let identity = match &args.kafka_brokers {
        None => "the embedded log".to_string(),
        Some(_) => format!("Kafka topics {}*", args.kafka_topic_prefix),
    };
    if let Some(before) = store::log_identity(&db, &identity).context("reading the database")? {
        return Err(Refusal(format!(
            "{} was served from {before}, not {identity}: its projections cannot follow \
             another log (start on an empty --data-dir to fold {identity} from its start)",
            args.data_dir.display()
        ))
        .into());
    }
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
            run_services(
                args,
                public_url,
                secrets,
                panic_exits,
                db,
                log,
                true,
                walk,
                None,
            )
            .await
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
            // ownership as far as an earlier start observed it: no re-reading from offset 0
            log.keep_indexes_in(db.clone());
            match log.check_kept_indexes(&topics).await {
                Ok(()) => {}
                Err(LogError::Corrupt(mismatch)) => return Err(Refusal(mismatch).into()),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("checking the Kafka topics against this data directory"))
                }
            }
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
            let stopping = log.clone();
            let served = run_services(
                args,
                public_url,
                secrets,
                panic_exits,
                db,
                log,
                false,
                walk,
                expel,
            )
            .await;
            // a graceful stop: the next start reads nothing of the topics again
            stopping.keep_all_indexes().await;
            served
        }
    }
}

/// Records this run's exit after a panic, should there be one, in the data directory, and
/// reads back those of earlier runs: an operator (or `/metrics`) can tell a crash loop, the
/// same panic after every restart, from a one-off.
fn panic_exits(data_dir: &Path) -> PanicExits {
    let file = data_dir.join("panic-exits.jsonl");
    if let Err(e) = exits::rotate_if_large(&file) {
        tracing::warn!(error = %e, path = %file.display(), "could not rotate the panic exits");
    }
    exits::record_in(file.clone());
    let earlier = PanicExits::read(&file).unwrap_or_else(|e| {
        tracing::warn!(error = %e, path = %file.display(), "could not read earlier panic exits");
        PanicExits::default()
    });
    if let Some(latest) = earlier.latest.as_ref().filter(|_| earlier.last_hour > 0) {
        tracing::warn!(
            latest = latest.service,
            at = latest.time,
            last_hour = earlier.last_hour,
            path = %file.display(),
            "earlier runs exited after a panic; an exit at every start is a crash loop"
        );
    }
    earlier
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
            taskledger_projections::exits::exit_after_panic(name);
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
    panic_exits: Arc<PanicExits>,
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
    view.rewrite_worker_rows()
        .context("rewriting worker rows written before their quarantine history")?;
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
    let secrets_view =
        Arc::new(SecretsView::open(db.clone()).context("loading the secrets projection")?);
    let secrets = SecretsEngine::start(secrets_view, log.clone())
        .await
        .context("starting the secrets engine")?;
    let index_view = Arc::new(IndexView::open(db.clone()).context("loading the index projection")?);
    let index = IndexEngine::start(index_view, log.clone())
        .await
        .context("starting the index engine")?;
    let mut hooks_view = HooksView::open(db.clone()).context("loading the hooks projection")?;
    if !embedded {
        hooks_view = hooks_view.with_stream_index();
    }
    let hooks_view = Arc::new(hooks_view);
    let hooks = HooksEngine::start(hooks_view, log.clone())
        .await
        .context("starting the hooks engine")?;
    let notify_view =
        Arc::new(NotifyView::open(db.clone()).context("loading the notify projection")?);
    let notify = NotifyEngine::start(notify_view, log.clone())
        .await
        .context("starting the notify engine")?;
    let mailer = match &args.smtp_url {
        Some(url) => taskledger_workers::mail::Mailer::smtp(url).map_err(anyhow::Error::msg)?,
        None => taskledger_workers::mail::Mailer::directory(args.data_dir.join("mail"))
            .context("creating the mail directory")?,
    };
    let email_from: taskledger_workers::mail::Mailbox = args
        .email_from
        .parse()
        .with_context(|| format!("--email-from {:?} is not a mailbox", args.email_from))?;
    let github_view =
        Arc::new(GithubView::open(db.clone()).context("loading the github projection")?);
    let github = GithubEngine::start(github_view, log.clone())
        .await
        .context("starting the github engine")?;
    let github_app = match (&args.github_app_id, &args.github_private_key) {
        (Some(id), Some(key)) => {
            let pem = std::fs::read(key)
                .with_context(|| format!("reading the GitHub App's key {}", key.display()))?;
            Some(Arc::new(taskledger_gateways::github::api::GithubApp::new(
                &args.github_api_url,
                id,
                &pem,
            )?))
        }
        _ => None,
    };
    spawn_service(
        "mail delivery",
        taskledger_workers::mail::run_mail_delivery(notify.clone(), mailer, email_from),
    );
    let mut clients = Clients::new(auth_view, seal_key(&args.data_dir)?);
    insert_static_clients(
        &mut clients,
        StaticTokens {
            root: &root_token,
            queue: &queue_token,
            worker_manager: &worker_manager_token,
        },
        args.static_clients.as_deref(),
        args.test_clients,
    )?;

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
    spawn_service(
        "worker expiry",
        taskledger_workers::run_worker_expiry(
            worker_manager.clone(),
            Duration::from_secs(args.expiry_scan_secs.max(1)),
        ),
    );
    spawn_service(
        "route indexer",
        taskledger_workers::run_indexing(engine.clone(), index.clone(), log.clone()),
    );
    spawn_service(
        "index expiry",
        taskledger_workers::run_index_expiry(
            index.clone(),
            Duration::from_secs(args.expiry_scan_secs.max(1)),
        ),
    );
    spawn_service(
        "secret expiry",
        taskledger_workers::run_secret_expiry(
            secrets.clone(),
            Duration::from_secs(args.expiry_scan_secs.max(1)),
        ),
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
                args.pulse_skip_history,
            ),
        );
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
        secrets,
        index,
        hooks,
        notify,
        github,
        github_app,
        github_webhook_secrets: github_webhook_secrets(&args),
        public_url: public_url.clone(),
        blobs,
        url_key: url_key.into_bytes(),
        claim_work_poll: Duration::from_secs(args.claim_work_poll_secs),
        started: Instant::now(),
        started_at: chrono::Utc::now(),
        ends: Default::default(),
    });
    spawn_service(
        "github jobs",
        taskledger_gateways::github::run_jobs(state.clone()),
    );
    spawn_service(
        "github statuses",
        taskledger_gateways::github::run_reporter(state.clone()),
    );
    spawn_service(
        "hook scheduler",
        taskledger_gateways::hooks::run_schedule(state.clone()),
    );
    if let Some(url) = &args.pulse_url {
        spawn_service(
            "hook listener",
            taskledger_gateways::hooks::run_listener(state.clone(), url.clone()),
        );
        spawn_service(
            "notify listener",
            taskledger_gateways::notify::run_listener(
                state.clone(),
                url.clone(),
                args.notify_queue.clone(),
            ),
        );
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!(
        "taskledger is serving Taskcluster's queue, auth, worker-manager, object, secrets, index, hooks, notify, github and purge-cache APIs at {public_url}/api/"
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
    if args.pulse_url.is_some() {
        println!("  republishing events to Pulse (AMQP); hooks with bindings fire on its messages, task routes notify.* notify");
    } else {
        println!("  no Pulse (--pulse-url): task routes notify.* send nothing, hooks' bindings never fire");
    }
    match &args.smtp_url {
        Some(_) => println!("  notify's emails go out by SMTP (--smtp-url)"),
        None => println!(
            "  notify's emails are written to {} as .eml files (--smtp-url sends them)",
            args.data_dir.join("mail").display()
        ),
    }
    match &args.github_app_id {
        Some(id) => println!(
            "  GitHub App {id}: webhooks at {public_url}/api/github/v1/github become tasks from .taskcluster.yml"
        ),
        None => println!(
            "  no GitHub App (--github-app-id): webhooks at {public_url}/api/github/v1/github are recorded and published, and create no task"
        ),
    }
    if state.github_webhook_secrets.is_empty() {
        println!("  no --github-webhook-secret: unsigned webhooks are taken");
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
        (SECRETS_TOPIC, state.secrets.role().clone()),
        (INDEX_TOPIC, state.index.role().clone()),
        (HOOKS_TOPIC, state.hooks.role().clone()),
        (NOTIFY_TOPIC, state.notify.role().clone()),
        (GITHUB_TOPIC, state.github.role().clone()),
    ]);
    let cluster = if args.kafka_group.is_some() {
        // the same order as `roles`
        let prefixes = [
            "/api/queue/v1/",
            "/api/auth/v1/",
            "/api/worker-manager/v1/",
            "/api/object/v1/",
            "/api/secrets/v1/",
            "/api/index/v1/",
            "/api/hooks/v1/",
            "/api/notify/v1/",
            "/api/github/v1/",
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
                // purge-cache's requests are the worker-manager partition's commands
                .chain(std::iter::once(cluster::Service {
                    prefix: "/api/purge-cache/v1/",
                    topic: WORKER_MANAGER_TOPIC,
                    role: state.worker_manager.role().clone(),
                }))
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
            panic_exits,
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

pub(crate) async fn shutdown_signal() {
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
