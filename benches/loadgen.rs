//! Load generator: starts the real binary and drives the queue API with Hawk-signed requests
//! from many concurrent clients, then measures the raw RocksDB ceiling for the same event bytes.
//!
//! `cargo bench --bench loadgen` (env: LOADGEN_SECS per phase, default 10; LOADGEN_CLIENTS,
//! default 64). Prints one table; ratios are within this one run. Each phase also reports the
//! CPU time the server and the generator spent per operation (from `/proc`): the two share the
//! machine's cores, so the server's figure is the one that does not depend on the generator.

mod common;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::codec;
use taskledger_core::time::Millis;

const TOKEN: &str = "loadgen-root-access-token-0123456789abcdefgh";
/// What the server checks GitHub webhooks' signatures with.
const WEBHOOK_SECRET: &str = "loadgen-webhook-secret";

type Body = http_body_util::Full<bytes::Bytes>;

/// One keep-alive HTTP/1.1 connection to the server, opened on first use and again after the
/// server closed it.
type Slot = tokio::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<Body>>>;

/// A Hawk-signed client of the server. Each concurrent load client sends on a connection of its
/// own (slot `i`) through hyper's bare HTTP/1.1 connection, with no pool, redirect or decoding
/// layers: the generator shares the machine's 2 cores with the server, so every microsecond it
/// spends per request is taken from the server's side of the measurement.
#[derive(Clone)]
struct Api {
    port: u16,
    creds: Arc<hawk::Credentials>,
    slots: Arc<Vec<Slot>>,
}

impl Api {
    /// An API handle for the server on `port`, once it answers its ping.
    async fn connect(port: u16, clients: usize) -> Api {
        let api = Api {
            port,
            creds: Arc::new(hawk::Credentials {
                id: "static/taskcluster/root".into(),
                key: hawk::Key::new(TOKEN, hawk::DigestAlgorithm::Sha256).unwrap(),
            }),
            slots: Arc::new((0..clients.max(1)).map(|_| Slot::default()).collect()),
        };
        let ready = Instant::now();
        while api
            .send(0, "GET", "/api/queue/v1/ping", None, false)
            .await
            .is_err()
        {
            assert!(ready.elapsed() < Duration::from_secs(30));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api
    }

    /// A queue call on slot 0 (setup, not measured).
    async fn call(&self, method: &str, path: &str, body: Option<Bytes>) -> Bytes {
        self.call_on(0, method, &format!("/api/queue/v1{path}"), body)
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

    /// A Hawk-signed call to any path of the server on connection `slot`; panics unless it
    /// succeeds, so a phase never counts a failed call.
    async fn call_on(&self, slot: usize, method: &str, full: &str, body: Option<Bytes>) -> Bytes {
        match self.send(slot, method, full, body, true).await {
            Ok((status, bytes)) if status.is_success() => bytes,
            Ok((status, bytes)) => panic!(
                "{method} {full}: {status} {}",
                String::from_utf8_lossy(&bytes)
            ),
            Err(e) => panic!("{method} {full}: {e}"),
        }
    }

    async fn send(
        &self,
        slot: usize,
        method: &str,
        full: &str,
        body: Option<Bytes>,
        signed: bool,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        self.send_with(slot, method, full, body, signed, &[]).await
    }

    /// `send` with more request headers.
    async fn send_with(
        &self,
        slot: usize,
        method: &str,
        full: &str,
        body: Option<Bytes>,
        signed: bool,
        headers: &[(&str, String)],
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(full)
            .header(hyper::header::HOST, format!("127.0.0.1:{}", self.port));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if signed {
            let header = hawk::RequestBuilder::new(method, "127.0.0.1", self.port, full)
                .request()
                .make_header(&self.creds)?;
            req = req.header(hyper::header::AUTHORIZATION, format!("Hawk {header}"));
        }
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Body::new(body.unwrap_or_default()))?;
        let mut conn = self.slots[slot % self.slots.len()].lock().await;
        let open = match conn.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !open {
            *conn = Some(self.open().await?);
        }
        let resp = conn.as_mut().unwrap().send_request(req).await?;
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn open(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Body>> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// A task definition's JSON for `queue`, created now with a deadline in two hours.
fn task_def(queue: &str) -> Bytes {
    let now = chrono::Utc::now();
    let deadline = now + chrono::Duration::hours(2);
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        r#"{{"taskQueueId":"{queue}","created":"{}","deadline":"{}","payload":{{"command":["/bin/bash","-c","echo hello"],"maxRunTime":600}},"metadata":{{"name":"load","description":"loadgen","owner":"load@example.com","source":"https://example.com/load"}}}}"#,
        fmt(now),
        fmt(deadline)
    )
    .into()
}

fn json_body(v: &Value) -> Option<Bytes> {
    Some(v.to_string().into())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The server's pid, when known (our own child, or `LOADGEN_SERVER_PID` beside `LOADGEN_PORT`),
/// so each phase can report the CPU it spent per operation.
static SERVER_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // after the command name (in parentheses, may hold spaces) come the state, then 10 fields
    // before utime and stime
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ').skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ
}

/// CPU used so far by the server and by the load generator.
#[derive(Clone, Copy)]
struct CpuMark {
    server: Option<f64>,
    generator: f64,
}

impl CpuMark {
    fn now() -> CpuMark {
        CpuMark {
            server: SERVER_PID.get().and_then(|p| cpu_secs(&p.to_string())),
            generator: cpu_secs("self").unwrap_or(f64::NAN),
        }
    }

    /// CPU per operation since `self`, in µs, for a table cell.
    fn per_op(self, ops: f64) -> String {
        let end = CpuMark::now();
        let us = |a: f64, b: f64| (b - a) * 1e6 / ops.max(1.0);
        let generator = us(self.generator, end.generator);
        match (self.server, end.server) {
            (Some(a), Some(b)) => format!(
                "server {:.0} µs, load generator {generator:.0} µs",
                us(a, b)
            ),
            _ => format!("server unknown, load generator {generator:.0} µs"),
        }
    }
}

/// The queue writer's histograms from the server's `/metrics`, so a phase can tell the time a
/// command spent inside the server's writer from what the client saw (on a 2-core machine the
/// generator competes with the server for the cores, and its own delays count in the latter).
#[derive(Default)]
struct WriterMark {
    /// Per histogram: cumulative counts per bucket bound (`f64::INFINITY` last), and the sum.
    histograms: std::collections::HashMap<String, (Vec<(f64, f64)>, f64)>,
}

impl WriterMark {
    async fn now(api: &Api) -> WriterMark {
        let mut mark = WriterMark::default();
        let Ok((_, text)) = api.send(0, "GET", "/metrics", None, false).await else {
            return mark;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some((family, le)) = name.split_once("_bucket{le=\"") {
                let bound = match le.trim_end_matches("\"}") {
                    "+Inf" => f64::INFINITY,
                    b => b.parse().unwrap_or(f64::NAN),
                };
                mark.histograms
                    .entry(family.to_string())
                    .or_default()
                    .0
                    .push((bound, value));
            } else if let Some(family) = name.strip_suffix("_sum") {
                mark.histograms.entry(family.to_string()).or_default().1 = value;
            }
        }
        mark
    }

    /// The bucket bound under which a fraction `q` of the observations since `before` fell.
    fn quantile(&self, before: &WriterMark, family: &str, q: f64) -> Option<f64> {
        let (now, _) = self.histograms.get(family)?;
        let then = before.histograms.get(family);
        let delta: Vec<(f64, f64)> = now
            .iter()
            .enumerate()
            .map(|(i, (bound, c))| {
                (
                    *bound,
                    c - then.and_then(|t| t.0.get(i)).map_or(0.0, |t| t.1),
                )
            })
            .collect();
        let total = delta.last()?.1;
        (total > 0.0).then(|| {
            delta
                .iter()
                .find(|(_, c)| *c >= q * total)
                .map_or(f64::INFINITY, |b| b.0)
        })
    }

    fn mean(&self, before: &WriterMark, family: &str) -> Option<f64> {
        let (now, sum) = self.histograms.get(family)?;
        let (then, then_sum) = before.histograms.get(family).cloned().unwrap_or_default();
        let count = now.last()?.1 - then.last().map_or(0.0, |t| t.1);
        (count > 0.0).then(|| (sum - then_sum) / count)
    }

    /// e.g. "in the writer p50 <= 2 ms, p99 <= 5 ms; durable append p50 <= 0.5 ms, ...".
    async fn since(before: &WriterMark, api: &Api) -> String {
        let now = WriterMark::now(api).await;
        let ms = |v: Option<f64>| match v {
            Some(v) if v.is_finite() => format!("≤ {} ms", v * 1000.0),
            Some(_) => "> 2.5 s".to_string(),
            None => "n/a".to_string(),
        };
        let spread = |family: &str| {
            format!(
                "p50 {}, p99 {}",
                ms(now.quantile(before, family, 0.5)),
                ms(now.quantile(before, family, 0.99))
            )
        };
        format!(
            "answered by the server {}; in its writer {} (waiting for its group commit {}; its caller resuming after the answer {}); group commit {}; durable append {}; {:.1} commands per group commit",
            spread("taskledger_http_request_seconds"),
            spread("taskledger_queue_command_seconds"),
            spread("taskledger_queue_wait_seconds"),
            spread("taskledger_queue_resume_seconds"),
            spread("taskledger_queue_commit_seconds"),
            spread("taskledger_queue_append_seconds"),
            now.mean(before, "taskledger_queue_batch_commands").unwrap_or(f64::NAN),
        )
    }
}

/// Runs `per_client` on `clients` tasks for `secs`; returns operations/s, sorted latencies (ms)
/// and the CPU each side spent per operation.
async fn phase<F, Fut>(clients: usize, secs: u64, per_client: F) -> (f64, Vec<f64>, String)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    let start = Instant::now();
    let cpu = CpuMark::now();
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
    let ops = count.load(Ordering::Relaxed) as f64;
    let cpu = cpu.per_op(ops);
    let mut l = lat.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (ops / elapsed, l, cpu)
}

/// createTask at full speed from every client.
async fn create_phase(api: &Api, clients: usize, secs: u64) -> (f64, Vec<f64>, String) {
    let a = api.clone();
    phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            a.call_on(
                i,
                "PUT",
                &format!("/api/queue/v1/task/{}", slugid::nice()),
                Some(task_def(&format!("load/create-{i}"))),
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
async fn paced_phase(
    api: &Api,
    clients: usize,
    secs: u64,
    rate: f64,
) -> (f64, Vec<f64>, Vec<f64>, String) {
    let next = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let writer = WriterMark::now(api).await;
    let start = tokio::time::Instant::now();
    let cpu = CpuMark::now();
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
                a.call_on(
                    i,
                    "PUT",
                    &format!("/api/queue/v1/task/{}", slugid::nice()),
                    Some(task_def(&format!("load/half-{i}"))),
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
    let cpu = format!(
        "{}; {}",
        cpu.per_op(lat.len() as f64),
        WriterMark::since(&writer, api).await
    );
    (lat.len() as f64 / elapsed, lat, late, cpu)
}

/// The full lifecycle (createTask, claimWork, reportCompleted) from every client at once. Each
/// client has its own queue with a pending backlog, so claimWork never waits.
async fn lifecycle_phase(api: &Api, clients: usize, secs: u64) -> (f64, Vec<f64>, String) {
    for i in 0..clients {
        for _ in 0..4 {
            api.call(
                "PUT",
                &format!("/task/{}", slugid::nice()),
                Some(task_def(&format!("load/life-{i}"))),
            )
            .await;
        }
    }
    let a = api.clone();
    phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            let queue = format!("load/life-{i}");
            a.call_on(
                i,
                "PUT",
                &format!("/api/queue/v1/task/{}", slugid::nice()),
                Some(task_def(&queue)),
            )
            .await;
            let claim = a
                .call_on(
                    i,
                    "POST",
                    &format!("/api/queue/v1/claim-work/{}", queue.replace('/', "%2F")),
                    json_body(
                        &json!({"workerGroup": "g", "workerId": format!("w{i}"), "tasks": 1}),
                    ),
                )
                .await;
            let claim: Claim = serde_json::from_slice(&claim).expect("claimWork response");
            let t = &claim.tasks[0];
            a.call_on(
                i,
                "POST",
                &format!(
                    "/api/queue/v1/task/{}/runs/{}/completed",
                    t.status.task_id, t.run_id
                ),
                None,
            )
            .await;
            1
        }
    })
    .await
}

/// The part of claimWork's answer the lifecycle needs.
#[derive(Deserialize)]
struct Claim {
    tasks: Vec<Claimed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claimed {
    status: ClaimedStatus,
    run_id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimedStatus {
    task_id: String,
}

fn spawn_server(port: u16, data: &std::path::Path, kafka: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskledger"));
    cmd.arg("serve")
        .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("TASKLEDGER_DATA_DIR", data)
        .env("TASKLEDGER_ROOT_ACCESS_TOKEN", TOKEN)
        .env("TASKLEDGER_GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)
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
async fn status_phase(api: &Api, clients: usize, secs: u64) -> (f64, Vec<f64>, String) {
    // getTaskStatus over tasks that exist
    let ids: Arc<Vec<String>> = Arc::new((0..256).map(|_| slugid::nice()).collect());
    for id in ids.iter() {
        api.call("PUT", &format!("/task/{id}"), Some(task_def("load/status")))
            .await;
    }
    let a = api.clone();
    let ids2 = ids.clone();
    phase(clients, secs, move |i| {
        let (a, ids) = (a.clone(), ids2.clone());
        async move {
            let path = format!("/api/queue/v1/task/{}/status", ids[i % ids.len()]);
            a.call_on(i, "GET", &path, None).await;
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
    let pid = match &server {
        Some(child) => Some(child.id()),
        None => std::env::var("LOADGEN_SERVER_PID")
            .ok()
            .and_then(|p| p.parse().ok()),
    };
    if let Some(pid) = pid {
        let _ = SERVER_PID.set(pid);
    }
    let api = Api::connect(port, clients).await;
    println!("loadgen: {clients} concurrent clients, {secs} s per phase, Hawk-signed HTTP/1.1 on loopback");
    // LOADGEN_ONLY_AUTH / LOADGEN_ONLY_STATUS / LOADGEN_ONLY_CREATE / LOADGEN_ONLY_LIFE /
    // LOADGEN_ONLY_SECRETS / LOADGEN_ONLY_INDEX / LOADGEN_ONLY_HOOKS / LOADGEN_ONLY_NOTIFY /
    // LOADGEN_ONLY_GITHUB /
    // LOADGEN_ONLY_PACED=<rate>:
    // one phase alone
    // (e.g. under a profiler)
    let only = |name: &str| std::env::var(format!("LOADGEN_ONLY_{name}")).is_ok();
    let only_paced: Option<f64> = std::env::var("LOADGEN_ONLY_PACED")
        .ok()
        .and_then(|r| r.parse().ok());
    if only("AUTH")
        || only("STATUS")
        || only("CREATE")
        || only("LIFE")
        || only("SECRETS")
        || only("INDEX")
        || only("HOOKS")
        || only("NOTIFY")
        || only("GITHUB")
        || only_paced.is_some()
    {
        if let Some(rate) = only_paced {
            let (achieved, lat, late, cpu) = paced_phase(&api, clients, secs, rate).await;
            println!(
                "createTask at a steady {rate:.0}/s: {achieved:.0}/s achieved, p50 {:.2} ms, p99 {:.2} ms (sent late by p50 {:.2} ms, p99 {:.2} ms); CPU per call: {cpu}",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                percentile(&late, 0.5),
                percentile(&late, 0.99)
            );
        } else if only("SECRETS") {
            secrets_phases(&api, clients, secs).await;
        } else if only("INDEX") {
            index_phases(&api, clients, secs).await;
        } else if only("HOOKS") {
            hooks_phases(&api, clients, secs).await;
        } else if only("GITHUB") {
            github_phases(&api, clients, secs).await;
        } else if only("NOTIFY") {
            notify_phases(&api, clients, secs, existing.is_none().then_some(&data)).await;
        } else if only("STATUS") {
            let (rate, lat, cpu) = status_phase(&api, clients, secs).await;
            println!(
                "getTaskStatus/s {rate:.0} (p50 {:.2} ms); CPU per call: {cpu}",
                percentile(&lat, 0.5)
            );
        } else if only("CREATE") {
            let (rate, lat, cpu) = create_phase(&api, clients, secs).await;
            println!(
                "createTask/s {rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {cpu}",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
        } else if only("LIFE") {
            let (rate, lat, cpu) = lifecycle_phase(&api, clients, secs).await;
            println!(
                "lifecycle tasks/s {rate:.0} (p50 {:.2} ms per lifecycle); CPU per lifecycle: {cpu}",
                percentile(&lat, 0.5)
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

    let (create_rate, create_lat, create_cpu) = create_phase(&api, clients, secs).await;

    let (life_rate, life_lat, life_cpu) = lifecycle_phase(&api, clients, secs).await;

    let (status_rate, status_lat, status_cpu) = status_phase(&api, clients, secs).await;

    // createTask latency at a steady half of the peak rate (a warm-up phase, then the measured one)
    let target = create_rate / 2.0;
    paced_phase(&api, clients, secs.min(3), target).await;
    let (half_rate, paced, late, half_cpu) = paced_phase(&api, clients, secs, target).await;

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
    println!("| measure | value | CPU per operation |");
    println!("|---|---|---|");
    println!(
        "| createTask/s (peak) | {create_rate:.0} (p50 {:.2} ms, p99 {:.2} ms) | {create_cpu} |",
        percentile(&create_lat, 0.5),
        percentile(&create_lat, 0.99)
    );
    println!("| lifecycle tasks/s (create+claimWork+reportCompleted) | {life_rate:.0} (p50 {:.2} ms per lifecycle) | {life_cpu} |", percentile(&life_lat, 0.5));
    println!(
        "| getTaskStatus/s | {status_rate:.0} (p50 {:.2} ms) | {status_cpu} |",
        percentile(&status_lat, 0.5)
    );
    println!(
        "| createTask at a steady half of peak ({half_rate:.0}/s of {target:.0}/s; sent late by p50 {:.2} ms, p99 {:.2} ms) | p50 {:.2} ms, p99 {:.2} ms | {half_cpu} |",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        percentile(&paced, 0.5),
        percentile(&paced, 0.99)
    );
    println!("| raw RocksDB synced batched puts (64 events/batch) | {raw:.0} events/s = {:.0} lifecycles/s | |", raw / events_per_life);
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
        let (kafka_rate, kafka_lat, _) = lifecycle_phase(&api, clients, secs).await;
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
/// The secrets service: `get` of 256 secrets (each opened with AES-256-GCM and parsed), `set`
/// (one durable command each: the secrets engine decides one at a time), and getTaskStatus in
/// the same run for the ratio.
async fn secrets_phases(api: &Api, clients: usize, secs: u64) {
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let value = json!({ "token": "x".repeat(64), "user": "loadgen", "hosts": ["a", "b", "c"] });
    let body = json!({ "secret": value, "expires": expires });
    for n in 0..256 {
        let path = format!("/api/secrets/v1/secret/project/load/{n}");
        api.call_on(0, "PUT", &path, json_body(&body)).await;
    }
    let a = api.clone();
    let (get_rate, get_lat, get_cpu) = phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            let path = format!("/api/secrets/v1/secret/project/load/{}", i % 256);
            a.call_on(i, "GET", &path, None).await;
            1
        }
    })
    .await;
    let a = api.clone();
    let (set_rate, set_lat, set_cpu) = phase(clients, secs, move |i| {
        let (a, body) = (a.clone(), body.clone());
        async move {
            let path = format!("/api/secrets/v1/secret/project/load/{}", i % 256);
            a.call_on(i, "PUT", &path, json_body(&body)).await;
            1
        }
    })
    .await;
    let (status_rate, _, status_cpu) = status_phase(api, clients, secs).await;
    println!(
        "secrets get/s {get_rate:.0} (p50 {:.2} ms); CPU per call: {get_cpu}",
        percentile(&get_lat, 0.5)
    );
    println!(
        "secrets set/s {set_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {set_cpu}",
        percentile(&set_lat, 0.5),
        percentile(&set_lat, 0.99)
    );
    println!("getTaskStatus/s {status_rate:.0}; CPU per call: {status_cpu}");
    println!(
        "ratios (this run): secrets get / getTaskStatus = {:.2}; secrets set / get = {:.3}",
        get_rate / status_rate,
        set_rate / get_rate
    );
}

/// The hooks service: triggerHook at full speed (the payload checked against a trigger schema,
/// a JSON-e render, createTask as the hook's role, the fire recorded: two durable commands),
/// beside createTask at full speed in the same run for the ratio.
async fn hooks_phases(api: &Api, clients: usize, secs: u64) {
    let role = json!({
        "description": "loadgen hook",
        "scopes": ["queue:create-task:lowest:load/hooks", "queue:create-task:project:none",
                   "queue:scheduler-id:-"],
    });
    api.call_on(
        0,
        "PUT",
        "/api/auth/v1/roles/hook-id:load%2Fh",
        json_body(&role),
    )
    .await;
    let hook = json!({
        "metadata": {"name": "load", "description": "loadgen", "owner": "load@example.com"},
        "task": {
            "taskQueueId": "load/hooks",
            "payload": {"command": ["echo", "${payload.n}"], "maxRunTime": 600},
            "metadata": {"name": "load ${payload.n}", "description": "loadgen",
                         "owner": "load@example.com", "source": "https://example.com/load"},
        },
        "triggerSchema": {"type": "object", "properties": {"n": {"type": "integer"}},
                          "required": ["n"], "additionalProperties": false},
    });
    api.call_on(0, "PUT", "/api/hooks/v1/hooks/load/h", json_body(&hook))
        .await;
    let a = api.clone();
    let (trigger_rate, trigger_lat, trigger_cpu) = phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            let body = json_body(&json!({ "n": i }));
            a.call_on(i, "POST", "/api/hooks/v1/hooks/load/h/trigger", body)
                .await;
            1
        }
    })
    .await;
    let (create_rate, create_lat, create_cpu) = create_phase(api, clients, secs).await;
    println!(
        "triggerHook/s {trigger_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {trigger_cpu}",
        percentile(&trigger_lat, 0.5),
        percentile(&trigger_lat, 0.99)
    );
    println!(
        "createTask/s {create_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {create_cpu}",
        percentile(&create_lat, 0.5),
        percentile(&create_lat, 0.99)
    );
    println!(
        "ratio (this run): triggerHook / createTask = {:.2}",
        trigger_rate / create_rate
    );
}

/// The notify service: `pulse` (all with one routing key, so one per group commit) and
/// `email` (each to its own address, so written together) at full speed, every call a new
/// notification, so none is dropped as a duplicate or over an address's rate; then how long
/// the delivery reactor takes to write every accepted email into the mail directory; and
/// createTask at full speed in the same run for the ratios.
async fn notify_phases(api: &Api, clients: usize, secs: u64, data: Option<&std::path::Path>) {
    // every call's own number (the phase's argument is the client's)
    let seq = Arc::new(AtomicU64::new(0));
    let (a, s) = (api.clone(), seq.clone());
    let (pulse_rate, pulse_lat, pulse_cpu) = phase(clients, secs, move |i| {
        let a = a.clone();
        let n = s.fetch_add(1, Ordering::Relaxed);
        async move {
            let body = json_body(&json!({ "routingKey": "load.notify", "message": { "n": n } }));
            a.call_on(i, "POST", "/api/notify/v1/pulse", body).await;
            1
        }
    })
    .await;
    let (a, s) = (api.clone(), seq.clone());
    let run = slugid::nice();
    // answered 200 (queued), not 204 (dropped)
    let queued = Arc::new(AtomicU64::new(0));
    let q = queued.clone();
    let (email_rate, email_lat, email_cpu) = phase(clients, secs, move |i| {
        let (a, run, q) = (a.clone(), run.clone(), q.clone());
        let n = s.fetch_add(1, Ordering::Relaxed);
        async move {
            let body = json_body(&json!({
                "address": format!("load{n}@example.com"),
                "subject": format!("load {run} {n}"),
                "content": "A **load** test's email.",
                "link": { "text": "Inspect", "href": "https://example.com/load" },
            }));
            if a.call_on(i, "POST", "/api/notify/v1/email", body)
                .await
                .as_ref()
                == b"OK"
            {
                q.fetch_add(1, Ordering::Relaxed);
            }
            1
        }
    })
    .await;
    // the delivery reactor writes each email into the mail directory (the server's own, when
    // this run started it): how long until every email accepted above is there
    let accepted = queued.load(Ordering::Relaxed) as usize;
    if let Some(dir) = data.map(|d| d.join("mail")) {
        let count = || std::fs::read_dir(&dir).map_or(0, |d| d.count());
        let start = Instant::now();
        while count() < accepted && start.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let delivered = count();
        let elapsed = secs as f64 + start.elapsed().as_secs_f64();
        println!(
            "notify emails delivered: {delivered} of {accepted} queued ({} calls), {:.0}/s from the phase's start until the last (the last {:.1} s of it after the phase)",
            email_lat.len(),
            delivered as f64 / elapsed,
            start.elapsed().as_secs_f64()
        );
    }
    let (create_rate, create_lat, create_cpu) = create_phase(api, clients, secs).await;
    println!(
        "notify pulse/s {pulse_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {pulse_cpu}",
        percentile(&pulse_lat, 0.5),
        percentile(&pulse_lat, 0.99)
    );
    println!(
        "notify email/s {email_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {email_cpu}",
        percentile(&email_lat, 0.5),
        percentile(&email_lat, 0.99)
    );
    println!(
        "createTask/s {create_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {create_cpu}",
        percentile(&create_lat, 0.5),
        percentile(&create_lat, 0.99)
    );
    println!(
        "ratios (this run): pulse / createTask = {:.2}; email / createTask = {:.2}",
        pulse_rate / create_rate,
        email_rate / create_rate
    );
}

/// The github projection's applied log position, from the server's `/metrics`.
async fn github_position(api: &Api) -> Option<u64> {
    let (_, text) = api.send(0, "GET", "/metrics", None, false).await.ok()?;
    String::from_utf8_lossy(&text).lines().find_map(|l| {
        l.strip_prefix("taskledger_projection_position{topic=\"taskledger.github\"} ")?
            .trim()
            .parse()
            .ok()
    })
}

/// The GitHub integration's webhook endpoint: signed `push` webhooks (each its own delivery,
/// body of about 1.5 kB, as GitHub sends them), each checked, sorted and written to the log;
/// the server has no GitHub App, so each job then records its failure, a second durable
/// command per webhook, off the request path: how long after the phase the last is recorded.
/// createTask first, on the idle server, for the ratio.
async fn github_phases(api: &Api, clients: usize, secs: u64) {
    let (create_rate, create_lat, create_cpu) = create_phase(api, clients, secs).await;
    let before = github_position(api).await.unwrap_or(0);
    let seq = Arc::new(AtomicU64::new(0));
    let run = slugid::nice();
    let (a, s) = (api.clone(), seq.clone());
    let (hook_rate, hook_lat, hook_cpu) = phase(clients, secs, move |i| {
        let (a, run) = (a.clone(), run.clone());
        let n = s.fetch_add(1, Ordering::Relaxed);
        async move {
            let body = json!({
                "ref": "refs/heads/main",
                "before": "0000000000000000000000000000000000000000",
                "after": format!("{n:040x}"),
                "head_commit": { "id": format!("{n:040x}"), "message": format!("load {n}"),
                                 "author": { "name": "Load", "email": "load@example.com" } },
                "commits": [{ "id": format!("{n:040x}"), "message": format!("load {n}") }],
                "repository": { "name": "app", "full_name": "acme/app", "owner": { "name": "acme", "login": "acme" },
                                "clone_url": "https://github.com/acme/app.git", "html_url": "https://github.com/acme/app" },
                "pusher": { "name": "load", "email": "load@example.com" },
                "sender": { "login": "load", "id": 1, "type": "User" },
                "installation": { "id": 7 },
            })
            .to_string();
            let signature = taskledger_core::github::sign_sha256(WEBHOOK_SECRET, body.as_bytes());
            let headers = [
                ("content-type", "application/json".to_string()),
                ("x-github-event", "push".to_string()),
                ("x-github-delivery", format!("{run}-{n}")),
                ("x-hub-signature-256", signature),
            ];
            let (status, text) = a
                .send_with(i, "POST", "/api/github/v1/github", Some(body.into()), false, &headers)
                .await
                .expect("webhook");
            assert_eq!(status, 204, "{}", String::from_utf8_lossy(&text));
            1
        }
    })
    .await;
    // every webhook's two events (received, its job's end) applied
    let taken = hook_lat.len() as u64;
    let drain = Instant::now();
    while github_position(api).await.unwrap_or(0) < before + 2 * taken
        && drain.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reached = github_position(api).await.unwrap_or(0) - before;
    println!(
        "github webhooks/s {hook_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {hook_cpu}",
        percentile(&hook_lat, 0.5),
        percentile(&hook_lat, 0.99)
    );
    println!(
        "github jobs: {} of {taken} recorded {:.1} s after the phase ({:.0} jobs/s over the phase and after)",
        reached.saturating_sub(taken).min(taken),
        drain.elapsed().as_secs_f64(),
        reached.saturating_sub(taken) as f64 / (secs as f64 + drain.elapsed().as_secs_f64())
    );
    println!(
        "createTask/s {create_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {create_cpu}",
        percentile(&create_lat, 0.5),
        percentile(&create_lat, 0.99)
    );
    println!(
        "ratio (this run): webhooks / createTask = {:.2}",
        hook_rate / create_rate
    );
}

/// The index service: findTask over 256 entries, insertTask (one durable command each, with
/// its namespaces' check), listTasks of a namespace of 256 entries (a page of 100), and
/// getTaskStatus in the same run for the ratios.
async fn index_phases(api: &Api, clients: usize, secs: u64) {
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let entry = |rank: usize| json!({ "taskId": slugid::nice(), "rank": rank, "data": { "rev": "abc123" }, "expires": expires });
    for n in 0..256 {
        let path = format!("/api/index/v1/task/load.proj.v1.build{n}");
        api.call_on(0, "PUT", &path, json_body(&entry(0))).await;
    }
    let a = api.clone();
    let (find_rate, find_lat, find_cpu) = phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            let path = format!("/api/index/v1/task/load.proj.v1.build{}", i % 256);
            a.call_on(i, "GET", &path, None).await;
            1
        }
    })
    .await;
    let a = api.clone();
    let bodies: Arc<Vec<Value>> = Arc::new((0..256).map(entry).collect());
    let (insert_rate, insert_lat, insert_cpu) = phase(clients, secs, move |i| {
        let (a, bodies) = (a.clone(), bodies.clone());
        async move {
            let path = format!("/api/index/v1/task/load.proj.v1.build{}", i % 256);
            a.call_on(i, "PUT", &path, json_body(&bodies[i % 256]))
                .await;
            1
        }
    })
    .await;
    let a = api.clone();
    let (list_rate, list_lat, list_cpu) = phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            a.call_on(i, "GET", "/api/index/v1/tasks/load.proj.v1?limit=100", None)
                .await;
            1
        }
    })
    .await;
    let (status_rate, _, status_cpu) = status_phase(api, clients, secs).await;
    let (routed_rate, lag, indexed_rate) = routed_lifecycle_phase(api, clients, secs).await;
    println!(
        "index findTask/s {find_rate:.0} (p50 {:.2} ms); CPU per call: {find_cpu}",
        percentile(&find_lat, 0.5)
    );
    println!(
        "index insertTask/s {insert_rate:.0} (p50 {:.2} ms, p99 {:.2} ms); CPU per call: {insert_cpu}",
        percentile(&insert_lat, 0.5),
        percentile(&insert_lat, 0.99)
    );
    println!(
        "index listTasks (100 entries)/s {list_rate:.0} (p50 {:.2} ms); CPU per call: {list_cpu}",
        percentile(&list_lat, 0.5)
    );
    println!("getTaskStatus/s {status_rate:.0}; CPU per call: {status_cpu}");
    println!(
        "lifecycle of tasks with two index routes each: {routed_rate:.0} tasks/s; the route indexer caught up {lag:.2} s after the phase ended, {indexed_rate:.0} completions indexed/s"
    );
    println!(
        "ratios (this run): findTask / getTaskStatus = {:.2}; insertTask / findTask = {:.3}; listTasks / findTask = {:.2}",
        find_rate / status_rate,
        insert_rate / find_rate,
        list_rate / find_rate
    );
}

/// The lifecycle (create, claimWork, reportCompleted) of tasks that each carry two `index.`
/// routes (one of their own, one all share), then how long the route indexer takes to index
/// the last completions: the lifecycle's rate, the indexer's lag after the phase, and the
/// completions it indexed per second over the phase and the lag.
async fn routed_lifecycle_phase(api: &Api, clients: usize, secs: u64) -> (f64, f64, f64) {
    let last: Arc<Vec<std::sync::Mutex<Option<String>>>> =
        Arc::new((0..clients).map(|_| Default::default()).collect());
    let a = api.clone();
    let mine = last.clone();
    let started = Instant::now();
    let (rate, _, _) = phase(clients, secs, move |i| {
        let (a, mine) = (a.clone(), mine.clone());
        async move {
            let queue = format!("load/routes-{i}");
            let task_id = slugid::nice();
            let mut def: Value = serde_json::from_slice(&task_def(&queue)).unwrap();
            def["routes"] = json!([
                format!("index.load.routes.{task_id}"),
                "index.load.routes.latest"
            ]);
            let path = format!("/api/queue/v1/task/{task_id}");
            a.call_on(i, "PUT", &path, json_body(&def)).await;
            let claim = a
                .call_on(
                    i,
                    "POST",
                    &format!("/api/queue/v1/claim-work/{}", queue.replace('/', "%2F")),
                    json_body(
                        &json!({"workerGroup": "g", "workerId": format!("r{i}"), "tasks": 1}),
                    ),
                )
                .await;
            let claim: Claim = serde_json::from_slice(&claim).expect("claimWork response");
            let t = &claim.tasks[0];
            let done = format!(
                "/api/queue/v1/task/{}/runs/{}/completed",
                t.status.task_id, t.run_id
            );
            a.call_on(i, "POST", &done, None).await;
            *mine[i].lock().unwrap() = Some(t.status.task_id.clone());
            1
        }
    })
    .await;
    let ended = Instant::now();
    let completions = rate * ended.duration_since(started).as_secs_f64();
    // every client's last completion indexed: the indexer has caught up (it indexes in order)
    let lasts: Vec<String> = last
        .iter()
        .filter_map(|l| l.lock().unwrap().clone())
        .collect();
    for task_id in lasts {
        let path = format!("/api/index/v1/task/load.routes.{task_id}");
        while !api
            .send(0, "GET", &path, None, true)
            .await
            .is_ok_and(|(status, _)| status.is_success())
        {
            assert!(ended.elapsed() < Duration::from_secs(600), "never indexed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let lag = ended.elapsed().as_secs_f64();
    (rate, lag, completions / started.elapsed().as_secs_f64())
}

async fn auth_phases(api: &Api, clients: usize, secs: u64) {
    for r in 0..50 {
        let scopes: Vec<String> = (0..20).map(|i| format!("project:p{r}:scope-{i}")).collect();
        api.call_on(
            0,
            "PUT",
            &format!("/api/auth/v1/roles/load-team:r{r}"),
            json_body(&json!({"description": "loadgen", "scopes": scopes})),
        )
        .await;
    }
    let mut scopes: Vec<String> = (0..50).map(|r| format!("assume:load-team:r{r}")).collect();
    scopes.push("auth:current-scopes".into());
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let created = api
        .call_on(
            0,
            "PUT",
            &format!("/api/auth/v1/clients/load-{}", std::process::id()),
            json_body(&json!({"description": "loadgen", "expires": expires, "scopes": scopes})),
        )
        .await;
    let created: Value = serde_json::from_slice(&created).unwrap();
    let member = api.as_client(
        created["clientId"].as_str().unwrap(),
        created["accessToken"].as_str().unwrap(),
    );
    let held = member
        .call_on(0, "GET", "/api/auth/v1/scopes/current", None)
        .await;
    let held: Value = serde_json::from_slice(&held).unwrap();
    let held = held["scopes"].as_array().map_or(0, Vec::len);

    let m = member.clone();
    let (current_rate, current_lat, _) = phase(clients, secs, move |i| {
        let m = m.clone();
        async move {
            m.call_on(i, "GET", "/api/auth/v1/scopes/current", None)
                .await;
            1
        }
    })
    .await;
    // the same request cost without the 1,052-scope response body
    let m = member.clone();
    let (signed_ping_rate, signed_ping_lat, _) = phase(clients, secs, move |i| {
        let m = m.clone();
        async move {
            m.call_on(i, "GET", "/api/auth/v1/ping", None).await;
            1
        }
    })
    .await;
    let a = api.clone();
    let (ping_rate, ping_lat, _) = phase(clients, secs, move |i| {
        let a = a.clone();
        async move {
            let (status, _) = a
                .send(i, "GET", "/api/auth/v1/ping", None, false)
                .await
                .expect("ping");
            assert!(status.is_success());
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
