//! The job reactor (reference/github.md §2): each webhook waiting in the github projection
//! becomes a build: its commit's `.taskcluster.yml` fetched, the pull-request and comment
//! policies applied, the file rendered, the build row written and the tasks created through
//! the queue's createTask path as the repository's role; then a `pending` commit status, and
//! the job's `JobDone` (which the bridge publishes as `task-group-creation-requested`).
//!
//! A job that fails on the way (GitHub or the queue unreachable) is tried again, with a
//! growing pause, and given up after `MAX_TRIES`; one that fails on its input (a bad file,
//! scopes the role lacks) is reported to the author as a comment and recorded as failed.
//! A job retried after a crash renders the same tasks (`tcyaml`), so it creates nothing twice.

use super::api::{GithubApp, GithubError};
use super::tcyaml;
use crate::error::ApiError;
use crate::hawk::Caller;
use crate::AppState;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_core::auth::ClientSource;
use taskledger_core::envelope::Actor;
use taskledger_core::github::{
    job_scopes, repo_role, Build, BuildState, GithubCommand, JobOutcome, Webhook, SCHEDULER_ID,
};
use taskledger_core::ids::Slug;
use taskledger_projections::github_view::Queued;

/// The client the integration creates tasks as (its scopes: the repository's role's).
pub const GITHUB_CLIENT: &str = "static/taskcluster/github";

/// What commit statuses and comments are signed with (upstream's `APPLICATION_NAME`).
pub const APPLICATION_NAME: &str = "Taskcluster";

/// Tries of a job that fails on the way before it is given up.
const MAX_TRIES: u32 = 8;

/// Jobs read at a time.
const PASS: usize = 64;

/// Why a job stopped short.
enum Stop {
    /// Worth another try later.
    Again(String),
    /// Done with this outcome.
    Outcome(JobOutcome),
}

impl From<GithubError> for Stop {
    fn from(e: GithubError) -> Stop {
        if e.is_refusal() {
            Stop::Outcome(JobOutcome::Failed {
                message: e.to_string(),
            })
        } else {
            Stop::Again(e.to_string())
        }
    }
}

fn skipped(reason: impl Into<String>) -> Stop {
    Stop::Outcome(JobOutcome::Skipped {
        reason: reason.into(),
    })
}

#[derive(Default)]
struct Tries {
    count: u32,
    not_before: Option<Instant>,
    /// The build the job started, once it did.
    started: Option<Slug>,
}

/// Runs jobs while this process writes the github partition.
pub async fn run_jobs(st: Arc<AppState>) {
    let mut tries: HashMap<u64, Tries> = HashMap::new();
    loop {
        if !jobs_once(&st, &mut tries).await {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One pass over the waiting webhooks; whether it did anything.
async fn jobs_once(st: &AppState, tries: &mut HashMap<u64, Tries>) -> bool {
    // a job creates its tasks through this node's queue engine: it runs where both
    // partitions are written (as a hook's fire)
    if !st.github.role().is_writer() || !st.engine.role().is_writer() {
        tries.clear();
        return false;
    }
    let waiting = tries
        .values()
        .filter(|t| t.not_before.is_some_and(|at| Instant::now() < at))
        .count();
    let queued = match st.github.view().queued(PASS + waiting) {
        Ok(q) => q,
        Err(e) => {
            tracing::warn!(error = %e, "github: reading the waiting webhooks");
            return false;
        }
    };
    tries.retain(|offset, _| queued.iter().any(|q| q.offset == *offset));
    let mut worked = false;
    let mut recording = Vec::new();
    for q in queued {
        let t = tries.entry(q.offset).or_default();
        if t.not_before.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        worked = true;
        let outcome = match job(st, &q, &mut t.started).await {
            Ok(outcome) => outcome,
            Err(Stop::Outcome(outcome)) => outcome,
            Err(Stop::Again(why)) => {
                t.count += 1;
                if t.count < MAX_TRIES {
                    let pause = Duration::from_secs(1 << t.count.min(6));
                    tracing::warn!(delivery = %q.webhook.event_id, error = %why, "github: job failed, trying again in {pause:?}");
                    t.not_before = Some(Instant::now() + pause);
                    continue;
                }
                // the build it started (if it did) will not get the rest of its tasks
                if let Some(group) = t.started {
                    let set = GithubCommand::SetBuildState {
                        task_group_id: group,
                        state: BuildState::Error,
                    };
                    if let Err(e) = st.github.execute(Actor::system(GITHUB_CLIENT), set).await {
                        tracing::warn!(error = %e, "github: recording a build's error");
                        return false;
                    }
                }
                JobOutcome::Failed {
                    message: format!("given up after {MAX_TRIES} tries: {why}"),
                }
            }
        };
        // recorded in the log (and, for the input's faults, told the author): not a fault of
        // this server's
        if let JobOutcome::Failed { message } = &outcome {
            tracing::info!(delivery = %q.webhook.event_id, "github: job failed: {message}");
        }
        let done = GithubCommand::Done {
            queued: q.offset,
            event_id: q.webhook.event_id.clone(),
            outcome,
        };
        // recorded while the next job runs: the ends in flight together share a durable
        // write (one at a time, each waited for, they held jobs to a few hundred a second)
        let engine = st.github.clone();
        recording.push((
            q.offset,
            tokio::spawn(async move { engine.execute(Actor::system(GITHUB_CLIENT), done).await }),
        ));
    }
    // the next pass reads the waiting webhooks only after this one's ends are recorded
    let mut recorded = true;
    for (offset, handle) in recording {
        match handle.await {
            Ok(Ok(_)) => {
                tries.remove(&offset);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "github: recording a job's end");
                recorded = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "github: recording a job's end");
                recorded = false;
            }
        }
    }
    worked && recorded
}

fn body_text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `event_type`'s kind for a status's context: `pull_request`, `push`, ...
fn event_kind(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// The comment an error leaves for the author (upstream's wording).
pub fn error_comment(error: &str) -> String {
    format!("<details><summary>Uh oh! Looks like an error!</summary>\n\n{error}\n\n</details>")
}

/// One webhook's job.
async fn job(st: &AppState, q: &Queued, started: &mut Option<Slug>) -> Result<JobOutcome, Stop> {
    let w = &q.webhook;
    let Some(app) = st.github_app.as_deref() else {
        return Err(Stop::Outcome(JobOutcome::Failed {
            message: "this server has no GitHub App (--github-app-id, --github-private-key): the webhook was recorded and published, and no task was created".into(),
        }));
    };
    if w.exchange == taskledger_core::github::Exchange::Rerun {
        return Err(skipped(
            "check runs are not reported by this server, so a rerequested check run names no task to rerun",
        ));
    }
    let body: Value = serde_json::from_str(&w.body).unwrap_or(Value::Null);
    let inst = w.installation_id;
    let (owner, repo) = (w.owner.as_str(), w.repo.as_str());
    let mut event = body.clone();
    let mut branch = w.branch.clone();
    // the pull request a build is of (a push's and a release's are of none)
    let pull_number = match w.event.as_str() {
        "pull_request" => body["number"].as_u64(),
        "issue_comment" => body.pointer("/issue/number").and_then(Value::as_u64),
        _ => None,
    };
    let sha = match w.event.as_str() {
        "pull_request" => body_text(&body, "/pull_request/head/sha").map(str::to_string),
        "push" if body["deleted"] == json!(true) => {
            return Err(skipped("the push deleted its branch"));
        }
        "push" => body_text(&body, "/after").map(str::to_string),
        "release" => {
            let target = body_text(&body, "/release/target_commitish").unwrap_or_default();
            app.commit_sha(inst, owner, repo, target).await?
        }
        "issue_comment" => {
            let number = pull_number.unwrap_or_default();
            let Some(pr) = app.pull_request(inst, owner, repo, number).await? else {
                return Err(skipped(format!("pull request {number} not found")));
            };
            let sha = body_text(&pr, "/head/sha").map(str::to_string);
            branch = body_text(&pr, "/head/ref").map(str::to_string);
            event["pull_request"] = pr;
            event["taskcluster_comment"] = json!(w.comment);
            sha
        }
        other => return Err(skipped(format!("no job for a {other} webhook"))),
    };
    let Some(sha) = sha else {
        return Err(skipped("the webhook names no commit"));
    };
    let report = |text: String| Reporter {
        app,
        w,
        sha: sha.clone(),
        pull_number,
        text,
    };
    let Some(text) = app
        .file(inst, owner, repo, ".taskcluster.yml", &sha)
        .await?
    else {
        return Err(skipped(format!("no .taskcluster.yml at {sha}")));
    };
    let file = match tcyaml::parse(&text) {
        Ok(f) => f,
        Err(e) => return Err(report(e).fail().await),
    };
    let mut tasks_for = w.tasks_for.clone();
    if tasks_for == "github-pull-request" || tasks_for == "github-issue-comment" {
        // the policy is the default branch's, never the pull request's own
        let default = app.default_branch(inst, owner, repo).await?;
        let policy = match app
            .file(inst, owner, repo, ".taskcluster.yml", &default)
            .await?
        {
            None => None,
            Some(text) => match tcyaml::parse(&text).and_then(|f| tcyaml::policy(&f)) {
                Ok(p) => Some(p),
                Err(e) => {
                    return Err(report(format!("the default branch's {e}")).fail().await);
                }
            },
        };
        if tasks_for == "github-issue-comment" {
            let commenter = body_text(&body, "/comment/user/login").unwrap_or_default();
            let allowed = policy.as_ref().is_some_and(|p| p.allow_comments)
                && !commenter.is_empty()
                && app.is_collaborator(inst, owner, repo, commenter).await?;
            if !allowed {
                let why = "Taskcluster does not run jobs for this comment: the default branch's `.taskcluster.yml` must set `policy.allowComments: collaborators`, and the commenter must be a collaborator.";
                report(why.into()).comment().await;
                return Err(skipped(why));
            }
        } else {
            let policy = policy.map_or("collaborators_quiet".to_string(), |p| p.pull_requests);
            if policy != "public" && !trusted_pull_request(app, w, &body).await? {
                match policy.as_str() {
                    "public_restricted" => tasks_for = "github-pull-request-untrusted".into(),
                    "collaborators" => {
                        if w.action.as_deref() == Some("opened") {
                            report("No Taskcluster jobs started for this pull request\nThe `allowPullRequests` configuration for this repository (in `.taskcluster.yml` on the default branch) does not allow starting tasks for this pull request.".into())
                                .comment_plain()
                                .await;
                        }
                        return Err(skipped("the pull request's author is not trusted"));
                    }
                    _ => return Err(skipped("the pull request's author is not trusted")),
                }
            }
        }
    }
    let ctx = tcyaml::Context {
        tasks_for: &tasks_for,
        event: &event,
        event_id: &w.event_id,
        root_url: &st.public_url,
        now: q.received,
    };
    let rendered = match tcyaml::render_sandboxed(&file, &ctx).await {
        Ok(r) => r,
        Err(e) => return Err(report(e).fail().await),
    };
    if !rendered.hooks.is_empty() {
        report(format!(
            "`.taskcluster.yml` names hooks ({}), which this server does not trigger from GitHub events: only its `tasks` were created.",
            rendered.hooks.join(", ")
        ))
        .comment()
        .await;
    }
    let Some((_, first)) = rendered.tasks.first() else {
        return Err(skipped(format!(
            "`.taskcluster.yml` has no tasks for {tasks_for}"
        )));
    };
    let group: Slug = first["taskGroupId"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(Slug::NIL);
    let routes: Vec<String> = first["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let build = Build {
        owner: owner.to_string(),
        repo: repo.to_string(),
        sha: sha.clone(),
        branch,
        task_group_id: group,
        state: BuildState::Pending,
        installation_id: inst,
        event_type: w.event_type(),
        event_id: w.event_id.clone(),
        pull_request: pull_number,
        checks: rendered.checks,
        tasks: None,
        created: q.received,
        updated: q.received,
    };
    if rendered.auto_cancel && w.event == "pull_request" {
        cancel_earlier(st, &build).await;
    }
    st.github
        .execute(
            Actor::system(GITHUB_CLIENT),
            GithubCommand::StartBuild(build.clone()),
        )
        .await
        .map_err(|e| Stop::Again(e.to_string()))?;
    *started = Some(group);
    let caller = Caller {
        client_id: Some(GITHUB_CLIENT.to_string()),
        scopes: st.clients.expand(job_scopes(
            repo_role(owner, repo, &tasks_for, w),
            rendered.checks,
        )),
    };
    for (id, task) in &rendered.tasks {
        // cancelled meanwhile (cancelBuilds, or a newer push to the pull request): no more
        let now = st
            .github
            .view()
            .build(&group)
            .map_err(|e| Stop::Again(e.to_string()))?;
        if now.is_some_and(|b| b.state == BuildState::Cancelled) {
            return Err(skipped(
                "the build was cancelled while its tasks were being created",
            ));
        }
        if let Err(e) = crate::queue::tasks::create(st, &caller, *id, task).await {
            if e.status().is_server_error() {
                return Err(Stop::Again(e.message));
            }
            let set = GithubCommand::SetBuildState {
                task_group_id: group,
                state: BuildState::Error,
            };
            let _ = st.github.execute(Actor::system(GITHUB_CLIENT), set).await;
            return Err(report(create_error(&e)).fail().await);
        }
    }
    if !rendered.checks {
        let status = json!({
            "state": "pending",
            "target_url": format!("{}/tasks/groups/{group}", st.public_url),
            "description": format!("TaskGroup: Pending (for {})", build.event_type),
            "context": format!("{APPLICATION_NAME} ({})", event_kind(&build.event_type)),
        });
        if let Err(e) = app.create_status(inst, owner, repo, &sha, &status).await {
            tracing::warn!(error = %e, "github: setting a pending status");
        }
    }
    Ok(JobOutcome::Created {
        task_group_id: group,
        tasks: rendered.tasks.len() as u32,
        routes,
        owner: owner.to_string(),
        repo: repo.to_string(),
    })
}

/// A createTask refusal as the author reads it.
fn create_error(e: &ApiError) -> String {
    format!(
        "Taskcluster could not create the tasks: {} {}",
        e.code_str(),
        e.message
    )
}

/// Whether a pull request's author may run tasks: a collaborator, and the head repository's
/// owner is the base's or a collaborator too.
async fn trusted_pull_request(
    app: &GithubApp,
    w: &Webhook,
    body: &Value,
) -> Result<bool, GithubError> {
    let (inst, owner, repo) = (w.installation_id, w.owner.as_str(), w.repo.as_str());
    let author = body_text(body, "/pull_request/user/login")
        .or_else(|| body_text(body, "/pull_request/head/user/login"))
        .unwrap_or_default();
    // no login is nobody's (GitHub's collaborators/ without one lists them all)
    if author.is_empty() || !app.is_collaborator(inst, owner, repo, author).await? {
        return Ok(false);
    }
    let head_owner = body_text(body, "/pull_request/head/user/login").unwrap_or_default();
    if head_owner.is_empty() {
        return Ok(false);
    }
    let base_owner = body_text(body, "/pull_request/base/user/login").unwrap_or(owner);
    Ok(head_owner.eq_ignore_ascii_case(base_owner)
        || app.is_collaborator(inst, owner, repo, head_owner).await?)
}

/// Seals and cancels the pending builds of the same pull request that an earlier webhook of
/// the same family (`opened`/`synchronize`/`reopened`) started.
async fn cancel_earlier(st: &AppState, build: &Build) {
    let filter = taskledger_projections::github_view::BuildFilter {
        organization: Some(taskledger_core::github::sanitize(&build.owner)),
        repository: Some(taskledger_core::github::sanitize(&build.repo)),
        sha: None,
        pull_request: build.pull_request,
    };
    let family = |t: &str| {
        matches!(
            t,
            "pull_request.opened" | "pull_request.synchronize" | "pull_request.reopened"
        )
    };
    if !family(&build.event_type) {
        return;
    }
    let earlier = match st.github.view().all_builds(&filter) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "github: reading earlier builds");
            return;
        }
    };
    for b in earlier {
        if b.task_group_id != build.task_group_id
            && b.state == BuildState::Pending
            && family(&b.event_type)
        {
            if let Err(e) = cancel_build(st, &b).await {
                tracing::warn!(error = %e.message, "github: cancelling an earlier build");
            }
        }
    }
}

/// Seals and cancels a build's group as the repository's role; marks the build cancelled.
pub(super) async fn cancel_build(st: &AppState, b: &Build) -> Result<(), ApiError> {
    // the scopes upstream's queue client is limited to for this (the queue calls below
    // check none: they are the events' actor)
    let caller = Caller {
        client_id: Some(GITHUB_CLIENT.to_string()),
        scopes: st.clients.expand(vec![
            format!("assume:repo:github.com/{}/{}:*", b.owner, b.repo),
            format!("queue:seal-task-group:{SCHEDULER_ID}/*"),
            format!("queue:cancel-task-group:{SCHEDULER_ID}/*"),
        ]),
    };
    // the build first, so the status reporter never reads the cancelled tasks as a failure
    st.github
        .execute(
            Actor::system(GITHUB_CLIENT),
            GithubCommand::SetBuildState {
                task_group_id: b.task_group_id,
                state: BuildState::Cancelled,
            },
        )
        .await?;
    // only a group of this integration's (a file may name any taskGroupId)
    let ours = st
        .engine
        .view()
        .group(&b.task_group_id)?
        .is_some_and(|g| g.scheduler_id == SCHEDULER_ID);
    if ours && crate::queue::groups::seal(st, &caller, &b.task_group_id).await? {
        crate::queue::groups::cancel_members(st, &caller, &b.task_group_id).await?;
    }
    Ok(())
}

/// Tells the author what went wrong: a comment on the pull request, or on the commit.
struct Reporter<'a> {
    app: &'a GithubApp,
    w: &'a Webhook,
    sha: String,
    pull_number: Option<u64>,
    text: String,
}

impl Reporter<'_> {
    async fn post(&self, body: &str) {
        let (inst, owner, repo) = (self.w.installation_id, &self.w.owner, &self.w.repo);
        let posted = match self.pull_number {
            Some(n) => self.app.create_comment(inst, owner, repo, n, body).await,
            None => {
                self.app
                    .create_commit_comment(inst, owner, repo, &self.sha, body)
                    .await
            }
        };
        if let Err(e) = posted {
            tracing::warn!(error = %e, "github: commenting");
        }
    }

    /// The text as an error comment.
    async fn comment(&self) {
        self.post(&error_comment(&self.text)).await
    }

    /// The text as it is.
    async fn comment_plain(&self) {
        self.post(&self.text).await
    }

    /// The error comment, and the job's failure.
    async fn fail(self) -> Stop {
        self.comment().await;
        Stop::Outcome(JobOutcome::Failed { message: self.text })
    }
}
