//! The commands beside `serve`: `auth` (through the official client), `bridge`, `events`,
//! `audit` and `replay` (on the data directory or the Kafka topics).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::github::GITHUB_TOPIC;
use taskledger_core::hooks::HOOKS_TOPIC;
use taskledger_core::index::INDEX_TOPIC;
use taskledger_core::log::{EventLog, QUEUE_TOPIC};
use taskledger_core::notify::NOTIFY_TOPIC;
use taskledger_core::object::OBJECT_TOPIC;
use taskledger_core::secrets::SECRETS_TOPIC;
use taskledger_core::worker_manager::WORKER_MANAGER_TOPIC;
use taskledger_projections::{audit, store, EmbeddedLog};

use crate::serve::shutdown_signal;
use crate::{
    AuditCmd, AuthCmd, BridgeCmd, Connection, DataDir, EventsCmd, KafkaSource, ReplayArgs,
    ALL_TOPICS,
};

fn auth_client(conn: &Connection) -> Result<taskcluster::Auth> {
    taskcluster::Auth::new(taskcluster::ClientBuilder::new(&conn.root_url).credentials(
        taskcluster::Credentials::new(&conn.client_id, &conn.access_token),
    ))
}

/// `taskledger auth ...`: the official Rust client against a running server.
pub(crate) async fn auth_command(cmd: AuthCmd) -> Result<()> {
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
        "secrets" => vec![SECRETS_TOPIC],
        "index" => vec![INDEX_TOPIC],
        "hooks" => vec![HOOKS_TOPIC],
        "notify" => vec![NOTIFY_TOPIC],
        "github" => vec![GITHUB_TOPIC],
        "all" => ALL_TOPICS.to_vec(),
        other => {
            anyhow::bail!(
                "unknown service {other}: queue, auth, worker-manager, object, secrets, index, hooks, notify, github or all"
            )
        }
    })
}

/// `taskledger bridge run|replay`.
pub(crate) async fn bridge_command(cmd: BridgeCmd) -> Result<()> {
    match cmd {
        BridgeCmd::Run {
            pulse_url,
            pulse_channels,
            skip_history,
            data,
        } => bridge_run(pulse_url, pulse_channels, skip_history, data).await,
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
    taskledger_bridge::check_url(&pulse_url)?;
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
async fn bridge_run(
    pulse_url: String,
    channels: u8,
    skip_history: bool,
    data: DataDir,
) -> Result<()> {
    taskledger_bridge::check_url(&pulse_url)?;
    let (db, _secondary) = open_read_only(&data)?;
    let log = Arc::new(EmbeddedLog::new(db));
    let follower = log.clone();
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || follower.follow_primary());
    let state = taskledger_bridge::BridgeState::open(&data.data_dir.join("bridge"))
        .context("opening the bridge's state (is another bridge running on this data dir?)")?;
    if skip_history {
        log.follow_primary();
        let folded = taskledger_bridge::skip_history(&*log, &state)
            .await
            .context("folding the history without publishing it")?;
        if folded > 0 {
            eprintln!("taskledger bridge: {folded} events of history folded, not published");
        }
    }
    eprintln!(
        "taskledger bridge: republishing {} to Pulse",
        data.data_dir.display()
    );
    let stats = Arc::new(taskledger_bridge::BridgeStats::default());
    tokio::select! {
        _ = taskledger_bridge::run(log, Some(refresh), Arc::new(state), pulse_url, usize::from(channels), None, stats, false) => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// `audit verify --checkpoints`: every checkpoint must be signed by the expected key and
/// still match the log; exits 1 naming the first that does not.
fn verify_checkpoints(
    path: &Path,
    public_key: Option<&str>,
    mut check: impl FnMut(&audit::Checkpoint) -> Result<(), String>,
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
        let cp: audit::Checkpoint = serde_json::from_str(line)
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

pub(crate) fn events_command(cmd: EventsCmd, rt: &tokio::runtime::Runtime) -> Result<()> {
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
                // without --follow: everything up to where the log ends now, which a slow read
                // (a Kafka broker's) must not cut short
                let end = match self.follow {
                    true => None,
                    false => Some(log.end_offset(topic, 0).await?),
                };
                loop {
                    let batch = match end {
                        None => log.read(topic, 0, *offset, 1024).await?,
                        Some(end) if *offset < end => {
                            let patience = audit::READ_PATIENCE;
                            audit::read_onward(log, topic, 0, *offset, 1024, end, patience).await?
                        }
                        Some(_) => break,
                    };
                    if batch.next <= *offset {
                        break;
                    }
                    any = true;
                    for r in &batch.records {
                        let line = audit::record_json(topic, r)?;
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
fn print_chain_report(report: audit::ChainReport, started: Instant) {
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

pub(crate) fn audit_command(cmd: AuditCmd, rt: &tokio::runtime::Runtime) -> Result<()> {
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
                audit::AsOf::Hook(Some(h)) => taskledger_gateways::hooks::hook_json(&h),
                audit::AsOf::Task(None)
                | audit::AsOf::TaskGroup(None)
                | audit::AsOf::Client(None)
                | audit::AsOf::Role(None)
                | audit::AsOf::Hook(None) => anyhow::bail!("{kind} {id} did not exist at {time}"),
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

pub(crate) fn replay_command(args: ReplayArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
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
        if !audit::projection_present(&live, name) {
            println!(
                "{name}: not in this data directory (written before taskledger had it); skipped"
            );
            continue;
        }
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
