//! The GitHub integration (`/api/github/v1`, reference/github.md).
//!
//! - `POST /github` takes GitHub's webhooks: the body checked, then the signature
//!   (`X-Hub-Signature-256`, or `X-Hub-Signature`) against the configured secrets, then the
//!   webhook sorted (`github::sort_webhook`). One to act on becomes a `WebhookReceived` on the
//!   github partition: the bridge publishes it on the integration's exchanges, and the job
//!   reactor (`job`) turns it into a build. Answers are plain text, as upstream's.
//! - `builds` and `cancelBuilds` read and cancel the builds; `repository`, `badge` and
//!   `latest` answer from the installations and builds this server recorded; `createStatus`
//!   and `createComment` call GitHub as the App; `renderTaskclusterYml` renders a file
//!   against a made-up event.
//! - Commit statuses follow the builds' task groups (`report`).

pub mod api;
mod job;
mod report;
pub mod sandbox;
pub mod tcyaml;

pub use job::{run_jobs, GITHUB_CLIENT};
pub use report::run_reporter;

use crate::error::{ApiError, ErrorCode};
use crate::hawk::Auth;
use crate::queue::call::*;
use crate::{AppState, Mount};
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::envelope::Actor;
use taskledger_core::github::{
    job_scopes, repo_role, sanitize, sort_webhook, verify_signature, Build, BuildState, Exchange,
    GithubCommand, SignatureError, Sorted, Webhook,
};
use taskledger_core::time::Millis;
use taskledger_projections::github_view::BuildFilter;

type St = State<Arc<AppState>>;

const WEBHOOK_SCHEMA: &str = "/schemas/github/v1/github-webhook-event.json#";
const STATUS_SCHEMA: &str = "/schemas/github/v1/create-status.json#";
const COMMENT_SCHEMA: &str = "/schemas/github/v1/create-comment.json#";
const RENDER_SCHEMA: &str = "/schemas/github/v1/render-taskcluster-yml-input.json#";

/// The GitHub integration's engine refuses nothing (`GithubRefusal`).
impl From<std::convert::Infallible> for ApiError {
    fn from(refusal: std::convert::Infallible) -> Self {
        match refusal {}
    }
}

/// Routes under `/api/github/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route("/github", post(webhook))
        .route("/builds", get(builds))
        .route("/builds/{owner}/{repo}/cancel", post(cancel_builds))
        .route("/repository/{owner}/{repo}/{branch}/badge.svg", get(badge))
        .route("/repository/{owner}/{repo}", get(repository))
        .route("/repository/{owner}/{repo}/{branch}/latest", get(latest))
        .route(
            "/repository/{owner}/{repo}/statuses/{sha}",
            post(create_status),
        )
        .route(
            "/repository/{owner}/{repo}/issues/{number}/comments",
            post(create_comment),
        )
        .route("/taskcluster-yml", post(render_taskcluster_yml))
}

/// A plain-text answer, as upstream's webhook handler gives.
fn plain(status: StatusCode, text: &str) -> Response {
    let mut r = (status, text.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// githubWebHookConsumer.
async fn webhook(
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("githubWebHookConsumer", json!({}))
        .with_body(&headers, &body)
        .run(async {
            let Some(event) = header_text(&headers, "x-github-event") else {
                return Ok(plain(StatusCode::BAD_REQUEST, "Missing X-GitHub-Event"));
            };
            let parsed = auth.body()?.input()?;
            // no delivery id: a fresh one, so that the ids its job derives are its own
            let event_id = header_text(&headers, "x-github-delivery")
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let text = String::from_utf8_lossy(&body);
            // the body's shape first, as upstream's input schema comes before its handler
            let sorted = sort_webhook(event, &event_id, &text, &parsed)
                .map_err(|e| ApiError::validation(WEBHOOK_SCHEMA, &[e]))?;
            match verify_signature(
                &st.github_webhook_secrets,
                header_text(&headers, "x-hub-signature-256"),
                header_text(&headers, "x-hub-signature"),
                &body,
            ) {
                Ok(()) => {}
                Err(e @ (SignatureError::NotSetUp | SignatureError::Missing)) => {
                    return Ok(plain(StatusCode::BAD_REQUEST, &e.to_string()));
                }
                Err(e @ SignatureError::Mismatch) => {
                    tracing::warn!(delivery = %event_id, event, "github: a webhook's signature does not match");
                    return Ok(plain(StatusCode::FORBIDDEN, &e.to_string()));
                }
            }
            let by = Actor::system("github-webhook");
            Ok(match sorted {
                Sorted::Ping => plain(StatusCode::OK, "Received ping event!"),
                Sorted::Installation {
                    owner,
                    installation_id,
                } => {
                    st.github
                        .execute(
                            by,
                            GithubCommand::Install {
                                owner,
                                installation_id,
                            },
                        )
                        .await?;
                    plain(StatusCode::OK, "Created table row!")
                }
                Sorted::Ignored(t) => plain(StatusCode::OK, &t),
                Sorted::Refused(t) => plain(StatusCode::BAD_REQUEST, &t),
                Sorted::Publish(w) => {
                    st.github.execute(by, GithubCommand::Receive(*w)).await?;
                    no_content()
                }
            })
        })
        .await
}

/// An `organization` or `repository` query value: `^([a-zA-Z0-9-_%]*)$`.
fn name_param(name: &str, v: &str) -> Result<(), ApiError> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '%'))
    {
        Ok(())
    } else {
        Err(ApiError::bad_param(name, v, "^([a-zA-Z0-9-_%]*)$"))
    }
}

fn pull_request_param(v: &str) -> Result<Option<u64>, ApiError> {
    if !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::bad_param("pullRequest", v, "^([0-9]*)$"));
    }
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_param("pullRequest", v, "^([0-9]*)$"))
}

/// The query's filter, with upstream's rules on which fields need which.
fn filter_of(
    organization: Option<String>,
    repository: Option<String>,
    q: &std::collections::HashMap<String, String>,
) -> Result<BuildFilter, ApiError> {
    let sha = q.get("sha").filter(|s| !s.is_empty()).cloned();
    let pull_request = match q.get("pullRequest") {
        Some(p) => pull_request_param(p)?,
        None => None,
    };
    if repository.is_some() && organization.is_none() {
        return Err(ApiError::input(
            "Must provide `organization` if querying `repository`",
        ));
    }
    if sha.is_some() && repository.is_none() {
        return Err(ApiError::input(
            "Must provide `repository` if querying `sha`",
        ));
    }
    if pull_request.is_some() && repository.is_none() {
        return Err(ApiError::input(
            "Must provide `repository` if querying `pullRequest`",
        ));
    }
    Ok(BuildFilter {
        organization,
        repository,
        sha,
        pull_request,
    })
}

fn build_json(b: &Build) -> Value {
    let mut v = json!({
        "organization": sanitize(&b.owner),
        "repository": sanitize(&b.repo),
        "sha": b.sha,
        "state": b.state.as_str(),
        "taskGroupId": b.task_group_id.to_string(),
        "eventType": b.event_type,
        "eventId": b.event_id,
        "created": b.created.to_rfc3339(),
        "updated": b.updated.to_rfc3339(),
    });
    if let Some(n) = b.pull_request {
        v["pullRequestNumber"] = json!(n);
    }
    v
}

/// builds.
async fn builds(uri: Uri, State(st): St, Extension(auth): Extension<Auth>) -> Response {
    Call::new("builds", json!({}))
        .run(async {
            auth.caller()?.require(&s("github:list-builds".into()))?;
            let q = query(
                &uri,
                &[
                    "continuationToken",
                    "limit",
                    "organization",
                    "repository",
                    "sha",
                    "pullRequest",
                ],
            )?;
            let named = |k: &str| -> Result<Option<String>, ApiError> {
                match q.get(k).filter(|v| !v.is_empty()) {
                    Some(v) => name_param(k, v).map(|()| Some(v.clone())),
                    None => Ok(None),
                }
            };
            let filter = filter_of(named("organization")?, named("repository")?, &q)?;
            let after = decode_token(&q)?;
            let (rows, more) = st
                .github
                .view()
                .builds(&filter, after.as_deref(), limit(&q))?;
            let mut out = json!({ "builds": rows.iter().map(build_json).collect::<Vec<_>>() });
            if let Some(k) = more {
                out["continuationToken"] = json!(encode_token(&k));
            }
            Ok(ok(out))
        })
        .await
}

/// cancelBuilds: every pending build of the repository (and commit or pull request).
async fn cancel_builds(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    Call::new("cancelBuilds", json!({ "owner": owner, "repo": repo }))
        .run(async {
            auth.caller()?
                .require(&s(format!("github:cancel-builds:{owner}:{repo}")))?;
            let q = query(&uri, &["sha", "pullRequest"])?;
            let filter = filter_of(Some(sanitize(&owner)), Some(sanitize(&repo)), &q)?;
            let mut pending = st.github.view().all_builds(&filter)?;
            pending.retain(|b| b.state == BuildState::Pending);
            if pending.is_empty() {
                return Err(ApiError::not_found("No cancellable builds found"));
            }
            for b in &pending {
                job::cancel_build(&st, b).await?;
            }
            let builds: Vec<Value> = pending
                .iter()
                .map(|b| {
                    let mut v = build_json(b);
                    v["state"] = json!(BuildState::Cancelled.as_str());
                    v
                })
                .collect();
            Ok(ok(json!({ "builds": builds })))
        })
        .await
}

/// The newest build of a branch this server recorded.
fn latest_build(
    st: &AppState,
    owner: &str,
    repo: &str,
    branch: &str,
) -> Result<Option<Build>, ApiError> {
    let filter = BuildFilter {
        organization: Some(sanitize(owner)),
        repository: Some(sanitize(repo)),
        ..BuildFilter::default()
    };
    let mut newest: Option<Build> = None;
    for b in st.github.view().all_builds(&filter)? {
        if b.branch.as_deref() == Some(branch)
            && newest.as_ref().is_none_or(|n| b.created >= n.created)
        {
            newest = Some(b);
        }
    }
    Ok(newest)
}

/// badge: an SVG of the branch's newest build's state.
async fn badge(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((owner, repo, branch)): Path<(String, String, String)>,
) -> Response {
    Call::new("badge", json!({ "owner": owner, "repo": repo, "branch": branch }))
        .run(async {
            auth.caller()?
                .require(&s(format!("github:get-badge:{owner}:{repo}:{branch}")))?;
            let status = if st.github.view().installation(&owner)?.is_none() {
                "nogithub"
            } else {
                match latest_build(&st, &owner, &repo, &branch)? {
                    None => "newrepo",
                    Some(b) => b.state.as_str(),
                }
            };
            let (label, color) = match status {
                "success" => ("passing", "#4c1"),
                "failure" => ("failing", "#e05d44"),
                "pending" => ("pending", "#dfb317"),
                "error" => ("error", "#e05d44"),
                "cancelled" => ("cancelled", "#9f9f9f"),
                _ => ("unknown", "#9f9f9f"),
            };
            let svg = format!(
                r##"<svg xmlns="http://www.w3.org/2000/svg" width="128" height="20" role="img" aria-label="taskcluster: {label}"><rect width="70" height="20" fill="#555"/><rect x="70" width="58" height="20" fill="{color}"/><g fill="#fff" font-family="Verdana,sans-serif" font-size="11"><text x="6" y="14">taskcluster</text><text x="75" y="14">{label}</text></g></svg>"##
            );
            let mut r = (StatusCode::OK, svg).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, must-revalidate"),
            );
            h.insert("x-taskcluster-status", HeaderValue::from_static(status));
            Ok(r)
        })
        .await
}

/// latest: a redirect to the branch's newest build's task group.
async fn latest(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((owner, repo, branch)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "latest",
        json!({ "owner": owner, "repo": repo, "branch": branch }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("github:latest-status:{owner}:{repo}:{branch}")))?;
        let Some(b) = latest_build(&st, &owner, &repo, &branch)? else {
            return Err(ApiError::not_found("Status not found"));
        };
        let target = format!("{}/tasks/groups/{}", st.public_url, b.task_group_id);
        let mut r = StatusCode::FOUND.into_response();
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&target).map_err(ApiError::internal)?,
        );
        Ok(r)
    })
    .await
}

/// repository: whether the App is installed for the repository's owner (and, when this
/// server is the App, whether GitHub shows it the repository).
async fn repository(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    Call::new("repository", json!({ "owner": owner, "repo": repo }))
        .run(async {
            auth.caller()?
                .require(&s(format!("github:get-repository:{owner}:{repo}")))?;
            let installed = match (st.github.view().installation(&owner)?, &st.github_app) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(inst), Some(app)) => app
                    .repository(inst, &owner, &repo)
                    .await
                    .map_err(github_failure)?
                    .is_some(),
            };
            Ok(ok(json!({ "installed": installed })))
        })
        .await
}

/// A GitHub refusal as the API reports it.
fn github_failure(e: api::GithubError) -> ApiError {
    match e.status {
        Some(403) => ApiError::new(ErrorCode::ForbiddenByGithub, e.message),
        Some(404) => ApiError::not_found(e.message),
        Some(400..=499) => ApiError::input(e.message),
        Some(_) | None => ApiError::internal(e),
    }
}

/// The App and the owner's installation, or the 404 `what` upstream answers without them.
fn installation(
    st: &AppState,
    owner: &str,
    what: &str,
) -> Result<(Arc<api::GithubApp>, u64), ApiError> {
    let inst = st.github.view().installation(owner)?;
    match (st.github_app.clone(), inst) {
        (Some(app), Some(inst)) => Ok((app, inst)),
        _ => Err(ApiError::not_found(what)),
    }
}

/// createStatus.
async fn create_status(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(
        "createStatus",
        json!({ "owner": owner, "repo": repo, "sha": sha }),
    )
    .with_body(&headers, &body)
    .run(async {
        let body = auth.body()?;
        let caller = auth.caller()?;
        caller.require(&s(format!("github:create-status:{owner}/{repo}")))?;
        no_query(&uri)?;
        let input = body.input()?;
        let keys = ["state", "target_url", "description", "context"];
        let obj = crate::auth::check_keys(&input, STATUS_SCHEMA, &keys, &["state"])?;
        let mut errors = Vec::new();
        let state = text_field(&obj, "", "state", 0, 0, true, &mut errors);
        if state
            .as_deref()
            .is_some_and(|s| !["pending", "success", "error", "failure"].contains(&s))
        {
            errors.push("data/state must be equal to one of the allowed values".into());
        }
        for k in ["target_url", "description", "context"] {
            text_field(&obj, "", k, 0, 0, false, &mut errors);
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(STATUS_SCHEMA, &errors));
        }
        let (app, inst) = installation(&st, &owner, "Installation not found")?;
        let mut status = Value::Object(obj.clone());
        status["context"] = obj.get("context").cloned().unwrap_or(json!("default"));
        app.create_status(inst, &owner, &repo, &sha, &status)
            .await
            .map_err(github_failure)?;
        Ok(ok(json!({})))
    })
    .await
}

/// createComment.
async fn create_comment(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(
        "createComment",
        json!({ "owner": owner, "repo": repo, "number": number }),
    )
    .with_body(&headers, &body)
    .run(async {
        let body = auth.body()?;
        let caller = auth.caller()?;
        caller.require(&s(format!("github:create-comment:{owner}/{repo}")))?;
        no_query(&uri)?;
        let n: u64 = number
            .parse()
            .map_err(|_| ApiError::bad_param("number", &number, "^[0-9]+$"))?;
        let input = body.input()?;
        let obj = crate::auth::check_keys(&input, COMMENT_SCHEMA, &["body"], &["body"])?;
        let mut errors = Vec::new();
        let text = text_field(&obj, "", "body", 1, 0, true, &mut errors);
        let text = match text {
            Some(t) if errors.is_empty() => t,
            _ => return Err(ApiError::validation(COMMENT_SCHEMA, &errors)),
        };
        let (app, inst) = installation(&st, &owner, "Issue not found")?;
        app.create_comment(inst, &owner, &repo, n, &text)
            .await
            .map_err(github_failure)?;
        Ok(ok(json!({})))
    })
    .await
}

/// The body of a made-up webhook of `tasks_for`, `overrides` merged over it.
fn fake_event(tasks_for: &str, owner: &str, repo: &str, action: &str, overrides: &Value) -> Value {
    let repository = json!({
        "name": repo,
        "full_name": format!("{owner}/{repo}"),
        "owner": { "login": owner, "name": owner },
        "clone_url": format!("https://github.com/{owner}/{repo}.git"),
        "html_url": format!("https://github.com/{owner}/{repo}"),
        "default_branch": "main",
    });
    let sha = "0000000000000000000000000000000000000000";
    let mut event = match tasks_for {
        "github-pull-request" | "github-pull-request-untrusted" => json!({
            "action": action,
            "number": 1,
            "pull_request": {
                "number": 1,
                "title": "A pull request",
                "html_url": format!("https://github.com/{owner}/{repo}/pull/1"),
                "user": { "login": "octocat", "id": 1 },
                "head": { "ref": "feature", "sha": sha, "repo": repository.clone(), "user": { "login": "octocat" } },
                "base": { "ref": "main", "sha": sha, "repo": repository.clone(), "user": { "login": owner } },
            },
            "repository": repository,
            "sender": { "login": "octocat", "id": 1 },
        }),
        "github-release" => json!({
            "action": action,
            "release": {
                "tag_name": "v1.0.0",
                "target_commitish": "main",
                "name": "v1.0.0",
                "draft": false,
                "prerelease": false,
                "html_url": format!("https://github.com/{owner}/{repo}/releases/tag/v1.0.0"),
            },
            "repository": repository,
            "sender": { "login": "octocat", "id": 1 },
        }),
        _ => json!({
            "ref": "refs/heads/main",
            "before": sha,
            "after": sha,
            "head_commit": { "id": sha, "message": "A commit" },
            "repository": repository,
            "pusher": { "name": "octocat" },
            "sender": { "login": "octocat", "id": 1 },
        }),
    };
    merge(&mut event, overrides);
    event
}

/// `over` merged into `base`, objects key by key (a missing `over`, null, changes nothing).
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// renderTaskclusterYml.
async fn render_taskcluster_yml(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("renderTaskclusterYml", json!({}))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            auth.caller()?;
            no_query(&uri)?;
            let input = body.input()?;
            let keys = ["body", "organization", "repository", "fakeEvent"];
            let obj = crate::auth::check_keys(&input, RENDER_SCHEMA, &keys, &["body"])?;
            let mut errors = Vec::new();
            let text = text_field(&obj, "", "body", 0, 0, true, &mut errors);
            let owner = text_field(&obj, "", "organization", 0, 0, false, &mut errors)
                .unwrap_or_else(|| "taskcluster".into());
            let repo = text_field(&obj, "", "repository", 0, 0, false, &mut errors)
                .unwrap_or_else(|| "taskcluster".into());
            let fake = obj.get("fakeEvent").cloned().unwrap_or(json!({}));
            if !fake.is_object() {
                errors.push("data/fakeEvent must be object".into());
            }
            let (Some(text), true) = (text, errors.is_empty()) else {
                return Err(ApiError::validation(RENDER_SCHEMA, &errors));
            };
            let tasks_for = fake["type"].as_str().unwrap_or("github-push").to_string();
            let action = fake["action"].as_str().unwrap_or(match tasks_for.as_str() {
                "github-release" => "published",
                _ => "opened",
            });
            let event = fake_event(&tasks_for, &owner, &repo, action, &fake["overrides"]);
            let webhook = Webhook {
                event_id: uuid::Uuid::new_v4().to_string(),
                event: String::new(),
                exchange: Exchange::Push,
                owner: owner.clone(),
                repo: repo.clone(),
                action: Some(action.to_string()),
                installation_id: 0,
                tasks_for: tasks_for.clone(),
                branch: event["ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("refs/heads/"))
                    .map(str::to_string),
                comment: None,
                check_run_id: None,
                check_suite_id: None,
                body: event.to_string(),
            };
            let file = tcyaml::parse(&text).map_err(ApiError::input)?;
            let ctx = tcyaml::Context {
                tasks_for: &tasks_for,
                event: &event,
                event_id: &webhook.event_id,
                root_url: &st.public_url,
                now: Millis::now(),
            };
            let rendered = tcyaml::render_sandboxed(&file, &ctx)
                .await
                .map_err(ApiError::input)?;
            let tasks: Vec<Value> = rendered
                .tasks
                .into_iter()
                .map(|(id, mut t)| {
                    t["taskId"] = json!(id.to_string());
                    t
                })
                .collect();
            let scopes = job_scopes(
                repo_role(&owner, &repo, &tasks_for, &webhook),
                rendered.checks,
            );
            Ok(ok(json!({ "tasks": tasks, "scopes": scopes })))
        })
        .await
}
