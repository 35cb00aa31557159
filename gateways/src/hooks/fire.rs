//! Firing a hook (reference/hooks.md §2): the payload checked against the trigger schema,
//! the template rendered with JSON-e, the task's defaults filled, the task created through the
//! queue's createTask path as the hook's role, and the fire recorded; and the scheduler that
//! fires hooks whose schedule comes due.

use super::stored;
use crate::error::{ApiError, ErrorCode};
use crate::hawk::Caller;
use crate::AppState;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use taskledger_core::auth::ClientSource;
use taskledger_core::envelope::Actor;
use taskledger_core::hooks::{FiredBy, Hook, HookCommand, LastFire};
use taskledger_core::ids::Slug;
use taskledger_core::notify::{Email, Link, NotifyCommand, Template};
use taskledger_core::time::{Millis, DAY};

/// The client the hooks service creates tasks as (its scopes: the hook's role's).
pub const HOOKS_CLIENT: &str = "static/taskcluster/hooks";

/// How long the scheduler waits at most between looks at the schedule (a hook created or
/// updated to fire sooner is seen within this).
const SCHEDULE_POLL: Duration = Duration::from_secs(1);

/// How long a scheduled fire that failed on the server's side waits before it is tried again.
const RETRY_AFTER_MS: i64 = 30_000;

/// Due hooks the scheduler reads at a time.
const DUE_PAGE: usize = 100;

/// The longest error text a fire's record keeps (upstream's).
const MAX_ERROR_CHARS: usize = 131_072;

/// Compiled trigger schemas, by their text: compiling one costs far more than a fire's
/// other work. Emptied when full.
static SCHEMAS: Mutex<Option<HashMap<String, Arc<jsonschema::Validator>>>> = Mutex::new(None);
const MAX_SCHEMAS: usize = 1024;

/// The hook's trigger schema, compiled (once per distinct text).
fn trigger_schema(hook: &Hook) -> Result<Arc<jsonschema::Validator>, String> {
    let text = &hook.definition.trigger_schema;
    let lock = || SCHEMAS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = lock().as_ref().and_then(|m| m.get(text).cloned()) {
        return Ok(v);
    }
    let compiled = Arc::new(compile_schema(&stored(text))?);
    let mut schemas = lock();
    let map = schemas.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_SCHEMAS {
        map.clear();
    }
    map.insert(text.clone(), compiled.clone());
    Ok(compiled)
}

/// A trigger schema compiled as upstream's validator reads one (draft 7, formats checked).
/// No reference is fetched: a `$ref` to anything outside the schema fails.
pub(super) fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| e.to_string())
}

/// What fired a hook, besides the schedule.
pub(super) struct Trigger {
    pub fired_by: FiredBy,
    /// The trigger's payload (none for a scheduled fire).
    pub payload: Option<Value>,
    /// The caller, for triggerHook (`clientId` in the template's context).
    pub client_id: Option<String>,
    /// Who the fire's record names.
    pub actor: Actor,
}

/// How a fire ended.
enum Fired {
    /// The task was created (or was there already, created by the same fire).
    Created(Slug),
    /// The template rendered to nothing: no task, no record.
    Declined,
    /// The fire failed: the record's error text, the caller's answer, and whether the failure
    /// was the server's (a scheduled fire is then tried again, with the same task id).
    Failed(Slug, String, ApiError, bool),
}

impl Fired {
    /// The fire's last-fires row, recorded at `time` (none for a declined fire).
    fn row(&self, fired_by: FiredBy, time: Millis) -> Option<LastFire> {
        let (task_id, error) = match self {
            Fired::Declined => return None,
            Fired::Created(id) => (*id, None),
            Fired::Failed(id, text, _, _) => (*id, Some(text.clone())),
        };
        Some(LastFire {
            fired_by,
            task_id,
            time,
            error,
        })
    }
}

/// Records a fire of `hook` (its row, if any; for a scheduled fire, the task id it fired
/// with and the next one's) as `actor`.
async fn record(
    st: &AppState,
    hook: &Hook,
    actor: Actor,
    fire: Option<LastFire>,
    scheduled: Option<(Slug, Slug)>,
) -> Result<(), ApiError> {
    let cmd = HookCommand::RecordFire {
        group: hook.group.clone(),
        id: hook.id.clone(),
        fire,
        scheduled,
    };
    st.hooks.execute(actor, cmd).await?;
    Ok(())
}

/// The errors of `payload` against the hook's trigger schema, joined as upstream joins them.
fn check_payload(hook: &Hook, payload: &Value) -> Result<(), ApiError> {
    let schema = trigger_schema(hook)
        .map_err(|e| ApiError::internal(format!("a stored trigger schema: {e}")))?;
    let errors: Vec<String> = schema
        .iter_errors(payload)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("data{path} {e}")
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::input(errors.join("; ")))
    }
}

/// Renders the hook's template for a fire with task id `task_id` at `now` (`None`: it
/// rendered to nothing), its task's defaults filled.
fn render(
    hook: &Hook,
    fired_by: FiredBy,
    task_id: Slug,
    now: Millis,
    payload: Option<&Value>,
    client_id: Option<&str>,
) -> Result<Option<Value>, String> {
    let mut context = json!({
        "firedBy": fired_by.as_str(),
        "taskId": task_id.text().as_str(),
        "now": now.to_rfc3339(),
    });
    if let Some(p) = payload {
        context["payload"] = p.clone();
    }
    if let Some(c) = client_id {
        context["clientId"] = json!(c);
    }
    // json-e sets `now` to the clock itself, under the context given: a `$let` around the
    // template puts the fire's own time back (a scheduled fire's due time, so a retried fire
    // renders the same task)
    let template = json!({
        "$let": { "now": now.to_rfc3339() },
        "in": stored(&hook.definition.task),
    });
    let mut task = json_e::render(&template, &context).map_err(|e| e.to_string())?;
    if task.is_null() {
        return Ok(None);
    }
    if let Some(obj) = task.as_object_mut() {
        // upstream's `fromNow('1 month')`: 30 days
        for (key, value) in [
            ("created", json!(now.to_rfc3339())),
            ("deadline", json!(now.plus(DAY).to_rfc3339())),
            ("expires", json!(now.plus(30 * DAY).to_rfc3339())),
            ("taskGroupId", json!(task_id.text().as_str())),
        ] {
            obj.entry(key).or_insert(value);
        }
    }
    Ok(Some(task))
}

/// The error text a failed createTask leaves in the fire's record (upstream keeps the
/// client's error as pretty JSON), at most `MAX_ERROR_CHARS`.
fn create_error_text(e: &ApiError) -> String {
    let record = json!({
        "name": e.code_str(),
        "code": e.code_str(),
        "statusCode": e.status().as_u16(),
        "message": e.message,
    });
    truncated(serde_json::to_string_pretty(&record).unwrap_or_default())
}

fn truncated(text: String) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((end, _)) => text[..end].to_string(),
        None => text,
    }
}

/// Fires `hook` with `task_id` at `now`: renders and creates the task as the hook's role.
async fn fire(st: &AppState, hook: &Hook, trigger: &Trigger, task_id: Slug, now: Millis) -> Fired {
    let rendered = render(
        hook,
        trigger.fired_by,
        task_id,
        now,
        trigger.payload.as_ref(),
        trigger.client_id.as_deref(),
    );
    let task = match rendered {
        Ok(Some(task)) => task,
        Ok(None) => return Fired::Declined,
        Err(e) => {
            let answer = ApiError::input(format!("While firing hook: {e}"));
            return Fired::Failed(task_id, truncated(e), answer, false);
        }
    };
    let role = format!("hook-id:{}/{}", hook.group, hook.id);
    let caller = Caller {
        client_id: Some(HOOKS_CLIENT.to_string()),
        scopes: st.clients.expand(vec![format!("assume:{role}")]),
    };
    match crate::queue::tasks::create(st, &caller, task_id, &task).await {
        Ok(_) => Fired::Created(task_id),
        Err(e) => {
            let text = create_error_text(&e);
            let server_side = e.status().is_server_error();
            // upstream's answers: the role's missing scopes are a 403, any other createTask
            // error a 400 that quotes it
            let answer = if e.code == ErrorCode::InsufficientScopes {
                ApiError::new(
                    ErrorCode::InsufficientScopes,
                    format!(
                        "The role `{role}` does not have sufficient scopes to create the task: {}",
                        e.message
                    ),
                )
            } else {
                ApiError::input(format!(
                    "While calling createTask: {} {}",
                    e.code_str(),
                    e.message
                ))
            };
            Fired::Failed(task_id, text, answer, server_side)
        }
    }
}

/// triggerHook and triggerHookWithToken: the payload checked, the hook fired now, the fire
/// recorded; the answer (`{taskId, status: {taskId}}`, or `{}` when nothing was created).
pub(super) async fn fire_from_api(
    st: &AppState,
    hook: &Hook,
    trigger: Trigger,
) -> Result<Value, ApiError> {
    let payload = trigger.payload.as_ref().cloned().unwrap_or(json!({}));
    check_payload(hook, &payload)?;
    if !st.engine.role().is_writer() {
        // nothing is fired, nor recorded: the caller may try again (another node may write
        // both partitions then)
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "This node writes the hooks but not the queue's partition; try again shortly.",
        ));
    }
    let task_id = match payload.get("taskId") {
        Some(Value::String(t)) => t
            .parse::<Slug>()
            .map_err(|_| ApiError::input(format!("Invalid taskId format: {t}")))?,
        Some(other) => return Err(ApiError::input(format!("Invalid taskId format: {other}"))),
        None => Slug::nice(),
    };
    let now = Millis::now();
    let fired = fire(st, hook, &trigger, task_id, now).await;
    let row = fired.row(trigger.fired_by, now);
    let answer = match fired {
        Fired::Declined => return Ok(json!({})),
        Fired::Created(id) => Ok(json!({
            "taskId": id.text().as_str(),
            "status": { "taskId": id.text().as_str() },
        })),
        Fired::Failed(_, _, answer, _) => Err(answer),
    };
    record(st, hook, trigger.actor, row, None).await?;
    answer
}

/// A fire for a bound Pulse message whose body is `payload`: refused (nothing recorded) when
/// the body fails the trigger schema; otherwise fired now and recorded, whatever the outcome.
pub(super) async fn fire_from_pulse(
    st: &AppState,
    hook: &Hook,
    payload: Value,
) -> Result<(), ApiError> {
    check_payload(hook, &payload)?;
    let trigger = Trigger {
        fired_by: FiredBy::PulseMessage,
        payload: Some(payload),
        client_id: None,
        actor: Actor::system(HOOKS_CLIENT),
    };
    let now = Millis::now();
    let fired = fire(st, hook, &trigger, Slug::nice(), now).await;
    match fired.row(FiredBy::PulseMessage, now) {
        Some(row) => record(st, hook, trigger.actor, Some(row), None).await,
        None => Ok(()),
    }
}

/// One scheduled fire of `hook`, due at its `next.at`: created with the task id the hook
/// kept for it and `created` = the due time, so a fire repeated after a crash creates the
/// same task. A server-side failure leaves the schedule where it is, to be tried again;
/// anything else (created, declined, refused) moves it on.
async fn fire_scheduled(st: &AppState, hook: &Hook) -> Result<(), ApiError> {
    let trigger = Trigger {
        fired_by: FiredBy::Schedule,
        payload: None,
        client_id: None,
        actor: Actor::system(HOOKS_CLIENT),
    };
    let due = hook.next;
    let fired = fire(st, hook, &trigger, due.task_id, due.at).await;
    match &fired {
        Fired::Failed(_, text, _, true) => {
            return Err(ApiError::new(ErrorCode::ServiceUnavailable, text.clone()))
        }
        Fired::Failed(_, text, _, false) => {
            tracing::warn!(hook = %format!("{}/{}", hook.group, hook.id), error = %text,
                "a scheduled hook failed to create its task");
            if hook.definition.email_on_error {
                email_owner(st, hook, due.at, text).await;
            }
        }
        Fired::Created(_) | Fired::Declined => {}
    }
    let row = fired.row(FiredBy::Schedule, Millis::now());
    let next = Some((due.task_id, Slug::nice()));
    record(st, hook, trigger.actor, row, next).await
}

/// Tells a hook's owner that a scheduled fire created no task (upstream's `emailOnError`),
/// through the notify service: a denylisted owner, or a notify writer elsewhere, only costs a
/// warning. The same failure told twice (a fire retried after its record failed) is sent
/// once: notify drops the duplicate.
async fn email_owner(st: &AppState, hook: &Hook, due: Millis, error: &str) {
    let name = format!("{}/{}", hook.group, hook.id);
    let email = Email {
        address: hook.definition.owner.clone(),
        subject: format!("[Taskcluster Hooks] Scheduled Hook failure: {name}"),
        content: format!(
            "The scheduled fire of hook `{name}` due at {} created no task.\n\n\
             The error:\n\n```\n{error}\n```\n\n\
             Fix the hook, or set its `metadata.emailOnError` to `false` to stop these emails.",
            due.to_rfc3339()
        ),
        link: Some(Link {
            text: "The hook".into(),
            href: format!("{}/hooks/{}/{}", st.public_url, hook.group, hook.id),
        }),
        reply_to: None,
        template: Template::Simple,
    };
    let cmd = NotifyCommand::Email(email);
    if let Err(e) = st.notify.execute(Actor::system(HOOKS_CLIENT), cmd).await {
        tracing::warn!(hook = %name, error = %e, "the hook's owner could not be told of its failure");
    }
}

/// The scheduler: fires every hook whose next scheduled fire has come, then sleeps until the
/// next one is due (at most `SCHEDULE_POLL`). Only a node that writes both the hooks and the
/// queue partitions fires. A fire that failed on the server's side is
/// tried again after `RETRY_AFTER_MS`, with the same task id; meanwhile the others go on.
pub async fn run_schedule(st: Arc<AppState>) {
    let mut retry_after: HashMap<(String, String), Millis> = HashMap::new();
    loop {
        // a fire writes to both partitions: where another node writes the queue's, the task
        // could not be created here
        if !st.hooks.role().is_writer() || !st.engine.role().is_writer() {
            tokio::time::sleep(SCHEDULE_POLL).await;
            continue;
        }
        let now = Millis::now();
        retry_after.retain(|_, at| *at > now);
        let due = st.hooks.view().due(now, DUE_PAGE + retry_after.len());
        let due = due.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the hooks' schedule");
            vec![]
        });
        let mut fired = 0;
        for key in due {
            if retry_after.contains_key(&key) || fired == DUE_PAGE {
                continue;
            }
            let hook = match st.hooks.view().hook(&key.0, &key.1) {
                Ok(Some(h)) if h.next.at <= Millis::now() => h,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a scheduled hook");
                    continue;
                }
            };
            fired += 1;
            if let Err(e) = fire_scheduled(&st, &hook).await {
                tracing::warn!(hook = %format!("{}/{}", key.0, key.1), error = %e.message,
                    "a scheduled fire failed; it will be tried again");
                retry_after.insert(key, Millis::now().plus(RETRY_AFTER_MS));
            }
        }
        if fired == DUE_PAGE {
            // more may be due
            continue;
        }
        let now = Millis::now();
        let wait = match st.hooks.view().next_due() {
            // due already: only hooks waiting to be tried again
            Ok(Some(at)) if at > now => Duration::from_millis((at.0 - now.0).min(1_000) as u64),
            Ok(_) | Err(_) => SCHEDULE_POLL,
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::access::seal::Sealed;
    use taskledger_core::hooks::{HookDefinition, NextFire};

    fn hook(task: Value, trigger_schema: Value) -> Hook {
        Hook {
            group: "g".into(),
            id: "h".into(),
            definition: HookDefinition {
                name: "n".into(),
                description: "d".into(),
                owner: "o@example.com".into(),
                email_on_error: false,
                task: task.to_string(),
                bindings: vec![],
                schedule: vec![],
                trigger_schema: trigger_schema.to_string(),
            },
            token: Sealed {
                nonce: [0; 12],
                ciphertext: vec![],
            },
            next: NextFire {
                task_id: Slug([1; 16]),
                at: Millis(0),
            },
        }
    }

    #[test]
    fn the_template_sees_the_fire_and_the_defaults_fill_only_what_is_missing() {
        let h = hook(
            json!({
                "provisionerId": "p",
                "metadata": {"name": "${firedBy} by ${clientId}: ${payload.n}"},
                "deadline": "2030-01-01T00:00:00.000Z",
                "extra": {"at": "${now}", "later": {"$fromNow": "1 hour"}},
            }),
            json!({}),
        );
        let now = Millis::parse_rfc3339("2026-01-31T12:00:00.000Z").unwrap();
        let id = Slug([5; 16]);
        let task = render(
            &h,
            FiredBy::TriggerHook,
            id,
            now,
            Some(&json!({"n": 7})),
            Some("me"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(task["metadata"]["name"], "triggerHook by me: 7");
        assert_eq!(task["deadline"], "2030-01-01T00:00:00.000Z", "kept");
        // the fire's time, not the clock's, is the template's `now`
        assert_eq!(task["extra"]["at"], "2026-01-31T12:00:00.000Z");
        assert_eq!(task["extra"]["later"], "2026-01-31T13:00:00.000Z");
        assert_eq!(task["created"], "2026-01-31T12:00:00.000Z");
        // 30 days on, as upstream's fromNow('1 month')
        assert_eq!(task["expires"], "2026-03-02T12:00:00.000Z");
        assert_eq!(task["taskGroupId"], id.text().as_str());
    }

    #[test]
    fn a_template_may_decline_and_a_broken_one_says_why() {
        let declining = hook(
            json!({"$if": "firedBy == 'schedule'", "then": {}}),
            json!({}),
        );
        let r = render(
            &declining,
            FiredBy::TriggerHook,
            Slug([1; 16]),
            Millis(0),
            None,
            None,
        );
        assert_eq!(r, Ok(None));
        let broken = hook(json!({"x": {"$eval": "nosuchvar + 1"}}), json!({}));
        let r = render(
            &broken,
            FiredBy::TriggerHook,
            Slug([1; 16]),
            Millis(0),
            None,
            None,
        );
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn a_payload_is_checked_against_the_trigger_schema() {
        let h = hook(
            json!({}),
            json!({"type": "object", "properties": {"n": {"type": "integer"}},
                   "required": ["n"], "additionalProperties": false}),
        );
        assert!(check_payload(&h, &json!({"n": 1})).is_ok());
        let e = check_payload(&h, &json!({"n": "x", "m": 2})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InputError);
        assert!(
            e.message.contains("; "),
            "both errors, joined: {}",
            e.message
        );
        assert!(compile_schema(&json!({"type": 5})).is_err());
        // no remote reference is fetched
        assert!(compile_schema(&json!({"$ref": "http://127.0.0.1:1/schema.json"})).is_err());
    }
}
