//! Starts the real `taskledger` binary on a free loopback port with its own data directory.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// A server with default settings plus `env` (e.g. a short claim timeout).
    pub async fn start(env: &[(&str, &str)]) -> Server {
        let data_dir = std::env::temp_dir().join(format!("taskledger-it-{}", slugid::nice()));
        let port = free_port();
        let mut s = Server {
            child: None,
            root_url: format!("http://127.0.0.1:{port}"),
            data_dir,
            port,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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

    pub fn anonymous_queue(&self) -> Queue {
        Queue::new(ClientBuilder::new(&self.root_url)).unwrap()
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
