//! The worker-manager's HTTP API (reference/worker-manager.md §5) for the `static` provider:
//! providers, worker pools (`pools`), workers (`workers`), registration (`register`) and
//! worker-pool errors (`pool_errors`). Bodies and answers in `json`.
//!
//! Static pools have no launch configurations: their list is empty and their workers count
//! under `unknown` in workerPoolStats. `listWorkers`/`getWorker` join the queue's worker
//! records with these workers (`queue_workers`). Workers past their `expires` and errors older
//! than 7 days are removed by the workers crate's `run_worker_expiry`. Left out: cloud
//! providers and the deletion of `null-provider` pools. (The Pulse messages are the bridge's.)

mod json;
mod pool_errors;
mod pools;
mod queue_workers;
mod register;
mod workers;

use crate::error::ApiError;
use crate::queue::call::{ident_param, TASK_QUEUE_RE};
use crate::Mount;
use axum::routing::{get, post};
use serde_json::{Map, Value};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::worker_manager::{WorkerKey, WorkerPoolId};

/// Routes under `/api/worker-manager/v1`.
pub fn routes(service: Mount) -> Mount {
    use pools as p;
    use workers as w;
    service
        .route("/providers", get(p::list_providers))
        .route(
            "/worker-pool/{*workerPoolId}",
            get(p::worker_pool)
                .put(p::create_worker_pool)
                .post(p::update_worker_pool)
                .delete(p::delete_worker_pool),
        )
        .route("/worker-pools", get(p::list_worker_pools))
        .route("/worker-pools/stats", get(p::list_worker_pools_stats))
        .route(
            "/worker-pool-errors/{*workerPoolId}",
            get(pool_errors::list_worker_pool_errors).post(pool_errors::report_worker_error),
        )
        .route(
            "/workers/{*rest}",
            get(w::get_route)
                .put(w::create_worker)
                .post(w::update_worker)
                .delete(w::remove_worker),
        )
        .route(
            "/provisioners/{provisionerId}/worker-types/{workerType}/workers",
            get(queue_workers::list_workers),
        )
        .route(
            "/provisioners/{provisionerId}/worker-types/{workerType}/workers/{workerGroup}/{workerId}",
            get(queue_workers::get_worker),
        )
        .route("/worker/register", post(register::register_worker))
        .route("/worker/reregister", post(register::reregister_worker))
}

fn scope(s: String) -> ScopeExpr {
    ScopeExpr::scope(s)
}

/// A `workerPoolId` URL parameter.
fn pool_param(v: &str) -> Result<WorkerPoolId, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_param("workerPoolId", v, TASK_QUEUE_RE))
}

/// The three URL parameters naming a worker.
fn worker_param(pool: &str, group: &str, id: &str) -> Result<WorkerKey, ApiError> {
    let worker_pool_id = pool_param(pool)?;
    ident_param("workerGroup", group)?;
    ident_param("workerId", id)?;
    Ok(WorkerKey {
        worker_pool_id,
        worker_group: group.to_string(),
        worker_id: id.to_string(),
    })
}

/// Schema checks of one input document, with Taskcluster's InputValidationError.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    schema: &'a str,
}

impl<'a> Fields<'a> {
    fn invalid(&self, error: String) -> ApiError {
        ApiError::validation(self.schema, &[error])
    }

    /// A string of at most `max` characters, as JSON schema counts them (required: checked
    /// by `check_keys`).
    fn text(&self, key: &str, max: usize) -> Result<String, ApiError> {
        match self.obj.get(key).and_then(Value::as_str) {
            Some(v) if v.len() <= max || v.chars().count() <= max => Ok(v.to_string()),
            _ => Err(self.invalid(format!(
                "data/{key} must be a string of at most {max} characters"
            ))),
        }
    }

    /// An identifier: `^[a-zA-Z0-9-_]{1,38}$`.
    fn ident(&self, key: &str) -> Result<String, ApiError> {
        let v = self.text(key, 38)?;
        if taskledger_core::ids::is_ident38(&v) {
            Ok(v)
        } else {
            Err(self.invalid(format!(
                "data/{key} must match pattern \"^([a-zA-Z0-9-_]*)$\" (1 to 38 characters)"
            )))
        }
    }

    fn pool_id(&self, key: &str) -> Result<WorkerPoolId, ApiError> {
        let v = self.text(key, 77)?;
        v.parse()
            .map_err(|_| self.invalid(format!("data/{key} must match pattern \"{TASK_QUEUE_RE}\"")))
    }

    fn boolean(&self, key: &str) -> Result<bool, ApiError> {
        self.obj
            .get(key)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.invalid(format!("data/{key} must be boolean")))
    }

    fn object(&self, key: &str) -> Result<Map<String, Value>, ApiError> {
        self.obj
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| self.invalid(format!("data/{key} must be object")))
    }
}

/// Checks keys (`additionalProperties: false` and `required`), then hands out the fields.
fn fields<'a>(
    body: &'a Value,
    schema: &'a str,
    allowed: &[&str],
    required: &[&str],
) -> Result<Fields<'a>, ApiError> {
    crate::auth::check_keys(body, schema, allowed, required)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::validation(schema, &["data must be object".into()]))?;
    Ok(Fields { obj, schema })
}

/// A copy of `payload` fit for an error body: `providerInfo.staticSecret` omitted.
fn scrubbed(payload: &Value) -> Value {
    let mut p = payload.clone();
    crate::queue::call::omit(&mut p, &["providerInfo", "staticSecret"]);
    p
}
