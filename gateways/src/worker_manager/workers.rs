//! Workers: `/workers/<workerPoolId>[/<workerGroup>[/<workerId>[/should-terminate]]]`.
//!
//! The pool id arrives as one `%2F`-encoded segment (clients) or as two raw segments; since no
//! id may contain `/`, the decoded path splits into parts unambiguously: 2 parts name a pool,
//! 3 a worker group, 4 a worker, 5 ending in `should-terminate` that question.

use super::json::worker_json;
use super::{fields, pool_param, scope, scrubbed, worker_param};
use crate::error::ApiError;
use crate::hawk::{actor, Auth, Caller};
use crate::queue::call::*;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::access::seal::Sealed;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{Worker, WorkerCommand, WorkerKey};

type St = State<Arc<AppState>>;

const CREATE_WORKER_SCHEMA: &str = "/schemas/worker-manager/v1/create-worker-request.json#";
const WORKER_STATES: [&str; 5] = ["requested", "running", "stopping", "stopped", "standalone"];

/// What a `/workers/...` path names (ids still unchecked).
#[derive(Debug, PartialEq)]
enum Target {
    Pool(String),
    Group(String, String),
    Worker([String; 3]),
    ShouldTerminate([String; 3]),
}

/// Splits the percent-decoded path after `/api/worker-manager/v1/workers/` into parts (see the module docs). The
/// unpublished `<workerPoolId>:` alias loses its colon.
fn target(uri: &Uri) -> Option<Target> {
    let rest = uri.path().strip_prefix("/api/worker-manager/v1/workers/")?;
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .ok()?;
    let mut parts: Vec<String> = decoded.split('/').map(str::to_string).collect();
    if parts.len() > 2 && parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    if parts.len() > 2 {
        if let Some(stripped) = parts[1].strip_suffix(':') {
            parts[1] = stripped.to_string();
        }
    }
    let pool = |p: &[String]| format!("{}/{}", p[0], p[1]);
    match parts.as_slice() {
        [one] => Some(Target::Pool(one.clone())),
        [_, _] => Some(Target::Pool(pool(&parts))),
        [_, _, g] => Some(Target::Group(pool(&parts), g.clone())),
        [_, _, g, w] => Some(Target::Worker([pool(&parts), g.clone(), w.clone()])),
        [_, _, g, w, last] if last == "should-terminate" => Some(Target::ShouldTerminate([
            pool(&parts),
            g.clone(),
            w.clone(),
        ])),
        _ => None,
    }
}

fn params(w: &[String; 3]) -> Value {
    json!({ "workerPoolId": w[0], "workerGroup": w[1], "workerId": w[2] })
}

/// The path of a worker as scopes name it.
fn path(w: &[String; 3]) -> String {
    w.join("/")
}

/// GET: listWorkersForWorkerPool, listWorkersForWorkerGroup, worker or shouldWorkerTerminate.
pub async fn get_route(State(st): St, Extension(auth): Extension<Auth>, uri: Uri) -> Response {
    match target(&uri) {
        Some(Target::Pool(pool)) => list_for_pool(&st, &auth, &uri, pool).await,
        Some(Target::Group(pool, group)) => list_for_group(&st, &auth, &uri, pool, group).await,
        Some(Target::Worker(w)) => worker(&uri, &st, &auth, w).await,
        Some(Target::ShouldTerminate(w)) => should_terminate(&uri, &st, &auth, w).await,
        None => crate::not_found().await.into_response(),
    }
}

/// A page of workers after the `group NUL id` token; the token of the next page, if any.
/// Workers come in (group, id) order and the token is compared the same way: as one
/// `group/id` string, a page ending in group `us-east` skipped every worker of `us-east-1`
/// (`-` sorts before `/`).
fn worker_page<'a>(
    workers: impl Iterator<Item = &'a Worker>,
    q: &std::collections::HashMap<String, String>,
) -> Result<Value, ApiError> {
    let after = decode_token(q)?.map(|t| String::from_utf8_lossy(&t).into_owned());
    let after = after
        .as_deref()
        .map(|a| a.split_once('\0').unwrap_or((a, "")));
    let limit = limit(q);
    let mut rows = workers.filter(|w| {
        after.is_none_or(|a| (w.key.worker_group.as_str(), w.key.worker_id.as_str()) > a)
    });
    let page: Vec<&Worker> = rows.by_ref().take(limit).collect();
    let mut out = json!({ "workers": page.iter().map(|w| worker_json(w)).collect::<Vec<_>>() });
    if let (true, Some(last)) = (rows.next().is_some(), page.last()) {
        let at = format!("{}\0{}", last.key.worker_group, last.key.worker_id);
        out["continuationToken"] = json!(encode_token(at.as_bytes()));
    }
    Ok(out)
}

async fn list_for_pool(st: &AppState, auth: &Auth, uri: &Uri, pool: String) -> Response {
    Call::new("listWorkersForWorkerPool", json!({ "workerPoolId": pool }))
        .run(async {
            auth.caller()?
                .require(&scope(format!("worker-manager:list-workers:{pool}")))?;
            let id = pool_param(&pool)?;
            let q = query(
                uri,
                &["continuationToken", "limit", "launchConfigId", "state"],
            )?;
            let state = q.get("state").map(String::as_str);
            if let Some(bad) = state.filter(|s| !WORKER_STATES.contains(s)) {
                return Err(ApiError::new(
                    crate::error::ErrorCode::InvalidRequestArguments,
                    format!(
                        "Query-string parameter: state=\"{bad}\" does not match expression: \
                         /^(requested|running|stopping|stopped|standalone)$/"
                    ),
                ));
            }
            // static workers have no launch config
            let none = q.contains_key("launchConfigId");
            st.worker_manager.view().read(|s| {
                if !s.pools.contains_key(&id) {
                    return Err(ApiError::not_found("Worker Pool does not exist"));
                }
                let workers = s
                    .pool_workers(&id)
                    .filter(|w| !none && state.is_none_or(|st| w.state.as_str() == st));
                worker_page(workers, &q).map(ok)
            })
        })
        .await
}

async fn list_for_group(
    st: &AppState,
    auth: &Auth,
    uri: &Uri,
    pool: String,
    group: String,
) -> Response {
    let params = json!({ "workerPoolId": pool, "workerGroup": group });
    Call::new("listWorkersForWorkerGroup", params)
        .run(async {
            auth.caller()?.require(&scope(format!(
                "worker-manager:list-workers:{pool}/{group}"
            )))?;
            let id = pool_param(&pool)?;
            ident_param("workerGroup", &group)?;
            let q = query(uri, &["continuationToken", "limit"])?;
            st.worker_manager.view().read(|s| {
                let workers = s.pool_workers(&id).filter(|w| w.key.worker_group == group);
                worker_page(workers, &q).map(ok)
            })
        })
        .await
}

fn load_worker(st: &AppState, key: &WorkerKey) -> Result<Worker, ApiError> {
    st.worker_manager
        .view()
        .read(|s| s.workers.get(key).cloned())
        .ok_or_else(|| ApiError::not_found("Worker not found"))
}

async fn worker(uri: &Uri, st: &AppState, auth: &Auth, w: [String; 3]) -> Response {
    Call::new("worker", params(&w))
        .run(async {
            auth.caller()?
                .require(&scope(format!("worker-manager:get-worker:{}", path(&w))))?;
            let key = worker_param(&w[0], &w[1], &w[2])?;
            no_query(uri)?;
            Ok(ok(worker_json(&load_worker(st, &key)?)))
        })
        .await
}

/// shouldWorkerTerminate: `{terminate: false, reason: "none"}` unless the worker was removed,
/// then `{terminate: true, reason: "worker was removed"}`.
async fn should_terminate(uri: &Uri, st: &AppState, auth: &Auth, w: [String; 3]) -> Response {
    Call::new("shouldWorkerTerminate", params(&w))
        .run(async {
            auth.caller()?.require(&scope(format!(
                "worker-manager:should-worker-terminate:{}",
                path(&w)
            )))?;
            let key = worker_param(&w[0], &w[1], &w[2])?;
            no_query(uri)?;
            let (terminate, reason) = load_worker(st, &key)?.should_terminate();
            Ok(ok(json!({ "terminate": terminate, "reason": reason })))
        })
        .await
}

/// A create-worker-request: `expires`, `capacity` (default 1), the static secret if given.
struct WorkerInput {
    expires: Millis,
    capacity: u32,
    static_secret: Option<String>,
}

fn worker_input(body: &Value) -> Result<WorkerInput, ApiError> {
    let f = fields(
        body,
        CREATE_WORKER_SCHEMA,
        &["expires", "capacity", "providerInfo"],
        &["expires"],
    )?;
    let expires = f
        .obj
        .get("expires")
        .and_then(Value::as_str)
        .and_then(Millis::parse_rfc3339)
        .ok_or_else(|| f.invalid("data/expires must match format \"date-time\"".into()))?;
    let capacity = match f.obj.get("capacity") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|c| *c >= 1)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| f.invalid("data/capacity must be an integer >= 1".into()))?,
    };
    let static_secret = match f.obj.get("providerInfo") {
        None => None,
        Some(info) => Some(static_secret(info).ok_or_else(|| {
            f.invalid("data/providerInfo must match exactly one schema in oneOf".into())
        })?),
    };
    Ok(WorkerInput {
        expires,
        capacity,
        static_secret,
    })
}

/// `{staticSecret}` matching `^[a-zA-Z0-9_-]{44}$`, and nothing else.
pub(super) fn static_secret(v: &Value) -> Option<String> {
    let obj = v.as_object().filter(|o| o.len() == 1)?;
    let s = obj.get("staticSecret")?.as_str()?;
    let shaped = s.len() == 44
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    shaped.then(|| s.to_string())
}

fn seal_static(
    st: &AppState,
    key: &WorkerKey,
    secret: Option<&str>,
) -> Result<Option<Sealed>, ApiError> {
    secret
        .map(|s| crate::auth::seal(st.clients.seal_key(), &key.static_secret_owner(), s))
        .transpose()
}

/// The worker of a PUT/POST/DELETE path; anything else is not a route.
fn worker_target(uri: &Uri) -> Option<[String; 3]> {
    match target(uri) {
        Some(Target::Worker(w)) => Some(w),
        _ => None,
    }
}

/// createWorker and updateWorker: same input, different scope and command.
async fn write_worker(
    st: Arc<AppState>,
    auth: Auth,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    create: bool,
) -> Response {
    let Some(w) = worker_target(&uri) else {
        return crate::not_found().await.into_response();
    };
    let (name, verb) = if create {
        ("createWorker", "create-worker")
    } else {
        ("updateWorker", "update-worker")
    };
    Call::new(name, params(&w))
        .with_scrubbed_body(&headers, &body, scrubbed)
        .run(async {
            let body = auth.body()?;
            let caller: &Caller = auth.caller()?;
            caller.require(&scope(format!("worker-manager:{verb}:{}", path(&w))))?;
            let key = worker_param(&w[0], &w[1], &w[2])?;
            no_query(&uri)?;
            let input = worker_input(&body.input()?)?;
            let static_secret = seal_static(&st, &key, input.static_secret.as_deref())?;
            let (worker, expires, capacity) = (key.clone(), input.expires, input.capacity);
            let cmd = if create {
                WorkerCommand::CreateWorker {
                    worker,
                    expires,
                    capacity,
                    static_secret,
                }
            } else {
                WorkerCommand::UpdateWorker {
                    worker,
                    expires,
                    capacity,
                    static_secret,
                }
            };
            st.worker_manager.execute(actor(caller), cmd).await?;
            Ok(ok(worker_json(&load_worker(&st, &key)?)))
        })
        .await
}

pub async fn create_worker(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write_worker(st, auth, uri, headers, body, true).await
}

pub async fn update_worker(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write_worker(st, auth, uri, headers, body, false).await
}

/// removeWorker: the worker is stopped (kept until it expires); answers `{}`.
pub async fn remove_worker(State(st): St, Extension(auth): Extension<Auth>, uri: Uri) -> Response {
    let Some(w) = worker_target(&uri) else {
        return crate::not_found().await.into_response();
    };
    Call::new("removeWorker", params(&w))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&scope(format!("worker-manager:remove-worker:{}", path(&w))))?;
            let key = worker_param(&w[0], &w[1], &w[2])?;
            no_query(&uri)?;
            let cmd = WorkerCommand::RemoveWorker { worker: key };
            st.worker_manager.execute(actor(caller), cmd).await?;
            Ok(ok(json!({})))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `path` is below `/api/worker-manager/v1`, where the route is mounted.
    fn check(path: &str, expected: Option<Target>) {
        let uri: Uri = format!("/api/worker-manager/v1{path}").parse().unwrap();
        assert_eq!(target(&uri), expected, "{path}");
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn paths_split_into_pool_group_worker() {
        check("/workers/prov%2Fwt", Some(Target::Pool(s("prov/wt"))));
        check("/workers/prov/wt", Some(Target::Pool(s("prov/wt"))));
        check("/workers/prov%2Fwt/", Some(Target::Pool(s("prov/wt"))));
        check(
            "/workers/prov%2Fwt/g",
            Some(Target::Group(s("prov/wt"), s("g"))),
        );
        check(
            "/workers/prov%2Fwt:/g/w",
            Some(Target::Worker([s("prov/wt"), s("g"), s("w")])),
        );
        check(
            "/workers/prov/wt/g/w/",
            Some(Target::Worker([s("prov/wt"), s("g"), s("w")])),
        );
        check(
            "/workers/prov%2Fwt/g/w/should-terminate",
            Some(Target::ShouldTerminate([s("prov/wt"), s("g"), s("w")])),
        );
        check("/workers/prov%2Fwt/g/w/other", None);
        check("/workers/a/b/c/d/e/f", None);
        // a single part is a (bad) pool id: the handler answers 400
        check("/workers/prov", Some(Target::Pool(s("prov"))));
    }

    #[test]
    fn static_secret_shape() {
        let good = "a".repeat(44);
        assert_eq!(static_secret(&json!({ "staticSecret": good })), Some(good));
        assert_eq!(static_secret(&json!({ "staticSecret": "short" })), None);
        assert_eq!(
            static_secret(&json!({ "staticSecret": "a".repeat(44), "x": 1 })),
            None
        );
        assert_eq!(static_secret(&json!("a")), None);
    }
}
