//! The auth API's roles and scope expansion: list, get, create, update, delete, expand,
//! current.

use super::*;

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

pub(super) async fn list_roles(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
) -> Response {
    Call::new("listRoles", json!({}))
        .run(async {
            auth.caller()?.require(&s("auth:list-roles".into()))?;
            no_query(&uri)?;
            let roles: Vec<Value> = all_roles(&st).iter().map(|r| role_json(&st, r)).collect();
            Ok(ok(Value::Array(roles)))
        })
        .await
}

pub(super) async fn list_roles2(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
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

pub(super) async fn list_role_ids(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
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

pub(super) async fn role(
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

pub(super) async fn create_role(
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

pub(super) async fn update_role(
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
            let current =
                st.auth.view().role(&id).ok_or_else(|| {
                    ApiError::not_found(format!("Role with roleId '{id}' not found"))
                })?;
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

pub(super) async fn delete_role(
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

pub(super) async fn expand_scopes(
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
            let obj = check_keys(&body, "v1/scopeset.json", &["scopes"], &["scopes"])?;
            let input =
                string_list(obj.get("scopes"), "v1/scopeset.json", "scopes")?.unwrap_or_default();
            Ok(ok(json!({ "scopes": st.clients.expand(input).as_slice() })))
        })
        .await
}

pub(super) async fn current_scopes(uri: Uri, Extension(auth): Extension<Auth>) -> Response {
    Call::new("currentScopes", json!({}))
        .run(async {
            let caller = auth.caller()?;
            caller.require(&s("auth:current-scopes".into()))?;
            no_query(&uri)?;
            Ok(ok(json!({ "scopes": caller.scopes.as_slice() })))
        })
        .await
}
