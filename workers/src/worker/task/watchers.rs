//! What watches a running task besides its commands: the reclaimer, which keeps the claim
//! (and the task's credentials) alive, and the status poller, which stops a run resolved
//! elsewhere (cancelled, past its deadline).

use super::super::livelog::TaskLog;
use super::super::process::Abort;
use super::super::SharedQueue;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use taskcluster::Credentials;
use tokio::sync::watch;

/// How often a claim that this machine's clock already sees as over is reclaimed.
const SKEWED_RECLAIM: Duration = Duration::from_secs(60);

/// Reclaims before `takenUntil` (3 minutes before, or a third of the claim when claims are
/// shorter) and swaps in the new credentials; a refused reclaim means the run is lost. A claim
/// already over by this machine's clock is reclaimed at once, then once a minute.
pub(super) async fn reclaimer(
    queue: SharedQueue,
    task_id: String,
    run_id: String,
    mut taken_until: DateTime<Utc>,
    abort: Arc<watch::Sender<Option<Abort>>>,
    log: Arc<TaskLog>,
) {
    // when the last reclaim ran, if the claim was already over by this clock then
    let mut behind: Option<tokio::time::Instant> = None;
    loop {
        let left = (taken_until - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            // the claim is over by this machine's clock though the queue may still hold it (a
            // late wake-up, or a clock ahead of the queue's): reclaim at once, and when the
            // reclaimed claim is over here too, once a minute: never in a tight loop
            if let Some(last) = behind {
                log.warn(format!(
                    "the claim runs until {taken_until}, already past on this machine's clock \
                     (is it ahead of the queue's?); reclaiming in a minute"
                ));
                tokio::time::sleep_until(last + SKEWED_RECLAIM).await;
            }
            behind = Some(tokio::time::Instant::now());
        } else {
            behind = None;
            let margin = Duration::from_secs(180).min(left / 3);
            tokio::time::sleep(left - margin).await;
        }
        match queue.get().reclaimTask(&task_id, &run_id).await {
            Ok(reply) => {
                let next = reply["takenUntil"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|t| t.with_timezone(&Utc));
                let creds: Option<Credentials> =
                    serde_json::from_value(reply["credentials"].clone()).ok();
                match (next, creds.and_then(|c| queue.renew(c).ok())) {
                    (Some(t), Some(())) => {
                        taken_until = t;
                        log.info(format!("Reclaimed task; claim now runs until {t}"));
                    }
                    _ => {
                        log.error("reclaimTask answered without takenUntil or credentials");
                        abort.send_replace(Some(Abort::RunLost));
                        return;
                    }
                }
            }
            Err(e) => {
                log.error(format!("reclaimTask failed: {e}; stopping the task"));
                abort.send_replace(Some(Abort::RunLost));
                return;
            }
        }
    }
}

/// Watches the run's state so a cancelled or otherwise resolved run stops promptly.
pub(super) async fn status_poller(
    queue: SharedQueue,
    task_id: String,
    run_id: usize,
    every: Duration,
    abort: Arc<watch::Sender<Option<Abort>>>,
    log: Arc<TaskLog>,
) {
    loop {
        tokio::time::sleep(every).await;
        let s = match queue.get().status(&task_id).await {
            Ok(s) => s,
            Err(e) if taskcluster::err_status_code(&e).map(|c| c.as_u16()) == Some(403) => {
                tracing::info!(
                    task_id,
                    "the worker's credentials lack queue:status:<taskId>; a cancelled run is \
                     noticed at its next reclaim only"
                );
                return;
            }
            Err(_) => continue,
        };
        let run = &s["status"]["runs"][run_id];
        let state = run["state"].as_str().unwrap_or("running");
        if state != "running" {
            log.error(format!(
                "the run is now {state} ({}); stopping the task",
                run["reasonResolved"].as_str().unwrap_or("-")
            ));
            abort.send_replace(Some(Abort::RunLost));
            return;
        }
    }
}
