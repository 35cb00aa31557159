//! `GET /metrics`: Prometheus text exposition of the log's heads and the Pulse bridge's
//! progress, for operators (unauthenticated, like upstream's internal metrics ports).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use taskledger_bridge::BridgeStats;
use taskledger_core::log::EventLog;
use taskledger_core::time::Millis;
use taskledger_projections::role::WriterRole;

/// The outcome of the last scheduled chain verification (and checkpoint signing).
#[derive(Default)]
pub struct AuditStats {
    /// 1 verified, 0 broken, -1 not run yet.
    pub chain_ok: AtomicI64,
    pub verified_events: AtomicU64,
    /// When it last ran (seconds since the epoch).
    pub last_run: AtomicI64,
    /// The scheduled `replay --verify` of each projection: (projection, 1 equal / 0 differs,
    /// events replayed, events/s), from its last run.
    pub projections: std::sync::Mutex<Vec<(&'static str, i64, u64, f64)>>,
    pub projections_last_run: AtomicI64,
}

/// Each topic's engine role in this process.
pub type Roles = Arc<Vec<(&'static str, WriterRole)>>;

pub fn router<L: EventLog + 'static>(
    log: Arc<L>,
    roles: Roles,
    bridge: Option<Arc<BridgeStats>>,
    audit: Arc<AuditStats>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (log, roles, bridge, audit) =
                (log.clone(), roles.clone(), bridge.clone(), audit.clone());
            async move { render(&*log, &roles, bridge.as_deref(), &audit).await }
        }),
    )
}

async fn render<L: EventLog>(
    log: &L,
    roles: &[(&'static str, WriterRole)],
    bridge: Option<&BridgeStats>,
    audit: &AuditStats,
) -> impl IntoResponse {
    let mut out = String::from(
        "# HELP taskledger_log_end_offset The offset the next event of the topic will get.\n\
         # TYPE taskledger_log_end_offset gauge\n",
    );
    for topic in crate::ALL_TOPICS {
        if let Ok(end) = log.end_offset(topic, 0).await {
            out.push_str(&format!(
                "taskledger_log_end_offset{{topic=\"{topic}\"}} {end}\n"
            ));
        }
    }
    out.push_str(
        "# HELP taskledger_partition_writer 1 when this node writes the topic's partition, 0 when it follows its writer.\n\
         # TYPE taskledger_partition_writer gauge\n",
    );
    for (topic, role) in roles {
        out.push_str(&format!(
            "taskledger_partition_writer{{topic=\"{topic}\"}} {}\n",
            u8::from(role.is_writer())
        ));
    }
    out.push_str(
        "# HELP taskledger_projection_position The log position this node's projection of the topic has applied.\n\
         # TYPE taskledger_projection_position gauge\n",
    );
    for (topic, role) in roles {
        out.push_str(&format!(
            "taskledger_projection_position{{topic=\"{topic}\"}} {}\n",
            role.position()
        ));
    }
    if let Some(stats) = bridge {
        out.push_str(&stats.prometheus(Millis::now().0));
    }
    out.push_str(&format!(
        "# HELP taskledger_audit_chain_ok The last scheduled hash-chain verification: 1 held, 0 broken, -1 not run yet.\n\
         # TYPE taskledger_audit_chain_ok gauge\ntaskledger_audit_chain_ok {}\n\
         # HELP taskledger_audit_chain_verified_events Events the last verification walked.\n\
         # TYPE taskledger_audit_chain_verified_events gauge\ntaskledger_audit_chain_verified_events {}\n\
         # HELP taskledger_audit_last_run_timestamp_seconds When the last verification ran.\n\
         # TYPE taskledger_audit_last_run_timestamp_seconds gauge\ntaskledger_audit_last_run_timestamp_seconds {}\n",
        audit.chain_ok.load(Ordering::Relaxed),
        audit.verified_events.load(Ordering::Relaxed),
        audit.last_run.load(Ordering::Relaxed),
    ));
    let checked = audit.projections.lock().expect("projection checks").clone();
    if !checked.is_empty() {
        out.push_str(
            "# HELP taskledger_projection_verified The last scheduled rebuild of the projection from the log: 1 equal to the live one, 0 different.\n\
             # TYPE taskledger_projection_verified gauge\n",
        );
        for (name, ok, _, _) in &checked {
            out.push_str(&format!(
                "taskledger_projection_verified{{projection=\"{name}\"}} {ok}\n"
            ));
        }
        out.push_str(
            "# HELP taskledger_projection_replayed_events Events the last scheduled rebuild folded.\n\
             # TYPE taskledger_projection_replayed_events gauge\n",
        );
        for (name, _, events, _) in &checked {
            out.push_str(&format!(
                "taskledger_projection_replayed_events{{projection=\"{name}\"}} {events}\n"
            ));
        }
        out.push_str(
            "# HELP taskledger_projection_replay_events_per_second The last scheduled rebuild's rate.\n\
             # TYPE taskledger_projection_replay_events_per_second gauge\n",
        );
        for (name, _, _, rate) in &checked {
            out.push_str(&format!(
                "taskledger_projection_replay_events_per_second{{projection=\"{name}\"}} {rate:.0}\n"
            ));
        }
        out.push_str(&format!(
            "# HELP taskledger_projection_verify_last_run_timestamp_seconds When the last scheduled rebuild ran.\n\
             # TYPE taskledger_projection_verify_last_run_timestamp_seconds gauge\n\
             taskledger_projection_verify_last_run_timestamp_seconds {}\n",
            audit.projections_last_run.load(Ordering::Relaxed)
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
