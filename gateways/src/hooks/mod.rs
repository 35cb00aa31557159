//! The hooks service (`/api/hooks/v1`, reference/hooks.md): stored task templates that
//! become tasks when they fire. Definitions, trigger tokens and fires are `HookCommand`s on
//! the hooks partition; firing (`fire`) renders the template with JSON-e and creates the task
//! through the queue's own createTask path, as the hook's role (`assume:hook-id:<g>/<h>`);
//! the scheduler (`fire::run_schedule`) fires hooks whose cron schedule comes due.
//!
//! With a Pulse broker (`serve --pulse-url`), a hook's bindings fire it for each message they
//! match (`listen`). A scheduled fire that creates no task emails the hook's owner through
//! the notify service, unless `metadata.emailOnError` is false.

mod fire;
mod listen;

pub use fire::{run_schedule, HOOKS_CLIENT};
pub(crate) use listen::broker_user;
pub use listen::{queue_name, run_listener};

use crate::error::ApiError;
use crate::hawk::{actor, Auth};
use crate::queue::call::*;
use crate::{AppState, Mount};
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{json, Value};
use std::sync::Arc;
use taskledger_core::hooks::{
    check_pattern, token_owner, valid_id, Binding, FiredBy, Hook, HookCommand, HookDefinition,
    HookError, HOOKS_TOPIC,
};
use taskledger_core::ids::Slug;
use taskledger_core::scopes::ScopeExpr;
use taskledger_projections::hooks_view::{FireRow, HOOKS_PARTITION};

type St = State<Arc<AppState>>;

const HOOK_SCHEMA: &str = "/schemas/hooks/v1/create-hook-request.json#";
const GROUP_RE: &str = "^[a-zA-Z0-9-_]{1,1000}$";
const ID_RE: &str = "^[a-zA-Z0-9-_/]{1,1000}$";

/// Exchanges no binding may name (upstream's default denylist, each a regular expression
/// anchored at the start: here, prefixes).
const DENIED_EXCHANGES: [&str; 2] = [
    "exchange/taskcluster-queue/v1/task-created",
    "exchange/taskcluster-hooks/",
];

/// The trigger schema of a hook that gives none: only `{}` is accepted.
const DEFAULT_TRIGGER_SCHEMA: &str = r#"{"additionalProperties":false,"type":"object"}"#;

impl From<HookError> for ApiError {
    fn from(err: HookError) -> Self {
        match err {
            HookError::NotFound => ApiError::not_found("No such hook"),
            HookError::Conflict(m) => ApiError::conflict(m),
            HookError::Input(m) => ApiError::input(m),
        }
    }
}

/// Routes under `/api/hooks/v1`.
pub fn routes(service: Mount) -> Mount {
    service
        .route("/hooks", get(list_hook_groups))
        .route("/hooks/{group}", get(list_hooks))
        .route(
            "/hooks/{group}/{id}",
            get(hook)
                .put(create_hook)
                .post(update_hook)
                .delete(remove_hook),
        )
        .route("/hooks/{group}/{id}/status", get(hook_status))
        .route("/hooks/{group}/{id}/trigger", post(trigger_hook))
        .route(
            "/hooks/{group}/{id}/token",
            get(get_trigger_token).post(reset_trigger_token),
        )
        .route(
            "/hooks/{group}/{id}/trigger/{token}",
            post(trigger_hook_with_token),
        )
        .route("/hooks/{group}/{id}/last-fires", get(list_last_fires))
}

/// The URL parameters' patterns (checked after a scope the URL fills).
fn check_params(group: &str, id: Option<&str>) -> Result<(), ApiError> {
    if !valid_id(group, false) {
        return Err(ApiError::bad_param("hookGroupId", group, GROUP_RE));
    }
    match id {
        Some(id) if !valid_id(id, true) => Err(ApiError::bad_param("hookId", id, ID_RE)),
        Some(_) | None => Ok(()),
    }
}

/// The caller must hold `scope` (filled from the URL); then the parameters are checked.
fn pre(auth: &Auth, scope: ScopeExpr, group: &str, id: Option<&str>) -> Result<(), ApiError> {
    auth.caller()?.require(&scope)?;
    check_params(group, id)
}

fn params(group: &str, id: &str) -> Value {
    json!({ "hookGroupId": group, "hookId": id })
}

/// The hook, or 404 "No such hook"; on a follower, one the writer may have just created is
/// waited for.
async fn load(st: &AppState, group: &str, id: &str) -> Result<Hook, ApiError> {
    let mut hook = st.hooks.view().hook(group, id)?;
    if hook.is_none()
        && crate::follow_to_end(st, HOOKS_TOPIC, HOOKS_PARTITION, st.hooks.role()).await
    {
        hook = st.hooks.view().hook(group, id)?;
    }
    hook.ok_or_else(|| HookError::NotFound.into())
}

/// Stored JSON text back as a value (written by serde_json, so it parses).
fn stored(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A hook as the API shows it (`hook-definition`; also the audit tools' view of one).
pub fn hook_json(h: &Hook) -> Value {
    let d = &h.definition;
    json!({
        "hookGroupId": h.group,
        "hookId": h.id,
        "metadata": {
            "name": d.name,
            "description": d.description,
            "owner": d.owner,
            "emailOnError": d.email_on_error,
        },
        "task": stored(&d.task),
        "bindings": d.bindings.iter().map(|b| json!({
            "exchange": b.exchange,
            "routingKeyPattern": b.routing_key_pattern,
        })).collect::<Vec<_>>(),
        "schedule": d.schedule,
        "triggerSchema": stored(&d.trigger_schema),
    })
}

/// Ajv's `email` format (its fast mode): a local part of the usual characters, `@`, and a
/// domain of dot-separated labels.
pub(crate) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    local_ok && domain.split('.').all(label_ok)
}

/// `metadata`'s schema: `{name ≤ 255, description ≤ 32768, owner: email ≤ 255, emailOnError?}`.
fn metadata(v: Option<&Value>, errors: &mut Vec<String>) -> Option<(String, String, String, bool)> {
    let Some(obj) = v.and_then(Value::as_object) else {
        if v.is_some() {
            errors.push("data/metadata must be object".into());
        }
        return None;
    };
    for k in obj.keys() {
        if !["name", "description", "owner", "emailOnError"].contains(&k.as_str()) {
            errors.push(format!(
                "data/metadata must NOT have additional properties: {}",
                Value::from(k.as_str())
            ));
        }
    }
    let mut text = |key: &str, max: usize| text_field(obj, "metadata", key, 0, max, true, errors);
    let name = text("name", 255);
    let description = text("description", 32768);
    let owner = text("owner", 255);
    if let Some(o) = &owner {
        if !is_email(o) {
            errors.push("data/metadata/owner must match format \"email\"".into());
        }
    }
    let email_on_error = match obj.get("emailOnError") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push("data/metadata/emailOnError must be boolean".into());
            true
        }
    };
    Some((name?, description?, owner?, email_on_error))
}

/// A list of unique strings (`schedule`), or of unique binding objects (`bindings`).
fn unique_items(field: &str, items: &[Value], errors: &mut Vec<String>) {
    let texts: Vec<String> = items.iter().map(Value::to_string).collect();
    if let Some((j, i)) = repeated_item(texts.iter().map(String::as_str).enumerate()) {
        errors.push(format!(
            "data/{field} must NOT have duplicate items (items ## {j} and {i} are identical)"
        ));
    }
}

fn bindings(v: Option<&Value>, errors: &mut Vec<String>) -> Option<Vec<Binding>> {
    let Some(items) = v?.as_array() else {
        errors.push("data/bindings must be array".into());
        return None;
    };
    unique_items("bindings", items, errors);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            errors.push(format!("data/bindings/{i} must be object"));
            continue;
        };
        for k in obj.keys() {
            if !["exchange", "routingKeyPattern"].contains(&k.as_str()) {
                errors.push(format!(
                    "data/bindings/{i} must NOT have additional properties: {}",
                    Value::from(k.as_str())
                ));
            }
        }
        let path = format!("bindings/{i}");
        let mut text = |key: &str| text_field(obj, &path, key, 1, 0, true, errors);
        if let (Some(exchange), Some(routing_key_pattern)) =
            (text("exchange"), text("routingKeyPattern"))
        {
            out.push(Binding {
                exchange,
                routing_key_pattern,
            });
        }
    }
    Some(out)
}

fn schedule(v: Option<&Value>, errors: &mut Vec<String>) -> Vec<String> {
    let Some(v) = v else { return vec![] };
    let Some(items) = v.as_array() else {
        errors.push("data/schedule must be array".into());
        return vec![];
    };
    unique_items("schedule", items, errors);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(p) => out.push(p.to_string()),
            None => errors.push(format!("data/schedule/{i} must be string")),
        }
    }
    out
}

/// A `create-hook-request` read into a definition (its defaults filled), and whether it gave
/// `bindings` (updateHook keeps the hook's own otherwise). Schema failures first, then
/// upstream's further checks: the ids in the body, the cron patterns, the trigger schema, the
/// denied exchanges.
fn definition(body: &Value, group: &str, id: &str) -> Result<(HookDefinition, bool), ApiError> {
    let keys = [
        "hookGroupId",
        "hookId",
        "metadata",
        "task",
        "bindings",
        "schedule",
        "triggerSchema",
    ];
    let obj = crate::auth::check_keys(body, HOOK_SCHEMA, &keys, &["metadata", "task"])?;
    let mut errors = Vec::new();
    for (key, max, slash) in [("hookGroupId", 1000, false), ("hookId", 1000, true)] {
        match obj.get(key) {
            Some(Value::String(v)) if v.len() <= max && valid_id(v, slash) => {}
            Some(Value::String(_)) => errors.push(format!(
                "data/{key} must match pattern \"{}\"",
                if slash { ID_RE } else { GROUP_RE }
            )),
            Some(_) => errors.push(format!("data/{key} must be string")),
            None => {}
        }
    }
    let metadata = metadata(obj.get("metadata"), &mut errors);
    let task = obj.get("task").filter(|t| t.is_object());
    if task.is_none() {
        errors.push("data/task must be object".into());
    }
    let given_bindings = obj.contains_key("bindings");
    let bindings = bindings(obj.get("bindings"), &mut errors).unwrap_or_default();
    let schedule = schedule(obj.get("schedule"), &mut errors);
    let trigger_schema = match obj.get("triggerSchema") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => {
            errors.push("data/triggerSchema must be object".into());
            None
        }
    };
    let (Some((name, description, owner, email_on_error)), Some(task), true) =
        (metadata, task, errors.is_empty())
    else {
        return Err(ApiError::validation(HOOK_SCHEMA, &errors));
    };
    if obj.get("hookGroupId").is_some_and(|g| g != group) {
        return Err(ApiError::input("Hook Group Ids do not match"));
    }
    if obj.get("hookId").is_some_and(|h| h != id) {
        return Err(ApiError::input("Hook Ids do not match"));
    }
    for pattern in &schedule {
        check_pattern(pattern).map_err(ApiError::input)?;
    }
    let trigger_schema = match trigger_schema {
        Some(schema) => {
            fire::compile_schema(schema).map_err(|e| {
                ApiError::input(format!("triggerSchema is not a valid JSON schema: {e}"))
            })?;
            schema.to_string()
        }
        None => DEFAULT_TRIGGER_SCHEMA.to_string(),
    };
    let denied: Vec<&str> = bindings
        .iter()
        .map(|b| b.exchange.as_str())
        .filter(|e| DENIED_EXCHANGES.iter().any(|d| e.starts_with(d)))
        .collect();
    if !denied.is_empty() {
        return Err(ApiError::input(format!(
            "One or more of the exchanges below have been denied access to hooks: {}",
            denied.join(", ")
        )));
    }
    Ok((
        HookDefinition {
            name,
            description,
            owner,
            email_on_error,
            task: task.to_string(),
            bindings,
            schedule,
            trigger_schema,
        },
        given_bindings,
    ))
}

/// A new trigger token: a slugid, sealed for the hook.
fn new_token(
    st: &AppState,
    group: &str,
    id: &str,
) -> Result<(String, taskledger_core::access::seal::Sealed), ApiError> {
    let token = slugid::nice();
    let sealed = crate::auth::seal(st.clients.seal_key(), &token_owner(group, id), &token)?;
    Ok((token, sealed))
}

/// The hook's trigger token in clear.
fn open_token(st: &AppState, hook: &Hook) -> Result<String, ApiError> {
    let owner = token_owner(&hook.group, &hook.id);
    st.clients
        .seal_key()
        .open(&owner, &hook.token)
        .ok_or_else(|| {
            ApiError::internal(format!(
                "the trigger token of hook {}/{} does not open with this server's crypto key",
                hook.group, hook.id
            ))
        })
}

fn modify_scopes(group: &str, id: &str) -> ScopeExpr {
    ScopeExpr::all(vec![
        s(format!("hooks:modify-hook:{group}/{id}")),
        s(format!("assume:hook-id:{group}/{id}")),
    ])
}

async fn list_hook_groups(uri: Uri, State(st): St, Extension(auth): Extension<Auth>) -> Response {
    Call::new("listHookGroups", json!({}))
        .run(async {
            auth.caller()?
                .require(&s("hooks:list-hooks:".to_string()))?;
            no_query(&uri)?;
            Ok(ok(json!({ "groups": st.hooks.view().groups()? })))
        })
        .await
}

async fn list_hooks(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path(group): Path<String>,
) -> Response {
    Call::new("listHooks", json!({ "hookGroupId": group }))
        .run(async {
            pre(&auth, s(format!("hooks:list-hooks:{group}")), &group, None)?;
            no_query(&uri)?;
            let hooks = st.hooks.view().hooks_in(&group)?;
            if hooks.is_empty() {
                return Err(ApiError::not_found("No such group"));
            }
            Ok(ok(
                json!({ "hooks": hooks.iter().map(hook_json).collect::<Vec<_>>() }),
            ))
        })
        .await
}

async fn hook(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
) -> Response {
    Call::new("hook", params(&group, &id))
        .run(async {
            pre(
                &auth,
                s(format!("hooks:get:{group}:{id}")),
                &group,
                Some(&id),
            )?;
            no_query(&uri)?;
            Ok(ok(hook_json(&load(&st, &group, &id).await?)))
        })
        .await
}

async fn hook_status(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
) -> Response {
    Call::new("getHookStatus", params(&group, &id))
        .run(async {
            pre(
                &auth,
                s(format!("hooks:status:{group}/{id}")),
                &group,
                Some(&id),
            )?;
            no_query(&uri)?;
            let hook = load(&st, &group, &id).await?;
            let (newest, _) = st.hooks.view().last_fires(&group, &id, None, 1)?;
            let last_fire = match newest.first().map(|r| &r.fire) {
                None => json!({ "result": "no-fire" }),
                Some(f) => match &f.error {
                    None => json!({
                        "result": "success",
                        "taskId": f.task_id.text().as_str(),
                        "time": f.time.to_rfc3339(),
                    }),
                    Some(e) => json!({
                        "result": "error",
                        "error": serde_json::from_str::<Value>(e)
                            .ok()
                            .filter(Value::is_object)
                            .unwrap_or_else(|| json!({ "message": e })),
                        "time": f.time.to_rfc3339(),
                    }),
                },
            };
            let mut out = json!({ "lastFire": last_fire });
            if !hook.definition.schedule.is_empty() {
                out["nextScheduledDate"] = json!(hook.next.at.to_rfc3339());
            }
            Ok(ok(out))
        })
        .await
}

async fn create_hook(
    uri: Uri,
    st: St,
    auth: Extension<Auth>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    define(true, uri, st, auth, path, headers, body).await
}

async fn update_hook(
    uri: Uri,
    st: St,
    auth: Extension<Auth>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    define(false, uri, st, auth, path, headers, body).await
}

/// createHook (`create`) or updateHook: the same scopes, checks and answer; a new hook gets a
/// trigger token, an updated one keeps its own (and its bindings, unless the body gives some).
async fn define(
    create: bool,
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let name = if create { "createHook" } else { "updateHook" };
    Call::new(name, params(&group, &id))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let caller = auth.caller()?;
            caller.require(&modify_scopes(&group, &id))?;
            check_params(&group, Some(&id))?;
            no_query(&uri)?;
            let (definition, given_bindings) = definition(&body.input()?, &group, &id)?;
            let (group_id, hook_id, next_task_id) = (group.clone(), id.clone(), Slug::nice());
            let cmd = if create {
                HookCommand::Create {
                    token: new_token(&st, &group, &id)?.1,
                    group: group_id,
                    id: hook_id,
                    definition,
                    next_task_id,
                }
            } else {
                HookCommand::Update {
                    group: group_id,
                    id: hook_id,
                    definition,
                    keep_bindings: !given_bindings,
                    next_task_id,
                }
            };
            st.hooks.execute(actor(caller), cmd).await?;
            Ok(ok(hook_json(&load(&st, &group, &id).await?)))
        })
        .await
}

async fn remove_hook(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
) -> Response {
    Call::new("removeHook", params(&group, &id))
        .run(async {
            let scope = s(format!("hooks:modify-hook:{group}/{id}"));
            pre(&auth, scope, &group, Some(&id))?;
            no_query(&uri)?;
            let cmd = HookCommand::Remove {
                group: group.clone(),
                id: id.clone(),
            };
            st.hooks.execute(actor(auth.caller()?), cmd).await?;
            Ok(ok(json!({})))
        })
        .await
}

async fn trigger_hook(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new("triggerHook", params(&group, &id))
        .with_body(&headers, &body)
        .run(async {
            let body = auth.body()?;
            let scope = s(format!("hooks:trigger-hook:{group}/{id}"));
            pre(&auth, scope, &group, Some(&id))?;
            no_query(&uri)?;
            let payload = trigger_body(body.input()?)?;
            let hook = load(&st, &group, &id).await?;
            let caller = auth.caller()?;
            let fired = fire::Trigger {
                fired_by: FiredBy::TriggerHook,
                payload: Some(payload),
                client_id: caller.client_id.clone(),
                actor: actor(caller),
            };
            Ok(ok(fire::fire_from_api(&st, &hook, fired).await?))
        })
        .await
}

/// `trigger-hook`'s schema: any object.
fn trigger_body(v: Value) -> Result<Value, ApiError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(ApiError::validation(
            "/schemas/hooks/v1/trigger-hook.json#",
            &["data must be object".into()],
        ))
    }
}

async fn trigger_hook_with_token(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id, token)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Call::new(
        "triggerHookWithToken",
        json!({ "hookGroupId": group, "hookId": id, "token": "(OMITTED)" }),
    )
    .with_body(&headers, &body)
    .run(async {
        let body = auth.body()?;
        check_params(&group, Some(&id))?;
        no_query(&uri)?;
        let payload = trigger_body(body.input()?)?;
        let hook = load(&st, &group, &id).await?;
        let matches = open_token(&st, &hook)
            .is_ok_and(|t| taskledger_core::auth::constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !matches {
            return Err(ApiError::new(
                crate::error::ErrorCode::AuthenticationFailed,
                "invalid hook token",
            ));
        }
        let fired = fire::Trigger {
            fired_by: FiredBy::TriggerHookWithToken,
            payload: Some(payload),
            client_id: None,
            actor: taskledger_core::envelope::Actor {
                client_id: format!("hook-token:{group}/{id}"),
                request_id: Some(uuid::Uuid::new_v4()),
            },
        };
        Ok(ok(fire::fire_from_api(&st, &hook, fired).await?))
    })
    .await
}

async fn get_trigger_token(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
) -> Response {
    Call::new("getTriggerToken", params(&group, &id))
        .run(async {
            let scope = s(format!("hooks:get-trigger-token:{group}/{id}"));
            pre(&auth, scope, &group, Some(&id))?;
            no_query(&uri)?;
            let hook = load(&st, &group, &id).await?;
            Ok(ok(json!({ "token": open_token(&st, &hook)? })))
        })
        .await
}

async fn reset_trigger_token(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
) -> Response {
    Call::new("resetTriggerToken", params(&group, &id))
        .run(async {
            let scope = s(format!("hooks:reset-trigger-token:{group}/{id}"));
            pre(&auth, scope, &group, Some(&id))?;
            no_query(&uri)?;
            let (token, sealed) = new_token(&st, &group, &id)?;
            let cmd = HookCommand::ResetToken {
                group: group.clone(),
                id: id.clone(),
                token: sealed,
            };
            st.hooks.execute(actor(auth.caller()?), cmd).await?;
            Ok(ok(json!({ "token": token })))
        })
        .await
}

/// The state of a fire's task as `listLastFires` shows it: its last run's, `unknown` for a
/// task that is gone or has no run.
fn task_state(st: &AppState, row: &FireRow) -> Result<&'static str, ApiError> {
    Ok(st
        .engine
        .view()
        .task(&row.fire.task_id)?
        .and_then(|t| t.runs.last().map(|r| r.state.as_str()))
        .unwrap_or("unknown"))
}

async fn list_last_fires(
    uri: Uri,
    State(st): St,
    Extension(auth): Extension<Auth>,
    Path((group, id)): Path<(String, String)>,
) -> Response {
    Call::new("listLastFires", params(&group, &id))
        .run(async {
            let scope = s(format!("hooks:list-last-fires:{group}/{id}"));
            pre(&auth, scope, &group, Some(&id))?;
            let q = query(&uri, &["continuationToken", "limit"])?;
            let after = match name_token(&q)? {
                Some(t) => Some(
                    t.parse::<u64>()
                        .map_err(|_| ApiError::input("Invalid continuation token"))?,
                ),
                None => None,
            };
            let (rows, more) = st.hooks.view().last_fires(&group, &id, after, limit(&q))?;
            if rows.is_empty() {
                return Err(ApiError::not_found("No such hook or never fired"));
            }
            let mut fires = Vec::with_capacity(rows.len());
            for row in &rows {
                let f = &row.fire;
                fires.push(json!({
                    "hookGroupId": group,
                    "hookId": id,
                    "firedBy": f.fired_by.as_str(),
                    "taskId": f.task_id.text().as_str(),
                    "taskCreateTime": f.time.to_rfc3339(),
                    "result": if f.error.is_none() { "success" } else { "error" },
                    "error": f.error.clone().unwrap_or_default(),
                    "taskState": task_state(&st, row)?,
                }));
            }
            let out = json!({ "lastFires": fires });
            Ok(ok(with_name_token(out, more.map(|o| o.to_string()))))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: Value) -> Value {
        let mut b = json!({
            "metadata": {"name": "n", "description": "d", "owner": "me@example.com"},
            "task": {"$if": "true", "then": {}},
        });
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    }

    fn message(r: Result<(HookDefinition, bool), ApiError>) -> String {
        r.unwrap_err().message
    }

    #[test]
    fn a_definition_takes_upstreams_defaults() {
        let (d, given) = definition(&body(json!({})), "g", "h").unwrap();
        assert!(!given && d.bindings.is_empty() && d.schedule.is_empty());
        assert!(d.email_on_error);
        assert_eq!(d.trigger_schema, DEFAULT_TRIGGER_SCHEMA);
        assert_eq!(stored(&d.task), json!({"$if": "true", "then": {}}));
    }

    #[test]
    fn schema_failures_are_listed_together() {
        // an unknown key fails alone, as upstream's validator stops there
        let m = message(definition(&body(json!({"nope": true})), "g", "h"));
        assert!(
            m.contains("data must NOT have additional properties: \"nope\""),
            "{m}"
        );
        let bad = json!({
            "metadata": {"name": "n", "owner": "not-an-email", "extra": 1},
            "task": [],
            "schedule": ["a", "a"],
            "bindings": [{"exchange": ""}],
        });
        let m = message(definition(&bad, "g", "h"));
        for expected in [
            "data/metadata must NOT have additional properties: \"extra\"",
            "data/metadata must have required property 'description'",
            "data/metadata/owner must match format \"email\"",
            "data/task must be object",
            "data/schedule must NOT have duplicate items (items ## 1 and 0 are identical)",
            "data/bindings/0/exchange must NOT have fewer than 1 characters",
            "data/bindings/0 must have required property 'routingKeyPattern'",
        ] {
            assert!(m.contains(expected), "{expected} in {m}");
        }
    }

    #[test]
    fn further_checks_follow_the_schema() {
        let m = message(definition(&body(json!({"hookId": "other"})), "g", "h"));
        assert_eq!(m, "Hook Ids do not match");
        let m = message(definition(&body(json!({"hookGroupId": "x"})), "g", "h"));
        assert_eq!(m, "Hook Group Ids do not match");
        let m = message(definition(
            &body(json!({"schedule": ["0 0 99 * * *"]})),
            "g",
            "h",
        ));
        assert!(m.ends_with(" in 0 0 99 * * *"), "{m}");
        let m = message(definition(
            &body(json!({"triggerSchema": {"type": "no-such-type"}})),
            "g",
            "h",
        ));
        assert!(
            m.starts_with("triggerSchema is not a valid JSON schema: "),
            "{m}"
        );
        let denied = json!({"bindings": [{
            "exchange": "exchange/taskcluster-hooks/v1/hook-created",
            "routingKeyPattern": "#"
        }]});
        let m = message(definition(&body(denied), "g", "h"));
        assert!(m.contains("denied access to hooks"), "{m}");
        let allowed = json!({"bindings": [{
            "exchange": "exchange/taskcluster-queue/v1/task-completed",
            "routingKeyPattern": "#"
        }]});
        let (d, given) = definition(&body(allowed), "g", "h").unwrap();
        assert!(given);
        assert_eq!(d.bindings[0].routing_key_pattern, "#");
    }

    #[test]
    fn emails_as_ajv_reads_them() {
        assert!(is_email("a.b+c@example.co.uk"));
        for bad in ["", "a", "@x.com", "a@", "a@-x.com", "a@x..com", "a b@x.com"] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
