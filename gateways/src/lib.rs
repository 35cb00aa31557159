//! taskledger-gateways: Taskcluster's REST API over axum. Hawk authentication, scope checks,
//! Taskcluster's error bodies and headers; each service's routes in its own module.
//!
//! Boundary: nothing depends on this crate but the binary. Handlers read projections and send
//! commands to the engine; they hold no state of their own.

pub mod audit;
pub mod auth;
pub mod blobs;
pub mod error;
pub mod github;
pub mod hawk;
pub mod hooks;
pub mod index;
pub mod notify;
pub mod object;
pub mod purge_cache;
pub mod queue;
pub mod secrets;
pub mod worker_manager;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::{Json, Router};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use taskledger_projections::{
    AuthEngine, Engine, GithubEngine, HooksEngine, IndexEngine, NotifyEngine, ObjectEngine,
    SecretsEngine, WorkerManagerEngine,
};

/// Everything handlers share.
pub struct AppState {
    pub engine: Engine,
    /// The event log, for reading the records of an entity's history.
    pub records: Arc<dyn taskledger_projections::audit::RecordReader>,
    /// The auth service's writer (and, through it, the auth projection).
    pub auth: AuthEngine,
    /// Static clients plus the auth projection's clients; expands scopes through roles.
    pub clients: hawk::Clients,
    /// `(clientId, accessToken)` of the queue's own client, the issuer of task credentials.
    pub queue_client: (String, String),
    /// The worker-manager's writer (and, through it, its projection).
    pub worker_manager: WorkerManagerEngine,
    /// `(clientId, accessToken)` of the worker-manager's own client, the issuer of worker
    /// credentials (its scopes must cover worker-manager.md §2).
    pub worker_manager_client: (String, String),
    /// The object service's writer (and, through it, its projection).
    pub object: ObjectEngine,
    /// The secrets service's writer (and, through it, its projection).
    pub secrets: SecretsEngine,
    /// The index service's writer (and, through it, its projection).
    pub index: IndexEngine,
    /// The hooks service's writer (and, through it, its projection).
    pub hooks: HooksEngine,
    /// The notify service's writer (and, through it, its projection).
    pub notify: NotifyEngine,
    /// The GitHub integration's writer (and, through it, its projection).
    pub github: GithubEngine,
    /// The GitHub App this server acts as (`--github-app-id`), if any.
    pub github_app: Option<Arc<github::api::GithubApp>>,
    /// The secrets webhooks are signed with (none: unsigned webhooks are taken).
    pub github_webhook_secrets: Vec<String>,
    /// The externally visible root URL, without a trailing slash.
    pub public_url: String,
    /// Blob storage for artifact bytes.
    pub blobs: Arc<dyn object_store::ObjectStore>,
    /// Key of the signatures on blob URLs.
    pub url_key: Vec<u8>,
    pub claim_work_poll: Duration,
    pub started: Instant,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Where a follower asks the log how far it goes (`follow_to_end`), one lookup at a time.
    pub ends: EndLookups,
}

/// Lookups of a log partition's end, one at a time per partition. A caller waits for the
/// lookup in flight, if any, and takes the answer of the first lookup that started after it
/// arrived: no caller gets an end read before it asked, and a burst of callers (requests with
/// an unknown Hawk id on a follower, say) costs the log one lookup at a time, not one each.
#[derive(Default)]
pub struct EndLookups {
    partitions: std::sync::Mutex<EndSlots>,
}

type EndSlots = std::collections::HashMap<(String, u32), Arc<tokio::sync::Mutex<Option<Looked>>>>;

/// A partition's last lookup: when it started, and what it found.
struct Looked {
    started: Instant,
    end: Result<u64, String>,
}

impl EndLookups {
    pub async fn end(
        &self,
        records: &Arc<dyn taskledger_projections::audit::RecordReader>,
        topic: &str,
        partition: u32,
    ) -> Result<u64, String> {
        let arrived = Instant::now();
        let slot = self
            .partitions
            .lock()
            .expect("end lookups lock")
            .entry((topic.to_string(), partition))
            .or_default()
            .clone();
        // the lock is fair: callers take turns in their order of arrival
        let mut last = slot.lock_owned().await;
        if let Some(looked) = &*last {
            if looked.started >= arrived {
                return looked.end.clone();
            }
        }
        // the lookup holds the turn until it is done, even if its caller stops waiting
        // (a client gone), so the next caller never starts a second one beside it
        let (records, topic) = (records.clone(), topic.to_string());
        let lookup = tokio::spawn(async move {
            let started = Instant::now();
            let end = records
                .end_offset(&topic, partition)
                .await
                .map_err(|e| e.to_string());
            *last = Some(Looked {
                started,
                end: end.clone(),
            });
            end
        });
        lookup
            .await
            .unwrap_or_else(|e| Err(format!("end lookup failed: {e}")))
    }
}

/// The authentication layer's outcome, where that layer ran (under `/api/`).
type MaybeAuth = Option<axum::Extension<hawk::Auth>>;

async fn ping(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
    auth: MaybeAuth,
    uri: Uri,
) -> Response {
    let alive = json!({ "alive": true, "uptime": st.started.elapsed().as_secs_f64() });
    builtin("ping", auth, &uri, Json(alive).into_response()).await
}

/// A built-in API method's answer, or Taskcluster's 400 for a body said to be JSON that is
/// not, or for a query-string key it does not declare (none of them declares any).
async fn builtin(name: &'static str, auth: MaybeAuth, uri: &Uri, answer: Response) -> Response {
    queue::call::Call::new(name, json!({}))
        .run(async {
            if let Some(axum::Extension(auth)) = auth {
                auth.body()?;
            }
            queue::call::no_query(uri)?;
            Ok(answer)
        })
        .await
}

async fn lbheartbeat(auth: MaybeAuth, uri: Uri) -> Response {
    builtin("lbheartbeat", auth, &uri, empty().await).await
}

async fn heartbeat(auth: MaybeAuth, uri: Uri) -> Response {
    builtin("heartbeat", auth, &uri, empty().await).await
}

async fn api_version(auth: MaybeAuth, uri: Uri) -> Response {
    builtin("version", auth, &uri, version().await).await
}

async fn empty() -> Response {
    Json(json!({})).into_response()
}

async fn version() -> Response {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("TASKLEDGER_COMMIT").unwrap_or("unknown"),
        "source": "https://github.com/taskledger/taskledger",
        "build": "taskledger",
    }))
    .into_response()
}

/// How long `follow_to_end` waits for this node's projection to reach the log's end before
/// the handler answers from the projection as it stands.
const FOLLOW_PATIENCE: Duration = Duration::from_secs(2);

/// Lets this node's projection of `topic` catch up with the log's end, waiting at most
/// `FOLLOW_PATIENCE`, where another node writes that partition (a cluster); whether the
/// projection advanced. A projection that follows a writer elsewhere is a moment behind it, so what was
/// written there just now (an upload finished, a client created) may not be here yet: a
/// handler about to answer "not there" asks this first, and looks again when it says yes.
/// When the log's end cannot be read, the local projection answers as it stands.
pub(crate) async fn follow_to_end(
    st: &AppState,
    topic: &str,
    partition: u32,
    role: &taskledger_projections::role::WriterRole,
) -> bool {
    if role.is_writer() {
        return false;
    }
    let before = role.position();
    match st.ends.end(&st.records, topic, partition).await {
        Ok(end) if end > before => {
            role.wait_applied(end, FOLLOW_PATIENCE).await;
        }
        Ok(_) => return false,
        Err(e) => {
            tracing::debug!(topic, error = %e, "cannot read the log's end; answering from this node's projection");
            return false;
        }
    }
    role.position() > before
}

pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "Not found" }))).into_response()
}

/// One service's routes under its path prefix (`/api/queue/v1`, ...), each a route of the
/// whole router. (`Router::nest` would wrap each route in a layer that strips the prefix,
/// rebuilding every request's URI.) A path under the prefix that no route takes gets the
/// whole router's fallback, Taskcluster's 404 body.
pub struct Mount {
    prefix: &'static str,
    router: Router<Arc<AppState>>,
}

impl Mount {
    /// The prefix's routes so far: the built-in endpoints every service has.
    fn at(prefix: &'static str) -> Mount {
        Mount {
            prefix,
            router: Router::new(),
        }
        .route("/ping", get(ping))
        .route("/__lbheartbeat__", get(lbheartbeat))
        .route("/__heartbeat__", get(heartbeat))
        .route("/__version__", get(api_version))
    }

    /// `route` at `path` under the prefix, with and without a trailing `/`, as upstream's
    /// (non-strict) router matches both. A path ending in a wildcard takes a trailing `/` into
    /// its parameter instead, as upstream's does.
    pub fn route(self, path: &str, route: MethodRouter<Arc<AppState>>) -> Mount {
        let full = format!("{}{path}", self.prefix);
        let router = if full.contains("{*") {
            self.router.route(&full, route)
        } else {
            let other = match full.strip_suffix('/') {
                Some(bare) => bare.to_string(),
                None => format!("{full}/"),
            };
            self.router.route(&full, route.clone()).route(&other, route)
        };
        Mount {
            router,
            prefix: self.prefix,
        }
    }
}

/// The CORS headers among `API_HEADERS`, which blob downloads carry too (a browser page may
/// fetch an artifact). The API's others (no caching, a CSP that forbids every subresource)
/// would break an HTML artifact opened in a browser; blobs get `BLOB_HEADERS` instead.
const CORS: std::ops::Range<usize> = 1..6;

/// What artifact and object bytes carry besides the CORS headers: they come from the API's
/// origin (upstream serves them from a storage service's own), so a task's HTML runs in a
/// sandbox, an origin of its own, and no type is sniffed.
const BLOB_HEADERS: [(HeaderName, HeaderValue); 2] = [
    (
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("sandbox"),
    ),
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
];

/// Taskcluster's response headers on every API answer, built at compile time. (`from_static`
/// called at run time checks its text byte by byte on every answer, unless the optimiser
/// happens to fold it: about 2,800 instructions a request in a build where it did not.)
const API_HEADERS: [(HeaderName, HeaderValue); 8] = [
    (
        HeaderName::from_static("cache-control"),
        HeaderValue::from_static("no-store no-cache must-revalidate"),
    ),
    (
        HeaderName::from_static("access-control-allow-origin"),
        HeaderValue::from_static("*"),
    ),
    (
        HeaderName::from_static("access-control-max-age"),
        HeaderValue::from_static("900"),
    ),
    (
        HeaderName::from_static("access-control-allow-methods"),
        HeaderValue::from_static("OPTIONS,GET,HEAD,POST,PUT,DELETE,TRACE,CONNECT"),
    ),
    (
        HeaderName::from_static("access-control-request-method"),
        HeaderValue::from_static("*"),
    ),
    (
        HeaderName::from_static("access-control-allow-headers"),
        HeaderValue::from_static("X-Requested-With,Content-Type,Authorization,Accept,Origin,Cache-Control"),
    ),
    (
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; report-uri /__cspreport__"),
    ),
    (
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    ),
];

/// Taskcluster's response headers on every answer (`API_HEADERS`, or for blob bytes the CORS
/// ones and `BLOB_HEADERS`; the trace id the request brought or a new one, a new request id),
/// as a service around the application. It also gives a route's missing method upstream's
/// answer (`method_not_routed`).
///
/// Written by hand, its future named rather than boxed: `axum::middleware::from_fn` would
/// box a clone of the service below and two futures for each request.
#[derive(Clone)]
struct ApiHeaders<S>(S);

impl<S> tower::Service<Request> for ApiHeaders<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = WithApiHeaders<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // upstream tests the header for truth: an empty one gets a new id too
        let trace = request
            .headers()
            .get(TRACE_ID)
            .filter(|t| !t.is_empty())
            .cloned()
            .unwrap_or_else(new_id);
        let preflight = request.method() == axum::http::Method::OPTIONS;
        let path = request.uri().path();
        let blob = path.starts_with("/blobs/") || path.starts_with("/objects/");
        WithApiHeaders {
            inner: self.0.call(request),
            trace: Some(trace),
            preflight,
            blob,
        }
    }
}

const CONTENT_TYPE: HeaderName = axum::http::header::CONTENT_TYPE;
const JSON_UTF8: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const TRACE_ID: HeaderName = HeaderName::from_static("x-taskcluster-trace-id");
const FOR_TRACE_ID: HeaderName = HeaderName::from_static("x-for-trace-id");
const FOR_REQUEST_ID: HeaderName = HeaderName::from_static("x-for-request-id");

/// A new UUID as a header value.
fn new_id() -> HeaderValue {
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a uuid is a header value")
}

pin_project_lite::pin_project! {
    /// An answer on its way; `ApiHeaders` adds its headers when it is ready.
    struct WithApiHeaders<F> {
        #[pin]
        inner: F,
        trace: Option<HeaderValue>,
        // an OPTIONS request
        preflight: bool,
        // bytes of an artifact or object, which a storage service would send: CORS headers
        // only, the content type as stored
        blob: bool,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for WithApiHeaders<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            response = method_not_routed(response, *this.preflight);
        }
        let h = response.headers_mut();
        if *this.blob {
            for (k, v) in &API_HEADERS[CORS] {
                h.insert(k, v.clone());
            }
            for (k, v) in BLOB_HEADERS {
                h.insert(k, v);
            }
        } else {
            // Express's `res.json` names the charset
            if h.get(CONTENT_TYPE).is_some_and(|c| c == "application/json") {
                h.insert(CONTENT_TYPE, JSON_UTF8);
            }
            for (k, v) in API_HEADERS {
                h.insert(k, v);
            }
        }
        if let Some(trace) = this.trace.take() {
            h.insert(FOR_TRACE_ID, trace);
        }
        h.insert(FOR_REQUEST_ID, new_id());
        Poll::Ready(Ok(response))
    }
}

/// A route that exists, asked with a method it does not take (the router's 405): the answer
/// upstream's framework gives. OPTIONS, a CORS preflight, gets 200 naming the methods in
/// `Allow` (the CORS headers are added with the others); any other method gets the unknown
/// route's 404, as upstream has no 405.
fn method_not_routed(response: Response, preflight: bool) -> Response {
    if !preflight {
        return (StatusCode::NOT_FOUND, Json(json!({ "error": "Not found" }))).into_response();
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let body = allow
        .as_ref()
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
        .unwrap_or_default();
    let mut ok = (StatusCode::OK, body).into_response();
    if let Some(allow) = allow {
        ok.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    ok
}

/// The whole HTTP application: every route, behind Taskcluster's response headers and Hawk.
///
/// The two middlewares wrap the router once. (`Router::layer` would wrap each route on its
/// own, nested routes included, and every request would then clone and box each layer below
/// the one it passes through.) Both are services written by hand (`ApiHeaders`,
/// `hawk::Hawk`) rather than `axum::middleware::from_fn`, which boxes a clone of the service
/// below it for every request.
pub fn app(
    state: Arc<AppState>,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    let routes = [
        queue::routes(Mount::at("/api/queue/v1")),
        object::routes(Mount::at("/api/object/v1")),
        auth::routes(Mount::at("/api/auth/v1")),
        audit::routes(Mount::at("/api/audit/v1")),
        worker_manager::routes(Mount::at("/api/worker-manager/v1")),
        purge_cache::routes(Mount::at("/api/purge-cache/v1")),
        secrets::routes(Mount::at("/api/secrets/v1")),
        index::routes(Mount::at("/api/index/v1")),
        hooks::routes(Mount::at("/api/hooks/v1")),
        notify::routes(Mount::at("/api/notify/v1")),
        github::routes(Mount::at("/api/github/v1")),
    ]
    .into_iter()
    .fold(Router::new(), |all, service| all.merge(service.router))
    .route(
        "/blobs/{*path}",
        put(queue::artifacts::put_blob).get(queue::artifacts::get_blob),
    )
    .route(
        "/objects/{*path}",
        put(object::put_object).get(object::get_object),
    )
    .route(
        "/robots.txt",
        get(|| async { "User-Agent: *\nDisallow: /\n" }),
    )
    .route("/__heartbeat__", get(empty))
    .route("/__lbheartbeat__", get(empty))
    .route("/__version__", get(version))
    .fallback(not_found)
    .with_state(state.clone());
    ApiHeaders(hawk::Hawk::new(state, routes))
}

/// The local-directory blob store (object_store's file system backend).
pub use object_store::local::LocalFileSystem as LocalBlobs;

#[cfg(test)]
mod tests {
    use super::EndLookups;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use taskledger_core::log::Stored;
    use taskledger_projections::audit::RecordReader;
    use taskledger_projections::store::StoreError;

    /// A log whose end lookups take 30 ms and answer how many lookups have started; it
    /// counts the most that were ever in flight together.
    #[derive(Default)]
    struct SlowEnds {
        started: AtomicU64,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl RecordReader for SlowEnds {
        fn read_at<'a>(
            &'a self,
            _topic: &'a str,
            _offsets: &'a [u64],
        ) -> Pin<Box<dyn Future<Output = Result<Vec<Stored>, StoreError>> + Send + 'a>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn end_offset<'a>(
            &'a self,
            _topic: &'a str,
            _partition: u32,
        ) -> Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'a>> {
            Box::pin(async move {
                let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(n)
            })
        }
    }

    /// Waits until `log` has started `n` lookups.
    async fn started(log: &SlowEnds, n: u64) {
        while log.started.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_lookups_run_one_at_a_time_and_never_answer_from_before_the_caller() {
        let log = Arc::new(SlowEnds::default());
        let reader: Arc<dyn RecordReader> = log.clone();
        let ends = Arc::new(EndLookups::default());
        // a burst of 50 callers: one lookup at a time, and few in all
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (reader, ends) = (reader.clone(), ends.clone());
            burst.spawn(async move { ends.end(&reader, "t", 0).await.unwrap() });
        }
        while let Some(end) = burst.join_next().await {
            assert!(end.unwrap() >= 1);
        }
        assert_eq!(log.most_in_flight.load(Ordering::SeqCst), 1);
        let lookups = log.started.load(Ordering::SeqCst);
        assert!(lookups <= 3, "{lookups} lookups for a burst of 50");

        // a caller that arrives while a lookup is in flight gets the next lookup's answer
        let first = {
            let (reader, ends) = (reader.clone(), ends.clone());
            tokio::spawn(async move { ends.end(&reader, "t", 0).await.unwrap() })
        };
        started(&log, lookups + 1).await;
        let second = ends.end(&reader, "t", 0).await.unwrap();
        let first = first.await.unwrap();
        assert_eq!((first, second), (lookups + 1, lookups + 2));

        // a caller that stops waiting leaves its lookup holding the turn: the next caller
        // waits for it instead of starting a second one beside it
        let gone = {
            let (reader, ends) = (reader.clone(), ends.clone());
            tokio::spawn(async move { ends.end(&reader, "t", 0).await })
        };
        started(&log, lookups + 3).await;
        gone.abort();
        let after = ends.end(&reader, "t", 0).await.unwrap();
        assert_eq!(after, lookups + 4);
        assert_eq!(log.most_in_flight.load(Ordering::SeqCst), 1);

        // partitions do not wait for each other
        let other = {
            let (reader, ends) = (reader.clone(), ends.clone());
            tokio::spawn(async move { ends.end(&reader, "t", 0).await.unwrap() })
        };
        started(&log, lookups + 5).await;
        ends.end(&reader, "t", 1).await.unwrap();
        other.await.unwrap();
        assert_eq!(log.most_in_flight.load(Ordering::SeqCst), 2);
    }
}
