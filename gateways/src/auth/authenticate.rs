//! authenticateHawk, for other services, and the conformance endpoints (testAuthenticate,
//! testAuthenticateGet).

use super::*;

/// An authenticateHawk body as an error echoes it: the caller's Authorization header and any
/// bewit in the resource left out.
fn without_credentials(payload: &Value) -> Value {
    let mut p = payload.clone();
    omit(&mut p, &["authorization"]);
    let resource = p.get("resource").and_then(Value::as_str);
    if resource.is_some_and(|r| r.contains("bewit=")) {
        omit(&mut p, &["resource"]);
    }
    p
}

pub(super) async fn authenticate_hawk(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("authenticateHawk", json!({}))
        .with_scrubbed_body(&headers, &body, without_credentials)
        .run(async {
            let body = auth.body()?;
            no_query(&uri)?;
            let body = body.input()?;
            let schema = "v1/authenticate-hawk-request.json";
            let obj = check_keys(
                &body,
                schema,
                &[
                    "method",
                    "resource",
                    "host",
                    "port",
                    "authorization",
                    "sourceIp",
                ],
                &["method", "resource", "host", "port"],
            )?;
            let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(method), Some(resource), Some(host)) =
                (text("method"), text("resource"), text("host"))
            else {
                return Err(ApiError::validation(
                    schema,
                    &["data/method, resource and host must be strings".into()],
                ));
            };
            // the schema's enum (lower case), `hostname` and ip formats
            let mut errors = Vec::new();
            if !HAWK_METHODS.contains(&method.as_str()) {
                errors.push("data/method must be equal to one of the allowed values".to_string());
            }
            if !is_hostname(&host) {
                errors.push("data/host must match format \"hostname\"".to_string());
            }
            if let Some(ip) = obj.get("sourceIp") {
                if ip
                    .as_str()
                    .is_none_or(|ip| ip.parse::<std::net::IpAddr>().is_err())
                {
                    errors.push("data/sourceIp must match exactly one schema in oneOf".to_string());
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::validation(schema, &errors));
            }
            let port = obj
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    ApiError::validation(schema, &["data/port must be an integer".into()])
                })?;
            let authorization = text("authorization");
            let signed = Signed {
                method: &method,
                resource: &resource,
                host: &host,
                port,
                authorization: authorization.as_deref(),
                content_type: None,
                body: b"",
                check_hash: false,
            };
            let result = match validate_signature(&signed, &st.clients) {
                Ok(Some(a)) => Ok(a),
                Err(message) => Err(message),
                Ok(None) => {
                    let expires = Millis::now().plus(15 * 60_000);
                    return Ok(ok(json!({
                        "status": "no-auth",
                        "scheme": "none",
                        "scopes": st.clients.anonymous_scopes().as_slice(),
                        "expires": expires.to_rfc3339(),
                    })));
                }
            };
            Ok(ok(match result {
                Ok(a) => {
                    let mut v = json!({
                        "status": "auth-success",
                        "scheme": "hawk",
                        "clientId": a.client_id,
                        "scopes": a.scopes.as_slice(),
                        "expires": Millis::from(a.expires).to_rfc3339(),
                    });
                    if let Some(h) = a.hash {
                        v["hash"] = json!(h);
                    }
                    v
                }
                Err(message) => json!({ "status": "auth-failed", "message": message }),
            }))
        })
        .await
}

/// The conformance client of testAuthenticate: `tester`/`no-secret` with given scopes and no
/// role expansion.
struct TestClient(Vec<String>);

impl ClientSource for TestClient {
    fn client(&self, client_id: &str) -> Option<ClientRecord> {
        (client_id == "tester").then(|| ClientRecord {
            client_id: "tester".into(),
            access_token: "no-secret".into(),
            scopes: taskledger_core::scopes::ScopeSet::new(self.0.clone()),
            final_scopes: false,
            expires: chrono::Utc::now() + chrono::Duration::days(365),
            disabled: false,
        })
    }

    fn issuer(&self, client_id: &str) -> Option<ClientRecord> {
        self.client(client_id)
    }
}

fn test_caller(
    source: &TestClient,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, ApiError> {
    let resource = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match authenticate_headers(method.as_str(), resource, headers, body, source) {
        Ok(Some(a)) => Ok(Caller::from(a)),
        Ok(None) => Ok(Caller::anonymous()),
        Err(message) => Err(ApiError::new(ErrorCode::AuthenticationFailed, message)),
    }
}

pub(super) async fn test_authenticate(
    method: Method,
    OriginalUri(uri): OriginalUri,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("testAuthenticate", json!({}))
        .with_body(&headers, &body)
        .run(async {
            let parsed = auth.body()?;
            // no scopes on the route: upstream authenticates in the handler, after the
            // query string and the body's schema
            query(&uri, &[])?;
            let input = parsed.input()?;
            let schema = "v1/test-authenticate-request.json";
            let obj = check_keys(&input, schema, &["clientScopes", "requiredScopes"], &[])?;
            let client_scopes =
                string_list(obj.get("clientScopes"), schema, "clientScopes")?.unwrap_or_default();
            let required = string_list(obj.get("requiredScopes"), schema, "requiredScopes")?
                .unwrap_or_default();
            let caller = test_caller(&TestClient(client_scopes), &method, &uri, &headers, &body)?;
            caller.require(&ScopeExpr::all_of_scopes(&required))?;
            Ok(ok(
                json!({ "clientId": caller.actor_id(), "scopes": caller.scopes.as_slice() }),
            ))
        })
        .await
}

pub(super) async fn test_authenticate_get(
    method: Method,
    OriginalUri(uri): OriginalUri,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
) -> Response {
    Call::new("testAuthenticateGet", json!({}))
        .run(async {
            // no scopes on the route: the body is read, then the handler authenticates
            auth.body()?;
            let source = TestClient(vec!["test:*".into(), "auth:create-client:test:*".into()]);
            let caller = test_caller(&source, &method, &uri, &headers, b"")?;
            query(&uri, &[])?;
            caller.require(&s("test:authenticate-get".into()))?;
            Ok(ok(
                json!({ "clientId": caller.actor_id(), "scopes": caller.scopes.as_slice() }),
            ))
        })
        .await
}

/// The methods authenticateHawk's request schema allows (lower case, as Node names them).
const HAWK_METHODS: [&str; 26] = [
    "get",
    "post",
    "put",
    "head",
    "delete",
    "options",
    "trace",
    "copy",
    "lock",
    "mkcol",
    "move",
    "purge",
    "propfind",
    "proppatch",
    "unlock",
    "report",
    "mkactivity",
    "checkout",
    "merge",
    "m-search",
    "notify",
    "subscribe",
    "unsubscribe",
    "patch",
    "search",
    "connect",
];

/// JSON schema's `hostname` format (RFC 1123 labels, 253 characters at most; an IPv4 address
/// is one too).
fn is_hostname(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && host.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}
