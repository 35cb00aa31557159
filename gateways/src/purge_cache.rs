//! The purge-cache service (`/api/purge-cache/v1`, reference/purge-cache.md): a request to
//! purge one cache name on one worker pool's workers, open for a day, listed for the workers
//! that poll it and for admins. Requests are recorded by the worker-manager's engine (its
//! partition holds what concerns a pool's workers) and read from its projection, so they are
//! events like every other change, replayed and verified with the worker-manager's state.
//!
//! Expired requests are not listed, and the worker expiry reactor removes them (upstream's
//! daily cleanup). Left out: upstream's 10 s cache of `purgeRequests` answers (a request is
//! visible at once here); `since` takes the forms clients send, not every one `Date.parse`
//! accepts.

use crate::error::{ApiError, ErrorCode};
use crate::hawk::{actor, Auth};
use crate::queue::call::*;
use crate::{AppState, Mount};
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{json, Value};
use std::ops::Bound;
use std::sync::Arc;
use taskledger_core::ids::is_ident38;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{PurgeRequest, WorkerCommand};

type St = State<Arc<AppState>>;

const PURGE_SCHEMA: &str = "/schemas/purge-cache/v1/purge-cache-request.json#";
/// purge-cache's `workerPoolId`: two generic ids.
const POOL_RE: &str = "^[A-Za-z0-9_-]{1,38}/[A-Za-z0-9_-]{1,38}$";

/// Routes under `/api/purge-cache/v1` (`/purge-cache/list` before the pool's wildcard).
pub fn routes(service: Mount) -> Mount {
    service
        .route(
            "/purge-cache/list",
            get(all_purge_requests).post(purge_cache_list),
        )
        .route(
            "/purge-cache/{*workerPoolId}",
            get(purge_requests).post(purge_cache),
        )
}

/// POST to `/purge-cache/list`: purgeCache with the pool `list`, refused as upstream's
/// router refuses it (its pattern), not an unknown route.
async fn purge_cache_list(
    uri: Uri,
    st: St,
    auth: Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    purge_cache(uri, st, auth, Path("list".into()), headers, body).await
}

fn pool_param(pool: &str) -> Result<(), ApiError> {
    let ok = pool
        .split_once('/')
        .is_some_and(|(p, w)| is_ident38(p) && is_ident38(w));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_param("workerPoolId", pool, POOL_RE))
    }
}

/// `since` as upstream reads it (`Date.parse`, for the forms a client sends): RFC 3339, a
/// date alone (midnight UTC), or a date and time without an offset (taken as UTC, the
/// server's zone upstream). The epoch itself is refused, as `Date.parse` gives 0 there,
/// which upstream's check takes for a failure.
fn js_date(text: &str) -> Option<Millis> {
    use chrono::{NaiveDate, NaiveDateTime};
    let t = Millis::parse_rfc3339(text)
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| Millis(d.and_utc().timestamp_millis()))
        })
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .map(|d| Millis(d.and_utc().timestamp_millis()))
        })?;
    (t.0 != 0).then_some(t)
}

/// A request as the listings show it.
fn request_json(r: &PurgeRequest) -> Value {
    let (provisioner_id, worker_type) = r
        .worker_pool_id
        .split_once('/')
        .unwrap_or((r.worker_pool_id.as_str(), ""));
    json!({
        "provisionerId": provisioner_id,
        "workerType": worker_type,
        "cacheName": r.cache_name,
        "before": r.before.to_rfc3339(),
    })
}

/// purgeCache: scope `purge-cache:<workerPoolId>:<cacheName>`, the cache name from the body.
pub async fn purge_cache(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(pool): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("purgeCache", json!({ "workerPoolId": pool }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            pool_param(&pool)?;
            no_query(&uri)?;
            let body = body.input()?;
            let obj = crate::auth::check_keys(&body, PURGE_SCHEMA, &["cacheName"], &["cacheName"])?;
            let Some(cache_name) = obj.get("cacheName").and_then(Value::as_str) else {
                return Err(ApiError::validation(
                    PURGE_SCHEMA,
                    &["data/cacheName must be string".into()],
                ));
            };
            caller.require(&ScopeExpr::scope(format!(
                "purge-cache:{pool}:{cache_name}"
            )))?;
            let cmd = WorkerCommand::PurgeCache {
                worker_pool_id: pool.clone(),
                cache_name: cache_name.to_string(),
            };
            st.worker_manager.execute(actor(caller), cmd).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        })
        .await
}

/// purgeRequests: the pool's open requests made at or after `since` (all without it).
pub async fn purge_requests(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(pool): Path<String>,
) -> Response {
    Call::new("purgeRequests", json!({ "workerPoolId": pool }))
        .run(async {
            // the scope as upstream declares it, two colons included
            auth.caller()?.require(&ScopeExpr::scope(format!(
                "purge-cache:purge-requests::{pool}"
            )))?;
            pool_param(&pool)?;
            let q = query(&uri, &["since"])?;
            let since = match q.get("since") {
                None => None,
                Some(t) => Some(js_date(t).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidRequestArguments,
                        format!(
                            "Query-string parameter: since=\"{t}\" is not valid, error: Invalid Date"
                        ),
                    )
                })?),
            };
            let now = Millis::now();
            let requests: Vec<Value> = st.worker_manager.view().read(|s| {
                s.purges
                    .range((pool.clone(), String::new())..)
                    .take_while(|((p, _), _)| *p == pool)
                    .map(|(_, r)| r)
                    .filter(|r| r.expires > now && since.is_none_or(|t| r.before >= t))
                    .map(request_json)
                    .collect()
            });
            Ok(ok(json!({ "requests": requests })))
        })
        .await
}

/// allPurgeRequests: every open request, by pool and cache name, a page at a time.
pub async fn all_purge_requests(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    Call::new("allPurgeRequests", json!({}))
        .run(async {
            auth.caller()?
                .require(&ScopeExpr::scope("purge-cache:all-purge-requests"))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let after = match decode_token(&q)? {
                None => None,
                Some(bytes) => {
                    let text = String::from_utf8(bytes).ok();
                    let key = text.as_deref().and_then(|t| t.split_once('\0'));
                    match key {
                        Some((p, c)) => Some((p.to_string(), c.to_string())),
                        None => return Err(ApiError::input("Invalid continuation token")),
                    }
                }
            };
            let limit = limit(&q);
            let now = Millis::now();
            let (page, more) = st.worker_manager.view().read(|s| {
                let start = match after {
                    Some(a) => Bound::Excluded(a),
                    None => Bound::Unbounded,
                };
                let mut open = s
                    .purges
                    .range((start, Bound::Unbounded))
                    .filter(|(_, r)| r.expires > now);
                let page: Vec<(&(String, String), &PurgeRequest)> =
                    open.by_ref().take(limit).collect();
                let more = open.next().is_some();
                let last = page.last().map(|(k, _)| (*k).clone());
                let page: Vec<Value> = page.into_iter().map(|(_, r)| request_json(r)).collect();
                (page, last.filter(|_| more))
            });
            let mut out = json!({ "requests": page });
            if let Some((p, c)) = more {
                out["continuationToken"] = json!(encode_token(format!("{p}\0{c}").as_bytes()));
            }
            Ok(ok(out))
        })
        .await
}
