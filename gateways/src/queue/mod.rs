//! The queue service's HTTP API (reference/queue.md §12).

pub mod artifacts;
pub mod call;
pub mod groups;
pub mod json;
pub mod queues;
pub mod runs;
pub mod tasks;
pub mod workers;

use crate::Mount;
use axum::routing::{get, post, put};

/// Routes under `/api/queue/v1`.
pub fn routes(service: Mount) -> Mount {
    use artifacts as a;
    use groups as g;
    use queues as q;
    use runs as r;
    use tasks as t;
    use workers as w;
    service
        .route("/task/{taskId}", get(t::task).put(t::create_task))
        .route("/tasks", post(t::tasks))
        .route("/tasks/status", post(t::statuses))
        .route("/task/{taskId}/status", get(t::status))
        .route("/task-group/{taskGroupId}/list", get(g::list_task_group))
        .route("/task-group/{taskGroupId}/cancel", post(g::cancel_task_group))
        .route("/task-group/{taskGroupId}", get(g::get_task_group))
        .route("/task-group/{taskGroupId}/seal", post(g::seal_task_group))
        .route("/task-group/{taskGroupId}/priority", post(g::change_task_group_priority))
        .route("/task/{taskId}/dependents", get(g::list_dependent_tasks))
        .route("/task/{taskId}/schedule", post(t::schedule_task))
        .route("/task/{taskId}/rerun", post(t::rerun_task))
        .route("/task/{taskId}/cancel", post(t::cancel_task))
        .route("/task/{taskId}/priority", post(t::change_task_priority))
        .route("/claim-work/{*taskQueueId}", post(r::claim_work))
        .route("/task/{taskId}/runs/{runId}/claim", post(r::claim_task))
        .route("/task/{taskId}/runs/{runId}/reclaim", post(r::reclaim_task))
        .route("/task/{taskId}/runs/{runId}/completed", post(r::report_completed))
        .route("/task/{taskId}/runs/{runId}/failed", post(r::report_failed))
        .route("/task/{taskId}/runs/{runId}/exception", post(r::report_exception))
        .route(
            "/task/{taskId}/runs/{runId}/artifacts/{*name}",
            post(a::create_artifact).put(a::finish_artifact).get(a::get_artifact),
        )
        .route("/task/{taskId}/artifacts/{*name}", get(a::get_latest_artifact))
        .route("/task/{taskId}/runs/{runId}/artifacts", get(a::list_artifacts))
        .route("/task/{taskId}/artifacts", get(a::list_latest_artifacts))
        .route("/task/{taskId}/runs/{runId}/artifact-info/{*name}", get(a::artifact_info_route))
        .route("/task/{taskId}/artifact-info/{*name}", get(a::latest_artifact_info))
        .route("/task/{taskId}/runs/{runId}/artifact-content/{*name}", get(a::artifact))
        .route("/task/{taskId}/artifact-content/{*name}", get(a::latest_artifact))
        .route("/provisioners", get(w::list_provisioners))
        .route("/provisioners/{provisionerId}", get(w::get_provisioner))
        .route("/pending/{*taskQueueId}", get(q::pending_tasks))
        .route("/task-queues", get(q::list_task_queues))
        .route("/task-queues/counts", post(q::task_queue_counts_batch))
        .route("/task-queues/{*rest}", get(q::task_queue_routes))
        .route("/provisioners/{provisionerId}/worker-types", get(w::list_worker_types))
        .route("/provisioners/{provisionerId}/worker-types/{workerType}", get(w::get_worker_type))
        .route("/provisioners/{provisionerId}/worker-types/{workerType}/workers", get(w::list_workers))
        .route(
            "/provisioners/{provisionerId}/worker-types/{workerType}/workers/{workerGroup}/{workerId}",
            get(w::get_worker).put(w::quarantine_worker),
        )
        // declareWorker: no `workers/` segment (reference/queue.md §12)
        .route(
            "/provisioners/{provisionerId}/worker-types/{workerType}/{workerGroup}/{workerId}",
            put(w::declare_worker),
        )
}
