//! Tasks per second through one `taskledger worker` for trivial tasks (`true`), at capacity 1
//! and 8, against spawning the same process directly, all in one run.
//!
//! `cargo bench --bench worker` (env: WORKER_BENCH_TASKS, default 200 per phase). Each task is
//! the whole protocol: claimWork, live-log reference artifact, the process, artifact link,
//! backing-log upload (createArtifact + PUT), reportCompleted.

use futures::StreamExt;
use serde_json::json;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use taskcluster::{ClientBuilder, Credentials, Queue};

const TOKEN: &str = "worker-bench-root-access-token-0123456789ab";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn direct(n: usize, parallel: usize) -> f64 {
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let batch = left.min(parallel);
        let children: Vec<_> = (0..batch)
            .map(|_| Command::new("true").spawn().expect("spawn true"))
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        left -= batch;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn through_worker(
    root_url: &str,
    data_dir: &std::path::Path,
    n: usize,
    capacity: u32,
) -> f64 {
    let q = Queue::new(
        ClientBuilder::new(root_url)
            .credentials(Credentials::new("static/taskcluster/root", TOKEN)),
    )
    .unwrap();
    let queue_id = format!("bench/cap{capacity}");
    let now = chrono::Utc::now();
    let def = json!({
        "taskQueueId": queue_id,
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "payload": {"command": [["true"]], "maxRunTime": 60},
        "metadata": {"name": "bench", "description": "worker bench", "owner": "bench@example.com", "source": "https://example.com/bench"},
    });
    futures::stream::iter(0..n)
        .map(|_| {
            let (q, def) = (&q, def.clone());
            async move {
                q.createTask(&slugid::nice(), &def)
                    .await
                    .expect("createTask")
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .arg("worker")
        .args([
            "--task-queue-id",
            &queue_id,
            "--worker-group",
            "bench",
            "--worker-id",
            &format!("cap{capacity}"),
        ])
        .args([
            "--capacity",
            &capacity.to_string(),
            "--number-of-tasks-to-run",
            &n.to_string(),
        ])
        .arg("--work-dir")
        .arg(data_dir.join(format!("tasks-{capacity}")))
        .env("TASKCLUSTER_ROOT_URL", root_url)
        .env("TASKCLUSTER_CLIENT_ID", "static/taskcluster/root")
        .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .status()
        .expect("run the worker");
    assert!(status.success(), "worker exited with {status}");
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("WORKER_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let data_dir = std::env::temp_dir().join(format!("taskledger-worker-bench-{}", slugid::nice()));
    let port = free_port();
    let root_url = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .arg("serve")
        .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("TASKLEDGER_DATA_DIR", &data_dir)
        .env("TASKLEDGER_ROOT_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start taskledger serve");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ping = format!("{root_url}/api/queue/v1/ping");
        let start = Instant::now();
        while !reqwest::get(&ping)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server not ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let direct_1 = direct(n, 1);
    let direct_8 = direct(n, 8);
    let worker_1 = rt.block_on(through_worker(&root_url, &data_dir, n, 1));
    let worker_8 = rt.block_on(through_worker(&root_url, &data_dir, n, 8));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data_dir);

    println!("worker throughput, {n} trivial tasks (`true`) per row, one run");
    println!("| what | tasks/s | per task | ratio to direct spawn |");
    println!("|---|---:|---:|---:|");
    for (what, rate, base) in [
        ("spawn `true` directly, one at a time", direct_1, direct_1),
        ("spawn `true` directly, 8 at a time", direct_8, direct_8),
        ("taskledger worker, capacity 1", worker_1, direct_1),
        ("taskledger worker, capacity 8", worker_8, direct_8),
    ] {
        println!(
            "| {what} | {rate:.0} | {:.2} ms | {:.3} |",
            1000.0 / rate,
            rate / base
        );
    }
    println!(
        "overhead per task over a direct spawn: {:.2} ms at capacity 1",
        1000.0 / worker_1 - 1000.0 / direct_1
    );
}
