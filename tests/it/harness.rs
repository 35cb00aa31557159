//! Starts the real `taskledger` binary on a free loopback port with its own data directory.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use taskcluster::{ClientBuilder, Credentials, Queue};

pub const ROOT_TOKEN: &str = "integration-test-root-access-token-0123456789";

pub struct Server {
    child: Option<Child>,
    pub root_url: String,
    pub data_dir: PathBuf,
    port: u16,
    extra_env: Vec<(String, String)>,
}

/// A free loopback port, never handed out twice in this process. The ports lie below the
/// kernel's ephemeral range (32768-60999 by default), so while a server restarts on its port
/// neither another test's `bind(0)` nor an outgoing connection can take it, and a restarted
/// server's readiness ping cannot reach another test's server.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    // processes started one after another begin at different places in the span
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(FIRST + (start + n) % SPAN).expect("below 32,000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// Which event log a server runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backend {
    Embedded,
    Kafka,
}

/// The Kafka-protocol broker the tests use: `KAFKA_BOOTSTRAP`, which README's test command
/// sets after starting one (a real cluster works as well).
pub fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect(
        "KAFKA_BOOTSTRAP is not set: run ./scripts/test.sh, which starts a broker, \
         or point it at a Kafka cluster",
    )
}

/// Runs a `taskledger` log tool on the Kafka topics under `prefix`.
pub fn kafka_tool(prefix: &str, args: &[&str]) -> std::process::Output {
    kafka_tool_with(prefix, args, &[])
}

/// The same with `env` set (e.g. a fail point).
pub fn kafka_tool_with(prefix: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(args)
        .args(["--kafka-brokers", &kafka_bootstrap()])
        .args(["--kafka-topic-prefix", prefix])
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A topic prefix no other test uses.
pub fn fresh_topic_prefix() -> String {
    format!(
        "it-{}.",
        slugid::nice().to_lowercase().replace(['_', '-'], "")
    )
}

impl Server {
    /// The server's Prometheus text exposition (`/metrics`).
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.root_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A JSON request signed as the root client, answered with its status and JSON body (for
    /// what the official clients do not show, such as an error body's `requestInfo`).
    pub async fn root_call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        self.call_as(("static/taskcluster/root", ROOT_TOKEN), method, path, body)
            .await
    }

    /// The same, signed as the client `(id, access token)`.
    pub async fn call_as(
        &self,
        (id, token): (&str, &str),
        method: &str,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let body = body.to_string();
        self.call_raw(
            (id, token),
            method,
            path,
            Some("application/json"),
            body.as_bytes(),
        )
        .await
    }

    /// The same with the body's bytes and content type as given (`None`: no such header).
    pub async fn call_raw(
        &self,
        client: (&str, &str),
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        self.try_call_raw(client, method, path, content_type, body)
            .await
            .unwrap()
    }

    /// `root_call`, or `None` when the server closed the connection without an answer.
    pub async fn root_call_or_none(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Option<(u16, Value)> {
        let client = ("static/taskcluster/root", ROOT_TOKEN);
        let body = body.to_string();
        self.try_call_raw(
            client,
            method,
            path,
            Some("application/json"),
            body.as_bytes(),
        )
        .await
        .ok()
    }

    async fn try_call_raw(
        &self,
        (id, token): (&str, &str),
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> reqwest::Result<(u16, Value)> {
        let creds = hawk::Credentials {
            id: id.into(),
            key: hawk::Key::new(token, hawk::DigestAlgorithm::Sha256).unwrap(),
        };
        let header = hawk::RequestBuilder::new(method, "127.0.0.1", self.port, path)
            .request()
            .make_header(&creds)
            .unwrap();
        let mut r = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?
            .request(method.parse().unwrap(), format!("{}{path}", self.root_url))
            .header("authorization", format!("Hawk {header}"));
        if let Some(c) = content_type {
            r = r.header("content-type", c);
        }
        let r = r.body(body.to_vec()).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// The value the server was started with for the environment variable `name`, if any
    /// (e.g. its Kafka topic prefix).
    pub fn env(&self, name: &str) -> Option<&str> {
        self.extra_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A server with default settings plus `env` (e.g. a short claim timeout).
    pub async fn start(env: &[(&str, &str)]) -> Server {
        Server::start_on(Backend::Embedded, env).await
    }

    /// The same on the given log; on Kafka with topics of its own.
    pub async fn start_on(backend: Backend, env: &[(&str, &str)]) -> Server {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if backend == Backend::Kafka {
            env.push(("TASKLEDGER_KAFKA_BROKERS".into(), kafka_bootstrap()));
            env.push(("TASKLEDGER_KAFKA_TOPIC_PREFIX".into(), fresh_topic_prefix()));
        }
        Server::start_with(env).await
    }

    pub async fn start_with(extra_env: Vec<(String, String)>) -> Server {
        let data_dir = std::env::temp_dir().join(format!("taskledger-it-{}", slugid::nice()));
        let port = free_port();
        let mut s = Server {
            child: None,
            root_url: format!("http://127.0.0.1:{port}"),
            data_dir,
            port,
            extra_env,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskledger"));
        cmd.arg("serve")
            .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("TASKLEDGER_DATA_DIR", &self.data_dir)
            .env("TASKLEDGER_ROOT_ACCESS_TOKEN", ROOT_TOKEN)
            .env("TASKLEDGER_TEST_CLIENTS", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("start taskledger"));
        let ping = format!("{}/api/queue/v1/ping", self.root_url);
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&ping).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's exit code once it has exited by itself, waiting at most `limit` (`None`:
    /// still running, or ended by a signal).
    pub async fn exited(&mut self, limit: Duration) -> Option<i32> {
        exit_code(&mut self.child, limit).await
    }

    /// SIGTERM, then waits for the server to drain and exit: a graceful stop.
    pub async fn stop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        assert!(
            self.exited(Duration::from_secs(30)).await.is_some(),
            "the server did not stop on SIGTERM"
        );
    }

    /// Runs `serve` on this server's data directory (not running) with `env` added to its
    /// own, expecting it to refuse to start: its exit code and what it wrote on stderr.
    pub async fn refused_start(&self, env: &[(String, String)]) -> (Option<i32>, String) {
        let stderr_file =
            std::env::temp_dir().join(format!("taskledger-it-stderr-{}", slugid::nice()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskledger"));
        cmd.arg("serve")
            .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("TASKLEDGER_DATA_DIR", &self.data_dir)
            .env("TASKLEDGER_ROOT_ACCESS_TOKEN", ROOT_TOKEN)
            .env("TASKLEDGER_TEST_CLIENTS", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&stderr_file).expect("stderr file"),
            ));
        for (k, v) in self.extra_env.iter().chain(env) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start taskledger");
        let started = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&stderr_file);
                return (None, "(still running after 60 s: it did not refuse)".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
        let _ = std::fs::remove_file(&stderr_file);
        (code, stderr)
    }

    /// Starts the binary again on the same data directory and port without the environment
    /// variable `name` (e.g. a fail point the first start armed).
    pub async fn restart_without(&mut self, name: &str) {
        self.extra_env.retain(|(k, _)| k != name);
        self.restart().await;
    }

    /// Starts the binary again on the same data directory and port with the environment
    /// variable `name` set to `value` (e.g. a fail point for the next start).
    pub async fn restart_with(&mut self, name: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != name);
        self.extra_env.push((name.to_string(), value.to_string()));
        self.restart().await;
    }

    /// Starts the binary again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn queue(&self) -> Queue {
        self.queue_as(Credentials::new("static/taskcluster/root", ROOT_TOKEN))
    }

    pub fn queue_as(&self, creds: Credentials) -> Queue {
        Queue::new(ClientBuilder::new(&self.root_url).credentials(creds)).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A fresh task queue id, so tests never see each other's tasks.
pub fn fresh_queue() -> String {
    format!(
        "it-prov/wt-{}",
        slugid::nice()
            .to_lowercase()
            .replace('_', "-")
            .trim_matches('-')
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect::<String>()
    )
}

/// `n` tasks created on `queue` (deadline in ten minutes), their ids in creation order.
pub async fn create_tasks(q: &Queue, queue: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| slugid::nice()).collect();
    for id in &ids {
        q.createTask(id, &task_def(queue, 600)).await.unwrap();
    }
    ids
}

pub fn task_def(queue: &str, deadline_secs: i64) -> Value {
    let now = chrono::Utc::now();
    json!({
        "taskQueueId": queue,
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::seconds(deadline_secs)).to_rfc3339(),
        "payload": {"command": ["echo", "hello"]},
        "metadata": {"name": "it", "description": "integration test", "owner": "it@example.com", "source": "https://example.com/it"},
    })
}

pub fn worker_body(n: u32) -> Value {
    json!({ "workerGroup": "it-group", "workerId": "it-worker", "tasks": n })
}

/// The HTTP status of a client error.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    taskcluster::err_status_code(err).map(|s| s.as_u16())
}

/// The value of the sample `name` (with its labels, if any) in /metrics' Prometheus text.
pub fn metric_sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every page of a paged listing, in order: `page(token)` asks for the page after `token`
/// (`None`: the first), and paging ends at the first page without a `continuationToken`.
pub async fn all_pages<F, Fut>(mut page: F) -> Vec<Value>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut pages: Vec<Value> = Vec::new();
    let mut token = None;
    loop {
        assert!(
            pages.len() < 1000,
            "paging does not end: {:?}",
            pages.last()
        );
        let next = page(token).await.unwrap();
        token = next["continuationToken"].as_str().map(str::to_owned);
        pages.push(next);
        if token.is_none() {
            return pages;
        }
    }
}

/// Polls `check` until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn state_of(q: &Queue, task_id: &str) -> Value {
    q.status(task_id).await.unwrap()["status"].clone()
}

/// The names of a run's artifacts, as listArtifacts gives them.
pub async fn artifact_names(q: &Queue, task_id: &str, run_id: &str) -> Vec<String> {
    let listed = q.listArtifacts(task_id, run_id, None, None).await.unwrap();
    listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str().map(String::from))
        .collect()
}

/// A `taskledger worker` process claiming from one task queue of a test server.
pub struct WorkerProc {
    child: Option<Child>,
}

impl Server {
    /// Starts `taskledger worker` with the root credentials; `extra` are more flags.
    pub fn start_worker(&self, task_queue: &str, worker_id: &str, extra: &[&str]) -> WorkerProc {
        self.spawn_worker(task_queue, worker_id, extra, true)
    }

    /// Starts `taskledger worker` with no credentials of its own: it must register with
    /// worker-manager (`extra` holds --worker-pool-id and --static-secret).
    pub fn start_pool_worker(&self, pool: &str, worker_id: &str, extra: &[&str]) -> WorkerProc {
        self.spawn_worker(pool, worker_id, extra, false)
    }

    fn spawn_worker(
        &self,
        task_queue: &str,
        worker_id: &str,
        extra: &[&str],
        root: bool,
    ) -> WorkerProc {
        let work_dir = self.data_dir.join(format!("worker-{worker_id}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskledger"));
        if root {
            cmd.env("TASKCLUSTER_CLIENT_ID", "static/taskcluster/root")
                .env("TASKCLUSTER_ACCESS_TOKEN", ROOT_TOKEN);
        } else {
            cmd.env_remove("TASKCLUSTER_CLIENT_ID")
                .env_remove("TASKCLUSTER_ACCESS_TOKEN");
        }
        let child = cmd
            .arg("worker")
            .args(["--task-queue-id", task_queue])
            .args(["--worker-group", "it-group", "--worker-id", worker_id])
            .arg("--work-dir")
            .arg(&work_dir)
            .args(["--status-poll-secs", "1"])
            .args(extra)
            .env("TASKCLUSTER_ROOT_URL", &self.root_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start taskledger worker");
        WorkerProc { child: Some(child) }
    }

    /// A URL that fetches an artifact with root's signature (follows redirects to the bytes).
    pub fn artifact_url(&self, task_id: &str, run_id: u32, name: &str) -> String {
        self.queue()
            .getArtifact_signed_url(task_id, &run_id.to_string(), name, Duration::from_secs(600))
            .unwrap()
    }

    pub async fn artifact_text(&self, task_id: &str, run_id: u32, name: &str) -> String {
        let r = reqwest::get(self.artifact_url(task_id, run_id, name))
            .await
            .unwrap();
        assert!(r.status().is_success(), "{name}: {}", r.status());
        let length = r.headers().get("content-length").cloned();
        let text = r.text().await.unwrap();
        let length = length.and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        assert_eq!(length, Some(text.len()), "{name}: Content-Length");
        text
    }
}

impl WorkerProc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// The exit code, waiting at most `limit`.
    pub async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        exit_code(&mut self.child, limit).await
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A task definition running `command` (argv lists) on the process engine.
pub fn process_task(queue: &str, payload: Value) -> Value {
    let mut def = task_def(queue, 600);
    def["payload"] = payload;
    def
}

/// True once `pid` is gone (or a zombie waiting for its reaper), polling up to 10 s.
pub async fn process_gone(pid: i32) -> bool {
    for _ in 0..100 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(s) if s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

/// The exit code of `child` once it has exited, waiting at most `limit` (`None`: still
/// running, ended by a signal, or already reaped); an exited child is reaped and forgotten.
async fn exit_code(child: &mut Option<Child>, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    let running = child.as_mut()?;
    loop {
        if let Some(s) = running.try_wait().unwrap() {
            *child = None;
            return s.code();
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
