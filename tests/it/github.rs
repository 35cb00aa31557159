//! The GitHub integration end to end: webhooks signed as GitHub signs them, a GitHub API
//! stand-in on loopback (GitHub itself cannot be reached from a test; the stand-in checks the
//! App's RS256 JWT with the App's public key and the installation token on every call), and
//! the official `taskcluster` crate to see and resolve the tasks.
//!
//! A push becomes a build: `.taskcluster.yml` read at the pushed commit, its tasks created as
//! the branch's role, a `pending` commit status, then `success` once the tasks completed. A
//! redelivered webhook makes nothing twice; a bad signature, a missing one and a missing
//! event header are refused in upstream's plain words; a pull request from a stranger gets a
//! comment and no task; a broken file gets an error comment on the commit; the builds list,
//! cancelBuilds, badge, latest, repository, createStatus, createComment and
//! renderTaskclusterYml answer; the projection rebuilds from the log. A collaborator's
//! `/taskcluster` comment builds the pull request's head, a stranger's is told why not, and a
//! release builds the commit its target names.

use crate::harness::*;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const APP_ID: &str = "4242";
const INSTALLATION: u64 = 77;
const SECRET: &str = "webhook-s3cret";

/// What the stand-in holds and what it was told.
#[derive(Default)]
pub(crate) struct Github {
    /// DER `RSAPublicKey` of the App's key, to check its JWTs.
    pub(crate) public_key: Vec<u8>,
    /// `.taskcluster.yml` by ref (a sha or a branch).
    pub(crate) files: HashMap<String, String>,
    pub(crate) collaborators: HashSet<String>,
    pub(crate) pulls: HashMap<u64, Value>,
    /// The commit a ref names.
    pub(crate) commits: HashMap<String, String>,
    /// `(sha, status)` in the order they came.
    pub(crate) statuses: Vec<(String, Value)>,
    /// `(issue number or commit sha, body)`.
    pub(crate) comments: Vec<(String, String)>,
    pub(crate) tokens_issued: u32,
}

pub(crate) type Gh = Arc<Mutex<Github>>;

fn token_of(installation: u64) -> String {
    format!("ghs_installation_{installation}")
}

/// The installation token a call must carry.
fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("token {}", token_of(INSTALLATION)))
}

/// Checks an App JWT's RS256 signature and claims.
fn app_jwt_ok(gh: &Github, headers: &HeaderMap) -> bool {
    let Some(jwt) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return false;
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(sig) = b64.decode(signature) else {
        return false;
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &gh.public_key,
    );
    if key
        .verify(format!("{header}.{claims}").as_bytes(), &sig)
        .is_err()
    {
        return false;
    }
    let claims: Value =
        serde_json::from_slice(&b64.decode(claims).unwrap_or_default()).unwrap_or(Value::Null);
    let now = chrono::Utc::now().timestamp();
    claims["iss"] == APP_ID
        && claims["iat"].as_i64().is_some_and(|t| t <= now)
        && claims["exp"]
            .as_i64()
            .is_some_and(|t| t > now && t <= now + 600)
}

pub(crate) async fn start_github(gh: Gh) -> String {
    async fn access_token(
        State(gh): State<Gh>,
        Path(id): Path<u64>,
        headers: HeaderMap,
    ) -> (StatusCode, Json<Value>) {
        let mut g = gh.lock().unwrap();
        if !app_jwt_ok(&g, &headers) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "A JSON web token could not be decoded"})),
            );
        }
        g.tokens_issued += 1;
        (
            StatusCode::CREATED,
            Json(json!({"token": token_of(id), "expires_at": "2099-01-01T00:00:00Z"})),
        )
    }
    async fn contents(
        State(gh): State<Gh>,
        Path((_o, _r, path)): Path<(String, String, String)>,
        axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
        headers: HeaderMap,
    ) -> (StatusCode, Json<Value>) {
        if !authorized(&headers) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            );
        }
        let g = gh.lock().unwrap();
        let at = q.get("ref").cloned().unwrap_or_default();
        match g.files.get(&at).filter(|_| path == ".taskcluster.yml") {
            Some(text) => {
                // GitHub wraps its base64 at 60 characters
                let b64 = base64::engine::general_purpose::STANDARD.encode(text);
                let wrapped: Vec<String> = b64
                    .as_bytes()
                    .chunks(60)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                (
                    StatusCode::OK,
                    Json(json!({"encoding": "base64", "content": wrapped.join("\n")})),
                )
            }
            None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
        }
    }
    async fn repo(headers: HeaderMap) -> (StatusCode, Json<Value>) {
        if !authorized(&headers) {
            return (StatusCode::UNAUTHORIZED, Json(json!({})));
        }
        (StatusCode::OK, Json(json!({"default_branch": "main"})))
    }
    async fn collaborator(
        State(gh): State<Gh>,
        Path((_o, _r, user)): Path<(String, String, String)>,
        headers: HeaderMap,
    ) -> StatusCode {
        if !authorized(&headers) {
            return StatusCode::UNAUTHORIZED;
        }
        if gh.lock().unwrap().collaborators.contains(&user) {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::NOT_FOUND
        }
    }
    async fn pull(
        State(gh): State<Gh>,
        Path((_o, _r, n)): Path<(String, String, u64)>,
    ) -> (StatusCode, Json<Value>) {
        match gh.lock().unwrap().pulls.get(&n) {
            Some(p) => (StatusCode::OK, Json(p.clone())),
            None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
        }
    }
    async fn status(
        State(gh): State<Gh>,
        Path((_o, _r, sha)): Path<(String, String, String)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        if !authorized(&headers) {
            return (StatusCode::UNAUTHORIZED, Json(json!({})));
        }
        if sha == "forbidden" {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"message": "Resource not accessible by integration"})),
            );
        }
        gh.lock().unwrap().statuses.push((sha, body));
        (StatusCode::CREATED, Json(json!({})))
    }
    async fn comment(
        State(gh): State<Gh>,
        Path((_o, _r, on)): Path<(String, String, String)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        if !authorized(&headers) {
            return (StatusCode::UNAUTHORIZED, Json(json!({})));
        }
        let text = body["body"].as_str().unwrap_or_default().to_string();
        gh.lock().unwrap().comments.push((on, text));
        (StatusCode::CREATED, Json(json!({})))
    }
    async fn commit(
        State(gh): State<Gh>,
        Path((_o, _r, at)): Path<(String, String, String)>,
        headers: HeaderMap,
    ) -> (StatusCode, Json<Value>) {
        if !authorized(&headers) {
            return (StatusCode::UNAUTHORIZED, Json(json!({})));
        }
        match gh.lock().unwrap().commits.get(&at) {
            Some(sha) => (StatusCode::OK, Json(json!({ "sha": sha }))),
            None => (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))),
        }
    }
    let app = Router::new()
        .route("/app/installations/{id}/access_tokens", post(access_token))
        .route("/repos/{o}/{r}/contents/{*path}", get(contents))
        .route("/repos/{o}/{r}", get(repo))
        .route("/repos/{o}/{r}/collaborators/{u}", get(collaborator))
        .route("/repos/{o}/{r}/pulls/{n}", get(pull))
        .route("/repos/{o}/{r}/commits/{at}", get(commit))
        .route("/repos/{o}/{r}/statuses/{sha}", post(status))
        .route("/repos/{o}/{r}/issues/{n}/comments", post(comment))
        .route("/repos/{o}/{r}/commits/{sha}/comments", post(comment))
        .with_state(gh);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A fresh RSA key for the App (openssl, as GitHub's keys are made): the PEM file's path
/// and the public key as DER `RSAPublicKey`.
pub(crate) fn app_key(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let pem = dir.join("app.pem");
    let der = dir.join("app.pub.der");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["genrsa", "-out", pem.to_str().unwrap(), "2048"]);
    run(&[
        "rsa",
        "-in",
        pem.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    (pem, std::fs::read(der).unwrap())
}

/// Sends a webhook as GitHub does: JSON, the event and delivery headers, signed with
/// `secret` (none: unsigned).
pub(crate) async fn deliver(
    s: &Server,
    event: Option<&str>,
    delivery: &str,
    body: &Value,
    secret: Option<&str>,
) -> (u16, String) {
    let text = body.to_string();
    let mut r = reqwest::Client::new()
        .post(format!("{}/api/github/v1/github", s.root_url))
        .header("content-type", "application/json")
        .header("x-github-delivery", delivery);
    if let Some(e) = event {
        r = r.header("x-github-event", e);
    }
    if let Some(secret) = secret {
        r = r.header(
            "x-hub-signature-256",
            taskledger_core::github::sign_sha256(secret, text.as_bytes()),
        );
    }
    let resp = r.body(text).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn repository() -> Value {
    json!({"name": "app", "owner": {"login": "acme", "name": "acme"},
           "clone_url": "https://github.com/acme/app.git", "html_url": "https://github.com/acme/app"})
}

pub(crate) fn push(sha: &str, branch: &str) -> Value {
    json!({"ref": format!("refs/heads/{branch}"), "before": "0".repeat(40), "after": sha,
           "head_commit": {"message": "work"}, "repository": repository(),
           "installation": {"id": INSTALLATION}, "sender": {"login": "dev", "id": 9}})
}

pub(crate) fn taskcluster_yml(queue: &str) -> String {
    format!(
        r#"
version: 1
policy:
  pullRequests: collaborators
tasks:
  - taskId: {{$eval: 'as_slugid("test")'}}
    dependencies: ['${{as_slugid("build")}}']
    taskQueueId: {queue}
    deadline: {{$fromNow: '1 hour'}}
    payload: {{}}
    metadata: {{name: test, description: tests, owner: 'dev@example.com', source: '${{event.repository.html_url}}'}}
  - taskId: {{$eval: 'as_slugid("build")'}}
    taskQueueId: {queue}
    deadline: {{$fromNow: '1 hour'}}
    payload: {{sha: '${{event.after}}', for: '${{tasks_for}}'}}
    metadata: {{name: build, description: build, owner: 'dev@example.com', source: 'https://github.com/acme/app'}}
"#
    )
}

async fn builds(s: &Server, query: &str) -> (u16, Value) {
    s.root_call("GET", &format!("/api/github/v1/builds{query}"), &json!({}))
        .await
}

#[tokio::test]
async fn a_push_becomes_a_build_with_commit_statuses() {
    let dir = std::env::temp_dir().join(format!("taskledger-it-gh-{}", slugid::nice()));
    let (pem, public_key) = app_key(&dir);
    let gh: Gh = Arc::new(Mutex::new(Github {
        public_key,
        ..Github::default()
    }));
    let api = start_github(gh.clone()).await;
    let s = Server::start(&[
        ("TASKLEDGER_GITHUB_APP_ID", APP_ID),
        ("TASKLEDGER_GITHUB_PRIVATE_KEY", pem.to_str().unwrap()),
        ("TASKLEDGER_GITHUB_API_URL", api.as_str()),
        ("TASKLEDGER_GITHUB_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let queue = fresh_queue();
    let sha = "a".repeat(40);
    gh.lock()
        .unwrap()
        .files
        .insert(sha.clone(), taskcluster_yml(&queue));
    gh.lock()
        .unwrap()
        .files
        .insert("main".into(), taskcluster_yml(&queue));
    // the branch's role holds what the tasks need
    let role = json!({"description": "acme/app main", "scopes": [
        format!("queue:create-task:highest:{queue}"), "queue:create-task:project:none",
        "queue:route:statuses",
        "queue:scheduler-id:taskcluster-github"]});
    let (st, _) = s
        .root_call(
            "PUT",
            "/api/auth/v1/roles/repo:github.com%2Facme%2Fapp:branch:main",
            &role,
        )
        .await;
    assert_eq!(st, 200);

    // refusals, in upstream's plain words, before anything is recorded
    let body = push(&sha, "main");
    assert_eq!(
        deliver(&s, None, "d-0", &body, Some(SECRET)).await,
        (400, "Missing X-GitHub-Event".to_string())
    );
    assert_eq!(
        deliver(&s, Some("push"), "d-0", &body, None).await,
        (400, "Request missing a secret".to_string())
    );
    assert_eq!(
        deliver(&s, Some("push"), "d-0", &body, Some("wrong")).await,
        (
            403,
            "X-hub-signature does not match; bad webhook secret?".to_string()
        )
    );
    let (st, text) = deliver(&s, Some("push"), "d-0", &json!({"ref": 1}), Some(SECRET)).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("InputValidationError"), "{text}");
    assert_eq!(
        deliver(&s, Some("ping"), "d-p", &json!({"zen": "z"}), Some(SECRET)).await,
        (200, "Received ping event!".to_string())
    );
    let install = json!({"action": "created", "installation": {"id": INSTALLATION, "account": {"login": "acme"}}});
    assert_eq!(
        deliver(&s, Some("installation"), "d-i", &install, Some(SECRET)).await,
        (200, "Created table row!".to_string())
    );
    let (_, b) = builds(&s, "").await;
    assert_eq!(b["builds"], json!([]));

    // the push: a build of two tasks, created as the branch's role, build first
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    assert_eq!(
        deliver(&s, Some("push"), delivery, &body, Some(SECRET))
            .await
            .0,
        204
    );
    let build = eventually(Duration::from_secs(20), || async {
        let (_, b) = builds(&s, "?organization=acme&repository=app").await;
        b["builds"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    assert_eq!(build["sha"], json!(sha));
    assert_eq!(build["state"], "pending");
    assert_eq!(build["eventId"], delivery);
    assert_eq!(build["eventType"], "push");
    let group = build["taskGroupId"].as_str().unwrap().to_string();
    let q = s.queue();
    let listed = eventually(Duration::from_secs(20), || async {
        let l = q.listTaskGroup(&group, None, None).await.ok()?;
        let tasks = l["tasks"].as_array()?.clone();
        (tasks.len() == 2).then_some(tasks)
    })
    .await;
    let by_name = |name: &str| {
        listed
            .iter()
            .find(|t| t["task"]["metadata"]["name"] == name)
            .cloned()
            .unwrap()
    };
    let (build_task, test_task) = (by_name("build"), by_name("test"));
    assert_eq!(
        build_task["task"]["payload"],
        json!({"sha": sha, "for": "github-push"})
    );
    assert_eq!(build_task["task"]["schedulerId"], "taskcluster-github");
    assert_eq!(build_task["task"]["routes"], json!(["statuses"]));
    assert_eq!(
        test_task["task"]["metadata"]["source"],
        "https://github.com/acme/app"
    );
    let build_id = build_task["status"]["taskId"].as_str().unwrap().to_string();
    let test_id = test_task["status"]["taskId"].as_str().unwrap().to_string();
    assert_eq!(test_task["task"]["dependencies"], json!([build_id]));
    assert_eq!(test_task["status"]["state"], "unscheduled");
    // a pending status on the pushed commit, pointing at the group
    let pending = eventually(Duration::from_secs(20), || async {
        gh.lock().unwrap().statuses.first().cloned()
    })
    .await;
    assert_eq!(pending.0, sha);
    assert_eq!(pending.1["state"], "pending");
    assert_eq!(pending.1["context"], "Taskcluster (push)");
    assert_eq!(
        pending.1["target_url"],
        json!(format!("{}/tasks/groups/{group}", s.root_url))
    );

    // GitHub delivers again (the same delivery id): taken once, nothing more is made
    assert_eq!(
        deliver(&s, Some("push"), delivery, &body, Some(SECRET))
            .await
            .0,
        204
    );
    let (ok, text, err) = crate::audit::cli(&s, &["events", "tail", "--service", "github"]);
    assert!(ok, "{err}");
    let received = text
        .lines()
        .filter(|l| l.contains("WebhookReceived") && l.contains(delivery))
        .count();
    assert_eq!(received, 1, "{text}");

    // the tasks complete: the build succeeds, and GitHub hears so
    for expected in [&build_id, &test_id] {
        let claim = q.claimWork(&queue, &worker_body(1)).await.unwrap();
        let claimed = claim["tasks"][0]["status"]["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(&claimed, expected, "dependencies first");
        q.reportCompleted(&claimed, "0").await.unwrap();
    }
    let done = eventually(Duration::from_secs(20), || async {
        let g = gh.lock().unwrap();
        g.statuses
            .iter()
            .find(|(_, st)| st["state"] == "success")
            .cloned()
    })
    .await;
    assert_eq!(done.0, sha);
    assert_eq!(done.1["description"], "TaskGroup: Success");
    let (_, b) = builds(&s, "").await;
    assert_eq!(b["builds"].as_array().unwrap().len(), 1, "{b}");
    eventually(Duration::from_secs(10), || async {
        let (_, b) = builds(&s, "").await;
        (b["builds"][0]["state"] == "success").then_some(())
    })
    .await;
    assert!(gh.lock().unwrap().tokens_issued >= 1);

    // a broken file: an error comment on the commit, and no build
    let broken = "b".repeat(40);
    gh.lock()
        .unwrap()
        .files
        .insert(broken.clone(), "version: 1\ntasks: {$eval: nope}\n".into());
    let (st, _) = deliver(
        &s,
        Some("push"),
        "d-broken",
        &push(&broken, "main"),
        Some(SECRET),
    )
    .await;
    assert_eq!(st, 204);
    let comment = eventually(Duration::from_secs(20), || async {
        gh.lock()
            .unwrap()
            .comments
            .iter()
            .find(|(on, _)| *on == broken)
            .cloned()
    })
    .await;
    assert!(
        comment.1.contains("Uh oh! Looks like an error!"),
        "{}",
        comment.1
    );
    assert!(
        comment.1.contains("rendering `.taskcluster.yml` failed"),
        "{}",
        comment.1
    );

    // a pull request from someone who is not a collaborator: a comment, no task
    let pr = json!({"action": "opened", "number": 12,
        "pull_request": {"title": "please", "user": {"login": "stranger"},
            "head": {"ref": "patch", "sha": "c".repeat(40), "repo": {"name": "app"}, "user": {"login": "stranger"}},
            "base": {"ref": "main", "sha": sha, "repo": {"name": "app"}, "user": {"login": "acme"}}},
        "repository": repository(), "installation": {"id": INSTALLATION}, "sender": {"login": "stranger"}});
    gh.lock()
        .unwrap()
        .files
        .insert("c".repeat(40), taskcluster_yml(&queue));
    assert_eq!(
        deliver(&s, Some("pull_request"), "d-pr", &pr, Some(SECRET))
            .await
            .0,
        204
    );
    let comment = eventually(Duration::from_secs(20), || async {
        gh.lock()
            .unwrap()
            .comments
            .iter()
            .find(|(on, _)| on == "12")
            .cloned()
    })
    .await;
    assert!(comment
        .1
        .starts_with("No Taskcluster jobs started for this pull request"));
    let (_, b) = builds(&s, "?organization=acme&repository=app&pullRequest=12").await;
    assert_eq!(b["builds"], json!([]));

    // the listing's rules and paging
    let (st, e) = builds(&s, "?repository=app").await;
    assert_eq!((st, e["code"].clone()), (400, json!("InputError")));
    let (st, _) = builds(&s, "?organization=acme&sha=x").await;
    assert_eq!(st, 400);
    let (st, _) = builds(&s, "?organization=a.b").await;
    assert_eq!(st, 400);
    let (_, b) = builds(&s, &format!("?organization=acme&repository=app&sha={sha}")).await;
    assert_eq!(b["builds"].as_array().unwrap().len(), 1);

    // repository, badge, latest
    let (st, r) = s
        .root_call("GET", "/api/github/v1/repository/acme/app", &json!({}))
        .await;
    assert_eq!((st, r), (200, json!({"installed": true})));
    let (st, r) = s
        .root_call("GET", "/api/github/v1/repository/nobody/app", &json!({}))
        .await;
    assert_eq!((st, r), (200, json!({"installed": false})));
    // a README's badge is fetched by anyone: the anonymous role holds the badge scopes
    let anonymous = json!({"description": "badges", "scopes": [
        "github:get-badge:*", "github:latest-status:*"]});
    let (st, _) = s
        .root_call("PUT", "/api/auth/v1/roles/anonymous", &anonymous)
        .await;
    assert_eq!(st, 200);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let badge = client
        .get(format!(
            "{}/api/github/v1/repository/acme/app/main/badge.svg",
            s.root_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(badge.status(), 200);
    assert_eq!(badge.headers()["x-taskcluster-status"], "success");
    assert!(badge.text().await.unwrap().contains("passing"));
    let latest = client
        .get(format!(
            "{}/api/github/v1/repository/acme/app/main/latest",
            s.root_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.status(), 302);
    assert_eq!(
        latest.headers()["location"],
        format!("{}/tasks/groups/{group}", s.root_url).as_str()
    );
    let (st, _) = s
        .root_call(
            "GET",
            "/api/github/v1/repository/acme/app/nope/latest",
            &json!({}),
        )
        .await;
    assert_eq!(st, 404);

    // createStatus and createComment as the App
    let (st, _) = s
        .root_call(
            "POST",
            &format!("/api/github/v1/repository/acme/app/statuses/{sha}"),
            &json!({"state": "error", "description": "by hand"}),
        )
        .await;
    assert_eq!(st, 200);
    assert!(gh
        .lock()
        .unwrap()
        .statuses
        .iter()
        .any(|(_, st)| st["description"] == "by hand" && st["context"] == "default"));
    let (st, e) = s
        .root_call(
            "POST",
            "/api/github/v1/repository/acme/app/statuses/forbidden",
            &json!({"state": "error"}),
        )
        .await;
    assert_eq!((st, e["code"].clone()), (403, json!("ForbiddenByGithub")));
    let (st, e) = s
        .root_call(
            "POST",
            &format!("/api/github/v1/repository/acme/app/statuses/{sha}"),
            &json!({"state": "great"}),
        )
        .await;
    assert_eq!(
        (st, e["code"].clone()),
        (400, json!("InputValidationError"))
    );
    let (st, _) = s
        .root_call(
            "POST",
            "/api/github/v1/repository/acme/app/issues/12/comments",
            &json!({"body": "hello from the API"}),
        )
        .await;
    assert_eq!(st, 200);
    assert!(gh
        .lock()
        .unwrap()
        .comments
        .iter()
        .any(|(on, b)| on == "12" && b == "hello from the API"));
    let (st, e) = s
        .root_call(
            "POST",
            "/api/github/v1/repository/nobody/app/issues/1/comments",
            &json!({"body": "x"}),
        )
        .await;
    assert_eq!(
        (
            st,
            e["message"]
                .as_str()
                .map(|m| m.starts_with("Issue not found"))
        ),
        (404, Some(true))
    );

    // scopes: a client without them is refused
    let limited = crate::auth::create_client(&s, "it-gh-limited", &["github:list-builds"]).await;
    let (st, _) = s
        .call_as(
            (&limited.client_id, &limited.access_token),
            "POST",
            "/api/github/v1/builds/acme/app/cancel",
            &json!({}),
        )
        .await;
    assert_eq!(st, 403);

    // a build still pending is cancelled: its group sealed, its open tasks cancelled
    let waiting = "e".repeat(40);
    gh.lock()
        .unwrap()
        .files
        .insert(waiting.clone(), taskcluster_yml(&queue));
    let (st, _) = deliver(
        &s,
        Some("push"),
        "d-cancel",
        &push(&waiting, "main"),
        Some(SECRET),
    )
    .await;
    assert_eq!(st, 204);
    let pending = eventually(Duration::from_secs(20), || async {
        let (_, b) = builds(
            &s,
            &format!("?organization=acme&repository=app&sha={waiting}"),
        )
        .await;
        let build = b["builds"].as_array()?.first()?.clone();
        let group = build["taskGroupId"].as_str()?.to_string();
        let listed = s.queue().listTaskGroup(&group, None, None).await.ok()?;
        (listed["tasks"].as_array()?.len() == 2).then_some(group)
    })
    .await;
    let (st, r) = s
        .root_call(
            "POST",
            &format!("/api/github/v1/builds/acme/app/cancel?sha={waiting}"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["builds"][0]["state"], "cancelled");
    assert_eq!(r["builds"][0]["taskGroupId"], json!(pending));
    let group = s.queue().getTaskGroup(&pending).await.unwrap();
    assert!(group["sealed"].is_string(), "{group}");
    let listed = s.queue().listTaskGroup(&pending, None, None).await.unwrap();
    for t in listed["tasks"].as_array().unwrap() {
        assert_eq!(t["status"]["state"], "exception", "{t}");
    }
    let (_, b) = builds(
        &s,
        &format!("?organization=acme&repository=app&sha={waiting}"),
    )
    .await;
    assert_eq!(b["builds"][0]["state"], "cancelled");
    let (st, _) = s
        .root_call("POST", "/api/github/v1/builds/acme/app/cancel", &json!({}))
        .await;
    assert_eq!(st, 404, "nothing pending is left");
    let (st, _) = builds(
        &s,
        "?organization=acme&repository=app&pullRequest=123456789012345678901234",
    )
    .await;
    assert_eq!(st, 400);

    // a template that asks for unbounded memory fails its own render, not the server
    let (st, e) = s
        .root_call(
            "POST",
            "/api/github/v1/taskcluster-yml",
            &json!({"body": "version: 1\ntasks: {$eval: 'range(0, 100000000000)'}\n"}),
        )
        .await;
    assert_eq!((st, e["code"].clone()), (400, json!("InputError")), "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("more memory or time"),
        "{e}"
    );
    let (st, _) = s.root_call("GET", "/api/github/v1/ping", &json!({})).await;
    assert_eq!(st, 200);

    // an App that takes unsigned webhooks is refused unless asked for
    let (code, stderr) = s
        .refused_start(&[(
            "TASKLEDGER_GITHUB_WEBHOOK_SECRET".to_string(),
            String::new(),
        )])
        .await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("--github-webhook-secret"), "{stderr}");

    // the projection rebuilds from the log to the same state, and the events read back
    let (ok, out, err) = crate::audit::cli(&s, &["replay", "--verify", "--projection", "github"]);
    assert!(ok, "{out}{err}");
    let (ok, text, err) = crate::audit::cli(&s, &["events", "tail", "--service", "github"]);
    assert!(ok, "{err}");
    for kind in [
        "WebhookReceived",
        "InstallationSet",
        "BuildCreated",
        "BuildStateChanged",
        "JobDone",
    ] {
        assert!(text.contains(kind), "{kind} in {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn render_taskcluster_yml_and_webhooks_without_an_app() {
    let s = Server::start(&[]).await;
    let queue = fresh_queue();
    let (st, r) = s
        .root_call(
            "POST",
            "/api/github/v1/taskcluster-yml",
            &json!({"body": taskcluster_yml(&queue), "organization": "acme", "repository": "app",
                    "fakeEvent": {"type": "github-push", "overrides": {"after": "f00"}}}),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let tasks = r["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0]["metadata"]["name"], "build", "dependencies first");
    assert_eq!(tasks[0]["payload"]["sha"], "f00");
    assert_eq!(tasks[1]["dependencies"], json!([tasks[0]["taskId"]]));
    assert_eq!(
        r["scopes"],
        json!([
            "assume:repo:github.com/acme/app:branch:main",
            "queue:route:statuses",
            "queue:scheduler-id:taskcluster-github"
        ])
    );
    let (st, e) = s
        .root_call(
            "POST",
            "/api/github/v1/taskcluster-yml",
            &json!({"body": "version: 0"}),
        )
        .await;
    assert_eq!((st, e["code"].clone()), (400, json!("InputError")));
    let (st, e) = s
        .root_call(
            "POST",
            "/api/github/v1/taskcluster-yml",
            &json!({"yaml": "x"}),
        )
        .await;
    assert_eq!(
        (st, e["code"].clone()),
        (400, json!("InputValidationError"))
    );

    // no secret configured: unsigned webhooks are taken, signed ones refused; without an
    // App the webhook is recorded and its job fails, saying why
    assert_eq!(
        deliver(
            &s,
            Some("push"),
            "d-1",
            &push(&"a".repeat(40), "main"),
            Some(SECRET)
        )
        .await,
        (400, "Server is not setup to handle secrets".to_string())
    );
    assert_eq!(
        deliver(
            &s,
            Some("push"),
            "d-1",
            &push(&"a".repeat(40), "main"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        deliver(&s, Some("star"), "d-2", &json!({"action": "created"}), None).await,
        (
            200,
            "No publisher available for X-GitHub-Event: star".to_string()
        )
    );
    let mut skipped = push(&"a".repeat(40), "main");
    skipped["head_commit"]["message"] = json!("docs [skip ci]");
    assert_eq!(
        deliver(&s, Some("push"), "d-3", &skipped, None).await,
        (200, "Skipping push event".to_string())
    );
    let text = eventually(Duration::from_secs(20), || async {
        let (_, text, _) = crate::audit::cli(&s, &["events", "tail", "--service", "github"]);
        text.contains("JobDone").then_some(text)
    })
    .await;
    assert!(text.contains("no GitHub App"), "{text}");
    let (_, b) = builds(&s, "").await;
    assert_eq!(b["builds"], json!([]));
}

#[tokio::test]
async fn comments_and_releases_become_builds() {
    let dir = std::env::temp_dir().join(format!("taskledger-it-gh2-{}", slugid::nice()));
    let (pem, public_key) = app_key(&dir);
    let gh: Gh = Arc::new(Mutex::new(Github {
        public_key,
        ..Github::default()
    }));
    let api = start_github(gh.clone()).await;
    let s = Server::start(&[
        ("TASKLEDGER_GITHUB_APP_ID", APP_ID),
        ("TASKLEDGER_GITHUB_PRIVATE_KEY", pem.to_str().unwrap()),
        ("TASKLEDGER_GITHUB_API_URL", api.as_str()),
        ("TASKLEDGER_GITHUB_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let queue = fresh_queue();
    let file = format!(
        r#"
version: 1
policy:
  allowComments: collaborators
tasks:
  - taskQueueId: {queue}
    deadline: {{$fromNow: '1 hour'}}
    payload:
      for: '${{tasks_for}}'
      comment: {{$if: 'tasks_for == "github-issue-comment"', then: '${{event.taskcluster_comment}}', else: ''}}
    metadata: {{name: '${{tasks_for}}', description: d, owner: 'dev@example.com', source: 'https://github.com/acme/app'}}
"#
    );
    let (head, tagged) = ("1".repeat(40), "2".repeat(40));
    {
        let mut g = gh.lock().unwrap();
        for at in ["main", head.as_str(), tagged.as_str()] {
            g.files.insert(at.into(), file.clone());
        }
        g.collaborators.insert("dev".into());
        g.commits.insert("main".into(), tagged.clone());
        g.pulls.insert(
            5,
            json!({"number": 5, "head": {"ref": "topic", "sha": head}, "base": {"ref": "main"}}),
        );
    }
    let scopes = json!([
        format!("queue:create-task:highest:{queue}"),
        "queue:create-task:project:none"
    ]);
    for role in ["pull-request", "release:published"] {
        let path = format!("/api/auth/v1/roles/repo:github.com%2Facme%2Fapp:{role}");
        let (st, _) = s
            .root_call(
                "PUT",
                &path,
                &json!({"description": role, "scopes": scopes}),
            )
            .await;
        assert_eq!(st, 200, "{role}");
    }
    let install = json!({"action": "created", "installation": {"id": INSTALLATION, "account": {"login": "acme"}}});
    assert_eq!(
        deliver(&s, Some("installation"), "d2-i", &install, Some(SECRET))
            .await
            .0,
        200
    );

    // a collaborator's `/taskcluster` comment on the open pull request: a build of its head
    let comment = |who: &str| {
        json!({"action": "created", "comment": {"body": "looks good\n/taskcluster run it", "user": {"login": who}},
               "issue": {"number": 5, "state": "open", "pull_request": {}},
               "repository": repository(), "installation": {"id": INSTALLATION}, "sender": {"login": who}})
    };
    assert_eq!(
        deliver(
            &s,
            Some("issue_comment"),
            "d2-c",
            &comment("dev"),
            Some(SECRET)
        )
        .await
        .0,
        204
    );
    let build = eventually(Duration::from_secs(20), || async {
        let (_, b) = builds(&s, "?organization=acme&repository=app&pullRequest=5").await;
        b["builds"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(build["sha"], json!(head));
    assert_eq!(build["eventType"], "issue_comment.created");
    let group = build["taskGroupId"].as_str().unwrap().to_string();
    let task = eventually(Duration::from_secs(20), || async {
        let l = s.queue().listTaskGroup(&group, None, None).await.ok()?;
        l["tasks"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(
        task["task"]["payload"],
        json!({"for": "github-issue-comment", "comment": "run it"})
    );

    // a stranger's comment: told why, and no build
    assert_eq!(
        deliver(
            &s,
            Some("issue_comment"),
            "d2-s",
            &comment("stranger"),
            Some(SECRET)
        )
        .await
        .0,
        204
    );
    let told = eventually(Duration::from_secs(20), || async {
        let g = gh.lock().unwrap();
        g.comments
            .iter()
            .find(|(on, b)| on == "5" && b.contains("does not run jobs for this comment"))
            .cloned()
    })
    .await;
    assert!(told.1.contains("collaborator"), "{}", told.1);

    // a release: a build of the commit its target names, as the release's role
    let release = json!({"action": "published",
        "release": {"tag_name": "v1.0", "target_commitish": "main", "name": "one", "draft": false, "prerelease": false},
        "repository": repository(), "installation": {"id": INSTALLATION}, "sender": {"login": "dev"}});
    assert_eq!(
        deliver(&s, Some("release"), "d2-r", &release, Some(SECRET))
            .await
            .0,
        204
    );
    let build = eventually(Duration::from_secs(20), || async {
        let (_, b) = builds(
            &s,
            &format!("?organization=acme&repository=app&sha={tagged}"),
        )
        .await;
        b["builds"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(build["eventType"], "release");
    let (_, b) = builds(&s, "?organization=acme&repository=app&pullRequest=5").await;
    assert_eq!(b["builds"].as_array().unwrap().len(), 1, "{b}");
    let _ = std::fs::remove_dir_all(&dir);
}
