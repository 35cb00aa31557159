//! Authentication middleware: buffers the body, runs Hawk (core::auth) or falls back to the
//! anonymous caller, and leaves the result in the request's extensions. Handlers decide when
//! to look at it, so Taskcluster's ordering of errors is kept. The clients it knows are
//! `clients.rs`'s.

mod clients;

pub use clients::Clients;

use crate::error::{ApiError, ErrorCode};
use crate::queue::call::{read_body, Body};
use crate::AppState;
use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::access::{AuthCommand, USED_REFRESH_MS};
use taskledger_core::auth::{
    authenticate, authenticate_bewit, Authenticated, BewitRequest, ClientRecord, ClientSource,
    HawkRequest,
};
use taskledger_core::envelope::Actor;
use taskledger_core::scopes::{any_satisfies, insufficient_scopes_message, ScopeExpr, ScopeSet};
use taskledger_projections::auth_view::AUTH_PARTITION;

/// Body size limit, as upstream.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// Who is calling, once authenticated (or anonymous).
#[derive(Clone, Debug)]
pub struct Caller {
    pub client_id: Option<String>,
    pub scopes: ScopeSet,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            client_id: None,
            scopes: ScopeSet::new(vec!["assume:anonymous".to_string()]),
        }
    }

    pub fn has(&self, scope: &str) -> bool {
        any_satisfies(&self.scopes, scope)
    }

    /// 403 InsufficientScopes unless the caller satisfies `expr`.
    pub fn require(&self, expr: &ScopeExpr) -> Result<(), ApiError> {
        if expr.satisfied_by(&self.scopes) {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::InsufficientScopes,
            insufficient_scopes_message(self.client_id.as_deref(), expr, &self.scopes),
        ))
    }

    /// The clientId recorded as the actor of events.
    pub fn actor_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| "auth-failed:no-auth".to_string())
    }
}

impl From<Authenticated> for Caller {
    fn from(a: Authenticated) -> Caller {
        Caller {
            client_id: Some(a.client_id),
            scopes: a.scopes,
        }
    }
}

/// Who an event records as its cause: the caller's clientId and a fresh request id.
pub fn actor(caller: &Caller) -> Actor {
    Actor {
        client_id: caller.actor_id(),
        request_id: Some(uuid::Uuid::new_v4()),
    }
}

/// The authentication outcome, as handlers find it.
#[derive(Clone, Debug)]
pub struct Auth {
    outcome: Arc<Result<Caller, String>>,
    /// The body as read, until the handler takes it; or why a body said to be JSON is not a
    /// JSON object or array.
    body: Result<Arc<Mutex<Option<Body>>>, Arc<ApiError>>,
}

impl Auth {
    /// The caller, or why there is none. A body said to be JSON that does not parse is
    /// refused first: upstream's body parser runs before authentication on every route
    /// (reference/conventions.md, "Processing order"), and every handler asks for its caller
    /// before anything else it checks.
    pub fn caller(&self) -> Result<&Caller, ApiError> {
        if let Err(e) = &self.body {
            return Err(ApiError::clone(e));
        }
        match &*self.outcome {
            Ok(c) => Ok(c),
            Err(m) => Err(ApiError::new(ErrorCode::AuthenticationFailed, m.clone())),
        }
    }

    /// The request's body as the first step read it (`call::read_body`), parsed once: a
    /// handler takes it before anything else it checks, and only once.
    pub fn body(&self) -> Result<Body, ApiError> {
        match &self.body {
            Ok(b) => Ok(b.lock().expect("body lock").take().unwrap_or_default()),
            Err(e) => Err(ApiError::clone(e)),
        }
    }
}

/// Header names looked up on every request, parsed once (a lookup by `&str` parses the
/// name each time).
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The host and port the client signed: `Host`, `X-Forwarded-Port`, `X-Forwarded-Proto`.
pub fn signed_host_port(headers: &HeaderMap) -> (&str, u16) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') && n.contains(']') => {
            match p.parse::<u16>() {
                Ok(p) if !n.is_empty() => (n, Some(p)),
                _ => (host, None),
            }
        }
        _ => (host, None),
    };
    let forwarded_port = headers
        .get(X_FORWARDED_PORT)
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.split(',').next()?.trim().parse::<u16>().ok());
    let https = headers
        .get(X_FORWARDED_PROTO)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let port = forwarded_port
        .or(if https { Some(443) } else { None })
        .or(port)
        .unwrap_or(80);
    (name, port)
}

/// What authentication reads of a request.
pub struct Signed<'a> {
    pub method: &'a str,
    /// Raw path + query, bewit included.
    pub resource: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// Verify a Hawk `hash` against `body` (authenticateHawk hands the hash back instead).
    pub check_hash: bool,
}

/// Picks the scheme as Taskcluster's API layer does (auth.md §2: header, bewit, or none) and
/// authenticates against `source`. An empty `Authorization` header or `bewit` parameter is
/// none; both at once fail. `Ok(None)`: no credentials; the caller decides what an anonymous
/// request holds.
pub fn authenticate_request(
    r: &Signed,
    source: &dyn ClientSource,
) -> Result<Option<Authenticated>, String> {
    let authorization = r.authorization.filter(|a| !a.is_empty());
    let has_bewit = query_bewit(r.resource);
    if authorization.is_some() && has_bewit {
        return Err(
            "Cannot use two authentication schemes at once this request has both \
                    bewit in querystring and and 'authorization' header"
                .to_string(),
        );
    }
    if authorization.is_none() && !has_bewit {
        return Ok(None);
    }
    verify(r, authorization, source).map(Some)
}

/// Picks the scheme as the auth service's `authenticateHawk` does: a non-empty header first,
/// else a `bewit=` anywhere in the query (an empty one fails as "Empty bewit"), else none.
pub fn validate_signature(
    r: &Signed,
    source: &dyn ClientSource,
) -> Result<Option<Authenticated>, String> {
    let authorization = r.authorization.filter(|a| !a.is_empty());
    let bewit_like = r.resource.starts_with('/')
        && (r.resource.contains("?bewit=") || r.resource.contains("&bewit="));
    if authorization.is_none() && !bewit_like {
        return Ok(None);
    }
    verify(r, authorization, source).map(Some)
}

/// Whether `req.query.bewit` is truthy: one non-empty `bewit` parameter, or several (an
/// array).
fn query_bewit(resource: &str) -> bool {
    let Some((_, query)) = resource.split_once('?') else {
        return false;
    };
    let mut values = query.split('&').filter_map(|p| p.strip_prefix("bewit="));
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => true,
        (Some(one), None) => !one.is_empty(),
        (None, _) => false,
    }
}

/// Hawk with `authorization`, else the bewit in `r.resource`.
fn verify(
    r: &Signed,
    authorization: Option<&str>,
    source: &dyn ClientSource,
) -> Result<Authenticated, String> {
    let now = chrono::Utc::now();
    let result = match authorization {
        Some(authorization) => {
            let req = HawkRequest {
                method: r.method,
                resource: r.resource,
                host: r.host,
                port: r.port,
                authorization,
                content_type: r.content_type,
                body: r.body,
                check_hash: r.check_hash,
            };
            authenticate(&req, source, now)
        }
        None => {
            let req = BewitRequest {
                method: r.method,
                resource: r.resource,
                host: r.host,
                port: r.port,
            };
            authenticate_bewit(&req, source, now)
        }
    };
    result.map_err(|e| e.0)
}

/// `authenticate_request` for an HTTP request as received: signed host and port from the
/// headers, the `Authorization` and `Content-Type` headers, the body.
pub fn authenticate_headers(
    method: &str,
    resource: &str,
    headers: &HeaderMap,
    body: &[u8],
    source: &dyn ClientSource,
) -> Result<Option<Authenticated>, String> {
    let authorization = match headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        Some(Err(_)) => return Err("Bad Request: invalid header".to_string()),
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let (host, port) = signed_host_port(headers);
    authenticate_request(
        &Signed {
            method,
            resource,
            host,
            port,
            authorization,
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok()),
            body,
            check_hash: true,
        },
        source,
    )
}

/// Taskcluster's error body for a request refused before any route saw it: no method name,
/// parameters or payload to echo.
fn refused_unrouted(error: ApiError) -> Response {
    crate::error::Failure {
        error,
        method: "unknown",
        params: serde_json::json!({}),
        payload: serde_json::json!({}),
    }
    .into_response()
}

/// Hawk around the application's router: every request is authenticated (its body read
/// first) before the router sees it, and carries the outcome as an `Auth` extension.
///
/// Written by hand rather than with `axum::middleware::from_fn`, which boxes a clone of the
/// router and two futures for each request; this boxes one.
#[derive(Clone)]
pub struct Hawk<S> {
    state: Arc<AppState>,
    inner: S,
}

impl<S> Hawk<S> {
    pub fn new(state: Arc<AppState>, inner: S) -> Hawk<S> {
        Hawk { state, inner }
    }
}

impl<S> tower::Service<Request> for Hawk<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // the service made ready is the one called; a fresh clone stays behind for the next
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        let state = self.state.clone();
        Box::pin(async move { Ok(authenticate_then(state, request, ready).await) })
    }
}

/// The request, authenticated, handed to `next` (a service already ready).
async fn authenticate_then<S>(state: Arc<AppState>, req: Request, mut next: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    // blob and object URLs carry their own signature and stream bodies of any size: never
    // buffered here
    let path = req.uri().path();
    if path.starts_with("/blobs/") || path.starts_with("/objects/") {
        return answer(next.call(req).await);
    }
    // every route's parameters are text: a path that does not decode to UTF-8 gets
    // Taskcluster's error body here, not the router's plain-text rejection
    // (a path without escapes is the text it decodes to)
    if path.contains('%')
        && percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .is_err()
    {
        return refused_unrouted(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            "Invalid URL patterns:\nthe path does not decode to UTF-8 text",
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return refused_unrouted(ApiError::new(
                ErrorCode::InputTooLarge,
                format!("The request body is larger than the {MAX_BODY} bytes accepted"),
            ))
        }
    };
    let resource = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let authenticated = |source: &dyn ClientSource| {
        authenticate_headers(
            parts.method.as_str(),
            resource,
            &parts.headers,
            &bytes,
            source,
        )
    };
    let (mut result, asked) = {
        let noting = Noting {
            clients: &state.clients,
            asked: std::cell::Cell::new(false),
        };
        (authenticated(&noting), noting.asked.get())
    };
    // where another node writes auth (a cluster), this node's projection may lag behind a
    // client created, enabled, renewed or given a new token just now: a refusal that read a
    // client catches up with the auth log and looks again (nothing to do on the writer)
    if result.is_err()
        && asked
        && crate::follow_to_end(&state, AUTH_TOPIC, AUTH_PARTITION, state.auth.role()).await
    {
        result = authenticated(&state.clients);
    }
    let result = result.map(|found| match found {
        Some(a) => {
            note_use(&state, &a.issuer);
            Caller::from(a)
        }
        None => Caller {
            client_id: None,
            scopes: state.clients.anonymous_scopes(),
        },
    });
    let body = read_body(&parts.headers, &bytes)
        .map(|b| Arc::new(Mutex::new(Some(b))))
        .map_err(Arc::new);
    let mut req = Request::from_parts(parts, axum::body::Body::from(bytes));
    req.extensions_mut().insert(Auth {
        outcome: Arc::new(result),
        body,
    });
    answer(next.call(req).await)
}

/// The answer of a service that cannot fail.
fn answer(result: Result<Response, Infallible>) -> Response {
    match result {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The clients, remembering whether authentication asked for one.
struct Noting<'a> {
    clients: &'a Clients,
    asked: std::cell::Cell<bool>,
}

impl ClientSource for Noting<'_> {
    fn client(&self, client_id: &str) -> Option<ClientRecord> {
        self.asked.set(true);
        self.clients.client(client_id)
    }

    fn issuer(&self, client_id: &str) -> Option<ClientRecord> {
        self.asked.set(true);
        self.clients.issuer(client_id)
    }

    fn expand(&self, scopes: Vec<String>) -> ScopeSet {
        self.clients.expand(scopes)
    }
}

/// Records, off the request path, that `issuer`'s key authenticated a request, when the
/// client's `lastDateUsed` is older than `USED_REFRESH_MS` (auth.md §4.2). Static clients
/// live in configuration and record nothing.
fn note_use(state: &AppState, issuer: &str) {
    let now = taskledger_core::time::Millis::now();
    let stale = state.auth.view().read(|s| {
        s.clients
            .get(issuer)
            .is_some_and(|c| now.0 - c.last_date_used.0 >= USED_REFRESH_MS)
    });
    // only the auth partition's writer records it: with several nodes, uses seen only by the
    // others go unrecorded (lastDateUsed is advisory; a known gap)
    if !stale || !state.auth.role().is_writer() {
        return;
    }
    let engine = state.auth.clone();
    let client_id = issuer.to_string();
    tokio::spawn(async move {
        let actor = Actor {
            client_id: client_id.clone(),
            request_id: Some(uuid::Uuid::new_v4()),
        };
        if let Err(e) = engine
            .execute(actor, AuthCommand::MarkClientUsed { client_id })
            .await
        {
            tracing::warn!(error = %e, "recording a client's use failed");
        }
    });
}
