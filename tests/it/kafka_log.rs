//! The Kafka log against a real Kafka-protocol broker (`KAFKA_BOOTSTRAP`; README's test
//! command starts noida-db): writer fencing with and without broker transactions, a broker
//! outage, and a crash under load.

use crate::harness::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Queue, Retry};
use taskledger_core::log::{EventLog, LogError, Record, QUEUE_TOPIC};
use taskledger_projections::{KafkaConfig, KafkaLog};

fn record(key: &str) -> Record {
    Record {
        key: key.to_string(),
        event_type: "TestEvent",
        event_id: uuid::Uuid::now_v7().to_string(),
        value: key.as_bytes().to_vec(),
    }
}

fn config(prefix: &str, transactions: bool) -> KafkaConfig {
    KafkaConfig {
        topic_prefix: prefix.to_string(),
        transactions,
        timeout: Duration::from_secs(5),
        ..KafkaConfig::new(&kafka_bootstrap())
    }
}

/// Every key in the raw partition, as any Kafka consumer sees it (read_uncommitted).
fn raw_keys(topic: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", "taskledger-it-raw")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .unwrap();
    let mut keys = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
                if m.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(e)) => panic!("raw read failed: {e}"),
            None => {}
        }
    }
    keys
}

async fn read_all_keys(log: &KafkaLog) -> Vec<String> {
    let mut keys = Vec::new();
    let mut offset = 0;
    loop {
        let batch = log.read(QUEUE_TOPIC, 0, offset, 1000).await.unwrap();
        if batch.next <= offset {
            return keys;
        }
        keys.extend(batch.records.into_iter().map(|r| r.key));
        offset = batch.next;
    }
}

async fn second_writer_fences_the_first(transactions: bool) {
    let prefix = fresh_topic_prefix();
    let a = KafkaLog::connect(config(&prefix, transactions), &[QUEUE_TOPIC])
        .await
        .unwrap();
    a.append(QUEUE_TOPIC, 0, vec![record("a-before")])
        .await
        .unwrap();

    let b = KafkaLog::connect(config(&prefix, transactions), &[QUEUE_TOPIC])
        .await
        .unwrap();
    let owner = b.acquire(QUEUE_TOPIC, 0).await.unwrap();
    assert_eq!(owner.epoch, 2, "the second writer announces the next epoch");

    // the first writer can no longer get anything acknowledged...
    let late = a.append(QUEUE_TOPIC, 0, vec![record("a-after")]).await;
    assert!(
        matches!(late, Err(LogError::Fenced) | Err(LogError::Unavailable(_))),
        "a superseded writer's append was acknowledged: {late:?}"
    );
    b.append(QUEUE_TOPIC, 0, vec![record("b-1")]).await.unwrap();
    let topic = a.kafka_topic(QUEUE_TOPIC);

    // a fresh reader sees a's early record and b's, never a's late one
    let reader = KafkaLog::connect(config(&prefix, transactions), &[QUEUE_TOPIC])
        .await
        .unwrap();
    let keys = read_all_keys(&reader).await;
    assert_eq!(keys, vec!["a-before", "b-1"]);

    if !transactions {
        // without broker fencing the late record is really in the partition: only the epoch
        // stamps keep it out of every projection
        let raw = raw_keys(&topic);
        assert!(
            raw.contains(&"a-after".to_string()),
            "the late append never reached the broker, so this run proved nothing: {raw:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_fences_the_first_with_transactions() {
    second_writer_fences_the_first(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_writer_fences_the_first_by_epoch_alone() {
    second_writer_fences_the_first(false).await;
}

/// A private broker this test may stop and start (noida-db from `NOIDA_DB_BIN`).
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Broker {
    fn start(port: u16, dir: &std::path::Path) -> Broker {
        let mut b = Broker {
            child: None,
            port,
            dir: dir.to_path_buf(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let (port, dir) = (self.port, &self.dir);
        let bin = std::env::var("NOIDA_DB_BIN")
            .expect("NOIDA_DB_BIN is not set: run ./scripts/test.sh, which installs noida-db");
        let child = Command::new(bin)
            .args(["start", "--only", "kafka", "--host", "127.0.0.1"])
            .args(["--kafka-port", &port.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start noida-db");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// SIGTERM, so the broker keeps what it acknowledged.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn no_retry_queue(server: &Server) -> Queue {
    Queue::new(
        ClientBuilder::new(&server.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN))
            .retry(Retry {
                retries: 0,
                ..Retry::default()
            }),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_answers_503_then_recovers_without_restart() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("taskledger-it-broker-{}", slugid::nice()));
    let mut broker = Broker::start(port, &dir);
    let server = Server::start_with(vec![
        (
            "TASKLEDGER_KAFKA_BROKERS".into(),
            format!("127.0.0.1:{port}"),
        ),
        ("TASKLEDGER_KAFKA_TIMEOUT_MS".into(), "2000".into()),
    ])
    .await;
    let q = no_retry_queue(&server);
    let queue = fresh_queue();
    let before = slugid::nice();
    q.createTask(&before, &task_def(&queue, 600)).await.unwrap();

    broker.stop();
    let during = slugid::nice();
    let err = q
        .createTask(&during, &task_def(&queue, 600))
        .await
        .expect_err("a command succeeded with the broker down");
    assert_eq!(status_of(&err), Some(503), "{err:#}");
    // reads still answer from the projection
    assert_eq!(state_of(&q, &before).await["state"], "pending");

    broker.spawn();
    let after = slugid::nice();
    // librdkafka's reconnect backoff grows to 10 s; a slow machine needs more than two rounds
    eventually(Duration::from_secs(60), || async {
        q.createTask(&after, &task_def(&queue, 600)).await.ok()
    })
    .await;
    assert_eq!(state_of(&q, &after).await["state"], "pending");
    assert_eq!(state_of(&q, &before).await["state"], "pending");
}

/// kill -9 under a create/claim/complete loop; after a restart every acknowledged command is
/// there exactly once.
async fn crash_under_load_keeps_every_acknowledged_command(backend: Backend) {
    let mut server = Server::start_on(backend, &[]).await;
    let queue = fresh_queue();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let mut loaders = Vec::new();
    for n in 0..4 {
        let q = no_retry_queue(&server);
        let (queue, tx) = (queue.clone(), tx.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let task_id = slugid::nice();
                if q.createTask(&task_id, &task_def(&queue, 600))
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tx.send((task_id.clone(), false));
                let claimed = q
                    .claimWork(
                        &queue,
                        &json!({"workerGroup": "g", "workerId": format!("w{n}"), "tasks": 1}),
                    )
                    .await;
                let Ok(claimed) = claimed else { return };
                for claim in claimed["tasks"].as_array().cloned().unwrap_or_default() {
                    let id = claim["status"]["taskId"].as_str().unwrap().to_string();
                    let run = claim["runId"].as_u64().unwrap().to_string();
                    if q.reportCompleted(&id, &run).await.is_err() {
                        return;
                    }
                    let _ = tx.send((id, true));
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    for l in loaders {
        let _ = l.await;
    }
    let mut created = HashSet::new();
    let mut completed = HashSet::new();
    while let Some((id, done)) = rx.recv().await {
        if done {
            completed.insert(id);
        } else {
            created.insert(id);
        }
    }
    assert!(
        completed.len() > 10,
        "the load hardly ran: {}",
        completed.len()
    );
    server.restart().await;
    let q = server.queue();
    for id in &created {
        let status = q.status(id).await.unwrap();
        let runs = status["status"]["runs"].as_array().unwrap();
        assert!(runs.len() <= 1, "{id} has {} runs", runs.len());
        if completed.contains(id) {
            assert_eq!(status["status"]["state"], "completed", "{id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_embedded() {
    crash_under_load_keeps_every_acknowledged_command(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_under_load_kafka() {
    crash_under_load_keeps_every_acknowledged_command(Backend::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_and_replay_read_the_kafka_log() {
    let prefix = fresh_topic_prefix();
    let server = Server::start_with(vec![
        ("TASKLEDGER_KAFKA_BROKERS".into(), kafka_bootstrap()),
        ("TASKLEDGER_KAFKA_TOPIC_PREFIX".into(), prefix.clone()),
    ])
    .await;
    let q = server.queue();
    let task_id = slugid::nice();
    q.createTask(&task_id, &task_def(&fresh_queue(), 600))
        .await
        .unwrap();
    let tail = |prefix: &str| kafka_tool(prefix, &["events", "tail", "--service", "queue"]);
    let out = tail(&prefix);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .filter(|l| l["envelope"]["stream_id"] == format!("task/{task_id}"))
        .map(|l| l["eventType"].as_str().unwrap())
        .collect();
    assert!(!types.is_empty(), "no event of the task in {lines:?}");
    // offsets are the records' own: increasing, and the ownership marker is not among them
    let offsets: Vec<u64> = lines
        .iter()
        .map(|l| l["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(offsets[0] > 0, "offset 0 holds the ownership marker");

    // a wrong prefix is an error, not new empty topics
    let wrong = fresh_topic_prefix();
    let out = tail(&wrong);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("topic {wrong}queue does not exist")),
        "{err}"
    );

    // replay every projection from the topics and compare with the server's live projections
    let data_dir = server.data_dir.to_str().unwrap();
    let out = kafka_tool(&prefix, &["replay", "--verify", "--data-dir", data_dir]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("verified").count(), 9, "{text}");
    let queue_events: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("queue: ")?.split(' ').next()?.parse().ok())
        .expect("a queue line with its event count");
    // replay folded what the server had folded: between what tail printed before and after
    // (a reactor may append while this runs)
    let after = String::from_utf8(tail(&prefix).stdout)
        .unwrap()
        .lines()
        .count();
    assert!(
        (lines.len()..=after).contains(&(queue_events as usize)),
        "replay folded {queue_events}, tail printed {} then {after}: {text}",
        lines.len()
    );

    // the hash chain in the headers holds...
    let verify = || kafka_tool(&prefix, &["audit", "verify"]);
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("taskledger.queue/0: "), "{text}");
    let chained: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("taskledger.queue/0: ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("the queue topic's line");
    assert!(
        chained >= after,
        "audit verify walked {chained} of {after} events: {text}"
    );
    // ...until someone holding the current writer's stamp appends an event whose link does
    // not follow: a forged copy of the last event
    let topic = format!("{prefix}queue");
    let forged_at = forge_copy_of_last_event(&topic).await;
    let out = verify();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("taskledger.queue/0 offset {forged_at}")),
        "{err}"
    );
}

/// Appends, outside taskledger, a copy of the topic's last event with its stamp but a chain
/// link of zeros; returns its offset.
async fn forge_copy_of_last_event(topic: &str) -> i64 {
    use rdkafka::message::{Header, Headers, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", "taskledger-it-forger")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut last = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers: Vec<(String, Vec<u8>)> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                if headers.iter().any(|(k, _)| k == "taskledger-event-type") {
                    last = Some((
                        m.key().unwrap().to_vec(),
                        m.payload().unwrap().to_vec(),
                        headers,
                    ));
                }
                if m.offset() + 2 >= high {
                    break;
                }
            }
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    let (key, value, headers) = last.expect("an event in the topic");
    let zeros = "0".repeat(64);
    let mut forged = OwnedHeaders::new();
    for (k, v) in &headers {
        let v: &[u8] = if k == "taskledger-chain" {
            zeros.as_bytes()
        } else {
            v
        };
        forged = forged.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(topic)
                .partition(0)
                .key(&key)
                .payload(&value)
                .headers(forged),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    delivery.offset
}

/// On a broker whose reads often come back short (a fail point empties half of them), every
/// acknowledged command is in the writer's own projection at once: the first commands after
/// the writer takes its partitions follow its ownership marker, which it folds from the log
/// with its own events, and it answers only once it has them. Before, such a short read let
/// the writer answer with a projection lacking the events, and skip them for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_reads_never_hide_an_acknowledged_command_from_its_writer() {
    let mut server = Server::start_on(
        Backend::Kafka,
        &[("FAILPOINTS", "kafka-read-short=50%return")],
    )
    .await;
    let mut created = Vec::new();
    for round in 0..3 {
        let q = server.queue();
        let queue = fresh_queue();
        for _ in 0..3 {
            let task_id = slugid::nice();
            q.createTask(&task_id, &task_def(&queue, 600))
                .await
                .unwrap();
            created.push(task_id.clone());
            assert_eq!(
                state_of(&q, &task_id).await["state"],
                "pending",
                "round {round}"
            );
        }
        // the auth service's first command after the start goes the same way
        let id = format!("it/short-reads-{}", slugid::nice());
        let creds = crate::auth::create_client(&server, &id, &["auth:current-scopes"]).await;
        let scopes = crate::auth::auth_as(&server, creds)
            .currentScopes()
            .await
            .unwrap();
        // (with the anonymous role's scopes)
        let held = scopes["scopes"].as_array().unwrap();
        assert!(
            held.contains(&json!("auth:current-scopes")),
            "round {round}: {scopes}"
        );
        server.restart().await;
    }

    // a history read through the same short reads is whole, not an error nor cut short
    for task_id in &created {
        let path = format!("/api/audit/v1/history/task/{task_id}");
        let (status, body) = crate::audit::get_json(&crate::audit::signed(&server, &path)).await;
        assert_eq!(status, 200, "{task_id}: {body}");
        let types: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["eventType"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["TaskDefined", "RunScheduled"], "{task_id}");
    }

    // so is everything the tools read from the topics themselves: each says the same with
    // half its reads short as with none
    let prefix = server
        .env("TASKLEDGER_KAFKA_TOPIC_PREFIX")
        .unwrap()
        .to_string();
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    server.kill();
    let short = [("FAILPOINTS", "kafka-read-short=50%return")];
    let task = created[0].as_str();
    let runs: [&[&str]; 4] = [
        &["events", "tail"],
        &["audit", "history", "--task", task, "--json"],
        &["audit", "verify"],
        &["replay", "--verify", "--data-dir", &data_dir],
    ];
    for args in runs {
        let says = |env: &[(&str, &str)]| {
            let out = kafka_tool_with(&prefix, args, env);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout.lines().map(untimed).collect::<Vec<_>>()
        };
        let plain = says(&[]);
        assert!(!plain.is_empty(), "{args:?} printed nothing");
        let slow = says(&short);
        // (the lines themselves only when they differ: a tail's are long)
        assert_eq!(
            slow.len(),
            plain.len(),
            "{args:?}: lines with short reads, without"
        );
        assert_eq!(slow, plain, "{args:?}");
    }
}

/// A restart on Kafka resumes each partition's ownership history from the copy the server
/// kept in its database instead of reading the partition from offset 0 (armed after the first
/// start, the fail point `kafka-index-from-start` panics, and the start fails, if any index
/// starts empty), and the writer's hash chain goes on from the kept link: after the restarts
/// every task is there, new ones are taken, every secret and index entry is there (one of them
/// written by the route indexer, reading the queue's topic, when a task completed), and `audit
/// verify`, which trusts no copy and walks the topics from their start, finds every chain whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_the_kept_epoch_indexes() {
    let mut server = Server::start_on(Backend::Kafka, &[]).await;
    let queue = fresh_queue();
    let mut created = Vec::new();
    let indexed = slugid::nice();
    let mut def = task_def("built-in/succeed", 600);
    def["routes"] = json!(["index.it.kept.done"]);
    server.queue().createTask(&indexed, &def).await.unwrap();
    for round in 0..3 {
        let q = server.queue();
        for _ in 0..3 {
            let task_id = slugid::nice();
            q.createTask(&task_id, &task_def(&queue, 600))
                .await
                .unwrap();
            created.push(task_id);
        }
        let id = format!("it/kept-index-{round}-{}", slugid::nice());
        crate::auth::create_client(&server, &id, &["auth:current-scopes"]).await;
        let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        secrets_of(&server)
            .set(
                &format!("project/kept/{round}"),
                &json!({ "secret": { "round": round }, "expires": expires }),
            )
            .await
            .unwrap();
        let entry = json!({ "taskId": indexed, "rank": round, "data": {}, "expires": expires });
        index_of(&server)
            .insertTask(&format!("it.kept.r{round}"), &entry)
            .await
            .unwrap();
        server
            .restart_with("FAILPOINTS", "kafka-index-from-start=panic")
            .await;
    }
    let q = server.queue();
    for task_id in &created {
        assert_eq!(state_of(&q, task_id).await["state"], "pending", "{task_id}");
    }
    for round in 0..3 {
        let got = secrets_of(&server)
            .get(&format!("project/kept/{round}"))
            .await
            .unwrap();
        assert_eq!(got["secret"], json!({ "round": round }));
        let found = index_of(&server)
            .findTask(&format!("it.kept.r{round}"))
            .await
            .unwrap();
        assert_eq!(found["rank"], round);
    }
    let done = eventually(Duration::from_secs(30), || async {
        index_of(&server).findTask("it.kept.done").await.ok()
    })
    .await;
    assert_eq!(done["taskId"], indexed.as_str());
    let prefix = server
        .env("TASKLEDGER_KAFKA_TOPIC_PREFIX")
        .unwrap()
        .to_string();
    server.kill();
    let out = kafka_tool(&prefix, &["audit", "verify"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("ok: "), "{text}");
}

/// `serve`'s exit code when a data directory and a log do not belong together (EX_CONFIG).
const REFUSED: i32 = 78;

/// A data directory remembers the log it was built from. Against topics of the same names
/// that hold something else (a topic deleted and created again, another broker behind the
/// address), `serve` refuses to start instead of folding a second history onto the
/// projections of the first: whether that log has grown past what the directory read or is
/// shorter. Against its own log it starts as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_refuses_a_log_it_was_not_built_from() {
    let prefix = fresh_topic_prefix();
    let on = |broker: &Broker| {
        vec![
            (
                "TASKLEDGER_KAFKA_BROKERS".to_string(),
                format!("127.0.0.1:{}", broker.port),
            ),
            ("TASKLEDGER_KAFKA_TOPIC_PREFIX".to_string(), prefix.clone()),
        ]
    };
    let brokers: Vec<Broker> = (0..3)
        .map(|_| {
            let dir = std::env::temp_dir().join(format!("taskledger-it-broker-{}", slugid::nice()));
            Broker::start(free_port(), &dir)
        })
        .collect();
    let queue = fresh_queue();
    let mut first = Server::start_with(on(&brokers[0])).await;
    let ours = create_tasks(&first.queue(), &queue, 3).await;
    first.stop().await;
    // the same topic names on another broker, written further by another server
    let mut other = Server::start_with(on(&brokers[1])).await;
    create_tasks(&other.queue(), &queue, 30).await;
    other.stop().await;

    for (broker, what) in [(&brokers[1], "a longer log"), (&brokers[2], "an empty log")] {
        let (code, stderr) = first.refused_start(&on(broker)).await;
        assert_eq!(code, Some(REFUSED), "{what}: {stderr}");
        // naming the first partition checked, the queue's, and where it differs
        let named = format!(
            "Kafka topic {prefix}queue partition 0 is not the log this data directory was built from"
        );
        assert!(stderr.contains(&named), "{what}: {stderr}");
        assert!(stderr.contains("offset"), "{what}: {stderr}");
    }
    // the same broker under another prefix is another log: refused before any read
    let (code, stderr) = first
        .refused_start(&[(
            "TASKLEDGER_KAFKA_TOPIC_PREFIX".to_string(),
            fresh_topic_prefix(),
        )])
        .await;
    assert_eq!(code, Some(REFUSED), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "was served from Kafka topics {prefix}*, not Kafka topics"
        )),
        "{stderr}"
    );
    // and so is Kafka for a data directory served from the embedded log
    let mut embedded = Server::start(&[]).await;
    embedded.stop().await;
    let (code, stderr) = embedded.refused_start(&on(&brokers[0])).await;
    assert_eq!(code, Some(REFUSED), "{stderr}");
    assert!(
        stderr.contains("was served from the embedded log, not Kafka topics"),
        "{stderr}"
    );
    first.restart().await;
    let q = first.queue();
    for task_id in &ours {
        assert_eq!(state_of(&q, task_id).await["state"], "pending", "{task_id}");
    }
}

fn index_of(server: &Server) -> taskcluster::Index {
    taskcluster::Index::new(
        ClientBuilder::new(&server.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap()
}

fn secrets_of(server: &Server) -> taskcluster::Secrets {
    taskcluster::Secrets::new(
        ClientBuilder::new(&server.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap()
}

/// A tool's line without how long its run took (`... in 0.12 s (4000 events/s)`).
fn untimed(line: &str) -> String {
    const RATE_END: &str = " events/s)";
    match (line.find(" in "), line.find(RATE_END)) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &line[..a], &line[b + RATE_END.len()..]),
        _ => line.to_string(),
    }
}
