//! The plumbing every queue handler shares: the call's name and parameters for error bodies,
//! body and query parsing, URL-parameter checks, pagination tokens, temporary credentials.

use crate::error::{ApiError, ErrorCode, Failure};
use crate::AppState;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use taskledger_core::auth::issue_temporary_credentials;
use taskledger_core::ids::{is_ident38, Slug, TaskId, TaskQueueId};
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::time::Millis;

/// What a failing call echoes back in `requestInfo`.
pub struct Call {
    pub name: &'static str,
    pub params: Value,
    payload: Payload,
}

/// The request body a failing call echoes: given, or parsed from the body only when the call
/// fails (a successful call never parses it twice).
enum Payload {
    Given(Value),
    Body {
        json: bool,
        body: Bytes,
        scrub: Option<fn(&Value) -> Value>,
    },
}

impl Payload {
    fn value(self) -> Value {
        match self {
            Payload::Given(v) => v,
            Payload::Body { json, body, scrub } => {
                let v = echoed(json, &body);
                match scrub {
                    // what a scrub cannot reach into (text that did not parse, say) is not
                    // echoed: it may hold the secret the scrub is for
                    Some(f) if v.is_object() => f(&v),
                    Some(_) => json!({}),
                    None => v,
                }
            }
        }
    }
}

impl Call {
    pub fn new(name: &'static str, params: Value) -> Call {
        Call {
            name,
            params,
            payload: Payload::Given(json!({})),
        }
    }
    pub fn with_payload(mut self, payload: &Value) -> Call {
        self.payload = Payload::Given(payload.clone());
        self
    }
    /// Echo the request body (a JSON object or array, else `{}`) if the call fails.
    pub fn with_body(self, headers: &HeaderMap, body: &Bytes) -> Call {
        self.echoing(headers, body, None)
    }
    /// The same, with `scrub` applied to the body before it is echoed (to drop secrets,
    /// with `omit`).
    pub fn with_scrubbed_body(
        self,
        headers: &HeaderMap,
        body: &Bytes,
        scrub: fn(&Value) -> Value,
    ) -> Call {
        self.echoing(headers, body, Some(scrub))
    }
    fn echoing(
        mut self,
        headers: &HeaderMap,
        body: &Bytes,
        scrub: Option<fn(&Value) -> Value>,
    ) -> Call {
        self.payload = Payload::Body {
            json: is_json(headers),
            body: body.clone(),
            scrub,
        };
        self
    }
    pub async fn run<F>(self, f: F) -> Response
    where
        F: Future<Output = Result<Response, ApiError>>,
    {
        match f.await {
            Ok(r) => r,
            Err(error) => Failure {
                error,
                method: self.name,
                params: self.params,
                payload: self.payload.value(),
            }
            .into_response(),
        }
    }
}

pub fn ok(v: Value) -> Response {
    ok_json(&v)
}

/// 200 with `v` serialized as it stands (typed replies need no `Value` in between).
///
/// Written into one `Vec` sized for a task's status or definition: axum's `Json` starts at
/// 128 bytes and writes each key, quote and value through `BytesMut`'s writer, which cost a
/// status reply about 8,000 instructions, most of it in those small writes and the
/// buffer's growth.
pub fn ok_json<T: serde::Serialize>(v: &T) -> Response {
    let mut body = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut body, v) {
        Ok(()) => ok_json_bytes(body),
        // only a map with keys that are not strings fails, and no reply has one
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// 200 with `body`, JSON text already written.
pub fn ok_json_bytes(body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Whether the request says its body is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON object or array; an empty body is `{}`, as upstream's body parser reads it.
fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
        Ok(_) => Err(ApiError::new(
            ErrorCode::MalformedPayload,
            "Failed to parse JSON: Must be an object or array",
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::MalformedPayload,
            format!("Failed to parse JSON: {e}"),
        )),
    }
}

/// A request body after the first step of Taskcluster's processing order
/// (reference/conventions.md, "Processing order"): read as JSON when its content type says
/// so, which refuses JSON that does not parse to an object or array before anything else is
/// checked; any other body is ignored. Whether an endpoint wanted JSON is asked later
/// (`input`), after authentication, URL parameters and the query string.
#[derive(Default)]
pub struct Body {
    json: Option<Value>,
    /// The request's `Content-Type`, which the wrong-type message quotes.
    content_type: Option<String>,
}

/// Never the body's content: it may hold secrets (a worker's static secret, an upload id).
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("json", &self.json.as_ref().map(|_| "[redacted]"))
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// Step 1, taken by the authentication layer for every request; handlers get the outcome
/// from `Auth::body`.
pub fn read_body(headers: &HeaderMap, body: &Bytes) -> Result<Body, ApiError> {
    if is_json(headers) {
        return Ok(Body {
            json: Some(parse_json(body)?),
            content_type: None,
        });
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned());
    Ok(Body {
        json: None,
        content_type,
    })
}

impl Body {
    /// Step 5 for an endpoint with an input schema: the body must have been sent as JSON.
    pub fn input(self) -> Result<Value, ApiError> {
        let content_type = self.content_type;
        self.json.ok_or_else(|| {
            // upstream fills `{{contentType}}` with the header, or `null` without one
            let got = content_type.as_deref().unwrap_or("null");
            ApiError::new(
                ErrorCode::MalformedPayload,
                format!("Payload must be JSON with content-type: application/json got content-type: {got}"),
            )
        })
    }

    /// For an endpoint without an input schema: the JSON body, or `{}`.
    pub fn or_empty(self) -> Value {
        self.json.unwrap_or_else(|| json!({}))
    }
}

/// The body an error echoes, as upstream's body parser left it: `{}` unless it was sent as
/// JSON and is not empty; then the parsed value, whatever it is, or the raw text that did
/// not parse.
fn echoed(json: bool, body: &Bytes) -> Value {
    if !json || body.is_empty() {
        return json!({});
    }
    serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

pub const SLUGID_RE: &str =
    "^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$";
pub const IDENT_RE: &str = "^[a-zA-Z0-9-_]{1,38}$";
pub const TASK_QUEUE_RE: &str = "^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$";

pub fn slug_param(name: &str, v: &str) -> Result<TaskId, ApiError> {
    v.parse::<Slug>()
        .map_err(|_| ApiError::bad_param(name, v, SLUGID_RE))
}

/// A `runId` route parameter: any digits, as upstream's pattern (`^[1-9]*[0-9]+$`) admits
/// leading zeros, read as `parseInt` does. A number past `u32` names no run (a task has at
/// most 50), so it becomes `u32::MAX`, which answers 404 like any other missing run.
pub fn run_param(v: &str) -> Result<u32, ApiError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_param("runId", v, "^[1-9]*[0-9]+$"));
    }
    Ok(v.parse::<u32>().unwrap_or(u32::MAX))
}

pub fn ident_param(name: &str, v: &str) -> Result<(), ApiError> {
    if is_ident38(v) {
        Ok(())
    } else {
        Err(ApiError::bad_param(name, v, IDENT_RE))
    }
}

pub fn queue_param(v: &str) -> Result<TaskQueueId, ApiError> {
    v.parse::<TaskQueueId>()
        .map_err(|_| ApiError::bad_param("taskQueueId", v, TASK_QUEUE_RE))
}

/// For an endpoint that declares no query-string parameters: any key but `bewit` is
/// Taskcluster's 400. Handlers call it (or `query`) where upstream checks the query string:
/// after authentication, after a scope check that URL parameters alone fill ("pre") and
/// after the URL parameters' patterns; before the body's schema, loading anything, or a
/// scope check made in the handler (reference/conventions.md, "Processing order").
/// A request body that must be an object with no key but `key` (a schema of that one property
/// and `additionalProperties: false`): the object.
pub fn object_with_only<'b>(
    body: &'b Value,
    schema: &str,
    key: &str,
) -> Result<&'b serde_json::Map<String, Value>, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::validation(schema, &["data should be object".into()]))?;
    if let Some(extra) = obj.keys().find(|k| *k != key) {
        return Err(ApiError::validation(
            schema,
            &[format!(
                "data should NOT have additional properties: {}",
                Value::from(extra.as_str())
            )],
        ));
    }
    Ok(obj)
}

/// A string property `key` of `obj`, found at `data/<path>/<key>` (`data/<key>` for an empty
/// `path`), checked as Ajv words it: a string of `min..=max` characters (`max` 0: no bound).
/// `None` with the words added to `errors` when it is not; a missing one is `None`, with the
/// required-property error only when `required`.
pub fn text_field(
    obj: &serde_json::Map<String, Value>,
    path: &str,
    key: &str,
    min: usize,
    max: usize,
    required: bool,
    errors: &mut Vec<String>,
) -> Option<String> {
    let parent = if path.is_empty() {
        "data".to_string()
    } else {
        format!("data/{path}")
    };
    let Some(v) = obj.get(key) else {
        if required {
            errors.push(format!("{parent} must have required property '{key}'"));
        }
        return None;
    };
    let Some(t) = v.as_str() else {
        errors.push(format!("{parent}/{key} must be string"));
        return None;
    };
    let n = t.chars().count();
    if n < min {
        errors.push(format!(
            "{parent}/{key} must NOT have fewer than {min} characters"
        ));
        None
    } else if max > 0 && n > max {
        errors.push(format!(
            "{parent}/{key} must NOT have more than {max} characters"
        ));
        None
    } else {
        Some(t.to_string())
    }
}

/// A required `date-time` property of a body being checked: its instant, or `None` with the
/// validator's words for what is wrong added to `errors`.
pub fn date_time(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<Millis> {
    match obj.get(key) {
        Some(Value::String(text)) => {
            let parsed = Millis::parse_rfc3339(text);
            if parsed.is_none() {
                errors.push(format!("data/{key} must match format \"date-time\""));
            }
            parsed
        }
        _ => {
            errors.push(format!("data/{key} must be string"));
            None
        }
    }
}

pub fn no_query(uri: &Uri) -> Result<(), ApiError> {
    query(uri, &[]).map(drop)
}

/// Query-string parameters, only those the endpoint declares (plus `bewit`). Every problem
/// is reported, one line each, in the order the keys first appear, as upstream's query
/// validator does.
pub fn query(uri: &Uri, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    // keys in order of first appearance, with how often each came (`seen`: where in `keys`)
    let mut keys: Vec<(String, usize)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (k, v) in url_pairs(uri.query().unwrap_or("")) {
        match seen.get(&k) {
            Some(&i) => keys[i].1 += 1,
            None => {
                seen.insert(k.clone(), keys.len());
                keys.push((k.clone(), 1));
            }
        }
        out.entry(k).or_insert(v);
    }
    // upstream's patterns, in its words: a limit of digits, and on a listing paged by
    // `limit`, a token of one character or more (/./; the Azure listings, which take no
    // limit, accept any token, /^.*$/)
    let paged = allowed.contains(&"limit");
    let mut errors = Vec::new();
    for (k, n) in &keys {
        if k == "bewit" {
            continue;
        }
        if !allowed.contains(&k.as_str()) {
            errors.push(format!("Query-string parameter: {k} is not supported!"));
        } else if *n > 1 {
            errors.push(format!("Query-string parameter: {k} must be a string!"));
        } else if k == "limit" {
            let l = &out[k];
            if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(format!(
                    "Query-string parameter: limit=\"{l}\" does not match expression: /^[0-9]+$/"
                ));
            }
        } else if k == "continuationToken" && paged && out[k].is_empty() {
            errors.push(
                "Query-string parameter: continuationToken=\"\" does not match expression: /./"
                    .into(),
            );
        }
    }
    if !errors.is_empty() {
        // a query string of thousands of bad keys gets a message of bounded size
        let more = errors.len().saturating_sub(MAX_QUERY_ERRORS);
        errors.truncate(MAX_QUERY_ERRORS);
        if more > 0 {
            errors.push(format!("... and {more} more"));
        }
        return Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            errors.join("\n"),
        ));
    }
    out.remove("bewit");
    Ok(out)
}

/// Query-string problems a message lists.
const MAX_QUERY_ERRORS: usize = 100;

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// A scope as an expression requiring it (every service's handlers state their scopes so).
pub fn s(scope: String) -> ScopeExpr {
    ScopeExpr::scope(scope)
}

/// `limit`, 1000 at most and by default.
pub fn limit(q: &HashMap<String, String>) -> usize {
    q.get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .map_or(1000, |l| l.clamp(1, 1000))
}

/// Keyset continuation tokens: the last key seen, URL-safe base64.
pub fn encode_token(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

pub fn decode_token(q: &HashMap<String, String>) -> Result<Option<Vec<u8>>, ApiError> {
    match q.get("continuationToken") {
        None => Ok(None),
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .map(Some)
            .map_err(|_| ApiError::input("Invalid continuation token")),
    }
}

/// A continuation token that names the last row of the page before (a keyset listing by
/// name: secrets, the index's namespaces and entries).
pub fn name_token(q: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    decode_token(q)?
        .map(String::from_utf8)
        .transpose()
        .map_err(|_| ApiError::input("Invalid continuation token"))
}

/// `out` with the `continuationToken` that names `more`, the last row taken, if more remain.
pub fn with_name_token(mut out: Value, more: Option<String>) -> Value {
    if let Some(last) = more {
        out["continuationToken"] = json!(encode_token(last.as_bytes()));
    }
    out
}

/// JSON schema's `uniqueItems` as the validator reports a failure: scanning `items` (index,
/// text) from the end, the first text met again, as (its later index, its earlier index).
pub fn repeated_item<'a>(
    items: impl DoubleEndedIterator<Item = (usize, &'a str)>,
) -> Option<(usize, usize)> {
    let mut seen = HashMap::new();
    items
        .rev()
        .find_map(|(i, item)| seen.insert(item, i).map(|later| (later, i)))
}

/// What an error body echoes in place of a secret.
pub const OMITTED: &str = "(OMITTED)";

/// Puts `OMITTED` in place of the value at `path` (object keys, outermost first) where `v` has
/// one: the scrubs of `Call::with_scrubbed_body`.
pub fn omit(v: &mut Value, path: &[&str]) {
    if let Some(secret) = path.iter().try_fold(v, |v, key| v.get_mut(*key)) {
        *secret = Value::String(OMITTED.into());
    }
}

/// The token of a keyset-paginated list (listArtifacts, listLatestArtifacts, listPendingTasks,
/// listClaimedTasks): one that does not decode starts the list again from its beginning, as
/// upstream (conventions §6), where the offset-paginated lists answer 400.
pub fn keyset_token(q: &HashMap<String, String>) -> Option<Vec<u8>> {
    q.get("continuationToken")
        .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
}

/// Fresh 44-character seed: two slugids.
fn seed() -> String {
    format!("{}{}", slugid::v4(), slugid::v4())
}

/// Temporary credentials as a reply carries them; keys in sorted order, as a `Value` object
/// writes them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsJson {
    access_token: String,
    certificate: String,
    client_id: String,
}

/// Temporary credentials issued by the queue's own client.
pub fn credentials(
    state: &AppState,
    client_id: &str,
    scopes: &[String],
    expiry: Millis,
) -> CredentialsJson {
    let now = Millis::now();
    let creds = issue_temporary_credentials(
        &state.queue_client.0,
        &state.queue_client.1,
        Some(client_id),
        scopes,
        now.minus(0).to_datetime(),
        expiry.to_datetime(),
        &seed(),
    );
    CredentialsJson {
        access_token: creds.access_token,
        certificate: creds.certificate,
        client_id: creds.client_id,
    }
}

/// `until/<takenUntil>`: Unix seconds as JavaScript prints `ms / 1000`, a fraction only when
/// there is one and without trailing zeros (`1700000000.12`, not `.120`).
pub fn unix_seconds(t: Millis) -> String {
    let (secs, ms) = (t.0.div_euclid(1000), t.0.rem_euclid(1000));
    if ms == 0 {
        format!("{secs}")
    } else {
        let fraction = format!("{ms:03}");
        format!("{secs}.{}", fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_print_as_javascript_divides() {
        assert_eq!(unix_seconds(Millis(1_700_000_000_000)), "1700000000");
        assert_eq!(unix_seconds(Millis(1_700_000_000_120)), "1700000000.12");
        assert_eq!(unix_seconds(Millis(1_700_000_000_100)), "1700000000.1");
        assert_eq!(unix_seconds(Millis(1_700_000_000_007)), "1700000000.007");
        assert_eq!(unix_seconds(Millis(1_700_000_000_250)), "1700000000.25");
    }
}
