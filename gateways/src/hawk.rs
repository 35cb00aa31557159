//! Authentication middleware: buffers the body, runs Hawk (core::auth) or falls back to the
//! anonymous caller, and leaves the result in the request's extensions. Handlers decide when
//! to look at it, so Taskcluster's ordering of errors is kept.

use crate::error::{ApiError, ErrorCode};
use crate::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use taskledger_core::auth::{authenticate, ClientRecord, ClientSource, HawkRequest};
use taskledger_core::scopes::{any_satisfies, insufficient_scopes_message, ScopeExpr};

/// Body size limit, as upstream.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// The permanent clients this node knows (static clients until the auth service lands).
#[derive(Default)]
pub struct Clients {
    by_id: HashMap<String, ClientRecord>,
}

impl Clients {
    pub fn insert(&mut self, client: ClientRecord) {
        self.by_id.insert(client.client_id.clone(), client);
    }
}

impl ClientSource for Clients {
    fn client(&self, client_id: &str) -> Option<ClientRecord> {
        self.by_id.get(client_id).cloned()
    }
}

/// Who is calling, once authenticated (or anonymous).
#[derive(Clone, Debug)]
pub struct Caller {
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            client_id: None,
            scopes: vec!["assume:anonymous".to_string()],
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

/// The authentication outcome, as handlers find it.
#[derive(Clone, Debug)]
pub struct Auth(pub Arc<Result<Caller, String>>);

impl Auth {
    pub fn caller(&self) -> Result<&Caller, ApiError> {
        match &*self.0 {
            Ok(c) => Ok(c),
            Err(m) => Err(ApiError::new(ErrorCode::AuthenticationFailed, m.clone())),
        }
    }
}

/// The host and port the client signed: `Host`, `X-Forwarded-Port`, `X-Forwarded-Proto`.
fn signed_host_port(headers: &HeaderMap) -> (String, u16) {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(']') || host.starts_with('[') && n.contains(']') => {
            match p.parse::<u16>() {
                Ok(p) if !n.is_empty() => (n.to_string(), Some(p)),
                _ => (host.to_string(), None),
            }
        }
        _ => (host.to_string(), None),
    };
    let forwarded_port = headers
        .get("x-forwarded-port")
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.split(',').next()?.trim().parse::<u16>().ok());
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let port = forwarded_port
        .or(if https { Some(443) } else { None })
        .or(port)
        .unwrap_or(80);
    (name, port)
}

pub async fn middleware(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // `Router::layer` also wraps nested routes; authenticate once, on the whole request target
    if req.extensions().get::<Auth>().is_some() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({
                    "code": "InputTooLarge", "message": "Payload too large", "requestInfo": {}
                })),
            )
                .into_response()
        }
    };
    let resource = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let has_bewit = resource.contains("?bewit=") || resource.contains("&bewit=");
    let result = match parts.headers.get("authorization") {
        Some(_) if has_bewit => Err("Cannot use two authentication schemes at once; this request has both bewit and Authorization header".to_string()),
        Some(value) => match value.to_str() {
            Ok(authorization) => {
                let (host, port) = signed_host_port(&parts.headers);
                let content_type = parts.headers.get("content-type").and_then(|c| c.to_str().ok());
                let req = HawkRequest {
                    method: parts.method.as_str(),
                    resource,
                    host: &host,
                    port,
                    authorization,
                    content_type,
                    body: &bytes,
                };
                tracing::debug!(resource, host = %host, port, "hawk request");
                authenticate(&req, &state.clients, chrono::Utc::now())
                    .map(|a| Caller { client_id: Some(a.client_id), scopes: a.scopes })
                    .map_err(|e| e.0)
            }
            Err(_) => Err("Bad Request: invalid header".to_string()),
        },
        None if has_bewit => Err("bewit authentication is not supported yet".to_string()),
        None => Ok(Caller::anonymous()),
    };
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Auth(Arc::new(result)));
    next.run(req).await
}
