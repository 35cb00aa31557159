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
        // a worker pool's history is the worker-manager's, a secret's the secrets service's,
        // the others the auth service's
        let (rows, next) = if kind == "worker-pool" {
            st.worker_manager
                .view()
                .pool_history(&id, decode_token(&q)?, limit(&q))?
        } else if kind == "secret" {
            st.secrets
                .view()
                .secret_history(&id, decode_token(&q)?, limit(&q))?
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
            // what the client did to clients and roles, to worker pools and to secrets, in
            // time order (three logs: ties go by log, then by offset); the token holds where
            // each log's rows were left, so a page reads at most `limit + 1` rows of each
            let after = history_position(&q)?;
            let limit = limit(&q);
            let logs = [
                st.auth.view().actor_history(
                    &id,
                    after[0].map(|o| keys::audit_actor(&id, o)),
                    limit + 1,
                )?,
                st.worker_manager.view().actor_history(
                    &id,
                    after[1].map(|o| keys::wm_audit_actor(&id, o)),
                    limit + 1,
                )?,
                st.secrets.view().actor_history(
                    &id,
                    after[2].map(|o| keys::secret_audit_actor(&id, o)),
                    limit + 1,
                )?,
            ];
            let partial = logs.iter().any(|(_, more)| more.is_some());
            let mut rows: Vec<(usize, AuditEntry)> = logs
                .into_iter()
                .enumerate()
                .flat_map(|(log, (rows, _))| rows.into_iter().map(move |r| (log, r)))
                .collect();
            let available = rows.len();
            rows.sort_by_key(|(log, r)| (r.created, *log, r.offset));
            rows.truncate(limit);
            let mut at = after;
            for (log, r) in &rows {
                at[*log] = Some(r.offset);
            }
            let more = available > rows.len() || partial;
            let next = more.then(|| position_token(&at));
            Ok(audit_page(rows.into_iter().map(|(_, r)| r).collect(), next))
        })
        .await
}

/// How many logs a client's audit history merges: auth, worker-manager, secrets.
const HISTORY_LOGS: usize = 3;

/// A merged history's token: for each log, a flag and the offset of the last row a page took
/// from it.
fn position_token(at: &[Option<u64>; HISTORY_LOGS]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 * HISTORY_LOGS);
    for at in at {
        k.push(u8::from(at.is_some()));
        k.extend_from_slice(&at.unwrap_or(0).to_be_bytes());
    }
    k
}

/// The positions a token holds (none without one); 400 for a token that holds none.
fn history_position(
    q: &std::collections::HashMap<String, String>,
) -> Result<[Option<u64>; HISTORY_LOGS], ApiError> {
    let mut at = [None; HISTORY_LOGS];
    let Some(token) = decode_token(q)? else {
        return Ok(at);
    };
    let bad = || ApiError::input("Invalid continuation token");
    // a token of two positions (auth, worker-manager) comes from a server without secrets
    if token.len() != 9 * HISTORY_LOGS && token.len() != 18 {
        return Err(bad());
    }
    for (slot, part) in at.iter_mut().zip(token.chunks(9)) {
        let offset = u64::from_be_bytes(part[1..9].try_into().map_err(|_| bad())?);
        *slot = match part[0] {
            0 => None,
            1 => Some(offset),
            _ => return Err(bad()),
        };
    }
    Ok(at)
}
