//! Bytes taskledger stores itself (artifacts of type `s3`, objects): a local `object_store`,
//! reached through URLs signed with an HMAC over method, canonical path and expiry, so a
//! worker or a browser needs no Taskcluster credentials to move the bytes.

use crate::AppState;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use taskledger_core::ids::Slug;
use taskledger_core::time::Millis;

/// Everything but RFC 3986's unreserved characters is escaped, so no client re-encodes it.
pub const URL_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` escaped as one URL path segment.
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_SEGMENT).to_string()
}

/// `s` escaped as one store path segment (so no name reaches outside its directory). A name
/// whose escaped form would pass a file name's 255 bytes on disk (every `%` of it is escaped
/// again by the store, as `%25`; names may have 1024 characters) is stored under `_` and the
/// SHA-256 of the name instead, which no escaped name can equal (`_` is always escaped).
pub fn store_segment(s: &str) -> String {
    let escaped =
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let on_disk = escaped.len() + 2 * escaped.bytes().filter(|b| *b == b'%').count();
    if on_disk <= MAX_SEGMENT {
        return escaped;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    format!("_{}", taskledger_projections::audit::hex(digest.as_ref()))
}

/// The longest segment kept as its escaped name (ext4 and most file systems allow 255 bytes).
const MAX_SEGMENT: usize = 240;

/// HMAC over method, canonical path and expiry: the signature of a blob URL.
fn signature(st: &AppState, method: &str, canonical: &str, expires: i64) -> ring::hmac::Tag {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &st.url_key);
    ring::hmac::sign(&key, format!("{method}\n{canonical}\n{expires}").as_bytes())
}

/// The upload id of an `object` artifact: a "nice" v4 slugid made of an HMAC (the URL key)
/// over the artifact's task, run and name. The queue derives it again whenever it answers or
/// checks it, so the id (a capability: whoever knows it may finish the upload) never enters
/// the log, and a repeated createArtifact answers the same id.
pub fn derived_upload_id(st: &AppState, task_id: &Slug, run_id: u32, name: &str) -> Slug {
    upload_id_under(&st.url_key, task_id, run_id, name)
}

fn upload_id_under(url_key: &[u8], task_id: &Slug, run_id: u32, name: &str) -> Slug {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, url_key);
    let message = format!("object artifact upload id\0{task_id}\0{run_id}\0{name}");
    let tag = ring::hmac::sign(&key, message.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&tag.as_ref()[..16]);
    id[0] &= 0x7f; // nice: the first bit cleared
    id[6] = 0x40 | (id[6] & 0x0f); // version 4
    id[8] = 0x80 | (id[8] & 0x3f); // RFC 4122 variant
    Slug(id)
}

/// `<public url><path>?expires=..&sig=..`, valid for `valid_ms`, covering the decoded
/// `canonical` path (a client's re-encoding of the URL cannot break it).
pub fn signed_url(
    st: &AppState,
    method: &str,
    canonical: &str,
    path: &str,
    valid_ms: i64,
) -> String {
    let expires = Millis::now().plus(valid_ms).0;
    let sig = URL_SAFE_NO_PAD.encode(signature(st, method, canonical, expires).as_ref());
    format!("{}{path}?expires={expires}&sig={sig}", st.public_url)
}

/// The expiry a signed URL carries, when its signature holds and it has not passed.
pub fn check_signature(
    st: &AppState,
    method: &str,
    canonical: &str,
    uri: &Uri,
) -> Result<(), StatusCode> {
    let q: std::collections::HashMap<&str, &str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .collect();
    let expires: i64 = q
        .get("expires")
        .and_then(|e| e.parse().ok())
        .ok_or(StatusCode::FORBIDDEN)?;
    let tag = q
        .get("sig")
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .ok_or(StatusCode::FORBIDDEN)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &st.url_key);
    let message = format!("{method}\n{canonical}\n{expires}");
    if ring::hmac::verify(&key, message.as_bytes(), &tag).is_err() || expires < Millis::now().0 {
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(())
}

/// Streams a request body into the store (no size cap beyond the disk: artifacts and task
/// logs can be large).
pub async fn write(
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

/// A write's answer: 200, or 500 with the cause logged.
pub fn written(result: anyhow::Result<()>) -> Response {
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "blob write failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The one range of a `Range: bytes=...` header, as the store takes it. None without one,
/// and for what is served whole instead (several ranges, other units, a malformed header),
/// as RFC 9110 lets a server do.
pub fn byte_range(headers: &HeaderMap) -> Option<GetRange> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes=")?
        .trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first.trim(), last.trim()) {
        ("", n) => Some(GetRange::Suffix(n.parse().ok()?)),
        (a, "") => Some(GetRange::Offset(a.parse().ok()?)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if a > b {
                return None;
            }
            Some(GetRange::Bounded(a..b.checked_add(1)?))
        }
    }
}

/// The bytes of `range` in an object of `size` bytes, or None when it holds none of them
/// (RFC 9110's unsatisfiable range: a start past the end, an empty suffix, an empty object).
pub fn satisfiable(range: &GetRange, size: u64) -> Option<std::ops::Range<u64>> {
    let r = match range {
        GetRange::Bounded(r) => r.start..r.end.min(size),
        GetRange::Offset(start) => *start..size,
        GetRange::Suffix(n) => size - (*n).min(size)..size,
    };
    (r.start < r.end).then_some(r)
}

/// The stored bytes under `key` with `content_type`, or 404; with a `range`, those bytes
/// (206), or 416 when the object holds none of them. The bytes are streamed from the store
/// as the client reads them: an artifact may be gigabytes, and a signed URL may be fetched by
/// many clients at once, so a download never holds the whole file in memory.
pub async fn serve(
    st: &AppState,
    key: &object_store::path::Path,
    content_type: String,
    range: Option<GetRange>,
) -> Response {
    let store = st.blobs.as_ref();
    // a range is resolved against the size first, so that only a range the object cannot
    // satisfy is a 416 and the store is asked for bytes it has
    let range = match range {
        None => None,
        Some(asked) => match store.head(key).await {
            Ok(meta) => match satisfiable(&asked, meta.size) {
                Some(r) => Some(r),
                None => {
                    return (
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        [(header::CONTENT_RANGE, format!("bytes */{}", meta.size))],
                    )
                        .into_response()
                }
            },
            Err(object_store::Error::NotFound { .. }) => {
                return StatusCode::NOT_FOUND.into_response()
            }
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
    };
    let options = GetOptions {
        range: range.clone().map(GetRange::Bounded),
        ..GetOptions::default()
    };
    match store.get_opts(key, options).await {
        Ok(r) => {
            let size = r.meta.size;
            let part = r.range.clone();
            let length = (part.end - part.start).to_string();
            let mut response = (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CONTENT_LENGTH, length),
                    (header::ACCEPT_RANGES, "bytes".into()),
                ],
                axum::body::Body::from_stream(r.into_stream()),
            )
                .into_response();
            if range.is_some() {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let shown = format!("bytes {}-{}/{size}", part.start, part.end - 1);
                if let Ok(v) = header::HeaderValue::from_str(&shown) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            response
        }
        Err(object_store::Error::NotFound { .. }) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One byte range is served as asked; several, other units or nonsense are served whole.
    #[test]
    fn byte_ranges_are_read_as_rfc_9110_writes_them() {
        let range = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, v.parse().unwrap());
            byte_range(&h)
        };
        assert_eq!(range("bytes=0-4"), Some(GetRange::Bounded(0..5)));
        assert_eq!(range("bytes=10-"), Some(GetRange::Offset(10)));
        assert_eq!(range("bytes=-3"), Some(GetRange::Suffix(3)));
        for whole in [
            "bytes=0-1,4-5",
            "items=0-4",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=0-18446744073709551615",
        ] {
            assert_eq!(range(whole), None, "{whole}");
        }
        assert_eq!(byte_range(&HeaderMap::new()), None);
    }

    /// A range is cut to the object; one holding none of its bytes is unsatisfiable.
    #[test]
    fn ranges_are_cut_to_the_object_or_unsatisfiable() {
        assert_eq!(satisfiable(&GetRange::Bounded(0..5), 19), Some(0..5));
        assert_eq!(satisfiable(&GetRange::Bounded(10..100), 19), Some(10..19));
        assert_eq!(satisfiable(&GetRange::Offset(18), 19), Some(18..19));
        assert_eq!(satisfiable(&GetRange::Suffix(3), 19), Some(16..19));
        assert_eq!(satisfiable(&GetRange::Suffix(100), 19), Some(0..19));
        assert_eq!(satisfiable(&GetRange::Bounded(19..20), 19), None);
        assert_eq!(satisfiable(&GetRange::Offset(19), 19), None);
        assert_eq!(satisfiable(&GetRange::Suffix(0), 19), None);
        assert_eq!(satisfiable(&GetRange::Suffix(5), 0), None);
    }

    /// A derived upload id is a valid "nice" slugid, the same for the same artifact and key,
    /// and another for another task, run, name or key.
    #[test]
    fn derived_upload_ids_are_slugids_of_their_artifact_and_key() {
        let task: Slug = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        let other: Slug = "aN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        let id = upload_id_under(b"key", &task, 0, "public/a.txt");
        let shown = id.to_string();
        assert_eq!(shown.parse::<Slug>().unwrap(), id, "{shown} parses back");
        assert!(!shown.starts_with('-'), "{shown} is nice");
        assert_eq!(id, upload_id_under(b"key", &task, 0, "public/a.txt"));
        for different in [
            upload_id_under(b"key", &other, 0, "public/a.txt"),
            upload_id_under(b"key", &task, 1, "public/a.txt"),
            upload_id_under(b"key", &task, 0, "public/b.txt"),
            upload_id_under(b"other key", &task, 0, "public/a.txt"),
        ] {
            assert_ne!(different, id);
        }
    }

    /// Names keep their escaped form as long as it fits a file name; longer legal names (up
    /// to 1024 characters, many separators or non-ASCII) get a digest that fits and differs
    /// per name, and the file can be written.
    #[test]
    fn store_segments_fit_a_file_name() {
        assert_eq!(store_segment("public/a.txt"), "public%2Fa%2Etxt");
        let dir = std::env::temp_dir().join(format!("taskledger-segment-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = ["public/", &"a/".repeat(500), "x"].concat();
        let wide = "é".repeat(100);
        let mut seen = std::collections::HashSet::new();
        for name in [long.as_str(), &long[..1000], wide.as_str()] {
            let path = object_store::path::Path::from(format!("t/0/{}", store_segment(name)));
            let file = path.filename().unwrap();
            assert!(file.len() <= 255, "{} bytes", file.len());
            assert!(seen.insert(file.to_string()), "one segment per name");
            std::fs::write(dir.join(file), b"x").unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
