//! registerWorker and reregisterWorker (worker-manager.md §2): a proven identity buys
//! temporary credentials, issued by the worker-manager's own static client.
//!
//! Neither body is ever echoed: error bodies carry `"(OMITTED)"` as the payload.

use super::fields;
use super::workers::static_secret;
use crate::error::ApiError;
use crate::hawk::{actor, Auth};
use crate::queue::call::*;
use crate::AppState;
use axum::extract::{Extension, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::auth::issue_temporary_credentials;
use taskledger_core::envelope::{Actor, Envelope};
use taskledger_core::time::{Millis, MINUTE};
use taskledger_core::worker_manager::{config, Proof, WorkerCommand, WorkerEvent, WorkerKey};

type St = State<Arc<AppState>>;

const REGISTER_SCHEMA: &str = "/schemas/worker-manager/v1/register-worker-request.json#";
const REREGISTER_SCHEMA: &str = "/schemas/worker-manager/v1/reregister-worker-request.json#";

/// A fresh 44-character secret: two nice slugids.
fn new_secret() -> String {
    format!("{}{}", slugid::nice(), slugid::nice())
}

/// Credentials for `worker` of `provider_id`: exactly the scopes of §2, from 15 minutes ago
/// until `expires`, signed by the worker-manager's client.
fn credentials(st: &AppState, worker: &WorkerKey, provider_id: &str, expires: Millis) -> Value {
    let (issuer, token) = &st.worker_manager_client;
    let creds = issue_temporary_credentials(
        issuer,
        token,
        Some(&worker.client_id(provider_id)),
        &worker.credential_scopes(),
        Millis::now().minus(15 * MINUTE).to_datetime(),
        expires.to_datetime(),
        &new_secret(),
    );
    json!({
        "clientId": creds.client_id,
        "accessToken": creds.access_token,
        "certificate": creds.certificate,
    })
}

/// The `expires` of the registration among `envelopes`.
fn registered_until(envelopes: &[Envelope<WorkerEvent>]) -> Result<Millis, ApiError> {
    envelopes
        .iter()
        .find_map(|e| {
            if let WorkerEvent::WorkerRegistered { expires, .. } = e.payload {
                Some(expires)
            } else {
                None
            }
        })
        .ok_or_else(|| ApiError::internal("registration recorded no event"))
}

/// The worker's identity proof: the static secret if it is a static proof, None for the
/// other providers' shapes (`{token}`, `{document, signature}`, `{document}`).
fn identity_proof(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    let invalid = || {
        ApiError::validation(
            REGISTER_SCHEMA,
            &["data/workerIdentityProof must match exactly one schema in oneOf".into()],
        )
    };
    let obj = v.and_then(Value::as_object).ok_or_else(invalid)?;
    if obj.contains_key("staticSecret") {
        return static_secret(v.unwrap_or(&Value::Null))
            .map(Some)
            .ok_or_else(invalid);
    }
    let strings = |keys: &[&str]| {
        obj.len() == keys.len()
            && keys
                .iter()
                .all(|k| obj.get(*k).is_some_and(Value::is_string))
    };
    if strings(&["token"]) || strings(&["document", "signature"]) || strings(&["document"]) {
        Ok(None)
    } else {
        Err(invalid())
    }
}

/// A register-worker-request: the worker, its provider and its proof.
fn register_input(body: &Value) -> Result<(WorkerKey, String, Option<String>), ApiError> {
    let required = [
        "workerPoolId",
        "providerId",
        "workerGroup",
        "workerId",
        "workerIdentityProof",
    ];
    let mut allowed = required.to_vec();
    allowed.push("systemBootTime");
    let f = fields(body, REGISTER_SCHEMA, &allowed, &required)?;
    if let Some(t) = f.obj.get("systemBootTime") {
        if t.as_str().and_then(Millis::parse_rfc3339).is_none() {
            return Err(f.invalid("data/systemBootTime must match format \"date-time\"".into()));
        }
    }
    let worker = WorkerKey {
        worker_pool_id: f.pool_id("workerPoolId")?,
        worker_group: f.ident("workerGroup")?,
        worker_id: f.ident("workerId")?,
    };
    let provider_id = f.ident("providerId")?;
    let proof = identity_proof(f.obj.get("workerIdentityProof"))?;
    Ok((worker, provider_id, proof))
}

/// The actor of a worker's own events: the clientId its credentials will have.
fn worker_actor(worker: &WorkerKey, provider_id: &str) -> Actor {
    Actor {
        client_id: worker.client_id(provider_id),
        request_id: Some(uuid::Uuid::new_v4()),
    }
}

/// registerWorker: no scopes; the identity proof is the access control.
pub async fn register_worker(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    Call::new("registerWorker", json!({}))
        .with_payload(&json!(OMITTED))
        .run(async {
            let body = auth.body()?;
            no_query(&uri)?;
            let (worker, provider_id, presented) = register_input(&body.input()?)?;
            let key = st.clients.seal_key();
            let secret = new_secret();
            let cmd = WorkerCommand::RegisterWorker {
                worker: worker.clone(),
                provider_id: provider_id.clone(),
                proof: presented.map(|p| Proof::new(key.clone(), p)),
                secret: crate::auth::seal(key, &worker.registration_secret_owner(), &secret)?,
            };
            let actor = worker_actor(&worker, &provider_id);
            let expires = registered_until(&st.worker_manager.execute(actor, cmd).await?)?;
            let worker_config = st.worker_manager.view().read(|s| {
                s.pools
                    .get(&worker.worker_pool_id)
                    .map(|p| config::worker_config(&p.config))
            });
            Ok(ok(json!({
                "expires": expires.to_rfc3339(),
                "credentials": credentials(&st, &worker, &provider_id, expires),
                "workerConfig": worker_config.unwrap_or_else(|| json!({})),
                "secret": secret,
            })))
        })
        .await
}

/// A reregister-worker-request: the worker and the secret of its latest registration.
fn reregister_input(body: &Value) -> Result<(WorkerKey, String), ApiError> {
    let keys = ["workerPoolId", "workerGroup", "workerId", "secret"];
    let f = fields(body, REREGISTER_SCHEMA, &keys, &keys)?;
    let worker = WorkerKey {
        worker_pool_id: f.pool_id("workerPoolId")?,
        worker_group: f.ident("workerGroup")?,
        worker_id: f.ident("workerId")?,
    };
    // a secret this service handed out: 44 URL-safe base64 characters (the schema's pattern)
    let secret = f.text("secret", 44)?;
    if secret.len() != 44
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(f.invalid("data/secret must match pattern \"^[a-zA-Z0-9_-]{44}$\"".into()));
    }
    Ok((worker, secret))
}

/// reregisterWorker: the latest registration's secret buys new credentials and a new secret.
pub async fn reregister_worker(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    Call::new("reregisterWorker", json!({}))
        .with_payload(&json!(OMITTED))
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            no_query(&uri)?;
            let (worker, presented) = reregister_input(&body.input()?)?;
            caller.require(&super::scope(format!(
                "worker-manager:reregister-worker:{}",
                worker.path()
            )))?;
            let key = st.clients.seal_key();
            let secret = new_secret();
            let cmd = WorkerCommand::ReregisterWorker {
                worker: worker.clone(),
                proof: Proof::new(key.clone(), presented),
                secret: crate::auth::seal(key, &worker.registration_secret_owner(), &secret)?,
            };
            let expires = registered_until(&st.worker_manager.execute(actor(caller), cmd).await?)?;
            let provider_id = st
                .worker_manager
                .view()
                .read(|s| s.workers.get(&worker).map(|w| w.provider_id.clone()))
                .ok_or_else(|| ApiError::not_found("Worker not found"))?;
            Ok(ok(json!({
                "expires": expires.to_rfc3339(),
                "credentials": credentials(&st, &worker, &provider_id, expires),
                "secret": secret,
            })))
        })
        .await
}
