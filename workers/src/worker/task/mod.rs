//! One claimed run, from start to resolution (worker-protocol.md §4-§7).

mod watchers;

use super::artifacts::{self, Problem};
use super::livelog::TaskLog;
use super::mounts::{self, MountError};
use super::payload::{self, Limits, Payload};
use super::process::{self, Abort, CommandEnd};
use super::proxy::TaskProxy;
use super::{Ctx, SharedQueue, Shortfall};
use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use taskcluster::Credentials;
use tokio::sync::watch;
use watchers::{reclaimer, status_poller};

const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// How a run ends, as far as the worker decides it. The first problem recorded wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Failed,
    Exception(&'static str),
    /// The run is no longer ours (cancelled, claim lost): nothing to report.
    Lost,
}

impl Abort {
    /// How an aborted run ends: shut down (`worker-shutdown`, which the queue retries), or
    /// lost (not resolved by this worker).
    fn outcome(self) -> Outcome {
        match self {
            Abort::RunLost => Outcome::Lost,
            Abort::WorkerShutdown => Outcome::Exception("worker-shutdown"),
        }
    }
}

impl Outcome {
    fn worsen(&mut self, to: Outcome) {
        if *self == Outcome::Completed {
            *self = to;
        }
    }
}

/// The claim as claimWork handed it over.
struct Claim {
    task_id: String,
    run_id: String,
    task: Value,
    taken_until: DateTime<Utc>,
    credentials: Credentials,
}

fn parse_claim(v: &Value) -> Result<Claim> {
    let task_id = v["status"]["taskId"]
        .as_str()
        .context("claim without status.taskId")?
        .to_string();
    let run_id = v["runId"]
        .as_u64()
        .context("claim without runId")?
        .to_string();
    let taken_until = v["takenUntil"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .context("claim without takenUntil")?
        .with_timezone(&Utc);
    let credentials: Credentials =
        serde_json::from_value(v["credentials"].clone()).context("claim without credentials")?;
    Ok(Claim {
        task_id,
        run_id,
        task: v["task"].clone(),
        taken_until,
        credentials,
    })
}

/// A claimWork reply entry and a queue client with its task's credentials; None (logged)
/// when the entry cannot be used.
fn open_claim(v: &Value, root_url: &str) -> Option<(Claim, SharedQueue)> {
    let claim = match parse_claim(v) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "unusable claimWork reply entry");
            return None;
        }
    };
    match SharedQueue::new(root_url, claim.credentials.clone()) {
        Ok(q) => Some((claim, q)),
        Err(e) => {
            tracing::error!(task_id = %claim.task_id, error = %e, "cannot build a client with the task credentials");
            None
        }
    }
}

/// A claim the worker will not run (it is shutting down): resolved `worker-shutdown` with the
/// task's credentials, so the queue retries it at once instead of when its claim expires.
pub(super) async fn hand_back(ctx: &Ctx, claim: &Value) {
    let Some((claim, queue)) = open_claim(claim, &ctx.config.root_url) else {
        return;
    };
    tracing::warn!(
        task_id = %claim.task_id,
        run_id = %claim.run_id,
        "claimed while shutting down: handed back as worker-shutdown"
    );
    let outcome = Outcome::Exception("worker-shutdown");
    resolve(ctx, &queue, &claim.task_id, &claim.run_id, &outcome).await;
}

fn time_of(task: &Value, field: &str) -> Result<DateTime<Utc>> {
    task[field]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| anyhow!("task definition without {field}"))
}

/// Runs one claim to its end. Never panics on a bad claim: what cannot be run is resolved
/// `exception` with the reason, when the claim gives enough to do so.
pub(crate) async fn run_claimed(
    ctx: Arc<Ctx>,
    claim: Value,
    aborts: watch::Receiver<Option<Abort>>,
) {
    let Some((claim, queue)) = open_claim(&claim, &ctx.config.root_url) else {
        return;
    };
    let (task_id, run_id) = (claim.task_id.clone(), claim.run_id.clone());
    let dir = ctx
        .config
        .tasks_dir
        .join(format!("task_{}_{}", claim.task_id, claim.run_id));
    let started = std::time::Instant::now();
    tracing::info!(%task_id, %run_id, "task claimed");
    let outcome = match Run::prepare(&ctx, &claim, &queue, dir.clone()) {
        Ok(run) => run.execute(aborts).await,
        Err(e) => {
            tracing::error!(%task_id, error = %e, "task setup failed");
            Outcome::Exception("internal-error")
        }
    };
    let resolving = std::time::Instant::now();
    resolve(&ctx, &queue, &task_id, &run_id, &outcome).await;
    tracing::debug!(%task_id, us = resolving.elapsed().as_micros() as u64, "resolved");
    if !ctx.config.keep_task_dirs {
        // off the slot's critical path: the next claim need not wait for the unlink
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
    tracing::info!(%task_id, %run_id, ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "task finished");
}

async fn resolve(ctx: &Ctx, queue: &SharedQueue, task_id: &str, run_id: &str, outcome: &Outcome) {
    let q = queue.get();
    let result = match outcome {
        Outcome::Completed => q.reportCompleted(task_id, run_id).await,
        Outcome::Failed => q.reportFailed(task_id, run_id).await,
        Outcome::Exception(reason) => {
            q.reportException(task_id, run_id, &json!({ "reason": reason }))
                .await
        }
        Outcome::Lost => return,
    };
    if let Err(e) = result {
        // learn the real state of the run, for the operator
        let state = ctx
            .worker_queue
            .get()
            .status(task_id)
            .await
            .ok()
            .and_then(|s| {
                let run = &s["status"]["runs"][run_id.parse::<usize>().unwrap_or(0)];
                Some(format!(
                    "{}/{}",
                    run["state"].as_str()?,
                    run["reasonResolved"].as_str().unwrap_or("-")
                ))
            })
            .unwrap_or_else(|| "unknown".into());
        tracing::warn!(task_id, run_id, error = %e, run_state = %state, "resolving the run failed");
    }
}

struct Run<'a> {
    ctx: &'a Ctx,
    claim: &'a Claim,
    queue: &'a SharedQueue,
    dir: PathBuf,
    log: Arc<TaskLog>,
    deadline: DateTime<Utc>,
    expires: DateTime<Utc>,
    /// When the run started on this worker (for the log's `Task Duration`).
    started: std::time::Instant,
}

impl<'a> Run<'a> {
    fn prepare(
        ctx: &'a Ctx,
        claim: &'a Claim,
        queue: &'a SharedQueue,
        dir: PathBuf,
    ) -> Result<Run<'a>> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let log = TaskLog::create(&dir.join("generic-worker").join("live_backing.log"))?;
        Ok(Run {
            started: std::time::Instant::now(),
            deadline: time_of(&claim.task, "deadline")?,
            expires: time_of(&claim.task, "expires")?,
            ctx,
            claim,
            queue,
            dir,
            log,
        })
    }

    async fn execute(self, mut aborts: watch::Receiver<Option<Abort>>) -> Outcome {
        let c = &self.ctx.config;
        let log = &self.log;
        log.plain(format!(
            "Worker Type ({}) settings:\n  {{\"workerGroup\": {:?}, \"workerId\": {:?}}}",
            c.task_queue_id(),
            c.worker_group,
            c.worker_id
        ));
        log.info(format!("Task ID: {}", self.claim.task_id));
        log.info(format!("Run ID: {}", self.claim.run_id));
        log.info("=== Task Starting ===");
        let limits = Limits {
            task_deadline: self.deadline,
            task_expires: self.expires,
            max_task_run_time_secs: c.max_task_run_time,
            worker_groups: self.ctx.worker_groups.clone(),
        };
        let payload = match payload::parse(&self.claim.task["payload"], &limits) {
            Ok(p) => Some(p),
            Err(errors) => {
                log.error("TASK FAIL since the task payload is invalid:");
                for e in &errors {
                    log.error(e);
                }
                None
            }
        };
        let mut outcome;
        let t0 = std::time::Instant::now();
        // osGroups need `generic-worker:os-group:<pool>/<group>` each, as generic-worker's
        let refused = match &payload {
            Some(p) if !p.os_groups.is_empty() => {
                let pool = c.task_queue_id();
                let required: Vec<String> = p
                    .os_groups
                    .iter()
                    .map(|g| format!("generic-worker:os-group:{pool}/{g}"))
                    .collect();
                match super::task_holds(&self.ctx.worker_queue, &self.claim.task, &required).await {
                    Ok(()) => None,
                    Err(Shortfall::Missing(missing)) => {
                        log.error(format!(
                            "TASK FAIL since the task's scopes do not include {missing}, which its osGroups need"
                        ));
                        Some(Outcome::Exception("malformed-payload"))
                    }
                    Err(Shortfall::Unavailable(why)) => {
                        log.error(format!("TASK FAIL since {why}"));
                        Some(Outcome::Exception("resource-unavailable"))
                    }
                }
            }
            _ => None,
        };
        let live = match &payload {
            Some(p) if p.features.live_log => self.start_live_log(p).await,
            _ => None,
        };
        tracing::debug!(
            task_id = self.claim.task_id,
            us = t0.elapsed().as_micros() as u64,
            "live log published"
        );

        // this run's own abort signal: worker shutdown, lost reclaim, or cancellation
        let (abort_tx, mut abort_rx) = watch::channel::<Option<Abort>>(None);
        let abort_tx = Arc::new(abort_tx);
        let watchers = {
            let mut set = tokio::task::JoinSet::new();
            let tx = abort_tx.clone();
            set.spawn(async move {
                if let Ok(a) = aborts.wait_for(|a| a.is_some()).await {
                    let a = *a;
                    tx.send_replace(a);
                }
            });
            set.spawn(reclaimer(
                self.queue.clone(),
                self.claim.task_id.clone(),
                self.claim.run_id.clone(),
                self.claim.taken_until,
                abort_tx.clone(),
                self.log.clone(),
            ));
            if c.status_poll_secs > 0 {
                set.spawn(status_poller(
                    self.ctx.worker_queue.clone(),
                    self.claim.task_id.clone(),
                    self.claim.run_id.parse().unwrap_or(0),
                    Duration::from_secs(c.status_poll_secs),
                    abort_tx.clone(),
                    self.log.clone(),
                ));
            }
            set
        };

        let pool = c.task_queue_id();
        let cx = mounts::MountContext {
            caches: &self.ctx.caches,
            dir: &self.dir,
            queue: self.queue,
            worker: &self.ctx.worker_queue,
            pool: &pool,
            task: &self.claim.task,
            log,
        };
        // an abort (worker shutdown, the run lost) does not wait for the mounts' downloads
        let mounted = match &payload {
            Some(p) if !p.mounts.is_empty() && refused.is_none() => tokio::select! {
                m = mounts::mount(&cx, &p.mounts) => Some(m),
                _ = abort_rx.wait_for(|a| a.is_some()) => {
                    Some(Err(MountError::Failed("aborted while mounting".into())))
                }
            },
            _ => None,
        };
        let mut last_exit = None;
        match (&payload, refused, mounted.as_ref()) {
            (None, _, _) => outcome = Outcome::Exception("malformed-payload"),
            (Some(_), Some(refusal), _) => outcome = refusal,
            (Some(_), None, Some(Err(e))) => {
                // an abort that stopped the mounts decides the outcome: a worker shutdown is
                // `worker-shutdown` (retried), a lost run is not resolved here
                let aborted = *abort_rx.borrow();
                match aborted {
                    Some(Abort::WorkerShutdown) => {
                        log.error("task aborted while mounting - the worker is shutting down")
                    }
                    Some(Abort::RunLost) => {
                        log.error("task aborted while mounting - the run was resolved elsewhere")
                    }
                    None => log.error(format!("TASK FAIL since a mount could not be made: {e}")),
                }
                outcome = match (aborted, e) {
                    (Some(a), _) => a.outcome(),
                    (None, MountError::Malformed(_)) => Outcome::Exception("malformed-payload"),
                    (None, MountError::Unavailable(_)) => {
                        Outcome::Exception("resource-unavailable")
                    }
                    (None, MountError::Failed(_)) => Outcome::Failed,
                };
            }
            (Some(p), None, _) => {
                (outcome, last_exit) = self.run_commands(p, &mut abort_rx).await;
                tracing::debug!(
                    task_id = self.claim.task_id,
                    us = t0.elapsed().as_micros() as u64,
                    "commands done"
                );
                let problems = artifacts::upload_payload(
                    self.queue,
                    &self.claim.task_id,
                    &self.claim.run_id,
                    &self.dir,
                    &p.artifacts,
                    &[p.logs.live.as_str(), p.logs.backing.as_str()],
                    log,
                )
                .await;
                for problem in problems {
                    let lost = outcome == Outcome::Lost;
                    match problem {
                        Problem::Missing => outcome.worsen(Outcome::Failed),
                        Problem::ServerError => {
                            outcome.worsen(Outcome::Exception("resource-unavailable"))
                        }
                        Problem::Conflict => {
                            outcome.worsen(Outcome::Exception("malformed-payload"))
                        }
                        Problem::Refused if !lost => {
                            outcome.worsen(Outcome::Exception("internal-error"))
                        }
                        Problem::Refused => {}
                    }
                }
            }
        }
        if let (Some(p), Some(Ok(mounted))) = (&payload, mounted) {
            // caches go back to the pool, or are deleted when the last command's exit code
            // is listed in purgeCaches or the task was aborted
            let aborted = abort_rx.borrow().is_some();
            let purge = aborted
                || last_exit.is_some_and(|code| p.on_exit_status.purge_caches.contains(&code));
            mounted.release(purge, log);
        }
        if let Some(a) = *abort_rx.borrow() {
            if outcome == Outcome::Completed {
                outcome = a.outcome();
            }
        }

        match &outcome {
            Outcome::Completed => log.info("Resolving task as completed"),
            Outcome::Failed => log.info("Resolving task as failed"),
            Outcome::Exception(r) => log.info(format!("Resolving task as exception ({r})")),
            Outcome::Lost => {
                log.warn("The run is no longer ours; it is not resolved by this worker")
            }
        }
        let backing = payload
            .as_ref()
            .map(|p| p.logs.backing.clone())
            .unwrap_or_else(|| payload::DEFAULT_BACKING_LOG.into());
        let wants_backing = payload.as_ref().is_none_or(|p| p.features.backing_log);
        log.info("=== Task Finished ===");
        log.info(format!(
            "Task Duration: {:.3}s",
            self.started.elapsed().as_secs_f64()
        ));
        log.close();
        tracing::debug!(
            task_id = self.claim.task_id,
            us = t0.elapsed().as_micros() as u64,
            "log closed"
        );
        // the link may name the backing log before it exists: links resolve when read
        let link = async {
            let Some((_, live_name)) = &live else { return };
            if !wants_backing {
                return;
            }
            let body = json!({
                "storageType": "link",
                "artifact": backing,
                "contentType": LOG_CONTENT_TYPE,
                "expires": self.expires.to_rfc3339(),
            });
            let q = self.queue.get();
            if let Err(e) = q
                .createArtifact(&self.claim.task_id, &self.claim.run_id, live_name, &body)
                .await
            {
                tracing::warn!(task_id = self.claim.task_id, error = %e, "could not turn {live_name} into a link to {backing}");
            }
        };
        let upload = async {
            if !wants_backing {
                return Ok(());
            }
            artifacts::upload_file(
                self.queue,
                &self.claim.task_id,
                &self.claim.run_id,
                &backing,
                log.path(),
                LOG_CONTENT_TYPE,
                self.expires,
            )
            .await
        };
        let ((), uploaded) = tokio::join!(link, upload);
        if let (Some((secret, _)), Some(server)) = (&live, &self.ctx.live) {
            server.retire(secret);
        }
        if let Err(problem) = uploaded {
            tracing::warn!(
                task_id = self.claim.task_id,
                ?problem,
                "backing log upload failed"
            );
            if outcome != Outcome::Lost {
                outcome.worsen(match problem {
                    Problem::ServerError => Outcome::Exception("resource-unavailable"),
                    Problem::Missing | Problem::Conflict | Problem::Refused => {
                        Outcome::Exception("internal-error")
                    }
                });
            }
        }
        tracing::debug!(
            task_id = self.claim.task_id,
            us = t0.elapsed().as_micros() as u64,
            "backing log uploaded"
        );
        // reclaiming stops when the resolve call starts
        drop(watchers);
        outcome
    }

    /// Publishes the live log as a reference artifact; best effort.
    async fn start_live_log(&self, p: &Payload) -> Option<(String, String)> {
        let server = self.ctx.live.as_ref()?;
        let (secret, url) = server.publish(self.log.clone());
        let expires = (Utc::now() + chrono::Duration::seconds(p.max_run_time_secs as i64 + 900))
            .min(self.expires);
        let body = json!({
            "storageType": "reference",
            "url": url,
            "contentType": LOG_CONTENT_TYPE,
            "expires": expires.to_rfc3339(),
        });
        match self
            .queue
            .get()
            .createArtifact(&self.claim.task_id, &self.claim.run_id, &p.logs.live, &body)
            .await
        {
            Ok(_) => Some((secret, p.logs.live.clone())),
            Err(e) => {
                self.log.warn(format!("no live log: {e}"));
                server.retire(&secret);
                None
            }
        }
    }

    /// Runs the commands in order until one fails; the outcome, and the exit code of the
    /// last command that exited (for `onExitStatus.purgeCaches`).
    async fn run_commands(
        &self,
        p: &Payload,
        abort: &mut watch::Receiver<Option<Abort>>,
    ) -> (Outcome, Option<i64>) {
        let mut env = self.ctx.base_env.clone();
        env.extend(p.env.clone());
        let c = &self.ctx.config;
        env.insert("TASK_ID".into(), self.claim.task_id.clone());
        env.insert("RUN_ID".into(), self.claim.run_id.clone());
        env.insert("TASK_WORKDIR".into(), self.dir.display().to_string());
        env.insert(
            "TASK_GROUP_ID".into(),
            self.claim.task["taskGroupId"]
                .as_str()
                .unwrap_or_default()
                .into(),
        );
        env.insert("TASKCLUSTER_ROOT_URL".into(), c.root_url.clone());
        // the proxy lives as long as the commands (dropped, and so stopped, when they end)
        let _proxy = if p.features.taskcluster_proxy {
            let scopes = super::strings(&self.claim.task["scopes"]);
            match TaskProxy::start(
                self.queue.clone(),
                &self.claim.task_id,
                &self.claim.run_id,
                &scopes,
            )
            .await
            {
                Ok(proxy) => {
                    self.log
                        .info(format!("taskcluster-proxy listening at {}", proxy.url()));
                    env.insert("TASKCLUSTER_PROXY_URL".into(), proxy.url().to_string());
                    Some(proxy)
                }
                Err(e) => {
                    self.log
                        .error(format!("the taskcluster-proxy could not start: {e:#}"));
                    return (Outcome::Exception("internal-error"), None);
                }
            }
        } else {
            None
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(p.max_run_time_secs);
        let mut last_exit = None;
        for (i, argv) in p.command.iter().enumerate() {
            self.log
                .info(format!("Executing command {i}: {}", shell_words(argv)));
            let end = process::run(argv, &self.dir, &env, &self.log, deadline, abort).await;
            // a command that did not exit (timed out, never started, aborted) has no code
            last_exit = match end {
                CommandEnd::Exited(code) => Some(code as i64),
                CommandEnd::SpawnFailed(_) | CommandEnd::TimedOut | CommandEnd::Aborted(_) => None,
            };
            match end {
                CommandEnd::Exited(0) => self.log.info("Exit Code: 0"),
                CommandEnd::Exited(code) => {
                    self.log.info(format!("Exit Code: {code}"));
                    if p.on_exit_status.retry.contains(&(code as i64)) {
                        self.log.info(format!(
                            "Exit code {code} is listed in onExitStatus.retry: the task will be retried"
                        ));
                        return (Outcome::Exception("intermittent-task"), last_exit);
                    }
                    self.log
                        .error(format!("Command {i} exited with code {code}"));
                    return (Outcome::Failed, last_exit);
                }
                CommandEnd::SpawnFailed(why) => {
                    self.log
                        .error(format!("Command {i} could not be started: {why}"));
                    return (Outcome::Failed, last_exit);
                }
                CommandEnd::TimedOut => {
                    self.log.error(format!(
                        "task aborted - max run time exceeded ({} s)",
                        p.max_run_time_secs
                    ));
                    return (Outcome::Failed, last_exit);
                }
                CommandEnd::Aborted(Abort::RunLost) => {
                    self.log.error("task aborted - the run was resolved elsewhere (cancelled, deadline or claim lost)");
                    return (Outcome::Lost, last_exit);
                }
                CommandEnd::Aborted(Abort::WorkerShutdown) => {
                    self.log.error("task aborted - the worker is shutting down");
                    return (Outcome::Exception("worker-shutdown"), last_exit);
                }
            }
        }
        (Outcome::Completed, last_exit)
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
