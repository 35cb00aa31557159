//! Several `serve` nodes on one Kafka log (`--kafka-group`): a command that reaches a node
//! which does not write its service's partition goes to the node that does.
//!
//! The HTTP request is forwarded as it came (method, path, query, headers, body), so the
//! writer authenticates the caller's own Hawk signature (which covers the `Host` the client
//! signed, kept as is) and checks its scopes; nothing is trusted because it came from a node.
//! The writer answers with the log position its projection stands at after the command; the
//! forwarding node waits until its own projection has applied that position before it
//! answers, so read-your-writes holds on every node (after `CATCH_UP_PATIENCE` it answers
//! anyway, with a warning in its log: the command did happen). Reads (GET, HEAD) are always served
//! locally. When the writer is unknown or unreachable, the request runs locally, where the
//! engine refuses the command and the caller gets Taskcluster's 503 body.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Duration;
use taskledger_projections::role::WriterRole;

/// Marks a request a node forwarded (the writer never forwards it again).
const FORWARDED: &str = "x-taskledger-forwarded-by";
/// The writer's log position after a forwarded command.
const POSITION: &str = "x-taskledger-log-position";
/// Most a forwarding node waits for its projection to reach the writer's position.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(10);
/// Request bodies are limited as upstream's.
const MAX_BODY: usize = taskledger_gateways::hawk::MAX_BODY;

/// Where to find the writer of a topic's partition (`EventLog::writer_address`).
pub type WriterAddress = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One service's routes and its partition.
pub struct Service {
    /// Path prefix, e.g. `/api/queue/v1/`.
    pub prefix: &'static str,
    pub topic: &'static str,
    pub role: WriterRole,
}

pub struct Cluster {
    /// This node's own address (as its ownership markers announce it).
    pub node_url: String,
    pub services: Vec<Service>,
    pub writer: WriterAddress,
    pub http: reqwest::Client,
}

/// The forwarding middleware, outermost on the whole application.
pub async fn forward(State(cluster): State<Arc<Cluster>>, req: Request, next: Next) -> Response {
    let Some(service) = cluster
        .services
        .iter()
        .find(|s| req.uri().path().starts_with(s.prefix))
    else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED) {
        // the writer's side: answer, and say how far the log is for the forwarding node
        let mut resp = next.run(req).await;
        let position = service.role.position();
        resp.headers_mut()
            .insert(POSITION, HeaderValue::from(position));
        return resp;
    }
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if read || service.role.is_writer() {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        // too large: the local handler refuses it with Taskcluster's body
        return next.run(req).await;
    }
    let writer = (cluster.writer)(service.topic).filter(|w| *w != cluster.node_url);
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        // the body broke off or outgrew its declared length: the local handler answers
        return next.run(Request::from_parts(parts, Body::empty())).await;
    };
    if let Some(writer) = writer {
        match send(&cluster, &writer, &parts, bytes.clone()).await {
            Ok((resp, position)) => {
                if let Some(position) = position {
                    if !service.role.wait_applied(position, CATCH_UP_PATIENCE).await {
                        tracing::warn!(
                            position,
                            "this node's projection did not reach the writer's position in time"
                        );
                    }
                }
                return resp;
            }
            // without the URL: a path may carry a capability (a hook's trigger token)
            Err(e) => {
                tracing::warn!(%writer, error = %e.without_url(), "cannot forward a command to the writer")
            }
        }
    }
    // no writer known or reachable: locally, the engine refuses with 503
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Sends the request to the writer; its response and reported log position.
async fn send(
    cluster: &Cluster,
    writer: &str,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> Result<(Response, Option<u64>), reqwest::Error> {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let url = format!("{}{target}", writer.trim_end_matches('/'));
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(me) = HeaderValue::from_str(&cluster.node_url) {
        headers.insert(FORWARDED, me);
    }
    let answer = cluster
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let status = answer.status();
    let position = answer
        .headers()
        .get(POSITION)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let headers: HeaderMap = answer
        .headers()
        .iter()
        .filter(|(name, _)| !hop_by_hop(name) && name.as_str() != POSITION)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let bytes = answer.bytes().await?;
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok((resp, position))
}

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

/// Removes a node (by its URL) from the writer group.
pub type Expel = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// How often a node checks that the writers of the partitions it follows answer.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Failed checks in a row after which a writer counts as gone.
const WATCH_MISSES: u32 = 3;

/// Watches the writers this node forwards to. When one stops answering (three missed pings in
/// a row), the node has it removed from the writer group, so its partitions move at once, even
/// on a broker that never expires dead members (on Kafka, which expires them after the
/// session timeout, it only comes sooner). A node removed while alive joins again.
pub async fn watch_writers(cluster: Arc<Cluster>, expel: Expel) {
    let ping = match reqwest::Client::builder().timeout(WATCH_EVERY).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the writers");
            return;
        }
    };
    let mut misses: std::collections::HashMap<String, u32> = Default::default();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let writers: std::collections::HashSet<String> = cluster
            .services
            .iter()
            .filter(|s| !s.role.is_writer())
            .filter_map(|s| (cluster.writer)(s.topic))
            .filter(|w| *w != cluster.node_url)
            .collect();
        misses.retain(|w, _| writers.contains(w));
        for writer in writers {
            let url = format!("{writer}/api/queue/v1/ping");
            let alive = ping
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let count = misses.entry(writer.clone()).or_default();
            *count = if alive { 0 } else { *count + 1 };
            if *count >= WATCH_MISSES {
                tracing::warn!(%writer, "a partition's writer stopped answering; removing it from the writer group");
                *count = 0;
                expel(writer).await;
            }
        }
    }
}
