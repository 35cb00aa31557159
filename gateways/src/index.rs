//! The index service (`/api/index/v1`, reference/index.md): dotted names that point at tasks.
//! `insertTask` and `deleteTask` are `IndexCommand`s on the index partition; completed tasks
//! are indexed under their `index.` routes by the route indexer (`workers::run_indexing`);
//! everything else reads the index projection.
//!
//! Where upstream's behaviour is a quirk, this follows what a caller would expect and says so:
//! a rank must be a 32-bit integer (upstream's column type; it failed such an insert with a
//! 500, here it is a 400), and `findTasksAtIndex` answers for every path, with or without a
//! dot, leaving out expired entries as `findTask` does.

use crate::error::ApiError;
use crate::hawk::{actor, Auth};
use crate::queue::call::*;
use crate::{AppState, Mount};
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::index::{
    rank_of, valid_path, IndexCommand, IndexEvent, IndexedTask, Namespace, INDEX_TOPIC, PATH_RE,
};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;
use taskledger_projections::index_view::INDEX_PARTITION;

type St = State<Arc<AppState>>;

const INSERT_SCHEMA: &str = "/schemas/index/v1/insert-task-request.json#";
const FIND_SCHEMA: &str = "/schemas/index/v1/list-tasks-request.json#";
const LIST_SCHEMA: &str = "/schemas/index/v1/list-namespaces-request.json#";

/// How long the signed URL `findArtifactFromTask` redirects to stays valid (upstream's).
const SIGNED_URL_TTL: Duration = Duration::from_secs(15 * 60);

/// Routes under `/api/index/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route(
            "/task/{path}",
            get(find_task).put(insert_task).delete(delete_task),
        )
        .route("/task/{path}/artifacts/{*name}", get(find_artifact))
        .route(
            "/tasks/indexes",
            get(list_tasks_named_indexes).post(find_tasks_at_index),
        )
        // (`Mount` also routes each path with a trailing slash: the clients ask for the root
        // namespace as `/tasks/` and `/namespaces/`)
        .route("/tasks", get(list_root_tasks).post(list_root_tasks))
        .route("/tasks/{namespace}", get(list_tasks).post(list_tasks))
        .route(
            "/namespaces",
            get(list_root_namespaces).post(list_root_namespaces),
        )
        .route(
            "/namespaces/{namespace}",
            get(list_namespaces).post(list_namespaces),
        )
}

/// The caller must hold `scope` (filled from URL parameters, so checked first); then `path`,
/// the URL parameter `param`, must be an index path.
fn pre(auth: &Auth, scope: String, param: &str, path: &str) -> Result<(), ApiError> {
    auth.caller()?.require(&ScopeExpr::scope(scope))?;
    if !valid_path(path) {
        return Err(ApiError::bad_param(param, path, PATH_RE));
    }
    Ok(())
}

/// An entry as the API shows it (`IndexedTask` of the reference).
fn entry_json(e: &IndexedTask) -> Value {
    json!({
        "namespace": e.path,
        "taskId": e.task_id.text().as_str(),
        "rank": e.rank,
        "data": serde_json::from_str::<Value>(&e.data).unwrap_or_else(|_| json!({})),
        "expires": e.expires.to_rfc3339(),
    })
}

fn namespace_json(n: &Namespace) -> Value {
    let (_, name) = taskledger_core::index::split(&n.namespace);
    json!({
        "namespace": n.namespace,
        "name": name,
        "expires": n.expires.to_rfc3339(),
    })
}

/// The entry at `path` that reads see now; on a follower, one the writer may have just
/// written is waited for.
async fn visible_entry(st: &AppState, path: &str) -> Result<Option<IndexedTask>, ApiError> {
    let now_visible = || -> Result<Option<IndexedTask>, ApiError> {
        Ok(st
            .index
            .view()
            .entry(path)?
            .filter(|e| e.visible(Millis::now())))
    };
    let mut entry = now_visible()?;
    if entry.is_none()
        && crate::follow_to_end(st, INDEX_TOPIC, INDEX_PARTITION, st.index.role()).await
    {
        entry = now_visible()?;
    }
    Ok(entry)
}

async fn find_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(path): Path<String>,
) -> Response {
    Call::new("findTask", json!({ "indexPath": path }))
        .run(async {
            pre(&auth, format!("index:find-task:{path}"), "indexPath", &path)?;
            no_query(&uri)?;
            let entry = visible_entry(&st, &path)
                .await?
                .ok_or_else(|| ApiError::not_found("Indexed task not found"))?;
            Ok(ok(entry_json(&entry)))
        })
        .await
}

/// `insertTask`'s body, checked against its schema: `{taskId, rank, data, expires}`.
fn insert_body(path: &str, body: &Value) -> Result<IndexedTask, ApiError> {
    let keys = ["taskId", "rank", "data", "expires"];
    let obj = crate::auth::check_keys(body, INSERT_SCHEMA, &keys, &keys)?;
    let mut errors = Vec::new();
    let task_id = match obj.get("taskId") {
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    if task_id.is_none() {
        errors.push(format!("data/taskId must match pattern \"{SLUGID_RE}\""));
    }
    let rank = match obj.get("rank") {
        Some(v) if v.is_number() => {
            let rank = rank_of(v);
            if rank.is_none() {
                errors.push(
                    "data/rank must be an integer from -2147483648 to 2147483647 (ranks are stored as 32-bit integers)"
                        .into(),
                );
            }
            rank
        }
        _ => {
            errors.push("data/rank must be number".into());
            None
        }
    };
    let data = obj.get("data").filter(|d| d.is_object());
    if data.is_none() {
        errors.push("data/data must be object".into());
    }
    let expires = date_time(&obj, "expires", &mut errors);
    match (task_id, rank, data, expires) {
        (Some(task_id), Some(rank), Some(data), Some(expires)) if errors.is_empty() => {
            Ok(IndexedTask {
                path: path.to_string(),
                task_id,
                rank,
                data: data.to_string(),
                expires,
            })
        }
        _ => Err(ApiError::validation(INSERT_SCHEMA, &errors)),
    }
}

async fn insert_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(path): Path<String>,
) -> Response {
    Call::new("insertTask", json!({ "namespace": path }))
        .run(async {
            let body = auth.body()?;
            pre(
                &auth,
                format!("index:insert-task:{path}"),
                "namespace",
                &path,
            )?;
            no_query(&uri)?;
            let entry = insert_body(&path, &body.input()?)?;
            let caller = auth.caller()?;
            let written = st
                .index
                .execute(actor(caller), IndexCommand::Insert(entry))
                .await?;
            let stored = match written.into_iter().next().map(|env| env.payload) {
                Some(IndexEvent::TaskIndexed { entry, .. }) => Some(entry),
                // kept out by the rank rule: the entry that stays is the answer
                _ => st.index.view().entry(&path)?,
            };
            let stored = stored.ok_or_else(|| {
                ApiError::internal(format!("index entry {path} vanished while inserted"))
            })?;
            Ok(ok(entry_json(&stored)))
        })
        .await
}

async fn delete_task(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(path): Path<String>,
) -> Response {
    Call::new("deleteTask", json!({ "namespace": path }))
        .run(async {
            pre(
                &auth,
                format!("index:delete-task:{path}"),
                "namespace",
                &path,
            )?;
            no_query(&uri)?;
            let caller = auth.caller()?;
            let cmd = IndexCommand::Delete { path: path.clone() };
            st.index.execute(actor(caller), cmd).await?;
            Ok(ok(json!({})))
        })
        .await
}

/// The deprecated POST forms of the listings take a body that is checked and then ignored
/// (paging still comes from the query string), as upstream's; a GET's body is not read.
fn ignored_list_body(method: &Method, auth: &Auth) -> Result<(), ApiError> {
    if method != Method::POST {
        return Ok(());
    }
    let body = auth.body()?.input()?;
    let obj = crate::auth::check_keys(&body, LIST_SCHEMA, &["limit", "continuationToken"], &[])?;
    let mut errors = Vec::new();
    if obj.get("limit").is_some_and(|l| !l.is_number()) {
        errors.push("data/limit must be number".to_string());
    }
    if obj.get("continuationToken").is_some_and(|t| !t.is_string()) {
        errors.push("data/continuationToken must be string".to_string());
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(LIST_SCHEMA, &errors));
    }
    Ok(())
}

/// The two browsing calls, which differ only in what they list.
#[derive(Clone, Copy)]
enum Listing {
    Namespaces,
    Tasks,
}

impl Listing {
    fn call(self) -> &'static str {
        match self {
            Listing::Namespaces => "listNamespaces",
            Listing::Tasks => "listTasks",
        }
    }

    fn scope(self, namespace: &str) -> String {
        match self {
            Listing::Namespaces => format!("index:list-namespaces:{namespace}"),
            Listing::Tasks => format!("index:list-tasks:{namespace}"),
        }
    }

    /// A page of what is directly in `namespace`, as the API shows it.
    fn page(
        self,
        st: &AppState,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Value, ApiError> {
        let (view, now) = (st.index.view(), Millis::now());
        let (key, rows, more) = match self {
            Listing::Namespaces => {
                let (rows, more) = view.list_namespaces(namespace, after, limit, now)?;
                (
                    "namespaces",
                    rows.iter().map(namespace_json).collect(),
                    more,
                )
            }
            Listing::Tasks => {
                let (rows, more) = view.list_tasks(namespace, after, limit, now)?;
                (
                    "tasks",
                    rows.iter().map(entry_json).collect::<Vec<_>>(),
                    more,
                )
            }
        };
        Ok(with_name_token(json!({ key: rows }), more))
    }
}

async fn list_in(
    listing: Listing,
    (method, uri): (&Method, &Uri),
    st: &AppState,
    auth: &Auth,
    namespace: &str,
) -> Response {
    Call::new(listing.call(), json!({ "namespace": namespace }))
        .run(async {
            auth.caller()?
                .require(&ScopeExpr::scope(listing.scope(namespace)))?;
            if !namespace.is_empty() && !valid_path(namespace) {
                return Err(ApiError::bad_param("namespace", namespace, PATH_RE));
            }
            let q = query(uri, &["continuationToken", "limit"])?;
            ignored_list_body(method, auth)?;
            let after = name_token(&q)?;
            Ok(ok(listing.page(
                st,
                namespace,
                after.as_deref(),
                limit(&q),
            )?))
        })
        .await
}

async fn list_root_namespaces(
    method: Method,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    list_in(Listing::Namespaces, (&method, &uri), &st, &auth, "").await
}

async fn list_namespaces(
    method: Method,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(namespace): Path<String>,
) -> Response {
    list_in(Listing::Namespaces, (&method, &uri), &st, &auth, &namespace).await
}

async fn list_root_tasks(
    method: Method,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    list_in(Listing::Tasks, (&method, &uri), &st, &auth, "").await
}

async fn list_tasks(
    method: Method,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(namespace): Path<String>,
) -> Response {
    list_in(Listing::Tasks, (&method, &uri), &st, &auth, &namespace).await
}

/// `GET /tasks/indexes` is `listTasks` of the namespace `indexes` (the POST is another call).
async fn list_tasks_named_indexes(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    list_in(Listing::Tasks, (&Method::GET, &uri), &st, &auth, "indexes").await
}

/// `findTasksAtIndex`'s body: `{indexes: [string]}` (default `[]`).
fn indexes_body(body: &Value) -> Result<Vec<String>, ApiError> {
    let obj = crate::auth::check_keys(body, FIND_SCHEMA, &["indexes"], &[])?;
    let Some(list) = obj.get("indexes") else {
        return Ok(vec![]);
    };
    let Some(items) = list.as_array() else {
        return Err(ApiError::validation(
            FIND_SCHEMA,
            &["data/indexes must be array".into()],
        ));
    };
    let errors: Vec<String> = items
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_string())
        .map(|(i, _)| format!("data/indexes/{i} must be string"))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(FIND_SCHEMA, &errors));
    }
    Ok(items
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

async fn find_tasks_at_index(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    Call::new("findTasksAtIndex", json!({}))
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let paths = indexes_body(&body.input()?)?;
            let scopes: Vec<String> = paths
                .iter()
                .map(|p| format!("index:find-task:{p}"))
                .collect();
            caller.require(&ScopeExpr::all_of_scopes(&scopes))?;
            // the token is the position in `indexes` to go on from
            let start = match name_token(&q)? {
                Some(t) => t
                    .parse::<usize>()
                    .map_err(|_| ApiError::input("Invalid continuation token"))?,
                None => 0,
            };
            let (limit, now) = (limit(&q), Millis::now());
            let mut tasks = Vec::new();
            let mut more = None;
            for (i, path) in paths.iter().enumerate().skip(start) {
                if tasks.len() == limit {
                    more = Some(i.to_string());
                    break;
                }
                if !valid_path(path) {
                    continue;
                }
                if let Some(e) = st.index.view().entry(path)?.filter(|e| e.visible(now)) {
                    tasks.push(entry_json(&e));
                }
            }
            Ok(ok(with_name_token(json!({ "tasks": tasks }), more)))
        })
        .await
}

/// Characters of an artifact name kept as they are in the queue URL a redirect names.
const NAME_KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

async fn find_artifact(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((path, name)): Path<(String, String)>,
) -> Response {
    Call::new(
        "findArtifactFromTask",
        json!({ "indexPath": path, "name": name }),
    )
    .run(async {
        auth.caller()?
            .require(&ScopeExpr::scope(format!("queue:get-artifact:{name}")))?;
        if !valid_path(&path) {
            return Err(ApiError::bad_param("indexPath", &path, PATH_RE));
        }
        no_query(&uri)?;
        let entry = visible_entry(&st, &path)
            .await?
            .ok_or_else(|| ApiError::not_found("Indexed task not found"))?;
        let resource = format!(
            "/api/queue/v1/task/{}/artifacts/{}",
            entry.task_id.text().as_str(),
            utf8_percent_encode(&name, NAME_KEPT)
        );
        let public = taskledger_core::scopes::any_satisfies(
            &st.clients.anonymous_scopes(),
            &format!("queue:get-artifact:{name}"),
        );
        let url = if public {
            format!("{}{resource}", st.public_url)
        } else {
            signed_url(&st, &resource)?
        };
        let mut r = (StatusCode::SEE_OTHER, axum::Json(json!({ "url": url }))).into_response();
        if let Ok(v) = HeaderValue::from_str(&url) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Ok(r)
    })
    .await
}

/// `resource` (a path under the root URL) on the root URL, with a bewit of the queue's own
/// client valid for `SIGNED_URL_TTL`, as upstream signs with the index service's.
fn signed_url(st: &AppState, resource: &str) -> Result<String, ApiError> {
    let root: Uri = st.public_url.parse().map_err(ApiError::internal)?;
    let host = root
        .host()
        .ok_or_else(|| ApiError::internal("the root URL has no host"))?;
    let port = root
        .port_u16()
        .unwrap_or(if root.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let full = format!("{}{resource}", root.path().trim_end_matches('/'));
    let (client_id, token) = &st.queue_client;
    let key = ::hawk::Key::new(token.as_bytes(), ::hawk::SHA256).map_err(ApiError::internal)?;
    let creds = ::hawk::Credentials {
        id: client_id.clone(),
        key,
    };
    let bewit = ::hawk::RequestBuilder::new("GET", host, port, &full)
        .request()
        .make_bewit_with_ttl(&creds, SIGNED_URL_TTL)
        .map_err(ApiError::internal)?;
    Ok(format!(
        "{}{resource}?bewit={}",
        st.public_url,
        bewit.to_str()
    ))
}
