//! The secrets service (`/api/secrets/v1`, reference/secrets.md): named JSON objects with an
//! expiry, written by `set`, removed by `remove`, read by `get` and listed by name. Every
//! change is a `SecretEvent` on the secrets partition; values are sealed (AES-256-GCM, bound
//! to the secret's name) before they reach the engine, and opened only to answer `get`.
//!
//! A secret past its `expires` is invisible at once (404, left out of `list`), as upstream,
//! and the expiry reactor removes it. Names take any characters but NUL (upstream's database
//! could not store one either); the scopes use the decoded name.

use crate::error::ApiError;
use crate::hawk::{actor, Auth, Caller};
use crate::queue::call::*;
use crate::{AppState, Mount};
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::get;
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::scopes::ScopeExpr;
use taskledger_core::secrets::{seal_owner, Secret, SecretCommand, SECRETS_TOPIC};
use taskledger_core::time::Millis;
use taskledger_projections::secrets_view::SECRETS_PARTITION;

type St = State<Arc<AppState>>;

const SECRET_SCHEMA: &str = "/schemas/secrets/v1/secret.json#";

/// Routes under `/api/secrets/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route("/secret/{*name}", get(get_secret).put(set).delete(remove))
        .route("/secrets", get(list))
}

/// The caller must hold `scope`; a name with a NUL byte is refused after that.
fn authorize<'a>(auth: &'a Auth, scope: String, name: &str) -> Result<&'a Caller, ApiError> {
    let caller = auth.caller()?;
    caller.require(&ScopeExpr::scope(scope))?;
    if name.contains('\0') {
        return Err(ApiError::bad_param("name", name, "^[^\\x00]+$"));
    }
    Ok(caller)
}

/// A `set` body as an error echoes it: the value left out.
fn without_value(payload: &Value) -> Value {
    let mut p = payload.clone();
    omit(&mut p, &["secret"]);
    p
}

/// `set`'s body, checked against `secret.json`: `{secret: object, expires: date-time}`.
fn secret_body(body: &Value) -> Result<(String, Millis), ApiError> {
    let obj = crate::auth::check_keys(
        body,
        SECRET_SCHEMA,
        &["secret", "expires"],
        &["secret", "expires"],
    )?;
    let mut errors = Vec::new();
    let value = obj.get("secret").filter(|v| v.is_object());
    if value.is_none() {
        errors.push("data/secret must be object".to_string());
    }
    let expires = date_time(&obj, "expires", &mut errors);
    match (value, expires) {
        (Some(v), Some(e)) if errors.is_empty() => Ok((v.to_string(), e)),
        _ => Err(ApiError::validation(SECRET_SCHEMA, &errors)),
    }
}

async fn set(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("set", json!({ "name": name }))
        .with_scrubbed_body(&headers, &body, without_value)
        .run(async {
            let body = auth.body()?;
            let caller = authorize(&auth, format!("secrets:set:{name}"), &name)?;
            no_query(&uri)?;
            let (value, expires) = secret_body(&body.input()?)?;
            let value = crate::auth::seal(st.clients.seal_key(), &seal_owner(&name), &value)?;
            let cmd = SecretCommand::Set {
                name: name.clone(),
                value,
                expires,
            };
            st.secrets.execute(actor(caller), cmd).await?;
            Ok(ok(json!({})))
        })
        .await
}

async fn remove(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Response {
    Call::new("remove", json!({ "name": name }))
        .run(async {
            let caller = authorize(&auth, format!("secrets:set:{name}"), &name)?;
            no_query(&uri)?;
            let cmd = SecretCommand::Remove { name: name.clone() };
            st.secrets.execute(actor(caller), cmd).await?;
            Ok(ok(json!({})))
        })
        .await
}

async fn get_secret(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Response {
    Call::new("get", json!({ "name": name }))
        .run(async {
            authorize(&auth, format!("secrets:get:{name}"), &name)?;
            no_query(&uri)?;
            let visible = || -> Result<Option<Secret>, ApiError> {
                Ok(st
                    .secrets
                    .view()
                    .get(&name)?
                    .filter(|s| s.visible(Millis::now())))
            };
            let mut secret = visible()?;
            // a follower's projection is a moment behind the writer, which may have just set it
            if secret.is_none()
                && crate::follow_to_end(&st, SECRETS_TOPIC, SECRETS_PARTITION, st.secrets.role())
                    .await
            {
                secret = visible()?;
            }
            let secret = secret.ok_or_else(|| ApiError::not_found("Secret not found"))?;
            let text = st
                .clients
                .seal_key()
                .open(&seal_owner(&name), &secret.value)
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "the value of secret {name} does not open with this server's crypto key"
                    ))
                })?;
            let value: Value = serde_json::from_str(&text).map_err(ApiError::internal)?;
            Ok(ok(json!({
                "secret": value,
                "expires": secret.expires.to_rfc3339(),
            })))
        })
        .await
}

async fn list(uri: Uri, State(st): St, Extension(auth): Extension<Auth>) -> Response {
    Call::new("list", json!({}))
        .run(async {
            auth.caller()?
                .require(&ScopeExpr::scope("secrets:list-secrets".to_string()))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let after = name_token(&q)?;
            let (names, more) =
                st.secrets
                    .view()
                    .list(after.as_deref(), limit(&q), Millis::now())?;
            Ok(ok(with_name_token(json!({ "secrets": names }), more)))
        })
        .await
}
