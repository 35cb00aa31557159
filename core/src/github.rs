//! The GitHub integration's domain (reference/github.md): webhooks checked and sorted, the
//! builds they start, and the installations that let taskledger act on a repository.
//!
//! Every change is a `GithubEvent` on the github partition. `WebhookReceived` records a
//! webhook the service publishes (`pull-request`, `push`, `release` or `rerun`) and queues it
//! for the job reactor, which turns it into tasks and records what came of it with
//! `JobDone`; a build (`BuildCreated`, `BuildStateChanged`) is the task group one webhook
//! started, by repository and commit. `InstallationSet` maps an account to its GitHub App
//! installation.
//!
//! Rendering a job is deterministic: the time it is rendered at is the webhook's arrival and
//! every id it makes is derived from the webhook's delivery id (`derived_slug`), so a job the
//! reactor retries after a crash creates the same tasks (createTask is idempotent) rather than
//! a second group.

use crate::ids::Slug;
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Topic of the GitHub integration's events.
pub const GITHUB_TOPIC: &str = "taskledger.github";

/// The `schedulerId` of the tasks the integration creates.
pub const SCHEDULER_ID: &str = "taskcluster-github";

/// How a pull request's title or a push's commit message asks for no CI.
pub fn asks_to_skip_ci(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("[skip ci]") || lower.contains("[ci skip]")
}

/// A name as routing keys carry it: only `[a-zA-Z0-9-_.]` kept, and `.` written `%`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .map(|c| if c == '.' { '%' } else { c })
        .collect()
}

/// The exchange a webhook is published on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Exchange {
    PullRequest,
    Push,
    Release,
    Rerun,
}

impl Exchange {
    /// The exchange's name after `exchange/taskcluster-github/v1/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Exchange::PullRequest => "pull-request",
            Exchange::Push => "push",
            Exchange::Release => "release",
            Exchange::Rerun => "rerun",
        }
    }
}

/// A webhook the service publishes and the job reactor acts on.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Webhook {
    /// `X-GitHub-Delivery` ("Unknown" when absent).
    pub event_id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    pub exchange: Exchange,
    /// The repository's owner and name as GitHub spells them.
    pub owner: String,
    pub repo: String,
    /// The pull request's (or the comment's) action; a release's.
    pub action: Option<String>,
    pub installation_id: u64,
    pub tasks_for: String,
    pub branch: Option<String>,
    /// The `/taskcluster <command>` of a comment.
    pub comment: Option<String>,
    pub check_run_id: Option<u64>,
    pub check_suite_id: Option<u64>,
    /// The webhook's JSON body as it came.
    pub body: String,
}

impl Webhook {
    /// The owner's name in routing keys and messages.
    pub fn organization(&self) -> String {
        sanitize(&self.owner)
    }

    pub fn repository(&self) -> String {
        sanitize(&self.repo)
    }

    /// `event.type` (upstream's detail): `pull_request.<action>`, `push`, `tag`, `release`,
    /// `issue_comment.<action>`.
    pub fn event_type(&self) -> String {
        let action = self.action.as_deref().unwrap_or("");
        match (self.event.as_str(), self.exchange) {
            ("pull_request", _) => format!("pull_request.{action}"),
            ("issue_comment", _) => format!("issue_comment.{action}"),
            ("push", _) if self.pushed_ref().starts_with("refs/tags/") => "tag".into(),
            ("push", _) => "push".into(),
            ("release", _) => "release".into(),
            (_, _) => self.event.clone(),
        }
    }

    fn pushed_ref(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|b| b.get("ref").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    }
}

/// A build's state (upstream's `state` column).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum BuildState {
    Pending,
    Success,
    Error,
    Failure,
    Cancelled,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Pending => "pending",
            BuildState::Success => "success",
            BuildState::Error => "error",
            BuildState::Failure => "failure",
            BuildState::Cancelled => "cancelled",
        }
    }
}

/// The task group one webhook started.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Build {
    pub owner: String,
    pub repo: String,
    pub sha: String,
    /// The branch it built (a pull request's head, a push's branch or tag, a release's
    /// target).
    pub branch: Option<String>,
    pub task_group_id: Slug,
    pub state: BuildState,
    pub installation_id: u64,
    pub event_type: String,
    pub event_id: String,
    pub pull_request: Option<u64>,
    /// Statuses or check runs.
    pub checks: bool,
    /// How many tasks the job created, once it finished (`JobDone`): until then its group may
    /// still grow, and the status reporter leaves it alone.
    pub tasks: Option<u32>,
    pub created: Millis,
    pub updated: Millis,
}

/// What the job reactor made of a webhook.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum JobOutcome {
    /// Tasks created in the build's group; `routes` are the first task's (the
    /// `task-group-creation-requested` message is CC'd to them).
    Created {
        task_group_id: Slug,
        tasks: u32,
        routes: Vec<String>,
        /// The repository, as GitHub spells it.
        owner: String,
        repo: String,
    },
    /// Nothing to do (no `.taskcluster.yml`, no tasks for this event, an untrusted pull
    /// request): why.
    Skipped { reason: String },
    /// The job failed: what the author is told.
    Failed { message: String },
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum GithubEvent {
    /// A webhook published and queued for the job reactor.
    WebhookReceived(Webhook),
    /// An `installation` webhook: `owner`'s installation of the App.
    InstallationSet { owner: String, installation_id: u64 },
    /// The build row, written before its tasks are created.
    BuildCreated(Build),
    BuildStateChanged {
        task_group_id: Slug,
        state: BuildState,
    },
    /// The job reactor's last word on the webhook received at log offset `queued`.
    JobDone {
        queued: u64,
        event_id: String,
        outcome: JobOutcome,
    },
}

impl GithubEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            GithubEvent::WebhookReceived(_) => "WebhookReceived",
            GithubEvent::InstallationSet { .. } => "InstallationSet",
            GithubEvent::BuildCreated(_) => "BuildCreated",
            GithubEvent::BuildStateChanged { .. } => "BuildStateChanged",
            GithubEvent::JobDone { .. } => "JobDone",
        }
    }
}

/// The stream of one delivery, of one account's installation, of one build.
pub fn delivery_stream(event_id: &str) -> String {
    format!("github-delivery/{event_id}")
}

pub fn installation_stream(owner: &str) -> String {
    format!("github-installation/{}", owner.to_ascii_lowercase())
}

pub fn build_stream(task_group_id: &Slug) -> String {
    format!("github-build/{task_group_id}")
}

#[derive(Clone, Debug)]
pub enum GithubCommand {
    Receive(Webhook),
    Install {
        owner: String,
        installation_id: u64,
    },
    StartBuild(Build),
    SetBuildState {
        task_group_id: Slug,
        state: BuildState,
    },
    Done {
        queued: u64,
        event_id: String,
        outcome: JobOutcome,
    },
}

impl GithubCommand {
    pub fn stream(&self) -> String {
        match self {
            GithubCommand::Receive(w) => delivery_stream(&w.event_id),
            GithubCommand::Done { event_id, .. } => delivery_stream(event_id),
            GithubCommand::Install { owner, .. } => installation_stream(owner),
            GithubCommand::StartBuild(b) => build_stream(&b.task_group_id),
            GithubCommand::SetBuildState { task_group_id, .. } => build_stream(task_group_id),
        }
    }
}

/// What the projection knows that a decision reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// `Receive`: a webhook with this delivery id was taken already (GitHub's redelivery).
    pub delivered: bool,
    /// `Install`: the account's installation as stored.
    pub installation: Option<u64>,
    /// `StartBuild`, `SetBuildState`: the build's state as stored.
    pub build: Option<BuildState>,
    /// `Done`: the webhook is still waiting for its job.
    pub queued: bool,
}

/// The events answering `command` given `facts`; none means already so.
pub fn decide(facts: &Facts, command: &GithubCommand) -> Vec<GithubEvent> {
    match command {
        GithubCommand::Receive(_) if facts.delivered => vec![],
        GithubCommand::Receive(w) => vec![GithubEvent::WebhookReceived(w.clone())],
        GithubCommand::Install {
            installation_id, ..
        } if facts.installation == Some(*installation_id) => vec![],
        GithubCommand::Install {
            owner,
            installation_id,
        } => vec![GithubEvent::InstallationSet {
            owner: owner.clone(),
            installation_id: *installation_id,
        }],
        GithubCommand::StartBuild(_) if facts.build.is_some() => vec![],
        GithubCommand::StartBuild(b) => vec![GithubEvent::BuildCreated(b.clone())],
        // no build, the same state, or one a cancel ended (upstream: a cancelled build
        // keeps its state whatever its tasks do)
        GithubCommand::SetBuildState { state, .. }
            if facts.build.is_none()
                || facts.build == Some(*state)
                || facts.build == Some(BuildState::Cancelled) =>
        {
            vec![]
        }
        GithubCommand::SetBuildState {
            task_group_id,
            state,
        } => vec![GithubEvent::BuildStateChanged {
            task_group_id: *task_group_id,
            state: *state,
        }],
        GithubCommand::Done { .. } if !facts.queued => vec![],
        GithubCommand::Done {
            queued,
            event_id,
            outcome,
        } => vec![GithubEvent::JobDone {
            queued: *queued,
            event_id: event_id.clone(),
            outcome: outcome.clone(),
        }],
    }
}

/// The slugid a job derives for `label` from its webhook's delivery: `as_slugid(label)` in
/// `.taskcluster.yml`, and the default taskGroupId (label `\0taskGroupId`, which no
/// template's label can be mistaken for, since a template's text holds no NUL).
pub fn derived_slug(event_id: &str, label: &str) -> Slug {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("taskledger-github\0{event_id}\0{label}").as_bytes(),
    );
    Slug::from_digest(digest.as_ref())
}

// ---------------------------------------------------------------------------------------
// The webhook signature (reference/github.md §1)

/// Why a webhook's signature is refused, in upstream's words.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// 400: a signature came and no secret is configured.
    #[error("Server is not setup to handle secrets")]
    NotSetUp,
    /// 400: a secret is configured and no signature came.
    #[error("Request missing a secret")]
    Missing,
    /// 403.
    #[error("X-hub-signature does not match; bad webhook secret?")]
    Mismatch,
}

/// Checks `X-Hub-Signature-256` (or, without it, `X-Hub-Signature`) against an HMAC of the
/// raw `body` under any of `secrets`. Upstream signs `JSON.stringify` of the parsed body, which
/// is the raw body for GitHub's compact JSON; the raw bytes are what GitHub signed, so they
/// are what is checked here.
pub fn verify_signature(
    secrets: &[String],
    sha256: Option<&str>,
    sha1: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = sha256.or(sha1);
    let header = match (header, secrets.is_empty()) {
        (None, true) => return Ok(()),
        (Some(_), true) => return Err(SignatureError::NotSetUp),
        (None, false) => return Err(SignatureError::Missing),
        (Some(h), false) => h,
    };
    let (algorithm, hex) = match header.split_once('=') {
        Some(("sha256", hex)) => (ring::hmac::HMAC_SHA256, hex),
        Some(("sha1", hex)) => (ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, hex),
        _ => return Err(SignatureError::Mismatch),
    };
    let tag = decode_hex(hex).ok_or(SignatureError::Mismatch)?;
    secrets
        .iter()
        .any(|s| {
            let key = ring::hmac::Key::new(algorithm, s.as_bytes());
            ring::hmac::verify(&key, body, &tag).is_ok()
        })
        .then_some(())
        .ok_or(SignatureError::Mismatch)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// `sha256=<hex>` of `body` under `secret`, as GitHub signs (for tests and tools).
pub fn sign_sha256(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

// ---------------------------------------------------------------------------------------
// Sorting webhooks (reference/github.md §1's table)

/// What the webhook endpoint does with a webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sorted {
    /// `ping`: 200 "Received ping event!".
    Ping,
    /// `installation`: record it; 200 "Created table row!".
    Installation { owner: String, installation_id: u64 },
    /// Answered 200 with this text and nothing recorded.
    Ignored(String),
    /// Answered 400 with this text (upstream's handler answers in plain text, not the API's
    /// error body) and nothing recorded.
    Refused(String),
    /// Published (204).
    Publish(Box<Webhook>),
}

fn text<'a>(v: &'a Value, path: &str) -> Result<&'a str, String> {
    pointer(v, path)?
        .as_str()
        .ok_or_else(|| format!("{path} must be a string"))
}

fn number(v: &Value, path: &str) -> Result<u64, String> {
    pointer(v, path)?
        .as_u64()
        .ok_or_else(|| format!("{path} must be a non-negative integer"))
}

fn pointer<'a>(v: &'a Value, path: &str) -> Result<&'a Value, String> {
    let at = format!("/{}", path.replace('.', "/"));
    v.pointer(&at)
        .ok_or_else(|| format!("the webhook's body is missing {path}"))
}

/// Sorts a webhook: `event` is `X-GitHub-Event`, `event_id` the delivery, `body` its JSON
/// text, parsed as `parsed`. An error is the 400's message: a body without what its event
/// must carry.
pub fn sort_webhook(
    event: &str,
    event_id: &str,
    body: &str,
    parsed: &Value,
) -> Result<Sorted, String> {
    if !parsed.is_object() {
        return Err("the webhook's body must be a JSON object".into());
    }
    let webhook = |exchange, action: Option<&str>, tasks_for: &str, branch: Option<String>| {
        Ok::<_, String>(Webhook {
            event_id: event_id.to_string(),
            event: event.to_string(),
            exchange,
            owner: text(parsed, "repository.owner.login")
                .or_else(|_| text(parsed, "repository.owner.name"))?
                .to_string(),
            repo: text(parsed, "repository.name")?.to_string(),
            action: action.map(str::to_string),
            installation_id: number(parsed, "installation.id")?,
            tasks_for: tasks_for.to_string(),
            branch,
            comment: None,
            check_run_id: None,
            check_suite_id: None,
            body: body.to_string(),
        })
    };
    let publish = |w: Webhook| Ok(Sorted::Publish(Box::new(w)));
    match event {
        "ping" => Ok(Sorted::Ping),
        "installation" => Ok(Sorted::Installation {
            owner: text(parsed, "installation.account.login")?.to_string(),
            installation_id: number(parsed, "installation.id")?,
        }),
        "pull_request" => {
            let action = text(parsed, "action")?;
            let title = text(parsed, "pull_request.title")?;
            let branch = text(parsed, "pull_request.head.ref")?.to_string();
            text(parsed, "pull_request.head.sha")?;
            number(parsed, "number")?;
            if asks_to_skip_ci(title) {
                return Ok(Sorted::Ignored("Skipping pull_request event".into()));
            }
            publish(webhook(
                Exchange::PullRequest,
                Some(action),
                "github-pull-request",
                Some(branch),
            )?)
        }
        "push" => {
            let pushed = text(parsed, "ref")?;
            text(parsed, "after")?;
            let message = parsed
                .pointer("/head_commit/message")
                .and_then(Value::as_str)
                .or_else(|| {
                    parsed
                        .pointer("/commits")
                        .and_then(Value::as_array)
                        .and_then(|c| c.last())
                        .and_then(|c| c.get("message"))
                        .and_then(Value::as_str)
                })
                .unwrap_or("");
            if asks_to_skip_ci(message) {
                return Ok(Sorted::Ignored("Skipping push event".into()));
            }
            let branch = pushed
                .strip_prefix("refs/")
                .and_then(|r| r.split_once('/'))
                .map_or(pushed, |(_, name)| name);
            publish(webhook(
                Exchange::Push,
                None,
                "github-push",
                Some(branch.to_string()),
            )?)
        }
        "release" => {
            let action = text(parsed, "action")?;
            let target = text(parsed, "release.target_commitish")?.to_string();
            text(parsed, "release.tag_name")?;
            publish(webhook(
                Exchange::Release,
                Some(action),
                "github-release",
                Some(target),
            )?)
        }
        "issue_comment" => {
            let action = text(parsed, "action")?;
            let comment = text(parsed, "comment.body")?;
            let on_pr = parsed.pointer("/issue/pull_request").is_some();
            let open = text(parsed, "issue.state")? == "open";
            number(parsed, "issue.number")?;
            let command = taskcluster_command(comment);
            match command {
                Some(command) if matches!(action, "created" | "edited") && on_pr && open => {
                    let mut w = webhook(
                        Exchange::PullRequest,
                        Some(action),
                        "github-issue-comment",
                        Some("unknown".into()),
                    )?;
                    w.comment = Some(command);
                    publish(w)
                }
                _ => Ok(Sorted::Ignored("Skipping issue_comment event".into())),
            }
        }
        "check_run" => {
            let action = text(parsed, "action")?;
            let bot = parsed.pointer("/sender/type").and_then(Value::as_str) == Some("Bot");
            if action != "rerequested" {
                return Ok(Sorted::Refused(
                    "Only rerequested for check runs is supported".into(),
                ));
            }
            if bot {
                return Ok(Sorted::Ignored(
                    "Skipping rerequested event started by bot".into(),
                ));
            }
            let mut w = webhook(Exchange::Rerun, Some(action), "github-push", None)?;
            w.check_run_id = Some(number(parsed, "check_run.id")?);
            w.check_suite_id = Some(number(parsed, "check_run.check_suite.id")?);
            publish(w)
        }
        other => Ok(Sorted::Ignored(format!(
            "No publisher available for X-GitHub-Event: {other}"
        ))),
    }
}

/// The command of a `/taskcluster <command>` comment (the first such line).
pub fn taskcluster_command(comment: &str) -> Option<String> {
    comment.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("/taskcluster")?;
        let command = rest.trim();
        (rest.starts_with(char::is_whitespace) && !command.is_empty()).then(|| command.to_string())
    })
}

/// Upstream's flat `details` of a webhook (the messages' `details` and v0 templates' keys).
pub fn details(webhook: &Webhook, body: &Value) -> Map<String, Value> {
    let s = |path: &str| body.pointer(path).cloned().unwrap_or(Value::Null);
    let mut d = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            d.insert(k.to_string(), v);
        }
    };
    put("event.type", Value::String(webhook.event_type()));
    match webhook.event.as_str() {
        "pull_request" => {
            for side in ["base", "head"] {
                let p = format!("/pull_request/{side}");
                put(&format!("event.{side}.ref"), s(&format!("{p}/ref")));
                put(&format!("event.{side}.sha"), s(&format!("{p}/sha")));
                put(
                    &format!("event.{side}.repo.name"),
                    s(&format!("{p}/repo/name")),
                );
                put(
                    &format!("event.{side}.repo.url"),
                    s(&format!("{p}/repo/clone_url")),
                );
                put(&format!("event.{side}.repo.branch"), s(&format!("{p}/ref")));
                put(
                    &format!("event.{side}.user.login"),
                    s(&format!("{p}/user/login")),
                );
            }
            put("event.head.user.id", s("/pull_request/head/user/id"));
            put("event.pullNumber", s("/number"));
            put("event.title", s("/pull_request/title"));
        }
        "push" => {
            let branch = webhook.branch.clone().unwrap_or_default();
            put("event.base.ref", s("/ref"));
            put("event.base.sha", s("/before"));
            put("event.base.repo.name", s("/repository/name"));
            put("event.base.repo.url", s("/repository/clone_url"));
            put("event.base.repo.branch", Value::String(branch.clone()));
            put("event.head.ref", s("/ref"));
            put("event.head.sha", s("/after"));
            put("event.head.repo.name", s("/repository/name"));
            put("event.head.repo.url", s("/repository/clone_url"));
            put("event.head.repo.branch", Value::String(branch.clone()));
            put("event.head.user.login", s("/sender/login"));
            put("event.head.user.id", s("/sender/id"));
            if webhook.event_type() == "tag" {
                put("event.head.tag", Value::String(branch));
            }
        }
        "release" => {
            put("event.base.repo.branch", s("/release/target_commitish"));
            put("event.head.user.login", s("/sender/login"));
            put("event.head.user.id", s("/sender/id"));
            put("event.version", s("/release/tag_name"));
            put("event.name", s("/release/name"));
            put("event.head.repo.name", s("/repository/name"));
            put("event.head.repo.url", s("/repository/clone_url"));
            put("event.release.url", s("/release/url"));
            put("event.prerelease", s("/release/prerelease"));
            put("event.draft", s("/release/draft"));
            put("event.tar", s("/release/tarball_url"));
            put("event.zip", s("/release/zipball_url"));
        }
        "issue_comment" => {
            put("event.pullNumber", s("/issue/number"));
            put("event.head.user.login", s("/comment/user/login"));
            put("event.head.user.id", s("/comment/user/id"));
            put("event.head.repo.name", s("/repository/name"));
            put("event.head.repo.url", s("/repository/clone_url"));
            if let Some(c) = &webhook.comment {
                put("taskcluster_comment", Value::String(c.clone()));
            }
        }
        _ => {}
    }
    // the sender's address: upstream asks GitHub for the public one; without it, GitHub's
    // no-reply address for the login, which is what upstream falls back to
    if let Some(login) = body.pointer("/sender/login").and_then(Value::as_str) {
        let login = login.trim_end_matches("[bot]");
        put(
            "event.head.user.email",
            Value::String(format!("{login}@users.noreply.github.com")),
        );
    }
    d
}

// ---------------------------------------------------------------------------------------
// Who a job acts as (reference/github.md §2)

/// The role a job's tasks are created under: `assume:repo:github.com/<owner>/<repo>:<kind>`.
pub fn repo_role(owner: &str, repo: &str, tasks_for: &str, webhook: &Webhook) -> String {
    let prefix = format!("assume:repo:github.com/{owner}/{repo}");
    match tasks_for {
        "github-pull-request" | "github-issue-comment" => format!("{prefix}:pull-request"),
        "github-pull-request-untrusted" => format!("{prefix}:pull-request-untrusted"),
        "github-release" => format!(
            "{prefix}:release:{}",
            webhook.action.as_deref().unwrap_or("published")
        ),
        _ => {
            let body: Value = serde_json::from_str(&webhook.body).unwrap_or(Value::Null);
            let pushed = body.get("ref").and_then(Value::as_str).unwrap_or("");
            match pushed.strip_prefix("refs/tags/") {
                Some(tag) => format!("{prefix}:tag:{tag}"),
                None => format!(
                    "{prefix}:branch:{}",
                    webhook.branch.as_deref().unwrap_or("")
                ),
            }
        }
    }
}

/// The scopes a job's createTask calls are authorized with.
pub fn job_scopes(role: String, checks: bool) -> Vec<String> {
    vec![
        role,
        if checks {
            "queue:route:checks".into()
        } else {
            "queue:route:statuses".into()
        },
        format!("queue:scheduler-id:{SCHEDULER_ID}"),
    ]
}

/// The state a build's group reports, from its tasks' states: `failure` if any failed or
/// ended in exception, `pending` while any is unresolved, else `success`.
pub fn group_state<'a>(states: impl IntoIterator<Item = &'a str>) -> BuildState {
    let mut unresolved = false;
    for s in states {
        match s {
            "failed" | "exception" => return BuildState::Failure,
            "completed" => {}
            _ => unresolved = true,
        }
    }
    if unresolved {
        BuildState::Pending
    } else {
        BuildState::Success
    }
}

#[cfg(test)]
#[allow(clippy::wildcard_enum_match_arm)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pr_body(title: &str) -> Value {
        json!({
            "action": "opened",
            "number": 7,
            "pull_request": {
                "title": title,
                "head": {"ref": "feature", "sha": "abc123", "repo": {"name": "app", "clone_url": "https://github.com/me/app.git"}, "user": {"login": "me", "id": 5}},
                "base": {"ref": "main", "sha": "def456", "repo": {"name": "app", "clone_url": "https://github.com/acme.co/app.git"}, "user": {"login": "acme.co"}}
            },
            "repository": {"name": "app", "owner": {"login": "acme.co"}},
            "installation": {"id": 99},
            "sender": {"login": "me"}
        })
    }

    fn sorted(event: &str, body: &Value) -> Result<Sorted, String> {
        sort_webhook(event, "d-1", &body.to_string(), body)
    }

    fn published(event: &str, body: &Value) -> Webhook {
        match sorted(event, body).unwrap() {
            Sorted::Publish(w) => *w,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_sanitized_for_routing_keys() {
        assert_eq!(sanitize("foo.bar"), "foo%bar");
        assert_eq!(sanitize("a b/c_d-e"), "abc_d-e");
    }

    #[test]
    fn signatures_follow_upstream_rules() {
        let body = br#"{"zen":"x"}"#;
        let secrets = vec!["old".to_string(), "s3cret".to_string()];
        let good = sign_sha256("s3cret", body);
        assert_eq!(verify_signature(&secrets, Some(&good), None, body), Ok(()));
        // any configured secret will do, and sha256 is preferred to sha1
        assert_eq!(
            verify_signature(&secrets, Some(&good), Some("sha1=00"), body),
            Ok(())
        );
        assert_eq!(
            verify_signature(&secrets, Some(&sign_sha256("nope", body)), None, body),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&secrets, Some(&good), None, b"{}"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&secrets, None, None, body),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&[], Some(&good), None, body),
            Err(SignatureError::NotSetUp)
        );
        assert_eq!(verify_signature(&[], None, None, body), Ok(()));
        for bad in ["sha256=zz", "sha256=abc", "md5=00", "garbage"] {
            assert_eq!(
                verify_signature(&secrets, Some(bad), None, body),
                Err(SignatureError::Mismatch),
                "{bad}"
            );
        }
        // sha1, as older hooks send it
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"s3cret");
        let tag = ring::hmac::sign(&key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            verify_signature(&secrets, None, Some(&format!("sha1={hex}")), body),
            Ok(())
        );
    }

    #[test]
    fn pull_requests_are_published_unless_they_skip_ci() {
        let w = published("pull_request", &pr_body("Fix it"));
        assert_eq!(w.exchange, Exchange::PullRequest);
        assert_eq!(
            (w.organization(), w.repository()),
            ("acme%co".into(), "app".into())
        );
        assert_eq!(w.owner, "acme.co");
        assert_eq!(w.action.as_deref(), Some("opened"));
        assert_eq!(w.tasks_for, "github-pull-request");
        assert_eq!(w.branch.as_deref(), Some("feature"));
        assert_eq!(w.installation_id, 99);
        assert_eq!(w.event_type(), "pull_request.opened");
        assert!(matches!(
            sorted("pull_request", &pr_body("WIP [CI SKIP]")),
            Ok(Sorted::Ignored(_))
        ));
        let mut broken = pr_body("x");
        broken["pull_request"]
            .as_object_mut()
            .unwrap()
            .remove("head");
        assert!(sorted("pull_request", &broken)
            .unwrap_err()
            .contains("pull_request.head.ref"));
        assert!(sort_webhook("push", "d", "[]", &json!([])).is_err());
    }

    #[test]
    fn pushes_name_their_branch_or_tag() {
        let body = |r: &str, msg: &str| {
            json!({"ref": r, "before": "0", "after": "abc", "head_commit": {"message": msg},
                   "repository": {"name": "app", "owner": {"name": "acme"}},
                   "installation": {"id": 1}, "sender": {"login": "dependabot[bot]"}})
        };
        let w = published("push", &body("refs/heads/release/v1", "go"));
        assert_eq!(w.branch.as_deref(), Some("release/v1"));
        assert_eq!(w.event_type(), "push");
        assert_eq!(
            repo_role(&w.owner, &w.repo, &w.tasks_for, &w),
            "assume:repo:github.com/acme/app:branch:release/v1"
        );
        let t = published("push", &body("refs/tags/v1.0", "go"));
        assert_eq!(t.event_type(), "tag");
        assert_eq!(
            repo_role(&t.owner, &t.repo, &t.tasks_for, &t),
            "assume:repo:github.com/acme/app:tag:v1.0"
        );
        let d = details(&t, &body("refs/tags/v1.0", "go"));
        assert_eq!(d["event.head.tag"], "v1.0");
        assert_eq!(
            d["event.head.user.email"],
            "dependabot@users.noreply.github.com"
        );
        assert!(matches!(
            sorted("push", &body("refs/heads/main", "docs [skip ci]")),
            Ok(Sorted::Ignored(_))
        ));
    }

    #[test]
    fn comments_need_a_command_on_an_open_pull_request() {
        let body = |action: &str, text: &str, state: &str| {
            json!({"action": action, "comment": {"body": text, "user": {"login": "me"}},
                   "issue": {"number": 3, "state": state, "pull_request": {}},
                   "repository": {"name": "app", "owner": {"login": "acme"}},
                   "installation": {"id": 1}})
        };
        let w = published(
            "issue_comment",
            &body("created", "thanks!\n  /taskcluster  run tests ", "open"),
        );
        assert_eq!(w.comment.as_deref(), Some("run tests"));
        assert_eq!(w.branch.as_deref(), Some("unknown"));
        assert_eq!(w.tasks_for, "github-issue-comment");
        for (a, t, s) in [
            ("deleted", "/taskcluster run", "open"),
            ("created", "/taskcluster run", "closed"),
            ("created", "/taskclusterx run", "open"),
            ("created", "/taskcluster", "open"),
        ] {
            assert!(
                matches!(
                    sorted("issue_comment", &body(a, t, s)),
                    Ok(Sorted::Ignored(_))
                ),
                "{a} {t} {s}"
            );
        }
    }

    #[test]
    fn check_runs_rerun_only_on_a_persons_request() {
        let body = |action: &str, sender: &str| {
            json!({"action": action, "check_run": {"id": 11, "check_suite": {"id": 12}},
                   "sender": {"type": sender, "login": "me"},
                   "repository": {"name": "app", "owner": {"login": "acme"}},
                   "installation": {"id": 1}})
        };
        let w = published("check_run", &body("rerequested", "User"));
        assert_eq!(
            (w.exchange, w.check_run_id, w.check_suite_id),
            (Exchange::Rerun, Some(11), Some(12))
        );
        assert!(matches!(
            sorted("check_run", &body("rerequested", "Bot")),
            Ok(Sorted::Ignored(_))
        ));
        assert!(matches!(
            sorted("check_run", &body("completed", "User")),
            Ok(Sorted::Refused(_))
        ));
    }

    #[test]
    fn other_events_are_answered_without_a_record() {
        assert_eq!(sorted("ping", &json!({"zen": "z"})), Ok(Sorted::Ping));
        assert_eq!(
            sorted(
                "installation",
                &json!({"installation": {"id": 5, "account": {"login": "acme"}}})
            ),
            Ok(Sorted::Installation {
                owner: "acme".into(),
                installation_id: 5
            })
        );
        assert_eq!(
            sorted("star", &json!({})),
            Ok(Sorted::Ignored(
                "No publisher available for X-GitHub-Event: star".into()
            ))
        );
    }

    #[test]
    fn decisions_are_idempotent() {
        let w = published("pull_request", &pr_body("x"));
        let receive = GithubCommand::Receive(w.clone());
        assert_eq!(
            decide(&Facts::default(), &receive),
            vec![GithubEvent::WebhookReceived(w)]
        );
        let seen = Facts {
            delivered: true,
            ..Facts::default()
        };
        assert_eq!(decide(&seen, &receive), vec![]);
        let install = GithubCommand::Install {
            owner: "acme".into(),
            installation_id: 4,
        };
        let has = |id| Facts {
            installation: Some(id),
            ..Facts::default()
        };
        assert_eq!(decide(&has(4), &install), vec![]);
        assert_eq!(decide(&has(3), &install).len(), 1);
        let g = derived_slug("d-1", "\0taskGroupId");
        let set = |state| GithubCommand::SetBuildState {
            task_group_id: g,
            state,
        };
        let build = |state| Facts {
            build: Some(state),
            ..Facts::default()
        };
        assert_eq!(decide(&Facts::default(), &set(BuildState::Success)), vec![]);
        assert_eq!(
            decide(&build(BuildState::Success), &set(BuildState::Success)),
            vec![]
        );
        assert_eq!(
            decide(&build(BuildState::Cancelled), &set(BuildState::Failure)),
            vec![]
        );
        assert_eq!(
            decide(&build(BuildState::Pending), &set(BuildState::Failure)).len(),
            1
        );
        let done = GithubCommand::Done {
            queued: 3,
            event_id: "d-1".into(),
            outcome: JobOutcome::Skipped {
                reason: "no .taskcluster.yml".into(),
            },
        };
        assert_eq!(decide(&Facts::default(), &done), vec![]);
        let queued = Facts {
            queued: true,
            ..Facts::default()
        };
        assert_eq!(decide(&queued, &done).len(), 1);
    }

    #[test]
    fn derived_slugs_depend_on_delivery_and_label() {
        let a = derived_slug("d-1", "build");
        assert_eq!(a, derived_slug("d-1", "build"));
        assert_ne!(a, derived_slug("d-2", "build"));
        assert_ne!(a, derived_slug("d-1", "test"));
    }

    #[test]
    fn group_states() {
        assert_eq!(group_state(["completed", "completed"]), BuildState::Success);
        assert_eq!(group_state(["completed", "running"]), BuildState::Pending);
        assert_eq!(group_state(["pending", "failed"]), BuildState::Failure);
        assert_eq!(group_state(["exception"]), BuildState::Failure);
    }

    #[test]
    fn events_keep_their_v1_bytes() {
        let w = published("pull_request", &pr_body("x"));
        let build = Build {
            owner: "acme".into(),
            repo: "app".into(),
            sha: "abc".into(),
            branch: Some("feature".into()),
            task_group_id: derived_slug("d-1", "\0taskGroupId"),
            state: BuildState::Pending,
            installation_id: 99,
            event_type: "pull_request.opened".into(),
            event_id: "d-1".into(),
            pull_request: Some(7),
            checks: false,
            tasks: None,
            created: Millis(1_700_000_000_000),
            updated: Millis(1_700_000_000_000),
        };
        let events = vec![
            GithubEvent::WebhookReceived(w),
            GithubEvent::InstallationSet {
                owner: "acme".into(),
                installation_id: 99,
            },
            GithubEvent::BuildCreated(build.clone()),
            GithubEvent::BuildStateChanged {
                task_group_id: build.task_group_id,
                state: BuildState::Failure,
            },
            GithubEvent::JobDone {
                queued: 1,
                event_id: "d-1".into(),
                outcome: JobOutcome::Created {
                    task_group_id: build.task_group_id,
                    tasks: 2,
                    routes: vec!["statuses".into()],
                    owner: "acme".into(),
                    repo: "app".into(),
                },
            },
            GithubEvent::JobDone {
                queued: 2,
                event_id: "d-2".into(),
                outcome: JobOutcome::Failed {
                    message: "bad yaml".into(),
                },
            },
        ];
        crate::codec::assert_golden_events(
            &delivery_stream("d-1"),
            events,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/github/events_v1.hex"
            ),
        );
    }
}
