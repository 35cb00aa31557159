//! The auth API's clients: list, get, create, update, reset, enable, disable, delete.

use super::*;

pub(super) async fn list_clients(
    State(st): St,
    Extension(auth): Extension<Auth>,
    uri: Uri,
) -> Response {
    Call::new("listClients", json!({}))
        .run(async {
            auth.caller()?.require(&s("auth:list-clients".into()))?;
            let q = query(&uri, &["prefix", "continuationToken", "limit"])?;
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            // the query's pattern, as upstream declares it
            if q.contains_key("prefix")
                && (prefix.is_empty()
                    || !prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!@/:.+|_-".contains(&b)))
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequestArguments,
                    format!("Query-string parameter: prefix=\"{prefix}\" does not match expression: /^[A-Za-z0-9!@/:.+|_-]+$/"),
                ));
            }
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

pub(super) async fn client(
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

pub(super) async fn create_client(
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

pub(super) async fn update_client(
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
                // the request schema's default (false) applies here too, as upstream: only
                // omitted scopes are left as they were
                delete_on_expiration: Some(input.delete_on_expiration.unwrap_or(false)),
            };
            st.auth.execute(actor(caller), cmd).await?;
            Ok(ok(client_json(&st, &load_client(&st, &id)?)))
        })
        .await
}

pub(super) async fn reset_access_token(
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

pub(super) async fn enable_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    toggle_client(&uri, st, auth, id, true).await
}

pub(super) async fn disable_client(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> Response {
    toggle_client(&uri, st, auth, id, false).await
}

pub(super) async fn delete_client(
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
