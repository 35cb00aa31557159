use super::folded::{folded_slot, Rows};
use super::recent::{Evicted, RECENT, RECENT_BYTES, RECENT_ROWS};
use super::*;
use std::collections::BTreeSet;
use taskledger_core::envelope::{Actor, EventId};
use taskledger_core::ids::Slug;
use taskledger_core::queue::{self, Limits, Priority, ReasonResolved, Requires, TaskDefinition};
use taskledger_core::time::HOUR;

pub(crate) fn definition(now: Millis, group: Slug) -> TaskDefinition {
    TaskDefinition {
        task_queue_id: "prov/wt".parse().unwrap(),
        scheduler_id: "-".into(),
        project_id: "none".into(),
        task_group_id: group,
        dependencies: vec![],
        requires: Requires::AllCompleted,
        routes: vec![],
        priority: Priority::Lowest,
        retries: 1,
        created: now,
        deadline: now.plus(HOUR),
        expires: now.plus(2 * HOUR),
        scopes: vec![],
        payload: queue::JsonText("{}".into()),
        metadata: queue::Metadata {
            name: "n".into(),
            description: "d".into(),
            owner: "o@example.com".into(),
            source: "https://example.com".into(),
        },
        tags: queue::JsonText("{}".into()),
        extra: queue::JsonText("{}".into()),
    }
}

/// Tasks in a few groups: some left pending, some claimed, some completed, one retried
/// after an exception, so every index (pending, claims, timers) ends with entries that a
/// fold put and others it put and deleted again.
fn workload(now: Millis) -> Vec<Envelope<QueueEvent>> {
    let limits = Limits::default();
    let groups = [Slug::nice(), Slug::nice()];
    let mut events = Vec::new();
    for i in 0..40u32 {
        let id = Slug::nice();
        let def = definition(now, groups[i as usize % 2]);
        let mut batch =
            queue::create_task(None, None, &[], id, def.clone(), now, &limits).expect("create");
        let mut task = Task::defined(id, def, vec![]);
        batch.iter().for_each(|e| task.apply(e));
        let mut step = |task: &mut Task, evs: Vec<QueueEvent>| {
            evs.iter().for_each(|e| task.apply(e));
            batch.extend(evs);
        };
        if i % 4 >= 1 {
            let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).expect("claim");
            step(&mut task, claimed);
        }
        let artifact = queue::Artifact {
            name: format!("public/{i}"),
            storage: queue::ArtifactStorage::Reference {
                url: "https://example.com".into(),
            },
            content_type: "text/plain".into(),
            expires: now.plus(HOUR),
            present: true,
        };
        if i % 4 == 3 {
            let created = queue::create_artifact(Some(&task), 0, None, artifact.clone(), now)
                .expect("artifact");
            step(&mut task, created);
        }
        if i % 4 >= 2 {
            let reason = if i % 8 == 2 {
                ReasonResolved::WorkerShutdown
            } else {
                ReasonResolved::Completed
            };
            let done = queue::report(&task, 0, reason, now).expect("report");
            step(&mut task, done);
        }
        if i % 4 == 3 {
            // a dependent defined, then the artifact and the task expire: the dependency
            // record of a task defined in the same fold goes too
            let mut dependent = definition(now, groups[0]);
            dependent.dependencies = vec![id];
            let found = queue::DependencyState {
                resolution: task.resolution(),
                expires: task.definition.expires,
            };
            let view = [queue::DependencyView {
                task_id: id,
                found: Some(found),
            }];
            let b = queue::create_task(None, None, &view, Slug::nice(), dependent, now, &limits)
                .expect("dependent");
            batch.extend(b);
            batch.extend(queue::expire_artifact(id, 0, &artifact, artifact.expires).unwrap());
            let gone = queue::expire_task(&task, task.definition.expires).unwrap();
            assert_eq!(gone.len(), 1);
            batch.extend(gone);
        }
        events.extend(batch);
    }
    events.into_iter().map(numbered(now)).collect()
}

/// Wraps events in envelopes at `now`, numbering each stream's 1, 2, 3, ... in order.
fn numbered(now: Millis) -> impl FnMut(QueueEvent) -> Envelope<QueueEvent> {
    let mut seqs: HashMap<String, u64> = HashMap::new();
    move |payload| {
        let stream_id = payload.stream().id();
        let seq = seqs.entry(stream_id.clone()).or_insert(0);
        *seq += 1;
        Envelope {
            event_id: EventId::new(),
            stream_id,
            sequence: *seq,
            time: now,
            actor: Actor {
                client_id: "c".into(),
                request_id: None,
            },
            causation_id: None,
            writer_epoch: 1,
            payload,
        }
    }
}

fn contents(db: &DB) -> Vec<(&'static str, Rows)> {
    keys::ALL_CFS
        .iter()
        .map(|name| {
            let rows = db
                .iterator_cf(cf(db, name).unwrap(), IteratorMode::Start)
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (*name, rows)
        })
        .collect()
}

/// A view in a database at `path` that folded `envs` one event per batch, as the live
/// engine may.
fn fold_one_by_one(path: &std::path::Path, envs: &[Envelope<QueueEvent>]) -> QueueView {
    let view = QueueView::new(crate::store::open(path).unwrap())
        .unwrap()
        .with_stream_index();
    for (i, env) in envs.iter().enumerate() {
        let i = i as u64;
        view.apply("c", "t", 0, &[i], i + 1, std::slice::from_ref(env))
            .unwrap();
    }
    view
}

/// A task's run index entries follow its state at the end of each fold: a life folded
/// in one batch writes nothing to the pending queue, claims or timers; the same life
/// folded a step per batch leaves exactly the entries of each step's state.
#[test]
fn run_indexes_follow_the_state_at_the_end_of_each_fold() {
    let now = Millis::now();
    let limits = Limits::default();
    let id = Slug::nice();
    let def = definition(now, id);
    let created = queue::create_task(None, None, &[], id, def.clone(), now, &limits).unwrap();
    let mut task = Task::defined(id, def.clone(), vec![]);
    created.iter().for_each(|e| task.apply(e));
    let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
    claimed.iter().for_each(|e| task.apply(e));
    let taken_until = task.last_run().unwrap().taken_until.unwrap();
    let done = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
    let mut envelope = numbered(now);
    let steps: Vec<Vec<Envelope<QueueEvent>>> = [created, claimed, done]
        .into_iter()
        .map(|evs| evs.into_iter().map(&mut envelope).collect())
        .collect();
    let index_cfs = [keys::CF_PENDING, keys::CF_CLAIMS, keys::CF_TIMERS];
    let dir = tempfile::tempdir().unwrap();

    // the whole life in one fold: no write to any run index
    let view = QueueView::new(crate::store::open(&dir.path().join("one")).unwrap()).unwrap();
    let all: Vec<_> = steps.concat();
    let offsets: Vec<u64> = (0..all.len() as u64).collect();
    let folded = view
        .fold_batch("c", "t", 0, &offsets, all.len() as u64, &all, None)
        .unwrap();
    for name in index_cfs {
        let writes = &folded.hashed[folded_slot(name)];
        assert!(writes.is_empty(), "{name}: {} writes", writes.len());
    }

    // a step per fold: each index holds the entries of the step's state
    let view = QueueView::new(crate::store::open(&dir.path().join("steps")).unwrap()).unwrap();
    let queue = def.task_queue_id.as_str();
    let deadline = keys::timer(def.deadline, TimerKind::Deadline, &id, 0);
    let expected: [[Vec<Vec<u8>>; 3]; 3] = [
        [
            vec![keys::pending(queue, def.priority.rank(), now, &id, 0)],
            vec![],
            vec![deadline.clone()],
        ],
        [vec![], vec![keys::claim(queue, &id, 0)], {
            let mut t = vec![
                deadline.clone(),
                keys::timer(taken_until, TimerKind::ClaimExpiry, &id, 0),
            ];
            t.sort();
            t
        }],
        [vec![], vec![], vec![]],
    ];
    let mut offset = 0;
    for (step, want) in steps.iter().zip(expected) {
        let offsets: Vec<u64> = (offset..offset + step.len() as u64).collect();
        offset += step.len() as u64;
        view.apply("c", "t", 0, &offsets, offset, step).unwrap();
        for (name, want) in index_cfs.iter().zip(want) {
            let have: Vec<Vec<u8>> = view
                .db()
                .iterator_cf(cf(view.db(), name).unwrap(), IteratorMode::Start)
                .map(|r| r.unwrap().0.to_vec())
                .collect();
            assert_eq!(have, want, "{name} after {offset} events");
            let mirrored: Vec<Vec<u8>> =
                view.mirror.read().unwrap()[name].keys().cloned().collect();
            assert_eq!(mirrored, want, "{name} mirrored after {offset} events");
        }
    }
}

/// `folded_slot` names each column family's place in `FOLDED_CFS` (the two lists are
/// kept by hand).
#[test]
fn folded_slots_follow_the_folded_column_families() {
    for (i, name) in FOLDED_CFS.iter().enumerate() {
        assert_eq!(folded_slot(name), i, "{name}");
    }
}

/// A dropped generation comes back to its taker with its rows, and its map, emptied and
/// given back, is a later generation's: every generation's map is full-sized from the
/// start, so none grows by rehashing.
#[test]
fn recent_generations_reuse_their_maps() {
    let mut recent = Recent::new();
    let mut evictions = 0;
    for i in 0..(5 * RECENT_ROWS) as u32 {
        let key = i.to_be_bytes().to_vec();
        if let Some(Evicted(slot, mut rows)) = recent.insert(1, key, Some(vec![1])) {
            evictions += 1;
            assert_eq!(slot, 1);
            // the first eviction is the empty generation `previous` started as
            let expected = if evictions == 1 { 0 } else { RECENT_ROWS };
            assert_eq!(rows.len(), expected, "eviction {evictions}");
            rows.clear();
            recent.give_back(Evicted(slot, rows));
        }
        assert!(recent.current[1].capacity() >= RECENT_ROWS, "row {i}");
    }
    assert_eq!(evictions, 4);
    assert!(recent
        .get(1, &(5 * RECENT_ROWS as u32 - 1).to_be_bytes())
        .is_some());
    assert_eq!(recent.get(1, &0u32.to_be_bytes()), None);
}

/// Large rows drop a generation by their bytes, long before its row count: the cache
/// holds at most twice `RECENT_BYTES` (plus one row) per column family.
#[test]
fn recent_rows_are_bounded_by_bytes() {
    // the row count must not be what drops the generations here
    const { assert!(RECENT_ROWS > 5) };
    let mut recent = Recent::default();
    let row = |i: u8| (vec![i], Some(vec![i; RECENT_BYTES / 2 + 1]));
    for i in 0..5 {
        let (key, value) = row(i);
        recent.insert(0, key, value);
        let held: usize = [&recent.current[0], &recent.previous[0]]
            .iter()
            .flat_map(|m| m.values())
            .map(|v| v.as_ref().map_or(0, |b| b.len()))
            .sum();
        assert!(
            held <= 2 * RECENT_BYTES + RECENT_BYTES / 2 + 1,
            "{held} bytes held"
        );
    }
    // rows 0 and 1 went with the first generation dropped; 2..5 are held
    assert_eq!(recent.get(0, &[0]), None);
    assert_eq!(recent.get(0, &[1]), None);
    for i in 2..5 {
        assert_eq!(
            recent.get(0, &[i]).unwrap().unwrap().len(),
            RECENT_BYTES / 2 + 1
        );
    }
}

/// The recent rows a live view reads instead of the database are the database's rows:
/// after every fold, every task and every stream's sequence read through the view equal
/// those read from the database directly (expired tasks included, and generations
/// dropped, since tests keep only a handful of rows per generation); at the end, every
/// row held equals the database's.
#[test]
fn recent_rows_are_the_database_rows() {
    let envs = workload(Millis::now());
    let dir = tempfile::tempdir().unwrap();
    let view = QueueView::new(crate::store::open(dir.path()).unwrap()).unwrap();
    let tasks: BTreeSet<TaskId> = envs
        .iter()
        .filter_map(|e| match &e.payload {
            QueueEvent::TaskDefined { task_id, .. } => Some(*task_id),
            _ => None,
        })
        .collect();
    let streams: BTreeSet<&str> = envs.iter().map(|e| e.stream_id.as_str()).collect();
    let mut held = 0;
    for (i, env) in envs.iter().enumerate() {
        let i = i as u64;
        view.apply("c", "t", 0, &[i], i + 1, std::slice::from_ref(env))
            .unwrap();
        let recent = view.recent.as_ref().unwrap().lock().unwrap();
        held = held.max(recent.current[0].len() + recent.previous[0].len());
        drop(recent);
        for id in &tasks {
            let direct: Option<Task> = get(view.db(), keys::CF_TASKS, &keys::task(id)).unwrap();
            assert_eq!(view.task(id).unwrap(), direct, "task {id} after event {i}");
        }
        for stream in &streams {
            let direct = view
                .db()
                .get_cf(cf(view.db(), keys::CF_STREAMS).unwrap(), stream.as_bytes())
                .unwrap()
                .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
            assert_eq!(view.stream_sequence(stream).unwrap(), direct);
        }
    }
    // and every row held, of each column family, is the database's
    let recent = view.recent.as_ref().unwrap().lock().unwrap();
    let mut checked = [0; RECENT.len()];
    for (slot, cf_name) in RECENT.iter().enumerate() {
        let current = recent.current[slot].iter();
        // a row of the older generation written again since is read from the newer one
        let previous = recent.previous[slot]
            .iter()
            .filter(|(key, _)| !recent.current[slot].contains_key(*key));
        for (key, value) in current.chain(previous) {
            let direct = view
                .db()
                .get_cf(cf(view.db(), cf_name).unwrap(), key)
                .unwrap();
            assert_eq!(value.as_deref(), direct.as_deref(), "{cf_name} row");
            checked[slot] += 1;
        }
    }
    drop(recent);
    assert!(checked.iter().all(|n| *n > 0), "rows checked: {checked:?}");
    assert!(held > RECENT_ROWS, "the test never dropped a generation");
    assert!(
        tasks.iter().any(|id| view.task(id).unwrap().is_none()),
        "no task expired"
    );
}

/// A whole log folded at once (a rebuild: writes coalesced per key, deletes of keys put
/// within the fold dropped) leaves exactly the state of folding it one event at a time.
#[test]
fn one_fold_of_everything_equals_a_fold_per_event() {
    let now = Millis::now();
    let envs = workload(now);
    let offsets: Vec<u64> = (0..envs.len() as u64).collect();
    let dir = tempfile::tempdir().unwrap();
    let one_by_one = fold_one_by_one(&dir.path().join("a"), &envs);
    let at_once = QueueView::new(crate::store::open(&dir.path().join("b")).unwrap())
        .unwrap()
        .with_stream_index()
        .for_rebuild();
    at_once
        .apply("c", "t", 0, &offsets, envs.len() as u64, &envs)
        .unwrap();
    at_once.flush().unwrap();
    let (a, b) = (contents(one_by_one.db()), contents(at_once.db()));
    assert_eq!(a, b);
    let rows = |name: &str| a.iter().find(|(n, _)| *n == name).unwrap().1.len();
    // 10 pending, 10 running (+5 retried after worker-shutdown, pending again), 10
    // dependents pending (their dependency completed, then expired)
    assert_eq!(rows(keys::CF_PENDING), 25);
    assert_eq!(rows(keys::CF_CLAIMS), 10);
    // the expired tasks left no artifacts, dependency records or expiry entries
    assert_eq!(rows(keys::CF_ARTIFACTS), 0);
    assert_eq!(rows(keys::CF_DEPENDENTS), 0);
    assert_eq!(rows(keys::CF_TASKS), 40 + 10 - 10);
    assert_eq!(rows(keys::CF_EXPIRIES), 40 + 2);
    assert!(rows(keys::CF_LOG_INDEX) == envs.len());
    // re-applying the same events changes nothing
    at_once
        .apply("c", "t", 0, &offsets, envs.len() as u64, &envs)
        .unwrap();
    assert_eq!(contents(at_once.db()), b);
    // the mirror agrees with the database
    let mirror = at_once.mirror.read().unwrap();
    assert_eq!(mirror[keys::CF_PENDING].len(), 25);
    assert_eq!(mirror[keys::CF_CLAIMS].len(), 10);
    drop(mirror);
    // per task queue, counted in place as the scan lists them, and all of them in all
    let queues: std::collections::BTreeSet<String> = envs
        .iter()
        .filter_map(|e| match &e.payload {
            QueueEvent::TaskDefined { definition, .. } => {
                Some(definition.task_queue_id.as_str().to_string())
            }
            _ => None,
        })
        .collect();
    for (name, all) in [(keys::CF_PENDING, 25), (keys::CF_CLAIMS, 10)] {
        let mut total = 0;
        for q in &queues {
            let n = at_once.count(name, q).unwrap();
            let listed = at_once.scan(name, &keys::queue_prefix(q), None, usize::MAX);
            assert_eq!(n, listed.unwrap().len(), "{name} of {q}");
            total += n;
        }
        assert_eq!(total, all, "{name} over {} queues", queues.len());
    }
}

/// A rebuild folds each batch through the previous one's writes before they reach the
/// database: batch by batch, every fold done before its predecessor's write, leaves the
/// state of folding one event at a time (expiries included, which scan by prefix).
#[test]
fn folding_through_an_unwritten_batch_equals_a_fold_per_event() {
    let now = Millis::now();
    let envs = workload(now);
    let dir = tempfile::tempdir().unwrap();
    let one_by_one = fold_one_by_one(&dir.path().join("a"), &envs);
    let expected = contents(one_by_one.db());
    for size in [1, 3, 17, 64] {
        let view = QueueView::new(
            crate::store::open(&dir.path().join(format!("overlap-{size}"))).unwrap(),
        )
        .unwrap()
        .with_stream_index()
        .for_rebuild();
        let mut unwritten: Option<Folded> = None;
        let mut start = 0;
        for chunk in envs.chunks(size) {
            let offsets: Vec<u64> = (start..start + chunk.len() as u64).collect();
            start += chunk.len() as u64;
            let folded = view
                .fold_batch("c", "t", 0, &offsets, start, chunk, unwritten.as_ref())
                .unwrap();
            if let Some(previous) = unwritten.take() {
                view.write_folded(&previous).unwrap();
            }
            unwritten = Some(folded);
        }
        view.write_folded(&unwritten.unwrap()).unwrap();
        view.flush().unwrap();
        assert_eq!(contents(view.db()), expected, "batches of {size}");
        let mirror = view.mirror.read().unwrap();
        assert_eq!(mirror[keys::CF_PENDING].len(), 25, "batches of {size}");
        assert_eq!(mirror[keys::CF_CLAIMS].len(), 10, "batches of {size}");
    }
}

/// A worker row written before the quarantine history existed (its six fields) does not read
/// as a row of today; `rewrite_worker_rows` rewrites it once, in the bytes a rebuild writes,
/// and a row that is neither layout is an error. The history keeps the last
/// `QUARANTINE_HISTORY` calls.
#[test]
fn worker_rows_from_before_the_quarantine_history_are_rewritten() {
    let now = Millis::now();
    let before = WorkerRecordBefore {
        first_claim: now,
        last_date_active: Some(now),
        expires: now.plus(HOUR),
        quarantine_until: Some(now.plus(HOUR)),
        quarantine_info: Some("bad disk".into()),
        recent_tasks: vec![(Slug::nice(), 2)],
    };
    let old = codec::encode(&before).unwrap();
    assert!(codec::decode::<WorkerRecord>(&old).is_err());
    let expected = WorkerRecord::from(before);
    assert!(expected.quarantine_details.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let db = crate::store::open(&dir.path().join("before")).unwrap();
    let workers = crate::store::cf(&db, keys::CF_WORKERS).unwrap();
    db.put_cf(workers, b"a-worker", &old).unwrap();
    let view = QueueView::new(db.clone()).unwrap();
    view.rewrite_worker_rows().unwrap();
    let stored = db.get_cf(workers, b"a-worker").unwrap().unwrap();
    assert_eq!(stored, codec::encode(&expected).unwrap());
    // once: a later start leaves the rows alone
    db.put_cf(workers, b"a-worker", &old).unwrap();
    view.rewrite_worker_rows().unwrap();
    assert_eq!(db.get_cf(workers, b"a-worker").unwrap().unwrap(), old);

    // a row that is neither layout stops the rewrite instead of being guessed at
    let db = crate::store::open(&dir.path().join("broken")).unwrap();
    let workers = crate::store::cf(&db, keys::CF_WORKERS).unwrap();
    db.put_cf(workers, b"a-worker", &old[..old.len() - 3])
        .unwrap();
    let view = QueueView::new(db.clone()).unwrap();
    assert!(view.rewrite_worker_rows().is_err());

    let mut w = expected;
    for i in 0..QUARANTINE_HISTORY + 3 {
        w.record_quarantine(QuarantineDetail {
            client_id: format!("client-{i}"),
            updated_at: now,
            until: now.plus(HOUR),
            info: "why".into(),
        });
    }
    assert_eq!(w.quarantine_details.len(), QUARANTINE_HISTORY);
    assert_eq!(w.quarantine_details[0].client_id, "client-3");
    let again: WorkerRecord = codec::decode(&codec::encode(&w).unwrap()).unwrap();
    assert_eq!(again, w);
}
