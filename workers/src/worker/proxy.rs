//! A task's taskcluster-proxy (`features.taskclusterProxy`): an HTTP server on a loopback port
//! of its own, named to the task as `TASKCLUSTER_PROXY_URL`, that forwards the task's requests
//! to the deployment signed with the task's credentials (the current ones: the reclaimer
//! renews them) and `authorizedScopes` = the task's scopes plus
//! `queue:create-artifact:<taskId>/<runId>`, so a task calls Taskcluster holding no
//! credentials. As upstream's proxy it takes `<proxy>/api/<service>/<version>/<path>` (give a
//! client the proxy as its root URL) and the older `<proxy>/<service>/<version>/<path>`, and
//! `POST <proxy>/bewit` with a URL of the deployment as the body answers that URL signed for
//! an hour. Unlike upstream's, it signs nothing for other hosts (the task's credentials stay
//! with the deployment), and `PUT /credentials` is not served: the worker renews the proxy's
//! credentials itself.

use super::SharedQueue;
use anyhow::{anyhow, Context, Result};
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use futures::TryStreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a URL signed at `/bewit` is valid, as upstream's.
const BEWIT_TTL: Duration = Duration::from_secs(3600);

/// A running proxy; stopped when dropped: it accepts no more connections, and a connection
/// kept open (by a process that outlived the commands) gets 503 for every later request.
pub(crate) struct TaskProxy {
    url: String,
    server: tokio::task::JoinHandle<()>,
    state: Arc<Proxy>,
}

impl Drop for TaskProxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.server.abort();
    }
}

impl TaskProxy {
    /// Starts the proxy of a task whose calls may use `scopes` (the task's own, plus the
    /// run's artifact scope).
    pub(crate) async fn start(
        queue: SharedQueue,
        task_id: &str,
        run_id: &str,
        task_scopes: &[String],
    ) -> Result<TaskProxy> {
        let mut scopes = task_scopes.to_vec();
        scopes.push(format!("queue:create-artifact:{task_id}/{run_id}"));
        let root = reqwest::Url::parse(queue.root_url())
            .with_context(|| format!("root URL {}", queue.root_url()))?;
        // answers pass through as sent: no redirect followed, nothing decompressed
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .build()?;
        let state = Arc::new(Proxy {
            queue,
            scopes,
            root,
            http,
            closed: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        // bodies of any size are streamed on, as upstream's proxy takes them
        let app = Router::new()
            .fallback(forward)
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "taskcluster-proxy stopped");
            }
        });
        Ok(TaskProxy { url, server, state })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

struct Proxy {
    queue: SharedQueue,
    scopes: Vec<String>,
    root: reqwest::Url,
    http: reqwest::Client,
    /// Set when the task's commands ended.
    closed: AtomicBool,
}

impl Proxy {
    /// The Hawk `ext` of every request: the credentials' certificate, if temporary, and the
    /// authorized scopes.
    fn ext(&self, certificate: Option<&str>) -> Result<String> {
        let mut ext = json!({ "authorizedScopes": self.scopes });
        if let Some(cert) = certificate {
            let cert: Value = serde_json::from_str(cert).context("the task's certificate")?;
            ext["certificate"] = cert;
        }
        Ok(base64::engine::general_purpose::STANDARD.encode(ext.to_string()))
    }

    /// The deployment's URL for a path the task sent, in either of upstream's two forms.
    fn target(&self, uri: &Uri) -> Option<reqwest::Url> {
        let path = uri.path().strip_prefix('/')?;
        let rest = path.strip_prefix("api/").unwrap_or(path);
        let mut parts = rest.splitn(3, '/');
        let (service, version) = (parts.next()?, parts.next()?);
        let tail = parts.next().unwrap_or("");
        let service_ok = !service.is_empty()
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let version_ok = version
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !service_ok || !version_ok {
            return None;
        }
        let mut url = self.root.clone();
        let base = self.root.path().trim_end_matches('/');
        let prefix = format!("{base}/api/{service}/{version}/");
        url.set_path(&format!("{prefix}{tail}"));
        url.set_query(uri.query());
        // `set_path` resolves dot segments (`..`, `%2e%2e`): what it made must still be
        // under the service's own path, never elsewhere on the host
        url.path().starts_with(&prefix).then_some(url)
    }

    /// The Hawk request for `method` on `url` with the task's current credentials and the
    /// proxy's `ext`, handed to `make` with those credentials (a header, or a bewit, is made
    /// from the two).
    fn hawk<T>(
        &self,
        method: &str,
        url: &reqwest::Url,
        make: impl for<'r> FnOnce(&hawk::Request<'r>, &'r hawk::Credentials) -> hawk::Result<T>,
    ) -> Result<T> {
        let creds = self.queue.credentials();
        let ext = self.ext(creds.certificate.as_deref())?;
        let key = hawk::Key::new(creds.access_token.as_bytes(), hawk::SHA256)
            .map_err(|e| anyhow!("the task's access token: {e}"))?;
        let hawk_creds = hawk::Credentials {
            id: creds.client_id,
            key,
        };
        let resource = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let host = url.host_str().ok_or_else(|| anyhow!("no host in {url}"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow!("no port for {url}"))?;
        let request = hawk::RequestBuilder::new(method, host, port, &resource)
            .ext(Some(ext.as_str()))
            .request();
        make(&request, &hawk_creds).map_err(|e| anyhow!("signing: {e}"))
    }

    /// The `Authorization` header for `method` on `url`.
    fn sign(&self, method: &str, url: &reqwest::Url) -> Result<String> {
        let header = self.hawk(method, url, |request, creds| request.make_header(creds))?;
        Ok(format!("Hawk {header}"))
    }

    /// `url` (of the deployment) with a bewit valid for `BEWIT_TTL`.
    fn signed_url(&self, url: &str) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
        let same_origin = url.scheme() == self.root.scheme()
            && url.host_str() == self.root.host_str()
            && url.port_or_known_default() == self.root.port_or_known_default();
        if !same_origin {
            return Err(format!(
                "only URLs of {} are signed here",
                self.root.as_str().trim_end_matches('/')
            ));
        }
        let bewit = self
            .hawk("GET", &url, |request, creds| {
                request
                    .make_bewit_with_ttl(creds, BEWIT_TTL)
                    .map(|b| b.to_str())
            })
            .map_err(|e| e.to_string())?;
        url.query_pairs_mut().append_pair("bewit", &bewit);
        Ok(url)
    }
}

fn problem(status: StatusCode, message: String) -> Response {
    (
        status,
        axum::Json(json!({ "code": "TaskclusterProxyError", "message": message })),
    )
        .into_response()
}

/// Headers that belong to one hop, the proxy's own concern on each side.
const HOP_BY_HOP: [header::HeaderName; 8] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
];

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if proxy.closed.load(Ordering::SeqCst) {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the task's commands have ended: its proxy signs nothing more".into(),
        );
    }
    if uri.path() == "/bewit" {
        if method != Method::POST {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST a URL to /bewit".into(),
            );
        }
        let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
            return problem(StatusCode::BAD_REQUEST, "a URL of at most 64 KiB".into());
        };
        let text = String::from_utf8_lossy(&body);
        return match proxy.signed_url(&text) {
            Ok(url) => (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, url.to_string())],
                url.to_string(),
            )
                .into_response(),
            Err(why) => problem(StatusCode::BAD_REQUEST, why),
        };
    }
    if uri.path() == "/credentials" {
        return problem(
            StatusCode::NOT_FOUND,
            "this worker renews the proxy's credentials itself".into(),
        );
    }
    let Some(target) = proxy.target(&uri) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!(
                "{} is not /api/<service>/<version>/<path> (or /<service>/<version>/<path>)",
                uri.path()
            ),
        );
    };
    let authorization = match proxy.sign(method.as_str(), &target) {
        Ok(a) => a,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    // every header of the task's request but its hop's own, the host (the deployment's)
    // and any authorization (the proxy's); the body streams on
    let mut sent = HeaderMap::new();
    for (name, value) in &headers {
        let own =
            HOP_BY_HOP.contains(name) || *name == header::HOST || *name == header::AUTHORIZATION;
        if !own {
            sent.append(name.clone(), value.clone());
        }
    }
    let mut request = proxy
        .http
        .request(method, target.clone())
        .headers(sent)
        .header(header::AUTHORIZATION, authorization);
    // a request without a body (no length, not chunked) is sent without one
    let has_body = headers.contains_key(header::CONTENT_LENGTH)
        || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body {
        request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                format!("calling the deployment: {}", e.without_url()),
            )
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(name) {
            response = response.header(name, value);
        }
    }
    if let Ok(endpoint) = HeaderValue::from_str(target.as_str()) {
        response = response.header("x-taskcluster-endpoint", endpoint);
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| problem(StatusCode::BAD_GATEWAY, e.to_string()))
}
