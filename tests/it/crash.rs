//! Crash safety (STYLE.md §10): a fail point makes the writer panic, and so the process exit,
//! between a command's durable append and its apply, so the log holds events the projection
//! lacks. The next start must fold them: every acknowledged or unanswered-but-durable change
//! is there, once. (The process exits; the machine does not crash, so what these tests show
//! is the fold on restart, not the sync's durability.)
//!
//! Built only with the `failpoints` feature, which README's test command turns on.

use crate::auth::auth_as;
use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use taskcluster::Credentials;

/// The status the server exits with after a writer or a background service panicked
/// (`exits::exit_after_panic`).
const PANICKED: i32 = 70;

/// What a caller gets when the writer dies under its command: the connection closed, or 503
/// (the handler saw the writer go before the process exited; its body may be cut short by
/// the exit). Either way the outcome is unknown to it, and the official clients retry.
fn no_success(answer: Option<(u16, serde_json::Value)>) {
    match answer {
        None | Some((503, _)) => {}
        Some(other) => panic!("answered {other:?} although the writer died"),
    }
}

/// The exits after a panic that `/metrics` reports, per service, from the data directory's
/// record: the lines of `taskledger_panic_exits_total`, and whether the latest has a time.
async fn recorded_exits(s: &Server) -> (Vec<String>, bool) {
    let metrics = s.metrics().await;
    let lines = metrics
        .lines()
        .filter(|l| l.starts_with("taskledger_panic_exits_total{"))
        .map(str::to_string)
        .collect();
    let dated = !metrics.contains("\ntaskledger_last_panic_exit_timestamp_seconds 0\n");
    (lines, dated)
}

#[tokio::test]
async fn a_task_appended_but_not_applied_is_there_after_a_restart_embedded() {
    a_task_appended_but_not_applied_is_there_after_a_restart(Backend::Embedded).await
}

/// On Kafka the append is a committed transaction; the restarted writer folds it from the
/// topic into its own RocksDB.
#[tokio::test]
async fn a_task_appended_but_not_applied_is_there_after_a_restart_kafka() {
    a_task_appended_but_not_applied_is_there_after_a_restart(Backend::Kafka).await
}

async fn a_task_appended_but_not_applied_is_there_after_a_restart(backend: Backend) {
    // the first group commit goes through, the second dies
    let failpoint = [("FAILPOINTS", "queue-after-append=1*off->panic")];
    let mut s = Server::start_on(backend, &failpoint).await;
    assert_eq!(recorded_exits(&s).await, (vec![], false));
    let queue = fresh_queue();
    let before = create_tasks(&s.queue(), &queue, 1).await;
    let task_id = slugid::nice();
    let def = task_def(&queue, 600);

    // the writer dies after the durable append, before the projection's write
    let path = format!("/api/queue/v1/task/{task_id}");
    let answer = s.root_call_or_none("PUT", &path, &def).await;
    no_success(answer);
    assert_eq!(s.exited(Duration::from_secs(10)).await, Some(PANICKED));

    s.restart_without("FAILPOINTS").await;
    // the exit is on record, for an operator to tell a crash loop from a one-off
    assert_eq!(
        recorded_exits(&s).await,
        (
            vec![r#"taskledger_panic_exits_total{service="queue"} 1"#.to_string()],
            true
        )
    );
    let q = s.queue();
    let status = state_of(&q, &task_id).await;
    assert_eq!(status["state"], "pending");
    assert_eq!(status["runs"][0]["reasonCreated"], "scheduled");
    assert_eq!(status["taskQueueId"], queue.as_str());

    // the caller's retry of the unanswered call finds the same task, not a conflict
    let again = q.createTask(&task_id, &def).await.unwrap();
    assert_eq!(again["status"], status);

    // the pending index was folded too: a worker gets both tasks, in order, and only them
    let claimed = q.claimWork(&queue, &worker_body(3)).await.unwrap();
    let ids: Vec<&str> = claimed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"]["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [before[0].as_str(), task_id.as_str()]);
    q.reportCompleted(&task_id, "0").await.unwrap();
    assert_eq!(state_of(&q, &task_id).await["state"], "completed");
}

#[tokio::test]
async fn a_client_appended_but_not_applied_is_there_after_a_restart() {
    // the first write goes through, the second dies
    let mut s = Server::start(&[("FAILPOINTS", "auth-after-append=1*off->panic")]).await;
    let first = crate::auth::create_client(&s, "it/first", &["auth:current-scopes"]).await;
    let body = json!({
        "description": "created as the server crashed",
        "expires": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        "scopes": ["auth:current-scopes"],
    });
    let answer = s
        .root_call_or_none("PUT", "/api/auth/v1/clients/it%2Fcrashed", &body)
        .await;
    no_success(answer);
    assert_eq!(s.exited(Duration::from_secs(10)).await, Some(PANICKED));

    s.restart_without("FAILPOINTS").await;
    assert_eq!(
        recorded_exits(&s).await,
        (
            vec![r#"taskledger_panic_exits_total{service="auth"} 1"#.to_string()],
            true
        )
    );
    let root = auth_as(&s, Credentials::new("static/taskcluster/root", ROOT_TOKEN));
    let client = root.client("it/crashed").await.unwrap();
    assert_eq!(client["description"], "created as the server crashed");
    assert_eq!(client["scopes"], json!(["auth:current-scopes"]));
    // the client written before still works with its token
    let scopes = auth_as(&s, first).currentScopes().await.unwrap();
    assert_eq!(
        scopes["scopes"],
        json!(["assume:anonymous", "auth:current-scopes"])
    );
    // the token went out with no answer: the owner resets it and the client works
    let reset = root.resetAccessToken("it/crashed").await.unwrap();
    let token = reset["accessToken"].as_str().unwrap();
    let crashed = auth_as(&s, Credentials::new("it/crashed", token));
    let scopes = crashed.currentScopes().await.unwrap();
    // (every client also holds the anonymous role, auth.md)
    assert_eq!(
        scopes["scopes"],
        json!(["assume:anonymous", "auth:current-scopes"])
    );
}

/// A background service that panics takes the server down with it (status 70) instead of
/// leaving it answering while, here, dependents are never scheduled; the restarted server's
/// reactor resumes from its checkpoint and schedules them.
#[tokio::test]
async fn a_panicked_reactor_exits_the_server_and_its_work_is_done_after_a_restart() {
    let mut s = Server::start(&[("FAILPOINTS", "read-dependents=panic")]).await;
    let q = s.queue();
    let queue = fresh_queue();
    let (a, b) = (slugid::nice(), slugid::nice());
    q.createTask(&a, &task_def(&queue, 600)).await.unwrap();
    let mut def_b = task_def(&queue, 600);
    def_b["dependencies"] = json!([a]);
    q.createTask(&b, &def_b).await.unwrap();
    q.claimWork(&queue, &worker_body(1)).await.unwrap();
    // the report is durable; the dependency reactor, woken by it, panics on it, perhaps
    // before the answer has left
    let path = format!("/api/queue/v1/task/{a}/runs/0/completed");
    match s.root_call_or_none("POST", &path, &json!({})).await {
        None | Some((200, _)) => {}
        Some(other) => panic!("reportCompleted answered {other:?}"),
    }
    assert_eq!(s.exited(Duration::from_secs(10)).await, Some(PANICKED));

    s.restart_without("FAILPOINTS").await;
    assert_eq!(
        recorded_exits(&s).await.0,
        [r#"taskledger_panic_exits_total{service="dependencies"} 1"#]
    );
    let q = s.queue();
    assert_eq!(state_of(&q, &a).await["state"], "completed");
    eventually(Duration::from_secs(10), || async {
        (state_of(&q, &b).await["state"] == "pending").then_some(())
    })
    .await;
}
