//! End-to-end tests: the real binary, driven by the official `taskcluster` crate.

// tests pick out the JSON values, AMQP fields and events they look for
#![allow(clippy::wildcard_enum_match_arm)]

mod audit;
mod auth;
mod cluster;
#[cfg(feature = "failpoints")]
mod crash;
mod github;
mod harness;
mod hooks;
mod index;
mod kafka_log;
mod layout;
mod notify;
mod object;
mod pulse;
mod purge_cache;
mod random_requests;
mod secrets;
mod worker;
mod worker_manager;

use harness::*;

/// Every queue scenario runs on both logs: `embedded::<name>` and `kafka::<name>`.
macro_rules! on_both_logs {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Embedded).await
            })*
        }
        mod kafka {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Kafka).await
            })*
        }
    };
}

on_both_logs!(
    whole_task_life_with_task_credentials,
    create_task_is_idempotent_and_conflicts_on_change,
    dependencies_schedule_when_satisfied,
    claim_work_serves_higher_priority_first_and_long_polls,
    rerun_retry_and_cancel,
    claims_expire_and_retry,
    deadline_exceeded_resolves_the_task,
    builtin_workers_resolve_their_tasks,
    error_statuses_and_bodies,
    task_groups_seal_and_cancel,
    restart_keeps_acknowledged_tasks_and_claims_still_expire,
    declare_worker_creates_and_extends_but_never_shortens,
    an_event_too_large_for_the_log_is_refused_alone,
);

use serde_json::{json, Value};
use std::time::Duration;
use taskcluster::Credentials;

/// listPendingTasks and listClaimedTasks: a queue's runs in claim order, each with its task,
/// paged by key; a claim moves a run from the one to the other.
#[tokio::test]
async fn pending_and_claimed_listings() {
    let server = Server::start(&[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let ids = create_tasks(&q, &queue, 3).await;
    // one page at a time, oldest first, each with its task and when it became pending
    let (q_ref, queue_ref) = (&q, &queue);
    let pages = all_pages(|t| async move {
        q_ref
            .listPendingTasks(queue_ref, t.as_deref(), Some("2"))
            .await
    })
    .await;
    let mut seen = Vec::new();
    let mut inserted = Vec::new();
    for page in &pages {
        for t in page["tasks"].as_array().unwrap() {
            assert_eq!(t["runId"], 0, "{t}");
            assert_eq!(t["task"]["taskQueueId"], queue.as_str(), "{t}");
            inserted.push(t["inserted"].as_str().unwrap().to_string());
            seen.push(t["taskId"].as_str().unwrap().to_string());
        }
    }
    // tasks created in the same millisecond may list in either order
    assert!(inserted.windows(2).all(|w| w[0] <= w[1]), "{inserted:?}");
    seen.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(seen, all);
    let claim = q.claimWork(&queue, &worker_body(2)).await.unwrap();
    assert_eq!(claim["tasks"].as_array().unwrap().len(), 2, "{claim}");
    let pending = q.listPendingTasks(&queue, None, None).await.unwrap();
    let pending: Vec<&str> = pending["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let first = q.listClaimedTasks(&queue, None, Some("1")).await.unwrap();
    let token = first["continuationToken"].as_str().expect("a second page");
    let second = q
        .listClaimedTasks(&queue, Some(token), Some("1"))
        .await
        .unwrap();
    let mut claimed = Vec::new();
    for page in [&first, &second] {
        let tasks = page["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1, "{page}");
        let t = &tasks[0];
        assert_eq!(t["workerGroup"], "it-group", "{t}");
        assert_eq!(t["workerId"], "it-worker", "{t}");
        assert_eq!(t["task"]["taskQueueId"], queue.as_str(), "{t}");
        assert!(t["claimed"].as_str().unwrap().ends_with('Z'), "{t}");
        claimed.push(t["taskId"].as_str().unwrap().to_string());
    }
    // claimed and still pending, together, are the three tasks
    claimed.push(pending[0].to_string());
    claimed.sort();
    assert_eq!(claimed, all);
    // the tester client holds neither list's scope
    let tester = server.queue_as(Credentials::new("tester", "no-secret"));
    let err = tester
        .listClaimedTasks(&queue, None, None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403));
}

async fn whole_task_life_with_task_credentials(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let task_id = slugid::nice();
    let created = q
        .createTask(&task_id, &task_def(&queue, 600))
        .await
        .unwrap();
    assert_eq!(created["status"]["state"], "pending");
    assert_eq!(created["status"]["runs"][0]["reasonCreated"], "scheduled");

    let task = q.task(&task_id).await.unwrap();
    assert_eq!(task["taskQueueId"], queue.as_str());
    assert_eq!(task["retries"], 5);
    assert_eq!(task["priority"], "lowest");

    // claim bodies the schema refuses claim nothing: every error is listed
    let mut extra = worker_body(1);
    extra["x"] = json!(1);
    extra["tasks"] = json!(33);
    extra["workerId"] = json!("no spaces");
    let err = q.claimWork(&queue, &extra).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400), "{err:#}");
    let text = format!("{err:#}");
    for says in [
        "additional properties: \"x\"",
        "data.tasks should be <= 32",
        "data.workerId should match pattern",
    ] {
        assert!(text.contains(says), "{says}: {text}");
    }
    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    let item = &claim["tasks"][0];
    assert_eq!(item["status"]["taskId"], task_id.as_str());
    assert_eq!(item["runId"], 0);
    assert_eq!(item["task"]["payload"]["command"][1], "hello");
    let creds = &item["credentials"];
    let client_id = creds["clientId"].as_str().unwrap();
    assert!(client_id.starts_with(&format!(
        "task-client/{task_id}/0/on/it-group/it-worker/until/"
    )));

    // the worker acts with the task credentials from now on
    let worker = server.queue_as(Credentials::new_with_certificate(
        client_id,
        creds["accessToken"].as_str().unwrap(),
        creds["certificate"].as_str().unwrap(),
    ));
    let reclaimed = worker.reclaimTask(&task_id, "0").await.unwrap();
    assert!(reclaimed["takenUntil"].as_str().unwrap() >= item["takenUntil"].as_str().unwrap());

    let expires = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let art = worker
        .createArtifact(
            &task_id,
            "0",
            "public/logs/live.log",
            &json!({ "storageType": "s3", "contentType": "text/plain", "expires": expires }),
        )
        .await
        .unwrap();
    let put_url = art["putUrl"].as_str().unwrap();
    let http = reqwest::Client::new();
    let put = http
        .put(put_url)
        .header("content-type", "text/plain")
        .body("hello from the task")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    // created again with a length: the same artifact (upstream compares bucket and prefix)
    let again = json!({ "storageType": "s3", "contentType": "text/plain", "expires": expires,
                        "contentLength": 19 });
    worker
        .createArtifact(&task_id, "0", "public/logs/live.log", &again)
        .await
        .unwrap();
    // what the request schema refuses: 400, and nothing is created
    let bad_requests = [
        json!({ "storageType": "s3", "contentType": "text/plain", "expires": expires,
                "contentLength": -1 }),
        json!({ "storageType": "reference", "contentType": "text/plain", "expires": expires,
                "url": "not a url" }),
        json!({ "storageType": "error", "reason": "file-missing-on-worker", "expires": expires,
                "message": "x".repeat(4097) }),
    ];
    for bad in &bad_requests {
        let refused = worker
            .createArtifact(&task_id, "0", "public/refused", bad)
            .await
            .unwrap_err();
        assert_eq!(status_of(&refused), Some(400), "{refused:#}");
    }
    // a name or a content type Taskcluster refuses: 400, and nothing is created
    let s3 = |content_type: &str| json!({ "storageType": "s3", "contentType": content_type, "expires": expires });
    let bad_name = worker
        .createArtifact(&task_id, "0", "public/a\nb", &s3("text/plain"))
        .await
        .unwrap_err();
    assert_eq!(status_of(&bad_name), Some(400), "{bad_name:#}");
    let long_type = format!("text/{}", "x".repeat(300));
    for content_type in [long_type.as_str(), "text/plain\r\nx-evil: 1"] {
        let bad_type = worker
            .createArtifact(&task_id, "0", "public/typed", &s3(content_type))
            .await
            .unwrap_err();
        assert_eq!(status_of(&bad_type), Some(400), "{bad_type:#}");
    }
    // an upload with a Content-Encoding (generic-worker gzips its logs) is served with it,
    // as S3 keeps it
    let gz = worker
        .createArtifact(
            &task_id,
            "0",
            "public/logs/live_backing.log",
            &json!({ "storageType": "s3", "contentType": "text/plain", "expires": expires }),
        )
        .await
        .unwrap();
    let gzipped: &[u8] = b"\x1f\x8b\x08\x00 pretend gzip";
    let put = http
        .put(gz["putUrl"].as_str().unwrap())
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(gzipped)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let content = q
        .artifact(&task_id, "0", "public/logs/live_backing.log")
        .await
        .unwrap();
    // (a client that leaves the encoding alone: the workspace's reqwest decodes gzip)
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let got = raw
        .get(content["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["content-encoding"], "gzip");
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(&got.bytes().await.unwrap()[..], gzipped);
    // the task credentials cannot touch another task's run
    let other = slugid::nice();
    let denied = worker.reportCompleted(&other, "0").await.unwrap_err();
    assert_eq!(status_of(&denied), Some(403));

    let done = worker.reportCompleted(&task_id, "0").await.unwrap();
    assert_eq!(done["status"]["state"], "completed");
    assert_eq!(done["status"]["runs"][0]["reasonResolved"], "completed");

    // read the artifact back through the queue's signed URL
    let content = q
        .artifact(&task_id, "0", "public/logs/live.log")
        .await
        .unwrap();
    let url = content["url"].as_str().unwrap();
    let got = http.get(url).send().await.unwrap();
    // the bytes as a storage service sends them: no encoding was given, and not the API's CSP
    // (which forbids every subresource) but a sandbox, as they come from the API's origin
    assert!(got.headers().get("content-encoding").is_none());
    assert_eq!(got.headers()["content-security-policy"], "sandbox");
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert_eq!(got.headers()["access-control-allow-origin"], "*");
    assert_eq!(got.text().await.unwrap(), "hello from the task");
    // a byte range, as S3 serves one: 206 and those bytes; past the end, 416
    let part = http
        .get(url)
        .header("range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 0-4/19");
    assert_eq!(part.text().await.unwrap(), "hello");
    let beyond = http
        .get(url)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status().as_u16(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */19");
    let listed = q.listArtifacts(&task_id, "0", None, None).await.unwrap();
    let names: Vec<&str> = listed["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["public/logs/live.log", "public/logs/live_backing.log"],
        "{listed}"
    );
    // a tampered signature is refused
    let bad = http.get(format!("{url}x")).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 403);
}

/// A task definition of 1.1 MB (the API takes bodies up to 10 MB): the embedded log records
/// it; a Kafka log takes records of about 1 MB, so there createTask answers 413 InputTooLarge
/// for that task alone, and a task created beside it, and one after it, are written as usual.
async fn an_event_too_large_for_the_log_is_refused_alone(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let mut big = task_def(&queue, 600);
    big["payload"] = json!({ "blob": "x".repeat(1_100_000) });
    let (big_id, beside_id) = (slugid::nice(), slugid::nice());
    let path = format!("/api/queue/v1/task/{big_id}");
    let beside_def = task_def(&queue, 600);
    let ((status, body), beside) = tokio::join!(
        server.root_call("PUT", &path, &big),
        q.createTask(&beside_id, &beside_def)
    );
    beside.expect("the task created beside it");
    match backend {
        Backend::Embedded => {
            assert_eq!(status, 200, "{}", body["message"]);
            q.status(&big_id).await.expect("the large task");
        }
        Backend::Kafka => {
            assert_eq!(status, 413, "{}", body["message"]);
            assert_eq!(body["code"], "InputTooLarge");
            let err = q.status(&big_id).await.unwrap_err();
            assert_eq!(status_of(&err), Some(404), "nothing of it was recorded");
        }
    }
    let after = slugid::nice();
    q.createTask(&after, &task_def(&queue, 600))
        .await
        .expect("the writer still writes");
    q.status(&beside_id).await.expect("the task beside it");

    // the same in a service that writes one command at a time: a role of 1.2 MB of scopes
    let scopes: Vec<String> = (0..30_000)
        .map(|i| format!("it:large-role:{i:08}:padding-padding"))
        .collect();
    let role = json!({ "description": "large", "scopes": scopes });
    let (status, body) = server
        .root_call("PUT", "/api/auth/v1/roles/it-large", &role)
        .await;
    let expected = if backend == Backend::Kafka { 413 } else { 200 };
    assert_eq!(status, expected, "{}", body["message"]);
    let small = json!({ "description": "small", "scopes": ["it:small"] });
    let (status, body) = server
        .root_call("PUT", "/api/auth/v1/roles/it-small", &small)
        .await;
    assert_eq!(status, 200, "{}", body["message"]);
}

async fn create_task_is_idempotent_and_conflicts_on_change(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let task_id = slugid::nice();
    let def = task_def(&queue, 600);
    q.createTask(&task_id, &def).await.unwrap();
    let again = q.createTask(&task_id, &def).await.unwrap();
    assert_eq!(again["status"]["runs"].as_array().unwrap().len(), 1);
    let mut changed = def.clone();
    changed["retries"] = json!(1);
    let err = q.createTask(&task_id, &changed).await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
    assert!(format!("{err:#}").contains("already used by another task"));

    // the old default priority, `normal`, is taken and kept as `lowest`; a payload's `2.0`
    // is JavaScript's `2`, so a repeat that writes it `2` is the same task
    let upstream = slugid::nice();
    let mut def = task_def(&queue, 600);
    def["priority"] = json!("normal");
    def["payload"]["maxRunTime"] = serde_json::from_str("2.0").unwrap();
    q.createTask(&upstream, &def).await.unwrap();
    let task = q.task(&upstream).await.unwrap();
    assert_eq!(task["priority"], "lowest");
    assert_eq!(task["payload"]["maxRunTime"].to_string(), "2");
    def["payload"]["maxRunTime"] = json!(2);
    q.createTask(&upstream, &def).await.unwrap();
}

async fn dependencies_schedule_when_satisfied(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let (a, b) = (slugid::nice(), slugid::nice());
    q.createTask(&a, &task_def(&queue, 600)).await.unwrap();
    let mut def_b = task_def(&queue, 600);
    def_b["dependencies"] = json!([a]);
    let created = q.createTask(&b, &def_b).await.unwrap();
    assert_eq!(created["status"]["state"], "unscheduled");
    let dependents = q.listDependentTasks(&a, None, None).await.unwrap();
    assert_eq!(dependents["tasks"][0]["status"]["taskId"], b.as_str());

    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    assert_eq!(claim["tasks"][0]["status"]["taskId"], a.as_str());
    q.reportCompleted(&a, "0").await.unwrap();
    eventually(Duration::from_secs(30), || async {
        (state_of(&q, &b).await["state"] == "pending").then_some(())
    })
    .await;

    // scheduleTask makes an unscheduled task pending whatever its dependencies
    let d = slugid::nice();
    let mut def_d = task_def(&queue, 600);
    def_d["dependencies"] = json!([b]);
    let created = q.createTask(&d, &def_d).await.unwrap();
    assert_eq!(created["status"]["state"], "unscheduled");
    let scheduled = q.scheduleTask(&d).await.unwrap();
    assert_eq!(scheduled["status"]["state"], "pending", "{scheduled}");
    assert_eq!(scheduled["status"]["runs"][0]["reasonCreated"], "scheduled");
    // and again changes nothing
    assert_eq!(q.scheduleTask(&d).await.unwrap(), scheduled);

    // a missing dependency is an input error
    let mut def_c = task_def(&queue, 600);
    def_c["dependencies"] = json!([slugid::nice()]);
    let err = q.createTask(&slugid::nice(), &def_c).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400));
}

async fn claim_work_serves_higher_priority_first_and_long_polls(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let (low, high) = (slugid::nice(), slugid::nice());
    q.createTask(&low, &task_def(&queue, 600)).await.unwrap();
    let mut def = task_def(&queue, 600);
    def["priority"] = json!("high");
    q.createTask(&high, &def).await.unwrap();
    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    assert_eq!(claim["tasks"][0]["status"]["taskId"], high.as_str());
    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    assert_eq!(claim["tasks"][0]["status"]["taskId"], low.as_str());

    // an empty queue holds the poll until a task arrives
    let waiting = {
        let q = server.queue();
        let queue = queue.clone();
        tokio::spawn(async move { q.claimWork(&queue, &worker_body(1)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "claimWork must wait while the queue is empty"
    );
    let late = slugid::nice();
    q.createTask(&late, &task_def(&queue, 600)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("woken by the new task")
        .unwrap();
    assert_eq!(got["tasks"][0]["status"]["taskId"], late.as_str());
}

async fn rerun_retry_and_cancel(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let t = slugid::nice();
    q.createTask(&t, &task_def(&queue, 600)).await.unwrap();
    q.claimWork(&queue, &worker_body(1)).await.unwrap();
    // the request schema has no other property and requires `reason`: 400, run untouched
    for body in [
        json!({ "reason": "worker-shutdown", "extra": 1 }),
        json!({}),
    ] {
        let err = q.reportException(&t, "0", &body).await.unwrap_err();
        assert_eq!(status_of(&err), Some(400), "{body}");
    }
    let err = q
        .changeTaskPriority(&t, &json!({ "newPriority": "low", "extra": 1 }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    let running = q.status(&t).await.unwrap();
    assert_eq!(
        running["status"]["runs"][0]["state"], "running",
        "{running}"
    );
    assert_eq!(q.task(&t).await.unwrap()["priority"], "lowest");
    // the task's one priority moves, in its definition too, as upstream's one row does
    q.changeTaskPriority(&t, &json!({ "newPriority": "high" }))
        .await
        .unwrap();
    assert_eq!(q.task(&t).await.unwrap()["priority"], "high");
    let s = q
        .reportException(&t, "0", &json!({ "reason": "worker-shutdown" }))
        .await
        .unwrap();
    assert_eq!(s["status"]["runs"][0]["reasonResolved"], "worker-shutdown");
    assert_eq!(s["status"]["runs"][1]["state"], "pending");
    assert_eq!(s["status"]["runs"][1]["reasonCreated"], "retry");
    assert_eq!(s["status"]["retriesLeft"], 4);

    q.claimWork(&queue, &worker_body(1)).await.unwrap();
    let failed = q.reportFailed(&t, "1").await.unwrap();
    assert_eq!(failed["status"]["state"], "failed");
    // a runId is any digits, read as parseInt reads them: "01" is run 1 (a repeated report),
    // and a number past any run is a missing run
    let again = q.reportFailed(&t, "01").await.unwrap();
    assert_eq!(again["status"]["runs"][1]["state"], "failed");
    let err = q.reportFailed(&t, "4294967296").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    let rerun = q.rerunTask(&t).await.unwrap();
    assert_eq!(rerun["status"]["runs"][2]["reasonCreated"], "rerun");
    assert_eq!(rerun["status"]["state"], "pending");
    // with a later run, repeating an earlier run's report conflicts (as Taskcluster's does)
    let err = q.reportFailed(&t, "1").await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
    let err = q
        .reportException(&t, "0", &json!({ "reason": "worker-shutdown" }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(409));

    let canceled = q.cancelTask(&t).await.unwrap();
    assert_eq!(canceled["status"]["state"], "exception");
    assert_eq!(canceled["status"]["runs"][2]["reasonResolved"], "canceled");
    // resolving a canceled run conflicts
    let err = q.reportCompleted(&t, "2").await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
}

/// reportException through the official client: only worker-shutdown and intermittent-task
/// retry (the latter as `task-retry`), and only while retries are left; the other reasons
/// resolve the task; a repeated report of the same reason is idempotent, another reason
/// conflicts, and `superseded` (in the status enum, never reported) is refused
/// (queue.md §4.3, §6.1).
#[tokio::test]
async fn report_exception_retries_only_what_may_be_retried() {
    let server = Server::start(&[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let with_retries = |retries: u32| {
        let mut def = task_def(&queue, 600);
        def["retries"] = json!(retries);
        def
    };
    let flaky = slugid::nice();
    let broken = slugid::nice();
    q.createTask(&flaky, &with_retries(1)).await.unwrap();
    q.createTask(&broken, &with_retries(3)).await.unwrap();
    let claimed = q.claimWork(&queue, &worker_body(2)).await.unwrap();
    assert_eq!(claimed["tasks"].as_array().unwrap().len(), 2);

    let retried = q
        .reportException(&flaky, "0", &json!({ "reason": "intermittent-task" }))
        .await
        .unwrap();
    let status = &retried["status"];
    assert_eq!(status["runs"][0]["state"], "exception");
    assert_eq!(status["runs"][0]["reasonResolved"], "intermittent-task");
    assert_eq!(status["runs"][1]["state"], "pending");
    assert_eq!(status["runs"][1]["reasonCreated"], "task-retry");
    assert_eq!(status["retriesLeft"], 0);
    assert_eq!(status["state"], "pending");

    let resolved = q
        .reportException(&broken, "0", &json!({ "reason": "malformed-payload" }))
        .await
        .unwrap();
    let status = resolved["status"].clone();
    assert_eq!(status["state"], "exception");
    assert_eq!(status["runs"].as_array().unwrap().len(), 1);
    assert_eq!(status["runs"][0]["reasonResolved"], "malformed-payload");
    assert_eq!(status["retriesLeft"], 3);
    // the same report again changes nothing; another reason conflicts
    let again = q
        .reportException(&broken, "0", &json!({ "reason": "malformed-payload" }))
        .await
        .unwrap();
    assert_eq!(again["status"], status);
    let err = q
        .reportException(&broken, "0", &json!({ "reason": "internal-error" }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(409));

    // the retry run fails intermittently too, with no retry left: the task is resolved
    let claimed = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    assert_eq!(claimed["tasks"][0]["runId"], 1);
    let (code, body) = server
        .root_call(
            "POST",
            &format!("/api/queue/v1/task/{flaky}/runs/1/exception"),
            &json!({ "reason": "superseded" }),
        )
        .await;
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("InputValidationError"))
    );
    let last = q
        .reportException(&flaky, "1", &json!({ "reason": "intermittent-task" }))
        .await
        .unwrap();
    assert_eq!(last["status"]["state"], "exception");
    assert_eq!(last["status"]["runs"].as_array().unwrap().len(), 2);
    assert_eq!(last["status"]["retriesLeft"], 0);
}

/// changeTaskGroupPriority through the official client: every never-resolved task of the
/// group whose priority differs moves, resolved ones and ones already there do not, and the
/// answer names exactly the moved ones (queue.md §7). listDependentTasks pages through a
/// task's dependents with `limit` and `continuationToken`.
#[tokio::test]
async fn group_priority_changes_and_dependents_page() {
    let server = Server::start(&[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let group = slugid::nice();
    let in_group = |priority: &str, deps: &[&String]| {
        let mut def = task_def(&queue, 600);
        def["taskGroupId"] = json!(group);
        def["priority"] = json!(priority);
        def["dependencies"] = json!(deps);
        def
    };
    let root = slugid::nice();
    q.createTask(&root, &in_group("low", &[])).await.unwrap();
    // ids whose text order is not their bytes' order ('-' < '0' < 'A' < '_' < 'z' as text,
    // but A, z, 0, -, _ as slugid digits), in their first character and within one first
    // character: upstream lists by the text
    let dependents: Vec<String> = [('A', 'z'), ('A', '_'), ('A', '0'), ('-', 'A'), ('0', 'z')]
        .iter()
        .map(|(first, second)| {
            let mut id: Vec<char> = slugid::nice().chars().collect();
            (id[0], id[1]) = (*first, *second);
            id.into_iter().collect()
        })
        .collect();
    for d in &dependents {
        q.createTask(d, &in_group("low", &[&root])).await.unwrap();
    }
    let already_high = slugid::nice();
    q.createTask(&already_high, &in_group("high", &[]))
        .await
        .unwrap();
    let done = slugid::nice();
    q.createTask(&done, &in_group("low", &[])).await.unwrap();
    q.cancelTask(&done).await.unwrap();

    // dependents, two at a time
    let (q_ref, root_ref) = (&q, &root);
    let pages = all_pages(|t| async move {
        q_ref
            .listDependentTasks(root_ref, t.as_deref(), Some("2"))
            .await
    })
    .await;
    let mut seen = Vec::new();
    for page in &pages {
        assert_eq!(page["taskId"], root.as_str());
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 2, "{page}");
        for t in tasks {
            assert_eq!(t["task"]["taskGroupId"], group.as_str());
            seen.push(t["status"]["taskId"].as_str().unwrap().to_string());
        }
    }
    let mut expected = dependents.clone();
    expected.sort();
    assert_eq!(seen, expected, "in taskId order across the pages");

    let changed = q
        .changeTaskGroupPriority(&group, &json!({ "newPriority": "high" }))
        .await
        .unwrap();
    assert_eq!(changed["taskGroupId"], group.as_str());
    assert_eq!(changed["newPriority"], "high");
    let mut moved: Vec<String> = changed["taskIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    moved.sort();
    let mut expected: Vec<String> = dependents.iter().chain([&root]).cloned().collect();
    expected.sort();
    assert_eq!(moved, expected, "{changed}");
    assert_eq!(changed["tasksAffected"], 6);
    for t in &expected {
        assert_eq!(state_of(&q, t).await["priority"], "high");
    }
    assert_eq!(state_of(&q, &done).await["priority"], "low");
    // a second change to the same priority moves nothing
    let again = q
        .changeTaskGroupPriority(&group, &json!({ "newPriority": "high" }))
        .await
        .unwrap();
    assert_eq!(again["tasksAffected"], 0, "{again}");
}

async fn claims_expire_and_retry(backend: Backend) {
    let server = Server::start_on(backend, &[("TASKLEDGER_CLAIM_TIMEOUT_SECS", "1")]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let t = slugid::nice();
    q.createTask(&t, &task_def(&queue, 600)).await.unwrap();
    q.claimWork(&queue, &worker_body(1)).await.unwrap();
    let status = eventually(Duration::from_secs(30), || async {
        let s = state_of(&q, &t).await;
        (s["runs"].as_array().unwrap().len() == 2).then_some(s)
    })
    .await;
    assert_eq!(status["runs"][0]["state"], "exception");
    assert_eq!(status["runs"][0]["reasonResolved"], "claim-expired");
    assert_eq!(status["runs"][1]["state"], "pending");
    assert_eq!(status["runs"][1]["reasonCreated"], "retry");
}

async fn deadline_exceeded_resolves_the_task(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let t = slugid::nice();
    q.createTask(&t, &task_def(&queue, 1)).await.unwrap();
    let status = eventually(Duration::from_secs(30), || async {
        let s = state_of(&q, &t).await;
        (s["state"] == "exception").then_some(s)
    })
    .await;
    assert_eq!(status["runs"][0]["reasonResolved"], "deadline-exceeded");
    let err = q.rerunTask(&t).await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
}

async fn builtin_workers_resolve_their_tasks(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let (ok_task, fail_task) = (slugid::nice(), slugid::nice());
    q.createTask(&ok_task, &task_def("built-in/succeed", 600))
        .await
        .unwrap();
    q.createTask(&fail_task, &task_def("built-in/fail", 600))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), || async {
        let a = state_of(&q, &ok_task).await;
        let b = state_of(&q, &fail_task).await;
        (a["state"] == "completed" && b["state"] == "failed").then_some(())
    })
    .await;
}

/// Error bodies in Taskcluster's shape, over raw HTTP so status and body are both visible.
async fn error_statuses_and_bodies(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let http = reqwest::Client::new();
    let base = format!("{}/api/queue/v1", server.root_url);

    // 404: unknown task, in the standard shape
    let r = http
        .get(format!("{base}/task/{}", slugid::nice()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        403,
        "anonymous callers hold no queue:get-task scope"
    );
    let err = q.task(&slugid::nice()).await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    // resolving a run of an unknown task: the command's own 404
    let unknown = slugid::nice();
    let err = q.reportCompleted(&unknown, "0").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    assert!(
        err.to_string().contains(&format!(
            "Task `{unknown}` not found. Are you sure it was created?"
        )),
        "{err}"
    );
    // each call words its 404 as upstream's does
    let err = q
        .reportException(&unknown, "0", &json!({ "reason": "worker-shutdown" }))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "Task `{unknown}` not found. Are you sure it exists?"
        )),
        "{err}"
    );
    let err = q.status(&unknown).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "`{unknown}` does not correspond to a task that exists."
        )),
        "{err}"
    );

    // 400: bad URL parameter and bad body
    let r = http
        .get(format!("{base}/task/not-a-slug/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let err = q.status("not-a-slug").await.unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    let mut def = task_def(&fresh_queue(), 600);
    def["unknownField"] = json!(1);
    let err = q.createTask(&slugid::nice(), &def).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    assert!(format!("{err:#}").contains("Schema Validation Failed"));
    // the error body echoes the call: method, URL parameters and the payload as sent
    let id = slugid::nice();
    let (status, body) = server
        .root_call("PUT", &format!("/api/queue/v1/task/{id}"), &def)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "InputValidationError");
    assert_eq!(body["requestInfo"]["method"], "createTask");
    assert_eq!(body["requestInfo"]["params"]["taskId"], id.as_str());
    assert_eq!(body["requestInfo"]["payload"], def);

    // 401: a wrong token; the body names the code and the header asks for Hawk
    let wrong = server.queue_as(Credentials::new(
        "static/taskcluster/root",
        "wrong-token-wrong-token-wrong",
    ));
    let err = wrong.status(&slugid::nice()).await.unwrap_err();
    assert_eq!(status_of(&err), Some(401));

    // 403: a client without the scopes
    let tester = server.queue_as(Credentials::new("tester", "no-secret"));
    let err = tester
        .createTask(&slugid::nice(), &task_def(&fresh_queue(), 600))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403));
    assert!(format!("{err:#}").contains("queue:create-task"));

    // the raw body shape
    let r = http
        .get(format!("{base}/task/{}/status", slugid::nice()))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InsufficientScopes");
    assert_eq!(body["requestInfo"]["method"], "status");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("* errorCode:  InsufficientScopes"));

    // unknown route
    let r = http
        .get(format!("{base}/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "error": "Not found" })
    );
    // a route asked with a method it does not take is unknown too: upstream has no 405
    let r = http.delete(format!("{base}/ping")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({ "error": "Not found" })
    );
    // but OPTIONS, a browser's CORS preflight, is answered: 200, the route's methods, and
    // the CORS headers
    let r = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/task/{}/status", slugid::nice()),
        )
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("Authorization"));
    // a trailing slash is optional on every route, as upstream's router has it
    for path in [
        format!("{base}/ping/"),
        format!("{base}/provisioners/"),
        format!("{base}/task-queues/"),
        format!(
            "{}/api/auth/v1/clients/static%2Ftaskcluster%2Froot/",
            server.root_url
        ),
    ] {
        let (status, body) = server
            .root_call("GET", &path[server.root_url.len()..], &json!({}))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // getTaskQueue's id is one segment, so a slash after it is the optional one too
    let (status, body) = server
        .root_call("GET", "/api/queue/v1/task-queues/none%2Fempty/", &json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ResourceNotFound")),
        "{body}"
    );

    // a body with hundreds of bad items: the message lists the first hundred
    let mut bad = task_def(&fresh_queue(), 600);
    bad["dependencies"] = json!(vec![1; 500]);
    let (status, body) = server
        .root_call(
            "PUT",
            &format!("/api/queue/v1/task/{}", slugid::nice()),
            &bad,
        )
        .await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
    assert_eq!(message.matches("\n  * ").count(), 101, "{message}");
    assert!(message.contains("  * ... and 400 more"), "{message}");

    // a body past the 10 MB limit: 413 in the standard shape, before authentication, and
    // nothing created
    let id = slugid::nice();
    let r = http
        .put(format!("{base}/task/{id}"))
        .header("content-type", "application/json")
        .body(vec![b' '; 10 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InputTooLarge");
    assert_eq!(body["requestInfo"]["payload"], json!({}));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("* errorCode:  InputTooLarge"));
    let err = q.task(&id).await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));

    // a long list of ids without the scopes: the 403's message shows the start of the
    // required expression, not one line per id
    let many: Vec<String> = (0..50_000).map(|_| slugid::nice()).collect();
    let r = http
        .post(format!("{base}/tasks"))
        .json(&json!({ "taskIds": many }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InsufficientScopes");
    let message = body["message"].as_str().unwrap();
    assert!(message.len() < 200_000, "{} bytes", message.len());
    assert!(message.contains(&format!("queue:get-task:{}", many[0])));
    assert!(message.contains("(cut: the expression is longer than"));

    // a continuation token past any list (the largest usize) is an empty last page
    let past = "MTg0NDY3NDQwNzM3MDk1NTE2MTU";
    let ids = json!({ "taskIds": [slugid::nice(), slugid::nice()] });
    let (status, body) = server
        .root_call(
            "POST",
            &format!("/api/queue/v1/tasks?limit=2&continuationToken={past}"),
            &ids,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "tasks": [] }));
    // and in a listing paged by position (of one task queue at least)
    let tq = fresh_queue();
    let (p, w) = tq.split_once('/').unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    q.declareWorker(p, w, "g", "w", &json!({ "expires": later.to_rfc3339() }))
        .await
        .unwrap();
    let (status, body) = server
        .root_call(
            "GET",
            &format!("/api/queue/v1/task-queues?limit=1&continuationToken={past}"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.get("continuationToken"), None, "{body}");
    // an empty token is no token: 400, as upstream's query pattern /./ answers
    for path in [
        "/api/queue/v1/task-queues?continuationToken=",
        "/api/queue/v1/task-queues/a%2Fb/pending?continuationToken=",
    ] {
        let (status, body) = server.root_call("GET", path, &json!({})).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "InvalidRequestArguments", "{body}");
    }

    // every id is checked, not only the current page's: 400 naming the bad ones (any string
    // is an id to upstream's schema, so only the number is bad)
    let (status, body) = server
        .root_call(
            "POST",
            "/api/queue/v1/tasks?limit=1",
            &json!({ "taskIds": [slugid::nice(), slugid::nice(), "not-a-slug", 7] }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "InputValidationError", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(!message.contains("data.taskIds[2]"), "{message}");
    assert!(
        message.contains("data.taskIds[3] should be string"),
        "{message}"
    );

    // a path that is not UTF-8 once decoded: Taskcluster's error body, not plain text
    let r = reqwest::get(format!(
        "{}/api/queue/v1/task/%FF%FE/status",
        server.root_url
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "InvalidRequestArguments", "{body}");

    // lengths are counted in characters, as JSON Schema counts them: 255 of `é` (510
    // bytes) is a name, 256 is not
    for (chars, status) in [(255, 200), (256, 400)] {
        let mut def = task_def(&fresh_queue(), 600);
        def["metadata"]["name"] = json!("é".repeat(chars));
        let (got, body) = server
            .root_call(
                "PUT",
                &format!("/api/queue/v1/task/{}", slugid::nice()),
                &def,
            )
            .await;
        assert_eq!(got, status, "{chars} characters: {body}");
    }

    // metadata.source must start as the pattern says and be a URI as well (upstream's
    // schema has both): a space, or the scp-like `git@host:path`, is not one; nothing is
    // created
    for (source, status) in [
        ("https://example.com/a%20b", 200),
        ("https://example.com/a b", 400),
        ("git@github.com:org/repo.git", 400),
    ] {
        let mut def = task_def(&fresh_queue(), 600);
        def["metadata"]["source"] = json!(source);
        let task_id = slugid::nice();
        let (got, body) = server
            .root_call("PUT", &format!("/api/queue/v1/task/{task_id}"), &def)
            .await;
        assert_eq!(got, status, "{source}: {body}");
        if status == 400 {
            assert_eq!(body["code"], "InputValidationError", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("data.metadata.source should match format \"uri\""),
                "{body}"
            );
            let missing = q.task(&task_id).await.unwrap_err();
            assert_eq!(status_of(&missing), Some(404));
        }
    }

    // the lists paged by key start again from the beginning on a token they cannot read or
    // one from another list, as upstream; the lists paged by position answer 400
    let pending_queue = fresh_queue();
    let pending_task = slugid::nice();
    q.createTask(&pending_task, &task_def(&pending_queue, 600))
        .await
        .unwrap();
    // a key of another queue's list (sorting after this one's), as a token of this one
    let other_list = base64::engine::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!("{pending_queue}~\u{0}zzzz"),
    );
    for token in ["!!not-base64!!", other_list.as_str()] {
        let (status, body) = server
            .root_call(
                "GET",
                &format!(
                    "/api/queue/v1/task-queues/{pending_queue}/pending?continuationToken={token}"
                ),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["tasks"][0]["taskId"], pending_task.as_str(), "{body}");
    }
    let (status, body) = server
        .root_call(
            "GET",
            "/api/queue/v1/task-queues?continuationToken=!!not-base64!!",
            &json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // a query-string key the endpoint does not declare: 400 before anything runs, so a
    // cancelTask with one leaves the task pending; `bewit` and declared keys pass
    let t = slugid::nice();
    q.createTask(&t, &task_def(&fresh_queue(), 600))
        .await
        .unwrap();
    let counts = format!("/api/queue/v1/task-queues/{}/counts?foo=1", fresh_queue());
    for (method, path, key, name) in [
        (
            "GET",
            format!("/api/queue/v1/task/{t}?foo=1"),
            "foo",
            "task",
        ),
        (
            "POST",
            format!("/api/queue/v1/task/{t}/cancel?force=true"),
            "force",
            "cancelTask",
        ),
        ("GET", counts, "foo", "taskQueueCounts"),
        (
            "GET",
            "/api/queue/v1/ping?verbose=1".to_string(),
            "verbose",
            "ping",
        ),
    ] {
        let (status, body) = server.root_call(method, &path, &json!({})).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "InvalidRequestArguments", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Query-string parameter: {key} is not supported!")),
            "{body}"
        );
        assert_eq!(body["requestInfo"]["method"], name, "{body}");
    }
    // a query string of very many bad keys gets a bounded message
    let many: Vec<String> = (0..150).map(|i| format!("k{i}=1")).collect();
    let (status, body) = server
        .root_call(
            "GET",
            &format!("/api/queue/v1/ping?{}", many.join("&")),
            &json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("... and 50 more"), "{message}");
    assert!(!message.contains("k149 "), "{message}");
    // every problem of a query string is listed, a line each, in the order the keys came
    let (status, body) = server
        .root_call(
            "GET",
            &format!(
                "/api/queue/v1/task-group/{}/list?limit=1&foo=1&limit=2&continuationToken=",
                slugid::nice()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    let lines: Vec<&str> = message.split("\n\n---").next().unwrap().lines().collect();
    assert_eq!(
        lines,
        [
            "Query-string parameter: limit must be a string!",
            "Query-string parameter: foo is not supported!",
            "Query-string parameter: continuationToken=\"\" does not match expression: /./",
        ],
        "{body}"
    );
    let status = q.status(&t).await.unwrap();
    assert_eq!(status["status"]["state"], "pending", "{status}");
    // refused credentials still answer 401 first, as upstream authenticates before it looks
    // at the query
    let r = reqwest::Client::new()
        .get(format!("{}/api/queue/v1/task/{t}?foo=1", server.root_url))
        .header(
            "authorization",
            r#"Hawk id="nobody", ts="1", nonce="n", mac="AAAA""#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // upstream checks the query after a scope check that the URL alone fills ("pre") and
    // after the URL parameters' patterns, but before the body's schema and the handler's own
    // scope checks (conventions.md, "Processing order")
    let tester = ("tester", "no-secret");
    let root = ("static/taskcluster/root", ROOT_TOKEN);
    let not_slug = "not-a-slug";
    let queue = fresh_queue();
    for (who, method, path, body, code, start) in [
        // pre scope, then query: 403
        (
            tester,
            "GET",
            format!("/api/queue/v1/task/{t}/status?foo=1"),
            json!({}),
            "InsufficientScopes",
            "",
        ),
        (
            tester,
            "POST",
            format!("/api/queue/v1/task/{t}/runs/0/completed?foo=1"),
            json!({}),
            "InsufficientScopes",
            "",
        ),
        // URL patterns, then query
        (
            root,
            "GET",
            format!("/api/queue/v1/task/{not_slug}?foo=1"),
            json!({}),
            "InvalidRequestArguments",
            "Invalid URL patterns",
        ),
        (
            root,
            "GET",
            format!("/api/queue/v1/task/{t}/runs/x/artifacts/a?foo=1"),
            json!({}),
            "InvalidRequestArguments",
            "Invalid URL patterns",
        ),
        // query, then the body's schema
        (
            root,
            "PUT",
            format!("/api/queue/v1/task/{}?foo=1", slugid::nice()),
            json!({"not": "a task"}),
            "InvalidRequestArguments",
            "Query-string parameter: foo",
        ),
        (
            root,
            "POST",
            format!("/api/queue/v1/claim-work/{queue}?foo=1"),
            json!({}),
            "InvalidRequestArguments",
            "Query-string parameter: foo",
        ),
        // query, then the handler's own scope check (claimTask's needs the task's queue)
        (
            tester,
            "POST",
            format!("/api/queue/v1/task/{t}/runs/0/claim?foo=1"),
            worker_body(0),
            "InvalidRequestArguments",
            "Query-string parameter: foo",
        ),
        // the same order in the auth service
        (
            tester,
            "GET",
            "/api/auth/v1/clients/someone?foo=1".to_string(),
            json!({}),
            "InsufficientScopes",
            "",
        ),
        (
            root,
            "GET",
            "/api/auth/v1/roles/?foo=1".to_string(),
            json!({}),
            "InvalidRequestArguments",
            "Query-string parameter: foo",
        ),
    ] {
        let (status, body) = server.call_as(who, method, &path, &body).await;
        assert_eq!(body["code"], code, "{method} {path}: {status} {body}");
        assert_eq!(
            status,
            if code == "InsufficientScopes" {
                403
            } else {
                400
            },
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().starts_with(start),
            "{body}"
        );
    }
    // the body is read first, before anything else is checked, but whether it was sent as
    // JSON is asked only with its schema, after credentials, URL parameters and the query
    // string (conventions.md, "Processing order")
    let nobody = ("nobody", "no-such-token");
    let json = Some("application/json");
    let text = Some("text/plain");
    let fresh_task = format!("/api/queue/v1/task/{}", slugid::nice());
    let report = format!("/api/queue/v1/task/{t}/runs/0/completed");
    let mut def = task_def(&fresh_queue(), 600);
    let def_text = def.to_string();
    for (who, method, path, content_type, body, status, code, start) in [
        // JSON that does not parse: refused before credentials, scopes and the query
        (
            nobody,
            "PUT",
            fresh_task.clone(),
            json,
            "{not json",
            400,
            "MalformedPayload",
            "Failed to parse JSON",
        ),
        (
            tester,
            "POST",
            "/api/auth/v1/scopes/expand?foo=1".to_string(),
            json,
            "[1,",
            400,
            "MalformedPayload",
            "Failed to parse JSON",
        ),
        (
            tester,
            "POST",
            report.clone(),
            json,
            "\"a string\"",
            400,
            "MalformedPayload",
            "Failed to parse JSON: Must be an object or array",
        ),
        // even on a route that reads no body
        (
            nobody,
            "GET",
            "/api/queue/v1/ping".to_string(),
            json,
            "{",
            400,
            "MalformedPayload",
            "Failed to parse JSON",
        ),
        // a body not sent as JSON: credentials and the query string come first
        (
            nobody,
            "PUT",
            fresh_task.clone(),
            text,
            def_text.as_str(),
            401,
            "AuthenticationFailed",
            "",
        ),
        (
            root,
            "PUT",
            format!("{fresh_task}?foo=1"),
            text,
            def_text.as_str(),
            400,
            "InvalidRequestArguments",
            "Query-string parameter: foo",
        ),
        (
            root,
            "POST",
            "/api/auth/v1/test-authenticate?foo=1".to_string(),
            None,
            "",
            400,
            "InvalidRequestArguments",
            "Query-string parameter: foo",
        ),
        (
            root,
            "PUT",
            fresh_task.clone(),
            text,
            def_text.as_str(),
            400,
            "MalformedPayload",
            "Payload must be JSON with content-type: application/json got content-type: text/plain",
        ),
        (
            root,
            "POST",
            "/api/auth/v1/scopes/expand".to_string(),
            None,
            "{}",
            400,
            "MalformedPayload",
            "Payload must be JSON with content-type: application/json got content-type: null",
        ),
        // an empty JSON body is `{}`, which the schema then refuses
        (
            root,
            "PUT",
            fresh_task.clone(),
            json,
            "",
            400,
            "InputValidationError",
            "",
        ),
    ] {
        let (got, reply) = server
            .call_raw(who, method, &path, content_type, body.as_bytes())
            .await;
        assert_eq!(
            (got, reply["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {content_type:?} {body:?}: {reply}"
        );
        assert!(
            reply["message"].as_str().unwrap().starts_with(start),
            "{reply}"
        );
    }
    // the body is echoed as upstream's parser left it: the text that did not parse, or the
    // value that is not an object
    for (sent, echoed) in [("{not json", json!("{not json")), ("42", json!(42))] {
        let (got, reply) = server
            .call_raw(root, "PUT", &fresh_task, json, sent.as_bytes())
            .await;
        assert_eq!(got, 400, "{reply}");
        assert_eq!(reply["requestInfo"]["payload"], echoed, "{reply}");
    }
    // a body that did not parse is not echoed where the call scrubs secrets from its body:
    // the scrub cannot reach into text
    let (got, reply) = server
        .call_raw(
            root,
            "POST",
            "/api/auth/v1/authenticate-hawk",
            json,
            b"{\"authorization\": \"Hawk id=x, mac=secret",
        )
        .await;
    assert_eq!(got, 400, "{reply}");
    assert_eq!(reply["requestInfo"]["payload"], json!({}), "{reply}");
    // none of them created the task; the same definition as JSON does
    let err = q
        .task(&fresh_task["/api/queue/v1/task/".len()..])
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    def["metadata"]["name"] = json!("sent as JSON");
    let (got, reply) = server.root_call("PUT", &fresh_task, &def).await;
    assert_eq!(got, 200, "{reply}");
    // a route that reads no body still refuses one said to be JSON that does not parse, and
    // changes nothing: cancelTask leaves the task pending
    for who in [root, nobody] {
        let (got, reply) = server
            .call_raw(
                who,
                "POST",
                &format!("/api/queue/v1/task/{t}/cancel"),
                json,
                b"{",
            )
            .await;
        assert_eq!(
            (got, reply["code"].as_str()),
            (400, Some("MalformedPayload")),
            "{reply}"
        );
        assert_eq!(reply["requestInfo"]["method"], "cancelTask", "{reply}");
    }
    let status = q.status(&t).await.unwrap();
    assert_eq!(status["status"]["state"], "pending", "{status}");
    // reportCompleted has no input schema: a body not sent as JSON is ignored
    let claimed_queue = fresh_queue();
    let claimed = slugid::nice();
    q.createTask(&claimed, &task_def(&claimed_queue, 600))
        .await
        .unwrap();
    let claim = q.claimWork(&claimed_queue, &worker_body(1)).await.unwrap();
    assert_eq!(claim["tasks"][0]["status"]["taskId"], claimed.as_str());
    let (got, reply) = server
        .call_raw(
            root,
            "POST",
            &format!("/api/queue/v1/task/{claimed}/runs/0/completed"),
            text,
            b"{not json",
        )
        .await;
    assert_eq!(got, 200, "{reply}");
    assert_eq!(reply["status"]["state"], "completed", "{reply}");

    let status = q.status(&t).await.unwrap();
    assert_eq!(status["status"]["state"], "pending", "{status}");
    let (status, body) = server
        .root_call("GET", "/api/queue/v1/task-queues?limit=1", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .root_call(
            "GET",
            "/api/auth/v1/aws/s3/read-only/no-such-bucket/prefix?format=iam-role-compat",
            &json!({}),
        )
        .await;
    assert_ne!(body["code"], "InvalidRequestArguments", "{status}: {body}");

    // 409 on a conflicting report was covered elsewhere; here a reclaim of a pending run
    let t = slugid::nice();
    q.createTask(&t, &task_def(&fresh_queue(), 600))
        .await
        .unwrap();
    let err = q.reclaimTask(&t, "0").await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
}

async fn task_groups_seal_and_cancel(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let group = slugid::nice();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let t = slugid::nice();
        let mut def = task_def(&queue, 600);
        def["taskGroupId"] = json!(group);
        q.createTask(&t, &def).await.unwrap();
        ids.push(t);
    }
    let listed = q.listTaskGroup(&group, None, None).await.unwrap();
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 3);
    let got = q.getTaskGroup(&group).await.unwrap();
    assert_eq!(got["taskGroupId"], group.as_str(), "{got}");
    assert_eq!(got["schedulerId"], "-", "{got}");
    assert!(got["expires"].is_string(), "{got}");
    assert!(got.get("sealed").is_none(), "{got}");
    let err = q.cancelTaskGroup(&group).await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
    // a repeat of a task's definition, as the queue hands it back, is the same task
    let repeat = q.task(&ids[0]).await.unwrap();
    q.createTask(&ids[0], &repeat).await.unwrap();
    let sealed = q.sealTaskGroup(&group).await.unwrap();
    assert!(sealed["sealed"].is_string());
    assert_eq!(q.getTaskGroup(&group).await.unwrap(), sealed);
    let mut def = task_def(&queue, 600);
    def["taskGroupId"] = json!(group);
    let err = q.createTask(&slugid::nice(), &def).await.unwrap_err();
    assert_eq!(status_of(&err), Some(409));
    // upstream checks the group before the task: even a repeat of a task in it is refused now
    let err = q.createTask(&ids[0], &repeat).await.unwrap_err();
    assert_eq!(status_of(&err), Some(409), "{err:#}");
    let canceled = q.cancelTaskGroup(&group).await.unwrap();
    assert_eq!(canceled["cancelledCount"], 3);
    for t in &ids {
        assert_eq!(state_of(&q, t).await["state"], "exception");
    }
}

async fn restart_keeps_acknowledged_tasks_and_claims_still_expire(backend: Backend) {
    // with flushes and compactions bounded, which changes nothing a client can see
    let mut server = Server::start_on(
        backend,
        &[
            ("TASKLEDGER_CLAIM_TIMEOUT_SECS", "2"),
            ("TASKLEDGER_BACKGROUND_WRITE_MB", "64"),
        ],
    )
    .await;
    let q = server.queue();
    let queue = fresh_queue();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let t = slugid::nice();
        q.createTask(&t, &task_def(&queue, 600)).await.unwrap();
        ids.push(t);
    }
    let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    let claimed = claim["tasks"][0]["status"]["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    server.restart().await;
    let q = server.queue();
    for t in &ids {
        let s = state_of(&q, t).await;
        assert_eq!(s["taskId"], t.as_str());
    }
    let status = eventually(Duration::from_secs(30), || async {
        let s = state_of(&q, &claimed).await;
        (s["runs"].as_array().unwrap().len() == 2).then_some(s)
    })
    .await;
    assert_eq!(status["runs"][0]["reasonResolved"], "claim-expired");
    let counts = q.taskQueueCounts(&queue).await.unwrap();
    assert_eq!(counts["pendingTasks"], 20);
    // the batch form, through the official client, under the key upstream's clients read
    let body = q
        .taskQueueCountsBatch(&json!({ "taskQueueIds": [queue, "none/empty"] }))
        .await
        .unwrap();
    let rows = body["taskQueueCounts"].as_array().expect("taskQueueCounts");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["taskQueueId"], queue.as_str());
    assert_eq!(rows[0]["provisionerId"], queue.split_once('/').unwrap().0);
    assert_eq!(rows[0]["workerType"], queue.split_once('/').unwrap().1);
    assert_eq!(rows[0]["pendingTasks"], 20);
    assert_eq!(rows[0]["claimedTasks"], 0);
    assert_eq!(rows[1]["pendingTasks"], 0);
    // its schema: distinct, well-formed ids, and no other key
    for (bad, says) in [
        (
            json!({ "taskQueueIds": [queue, queue] }),
            "items ## 1 and 0 are identical",
        ),
        (
            json!({ "taskQueueIds": ["no-slash"] }),
            "data.taskQueueIds[0] should match pattern",
        ),
        (
            json!({ "taskQueueIds": [7] }),
            "data.taskQueueIds[0] should be string",
        ),
        (
            json!({ "taskQueueIds": [], "x": 1 }),
            "additional properties",
        ),
        (json!({}), "required property 'taskQueueIds'"),
    ] {
        let (status, body) = server
            .root_call("POST", "/api/queue/v1/task-queues/counts", &bad)
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "InputValidationError", "{bad}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{bad}: {message}");
    }
}

async fn declare_worker_creates_and_extends_but_never_shortens(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let q = server.queue();
    let tq = fresh_queue();
    let (p, w) = tq.split_once('/').unwrap();
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let later = chrono::Utc::now() + chrono::Duration::days(2);
    let declared = q
        .declareWorker(p, w, "dg", "dw", &json!({ "expires": later.to_rfc3339() }))
        .await
        .unwrap();
    assert_eq!(declared["workerId"], "dw");
    assert_eq!(at(&declared["expires"]), later.timestamp_millis());
    // the worker and its task queue now exist
    let got = q.getWorker(p, w, "dg", "dw").await.unwrap();
    assert_eq!(at(&got["expires"]), later.timestamp_millis());
    q.getWorkerType(p, w).await.unwrap();
    // an earlier expiry does not shorten it
    let sooner = chrono::Utc::now() + chrono::Duration::hours(1);
    let again = q
        .declareWorker(p, w, "dg", "dw", &json!({ "expires": sooner.to_rfc3339() }))
        .await
        .unwrap();
    assert_eq!(at(&again["expires"]), later.timestamp_millis());
    // without an expiry a worker keeps its own (upstream's coalesce), not a day from now
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    let body = json!({ "expires": soon.to_rfc3339() });
    q.declareWorker(p, w, "dg", "soon", &body).await.unwrap();
    let kept = q
        .declareWorker(p, w, "dg", "soon", &json!({}))
        .await
        .unwrap();
    assert_eq!(at(&kept["expires"]), soon.timestamp_millis());
    // and a worker never seen, or one expired, gets a day
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    q.declareWorker(p, w, "dg", "expired", &json!({ "expires": past }))
        .await
        .unwrap();
    for worker in ["new", "expired"] {
        let got = q
            .declareWorker(p, w, "dg", worker, &json!({}))
            .await
            .unwrap();
        let in_a_day = (chrono::Utc::now() + chrono::Duration::days(1)).timestamp_millis();
        assert!(
            (in_a_day - 60_000..=in_a_day).contains(&at(&got["expires"])),
            "{got}"
        );
    }
    // as upstream's answers: `actions`, and a never-quarantined worker's quarantineUntil is a
    // date ten years before its first sighting, not null
    assert_eq!(kept["actions"], json!([]));
    let ten_years = chrono::Duration::days(3650).num_milliseconds();
    let before_first = at(&kept["firstClaim"]) - at(&kept["quarantineUntil"]);
    assert!(
        (ten_years..ten_years + 3 * 86_400_000).contains(&before_first),
        "{kept}"
    );
    assert_eq!(q.getWorkerType(p, w).await.unwrap()["actions"], json!([]));
    assert_eq!(q.getProvisioner(p).await.unwrap()["actions"], json!([]));
    // unknown properties are refused and change nothing
    let err = q
        .declareWorker(
            p,
            w,
            "dg",
            "other",
            &json!({ "expires": later.to_rfc3339(), "color": "red" }),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400));
    let err = q.getWorker(p, w, "dg", "other").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404));
    assert!(
        format!("{err:#}").contains("Worker with workerId `other`, workerGroup `dg`,worker-type"),
        "{err:#}"
    );
    // a quarantined worker outlives its own expiry, but not its task queue's (as upstream)
    let gone_queue = fresh_queue();
    let (gp, gw) = gone_queue.split_once('/').unwrap();
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    q.declareWorker(gp, gw, "dg", "gone", &json!({ "expires": past }))
        .await
        .unwrap();
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    q.quarantineWorker(gp, gw, "dg", "gone", &json!({ "quarantineUntil": until }))
        .await
        .unwrap();
    let err = q.getWorker(gp, gw, "dg", "gone").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err:#}");
    // one scope per property, for this very worker
    let narrow = server.queue_as(Credentials::new("tester", "no-secret"));
    let err = narrow
        .declareWorker(p, w, "dg", "dw", &json!({ "expires": later.to_rfc3339() }))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(403));
}

/// A sample that must be on /metrics.
fn sample(metrics: &str, name: &str) -> f64 {
    metric_sample(metrics, name).unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// `/metrics` times the queue writer and the HTTP API: every command the writer answers, and
/// every request, lands in one bucket of each latency histogram, and the buckets are
/// cumulative up to the count.
#[tokio::test]
async fn metrics_time_the_queue_writer() {
    let server = Server::start(&[]).await;
    let before = server.metrics().await;
    let q = server.queue();
    let queue = fresh_queue();
    for _ in 0..3 {
        q.createTask(&slugid::nice(), &task_def(&queue, 600))
            .await
            .unwrap();
    }
    let after = server.metrics().await;
    let grew = |name: &str| sample(&after, name) - sample(&before, name);
    // exactly our three commands: the built-in workers ask the writer for work only when
    // their own queues hold some, not whenever any task becomes pending
    for name in [
        "taskledger_queue_command_seconds_count",
        "taskledger_queue_wait_seconds_count",
        "taskledger_queue_resume_seconds_count",
        "taskledger_queue_batch_commands_sum",
    ] {
        assert_eq!(grew(name), 3.0, "{name}: {after}");
    }
    for (name, at_least) in [
        // the three createTask calls and the first /metrics
        ("taskledger_http_request_seconds_count", 4.0),
        ("taskledger_queue_append_seconds_count", 1.0),
    ] {
        assert!(grew(name) >= at_least, "{name}: {after}");
    }
    assert!(
        grew("taskledger_queue_command_seconds_sum") > 0.0,
        "{after}"
    );
    for name in [
        "taskledger_queue_command_seconds",
        "taskledger_queue_wait_seconds",
        "taskledger_queue_resume_seconds",
        "taskledger_queue_commit_seconds",
        "taskledger_queue_append_seconds",
        "taskledger_http_request_seconds",
    ] {
        let buckets: Vec<f64> = after
            .lines()
            .filter_map(|l| {
                l.strip_prefix(&format!("{name}_bucket{{le=\""))?
                    .split_once("\"} ")?
                    .1
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(buckets.len(), 19, "{after}");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{after}");
        assert_eq!(
            *buckets.last().unwrap(),
            sample(&after, &format!("{name}_count")),
            "{after}"
        );
    }
}

/// Every answer carries Taskcluster's response headers: the fixed set, the trace id the
/// request brought (or a new one), and a new request id; `/metrics` answers beside the API
/// and is timed with it.
#[tokio::test]
async fn every_answer_carries_taskclusters_headers() {
    let server = Server::start(&[]).await;
    let http = reqwest::Client::new();
    let get = |path: &str, trace: Option<&str>| {
        let mut request = http.get(format!("{}{path}", server.root_url));
        if let Some(trace) = trace {
            request = request.header("x-taskcluster-trace-id", trace);
        }
        request.send()
    };
    let is_uuid = |v: &str| uuid::Uuid::parse_str(v).is_ok_and(|u| u.hyphenated().to_string() == v);
    let mut request_ids = Vec::new();
    for (path, status, trace) in [
        ("/api/queue/v1/ping", 200, Some("my-trace")),
        ("/api/queue/v1/nothing-here", 404, None),
        (
            "/api/queue/v1/task/AAAAAAAAAAAAAAAAAAAAAA/status",
            403,
            None,
        ),
        ("/api/auth/v1/ping", 200, Some("other-trace")),
        // an empty trace id is none: a new one is made
        ("/api/auth/v1/ping", 200, Some("")),
    ] {
        let response = get(path, trace).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let h = response.headers();
        let header = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header("access-control-allow-origin").as_deref(),
            Some("*"),
            "{path}"
        );
        assert_eq!(
            header("cache-control").as_deref(),
            Some("no-store no-cache must-revalidate"),
            "{path}"
        );
        let echoed = header("x-for-trace-id").unwrap();
        match trace.filter(|t| !t.is_empty()) {
            Some(trace) => assert_eq!(echoed, trace, "{path}"),
            None => assert!(is_uuid(&echoed), "{path}: {echoed}"),
        }
        let id = header("x-for-request-id").unwrap();
        assert!(is_uuid(&id), "{path}: {id}");
        request_ids.push(id);
    }
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), 5, "a new request id each time");

    // /metrics is outside the API: plain text, none of the API's headers, and timed
    let before = sample(
        &server.metrics().await,
        "taskledger_http_request_seconds_count",
    );
    let response = get("/metrics", None).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().get("x-for-request-id").is_none());
    let text = response.text().await.unwrap();
    assert!(sample(&text, "taskledger_http_request_seconds_count") >= before + 1.0);
    let refused = http
        .post(format!("{}/metrics", server.root_url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 405);
}

/// statuses and tasks (POST, several ids at once): each known id's status or definition as
/// getTaskStatus and getTask answer it, unknown ids skipped, paged over the tasks found.
#[tokio::test]
async fn statuses_and_tasks_of_several_ids() {
    let server = Server::start(&[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let ids = create_tasks(&q, &queue, 3).await;
    // one claimed, so a status with a running run and its worker is among them
    let claimed = q.claimWork(&queue, &worker_body(1)).await.unwrap();
    assert_eq!(claimed["tasks"].as_array().unwrap().len(), 1, "{claimed}");
    let unknown = slugid::nice();
    // unknown ids, one that is no slugid and a repeat take no place on a page (upstream pages
    // over the tasks found, each once)
    let asked = json!({ "taskIds": [ids[0], unknown, "not-a-slugid", ids[1], ids[0], ids[2]] });
    for (list, key) in [("statuses", "status"), ("tasks", "task")] {
        let (q_ref, asked_ref) = (&q, &asked);
        let pages = all_pages(|t| async move {
            match list {
                "statuses" => q_ref.statuses(asked_ref, t.as_deref(), Some("2")).await,
                _ => q_ref.tasks(asked_ref, t.as_deref(), Some("2")).await,
            }
        })
        .await;
        let got: Vec<Value> = pages
            .iter()
            .flat_map(|page| page[list].as_array().unwrap().iter().cloned())
            .collect();
        assert_eq!(got.len(), 3, "{list}: {got:?}");
        assert_eq!(
            pages.len(),
            2,
            "{list}: pages of 2 and 1, no empty one: {pages:?}"
        );
        for (entry, id) in got.iter().zip(&ids) {
            assert_eq!(entry["taskId"], id.as_str(), "{entry}");
            let one = match list {
                "statuses" => q.status(id).await.unwrap()["status"].clone(),
                _ => q.task(id).await.unwrap(),
            };
            assert_eq!(entry[key], one, "{list} {id}");
        }
        if list == "statuses" {
            let running: Vec<&Value> = got
                .iter()
                .filter(|e| e["status"]["state"] == "running")
                .collect();
            assert_eq!(running.len(), 1, "{got:?}");
            assert_eq!(running[0]["status"]["runs"][0]["workerId"], "it-worker");
        }
    }
    // a page that ends the found tasks carries no token, whatever unknown ids follow
    let tail = json!({ "taskIds": [ids[0], ids[1], slugid::nice()] });
    let page = q.statuses(&tail, None, Some("2")).await.unwrap();
    assert_eq!(page["statuses"].as_array().unwrap().len(), 2, "{page}");
    assert_eq!(page.get("continuationToken"), None, "{page}");
    // `taskIds` may be left out; nothing else may be sent
    let none = q.statuses(&json!({}), None, None).await.unwrap();
    assert_eq!(none, json!({ "statuses": [] }));
    let extra = json!({ "taskIds": [], "other": 1 });
    let err = q.tasks(&extra, None, None).await.unwrap_err();
    assert_eq!(status_of(&err), Some(400), "{err:#}");
}

/// The calls a worker and its operators make besides the task's life, through the official
/// Rust client: claimTask, the latest run's artifacts, and the provisioner, worker-type,
/// task-queue and worker views, quarantine included.
#[tokio::test]
async fn worker_views_claim_task_and_latest_artifacts() {
    let server = Server::start(&[]).await;
    let q = server.queue();
    let queue = fresh_queue();
    let (p, w) = queue.split_once('/').unwrap();
    let ids = create_tasks(&q, &queue, 2).await;
    let id = &ids[0];

    // claimTask (deprecated, still served): the claim of that run
    let claim = q
        .claimTask(id, "0", &json!({ "workerGroup": "g1", "workerId": "w1" }))
        .await
        .unwrap();
    assert_eq!(claim["runId"], 0, "{claim}");
    assert_eq!(claim["status"]["state"], "running", "{claim}");
    assert_eq!(claim["workerGroup"], "g1", "{claim}");
    assert_eq!(claim["workerId"], "w1", "{claim}");
    assert!(claim["takenUntil"].is_string(), "{claim}");
    assert!(claim["credentials"]["accessToken"].is_string(), "{claim}");
    // the same worker polls for the other one, which marks it and its queue seen
    let polled = q
        .claimWork(
            &queue,
            &json!({ "workerGroup": "g1", "workerId": "w1", "tasks": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(
        polled["tasks"][0]["status"]["taskId"],
        ids[1].as_str(),
        "{polled}"
    );

    // the latest run's artifacts, by info, by listing and by download
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    q.createArtifact(
        id,
        "0",
        "public/broken",
        &json!({ "storageType": "error", "expires": expires, "reason": "file-missing-on-worker", "message": "gone" }),
    )
    .await
    .unwrap();
    let info = q.latestArtifactInfo(id, "public/broken").await.unwrap();
    assert_eq!(info["storageType"], "error", "{info}");
    assert_eq!(info["name"], "public/broken", "{info}");
    assert_eq!(
        info,
        q.artifactInfo(id, "0", "public/broken").await.unwrap()
    );
    let listed = q.listLatestArtifacts(id, None, None).await.unwrap();
    assert_eq!(listed["artifacts"], json!([info]), "{listed}");
    assert_eq!(listed, q.listArtifacts(id, "0", None, None).await.unwrap());
    let err = q.getLatestArtifact(id, "public/broken").await.unwrap_err();
    assert_eq!(status_of(&err), Some(424), "{err}");
    // URL parameters are checked before the handler's scope check and before the task is
    // loaded: a bad taskId is 400 even without credentials, a bad runId 400 on any task
    let r = reqwest::get(format!(
        "{}/api/queue/v1/task/not-a-slug/artifacts/private/x",
        server.root_url
    ))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (status, body) = server
        .root_call(
            "GET",
            &format!("/api/queue/v1/task/{}/runs/abc/artifacts", slugid::nice()),
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("InvalidRequestArguments")),
        "{body}"
    );
    let err = q.latestArtifactInfo(id, "public/none").await.unwrap_err();
    assert_eq!(status_of(&err), Some(404), "{err}");
    // its content response (200), also through a link to it
    q.createArtifact(
        id,
        "0",
        "public/link",
        &json!({ "storageType": "link", "expires": expires, "artifact": "public/broken" }),
    )
    .await
    .unwrap();
    let content =
        json!({ "storageType": "error", "reason": "file-missing-on-worker", "message": "gone" });
    for name in ["public/broken", "public/link"] {
        assert_eq!(q.latestArtifact(id, name).await.unwrap(), content, "{name}");
    }

    // the views of who works on what
    let provisioners = q.listProvisioners(None, None).await.unwrap();
    assert!(
        provisioners["provisioners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["provisionerId"] == p),
        "{provisioners}"
    );
    assert_eq!(q.getProvisioner(p).await.unwrap()["provisionerId"], p);
    let types = q.listWorkerTypes(p, None, None).await.unwrap();
    let listed: Vec<&Value> = types["workerTypes"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "{types}");
    assert_eq!(listed[0]["workerType"], w);
    assert_eq!(listed[0]["taskQueueId"], queue.as_str());
    let got = q.getTaskQueue(&queue).await.unwrap();
    assert_eq!(got["taskQueueId"], queue.as_str(), "{got}");
    // a worker type named like a sub-resource is a task queue of its own: clients send the
    // id as one encoded segment
    let named = format!("{p}/pending");
    q.createTask(&slugid::nice(), &task_def(&named, 600))
        .await
        .unwrap();
    q.claimWork(&named, &worker_body(1)).await.unwrap();
    let got = q.getTaskQueue(&named).await.unwrap();
    assert_eq!(got["taskQueueId"], named.as_str(), "{got}");
    let queues = q.listTaskQueues(None, None).await.unwrap();
    assert!(
        queues["taskQueues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["taskQueueId"] == queue.as_str()),
        "{queues}"
    );
    let workers = q.listWorkers(p, w, None, None, None).await.unwrap();
    let listed = workers["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{workers}");
    assert_eq!(listed[0]["workerGroup"], "g1");
    assert_eq!(listed[0]["workerId"], "w1");
    assert_eq!(
        listed[0]["latestTask"],
        json!({ "taskId": ids[1], "runId": 0 }),
        "{workers}"
    );
    let worker = q.getWorker(p, w, "g1", "w1").await.unwrap();
    assert_eq!(
        worker["recentTasks"],
        json!([{ "taskId": id, "runId": 0 }, { "taskId": ids[1], "runId": 0 }]),
        "{worker}"
    );
    assert_eq!(worker["taskQueueId"], queue.as_str(), "{worker}");

    // quarantine: shown while in the future, and listed under quarantined=true only
    let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let quarantined = q
        .quarantineWorker(
            p,
            w,
            "g1",
            "w1",
            &json!({ "quarantineUntil": until, "quarantineInfo": "flaky disk" }),
        )
        .await
        .unwrap();
    assert!(quarantined["quarantineUntil"].is_string(), "{quarantined}");
    // the request schema: no other key, the date required, the note a string
    for bad in [
        json!({ "quarantineUntil": until, "extra": 1 }),
        json!({ "quarantineInfo": "no date" }),
        json!({ "quarantineUntil": until, "quarantineInfo": 5 }),
    ] {
        let err = q
            .quarantineWorker(p, w, "g1", "w1", &bad)
            .await
            .unwrap_err();
        assert_eq!(status_of(&err), Some(400), "{bad}: {err:#}");
    }
    let err = q
        .listWorkers(p, w, None, None, Some("yes"))
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(400), "{err:#}");
    for (filter, count) in [("true", 1), ("false", 0)] {
        let listed = q.listWorkers(p, w, None, None, Some(filter)).await.unwrap();
        assert_eq!(
            listed["workers"].as_array().unwrap().len(),
            count,
            "{filter}: {listed}"
        );
    }
    // and a quarantined worker claims nothing by claimTask either: `{}`, the run pending
    let later = create_tasks(&q, &queue, 1).await;
    let none = q
        .claimTask(
            &later[0],
            "0",
            &json!({ "workerGroup": "g1", "workerId": "w1" }),
        )
        .await
        .unwrap();
    assert_eq!(none, json!({}));
    assert_eq!(
        q.status(&later[0]).await.unwrap()["status"]["state"],
        "pending"
    );
    // the deprecated pending count sees that one run waiting
    assert_eq!(
        q.pendingTasks(&queue).await.unwrap(),
        json!({ "provisionerId": p, "workerType": w, "taskQueueId": queue, "pendingTasks": 1 })
    );
    // past its deadline a task answers 409 before the worker's quarantine is looked at
    let short = slugid::nice();
    q.createTask(&short, &task_def(&queue, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = q
        .claimTask(
            &short,
            "0",
            &json!({ "workerGroup": "g1", "workerId": "w1" }),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&err), Some(409), "{err}");
}
