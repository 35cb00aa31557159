//! Several nodes on one Kafka log (`--kafka-group`): the writer group spreads the partitions,
//! commands reaching a node that does not write their partition are forwarded to the writer,
//! every node serves reads (and sees its forwarded commands at once), and when a writer dies
//! its partitions move to a survivor, which carries on.

use crate::auth::{auth_as, create_client, root_auth};
use crate::harness::*;
use crate::kafka_log::no_retry_queue;
use crate::object::{claimed_task, upload};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskcluster::Queue;

/// What every node of one group shares.
fn node_env(prefix: &str) -> Vec<(String, String)> {
    [
        ("TASKLEDGER_KAFKA_BROKERS", kafka_bootstrap()),
        ("TASKLEDGER_KAFKA_TOPIC_PREFIX", prefix.to_string()),
        ("TASKLEDGER_KAFKA_GROUP", format!("{prefix}writers")),
        ("TASKLEDGER_KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
        ("TASKLEDGER_KAFKA_TIMEOUT_MS", "5000".into()),
        (
            "TASKLEDGER_CRYPTO_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".into(),
        ),
        (
            "TASKLEDGER_QUEUE_ACCESS_TOKEN",
            "it-cluster-queue-token".into(),
        ),
        ("TASKLEDGER_URL_SIGNING_KEY", "it-cluster-url-key".into()),
        (
            "TASKLEDGER_WORKER_MANAGER_ACCESS_TOKEN",
            "it-cluster-worker-manager-token".into(),
        ),
        ("TASKLEDGER_CLAIM_TIMEOUT_SECS", "5".into()),
        // who was assigned what, when, for a failure's post-mortem
        (
            "RUST_LOG",
            "warn,taskledger_projections::kafka_log=info".into(),
        ),
        ("TASKLEDGER_CLAIM_WORK_POLL_SECS", "1".into()),
        ("TASKLEDGER_CHECKPOINT_SECS", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The topics a node writes, from its `/metrics`.
async fn written_by(server: &Server) -> HashSet<String> {
    let Ok(r) = reqwest::get(format!("{}/metrics", server.root_url)).await else {
        return HashSet::new();
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("taskledger_partition_writer{topic=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(_, v)| *v == "1")
        .map(|(t, _)| t.to_string())
        .collect()
}

/// The service topics (queue, auth, worker-manager, object, secrets, index, hooks, notify,
/// github), one partition each.
const TOPICS: usize = 9;

/// Waits until each of the service topics has exactly one writer among `nodes` and every node
/// writes at least one (round-robin over the partitions); the writer of each topic (index into
/// `nodes`).
async fn settled(nodes: &[&Server]) -> HashMap<String, usize> {
    let start = Instant::now();
    loop {
        let mut writers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for t in written_by(n).await {
                writers.entry(t).or_default().push(i);
            }
        }
        let distinct: HashSet<usize> = writers.values().flatten().copied().collect();
        let complete = writers.len() == TOPICS
            && writers.values().all(|w| w.len() == 1)
            && distinct.len() == nodes.len().min(TOPICS);
        if complete {
            return writers.into_iter().map(|(t, w)| (t, w[0])).collect();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writers never settled: {writers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three nodes of one fresh group, once every topic has its one writer among them; the writer
/// of each topic (index into the nodes).
async fn three_nodes() -> (Vec<Server>, HashMap<String, usize>) {
    three_nodes_with(&[]).await
}

/// `three_nodes` with `extra` in every node's environment.
async fn three_nodes_with(extra: &[(&str, &str)]) -> (Vec<Server>, HashMap<String, usize>) {
    let prefix = fresh_topic_prefix();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut env = node_env(&prefix);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        nodes.push(Server::start_with(env).await);
    }
    let refs: Vec<&Server> = nodes.iter().collect();
    let writers = settled(&refs).await;
    (nodes, writers)
}

/// An acknowledged task its node did not show at once: when, which node, the task, its answer.
type Unseen = (Instant, usize, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_log_and_survive_losing_the_queue_writer() {
    let (mut nodes, writers) = three_nodes().await;
    let queue_writer = writers["taskledger.queue"];
    let follower = (queue_writer + 1) % 3;

    // a command on a follower is forwarded, and that follower reads its effect at once
    let q = nodes[follower].queue();
    let task_queue = fresh_queue();
    let task_id = slugid::nice();
    let created = q
        .createTask(&task_id, &task_def(&task_queue, 600))
        .await
        .unwrap();
    assert_eq!(created["status"]["state"], "pending");
    assert_eq!(state_of(&q, &task_id).await["state"], "pending");
    // errors come back from the writer with Taskcluster's body
    let mut other = task_def(&task_queue, 600);
    other["priority"] = json!("high");
    let conflict = q.createTask(&task_id, &other).await.unwrap_err();
    assert_eq!(status_of(&conflict), Some(409));
    // purge-cache's requests are the worker-manager partition's commands: forwarded to its
    // writer, read back at once on the node that took them
    let wm_follower = (writers["taskledger.worker-manager"] + 1) % 3;
    let purges = taskcluster::PurgeCache::new(
        taskcluster::ClientBuilder::new(&nodes[wm_follower].root_url).credentials(
            taskcluster::Credentials::new("static/taskcluster/root", ROOT_TOKEN),
        ),
    )
    .unwrap();
    purges
        .purgeCache("it-prov/wt", &json!({"cacheName": "c"}))
        .await
        .unwrap();
    let listed = purges.purgeRequests("it-prov/wt", None).await.unwrap();
    assert_eq!(listed["requests"][0]["cacheName"], "c", "{listed}");
    // the index: an insert at a node that does not write it is forwarded and read back there
    // at once; a completed task's route is indexed by the index's writer, which reads the
    // queue's log (and, for the task, its own follower's projection when another node writes
    // the queue), and every node finds it
    let index_at = |n: usize| {
        taskcluster::Index::new(
            taskcluster::ClientBuilder::new(&nodes[n].root_url).credentials(
                taskcluster::Credentials::new("static/taskcluster/root", ROOT_TOKEN),
            ),
        )
        .unwrap()
    };
    let ix_follower = (writers["taskledger.index"] + 1) % 3;
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let entry = json!({ "taskId": task_id, "rank": 1, "data": {}, "expires": expires });
    index_at(ix_follower)
        .insertTask("it.cluster.manual", &entry)
        .await
        .unwrap();
    let found = index_at(ix_follower).findTask("it.cluster.manual").await;
    assert_eq!(found.unwrap()["taskId"], task_id.as_str());
    let routed = slugid::nice();
    let mut def = task_def("built-in/succeed", 600);
    def["routes"] = json!(["index.it.cluster.routed"]);
    q.createTask(&routed, &def).await.unwrap();
    for n in 0..3 {
        let found = eventually(Duration::from_secs(30), || async {
            index_at(n).findTask("it.cluster.routed").await.ok()
        })
        .await;
        assert_eq!(found["taskId"], routed.as_str(), "node {n}");
    }

    // load through every node: create, read back on the same node, claim, complete
    let clients: Arc<Vec<Queue>> = Arc::new(nodes.iter().map(no_retry_queue).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let completions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool, Instant)>();
    // read-your-writes broken: (when, which node, task, what its status said); reported at the
    // end with the kill's time, so a failure says what happened rather than that a loader died
    let unseen: Arc<std::sync::Mutex<Vec<Unseen>>> = Arc::default();
    let mut loaders = Vec::new();
    for n in 0..6usize {
        let (clients, stop, tx, task_queue, unseen, completions) = (
            clients.clone(),
            stop.clone(),
            tx.clone(),
            task_queue.clone(),
            unseen.clone(),
            completions.clone(),
        );
        loaders.push(tokio::spawn(async move {
            let mut at = n % 3;
            while !stop.load(Ordering::Relaxed) {
                let q = &clients[at];
                let task_id = slugid::nice();
                // claims last 5 s here: on two loaded cores one may expire before its report
                // several times, and a task out of retries would end as an exception
                let mut def = task_def(&task_queue, 600);
                def["retries"] = json!(49);
                if q.createTask(&task_id, &def).await.is_err() {
                    at = (at + 1) % 3;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let _ = tx.send((task_id.clone(), false, Instant::now()));
                // read-your-writes on the node that answered, whoever wrote
                if let Err(e) = q.status(&task_id).await {
                    if status_of(&e) == Some(404) {
                        let seen = format!("{e:#}");
                        unseen
                            .lock()
                            .unwrap()
                            .push((Instant::now(), at, task_id.clone(), seen));
                    }
                }
                let body = json!({"workerGroup": "g", "workerId": format!("w{n}"), "tasks": 1});
                let Ok(claimed) = q.claimWork(&task_queue, &body).await else {
                    at = (at + 1) % 3;
                    continue;
                };
                for claim in claimed["tasks"].as_array().cloned().unwrap_or_default() {
                    let (Some(id), Some(run)) =
                        (claim["status"]["taskId"].as_str(), claim["runId"].as_u64())
                    else {
                        panic!("a claim without a taskId or runId: {claim}");
                    };
                    if q.reportCompleted(id, &run.to_string()).await.is_ok() {
                        completions.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send((id.to_string(), true, Instant::now()));
                    }
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[queue_writer].kill();
    let killed_at = Instant::now();
    // the load goes on for 12 s after the kill, or, on a machine slow enough that the
    // survivors have not yet completed 20 tasks by then, until they have (60 s at most)
    let before = completions.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = completions.load(Ordering::Relaxed) - before;
        let waited = killed_at.elapsed();
        if (waited >= Duration::from_secs(12) && after >= 20) || waited >= Duration::from_secs(60) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.await.expect("a loader failed");
    }
    let unseen: Vec<String> = unseen
        .lock()
        .unwrap()
        .iter()
        .map(|(at, node, id, seen)| {
            let since = if *at >= killed_at {
                format!("{:?} after", *at - killed_at)
            } else {
                format!("{:?} before", killed_at - *at)
            };
            format!("{id} on node {node}, {since} the kill of node {queue_writer}: {seen}")
        })
        .collect();
    assert!(
        unseen.is_empty(),
        "acknowledged tasks unseen at once on the node that acknowledged them: {unseen:#?}"
    );
    let mut created = HashSet::new();
    let mut completed_after_kill = 0;
    let mut completed_before_kill = 0;
    while let Some((id, done, at)) = rx.recv().await {
        if !done {
            created.insert(id);
        } else if at > killed_at {
            completed_after_kill += 1;
        } else {
            completed_before_kill += 1;
        }
    }
    assert!(
        completed_before_kill > 10,
        "the load hardly ran: {completed_before_kill}"
    );
    assert!(
        completed_after_kill > 0,
        "nothing completed after the queue's writer died"
    );
    let survivors: Vec<&Server> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != queue_writer)
        .map(|(_, n)| n)
        .collect();
    settled(&survivors).await;

    // finish what is left (claims the dead node's loaders held expire and retry)
    let q = survivors[0].queue();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut open = Vec::new();
        for id in &created {
            let status = state_of(&q, id).await;
            if status["state"] != "completed" {
                open.push(status);
            }
        }
        if open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged tasks never completed, e.g. {}",
            open.len(),
            open[0]
        );
        let body = json!({"workerGroup": "g", "workerId": "drain", "tasks": 32});
        if let Ok(claimed) = q.claimWork(&task_queue, &body).await {
            for claim in claimed["tasks"].as_array().cloned().unwrap_or_default() {
                let id = claim["status"]["taskId"].as_str().unwrap();
                let run = claim["runId"].as_u64().unwrap().to_string();
                let _ = q.reportCompleted(id, &run).await;
            }
        }
    }
    // both survivors answer alike for every acknowledged task
    let other = survivors[1].queue();
    for id in &created {
        eventually(Duration::from_secs(10), || async {
            (state_of(&other, id).await["state"] == "completed").then_some(())
        })
        .await;
    }
}

/// A worker's object artifacts through one node of a cluster whose queue and object service
/// may be written by two other nodes: the upload finishes at the object service's writer, and
/// finishArtifact, at once afterwards, at the queue's writer, whose copy of the object
/// projection follows the log a moment behind. The queue waits for that copy to catch up
/// with the object log before it calls the upload missing, so every artifact finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_artifacts_finish_whichever_nodes_write_the_queue_and_the_objects() {
    let (nodes, writers) = three_nodes().await;
    let (queue_writer, object_writer) = (writers["taskledger.queue"], writers["taskledger.object"]);
    assert_ne!(
        queue_writer, object_writer,
        "one node writes both services: the test would check nothing"
    );
    let entry = (0..3)
        .find(|i| *i != queue_writer && *i != object_writer)
        .expect("three nodes");
    let node = &nodes[entry];
    let q = node.queue();
    let (task_id, worker) = claimed_task(node).await;
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    for i in 0..10 {
        let name = format!("public/cluster-{i}.txt");
        let art = worker
            .createArtifact(
                &task_id,
                "0",
                &name,
                &json!({ "storageType": "object", "contentType": "text/plain", "expires": expires.to_rfc3339() }),
            )
            .await
            .unwrap();
        upload(
            node,
            &art,
            "text/plain",
            &expires,
            format!("artifact {i}").as_bytes(),
        )
        .await;
        worker
            .finishArtifact(&task_id, "0", &name, &json!({ "uploadId": art["uploadId"] }))
            .await
            .unwrap_or_else(|e| {
                panic!("finishing {name} (queue written by node {queue_writer}, objects by {object_writer}): {e}")
            });
        let names = artifact_names(&q, &task_id, "0").await;
        assert!(names.contains(&name), "{name} not listed: {names:?}");
    }
}

/// A client created at the auth service's writer and used at once on another node, whose
/// auth projection follows the log a moment behind: that node catches up with the auth log
/// before it calls a client unknown, so the new credentials work there at once, and an unknown
/// client is still refused with Taskcluster's 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_created_at_the_writer_authenticates_at_once_on_another_node() {
    // followers look at the auth log twice a second only, so the catch-up on a refusal is
    // what lets a request through at once
    let (nodes, writers) =
        three_nodes_with(&[("FAILPOINTS", "taskledger.auth-follow-slow=return")]).await;
    let auth_writer = writers["taskledger.auth"];
    let elsewhere = &nodes[(auth_writer + 1) % 3];
    assert!(!written_by(elsewhere).await.contains("taskledger.auth"));
    for i in 0..10 {
        let id = format!("it/cluster-{i}-{}", slugid::nice());
        let scopes = ["cluster:scope", "auth:current-scopes"];
        let creds = create_client(&nodes[auth_writer], &id, &scopes).await;
        let current = auth_as(elsewhere, creds)
            .currentScopes()
            .await
            .unwrap_or_else(|e| panic!("{id} on a node that does not write auth: {e}"));
        let scopes = current["scopes"].as_array().unwrap();
        assert!(scopes.contains(&json!("cluster:scope")), "{current}");
    }
    // an unknown client is refused with Taskcluster's 401
    let unknown = auth_as(
        elsewhere,
        taskcluster::Credentials::new(
            "it/never-created",
            "no-such-token-no-such-token-no-such-tok",
        ),
    )
    .currentScopes()
    .await
    .unwrap_err();
    assert_eq!(status_of(&unknown), Some(401));
    // a client the writer re-enabled, or gave a new token, authenticates at once elsewhere
    // too: a refusal of a known client also catches up before it is final
    let id = format!("it/cluster-re-{}", slugid::nice());
    let creds = create_client(&nodes[auth_writer], &id, &["auth:current-scopes"]).await;
    let root = root_auth(&nodes[auth_writer]);
    for round in 0..5 {
        root.disableClient(&id).await.unwrap();
        // a success may still come from the moment before this node saw the disable
        let start = Instant::now();
        loop {
            match auth_as(elsewhere, creds.clone()).currentScopes().await {
                Err(e) => {
                    assert_eq!(status_of(&e), Some(401), "round {round}");
                    break;
                }
                Ok(_) => {
                    assert!(start.elapsed() < Duration::from_secs(30), "never refused");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        root.enableClient(&id).await.unwrap();
        auth_as(elsewhere, creds.clone())
            .currentScopes()
            .await
            .unwrap_or_else(|e| panic!("re-enabled, round {round}: {e}"));
    }
    let reset = root.resetAccessToken(&id).await.unwrap();
    let fresh = taskcluster::Credentials::new(&id, reset["accessToken"].as_str().unwrap());
    auth_as(elsewhere, fresh)
        .currentScopes()
        .await
        .unwrap_or_else(|e| panic!("a reset token: {e}"));
}
