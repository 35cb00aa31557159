//! Load generator: starts the real binary and drives the queue API with Hawk-signed requests
//! from many concurrent clients, then measures the raw RocksDB ceiling for the same event bytes.
//!
//! `cargo bench --bench loadgen` (env: LOADGEN_SECS per phase, default 10; LOADGEN_CLIENTS,
//! default 64). Prints one table; ratios are within this one run.

mod common;

use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::codec;
use taskledger_core::time::Millis;

const TOKEN: &str = "loadgen-root-access-token-0123456789abcdefgh";

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    port: u16,
    creds: Arc<hawk::Credentials>,
}

impl Api {
    /// An API handle for the server on `port`, once it answers its ping.
    async fn connect(port: u16, clients: usize) -> Api {
        let api = Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(clients)
                .build()
                .unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            port,
            creds: Arc::new(hawk::Credentials {
                id: "static/taskcluster/root".into(),
                key: hawk::Key::new(TOKEN, hawk::DigestAlgorithm::Sha256).unwrap(),
            }),
        };
        let ready = Instant::now();
        while reqwest::get(format!("{}/api/queue/v1/ping", api.base))
            .await
            .is_err()
        {
            assert!(ready.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call_at(method, &format!("/api/queue/v1{path}"), body)
            .await
    }

    /// The same API as another client.
    fn as_client(&self, id: &str, token: &str) -> Api {
        Api {
            creds: Arc::new(hawk::Credentials {
                id: id.into(),
                key: hawk::Key::new(token, hawk::DigestAlgorithm::Sha256).unwrap(),
            }),
            ..self.clone()
        }
    }

    /// A Hawk-signed call to any path of the server.
    async fn call_at(&self, method: &str, full: &str, body: Option<&Value>) -> Value {
        let full = full.to_string();
        let header = hawk::RequestBuilder::new(method, "127.0.0.1", self.port, &full)
            .request()
            .make_header(&self.creds)
            .expect("hawk header");
        let url = format!("{}{}", self.base, full);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .header("authorization", format!("Hawk {header}"));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {full}: {status} {v}");
        v
    }
}

fn task_def(queue: &str) -> Value {
    let now = chrono::Utc::now();
    json!({
        "taskQueueId": queue,
        "created": now.to_rfc3339(),
        "deadline": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "payload": {"command": ["/bin/bash", "-c", "echo hello"], "maxRunTime": 600},
        "metadata": {"name": "load", "description": "loadgen", "owner": "load@example.com", "source": "https://example.com/load"},
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `per_client` on `clients` tasks for `secs`; returns operations/s and sorted latencies (ms).
async fn phase<F, Fut>(clients: usize, secs: u64, per_client: F) -> (f64, Vec<f64>)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    let start = Instant::now();
    for i in 0..clients {
        let (stop, count, lat, f) = (stop.clone(), count.clone(), lat.clone(), per_client.clone());
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let n = f(i).await;
                mine.push(t.elapsed().as_secs_f64() * 1000.0);
                count.fetch_add(n, Ordering::Relaxed);
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (count.load(Ordering::Relaxed) as f64 / elapsed, l)
}

/// createTask at full speed from every client.
async fn create_phase(api: &Api, clients: usize, secs: u64) -> (f64, Vec<f64>) {
    let a = api.clone();
    phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            a.call(
                "PUT",
                &format!("/task/{}", slugid::nice()),
                Some(&task_def(&format!("load/create-{i}"))),
            )
            .await;
            1
        }
    })
    .await
}

/// createTask at a steady `rate`: request k is due at `k / rate` seconds after the start, so
/// arrivals are spread evenly (as a steady stream of users would send them) instead of all
/// clients firing at once; `clients` tasks take the next due request, so at most `clients` are
/// in flight. Returns the achieved rate, the sorted call latencies (ms, from the moment the
/// request left) and the sorted send delays (ms after the due instant: tokio's timer wakes on
/// whole milliseconds, so 1-2 ms is the timer's; more means the generator could not keep up,
/// and a server stall would show there rather than be hidden).
async fn paced_phase(api: &Api, clients: usize, secs: u64, rate: f64) -> (f64, Vec<f64>, Vec<f64>) {
    let next = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut handles = Vec::new();
    for i in 0..clients {
        let (a, next, samples) = (api.clone(), next.clone(), samples.clone());
        handles.push(tokio::spawn(async move {
            let (mut lat, mut late) = (Vec::new(), Vec::new());
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let due = start + Duration::from_secs_f64(k as f64 / rate.max(1.0));
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                late.push((sent - due).as_secs_f64() * 1000.0);
                a.call(
                    "PUT",
                    &format!("/task/{}", slugid::nice()),
                    Some(&task_def(&format!("load/half-{i}"))),
                )
                .await;
                lat.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            let mut s = samples.lock().unwrap();
            s.0.extend(lat);
            s.1.extend(late);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (mut lat, mut late) = samples.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (lat.len() as f64 / elapsed, lat, late)
}

/// The full lifecycle (createTask, claimWork, reportCompleted) from every client at once. Each
/// client has its own queue with a pending backlog, so claimWork never waits.
async fn lifecycle_phase(api: &Api, clients: usize, secs: u64) -> (f64, Vec<f64>) {
    for i in 0..clients {
        for _ in 0..4 {
            api.call(
                "PUT",
                &format!("/task/{}", slugid::nice()),
                Some(&task_def(&format!("load/life-{i}"))),
            )
            .await;
        }
    }
    let a = api.clone();
    phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            let queue = format!("load/life-{i}");
            a.call(
                "PUT",
                &format!("/task/{}", slugid::nice()),
                Some(&task_def(&queue)),
            )
            .await;
            let claim = a
                .call(
                    "POST",
                    &format!("/claim-work/{}", queue.replace('/', "%2F")),
                    Some(&json!({"workerGroup": "g", "workerId": format!("w{i}"), "tasks": 1})),
                )
                .await;
            let t = &claim["tasks"][0];
            let (task_id, run_id) = (
                t["status"]["taskId"].as_str().unwrap().to_string(),
                t["runId"].as_u64().unwrap(),
            );
            a.call(
                "POST",
                &format!("/task/{task_id}/runs/{run_id}/completed"),
                None,
            )
            .await;
            1
        }
    })
    .await
}

fn spawn_server(port: u16, data: &std::path::Path, kafka: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskledger"));
    cmd.arg("serve")
        .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("TASKLEDGER_DATA_DIR", data)
        .env("TASKLEDGER_ROOT_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(brokers) = kafka {
        cmd.env("TASKLEDGER_KAFKA_BROKERS", brokers).env(
            "TASKLEDGER_KAFKA_TOPIC_PREFIX",
            format!("loadgen-{}.", std::process::id()),
        );
    }
    cmd.spawn().expect("start taskledger")
}

/// Synced RocksDB writes of the same envelope bytes, batched like group commit.
fn rocksdb_ceiling(secs: u64, batch_events: usize) -> f64 {
    let dir = std::env::temp_dir().join(format!("taskledger-loadgen-raw-{}", std::process::id()));
    let db = rocksdb::DB::open_default(&dir).unwrap();
    let now = Millis::now();
    let bytes: Vec<Vec<u8>> = common::lifecycle_events(now)
        .into_iter()
        .map(|e| codec::encode(&common::envelope(e, 1, now)).unwrap())
        .collect();
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let mut batch = rocksdb::WriteBatch::default();
        for _ in 0..batch_events {
            batch.put(n.to_be_bytes(), &bytes[(n as usize) % bytes.len()]);
            n += 1;
        }
        db.write_opt(batch, &wo).unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

fn main() {
    let secs: u64 = std::env::var("LOADGEN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let clients: usize = std::env::var("LOADGEN_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(secs, clients));
}

/// getTaskStatus over 256 tasks that exist.
async fn status_phase(api: &Api, clients: usize, secs: u64) -> (f64, Vec<f64>) {
    // getTaskStatus over tasks that exist
    let ids: Arc<Vec<String>> = Arc::new((0..256).map(|_| slugid::nice()).collect());
    for id in ids.iter() {
        api.call(
            "PUT",
            &format!("/task/{id}"),
            Some(&task_def("load/status")),
        )
        .await;
    }
    let a = api.clone();
    let ids2 = ids.clone();
    phase(clients, secs, move |i| {
        let (a, ids) = (a.clone(), ids2.clone());
        async move {
            a.call("GET", &format!("/task/{}/status", ids[i % ids.len()]), None)
                .await;
            1
        }
    })
    .await
}

async fn run(secs: u64, clients: usize) {
    // LOADGEN_PORT: drive a server already running on that loopback port (root token TOKEN),
    // e.g. one under a profiler; otherwise start our own.
    let existing: Option<u16> = std::env::var("LOADGEN_PORT")
        .ok()
        .and_then(|p| p.parse().ok());
    let port = existing.unwrap_or_else(|| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    });
    let data = std::env::temp_dir().join(format!("taskledger-loadgen-{}", std::process::id()));
    let mut server = existing.is_none().then(|| spawn_server(port, &data, None));
    let api = Api::connect(port, clients).await;
    println!("loadgen: {clients} concurrent clients, {secs} s per phase, Hawk-signed HTTP/1.1 on loopback");
    // LOADGEN_ONLY_AUTH / LOADGEN_ONLY_STATUS / LOADGEN_ONLY_CREATE / LOADGEN_ONLY_PACED=<rate>:
    // one phase alone (e.g. under a profiler)
    let only_status = std::env::var("LOADGEN_ONLY_STATUS").is_ok();
    let only_create = std::env::var("LOADGEN_ONLY_CREATE").is_ok();
    let only_paced: Option<f64> = std::env::var("LOADGEN_ONLY_PACED")
        .ok()
        .and_then(|r| r.parse().ok());
    if std::env::var("LOADGEN_ONLY_AUTH").is_ok()
        || only_status
        || only_create
        || only_paced.is_some()
    {
        if let Some(rate) = only_paced {
            let (achieved, lat, late) = paced_phase(&api, clients, secs, rate).await;
            println!(
                "createTask at a steady {rate:.0}/s: {achieved:.0}/s achieved, p50 {:.2} ms, p99 {:.2} ms (sent late by p50 {:.2} ms, p99 {:.2} ms)",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                percentile(&late, 0.5),
                percentile(&late, 0.99)
            );
        } else if only_status {
            let (rate, lat) = status_phase(&api, clients, secs).await;
            println!(
                "getTaskStatus/s {rate:.0} (p50 {:.2} ms)",
                percentile(&lat, 0.5)
            );
        } else if only_create {
            let (rate, lat) = create_phase(&api, clients, secs).await;
            println!(
                "createTask/s {rate:.0} (p50 {:.2} ms, p99 {:.2} ms)",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
        } else {
            auth_phases(&api, clients, secs).await;
        }
        if let Some(mut s) = server {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&data);
        return;
    }

    let (create_rate, create_lat) = create_phase(&api, clients, secs).await;

    let (life_rate, life_lat) = lifecycle_phase(&api, clients, secs).await;

    let (status_rate, status_lat) = status_phase(&api, clients, secs).await;

    // createTask latency at a steady half of the peak rate (a warm-up phase, then the measured one)
    let target = create_rate / 2.0;
    paced_phase(&api, clients, secs.min(3), target).await;
    let (half_rate, paced, late) = paced_phase(&api, clients, secs, target).await;

    if let Some(server) = server.as_mut() {
        let _ = server.kill();
        let _ = server.wait();
    }
    let _ = std::fs::remove_dir_all(&data);

    let events_per_life = common::lifecycle_events(Millis::now()).len() as f64;
    let raw = if std::env::var_os("LOADGEN_SKIP_RAW").is_some() {
        f64::NAN
    } else {
        rocksdb_ceiling(secs.min(5), 64)
    };

    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| createTask/s (peak) | {create_rate:.0} (p50 {:.2} ms, p99 {:.2} ms) |",
        percentile(&create_lat, 0.5),
        percentile(&create_lat, 0.99)
    );
    println!("| lifecycle tasks/s (create+claimWork+reportCompleted) | {life_rate:.0} (p50 {:.2} ms per lifecycle) |", percentile(&life_lat, 0.5));
    println!(
        "| getTaskStatus/s | {status_rate:.0} (p50 {:.2} ms) |",
        percentile(&status_lat, 0.5)
    );
    println!(
        "| createTask at a steady half of peak ({half_rate:.0}/s of {target:.0}/s; sent late by p50 {:.2} ms, p99 {:.2} ms) | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        percentile(&paced, 0.5),
        percentile(&paced, 0.99)
    );
    println!("| raw RocksDB synced batched puts (64 events/batch) | {raw:.0} events/s = {:.0} lifecycles/s |", raw / events_per_life);
    println!();
    // LOADGEN_KAFKA=host:port: the same lifecycle phase on a second server with its log in Kafka
    if let Ok(brokers) = std::env::var("LOADGEN_KAFKA") {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data =
            std::env::temp_dir().join(format!("taskledger-loadgen-k-{}", std::process::id()));
        let mut server = spawn_server(port, &data, Some(&brokers));
        let api = Api::connect(port, clients).await;
        let (kafka_rate, kafka_lat) = lifecycle_phase(&api, clients, secs).await;
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&data);
        println!(
            "| lifecycle tasks/s on Kafka ({brokers}) | {kafka_rate:.0} (p50 {:.2} ms per lifecycle) |",
            percentile(&kafka_lat, 0.5)
        );
        println!();
        println!(
            "ratio (this run): lifecycle on Kafka / on the embedded log = {:.3}",
            kafka_rate / life_rate
        );
    }
    println!("ratios (this run): lifecycle / raw-RocksDB-lifecycle ceiling = {:.3}; lifecycle vs Taskcluster's 42/s = {:.0}x; getTaskStatus vs Taskcluster's 333/s = {:.0}x",
        life_rate / (raw / events_per_life), life_rate / 42.0, status_rate / 333.0);
}

/// The auth issue's benchmark: currentScopes by a client holding 50 roles that expand to
/// ~1,000 scopes, against the unauthenticated ping, in one run.
async fn auth_phases(api: &Api, clients: usize, secs: u64) {
    for r in 0..50 {
        let scopes: Vec<String> = (0..20).map(|i| format!("project:p{r}:scope-{i}")).collect();
        api.call_at(
            "PUT",
            &format!("/api/auth/v1/roles/load-team:r{r}"),
            Some(&json!({"description": "loadgen", "scopes": scopes})),
        )
        .await;
    }
    let mut scopes: Vec<String> = (0..50).map(|r| format!("assume:load-team:r{r}")).collect();
    scopes.push("auth:current-scopes".into());
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let created = api
        .call_at(
            "PUT",
            &format!("/api/auth/v1/clients/load-{}", std::process::id()),
            Some(&json!({"description": "loadgen", "expires": expires, "scopes": scopes})),
        )
        .await;
    let member = api.as_client(
        created["clientId"].as_str().unwrap(),
        created["accessToken"].as_str().unwrap(),
    );
    let held = member
        .call_at("GET", "/api/auth/v1/scopes/current", None)
        .await;
    let held = held["scopes"].as_array().map_or(0, Vec::len);

    let m = member.clone();
    let (current_rate, current_lat) = phase(clients, secs, move |_| {
        let m = m.clone();
        async move {
            m.call_at("GET", "/api/auth/v1/scopes/current", None).await;
            1
        }
    })
    .await;
    // the same request cost without the 1,052-scope response body
    let m = member.clone();
    let (signed_ping_rate, signed_ping_lat) = phase(clients, secs, move |_| {
        let m = m.clone();
        async move {
            m.call_at("GET", "/api/auth/v1/ping", None).await;
            1
        }
    })
    .await;
    let (http, base) = (api.http.clone(), api.base.clone());
    let (ping_rate, ping_lat) = phase(clients, secs, move |_| {
        let (http, url) = (http.clone(), format!("{base}/api/auth/v1/ping"));
        async move {
            let r = http.get(url).send().await.expect("ping");
            assert!(r.status().is_success());
            let _ = r.bytes().await;
            1
        }
    })
    .await;
    println!();
    println!("| auth measure ({held} scopes held) | value |");
    println!("|---|---|");
    println!(
        "| currentScopes, Hawk, 50 roles | {current_rate:.0} req/s (p50 {:.2} ms) |",
        percentile(&current_lat, 0.5)
    );
    println!(
        "| ping, Hawk-signed by that client (authenticated, tiny body) | {signed_ping_rate:.0} req/s (p50 {:.2} ms) |",
        percentile(&signed_ping_lat, 0.5)
    );
    println!(
        "| ping, unauthenticated | {ping_rate:.0} req/s (p50 {:.2} ms) |",
        percentile(&ping_lat, 0.5)
    );
    println!(
        "ratios (this run): currentScopes / unauthenticated ping = {:.3}; signed ping / unauthenticated ping = {:.3}",
        current_rate / ping_rate,
        signed_ping_rate / ping_rate
    );
}
