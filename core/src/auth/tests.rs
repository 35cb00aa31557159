//! Hawk test vectors (auth.md §3–4) and Taskcluster's failure texts.

use super::*;

const NOW: i64 = 1_700_000_000;
const HOST: &str = "tc.example.com";
const SEED: &str = "AAAAAAAAQ0KAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const POST_BODY: &str = r#"{"clientScopes":["test:*"],"requiredScopes":["test:a"]}"#;
const POST_HASH: &str = "1sU7SQwg5+SUBSTojXLRtXC9UVZVwifopY4pHoNRiJM=";
const POST_EXT: &str = "eyJhdXRob3JpemVkU2NvcGVzIjpbInRlc3Q6YSJdfQ==";
const GET_HEADER: &str = r#"Hawk id="tester", ts="1700000000", nonce="Xy3kQ2", mac="4jhcxdfETHM2Lh9xs7ZT7Yq+ESQId6y85RIp5MLP8DM=""#;
const POST_HEADER: &str = r#"Hawk id="tester", ts="1700000000", nonce="Xy3kQ2", hash="1sU7SQwg5+SUBSTojXLRtXC9UVZVwifopY4pHoNRiJM=", ext="eyJhdXRob3JpemVkU2NvcGVzIjpbInRlc3Q6YSJdfQ==", mac="uHCvNCR5Qk6vWdTZXRYBDQ+haxPR5+NWTfFefeiQ1Qo=""#;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn client(id: &str, token: &str, scopes: &[&str]) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        access_token: token.into(),
        scopes: ScopeSet::new(strings(scopes)),
        final_scopes: false,
        expires: at(NOW + 365 * 86_400),
        disabled: false,
    }
}

struct Clients(Vec<ClientRecord>);

impl ClientSource for Clients {
    fn client(&self, client_id: &str) -> Option<ClientRecord> {
        self.0.iter().find(|c| c.client_id == client_id).cloned()
    }

    fn issuer(&self, client_id: &str) -> Option<ClientRecord> {
        self.client(client_id)
    }
}

fn clients() -> Clients {
    let mut disabled = client("disabled", "tok-d", &["x"]);
    disabled.disabled = true;
    let mut expired = client("expired", "tok-e", &["x"]);
    expired.expires = at(NOW - 1);
    let mut soon = client("soon", "tok-s", &["soon:*"]);
    soon.expires = at(NOW + 600);
    Clients(vec![
        client(
            "tester",
            "no-secret",
            &["test:*", "auth:create-client:test:*"],
        ),
        disabled,
        expired,
        soon,
    ])
}

/// An owned request (GET unless changed); tests borrow it as a `HawkRequest`.
struct Req {
    method: &'static str,
    resource: String,
    authorization: String,
}

impl Req {
    fn method(self, method: &'static str) -> Self {
        Req { method, ..self }
    }
}

fn get(resource: &str, authorization: &str) -> Req {
    Req {
        method: "GET",
        resource: resource.into(),
        authorization: authorization.into(),
    }
}

trait AsHawk {
    fn as_hawk(&self) -> HawkRequest<'_>;
}

impl AsHawk for Req {
    fn as_hawk(&self) -> HawkRequest<'_> {
        HawkRequest {
            method: self.method,
            resource: &self.resource,
            host: HOST,
            port: 443,
            authorization: &self.authorization,
            content_type: None,
            body: b"",
            check_hash: true,
        }
    }
}

impl AsHawk for HawkRequest<'_> {
    fn as_hawk(&self) -> HawkRequest<'_> {
        *self
    }
}

/// Sign with the hawk crate: the header value a Hawk client would send.
fn sign(
    id: &str,
    key: &str,
    method: &str,
    resource: &str,
    ts: i64,
    hash: Option<&str>,
    ext: Option<&str>,
) -> String {
    let hash = hash.map(|h| STANDARD.decode(h).unwrap());
    let request = hawk::RequestBuilder::new(method, HOST, 443, resource)
        .hash(hash.as_deref())
        .ext(ext)
        .request();
    header_for(&request, id, key, ts, "n0nce")
}

/// The `Authorization` header the hawk crate makes for `request`.
fn header_for(request: &hawk::Request, id: &str, key: &str, ts: i64, nonce: &str) -> String {
    let credentials = hawk::Credentials {
        id: id.to_owned(),
        key: hawk::Key::new(key.as_bytes(), hawk::DigestAlgorithm::Sha256).unwrap(),
    };
    let at = UNIX_EPOCH + Duration::from_secs(ts as u64);
    let header = request.make_header_full(&credentials, at, nonce).unwrap();
    format!("Hawk {header}")
}

/// The MAC check as the hawk crate alone makes it: its own parser over the header's
/// text after the scheme, then `validate_header` (with a skew it never exceeds), the
/// path alone tried again where `query_may_be_unsigned`. Headers with a `ts` it cannot
/// take or an `app` are refused first, as `signature` refuses them.
fn crate_accepts(attrs: &Attributes, header: &str, req: &HawkRequest, token: &str) -> bool {
    let plain = !attrs.ts.is_empty()
        && attrs.ts.bytes().all(|b| b.is_ascii_digit())
        && (attrs.ts == "0" || !attrs.ts.starts_with('0'));
    let small = attrs.ts.parse::<u64>().is_ok_and(|ts| ts <= MAX_TS_SECS);
    if !plain || !small || attrs.app.is_some() {
        return false;
    }
    let text = header[4..].trim_start_matches(is_space);
    let Ok(parsed) = text.parse::<hawk::Header>() else {
        return false;
    };
    let key = hawk::Key::new(token.as_bytes(), hawk::DigestAlgorithm::Sha256).unwrap();
    let (method, host) = (req.method.to_ascii_uppercase(), req.host.to_lowercase());
    let valid = |resource: &str| {
        hawk::RequestBuilder::new(&method, &host, req.port, resource)
            .request()
            .validate_header(&parsed, &key, Duration::MAX)
    };
    valid(req.resource)
        || req
            .resource
            .split_once('?')
            .is_some_and(|(path, _)| query_may_be_unsigned(&method, path) && valid(path))
}

fn b64_json(value: &Value) -> String {
    STANDARD.encode(value.to_string())
}

/// Authenticate `req` at `now` and compare the scopes, or the error text.
fn check(req: &impl AsHawk, now: i64, expected: Result<&[&str], &str>) {
    let got = authenticate(&req.as_hawk(), &clients(), at(now));
    match expected {
        Ok(scopes) => assert_eq!(got.map(|a| a.scopes.to_vec()), Ok(strings(scopes))),
        Err(message) => assert_eq!(got, Err(AuthError(message.into()))),
    }
}

#[test]
fn mac_vectors() {
    // auth.md §3.5, through the hawk crate and through the plain formula.
    let credentials = hawk::Credentials {
        id: "tester".into(),
        key: hawk::Key::new(b"no-secret", hawk::DigestAlgorithm::Sha256).unwrap(),
    };
    let header = hawk::RequestBuilder::new("GET", HOST, 443, "/api/auth/v1/test-authenticate-get/")
        .request()
        .make_header_full(
            &credentials,
            UNIX_EPOCH + Duration::from_secs(NOW as u64),
            "Xy3kQ2",
        )
        .unwrap();
    assert_eq!(format!("Hawk {header}"), GET_HEADER);
    let normalized = "hawk.1.header\n1700000000\nXy3kQ2\nGET\n/api/auth/v1/test-authenticate-get/\ntc.example.com\n443\n\n\n";
    assert_eq!(
        STANDARD.encode(hmac_sha256("no-secret", normalized.as_bytes())),
        "4jhcxdfETHM2Lh9xs7ZT7Yq+ESQId6y85RIp5MLP8DM="
    );
    let key = hawk::Key::new(b"no-secret", hawk::DigestAlgorithm::Sha256).unwrap();
    let hash = STANDARD.decode(POST_HASH).unwrap();
    let mac = hawk::mac::Mac::new(
        hawk::mac::MacType::Header,
        &key,
        UNIX_EPOCH + Duration::from_secs(NOW as u64),
        "Xy3kQ2",
        "POST",
        HOST,
        443,
        "/api/auth/v1/test-authenticate",
        Some(&hash),
        Some(POST_EXT),
    )
    .unwrap();
    assert_eq!(
        STANDARD.encode(&*mac),
        "uHCvNCR5Qk6vWdTZXRYBDQ+haxPR5+NWTfFefeiQ1Qo="
    );
    assert_eq!(
        STANDARD.decode(POST_EXT).unwrap(),
        br#"{"authorizedScopes":["test:a"]}"#
    );
}

#[test]
fn payload_hash_vectors() {
    assert_eq!(
        payload_hash(Some("application/json"), POST_BODY.as_bytes()),
        POST_HASH
    );
    assert_eq!(
        payload_hash(
            Some(" Application/JSON; charset=utf-8"),
            POST_BODY.as_bytes()
        ),
        POST_HASH
    );
    assert_eq!(
        payload_hash(None, b""),
        "B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8="
    );
    let from_hawk =
        hawk::PayloadHasher::hash("application/json", hawk::DigestAlgorithm::Sha256, POST_BODY)
            .unwrap();
    assert_eq!(STANDARD.encode(from_hawk), POST_HASH);
}

#[test]
fn certificate_vectors() {
    let scopes = strings(&["test:a", "test:b"]);
    let name = CertificateName {
        client_id: "tester/temp",
        issuer: "tester",
    };
    assert_eq!(
        certificate_signature(
            "no-secret",
            Some(&name),
            SEED,
            "1700000000000",
            "1700003600000",
            &scopes
        ),
        "kdhr6BecQaRFwV2Jf2/RgP+zctJDyfrJik+u56SQ9Ls="
    );
    assert_eq!(
        temporary_access_token("no-secret", SEED),
        "01bthf79Vj4jmflLAel-sX-Bc38uQS-wHi4i_GI_i9U"
    );
    let creds = issue_temporary_credentials(
        "tester",
        "no-secret",
        Some("tester/temp"),
        &scopes,
        DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        DateTime::from_timestamp_millis(1_700_003_600_000).unwrap(),
        SEED,
    );
    assert_eq!(creds.client_id, "tester/temp");
    assert_eq!(
        creds.access_token,
        "01bthf79Vj4jmflLAel-sX-Bc38uQS-wHi4i_GI_i9U"
    );
    assert_eq!(
        creds.certificate,
        r#"{"version":1,"scopes":["test:a","test:b"],"start":1700000000000,"expiry":1700003600000,"seed":"AAAAAAAAQ0KAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","signature":"kdhr6BecQaRFwV2Jf2/RgP+zctJDyfrJik+u56SQ9Ls=","issuer":"tester"}"#
    );
    // Zero scopes: the signed text ends in "scopes:" (server form).
    let text = "version:1\nseed:".to_owned() + SEED + "\nstart:1\nexpiry:2\nscopes:";
    assert_eq!(
        certificate_signature("k", None, SEED, "1", "2", &[]),
        STANDARD.encode(hmac_sha256("k", text.as_bytes()))
    );
    assert_eq!(
        js_number_text(&serde_json::Number::from_f64(1.7e12).unwrap()),
        "1700000000000"
    );
    assert_eq!(
        js_number_text(&serde_json::Number::from_f64(1.5).unwrap()),
        "1.5"
    );
}

#[test]
fn secrets_are_redacted() {
    let record = client("c", "super-secret-token", &[]);
    let shown = format!("{record:?}");
    assert!(shown.contains("[redacted]") && !shown.contains("super-secret-token"));
    let temp = issue_temporary_credentials(
        "tester",
        "no-secret",
        None,
        &[],
        at(NOW),
        at(NOW + 60),
        SEED,
    );
    let shown = format!("{temp:?}");
    assert!(shown.contains("[redacted]") && !shown.contains(&temp.access_token));
}

#[test]
fn spec_get_vector_authenticates() {
    let req = get("/api/auth/v1/test-authenticate-get/", GET_HEADER);
    let got = authenticate(&req.as_hawk(), &clients(), at(NOW)).unwrap();
    assert_eq!(
        got,
        Authenticated {
            client_id: "tester".into(),
            issuer: "tester".into(),
            scopes: ScopeSet::new(strings(&[
                "assume:anonymous",
                "auth:create-client:test:*",
                "test:*"
            ])),
            expires: at(NOW + 365 * 86_400),
            hash: None,
        }
    );
    // Method case does not matter; host case does not matter.
    let req = HawkRequest {
        method: "get",
        host: "TC.Example.COM",
        ..req.as_hawk()
    };
    check(
        &req,
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
}

#[test]
fn spec_post_vector_authenticates_with_authorized_scopes() {
    let req = HawkRequest {
        method: "POST",
        resource: "/api/auth/v1/test-authenticate",
        host: HOST,
        port: 443,
        authorization: POST_HEADER,
        content_type: Some("application/json"),
        body: POST_BODY.as_bytes(),
        check_hash: true,
    };
    check(&req, NOW, Ok(&["assume:anonymous", "test:a"]));
    // Payload-hash mismatch: the body changed after signing.
    let tampered = HawkRequest {
        body: br#"{"clientScopes":["*"]}"#,
        check_hash: true,
        ..req
    };
    let computed = payload_hash(Some("application/json"), tampered.body);
    check(
        &tampered,
        NOW,
        Err(&format!(
            "Invalid payload hash: {POST_HASH}\nComputed payload hash: {computed}\n\
             This happens when your request carries a signed hash of the payload and the hash \
             doesn't match the hash we've computed on the server-side."
        )),
    );
    // Other port: the MAC no longer matches.
    check(
        &HawkRequest { port: 80, ..req },
        NOW,
        Err("Unauthorized: Bad mac"),
    );
}

#[test]
fn bad_mac_and_stale_timestamp() {
    let resource = "/api/queue/v1/task/abc";
    check(
        &get(
            resource,
            &sign("tester", "wrong", "GET", resource, NOW, None, None),
        ),
        NOW,
        Err("Unauthorized: Bad mac"),
    );
    check(
        &get(
            "/api/queue/v1/task/abd",
            &sign("tester", "no-secret", "GET", resource, NOW, None, None),
        ),
        NOW,
        Err("Unauthorized: Bad mac"),
    );
    let signed = get(
        resource,
        &sign("tester", "no-secret", "GET", resource, NOW, None, None),
    );
    check(
        &signed,
        NOW + 15 * 60,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
    check(
        &signed,
        NOW - 15 * 60,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
    check(
        &signed,
        NOW + 15 * 60 + 1,
        Err("Unauthorized: Stale timestamp"),
    );
    check(
        &signed,
        NOW - 15 * 60 - 1,
        Err("Unauthorized: Stale timestamp"),
    );
    // A MAC that does not decode, a ts the crate cannot represent, `app`.
    check(
        &get(
            resource,
            r#"Hawk id="tester", ts="1700000000", nonce="n", mac="!!""#,
        ),
        NOW,
        Err("Unauthorized: Bad mac"),
    );
    check(
        &get(
            resource,
            r#"Hawk id="tester", ts="99999999999999999999999", nonce="n", mac="AA==""#,
        ),
        NOW,
        Err("Unauthorized: Bad mac"),
    );
    check(
        &get(
            resource,
            r#"Hawk id="tester", ts="1e9", nonce="n", mac="AA==""#,
        ),
        NOW,
        Err("Unauthorized: Bad mac"),
    );
    let with_app = sign("tester", "no-secret", "GET", resource, NOW, None, None) + r#", app="x""#;
    check(&get(resource, &with_app), NOW, Err("Unauthorized: Bad mac"));
}

proptest::proptest! {
    /// Passing a whole word after a failed match finds the same attributes as trying
    /// every character, as the regular expression upstream does.
    #[test]
    fn skipping_unmatched_words_finds_the_same_attributes(text in "[ab=\", \\\\é]{0,40}") {
        let walk = |skip: &dyn Fn(&str, usize) -> usize| {
            let (mut found, mut i) = (Vec::new(), 0);
            while i < text.len() {
                match match_attribute(&text, i) {
                    Some((name, value, end)) => {
                        found.push((name, value, i, end));
                        i = end;
                    }
                    None => i = skip(&text, i),
                }
            }
            found
        };
        let every_char = |t: &str, i: usize| i + t[i..].chars().next().map_or(1, char::len_utf8);
        proptest::prop_assert_eq!(walk(&past_unmatched), walk(&every_char));
    }
}

#[test]
fn header_syntax() {
    let r = "/x";
    check(
        &get(r, &format!("Hawk id=\"{}\"", "a".repeat(4090))),
        NOW,
        Err("Bad Request: Header length too long"),
    );
    // the limit counts UTF-16 units, as JavaScript's length: 4,100 two-byte characters
    // are over it, 3,000 (6,000 bytes) are not
    check(
        &get(r, &format!("Hawk id=\"{}\"", "é".repeat(4100))),
        NOW,
        Err("Bad Request: Header length too long"),
    );
    check(
        &get(r, &format!("Hawk id=\"{}\"", "é".repeat(3000))),
        NOW,
        Err("Bad Request: Bad attribute value: id"),
    );
    check(
        &get(
            r,
            r#"Hawk id="tester", ts="1", nonce="n", mac="m", foo="x""#,
        ),
        NOW,
        Err("Bad Request: Unknown attribute: foo"),
    );
    check(
        &get(
            r,
            r#"Hawk id="tester", id="other", ts="1", nonce="n", mac="m""#,
        ),
        NOW,
        Err("Bad Request: Duplicate attribute: id"),
    );
    check(
        &get(r, r#"Hawk id="tester", ts="1", mac="m""#),
        NOW,
        Err("Bad Request: Missing attributes"),
    );
    check(
        &get(r, r#"Hawk id="tester", ts="", nonce="n", mac="m""#),
        NOW,
        Err("Bad Request: Bad attribute value: ts"),
    );
    check(
        &get(r, r#"Hawk id="tester" ts="1", nonce="n", mac="m""#),
        NOW,
        Err("Bad Request: Bad header format"),
    );
    check(
        &get(r, "Hawk"),
        NOW,
        Err("Bad Request: Invalid header syntax"),
    );
    check(
        &get(r, "Hawk id=\"a\",\nts=\"1\""),
        NOW,
        Err("Bad Request: Invalid header syntax"),
    );
    // every JavaScript line terminator, the multi-byte ones included
    for terminator in ['\r', '\u{2028}', '\u{2029}'] {
        check(
            &get(r, &format!("Hawk id=\"a\",{terminator}ts=\"1\"")),
            NOW,
            Err("Bad Request: Invalid header syntax"),
        );
    }
    // another character led by the same byte as U+2028 is no line terminator
    check(
        &get(r, "Hawk id=\"a\",\u{2026}ts=\"1\""),
        NOW,
        Err("Bad Request: Bad header format"),
    );
    check(&get(r, "Bearer abc"), NOW, Err("Unauthorized"));
    check(
        &get(r, &format!("Hawk {}", "a".repeat(4000))),
        NOW,
        Err("Bad Request: Bad header format"),
    );
    // A long but legal header is not refused for its length.
    let long_ext = STANDARD.encode(format!(r#"{{"pad":"{}"}}"#, "x".repeat(2800)));
    let long = sign("tester", "no-secret", "GET", r, NOW, None, Some(&long_ext));
    assert!(long.len() > 3000 && long.len() <= MAX_HEADER_LEN);
    check(
        &get(r, &long),
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
    // Python-client style: mac first, lower-case scheme, ext "e30=", hash of empty content.
    let py = sign(
        "tester",
        "no-secret",
        "GET",
        r,
        NOW,
        Some("B0weSUXsMcb5UhL41FZbrUJCAotzSI3HawE1NPLRUz8="),
        Some("e30="),
    );
    let attrs: Vec<&str> = py["Hawk ".len()..].split(", ").collect();
    let mac = attrs.iter().find(|a| a.starts_with("mac=")).unwrap();
    let rest: Vec<&str> = attrs
        .iter()
        .filter(|a| !a.starts_with("mac="))
        .copied()
        .collect();
    let reordered = format!("hawk {mac}, {}", rest.join(", "));
    check(
        &get(r, &reordered),
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
}

#[test]
fn client_loading() {
    let r = "/x";
    check(
        &get(r, &sign("nobody", "k", "GET", r, NOW, None, None)),
        NOW,
        Err("Client with clientId 'nobody' not found"),
    );
    check(
        &get(r, &sign("disabled", "tok-d", "GET", r, NOW, None, None)),
        NOW,
        Err("Client with clientId 'disabled' is disabled"),
    );
    check(
        &get(r, &sign("expired", "tok-e", "GET", r, NOW, None, None)),
        NOW,
        Err("Client with clientId: 'expired' has expired"),
    );
    // Client loading precedes the MAC check.
    check(
        &get(r, r#"Hawk id="nobody", ts="1", nonce="n", mac="m""#),
        NOW,
        Err("Client with clientId 'nobody' not found"),
    );
}

#[test]
fn ext_decoding() {
    let r = "/x";
    let fails = |ext: &str| {
        check(
            &get(
                r,
                &sign("tester", "no-secret", "GET", r, NOW, None, Some(ext)),
            ),
            NOW,
            Err("Failed to parse ext"),
        )
    };
    fails("not*base64");
    fails(&STANDARD.encode("{not json"));
    fails(&STANDARD.encode("null"));
    // URL-safe alphabet without padding is accepted.
    let json = r#"{"authorizedScopes":["test:aa??"]}"#;
    let url_safe = URL_SAFE_NO_PAD.encode(json);
    assert!(url_safe.contains('_') || url_safe.contains('-'));
    let req = get(
        r,
        &sign("tester", "no-secret", "GET", r, NOW, None, Some(&url_safe)),
    );
    check(&req, NOW, Ok(&["assume:anonymous", "test:aa??"]));
}

#[test]
fn authorized_scopes() {
    let r = "/x";
    let with = |authorized: Value| {
        let ext = b64_json(&serde_json::json!({ "authorizedScopes": authorized }));
        get(
            r,
            &sign("tester", "no-secret", "GET", r, NOW, None, Some(&ext)),
        )
    };
    check(
        &with(serde_json::json!(["test:x", "test:y:*"])),
        NOW,
        Ok(&["assume:anonymous", "test:x", "test:y:*"]),
    );
    // `[]` counts: narrowed to nothing but anonymous.
    check(&with(serde_json::json!([])), NOW, Ok(&["assume:anonymous"]));
    check(
        &with(serde_json::json!(["assume:anonymous"])),
        NOW,
        Ok(&["assume:anonymous"]),
    );
    check(
        &with(serde_json::json!(["test:x", "queue:y"])),
        NOW,
        // upstream's layout; the credentials' scopes as expanded, anonymous included
        Err(
            "Supplied credentials do not satisfy authorizedScopes; credentials have scopes:\n\n\
             ```\nassume:anonymous\nauth:create-client:test:*\ntest:*\n```\n\n\
             authorizedScopes are:\n\n```\ntest:x\nqueue:y\n```",
        ),
    );
    check(
        &with(serde_json::json!("test:x")),
        NOW,
        Err("ext.authorizedScopes must be an array"),
    );
    check(
        &with(serde_json::json!(["ok", "bad\nscope"])),
        NOW,
        Err("ext.authorizedScopes must be an array of valid scopes"),
    );
    check(
        &with(serde_json::json!(null)),
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
}

/// A request signed with temporary credentials; `edit` may alter the
/// certificate object after signing.
fn temp_request(creds: &TemporaryCredentials, now: i64, edit: impl FnOnce(&mut Value)) -> Req {
    let mut cert: Value = serde_json::from_str(&creds.certificate).unwrap();
    edit(&mut cert);
    let ext = b64_json(&serde_json::json!({ "certificate": cert }));
    get(
        "/y",
        &sign(
            &creds.client_id,
            &creds.access_token,
            "GET",
            "/y",
            now,
            None,
            Some(&ext),
        ),
    )
}

fn issue(name: Option<&str>, scopes: &[&str], start: i64, expiry: i64) -> TemporaryCredentials {
    issue_temporary_credentials(
        "tester",
        "no-secret",
        name,
        &strings(scopes),
        at(start),
        at(expiry),
        SEED,
    )
}

#[test]
fn temporary_credentials_round_trip() {
    let creds = issue(None, &["test:a", "test:b"], NOW, NOW + 3600);
    assert_eq!(creds.client_id, "tester");
    let got = authenticate(
        &temp_request(&creds, NOW, |_| {}).as_hawk(),
        &clients(),
        at(NOW),
    )
    .unwrap();
    assert_eq!(got.client_id, "tester");
    assert_eq!(
        *got.scopes,
        strings(&["assume:anonymous", "test:a", "test:b"])
    );
    assert_eq!(got.expires, at(NOW + 3600));

    let named = issue(Some("test:temp-1"), &["test:a"], NOW, NOW + 3600);
    let got = authenticate(
        &temp_request(&named, NOW, |_| {}).as_hawk(),
        &clients(),
        at(NOW),
    )
    .unwrap();
    assert_eq!(got.client_id, "test:temp-1");
    assert_eq!(*got.scopes, strings(&["assume:anonymous", "test:a"]));

    // The earlier expiry wins: here the issuer's.
    let soon = issue_temporary_credentials(
        "soon",
        "tok-s",
        None,
        &strings(&["soon:x"]),
        at(NOW),
        at(NOW + 3600),
        SEED,
    );
    let got = authenticate(
        &temp_request(&soon, NOW, |_| {}).as_hawk(),
        &clients(),
        at(NOW),
    )
    .unwrap();
    assert_eq!(got.expires, at(NOW + 600));

    // Temporary credentials with authorizedScopes on top.
    let cert: Value = serde_json::from_str(&creds.certificate).unwrap();
    let ext = b64_json(&serde_json::json!({ "certificate": cert, "authorizedScopes": ["test:a"] }));
    let req = get(
        "/y",
        &sign(
            "tester",
            &creds.access_token,
            "GET",
            "/y",
            NOW,
            None,
            Some(&ext),
        ),
    );
    check(&req, NOW, Ok(&["assume:anonymous", "test:a"]));
    // The permanent token is not the key once a certificate is present.
    let req = get(
        "/y",
        &sign("tester", "no-secret", "GET", "/y", NOW, None, Some(&ext)),
    );
    check(&req, NOW, Err("Unauthorized: Bad mac"));
}

#[test]
fn certificate_rejections() {
    let creds = issue(None, &["test:a"], NOW, NOW + 3600);
    let tampered = temp_request(&creds, NOW, |c| {
        c["expiry"] = serde_json::json!((NOW + 7200) * 1000)
    });
    check(
        &tampered,
        NOW,
        Err("ext.certificate.signature is not valid"),
    );
    let tampered = temp_request(&creds, NOW, |c| c["scopes"] = serde_json::json!(["test:*"]));
    check(
        &tampered,
        NOW,
        Err("ext.certificate.signature is not valid"),
    );

    let long = issue(None, &["test:a"], NOW, NOW + 31 * 86_400 + 1);
    check(
        &temp_request(&long, NOW, |_| {}),
        NOW,
        Err("ext.certificate cannot last longer than 31 days!"),
    );
    let old = issue(None, &["test:a"], NOW - 7200, NOW - 3600);
    check(
        &temp_request(&old, NOW, |_| {}),
        NOW,
        Err("ext.certificate.expiry < now"),
    );
    let future = issue(None, &["test:a"], NOW + 301, NOW + 3600);
    check(
        &temp_request(&future, NOW, |_| {}),
        NOW,
        Err("ext.certificate.start > now"),
    );
    let greedy = issue(None, &["test:a", "queue:x"], NOW, NOW + 3600);
    check(
        &temp_request(&greedy, NOW, |_| {}),
        NOW,
        Err("ext.certificate issuer `tester` doesn't satisfy all certificate scopes test:a, queue:x.  \
             The temporary credentials were not generated correctly."),
    );
    let misnamed = issue(Some("prod:x"), &["test:a"], NOW, NOW + 3600);
    check(
        &temp_request(&misnamed, NOW, |_| {}),
        NOW,
        Err("ext.certificate issuer `tester` doesn't have `auth:create-client:prod:x` for supplied clientId."),
    );
    let named = issue(Some("test:n"), &["test:a"], NOW, NOW + 3600);
    let renamed = temp_request(&named, NOW, |_| {});
    let renamed = Req {
        authorization: renamed.authorization.replace("test:n", "test:m"),
        ..renamed
    };
    check(
        &renamed,
        NOW,
        Err("ext.certificate.signature is not valid, or wrong clientId provided"),
    );

    let shape = |edit: fn(&mut Value), message: &str| {
        check(&temp_request(&creds, NOW, edit), NOW, Err(message))
    };
    shape(
        |c| *c = serde_json::json!("cert"),
        "ext.certificate must be a JSON object",
    );
    shape(
        |c| c["version"] = serde_json::json!(2),
        "ext.certificate.version must be 1",
    );
    shape(
        |c| c["seed"] = serde_json::json!(5),
        "ext.certificate.seed must be a string",
    );
    shape(
        |c| c["seed"] = serde_json::json!("short"),
        "ext.certificate.seed must be 44 characters",
    );
    shape(
        |c| c["start"] = serde_json::json!("1"),
        "ext.certificate.start must be a number",
    );
    shape(
        |c| c["expiry"] = serde_json::json!(null),
        "ext.certificate.expiry must be a number",
    );
    shape(
        |c| c["scopes"] = serde_json::json!("test:a"),
        "ext.certificate.scopes must be an array",
    );
    shape(
        |c| c["scopes"] = serde_json::json!(["a\tb"]),
        "ext.certificate.scopes must be an array of valid scopes",
    );
    shape(
        |c| c["clientId"] = serde_json::json!("x"),
        "ext.certificate.clientId must only be used with ext.certificate.issuer",
    );
    shape(
        |c| c["issuer"] = serde_json::json!(7),
        "ext.certificate.issuer must be a string",
    );
    shape(
        |c| c["issuer"] = serde_json::json!("tester"),
        "ext.certificate.issuer must differ from the supplied clientId",
    );
    shape(
        |c| c["issuer"] = serde_json::json!("nobody"),
        "Client with clientId 'nobody' not found",
    );
    shape(
        |c| c["signature"] = serde_json::json!(1),
        "ext.certificate.signature is not valid",
    );
    // A float-typed but integral start still verifies (JavaScript prints it without ".0").
    let req = temp_request(&creds, NOW, |c| {
        c["start"] = serde_json::json!((NOW * 1000) as f64)
    });
    check(&req, NOW, Ok(&["assume:anonymous", "test:a"]));
}

/// Two header forms node's parser takes and the hawk crate's parser refused (which made
/// them "Bad mac" before the MAC was computed from our own parse): a trailing comma, and
/// U+FEFF between attributes. With a valid MAC both authenticate, as in Taskcluster.
#[test]
fn node_header_forms_the_crate_refused() {
    let r = "/api/auth/v1/test-authenticate-get/";
    let signed = sign("tester", "no-secret", "GET", r, NOW, None, None);
    let trailing = format!("{signed},");
    let feff = signed.replacen(", ", ",\u{feff}", 1);
    for header in [trailing, feff] {
        assert!(
            "Hawk ".len() < header.len()
                && header["Hawk ".len()..].parse::<hawk::Header>().is_err(),
            "{header}"
        );
        check(
            &get(r, &header),
            NOW,
            Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
        );
    }
}

#[test]
fn rust_client_path_only_retry() {
    let path = "/api/queue/v1/task-group/abc/list";
    let resource = format!("{path}?limit=5&continuationToken=x");
    // The Rust client signs the path alone.
    let signed = sign("tester", "no-secret", "GET", path, NOW, None, None);
    check(
        &get(&resource, &signed),
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
    let head = get(
        &resource,
        &sign("tester", "no-secret", "HEAD", path, NOW, None, None),
    )
    .method("HEAD");
    check(
        &head,
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
    // Never for requests that change state.
    let post = get(
        &resource,
        &sign("tester", "no-secret", "POST", path, NOW, None, None),
    )
    .method("POST");
    check(&post, NOW, Err("Unauthorized: Bad mac"));
    // The POST calls that only read take it too (their query is the page), with or
    // without a trailing slash; a POST beside them does not.
    for (reading, accepted) in [
        ("/api/queue/v1/tasks/status", true),
        ("/api/queue/v1/tasks", true),
        ("/api/queue/v1/tasks/", true),
        ("/api/queue/v1/task/abc/cancel", false),
        ("/api/queue/v1/tasks/status/x", false),
        ("/api/index/v1/tasks/indexes", true),
        ("/api/index/v1/tasks/some.namespace", false),
    ] {
        let resource = format!("{reading}?limit=2&continuationToken=x");
        let post = get(
            &resource,
            &sign("tester", "no-secret", "POST", reading, NOW, None, None),
        )
        .method("POST");
        let expected = if accepted {
            Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"][..])
        } else {
            Err("Unauthorized: Bad mac")
        };
        check(&post, NOW, expected);
    }
    // A request signed over path + query still works as usual.
    let full = sign("tester", "no-secret", "POST", &resource, NOW, None, None);
    check(
        &get(&resource, &full).method("POST"),
        NOW,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
}

#[test]
fn hawk_skew_never_uses_the_system_clock() {
    // Far from the machine's clock, only `now` decides.
    let long_ago = 1_000_000_000;
    assert!(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            > long_ago as u64 + 86_400
    );
    let r = "/x";
    check(
        &get(
            r,
            &sign("tester", "no-secret", "GET", r, long_ago, None, None),
        ),
        long_ago,
        Ok(&["assume:anonymous", "auth:create-client:test:*", "test:*"]),
    );
}

#[test]
fn bewit_vector_and_checks() {
    let expected =
        "dGVzdGVyXDE3MDAwMDA5MDBcWnhoeXp5WDB4bW50dHViT0pUaUVlRTBWRGlBTzN0QmNna2QwYWdzMFlXOD1c";
    let made = bewit(
        "tester",
        "no-secret",
        HOST,
        443,
        "/api/auth/v1/test-authenticate-get/",
        1_700_000_900,
        "",
    );
    assert_eq!(made, expected);
    let req = |method, resource: &str| BewitRequest {
        method,
        resource: Box::leak(resource.to_string().into_boxed_str()),
        host: HOST,
        port: 443,
    };
    let url = format!("/api/auth/v1/test-authenticate-get/?bewit={expected}");
    let ok = authenticate_bewit(&req("GET", &url), &clients(), at(NOW)).unwrap();
    assert_eq!(ok.client_id, "tester");
    assert!(ok.scopes.contains(&"test:*".to_string()));
    // other parameters around the bewit are kept in the signed resource
    let with_query = bewit(
        "tester",
        "no-secret",
        HOST,
        443,
        "/x?a=1&b=2",
        1_700_000_900,
        "",
    );
    let url = format!("/x?a=1&bewit={with_query}&b=2");
    assert!(authenticate_bewit(&req("GET", &url), &clients(), at(NOW)).is_ok());
    let err = |r: BewitRequest, now| authenticate_bewit(&r, &clients(), at(now)).unwrap_err().0;
    let url = format!("/api/auth/v1/test-authenticate-get/?bewit={expected}");
    assert_eq!(err(req("POST", &url), NOW), "Unauthorized: Invalid method");
    assert_eq!(
        err(req("GET", &url), 1_700_000_900),
        "Unauthorized: Access expired"
    );
    // the hawk library's order: an empty bewit before the method
    assert_eq!(
        err(req("POST", "/x?bewit="), NOW),
        "Unauthorized: Empty bewit"
    );
    // a slugid decodes, but is no `id\\exp\\mac\\ext` (upstream's "bogus bewit" test)
    assert_eq!(
        err(req("GET", "/?bewit=VXtbS8Ci9TqsFbxiSJnXkQ"), NOW),
        "Bad Request: Invalid bewit structure"
    );
    // parseInt: a zero or non-numeric expiry is a missing attribute
    for exp in ["0", "x1"] {
        let raw = format!("tester\\{exp}\\mac\\");
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            err(req("GET", &format!("/x?bewit={encoded}")), NOW),
            "Bad Request: Missing bewit attributes"
        );
    }
    // U+0085 (byte 0x85 read as Latin-1) is no white space to parseInt
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"tester\\\x851\\mac\\");
    assert_eq!(
        err(req("GET", &format!("/x?bewit={encoded}")), NOW),
        "Bad Request: Missing bewit attributes"
    );
    // only URL-safe base64 characters: padding is an encoding error, as in the hawk library
    assert_eq!(
        err(req("GET", &format!("/x?bewit={expected}=")), NOW),
        "Bad Request: Invalid bewit encoding"
    );
    // of two bewits the last is the one (the hawk library's greedy pattern)
    assert_eq!(
        err(req("GET", &format!("{url}&bewit=")), NOW),
        "Unauthorized: Empty bewit"
    );
    assert_eq!(
        err(req("GET", &format!("/other?bewit={expected}")), NOW),
        "Unauthorized: Bad mac"
    );
    assert_eq!(
        err(req("GET", "/x?bewit=%%%"), NOW),
        "Bad Request: Invalid bewit encoding"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Header-ish text: Hawk attributes, quotes, commas, odd bytes, long runs.
    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "Hawk( [a-z]{1,6}=\"[ -~]{0,40}\",?){0,8}",
            "(hawk|HAWK|Hawk) id=\"tester\", ts=\"[0-9]{0,25}\", nonce=\"[a-z]{0,5}\", (ext|hash|mac|app|dlg)=\"[A-Za-z0-9+/=]{0,60}\", mac=\"[A-Za-z0-9+/=]{0,50}\"",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any Authorization header gives a result (almost always a 401 text), never a panic.
        #[test]
        fn any_header_never_panics(h in header(), body in any::<Vec<u8>>()) {
            let req = HawkRequest {
                method: "POST",
                resource: "/api/queue/v1/task/x",
                host: HOST,
                port: 443,
                authorization: &h,
                content_type: Some("application/json"),
                body: &body,
                check_hash: true,
            };
            let _ = authenticate(&req, &clients(), at(NOW));
        }

        /// A header signed by the hawk crate, then perhaps damaged in one character, is
        /// accepted exactly when the crate's own parser and `validate_header` accept it,
        /// which is what `verify_mac` asked before it read the parsed attributes
        /// instead. (Our parser, node's, also takes a trailing comma and U+FEFF as space,
        /// which the crate's refused; `node_header_forms_the_crate_refused` pins those.)
        #[test]
        fn mac_check_agrees_with_the_crate(
            get in any::<bool>(),
            query in any::<bool>(),
            nonce in "[A-Za-z0-9]{1,10}",
            ts in 0i64..4_000_000_000,
            ext in proptest::option::of("[ !#-\\[\\]-~]{1,30}"),
            hash in proptest::option::of(any::<[u8; 32]>()),
            damage in proptest::option::of((any::<usize>(), "[ -~]")),
            key_ok in any::<bool>(),
        ) {
            let method = if get { "GET" } else { "POST" };
            let resource = if query { "/api/queue/v1/x?a=b" } else { "/api/queue/v1/x" };
            let hash = hash.map(|h| h.to_vec());
            let request = hawk::RequestBuilder::new(method, HOST, 443, resource)
                .hash(hash.as_deref())
                .ext(ext.as_deref())
                .request();
            let mut header = header_for(&request, "tester", "no-secret", ts, &nonce);
            let undamaged = damage.is_none();
            if let Some((at, with)) = damage {
                let at = 5 + at % (header.len() - 5);
                header.replace_range(at..=at, &with);
            }
            let token = if key_ok { "no-secret" } else { "other-secret" };
            let req = HawkRequest {
                method,
                resource,
                host: HOST,
                port: 443,
                authorization: &header,
                content_type: None,
                body: b"",
                check_hash: false,
            };
            match parse_authorization(&header) {
                Ok(attrs) => {
                    let ours = signature(&attrs)
                        .is_some_and(|(sig, _)| verify_mac(&req, &sig, token).is_ok());
                    prop_assert_eq!(ours, crate_accepts(&attrs, &header, &req, token));
                    // the crate's own signature, with the right key, always passes
                    prop_assert_eq!(undamaged && key_ok, undamaged && ours);
                }
                Err(_) => prop_assert!(!undamaged, "{header} did not parse"),
            }
        }

        /// Any bewit query gives a result, never a panic.
        #[test]
        fn any_bewit_never_panics(b in any::<String>(), tail in "[a-z=&]{0,10}") {
            let resource = format!("/x?{tail}bewit={b}");
            let req = BewitRequest { method: "GET", resource: &resource, host: HOST, port: 443 };
            let _ = authenticate_bewit(&req, &clients(), at(NOW));
        }
    }
}
