//! Artifact endpoints (the reads in `read.rs`), and the signed blob URLs taskledger serves
//! itself for `s3`-type bytes (`blob_urls.rs`).

mod blob_urls;
mod read;

pub use blob_urls::{delete_expired_bytes, get_blob, put_blob};
pub use read::*;

use blob_urls::signed_blob_url;

use super::call::*;
use super::json::{artifact_info, is_uri, Checks};
use crate::error::{ApiError, ErrorCode};
use crate::hawk::actor;
use crate::hawk::Auth;
use crate::{blobs, AppState};
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::ids::{Slug, TaskId};
use taskledger_core::object::{ObjectCommand, OBJECT_TOPIC};
use taskledger_core::queue::{
    object_upload_id, Artifact, ArtifactStorage, ErrorReason, QueueError,
};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::{Millis, MINUTE};
use taskledger_projections::keys;
use taskledger_projections::object_view::OBJECT_PARTITION;
use taskledger_projections::{EngineError, ObjectEngineError, Outcome, QueueCommand};

type St = State<Arc<AppState>>;

const CREATE_SCHEMA: &str = "/schemas/queue/v1/post-artifact-request.json#";

/// An artifact name as Taskcluster's routes take it: an object name (printable ASCII) of at
/// most 1024 characters.
fn name_param(name: &str) -> Result<(), ApiError> {
    if name.len() > MAX_NAME {
        return Err(ApiError::bad_param("name", name, crate::object::NAME_RE));
    }
    crate::object::name_param(name)
}

const MAX_NAME: usize = 1024;

/// An error artifact's message: at most this many characters (the request schema's limit).
const MAX_ERROR_MESSAGE: usize = 4096;

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
    // served back as the Content-Type header of downloads: at most 255 characters (the
    // schema's limit), and none a header cannot carry
    if let Some(t) = &content_type {
        if t.chars().count() > 255 {
            c.errors
                .push("data.contentType should NOT be longer than 255 characters".into());
        } else if !t.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            c.errors
                .push("data.contentType should match pattern \"^[\\x20-\\x7e]*$\"".into());
        }
    }
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
            c.errors.push(format!(
                "data should NOT have additional properties: {}",
                Value::from(k.as_str())
            ));
        }
    }
    let content_length = match obj.get("contentLength") {
        None => None,
        // (`5.0` is the integer 5 to JavaScript)
        Some(v) => {
            let float = v.as_f64();
            let length = v.as_u64().or_else(|| {
                float
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            });
            if length.is_none() {
                c.errors.push(match float {
                    Some(f) if f.fract() == 0.0 && f < 0.0 => {
                        "data.contentLength should be >= 0".into()
                    }
                    // past what a byte count here can hold
                    Some(f) if f.fract() == 0.0 => {
                        format!("data.contentLength should be <= {}", u64::MAX)
                    }
                    Some(_) | None => "data.contentLength should be integer".into(),
                });
            }
            length
        }
    };
    let storage = match storage_type.as_str() {
        "s3" => Some(ArtifactStorage::S3 { content_length }),
        "object" => Some(ArtifactStorage::Object {
            // derived, not stored (`blobs::derived_upload_id`)
            upload_id: Slug::NIL,
            content_length,
        }),
        "reference" => c.string(obj, "url", true).and_then(|u| {
            if is_uri(u) {
                Some(ArtifactStorage::Reference { url: u.to_string() })
            } else {
                c.errors.push("data.url should match format \"uri\"".into());
                None
            }
        }),
        "link" => c
            .string(obj, "artifact", true)
            .map(|a| ArtifactStorage::Link {
                target: a.to_string(),
            }),
        "error" => {
            let reason = c.string(obj, "reason", true).and_then(ErrorReason::parse);
            let message = c.string(obj, "message", true).unwrap_or("").to_string();
            if message.chars().count() > MAX_ERROR_MESSAGE {
                c.errors.push(format!(
                    "data.message should NOT be longer than {MAX_ERROR_MESSAGE} characters"
                ));
            }
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

/// The object holding an `object` artifact's bytes: `t/<taskId>/<runId>/<name>`.
fn object_name(task: &TaskId, run: u32, name: &str) -> String {
    format!("t/{task}/{run}/{name}")
}

pub async fn create_artifact(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = json!({ "taskId": task_id, "runId": run_id, "name": name });
    let call = Call::new("createArtifact", params).with_body(&headers, &body);
    call.run(async {
        let body = auth.body()?;
        let caller = auth.caller()?;
        caller.require(&ScopeExpr::scope(format!("queue:create-artifact:{task_id}/{run_id}")))?;
        let id = slug_param("taskId", &task_id)?;
        let run = run_param(&run_id)?;
        name_param(&name)?;
        no_query(&uri)?;
        let body = body.input()?;
        let artifact = parse_artifact(&body, &name)?;
        let cmd = QueueCommand::CreateArtifact { task_id: id, run_id: run, artifact };
        let stored = match st.engine.execute(actor(caller), cmd).await? {
            Outcome::Artifact(a) => a,
            other @ (Outcome::Task(_)
            | Outcome::Claims(_)
            | Outcome::Group(_)
            | Outcome::Done) => {
                return Err(ApiError::internal(format!("unexpected outcome: {}", other.kind())))
            }
        };
        Ok(ok(match &stored.storage {
            ArtifactStorage::S3 { .. } => json!({
                "storageType": "s3",
                "contentType": stored.content_type,
                "expires": Millis::now().plus(45 * MINUTE).to_rfc3339(),
                "putUrl": signed_blob_url(&st, "PUT", &id, run, &name, 45 * MINUTE),
            }),
            ArtifactStorage::Object { upload_id, .. } => {
                // an artifact logged before ids were derived keeps the id it was given
                let upload_id = object_upload_id(*upload_id, || {
                    blobs::derived_upload_id(&st, &id, run, &name)
                });
                let task = st.engine.view().task(&id)?.ok_or_else(|| ApiError::not_found("Task not found"))?;
                let r = task.runs.get(run as usize).ok_or_else(|| ApiError::not_found("Run not found"))?;
                let object_name = object_name(&id, run, &name);
                // the queue starts the upload (locking in project, id and expiry), as upstream;
                // where another node writes the object service (a cluster) the worker's own
                // createUpload, with the same id, starts it instead
                if st.object.view().get(&object_name)?.is_none() {
                    let start = ObjectCommand::CreateUpload {
                        name: object_name.clone(),
                        project_id: task.definition.project_id.clone(),
                        upload_id: upload_id.to_string(),
                        expires: stored.expires,
                        hashes: Default::default(),
                        content_type: None,
                    };
                    match st.object.execute(actor(caller), start).await {
                        Err(ObjectEngineError::Unavailable(e)) => {
                            tracing::info!(%object_name, error = %e, "object upload not started here")
                        }
                        other => {
                            other?;
                        }
                    }
                }
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
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((task_id, run_id, name)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "finishArtifact",
        json!({ "taskId": task_id, "runId": run_id, "name": name }),
    )
    .run(async {
        let body = auth.body()?;
        let caller = auth.caller()?;
        caller.require(&ScopeExpr::scope(format!(
            "queue:create-artifact:{task_id}/{run_id}"
        )))?;
        let id = slug_param("taskId", &task_id)?;
        let run = run_param(&run_id)?;
        name_param(&name)?;
        no_query(&uri)?;
        let body = body.input()?;
        let upload_id = object_with_only(
            &body,
            "/schemas/queue/v1/finish-artifact-request.json#",
            "uploadId",
        )?
        .get("uploadId")
        .and_then(|u| u.as_str())
        .and_then(|u| u.parse::<Slug>().ok())
        .ok_or_else(|| {
            ApiError::validation(
                "/schemas/queue/v1/finish-artifact-request.json#",
                &["data.uploadId should match the slugid pattern".into()],
            )
        })?;
        let derived_upload_id = blobs::derived_upload_id(&st, &id, run, &name);
        // an object artifact becomes present only once its upload finished; as upstream, the
        // upload id is compared before the object is looked for
        if let Some(Artifact {
            storage:
                ArtifactStorage::Object {
                    upload_id: expected,
                    ..
                },
            present: false,
            ..
        }) = st.engine.view().artifact(&id, run, &name)?
        {
            if object_upload_id(expected, || derived_upload_id) != upload_id {
                return Err(ApiError::input(UPLOAD_ID_MISMATCH));
            }
            if !upload_finished(&st, &object_name(&id, run, &name)).await? {
                return Err(ApiError::input(
                    "Object storing artifact data does not exist",
                ));
            }
        }
        let not_found =
            format!("Artifact with taskId `{id}`, runId {run}, name `{name}` not found");
        st.engine
            .execute(
                actor(caller),
                QueueCommand::FinishArtifact {
                    task_id: id,
                    run_id: run,
                    name,
                    upload_id,
                    derived_upload_id,
                },
            )
            .await
            .map_err(|e| {
                // upstream looks up the artifact alone: no task, run or artifact is one 404
                let missing = matches!(
                    e,
                    EngineError::Domain(
                        QueueError::ArtifactNotFound
                            | QueueError::TaskNotFound(_)
                            | QueueError::RunNotFound { .. },
                    )
                );
                if missing {
                    ApiError::not_found(not_found)
                } else {
                    e.into()
                }
            })?;
        Ok(no_content())
    })
    .await
}

/// finishArtifact's answer to an upload id that is not the artifact's (upstream's words).
pub const UPLOAD_ID_MISMATCH: &str = "given uploadId does not match that for the artifact";

/// Whether the object's upload finished. Where another node writes the object service (a
/// cluster), this node's object projection follows the log a moment behind the writer, which
/// may have finished the upload just before the worker asked here: an upload not seen
/// finished is looked up again once the projection caught up with the log's end.
async fn upload_finished(st: &AppState, object_name: &str) -> Result<bool, ApiError> {
    let finished = || -> Result<bool, ApiError> {
        Ok(st
            .object
            .view()
            .get(object_name)?
            .is_some_and(|o| o.finished.is_some()))
    };
    let role = st.object.role();
    if finished()? {
        return Ok(true);
    }
    if crate::follow_to_end(st, OBJECT_TOPIC, OBJECT_PARTITION, role).await {
        return finished();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(body: Value) -> String {
        match parse_artifact(&body, "public/a") {
            Ok(a) => panic!("{body} was taken: {a:?}"),
            Err(e) => format!("{e:?}"),
        }
    }

    /// The request schema's checks upstream makes and a lenient parser would skip.
    #[test]
    fn the_request_schema_bounds_lengths_and_urls() {
        let expires = "2030-01-01T00:00:00.000Z";
        let s3 = |length: Value| {
            json!({"storageType": "s3", "contentType": "text/plain", "expires": expires,
                   "contentLength": length})
        };
        assert!(refused(s3(json!(-1))).contains("contentLength should be >= 0"));
        assert!(refused(s3(json!(1.5))).contains("contentLength should be integer"));
        assert!(refused(s3(json!(1e20))).contains("contentLength should be <="));
        assert!(refused(s3(json!("5"))).contains("contentLength should be integer"));
        let taken = parse_artifact(&s3(json!(5.0)), "public/a").unwrap();
        assert_eq!(
            taken.storage,
            ArtifactStorage::S3 {
                content_length: Some(5)
            }
        );

        let error = |message: String| {
            json!({"storageType": "error", "reason": "file-missing-on-worker",
                   "message": message, "expires": expires})
        };
        assert!(parse_artifact(&error("é".repeat(4096)), "public/a").is_ok());
        assert!(refused(error("x".repeat(4097))).contains("4096 characters"));

        let reference = |url: &str| {
            json!({"storageType": "reference", "contentType": "text/plain", "url": url,
                   "expires": expires})
        };
        for good in [
            "https://example.com/x",
            "s3+http://b/k",
            "urn:isbn:1",
            "https://a/b%20c?d=e&f=[1]#g",
        ] {
            assert!(
                parse_artifact(&reference(good), "public/a").is_ok(),
                "{good}"
            );
        }
        for bad in [
            "x",
            "example.com/x",
            "1http://a",
            "https://a b",
            ":x",
            "https://a/<b>",
            "https://a/%zz",
            "https://a/%4",
            "https://a/é",
        ] {
            assert!(
                refused(reference(bad)).contains("format \\\"uri\\\""),
                "{bad}"
            );
        }
    }
}
