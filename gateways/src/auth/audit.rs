//! The auth API's audit history: an entity's events and a client's, from the event log.

use super::*;

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
            // (two logs: ties go to the auth log, then by offset), paged by that order
            let (auth_rows, _) = st.auth.view().actor_history(&id, None, usize::MAX)?;
            let pool_rows = st.worker_manager.view().actor_history(&id)?;
            let mut rows: Vec<(Vec<u8>, AuditEntry)> = auth_rows
                .into_iter()
                .map(|r| (history_key(&r, 0), r))
                .chain(pool_rows.into_iter().map(|r| (history_key(&r, 1), r)))
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let after = decode_token(&q)?;
            let limit = limit(&q);
            let mut rest = rows
                .into_iter()
                .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a));
            let page: Vec<(Vec<u8>, AuditEntry)> = rest.by_ref().take(limit).collect();
            let next = rest
                .next()
                .and_then(|_| page.last().map(|(k, _)| k.clone()));
            Ok(audit_page(page.into_iter().map(|(_, r)| r).collect(), next))
        })
        .await
}

/// Where an audit row stands in a client's merged history: its time, its log (0 auth, 1 the
/// worker-manager's), its offset there.
fn history_key(row: &AuditEntry, log: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&row.created.0.to_be_bytes());
    k.push(log);
    k.extend_from_slice(&row.offset.to_be_bytes());
    k
}
