//! Artifact endpoints, and the signed blob URLs taskledger serves itself for `s3`-type bytes.

use super::call::*;
use super::json::{artifact_info, Checks};
use crate::error::{ApiError, ErrorCode};
use crate::hawk::actor;
use crate::hawk::Auth;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use object_store::ObjectStoreExt;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::ids::{Slug, TaskId};
use taskledger_core::queue::{Artifact, ArtifactStorage, ErrorReason};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::{Millis, MINUTE};
use taskledger_projections::{keys, Outcome, QueueCommand};

type St = State<Arc<AppState>>;

const CREATE_SCHEMA: &str = "/schemas/queue/v1/post-artifact-request.json#";

fn parse_artifact(body: &Value, name: &str) -> Result<Artifact, ApiError> {
    let mut c = Checks::default();
    let Some(obj) = body.as_object() else {
        return Err(ApiError::validation(
            CREATE_SCHEMA,
            &["data should be object".into()],
        ));
    };
    let storage_type = c.string(obj, "storageType", true).unwrap_or("").to_string();
    let expires = c.string(obj, "expires", true).and_then(|e| {
        let t = Millis::parse_rfc3339(e);
        if t.is_none() {
            c.errors
                .push("data.expires should match format \"date-time\"".into());
        }
        t
    });
    let content_type = c.string(obj, "contentType", false).map(str::to_string);
    let allowed: &[&str] = match storage_type.as_str() {
        "s3" | "object" => &["storageType", "expires", "contentType", "contentLength"],
        "reference" => &["storageType", "expires", "contentType", "url"],
        "link" => &["storageType", "expires", "contentType", "artifact"],
        "error" => &["storageType", "expires", "reason", "message"],
        _ => {
            c.errors
                .push("data.storageType should be equal to one of the allowed values".into());
            &[]
        }
    };
    for k in obj.keys() {
        if !allowed.is_empty() && !allowed.contains(&k.as_str()) {
            c.errors
                .push(format!("data should NOT have additional properties: '{k}'"));
        }
    }
    let content_length = obj.get("contentLength").and_then(|v| v.as_u64());
    let storage = match storage_type.as_str() {
        "s3" => Some(ArtifactStorage::S3 { content_length }),
        "object" => Some(ArtifactStorage::Object {
            upload_id: Slug::nice(),
            content_length,
        }),
        "reference" => c
            .string(obj, "url", true)
            .map(|u| ArtifactStorage::Reference { url: u.to_string() }),
        "link" => c
            .string(obj, "artifact", true)
            .map(|a| ArtifactStorage::Link {
                target: a.to_string(),
            }),
        "error" => {
            let reason = c.string(obj, "reason", true).and_then(ErrorReason::parse);
            let message = c.string(obj, "message", true).unwrap_or("").to_string();
            match reason {
                Some(reason) => Some(ArtifactStorage::Error { reason, message }),
                None => {
                    c.errors
                        .push("data.reason should be equal to one of the allowed values".into());
                    None
                }
            }
        }
        _ => None,
    };
    if matches!(storage_type.as_str(), "s3" | "object" | "reference") && content_type.is_none() {
        c.errors
            .push("data should have required property 'contentType'".into());
    }
    c.finish(CREATE_SCHEMA)?;
    let (Some(storage), Some(expires)) = (storage, expires) else {
        return Err(ApiError::validation(
            CREATE_SCHEMA,
            &["data is incomplete".into()],
        ));
    };
    let present = !matches!(storage, ArtifactStorage::Object { .. });
    Ok(Artifact {
        name: name.to_string(),
        storage,
        content_type: content_type.unwrap_or_else(|| "application/binary".into()),
        expires,
        present,
    })
}

/// HMAC over method, blob path and expiry: the signature of a blob URL.
fn blob_signature(st: &AppState, method: &str, path: &str, expires: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &st.url_key);
    let tag = ring::hmac::sign(&key, format!("{method}\n{path}\n{expires}").as_bytes());
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

/// Everything but RFC 3986's unreserved characters is escaped, so no client re-encodes it.
const BLOB_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a blob URL's signature covers: the decoded `<taskId>/<runId>/<name>`, so a client's
/// re-encoding of the URL cannot break it.
fn blob_canonical(task: &TaskId, run: u32, name: &str) -> String {
    format!("{task}/{run}/{name}")
}

/// Where the bytes live in the blob store: the name as one escaped path segment, so no name can
/// reach outside its run's directory.
fn blob_key(task: &TaskId, run: u32, name: &str) -> object_store::path::Path {
    let escaped = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    object_store::path::Path::from(format!("{task}/{run}/{escaped}"))
}

fn signed_blob_url(
    st: &AppState,
    method: &str,
    task: &TaskId,
    run: u32,
    name: &str,
    valid_ms: i64,
) -> String {
    let expires = Millis::now().plus(valid_ms).0;
    let sig = blob_signature(st, method, &blob_canonical(task, run, name), expires);
    let encoded = percent_encoding::utf8_percent_encode(name, BLOB_NAME);
    format!(
        "{}/blobs/{task}/{run}/{encoded}?expires={expires}&sig={sig}",
        st.public_url
    )
}

pub async fn create_artifact(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let payload = optional_body(&headers, &body);
    Call::new("createArtifact", json!({ "taskId": task_id, "runId": run_id, "name": name })).with_payload(&payload).run(async {
        let body = json_body(&headers, &body)?;
        let caller = auth.caller()?;
        caller.require(&ScopeExpr::scope(format!("queue:create-artifact:{task_id}/{run_id}")))?;
        let id = slug_param("taskId", &task_id)?;
        let run = run_param(&run_id)?;
        let artifact = parse_artifact(&body, &name)?;
        let cmd = QueueCommand::CreateArtifact { task_id: id, run_id: run, artifact };
        let stored = match st.engine.execute(actor(caller), cmd).await? {
            Outcome::Artifact(a) => a,
            other => return Err(ApiError::internal(format!("unexpected outcome {other:?}"))),
        };
        Ok(ok(match &stored.storage {
            ArtifactStorage::S3 { .. } => json!({
                "storageType": "s3",
                "contentType": stored.content_type,
                "expires": Millis::now().plus(45 * MINUTE).to_rfc3339(),
                "putUrl": signed_blob_url(&st, "PUT", &id, run, &name, 45 * MINUTE),
            }),
            ArtifactStorage::Object { upload_id, .. } => {
                let task = st.engine.view().task(&id)?.ok_or_else(|| ApiError::not_found("Task not found"))?;
                let r = &task.runs[run as usize];
                let object_name = format!("t/{id}/{run}/{name}");
                let expiry = stored.expires.min(Millis::now().plus(24 * 60 * MINUTE));
                let client = format!("artifact-upload/{id}/{run}/on/{}/{}", r.worker_group.clone().unwrap_or_default(), r.worker_id.clone().unwrap_or_default());
                json!({
                    "storageType": "object",
                    "name": object_name,
                    "projectId": task.definition.project_id,
                    "uploadId": upload_id.to_string(),
                    "expires": stored.expires.to_rfc3339(),
                    "credentials": credentials(&st, &client, &[format!("object:upload:{}:{object_name}", task.definition.project_id)], expiry),
                })
            }
            ArtifactStorage::Reference { .. } | ArtifactStorage::Link { .. } | ArtifactStorage::Error { .. } => {
                json!({ "storageType": stored.storage.type_str() })
            }
        }))
    }).await
}

pub async fn finish_artifact(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(
        "finishArtifact",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(async {
        let body = json_body(&headers, &body)?;
        let caller = auth.caller()?;
        caller.require(&ScopeExpr::scope(format!(
            "queue:create-artifact:{task_id}/{run_id}"
        )))?;
        let id = slug_param("taskId", &task_id)?;
        let run = run_param(&run_id)?;
        let upload_id = body
            .get("uploadId")
            .and_then(|u| u.as_str())
            .and_then(|u| u.parse::<Slug>().ok())
            .ok_or_else(|| {
                ApiError::validation(
                    "/schemas/queue/v1/finish-artifact-request.json#",
                    &["data.uploadId should match the slugid pattern".into()],
                )
            })?;
        st.engine
            .execute(
                actor(caller),
                QueueCommand::FinishArtifact {
                    task_id: id,
                    run_id: run,
                    name,
                    upload_id,
                },
            )
            .await?;
        Ok(no_content())
    })
    .await
}

/// Follows links from `name` on a run, checking `queue:get-artifact:<n>` for every hop.
fn resolve(
    st: &AppState,
    caller: &crate::hawk::Caller,
    task: &TaskId,
    run: u32,
    name: &str,
) -> Result<Artifact, ApiError> {
    let mut seen = Vec::new();
    let mut current = name.to_string();
    loop {
        caller.require(&ScopeExpr::scope(format!("queue:get-artifact:{current}")))?;
        if seen.contains(&current) {
            return Err(ApiError::input("Artifact leads to a link cycle"));
        }
        let a = st
            .engine
            .view()
            .artifact(task, run, &current)?
            .filter(|a| a.present)
            .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
        if a.expires < Millis::now() {
            return Err(ApiError::new(
                ErrorCode::ResourceExpired,
                "Artifact expired",
            ));
        }
        seen.push(current.clone());
        match &a.storage {
            ArtifactStorage::Link { target } => current = target.clone(),
            _ => return Ok(a),
        }
    }
}

fn with_storage_header(mut r: Response, storage: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(storage) {
        r.headers_mut()
            .insert("x-taskcluster-artifact-storage-type", v);
    }
    r
}

fn artifact_redirect(st: &AppState, task: &TaskId, run: u32, a: &Artifact) -> Response {
    let storage = a.storage.type_str();
    let r = match &a.storage {
        ArtifactStorage::Error { reason, message } => (
            StatusCode::FAILED_DEPENDENCY,
            axum::Json(json!({ "reason": reason.as_str(), "message": message })),
        )
            .into_response(),
        ArtifactStorage::Reference { url } => redirect(storage, url),
        ArtifactStorage::S3 { .. }
        | ArtifactStorage::Object { .. }
        | ArtifactStorage::Link { .. } => redirect(
            storage,
            &signed_blob_url(st, "GET", task, run, &a.name, 30 * MINUTE),
        ),
    };
    with_storage_header(r, storage)
}

fn redirect(storage: &str, url: &str) -> Response {
    let mut r = (
        StatusCode::SEE_OTHER,
        axum::Json(json!({ "storageType": storage, "url": url })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(url) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn artifact_content(st: &AppState, task: &TaskId, run: u32, a: &Artifact) -> Response {
    let storage = a.storage.type_str();
    let body = match &a.storage {
        ArtifactStorage::Error { reason, message } => {
            json!({ "storageType": "error", "reason": reason.as_str(), "message": message })
        }
        ArtifactStorage::Reference { url } => json!({ "storageType": "reference", "url": url }),
        ArtifactStorage::S3 { .. }
        | ArtifactStorage::Object { .. }
        | ArtifactStorage::Link { .. } => {
            json!({ "storageType": "s3", "url": signed_blob_url(st, "GET", task, run, &a.name, 30 * MINUTE) })
        }
    };
    with_storage_header(ok(body), storage)
}

fn latest_run(st: &AppState, id: &TaskId) -> Result<u32, ApiError> {
    let t = st
        .engine
        .view()
        .task(id)?
        .ok_or_else(|| ApiError::not_found("Task not found"))?;
    t.runs
        .len()
        .checked_sub(1)
        .map(|r| r as u32)
        .ok_or_else(|| ApiError::not_found("Task doesn't have any runs"))
}

async fn get_artifact_inner(
    st: &AppState,
    auth: &Auth,
    task_id: &str,
    run: Option<&str>,
    name: &str,
    content: bool,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    if run.is_none() {
        caller.require(&ScopeExpr::scope(format!("queue:get-artifact:{name}")))?;
    }
    let id = slug_param("taskId", task_id)?;
    let run = match run {
        Some(r) => run_param(r)?,
        None => latest_run(st, &id)?,
    };
    let a = resolve(st, caller, &id, run, name)?;
    Ok(if content {
        artifact_content(st, &id, run, &a)
    } else {
        artifact_redirect(st, &id, run, &a)
    })
}

pub async fn get_artifact(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "getArtifact",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(get_artifact_inner(
        &st,
        &auth,
        &task_id,
        Some(&run_id),
        &name,
        false,
    ))
    .await
}

pub async fn get_latest_artifact(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    Call::new(
        "getLatestArtifact",
        json!({ "taskId": task_id, "name": name }),
    )
    .run(get_artifact_inner(&st, &auth, &task_id, None, &name, false))
    .await
}

pub async fn artifact(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "artifact",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(get_artifact_inner(
        &st,
        &auth,
        &task_id,
        Some(&run_id),
        &name,
        true,
    ))
    .await
}

pub async fn latest_artifact(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    Call::new("latestArtifact", json!({ "taskId": task_id, "name": name }))
        .run(get_artifact_inner(&st, &auth, &task_id, None, &name, true))
        .await
}

async fn list_inner(
    st: &AppState,
    auth: &Auth,
    task_id: &str,
    run: Option<&str>,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    let scope = match run {
        Some(r) => format!("queue:list-artifacts:{task_id}:{r}"),
        None => format!("queue:list-artifacts:{task_id}"),
    };
    caller.require(&ScopeExpr::scope(scope))?;
    let id = slug_param("taskId", task_id)?;
    let q = query(uri, &["continuationToken", "limit"])?;
    let task = st
        .engine
        .view()
        .task(&id)?
        .ok_or_else(|| ApiError::not_found("Task not found"))?;
    let run = match run {
        Some(r) => run_param(r)?,
        None => latest_run(st, &id)?,
    };
    if run as usize >= task.runs.len() {
        return Err(ApiError::not_found("Run not found"));
    }
    let prefix = keys::artifact_prefix(&id, run);
    let after =
        decode_token(&q)?.map(|name| keys::artifact(&id, run, &String::from_utf8_lossy(&name)));
    let lim = limit(&q);
    let rows = st
        .engine
        .view()
        .scan(keys::CF_ARTIFACTS, &prefix, after.as_deref(), lim + 1)?;
    let mut out = Vec::new();
    let mut last = None;
    for (_, v) in rows.iter().take(lim) {
        let a: Artifact = taskledger_projections::QueueView::decode(v)?;
        last = Some(a.name.clone());
        out.push(artifact_info(&a));
    }
    let mut v = json!({ "artifacts": out });
    if rows.len() > lim {
        if let Some(l) = last {
            v["continuationToken"] = json!(encode_token(l.as_bytes()));
        }
    }
    Ok(ok(v))
}

pub async fn list_artifacts(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    Call::new(
        "listArtifacts",
        json!({ "taskId": task_id, "runId": run_id }),
    )
    .run(list_inner(&st, &auth, &task_id, Some(&run_id), &uri))
    .await
}

pub async fn list_latest_artifacts(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(task_id): Path<String>,
    uri: Uri,
) -> Response {
    Call::new("listLatestArtifacts", json!({ "taskId": task_id }))
        .run(list_inner(&st, &auth, &task_id, None, &uri))
        .await
}

async fn info_inner(
    st: &AppState,
    auth: &Auth,
    task_id: &str,
    run: Option<&str>,
    name: &str,
) -> Result<Response, ApiError> {
    let caller = auth.caller()?;
    let scope = match run {
        Some(r) => format!("queue:list-artifacts:{task_id}:{r}"),
        None => format!("queue:list-artifacts:{task_id}"),
    };
    caller.require(&ScopeExpr::scope(scope))?;
    let id = slug_param("taskId", task_id)?;
    let run = match run {
        Some(r) => run_param(r)?,
        None => latest_run(st, &id)?,
    };
    let a = st
        .engine
        .view()
        .artifact(&id, run, name)?
        .filter(|a| a.present)
        .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
    Ok(ok(artifact_info(&a)))
}

pub async fn artifact_info_route(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "artifactInfo",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(info_inner(&st, &auth, &task_id, Some(&run_id), &name))
    .await
}

pub async fn latest_artifact_info(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, name)): Path<(String, String)>,
) -> Response {
    Call::new(
        "latestArtifactInfo",
        json!({ "taskId": task_id, "name": name }),
    )
    .run(info_inner(&st, &auth, &task_id, None, &name))
    .await
}

// ---- signed blob URLs ----

fn check_signature(st: &AppState, method: &str, path: &str, uri: &Uri) -> Result<(), StatusCode> {
    let q: std::collections::HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let expires: i64 = q
        .get("expires")
        .and_then(|e| e.parse().ok())
        .ok_or(StatusCode::FORBIDDEN)?;
    let sig = q.get("sig").ok_or(StatusCode::FORBIDDEN)?;
    let tag = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| StatusCode::FORBIDDEN)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &st.url_key);
    let same = ring::hmac::verify(
        &key,
        format!("{method}\n{path}\n{expires}").as_bytes(),
        &tag,
    )
    .is_ok();
    if !same || expires < Millis::now().0 {
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(())
}

/// `/blobs/<taskId>/<runId>/<name>`: the canonical (decoded) path and its parts.
fn blob_target(uri: &Uri) -> Option<(String, TaskId, u32, String)> {
    let raw = uri.path().strip_prefix("/blobs/")?;
    let mut parts = raw.splitn(3, '/');
    let task: TaskId = parts.next()?.parse().ok()?;
    let run: u32 = parts.next()?.parse().ok()?;
    let name = percent_encoding::percent_decode_str(parts.next()?)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((blob_canonical(&task, run, &name), task, run, name))
}

/// Streams the request body into the blob store (no size cap beyond the disk: artifacts and
/// task logs can be large).
pub async fn put_blob(State(st): St, uri: Uri, body: axum::body::Body) -> Response {
    let Some((path, task, run, name)) = blob_target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(code) = check_signature(&st, "PUT", &path, &uri) {
        return code.into_response();
    }
    match write_blob(&st, &blob_key(&task, run, &name), body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "blob write failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn write_blob(
    st: &AppState,
    key: &object_store::path::Path,
    body: axum::body::Body,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let upload = st.blobs.as_ref().put_multipart(key).await?;
    let mut writer = object_store::WriteMultipart::new(upload);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                writer.wait_for_capacity(4).await?;
                writer.write(&bytes);
            }
            Err(e) => {
                let _ = writer.abort().await;
                return Err(anyhow::anyhow!("reading the upload: {e}"));
            }
        }
    }
    writer.finish().await?;
    Ok(())
}

pub async fn get_blob(State(st): St, uri: Uri) -> Response {
    let Some((path, task, run, name)) = blob_target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(code) = check_signature(&st, "GET", &path, &uri) {
        return code.into_response();
    }
    let content_type = st
        .engine
        .view()
        .artifact(&task, run, &name)
        .ok()
        .flatten()
        .map(|a| a.content_type)
        .unwrap_or_else(|| "application/octet-stream".into());
    match st.blobs.as_ref().get(&blob_key(&task, run, &name)).await {
        Ok(r) => match r.bytes().await {
            Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(object_store::Error::NotFound { .. }) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
