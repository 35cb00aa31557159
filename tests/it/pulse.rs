//! The Pulse bridge against the real RabbitMQ on 127.0.0.1:5672: a plain AMQP consumer (lapin)
//! sees a task's messages with Taskcluster's exchanges, routing keys, bodies, CC routes and
//! message ids; group bindings select; a kill -9 mid-flow loses nothing; no token is published.

use crate::harness::*;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use taskcluster::{Auth, ClientBuilder, Credentials};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Every test here shares the one RabbitMQ; the test that restarts it holds this exclusively.
static RABBIT: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
const Q: &str = "exchange/taskcluster-queue/v1/";
const WM: &str = "exchange/taskcluster-worker-manager/v1/";

struct Got {
    exchange: String,
    routing_key: String,
    message_id: String,
    cc: Vec<String>,
    body: Value,
}

/// The queue exchanges `names` (e.g. `task-defined`), each bound with `pattern`.
fn queue_bindings(names: &[&str], pattern: &str) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (format!("{Q}{n}"), pattern.to_string()))
        .collect()
}

/// A fresh exclusive queue bound to `(exchange, pattern)` pairs.
async fn listen(channel: &Channel, bindings: &[(String, String)]) -> Consumer {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (exchange, pattern) in bindings {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// Messages until `done` says enough, or the time limit.
async fn collect(
    consumer: &mut Consumer,
    limit: Duration,
    done: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let start = Instant::now();
    let mut out = Vec::new();
    while !done(&out) && start.elapsed() < limit {
        let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
        else {
            continue;
        };
        let props = &d.properties;
        // every message carries the header, empty without routes, as upstream's do
        assert!(
            props
                .headers()
                .as_ref()
                .is_some_and(|h| h.inner().contains_key("CC")),
            "no CC header"
        );
        let cc = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("CC").cloned())
            .map(|v| match v {
                AMQPValue::FieldArray(a) => a
                    .as_slice()
                    .iter()
                    .filter_map(|x| match x {
                        AMQPValue::LongString(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            })
            .unwrap_or_default();
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(*props.delivery_mode(), Some(2));
        out.push(Got {
            exchange: d.exchange.to_string(),
            routing_key: d.routing_key.to_string(),
            message_id: props
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            cc,
            body: serde_json::from_slice(&d.data).unwrap(),
        });
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    out
}

async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Waits until the bridge has declared the exchanges (binding to a missing one fails). A
/// failed passive declare closes its channel, so each probe gets a fresh one.
async fn wait_for_exchanges(conn: &Connection) {
    let start = Instant::now();
    loop {
        let ch = conn.create_channel().await.unwrap();
        let probe = ch
            .exchange_declare(
                // the last exchange the bridge declares
                "exchange/taskcluster-github/v1/task-group-creation-requested".into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if probe.is_ok() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bridge never declared its exchanges"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The message id of each message by `key`, checking that a re-sent message (at-least-once)
/// carries the id it was first sent with.
fn first_message_ids<K: std::hash::Hash + Eq>(
    got: &[Got],
    key: impl Fn(&Got) -> K,
) -> HashMap<K, String> {
    let mut ids = HashMap::new();
    for m in got {
        if let Some(prev) = ids.insert(key(m), m.message_id.clone()) {
            assert_eq!(prev, m.message_id, "a duplicate with a new message id");
        }
    }
    ids
}

fn task_of(m: &Got) -> String {
    m.body["status"]["taskId"].as_str().unwrap().to_string()
}

/// Consumes an existing named queue.
async fn consume(ch: &Channel, name: &str) -> Consumer {
    ch.basic_consume(
        name.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// `taskledger bridge run` on the server's data directory.
fn start_bridge(s: &Server) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(["bridge", "run", "--data-dir"])
        .arg(&s.data_dir)
        .env("TASKLEDGER_PULSE_URL", AMQP)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_running_task_is_published_as_taskcluster_does() {
    a_running_task_is_published(Backend::Embedded).await;
}

/// The bridge inside `serve` reads whichever log the server writes.
#[tokio::test]
async fn a_running_task_is_published_from_the_kafka_log() {
    a_running_task_is_published(Backend::Kafka).await;
}

async fn a_running_task_is_published(backend: Backend) {
    let _rabbit = RABBIT.read().await;
    let s = Server::start_on(backend, &[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, _) = channel().await;
    wait_for_exchanges(&conn).await;
    let (_c2, ch) = channel().await;
    let q = s.queue();
    let tq = fresh_queue();
    let (prov, wt) = tq.split_once('/').unwrap();
    let task_id = slugid::nice();
    let route = format!(
        "it.{}.done",
        slugid::nice().replace('-', "x").replace('_', "y")
    );
    let mut def = task_def(&tq, 600);
    def["routes"] = json!([route]);
    def["tags"] = json!({ "kind": "it" });

    let names = [
        "task-defined",
        "task-pending",
        "task-running",
        "artifact-created",
        "task-completed",
    ];
    let bindings = queue_bindings(&names, &format!("primary.{task_id}.#"));
    let mut by_task = listen(&ch, &bindings).await;
    let mut by_route = listen(
        &ch,
        &[(format!("{Q}task-completed"), format!("route.{route}"))],
    )
    .await;

    q.createTask(&task_id, &def).await.unwrap();
    q.claimWork(&tq, &worker_body(1)).await.unwrap();
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    q.createArtifact(
        &task_id,
        "0",
        "public/ref",
        &json!({ "storageType": "reference", "url": "https://example.com/x", "contentType": "text/plain", "expires": expires }),
    )
    .await
    .unwrap();
    q.reportCompleted(&task_id, "0").await.unwrap();

    let got = collect(&mut by_task, Duration::from_secs(20), |g| g.len() >= 5).await;
    let exchanges: Vec<String> = got.iter().map(|g| g.exchange.clone()).collect();
    assert_eq!(
        exchanges,
        names.iter().map(|n| format!("{Q}{n}")).collect::<Vec<_>>()
    );
    let group = def["taskGroupId"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| task_id.clone());
    assert_eq!(
        got[0].routing_key,
        format!("primary.{task_id}._._._.{prov}.{wt}.-.{group}._")
    );
    assert_eq!(
        got[1].routing_key,
        format!("primary.{task_id}.0._._.{prov}.{wt}.-.{group}._")
    );
    assert_eq!(
        got[2].routing_key,
        format!("primary.{task_id}.0.it-group.it-worker.{prov}.{wt}.-.{group}._")
    );
    // task-defined already shows the pending run the same command created, as upstream's does
    assert_eq!(got[0].body["status"]["state"], "pending");
    assert_eq!(got[0].body["version"], 1);
    assert_eq!(got[0].body["task"], json!({ "tags": { "kind": "it" } }));
    assert_eq!(got[2].body["workerId"], "it-worker");
    assert!(got[2].body["takenUntil"].is_string());
    assert_eq!(got[3].body["artifact"]["name"], "public/ref");
    assert_eq!(got[3].body["artifact"]["storageType"], "reference");
    assert_eq!(got[4].body["status"]["state"], "completed");
    assert_eq!(got[4].body["runId"], 0);
    for g in &got {
        assert_eq!(g.cc, vec![format!("route.{route}")]);
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|g| g.message_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "one message id per event");
    assert!(got
        .iter()
        .all(|g| uuid::Uuid::parse_str(&g.message_id).is_ok()));

    let routed = collect(&mut by_route, Duration::from_secs(10), |g| !g.is_empty()).await;
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].body["status"]["taskId"], task_id.as_str());

    // calls repeated to the same effect publish their messages again, as upstream (a
    // consumer that missed one can ask again), each with a message id of its own
    q.createTask(&task_id, &def).await.unwrap();
    q.reportCompleted(&task_id, "0").await.unwrap();
    let again = collect(&mut by_task, Duration::from_secs(20), |g| g.len() >= 2).await;
    let exchanges: Vec<&str> = again.iter().map(|g| g.exchange.as_str()).collect();
    assert_eq!(
        exchanges,
        [format!("{Q}task-defined"), format!("{Q}task-completed")]
    );
    assert_eq!(again[0].routing_key, got[0].routing_key);
    assert_eq!(again[1].routing_key, got[4].routing_key);
    assert_eq!(again[1].body["status"], got[4].body["status"]);
    assert_eq!(again[0].body["status"]["state"], "completed");
    assert!(again.iter().all(|g| !ids.contains(g.message_id.as_str())));

    // the bridge's progress is on the Prometheus endpoint: caught up, seven messages confirmed
    let url = format!("{}/metrics", s.root_url);
    // (the lag is stored at the end of each pass, so a pass still publishing may show the
    // previous pass's 0: wait for both)
    let text = eventually(Duration::from_secs(30), || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let caught_up = metric_sample(&text, "taskledger_bridge_lag_events") == Some(0.0);
        let published = metric_sample(&text, "taskledger_bridge_published_total")?;
        (caught_up && published >= 7.0).then_some(text)
    })
    .await;
    assert_eq!(
        metric_sample(&text, "taskledger_bridge_lag_seconds"),
        Some(0.0),
        "{text}"
    );
    // one channel unless told otherwise: messages in log order
    assert_eq!(
        metric_sample(&text, "taskledger_bridge_channels"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_sample(&text, "taskledger_bridge_confirms_pending"),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.contains("taskledger_log_end_offset{topic=\"taskledger.queue\"}"),
        "{text}"
    );

    // auth exchanges: a client's creation is announced with its id only, never its token
    let mut auth_q = listen(
        &ch,
        &[(
            "exchange/taskcluster-auth/v1/client-created".into(),
            "#".into(),
        )],
    )
    .await;
    let root = Auth::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap();
    let created = root
        .createClient(
            "it/pulse",
            &json!({ "description": "d", "expires": expires, "scopes": [] }),
        )
        .await
        .unwrap();
    let token = created["accessToken"].as_str().unwrap();
    let msgs = collect(&mut auth_q, Duration::from_secs(10), |g| !g.is_empty()).await;
    assert_eq!(
        msgs[0].body,
        json!({ "version": 1, "clientId": "it/pulse" })
    );
    assert_eq!(msgs[0].routing_key, "_");
    for g in got.iter().chain(&msgs) {
        assert!(!g.body.to_string().contains(token));
    }

    // calls repeated to the same effect publish again, as upstream's do: enabling an enabled
    // client, deleting it twice
    let mut again = listen(
        &ch,
        &[
            (
                "exchange/taskcluster-auth/v1/client-updated".into(),
                "#".into(),
            ),
            (
                "exchange/taskcluster-auth/v1/client-deleted".into(),
                "#".into(),
            ),
        ],
    )
    .await;
    root.enableClient("it/pulse").await.unwrap();
    root.deleteClient("it/pulse").await.unwrap();
    root.deleteClient("it/pulse").await.unwrap();
    let msgs = collect(&mut again, Duration::from_secs(10), |g| g.len() >= 3).await;
    let exchanges: Vec<&str> = msgs
        .iter()
        .map(|m| m.exchange.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        exchanges,
        ["client-updated", "client-deleted", "client-deleted"]
    );
    assert!(msgs
        .iter()
        .all(|m| m.body == json!({ "version": 1, "clientId": "it/pulse" })));
}

#[tokio::test]
async fn group_bindings_select_and_a_crash_loses_nothing() {
    let _rabbit = RABBIT.read().await;
    let mut s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let tq = fresh_queue();
    let g1 = slugid::nice();
    let g2 = slugid::nice();
    let mut group_q = listen(
        &ch,
        &[(
            format!("{Q}task-defined"),
            format!("primary.*.*.*.*.*.*.*.{g1}.#"),
        )],
    )
    .await;
    let mut all_q = listen(
        &ch,
        &[(
            format!("{Q}task-defined"),
            format!("primary.*.*.*.*.*.{}.#", tq.split('/').nth(1).unwrap()),
        )],
    )
    .await;

    // 150 tasks, 1 in 3 in group g1; kill -9 the server half-way and restart it
    let mut expected: HashMap<String, bool> = HashMap::new();
    for i in 0..150 {
        let id = slugid::nice();
        let g = if i % 3 == 0 { &g1 } else { &g2 };
        let mut def = task_def(&tq, 600);
        def["taskGroupId"] = json!(g);
        q.createTask(&id, &def).await.unwrap();
        expected.insert(id, i % 3 == 0);
        if i == 75 {
            s.restart().await;
        }
    }
    let got = collect(&mut all_q, Duration::from_secs(30), |g| {
        let seen: std::collections::HashSet<&str> = g
            .iter()
            .filter_map(|m| m.body["status"]["taskId"].as_str())
            .collect();
        seen.len() >= 150
    })
    .await;
    // a duplicate (re-sent after the crash) carries the same message id
    let seen = first_message_ids(&got, task_of);
    for id in expected.keys() {
        assert!(seen.contains_key(id), "task-defined of {id} never arrived");
    }
    let in_group = collect(&mut group_q, Duration::from_secs(10), |g| {
        g.iter()
            .filter_map(|m| m.body["status"]["taskId"].as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 50
    })
    .await;
    for m in &in_group {
        assert_eq!(m.body["status"]["taskGroupId"], g1.as_str());
    }
    assert_eq!(
        in_group
            .iter()
            .filter_map(|m| m.body["status"]["taskId"].as_str())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        50
    );
}

/// changeTaskGroupPriority publishes one task-group-priority-changed with the count, on the
/// group's routing key, and no task-priority-changed for the tasks it changed (pulse.md §5:
/// that exchange is changeTaskPriority's). A changeTaskPriority afterwards is published, and
/// since the bridge publishes in log order, a per-task message from the group's change would
/// have come before it.
#[tokio::test]
async fn a_group_priority_change_is_published_once_for_the_group() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let tq = fresh_queue();
    let group = slugid::nice();
    let mut consumer = listen(
        &ch,
        &[
            (
                format!("{Q}task-group-priority-changed"),
                format!("primary.{group}.#"),
            ),
            (format!("{Q}task-priority-changed"), "#".into()),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = slugid::nice();
        let mut def = task_def(&tq, 600);
        def["taskGroupId"] = json!(group);
        q.createTask(&id, &def).await.unwrap();
        ids.push(id);
    }
    let answer = q
        .changeTaskGroupPriority(&group, &json!({ "newPriority": "high" }))
        .await
        .unwrap();
    assert_eq!(answer["tasksAffected"], 2);
    for id in &ids {
        assert_eq!(q.status(id).await.unwrap()["status"]["priority"], "high");
    }
    q.changeTaskPriority(&ids[0], &json!({ "newPriority": "low" }))
        .await
        .unwrap();
    let ours = |g: &Got| {
        g.body["taskGroupId"] == group.as_str() || g.body["status"]["taskGroupId"] == group.as_str()
    };
    let got = collect(&mut consumer, Duration::from_secs(20), |got| {
        got.iter().filter(|g| ours(g)).count() >= 2
    })
    .await;
    let got: Vec<&Got> = got.iter().filter(|g| ours(g)).collect();
    let names: Vec<&str> = got
        .iter()
        .map(|g| g.exchange.strip_prefix(Q).unwrap())
        .collect();
    assert_eq!(
        names,
        ["task-group-priority-changed", "task-priority-changed"]
    );
    let first = got[0];
    assert_eq!(first.routing_key, format!("primary.{group}.-._"));
    assert_eq!(
        first.body,
        json!({ "version": 1, "taskGroupId": group, "schedulerId": "-",
                "newPriority": "high", "tasksAffected": 2 })
    );
    // the single change starts from the priority the group's change left
    assert_eq!(got[1].body["status"]["taskId"], ids[0].as_str());
    assert_eq!(got[1].body["oldPriority"], "high");
    assert_eq!(got[1].body["newPriority"], "low");
}

/// The built-in worker claims a task and reports it moments later, often in the same
/// millisecond: each message still renders the state its own command left, so task-running
/// says running and task-completed completed (a task-running carrying the completed status
/// is what merging the two commands would publish).
#[tokio::test]
async fn built_in_workers_claim_and_report_are_published_as_two_commands() {
    const TASKS: usize = 40;
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let group = slugid::nice();
    let mut consumer = listen(
        &ch,
        &queue_bindings(
            &["task-running", "task-completed"],
            &format!("primary.*.*.*.*.*.*.*.{group}.#"),
        ),
    )
    .await;
    for _ in 0..TASKS {
        let mut def = task_def("built-in/succeed", 600);
        def["taskGroupId"] = json!(group);
        q.createTask(&slugid::nice(), &def).await.unwrap();
    }
    let got = collect(&mut consumer, Duration::from_secs(30), |g| {
        g.len() >= 2 * TASKS
    })
    .await;
    assert_eq!(got.len(), 2 * TASKS);
    let mut seen = HashMap::new();
    for m in &got {
        let (kind, status) = (m.exchange.strip_prefix(Q).unwrap(), &m.body["status"]);
        let state = if kind == "task-running" {
            "running"
        } else {
            "completed"
        };
        assert_eq!(status["state"], state, "{kind} of {}", task_of(m));
        assert_eq!(
            status["runs"][0]["state"],
            state,
            "{kind} of {}",
            task_of(m)
        );
        let before = seen.insert(task_of(m), kind);
        assert_eq!(before, (kind == "task-completed").then_some("task-running"));
    }
}

#[tokio::test]
async fn task_group_resolved_fires_when_no_task_of_the_group_is_left_unresolved() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let tq = fresh_queue();
    let group = slugid::nice();
    let mut resolved = listen(
        &ch,
        &[(
            format!("{Q}task-group-resolved"),
            format!("primary.{group}.#"),
        )],
    )
    .await;
    let (a, b) = (slugid::nice(), slugid::nice());
    for id in [&a, &b] {
        let mut def = task_def(&tq, 600);
        def["taskGroupId"] = json!(group);
        q.createTask(id, &def).await.unwrap();
    }
    q.claimWork(&tq, &worker_body(2)).await.unwrap();
    q.reportCompleted(&a, "0").await.unwrap();
    // b is still running: nothing yet
    let early = collect(&mut resolved, Duration::from_secs(2), |g| !g.is_empty()).await;
    assert!(early.is_empty(), "published while a task was unresolved");

    q.reportFailed(&b, "0").await.unwrap();
    let got = collect(&mut resolved, Duration::from_secs(20), |g| !g.is_empty()).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].routing_key, format!("primary.{group}.-._"));
    assert_eq!(got[0].body["taskGroupId"], group.as_str());
    assert_eq!(got[0].body["schedulerId"], "-");
    assert_eq!(got[0].body["version"], 1);
    assert!(got[0].body["expires"].is_string());

    // a rerun that resolves again announces the group again (upstream: "may repeat")
    q.rerunTask(&b).await.unwrap();
    q.claimWork(&tq, &worker_body(1)).await.unwrap();
    q.reportCompleted(&b, "1").await.unwrap();
    let again = collect(&mut resolved, Duration::from_secs(20), |g| !g.is_empty()).await;
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].message_id, got[0].message_id);
}

/// With `--pulse-channels 4` the bridge spreads messages over channels by stream: every
/// message still arrives, each task's own messages in their order.
#[tokio::test]
async fn on_several_channels_each_tasks_messages_keep_their_order() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[
        ("TASKLEDGER_PULSE_URL", AMQP),
        ("TASKLEDGER_PULSE_CHANNELS", "4"),
    ])
    .await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let tq = fresh_queue();
    let group = slugid::nice();
    let order = [
        "task-defined",
        "task-pending",
        "task-running",
        "task-completed",
    ];
    let bindings = queue_bindings(&order, &format!("primary.#.{group}.#"));
    let mut consumer = listen(&ch, &bindings).await;
    let ids: Vec<String> = (0..24).map(|_| slugid::nice()).collect();
    for id in &ids {
        let mut def = task_def(&tq, 600);
        def["taskGroupId"] = json!(group);
        q.createTask(id, &def).await.unwrap();
    }
    for _ in 0..3 {
        let claimed = q.claimWork(&tq, &worker_body(8)).await.unwrap();
        for t in claimed["tasks"].as_array().unwrap() {
            let id = t["status"]["taskId"].as_str().unwrap();
            q.reportCompleted(id, "0").await.unwrap();
        }
    }
    let want = ids.len() * order.len();
    let got = collect(&mut consumer, Duration::from_secs(30), |g| g.len() >= want).await;
    assert_eq!(got.len(), want, "every message arrives once");
    let mut seen: HashMap<String, Vec<&str>> = HashMap::new();
    for g in &got {
        let exchange = g.exchange.strip_prefix(Q).unwrap();
        seen.entry(task_of(g)).or_default().push(exchange);
    }
    assert_eq!(seen.len(), ids.len());
    for id in &ids {
        assert_eq!(seen[id.as_str()], order, "task {id}");
    }
    let metrics = s.metrics().await;
    assert_eq!(
        metric_sample(&metrics, "taskledger_bridge_channels"),
        Some(4.0)
    );
}

#[tokio::test]
async fn bridge_replay_refills_a_consumers_queue_from_the_log() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let tq = fresh_queue();
    let route = format!("it.replay.{}", slugid::nice().replace(['-', '_'], "x"));
    let ids: Vec<String> = (0..3).map(|_| slugid::nice()).collect();
    for id in &ids {
        let mut def = task_def(&tq, 600);
        def["routes"] = json!([route]);
        q.createTask(id, &def).await.unwrap();
    }
    q.claimWork(&tq, &worker_body(3)).await.unwrap();
    q.reportCompleted(&ids[0], "0").await.unwrap();
    q.reportCompleted(&ids[1], "0").await.unwrap();
    q.reportFailed(&ids[2], "0").await.unwrap();

    // a consumer's (recreated) queue, bound to nothing: only the replay fills it
    let name = format!("it-replay-{}", slugid::nice());
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let replay = |routing_key: String, since: Option<String>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskledger"));
        cmd.args(["bridge", "replay", "--exchange", "task-completed"])
            .args(["--routing-key", &routing_key, "--to-queue", &name])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .env("TASKLEDGER_PULSE_URL", AMQP)
            .env("RUST_LOG", "warn");
        if let Some(t) = since {
            cmd.args(["--since", &t]);
        }
        cmd.output()
    };
    // routes are matched like bindings, CCs included
    let out = replay(format!("route.{route}"), None).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("republished 2 messages"));
    // nothing happened after tomorrow
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let out = replay("primary.#".into(), Some(tomorrow)).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("republished 0 messages"));

    let mut consumer = consume(&ch, &name).await;
    let got = collect(&mut consumer, Duration::from_secs(10), |g| g.len() >= 2).await;
    assert_eq!(got.len(), 2);
    let mut tasks: Vec<&str> = got
        .iter()
        .map(|g| g.body["status"]["taskId"].as_str().unwrap())
        .collect();
    tasks.sort();
    let mut want = vec![ids[0].as_str(), ids[1].as_str()];
    want.sort();
    assert_eq!(tasks, want);
    for g in &got {
        assert_eq!(g.body["status"]["state"], "completed");
        assert!(uuid::Uuid::parse_str(&g.message_id).is_ok());
        assert_eq!(g.cc, vec![format!("route.{route}")]);
    }
}

#[tokio::test]
async fn a_standalone_bridge_publishes_beside_a_running_server() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[]).await;
    let mut bridge = start_bridge(&s);
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let task_id = slugid::nice();
    let mut defined = listen(
        &ch,
        &[(format!("{Q}task-defined"), format!("primary.{task_id}.#"))],
    )
    .await;
    s.queue()
        .createTask(&task_id, &task_def(&fresh_queue(), 600))
        .await
        .unwrap();
    let got = collect(&mut defined, Duration::from_secs(20), |g| !g.is_empty()).await;
    assert_eq!(
        got.len(),
        1,
        "the standalone bridge saw the server's new event"
    );
    assert_eq!(got[0].body["status"]["taskId"], task_id.as_str());
    let pid = bridge.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), bridge.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM stops the bridge cleanly: {status}"
    );
}

/// A standalone bridge told to skip the history, on a data directory that already holds some,
/// publishes what happens after it started and none of what came before.
#[tokio::test]
async fn a_bridge_skipping_history_publishes_only_what_follows() {
    use tokio::io::AsyncBufReadExt;
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[]).await;
    let (_conn, ch) = channel().await;
    declare_queue_exchanges(&ch).await;
    let tq = fresh_queue();
    let wt = tq.split('/').nth(1).unwrap().to_string();
    let mut defined = listen(
        &ch,
        &[(
            format!("{Q}task-defined"),
            format!("primary.*.*.*.*.*.{wt}.#"),
        )],
    )
    .await;
    let (old, new) = (slugid::nice(), slugid::nice());
    s.queue()
        .createTask(&old, &task_def(&tq, 600))
        .await
        .unwrap();

    let mut bridge = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .args(["bridge", "run", "--skip-history", "--data-dir"])
        .arg(&s.data_dir)
        .env("TASKLEDGER_PULSE_URL", AMQP)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // the history is folded before the bridge connects: create the new task only after
    let mut stderr = tokio::io::BufReader::new(bridge.stderr.take().unwrap()).lines();
    let folded = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("folded, not published") {
                return line;
            }
        }
        panic!("the bridge ended without folding");
    })
    .await
    .expect("the bridge folded the history");
    assert!(folded.contains("events of history"), "{folded}");
    s.queue()
        .createTask(&new, &task_def(&tq, 600))
        .await
        .unwrap();
    let got = collect(&mut defined, Duration::from_secs(20), |g| {
        g.iter().any(|m| task_of(m) == new)
    })
    .await;
    let tasks: Vec<String> = got.iter().map(task_of).collect();
    assert_eq!(
        tasks,
        std::slice::from_ref(&new),
        "only the task created after the start"
    );
    let _ = bridge.kill().await;
}

/// Declares the queue exchanges as the bridge does (idempotent), so a consumer can bind before
/// any bridge ran.
async fn declare_queue_exchanges(ch: &Channel) {
    for name in taskledger_bridge_names() {
        ch.exchange_declare(
            format!("{Q}{name}").into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

fn taskledger_bridge_names() -> [&'static str; 2] {
    ["task-defined", "task-pending"]
}

#[tokio::test]
async fn killing_the_bridge_mid_flow_of_ten_thousand_events_loses_none() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[]).await;
    let (_conn, ch) = channel().await;
    declare_queue_exchanges(&ch).await;
    let tq = fresh_queue();
    let wt = tq.split('/').nth(1).unwrap().to_string();
    let bindings = queue_bindings(
        &taskledger_bridge_names(),
        &format!("primary.*.*.*.*.*.{wt}.#"),
    );
    let mut consumer = listen(&ch, &bindings).await;

    // 5,000 tasks: 10,000 messages waiting in the log before any bridge runs
    let q = s.queue();
    let ids: Vec<String> = (0..5000).map(|_| slugid::nice()).collect();
    futures::stream::iter(ids.iter())
        .map(|id| {
            let (q, def) = (&q, task_def(&tq, 600));
            async move { q.createTask(id, &def).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    let mut first = start_bridge(&s);
    let before = collect(&mut consumer, Duration::from_secs(30), |g| g.len() >= 1000).await;
    first.kill().await.unwrap(); // SIGKILL, then reaped
    assert!(
        before.len() >= 1000 && before.len() < 10_000,
        "the kill came mid-flow ({} of 10,000 delivered)",
        before.len()
    );
    let mut second = start_bridge(&s);
    let mut all = before;
    // (exchange, task) pairs seen, grown as messages arrive (not recounted each time)
    let key = |m: &Got| (m.exchange.clone(), m.body["status"]["taskId"].to_string());
    let seen = std::cell::RefCell::new(
        all.iter()
            .map(key)
            .collect::<std::collections::HashSet<_>>(),
    );
    let counted = std::cell::Cell::new(0);
    let rest = collect(&mut consumer, Duration::from_secs(60), |g| {
        let mut seen = seen.borrow_mut();
        seen.extend(g[counted.get()..].iter().map(key));
        counted.set(g.len());
        seen.len() >= 10_000
    })
    .await;
    let _ = second.kill().await;
    all.extend(rest);
    // every message arrived at least once; a re-sent one carries its first message id
    let ids_by_message = first_message_ids(&all, |m| (m.exchange.clone(), task_of(m)));
    for id in &ids {
        for n in taskledger_bridge_names() {
            assert!(
                ids_by_message.contains_key(&(format!("{Q}{n}"), id.clone())),
                "{n} of {id} never arrived"
            );
        }
    }
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (RabbitMQ's own CLI) runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_rabbitmq_restart_mid_flow_loses_nothing() {
    let _rabbit = RABBIT.write().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let tq = fresh_queue();
    let wt = tq.split('/').nth(1).unwrap().to_string();
    // a durable queue keeps what it was given across the broker's restart
    let name = format!("it-restart-{}", slugid::nice());
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        name.as_str().into(),
        format!("{Q}task-defined").into(),
        format!("primary.*.*.*.*.*.{wt}.#").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    drop(conn);

    let q = s.queue();
    let mut ids = Vec::new();
    for i in 0..300 {
        let id = slugid::nice();
        q.createTask(&id, &task_def(&tq, 600)).await.unwrap();
        ids.push(id);
        if i == 150 {
            rabbitmqctl(&["stop_app"]);
            rabbitmqctl(&["start_app"]);
        }
    }
    let (conn, ch) = channel().await;
    let mut consumer = consume(&ch, &name).await;
    let got = collect(&mut consumer, Duration::from_secs(60), |g| {
        g.iter()
            .filter_map(|m| m.body["status"]["taskId"].as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= ids.len()
    })
    .await;
    let seen = first_message_ids(&got, task_of);
    for id in &ids {
        assert!(
            seen.contains_key(id),
            "task-defined of {id} was lost in the restart"
        );
    }
    // the bridge did live through the restart: it reconnected
    let metrics = s.metrics().await;
    let reconnects = metric_sample(&metrics, "taskledger_bridge_reconnects_total").unwrap();
    assert!(reconnects >= 1.0, "{metrics}");
    let _ = ch
        .queue_delete(
            name.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    drop(conn);
}

/// A static worker's life on the worker-manager exchanges: the pool created and updated, the
/// worker running, an error reported, the worker removed; routing keys name provider, pool,
/// group and worker; no static secret is published.
#[tokio::test]
async fn worker_manager_events_are_published_as_taskcluster_does() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, _) = channel().await;
    wait_for_exchanges(&conn).await;
    let (_c2, ch) = channel().await;
    let pool = fresh_queue();
    let (prov, wt) = pool.split_once('/').unwrap();
    let worker_key = format!("primary.static.{prov}.{wt}.#");
    let mut consumer = listen(
        &ch,
        &[
            (format!("{WM}worker-pool-created"), "#".into()),
            (format!("{WM}worker-pool-updated"), "#".into()),
            (format!("{WM}worker-running"), worker_key.clone()),
            (format!("{WM}worker-pool-error"), worker_key.clone()),
            (format!("{WM}worker-removed"), worker_key),
        ],
    )
    .await;

    let m = taskcluster::WorkerManager::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap();
    let pool_body = json!({
        "providerId": "static", "description": "d", "config": {},
        "owner": "it@example.com", "emailOnError": false,
    });
    m.createWorkerPool(&pool, &pool_body).await.unwrap();
    m.updateWorkerPool(&pool, &pool_body).await.unwrap();
    let static_secret = format!("{}{}", slugid::nice(), slugid::nice());
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    m.createWorker(
        &pool,
        "wm-group",
        "wm-worker",
        &json!({ "expires": expires, "capacity": 2, "providerInfo": { "staticSecret": static_secret } }),
    )
    .await
    .unwrap();
    let reported = m
        .reportWorkerError(
            &pool,
            &json!({ "workerGroup": "wm-group", "workerId": "wm-worker", "kind": "disk-full",
                "title": "Disk full", "description": "no space", "extra": {} }),
        )
        .await
        .unwrap();
    m.removeWorker(&pool, "wm-group", "wm-worker")
        .await
        .unwrap();

    let ours = |g: &Got| g.body["workerPoolId"] == pool.as_str();
    let got = collect(&mut consumer, Duration::from_secs(20), |got| {
        got.iter().filter(|g| ours(g)).count() >= 5
    })
    .await;
    let got: Vec<&Got> = got.iter().filter(|g| ours(g)).collect();
    let names: Vec<&str> = got
        .iter()
        .map(|g| g.exchange.strip_prefix(WM).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "worker-pool-created",
            "worker-pool-updated",
            "worker-running",
            "worker-pool-error",
            "worker-removed"
        ]
    );
    let worker_rk = format!("primary.static.{prov}.{wt}.wm-group.wm-worker._._");
    assert_eq!(got[0].routing_key, "primary._._._._._._._");
    assert_eq!(
        got[0].body,
        json!({ "workerPoolId": pool, "providerId": "static" })
    );
    assert_eq!(got[1].body["previousProviderId"], "static");
    assert_eq!(got[2].routing_key, worker_rk);
    assert_eq!(got[2].body["capacity"], 2);
    assert_eq!(got[2].body["workerGroup"], "wm-group");
    assert_eq!(got[2].body["workerId"], "wm-worker");
    assert!(got[2].body["timestamp"].is_string());
    assert_eq!(got[3].routing_key, worker_rk);
    assert_eq!(got[3].body["errorId"], reported["errorId"]);
    assert_eq!(got[3].body["kind"], "disk-full");
    assert_eq!(got[3].body["title"], "Disk full");
    assert_eq!(got[4].routing_key, worker_rk);
    assert_eq!(got[4].body["reason"], "workerManager.removeWorker API call");
    let ids: std::collections::HashSet<&str> = got.iter().map(|g| g.message_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "one message id per event");
    for g in &got {
        assert!(
            !g.body.to_string().contains(&static_secret),
            "a static secret was published: {}",
            g.body
        );
    }
}

#[tokio::test]
async fn hook_changes_are_published_as_taskcluster_does() {
    const HOOKS: &str = "exchange/taskcluster-hooks/v1/";
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, _) = channel().await;
    wait_for_exchanges(&conn).await;
    let (_c2, ch) = channel().await;
    let mut consumer = listen(
        &ch,
        &[
            (format!("{HOOKS}hook-created"), "#".into()),
            (format!("{HOOKS}hook-updated"), "#".into()),
            (format!("{HOOKS}hook-deleted"), "#".into()),
        ],
    )
    .await;
    let hooks = taskcluster::Hooks::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap();
    let id = format!("pulse/{}", slugid::nice().replace('_', "-"));
    let definition = json!({
        "metadata": {"name": "n", "description": "d", "owner": "it@example.com"},
        "task": {},
    });
    hooks
        .createHook("it-pulse", &id, &definition)
        .await
        .unwrap();
    // the same again publishes again, as upstream's createHook does on every call
    hooks
        .createHook("it-pulse", &id, &definition)
        .await
        .unwrap();
    hooks
        .updateHook("it-pulse", &id, &definition)
        .await
        .unwrap();
    hooks
        .triggerHook("it-pulse", &id, &json!({}))
        .await
        .unwrap_err();
    hooks.resetTriggerToken("it-pulse", &id).await.unwrap();
    hooks.removeHook("it-pulse", &id).await.unwrap();

    let ours = |g: &Got| g.body["hookId"] == id.as_str();
    let got = collect(&mut consumer, Duration::from_secs(20), |got| {
        got.iter().filter(|g| ours(g)).count() >= 4
    })
    .await;
    let got: Vec<&Got> = got.iter().filter(|g| ours(g)).collect();
    let names: Vec<&str> = got
        .iter()
        .map(|g| g.exchange.strip_prefix(HOOKS).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "hook-created",
            "hook-created",
            "hook-updated",
            "hook-deleted"
        ],
        "fires and token resets publish nothing"
    );
    for g in &got {
        assert_eq!(g.routing_key, "_");
        assert_eq!(g.body, json!({ "hookGroupId": "it-pulse", "hookId": id }));
    }
}

/// A hook bound to task-completed fires for a completed task: the bridge publishes the message,
/// the hook's queue (made and bound by the server) receives it, the hook creates its task with
/// the message as payload. Removing the hook deletes its queue.
#[tokio::test]
async fn a_bound_hook_fires_on_a_pulse_message() {
    let _rabbit = RABBIT.read().await;
    let s = Server::start(&[("TASKLEDGER_PULSE_URL", AMQP)]).await;
    let (conn, _) = channel().await;
    wait_for_exchanges(&conn).await;
    let q = s.queue();
    let (watched, made) = (fresh_queue(), fresh_queue());
    let (prov, wt) = watched.split_once('/').unwrap();
    let id = format!("on-done-{}", slugid::nice().replace('_', "-"));
    Auth::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap()
    .createRole(
        &format!("hook-id:it-pulse/{id}"),
        &json!({"description": "d", "scopes": [
            format!("queue:create-task:lowest:{made}"),
            "queue:create-task:project:none", "queue:scheduler-id:-"]}),
    )
    .await
    .unwrap();
    let hooks = taskcluster::Hooks::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap();
    let mut task = task_def(&made, 600);
    task["metadata"]["name"] = json!("after ${payload.status.taskId}");
    task.as_object_mut().unwrap().remove("created");
    task.as_object_mut().unwrap().remove("deadline");
    hooks
        .createHook(
            "it-pulse",
            &id,
            &json!({
                "metadata": {"name": "n", "description": "d", "owner": "it@example.com"},
                "bindings": [{
                    "exchange": format!("{Q}task-completed"),
                    "routingKeyPattern": format!("primary.*.*.*.*.{prov}.{wt}.#"),
                }],
                "triggerSchema": {"type": "object"},
                "task": task,
            }),
        )
        .await
        .unwrap();
    // the server binds the hook's queue within a second or two: complete tasks until one
    // completion fires it
    let start = Instant::now();
    let mut completed = Vec::new();
    let fire = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the hook never fired"
        );
        let task_id = create_tasks(&q, &watched, 1).await.remove(0);
        q.claimWork(&watched, &worker_body(1)).await.unwrap();
        q.reportCompleted(&task_id, "0").await.unwrap();
        completed.push(task_id);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut fired = None;
        while Instant::now() < deadline && fired.is_none() {
            fired = hooks
                .listLastFires("it-pulse", &id, None, None)
                .await
                .ok()
                .and_then(|l| l["lastFires"].as_array().and_then(|f| f.last().cloned()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(f) = fired {
            break f;
        }
    };
    assert_eq!(fire["firedBy"], "pulseMessage");
    assert_eq!(fire["result"], "success", "{fire}");
    let made_task = q.task(fire["taskId"].as_str().unwrap()).await.unwrap();
    assert_eq!(made_task["taskQueueId"], made.as_str());
    // the message's body was the payload: the task names the completed task
    let name = made_task["metadata"]["name"].as_str().unwrap();
    let named = name.strip_prefix("after ").unwrap();
    assert!(completed.iter().any(|c| c == named), "{name} {completed:?}");

    // the hook's queue goes with the hook
    // in the broker user's namespace, as Pulse requires
    let queue = format!("queue/guest/it-pulse/{id}");
    assert!(queue_exists(&conn, &queue).await);

    // a hook whose queue name AMQP cannot carry (over 255 bytes) is passed over, and the
    // server lives on
    let long = "x".repeat(300);
    let mut bound = hooks.hook("it-pulse", &id).await.unwrap();
    bound.as_object_mut().unwrap().remove("hookId");
    hooks.createHook("it-pulse", &long, &bound).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        hooks.hook("it-pulse", &long).await.unwrap()["hookId"],
        long.as_str()
    );
    hooks.removeHook("it-pulse", &long).await.unwrap();

    hooks.removeHook("it-pulse", &id).await.unwrap();
    let (conn, queue) = (&conn, queue.as_str());
    eventually(Duration::from_secs(10), || async move {
        (!queue_exists(conn, queue).await).then_some(())
    })
    .await;
}

/// Whether the broker has the queue `name` (a passive declare, on a channel of its own: a
/// failed one closes its channel).
async fn queue_exists(conn: &Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .is_ok()
}

/// notify's Pulse side: a `pulse` call is published on the notify exchange as upstream's
/// (`primary.<routingKey>`, CC `route.<routingKey>`, `{version: 1, message}`); a task's
/// `notify.*` routes, reaching the server through its own listener queue, send an email (an
/// `.eml` in the mail directory) and a Pulse message when the task fails, and nothing for a
/// canceled task; Slack routes are passed over.
#[tokio::test]
async fn notify_publishes_pulse_messages_and_task_routes_notify() {
    let _rabbit = RABBIT.read().await;
    let listener = format!("it-notify-{}", slugid::nice());
    let s = Server::start(&[
        ("TASKLEDGER_PULSE_URL", AMQP),
        ("TASKLEDGER_NOTIFY_QUEUE", listener.as_str()),
    ])
    .await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    let unique = slugid::nice().replace(['-', '_'], "x");
    let (api_key, route_key) = (format!("it.{unique}.api"), format!("it.{unique}.route"));
    let mut consumer = listen(
        &ch,
        &[(
            "exchange/taskcluster-notify/v1/notification".to_string(),
            format!("primary.it.{unique}.#"),
        )],
    )
    .await;
    let notify = taskcluster::Notify::new(
        ClientBuilder::new(&s.root_url)
            .credentials(Credentials::new("static/taskcluster/root", ROOT_TOKEN)),
    )
    .unwrap();
    notify
        .pulse(&json!({"routingKey": api_key, "message": {"hello": "world"}}))
        .await
        .unwrap();
    let got = collect(&mut consumer, Duration::from_secs(15), |g| !g.is_empty()).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].routing_key, format!("primary.{api_key}"));
    assert_eq!(got[0].cc, vec![format!("route.{api_key}")]);
    assert_eq!(
        got[0].body,
        json!({"version": 1, "message": {"hello": "world"}})
    );

    // the server's listener queue is bound (it binds when it connects): fail tasks until one
    // failure's notifications arrive, then check that one
    let q = s.queue();
    let queue = fresh_queue();
    let address = format!("{unique}@example.com");
    let routes = json!([
        format!("notify.email.{address}.on-failed"),
        format!("notify.pulse.{route_key}.on-resolved"),
        "notify.slack-channel.C123.on-any",
        format!("notify.email.{address}.on-any"),
    ]);
    let start = Instant::now();
    let message = loop {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no task route ever notified"
        );
        let mut def = task_def(&queue, 600);
        def["routes"] = routes.clone();
        def["metadata"]["name"] = json!(format!("notified {unique}"));
        let task_id = slugid::nice();
        q.createTask(&task_id, &def).await.unwrap();
        q.claimWork(&queue, &worker_body(1)).await.unwrap();
        q.reportFailed(&task_id, "0").await.unwrap();
        let got = collect(&mut consumer, Duration::from_secs(3), |g| !g.is_empty()).await;
        if let Some(m) = got.into_iter().next() {
            break m;
        }
    };
    assert_eq!(message.routing_key, format!("primary.{route_key}"));
    assert_eq!(message.body["version"], 1);
    assert_eq!(message.body["message"]["state"], "failed");
    let task_id = message.body["message"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let (to, subject) = (
        format!("To: {address}"),
        format!("Subject: Task failed: notified {unique} - {task_id}"),
    );
    let mail = crate::notify::mail_with(&s.data_dir, &[to.as_str(), subject.as_str()]).await;
    assert!(
        mail.contains(&format!("{}/tasks/{task_id}", s.root_url)),
        "{mail}"
    );
    // on-failed and on-any both fired: the same email twice, sent once
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let about = crate::notify::mails(&s.data_dir)
        .into_iter()
        .filter(|(_, text)| text.contains(&subject))
        .count();
    assert_eq!(about, 1);

    // a canceled task notifies nobody (upstream's ignoreTaskReasonResolved)
    let mut def = task_def(&queue, 600);
    def["routes"] = routes.clone();
    let canceled = slugid::nice();
    q.createTask(&canceled, &def).await.unwrap();
    q.cancelTask(&canceled).await.unwrap();
    let got = collect(&mut consumer, Duration::from_secs(3), |_| false).await;
    assert!(
        got.iter()
            .all(|m| m.body["message"]["taskId"] != canceled.as_str()),
        "a canceled task notified"
    );
    assert!(
        crate::notify::mails(&s.data_dir)
            .iter()
            .all(|(_, text)| !text.contains(&canceled)),
        "a canceled task was mailed about"
    );
    // the listener's queue lives in the broker user's namespace
    assert!(queue_exists(&conn, &format!("queue/guest/{listener}")).await);
    let ch2 = conn.create_channel().await.unwrap();
    let _ = ch2
        .queue_delete(
            format!("queue/guest/{listener}").as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
}

/// A webhook is published on the integration's exchange, and the build its job created is
/// announced on `task-group-creation-requested`, CC'd to its first task's routes.
#[tokio::test]
async fn github_webhooks_and_created_groups_are_published() {
    use crate::github::*;
    let _rabbit = RABBIT.read().await;
    let dir = std::env::temp_dir().join(format!("taskledger-it-ghp-{}", slugid::nice()));
    let (pem, public_key) = app_key(&dir);
    let gh: Gh = std::sync::Arc::new(std::sync::Mutex::new(Github {
        public_key,
        ..Github::default()
    }));
    let api = start_github(gh.clone()).await;
    let s = Server::start(&[
        ("TASKLEDGER_PULSE_URL", AMQP),
        ("TASKLEDGER_GITHUB_APP_ID", APP_ID),
        ("TASKLEDGER_GITHUB_PRIVATE_KEY", pem.to_str().unwrap()),
        ("TASKLEDGER_GITHUB_API_URL", api.as_str()),
        ("TASKLEDGER_GITHUB_ALLOW_UNSIGNED_WEBHOOKS", "true"),
    ])
    .await;
    let (conn, ch) = channel().await;
    wait_for_exchanges(&conn).await;
    // a repository of this run's own, so other runs' messages are not seen
    let repo = format!("app{}", slugid::nice().replace(['-', '_'], "x"));
    let mut consumer = listen(
        &ch,
        &[
            (
                "exchange/taskcluster-github/v1/push".to_string(),
                format!("primary.acme.{repo}"),
            ),
            (
                "exchange/taskcluster-github/v1/task-group-creation-requested".to_string(),
                format!("primary.acme.{repo}"),
            ),
        ],
    )
    .await;
    let queue = fresh_queue();
    let role = json!({"description": "acme", "scopes": [
        format!("queue:create-task:highest:{queue}"), "queue:create-task:project:none"]});
    let path = format!("/api/auth/v1/roles/repo:github.com%2Facme%2F{repo}:branch:main");
    assert_eq!(s.root_call("PUT", &path, &role).await.0, 200);
    let sha = "d".repeat(40);
    gh.lock()
        .unwrap()
        .files
        .insert(sha.clone(), taskcluster_yml(&queue));
    let install =
        json!({"action": "created", "installation": {"id": 77, "account": {"login": "acme"}}});
    assert_eq!(
        deliver(&s, Some("installation"), "d-i", &install, None)
            .await
            .0,
        200
    );
    let mut body = push(&sha, "main");
    body["repository"]["name"] = json!(repo);
    assert_eq!(
        deliver(&s, Some("push"), "d-push-1", &body, None).await.0,
        204
    );
    let got = collect(&mut consumer, Duration::from_secs(30), |g| g.len() >= 2).await;
    assert_eq!(
        got.len(),
        2,
        "{:?}",
        got.iter().map(|g| &g.exchange).collect::<Vec<_>>()
    );
    let pushed = got.iter().find(|g| g.exchange.ends_with("/push")).unwrap();
    assert_eq!(pushed.routing_key, format!("primary.acme.{repo}"));
    assert_eq!(pushed.body["version"], 1);
    assert_eq!(pushed.body["eventId"], "d-push-1");
    assert_eq!(pushed.body["installationId"], 77);
    assert_eq!(pushed.body["branch"], "main");
    assert_eq!(pushed.body["tasks_for"], "github-push");
    assert_eq!(pushed.body["body"]["after"], json!(sha));
    assert_eq!(pushed.body["details"]["event.head.sha"], json!(sha));
    let created = got
        .iter()
        .find(|g| g.exchange.ends_with("/task-group-creation-requested"))
        .unwrap();
    assert_eq!(created.cc, vec!["route.statuses".to_string()]);
    let group = created.body["taskGroupId"].as_str().unwrap();
    assert_eq!(created.body["organization"], "acme");
    let tasks = s.queue().listTaskGroup(group, None, None).await.unwrap();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
