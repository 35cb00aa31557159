//! `GET /metrics`: Prometheus text exposition of the log's heads, the writers' and the API's
//! latencies, the Pulse bridge's progress, the audit checks' outcomes and the exits after a
//! panic that earlier runs recorded, for operators (unauthenticated, like upstream's
//! internal metrics ports).

use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::routing::get;
use axum::Router;
use futures::future::Either;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use taskledger_bridge::BridgeStats;
use taskledger_core::log::EventLog;
use taskledger_core::time::Millis;
use taskledger_projections::exits::PanicExits;
use taskledger_projections::latency::{CommitStats, Histogram, LATENCY_BOUNDS};
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

/// How long the HTTP API takes to answer, from a parsed request to its response's headers
/// (every route, `/metrics` and claimWork's long polls included; a call a cluster node
/// forwards to its partition's writer is timed by the writer): with the queue writer's
/// histograms it tells whether a slow call waited in the writer or elsewhere in the server.
pub struct RequestTimes(Histogram);

impl Default for RequestTimes {
    fn default() -> Self {
        RequestTimes(Histogram::new(LATENCY_BOUNDS))
    }
}

/// The outermost service: `GET /metrics` (its own router) in front of the application, and
/// every request timed into `times`.
///
/// Written by hand rather than as a `Router` with the application as its fallback and an
/// `axum::middleware::from_fn` timer: those cost each request a second route lookup, a
/// boxed clone of the service below and two boxed futures.
#[derive(Clone)]
pub struct Front<S> {
    metrics: Router,
    app: S,
    times: Arc<RequestTimes>,
}

impl<S> Front<S> {
    pub fn new(metrics: Router, app: S, times: Arc<RequestTimes>) -> Front<S> {
        Front {
            metrics,
            app,
            times,
        }
    }
}

impl<S> tower::Service<Request> for Front<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Timed<Either<RouteFuture<Infallible>, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // a `Router` is always ready
        self.app.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let inner = if request.uri().path() == "/metrics" {
            Either::Left(self.metrics.call(request))
        } else {
            Either::Right(self.app.call(request))
        };
        Timed {
            inner,
            started,
            times: self.times.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response on its way, timed from the request's arrival to the response's headers.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        times: Arc<RequestTimes>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx));
        this.times.0.observe_duration(this.started.elapsed());
        Poll::Ready(response)
    }
}

/// Each topic's engine role in this process.
pub type Roles = Arc<Vec<(&'static str, WriterRole)>>;

pub fn router<L: EventLog + 'static>(
    log: Arc<L>,
    roles: Roles,
    bridge: Option<Arc<BridgeStats>>,
    audit: Arc<AuditStats>,
    queue: Arc<CommitStats>,
    requests: Arc<RequestTimes>,
    exits: Arc<PanicExits>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (log, roles, bridge, audit, queue, requests, exits) = (
                log.clone(),
                roles.clone(),
                bridge.clone(),
                audit.clone(),
                queue.clone(),
                requests.clone(),
                exits.clone(),
            );
            async move {
                let mut out =
                    render(&*log, &roles, bridge.as_deref(), &audit, &queue, &requests).await;
                render_exits(&mut out, &exits);
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    out,
                )
            }
        }),
    )
}

/// The exits after a panic that earlier runs recorded in the data directory.
fn render_exits(out: &mut String, exits: &PanicExits) {
    out.push_str(
        "# HELP taskledger_panic_exits_total Exits after a panic that earlier runs on this data directory recorded, by the service that panicked (read at start; a count that climbs at every start is a crash loop).\n\
         # TYPE taskledger_panic_exits_total counter\n",
    );
    for (service, n) in &exits.per_service {
        // the names come from a file: escaped as the text format asks of label values
        let service = service
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        out.push_str(&format!(
            "taskledger_panic_exits_total{{service=\"{service}\"}} {n}\n"
        ));
    }
    let latest = exits
        .latest
        .as_ref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(&e.time).ok())
        .map_or(0, |t| t.timestamp());
    out.push_str(&format!(
        "# HELP taskledger_last_panic_exit_timestamp_seconds When the latest recorded exit after a panic happened (0: none).\n\
         # TYPE taskledger_last_panic_exit_timestamp_seconds gauge\n\
         taskledger_last_panic_exit_timestamp_seconds {latest}\n"
    ));
}

/// One gauge family with a value per label value: HELP, TYPE, then a line each.
fn gauges<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, String)>,
) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
    for (key, value) in values {
        out.push_str(&format!("{name}{{{label}=\"{key}\"}} {value}\n"));
    }
}

async fn render<L: EventLog>(
    log: &L,
    roles: &[(&'static str, WriterRole)],
    bridge: Option<&BridgeStats>,
    audit: &AuditStats,
    queue: &CommitStats,
    requests: &RequestTimes,
) -> String {
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
    gauges(
        &mut out,
        "taskledger_partition_writer",
        "1 when this node writes the topic's partition, 0 when it follows its writer.",
        "topic",
        roles
            .iter()
            .map(|(topic, role)| (*topic, u8::from(role.is_writer()).to_string())),
    );
    gauges(
        &mut out,
        "taskledger_projection_position",
        "The log position this node's projection of the topic has applied.",
        "topic",
        roles
            .iter()
            .map(|(topic, role)| (*topic, role.position().to_string())),
    );
    out.push_str(&queue.prometheus("queue"));
    requests.0.render(
        &mut out,
        "taskledger_http_request_seconds",
        "Time from a parsed HTTP request to its response.",
    );
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
        gauges(
            &mut out,
            "taskledger_projection_verified",
            "The last scheduled rebuild of the projection from the log: 1 equal to the live one, 0 different.",
            "projection",
            checked.iter().map(|(name, ok, _, _)| (*name, ok.to_string())),
        );
        gauges(
            &mut out,
            "taskledger_projection_replayed_events",
            "Events the last scheduled rebuild folded.",
            "projection",
            checked
                .iter()
                .map(|(name, _, events, _)| (*name, events.to_string())),
        );
        gauges(
            &mut out,
            "taskledger_projection_replay_events_per_second",
            "The last scheduled rebuild's rate.",
            "projection",
            checked
                .iter()
                .map(|(name, _, _, rate)| (*name, format!("{rate:.0}"))),
        );
        out.push_str(&format!(
            "# HELP taskledger_projection_verify_last_run_timestamp_seconds When the last scheduled rebuild ran.\n\
             # TYPE taskledger_projection_verify_last_run_timestamp_seconds gauge\n\
             taskledger_projection_verify_last_run_timestamp_seconds {}\n",
            audit.projections_last_run.load(Ordering::Relaxed)
        ));
    }
    out
}
