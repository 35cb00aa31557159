//! The auth service's HTTP API (reference/auth.md §9): clients, roles, scope expansion,
//! audit history from the event log, the conformance endpoints and authenticateHawk.
//! Cloud-credential endpoints answer "not configured" (no backend is configured yet).

use crate::error::{ApiError, ErrorCode};
use crate::hawk::{actor, authenticate_headers, validate_signature, Auth, Caller, Signed};
use crate::queue::call::*;
use crate::AppState;
use crate::Mount;
use axum::body::Bytes;
use axum::extract::{Extension, OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use taskledger_core::access::seal::{SealKey, Sealed};
use taskledger_core::access::{AuthCommand, Client, Role, STATIC_PREFIX};
use taskledger_core::auth::{ClientRecord, ClientSource};
use taskledger_core::scopes::{self, ScopeExpr};
use taskledger_core::time::Millis;
use taskledger_projections::AuditEntry;

mod audit;
mod authenticate;
mod clients;
mod cloud;
mod roles;
use audit::*;
use authenticate::*;
use clients::*;
use cloud::*;
use roles::*;

type St = State<Arc<AppState>>;

const CLIENT_ID_RE: &str = "^[A-Za-z0-9!@/:.+|_-]+$";
const ROLE_ID_RE: &str = "^[\\x20-\\x7e]+$";
/// What upstream appends to every static client's description.
const STATIC_SUFFIX: &str =
    "\n---\n\nThis is a **static client** inserted into this taskcluster deployment\n\
through static configuration. To modify this client you must contact the\n\
administrator who deploys this taskcluster instance.";

/// Routes under `/api/auth/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route("/clients/", get(list_clients))
        .route(
            "/clients/{clientId}",
            get(client)
                .put(create_client)
                .post(update_client)
                .delete(delete_client),
        )
        .route("/clients/{clientId}/reset", post(reset_access_token))
        .route("/clients/{clientId}/enable", post(enable_client))
        .route("/clients/{clientId}/disable", post(disable_client))
        .route("/clients/{clientId}/audit", get(list_audit_history))
        .route("/audit/{entityType}/{entityId}", get(get_entity_history))
        .route("/roles/", get(list_roles))
        .route("/roles2/", get(list_roles2))
        .route("/roleids/", get(list_role_ids))
        .route(
            "/roles/{roleId}",
            get(role)
                .put(create_role)
                .post(update_role)
                .delete(delete_role),
        )
        .route("/scopes/expand", post(expand_scopes))
        .route("/scopes/current", get(current_scopes))
        .route(
            "/aws/s3/{level}/{bucket}/{*prefix}",
            get(aws_s3_credentials),
        )
        .route("/azure/accounts", get(azure_accounts))
        .route("/azure/{account}/tables", get(azure_tables))
        .route(
            "/azure/{account}/table/{table}/{level}",
            get(azure_table_sas),
        )
        .route("/azure/{account}/containers", get(azure_containers))
        .route(
            "/azure/{account}/containers/{container}/{level}",
            get(azure_container_sas),
        )
        .route("/sentry/{project}/dsn", get(sentry_dsn))
        .route(
            "/websocktunnel/{wstAudience}/{wstClient}",
            get(websocktunnel_token),
        )
        .route(
            "/gcp/credentials/{projectId}/{serviceAccount}",
            get(gcp_credentials),
        )
        .route(
            "/github/{appName}/{owner}/repo-token",
            post(github_repo_token),
        )
        .route("/authenticate-hawk", post(authenticate_hawk))
        .route("/test-authenticate", post(test_authenticate))
        .route("/test-authenticate-get/", get(test_authenticate_get))
}

fn client_param(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!@/:.+|_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_param("clientId", id, CLIENT_ID_RE))
    }
}

fn role_param(id: &str) -> Result<(), ApiError> {
    if !id.is_empty() && scopes::is_valid_scope(id) {
        Ok(())
    } else {
        Err(ApiError::bad_param("roleId", id, ROLE_ID_RE))
    }
}

fn not_static(id: &str) -> Result<(), ApiError> {
    if id.starts_with(STATIC_PREFIX) {
        return Err(ApiError::input(format!(
            "clientId \"{id}\" starts with \"{STATIC_PREFIX}\" which is reserved for statically \
             configured clients. Contact your administrator to change static clients."
        )));
    }
    Ok(())
}

fn no_double_star(list: &[String]) -> Result<(), ApiError> {
    if list.iter().any(|s| s.ends_with("**")) {
        return Err(ApiError::input("scopes must not end with `**`"));
    }
    Ok(())
}

/// A fresh 44-character access token: two v4 slugids.
fn new_access_token() -> String {
    format!("{}{}", slugid::v4(), slugid::v4())
}

/// Seals `token` for `client_id` (any owner) with a nonce from the system's randomness.
pub(crate) fn seal(key: &SealKey, client_id: &str, token: &str) -> Result<Sealed, ApiError> {
    let mut nonce = [0u8; 12];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ApiError::internal("no system randomness"))?;
    Ok(key.seal(client_id, token, nonce))
}

// --- input shapes -----------------------------------------------------------------------

/// Checks an input object against its allowed and required keys (the schemas'
/// `additionalProperties: false`), Taskcluster's InputValidationError otherwise.
pub(crate) fn check_keys(
    body: &Value,
    schema: &str,
    allowed: &[&str],
    required: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::validation(
            schema,
            &["data must be object".into()],
        ));
    };
    let mut errors = Vec::new();
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            errors.push(format!(
                "data must NOT have additional properties: {}",
                Value::from(k.as_str())
            ));
        }
    }
    for k in required {
        if !obj.contains_key(*k) {
            errors.push(format!("data must have required property '{k}'"));
        }
    }
    if errors.is_empty() {
        Ok(obj.clone())
    } else {
        Err(ApiError::validation(schema, &errors))
    }
}

fn string_list(
    v: Option<&Value>,
    schema: &str,
    field: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let bad = || {
        ApiError::validation(
            schema,
            &[format!("data/{field} must be an array of scopes")],
        )
    };
    let arr = v.as_array().ok_or_else(bad)?;
    let list = arr
        .iter()
        .map(|x| {
            x.as_str()
                .filter(|s| scopes::is_valid_scope(s))
                .map(str::to_string)
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // every scope list of the auth schemas has `uniqueItems: true`
    if let Some((later, i)) = repeated_item(list.iter().map(String::as_str).enumerate()) {
        return Err(ApiError::validation(
            schema,
            &[format!(
                "data/{field} must NOT have duplicate items (items ## {later} and {i} are identical)"
            )],
        ));
    }
    Ok(Some(list))
}

struct ClientInput {
    description: String,
    expires: Millis,
    scopes: Option<Vec<String>>,
    delete_on_expiration: Option<bool>,
}

fn client_input(body: &Value, schema: &str) -> Result<ClientInput, ApiError> {
    let obj = check_keys(
        body,
        schema,
        &["description", "expires", "scopes", "deleteOnExpiration"],
        &["description", "expires"],
    )?;
    let description = obj["description"]
        .as_str()
        .filter(|d| d.len() <= 10240 || d.chars().count() <= 10240)
        .ok_or_else(|| {
            ApiError::validation(
                schema,
                &["data/description must be a string of at most 10240 characters".into()],
            )
        })?
        .to_string();
    let expires = obj["expires"]
        .as_str()
        .and_then(Millis::parse_rfc3339)
        .ok_or_else(|| {
            ApiError::validation(
                schema,
                &["data/expires must match format \"date-time\"".into()],
            )
        })?;
    let scopes_ = string_list(obj.get("scopes"), schema, "scopes")?;
    let delete_on_expiration = match obj.get("deleteOnExpiration") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::validation(
                schema,
                &["data/deleteOnExpiration must be boolean".into()],
            ))
        }
    };
    Ok(ClientInput {
        description,
        expires,
        scopes: scopes_,
        delete_on_expiration,
    })
}

fn role_input(body: &Value, schema: &str) -> Result<(String, Vec<String>), ApiError> {
    let obj = check_keys(
        body,
        schema,
        &["description", "scopes"],
        &["description", "scopes"],
    )?;
    let description = obj["description"]
        .as_str()
        .filter(|d| d.len() <= 10240 || d.chars().count() <= 10240)
        .ok_or_else(|| ApiError::validation(schema, &["data/description must be a string".into()]))?
        .to_string();
    let scopes_ = string_list(obj.get("scopes"), schema, "scopes")?.unwrap_or_default();
    Ok((description, scopes_))
}

// --- JSON shapes ------------------------------------------------------------------------

fn client_json(st: &AppState, c: &Client) -> Value {
    json!({
        "clientId": c.client_id,
        "description": c.description,
        "expires": c.expires.to_rfc3339(),
        "created": c.created.to_rfc3339(),
        "lastModified": c.last_modified.to_rfc3339(),
        "lastDateUsed": c.last_date_used.to_rfc3339(),
        "lastRotated": c.last_rotated.to_rfc3339(),
        "deleteOnExpiration": c.delete_on_expiration,
        "scopes": c.scopes,
        "expandedScopes": *st.auth.view().expand(c.scopes.clone()),
        "disabled": c.disabled,
    })
}

fn static_client_json(st: &AppState, c: &ClientRecord) -> Value {
    let started = Millis::from(st.started_at);
    let expires = started.plus(1000 * 365 * 86_400_000);
    // as upstream: the deployment's own clients are "Internal client", the others say what
    // their configuration says; every one gets the static suffix; scopes as configured
    let description = match st.clients.static_description(&c.client_id) {
        Some(d) => d,
        None if c.client_id.starts_with("static/taskcluster/") => "Internal client",
        None => "",
    };
    json!({
        "clientId": c.client_id,
        "description": format!("{description}{STATIC_SUFFIX}"),
        "expires": expires.to_rfc3339(),
        "created": started.to_rfc3339(),
        "lastModified": started.to_rfc3339(),
        "lastDateUsed": started.to_rfc3339(),
        "lastRotated": started.to_rfc3339(),
        "deleteOnExpiration": false,
        "scopes": *c.scopes,
        "expandedScopes": st.clients.expand(c.scopes.to_vec()).as_slice(),
        "disabled": false,
    })
}

fn role_json(st: &AppState, r: &Role) -> Value {
    json!({
        "roleId": r.role_id,
        "scopes": r.scopes,
        "expandedScopes": *st.auth.view().expand(vec![format!("assume:{}", r.role_id)]),
        "description": r.description,
        "created": r.created.to_rfc3339(),
        "lastModified": r.last_modified.to_rfc3339(),
    })
}

fn audit_json(rows: &[AuditEntry]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            json!({
                "clientId": r.client_id,
                "actionType": r.action_type,
                "created": r.created.to_rfc3339(),
                "entityId": r.entity_id,
                "entityType": r.entity_type,
            })
        })
        .collect()
}

fn with_token(mut v: Value, token: &str) -> Value {
    v["accessToken"] = json!(token);
    v
}

fn load_client(st: &AppState, id: &str) -> Result<Client, ApiError> {
    st.auth
        .view()
        .client(id)
        .ok_or_else(|| ApiError::not_found("Client not found"))
}
