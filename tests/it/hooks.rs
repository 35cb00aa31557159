//! The hooks service, driven by the official `taskcluster` crate's Hooks client: definitions
//! (defaults, idempotent create, 409, update, remove), triggers by API and by token (the
//! trigger schema, the JSON-e context, the hook's role as the task's creator, a role without
//! the scopes), the last fires and the status, a template that declines; and the scheduler,
//! which fires a hook on its cron schedule, stops when the schedule is emptied, and whose
//! hooks and fires come back from the log after a restart. No trigger token is in the log.

use crate::auth::{create_client, root_auth};
use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;
use taskcluster::{ClientBuilder, Credentials, Hooks};

const GROUP: &str = "it-hooks";

fn hooks_as(s: &Server, creds: Credentials) -> Hooks {
    Hooks::new(ClientBuilder::new(&s.root_url).credentials(creds)).unwrap()
}

fn root_hooks(s: &Server) -> Hooks {
    hooks_as(s, Credentials::new("static/taskcluster/root", ROOT_TOKEN))
}

/// A hook whose task runs on `queue`, named from the fire's context.
fn definition(queue: &str, schedule: &[&str]) -> Value {
    json!({
        "metadata": {
            "name": "nightly",
            "description": "an integration test's hook",
            "owner": "it@example.com",
        },
        "schedule": schedule,
        "task": {
            "taskQueueId": queue,
            "payload": {"command": ["echo", "${firedBy}"]},
            "metadata": {
                "name": {"$if": "firedBy == 'triggerHook'",
                         "then": "n=${payload.n} by ${clientId}",
                         "else": "${firedBy}"},
                "description": "fired",
                "owner": "it@example.com",
                "source": "https://example.com/hooks",
            },
        },
        "triggerSchema": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "taskId": {"type": "string"}},
            "additionalProperties": false,
        },
    })
}

/// The role a hook's tasks are created as, allowed to create tasks on `queue`.
async fn grant_role(s: &Server, hook_id: &str, queue: &str) {
    root_auth(s)
        .createRole(
            &format!("hook-id:{GROUP}/{hook_id}"),
            &json!({
                "description": "the hook's tasks",
                "scopes": [
                    format!("queue:create-task:lowest:{queue}"),
                    "queue:create-task:project:none",
                    "queue:scheduler-id:-",
                ],
            }),
        )
        .await
        .unwrap();
}

/// Every last fire of a hook, newest first, read two to a page (none: the 404 upstream gives
/// a hook that never fired).
async fn last_fires(hooks: &Hooks, hook_id: &str) -> Vec<Value> {
    let mut fires = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match hooks
            .listLastFires(GROUP, hook_id, token.as_deref(), Some("2"))
            .await
        {
            Ok(page) => page,
            Err(e) if status_of(&e) == Some(404) && token.is_none() => return fires,
            Err(e) => panic!("{e}"),
        };
        fires.extend(page["lastFires"].as_array().unwrap().iter().cloned());
        token = page["continuationToken"].as_str().map(str::to_owned);
        if token.is_none() {
            return fires;
        }
    }
}

#[tokio::test]
async fn hooks_are_defined_triggered_and_their_fires_listed() {
    let mut s = Server::start(&[]).await;
    let hooks = root_hooks(&s);
    let q = s.queue();
    let queue = fresh_queue();
    let id = "nightly/linux";
    grant_role(&s, id, &queue).await;

    // create: upstream's defaults filled in; the same again is fine, another is a conflict
    let created = hooks
        .createHook(GROUP, id, &definition(&queue, &[]))
        .await
        .unwrap();
    assert_eq!(created["hookGroupId"], GROUP);
    assert_eq!(created["hookId"], id);
    assert_eq!(created["metadata"]["emailOnError"], true);
    assert_eq!(created["bindings"], json!([]));
    assert_eq!(hooks.hook(GROUP, id).await.unwrap(), created);
    let again = hooks
        .createHook(GROUP, id, &definition(&queue, &[]))
        .await
        .unwrap();
    assert_eq!(again, created);
    let other = hooks
        .createHook(GROUP, id, &definition(&fresh_queue(), &[]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&other), Some(409));
    assert_eq!(hooks.hook(GROUP, id).await.unwrap(), created, "unchanged");
    let groups = hooks.listHookGroups().await.unwrap();
    assert!(groups["groups"].as_array().unwrap().contains(&json!(GROUP)));
    assert_eq!(
        hooks.listHooks(GROUP).await.unwrap()["hooks"],
        json!([created])
    );

    // a trigger: the payload checked first; the task created as the hook's role
    let bad = hooks
        .triggerHook(GROUP, id, &json!({"n": "five"}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&bad), Some(400));
    let fired = hooks
        .triggerHook(GROUP, id, &json!({"n": 5}))
        .await
        .unwrap();
    let task_id = fired["taskId"].as_str().unwrap().to_string();
    assert_eq!(fired["status"]["taskId"], task_id.as_str());
    let task = q.task(&task_id).await.unwrap();
    assert_eq!(task["metadata"]["name"], "n=5 by static/taskcluster/root");
    assert_eq!(task["taskGroupId"], task_id.as_str(), "a default");
    assert_eq!(state_of(&q, &task_id).await["state"], "pending");

    // a caller-chosen task id, as the payload allows
    let chosen = slugid::nice();
    let fired = hooks
        .triggerHook(GROUP, id, &json!({"n": 6, "taskId": chosen}))
        .await
        .unwrap();
    assert_eq!(fired["taskId"], chosen.as_str());

    // by token, with no credentials at all; a reset token replaces the old one
    let token = hooks.getTriggerToken(GROUP, id).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let anonymous = Hooks::new(ClientBuilder::new(&s.root_url)).unwrap();
    let by_token = anonymous
        .triggerHookWithToken(GROUP, id, &token, &json!({"n": 7}))
        .await
        .unwrap();
    let token_task = by_token["taskId"].as_str().unwrap().to_string();
    assert_eq!(
        q.task(&token_task).await.unwrap()["metadata"]["name"],
        "triggerHookWithToken"
    );
    let wrong = anonymous
        .triggerHookWithToken(GROUP, id, "not-the-token", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&wrong), Some(401));
    let reset = hooks.resetTriggerToken(GROUP, id).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(reset, token);
    let stale = anonymous
        .triggerHookWithToken(GROUP, id, &token, &json!({}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&stale), Some(401));
    anonymous
        .triggerHookWithToken(GROUP, id, &reset, &json!({}))
        .await
        .unwrap();

    // the fires, newest first, paged; the refused payload left none
    let fires = last_fires(&hooks, id).await;
    let by: Vec<&str> = fires
        .iter()
        .map(|f| f["firedBy"].as_str().unwrap())
        .collect();
    assert_eq!(
        by,
        [
            "triggerHookWithToken",
            "triggerHookWithToken",
            "triggerHook",
            "triggerHook"
        ]
    );
    assert_eq!(fires[2]["taskId"], chosen.as_str());
    assert_eq!(fires[3]["taskId"], task_id.as_str());
    assert!(fires
        .iter()
        .all(|f| f["result"] == "success" && f["error"] == "" && f["taskState"] == "pending"));
    let status = hooks.getHookStatus(GROUP, id).await.unwrap();
    assert_eq!(status["lastFire"]["result"], "success");
    assert!(status.get("nextScheduledDate").is_none(), "no schedule");

    // a hook whose role cannot create its task: 403, and the fire is recorded as an error
    let bare = "no-role";
    hooks
        .createHook(GROUP, bare, &definition(&queue, &[]))
        .await
        .unwrap();
    let refused = hooks
        .triggerHook(GROUP, bare, &json!({"n": 1}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&refused), Some(403));
    let fires = last_fires(&hooks, bare).await;
    assert_eq!(fires.len(), 1);
    assert_eq!(fires[0]["result"], "error");
    assert_eq!(fires[0]["taskState"], "unknown");
    let error: Value = serde_json::from_str(fires[0]["error"].as_str().unwrap()).unwrap();
    assert_eq!(error["code"], "InsufficientScopes");
    let status = hooks.getHookStatus(GROUP, bare).await.unwrap();
    assert_eq!(status["lastFire"]["result"], "error");
    assert_eq!(status["lastFire"]["error"]["code"], "InsufficientScopes");

    // a template that declines creates nothing and records nothing
    let mut declining = definition(&queue, &[]);
    declining["task"] = json!({"$if": "payload.n > 10", "then": declining["task"].clone()});
    hooks.updateHook(GROUP, bare, &declining).await.unwrap();
    let nothing = hooks
        .triggerHook(GROUP, bare, &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(nothing, json!({}));
    assert_eq!(last_fires(&hooks, bare).await.len(), 1);

    // scopes: a client that may trigger may not define
    let trigger_only = create_client(
        &s,
        "it-hooks-trigger",
        &[&format!("hooks:trigger-hook:{GROUP}/{id}")],
    )
    .await;
    let limited = hooks_as(&s, trigger_only);
    limited
        .triggerHook(GROUP, id, &json!({"n": 8}))
        .await
        .unwrap();
    let denied = limited
        .createHook(GROUP, "other", &definition(&queue, &[]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&denied), Some(403));
    let denied = limited.hook(GROUP, id).await.unwrap_err();
    assert_eq!(status_of(&denied), Some(403));

    // bad input: 400 with Taskcluster's body, nothing changed
    let (status, body) = s
        .root_call(
            "PUT",
            &format!("/api/hooks/v1/hooks/{GROUP}/bad"),
            &json!({"metadata": {}, "task": {}, "schedule": ["0 0 61 * * *"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "InputValidationError");
    let mut bad_cron = definition(&queue, &["0 0 61 * * *"]);
    bad_cron["metadata"]["name"] = json!("bad cron");
    let (status, body) = s
        .root_call(
            "PUT",
            &format!("/api/hooks/v1/hooks/{GROUP}/bad"),
            &bad_cron,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "InputError");
    let (status, _) = s
        .root_call(
            "PUT",
            "/api/hooks/v1/hooks/bad%20group/x",
            &definition(&queue, &[]),
        )
        .await;
    assert_eq!(status, 400);
    let missing = hooks.hook(GROUP, "bad").await.unwrap_err();
    assert_eq!(status_of(&missing), Some(404));

    // update keeps what it is not given (the bindings), remove takes the fires along
    let mut bound = definition(&queue, &[]);
    bound["bindings"] = json!([{
        "exchange": "exchange/taskcluster-queue/v1/task-completed",
        "routingKeyPattern": "#",
    }]);
    hooks.updateHook(GROUP, id, &bound).await.unwrap();
    let updated = hooks
        .updateHook(GROUP, id, &definition(&queue, &["0 0 0 1 1 *"]))
        .await
        .unwrap();
    assert_eq!(updated["bindings"], bound["bindings"]);
    let status = hooks.getHookStatus(GROUP, id).await.unwrap();
    let next = status["nextScheduledDate"].as_str().unwrap();
    assert!(next.ends_with("-01-01T00:00:00.000Z"), "{next}");

    // who did what to the hook, and how it stood at an instant: the audit API
    let path = format!("/api/audit/v1/history/hook/{GROUP}/{id}");
    let (status, history) = s.root_call("GET", &path, &json!({})).await;
    assert_eq!(status, 200, "{history}");
    let events = history["events"].as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[..2],
        ["HookCreated", "HookCreateRepeated"],
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| **k == "HookFired").count(), 5);
    assert_eq!(
        kinds.iter().filter(|k| **k == "TriggerTokenReset").count(),
        1
    );
    let fired_by = |e: &Value| {
        e["envelope"]["actor"]["client_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(fired_by(&events[0]), "static/taskcluster/root");
    let limited_fire = events
        .iter()
        .filter(|e| e["eventType"] == "HookFired")
        .map(fired_by)
        .collect::<Vec<_>>();
    assert!(
        limited_fire.contains(&"it-hooks-trigger".to_string()),
        "{limited_fire:?}"
    );
    assert!(
        limited_fire.contains(&format!("hook-token:{GROUP}/{id}")),
        "{limited_fire:?}"
    );
    let created_at = events[0]["envelope"]["timeIso"].as_str().unwrap();
    let path = format!("/api/audit/v1/as-of/hook/{GROUP}/{id}?time={created_at}");
    let (status, then) = s.root_call("GET", &path, &json!({})).await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(then["state"], created, "as created, before the updates");

    // after a restart, everything comes back from the log
    let before = hooks.hook(GROUP, id).await.unwrap();
    let fires_before = last_fires(&hooks, id).await;
    s.restart().await;
    let hooks = root_hooks(&s);
    assert_eq!(hooks.hook(GROUP, id).await.unwrap(), before);
    assert_eq!(last_fires(&hooks, id).await, fires_before);

    hooks.removeHook(GROUP, id).await.unwrap();
    let gone = hooks.hook(GROUP, id).await.unwrap_err();
    assert_eq!(status_of(&gone), Some(404));
    let gone = hooks
        .listLastFires(GROUP, id, None, None)
        .await
        .unwrap_err();
    assert_eq!(status_of(&gone), Some(404));
    hooks.removeHook(GROUP, id).await.unwrap();

    // a rebuild of the projection from the log equals the live one
    let (ok, out, err) = crate::audit::cli(&s, &["replay", "--verify", "--projection", "hooks"]);
    assert!(ok && out.contains("verified"), "{out}{err}");

    // an audit dump of the log shows no trigger token (the log's own bytes hold it sealed:
    // projections' hooks_view test)
    let (ok, text, err) = crate::audit::cli(&s, &["events", "tail", "--service", "hooks"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("\"eventType\":\"TriggerTokenReset\""),
        "{text}"
    );
    for t in [&token, &reset] {
        assert!(!text.contains(t.as_str()), "a token in the log");
    }
}

#[tokio::test]
async fn a_scheduled_hook_fires_on_its_schedule_until_the_schedule_is_emptied() {
    let s = Server::start(&[]).await;
    let hooks = root_hooks(&s);
    let q = s.queue();
    let queue = fresh_queue();
    let id = "every-second";
    grant_role(&s, id, &queue).await;
    hooks
        .createHook(GROUP, id, &definition(&queue, &["* * * * * *"]))
        .await
        .unwrap();
    let fires = eventually(Duration::from_secs(20), || async {
        let fires = last_fires(&hooks, id).await;
        (fires.len() >= 2).then_some(fires)
    })
    .await;
    for fire in &fires {
        assert_eq!(fire["firedBy"], "schedule");
        assert_eq!(fire["result"], "success", "{fire}");
    }
    assert_ne!(
        fires[0]["taskId"], fires[1]["taskId"],
        "a new task each time"
    );
    // each task was created for its due second, and named by its context
    let task = q.task(fires[1]["taskId"].as_str().unwrap()).await.unwrap();
    assert!(
        task["created"].as_str().unwrap().ends_with(".000Z"),
        "{task}"
    );
    assert_eq!(task["metadata"]["name"], "schedule");

    // an empty schedule stops the fires
    hooks
        .updateHook(GROUP, id, &definition(&queue, &[]))
        .await
        .unwrap();
    let settled = last_fires(&hooks, id).await.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = last_fires(&hooks, id).await.len();
    assert!(after <= settled + 1, "{settled} then {after}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(last_fires(&hooks, id).await.len(), after);
}

/// A scheduled fire that creates no task (the hook's role lacks the scopes) is recorded as an
/// error and, with `emailOnError` (the default), mailed to the hook's owner through notify;
/// a hook that turned it off sends nothing.
#[tokio::test]
async fn a_failed_scheduled_fire_emails_the_owner() {
    let s = Server::start(&[]).await;
    let hooks = root_hooks(&s);
    let queue = fresh_queue();
    let (told, silent) = ("fails-loudly", "fails-quietly");
    hooks
        .createHook(GROUP, told, &definition(&queue, &["* * * * * *"]))
        .await
        .unwrap();
    let mut quiet = definition(&queue, &["* * * * * *"]);
    quiet["metadata"]["emailOnError"] = json!(false);
    hooks.createHook(GROUP, silent, &quiet).await.unwrap();
    let subject = format!("[Taskcluster Hooks] Scheduled Hook failure: {GROUP}/{told}");
    let mail =
        crate::notify::mail_with(&s.data_dir, &["To: it@example.com", subject.as_str()]).await;
    assert!(mail.contains("does not have sufficient scopes"), "{mail}");
    let fires = last_fires(&hooks, silent).await;
    assert!(fires.iter().any(|f| f["result"] == "error"), "{fires:?}");
    // none for the quiet hook (whose failures are older than the mail just found, and the
    // delivery reactor looks at the outbox four times a second)
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    hooks.removeHook(GROUP, told).await.unwrap();
    hooks.removeHook(GROUP, silent).await.unwrap();
    let all = crate::notify::mails(&s.data_dir);
    assert!(
        all.iter().all(|(_, text)| !text.contains(silent)),
        "the quiet hook mailed"
    );
}
