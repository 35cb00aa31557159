//! `GET /metrics`: Prometheus text exposition of the log's heads and the Pulse bridge's
//! progress, for operators (unauthenticated, like upstream's internal metrics ports).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use taskledger_bridge::BridgeStats;
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::WORKER_MANAGER_TOPIC;
use taskledger_projections::EmbeddedLog;

pub fn router(log: Arc<EmbeddedLog>, bridge: Option<Arc<BridgeStats>>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (log, bridge) = (log.clone(), bridge.clone());
            async move { render(&log, bridge.as_deref()) }
        }),
    )
}

fn render(log: &EmbeddedLog, bridge: Option<&BridgeStats>) -> impl IntoResponse {
    let mut out = String::from(
        "# HELP taskledger_log_end_offset The offset the next event of the topic will get.\n\
         # TYPE taskledger_log_end_offset gauge\n",
    );
    for topic in [QUEUE_TOPIC, AUTH_TOPIC, WORKER_MANAGER_TOPIC] {
        if let Ok(end) = log.end_offset_sync(topic, 0) {
            out.push_str(&format!(
                "taskledger_log_end_offset{{topic=\"{topic}\"}} {end}\n"
            ));
        }
    }
    if let Some(stats) = bridge {
        out.push_str(&stats.prometheus(Millis::now().0));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
