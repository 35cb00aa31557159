//! The worker-manager's views of a task queue's workers (reference/worker-manager.md §5,
//! `listWorkers` and `getWorker` under `/provisioners/<p>/worker-types/<w>/workers`): the
//! queue's worker records (those that claimed work), each joined with the worker-manager's
//! worker of the same pool, group and id. A worker the worker-manager does not manage is
//! `standalone`, of provider `none` and capacity 0 (§1).

use super::scope;
use crate::error::{ApiError, ErrorCode};
use crate::hawk::Auth;
use crate::queue::call::*;
use crate::queue::queues::offset_page;
use crate::queue::workers::{
    live_worker, live_workers, quarantined_filter, worker_full, worker_not_found, worker_params,
    worker_summary,
};
use crate::AppState;
use axum::extract::{Extension, Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{Worker, WorkerKey, WorkerPoolId};

type St = State<Arc<AppState>>;

/// The states a `workerState` filter names (a standalone worker matches none of them).
const MANAGED_STATES: [&str; 4] = ["requested", "running", "stopping", "stopped"];

/// The worker-manager's worker of pool `p/w`, group `g`, id `id`, if it manages one. A task
/// queue whose id is no worker pool id (upstream's queue allows uppercase worker types) has
/// none.
fn managed(st: &AppState, p: &str, w: &str, g: &str, id: &str) -> Option<Worker> {
    let worker_pool_id: WorkerPoolId = format!("{p}/{w}").parse().ok()?;
    let key = WorkerKey {
        worker_pool_id,
        worker_group: g.to_string(),
        worker_id: id.to_string(),
    };
    st.worker_manager
        .view()
        .read(|s| s.workers.get(&key).cloned())
}

/// Adds the worker-manager's side to a queue worker's JSON: pool, state, capacity, provider
/// and launch configuration.
fn joined(mut v: Value, p: &str, w: &str, m: Option<&Worker>) -> Value {
    v["workerPoolId"] = json!(format!("{p}/{w}"));
    match m {
        Some(m) => {
            v["state"] = json!(m.state.as_str());
            v["capacity"] = json!(m.capacity);
            v["providerId"] = json!(m.provider_id);
        }
        None => {
            v["state"] = json!("standalone");
            v["capacity"] = json!(0);
            v["providerId"] = json!("none");
        }
    }
    v
}

pub async fn list_workers(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    Call::new(
        "listWorkers",
        json!({ "provisionerId": p, "workerType": w }),
    )
    .run(async {
        auth.caller()?
            .require(&scope(format!("worker-manager:list-workers:{p}/{w}")))?;
        ident_param("provisionerId", &p)?;
        ident_param("workerType", &w)?;
        let q = query(
            &uri,
            &[
                "continuationToken",
                "limit",
                "launchConfigId",
                "quarantined",
                "workerState",
            ],
        )?;
        let quarantined = quarantined_filter(&q)?;
        let state = q.get("workerState").map(String::as_str);
        if let Some(bad) = state.filter(|s| !MANAGED_STATES.contains(s)) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestArguments,
                format!(
                    "Query-string parameter: workerState=\"{bad}\" does not match expression: \
                     /^(requested|running|stopping|stopped)$/"
                ),
            ));
        }
        // static workers come from no launch configuration
        let by_launch_config = q.contains_key("launchConfigId");
        let now = Millis::now();
        let mut all = Vec::new();
        let listed = if by_launch_config {
            vec![]
        } else {
            live_workers(&st, &p, &w, quarantined, now)?
        };
        for (g, id, r) in listed {
            let m = managed(&st, &p, &w, &g, &id);
            let state_matches =
                state.is_none_or(|s| m.as_ref().is_some_and(|m| m.state.as_str() == s));
            if state_matches {
                all.push(joined(worker_summary(&g, &id, &r, now), &p, &w, m.as_ref()));
            }
        }
        let (page, token) = offset_page(&all, &q)?;
        let mut out = json!({ "workers": page });
        if let Some(t) = token {
            out["continuationToken"] = json!(t);
        }
        Ok(ok(out))
    })
    .await
}

pub async fn get_worker(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((p, w, g, id)): Path<(String, String, String, String)>,
) -> Response {
    Call::new(
        "getWorker",
        json!({ "provisionerId": p, "workerType": w, "workerGroup": g, "workerId": id }),
    )
    .run(async {
        auth.caller()?.require(&scope(format!(
            "worker-manager:get-worker:{p}/{w}/{g}/{id}"
        )))?;
        worker_params(&p, &w, &g, &id)?;
        no_query(&uri)?;
        let r =
            live_worker(&st, &format!("{p}/{w}"), &g, &id, Millis::now())?.ok_or_else(|| {
                ApiError::not_found(format!(
                    "{} Are you sure it was created?",
                    worker_not_found(&p, &w, &g, &id)
                ))
            })?;
        let mut v = worker_full(&p, &w, &g, &id, &r);
        // worker-response (worker-manager.md §5): the pool, not the task queue, no queue
        // actions, and the quarantine history (queue.md §9: who, when, until and why)
        let details: Vec<Value> = r
            .quarantine_details
            .iter()
            .map(|d| {
                json!({
                    "clientId": d.client_id,
                    "updatedAt": d.updated_at.to_rfc3339(),
                    "quarantineUntil": d.until.to_rfc3339(),
                    "quarantineInfo": d.info,
                })
            })
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.remove("taskQueueId");
            o.remove("actions");
            o.insert("quarantineDetails".into(), Value::Array(details));
        }
        let m = managed(&st, &p, &w, &g, &id);
        Ok(ok(joined(v, &p, &w, m.as_ref())))
    })
    .await
}
