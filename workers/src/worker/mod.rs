//! `taskledger worker`: generic-worker's protocol and process engine
//! (reference/worker-protocol.md), against any Taskcluster-compatible queue.
//!
//! - the main loop claims work (long-poll) for its free capacity and runs each task in its own
//!   tokio task;
//! - `task`: one claimed run from start to resolution — payload checks, live log, commands,
//!   artifacts, backing log, reportCompleted/Failed/Exception — every queue call on the task's
//!   behalf made with the task's own credentials, which the reclaimer renews;
//! - `process`: a command in its own process group, output straight into the task log;
//! - `livelog`: the task log file and the HTTP server that streams it while it grows;
//! - `artifacts`: payload artifacts and the backing log uploaded through the queue.
//!
//! Boundary: this module only speaks HTTP to a queue; it never touches the log or projections.

mod artifacts;
pub mod livelog;
mod mounts;
pub mod payload;
pub mod process;
mod proxy;
mod registration;
mod task;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Queue};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use process::Abort;

/// How often a registered worker asks worker-manager whether to stop.
const ASK_TERMINATE: Duration = Duration::from_secs(5);
/// claimWork is issued at most this often, unless a task finished meanwhile (generic-worker's
/// main loop, worker-protocol.md §3): a queue answering at once with nothing is not polled
/// in a tight loop.
const CLAIM_INTERVAL: Duration = Duration::from_secs(5);

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Exit codes of generic-worker (worker-protocol.md §10).
pub mod exit {
    pub const TASKS_DONE: i32 = 0;
    pub const TERMINATE: i32 = 70;
    pub const IDLE_TIMEOUT: i32 = 68;
    pub const INTERNAL_ERROR: i32 = 69;
    pub const INTERRUPTED: i32 = 71;
    pub const SHUTDOWN: i32 = 72;
    pub const INVALID_CONFIG: i32 = 73;
    pub const CANNOT_LOAD_CONFIG: i32 = 64;
}

/// The worker's configuration; field names follow generic-worker's config file where one
/// exists, so a generic-worker JSON config mostly loads as is. Its `Debug` shows neither the
/// access token nor the static secret.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerConfig {
    #[serde(rename = "rootURL")]
    pub root_url: String,
    pub client_id: String,
    pub access_token: String,
    pub certificate: Option<String>,
    pub provisioner_id: String,
    pub worker_type: String,
    pub worker_group: String,
    pub worker_id: String,
    pub capacity: u32,
    pub tasks_dir: PathBuf,
    /// Largest maxRunTime a payload may ask for, in seconds.
    pub max_task_run_time: u64,
    /// 0 = run forever.
    pub number_of_tasks_to_run: u64,
    /// Exit after this many seconds without a task (0 = never).
    pub idle_timeout_secs: u64,
    pub enable_live_log: bool,
    /// Where the live log server listens.
    pub livelog_listen: SocketAddr,
    /// How readers reach it (default `http://<bound address>`).
    pub livelog_public_url: Option<String>,
    /// How often a running task's status is checked, so a cancelled run stops within this
    /// time rather than at the next reclaim (0 = only at reclaim, as generic-worker).
    pub status_poll_secs: u64,
    /// Keep task directories after the run (for debugging).
    pub keep_task_dirs: bool,
    /// With `static_secret`: register with worker-manager as this pool's worker and use the
    /// credentials it issues (the pool id is also the task queue id).
    pub worker_pool_id: Option<String>,
    pub static_secret: Option<String>,
    /// The worker-manager provider of the pool (default `static`).
    pub provider_id: String,
    /// Where the worker runs (generic-worker's JSON text), given to tasks as
    /// `TASKCLUSTER_WORKER_LOCATION`.
    pub worker_location: Option<String>,
    /// The machine's instance type, given to tasks as `TASKCLUSTER_INSTANCE_TYPE`.
    pub instance_type: Option<String>,
    /// Keys of the config file this worker does not read (a generic-worker config has many):
    /// named in a warning at start, so a setting that does nothing here is not silent.
    #[serde(flatten)]
    pub unread: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "[redacted]");
        f.debug_struct("WorkerConfig")
            .field("root_url", &self.root_url)
            .field("client_id", &self.client_id)
            .field("access_token", &"[redacted]")
            .field("certificate", &self.certificate)
            .field("provisioner_id", &self.provisioner_id)
            .field("worker_type", &self.worker_type)
            .field("worker_group", &self.worker_group)
            .field("worker_id", &self.worker_id)
            .field("capacity", &self.capacity)
            .field("tasks_dir", &self.tasks_dir)
            .field("max_task_run_time", &self.max_task_run_time)
            .field("number_of_tasks_to_run", &self.number_of_tasks_to_run)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("enable_live_log", &self.enable_live_log)
            .field("livelog_listen", &self.livelog_listen)
            .field("livelog_public_url", &self.livelog_public_url)
            .field("status_poll_secs", &self.status_poll_secs)
            .field("keep_task_dirs", &self.keep_task_dirs)
            .field("worker_pool_id", &self.worker_pool_id)
            .field("static_secret", &secret(&self.static_secret))
            .field("provider_id", &self.provider_id)
            .field("worker_location", &self.worker_location)
            .field("instance_type", &self.instance_type)
            .field("unread", &self.unread.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            root_url: String::new(),
            client_id: String::new(),
            access_token: String::new(),
            certificate: None,
            provisioner_id: String::new(),
            worker_type: String::new(),
            worker_group: String::new(),
            worker_id: String::new(),
            capacity: 1,
            tasks_dir: PathBuf::from("tasks"),
            max_task_run_time: 86_400,
            number_of_tasks_to_run: 0,
            idle_timeout_secs: 0,
            enable_live_log: true,
            livelog_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            livelog_public_url: None,
            status_poll_secs: 10,
            keep_task_dirs: false,
            worker_pool_id: None,
            static_secret: None,
            provider_id: "static".into(),
            worker_location: None,
            instance_type: None,
            unread: BTreeMap::new(),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    (1..=38).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl WorkerConfig {
    pub fn task_queue_id(&self) -> String {
        format!("{}/{}", self.provisioner_id, self.worker_type)
    }

    /// Sets provisionerId/workerType from `<provisionerId>/<workerType>`.
    pub fn set_task_queue_id(&mut self, id: &str) -> Result<()> {
        let (p, w) = id
            .split_once('/')
            .with_context(|| format!("task queue id {id:?} is not <provisionerId>/<workerType>"))?;
        self.provisioner_id = p.into();
        self.worker_type = w.into();
        Ok(())
    }

    /// What generic-worker refuses to start without (worker-protocol.md §1).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.root_url.is_empty() {
            errors.push("rootURL must be set".into());
        }
        if self.static_secret.is_none() {
            for (name, value) in [
                ("clientId", &self.client_id),
                ("accessToken", &self.access_token),
            ] {
                if value.is_empty() {
                    errors.push(format!(
                        "{name} must be set (or register with a static secret)"
                    ));
                }
            }
        } else if self.worker_pool_id.is_none() {
            errors.push("a static secret needs the worker pool id to register in".into());
        }
        for (name, value) in [
            ("provisionerId", &self.provisioner_id),
            ("workerType", &self.worker_type),
            ("workerGroup", &self.worker_group),
            ("workerId", &self.worker_id),
        ] {
            if !is_identifier(value) {
                errors.push(format!("{name} {value:?} must be 1 to 38 of [a-zA-Z0-9-_]"));
            }
        }
        if self.capacity == 0 || self.capacity > 32 {
            errors.push("capacity must be between 1 and 32".into());
        }
        if self.max_task_run_time == 0 {
            errors.push("maxTaskRunTime must be at least 1 second".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            client_id: self.client_id.clone(),
            access_token: self.access_token.clone(),
            certificate: self.certificate.clone(),
        }
    }
}

/// Why a task's scopes do not cover what it asks for.
pub(crate) enum Shortfall {
    /// This scope is held neither as given nor once expanded: `malformed-payload`.
    Missing(String),
    /// The scopes could not be expanded: `resource-unavailable`.
    Unavailable(String),
}

/// Every scope of `required` in the task's scopes, expanded (with the worker's credentials,
/// `auth.expandScopes`) when the scopes as given do not hold them all, as generic-worker
/// checks a feature's scopes.
pub(crate) async fn task_holds(
    worker: &SharedQueue,
    task: &serde_json::Value,
    required: &[String],
) -> Result<(), Shortfall> {
    use taskledger_core::scopes::any_satisfies;
    let given = strings(&task["scopes"]);
    if required.iter().all(|r| any_satisfies(&given, r)) {
        return Ok(());
    }
    let auth = taskcluster::Auth::new(worker.builder(Duration::from_secs(60)))
        .map_err(|e| Shortfall::Unavailable(format!("no auth client: {e}")))?;
    let expanded = auth
        .expandScopes(&json!({ "scopes": given }))
        .await
        .map_err(|e| Shortfall::Unavailable(format!("expanding the task's scopes failed: {e}")))?;
    let expanded = strings(&expanded["scopes"]);
    match required.iter().find(|r| !any_satisfies(&expanded, r)) {
        Some(missing) => Err(Shortfall::Missing(missing.clone())),
        None => Ok(()),
    }
}

/// The strings of a JSON array (a task's `scopes`, say); anything else gives none.
pub(crate) fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// How long a stopping worker waits for the claimWork it has in flight. A reply that carries
/// tasks comes back at once (the queue claims and answers together), so a short wait catches
/// the claims a stop would otherwise leave held by nobody until they expire; a long-poll still
/// waiting for work is then dropped, which claims nothing.
const CLAIM_GRACE: Duration = Duration::from_secs(2);

/// How long a stopping worker spends handing claims back, all at once: a stop is usually
/// followed by a kill, and a claim not handed back only waits for its expiry.
const HAND_BACK_LIMIT: Duration = Duration::from_secs(10);

/// Waits up to `CLAIM_GRACE` for the claimWork in flight; the claims it brought, if any.
async fn settle_claim(in_flight: Option<InFlightClaim>) -> Vec<serde_json::Value> {
    let Some((request, _)) = in_flight else {
        return Vec::new();
    };
    let abort = request.abort_handle();
    match tokio::time::timeout(CLAIM_GRACE, request).await {
        Ok(Ok(Ok(reply))) => reply["tasks"].as_array().cloned().unwrap_or_default(),
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "claimWork failed while stopping");
            Vec::new()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "claimWork task failed while stopping");
            Vec::new()
        }
        // still waiting for work: dropping the request claims nothing
        Err(_) => {
            abort.abort();
            Vec::new()
        }
    }
}

/// Hands `claims` back (`worker-shutdown`), all at once, within `HAND_BACK_LIMIT`.
async fn hand_back_all(claims: Vec<serde_json::Value>, ctx: &Ctx) {
    if claims.is_empty() {
        return;
    }
    let all = futures::future::join_all(claims.iter().map(|c| task::hand_back(ctx, c)));
    if tokio::time::timeout(HAND_BACK_LIMIT, all).await.is_err() {
        tracing::warn!("handing claims back took too long; their claims will expire instead");
    }
}

type InFlightClaim = (tokio::task::JoinHandle<Result<serde_json::Value>>, u64);

/// A queue client whose credentials can change under it (task credentials at each reclaim,
/// worker credentials at each reregistration).
#[derive(Clone)]
pub(crate) struct SharedQueue {
    root_url: Arc<str>,
    inner: Arc<RwLock<(Arc<Queue>, Credentials)>>,
}

impl SharedQueue {
    pub(crate) fn new(root_url: &str, creds: Credentials) -> Result<SharedQueue> {
        let q = queue_client(root_url, creds.clone())?;
        Ok(SharedQueue {
            root_url: root_url.into(),
            inner: Arc::new(RwLock::new((Arc::new(q), creds))),
        })
    }

    pub(crate) fn get(&self) -> Arc<Queue> {
        self.inner.read().expect("queue lock").0.clone()
    }

    pub(crate) fn root_url(&self) -> &str {
        &self.root_url
    }

    pub(crate) fn credentials(&self) -> Credentials {
        self.inner.read().expect("queue lock").1.clone()
    }

    /// A client builder for another service, with these credentials as they are now.
    pub(crate) fn builder(&self, timeout: Duration) -> ClientBuilder {
        ClientBuilder::new(&*self.root_url)
            .credentials(self.credentials())
            .timeout(timeout)
    }

    /// Later calls use `creds`.
    pub(crate) fn renew(&self, creds: Credentials) -> Result<()> {
        let q = queue_client(&self.root_url, creds.clone())?;
        *self.inner.write().expect("queue lock") = (Arc::new(q), creds);
        Ok(())
    }
}

fn queue_client(root_url: &str, creds: Credentials) -> Result<Queue> {
    Queue::new(
        ClientBuilder::new(root_url)
            .credentials(creds)
            .timeout(Duration::from_secs(60)),
    )
}

/// How the worker is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// SIGINT: claim nothing more, let running tasks finish (exit 71).
    Finish,
    /// SIGTERM: kill running tasks, resolve them `worker-shutdown` (exit 72).
    Now,
}

/// What every task of this worker shares.
pub(crate) struct Ctx {
    config: WorkerConfig,
    live: Option<livelog::LiveLogs>,
    /// The worker's own client: claimWork, and status checks (task credentials hold no
    /// `queue:status:` scope; an anonymous caller holds it only where the deployment's
    /// anonymous role grants it).
    worker_queue: SharedQueue,
    /// The worker's environment minus its secrets: the base of every command's environment.
    base_env: BTreeMap<String, String>,
    /// Writable caches kept between tasks, under `<tasksDir>/caches`.
    caches: mounts::Caches,
    /// The groups the worker's user is in, which a payload's `osGroups` may name.
    worker_groups: Vec<String>,
}

/// The worker's environment without its secrets, plus the machine's description when the
/// config gives one (`TASKCLUSTER_WORKER_LOCATION`, `TASKCLUSTER_INSTANCE_TYPE`).
fn task_base_env(config: &WorkerConfig) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k != "TASKCLUSTER_ACCESS_TOKEN"
                && k != "TASKCLUSTER_CERTIFICATE"
                && !k.starts_with("TASKLEDGER_")
        })
        .collect();
    let described = [
        ("TASKCLUSTER_WORKER_LOCATION", &config.worker_location),
        ("TASKCLUSTER_INSTANCE_TYPE", &config.instance_type),
    ];
    for (name, value) in described {
        if let Some(v) = value {
            env.insert(name.into(), v.clone());
        }
    }
    env
}

/// Runs the worker until it is told to stop (or has run its number of tasks); returns
/// generic-worker's exit code.
pub async fn run(mut config: WorkerConfig, mut stop: watch::Receiver<Stop>) -> Result<i32> {
    if let Some(pool) = config.worker_pool_id.clone() {
        config.set_task_queue_id(&pool)?;
    }
    // named first: a misspelt key is often why the config is invalid
    if !config.unread.is_empty() {
        let keys: Vec<&str> = config.unread.keys().map(String::as_str).collect();
        tracing::warn!(
            keys = %keys.join(", "),
            "config keys this worker does not use are ignored"
        );
    }
    if let Err(errors) = config.validate() {
        for e in &errors {
            tracing::error!("invalid worker config: {e}");
        }
        return Ok(exit::INVALID_CONFIG);
    }
    std::fs::create_dir_all(&config.tasks_dir)
        .with_context(|| format!("creating {}", config.tasks_dir.display()))?;
    let live = if config.enable_live_log {
        match livelog::LiveLogs::start(config.livelog_listen, config.livelog_public_url.clone())
            .await
        {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no live logs: the server could not start");
                None
            }
        }
    } else {
        None
    };
    let mut registered = None;
    if let (Some(pool), Some(secret)) = (&config.worker_pool_id, &config.static_secret) {
        let r = registration::register(
            &config.root_url,
            pool,
            &config.provider_id,
            &config.worker_group,
            &config.worker_id,
            secret,
        )
        .await?;
        tracing::info!(client_id = r.credentials.client_id, expires = %r.expires, "registered with worker-manager");
        config.client_id = r.credentials.client_id.clone();
        config.access_token = r.credentials.access_token.clone();
        config.certificate = r.credentials.certificate.clone();
        registered = Some(r);
    }
    let queue = SharedQueue::new(&config.root_url, config.credentials())?;
    let _renewal = registered.map(|r| {
        let pool = config.worker_pool_id.clone().unwrap_or_default();
        AbortOnDrop(tokio::spawn(registration::keep_registered(
            config.root_url.clone(),
            pool,
            config.worker_group.clone(),
            config.worker_id.clone(),
            r,
            queue.clone(),
        )))
    });
    let caches_dir = config.tasks_dir.join("caches");
    let caches = mounts::Caches::open(caches_dir.clone())
        .with_context(|| format!("opening the caches in {}", caches_dir.display()))?;
    let ctx = Arc::new(Ctx {
        worker_queue: queue.clone(),
        base_env: task_base_env(&config),
        worker_groups: process::own_groups(),
        live,
        caches,
        config,
    });
    let task_queue_id = ctx.config.task_queue_id();
    tracing::info!(
        task_queue_id,
        worker_group = ctx.config.worker_group,
        worker_id = ctx.config.worker_id,
        capacity = ctx.config.capacity,
        "worker started"
    );

    let (abort_all, _) = watch::channel::<Option<Abort>>(None);
    let mut running: JoinSet<()> = JoinSet::new();
    // at most one claimWork in flight; it is never dropped unread while the worker runs, and
    // a stop waits a moment for it (`settle_claim`), because a reply dropped unread would
    // leave its tasks claimed by nobody until their claims expire
    let mut in_flight: Option<InFlightClaim> = None;
    let mut claimed: u64 = 0;
    let mut last_asked = tokio::time::Instant::now() - ASK_TERMINATE;
    let mut idle_since = tokio::time::Instant::now();
    // no claimWork before this
    let mut claim_not_before = tokio::time::Instant::now();
    let limit = ctx.config.number_of_tasks_to_run;
    loop {
        while running.try_join_next().is_some() {
            // a finished task frees a slot to claim for at once
            claim_not_before = tokio::time::Instant::now();
        }
        let requested = *stop.borrow();
        match requested {
            Stop::Now => {
                tracing::warn!(
                    running = running.len(),
                    "shutting down: aborting running tasks"
                );
                abort_all.send_replace(Some(Abort::WorkerShutdown));
                let late = settle_claim(in_flight.take()).await;
                hand_back_all(late, &ctx).await;
                while running.join_next().await.is_some() {}
                return Ok(exit::SHUTDOWN);
            }
            Stop::Finish => {
                tracing::warn!(
                    running = running.len(),
                    "interrupted: finishing running tasks"
                );
                // claims that arrive now are run like the others: finishing is what was asked
                for t in settle_claim(in_flight.take()).await {
                    let aborts = abort_all.subscribe();
                    running.spawn(task::run_claimed(ctx.clone(), t, aborts));
                }
                // a second signal (SIGTERM) still aborts them
                loop {
                    tokio::select! {
                        r = running.join_next() => if r.is_none() { return Ok(exit::INTERRUPTED) },
                        _ = stop.changed() => if *stop.borrow() == Stop::Now {
                            abort_all.send_replace(Some(Abort::WorkerShutdown));
                        },
                    }
                }
            }
            Stop::Running => {}
        }
        if in_flight.is_none()
            && ctx.config.static_secret.is_some()
            && last_asked.elapsed() >= ASK_TERMINATE
        {
            last_asked = tokio::time::Instant::now();
            let creds = ctx.worker_queue.credentials();
            if let Some(reason) = registration::should_terminate(
                &ctx.config.root_url,
                creds,
                &task_queue_id,
                &ctx.config.worker_group,
                &ctx.config.worker_id,
            )
            .await
            {
                tracing::warn!(
                    reason,
                    "worker-manager says terminate: finishing running tasks"
                );
                while running.join_next().await.is_some() {}
                return Ok(exit::TERMINATE);
            }
        }
        if limit > 0 && claimed >= limit && in_flight.is_none() {
            while running.join_next().await.is_some() {}
            return Ok(exit::TASKS_DONE);
        }
        if !running.is_empty() {
            idle_since = tokio::time::Instant::now();
        } else if in_flight.is_none()
            && ctx.config.idle_timeout_secs > 0
            && idle_since.elapsed() >= Duration::from_secs(ctx.config.idle_timeout_secs)
        {
            tracing::info!("idle timeout reached");
            return Ok(exit::IDLE_TIMEOUT);
        }
        let mut waiting_to_claim = false;
        if in_flight.is_none() {
            let mut free = (ctx.config.capacity as u64).saturating_sub(running.len() as u64);
            if limit > 0 {
                free = free.min(limit - claimed);
            }
            let now = tokio::time::Instant::now();
            waiting_to_claim = free > 0 && now < claim_not_before;
            if free > 0 && !waiting_to_claim {
                claim_not_before = now + CLAIM_INTERVAL;
                let body = json!({
                    "tasks": free,
                    "workerGroup": ctx.config.worker_group,
                    "workerId": ctx.config.worker_id,
                });
                let (queue, tq) = (ctx.worker_queue.get(), task_queue_id.clone());
                let h = tokio::spawn(async move { queue.claimWork(&tq, &body).await });
                in_flight = Some((h, free));
            }
        }
        let claim = tokio::select! {
            r = async { (&mut in_flight.as_mut().expect("guarded").0).await }, if in_flight.is_some() => {
                in_flight = None;
                r
            }
            Some(_) = running.join_next(), if !running.is_empty() => {
                // a finished task frees a slot to claim for at once
                claim_not_before = tokio::time::Instant::now();
                continue;
            }
            _ = tokio::time::sleep_until(claim_not_before), if waiting_to_claim => continue,
            // (a closed channel, no signal handler, disables this arm rather than spinning)
            Ok(()) = stop.changed() => continue,
        };
        match claim {
            Ok(Ok(reply)) => {
                let tasks = reply["tasks"].as_array().cloned().unwrap_or_default();
                for t in tasks {
                    claimed += 1;
                    idle_since = tokio::time::Instant::now();
                    let ctx = ctx.clone();
                    let aborts = abort_all.subscribe();
                    running.spawn(task::run_claimed(ctx, t, aborts));
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "claimWork failed; trying again in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "claimWork task failed");
                return Ok(exit::INTERNAL_ERROR);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerConfig;

    #[test]
    fn debug_shows_no_secret() {
        let config = WorkerConfig {
            client_id: "worker/one".into(),
            access_token: "the-access-token-itself".into(),
            static_secret: Some("the-static-secret-itself".into()),
            ..WorkerConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("worker/one"), "{shown}");
        assert!(!shown.contains("the-access-token-itself"), "{shown}");
        assert!(!shown.contains("the-static-secret-itself"), "{shown}");
        assert_eq!(shown.matches("[redacted]").count(), 2, "{shown}");
    }
}
