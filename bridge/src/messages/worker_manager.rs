//! The worker-manager's Pulse messages (reference/worker-manager.md §3): pools, workers and
//! pool errors.

use serde_json::{json, Value};
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{WorkerEvent, WorkerKey, WorkerPoolId};

use super::{bytes, Message};

pub const WORKER_MANAGER_EXCHANGE_PREFIX: &str = "exchange/taskcluster-worker-manager/v1/";
pub const WORKER_MANAGER_EXCHANGES: &[&str] = &[
    "worker-pool-created",
    "worker-pool-updated",
    "worker-pool-error",
    "worker-requested",
    "worker-running",
    "worker-stopped",
    "worker-removed",
    // declared for consumers' bindings; static pools have no launch configurations, so they
    // never fire
    "launch-config-created",
    "launch-config-updated",
    "launch-config-archived",
];

/// The reason worker-removed carries for a removeWorker call (Taskcluster's own wording).
pub const REMOVE_WORKER_REASON: &str = "workerManager.removeWorker API call";

/// `primary.<providerId>.<provisionerId>.<workerType>.<workerGroup>.<workerId>.<launchConfigId>._`,
/// `_` for what is absent.
fn worker_routing_key(
    provider_id: &str,
    pool: &WorkerPoolId,
    worker_group: Option<&str>,
    worker_id: Option<&str>,
    launch_config_id: Option<&str>,
) -> String {
    format!(
        "primary.{provider_id}.{}.{}.{}.{}.{}._",
        pool.provisioner_id(),
        pool.worker_type(),
        worker_group.unwrap_or("_"),
        worker_id.unwrap_or("_"),
        launch_config_id.unwrap_or("_"),
    )
}

fn worker_manager_message(name: &str, routing_key: String, body: Value) -> Message {
    Message {
        exchange: format!("{WORKER_MANAGER_EXCHANGE_PREFIX}{name}"),
        routing_key,
        cc: vec![],
        body: bytes(&body),
    }
}

/// worker-pool-created / worker-pool-updated: `{workerPoolId, providerId, previousProviderId?}`,
/// routing key all `_`.
pub fn pool_message(
    name: &str,
    pool: &WorkerPoolId,
    provider_id: &str,
    previous_provider_id: Option<&str>,
) -> Message {
    let mut body = json!({ "workerPoolId": pool.as_str(), "providerId": provider_id });
    if let Some(p) = previous_provider_id {
        body["previousProviderId"] = json!(p);
    }
    worker_manager_message(name, "primary._._._._._._._".into(), body)
}

/// worker-requested / -running / -stopped / -removed: `{workerPoolId, providerId, workerId,
/// workerGroup, capacity, timestamp}`, plus `reason` for worker-removed.
pub fn worker_message(
    name: &str,
    worker: &WorkerKey,
    provider_id: &str,
    capacity: u32,
    timestamp: Millis,
    reason: Option<&str>,
) -> Message {
    let mut body = json!({
        "workerPoolId": worker.worker_pool_id.as_str(),
        "providerId": provider_id,
        "workerId": worker.worker_id,
        "workerGroup": worker.worker_group,
        "capacity": capacity,
        "timestamp": timestamp.to_rfc3339(),
    });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let key = worker_routing_key(
        provider_id,
        &worker.worker_pool_id,
        Some(&worker.worker_group),
        Some(&worker.worker_id),
        None,
    );
    worker_manager_message(name, key, body)
}

/// worker-pool-error: `{workerPoolId, providerId, errorId, kind, title, timestamp, workerId?,
/// workerGroup?, launchConfigId?}`, the routing key filled from it.
pub fn pool_error_message(
    event: &WorkerEvent,
    provider_id: &str,
    timestamp: Millis,
) -> Option<Message> {
    let WorkerEvent::WorkerErrorReported {
        worker_pool_id,
        error_id,
        worker_group,
        worker_id,
        kind,
        title,
        launch_config_id,
        ..
    } = event
    else {
        return None;
    };
    let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (group, id) = (given(worker_group), given(worker_id));
    let mut body = json!({
        "workerPoolId": worker_pool_id.as_str(),
        "providerId": provider_id,
        "errorId": error_id.to_string(),
        "kind": kind,
        "title": title,
        "timestamp": timestamp.to_rfc3339(),
    });
    if let Some(g) = &group {
        body["workerGroup"] = json!(g);
    }
    if let Some(w) = &id {
        body["workerId"] = json!(w);
    }
    if let Some(l) = launch_config_id {
        body["launchConfigId"] = json!(l);
    }
    let key = worker_routing_key(
        provider_id,
        worker_pool_id,
        group.as_deref(),
        id.as_deref(),
        launch_config_id.as_deref(),
    );
    Some(worker_manager_message("worker-pool-error", key, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::ids::Slug;

    #[test]
    fn a_pool_error_without_a_worker_routes_with_underscores() {
        let event = WorkerEvent::WorkerErrorReported {
            worker_pool_id: "prov-a/type-b".parse().unwrap(),
            error_id: Slug::nice(),
            worker_group: String::new(),
            worker_id: String::new(),
            kind: "k".into(),
            title: "t".into(),
            description: "d".into(),
            extra: "{}".into(),
            launch_config_id: None,
        };
        let m = pool_error_message(&event, "static", Millis(0)).unwrap();
        assert_eq!(m.routing_key, "primary.static.prov-a.type-b._._._._");
        assert_eq!(
            m.exchange,
            format!("{WORKER_MANAGER_EXCHANGE_PREFIX}worker-pool-error")
        );
        let body = m.json();
        assert!(body.get("workerId").is_none() && body.get("workerGroup").is_none());
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00.000Z");
        // every other event is not an error
        let created = WorkerEvent::WorkerRemoved {
            worker: WorkerKey {
                worker_pool_id: "prov-a/type-b".parse().unwrap(),
                worker_group: "g".into(),
                worker_id: "w".into(),
            },
        };
        assert!(pool_error_message(&created, "static", Millis(0)).is_none());
    }
}
