//! Hawk request authentication and temporary credentials (auth.md §3–4).
//!
//! `authenticate` runs Taskcluster's checks in Taskcluster's order: header
//! parse, `ext` decoding, client loading, certificate, `authorizedScopes`,
//! MAC, timestamp, payload hash. Failure texts are Taskcluster's own.
//!
//! **Invariant:** no I/O and no clock: the caller passes `now` and a
//! `ClientSource`. Access tokens never appear in `Debug` output or errors.
//! **Boundary:** role expansion belongs to the `ClientSource` (`expand`): the
//! final scopes are `expand(current ∪ {assume:anonymous})` (auth.md §4.5).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, STANDARD, URL_SAFE_NO_PAD,
};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::{digest, hmac};
use serde::Serialize;
use serde_json::Value;

use crate::scopes::{self, ScopeSet};

mod ext;
mod header;
mod mac;
#[cfg(test)]
mod tests;

use ext::*;
use header::*;
use mac::*;

/// Longest accepted `Authorization` header, in UTF-16 units as Node counts.
const MAX_HEADER_LEN: usize = 4096;
/// Allowed distance between the Hawk `ts` and `now`.
const TIMESTAMP_SKEW_MS: i128 = 15 * 60 * 1000;
/// Allowed clock skew for certificate `start`/`expiry`.
const CERT_SKEW_MS: f64 = 5.0 * 60.0 * 1000.0;
/// Longest allowed certificate lifetime.
const CERT_MAX_LIFETIME_MS: f64 = 31.0 * 24.0 * 60.0 * 60.0 * 1000.0;
/// Largest `ts` accepted (`UNIX_EPOCH` plus a `ts` near `u64::MAX` seconds would overflow
/// `SystemTime`, and the hawk crate's own parser panicked there).
const MAX_TS_SECS: u64 = 1 << 40;
/// Every request holds this scope (auth.md §4.5, §4.7).
const ANONYMOUS_SCOPE: &str = "assume:anonymous";

/// What the gateway knows about a permanent client.
#[derive(Clone)]
pub struct ClientRecord {
    pub client_id: String,
    pub access_token: String,
    /// Expanded through roles.
    pub scopes: ScopeSet,
    /// True when `scopes` already equal `expand(scopes ∪ {assume:anonymous})`, so a request
    /// holding exactly them needs no further expansion (the gateway's clients are made so).
    pub final_scopes: bool,
    pub expires: DateTime<Utc>,
    pub disabled: bool,
}

impl fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("access_token", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("expires", &self.expires)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Looks up permanent clients by id.
pub trait ClientSource {
    fn client(&self, client_id: &str) -> Option<ClientRecord>;

    /// The client as the issuer of a certificate: its scopes expanded through roles without
    /// the anonymous role (auth.md §4.2), against which the certificate's scopes and a named
    /// credential's `auth:create-client:<name>` are checked. Sources whose `client` gives
    /// final scopes (`ClientRecord::final_scopes`) must answer this apart.
    fn issuer(&self, client_id: &str) -> Option<ClientRecord>;

    /// Expands a scope set through roles and normalizes it (auth.md §7). Without roles:
    /// normalization only.
    fn expand(&self, scopes: Vec<String>) -> ScopeSet {
        ScopeSet::new(scopes::normalize(scopes))
    }
}

/// A request's final scopes: `expand(held ∪ {assume:anonymous})` (auth.md §4.5), unless
/// `held` is already that.
fn final_scopes(creds: Credentials, clients: &dyn ClientSource) -> ScopeSet {
    if creds.final_scopes {
        return creds.scopes;
    }
    let mut held = creds.scopes.to_vec();
    held.push(ANONYMOUS_SCOPE.to_owned());
    clients.expand(held)
}

/// The parts of an HTTP request that Hawk authentication reads.
#[derive(Clone, Copy, Debug)]
pub struct HawkRequest<'a> {
    /// e.g. "GET"; compared case-insensitively, the MAC uses upper case.
    pub method: &'a str,
    /// Raw path + "?" + query exactly as received.
    pub resource: &'a str,
    /// Host header without port.
    pub host: &'a str,
    pub port: u16,
    /// The `Authorization` header value.
    pub authorization: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// Verify the `hash` attribute against `body` (false for authenticateHawk, whose caller
    /// verifies the hash it is handed back).
    pub check_hash: bool,
}

/// A successfully authenticated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Authenticated {
    /// The Hawk `id` (the credential name).
    pub client_id: String,
    /// The permanent client whose key verified the request (for temporary credentials, the
    /// certificate's issuer; otherwise `client_id`).
    pub issuer: String,
    /// Expanded through roles and normalized; always includes `assume:anonymous`.
    pub scopes: ScopeSet,
    pub expires: DateTime<Utc>,
    /// The header's `hash` attribute, if any.
    pub hash: Option<String>,
}

/// Authentication failure; the text is Taskcluster's (auth.md §3–4).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct AuthError(pub String);

impl AuthError {
    fn new(message: impl Into<String>) -> Self {
        AuthError(message.into())
    }

    fn bad_request(message: impl fmt::Display) -> Self {
        AuthError(format!("Bad Request: {message}"))
    }

    fn bad_mac() -> Self {
        AuthError::new("Unauthorized: Bad mac")
    }
}

/// Temporary credentials minted from a permanent client (auth.md §4.3).
#[derive(Clone)]
pub struct TemporaryCredentials {
    pub client_id: String,
    pub access_token: String,
    /// The certificate as JSON text.
    pub certificate: String,
}

impl fmt::Debug for TemporaryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporaryCredentials")
            .field("client_id", &self.client_id)
            .field("access_token", &"[redacted]")
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// The credential name and issuer of a named certificate.
#[derive(Clone, Copy, Debug)]
pub struct CertificateName<'a> {
    /// The clientId the temporary credentials are used under.
    pub client_id: &'a str,
    /// The permanent client that signed the certificate.
    pub issuer: &'a str,
}

/// Authenticate a Hawk-signed request (auth.md §3.4 order).
///
/// # Errors
///
/// An `AuthError` with Taskcluster's 401 message when any step fails.
pub fn authenticate(
    req: &HawkRequest,
    clients: &dyn ClientSource,
    now: DateTime<Utc>,
) -> Result<Authenticated, AuthError> {
    let attrs = parse_authorization(req.authorization)?;
    let ext = attrs.ext.map(parse_ext).transpose()?;
    let creds = load_credentials(attrs.id, ext.as_ref(), clients, now)?;
    let hash = attrs.hash.map(str::to_owned);
    // A header the hawk crate cannot represent exactly can never match.
    let (signature, ts_secs) = signature(&attrs).ok_or_else(AuthError::bad_mac)?;
    verify_mac(req, &signature, &creds.access_token)?;
    check_timestamp(ts_secs, now)?;
    if let Some(hash) = attrs.hash {
        if req.check_hash {
            check_payload_hash(hash, req)?;
        }
    }
    let (expires, issuer) = (creds.expires, creds.issuer.clone());
    Ok(Authenticated {
        client_id: attrs.id.to_owned(),
        issuer,
        scopes: final_scopes(creds, clients),
        expires,
        hash,
    })
}

/// The parts of a bewit-signed request (auth.md §6).
#[derive(Clone, Copy, Debug)]
pub struct BewitRequest<'a> {
    pub method: &'a str,
    /// Raw path + "?" + query exactly as received, bewit included.
    pub resource: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// Authenticate a request signed with a `bewit` query parameter (auth.md §6).
///
/// # Errors
///
/// An `AuthError` with Taskcluster's 401 message when any step fails.
pub fn authenticate_bewit(
    req: &BewitRequest,
    clients: &dyn ClientSource,
    now: DateTime<Utc>,
) -> Result<Authenticated, AuthError> {
    // the hawk library's order and texts (Taskcluster renders its errors with their HTTP
    // reason: "Unauthorized: ..." or "Bad Request: ...")
    if req.resource.len() > MAX_HEADER_LEN {
        return Err(AuthError::bad_request("Resource path exceeds max length"));
    }
    let (stripped, bewit) =
        split_bewit(req.resource).ok_or_else(|| AuthError::new("Unauthorized: Empty bewit"))?;
    let method = req.method.to_ascii_uppercase();
    if method != "GET" && method != "HEAD" {
        return Err(AuthError::new("Unauthorized: Invalid method"));
    }
    // read as Latin-1, as the hawk library does: any bytes are text, wrong ones fail below
    let decoded: String = base64url_lenient(bewit)
        .ok_or_else(|| AuthError::bad_request("Invalid bewit encoding"))?
        .into_iter()
        .map(char::from)
        .collect();
    let parts: Vec<&str> = decoded.split('\\').collect();
    let [id, exp, mac, ext_text] = parts[..] else {
        return Err(AuthError::bad_request("Invalid bewit structure"));
    };
    // `parseInt(exp, 10)`: NaN and 0 count as missing
    let exp_secs = js_parse_int(exp).filter(|e| *e != 0);
    let (Some(exp_secs), false, false) = (exp_secs, id.is_empty(), mac.is_empty()) else {
        return Err(AuthError::bad_request("Missing bewit attributes"));
    };
    if exp_secs.saturating_mul(1000) <= now.timestamp_millis() {
        return Err(AuthError::new("Unauthorized: Access expired"));
    }
    let ext = (!ext_text.is_empty())
        .then(|| parse_ext(ext_text))
        .transpose()?;
    let creds = load_credentials(id, ext.as_ref(), clients, now)?;
    let normalized = format!(
        "hawk.1.bewit\n{exp_secs}\n\nGET\n{stripped}\n{}\n{}\n\n{}\n",
        req.host.to_lowercase(),
        req.port,
        ext_text.replace('\\', "\\\\").replace('\n', "\\n"),
    );
    let expected = STANDARD.encode(hmac_sha256(&creds.access_token, normalized.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
        return Err(AuthError::bad_mac());
    }
    let (expires, issuer) = (creds.expires, creds.issuer.clone());
    Ok(Authenticated {
        client_id: id.to_owned(),
        issuer,
        scopes: final_scopes(creds, clients),
        expires,
        hash: None,
    })
}

/// Makes a bewit for `resource` (path + query, without a bewit) valid until `exp_secs`.
pub fn bewit(
    client_id: &str,
    access_token: &str,
    host: &str,
    port: u16,
    resource: &str,
    exp_secs: i64,
    ext: &str,
) -> String {
    let normalized = format!(
        "hawk.1.bewit\n{exp_secs}\n\nGET\n{resource}\n{}\n{port}\n\n{}\n",
        host.to_lowercase(),
        ext.replace('\\', "\\\\").replace('\n', "\\n"),
    );
    let mac = STANDARD.encode(hmac_sha256(access_token, normalized.as_bytes()));
    URL_SAFE_NO_PAD.encode(format!("{client_id}\\{exp_secs}\\{mac}\\{ext}"))
}

/// The resource without its `bewit` parameter, and the bewit's value. Of several, the last
/// is the bewit, as the hawk library's greedy pattern takes it.
fn split_bewit(resource: &str) -> Option<(String, &str)> {
    let (path, query) = resource.split_once('?')?;
    let pairs: Vec<&str> = query.split('&').collect();
    let at = pairs.iter().rposition(|p| p.starts_with("bewit="))?;
    let value = pairs[at].strip_prefix("bewit=").filter(|v| !v.is_empty())?;
    let kept: Vec<&str> = pairs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, p)| *p)
        .collect();
    let stripped = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    Some((stripped, value))
}

/// JavaScript's `parseInt(text, 10)` for integers that fit an i64: leading whitespace, a sign,
/// then the longest run of digits (None where JavaScript gives NaN).
fn js_parse_int(text: &str) -> Option<i64> {
    // JavaScript's white space among the Latin-1 characters a bewit decodes to (not U+0085,
    // which Rust's `trim_start` would also take)
    let text = text.trim_start_matches(|c| {
        matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}')
    });
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let value: i64 = rest[..digits].parse().ok()?;
    Some(if negative { -value } else { value })
}

/// A bewit decoded as the hawk library decodes it: only URL-safe base64 characters (no `=`),
/// then Node's lenient decoding (trailing bits ignored, a last lone character dropped).
fn base64url_lenient(text: &str) -> Option<Vec<u8>> {
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return None;
    }
    let usable = match text.len() % 4 {
        1 => &text[..text.len() - 1],
        _ => text,
    };
    let engine = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(usable).ok()
}

/// Mint temporary credentials as `issuer_id` with `issuer_token` (auth.md
/// §4.3). `name` = Some(clientId) for named credentials (the certificate gets
/// `issuer`, and the signature covers clientId and issuer); None for unnamed.
/// `seed` is 44 characters (two slugids). The server, not this function,
/// enforces the 31-day limit and the issuer's scopes.
pub fn issue_temporary_credentials(
    issuer_id: &str,
    issuer_token: &str,
    name: Option<&str>,
    scopes: &[String],
    start: DateTime<Utc>,
    expiry: DateTime<Utc>,
    seed: &str,
) -> TemporaryCredentials {
    let start_ms = start.timestamp_millis();
    let expiry_ms = expiry.timestamp_millis();
    let cert_name = name.map(|client_id| CertificateName {
        client_id,
        issuer: issuer_id,
    });
    let signature = certificate_signature(
        issuer_token,
        cert_name.as_ref(),
        seed,
        &start_ms.to_string(),
        &expiry_ms.to_string(),
        scopes,
    );
    let certificate = CertificateWire {
        version: 1,
        scopes,
        start: start_ms,
        expiry: expiry_ms,
        seed,
        signature,
        issuer: name.map(|_| issuer_id),
    };
    TemporaryCredentials {
        client_id: name.unwrap_or(issuer_id).to_owned(),
        access_token: temporary_access_token(issuer_token, seed),
        certificate: serde_json::to_string(&certificate).expect("a certificate always serializes"),
    }
}

/// The certificate as official clients write it.
#[derive(Serialize)]
struct CertificateWire<'a> {
    version: u32,
    scopes: &'a [String],
    start: i64,
    expiry: i64,
    seed: &'a str,
    signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
}

/// Certificate signature: standard base64 of HMAC-SHA256 keyed with the
/// issuer's access token over the lines of auth.md §4.3 (no trailing newline).
/// `start` and `expiry` are the decimal texts of the millisecond timestamps,
/// as JavaScript prints the certificate's numbers.
pub fn certificate_signature(
    issuer_token: &str,
    name: Option<&CertificateName>,
    seed: &str,
    start: &str,
    expiry: &str,
    scopes: &[String],
) -> String {
    // the lines, joined by "\n", in one buffer
    let mut text = String::with_capacity(160 + scopes.iter().map(|s| s.len() + 1).sum::<usize>());
    text.push_str("version:1");
    let mut line = |parts: &[&str]| {
        text.push('\n');
        parts.iter().for_each(|p| text.push_str(p));
    };
    if let Some(name) = name {
        line(&["clientId:", name.client_id]);
        line(&["issuer:", name.issuer]);
    }
    line(&["seed:", seed]);
    line(&["start:", start]);
    line(&["expiry:", expiry]);
    line(&["scopes:"]);
    scopes.iter().for_each(|scope| line(&[scope]));
    STANDARD.encode(hmac_sha256(issuer_token, text.as_bytes()))
}

/// The temporary access token: HMAC-SHA256(issuer token, seed), base64url
/// without padding (43 characters).
pub fn temporary_access_token(issuer_token: &str, seed: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(issuer_token, seed.as_bytes()))
}

/// Hawk payload hash: base64 SHA-256 of `hawk.1.payload\n<ct>\n<body>\n`, where
/// `ct` is the content type before any `;`, trimmed and lower-cased.
pub fn payload_hash(content_type: Option<&str>, body: &[u8]) -> String {
    let ct = content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_lowercase())
        .unwrap_or_default();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"hawk.1.payload\n");
    ctx.update(ct.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    ctx.update(b"\n");
    STANDARD.encode(ctx.finish())
}

fn hmac_sha256(key: &str, message: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()), message)
}

/// Constant-time equality (the lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
