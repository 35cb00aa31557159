//! The worker-manager's answers: worker-pool-full, worker-full, worker-pool-error.

use serde_json::{json, Value};
use taskledger_core::worker_manager::{
    PoolCounts, PoolError, Worker, WorkerManagerState, WorkerPool,
};

/// worker-pool-full: the definition plus counts and capacities of its workers by state.
pub fn pool_json(state: &WorkerManagerState, p: &WorkerPool) -> Value {
    let mut v = json!({
        "workerPoolId": p.worker_pool_id.as_str(),
        "providerId": p.provider_id,
        "description": p.description,
        "created": p.created.to_rfc3339(),
        "lastModified": p.last_modified.to_rfc3339(),
        "config": serde_json::from_str::<Value>(&p.config).unwrap_or_else(|_| json!({})),
        "owner": p.owner,
        "emailOnError": p.email_on_error,
    });
    add_counts(&mut v, &state.pool_counts(&p.worker_pool_id));
    v
}

/// The counts and capacities by state every pool answer carries, added to `v`.
fn add_counts(v: &mut Value, c: &PoolCounts) {
    let fields = [
        ("currentCapacity", c.current_capacity),
        ("requestedCount", c.count[0]),
        ("runningCount", c.count[1]),
        ("stoppingCount", c.count[2]),
        ("stoppedCount", c.count[3]),
        ("requestedCapacity", c.capacity[0]),
        ("runningCapacity", c.capacity[1]),
        ("stoppingCapacity", c.capacity[2]),
        ("stoppedCapacity", c.capacity[3]),
    ];
    for (k, n) in fields {
        v[k] = json!(n);
    }
}

/// One entry of listWorkerPoolsStats: the pool's id and its counts.
pub fn pool_stats_json(state: &WorkerManagerState, p: &WorkerPool) -> Value {
    let mut v = json!({ "workerPoolId": p.worker_pool_id.as_str() });
    add_counts(&mut v, &state.pool_counts(&p.worker_pool_id));
    v
}

/// workerPoolStats' entries, one per launch configuration its workers came from. Static
/// workers come from none, which upstream names `unknown`; a pool without workers has none.
pub fn launch_config_stats(state: &WorkerManagerState, p: &WorkerPool) -> Vec<Value> {
    if state.pool_workers(&p.worker_pool_id).next().is_none() {
        return vec![];
    }
    let mut v = json!({ "workerPoolId": p.worker_pool_id.as_str(), "launchConfigId": "unknown" });
    add_counts(&mut v, &state.pool_counts(&p.worker_pool_id));
    vec![v]
}

/// worker-full (no secrets, no provider data).
pub fn worker_json(w: &Worker) -> Value {
    json!({
        "workerPoolId": w.key.worker_pool_id.as_str(),
        "workerGroup": w.key.worker_group,
        "workerId": w.key.worker_id,
        "providerId": w.provider_id,
        "created": w.created.to_rfc3339(),
        "expires": w.expires.to_rfc3339(),
        "state": w.state.as_str(),
        "capacity": w.capacity,
        "lastModified": w.last_modified.to_rfc3339(),
        "lastChecked": w.last_checked.to_rfc3339(),
    })
}

/// worker-pool-error.
pub fn error_json(e: &PoolError) -> Value {
    let mut v = json!({
        "workerPoolId": e.worker_pool_id.as_str(),
        "errorId": e.error_id.to_string(),
        "reported": e.reported.to_rfc3339(),
        "kind": e.kind,
        "title": e.title,
        "description": e.description,
        "extra": serde_json::from_str::<Value>(&e.extra).unwrap_or_else(|_| json!({})),
    });
    if let Some(l) = &e.launch_config_id {
        v["launchConfigId"] = json!(l);
    }
    v
}
