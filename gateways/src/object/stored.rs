//! An object's bytes: their key in the blob store (one per upload), the signed `/objects/<name>`
//! URLs and their PUT and GET handlers, the bytes' deletion at expiry, and inline
//! `objectData` read as upstream reads it.

use crate::blobs;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine as _};
use object_store::ObjectStoreExt;
use std::sync::Arc;

type St = State<Arc<AppState>>;

/// Where the bytes of one upload of an object live in the store: per upload (its id's
/// digest), so a later object of the same name never finds, serves or loses an earlier one's.
pub fn object_key(name: &str, upload_digest: &[u8; 32]) -> object_store::path::Path {
    let upload = taskledger_projections::audit::hex(upload_digest);
    object_store::path::Path::from(format!("objects/{}/{upload}", blobs::store_segment(name)))
}

/// Deletes an expired object's bytes (already gone is fine; a failure is logged).
pub async fn delete_bytes(
    blobs: &dyn object_store::ObjectStore,
    name: &str,
    upload_digest: &[u8; 32],
) {
    match blobs.delete(&object_key(name, upload_digest)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(%name, error = %e, "an expired object's bytes were not deleted"),
    }
}

/// What an object URL's signature covers.
fn canonical(name: &str) -> String {
    format!("object/{name}")
}

/// A signed `/objects/<name>` URL for `method`.
pub fn object_url(st: &AppState, method: &str, name: &str, valid_ms: i64) -> String {
    let path = format!("/objects/{}", blobs::segment(name));
    blobs::signed_url(st, method, &canonical(name), &path, valid_ms)
}

/// The decoded object name of an `/objects/<name>` URL.
fn object_target(uri: &Uri) -> Option<String> {
    let raw = uri.path().strip_prefix("/objects/")?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|n| n.into_owned())
}

/// PUT of a `putUrl`: only while the upload is unfinished.
pub async fn put_object(State(st): St, uri: Uri, body: axum::body::Body) -> Response {
    let Some(name) = object_target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(code) = blobs::check_signature(&st, "PUT", &canonical(&name), &uri) {
        return code.into_response();
    }
    let digest = match st.object.view().get(&name) {
        Ok(Some(o)) if o.finished.is_none() => o.upload_digest,
        Ok(Some(_)) => return StatusCode::CONFLICT.into_response(),
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    blobs::written(blobs::write(&st, &object_key(&name, &digest), body).await)
}

/// GET of a download URL: the bytes with the content type given at upload.
pub async fn get_object(State(st): St, uri: Uri, headers: HeaderMap) -> Response {
    let Some(name) = object_target(&uri) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(code) = blobs::check_signature(&st, "GET", &canonical(&name), &uri) {
        return code.into_response();
    }
    let (content_type, digest) = match st.object.view().get(&name) {
        Ok(Some(o)) => (
            o.content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            o.upload_digest,
        ),
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let range = blobs::byte_range(&headers);
    blobs::serve(&st, &object_key(&name, &digest), content_type, range).await
}

/// Base64 as upstream's backend reads `objectData` (Node's `Buffer.from(text, 'base64')`):
/// either alphabet, any other character skipped, decoding ending at the first `=`, trailing
/// bits ignored and a last lone character dropped. It never fails.
pub(super) fn node_base64(text: &str) -> Vec<u8> {
    let digits: String = text
        .bytes()
        .take_while(|b| *b != b'=')
        .filter_map(|b| match b {
            b'-' => Some('+'),
            b'_' => Some('/'),
            b'+' | b'/' => Some(b as char),
            b if b.is_ascii_alphanumeric() => Some(b as char),
            _ => None,
        })
        .collect();
    let usable = match digits.len() % 4 {
        1 => &digits[..digits.len() - 1],
        _ => &digits[..],
    };
    let engine = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(usable).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::node_base64;

    /// Padded, unpadded, URL-safe, wrapped or with stray characters: as Node reads them.
    #[test]
    fn object_data_decodes_as_node_reads_base64() {
        for (text, bytes) in [
            ("aGk=", &b"hi"[..]),
            ("aGk", b"hi"),
            ("aG\nk=", b"hi"),
            ("-_8=", &[0xfb, 0xff]),
            ("+/8=", &[0xfb, 0xff]),
            ("aGk=aGk=", b"hi"),
            ("aGVsbG8", b"hello"),
            ("a", b""),
            ("", b""),
        ] {
            assert_eq!(node_base64(text), bytes, "{text:?}");
        }
    }
}
