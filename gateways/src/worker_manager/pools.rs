//! Providers and worker pools (their errors in `pool_errors.rs`).

use super::json::{launch_config_stats, pool_json, pool_stats_json};
use super::{fields, pool_param, scope};
use crate::error::{ApiError, ErrorCode};
use crate::hawk::{actor, Auth};
use crate::queue::call::*;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{
    PoolInput, WorkerCommand, WorkerManagerState, WorkerPool, WorkerPoolId,
};

type St = State<Arc<AppState>>;

const CREATE_POOL_SCHEMA: &str = "/schemas/worker-manager/v1/create-worker-pool-request.json#";
const UPDATE_POOL_SCHEMA: &str = "/schemas/worker-manager/v1/update-worker-pool-request.json#";
const POOL_FIELDS: [&str; 5] = [
    "providerId",
    "description",
    "config",
    "owner",
    "emailOnError",
];

// --- providers --------------------------------------------------------------------------

/// A decimal query parameter of listProviders' own paging.
fn decimal(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<usize>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(v.parse().unwrap_or(usize::MAX)))
        }
        Some(v) => Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            format!("Query-string parameter: {key}=\"{v}\" does not match expression: /^[0-9]+$/"),
        )),
    }
}

/// listProviders: the configured providers (not `null-provider`); offset paging.
pub async fn list_providers(State(st): St, Extension(auth): Extension<Auth>, uri: Uri) -> Response {
    Call::new("listProviders", json!({}))
        .run(async {
            auth.caller()?
                .require(&scope("worker-manager:list-providers".into()))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let start = decimal(&q, "continuationToken")?.unwrap_or(0);
            let limit = decimal(&q, "limit")?.unwrap_or(100).max(1);
            let providers: Vec<Value> = st.worker_manager.view().read(|s| {
                s.providers
                    .iter()
                    .map(|(id, t)| json!({ "providerId": id, "providerType": t.as_str() }))
                    .collect()
            });
            let end = start.saturating_add(limit);
            let page: Vec<Value> = providers.iter().skip(start).take(limit).cloned().collect();
            let mut out = json!({ "providers": page });
            if end < providers.len() {
                out["continuationToken"] = json!(end.to_string());
            }
            Ok(ok(out))
        })
        .await
}

// --- pools ------------------------------------------------------------------------------

/// `owner`: JSON schema's `email` format, loosely (local part, `@`, domain, no spaces).
fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

/// A pool definition from a create/update body (`extra`: allowed, ignored keys).
fn pool_input(
    body: &Value,
    worker_pool_id: WorkerPoolId,
    schema: &str,
    extra: &[&str],
) -> Result<PoolInput, ApiError> {
    let allowed: Vec<&str> = POOL_FIELDS.iter().chain(extra).copied().collect();
    let f = fields(body, schema, &allowed, &POOL_FIELDS)?;
    let owner = f.text("owner", 10240)?;
    if !is_email(&owner) {
        return Err(f.invalid("data/owner must match format \"email\"".into()));
    }
    Ok(PoolInput {
        worker_pool_id,
        provider_id: f.ident("providerId")?,
        description: f.text("description", 10240)?,
        config: Value::Object(f.object("config")?),
        owner,
        email_on_error: f.boolean("emailOnError")?,
    })
}

/// The fields an update body may carry and the service ignores (a pool as read, sent back):
/// still checked against their schema.
fn ignored_pool_fields(body: &Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(v) = body.get("workerPoolId") {
        if v.as_str()
            .is_none_or(|p| p.parse::<WorkerPoolId>().is_err())
        {
            errors.push(format!(
                "data/workerPoolId must match pattern \"{TASK_QUEUE_RE}\""
            ));
        }
    }
    for key in ["created", "lastModified"] {
        if let Some(v) = body.get(key) {
            if v.as_str()
                .is_none_or(|t| Millis::parse_rfc3339(t).is_none())
            {
                errors.push(format!("data/{key} must match format \"date-time\""));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(UPDATE_POOL_SCHEMA, &errors))
    }
}

/// `AllOf[manage-worker-pool:<pool>, provider:<providerId>]`.
fn manage_expr(input: &PoolInput) -> ScopeExpr {
    ScopeExpr::all(vec![
        scope(format!(
            "worker-manager:manage-worker-pool:{}",
            input.worker_pool_id
        )),
        scope(format!("worker-manager:provider:{}", input.provider_id)),
    ])
}

/// The pool as worker-pool-full, or 404.
fn pool_answer(st: &AppState, id: &WorkerPoolId) -> Result<Response, ApiError> {
    st.worker_manager
        .view()
        .read(|s| s.pools.get(id).map(|p| pool_json(s, p)))
        .map(ok)
        .ok_or_else(|| ApiError::not_found("Worker pool does not exist"))
}

pub async fn create_worker_pool(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("createWorkerPool", json!({ "workerPoolId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let pool = pool_param(&id)?;
            no_query(&uri)?;
            let input = pool_input(&body.input()?, pool, CREATE_POOL_SCHEMA, &[])?;
            caller.require(&manage_expr(&input))?;
            let pool = input.worker_pool_id.clone();
            let cmd = WorkerCommand::CreateWorkerPool(input);
            st.worker_manager.execute(actor(caller), cmd).await?;
            pool_answer(&st, &pool)
        })
        .await
}

pub async fn update_worker_pool(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("updateWorkerPool", json!({ "workerPoolId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let pool = pool_param(&id)?;
            no_query(&uri)?;
            let body = body.input()?;
            let extra = ["workerPoolId", "created", "lastModified"];
            let input = pool_input(&body, pool, UPDATE_POOL_SCHEMA, &extra)?;
            ignored_pool_fields(&body)?;
            caller.require(&manage_expr(&input))?;
            // upstream's order: the provider and its config, then the body's pool id
            st.worker_manager
                .view()
                .read(|s| s.check_definition(&input))?;
            if body
                .get("workerPoolId")
                .is_some_and(|v| v.as_str() != Some(input.worker_pool_id.as_str()))
            {
                return Err(ApiError::input("Incorrect workerPoolId in request body"));
            }
            let pool = input.worker_pool_id.clone();
            let cmd = WorkerCommand::UpdateWorkerPool(input);
            st.worker_manager.execute(actor(caller), cmd).await?;
            pool_answer(&st, &pool)
        })
        .await
}

/// deleteWorkerPool: switches the pool to `null-provider`.
pub async fn delete_worker_pool(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    Call::new("deleteWorkerPool", json!({ "workerPoolId": id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&scope(format!("worker-manager:manage-worker-pool:{id}")))?;
            let pool = pool_param(&id)?;
            no_query(&uri)?;
            let cmd = WorkerCommand::DeleteWorkerPool {
                worker_pool_id: pool.clone(),
            };
            st.worker_manager.execute(actor(caller), cmd).await?;
            pool_answer(&st, &pool)
        })
        .await
}

/// A `/worker-pool/<rest>` path's sub-resource: `<pool>/stats` or `<pool>/launch-configs`
/// (a pool id has one `/`, so a third segment names one).
fn sub_resource(id: &str) -> Option<(&str, &str)> {
    let id = id.strip_suffix('/').unwrap_or(id);
    let (pool, last) = id.rsplit_once('/')?;
    (pool.contains('/') && (last == "stats" || last == "launch-configs")).then_some((pool, last))
}

pub async fn worker_pool(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    match sub_resource(&id) {
        Some((pool, "stats")) => return worker_pool_stats(&st, &auth, &uri, pool).await,
        Some((pool, _)) => return launch_configs(&st, &auth, &uri, pool).await,
        None => {}
    }
    Call::new("workerPool", json!({ "workerPoolId": id }))
        .run(async {
            auth.caller()?
                .require(&scope(format!("worker-manager:get-worker-pool:{id}")))?;
            let pool = pool_param(&id)?;
            no_query(&uri)?;
            pool_answer(&st, &pool)
        })
        .await
}

/// workerPoolStats: the pool's counts per launch configuration (`json::launch_config_stats`).
async fn worker_pool_stats(st: &AppState, auth: &Auth, uri: &Uri, id: &str) -> Response {
    Call::new("workerPoolStats", json!({ "workerPoolId": id }))
        .run(async {
            auth.caller()?
                .require(&scope(format!("worker-manager:get-worker-pool:{id}")))?;
            let pool = pool_param(id)?;
            no_query(uri)?;
            st.worker_manager
                .view()
                .read(|s| {
                    s.pools
                        .get(&pool)
                        .map(|p| json!({ "launchConfigStats": launch_config_stats(s, p) }))
                })
                .map(ok)
                .ok_or_else(|| ApiError::not_found("Worker pool does not exist"))
        })
        .await
}

/// listWorkerPoolLaunchConfigs: a pool's launch configurations. Only cloud providers have
/// them, so a static pool's list is empty, archived ones included.
async fn launch_configs(st: &AppState, auth: &Auth, uri: &Uri, id: &str) -> Response {
    Call::new("listWorkerPoolLaunchConfigs", json!({ "workerPoolId": id }))
        .run(async {
            auth.caller()?
                .require(&scope(format!("worker-manager:get-worker-pool:{id}")))?;
            let pool = pool_param(id)?;
            let q = query(uri, &["continuationToken", "limit", "includeArchived"])?;
            if let Some(bad) = q
                .get("includeArchived")
                .filter(|v| *v != "true" && *v != "false")
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequestArguments,
                    format!("Query-string parameter: includeArchived=\"{bad}\" does not match expression: /^(true|false)$/"),
                ));
            }
            if !st.worker_manager.view().read(|s| s.pools.contains_key(&pool)) {
                return Err(ApiError::not_found("Worker pool does not exist"));
            }
            Ok(ok(json!({ "workerPoolLaunchConfigs": [] })))
        })
        .await
}

/// The pools in id order after the token's id, `render`ed, under `key`: listWorkerPools and
/// listWorkerPoolsStats.
fn pool_page(
    st: &AppState,
    uri: &Uri,
    key: &str,
    render: fn(&WorkerManagerState, &WorkerPool) -> Value,
) -> Result<Response, ApiError> {
    let q = query(uri, &["continuationToken", "limit"])?;
    let after = decode_token(&q)?.map(|t| String::from_utf8_lossy(&t).into_owned());
    let limit = limit(&q);
    let (page, more): (Vec<(String, Value)>, bool) = st.worker_manager.view().read(|s| {
        let mut rows = s
            .pools
            .iter()
            .filter(|(id, _)| after.as_deref().is_none_or(|a| id.as_str() > a))
            .map(|(id, p)| (id.to_string(), render(s, p)));
        let page: Vec<_> = rows.by_ref().take(limit).collect();
        (page, rows.next().is_some())
    });
    let mut out = json!({ key: page.iter().map(|(_, v)| v).collect::<Vec<_>>() });
    if let (true, Some((last, _))) = (more, page.last()) {
        out["continuationToken"] = json!(encode_token(last.as_bytes()));
    }
    Ok(ok(out))
}

pub async fn list_worker_pools(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
    Call::new("listWorkerPools", json!({}))
        .run(async {
            auth.caller()?
                .require(&scope("worker-manager:list-worker-pools".into()))?;
            pool_page(&st, &uri, "workerPools", pool_json)
        })
        .await
}

/// listWorkerPoolsStats: every pool's counts, paged as listWorkerPools.
pub async fn list_worker_pools_stats(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
    Call::new("listWorkerPoolsStats", json!({}))
        .run(async {
            auth.caller()?
                .require(&scope("worker-manager:list-worker-pools".into()))?;
            pool_page(&st, &uri, "workerPoolsStats", pool_stats_json)
        })
        .await
}
