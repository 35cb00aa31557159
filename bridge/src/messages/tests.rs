//! The queue messages' bodies, checked against the `Value` bodies the bridge built before.
#![allow(clippy::wildcard_enum_match_arm)] // tests pick out the events they look for

use super::*;
use taskledger_core::ids::Slug;
use taskledger_core::queue::json::status_json;
use taskledger_core::queue::{self, JsonText, Limits, Priority, ReasonResolved};
use taskledger_core::time::{Millis, HOUR};

/// A queue message's body as the bridge built it before typed bodies: a `Value`, field by
/// field.
fn as_value(event: &QueueEvent, t: &Task) -> Option<Value> {
    let tags = json!({ "tags": serde_json::from_str::<Value>(&t.definition.tags.0).unwrap() });
    let worker = |run_id: u32, mut body: Value| {
        if let Some((g, w)) = run_worker(t, run_id) {
            body["workerGroup"] = json!(g);
            body["workerId"] = json!(w);
        }
        body
    };
    Some(match event {
        QueueEvent::TaskDefined { .. } => {
            json!({ "version": 1, "status": status_json(t), "task": tags })
        }
        QueueEvent::RunScheduled { run_id, .. } => {
            json!({ "version": 1, "status": status_json(t), "runId": run_id, "task": tags })
        }
        QueueEvent::RunClaimed {
            run_id,
            worker_group,
            worker_id,
            taken_until,
            ..
        } => json!({
            "version": 1, "status": status_json(t), "runId": run_id,
            "workerGroup": worker_group, "workerId": worker_id,
            "takenUntil": taken_until.to_rfc3339(), "task": tags,
        }),
        QueueEvent::RunResolved { run_id, .. }
        | QueueEvent::RunExceptionRecorded { run_id, .. } => worker(
            *run_id,
            json!({ "version": 1, "status": status_json(t), "runId": run_id, "task": tags }),
        ),
        QueueEvent::ArtifactCreated {
            run_id, artifact, ..
        } => json!({
            "version": 1, "status": status_json(t), "runId": run_id,
            "workerGroup": t.runs[*run_id as usize].worker_group,
            "workerId": t.runs[*run_id as usize].worker_id,
            "artifact": artifact_json(artifact),
        }),
        QueueEvent::PriorityChanged { old, new, .. } => json!({
            "version": 1, "status": status_json(t),
            "oldPriority": old.as_str(), "newPriority": new.as_str(),
        }),
        _ => return None,
    })
}

/// Every task message's typed body is, byte for byte, what the `Value` wrote: tags with
/// keys out of order and characters to escape, a run resolved with and without a worker,
/// an artifact, a priority change.
#[test]
fn typed_bodies_write_the_bytes_a_value_wrote() {
    let now = Millis(1_780_000_000_000);
    let limits = Limits::default();
    let mut def = crate::testing::definition(now);
    def.scheduler_id = "sched".into();
    def.routes = vec!["index.a.b".into()];
    def.priority = Priority::Low;
    def.retries = 1;
    def.tags = JsonText(r#"{"zeta":"\"q\" é\n","Alpha":"1","kind":"it"}"#.into());
    let id = Slug::nice();
    let mut task = Task::defined(id, def.clone(), vec![]);
    let mut checked = 0;
    let mut check = |events: Vec<QueueEvent>, task: &mut Task| {
        for e in &events {
            task.apply(e);
            let Some(expected) = as_value(e, task) else {
                continue;
            };
            let m = queue_message(e, Some(task), None, None).expect("a message");
            assert_eq!(
                String::from_utf8(m.body).unwrap(),
                serde_json::to_string(&expected).unwrap(),
                "{e:?}"
            );
            checked += 1;
        }
    };
    let created = queue::create_task(None, None, &[], id, def, now, &limits).unwrap();
    check(created, &mut task);
    let bumped = queue::change_priority(&task, Priority::High, false, now).unwrap();
    check(bumped, &mut task);
    // an exception resolved before any worker claimed the run: no worker fields
    let cancelled = queue::cancel_task(&task, now).unwrap();
    check(cancelled, &mut task);
    let rerun = queue::rerun_task(&task, now).unwrap();
    check(rerun, &mut task);
    let claimed = queue::claim_run(&task, 1, "g", "w", now, &limits).unwrap();
    check(claimed, &mut task);
    let artifact = Artifact {
        name: "public/ref".into(),
        storage: ArtifactStorage::Reference {
            url: "https://example.com/a".into(),
        },
        content_type: "text/plain".into(),
        expires: now.plus(HOUR),
        present: true,
    };
    let made = queue::create_artifact(Some(&task), 1, None, artifact, now).unwrap();
    check(made, &mut task);
    let failed = queue::report(&task, 1, ReasonResolved::Failed, now).unwrap();
    check(failed, &mut task);
    // and the usual task, without tags
    let (plain_id, plain_def) = (Slug::nice(), crate::testing::definition(now));
    let mut plain = Task::defined(plain_id, plain_def.clone(), vec![]);
    let created = queue::create_task(None, None, &[], plain_id, plain_def, now, &limits);
    check(created.unwrap(), &mut plain);
    // defined, pending, priority, exception, pending, running, artifact, failed; defined,
    // pending
    assert_eq!(checked, 10);
}

/// client-deleted is deleteClient's: the expiry reactor's removal publishes nothing.
#[test]
fn an_expired_clients_removal_publishes_nothing() {
    let deleted = |expired| AuthEvent::ClientDeleted {
        client_id: "c".into(),
        expired,
    };
    let called = auth_message(&deleted(false)).expect("deleteClient publishes");
    assert_eq!(
        called.exchange,
        format!("{AUTH_EXCHANGE_PREFIX}client-deleted")
    );
    assert!(auth_message(&deleted(true)).is_none());
}

/// A call repeated to the same effect publishes that call's message again (pulse.md §6:
/// enableClient and disableClient announce client-updated, deleteClient and deleteRole their
/// deletion, createRole the role, changed or not).
#[test]
fn a_repeated_auth_call_publishes_its_message_again() {
    use taskledger_core::access::AuthRepeat;
    let cases = [
        (
            AuthRepeat::ClientEnabled {
                client_id: "c".into(),
            },
            "client-updated",
            json!({ "version": 1, "clientId": "c" }),
        ),
        (
            AuthRepeat::ClientDisabled {
                client_id: "c".into(),
            },
            "client-updated",
            json!({ "version": 1, "clientId": "c" }),
        ),
        (
            AuthRepeat::ClientDeleted {
                client_id: "c".into(),
            },
            "client-deleted",
            json!({ "version": 1, "clientId": "c" }),
        ),
        (
            AuthRepeat::RoleCreated {
                role_id: "r*".into(),
            },
            "role-created",
            json!({ "version": 1, "roleId": "r*" }),
        ),
        (
            AuthRepeat::RoleDeleted {
                role_id: "r*".into(),
            },
            "role-deleted",
            json!({ "version": 1, "roleId": "r*" }),
        ),
    ];
    for (repeat, exchange, body) in cases {
        let m = auth_message(&AuthEvent::Repeated { repeat }).expect("published");
        assert_eq!(m.exchange, format!("{AUTH_EXCHANGE_PREFIX}{exchange}"));
        assert_eq!(m.json(), body);
        assert_eq!(m.routing_key, "_");
    }
}

/// A running run resolved by its deadline: task-exception names no worker, neither in the
/// body nor in the routing key (queue.md §6.3); a worker's own exception report does.
#[test]
fn a_deadline_exception_names_no_worker() {
    let (now, limits) = (Millis::now(), Limits::default());
    let exception = |deadline: bool| {
        let (id, def) = (Slug::nice(), crate::testing::definition(now));
        let mut task = Task::defined(id, def.clone(), vec![]);
        let run = |events: Vec<QueueEvent>, task: &mut Task| {
            events.iter().for_each(|e| task.apply(e));
            events
        };
        run(
            queue::create_task(None, None, &[], id, def, now, &limits).unwrap(),
            &mut task,
        );
        run(
            queue::claim_run(&task, 0, "wg", "wid", now, &limits).unwrap(),
            &mut task,
        );
        let resolved = if deadline {
            run(
                queue::exceed_deadline(&task, now.plus(2 * HOUR)).unwrap(),
                &mut task,
            )
        } else {
            let reason = ReasonResolved::MalformedPayload;
            run(queue::report(&task, 0, reason, now).unwrap(), &mut task)
        };
        let event = resolved
            .iter()
            .find(|e| matches!(e, QueueEvent::RunResolved { .. }))
            .expect("the run is resolved");
        let m = queue_message(event, Some(&task), None, None).expect("a message");
        assert!(m.exchange.ends_with("task-exception"), "{}", m.exchange);
        (m.routing_key.clone(), m.json())
    };
    let (key, body) = exception(true);
    assert_eq!(key.split('.').nth(3), Some("_"), "{key}");
    assert_eq!(key.split('.').nth(4), Some("_"), "{key}");
    assert!(body.get("workerGroup").is_none() && body.get("workerId").is_none());
    assert_eq!(
        body["status"]["runs"][0]["reasonResolved"],
        "deadline-exceeded"
    );
    let (key, body) = exception(false);
    assert_eq!(key.split('.').nth(3), Some("wg"), "{key}");
    assert_eq!(body["workerId"], "wid");
}
