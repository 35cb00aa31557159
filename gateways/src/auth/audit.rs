//! The auth API's audit history: an entity's events and a client's, from the event log.

use super::*;
use taskledger_projections::keys;

fn audit_page(rows: Vec<AuditEntry>, next: Option<Vec<u8>>) -> Response {
    let mut out = json!({ "auditHistory": audit_json(&rows) });
    if let Some(k) = next {
        out["continuationToken"] = json!(encode_token(&k));
    }
    ok(out)
}

pub(super) async fn get_entity_history(
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
        // a worker pool's history is the worker-manager's, the others the auth service's
        let (rows, next) = if kind == "worker-pool" {
            st.worker_manager
                .view()
                .pool_history(&id, decode_token(&q)?, limit(&q))?
        } else {
            st.auth
                .view()
                .entity_history(&kind, &id, decode_token(&q)?, limit(&q))?
        };
        Ok(audit_page(rows, next))
    })
    .await
}

pub(super) async fn list_audit_history(
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
            // what the client did to clients and roles and to worker pools, in time order
            // (two logs: ties go to the auth log, then by offset); the token holds where each
            // log's rows were left, so a page reads at most `limit + 1` rows of each
            let (auth_after, pool_after) = history_position(&q)?;
            let limit = limit(&q);
            let (auth_rows, auth_more) = st.auth.view().actor_history(
                &id,
                auth_after.map(|o| keys::audit_actor(&id, o)),
                limit + 1,
            )?;
            let (pool_rows, pool_more) = st.worker_manager.view().actor_history(
                &id,
                pool_after.map(|o| keys::wm_audit_actor(&id, o)),
                limit + 1,
            )?;
            let available = auth_rows.len() + pool_rows.len();
            let mut rows: Vec<(u8, AuditEntry)> = auth_rows
                .into_iter()
                .map(|r| (0, r))
                .chain(pool_rows.into_iter().map(|r| (1, r)))
                .collect();
            rows.sort_by_key(|(log, r)| (r.created, *log, r.offset));
            rows.truncate(limit);
            let (mut auth_at, mut pool_at) = (auth_after, pool_after);
            for (log, r) in &rows {
                match log {
                    0 => auth_at = Some(r.offset),
                    _ => pool_at = Some(r.offset),
                }
            }
            let more = available > rows.len() || auth_more.is_some() || pool_more.is_some();
            let next = more.then(|| position_token(auth_at, pool_at));
            Ok(audit_page(rows.into_iter().map(|(_, r)| r).collect(), next))
        })
        .await
}

/// A merged history's token: for each log (auth, worker-manager), a flag and the offset of
/// the last row a page took from it.
fn position_token(auth: Option<u64>, pools: Option<u64>) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    for at in [auth, pools] {
        k.push(u8::from(at.is_some()));
        k.extend_from_slice(&at.unwrap_or(0).to_be_bytes());
    }
    k
}

/// The positions a token holds (none without one); 400 for a token that holds none.
fn history_position(
    q: &std::collections::HashMap<String, String>,
) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let Some(token) = decode_token(q)? else {
        return Ok((None, None));
    };
    let bad = || ApiError::input("Invalid continuation token");
    if token.len() != 18 {
        return Err(bad());
    }
    let read = |part: &[u8]| -> Result<Option<u64>, ApiError> {
        let offset = u64::from_be_bytes(part[1..9].try_into().map_err(|_| bad())?);
        match part[0] {
            0 => Ok(None),
            1 => Ok(Some(offset)),
            _ => Err(bad()),
        }
    };
    Ok((read(&token[..9])?, read(&token[9..])?))
}
