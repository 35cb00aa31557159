//! The audit API (`/api/audit/v1`): an entity's history and its state at an instant, answered
//! from the event log. Not a Taskcluster service; scopes `audit:read:<kind>/<id>`.

use crate::error::ApiError;
use crate::hawk::Auth;
use crate::queue::call::*;
use crate::AppState;
use crate::Mount;
use axum::extract::{Extension, Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::get;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_projections::audit::{self, AsOf};

type St = State<Arc<AppState>>;

const KINDS_RE: &str = "^(task|task-group|worker|client|role|hook)$";

pub fn routes(service: Mount) -> Mount {
    service
        .route("/history/{kind}/{*id}", get(history))
        .route("/as-of/{kind}/{*id}", get(as_of))
}

fn check(auth: &Auth, kind: &str, id: &str) -> Result<(&'static str, String), ApiError> {
    auth.caller()?
        .require(&ScopeExpr::scope(format!("audit:read:{kind}/{id}")))?;
    audit::stream_of(kind, id).ok_or_else(|| ApiError::bad_param("kind", kind, KINDS_RE))
}

async fn history(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    Call::new("history", json!({ "kind": kind, "id": id }))
        .run(async {
            let (topic, stream) = check(&auth, &kind, &id)?;
            no_query(&uri)?;
            let db = st.engine.view().db();
            let events = audit::stream_records(&*st.records, db, topic, &stream)
                .await?
                .iter()
                .map(|r| audit::record_json(topic, r))
                .collect::<Result<Vec<Value>, _>>()?;
            if events.is_empty() {
                return Err(ApiError::not_found(format!("No events for {kind} `{id}`")));
            }
            Ok(ok(json!({ "events": events })))
        })
        .await
}

async fn as_of(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((kind, id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    Call::new("asOf", json!({ "kind": kind, "id": id }))
        .run(async {
            let (topic, stream) = check(&auth, &kind, &id)?;
            let q = query(&uri, &["time"])?;
            let at = q
                .get("time")
                .and_then(|t| Millis::parse_rfc3339(t))
                .ok_or_else(|| {
                    ApiError::input("query parameter `time` must be an RFC 3339 time")
                })?;
            let db = st.engine.view().db();
            let records = audit::stream_records(&*st.records, db, topic, &stream).await?;
            let state = audit::as_of(&records, &kind, &id, at)?;
            let value = match state {
                Some(AsOf::Task(Some(t))) => crate::queue::json::status_json(&t),
                Some(AsOf::TaskGroup(Some(g))) => {
                    serde_json::to_value(&g).map_err(ApiError::internal)?
                }
                Some(AsOf::Client(Some(c))) => {
                    serde_json::to_value(&c).map_err(ApiError::internal)?
                }
                Some(AsOf::Role(Some(r))) => {
                    serde_json::to_value(&r).map_err(ApiError::internal)?
                }
                Some(AsOf::Hook(Some(h))) => crate::hooks::hook_json(&h),
                _ => {
                    return Err(ApiError::not_found(format!(
                        "{kind} `{id}` did not exist then"
                    )))
                }
            };
            Ok(ok(json!({ "time": at.to_rfc3339(), "state": value })))
        })
        .await
}
