//! Replay and audit end to end: a task's history and time travel over HTTP and the CLI,
//! `replay --verify` beside a running server and on a stopped one, a hand-corrupted projection
//! key named by `replay --verify`, a flipped log byte found by `audit verify`, and no token in
//! any audit output.

use crate::harness::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use taskcluster::{Auth, ClientBuilder, Credentials};
use taskledger_projections::{keys, store};

/// Runs the binary with `args` on the server's data directory: success, stdout, stderr.
pub(crate) fn cli(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(args)
        .env("TASKLEDGER_DATA_DIR", &s.data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run taskledger");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) async fn get_json(url: &str) -> (u16, Value) {
    let client = reqwest::Client::new();
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A bewit-signed URL for an audit route, made as root with the official client's helper.
pub(crate) fn signed(s: &Server, path: &str) -> String {
    // the taskcluster crate signs URLs of its own services only; sign ours with hawk directly
    let exp = chrono::Utc::now().timestamp() + 300;
    let port: u16 = s.root_url.rsplit(':').next().unwrap().parse().unwrap();
    let bewit = taskledger_core::auth::bewit(
        "static/taskcluster/root",
        ROOT_TOKEN,
        "127.0.0.1",
        port,
        path,
        exp,
        "",
    );
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{}{path}{sep}bewit={bewit}", s.root_url)
}

fn pause() -> chrono::DateTime<chrono::Utc> {
    std::thread::sleep(Duration::from_millis(15));
    let t = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(15));
    t
}

/// Creates a client as root; returns its access token.
async fn create_client(s: &Server, client_id: &str) -> String {
    let created = Auth::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap()
    .createClient(
        client_id,
        &json!({ "description": "d", "expires": "2100-01-01T00:00:00.000Z", "scopes": ["x:y"] }),
    )
    .await
    .unwrap();
    created["accessToken"].as_str().unwrap().to_string()
}

/// The instants a task passed through, and the state of its runs at each.
struct TaskLife {
    task_id: String,
    task_queue_id: String,
    /// Before the task existed.
    before: chrono::DateTime<chrono::Utc>,
    states: Vec<(chrono::DateTime<chrono::Utc>, Value)>,
}

/// Creates a task, claims it, fails it, reruns it and completes it, noting the instants between.
async fn run_a_task_through_its_life(s: &Server) -> TaskLife {
    let q = s.queue();
    let tq = fresh_queue();
    let task_id = slugid::nice();
    let mut def = task_def(&tq, 600);
    def["retries"] = json!(0);

    let before = pause();
    q.createTask(&task_id, &def).await.unwrap();
    let t_pending = pause();
    q.claimWork(&tq, &worker_body(1)).await.unwrap();
    let t_running = pause();
    q.reportFailed(&task_id, "0").await.unwrap();
    let t_failed = pause();
    q.rerunTask(&task_id).await.unwrap();
    let t_rerun = pause();
    q.claimWork(&tq, &worker_body(1)).await.unwrap();
    q.reportCompleted(&task_id, "1").await.unwrap();
    let t_done = pause();
    TaskLife {
        task_id,
        task_queue_id: tq,
        before,
        states: vec![
            (t_pending, json!(["pending"])),
            (t_running, json!(["running"])),
            (t_failed, json!(["failed"])),
            (t_rerun, json!(["failed", "pending"])),
            (t_done, json!(["failed", "completed"])),
        ],
    }
}

/// Each line of a command's `--json` output.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every value of a field named `upload_id`, anywhere in `v`.
fn upload_ids(v: &Value, found: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            for (k, field) in map {
                if k == "upload_id" {
                    found.push(field.clone());
                } else {
                    upload_ids(field, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| upload_ids(i, found)),
        _ => {}
    }
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The audit API answers the task's state as of each instant and its whole history.
async fn check_history_over_http(s: &Server, life: &TaskLife) {
    let task_id = &life.task_id;
    for (at, runs) in &life.states {
        let path = format!("/api/audit/v1/as-of/task/{task_id}?time={}", iso(*at));
        let (status, body) = get_json(&signed(s, &path)).await;
        assert_eq!(status, 200, "{body}");
        let got: Vec<Value> = body["state"]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["state"].clone())
            .collect();
        assert_eq!(&Value::Array(got), runs, "as of {at}");
    }
    let path = format!(
        "/api/audit/v1/as-of/task/{task_id}?time={}",
        iso(life.before)
    );
    assert_eq!(get_json(&signed(s, &path)).await.0, 404);
    // without credentials: 403
    let (status, _) = get_json(&format!(
        "{}/api/audit/v1/history/task/{task_id}",
        s.root_url
    ))
    .await;
    assert_eq!(status, 403);

    // history over HTTP: every event of the task, in order, with its actor
    let (body, types) = history_over_http(s, &format!("task/{task_id}")).await;
    assert_eq!(types, TASK_LIFE_EVENTS);
    assert_eq!(
        body["events"][0]["envelope"]["actor"]["client_id"],
        "static/taskcluster/root"
    );

    // the worker that claimed the runs has a history of its own
    let worker = format!("{}/it-group/it-worker", life.task_queue_id);
    let (_, types) = history_over_http(s, &format!("worker/{worker}")).await;
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == "WorkerSeen"),
        "{types:?}"
    );
    // an unknown kind: 400, naming the kinds there are
    let (status, body) = get_json(&signed(s, "/api/audit/v1/history/secret/x")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("worker|client"),
        "{body}"
    );
}

/// An entity's history from the audit API (200 expected): the body and its event types.
async fn history_over_http(s: &Server, entity: &str) -> (Value, Vec<String>) {
    let (status, body) = get_json(&signed(s, &format!("/api/audit/v1/history/{entity}"))).await;
    assert_eq!(status, 200, "{body}");
    let types = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_string())
        .collect();
    (body, types)
}

const TASK_LIFE_EVENTS: [&str; 7] = [
    "TaskDefined",
    "RunScheduled",
    "RunClaimed",
    "RunResolved",
    "RunScheduled",
    "RunClaimed",
    "RunResolved",
];

#[tokio::test]
async fn history_time_travel_replay_and_tamper_evidence() {
    let mut s = Server::start(&[]).await;
    let life = run_a_task_through_its_life(&s).await;
    let task_id = &life.task_id;
    let t_running = life.states[1].0;

    // a client whose token must never show up in audit output
    let token = create_client(&s, "it/audited").await;
    // nor an object artifact's upload id (whoever knows it may finish the upload)
    let q = s.queue();
    let (artifact_task, tq) = (slugid::nice(), fresh_queue());
    q.createTask(&artifact_task, &task_def(&tq, 600))
        .await
        .unwrap();
    q.claimWork(&tq, &worker_body(1)).await.unwrap();
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    q.createArtifact(
        &artifact_task,
        "0",
        "public/audited.txt",
        &json!({ "storageType": "object", "contentType": "text/plain", "expires": expires }),
    )
    .await
    .unwrap();

    check_history_over_http(&s, &life).await;

    // the CLI beside the running server: history, as-of, events tail, replay --verify
    let (ok, out, err) = cli(&s, &["audit", "history", "--task", task_id]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 7, "{out}");
    let at = t_running.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (ok, out, err) = cli(&s, &["audit", "as-of", &at, "--task", task_id]);
    assert!(ok, "{err}");
    assert!(out.contains("\"running\""), "{out}");
    let (ok, tail, err) = cli(&s, &["events", "tail", "--service", "all"]);
    assert!(ok, "{err}");
    assert!(tail.lines().count() >= 8);
    assert!(tail.contains("ClientCreated") && tail.contains("[redacted]"));
    let (ok, history, err) = cli(
        &s,
        &["audit", "history", "--client", "it/audited", "--json"],
    );
    assert!(ok, "{err}");
    for text in [&tail, &history] {
        assert!(!text.contains(&token), "a token leaked into audit output");
    }
    // every upload_id field of the artifact task's history (CLI and HTTP) and of the whole
    // event stream is redacted, and there is one at least (the ArtifactCreated)
    let (ok, artifact_history, err) = cli(
        &s,
        &["audit", "history", "--task", &artifact_task, "--json"],
    );
    assert!(ok, "{err}");
    let (ok, json_tail, err) = cli(&s, &["events", "tail", "--service", "queue", "--json"]);
    assert!(ok, "{err}");
    let (status, http_history) = get_json(&signed(
        &s,
        &format!("/api/audit/v1/history/task/{artifact_task}"),
    ))
    .await;
    assert_eq!(status, 200);
    for (what, docs) in [
        ("audit history --json", json_lines(&artifact_history)),
        ("events tail --json", json_lines(&json_tail)),
        ("GET history", vec![http_history]),
    ] {
        let mut found = Vec::new();
        docs.iter().for_each(|d| upload_ids(d, &mut found));
        assert!(
            !found.is_empty(),
            "{what}: no ArtifactCreated with an upload id"
        );
        assert!(
            found.iter().all(|v| v == "[redacted]"),
            "{what}: an upload id leaked: {found:?}"
        );
    }
    let (ok, out, err) = cli(&s, &["replay", "--verify"]);
    assert!(ok, "replay --verify beside the server: {out}{err}");
    // queue, auth, worker-manager, object, secrets, index, hooks, notify and github
    assert_eq!(out.matches("verified").count(), 9, "{out}");
    let (ok, out, err) = cli(&s, &["audit", "verify"]);
    assert!(ok, "{out}{err}");

    // stop the server; the tools work on its data directory
    s.kill();
    let (ok, out, err) = cli(&s, &["replay", "--verify", "--projection", "queue"]);
    assert!(ok, "{out}{err}");

    // corrupt one projection key by hand: replay --verify fails and names it
    let db_dir = s.data_dir.join("db");
    {
        let db = store::open(&db_dir).unwrap();
        let tasks = db.cf_handle(keys::CF_TASKS).unwrap();
        let (k, mut v) = db
            .iterator_cf(tasks, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        db.put_cf(tasks, &k, &v).unwrap();
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        drop(db);
        let (ok, out, err) = cli(&s, &["replay", "--verify", "--projection", "queue"]);
        assert!(!ok, "a corrupted projection must fail verification: {out}");
        assert!(
            err.contains("column family tasks") && err.contains(&hex),
            "{err}"
        );
    }

    // flip one byte of one event in the log: audit verify fails at that event
    {
        let db = store::open(&db_dir).unwrap();
        let log = db.cf_handle(keys::CF_LOG).unwrap();
        let key = keys::log_key(taskledger_core::log::QUEUE_TOPIC, 0, 2);
        let mut v = db.get_cf(log, &key).unwrap().unwrap();
        let mid = v.len() / 2;
        v[mid] ^= 0x40;
        db.put_cf(log, &key, &v).unwrap();
    }
    let (ok, out, err) = cli(&s, &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(err.contains("taskledger.queue/0 offset 2"), "{err}");
}

/// The queue partition's checkpoints in a checkpoint file.
fn queue_checkpoints(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|c| c["topic"] == "taskledger.queue")
        .collect()
}

/// Waits for the server to sign a queue checkpoint covering at least `count` events (the
/// scheduled chain walk reporting success on /metrics) and keeps a copy of it, as an auditor
/// would: the checkpoint, the signer's public key and the copy's path.
async fn keep_a_checkpoint(s: &Server, count: u64) -> (Value, String, std::path::PathBuf) {
    let file = s.data_dir.join("checkpoints.jsonl");
    let cp = eventually(Duration::from_secs(20), || async {
        queue_checkpoints(&file)
            .into_iter()
            .find(|c| c["count"].as_u64().unwrap_or(0) >= count)
    })
    .await;
    let metrics = s.metrics().await;
    assert!(metrics.contains("taskledger_audit_chain_ok 1"), "{metrics}");
    let key = cp["publicKey"].as_str().unwrap().to_string();
    let copy =
        std::env::temp_dir().join(format!("taskledger-checkpoints-{}.jsonl", slugid::nice()));
    std::fs::write(&copy, format!("{cp}\n")).unwrap();
    (cp, key, copy)
}

#[tokio::test]
async fn signed_checkpoints_catch_a_log_rewritten_with_a_consistent_chain() {
    let mut s = Server::start(&[("TASKLEDGER_CHECKPOINT_SECS", "1")]).await;
    let q = s.queue();
    let tq = fresh_queue();
    for _ in 0..3 {
        q.createTask(&slugid::nice(), &task_def(&tq, 600))
            .await
            .unwrap();
    }
    // a checkpoint covering the three tasks (each createTask appended at least 2 events)
    let (_, key, copy) = keep_a_checkpoint(&s, 6).await;
    let copy_arg = copy.to_str().unwrap();
    s.kill();

    let (ok, out, err) = cli(
        &s,
        &[
            "audit",
            "verify",
            "--checkpoints",
            copy_arg,
            "--public-key",
            &key,
        ],
    );
    assert!(
        ok && out.contains("ok: 1 signed checkpoints hold"),
        "{out}{err}"
    );
    let other = "00".repeat(32);
    let (ok, _, err) = cli(
        &s,
        &[
            "audit",
            "verify",
            "--checkpoints",
            copy_arg,
            "--public-key",
            &other,
        ],
    );
    assert!(!ok && err.contains("signed by another key"), "{err}");

    // rewrite one event and recompute every chain link after it, as a careful forger would
    {
        let db = store::open(&s.data_dir.join("db")).unwrap();
        let log = db.cf_handle(keys::CF_LOG).unwrap();
        let chain = db.cf_handle(keys::CF_LOG_CHAIN).unwrap();
        let topic = taskledger_core::log::QUEUE_TOPIC;
        let key1 = keys::log_key(topic, 0, 1);
        let mut v = db.get_cf(log, &key1).unwrap().unwrap();
        let mid = v.len() / 2;
        v[mid] ^= 0x40;
        db.put_cf(log, &key1, &v).unwrap();
        let mut link = taskledger_projections::embedded_log::CHAIN_START;
        let prefix = keys::log_prefix(topic, 0);
        let records = db
            .iterator_cf(
                log,
                rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
            )
            .map(|r| r.unwrap())
            .take_while(|(k, _)| k.starts_with(&prefix));
        for (offset, (k, v)) in records.enumerate() {
            link = taskledger_projections::embedded_log::chain_link(&link, offset as u64, &v);
            db.put_cf(chain, &k, link).unwrap();
        }
    }
    // the chain alone cannot tell...
    let (ok, out, err) = cli(&s, &["audit", "verify"]);
    assert!(ok, "the forged chain is self-consistent: {out}{err}");
    // ...the signed checkpoint can
    let (ok, out, err) = cli(
        &s,
        &[
            "audit",
            "verify",
            "--checkpoints",
            copy_arg,
            "--public-key",
            &key,
        ],
    );
    assert!(!ok, "{out}");
    assert!(err.contains("no longer chain to the signed head"), "{err}");
    let _ = std::fs::remove_file(&copy);
}

/// The same questions on the Kafka log: history and time travel over HTTP (the projections
/// index the streams they fold), the CLI reading the topic itself, and signed checkpoints of
/// the topics' chains that catch a topic replaced by another self-consistent one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_time_travel_and_checkpoints_on_kafka() {
    let prefix = fresh_topic_prefix();
    let mut s = Server::start_with(vec![
        ("TASKLEDGER_KAFKA_BROKERS".into(), kafka_bootstrap()),
        ("TASKLEDGER_KAFKA_TOPIC_PREFIX".into(), prefix.clone()),
        ("TASKLEDGER_CHECKPOINT_SECS".into(), "1".into()),
    ])
    .await;
    let life = run_a_task_through_its_life(&s).await;
    let task_id = &life.task_id;
    let token = create_client(&s, "it/audited-on-kafka").await;

    check_history_over_http(&s, &life).await;
    let (status, body) = get_json(&signed(
        &s,
        "/api/audit/v1/history/client/it/audited-on-kafka",
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["eventType"], "ClientCreated");
    assert!(!body.to_string().contains(&token), "a token leaked: {body}");
    // a hook's history too (the hooks projection indexes its streams on Kafka)
    let hook = json!({
        "metadata": {"name": "n", "description": "d", "owner": "it@example.com"},
        "task": {},
    });
    let (status, _) = s
        .root_call("PUT", "/api/hooks/v1/hooks/it-audit/on%2Fkafka", &hook)
        .await;
    assert_eq!(status, 200);
    let (status, body) =
        get_json(&signed(&s, "/api/audit/v1/history/hook/it-audit/on/kafka")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["eventType"], "HookCreated");

    // the CLI reads the topic itself, no server needed
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = kafka_tool(&prefix, &["audit", "history", "--task", task_id, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let types: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["eventType"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, TASK_LIFE_EVENTS);
    for (at, runs) in &life.states {
        let out = kafka_tool(&prefix, &["audit", "as-of", &iso(*at), "--task", task_id]);
        assert!(out.status.success(), "{}", text(&out));
        let state: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<Value> = state["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["state"].clone())
            .collect();
        assert_eq!(&Value::Array(got), runs, "as of {at}");
    }
    let out = kafka_tool(
        &prefix,
        &[
            "audit",
            "history",
            "--client",
            "it/audited-on-kafka",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains(&token),
        "a token leaked into audit output"
    );

    // checkpoints of the topics' chains, signed while the server runs
    let (cp, key, copy) = keep_a_checkpoint(&s, 7).await;
    let copy_arg = copy.to_str().unwrap();
    s.kill();
    let verify = |prefix: &str| {
        kafka_tool(
            prefix,
            &[
                "audit",
                "verify",
                "--checkpoints",
                copy_arg,
                "--public-key",
                &key,
            ],
        )
    };
    let out = verify(&prefix);
    assert!(
        out.status.success() && text(&out).contains("ok: 1 signed checkpoints hold"),
        "{}",
        text(&out)
    );

    // another server's topics, with more events than were signed but a different history:
    // their chain holds on its own, the checkpoint does not
    let other = fresh_topic_prefix();
    let mut t = Server::start_with(vec![
        ("TASKLEDGER_KAFKA_BROKERS".into(), kafka_bootstrap()),
        ("TASKLEDGER_KAFKA_TOPIC_PREFIX".into(), other.clone()),
    ])
    .await;
    let q = t.queue();
    let tq = fresh_queue();
    let signed_count = cp["count"].as_u64().unwrap();
    for _ in 0..signed_count {
        q.createTask(&slugid::nice(), &task_def(&tq, 600))
            .await
            .unwrap();
    }
    t.kill();
    let out = kafka_tool(&other, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = verify(&other);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no longer chain to the signed head"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_file(&copy);
}

/// `serve --verify-projections-secs`: the scheduled rebuild reports each projection equal to
/// the live one on /metrics, and reports the queue's as different once a key of it was
/// corrupted by hand.
#[tokio::test]
async fn scheduled_rebuilds_compare_the_projections_and_report_on_metrics() {
    let mut s = Server::start(&[("TASKLEDGER_VERIFY_PROJECTIONS_SECS", "1")]).await;
    let q = s.queue();
    let tq = fresh_queue();
    for _ in 0..3 {
        q.createTask(&slugid::nice(), &task_def(&tq, 600))
            .await
            .unwrap();
    }
    let verified = |text: &str, projection: &str| {
        metric_sample(
            text,
            &format!("taskledger_projection_verified{{projection=\"{projection}\"}}"),
        )
    };
    let text = eventually(Duration::from_secs(30), || async {
        let text = s.metrics().await;
        let replayed = metric_sample(
            &text,
            "taskledger_projection_replayed_events{projection=\"queue\"}",
        )
        .unwrap_or(0.0);
        (replayed >= 6.0).then_some(text)
    })
    .await;
    for p in ["queue", "auth", "worker-manager"] {
        assert_eq!(verified(&text, p), Some(1.0), "{p}: {text}");
    }

    s.kill();
    {
        let db = store::open(&s.data_dir.join("db")).unwrap();
        let tasks = db.cf_handle(keys::CF_TASKS).unwrap();
        let (k, mut v) = db
            .iterator_cf(tasks, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        db.put_cf(tasks, &k, &v).unwrap();
    }
    s.restart().await;
    let text = eventually(Duration::from_secs(30), || async {
        let text = s.metrics().await;
        (verified(&text, "queue") == Some(0.0)).then_some(text)
    })
    .await;
    assert_eq!(verified(&text, "auth"), Some(1.0), "{text}");
}
