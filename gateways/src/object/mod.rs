//! The object service's HTTP API (`/api/object/v1`): uploads negotiated by `createUpload`
//! (`dataInline` or a signed `putUrl`), `finishUpload`, and downloads by `startDownload`
//! (`getUrl` with the object's hashes, or `simple`), `object` metadata and `download`.
//! The bytes live in the same local store as `s3` artifacts, under `objects/`, behind
//! signed `/objects/<name>` URLs (`stored.rs`, over `blobs`).
//!
//! Left out: the `uploadId`-used-by-another-name check and backends other than the local one
//! (every name and project goes to it).

mod stored;

pub use stored::{delete_bytes, get_object, object_key, object_url, put_object};

use stored::node_base64;

use crate::error::{ApiError, ErrorCode};
use crate::hawk::{actor, Auth, Caller};
use crate::queue::call::*;
use crate::AppState;
use crate::Mount;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use object_store::ObjectStoreExt;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use taskledger_core::object::{self, upload_digest, Object, ObjectCommand};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::{Millis, HOUR, MINUTE};

type St = State<Arc<AppState>>;

const CREATE_UPLOAD_SCHEMA: &str = "/schemas/object/v1/create-upload-request.json#";
const FINISH_UPLOAD_SCHEMA: &str = "/schemas/object/v1/finish-upload-request.json#";
const DOWNLOAD_SCHEMA: &str = "/schemas/object/v1/download-object-request.json#";
pub(crate) const NAME_RE: &str = "^[\\x20-\\x7e]+$";
const PROJECT_RE: &str = "^([a-zA-Z0-9._/-]*)$";
/// Largest base64 `objectData` a `dataInline` proposal may carry (about 8 KiB of bytes).
const INLINE_MAX: usize = 10926;
/// How long a `putUrl` may be used.
const PUT_URL_VALID: i64 = 45 * MINUTE;
/// How long a download URL may be used.
const GET_URL_VALID: i64 = HOUR;

/// Routes under `/api/object/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route("/upload/{*name}", put(create_upload))
        .route("/finish-upload/{*name}", post(finish_upload))
        .route("/start-download/{*name}", put(start_download))
        .route("/metadata/{*name}", get(metadata))
        .route("/download/{*name}", get(download))
}

/// A name as the object and artifact routes take it: printable ASCII, not empty.
pub(crate) fn name_param(name: &str) -> Result<(), ApiError> {
    if !name.is_empty() && name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::bad_param("name", name, NAME_RE))
    }
}

fn invalid(schema: &str, error: impl Into<String>) -> ApiError {
    ApiError::validation(schema, &[error.into()])
}

/// An object's `{..}` member with only `allowed` keys, all of `required` present; `parent`
/// is the object's own path (`data`, `data/proposedUploadMethods`).
fn member<'a>(
    obj: &'a Map<String, Value>,
    (parent, key): (&str, &str),
    schema: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let path = format!("{parent}/{key}");
    let inner = v
        .as_object()
        .ok_or_else(|| invalid(schema, format!("{path} must be object")))?;
    for k in inner.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(invalid(
                schema,
                format!(
                    "{path} must NOT have additional properties: {}",
                    Value::from(k.as_str())
                ),
            ));
        }
    }
    for k in required {
        if !inner.contains_key(*k) {
            return Err(invalid(
                schema,
                format!("{path} must have required property '{k}'"),
            ));
        }
    }
    Ok(Some(inner))
}

fn project_id(obj: &Map<String, Value>, schema: &str) -> Result<String, ApiError> {
    match obj.get("projectId").and_then(Value::as_str) {
        Some(p)
            if (1..=500).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b)) =>
        {
            Ok(p.to_string())
        }
        _ => Err(invalid(
            schema,
            format!("data/projectId must match pattern \"{PROJECT_RE}\" (1 to 500 characters)"),
        )),
    }
}

fn upload_id(obj: &Map<String, Value>, schema: &str) -> Result<String, ApiError> {
    match obj.get("uploadId").and_then(Value::as_str) {
        Some(u) if u.parse::<taskledger_core::ids::Slug>().is_ok() => Ok(u.to_string()),
        _ => Err(invalid(
            schema,
            format!("data/uploadId must match pattern \"{SLUGID_RE}\""),
        )),
    }
}

fn hashes(obj: &Map<String, Value>, schema: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let Some(v) = obj.get("hashes") else {
        return Ok(BTreeMap::new());
    };
    let map = v
        .as_object()
        .ok_or_else(|| invalid(schema, "data/hashes must be object"))?;
    map.iter()
        .map(|(k, v)| {
            let s = v
                .as_str()
                .ok_or_else(|| invalid(schema, format!("data/hashes/{k} must be string")))?;
            // the schema's patterns for the algorithms it names (checked before any scope)
            let len = match k.as_str() {
                "sha256" => Some(64),
                "sha512" => Some(128),
                _ => None,
            };
            if let Some(len) = len {
                let ok = s.len() == len
                    && s.bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
                if !ok {
                    return Err(invalid(
                        schema,
                        format!("data/hashes/{k} must match pattern \"^[a-z0-9]{{{len}}}$\""),
                    ));
                }
            }
            Ok((k.clone(), s.to_string()))
        })
        .collect()
}

fn content_type(m: &Map<String, Value>, key: &str, schema: &str) -> Result<String, ApiError> {
    let content_type = m
        .get("contentType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            invalid(
                schema,
                format!("data/proposedUploadMethods/{key}/contentType must be string"),
            )
        })?;
    // it becomes a Content-Type header of every download: upstream's backend parses it and
    // refuses what no header can carry
    if !content_type.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::input(format!(
            "Invalid contentType {}",
            Value::from(content_type.as_str())
        )));
    }
    Ok(content_type)
}

/// The upload method `createUpload` picked: inline bytes (already decoded) or a PUT URL.
enum Method {
    Inline { content_type: String, data: Vec<u8> },
    Put { content_type: String, length: u64 },
    Neither,
}

fn proposed_method(body: &Map<String, Value>) -> Result<Method, ApiError> {
    let schema = CREATE_UPLOAD_SCHEMA;
    let Some(proposed) = member(
        body,
        ("data", "proposedUploadMethods"),
        schema,
        &["dataInline", "putUrl"],
        &[],
    )?
    else {
        return Ok(Method::Neither);
    };
    let inline = member(
        proposed,
        ("data/proposedUploadMethods", "dataInline"),
        schema,
        &["contentType", "objectData"],
        &["contentType", "objectData"],
    )?;
    let put = member(
        proposed,
        ("data/proposedUploadMethods", "putUrl"),
        schema,
        &["contentType", "contentLength"],
        &["contentType", "contentLength"],
    )?;
    // the schema checks both when both are proposed, though only one is used
    let put_method = match put {
        Some(m) => Some((
            content_type(m, "putUrl", schema)?,
            m.get("contentLength")
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    invalid(
                        schema,
                        "data/proposedUploadMethods/putUrl/contentLength must be a non-negative integer",
                    )
                })?,
        )),
        None => None,
    };
    if let Some(m) = inline {
        let content_type = content_type(m, "dataInline", schema)?;
        let encoded = m
            .get("objectData")
            .and_then(Value::as_str)
            .filter(|d| d.len() <= INLINE_MAX)
            .ok_or_else(|| {
                invalid(
                    schema,
                    format!("data/proposedUploadMethods/dataInline/objectData must be a string of at most {INLINE_MAX} characters"),
                )
            })?;
        let data = node_base64(encoded);
        return Ok(Method::Inline { content_type, data });
    }
    if let Some((content_type, length)) = put_method {
        return Ok(Method::Put {
            content_type,
            length,
        });
    }
    Ok(Method::Neither)
}

/// What createUpload and finishUpload bodies share, checked.
struct UploadRequest {
    obj: Map<String, Value>,
    project_id: String,
    upload_id: String,
    hashes: BTreeMap<String, String>,
}

/// A createUpload or finishUpload body, checked in upstream's order: credentials, the name's
/// pattern, the query string, then the body's schema (the scope, from the body, comes later:
/// `UploadRequest::authorize`).
fn upload_request(
    (auth, uri, name): (&Auth, &Uri, &str),
    schema: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<UploadRequest, ApiError> {
    let body = auth.body()?;
    auth.caller()?;
    name_param(name)?;
    no_query(uri)?;
    let body = body.input()?;
    let obj = crate::auth::check_keys(&body, schema, allowed, required)?;
    Ok(UploadRequest {
        project_id: project_id(&obj, schema)?,
        upload_id: upload_id(&obj, schema)?,
        hashes: hashes(&obj, schema)?,
        obj,
    })
}

impl UploadRequest {
    /// The caller, who needs `object:upload:<projectId>:<name>`.
    fn authorize<'a>(&self, auth: &'a Auth, name: &str) -> Result<&'a Caller, ApiError> {
        let caller = auth.caller()?;
        let project_id = &self.project_id;
        caller.require(&ScopeExpr::scope(format!(
            "object:upload:{project_id}:{name}"
        )))?;
        Ok(caller)
    }
}

pub async fn create_upload(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("createUpload", json!({ "name": name }))
        .with_scrubbed_body(&headers, &body, without_capabilities)
        .run(async {
            let schema = CREATE_UPLOAD_SCHEMA;
            let allowed = [
                "projectId",
                "uploadId",
                "expires",
                "proposedUploadMethods",
                "hashes",
            ];
            let required = ["projectId", "uploadId", "expires", "proposedUploadMethods"];
            let req = upload_request((&auth, &uri, &name), schema, &allowed, &required)?;
            let expires_text = req.obj.get("expires").and_then(Value::as_str).unwrap_or("");
            let expires = Millis::parse_rfc3339(expires_text)
                .ok_or_else(|| invalid(schema, "data/expires must match format \"date-time\""))?;
            let method = proposed_method(&req.obj)?;
            let caller = req.authorize(&auth, &name)?;
            let UploadRequest {
                project_id,
                upload_id,
                hashes,
                ..
            } = req;
            let content_type = match &method {
                Method::Inline { content_type, .. } | Method::Put { content_type, .. } => {
                    Some(content_type.clone())
                }
                Method::Neither => None,
            };
            let cmd = ObjectCommand::CreateUpload {
                name: name.clone(),
                project_id: project_id.clone(),
                upload_id: upload_id.clone(),
                expires,
                hashes,
                content_type,
            };
            st.object.execute(actor(caller), cmd).await?;
            let upload_method = match method {
                Method::Inline { data, .. } => {
                    st.blobs
                        .as_ref()
                        .put(&object_key(&name, &upload_digest(&upload_id)), data.into())
                        .await
                        .map_err(ApiError::internal)?;
                    json!({ "dataInline": true })
                }
                Method::Put {
                    content_type,
                    length,
                } => json!({
                    "putUrl": {
                        "url": object_url(&st, "PUT", &name, PUT_URL_VALID),
                        "expires": Millis::now().plus(PUT_URL_VALID).to_rfc3339(),
                        "headers": {
                            "Content-Type": content_type,
                            "Content-Length": length.to_string(),
                            // the upload method's rule: the bytes are sent as they are
                            "Content-Encoding": "identity",
                        },
                    }
                }),
                Method::Neither => json!({}),
            };
            Ok(ok(json!({
                "projectId": project_id,
                "uploadId": upload_id,
                "expires": expires_text,
                "uploadMethod": upload_method,
            })))
        })
        .await
}

pub async fn finish_upload(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("finishUpload", json!({ "name": name }))
        .with_scrubbed_body(&headers, &body, without_capabilities)
        .run(async {
            let schema = FINISH_UPLOAD_SCHEMA;
            let allowed = ["projectId", "uploadId", "hashes"];
            let req = upload_request((&auth, &uri, &name), schema, &allowed, &allowed[..2])?;
            let caller = req.authorize(&auth, &name)?;
            let cmd = ObjectCommand::FinishUpload {
                name: name.clone(),
                project_id: req.project_id,
                upload_id: req.upload_id,
                hashes: req.hashes,
            };
            // an upload that would finish now must have its bytes in place (Taskcluster's
            // refusals, decided the same way, come first)
            let stored = st.object.view().get(&name)?;
            object::decide(stored.as_ref(), &cmd, Millis::now())?;
            if let Some(o) = stored.filter(|o| o.finished.is_none()) {
                match st
                    .blobs
                    .as_ref()
                    .head(&object_key(&name, &o.upload_digest))
                    .await
                {
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => {
                        return Err(ApiError::input(
                            "The object's data was never uploaded; upload it before finishing",
                        ))
                    }
                    Err(e) => return Err(ApiError::internal(e)),
                }
            }
            st.object.execute(actor(caller), cmd).await?;
            Ok(ok(json!({})))
        })
        .await
}

/// The caller may download `name` (a scope the URL fills, so checked before the URL's
/// patterns), and the query string is empty.
fn may_download(auth: &Auth, uri: &Uri, name: &str) -> Result<(), ApiError> {
    auth.caller()?
        .require(&ScopeExpr::scope(format!("object:download:{name}")))?;
    name_param(name)?;
    no_query(uri)
}

/// `name`, once its upload is finished, or 404 (upstream's words).
fn downloadable(st: &AppState, name: &str) -> Result<Object, ApiError> {
    st.object
        .view()
        .get(name)?
        .filter(|o| o.finished.is_some())
        .ok_or_else(|| ApiError::not_found(format!("Object \"{name}\" not found")))
}

pub async fn start_download(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("startDownload", json!({ "name": name }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            may_download(&auth, &uri, &name)?;
            let body = body.input()?;
            let schema = DOWNLOAD_SCHEMA;
            let obj = crate::auth::check_keys(
                &body,
                schema,
                &["acceptDownloadMethods"],
                &["acceptDownloadMethods"],
            )?;
            let accept = member(
                &obj,
                ("data", "acceptDownloadMethods"),
                schema,
                &["simple", "getUrl"],
                &[],
            )?
            .cloned()
            .unwrap_or_default();
            for (k, v) in &accept {
                if v != &Value::Bool(true) {
                    return Err(invalid(
                        schema,
                        format!("data/acceptDownloadMethods/{k} must be equal to constant true"),
                    ));
                }
            }
            let object = downloadable(&st, &name)?;
            let url = object_url(&st, "GET", &name, GET_URL_VALID);
            if accept.contains_key("getUrl") {
                Ok(ok(json!({
                    "method": "getUrl",
                    "url": url,
                    "expires": Millis::now().plus(GET_URL_VALID).to_rfc3339(),
                    "hashes": object.hashes,
                })))
            } else if accept.contains_key("simple") {
                Ok(ok(json!({ "method": "simple", "url": url })))
            } else {
                Err(ApiError::new(
                    ErrorCode::NoMatchingMethod,
                    "Object supports methods simple, getUrl",
                ))
            }
        })
        .await
}

pub async fn metadata(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Response {
    Call::new("object", json!({ "name": name }))
        .run(async {
            may_download(&auth, &uri, &name)?;
            let object = downloadable(&st, &name)?;
            Ok(ok(json!({
                "projectId": object.project_id,
                "expires": object.expires.to_rfc3339(),
                "hashes": object.hashes,
            })))
        })
        .await
}

pub async fn download(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Response {
    Call::new("download", json!({ "name": name }))
        .run(async {
            may_download(&auth, &uri, &name)?;
            downloadable(&st, &name)?;
            let url = object_url(&st, "GET", &name, GET_URL_VALID);
            Ok((StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response())
        })
        .await
}

/// A createUpload or finishUpload body as an error echoes it: the upload id (whoever holds it
/// may finish the upload) and inline object data left out.
fn without_capabilities(payload: &Value) -> Value {
    let mut p = payload.clone();
    omit(&mut p, &["uploadId"]);
    omit(
        &mut p,
        &["proposedUploadMethods", "dataInline", "objectData"],
    );
    p
}
