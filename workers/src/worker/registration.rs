//! A worker of a worker-manager pool (worker-protocol.md §2, static provider): it proves its
//! identity with the static secret, receives temporary credentials, renews them with
//! reregisterWorker before they expire, and asks shouldWorkerTerminate whether to stop.

use super::SharedQueue;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, WorkerManager};

/// What registerWorker and reregisterWorker hand back.
pub(crate) struct Registration {
    pub credentials: Credentials,
    pub expires: DateTime<Utc>,
    /// The one-time secret that buys the next credentials.
    pub secret: String,
}

fn parse(reply: &Value) -> Result<Registration> {
    let credentials: Credentials = serde_json::from_value(reply["credentials"].clone())
        .context("registration reply without credentials")?;
    let expires = reply["expires"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .context("registration reply without expires")?
        .with_timezone(&Utc);
    let secret = reply["secret"]
        .as_str()
        .context("registration reply without secret")?
        .to_string();
    Ok(Registration {
        credentials,
        expires,
        secret,
    })
}

/// registerWorker with the static secret (no credentials needed).
pub(crate) async fn register(
    root_url: &str,
    pool: &str,
    provider_id: &str,
    group: &str,
    id: &str,
    static_secret: &str,
) -> Result<Registration> {
    let wm = WorkerManager::new(ClientBuilder::new(root_url))?;
    let reply = wm
        .registerWorker(&json!({
            "workerPoolId": pool,
            "providerId": provider_id,
            "workerGroup": group,
            "workerId": id,
            "workerIdentityProof": {"staticSecret": static_secret},
        }))
        .await
        .context("registerWorker")?;
    parse(&reply)
}

/// Renews the credentials when two thirds of their remaining time has passed, and swaps them
/// into the worker's queue client.
pub(crate) async fn keep_registered(
    root_url: String,
    pool: String,
    group: String,
    id: String,
    mut current: Registration,
    queue: SharedQueue,
) {
    loop {
        let left = (current.expires - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(left * 2 / 3).await;
        let next = async {
            let wm = WorkerManager::new(
                ClientBuilder::new(&root_url).credentials(current.credentials.clone()),
            )?;
            let reply = wm
                .reregisterWorker(&json!({
                    "workerPoolId": pool,
                    "workerGroup": group,
                    "workerId": id,
                    "secret": current.secret,
                }))
                .await
                .context("reregisterWorker")?;
            parse(&reply)
        }
        .await;
        match next {
            Ok(r) => match queue.renew(r.credentials.clone()) {
                Ok(()) => {
                    tracing::info!(expires = %r.expires, "worker credentials renewed");
                    current = r;
                }
                Err(e) => tracing::error!(error = %e, "renewed credentials unusable"),
            },
            // keep trying while the old credentials last
            Err(e) => {
                tracing::warn!(error = %e, "reregisterWorker failed; retrying in 60 s");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// shouldWorkerTerminate with the worker's credentials; errors count as "no".
pub(crate) async fn should_terminate(
    root_url: &str,
    creds: Credentials,
    pool: &str,
    group: &str,
    id: &str,
) -> Option<String> {
    let wm = WorkerManager::new(ClientBuilder::new(root_url).credentials(creds)).ok()?;
    match wm.shouldWorkerTerminate(pool, group, id).await {
        Ok(v) if v["terminate"] == true => Some(
            v["reason"]
                .as_str()
                .unwrap_or("no reason given")
                .to_string(),
        ),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "shouldWorkerTerminate failed");
            None
        }
    }
}
