//! The MAC, the timestamp and the payload hash (auth.md §3.2–3.4).

use super::*;

/// Check the MAC with the hawk crate. For a request that changes no state
/// (`query_may_be_unsigned`) a failed MAC over path + query is retried once over
/// the path alone: the Rust client signs only the path (auth.md §3.3).
pub(super) fn verify_mac(
    req: &HawkRequest,
    signature: &Signature,
    access_token: &str,
) -> Result<(), AuthError> {
    let key = hawk::Key::new(access_token.as_bytes(), hawk::DigestAlgorithm::Sha256)
        .map_err(|_| AuthError::bad_mac())?;
    let method = upper_method(req.method);
    let host = lower_host(req.host);
    let mac_matches = |resource: &str| {
        hawk::mac::Mac::new(
            hawk::mac::MacType::Header,
            &key,
            signature.ts,
            signature.nonce,
            &method,
            &host,
            req.port,
            resource,
            signature.hash.as_deref(),
            signature.ext,
        )
        // `Mac`'s equality is constant-time
        .is_ok_and(|mac| mac == signature.mac)
    };
    if mac_matches(req.resource) {
        return Ok(());
    }
    if let Some((path, _query)) = req.resource.split_once('?') {
        if query_may_be_unsigned(&method, path) && mac_matches(path) {
            return Ok(());
        }
    }
    Err(AuthError::bad_mac())
}

/// POST calls that only read: their body is a list of task ids or index paths, their query
/// string the page (queue `tasks` and `statuses`, index `findTasksAtIndex`).
const READING_POSTS: [&str; 3] = [
    "/api/queue/v1/tasks",
    "/api/queue/v1/tasks/status",
    "/api/index/v1/tasks/indexes",
];

/// Whether a request to `path` may carry a query its signature leaves out (auth.md §3.3):
/// only one that changes no state, GET and HEAD and the POST calls that only read, whose
/// query parameters are pagination.
pub(super) fn query_may_be_unsigned(method: &str, path: &str) -> bool {
    match method {
        "GET" | "HEAD" => true,
        "POST" => READING_POSTS.contains(&path.strip_suffix('/').unwrap_or(path)),
        _ => false,
    }
}

/// The method in ASCII upper case, borrowed when it already is.
fn upper_method(method: &str) -> Cow<'_, str> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(method.to_ascii_uppercase())
    } else {
        Cow::Borrowed(method)
    }
}

/// The host in lower case, borrowed when it already is.
fn lower_host(host: &str) -> Cow<'_, str> {
    if host
        .bytes()
        .any(|b| !b.is_ascii() || b.is_ascii_uppercase())
    {
        Cow::Owned(host.to_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

pub(super) fn check_timestamp(ts_secs: u64, now: DateTime<Utc>) -> Result<(), AuthError> {
    let skew = i128::from(ts_secs) * 1000 - i128::from(now.timestamp_millis());
    if skew.abs() > TIMESTAMP_SKEW_MS {
        return Err(AuthError::new("Unauthorized: Stale timestamp"));
    }
    Ok(())
}

pub(super) fn check_payload_hash(hash: &str, req: &HawkRequest) -> Result<(), AuthError> {
    let computed = payload_hash(req.content_type, req.body);
    if constant_time_eq(hash.as_bytes(), computed.as_bytes()) {
        return Ok(());
    }
    Err(AuthError(format!(
        "Invalid payload hash: {hash}\n\
         Computed payload hash: {computed}\n\
         This happens when your request carries a signed hash of the payload and the hash \
         doesn't match the hash we've computed on the server-side."
    )))
}
