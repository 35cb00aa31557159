use super::*;
use rocksdb::WriteBatch;
use taskledger_core::access::AUTH_TOPIC;
use taskledger_core::envelope::{Actor, EventId};
use taskledger_core::ids::{Slug, TaskId};
use taskledger_core::log::Stored;
use taskledger_core::queue::{self, Limits, ReasonResolved};
use taskledger_core::queue::{Artifact, ArtifactStorage, JsonText};
use taskledger_core::time::HOUR;
use taskledger_core::worker_manager::WorkerKey;

use crate::testing::definition;

/// Folds `events` as one batch of the queue topic and stores the result.
fn fold(state: &BridgeState, events: Vec<QueueEvent>, first: u64, now: Millis) {
    let records = records(events, first, now);
    let (changes, _) = render(state, None, QUEUE_TOPIC, &records).unwrap();
    let mut batch = WriteBatch::default();
    changes.commit(&mut batch).unwrap();
    state.db.write(batch).unwrap();
}

/// An object artifact `name` of `task`'s run 0, created and not uploaded yet.
fn unfinished_object(task: TaskId, name: &str, now: Millis) -> QueueEvent {
    QueueEvent::ArtifactCreated {
        task_id: task,
        run_id: 0,
        artifact: Artifact {
            name: name.into(),
            storage: ArtifactStorage::Object {
                upload_id: Slug::nice(),
                content_length: None,
            },
            content_type: "text/plain".into(),
            expires: now.plus(HOUR),
            present: false,
        },
    }
}

/// `events` as the log's records from offset `first`.
fn records(events: Vec<QueueEvent>, first: u64, now: Millis) -> Vec<Stored> {
    stored(events, first, |_| now, |e| e.stream().id())
}

/// `events` as the log's records from offset `first`, each at its own instant from `at`
/// on, so that none of them is taken for a part of the command before it.
fn records_at(events: Vec<QueueEvent>, first: u64, at: Millis) -> Vec<Stored> {
    stored(
        events,
        first,
        |i| Millis(at.0 + i as i64),
        |e| e.stream().id(),
    )
}

/// A read that may stop inside a command leaves its last command's events for the next
/// read, unless the log ends there or that command is the whole read; other topics' reads
/// are rendered whole.
#[test]
fn reads_are_rendered_up_to_their_last_whole_command() {
    let now = Millis::now();
    let task = TaskId::nice();
    let one = |i: i64, events: Vec<QueueEvent>, first: u64| {
        stored(events, first, |_| Millis(now.0 + i), |e| e.stream().id())
    };
    let scheduled = QueueEvent::RunScheduled {
        task_id: task,
        run_id: 0,
        reason: taskledger_core::queue::ReasonCreated::Scheduled,
        retries_left: 5,
        at: now,
    };
    let mut log = one(0, vec![scheduled.clone(), scheduled.clone()], 0);
    log.extend(one(1, vec![scheduled.clone()], 2));
    log.extend(one(
        2,
        vec![scheduled.clone(), scheduled.clone(), scheduled],
        3,
    ));
    assert_eq!(whole_commands(QUEUE_TOPIC, &log[..5], true).unwrap(), 3);
    assert_eq!(whole_commands(QUEUE_TOPIC, &log[..6], true).unwrap(), 3);
    assert_eq!(whole_commands(QUEUE_TOPIC, &log[..6], false).unwrap(), 6);
    // a read cannot tell that its last command ended: it waits for the next read
    assert_eq!(whole_commands(QUEUE_TOPIC, &log[..3], true).unwrap(), 2);
    assert_eq!(whole_commands(QUEUE_TOPIC, &log[..2], true).unwrap(), 2);
    assert_eq!(whole_commands(QUEUE_TOPIC, &log[..1], true).unwrap(), 1);
    assert_eq!(whole_commands(AUTH_TOPIC, &log[..5], true).unwrap(), 5);
}

/// Calls repeated to the same effect publish their messages again, rendered from the
/// state as it is: createTask's task-defined and task-pending, rerunTask's task-pending,
/// finishArtifact's artifact-created and a report's resolution.
#[test]
fn repeated_calls_publish_their_messages_again() {
    let (now, limits) = (Millis::now(), Limits::default());
    let id = Slug::nice();
    let def = definition(now);
    let mut task = queue::Task::defined(id, def.clone(), vec![]);
    let mut events = Vec::new();
    let step = |task: &mut queue::Task, events: &mut Vec<QueueEvent>, evs: Vec<QueueEvent>| {
        evs.iter().for_each(|e| task.apply(e));
        events.extend(evs);
    };
    let created = queue::create_task(None, None, &[], id, def.clone(), now, &limits).unwrap();
    step(&mut task, &mut events, created);
    let again = queue::create_task(Some(&task), None, &[], id, def, now, &limits).unwrap();
    step(&mut task, &mut events, again);
    let rerun = queue::rerun_task(&task, now).unwrap();
    step(&mut task, &mut events, rerun);
    let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
    step(&mut task, &mut events, claimed);
    let mut object = unfinished_object(id, "public/out", now);
    events.push(object.clone());
    let finished = QueueEvent::ArtifactFinished {
        task_id: id,
        run_id: 0,
        name: "public/out".into(),
    };
    events.push(finished);
    if let QueueEvent::ArtifactCreated { artifact, .. } = &mut object {
        artifact.present = true;
        let repeat = queue::finish_artifact(id, 0, Some(artifact), Slug::NIL, Slug::NIL, now);
        events.extend(repeat.unwrap());
    }
    let done = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
    step(&mut task, &mut events, done);
    let reported = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
    step(&mut task, &mut events, reported);
    let dir = std::env::temp_dir().join(format!(
        "taskledger-bridge-repeat-{}-{}",
        std::process::id(),
        Millis::now().0
    ));
    let state = BridgeState::open(&dir).unwrap();
    let out = render_chained(&state, QUEUE_TOPIC, &records_at(events, 0, now), 512);
    let names: Vec<&str> = out
        .iter()
        .map(|o| o.message.exchange.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "task-defined",
            "task-pending",
            "task-defined",
            "task-pending",
            "task-pending",
            "task-running",
            "artifact-created",
            "artifact-created",
            "task-completed",
            "task-group-resolved",
            "task-completed",
        ]
    );
    assert_eq!(out[2].message.routing_key, out[0].message.routing_key);
    assert_eq!(out[7].message.body, out[6].message.body);
    assert_eq!(out[10].message.routing_key, out[8].message.routing_key);
    assert_eq!(out[10].message.body, out[8].message.body);
    drop(state);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `events` as records from offset `first`, the i-th at `time(i)` on stream `stream(e)`, all
/// by one actor and request (events of one stream at one time are then one command).
fn stored<E: serde::Serialize>(
    events: Vec<E>,
    first: u64,
    time: impl Fn(usize) -> Millis,
    stream: impl Fn(&E) -> String,
) -> Vec<Stored> {
    let actor = Actor::system("test");
    stored_by(events, first, time, stream, |_| actor.clone())
}

/// `stored`, the i-th event by `actor(i)`.
fn stored_by<E: serde::Serialize>(
    events: Vec<E>,
    first: u64,
    time: impl Fn(usize) -> Millis,
    stream: impl Fn(&E) -> String,
    actor: impl Fn(usize) -> Actor,
) -> Vec<Stored> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let env = Envelope {
                event_id: EventId::new(),
                stream_id: stream(&payload),
                sequence: first + i as u64,
                time: time(i),
                actor: actor(i),
                causation_id: None,
                writer_epoch: 1,
                payload,
            };
            Stored {
                partition: 0,
                offset: first + i as u64,
                key: env.stream_id.clone(),
                value: codec::encode(&env).unwrap(),
            }
        })
        .collect()
}

/// `records` rendered in batches of `size` as the bridge pipelines them: each through the
/// previous batch's changes, which are stored only afterwards; the last stored at the end.
fn render_chained(
    state: &BridgeState,
    topic: &str,
    records: &[Stored],
    size: usize,
) -> Vec<Outgoing> {
    let store = |changes: &Changes| {
        let mut batch = WriteBatch::default();
        changes.commit(&mut batch).unwrap();
        state.db.write(batch).unwrap();
    };
    let mut out = Vec::new();
    let mut unstored: Option<Arc<Changes>> = None;
    for chunk in records.chunks(size) {
        let (changes, rendered) = render(state, unstored.clone(), topic, chunk).unwrap();
        if let Some(previous) = unstored.take() {
            store(&previous);
        }
        unstored = Some(Arc::new(changes));
        out.extend(rendered);
    }
    if let Some(last) = unstored {
        store(&last);
    }
    out
}

/// Every stored key and value.
fn contents(state: &BridgeState) -> Vec<(Vec<u8>, Vec<u8>)> {
    state
        .db
        .iterator(rocksdb::IteratorMode::Start)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Worker-manager messages rendered through an unstored batch: a pool's update names the
/// provider an unstored batch gave it, and a worker's removal the provider and capacity an
/// unstored batch created it with.
#[test]
fn worker_manager_renders_through_an_unstored_batch() {
    use taskledger_core::access::seal::SealKey;
    let now = Millis::now();
    let pool: taskledger_core::worker_manager::WorkerPoolId = "prov/wt".parse().unwrap();
    let worker = WorkerKey {
        worker_pool_id: pool.clone(),
        worker_group: "g".into(),
        worker_id: "w".into(),
    };
    let sealed = SealKey::new([7; 32]).seal("o@example.com", "secret", [1; 12]);
    let pool_event = |provider: &str, previous: Option<&str>| {
        let (description, config, owner) = (String::new(), "{}".to_string(), "o@example.com");
        match previous {
            None => WorkerEvent::WorkerPoolCreated {
                worker_pool_id: pool.clone(),
                provider_id: provider.into(),
                description,
                config,
                owner: owner.into(),
                email_on_error: false,
            },
            Some(p) => WorkerEvent::WorkerPoolUpdated {
                worker_pool_id: pool.clone(),
                provider_id: provider.into(),
                previous_provider_ids: vec![p.into()],
                description,
                config,
                owner: owner.into(),
                email_on_error: false,
            },
        }
    };
    let events = vec![
        pool_event("static-a", None),
        pool_event("static-b", Some("static-a")),
        WorkerEvent::WorkerCreated {
            worker: worker.clone(),
            provider_id: "static-b".into(),
            capacity: 3,
            expires: now.plus(HOUR),
            static_secret: sealed,
        },
        WorkerEvent::WorkerRemoved {
            worker: worker.clone(),
        },
        // expired: gone without a message; a worker made again under its key is a new one
        WorkerEvent::WorkerExpired {
            worker: worker.clone(),
        },
        WorkerEvent::WorkerRemoved {
            worker: worker.clone(),
        },
        WorkerEvent::WorkerCreated {
            worker: worker.clone(),
            provider_id: "static-b".into(),
            capacity: 1,
            expires: now.plus(HOUR),
            static_secret: SealKey::new([7; 32]).seal("o@example.com", "secret", [2; 12]),
        },
        WorkerEvent::WorkerRemoved { worker },
    ];
    let records = stored(events, 0, |i| Millis(now.0 + i as i64), |e| e.stream_id());
    let dir = std::env::temp_dir().join(format!(
        "taskledger-bridge-wm-chain-{}-{}",
        std::process::id(),
        Millis::now().0
    ));
    let state = BridgeState::open(&dir).unwrap();
    let bodies: Vec<_> = render_chained(&state, WORKER_MANAGER_TOPIC, &records, 1)
        .iter()
        .map(|o| o.message.json())
        .collect();
    // nothing for the expiry, nor for removing the expired worker (it is unknown then)
    assert_eq!(bodies.len(), 6, "{bodies:?}");
    // the update names the provider before it; the removal the worker's provider and
    // capacity
    assert_eq!(bodies[1]["previousProviderId"], "static-a", "{}", bodies[1]);
    assert_eq!(bodies[3]["providerId"], "static-b", "{}", bodies[3]);
    assert_eq!(bodies[3]["capacity"], 3, "{}", bodies[3]);
    // the worker made again: its own capacity, not the expired one's
    assert_eq!(bodies[5]["capacity"], 1, "{}", bodies[5]);
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bridge renders a batch through the previous one's changes while that batch awaits
/// its confirms (`Overlay::parent`). Batch by batch, that gives the same messages and the
/// same stored state as rendering each batch after the previous one was stored: tasks
/// spanning batches, a shared group's count reaching zero, object artifacts finished or
/// left behind, and tasks and the group expiring.
#[test]
fn rendering_through_an_unstored_batch_equals_rendering_after_it() {
    let (now, limits) = (Millis::now(), Limits::default());
    let group = Slug::nice();
    let mut events = Vec::new();
    // all six defined first, so the group's count of unresolved tasks runs down from six
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let id = Slug::nice();
        let mut def = definition(now);
        def.task_group_id = group;
        let created =
            queue::create_task(None, None, &[], id, def.clone(), now, &limits).expect("create");
        let mut task = queue::Task::defined(id, def, vec![]);
        created.iter().for_each(|e| task.apply(e));
        events.extend(created);
        tasks.push(task);
    }
    for (i, task) in tasks.iter_mut().enumerate() {
        let id = task.task_id;
        let claimed = queue::claim_run(task, 0, "g", "w", now, &limits).expect("claim");
        claimed.iter().for_each(|e| task.apply(e));
        events.extend(claimed);
        let name = format!("public/{i}");
        events.push(unfinished_object(id, &name, now));
        if i % 2 == 0 {
            events.push(QueueEvent::ArtifactFinished {
                task_id: id,
                run_id: 0,
                name,
            });
        }
        let done = queue::report(task, 0, ReasonResolved::Completed, now).expect("report");
        done.iter().for_each(|e| task.apply(e));
        events.extend(done);
        if i % 3 == 1 {
            // resolved again after a rerun: the group counts the task once
            for step in 0..3 {
                let evs = match step {
                    0 => queue::rerun_task(task, now).expect("rerun"),
                    1 => queue::claim_run(task, 1, "g", "w", now, &limits).expect("claim"),
                    _ => queue::report(task, 1, ReasonResolved::Completed, now).expect("report"),
                };
                evs.iter().for_each(|e| task.apply(e));
                events.extend(evs);
            }
        }
    }
    let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id).collect();
    // later, each its own command: the last task first, its unfinished artifact created a
    // few events before
    let mut expiries: Vec<QueueEvent> = ids
        .iter()
        .rev()
        .take(3)
        .map(|id| QueueEvent::TaskExpired { task_id: *id })
        .collect();
    expiries.push(QueueEvent::TaskGroupExpired {
        task_group_id: group,
    });
    let n = events.len() as u64;
    let mut records = records(events, 0, now);
    records.extend(records_at(expiries, n, now.plus(3 * HOUR)));
    let rendered = |o: &Outgoing| {
        (
            o.message.exchange.clone(),
            o.message.routing_key.clone(),
            o.message.body.clone(),
            o.event_id.clone(),
        )
    };
    let dir = std::env::temp_dir().join(format!(
        "taskledger-bridge-chain-{}-{}",
        std::process::id(),
        Millis::now().0
    ));
    for size in [1, 2, 3, 4, 5, 7] {
        // each batch rendered after the one before it is stored
        let stored = BridgeState::open(&dir.join(format!("stored-{size}"))).unwrap();
        let mut expected = Vec::new();
        for chunk in records.chunks(size) {
            let (changes, out) = render(&stored, None, QUEUE_TOPIC, chunk).unwrap();
            let mut batch = WriteBatch::default();
            changes.commit(&mut batch).unwrap();
            stored.db.write(batch).unwrap();
            expected.extend(out.iter().map(rendered));
        }
        // each batch rendered through the one before it, which is stored afterwards
        let chained = BridgeState::open(&dir.join(format!("chained-{size}"))).unwrap();
        let got: Vec<_> = render_chained(&chained, QUEUE_TOPIC, &records, size)
            .iter()
            .map(rendered)
            .collect();
        assert_eq!(got, expected, "batches of {size}");
        assert_eq!(contents(&chained), contents(&stored), "batches of {size}");
        let exchanges: Vec<&str> = expected.iter().map(|m| m.0.as_str()).collect();
        for name in ["task-completed", "artifact-created", "task-group-resolved"] {
            assert!(
                exchanges.iter().any(|e| e.ends_with(name)),
                "no {name} message in batches of {size}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bridge keeps a slim copy of each task (`kept_definition`), yet every message of a
/// task with a large, full definition (payload, scopes, metadata, extra, dependencies,
/// tags, routes) is what the full task renders; and the payload is not stored.
#[test]
fn messages_from_the_kept_task_equal_those_of_the_full_task() {
    use taskledger_core::queue::{DependencyState, DependencyView, Priority, Resolution};
    let (now, limits) = (Millis::now(), Limits::default());
    let (id, dependency) = (Slug::nice(), Slug::nice());
    let marker = "payload-that-the-bridge-does-not-keep";
    let mut def = definition(now);
    def.payload = JsonText(format!(r#"{{"command":["{}"]}}"#, marker.repeat(100)));
    def.scopes = vec!["secrets:get:project/x".into()];
    def.extra = JsonText(r#"{"treeherder":{"symbol":"B"}}"#.into());
    def.tags = JsonText(r#"{"kind":"build","label":"a \"quoted\" one"}"#.into());
    def.routes = vec!["index.project.x.latest".into(), "tc-treeherder.v2.x".into()];
    def.dependencies = vec![dependency];
    let unresolved = DependencyView {
        task_id: dependency,
        found: Some(DependencyState {
            resolution: None,
            expires: now.plus(HOUR),
        }),
    };
    let mut full = queue::Task::defined(id, def.clone(), vec![dependency]);
    let mut events = Vec::new();
    let mut step = |evs: Vec<QueueEvent>, full: &mut queue::Task| {
        evs.iter().for_each(|e| full.apply(e));
        events.extend(evs);
    };
    let created = queue::create_task(None, None, &[unresolved], id, def, now, &limits);
    step(created.expect("create"), &mut full);
    let satisfied = queue::satisfy_dependency(&full, dependency, Resolution::Completed, now);
    step(satisfied.expect("satisfy"), &mut full);
    let raised = queue::change_priority(&full, Priority::High, false, now).expect("priority");
    step(raised, &mut full);
    let claimed = queue::claim_run(&full, 0, "g", "w", now, &limits).expect("claim");
    step(claimed, &mut full);
    let failed = queue::report(&full, 0, ReasonResolved::Failed, now).expect("report");
    step(failed, &mut full);

    // each event its own command, so the task after each event renders its message
    let mut reference: Option<queue::Task> = None;
    let mut expected = Vec::new();
    for e in &events {
        if let QueueEvent::TaskDefined { definition, .. } = e {
            reference = Some(queue::Task::defined(
                id,
                (**definition).clone(),
                vec![dependency],
            ));
        }
        if let (queue::Stream::Task(_), Some(task)) = (e.stream(), reference.as_mut()) {
            task.apply(e);
            expected.extend(messages::queue_message(e, Some(task), None, None));
        }
    }
    let dir = std::env::temp_dir().join(format!(
        "taskledger-bridge-kept-{}-{}",
        std::process::id(),
        Millis::now().0
    ));
    let state = BridgeState::open(&dir).unwrap();
    let records = records_at(events, 0, now);
    let stream = queue::Stream::Task(id).id();
    let got: Vec<Message> = render_chained(&state, QUEUE_TOPIC, &records, 2)
        .into_iter()
        .filter(|o| o.stream == stream && !o.message.exchange.ends_with("group-resolved"))
        .map(|o| o.message)
        .collect();
    let exchanges: Vec<&str> = got.iter().map(|m| m.exchange.as_str()).collect();
    for name in [
        "defined",
        "pending",
        "priority-changed",
        "running",
        "failed",
    ] {
        assert!(
            exchanges
                .iter()
                .any(|e| e.ends_with(&format!("task-{name}"))),
            "no task-{name} in {exchanges:?}"
        );
    }
    assert_eq!(got, expected);
    let stored = state
        .db
        .get(task_key(&id.0))
        .unwrap()
        .expect("the task is kept");
    assert!(!String::from_utf8_lossy(&stored).contains(marker));
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every stored key that is not an offset or a marker.
fn kept(state: &BridgeState) -> Vec<Vec<u8>> {
    state
        .db
        .iterator(rocksdb::IteratorMode::Start)
        .map(|kv| kv.unwrap().0.to_vec())
        .filter(|k| !k.starts_with(b"o") && !k.starts_with(b"v:"))
        .collect()
}

#[test]
fn expiry_leaves_nothing_of_the_task_or_its_group_behind() {
    let dir = std::env::temp_dir().join(format!(
        "taskledger-bridge-expiry-{}-{}",
        std::process::id(),
        Millis::now().0
    ));
    let state = BridgeState::open(&dir).unwrap();
    let (now, limits) = (Millis::now(), Limits::default());
    let (id, def) = (Slug::nice(), definition(now));
    let group = def.task_group_id;
    let mut events =
        queue::create_task(None, None, &[], id, def.clone(), now, &limits).expect("create");
    let mut task = queue::Task::defined(id, def, vec![]);
    events.iter().for_each(|e| task.apply(e));
    let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).expect("claim");
    claimed.iter().for_each(|e| task.apply(e));
    events.extend(claimed);
    // an object artifact whose upload never finished: the bridge keeps it until then
    events.push(unfinished_object(id, "public/never-finished", now));
    events.extend(queue::report(&task, 0, ReasonResolved::Completed, now).expect("report"));
    let n = events.len() as u64;
    fold(&state, events, 0, now);
    // the task, its resolved mark, the artifact, the group and its count are kept
    let before = kept(&state);
    for prefix in [b't', b'r', b'a', b'g', b'u'] {
        assert!(
            before.iter().any(|k| k[0] == prefix),
            "no {} key before expiry: {before:?}",
            prefix as char
        );
    }
    fold(
        &state,
        vec![
            QueueEvent::TaskExpired { task_id: id },
            QueueEvent::TaskGroupExpired {
                task_group_id: group,
            },
        ],
        n,
        now,
    );
    assert_eq!(kept(&state), Vec::<Vec<u8>>::new());
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reactor's claim and its report of the same task in the same millisecond (the
/// built-in worker's) are two commands, each with a request id of its own: task-running
/// renders the running run, task-completed the completed one. One actor for both (a log
/// from before reactors had request ids) merges them, and task-running then shows the
/// completed run.
#[test]
fn a_reactors_two_commands_in_one_millisecond_render_apart() {
    let (now, limits) = (Millis::now(), Limits::default());
    let id = Slug::nice();
    let mut task = queue::Task::defined(id, definition(now), vec![]);
    let created = queue::create_task(None, None, &[], id, definition(now), now, &limits);
    let created = created.unwrap();
    created.iter().for_each(|e| task.apply(e));
    let claimed = queue::claim_run(&task, 0, "built-in", "built-in", now, &limits).unwrap();
    claimed.iter().for_each(|e| task.apply(e));
    let completed = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
    // the index of the command (create, claim, report) each event belongs to
    let command: Vec<usize> = [created.len(), claimed.len(), completed.len()]
        .iter()
        .enumerate()
        .flat_map(|(c, n)| std::iter::repeat_n(c, *n))
        .collect();
    let events: Vec<QueueEvent> = [created, claimed, completed].concat();
    let render_with = |actors: [Actor; 3]| {
        let records = stored_by(
            events.clone(),
            0,
            |_| now,
            |e| e.stream().id(),
            |i| actors[command[i]].clone(),
        );
        let dir = std::env::temp_dir().join(format!(
            "taskledger-bridge-same-ms-{}-{}",
            std::process::id(),
            EventId::new()
        ));
        let state = BridgeState::open(&dir).unwrap();
        let (_, out) = render(&state, None, QUEUE_TOPIC, &records).unwrap();
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
        out.into_iter()
            .filter_map(|o| {
                let kind = o.message.exchange.rsplit('/').next()?.to_string();
                let state = o.message.json()["status"]["runs"][0]["state"].clone();
                Some((kind, state.as_str().unwrap_or("-").to_string()))
            })
            .collect::<Vec<_>>()
    };
    let reactor = || Actor::system("built-in-workers");
    let apart = render_with([Actor::system("creator"), reactor(), reactor()]);
    let shared = reactor();
    let merged = render_with([Actor::system("creator"), shared.clone(), shared]);
    let running = |got: &[(String, String)]| {
        got.iter()
            .find(|(kind, _)| kind == "task-running")
            .map(|(_, state)| state.clone())
    };
    assert_eq!(running(&apart).as_deref(), Some("running"), "{apart:?}");
    assert_eq!(running(&merged).as_deref(), Some("completed"), "{merged:?}");
    assert!(apart
        .iter()
        .any(|(k, s)| k == "task-completed" && s == "completed"));
}
