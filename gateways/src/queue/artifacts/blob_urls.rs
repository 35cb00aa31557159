//! The signed blob URLs taskledger serves itself for `s3`-type artifact bytes: their keys in
//! the blob store, the upload and download handlers, and the bytes' deletion at expiry.

use crate::{blobs, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use object_store::ObjectStoreExt;
use std::sync::Arc;
use taskledger_core::ids::TaskId;
use taskledger_projections::keys::Expiring;

type St = State<Arc<AppState>>;

/// Deletes the stored (`s3`) bytes of what expired: a task's (every run) or one artifact's; a
/// failure is logged. (`object` artifacts' bytes go with their object, at its own expiry.)
pub async fn delete_expired_bytes(blobs: &dyn object_store::ObjectStore, what: &Expiring) {
    use futures::StreamExt;
    let locations: Vec<object_store::Result<object_store::path::Path>> = match what {
        Expiring::Task(task) => {
            let prefix = object_store::path::Path::from(task.to_string());
            blobs
                .list(Some(&prefix))
                .map(|m| m.map(|m| m.location))
                .collect()
                .await
        }
        Expiring::Artifact(task, run, name) => vec![
            Ok(blob_key(task, *run, name)),
            Ok(encoding_key(task, *run, name)),
        ],
        Expiring::TaskGroup(_) => vec![],
    };
    for location in locations {
        let result = match location {
            Ok(l) => blobs.delete(&l).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(?what, error = %e, "expired bytes were not deleted"),
        }
    }
}

/// What a blob URL's signature covers: the decoded `<taskId>/<runId>/<name>`, so a client's
/// re-encoding of the URL cannot break it.
fn blob_canonical(task: &TaskId, run: u32, name: &str) -> String {
    format!("{task}/{run}/{name}")
}

/// Where the bytes live in the blob store: the name as one escaped path segment, so no name can
/// reach outside its run's directory.
pub(super) fn blob_key(task: &TaskId, run: u32, name: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{task}/{run}/{}", blobs::store_segment(name)))
}

pub(super) fn signed_blob_url(
    st: &AppState,
    method: &str,
    task: &TaskId,
    run: u32,
    name: &str,
    valid_ms: i64,
) -> String {
    let path = format!("/blobs/{task}/{run}/{}", blobs::segment(name));
    blobs::signed_url(
        st,
        method,
        &blob_canonical(task, run, name),
        &path,
        valid_ms,
    )
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

/// Where an `s3` artifact's `Content-Encoding` is kept, beside its bytes: under
/// `<taskId>/<runId>.encoding/`, which no run's directory can be, and which goes with the
/// task's bytes when the task expires.
fn encoding_key(task: &TaskId, run: u32, name: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!(
        "{task}/{run}.encoding/{}",
        blobs::store_segment(name)
    ))
}

/// Streams the request body into the blob store (no size cap beyond the disk: artifacts and
/// task logs can be large). A `Content-Encoding` the uploader sent (generic-worker gzips its
/// logs) is kept and sent back with the bytes, as S3 does.
pub async fn put_blob(
    State(st): St,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some((path, task, run, name)) = blob_target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(code) = blobs::check_signature(&st, "PUT", &path, &uri) {
        return code.into_response();
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|e| Bytes::copy_from_slice(e.as_bytes()));
    if let Err(e) = blobs::write(&st, &blob_key(&task, run, &name), body).await {
        return blobs::written(Err(e));
    }
    let key = encoding_key(&task, run, &name);
    let kept = match encoding {
        Some(e) => st.blobs.as_ref().put(&key, e.into()).await.map(drop),
        // a second upload without one leaves none
        None => match st.blobs.as_ref().delete(&key).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        },
    };
    blobs::written(kept.map_err(anyhow::Error::from))
}

pub async fn get_blob(State(st): St, uri: Uri, headers: HeaderMap) -> Response {
    let Some((path, task, run, name)) = blob_target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(code) = blobs::check_signature(&st, "GET", &path, &uri) {
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
    // the stored encoding, or none; bytes whose encoding cannot be read are not served
    // unlabelled
    let stored = st
        .blobs
        .as_ref()
        .get(&encoding_key(&task, run, &name))
        .await;
    let encoding = match stored {
        Ok(stored) => match stored.bytes().await {
            Ok(e) => HeaderValue::from_bytes(&e).ok(),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(object_store::Error::NotFound { .. }) => None,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let range = blobs::byte_range(&headers);
    let key = blob_key(&task, run, &name);
    let mut response = blobs::serve(&st, &key, content_type, range).await;
    if let Some(encoding) = encoding.filter(|_| response.status().is_success()) {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, encoding);
    }
    response
}
