//! Worker-pool errors: reportWorkerError, listWorkerPoolErrors and workerPoolErrorStats.

use super::json::error_json;
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
use taskledger_core::ids::Slug;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::{Millis, DAY, HOUR};
use taskledger_core::worker_manager::WorkerCommand;

type St = State<Arc<AppState>>;

const REPORT_ERROR_SCHEMA: &str = "/schemas/worker-manager/v1/report-worker-error-request.json#";

/// The fields of a report-worker-error-request.
struct ErrorReport {
    worker_group: String,
    worker_id: String,
    kind: String,
    title: String,
    description: String,
    extra: serde_json::Map<String, Value>,
}

fn error_report(body: &Value) -> Result<ErrorReport, ApiError> {
    let keys = [
        "workerGroup",
        "workerId",
        "kind",
        "title",
        "description",
        "extra",
    ];
    let f = fields(body, REPORT_ERROR_SCHEMA, &keys, &keys)?;
    let kind = f.text("kind", 128)?;
    // the schema's pattern is unanchored: one such character suffices
    if !kind
        .bytes()
        .any(|b| b == b'-' || b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(f.invalid("data/kind must match pattern \"[-a-z0-9]+\"".into()));
    }
    Ok(ErrorReport {
        worker_group: f.ident("workerGroup")?,
        worker_id: f.ident("workerId")?,
        kind,
        title: f.text("title", 128)?,
        description: f.text("description", 10240)?,
        extra: f.object("extra")?,
    })
}

/// reportWorkerError: the worker's own credentials may report (scopes from the body).
pub async fn report_worker_error(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("reportWorkerError", json!({ "workerPoolId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let pool = pool_param(&id)?;
            no_query(&uri)?;
            let r = error_report(&body.input()?)?;
            caller.require(&ScopeExpr::all(vec![
                scope(format!("assume:worker-pool:{pool}")),
                scope(format!(
                    "assume:worker-id:{}/{}",
                    r.worker_group, r.worker_id
                )),
            ]))?;
            let cmd = WorkerCommand::ReportWorkerError {
                worker_pool_id: pool,
                error_id: Slug::nice(),
                worker_group: r.worker_group,
                worker_id: r.worker_id,
                kind: r.kind,
                title: r.title,
                description: r.description,
                extra: r.extra,
            };
            let envelopes = st.worker_manager.execute(actor(caller), cmd).await?;
            let row = envelopes.first().and_then(|e| {
                taskledger_core::worker_manager::PoolError::from_event(&e.payload, e.time)
            });
            row.map(|r| ok(error_json(&r)))
                .ok_or_else(|| ApiError::internal("reportWorkerError recorded no error"))
        })
        .await
}

pub async fn list_worker_pool_errors(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if id == "stats" {
        return worker_pool_error_stats(&st, &auth, &uri).await;
    }
    Call::new("listWorkerPoolErrors", json!({ "workerPoolId": id }))
        .run(async {
            auth.caller()?.require(&scope(format!(
                "worker-manager:list-worker-pool-errors:{id}"
            )))?;
            let pool = pool_param(&id)?;
            let q = query(
                &uri,
                &["continuationToken", "limit", "launchConfigId", "errorId"],
            )?;
            let launch_config = q.get("launchConfigId").cloned();
            let error_id = q.get("errorId").cloned();
            let keep = |e: &taskledger_core::worker_manager::PoolError| {
                error_id
                    .as_ref()
                    .is_none_or(|id| e.error_id.to_string() == *id)
                    && launch_config
                        .as_ref()
                        .is_none_or(|l| e.launch_config_id.as_ref() == Some(l))
            };
            let (rows, next) = st.worker_manager.view().errors(
                pool.as_str(),
                decode_token(&q)?,
                limit(&q),
                keep,
            )?;
            let mut out =
                json!({ "workerPoolErrors": rows.iter().map(error_json).collect::<Vec<_>>() });
            if let Some(next) = next {
                out["continuationToken"] = json!(encode_token(&next));
            }
            Ok(ok(out))
        })
        .await
}

/// workerPoolErrorStats: the errors of the 7 UTC days up to today, of one pool (query
/// `workerPoolId`) or of all, counted in total, per day, per hour (the 24 hours up to
/// this one), per title, per `extra.code` (`other` without one), per launch configuration
/// (where the error has one) and per pool. The day and hour keys are the buckets' starts in
/// ISO form; upstream's keys are not documented (its clients read only the values, in order).
async fn worker_pool_error_stats(st: &AppState, auth: &Auth, uri: &Uri) -> Response {
    Call::new("workerPoolErrorStats", json!({}))
        .run(async {
            let caller = auth.caller()?;
            let q = query(uri, &["workerPoolId"])?;
            let pool = q.get("workerPoolId").cloned().unwrap_or_default();
            if !pool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-')
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequestArguments,
                    format!("Query-string parameter: workerPoolId=\"{pool}\" does not match expression: /^([a-zA-Z0-9/-]+)?$/"),
                ));
            }
            let target = if pool.is_empty() { "*" } else { pool.as_str() };
            caller.require(&scope(format!(
                "worker-manager:list-worker-pool-errors:{target}"
            )))?;
            let now = Millis::now();
            // the 7 UTC days up to today, so that the total is the days' sum
            let since = Millis(now.0 - now.0.rem_euclid(DAY)).plus(-6 * DAY);
            let view = st.worker_manager.view();
            let pools: Vec<String> = if pool.is_empty() {
                view.read(|s| s.pools.keys().map(|p| p.as_str().to_string()).collect())
            } else {
                vec![pool.clone()]
            };
            let errors = view.errors_since(pools.iter().map(String::as_str), since)?;
            Ok(ok(json!({
                "workerPoolId": pool,
                "totals": error_totals(&errors, now),
            })))
        })
        .await
}

/// The `totals` of workerPoolErrorStats over `errors` (see there).
fn error_totals(errors: &[taskledger_core::worker_manager::PoolError], now: Millis) -> Value {
    let truncate = |t: Millis, unit: i64| Millis(t.0 - t.0.rem_euclid(unit));
    let buckets = |unit: i64, n: i64| -> serde_json::Map<String, Value> {
        let last = truncate(now, unit);
        (0..n)
            .rev()
            .map(|i| {
                let start = last.plus(-i * unit);
                let count = errors
                    .iter()
                    .filter(|e| truncate(e.reported, unit) == start)
                    .count();
                (start.to_rfc3339(), json!(count))
            })
            .collect()
    };
    let mut title = serde_json::Map::new();
    let mut code = serde_json::Map::new();
    let mut launch_config = serde_json::Map::new();
    let mut worker_pool = serde_json::Map::new();
    let bump = |m: &mut serde_json::Map<String, Value>, k: String| {
        let n = m.get(&k).and_then(Value::as_u64).unwrap_or(0);
        m.insert(k, json!(n + 1));
    };
    for e in errors {
        bump(&mut title, e.title.clone());
        let extra_code = serde_json::from_str::<Value>(&e.extra)
            .ok()
            .and_then(|x| x.get("code").cloned())
            .filter(|c| !c.is_null());
        let c = match extra_code {
            Some(Value::String(c)) => c,
            Some(other) => other.to_string(),
            None => "other".into(),
        };
        bump(&mut code, c);
        if let Some(l) = &e.launch_config_id {
            bump(&mut launch_config, l.clone());
        }
        bump(&mut worker_pool, e.worker_pool_id.as_str().to_string());
    }
    json!({
        "total": errors.len(),
        "daily": buckets(DAY, 7),
        "hourly": buckets(HOUR, 24),
        "title": title,
        "code": code,
        "launchConfig": launch_config,
        "workerPool": worker_pool,
    })
}
