//! `taskledger worker` and `taskledger run-task`: CLI wiring for the task-executing worker.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Queue};
use taskledger_workers::worker::{self, Stop, WorkerConfig};

/// The task queue a new user's worker and tasks meet on when they name none.
pub const DEFAULT_TASK_QUEUE: &str = "local/default";

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// A generic-worker style JSON config file; flags and environment override its fields.
    #[arg(long, env = "TASKLEDGER_WORKER_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "TASKCLUSTER_ROOT_URL")]
    root_url: Option<String>,
    #[arg(long, env = "TASKCLUSTER_CLIENT_ID")]
    client_id: Option<String>,
    #[arg(long, env = "TASKCLUSTER_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    #[arg(long, env = "TASKCLUSTER_CERTIFICATE", hide_env_values = true)]
    certificate: Option<String>,
    /// `<provisionerId>/<workerType>` (default local/default).
    #[arg(long, env = "TASKLEDGER_TASK_QUEUE_ID")]
    task_queue_id: Option<String>,
    /// Default: local.
    #[arg(long, env = "TASKLEDGER_WORKER_GROUP")]
    worker_group: Option<String>,
    /// Default: this machine's host name.
    #[arg(long, env = "TASKLEDGER_WORKER_ID")]
    worker_id: Option<String>,
    /// Tasks run at once (default 1).
    #[arg(long)]
    capacity: Option<u32>,
    /// Where task directories are made (default ./tasks).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Largest maxRunTime accepted, in seconds (default 86400).
    #[arg(long)]
    max_task_run_time: Option<u64>,
    /// Exit after this many tasks (default: never).
    #[arg(long)]
    number_of_tasks_to_run: Option<u64>,
    /// Address of the live log server (default 127.0.0.1:0, any free port).
    #[arg(long, env = "TASKLEDGER_LIVELOG_LISTEN")]
    livelog_listen: Option<SocketAddr>,
    /// URL readers use to reach the live log server (default http://<listen address>).
    #[arg(long, env = "TASKLEDGER_LIVELOG_PUBLIC_URL")]
    livelog_public_url: Option<String>,
    /// Seconds between checks that a running task was not cancelled (0: only at reclaim).
    #[arg(long)]
    status_poll_secs: Option<u64>,
    /// Keep task directories after their runs.
    #[arg(long)]
    keep_task_dirs: bool,
    /// Register with worker-manager as a worker of this pool (`<provisionerId>/<workerType>`,
    /// also the task queue) and use the credentials it issues; needs --static-secret.
    #[arg(long, env = "TASKLEDGER_WORKER_POOL_ID")]
    worker_pool_id: Option<String>,
    /// The static secret given to worker-manager's createWorker for this worker.
    #[arg(long, env = "TASKLEDGER_WORKER_STATIC_SECRET", hide_env_values = true)]
    static_secret: Option<String>,
    /// The pool's worker-manager provider (default static).
    #[arg(long)]
    provider_id: Option<String>,
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(38)
        .collect();
    if id.is_empty() {
        "worker".into()
    } else {
        id
    }
}

/// The config file, when one is named (else the defaults).
fn load_config(a: &WorkerArgs) -> Result<WorkerConfig> {
    match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        }
        None => Ok(WorkerConfig::default()),
    }
}

/// The flags over the config file.
fn build_config(mut c: WorkerConfig, a: WorkerArgs) -> Result<WorkerConfig> {
    if let Some(v) = a.root_url {
        c.root_url = v;
    }
    if c.root_url.is_empty() {
        c.root_url = "http://127.0.0.1:8080".into();
    }
    if let Some(v) = a.client_id {
        c.client_id = v;
    }
    if let Some(v) = a.access_token {
        c.access_token = v;
    }
    if a.certificate.is_some() {
        c.certificate = a.certificate;
    }
    if let Some(v) = a.task_queue_id {
        c.set_task_queue_id(&v)?;
    }
    if let Some(pool) = &a.worker_pool_id {
        c.set_task_queue_id(pool)?;
    }
    if c.provisioner_id.is_empty() && c.worker_type.is_empty() {
        c.set_task_queue_id(DEFAULT_TASK_QUEUE)?;
    }
    if let Some(v) = a.worker_group {
        c.worker_group = v;
    }
    if c.worker_group.is_empty() {
        c.worker_group = "local".into();
    }
    if let Some(v) = a.worker_id {
        c.worker_id = v;
    }
    if c.worker_id.is_empty() {
        c.worker_id = host_name();
    }
    if let Some(v) = a.capacity {
        c.capacity = v;
    }
    if let Some(v) = a.work_dir {
        c.tasks_dir = v;
    }
    if let Some(v) = a.max_task_run_time {
        c.max_task_run_time = v;
    }
    if let Some(v) = a.number_of_tasks_to_run {
        c.number_of_tasks_to_run = v;
    }
    if let Some(v) = a.livelog_listen {
        c.livelog_listen = v;
    }
    if a.livelog_public_url.is_some() {
        c.livelog_public_url = a.livelog_public_url;
    }
    if let Some(v) = a.status_poll_secs {
        c.status_poll_secs = v;
    }
    c.keep_task_dirs |= a.keep_task_dirs;
    if a.worker_pool_id.is_some() {
        c.worker_pool_id = a.worker_pool_id;
    }
    if a.static_secret.is_some() {
        c.static_secret = a.static_secret;
    }
    if let Some(v) = a.provider_id {
        c.provider_id = v;
    }
    Ok(c)
}

/// Runs the worker; returns its exit code (generic-worker's codes).
pub async fn worker_command(args: WorkerArgs) -> Result<i32> {
    // generic-worker's codes: a config that cannot be read 64, one that is wrong 73
    let loaded = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("taskledger worker: cannot load the config: {e:#}");
            return Ok(worker::exit::CANNOT_LOAD_CONFIG);
        }
    };
    let config = match build_config(loaded, args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("taskledger worker: invalid config: {e:#}");
            return Ok(worker::exit::INVALID_CONFIG);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::Running);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { stop_tx.send_replace(Stop::Now); }
                _ = int.recv() => {
                    // a second Ctrl-C stops at once
                    let next = if *stop_tx.borrow() == Stop::Running { Stop::Finish } else { Stop::Now };
                    stop_tx.send_replace(next);
                }
            }
        }
    });
    eprintln!(
        "taskledger worker: claiming from {} at {} as {}/{}",
        config.task_queue_id(),
        config.root_url,
        config.worker_group,
        config.worker_id
    );
    worker::run(config, stop_rx).await
}

#[derive(clap::Args)]
pub struct RunTaskArgs {
    #[arg(long, env = "TASKLEDGER_TASK_QUEUE_ID", default_value = DEFAULT_TASK_QUEUE)]
    task_queue_id: String,
    /// Seconds the command may run.
    #[arg(long, default_value_t = 600)]
    max_run_time: u64,
    /// A file the command leaves in its work directory, uploaded as public/<path> (repeatable).
    #[arg(long = "artifact")]
    artifacts: Vec<String>,
    #[command(flatten)]
    conn: super::Connection,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `taskledger run-task -- CMD ARGS`: creates a task, follows its live log on the terminal,
/// and exits 0 when it completed (1 failed, 2 exception).
pub async fn run_task_command(a: RunTaskArgs) -> Result<i32> {
    let queue = Queue::new(
        ClientBuilder::new(&a.conn.root_url)
            .credentials(Credentials::new(&a.conn.client_id, &a.conn.access_token)),
    )?;
    let task_id = slugid::nice();
    let now = chrono::Utc::now();
    let artifacts: Vec<Value> = a
        .artifacts
        .iter()
        .map(|p| json!({"type": "file", "path": p, "name": format!("public/{p}")}))
        .collect();
    let def = json!({
        "taskQueueId": a.task_queue_id,
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::seconds(a.max_run_time as i64 + 3600)).to_rfc3339(),
        "expires": (now + chrono::Duration::days(30)).to_rfc3339(),
        "payload": {
            "command": [a.command],
            "maxRunTime": a.max_run_time,
            "artifacts": artifacts,
        },
        "metadata": {
            "name": format!("run-task: {}", a.command.join(" ")),
            "description": "created by taskledger run-task",
            "owner": "nobody@taskledger.invalid",
            "source": "https://taskledger.invalid/run-task",
        },
    });
    queue
        .createTask(&task_id, &def)
        .await
        .context("createTask")?;
    eprintln!("task {task_id} created on {}", a.task_queue_id);

    let mut printed = 0usize;
    let mut waited = std::time::Instant::now();
    loop {
        let status = queue.status(&task_id).await.context("status")?;
        let runs = status["status"]["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(last) = runs.last() else {
            bail!("task {task_id} has no run");
        };
        let run_id = runs.len() - 1;
        let state = last["state"].as_str().unwrap_or("");
        match state {
            "pending" => {
                if waited.elapsed() > Duration::from_secs(10) {
                    eprintln!(
                        "still pending: is a worker claiming from {}?",
                        a.task_queue_id
                    );
                    waited = std::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            "running" => {
                // the live log ends when the run's log closes; then the loop sees the result
                printed = follow_log(&queue, &task_id, run_id, printed).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => {
                follow_log(&queue, &task_id, run_id, printed).await;
                let reason = last["reasonResolved"].as_str().unwrap_or("");
                let will_retry =
                    state == "exception" && status["status"]["state"].as_str() == Some("pending");
                if will_retry {
                    eprintln!("run {run_id} ended: exception ({reason}); the task is retried");
                    printed = 0;
                    continue;
                }
                eprintln!(
                    "task {task_id} {state}{}",
                    if reason.is_empty() || reason == state {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                );
                return Ok(match state {
                    "completed" => 0,
                    "failed" => 1,
                    _ => 2,
                });
            }
        }
    }
}

/// Streams the run's log from byte `skip` to stdout; returns how many bytes were printed in all.
/// During the run that is the live log; afterwards the link leads to the backing log.
async fn follow_log(queue: &Queue, task_id: &str, run_id: usize, skip: usize) -> usize {
    let Ok(url) = queue.getArtifact_signed_url(
        task_id,
        &run_id.to_string(),
        "public/logs/live.log",
        Duration::from_secs(3600),
    ) else {
        return skip;
    };
    let Ok(resp) = reqwest::get(&url).await else {
        return skip;
    };
    if !resp.status().is_success() {
        return skip;
    }
    let mut seen = 0usize;
    let mut stream = resp.bytes_stream();
    let mut out = std::io::stdout();
    use futures::StreamExt;
    while let Some(Ok(chunk)) = stream.next().await {
        let start = skip.saturating_sub(seen).min(chunk.len());
        if start < chunk.len() {
            let _ = out.write_all(&chunk[start..]);
            let _ = out.flush();
        }
        seen += chunk.len();
    }
    seen.max(skip)
}
