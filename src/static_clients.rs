//! The static clients every node knows, from configuration rather than the auth log: root,
//! the queue's and the worker-manager's own, those in `TASKLEDGER_STATIC_CLIENTS`, and with
//! `--test-clients` the reference's `tester`.

use anyhow::{Context, Result};
use std::sync::Arc;
use taskledger_core::auth::ClientRecord;
use taskledger_gateways::hawk::Clients;

use crate::secrets::far_future;

/// The worker-manager's own client: the issuer of worker credentials.
pub(crate) const WORKER_MANAGER_CLIENT: &str = "static/taskcluster/worker-manager";

/// What worker credentials may hold (worker-manager.md §2), plus naming them `worker/...`.
const WORKER_MANAGER_SCOPES: &[&str] = &[
    "assume:worker-type:*",
    "assume:worker-pool:*",
    "assume:worker-id:*",
    "queue:worker-id:*",
    "secrets:get:worker-type:*",
    "secrets:get:worker-pool:*",
    "queue:claim-work:*",
    "worker-manager:remove-worker:*",
    "worker-manager:reregister-worker:*",
    "worker-manager:should-worker-terminate:*",
    "auth:create-client:worker/*",
];

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaticClientConfig {
    client_id: String,
    access_token: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

/// The access tokens of the built-in static clients.
pub(crate) struct StaticTokens<'a> {
    pub root: &'a str,
    pub queue: &'a str,
    pub worker_manager: &'a str,
}

/// Adds the static clients to `clients`: the built-in ones with `tokens`, those `configured`
/// (a JSON array of `{clientId, accessToken, scopes?, description?}`, ids under `static/`),
/// and `tester` when `test_clients`.
pub(crate) fn insert_static_clients(
    clients: &mut Clients,
    tokens: StaticTokens<'_>,
    configured: Option<&str>,
    test_clients: bool,
) -> Result<()> {
    let static_client = |id: &str, token: &str, scopes: &[&str]| ClientRecord {
        client_id: id.to_string(),
        access_token: token.to_string(),
        scopes: Arc::new(scopes.iter().map(|s| s.to_string()).collect()),
        final_scopes: false,
        expires: far_future(),
        disabled: false,
    };
    clients.insert(static_client(
        "static/taskcluster/root",
        tokens.root,
        &["*"],
    ));
    clients.insert(static_client(
        "static/taskcluster/queue",
        tokens.queue,
        &["*"],
    ));
    clients.insert(static_client(
        WORKER_MANAGER_CLIENT,
        tokens.worker_manager,
        WORKER_MANAGER_SCOPES,
    ));
    if let Some(json) = configured {
        let list: Vec<StaticClientConfig> =
            serde_json::from_str(json).context("TASKLEDGER_STATIC_CLIENTS must be a JSON array")?;
        for c in list {
            anyhow::ensure!(
                c.client_id.starts_with("static/"),
                "static client ids start with `static/`: {}",
                c.client_id
            );
            let scopes: Vec<&str> = c.scopes.iter().map(String::as_str).collect();
            let client = static_client(&c.client_id, &c.access_token, &scopes);
            match c.description {
                Some(d) => clients.insert_described(client, d),
                None => clients.insert(client),
            }
        }
    }
    if test_clients {
        clients.insert(static_client("tester", "no-secret", &["test:*"]));
    }
    Ok(())
}
