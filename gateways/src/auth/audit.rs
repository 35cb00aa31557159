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
        let (rows, next) =
            st.auth
                .view()
                .entity_history(&kind, &id, decode_token(&q)?, limit(&q))?;
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
            let (rows, next) = st
                .auth
                .view()
                .actor_history(&id, decode_token(&q)?, limit(&q))?;
            Ok(audit_page(rows, next))
        })
        .await
}
