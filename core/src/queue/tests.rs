//! Given/when/then tests over every transition, a proptest over random command sequences, and
//! golden bytes pinning the wire format.

use super::*;
use crate::ids::{Slug, TaskId};
use crate::time::{Millis, DAY as DAY_MS, HOUR, MINUTE};
use proptest::prelude::*;

const NOW: Millis = Millis(1_700_000_000_000);

fn tid(n: u8) -> TaskId {
    let mut b = [0u8; 16];
    b[0] = n;
    b[6] = 0x40; // version 4
    b[8] = 0x80; // RFC 4122 variant
    Slug(b)
}

fn definition(group: TaskId) -> TaskDefinition {
    TaskDefinition {
        task_queue_id: "prov/wt".parse().unwrap(),
        scheduler_id: "-".into(),
        project_id: "none".into(),
        task_group_id: group,
        dependencies: vec![],
        requires: Requires::AllCompleted,
        routes: vec![],
        priority: Priority::Lowest,
        retries: 2,
        created: NOW,
        deadline: NOW.plus(HOUR),
        expires: NOW.plus(48 * HOUR),
        scopes: vec![],
        payload: JsonText("{}".into()),
        metadata: Metadata {
            name: "n".into(),
            description: "d".into(),
            owner: "o@example.com".into(),
            source: "https://example.com".into(),
        },
        tags: JsonText("{}".into()),
        extra: JsonText("{}".into()),
    }
}

/// Folds events into the task they describe.
fn given(events: &[QueueEvent]) -> Task {
    let mut task: Option<Task> = None;
    for e in events {
        match (e, task.as_mut()) {
            (
                QueueEvent::TaskDefined {
                    task_id,
                    definition,
                    unsatisfied,
                },
                _,
            ) => {
                task = Some(Task::defined(
                    *task_id,
                    TaskDefinition::clone(definition),
                    unsatisfied.clone(),
                ))
            }
            (e, Some(t)) => t.apply(e),
            (_, None) => {}
        }
    }
    task.expect("a TaskDefined event")
}

fn created() -> Vec<QueueEvent> {
    create_task(
        None,
        None,
        &[],
        tid(1),
        definition(tid(1)),
        NOW,
        &Limits::default(),
    )
    .unwrap()
}

fn claimed() -> Vec<QueueEvent> {
    let mut ev = created();
    ev.extend(claim_run(&given(&ev), 0, "wg", "wi", NOW, &Limits::default()).unwrap());
    ev
}

fn check(result: Result<Vec<QueueEvent>, QueueError>, expected: &[&str]) -> Vec<QueueEvent> {
    let events = result.unwrap_or_else(|e| panic!("refused: {e}"));
    let names: Vec<_> = events.iter().map(|e| e.type_name()).collect();
    assert_eq!(names, expected);
    events
}

#[test]
fn create_without_dependencies_schedules_run_zero() {
    let ev = check(
        create_task(
            None,
            None,
            &[],
            tid(1),
            definition(tid(1)),
            NOW,
            &Limits::default(),
        ),
        &["TaskGroupDefined", "TaskDefined", "RunScheduled"],
    );
    let t = given(&ev);
    assert_eq!(t.state_str(), "pending");
    assert_eq!(t.runs[0].reason_created, ReasonCreated::Scheduled);
    assert_eq!(t.retries_left, 2);
}

#[test]
fn create_is_idempotent_and_conflicts_on_other_definition() {
    let t = given(&created());
    check(
        create_task(
            Some(&t),
            None,
            &[],
            tid(1),
            definition(tid(1)),
            NOW,
            &Limits::default(),
        ),
        // nothing changes; task-defined and task-pending are published again
        &["Repeated", "Repeated"],
    );
    let mut other = definition(tid(1));
    other.retries = 3;
    let err = create_task(Some(&t), None, &[], tid(1), other, NOW, &Limits::default());
    assert!(matches!(err, Err(QueueError::Conflict(_))));
    // after a priority change the task reads with its new priority, as upstream's one row
    // does: the original body conflicts, the body with the new priority is the same task
    let mut moved = t.clone();
    moved.apply(&change_priority(&t, Priority::High, false, NOW).unwrap()[0]);
    let original = create_task(
        Some(&moved),
        None,
        &[],
        tid(1),
        definition(tid(1)),
        NOW,
        &Limits::default(),
    );
    assert!(matches!(original, Err(QueueError::Conflict(_))));
    let mut now_reads = definition(tid(1));
    now_reads.priority = Priority::High;
    check(
        create_task(
            Some(&moved),
            None,
            &[],
            tid(1),
            now_reads,
            NOW,
            &Limits::default(),
        ),
        &["Repeated", "Repeated"],
    );
}

#[test]
fn create_checks_times() {
    let mut d = definition(tid(1));
    d.created = NOW.minus(16 * MINUTE);
    assert!(matches!(
        create_task(None, None, &[], tid(1), d, NOW, &Limits::default()),
        Err(QueueError::Input(m)) if m.contains("past")
    ));
    let mut d = definition(tid(1));
    d.deadline = NOW.plus(6 * 24 * HOUR);
    d.expires = d.deadline;
    assert!(create_task(None, None, &[], tid(1), d, NOW, &Limits::default()).is_err());
    let mut d = definition(tid(1));
    d.expires = NOW.plus(MINUTE);
    assert!(create_task(None, None, &[], tid(1), d, NOW, &Limits::default()).is_err());
    // upstream's text, naming no scope
    let mut d = definition(tid(1));
    d.scopes = vec!["a:b".into(), "queue:**".into()];
    assert_eq!(
        create_task(None, None, &[], tid(1), d, NOW, &Limits::default()),
        Err(QueueError::Input("scopes must not end with `**`".into()))
    );
}

#[test]
fn sealed_group_and_other_scheduler_conflict() {
    let group = TaskGroup {
        task_group_id: tid(9),
        scheduler_id: "-".into(),
        expires: NOW.plus(HOUR),
        sealed: Some(NOW),
    };
    let r = create_task(
        None,
        Some(&group),
        &[],
        tid(1),
        definition(tid(9)),
        NOW,
        &Limits::default(),
    );
    assert!(matches!(r, Err(QueueError::Conflict(m)) if m.contains("sealed")));
    let group = TaskGroup {
        sealed: None,
        scheduler_id: "other".into(),
        ..group
    };
    let r = create_task(
        None,
        Some(&group),
        &[],
        tid(1),
        definition(tid(9)),
        NOW,
        &Limits::default(),
    );
    assert!(matches!(r, Err(QueueError::Conflict(m)) if m.contains("schedulerId")));
    let group = TaskGroup {
        scheduler_id: "-".into(),
        ..group
    };
    check(
        create_task(
            None,
            Some(&group),
            &[],
            tid(1),
            definition(tid(9)),
            NOW,
            &Limits::default(),
        ),
        &["TaskGroupExpiresRaised", "TaskDefined", "RunScheduled"],
    );
}

/// Upstream checks the group before the task: once the group is sealed, even an identical
/// repeat of a task already in it gets 409.
#[test]
fn a_repeat_into_a_group_sealed_since_conflicts() {
    let t = given(&created());
    let group = TaskGroup {
        task_group_id: tid(1),
        scheduler_id: "-".into(),
        expires: NOW.plus(49 * HOUR),
        sealed: None,
    };
    let repeat = |group: &TaskGroup| {
        create_task(
            Some(&t),
            Some(group),
            &[],
            tid(1),
            definition(tid(1)),
            NOW,
            &Limits::default(),
        )
    };
    check(repeat(&group), &["Repeated", "Repeated"]);
    let sealed = TaskGroup {
        sealed: Some(NOW),
        ..group
    };
    assert!(matches!(repeat(&sealed), Err(QueueError::Conflict(m)) if m.contains("sealed")));
}

/// declareWorker's expiry: as given; without one, a live worker keeps its own (a quarantined
/// one too, past its expiry), a new or expired one gets a day.
#[test]
fn a_declared_worker_keeps_its_expiry_unless_given_one() {
    let (soon, past) = (NOW.plus(HOUR), NOW.minus(HOUR));
    assert_eq!(declared_expiry(Some(soon), None, NOW), soon);
    assert_eq!(
        declared_expiry(Some(soon), Some((NOW.plus(DAY_MS), None)), NOW),
        soon
    );
    assert_eq!(declared_expiry(None, Some((soon, None)), NOW), soon);
    assert_eq!(declared_expiry(None, None, NOW), NOW.plus(DAY_MS));
    assert_eq!(
        declared_expiry(None, Some((past, None)), NOW),
        NOW.plus(DAY_MS)
    );
    assert_eq!(declared_expiry(None, Some((past, Some(soon))), NOW), past);
    assert_eq!(
        declared_expiry(None, Some((past, Some(past))), NOW),
        NOW.plus(DAY_MS)
    );
}

#[test]
fn dependencies_wait_then_schedule() {
    let mut d = definition(tid(2));
    d.dependencies = vec![tid(1)];
    let dep = DependencyView {
        task_id: tid(1),
        found: Some(DependencyState {
            resolution: None,
            expires: NOW.plus(48 * HOUR),
        }),
    };
    let ev = check(
        create_task(
            None,
            None,
            &[dep],
            tid(2),
            d.clone(),
            NOW,
            &Limits::default(),
        ),
        &["TaskGroupDefined", "TaskDefined"],
    );
    let t = given(&ev);
    assert_eq!(t.state_str(), "unscheduled");
    // a failed dependency does not satisfy all-completed
    check(
        satisfy_dependency(&t, tid(1), Resolution::Unsuccessful, NOW),
        &[],
    );
    let ev2 = check(
        satisfy_dependency(&t, tid(1), Resolution::Completed, NOW),
        &["DependencySatisfied", "RunScheduled"],
    );
    let mut t2 = t.clone();
    ev2.iter().for_each(|e| t2.apply(e));
    assert_eq!(t2.state_str(), "pending");
    // all-resolved accepts failures
    let mut t3 = t.clone();
    t3.definition.requires = Requires::AllResolved;
    check(
        satisfy_dependency(&t3, tid(1), Resolution::Unsuccessful, NOW),
        &["DependencySatisfied", "RunScheduled"],
    );
}

#[test]
fn missing_and_expiring_dependencies_are_input_errors() {
    let mut d = definition(tid(2));
    d.dependencies = vec![tid(1), tid(3)];
    let views = [
        DependencyView {
            task_id: tid(1),
            found: None,
        },
        DependencyView {
            task_id: tid(3),
            found: Some(DependencyState {
                resolution: None,
                expires: NOW,
            }),
        },
    ];
    // upstream's text; with a task missing, the expiring one is not named
    let r = create_task(
        None,
        None,
        &views,
        tid(2),
        d.clone(),
        NOW,
        &Limits::default(),
    );
    let Err(QueueError::Input(m)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        m,
        format!(
            "`task.dependencies` references non-existing tasks: \n * {}\nAll taskIds in `task.dependencies` **must** exist\nbefore the task is created.\n",
            tid(1)
        )
    );
    // without one missing, the expiring ones
    let r = create_task(None, None, &views[1..], tid(2), d, NOW, &Limits::default());
    let Err(QueueError::Input(m)) = r else {
        panic!("{r:?}")
    };
    assert!(
        m.starts_with("`task.dependencies` references tasks that expires\n"),
        "{m}"
    );
    assert!(m.contains(&format!(" * {},\n", tid(3))), "{m}");
}

#[test]
fn claim_reclaim_complete() {
    let ev = claimed();
    let t = given(&ev);
    assert_eq!(t.state_str(), "running");
    assert_eq!(t.runs[0].taken_until, Some(NOW.plus(1_200_000)));
    // a second claim conflicts
    assert!(claim_run(&t, 0, "wg", "other", NOW, &Limits::default()).is_err());
    check(
        reclaim_run(&t, 0, NOW.plus(MINUTE), &Limits::default()),
        &["RunReclaimed"],
    );
    let done = check(
        report(&t, 0, ReasonResolved::Completed, NOW),
        &["RunResolved"],
    );
    let mut t2 = t.clone();
    done.iter().for_each(|e| t2.apply(e));
    assert_eq!(t2.state_str(), "completed");
    // idempotent repeat, conflicting other report
    check(
        report(&t2, 0, ReasonResolved::Completed, NOW),
        &["Repeated"],
    );
    assert!(report(&t2, 0, ReasonResolved::Failed, NOW).is_err());
    assert!(reclaim_run(&t2, 0, NOW, &Limits::default()).is_err());
    assert!(matches!(
        report(&t2, 5, ReasonResolved::Failed, NOW),
        Err(QueueError::RunNotFound { .. })
    ));
}

/// A report repeated once a later run exists: completed/failed only while the run is the last
/// one; an exception also while one run (here its retry) follows it; never past that.
#[test]
fn repeated_reports_conflict_once_later_runs_exist() {
    let mut ev = claimed();
    let t = given(&ev);
    ev.extend(report(&t, 0, ReasonResolved::Completed, NOW).unwrap());
    let t = given(&ev);
    ev.extend(rerun_task(&t, NOW).unwrap());
    let t = given(&ev);
    assert_eq!(t.runs.len(), 2);
    assert!(matches!(
        report(&t, 0, ReasonResolved::Completed, NOW),
        Err(QueueError::Conflict(_))
    ));

    let mut ev = claimed();
    let t = given(&ev);
    ev.extend(report(&t, 0, ReasonResolved::WorkerShutdown, NOW).unwrap());
    let t = given(&ev);
    assert_eq!(t.runs.len(), 2, "the retry");
    check(
        report(&t, 0, ReasonResolved::WorkerShutdown, NOW),
        &["Repeated"],
    );
    assert!(report(&t, 0, ReasonResolved::InternalError, NOW).is_err());
    ev.extend(claim_run(&t, 1, "wg", "wi", NOW, &Limits::default()).unwrap());
    let t = given(&ev);
    ev.extend(report(&t, 1, ReasonResolved::WorkerShutdown, NOW).unwrap());
    let t = given(&ev);
    assert_eq!(t.runs.len(), 3, "a second retry");
    assert!(matches!(
        report(&t, 0, ReasonResolved::WorkerShutdown, NOW),
        Err(QueueError::Conflict(_))
    ));
    check(
        report(&t, 1, ReasonResolved::WorkerShutdown, NOW),
        &["Repeated"],
    );
}

#[test]
fn worker_shutdown_retries_until_retries_run_out() {
    let mut ev = claimed();
    for round in 0..3u32 {
        let t = given(&ev);
        let out = report(&t, round, ReasonResolved::WorkerShutdown, NOW).unwrap();
        ev.extend(out.clone());
        let t = given(&ev);
        if round < 2 {
            assert_eq!(out.len(), 2, "round {round} retries");
            assert_eq!(
                t.runs[round as usize + 1].reason_created,
                ReasonCreated::Retry
            );
            ev.extend(claim_run(&t, round + 1, "wg", "wi", NOW, &Limits::default()).unwrap());
        } else {
            assert_eq!(out.len(), 1, "no retries left");
            assert_eq!(t.state_str(), "exception");
        }
    }
}

#[test]
fn intermittent_task_retries_as_task_retry_and_malformed_payload_does_not() {
    let t = given(&claimed());
    let ev = report(&t, 0, ReasonResolved::IntermittentTask, NOW).unwrap();
    assert!(matches!(
        ev[1],
        QueueEvent::RunScheduled {
            reason: ReasonCreated::TaskRetry,
            ..
        }
    ));
    check(
        report(&t, 0, ReasonResolved::MalformedPayload, NOW),
        &["RunResolved"],
    );
}

#[test]
fn claim_expiry_only_for_the_current_claim() {
    let t = given(&claimed());
    let until = t.runs[0].taken_until.unwrap();
    check(expire_claim(&t, 0, until, until.minus(1)), &[]);
    check(expire_claim(&t, 0, until.minus(5), until), &[]);
    let ev = check(
        expire_claim(&t, 0, until, until),
        &["RunResolved", "RunScheduled"],
    );
    assert!(matches!(
        ev[0],
        QueueEvent::RunResolved {
            reason: ReasonResolved::ClaimExpired,
            ..
        }
    ));
}

#[test]
fn cancel_and_deadline() {
    let t = given(&created());
    let ev = check(cancel_task(&t, NOW), &["RunResolved"]);
    assert!(matches!(
        ev[0],
        QueueEvent::RunResolved {
            reason: ReasonResolved::Canceled,
            ..
        }
    ));
    let mut d = definition(tid(2));
    d.dependencies = vec![tid(2)];
    let unscheduled = given(
        &create_task(
            None,
            None,
            &[DependencyView {
                task_id: tid(2),
                found: None,
            }],
            tid(2),
            d,
            NOW,
            &Limits::default(),
        )
        .unwrap(),
    );
    assert_eq!(unscheduled.state_str(), "unscheduled");
    check(cancel_task(&unscheduled, NOW), &["RunExceptionRecorded"]);
    let late = NOW.plus(HOUR);
    check(exceed_deadline(&unscheduled, NOW), &[]);
    let ev = check(
        exceed_deadline(&unscheduled, late),
        &["RunExceptionRecorded"],
    );
    let mut t2 = unscheduled.clone();
    ev.iter().for_each(|e| t2.apply(e));
    assert_eq!(t2.runs[0].reason_created, ReasonCreated::Exception);
    assert_eq!(
        t2.runs[0].reason_resolved,
        Some(ReasonResolved::DeadlineExceeded)
    );
    // after the deadline: immutable
    assert!(cancel_task(&t, late).is_err());
    assert!(rerun_task(&t, late).is_err());
    assert!(schedule_task(&unscheduled, late).is_err());
    let running = given(&claimed());
    check(exceed_deadline(&running, late), &["RunResolved"]);
    // claim expiry yields to the deadline
    check(
        expire_claim(
            &running,
            0,
            running.runs[0].taken_until.unwrap(),
            late.plus(HOUR),
        ),
        &[],
    );
}

/// Calls repeated to the same effect change nothing but record what Taskcluster publishes
/// again: task-defined (and task-pending while run 0 is pending) for createTask, the run's
/// resolution for a report or a cancel, task-pending for rerunTask of a pending task,
/// artifact-created for finishArtifact, task-group-sealed for sealTaskGroup.
#[test]
fn repeated_calls_record_the_messages_published_again() {
    let repeats = |events: Vec<QueueEvent>| -> Vec<Repeat> {
        events
            .into_iter()
            .map(|e| match e {
                QueueEvent::Repeated { repeat, at } => {
                    assert_eq!(at, NOW);
                    repeat
                }
                other => panic!("not a repeat: {other:?}"),
            })
            .collect()
    };
    let task_id = tid(1);
    let pending = given(&created());
    let again = |t: &Task| {
        create_task(
            Some(t),
            None,
            &[],
            task_id,
            definition(task_id),
            NOW,
            &Limits::default(),
        )
    };
    assert_eq!(
        repeats(again(&pending).unwrap()),
        [
            Repeat::TaskDefined { task_id },
            Repeat::RunPending { task_id, run_id: 0 }
        ]
    );
    assert_eq!(
        repeats(rerun_task(&pending, NOW).unwrap()),
        [Repeat::RunPending { task_id, run_id: 0 }]
    );
    let running = given(&claimed());
    assert_eq!(
        repeats(again(&running).unwrap()),
        [Repeat::TaskDefined { task_id }]
    );
    // a running task's rerun publishes nothing upstream either
    assert_eq!(rerun_task(&running, NOW).unwrap(), []);
    let mut ev = created();
    ev.extend(cancel_task(&pending, NOW).unwrap());
    let canceled = given(&ev);
    assert_eq!(
        repeats(cancel_task(&canceled, NOW).unwrap()),
        [Repeat::RunResolved { task_id, run_id: 0 }]
    );
    assert_eq!(
        repeats(report(&canceled, 0, ReasonResolved::Canceled, NOW).unwrap()),
        [Repeat::RunResolved { task_id, run_id: 0 }]
    );
    let finished = Artifact {
        name: "public/out.bin".into(),
        storage: ArtifactStorage::Object {
            upload_id: tid(7),
            content_length: None,
        },
        content_type: "application/octet-stream".into(),
        expires: NOW.plus(HOUR),
        present: true,
    };
    let name = finished.name.clone();
    assert_eq!(
        repeats(finish_artifact(task_id, 0, Some(&finished), tid(7), tid(7), NOW).unwrap()),
        [Repeat::ArtifactCreated {
            task_id,
            run_id: 0,
            name
        }]
    );
    let group = TaskGroup {
        task_group_id: tid(9),
        scheduler_id: "-".into(),
        expires: NOW.plus(HOUR),
        sealed: Some(NOW),
    };
    assert_eq!(
        repeats(seal_group(&group, NOW).unwrap()),
        [Repeat::TaskGroupSealed {
            task_group_id: tid(9)
        }]
    );
    // and folding them changes nothing
    let mut after = pending.clone();
    again(&pending).unwrap().iter().for_each(|e| after.apply(e));
    assert_eq!(after, pending);
    assert_eq!(
        TaskGroup::apply(Some(group.clone()), &seal_group(&group, NOW).unwrap()[0]),
        Some(group)
    );
}

#[test]
fn rerun_and_schedule() {
    let t = given(&claimed());
    check(rerun_task(&t, NOW), &[]);
    let mut ev = claimed();
    ev.extend(report(&t, 0, ReasonResolved::Failed, NOW).unwrap());
    let t = given(&ev);
    let r = check(rerun_task(&t, NOW), &["RunScheduled"]);
    assert!(matches!(
        r[0],
        QueueEvent::RunScheduled {
            run_id: 1,
            reason: ReasonCreated::Rerun,
            retries_left: 2,
            ..
        }
    ));
    let mut d = definition(tid(3));
    d.dependencies = vec![tid(3)];
    let u = given(
        &create_task(
            None,
            None,
            &[DependencyView {
                task_id: tid(3),
                found: None,
            }],
            tid(3),
            d,
            NOW,
            &Limits::default(),
        )
        .unwrap(),
    );
    check(schedule_task(&u, NOW), &["RunScheduled"]);
    let r = check(rerun_task(&u, NOW), &["RunScheduled"]);
    assert!(matches!(
        r[0],
        QueueEvent::RunScheduled {
            run_id: 0,
            reason: ReasonCreated::Rerun,
            ..
        }
    ));
}

#[test]
fn priority_changes_until_resolved() {
    let t = given(&created());
    check(
        change_priority(&t, Priority::High, false, NOW),
        &["PriorityChanged"],
    );
    assert!(change_priority(&t, Priority::Lowest, false, NOW).is_err());
    let mut ev = claimed();
    ev.extend(report(&given(&ev), 0, ReasonResolved::Completed, NOW).unwrap());
    assert!(change_priority(&given(&ev), Priority::High, false, NOW).is_err());
}

/// A group's change of one member: the same rules, its own event, the same new state.
#[test]
fn a_group_priority_change_of_one_member_is_its_own_event() {
    let t = given(&created());
    let events = change_priority(&t, Priority::High, true, NOW).unwrap();
    assert_eq!(
        events,
        [QueueEvent::GroupPriorityApplied {
            task_id: t.task_id,
            old: Priority::Lowest,
            new: Priority::High,
        }]
    );
    let mut by_group = t.clone();
    by_group.apply(&events[0]);
    let mut alone = t.clone();
    alone.apply(&change_priority(&t, Priority::High, false, NOW).unwrap()[0]);
    assert_eq!(by_group, alone);
    assert_eq!(by_group.priority, Priority::High);
    assert!(change_priority(&by_group, Priority::High, true, NOW).is_err());
    let mut ev = claimed();
    ev.extend(report(&given(&ev), 0, ReasonResolved::Completed, NOW).unwrap());
    assert!(change_priority(&given(&ev), Priority::High, true, NOW).is_err());
    let late = Millis(t.definition.deadline.0 + 1);
    assert!(change_priority(&t, Priority::High, true, late).is_err());
}

#[test]
fn artifacts_follow_the_run() {
    let art = |storage, expires| Artifact {
        name: "public/log.txt".into(),
        storage,
        content_type: "text/plain".into(),
        expires,
        present: true,
    };
    let pending = given(&created());
    let r = create_artifact(
        Some(&pending),
        0,
        None,
        art(
            ArtifactStorage::Reference {
                url: "https://a".into(),
            },
            NOW.plus(HOUR),
        ),
        NOW,
    );
    assert!(matches!(r, Err(QueueError::Input(m)) if m.contains("not claimed")));
    let t = given(&claimed());
    let first = art(
        ArtifactStorage::Reference {
            url: "https://a".into(),
        },
        NOW.plus(HOUR),
    );
    check(
        create_artifact(Some(&t), 0, None, first.clone(), NOW),
        &["ArtifactCreated"],
    );
    // reference may change its url; other storage may not replace it
    check(
        create_artifact(
            Some(&t),
            0,
            Some(&first),
            art(
                ArtifactStorage::Reference {
                    url: "https://b".into(),
                },
                NOW.plus(HOUR),
            ),
            NOW,
        ),
        &["ArtifactCreated"],
    );
    let err = create_artifact(
        Some(&t),
        0,
        Some(&first),
        art(
            ArtifactStorage::Error {
                reason: ErrorReason::FileMissingOnWorker,
                message: "m".into(),
            },
            NOW.plus(HOUR),
        ),
        NOW,
    );
    // upstream's text, quoting the artifact there as JSON.stringify(_, null, 2) does
    let Err(QueueError::Conflict(text)) = err else {
        panic!("{err:?}");
    };
    assert_eq!(
        text,
        format!(
            "Artifact already exists with different properties, and none of the allowed \
             exceptions apply: {{\n  \"storageType\": \"reference\",\n  \"contentType\": \
             \"text/plain\",\n  \"expires\": \"{}\"\n}}",
            NOW.plus(HOUR)
        )
    );
    // a link replacing the reference keeps the reference's content type, as upstream's update
    // of an existing artifact does
    let link = Artifact {
        content_type: "application/binary".into(),
        ..art(
            ArtifactStorage::Link {
                target: "public/other".into(),
            },
            NOW.plus(HOUR),
        )
    };
    let replaced = create_artifact(Some(&t), 0, Some(&first), link, NOW).unwrap();
    let [QueueEvent::ArtifactCreated { artifact, .. }] = replaced.as_slice() else {
        panic!("{replaced:?}");
    };
    assert_eq!(artifact.content_type, "text/plain");
    assert_eq!(artifact.storage.type_str(), "link");
    // an s3 artifact created again with another length: no conflict, the first length stays
    let s3 = |content_length| art(ArtifactStorage::S3 { content_length }, NOW.plus(HOUR));
    let again = create_artifact(Some(&t), 0, Some(&s3(None)), s3(Some(5)), NOW).unwrap();
    let [QueueEvent::ArtifactCreated { artifact, .. }] = again.as_slice() else {
        panic!("{again:?}");
    };
    assert_eq!(
        artifact.storage,
        ArtifactStorage::S3 {
            content_length: None
        }
    );
    let err = create_artifact(
        Some(&t),
        0,
        None,
        art(
            ArtifactStorage::S3 {
                content_length: None,
            },
            NOW.plus(100 * HOUR),
        ),
        NOW,
    );
    assert!(matches!(err, Err(QueueError::Input(_))));
    // object: finish with the right upload id only
    let obj = Artifact {
        present: false,
        ..art(
            ArtifactStorage::Object {
                upload_id: tid(7),
                content_length: None,
            },
            NOW.plus(HOUR),
        )
    };
    // (an id stored in the artifact, as logs before derived ids hold, wins over the derived one)
    assert!(finish_artifact(t.task_id, 0, Some(&obj), tid(8), tid(8), NOW).is_err());
    check(
        finish_artifact(t.task_id, 0, Some(&obj), tid(7), tid(8), NOW),
        &["ArtifactFinished"],
    );
    assert!(matches!(
        finish_artifact(t.task_id, 0, None, tid(7), tid(7), NOW),
        Err(QueueError::ArtifactNotFound)
    ));
    // an artifact that stores no id: the derived one, and only it, finishes it
    let derived = Artifact {
        storage: ArtifactStorage::Object {
            upload_id: Slug::NIL,
            content_length: None,
        },
        ..obj.clone()
    };
    assert!(finish_artifact(t.task_id, 0, Some(&derived), tid(7), tid(8), NOW).is_err());
    assert!(finish_artifact(t.task_id, 0, Some(&derived), Slug::NIL, tid(8), NOW).is_err());
    check(
        finish_artifact(t.task_id, 0, Some(&derived), tid(8), tid(8), NOW),
        &["ArtifactFinished"],
    );
    // completed run: no more artifacts
    let mut ev = claimed();
    ev.extend(report(&t, 0, ReasonResolved::Completed, NOW).unwrap());
    let done = given(&ev);
    assert!(matches!(
        create_artifact(Some(&done), 0, None, first, NOW),
        Err(QueueError::Conflict(_))
    ));
}

#[derive(Clone, Debug)]
enum Cmd {
    Claim,
    Reclaim,
    Report(ReasonResolved),
    Expire,
    Cancel,
    Rerun,
    Schedule,
    Deadline,
    Tick(i64),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        Just(Cmd::Claim),
        Just(Cmd::Reclaim),
        prop::sample::select(vec![
            ReasonResolved::Completed,
            ReasonResolved::Failed,
            ReasonResolved::WorkerShutdown,
            ReasonResolved::IntermittentTask,
            ReasonResolved::MalformedPayload,
            ReasonResolved::InternalError,
        ])
        .prop_map(Cmd::Report),
        Just(Cmd::Expire),
        Just(Cmd::Cancel),
        Just(Cmd::Rerun),
        Just(Cmd::Schedule),
        Just(Cmd::Deadline),
        (1i64..30).prop_map(|m| Cmd::Tick(m * MINUTE)),
    ]
}

proptest! {
    #[test]
    fn random_command_sequences_keep_the_invariants(cmds in prop::collection::vec(cmd(), 1..80)) {
        let mut log = created();
        let mut now = NOW;
        let limits = Limits { claim_timeout_ms: 20 * MINUTE, ..Limits::default() };
        for c in cmds {
            let task = given(&log);
            let last = task.runs.len().saturating_sub(1) as u32;
            let out = match c {
                Cmd::Claim => claim_run(&task, last, "g", "w", now, &limits),
                Cmd::Reclaim => reclaim_run(&task, last, now, &limits),
                Cmd::Report(r) => report(&task, last, r, now),
                Cmd::Expire => match task.last_run().and_then(|r| r.taken_until) {
                    Some(t) => expire_claim(&task, last, t, now),
                    None => Ok(vec![]),
                },
                Cmd::Cancel => cancel_task(&task, now),
                Cmd::Rerun => rerun_task(&task, now),
                Cmd::Schedule => schedule_task(&task, now),
                Cmd::Deadline => exceed_deadline(&task, now),
                Cmd::Tick(ms) => { now = now.plus(ms); Ok(vec![]) }
            };
            let Ok(events) = out else { continue };
            let before = task.clone();
            log.extend(events);
            let after = given(&log);
            // at most one non-terminal run, and only the last
            let open = after.runs.iter().filter(|r| !r.state.is_resolved()).count();
            prop_assert!(open <= 1);
            if open == 1 { prop_assert!(!after.runs.last().unwrap().state.is_resolved()); }
            // terminal runs never change
            for (a, b) in before.runs.iter().zip(after.runs.iter()) {
                if a.state.is_resolved() { prop_assert_eq!(a, b); }
            }
            prop_assert!(after.runs.len() <= MAX_RUNS);
            for (i, r) in after.runs.iter().enumerate() { prop_assert_eq!(r.run_id as usize, i); }
        }
        // replay through the codec rebuilds equal state
        let bytes: Vec<Vec<u8>> = log.iter().map(|e| crate::codec::encode(e).unwrap()).collect();
        let decoded: Vec<QueueEvent> = bytes.iter().map(|b| crate::codec::decode(b).unwrap()).collect();
        prop_assert_eq!(given(&decoded), given(&log));
    }
}

#[test]
fn tasks_and_groups_expire_only_when_due_and_resolved() {
    let expires = NOW.plus(48 * HOUR);
    // running past its expiry (the deadline reactor has not resolved it yet): it waits
    let running = given(&claimed());
    check(expire_task(&running, expires.plus(1)), &[]);
    let mut done = running.clone();
    for e in report(&running, 0, ReasonResolved::Completed, NOW).unwrap() {
        done.apply(&e);
    }
    check(expire_task(&done, expires.minus(1)), &[]);
    let gone = check(expire_task(&done, expires), &["TaskExpired"]);
    assert!(!Task::survives(&gone[0]));
    assert!(Task::survives(&QueueEvent::DependencySatisfied {
        task_id: tid(1),
        dependency: tid(2),
    }));

    let group = TaskGroup {
        task_group_id: tid(1),
        scheduler_id: "-".into(),
        expires: expires.plus(HOUR),
        sealed: None,
    };
    let artifact = Artifact {
        name: "public/a".into(),
        storage: ArtifactStorage::Reference {
            url: "https://example.com".into(),
        },
        content_type: "text/plain".into(),
        expires: NOW.plus(HOUR),
        present: true,
    };
    check(expire_artifact(tid(1), 0, &artifact, NOW), &[]);
    check(
        expire_artifact(tid(1), 0, &artifact, NOW.plus(HOUR)),
        &["ArtifactExpired"],
    );

    check(expire_group(&group, expires), &[]);
    let ev = check(
        expire_group(&group, expires.plus(HOUR)),
        &["TaskGroupExpired"],
    );
    assert_eq!(TaskGroup::apply(Some(group), &ev[0]), None);
}

/// Golden bytes: the encoded envelope of a `TaskDefined` must never change.
#[test]
fn golden_task_defined_v1() {
    let ev = create_task(
        None,
        None,
        &[],
        tid(1),
        definition(tid(1)),
        NOW,
        &Limits::default(),
    )
    .unwrap();
    let envelope = crate::envelope::Envelope {
        event_id: crate::envelope::EventId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0001,
        )),
        stream_id: "task/AQAAAAAAQACAAAAAAAAAAA".into(),
        sequence: 1,
        time: NOW,
        actor: crate::envelope::Actor {
            client_id: "tester".into(),
            request_id: None,
        },
        causation_id: None,
        writer_epoch: 1,
        payload: ev[1].clone(),
    };
    crate::codec::assert_golden(
        &envelope,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/queue/task_defined_v1.hex"
        ),
    );
    let back: crate::envelope::Envelope<QueueEvent> =
        crate::codec::decode(&crate::codec::encode(&envelope).unwrap()).unwrap();
    assert_eq!(back, envelope);
}

/// `Repeated` (appended last to the enum) in every form, byte for byte: its encoding is
/// wire format from now on.
#[test]
fn repeated_events_golden_bytes() {
    let (task_id, at) = (tid(1), Millis(1_700_000_000_000));
    let events: Vec<QueueEvent> = [
        Repeat::TaskDefined { task_id },
        Repeat::RunPending { task_id, run_id: 0 },
        Repeat::RunResolved { task_id, run_id: 1 },
        Repeat::ArtifactCreated {
            task_id,
            run_id: 0,
            name: "public/x".into(),
        },
        Repeat::TaskGroupSealed {
            task_group_id: tid(2),
        },
    ]
    .into_iter()
    .map(|repeat| QueueEvent::Repeated { repeat, at })
    .collect();
    crate::codec::assert_golden_events(
        "task/AQAAAAAAQACAAAAAAAAAAA",
        events,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/queue/repeated_v1.hex"
        ),
    );
}

/// `GroupPriorityApplied` (appended after `Repeated`), byte for byte.
#[test]
fn group_priority_applied_golden_bytes() {
    crate::codec::assert_golden_events(
        "task/AQAAAAAAQACAAAAAAAAAAA",
        vec![QueueEvent::GroupPriorityApplied {
            task_id: tid(1),
            old: Priority::Lowest,
            new: Priority::VeryHigh,
        }],
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/queue/group_priority_applied_v1.hex"
        ),
    );
}

/// The dependency reactor reads only whether an event resolves a run, from the variant index
/// at the front of the payload: it must agree with the decoded event for every kind it sees.
#[test]
fn run_resolution_peek_agrees_with_the_decoded_event() {
    use crate::envelope::{Actor, Envelope, EventId};
    use crate::queue::events::RunResolution;
    let mut events = claimed();
    for reason in [ReasonResolved::Completed, ReasonResolved::Canceled] {
        events.push(QueueEvent::RunResolved {
            task_id: tid(1),
            run_id: 0,
            reason,
            at: NOW,
        });
    }
    events.push(QueueEvent::RunExceptionRecorded {
        task_id: tid(1),
        run_id: 0,
        reason: ReasonResolved::DeadlineExceeded,
        at: NOW,
    });
    events.push(QueueEvent::RunReclaimed {
        task_id: tid(1),
        run_id: 0,
        taken_until: NOW,
    });
    events.push(QueueEvent::TaskExpired { task_id: tid(1) });
    let mut resolving = 0;
    for (i, payload) in events.into_iter().enumerate() {
        let expected = matches!(
            payload,
            QueueEvent::RunResolved { .. } | QueueEvent::RunExceptionRecorded { .. }
        );
        resolving += expected as usize;
        let name = payload.type_name();
        let env = Envelope {
            event_id: EventId::new(),
            stream_id: payload.stream().id(),
            sequence: i as u64 + 1,
            time: NOW,
            actor: Actor::system("test"),
            causation_id: Some(EventId::new()),
            writer_epoch: 3,
            payload,
        };
        let bytes = crate::codec::encode(&env).unwrap();
        let peeked: Envelope<RunResolution> = crate::codec::decode(&bytes).unwrap();
        assert_eq!(peeked.payload, RunResolution(expected), "{name}");
        assert_eq!(
            (peeked.event_id, peeked.sequence),
            (env.event_id, env.sequence)
        );
    }
    assert_eq!(resolving, 3);
}

/// The status as it was built before `StatusJson` (a `Value` object, field by field): the
/// oracle the typed serializer must match byte for byte, since Pulse consumers see these bytes.
fn status_value_field_by_field(task: &Task) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let run_value = |run: &Run| {
        let mut m = Map::new();
        m.insert("runId".into(), json!(run.run_id));
        m.insert("state".into(), json!(run.state.as_str()));
        m.insert("reasonCreated".into(), json!(run.reason_created.as_str()));
        if let Some(r) = run.reason_resolved {
            m.insert("reasonResolved".into(), json!(r.as_str()));
        }
        if let Some(g) = &run.worker_group {
            m.insert("workerGroup".into(), json!(g));
        }
        if let Some(w) = &run.worker_id {
            m.insert("workerId".into(), json!(w));
        }
        if let Some(t) = run.taken_until {
            m.insert("takenUntil".into(), json!(t.to_rfc3339()));
        }
        m.insert("scheduled".into(), json!(run.scheduled.to_rfc3339()));
        if let Some(t) = run.started {
            m.insert("started".into(), json!(t.to_rfc3339()));
        }
        if let Some(t) = run.resolved {
            m.insert("resolved".into(), json!(t.to_rfc3339()));
        }
        Value::Object(m)
    };
    let def = &task.definition;
    json!({
        "taskId": task.task_id.to_string(),
        "provisionerId": def.task_queue_id.provisioner_id(),
        "workerType": def.task_queue_id.worker_type(),
        "taskQueueId": def.task_queue_id.as_str(),
        "schedulerId": def.scheduler_id,
        "projectId": def.project_id,
        "taskGroupId": def.task_group_id.to_string(),
        "priority": task.priority.as_str(),
        "deadline": def.deadline.to_rfc3339(),
        "expires": def.expires.to_rfc3339(),
        "retriesLeft": task.retries_left,
        "state": task.state_str(),
        "runs": task.runs.iter().map(run_value).collect::<Vec<_>>(),
    })
}

/// `TaskStatus::write_json`'s text for `task`.
fn written(task: &Task) -> String {
    let mut out = Vec::new();
    super::json::TaskStatus::of(task).write_json(&mut out);
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[test]
fn status_json_writes_the_bytes_of_the_field_by_field_value() {
    use super::json::{status_json, StatusJson};
    let limits = Limits::default();
    let mut stages: Vec<Vec<QueueEvent>> = vec![created(), claimed()];
    // completed; failed then rerun and claimed again; worker-shutdown (a retry); deadline
    // exceeded while running: every optional field of a run, several runs, every state
    for reason in [
        ReasonResolved::Completed,
        ReasonResolved::Failed,
        ReasonResolved::WorkerShutdown,
    ] {
        let mut ev = claimed();
        ev.extend(report(&given(&ev), 0, reason, NOW.plus(MINUTE)).unwrap());
        stages.push(ev.clone());
        if reason == ReasonResolved::Failed {
            ev.extend(rerun_task(&given(&ev), NOW.plus(2 * MINUTE)).unwrap());
            stages.push(ev.clone());
            let t = given(&ev);
            ev.extend(claim_run(&t, 1, "wg2", "wi2", NOW.plus(3 * MINUTE), &limits).unwrap());
            stages.push(ev.clone());
        }
    }
    let mut ev = claimed();
    ev.extend(exceed_deadline(&given(&ev), NOW.plus(HOUR)).unwrap());
    stages.push(ev);
    let mut states = std::collections::BTreeSet::new();
    for ev in &stages {
        let task = given(ev);
        states.insert(task.state_str());
        let typed = serde_json::to_string(&StatusJson(&task)).unwrap();
        let oracle = serde_json::to_string(&status_value_field_by_field(&task)).unwrap();
        assert_eq!(typed, oracle);
        assert_eq!(status_json(&task), status_value_field_by_field(&task));
        assert_eq!(written(&task), oracle);
        // text that needs escaping (no validation upstream of here is relied on)
        let mut odd = task.clone();
        odd.definition.project_id = "quote\" back\\slash \u{1} tab\t é ✓ /".into();
        odd.definition.scheduler_id = "\u{7f}\u{2028}".into();
        if let Some(run) = odd.runs.last_mut() {
            run.worker_group = Some("line\nbreak".into());
            run.worker_id = Some(String::new());
        }
        let oracle = serde_json::to_string(&status_value_field_by_field(&odd)).unwrap();
        assert_eq!(written(&odd), oracle);
        assert_eq!(serde_json::to_string(&StatusJson(&odd)).unwrap(), oracle);
        // read back from its stored bytes for the status alone, with every list and text
        // the status passes over filled in
        let mut full = odd.clone();
        let def = &mut full.definition;
        def.dependencies = vec![Slug([7; 16]), Slug([8; 16])];
        def.routes = vec!["index.a.b".into(), "ünïcode".into(), String::new()];
        def.scopes = vec!["queue:x".into(); 3];
        def.payload = JsonText(r#"{"image":"x","command":["a","é"]}"#.into());
        def.metadata.description = "d".repeat(300);
        def.tags = JsonText(r#"{"k":"v"}"#.into());
        def.extra = JsonText("{}".into());
        full.unsatisfied = vec![Slug([9; 16])];
        for stored in [&task, &odd, &full] {
            let bytes = crate::codec::encode(stored).unwrap();
            let row: TaskStatusRow = crate::codec::decode_borrowed(&bytes).unwrap();
            let oracle = serde_json::to_string(&status_value_field_by_field(stored)).unwrap();
            let mut out = Vec::new();
            row.status().write_json(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), oracle);
            assert_eq!(serde_json::to_string(&row.status()).unwrap(), oracle);
        }
    }
    assert_eq!(
        states.into_iter().collect::<Vec<_>>(),
        ["completed", "exception", "failed", "pending", "running"]
    );
}

#[test]
fn a_runs_resolution_outlives_a_rerun_and_a_retry_is_none() {
    // completed, then rerun: still the resolution run 0 made
    let mut ev = claimed();
    ev.extend(check(
        report(&given(&ev), 0, ReasonResolved::Completed, NOW),
        &["RunResolved"],
    ));
    assert_eq!(given(&ev).resolution_by_run(0), Some(Resolution::Completed));
    ev.extend(check(rerun_task(&given(&ev), NOW), &["RunScheduled"]));
    let rerun = given(&ev);
    assert_eq!(rerun.resolution(), None);
    assert_eq!(rerun.resolution_by_run(0), Some(Resolution::Completed));
    assert_eq!(rerun.resolution_by_run(1), None);
    assert_eq!(rerun.resolution_by_run(7), None);
    // resolved once, so never reprioritized again (queue.md §8: "task never resolved")
    assert!(rerun.ever_resolved());
    assert!(change_priority(&rerun, Priority::High, false, NOW).is_err());
    assert!(!given(&claimed()).ever_resolved());

    // an exception that is retried resolves nothing; one that is not, resolves
    let mut ev = claimed();
    ev.extend(check(
        report(&given(&ev), 0, ReasonResolved::WorkerShutdown, NOW),
        &["RunResolved", "RunScheduled"],
    ));
    assert_eq!(given(&ev).resolution_by_run(0), None);
    let mut ev = claimed();
    ev.extend(check(
        report(&given(&ev), 0, ReasonResolved::MalformedPayload, NOW),
        &["RunResolved"],
    ));
    assert_eq!(
        given(&ev).resolution_by_run(0),
        Some(Resolution::Unsuccessful)
    );
}

#[test]
fn reports_of_a_run_in_neither_state_and_missing_tasks_use_upstreams_texts() {
    let mut ev = claimed();
    ev.extend(report(&given(&ev), 0, ReasonResolved::Completed, NOW).unwrap());
    let t = given(&ev);
    assert_eq!(
        report(&t, 0, ReasonResolved::Failed, NOW),
        Err(QueueError::Conflict(format!(
            "Run 0 of task `{}` is not running or failed.",
            t.task_id
        )))
    );
    // an exception report of a completed run: the text after upstream's database call
    assert_eq!(
        report(&t, 0, ReasonResolved::WorkerShutdown, NOW),
        Err(QueueError::Conflict(format!(
            "Run 0 on task `{}` is resolved or not running.",
            t.task_id
        )))
    );
    assert_eq!(
        report(&t, 3, ReasonResolved::Completed, NOW)
            .unwrap_err()
            .to_string(),
        format!("Run 3 not found on task `{}`.", t.task_id)
    );
    assert_eq!(
        QueueError::TaskNotFound(t.task_id).to_string(),
        format!(
            "Task `{}` not found. Are you sure it was created?",
            t.task_id
        )
    );
}
