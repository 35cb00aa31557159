//! `taskledger worker` end to end: the real binary serving, the real binary working, tasks run
//! as real processes, results read back through the official client.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

async fn resolved(server: &Server, task_id: &str) -> Value {
    let q = server.queue();
    eventually(LONG, || async {
        let s = state_of(&q, task_id).await;
        matches!(
            s["state"].as_str(),
            Some("completed" | "failed" | "exception")
        )
        .then_some(s)
    })
    .await
}

/// Creates a task of `payload` on `queue` for a worker; its id.
async fn create_process_task(server: &Server, queue: &str, payload: Value) -> String {
    let task_id = slugid::nice();
    server
        .queue()
        .createTask(&task_id, &process_task(queue, payload))
        .await
        .unwrap();
    task_id
}

/// The resolved status, and the run's backing log (run 0).
async fn resolved_with_log(server: &Server, task_id: &str) -> (Value, String) {
    let s = resolved(server, task_id).await;
    let log = server
        .artifact_text(task_id, 0, "public/logs/live_backing.log")
        .await;
    (s, log)
}

async fn running(server: &Server, task_id: &str) {
    let q = server.queue();
    eventually(LONG, || async {
        (state_of(&q, task_id).await["state"] == "running").then_some(())
    })
    .await
}

async fn read_pid(path: &std::path::Path) -> i32 {
    eventually(LONG, || async {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    })
    .await
}

#[tokio::test]
async fn worker_runs_tasks_to_each_resolution() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-main", &["--capacity", "4"]);
    let q = server.queue();

    let hello = slugid::nice();
    q.createTask(
        &hello,
        &process_task(
            &queue,
            json!({
                "command": [["sh", "-c", "echo hello; mkdir -p out/sub; echo data > out/result.txt; echo deep > out/sub/x.txt; echo \"task=$TASK_ID run=$RUN_ID\""]],
                "maxRunTime": 60,
                "artifacts": [
                    {"type": "file", "path": "out/result.txt", "name": "public/result.txt"},
                    {"type": "directory", "path": "out/sub", "name": "public/sub"}
                ]
            }),
        ),
    )
    .await
    .unwrap();
    let fail = slugid::nice();
    q.createTask(
        &fail,
        &process_task(
            &queue,
            json!({"command": [["sh", "-c", "echo about to fail; exit 1"]], "maxRunTime": 60}),
        ),
    )
    .await
    .unwrap();
    let missing = slugid::nice();
    q.createTask(
        &missing,
        &process_task(
            &queue,
            json!({"command": [["true"]], "maxRunTime": 60,
                   "artifacts": [{"type": "file", "path": "nope.txt", "name": "public/nope.txt"},
                                 {"type": "file", "path": "maybe.txt", "name": "public/maybe.txt", "optional": true}]}),
        ),
    )
    .await
    .unwrap();
    let malformed = slugid::nice();
    q.createTask(
        &malformed,
        &process_task(
            &queue,
            json!({"command": [["true"]], "maxRunTime": 60, "unknownField": 1}),
        ),
    )
    .await
    .unwrap();
    let mut retry_def = process_task(
        &queue,
        json!({"command": [["sh", "-c", "if [ \"$RUN_ID\" = 0 ]; then exit 75; fi; echo second run"]],
               "maxRunTime": 60, "onExitStatus": {"retry": [75]}}),
    );
    retry_def["retries"] = json!(1);
    let retried = slugid::nice();
    q.createTask(&retried, &retry_def).await.unwrap();

    // a task that completes: its log and artifacts are in the queue
    let s = resolved(&server, &hello).await;
    assert_eq!(s["state"], "completed", "{s}");
    assert_eq!(s["runs"][0]["workerId"], "w-main");
    let log = server
        .artifact_text(&hello, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("hello\n"), "{log}");
    assert!(log.contains(&format!("task={hello} run=0")), "{log}");
    assert!(log.contains("=== Task Finished ==="), "{log}");
    assert_eq!(
        server.artifact_text(&hello, 0, "public/result.txt").await,
        "data\n"
    );
    assert_eq!(
        server.artifact_text(&hello, 0, "public/sub/x.txt").await,
        "deep\n"
    );
    // uploaded as generic-worker does: `object` artifacts, through the object service
    let content = q.artifact(&hello, "0", "public/result.txt").await.unwrap();
    assert_eq!(content["storageType"], "object", "{content}");
    // live.log became a link to the backing log
    let via_link = server
        .artifact_text(&hello, 0, "public/logs/live.log")
        .await;
    assert_eq!(via_link, log);
    let listed = q.listArtifacts(&hello, "0", None, None).await.unwrap();
    let live = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "public/logs/live.log")
        .cloned()
        .unwrap();
    assert_eq!(live["storageType"], "link", "{live}");
    // uploads say their length, as generic-worker's createArtifact does
    let result = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "public/result.txt")
        .cloned()
        .unwrap();
    assert_eq!(result["contentLength"], 5, "{result}");
    assert_eq!(
        result["contentType"], "text/plain; charset=utf-8",
        "{result}"
    );

    let s = resolved(&server, &fail).await;
    assert_eq!(s["state"], "failed", "{s}");
    let log = server
        .artifact_text(&fail, 0, "public/logs/live_backing.log")
        .await;
    assert!(
        log.contains("about to fail\n") && log.contains("exited with code 1"),
        "{log}"
    );

    let s = resolved(&server, &missing).await;
    assert_eq!(s["state"], "failed", "{s}");
    let names = artifact_names(&q, &missing, "0").await;
    assert!(names.iter().any(|n| n == "public/nope.txt"), "{names:?}");
    assert!(!names.iter().any(|n| n == "public/maybe.txt"), "{names:?}");
    let nope = q
        .artifactInfo(&missing, "0", "public/nope.txt")
        .await
        .unwrap();
    assert_eq!(nope["storageType"], "error", "{nope}");

    let s = resolved(&server, &malformed).await;
    assert_eq!(s["state"], "exception", "{s}");
    assert_eq!(s["runs"][0]["reasonResolved"], "malformed-payload");
    let log = server
        .artifact_text(&malformed, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("unknownField"), "{log}");

    let s = eventually(LONG, || async {
        let s = state_of(&q, &retried).await;
        (s["state"] == "completed").then_some(s)
    })
    .await;
    assert_eq!(s["runs"][0]["state"], "exception");
    assert_eq!(s["runs"][0]["reasonResolved"], "intermittent-task");
    assert_eq!(s["runs"][1]["reasonCreated"], "task-retry");
}

#[tokio::test]
async fn max_run_time_fails_the_task_and_kills_its_process_tree() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-timeout", &[]);
    let pidfile = server.data_dir.join("timeout-child.pid");
    let task_id = slugid::nice();
    let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
    server
        .queue()
        .createTask(
            &task_id,
            &process_task(
                &queue,
                json!({"command": [["sh", "-c", script]], "maxRunTime": 2}),
            ),
        )
        .await
        .unwrap();
    let pid = read_pid(&pidfile).await;
    let s = resolved(&server, &task_id).await;
    assert_eq!(s["state"], "failed", "{s}");
    assert!(
        process_gone(pid).await,
        "the task's background child {pid} survived"
    );
    let log = server
        .artifact_text(&task_id, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("max run time exceeded"), "{log}");
}

#[tokio::test]
async fn cancelling_a_running_task_kills_it() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-cancel", &[]);
    let pidfile = server.data_dir.join("cancel-child.pid");
    let task_id = slugid::nice();
    let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
    let q = server.queue();
    q.createTask(
        &task_id,
        &process_task(
            &queue,
            json!({"command": [["sh", "-c", script]], "maxRunTime": 600}),
        ),
    )
    .await
    .unwrap();
    let pid = read_pid(&pidfile).await;
    q.cancelTask(&task_id).await.unwrap();
    assert!(
        process_gone(pid).await,
        "the cancelled task's process {pid} still runs"
    );
    let s = state_of(&q, &task_id).await;
    assert_eq!(s["runs"][0]["reasonResolved"], "canceled", "{s}");
    // the log of the cancelled run still arrives (exception runs accept artifacts for a while)
    let log = eventually(LONG, || async {
        let r = reqwest::get(server.artifact_url(&task_id, 0, "public/logs/live_backing.log"))
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let text = r.text().await.ok()?;
        text.contains("=== Task Finished ===").then_some(text)
    })
    .await;
    assert!(log.contains("stopping the task"), "{log}");
}

#[tokio::test]
async fn live_log_is_readable_while_the_task_runs() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-live", &[]);
    let task_id = slugid::nice();
    let q = server.queue();
    // the second line waits for the test to have read the first (however slow the machine)
    let go = std::env::temp_dir().join(format!("taskledger-it-live-{task_id}"));
    let script = format!(
        "echo first-$((1+1)); while [ ! -e '{}' ]; do sleep 0.1; done; echo second-$((2+1))",
        go.display()
    );
    q.createTask(
        &task_id,
        &process_task(
            &queue,
            // the printed words never appear in the echoed command line itself
            json!({"command": [["sh", "-c", script]], "maxRunTime": 60}),
        ),
    )
    .await
    .unwrap();
    running(&server, &task_id).await;
    // the reference artifact leads (303) to the worker's stream
    let resp = eventually(LONG, || async {
        let r = reqwest::get(server.artifact_url(&task_id, 0, "public/logs/live.log"))
            .await
            .ok()?;
        r.status().is_success().then_some(r)
    })
    .await;
    use futures::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("first-2") {
        let chunk = tokio::time::timeout(LONG, stream.next())
            .await
            .expect("live log stalled")
            .expect("live log ended early")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("second-3"));
    assert_eq!(
        state_of(&q, &task_id).await["state"],
        "running",
        "first line read while the task still runs"
    );
    std::fs::write(&go, b"").unwrap();
    while let Some(chunk) = tokio::time::timeout(LONG, stream.next()).await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        text.contains("second-3") && text.contains("=== Task Finished ==="),
        "{text}"
    );
    assert_eq!(resolved(&server, &task_id).await["state"], "completed");
    let _ = std::fs::remove_file(&go);
}

/// Creates a task whose run 0 hangs (its child's pid written to a file) and whose later runs
/// print `done`; returns the task id once run 0 is running, and that child's pid.
async fn hang_on_first_run(server: &Server, queue: &str, done: &str) -> (String, i32) {
    let pidfile = server.data_dir.join(format!("{}.pid", slugid::nice()));
    let task_id = slugid::nice();
    let script = format!(
        "if [ \"$RUN_ID\" = 0 ]; then sleep 600 & echo $! > {}; wait; fi; echo {done}",
        pidfile.display()
    );
    server
        .queue()
        .createTask(
            &task_id,
            &process_task(
                queue,
                json!({"command": [["sh", "-c", script]], "maxRunTime": 600}),
            ),
        )
        .await
        .unwrap();
    (task_id, read_pid(&pidfile).await)
}

#[tokio::test]
async fn sigterm_resolves_worker_shutdown_and_another_worker_retries() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let mut first = server.start_worker(&queue, "w-first", &[]);
    let (task_id, pid) = hang_on_first_run(&server, &queue, "finished elsewhere").await;
    let q = server.queue();
    first.signal("TERM");
    assert_eq!(
        first.exit_code(LONG).await,
        Some(72),
        "generic-worker's shutdown exit code"
    );
    assert!(
        process_gone(pid).await,
        "task process {pid} outlived its worker"
    );
    let s = state_of(&q, &task_id).await;
    assert_eq!(s["runs"][0]["state"], "exception", "{s}");
    assert_eq!(s["runs"][0]["reasonResolved"], "worker-shutdown");
    assert_eq!(s["runs"][1]["state"], "pending");

    let _second = server.start_worker(&queue, "w-second", &[]);
    let s = resolved(&server, &task_id).await;
    assert_eq!(s["state"], "completed", "{s}");
    assert_eq!(s["runs"][1]["workerId"], "w-second");
    let log = server
        .artifact_text(&task_id, 1, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("finished elsewhere"), "{log}");
}

/// `features.taskclusterProxy`: the task calls the deployment through `TASKCLUSTER_PROXY_URL`
/// holding no credentials; the proxy signs with the task's credentials limited to the task's
/// scopes plus the run's artifact scope, in both URL forms, passes refusals through, and
/// signs URLs of the deployment at `/bewit`.
#[tokio::test]
async fn the_taskcluster_proxy_signs_the_tasks_calls_with_its_scopes() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    // a generic-worker style config: the machine's description reaches the task, and a key
    // this worker does not read is only warned about
    let config = server.data_dir.join("proxy-worker.json");
    std::fs::write(
        &config,
        r#"{"workerLocation": "{\"cloud\":\"it\"}", "instanceType": "it-large", "shutdownMachineOnIdle": false}"#,
    )
    .unwrap();
    let _worker = server.start_worker(&queue, "w-proxy", &["--config", config.to_str().unwrap()]);
    let script = r#"set -e
mkdir -p out
P="$TASKCLUSTER_PROXY_URL"
env | grep -c TASKCLUSTER_ACCESS_TOKEN > out/tokens.txt || true
echo "$TASKCLUSTER_WORKER_LOCATION $TASKCLUSTER_INSTANCE_TYPE" > out/machine.txt
curl -sf "$P/api/auth/v1/scopes/current" > out/current.json
curl -sf "$P/api/queue/v1/task/$TASK_ID/runs/$RUN_ID/artifacts?limit=1" > out/listed.json
curl -s -o /dev/null -w '%{http_code}' --path-as-is "$P/queue/v1/../../../api/auth/v1/scopes/current" > out/dotted.txt
curl -sf "$P/auth/v1/scopes/current" > out/short.json
exp=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%S.000Z)
curl -sf -X POST -H 'content-type: application/json' \
  --data "{\"storageType\":\"reference\",\"url\":\"https://example.com/x\",\"contentType\":\"text/plain\",\"expires\":\"$exp\"}" \
  "$P/api/queue/v1/task/$TASK_ID/runs/$RUN_ID/artifacts/public%2Fvia-proxy" > out/created.json
curl -s -o out/denied.json -w '%{http_code}' -X DELETE "$P/api/auth/v1/clients/nobody" > out/denied.txt
url=$(curl -s --data "$TASKCLUSTER_ROOT_URL/api/auth/v1/scopes/current" "$P/bewit")
curl -sf "$url" > out/bewit.json
curl -s -o /dev/null -w '%{http_code}' --data "https://elsewhere.example.com/x" "$P/bewit" > out/elsewhere.txt
curl -sf "$P/secrets/v1/secret/project/proxy/deploy" > out/secret.json
curl -s -o /dev/null -w '%{http_code}' "$P/api/secrets/v1/secret/project/other/x" > out/secret-denied.txt
"#;
    let mut def = process_task(
        &queue,
        json!({
            "command": [["sh", "-c", script]],
            "maxRunTime": 60,
            "features": {"taskclusterProxy": true},
            "artifacts": [{"type": "directory", "path": "out", "name": "public/out"}]
        }),
    );
    def["scopes"] = json!([
        "auth:current-scopes",
        "auth:proxy-probe",
        "queue:list-artifacts:*",
        "secrets:get:project/proxy/*"
    ]);
    // a secret the task reads through the proxy, as CI tasks fetch their deploy keys
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, answer) = server
        .root_call(
            "PUT",
            "/api/secrets/v1/secret/project/proxy/deploy",
            &json!({ "secret": { "key": "from-the-proxy" }, "expires": expires }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let task_id = slugid::nice();
    server.queue().createTask(&task_id, &def).await.unwrap();
    let (s, log) = resolved_with_log(&server, &task_id).await;
    assert_eq!(s["state"], "completed", "{s}\n{log}");
    assert!(log.contains("taskcluster-proxy listening at"), "{log}");
    let text = |name: &'static str| {
        let server = &server;
        let task_id = task_id.clone();
        async move {
            server
                .artifact_text(&task_id, 0, &format!("public/out/{name}"))
                .await
        }
    };
    assert_eq!(
        text("tokens.txt").await.trim(),
        "0",
        "no credentials in the task's env"
    );
    assert_eq!(
        text("machine.txt").await.trim(),
        r#"{"cloud":"it"} it-large"#
    );
    // a query string is part of what is signed
    let listed: Value = serde_json::from_str(&text("listed.json").await).unwrap();
    assert!(listed["artifacts"].is_array(), "{listed}");
    // a path that dot segments would take out of the service's is not forwarded
    assert_eq!(text("dotted.txt").await.trim(), "404");
    let current: Value = serde_json::from_str(&text("current.json").await).unwrap();
    let scopes: Vec<&str> = current["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(scopes.contains(&"auth:proxy-probe"), "{current}");
    let artifact_scope = format!("queue:create-artifact:{task_id}/0");
    assert!(scopes.contains(&artifact_scope.as_str()), "{current}");
    // the task credentials also hold the run's reclaim scope; the proxy's calls do not
    assert!(
        !scopes.iter().any(|s| s.starts_with("queue:reclaim-task")),
        "{current}"
    );
    let short: Value = serde_json::from_str(&text("short.json").await).unwrap();
    assert_eq!(short, current);
    let bewit: Value = serde_json::from_str(&text("bewit.json").await).unwrap();
    assert_eq!(bewit, current);
    assert_eq!(text("denied.txt").await.trim(), "403");
    let denied: Value = serde_json::from_str(&text("denied.json").await).unwrap();
    assert_eq!(denied["code"], "InsufficientScopes", "{denied}");
    assert_eq!(text("elsewhere.txt").await.trim(), "400");
    let secret: Value = serde_json::from_str(&text("secret.json").await).unwrap();
    assert_eq!(
        secret["secret"],
        json!({ "key": "from-the-proxy" }),
        "{secret}"
    );
    assert_eq!(text("secret-denied.txt").await.trim(), "403");
    let artifact = server
        .queue()
        .artifact(&task_id, "0", "public/via-proxy")
        .await;
    assert!(artifact.is_ok(), "{artifact:?}");
}

/// `osGroups`: a group the worker's user is in, with its scope, runs; without the scope, or a
/// group the user is not in, is `malformed-payload`.
#[tokio::test]
async fn os_groups_need_membership_and_their_scope() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-groups", &[]);
    let out = std::process::Command::new("id")
        .arg("-gn")
        .output()
        .unwrap();
    let group = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let q = server.queue();
    let mut outcomes = Vec::new();
    for (groups, scopes) in [
        (
            vec![group.clone()],
            vec![format!("generic-worker:os-group:{queue}/{group}")],
        ),
        (vec![group.clone()], vec![]),
        (
            vec!["no-such-group-it".to_string()],
            vec!["generic-worker:os-group:*".to_string()],
        ),
    ] {
        let mut def = process_task(
            &queue,
            json!({"command": [["true"]], "maxRunTime": 30, "osGroups": groups}),
        );
        def["scopes"] = json!(scopes);
        let task_id = slugid::nice();
        q.createTask(&task_id, &def).await.unwrap();
        let s = resolved(&server, &task_id).await;
        outcomes.push((
            s["state"].as_str().unwrap_or_default().to_string(),
            s["runs"][0]["reasonResolved"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    let expected = [
        ("completed", "completed"),
        ("exception", "malformed-payload"),
        ("exception", "malformed-payload"),
    ];
    let got: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(got, expected);
}

/// generic-worker's exit codes for a config: 64 when the file cannot be read, 73 when a
/// value is wrong; neither starts claiming.
#[tokio::test]
async fn worker_config_problems_exit_with_generic_workers_codes() {
    let bad_json = std::env::temp_dir().join(format!("taskledger-it-{}.json", slugid::nice()));
    std::fs::write(&bad_json, "{ not json").unwrap();
    for (args, code) in [
        (vec!["--config", "/nonexistent/worker.json"], 64),
        (vec!["--config", bad_json.to_str().unwrap()], 64),
        (vec!["--task-queue-id", "no-slash"], 73),
    ] {
        let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
            .arg("worker")
            .args(&args)
            .output()
            .await
            .unwrap()
            .status;
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
    let _ = std::fs::remove_file(&bad_json);
}

/// A worker stopped while its claimWork is being answered hands the task it was just given
/// back (`worker-shutdown`, retried at once) instead of leaving it claimed by nobody until the
/// claim expires. The queue's writer is slowed (a fail point sleeps 900 ms after each append)
/// so that the stop lands between the claim and its answer: the answer comes about 900 ms
/// after createTask's, well inside the worker's 2 s wait for a claim in flight.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_claim_answered_during_shutdown_is_handed_back() {
    let server = Server::start(&[("FAILPOINTS", "queue-after-append=sleep(900)")]).await;
    let queue = fresh_queue();
    let mut worker = server.start_worker(&queue, "w-late-claim", &[]);
    let q = server.queue();
    // the worker's claimWork is waiting for work once the queue has seen the worker
    let (p, w) = queue.split_once('/').unwrap();
    eventually(LONG, || async {
        q.getWorker(p, w, "it-group", "w-late-claim").await.ok()
    })
    .await;
    let task_id = create_process_task(
        &server,
        &queue,
        json!({"command": [["sh", "-c", "sleep 30"]], "maxRunTime": 60}),
    )
    .await;
    // createTask's answer came after its own append's sleep; the claim it woke is appended
    // now and answered 900 ms later
    worker.signal("TERM");
    assert_eq!(worker.exit_code(LONG).await, Some(72));
    // left unread, the claim would keep the run `running` for the claim's 20 minutes
    let s = eventually(Duration::from_secs(20), || async {
        let s = state_of(&q, &task_id).await;
        (s["runs"][0]["state"] == "exception").then_some(s)
    })
    .await;
    assert_eq!(s["runs"][0]["reasonResolved"], "worker-shutdown", "{s}");
    assert_eq!(s["runs"][0]["workerId"], "w-late-claim", "{s}");
    assert_eq!(s["runs"][1]["state"], "pending", "{s}");
    // handed back, not started and aborted: a started run would have uploaded its log
    let artifacts = q.listArtifacts(&task_id, "0", None, None).await.unwrap();
    assert_eq!(artifacts["artifacts"], json!([]), "{artifacts}");
}

/// A worker stopped while a task's mount is still downloading resolves the run as it resolves
/// one stopped in its commands: `worker-shutdown`, which the queue retries.
#[tokio::test]
async fn sigterm_while_mounting_resolves_worker_shutdown() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    // accepts the mount's download and never answers it
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/never", stalled.local_addr().unwrap());
    let mut worker = server.start_worker(&queue, "w-mounting", &[]);
    let task_id = create_process_task(
        &server,
        &queue,
        json!({"command": [["sh", "-c", "echo should-not-run"]], "maxRunTime": 60,
                       "mounts": [{"file": "x", "content": {"url": url}}]}),
    )
    .await;
    running(&server, &task_id).await;
    // the download has started once the worker's connection is accepted
    stalled.set_nonblocking(true).unwrap();
    let stalled = tokio::net::TcpListener::from_std(stalled).unwrap();
    let (_held, _) = tokio::time::timeout(LONG, stalled.accept())
        .await
        .expect("the worker never fetched the mount")
        .unwrap();
    worker.signal("TERM");
    assert_eq!(worker.exit_code(LONG).await, Some(72));
    let s = state_of(&server.queue(), &task_id).await;
    assert_eq!(s["runs"][0]["state"], "exception", "{s}");
    assert_eq!(s["runs"][0]["reasonResolved"], "worker-shutdown", "{s}");
    assert_eq!(s["runs"][1]["state"], "pending", "{s}");
}

#[tokio::test]
async fn a_killed_workers_task_is_retried_after_its_claim_expires() {
    let server = Server::start(&[("TASKLEDGER_CLAIM_TIMEOUT_SECS", "3")]).await;
    let queue = fresh_queue();
    let mut first = server.start_worker(&queue, "w-doomed", &[]);
    let (task_id, orphan) = hang_on_first_run(&server, &queue, "survived").await;
    first.signal("KILL");
    let _ = first.exit_code(LONG).await;
    let _second = server.start_worker(&queue, "w-rescuer", &[]);
    let s = resolved(&server, &task_id).await;
    // the orphaned process of the killed worker is no test subject; clean it up
    let _ = std::process::Command::new("kill")
        .arg("-9")
        .arg(orphan.to_string())
        .status();
    assert_eq!(s["state"], "completed", "{s}");
    assert_eq!(s["runs"][0]["reasonResolved"], "claim-expired", "{s}");
    assert_eq!(s["runs"][1]["workerId"], "w-rescuer");
}

#[tokio::test]
async fn run_task_streams_the_log_and_exits_with_the_result() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-cli", &[]);
    let ok = run_task(&server, &queue, &["sh", "-c", "echo hello from run-task"])
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        out.matches("hello from run-task").count(),
        2,
        "the command line and its output, once each: {out}"
    );
    let bad = run_task(&server, &queue, &["sh", "-c", "exit 3"])
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("failed"));
}

async fn run_task(
    server: &Server,
    queue: &str,
    args: &[&str],
) -> std::io::Result<std::process::Output> {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_taskledger"))
        .arg("run-task")
        .args(["--task-queue-id", queue])
        .arg("--")
        .args(args)
        .env("TASKCLUSTER_ROOT_URL", &server.root_url)
        .env("TASKCLUSTER_CLIENT_ID", "static/taskcluster/root")
        .env("TASKCLUSTER_ACCESS_TOKEN", ROOT_TOKEN)
        .env("RUST_LOG", "warn")
        .output()
        .await
}

#[tokio::test]
async fn a_static_pool_worker_registers_runs_tasks_and_stops_when_removed() {
    let server = Server::start(&[("TASKLEDGER_CLAIM_WORK_POLL_SECS", "2")]).await;
    let pool = fresh_queue();
    let wm = taskcluster::WorkerManager::new(
        taskcluster::ClientBuilder::new(&server.root_url).credentials(
            taskcluster::Credentials::new("static/taskcluster/root", ROOT_TOKEN),
        ),
    )
    .unwrap();
    wm.createWorkerPool(
        &pool,
        &json!({"providerId": "static", "description": "it", "config": {},
                "owner": "it@example.com", "emailOnError": false}),
    )
    .await
    .unwrap();
    let secret = format!("{}{}", slugid::nice(), slugid::nice());
    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    wm.createWorker(
        &pool,
        "it-group",
        "w-static",
        &json!({"expires": expires, "capacity": 1, "providerInfo": {"staticSecret": secret}}),
    )
    .await
    .unwrap();
    // a wrong secret buys nothing: the worker gives up at start
    let mut impostor = server.start_pool_worker(
        &pool,
        "w-static",
        &[
            "--worker-pool-id",
            &pool,
            "--static-secret",
            &format!("{}{}", slugid::nice(), slugid::nice()),
        ],
    );
    assert_ne!(impostor.exit_code(LONG).await, Some(0));

    let mut worker = server.start_pool_worker(
        &pool,
        "w-static",
        &["--worker-pool-id", &pool, "--static-secret", &secret],
    );
    let task_id = slugid::nice();
    server
        .queue()
        .createTask(
            &task_id,
            &process_task(&pool, json!({"command": [["sh", "-c", "echo registered worker ran me"]], "maxRunTime": 60})),
        )
        .await
        .unwrap();
    let s = resolved(&server, &task_id).await;
    assert_eq!(s["state"], "completed", "{s}");
    assert_eq!(s["runs"][0]["workerId"], "w-static");
    let log = server
        .artifact_text(&task_id, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("registered worker ran me\n"), "{log}");

    wm.removeWorker(&pool, "it-group", "w-static")
        .await
        .unwrap();
    assert_eq!(
        worker.exit_code(LONG).await,
        Some(70),
        "shouldWorkerTerminate said stop: generic-worker's exit code 70"
    );
}

/// Payload mounts: files from inline text, base64 and a dependency's artifact are in place
/// before the commands; a writable cache keeps what one task left for the next, is deleted
/// when the last command's exit code is listed in `purgeCaches`, and needs its scope; bytes
/// that are not the pinned SHA-256 fail the task.
#[tokio::test]
async fn mounts_write_files_and_caches_outlive_their_task() {
    let server = Server::start(&[]).await;
    let queue = fresh_queue();
    let _worker = server.start_worker(&queue, "w-mounts", &[]);
    let q = server.queue();
    let with = |payload: Value, dependencies: &[&str], scopes: &[&str]| {
        let mut def = process_task(&queue, payload);
        def["dependencies"] = json!(dependencies);
        def["scopes"] = json!(scopes);
        def
    };
    let cache_scope = ["generic-worker:cache:it-cache"];
    // as a deployment grants it: anyone may read public artifacts (the task credentials that
    // fetch a dependency's artifact hold no queue:get-artifact scope of their own)
    taskcluster::Auth::new(
        taskcluster::ClientBuilder::new(&server.root_url).credentials(
            taskcluster::Credentials::new("static/taskcluster/root", ROOT_TOKEN),
        ),
    )
    .unwrap()
    .createRole(
        "anonymous",
        &json!({"description": "public reads", "scopes": ["queue:get-artifact:public/*"]}),
    )
    .await
    .unwrap();

    let source = slugid::nice();
    q.createTask(
        &source,
        &with(
            json!({"command": [["sh", "-c", "echo from-dependency > dep.txt"]], "maxRunTime": 60,
                   "artifacts": [{"type": "file", "path": "dep.txt", "name": "public/dep.txt"}]}),
            &[],
            &[],
        ),
    )
    .await
    .unwrap();
    let first = slugid::nice();
    q.createTask(
        &first,
        &with(
            json!({"command": [["sh", "-c", "cat in/raw.txt in/dep.txt in/b64.txt; echo kept > cache/marker"]],
                   "maxRunTime": 60,
                   "mounts": [
                       {"directory": "cache", "cacheName": "it-cache"},
                       {"file": "in/raw.txt", "content": {"raw": "raw-content\n"}},
                       {"file": "in/dep.txt", "content": {"taskId": source, "artifact": "public/dep.txt"}},
                       {"file": "in/b64.txt", "content": {"base64": "YjY0LWNvbnRlbnQK"}}
                   ]}),
            &[&source],
            &cache_scope,
        ),
    )
    .await
    .unwrap();
    let (s, log) = resolved_with_log(&server, &first).await;
    assert_eq!(s["state"], "completed", "{s}\n{log}");
    for line in ["raw-content\n", "from-dependency\n", "b64-content\n"] {
        assert!(log.contains(line), "{line:?} missing from {log}");
    }

    // the next task finds what the first left, then exits with a purging code
    let second = slugid::nice();
    q.createTask(
        &second,
        &with(
            json!({"command": [["sh", "-c", "cat elsewhere/marker; exit 3"]], "maxRunTime": 60,
                   "mounts": [{"directory": "elsewhere", "cacheName": "it-cache"}],
                   "onExitStatus": {"purgeCaches": [3]}}),
            &[],
            &cache_scope,
        ),
    )
    .await
    .unwrap();
    let s = resolved(&server, &second).await;
    assert_eq!(s["state"], "failed", "{s}");
    let log = server
        .artifact_text(&second, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("kept\n"), "the cache came back: {log}");
    assert!(log.contains("Purging cache"), "{log}");

    let third = slugid::nice();
    q.createTask(
        &third,
        &with(
            json!({"command": [["sh", "-c", "test ! -e c/marker && echo purged-cache-is-empty"]],
                   "maxRunTime": 60,
                   "mounts": [{"directory": "c", "cacheName": "it-cache"}]}),
            &[],
            &cache_scope,
        ),
    )
    .await
    .unwrap();
    let s = resolved(&server, &third).await;
    assert_eq!(s["state"], "completed", "{s}");

    // a purge-cache request: the next task of the pool finds the cache empty
    let fourth = slugid::nice();
    q.createTask(
        &fourth,
        &with(
            json!({"command": [["sh", "-c", "echo kept-again > c/marker"]], "maxRunTime": 60,
                   "mounts": [{"directory": "c", "cacheName": "it-cache"}]}),
            &[],
            &cache_scope,
        ),
    )
    .await
    .unwrap();
    assert_eq!(resolved(&server, &fourth).await["state"], "completed");
    taskcluster::PurgeCache::new(
        taskcluster::ClientBuilder::new(&server.root_url).credentials(
            taskcluster::Credentials::new("static/taskcluster/root", ROOT_TOKEN),
        ),
    )
    .unwrap()
    .purgeCache(&queue, &json!({"cacheName": "it-cache"}))
    .await
    .unwrap();
    let fifth = slugid::nice();
    q.createTask(
        &fifth,
        &with(
            json!({"command": [["sh", "-c", "test ! -e c/marker"]], "maxRunTime": 60,
                   "mounts": [{"directory": "c", "cacheName": "it-cache"}]}),
            &[],
            &cache_scope,
        ),
    )
    .await
    .unwrap();
    let (s, log) = resolved_with_log(&server, &fifth).await;
    assert_eq!(s["state"], "completed", "{s}\n{log}");
    assert!(log.contains("as purge-cache asked"), "{log}");

    // no scope for the cache: malformed-payload, and nothing ran
    let unscoped = slugid::nice();
    q.createTask(
        &unscoped,
        &with(
            json!({"command": [["sh", "-c", "echo should-not-run"]], "maxRunTime": 60,
                   "mounts": [{"directory": "c", "cacheName": "it-cache"}]}),
            &[],
            &[],
        ),
    )
    .await
    .unwrap();
    let s = resolved(&server, &unscoped).await;
    assert_eq!(s["state"], "exception", "{s}");
    assert_eq!(s["runs"][0]["reasonResolved"], "malformed-payload", "{s}");
    let log = server
        .artifact_text(&unscoped, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("generic-worker:cache:it-cache"), "{log}");
    assert!(!log.contains("should-not-run\n"), "{log}");

    // the dependency's artifact pinned to other bytes: the task fails before its commands
    let pinned = slugid::nice();
    q.createTask(
        &pinned,
        &with(
            json!({"command": [["sh", "-c", "echo should-not-run"]], "maxRunTime": 60,
                   "mounts": [{"file": "x", "content": {"taskId": source, "artifact": "public/dep.txt",
                                                        "sha256": "0".repeat(64)}}]}),
            &[&source],
            &[],
        ),
    )
    .await
    .unwrap();
    let s = resolved(&server, &pinned).await;
    assert_eq!(s["state"], "failed", "{s}");
    let log = server
        .artifact_text(&pinned, 0, "public/logs/live_backing.log")
        .await;
    assert!(log.contains("not the"), "{log}");
    assert!(!log.contains("should-not-run\n"), "{log}");
}
