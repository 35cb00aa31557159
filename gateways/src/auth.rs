//! The auth service's HTTP API (reference/auth.md §9): clients, roles, scope expansion,
//! audit history from the event log, the conformance endpoints and authenticateHawk.
//! Cloud-credential endpoints answer "not configured" (no backend is configured yet).

use crate::error::{ApiError, ErrorCode};
use crate::hawk::{actor, authenticate_headers, authenticate_request, Auth, Caller, Signed};
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

type St = State<Arc<AppState>>;

const CLIENT_ID_RE: &str = "^[A-Za-z0-9!@/:.+|_-]+$";
const ROLE_ID_RE: &str = "^[\\x20-\\x7e]+$";
const STATIC_SUFFIX: &str = "\n---\nThis is a static client, configured for the deployment; \
it cannot be changed through the API.";

/// Routes under `/api/auth/v1`.
pub fn routes(service: Mount) -> Mount {
    // each listing route twice: upstream's express routing ignores a trailing slash
    service
        .route("/clients/", get(list_clients))
        .route("/clients", get(list_clients))
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
        .route("/roles", get(list_roles))
        .route("/roles2/", get(list_roles2))
        .route("/roles2", get(list_roles2))
        .route("/roleids/", get(list_role_ids))
        .route("/roleids", get(list_role_ids))
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
        .route("/test-authenticate-get", get(test_authenticate_get))
}

fn s(scope: String) -> ScopeExpr {
    ScopeExpr::scope(scope)
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
             configured clients; such clients cannot be changed through the API"
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
            errors.push(format!("data must NOT have additional properties: {k}"));
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
    arr.iter()
        .map(|x| {
            x.as_str()
                .filter(|s| scopes::is_valid_scope(s))
                .map(str::to_string)
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
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
        .filter(|d| d.len() <= 10240)
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
        .filter(|d| d.len() <= 10240)
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
    let mut stored = c.scopes.to_vec();
    stored.sort();
    json!({
        "clientId": c.client_id,
        "description": format!("static client{STATIC_SUFFIX}"),
        "expires": expires.to_rfc3339(),
        "created": started.to_rfc3339(),
        "lastModified": started.to_rfc3339(),
        "lastDateUsed": started.to_rfc3339(),
        "lastRotated": started.to_rfc3339(),
        "deleteOnExpiration": false,
        "scopes": stored,
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

// --- clients ----------------------------------------------------------------------------

async fn list_clients(State(st): St, Extension(auth): Extension<Auth>, uri: Uri) -> Response {
    Call::new("listClients", json!({}))
        .run(async {
            auth.caller()?.require(&s("auth:list-clients".into()))?;
            let q = query(&uri, &["prefix", "continuationToken", "limit"])?;
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            let after = decode_token(&q)?.map(|t| String::from_utf8_lossy(&t).into_owned());
            let limit = limit(&q);
            let mut rows: Vec<(String, Value)> = st
                .clients
                .statics()
                .filter(|c| c.client_id.starts_with(&prefix))
                .map(|c| (c.client_id.clone(), static_client_json(&st, c)))
                .collect();
            let stored: Vec<Client> = st.auth.view().read(|a| {
                a.clients
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, c)| c.clone())
                    .collect()
            });
            rows.extend(
                stored
                    .iter()
                    .map(|c| (c.client_id.clone(), client_json(&st, c))),
            );
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let rows: Vec<(String, Value)> = rows
                .into_iter()
                .filter(|(id, _)| after.as_ref().is_none_or(|a| id > a))
                .collect();
            let more = rows.len() > limit;
            let page: Vec<(String, Value)> = rows.into_iter().take(limit).collect();
            let mut out =
                json!({ "clients": page.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>() });
            if more {
                if let Some((last, _)) = page.last() {
                    out["continuationToken"] = json!(encode_token(last.as_bytes()));
                }
            }
            Ok(ok(out))
        })
        .await
}

async fn client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    Call::new("client", json!({ "clientId": id }))
        .run(async {
            auth.caller()?
                .require(&s(format!("auth:get-client:{id}")))?;
            client_param(&id)?;
            no_query(&uri)?;
            if let Some(c) = st.clients.static_client(&id) {
                return Ok(ok(static_client_json(&st, c)));
            }
            Ok(ok(client_json(&st, &load_client(&st, &id)?)))
        })
        .await
}

async fn create_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("createClient", json!({ "clientId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            client_param(&id)?;
            no_query(&uri)?;
            let input = client_input(&body.input()?, "v1/create-client-request.json")?;
            not_static(&id)?;
            let scopes_ = input.scopes.unwrap_or_default();
            no_double_star(&scopes_)?;
            let mut required = vec![s(format!("auth:create-client:{id}"))];
            required.extend(scopes_.iter().cloned().map(ScopeExpr::scope));
            caller.require(&ScopeExpr::all(required))?;
            let token = new_access_token();
            let cmd = AuthCommand::CreateClient {
                client_id: id.clone(),
                description: input.description,
                expires: input.expires,
                scopes: scopes_,
                delete_on_expiration: input.delete_on_expiration.unwrap_or(false),
                token: seal(st.clients.seal_key(), &id, &token)?,
            };
            st.auth.execute(actor(caller), cmd).await?;
            Ok(ok(with_token(
                client_json(&st, &load_client(&st, &id)?),
                &token,
            )))
        })
        .await
}

async fn update_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("updateClient", json!({ "clientId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            client_param(&id)?;
            no_query(&uri)?;
            let input = client_input(&body.input()?, "v1/create-client-request.json")?;
            not_static(&id)?;
            if let Some(sc) = &input.scopes {
                no_double_star(sc)?;
            }
            let current = load_client(&st, &id)?;
            let mut required = vec![s(format!("auth:update-client:{id}"))];
            if let Some(sc) = &input.scopes {
                required.extend(
                    sc.iter()
                        .filter(|x| !current.scopes.contains(x))
                        .cloned()
                        .map(ScopeExpr::scope),
                );
            }
            caller.require(&ScopeExpr::all(required))?;
            let cmd = AuthCommand::UpdateClient {
                client_id: id.clone(),
                description: input.description,
                expires: input.expires,
                scopes: input.scopes,
                delete_on_expiration: input.delete_on_expiration,
            };
            st.auth.execute(actor(caller), cmd).await?;
            Ok(ok(client_json(&st, &load_client(&st, &id)?)))
        })
        .await
}

async fn reset_access_token(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    Call::new("resetAccessToken", json!({ "clientId": id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("auth:reset-access-token:{id}")))?;
            client_param(&id)?;
            no_query(&uri)?;
            not_static(&id)?;
            let token = new_access_token();
            let cmd = AuthCommand::ResetAccessToken {
                client_id: id.clone(),
                token: seal(st.clients.seal_key(), &id, &token)?,
            };
            st.auth.execute(actor(caller), cmd).await?;
            Ok(ok(with_token(
                client_json(&st, &load_client(&st, &id)?),
                &token,
            )))
        })
        .await
}

async fn toggle_client(
    uri: &Uri,
    st: Arc<AppState>,
    auth: Auth,
    id: String,
    enable: bool,
) -> Response {
    let (name, scope) = if enable {
        ("enableClient", "auth:enable-client")
    } else {
        ("disableClient", "auth:disable-client")
    };
    Call::new(name, json!({ "clientId": id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("{scope}:{id}")))?;
            client_param(&id)?;
            no_query(uri)?;
            not_static(&id)?;
            let cmd = if enable {
                AuthCommand::EnableClient {
                    client_id: id.clone(),
                }
            } else {
                AuthCommand::DisableClient {
                    client_id: id.clone(),
                }
            };
            st.auth.execute(actor(caller), cmd).await?;
            Ok(ok(client_json(&st, &load_client(&st, &id)?)))
        })
        .await
}

async fn enable_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    toggle_client(&uri, st, auth, id, true).await
}

async fn disable_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    toggle_client(&uri, st, auth, id, false).await
}

async fn delete_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    Call::new("deleteClient", json!({ "clientId": id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("auth:delete-client:{id}")))?;
            client_param(&id)?;
            no_query(&uri)?;
            not_static(&id)?;
            st.auth
                .execute(
                    actor(caller),
                    AuthCommand::DeleteClient {
                        client_id: id.clone(),
                    },
                )
                .await?;
            Ok(no_content())
        })
        .await
}

// --- audit ------------------------------------------------------------------------------

fn audit_page(rows: Vec<AuditEntry>, next: Option<Vec<u8>>) -> Response {
    let mut out = json!({ "auditHistory": audit_json(&rows) });
    if let Some(k) = next {
        out["continuationToken"] = json!(encode_token(&k));
    }
    ok(out)
}

async fn get_entity_history(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((kind, id)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    Call::new(
        "getEntityHistory",
        json!({ "entityType": kind, "entityId": id }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("auth:audit-history:{kind}")))?;
        if !["client", "role", "secret", "hook", "worker-pool"].contains(&kind.as_str()) {
            return Err(ApiError::bad_param(
                "entityType",
                &kind,
                "^(client|role|secret|hook|worker-pool)$",
            ));
        }
        let q = query(&uri, &["continuationToken", "limit"])?;
        let (rows, next) =
            st.auth
                .view()
                .entity_history(&kind, &id, decode_token(&q)?, limit(&q))?;
        Ok(audit_page(rows, next))
    })
    .await
}

async fn list_audit_history(
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    Call::new("listAuditHistory", json!({ "clientId": id }))
        .run(async {
            auth.caller()?
                .require(&s(format!("auth:client-audit-history:{id}")))?;
            client_param(&id)?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let (rows, next) = st
                .auth
                .view()
                .actor_history(&id, decode_token(&q)?, limit(&q))?;
            Ok(audit_page(rows, next))
        })
        .await
}

// --- roles ------------------------------------------------------------------------------

fn all_roles(st: &AppState) -> Vec<Role> {
    st.auth.view().read(|a| a.roles.values().cloned().collect())
}

/// A page of roles after the token's roleId, and the next token.
fn role_page(st: &AppState, uri: &Uri) -> Result<(Vec<Role>, Option<String>), ApiError> {
    let q = query(uri, &["continuationToken", "limit"])?;
    let after = decode_token(&q)?.map(|t| String::from_utf8_lossy(&t).into_owned());
    let all: Vec<Role> = all_roles(st)
        .into_iter()
        .filter(|r| after.as_ref().is_none_or(|a| &r.role_id > a))
        .collect();
    let limit = if q.contains_key("limit") {
        limit(&q)
    } else {
        usize::MAX
    };
    let more = all.len() > limit;
    let page: Vec<Role> = all.into_iter().take(limit).collect();
    let next = if more {
        page.last().map(|r| encode_token(r.role_id.as_bytes()))
    } else {
        None
    };
    Ok((page, next))
}

async fn list_roles(uri: Uri, State(st): St, Extension(auth): Extension<Auth>) -> Response {
    Call::new("listRoles", json!({}))
        .run(async {
            auth.caller()?.require(&s("auth:list-roles".into()))?;
            no_query(&uri)?;
            let roles: Vec<Value> = all_roles(&st).iter().map(|r| role_json(&st, r)).collect();
            Ok(ok(Value::Array(roles)))
        })
        .await
}

async fn list_roles2(State(st): St, Extension(auth): Extension<Auth>, uri: Uri) -> Response {
    Call::new("listRoles2", json!({}))
        .run(async {
            auth.caller()?.require(&s("auth:list-roles".into()))?;
            let (page, next) = role_page(&st, &uri)?;
            let mut out =
                json!({ "roles": page.iter().map(|r| role_json(&st, r)).collect::<Vec<_>>() });
            if let Some(t) = next {
                out["continuationToken"] = json!(t);
            }
            Ok(ok(out))
        })
        .await
}

async fn list_role_ids(State(st): St, Extension(auth): Extension<Auth>, uri: Uri) -> Response {
    Call::new("listRoleIds", json!({}))
        .run(async {
            auth.caller()?.require(&s("auth:list-roles".into()))?;
            let (page, next) = role_page(&st, &uri)?;
            let mut out =
                json!({ "roleIds": page.iter().map(|r| r.role_id.clone()).collect::<Vec<_>>() });
            if let Some(t) = next {
                out["continuationToken"] = json!(t);
            }
            Ok(ok(out))
        })
        .await
}

async fn role(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    Call::new("role", json!({ "roleId": id }))
        .run(async {
            auth.caller()?.require(&s(format!("auth:get-role:{id}")))?;
            role_param(&id)?;
            no_query(&uri)?;
            let r = st
                .auth
                .view()
                .role(&id)
                .ok_or_else(|| ApiError::not_found("Role not found"))?;
            Ok(ok(role_json(&st, &r)))
        })
        .await
}

/// Runs a role command and answers with the role as it now is.
async fn write_role(
    st: &AppState,
    caller: &Caller,
    cmd: AuthCommand,
    id: &str,
) -> Result<Response, ApiError> {
    st.auth.execute(actor(caller), cmd).await?;
    let r = st
        .auth
        .view()
        .role(id)
        .ok_or_else(|| ApiError::internal("role vanished"))?;
    Ok(ok(role_json(st, &r)))
}

async fn create_role(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("createRole", json!({ "roleId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            role_param(&id)?;
            no_query(&uri)?;
            let (description, scopes_) = role_input(&body.input()?, "v1/create-role-request.json")?;
            no_double_star(&scopes_)?;
            let mut required = vec![s(format!("auth:create-role:{id}"))];
            required.extend(scopes_.iter().cloned().map(ScopeExpr::scope));
            caller.require(&ScopeExpr::all(required))?;
            let cmd = AuthCommand::CreateRole {
                role_id: id.clone(),
                description,
                scopes: scopes_,
            };
            write_role(&st, caller, cmd, &id).await
        })
        .await
}

async fn update_role(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("updateRole", json!({ "roleId": id }))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            role_param(&id)?;
            no_query(&uri)?;
            let (description, scopes_) = role_input(&body.input()?, "v1/create-role-request.json")?;
            no_double_star(&scopes_)?;
            let current = st
                .auth
                .view()
                .role(&id)
                .ok_or_else(|| ApiError::not_found("Role not found"))?;
            let held = st.auth.view().expand(current.scopes.clone());
            let mut required = vec![s(format!("auth:update-role:{id}"))];
            required.extend(
                scopes_
                    .iter()
                    .zip(scopes::covered(&held, &scopes_))
                    .filter(|(_, had)| !had)
                    .map(|(x, _)| ScopeExpr::scope(x.clone())),
            );
            caller.require(&ScopeExpr::all(required))?;
            let cmd = AuthCommand::UpdateRole {
                role_id: id.clone(),
                description,
                scopes: scopes_,
            };
            write_role(&st, caller, cmd, &id).await
        })
        .await
}

async fn delete_role(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    Call::new("deleteRole", json!({ "roleId": id }))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s(format!("auth:delete-role:{id}")))?;
            role_param(&id)?;
            no_query(&uri)?;
            st.auth
                .execute(
                    actor(caller),
                    AuthCommand::DeleteRole {
                        role_id: id.clone(),
                    },
                )
                .await?;
            Ok(no_content())
        })
        .await
}

// --- scopes -----------------------------------------------------------------------------

async fn expand_scopes(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("expandScopes", json!({}))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            auth.caller()?.require(&s("auth:expand-scopes".into()))?;
            no_query(&uri)?;
            let body = body.input()?;
            let obj = check_keys(&body, "v1/scopeset.json", &["scopes"], &[])?;
            let input =
                string_list(obj.get("scopes"), "v1/scopeset.json", "scopes")?.unwrap_or_default();
            Ok(ok(json!({ "scopes": st.clients.expand(input).as_slice() })))
        })
        .await
}

async fn current_scopes(uri: Uri, Extension(auth): Extension<Auth>) -> Response {
    Call::new("currentScopes", json!({}))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s("auth:current-scopes".into()))?;
            no_query(&uri)?;
            Ok(ok(json!({ "scopes": caller.scopes.as_slice() })))
        })
        .await
}

// --- cloud credentials: not configured ------------------------------------------------

fn level_expr(level: &str, read_only: String, read_write: String) -> ScopeExpr {
    if level == "read-only" {
        ScopeExpr::any(vec![s(read_only), s(read_write)])
    } else {
        s(read_write)
    }
}

async fn aws_s3_credentials(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((level, bucket, prefix)): Path<(String, String, String)>,
) -> Response {
    Call::new(
        "awsS3Credentials",
        json!({ "level": level, "bucket": bucket, "prefix": prefix }),
    )
    .run(async {
        let caller = auth.caller()?;
        if level != "read-only" && level != "read-write" {
            return Err(ApiError::input(
                "level must be either read-only or read-write",
            ));
        }
        caller.require(&level_expr(
            &level,
            format!("auth:aws-s3:read-only:{bucket}/{prefix}"),
            format!("auth:aws-s3:read-write:{bucket}/{prefix}"),
        ))?;
        query(&uri, &["format"])?;
        if prefix.starts_with('/') {
            return Err(ApiError::input("The `prefix` may not start with \"/\""));
        }
        Err(ApiError::not_found(format!(
            "Bucket `{bucket}` is not configured for this deployment"
        )))
    })
    .await
}

async fn azure_accounts(uri: Uri, Extension(auth): Extension<Auth>) -> Response {
    Call::new("azureAccounts", json!({}))
        .run(async {
            auth.caller()?
                .require(&s("auth:azure-table:list-accounts".into()))?;
            no_query(&uri)?;
            Ok(ok(json!({ "accounts": [] })))
        })
        .await
}

fn unknown_account(account: &str) -> ApiError {
    ApiError::not_found(format!("Account '{account}' not found, can't list tables"))
}

async fn azure_tables(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path(account): Path<String>,
) -> Response {
    Call::new("azureTables", json!({ "account": account }))
        .run(async {
            auth.caller()?
                .require(&s(format!("auth:azure-table:list-tables:{account}")))?;
            query(&uri, &["continuationToken"])?;
            Err(unknown_account(&account))
        })
        .await
}

/// azureTableSAS and azureContainerSAS: level check, then the level's scopes; no Azure
/// account is configured, so every account is unknown.
async fn azure_sas(
    uri: &Uri,
    auth: Auth,
    method: &'static str,
    kind: &str,
    params: [String; 3],
) -> Response {
    let [account, name, level] = params;
    let name_key = if kind == "table" {
        "table"
    } else {
        "container"
    };
    Call::new(
        method,
        json!({ "account": account, name_key: name, "level": level }),
    )
    .run(async {
        let caller = auth.caller()?;
        if level != "read-only" && level != "read-write" {
            return Err(ApiError::bad_param(
                "level",
                &level,
                "^(read-write|read-only)$",
            ));
        }
        caller.require(&level_expr(
            &level,
            format!("auth:azure-{kind}:read-only:{account}/{name}"),
            format!("auth:azure-{kind}:read-write:{account}/{name}"),
        ))?;
        no_query(uri)?;
        Err(unknown_account(&account))
    })
    .await
}

async fn azure_table_sas(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((account, table, level)): Path<(String, String, String)>,
) -> Response {
    azure_sas(
        &uri,
        auth,
        "azureTableSAS",
        "table",
        [account, table, level],
    )
    .await
}

async fn azure_containers(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path(account): Path<String>,
) -> Response {
    Call::new("azureContainers", json!({ "account": account }))
        .run(async {
            auth.caller()?.require(&s(format!(
                "auth:azure-container:list-containers:{account}"
            )))?;
            query(&uri, &["continuationToken"])?;
            Err(unknown_account(&account))
        })
        .await
}

async fn azure_container_sas(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((account, container, level)): Path<(String, String, String)>,
) -> Response {
    azure_sas(
        &uri,
        auth,
        "azureContainerSAS",
        "container",
        [account, container, level],
    )
    .await
}

async fn sentry_dsn(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path(project): Path<String>,
) -> Response {
    Call::new("sentryDSN", json!({ "project": project }))
        .run(async {
            auth.caller()?
                .require(&s(format!("auth:sentry:{project}")))?;
            no_query(&uri)?;
            Err(ApiError::not_found(
                "Sentry is not configured for this deployment",
            ))
        })
        .await
}

async fn websocktunnel_token(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((audience, wst_client)): Path<(String, String)>,
) -> Response {
    Call::new(
        "websocktunnelToken",
        json!({ "wstAudience": audience, "wstClient": wst_client }),
    )
    .run(async {
        auth.caller()?.require(&s(format!(
            "auth:websocktunnel-token:{audience}/{wst_client}"
        )))?;
        no_query(&uri)?;
        Err(ApiError::not_found(
            "websocktunnel is not configured for this deployment",
        ))
    })
    .await
}

async fn gcp_credentials(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((project, account)): Path<(String, String)>,
) -> Response {
    Call::new(
        "gcpCredentials",
        json!({ "projectId": project, "serviceAccount": account }),
    )
    .run(async {
        auth.caller()?
            .require(&s(format!("auth:gcp:access-token:{project}/{account}")))?;
        no_query(&uri)?;
        Err(ApiError::not_found(format!(
            "The project `{project}` is not configured for this deployment"
        )))
    })
    .await
}

async fn github_repo_token(
    uri: Uri,
    Extension(auth): Extension<Auth>,
    Path((app, owner)): Path<(String, String)>,
) -> Response {
    Call::new("githubRepoToken", json!({ "appName": app, "owner": owner }))
        .run(async {
            auth.caller()?;
            no_query(&uri)?;
            Err(ApiError::not_found(format!(
                "GitHub app `{app}` is not configured"
            )))
        })
        .await
}

// --- authenticateHawk and the conformance endpoints -----------------------------------

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

async fn authenticate_hawk(
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
            let result = match authenticate_request(&signed, &st.clients) {
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

async fn test_authenticate(
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
                json!({ "clientId": caller.client_id, "scopes": caller.scopes.as_slice() }),
            ))
        })
        .await
}

async fn test_authenticate_get(
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
                json!({ "clientId": caller.client_id, "scopes": caller.scopes.as_slice() }),
            ))
        })
        .await
}
