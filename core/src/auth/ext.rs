//! `ext`, the client, its certificate and `authorizedScopes` (auth.md §4).

use super::*;

/// Decode `ext`: base64 (standard or URL-safe alphabet, padding optional) of
/// JSON.
pub(super) fn parse_ext(ext: &str) -> Result<Value, AuthError> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let failed = || AuthError::new("Failed to parse ext");
    let standard: String = ext
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let bytes = LENIENT.decode(standard).map_err(|_| failed())?;
    match serde_json::from_str::<Value>(&String::from_utf8_lossy(&bytes)) {
        // JavaScript would fail reading `null.certificate`.
        Ok(Value::Null) | Err(_) => Err(failed()),
        Ok(value) => Ok(value),
    }
}

/// The key, scopes and expiry that a request is checked against.
pub(super) struct Credentials {
    /// The permanent client the key belongs to.
    pub(super) issuer: String,
    pub(super) access_token: String,
    pub(super) scopes: ScopeSet,
    /// `scopes` need no expansion (see `ClientRecord::final_scopes`).
    pub(super) final_scopes: bool,
    pub(super) expires: DateTime<Utc>,
}

/// JavaScript truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A member of `value` that is JavaScript-truthy (`value.get` is None for
/// anything but objects, as a JavaScript property read of a missing key).
fn truthy_member<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    value.get(key).filter(|v| truthy(v))
}

pub(super) fn load_credentials(
    credential_name: &str,
    ext: Option<&Value>,
    clients: &dyn ClientSource,
    now: DateTime<Utc>,
) -> Result<Credentials, AuthError> {
    let certificate = ext.and_then(|e| truthy_member(e, "certificate"));
    let issuer_id = match certificate.and_then(|c| truthy_member(c, "issuer")) {
        None => credential_name,
        Some(Value::String(issuer)) if issuer == credential_name => {
            return Err(AuthError::new(
                "ext.certificate.issuer must differ from the supplied clientId",
            ))
        }
        Some(Value::String(issuer)) => issuer.as_str(),
        Some(_) => return Err(AuthError::new("ext.certificate.issuer must be a string")),
    };
    // a certificate is checked against its issuer's own scopes, which the final scopes of
    // a plain request would widen with the anonymous role's
    let client = match certificate {
        Some(_) => load_client(issuer_id, clients.issuer(issuer_id), now)?,
        None => load_client(issuer_id, clients.client(issuer_id), now)?,
    };
    let mut creds = Credentials {
        issuer: client.client_id.clone(),
        access_token: client.access_token.clone(),
        scopes: client.scopes.clone(),
        final_scopes: client.final_scopes,
        expires: client.expires,
    };
    if let Some(certificate) = certificate {
        apply_certificate(
            certificate,
            credential_name,
            issuer_id,
            &client,
            &mut creds,
            now,
        )?;
    }
    if let Some(authorized) = ext.and_then(|e| truthy_member(e, "authorizedScopes")) {
        apply_authorized_scopes(authorized, &mut creds, clients)?;
    }
    Ok(creds)
}

/// `found`, the client `client_id` named, if it may authenticate now.
fn load_client(
    client_id: &str,
    found: Option<ClientRecord>,
    now: DateTime<Utc>,
) -> Result<ClientRecord, AuthError> {
    let client =
        found.ok_or_else(|| AuthError(format!("Client with clientId '{client_id}' not found")))?;
    if client.disabled {
        return Err(AuthError(format!(
            "Client with clientId '{client_id}' is disabled"
        )));
    }
    if client.expires < now {
        return Err(AuthError(format!(
            "Client with clientId: '{client_id}' has expired"
        )));
    }
    Ok(client)
}

/// An array of valid scopes, or None.
fn scope_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| {
            v.as_str()
                .filter(|s| scopes::is_valid_scope(s))
                .map(str::to_owned)
        })
        .collect()
}

/// A JSON number as JavaScript's `String(n)` prints it (for the values a
/// valid certificate can hold).
pub(super) fn js_number_text(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        format!("{f}")
    }
}

/// Certificate validation, auth.md §4.3 steps 1–6, then the switch to the
/// temporary key, the certificate's scopes and the earlier expiry.
fn apply_certificate(
    cert: &Value,
    credential_name: &str,
    issuer_id: &str,
    issuer: &ClientRecord,
    creds: &mut Credentials,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let fail = |message: &str| Err(AuthError::new(message));
    // 1. shape (a JSON array is a JavaScript Object without `version`)
    if !(cert.is_object() || cert.is_array()) {
        return fail("ext.certificate must be a JSON object");
    }
    if cert.get("version").and_then(Value::as_f64) != Some(1.0) {
        return fail("ext.certificate.version must be 1");
    }
    let Some(seed) = cert.get("seed").and_then(Value::as_str) else {
        return fail("ext.certificate.seed must be a string");
    };
    if seed.encode_utf16().count() != 44 {
        return fail("ext.certificate.seed must be 44 characters");
    }
    let Some(Value::Number(start)) = cert.get("start") else {
        return fail("ext.certificate.start must be a number");
    };
    let Some(Value::Number(expiry)) = cert.get("expiry") else {
        return fail("ext.certificate.expiry must be a number");
    };
    if !cert.get("scopes").is_some_and(Value::is_array) {
        return fail("ext.certificate.scopes must be an array");
    }
    let Some(cert_scopes) = cert.get("scopes").and_then(scope_list) else {
        return fail("ext.certificate.scopes must be an array of valid scopes");
    };

    // 2.–3. validity window
    let now_ms = now.timestamp_millis() as f64;
    let start_ms = start.as_f64().unwrap_or(f64::NAN);
    let expiry_ms = expiry.as_f64().unwrap_or(f64::NAN);
    if start_ms > now_ms + CERT_SKEW_MS {
        return fail("ext.certificate.start > now");
    }
    if expiry_ms < now_ms - CERT_SKEW_MS {
        return fail("ext.certificate.expiry < now");
    }
    if expiry_ms - start_ms > CERT_MAX_LIFETIME_MS {
        return fail("ext.certificate cannot last longer than 31 days!");
    }

    // 4. named or unnamed
    let named = issuer_id != credential_name;
    if named {
        let create_scope = format!("auth:create-client:{credential_name}");
        if !scopes::any_satisfies(&issuer.scopes, &create_scope) {
            return Err(AuthError(format!(
                "ext.certificate issuer `{}` doesn't have `{create_scope}` for supplied clientId.",
                issuer_id
            )));
        }
    } else if cert.get("clientId").is_some() {
        return fail("ext.certificate.clientId must only be used with ext.certificate.issuer");
    }

    // 5. the issuer holds every certificate scope
    if !scopes::covers_all(&issuer.scopes, &cert_scopes) {
        return Err(AuthError(format!(
            "ext.certificate issuer `{}` doesn't satisfy all certificate scopes {}.  \
             The temporary credentials were not generated correctly.",
            issuer_id,
            cert_scopes.join(", ")
        )));
    }

    // 6. signature
    let name = named.then_some(CertificateName {
        client_id: credential_name,
        issuer: issuer_id,
    });
    let expected = certificate_signature(
        &issuer.access_token,
        name.as_ref(),
        seed,
        &js_number_text(start),
        &js_number_text(expiry),
        &cert_scopes,
    );
    let signature_ok = cert
        .get("signature")
        .and_then(Value::as_str)
        .is_some_and(|sig| constant_time_eq(sig.as_bytes(), expected.as_bytes()));
    if !signature_ok {
        return fail(if named {
            "ext.certificate.signature is not valid, or wrong clientId provided"
        } else {
            "ext.certificate.signature is not valid"
        });
    }

    creds.access_token = temporary_access_token(&issuer.access_token, seed);
    // JavaScript's `new Date(ms)` truncates toward zero.
    if let Some(cert_expires) = DateTime::from_timestamp_millis(expiry_ms as i64) {
        creds.expires = creds.expires.min(cert_expires);
    }
    creds.scopes = ScopeSet::new(cert_scopes);
    creds.final_scopes = false;
    Ok(())
}

/// auth.md §4.4: the current scopes plus `assume:anonymous` must satisfy
/// every authorized scope; the scopes then become exactly those.
fn apply_authorized_scopes(
    authorized: &Value,
    creds: &mut Credentials,
    clients: &dyn ClientSource,
) -> Result<(), AuthError> {
    if !authorized.is_array() {
        return Err(AuthError::new("ext.authorizedScopes must be an array"));
    }
    let Some(authorized) = scope_list(authorized) else {
        return Err(AuthError::new(
            "ext.authorizedScopes must be an array of valid scopes",
        ));
    };
    let mut held = creds.scopes.to_vec();
    held.push(ANONYMOUS_SCOPE.to_owned());
    let held = clients.expand(held);
    if !scopes::covers_all(&held, &authorized) {
        // upstream's layout: both lists in fenced blocks, the credentials' scopes expanded
        return Err(AuthError(format!(
            "Supplied credentials do not satisfy authorizedScopes; credentials have scopes:\n\
             \n```\n{}\n```\n\nauthorizedScopes are:\n\n```\n{}\n```",
            held.join("\n"),
            authorized.join("\n")
        )));
    }
    creds.scopes = ScopeSet::new(authorized);
    creds.final_scopes = false;
    Ok(())
}
