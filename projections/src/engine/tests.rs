use super::decide::{decide, Overlay};
use super::*;
use crate::queue_view::tests::definition;
use crate::{audit, store, EmbeddedLog};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use taskledger_core::ids::Slug;
use taskledger_core::queue::RunState;
use taskledger_core::time::{DAY, HOUR, MINUTE};

pub(crate) async fn start(dir: &std::path::Path) -> (Arc<rocksdb::DB>, Arc<EmbeddedLog>, Engine) {
    let db = store::open(dir).unwrap();
    let log = Arc::new(EmbeddedLog::new(db.clone()));
    let view = QueueView::new(db.clone()).unwrap();
    let engine = Engine::start(view, log.clone(), Limits::default())
        .await
        .unwrap();
    (db, log, engine)
}

/// The embedded log, as a Kafka log may behave: taking records of at most `max` bytes (as a
/// Kafka log takes ~1 MB), its next `empty` reads coming back empty (a broker slow to return
/// what was just appended), with `alternate` every other read too, each read bringing at most
/// `per_read` records, and its reads failing once `reads` have been answered (a broker lost
/// in the middle of a catch-up). `calls` counts the reads.
pub(crate) struct Shaped {
    pub(crate) log: Arc<EmbeddedLog>,
    pub(crate) max: Option<usize>,
    pub(crate) empty: std::sync::atomic::AtomicUsize,
    pub(crate) alternate: bool,
    pub(crate) per_read: usize,
    pub(crate) reads: std::sync::atomic::AtomicUsize,
    pub(crate) calls: std::sync::atomic::AtomicUsize,
}

impl Shaped {
    pub(crate) fn new(log: Arc<EmbeddedLog>) -> Shaped {
        Shaped {
            log,
            max: None,
            empty: 0.into(),
            alternate: false,
            per_read: usize::MAX,
            reads: usize::MAX.into(),
            calls: 0.into(),
        }
    }
}

impl EventLog for Shaped {
    fn max_record_bytes(&self) -> Option<usize> {
        self.max
    }
    async fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<taskledger_core::log::Appended, LogError> {
        self.log.append(topic, partition, records).await
    }
    async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<taskledger_core::log::Batch, LogError> {
        use std::sync::atomic::Ordering::SeqCst;
        let count_down = |n: usize| n.checked_sub(1);
        if self.reads.fetch_update(SeqCst, SeqCst, count_down).is_err() {
            return Err(LogError::Unavailable("the broker went away".into()));
        }
        let call = self.calls.fetch_add(1, SeqCst);
        let skipped = self.alternate && call.is_multiple_of(2);
        if skipped || self.empty.fetch_update(SeqCst, SeqCst, count_down).is_ok() {
            return Ok(taskledger_core::log::Batch {
                records: vec![],
                next: offset,
            });
        }
        let max = max.min(self.per_read);
        self.log.read(topic, partition, offset, max).await
    }
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.log.end_offset(topic, partition).await
    }
}

/// A queue writer on a fresh embedded log seen through a `Shaped` log, not started (a test
/// calls `commit`), with its runtime, the log itself and the projection.
struct Bare {
    rt: tokio::runtime::Runtime,
    log: Arc<EmbeddedLog>,
    view: QueueView,
    shaped: Arc<Shaped>,
    writer: Writer<Shaped>,
}

fn bare_writer(dir: &std::path::Path, shape: impl FnOnce(Arc<EmbeddedLog>) -> Shaped) -> Bare {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = store::open(dir).unwrap();
    let log = Arc::new(EmbeddedLog::new(db.clone()));
    let view = QueueView::new(db).unwrap();
    let shaped = Arc::new(shape(log.clone()));
    let writer = Writer {
        view: view.clone(),
        log: shaped.clone(),
        handle: rt.handle().clone(),
        limits: Limits::default(),
        pending: Arc::new(Notify::new()),
        role: WriterRole::new("queue", 0),
        next_offset: 0,
        stats: Arc::new(CommitStats::default()),
    };
    Bare {
        rt,
        log,
        view,
        shaped,
        writer,
    }
}

/// A job for a writer driven by hand, and where its answer arrives.
fn job(command: QueueCommand) -> (Job, oneshot::Receiver<Answer>) {
    let (reply, rx) = oneshot::channel();
    let job = Job {
        arrived: std::time::Instant::now(),
        actor: Actor::system("test"),
        causation: None,
        command,
        reply,
    };
    (job, rx)
}

/// One group commit holding small and oversized createTasks: each oversized one is
/// refused with `TooLarge`, every other is answered in its own order and written, and the
/// log holds no event of a refused task.
#[test]
fn oversized_commands_are_refused_alone_in_their_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let Bare {
        rt,
        log,
        view,
        mut writer,
        ..
    } = bare_writer(dir.path(), |log| Shaped {
        max: Some(4096),
        ..Shaped::new(log)
    });
    let now = Millis::now();
    // small, oversized, small, oversized, small: the small ones share one group
    let group = Slug::nice();
    let mut jobs = Vec::new();
    let mut replies = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut def = definition(now, group);
        if i % 2 == 1 {
            def.payload = queue::JsonText(format!(r#"{{"blob":"{}"}}"#, "x".repeat(8000)));
        }
        let task_id = Slug::nice();
        let (job, rx) = job(QueueCommand::CreateTask {
            task_id,
            definition: def,
        });
        jobs.push(job);
        replies.push(rx);
        ids.push(task_id);
    }
    assert!(writer.commit(jobs), "the writer keeps writing");
    for (i, rx) in replies.into_iter().enumerate() {
        let answer = rx.blocking_recv().expect("every job is answered").result;
        match (i % 2, answer) {
            (0, Ok(Outcome::Task(t))) => assert_eq!(t.task_id, ids[i]),
            (1, Err(EngineError::TooLarge(m))) => assert!(m.contains("4096"), "{m}"),
            (_, other) => panic!("job {i}: {:?}", other.map(|_| "answered")),
        }
        let stored = view.task(&ids[i]).unwrap();
        assert_eq!(stored.is_some(), i % 2 == 0, "task {i} in the projection");
    }
    // in the log: the group and three tasks' definitions and pending runs, nothing more
    let read = rt
        .block_on(log.read(QUEUE_TOPIC, QUEUE_PARTITION, 0, 100))
        .unwrap();
    let events: Vec<Envelope<QueueEvent>> = read
        .records
        .iter()
        .map(|r| codec::decode(&r.value).unwrap())
        .collect();
    let defined: Vec<TaskId> = events
        .iter()
        .filter_map(|e| match &e.payload {
            QueueEvent::TaskDefined { task_id, .. } => Some(*task_id),
            _ => None,
        })
        .collect();
    assert_eq!(defined, vec![ids[0], ids[2], ids[4]]);
    assert!(events
        .iter()
        .all(|e| e.payload.stream() != queue::Stream::Task(ids[1])));
}

fn claim_work(worker_id: &str) -> QueueCommand {
    QueueCommand::ClaimWork {
        task_queue_id: "prov/wt".parse().unwrap(),
        worker_group: "g".into(),
        worker_id: worker_id.into(),
        max: 1,
    }
}

/// A group's change of one member's priority re-keys its pending run as a change of the
/// task alone does: raised, the newer task is claimed before the older one.
#[tokio::test]
async fn a_member_raised_by_its_group_is_claimed_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _log, engine) = start(&dir.path().join("live")).await;
    let actor = || Actor::system("test");
    let (older, newer) = (Slug::nice(), Slug::nice());
    for id in [older, newer] {
        let definition = definition(Millis::now(), Slug::nice());
        let create = QueueCommand::CreateTask {
            task_id: id,
            definition,
        };
        engine.execute(actor(), create).await.unwrap();
        // pending since distinct milliseconds: the older is first unless re-keyed
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let raise = QueueCommand::ChangePriority {
        task_id: newer,
        priority: Priority::VeryHigh,
        in_group: true,
    };
    engine.execute(actor(), raise).await.unwrap();
    for expected in [newer, older] {
        let Outcome::Claims(claims) = engine.execute(actor(), claim_work("w")).await.unwrap()
        else {
            panic!("not a claim");
        };
        let claimed: Vec<_> = claims.iter().map(|(t, _)| t.task_id).collect();
        assert_eq!(claimed, [expected]);
    }
}

/// Many callers at once fill every group commit, each claimWork racing the others for
/// whatever is pending: still every task runs exactly once, each stream's sequence numbers
/// run 1, 2, 3, ... without a gap or a repeat, and the projection equals a fold of the log
/// from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_leave_the_projection_equal_to_the_log() {
    const TASKS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (db, log, engine) = start(&dir.path().join("live")).await;
    let group = Slug::nice();
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..TASKS {
        let engine = engine.clone();
        callers.spawn(async move {
            let actor = Actor::system("test");
            let create = QueueCommand::CreateTask {
                task_id: Slug::nice(),
                definition: definition(Millis::now(), group),
            };
            engine.execute(actor.clone(), create).await.unwrap();
            // claim whatever is pending, maybe another caller's task, and complete it
            loop {
                let claimed = engine.execute(actor.clone(), claim_work(&format!("w{i}")));
                let Outcome::Claims(claims) = claimed.await.unwrap() else {
                    panic!("claimWork answers claims");
                };
                if let Some((task, run_id)) = claims.into_iter().next() {
                    let report = QueueCommand::Report {
                        task_id: task.task_id,
                        run_id,
                        reason: ReasonResolved::Completed,
                    };
                    engine.execute(actor, report).await.unwrap();
                    return task.task_id;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    let mut completed = BTreeSet::new();
    let all = async {
        while let Some(done) = callers.join_next().await {
            completed.insert(done.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every caller claims a task within a minute");
    assert_eq!(completed.len(), TASKS, "no task was claimed twice");
    for id in &completed {
        let task = engine.view().task(id).unwrap().unwrap();
        let states: Vec<_> = task.runs.iter().map(|r| r.state).collect();
        assert_eq!(states, [RunState::Completed], "task {id}");
    }

    let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let batch = log
            .read(QUEUE_TOPIC, QUEUE_PARTITION, offset, 4096)
            .await
            .unwrap();
        if batch.next <= offset {
            break;
        }
        for record in &batch.records {
            let envelope: Envelope<QueueEvent> = codec::decode(&record.value).unwrap();
            sequences
                .entry(envelope.stream_id)
                .or_default()
                .push(envelope.sequence);
        }
        offset = batch.next;
    }
    // each task's stream, the group's and the workers'
    assert!(sequences.len() > TASKS, "{} streams", sequences.len());
    for (stream, seqs) in &sequences {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "stream {stream}");
    }

    let scratch = store::open(&dir.path().join("scratch")).unwrap();
    let report = audit::replay(&db, &scratch, "queue", true, &mut |_, _| {}).unwrap();
    assert!(
        report.difference.is_none(),
        "the projection differs from the log's fold: {:?}",
        report.difference
    );
    assert_eq!(report.live_digest.as_ref(), Some(&report.rebuilt_digest));
}

/// One group commit's decisions, in order: a worker declared, then quarantined (which
/// finds it declared), then claiming work, which gets nothing although a task is pending
/// (another worker's claimWork, decided apart, gets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_counts_for_the_commands_after_it_in_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _log, engine) = start(dir.path()).await;
    let pending = QueueCommand::CreateTask {
        task_id: Slug::nice(),
        definition: definition(Millis::now(), Slug::nice()),
    };
    engine
        .execute(Actor::system("test"), pending)
        .await
        .unwrap();
    let (now, limits) = (Millis::now(), Limits::default());
    let task_queue_id: TaskQueueId = "prov/wt".parse().unwrap();
    let (worker_group, worker_id) = ("g".to_string(), "quarantined".to_string());
    let mut batch = Overlay::new(engine.view());
    let declare = QueueCommand::DeclareWorker {
        task_queue_id: task_queue_id.clone(),
        worker_group: worker_group.clone(),
        worker_id: worker_id.clone(),
        expires: Some(now.plus(HOUR)),
    };
    decide(&mut batch, &declare, now, &limits).unwrap();
    let quarantine = QueueCommand::QuarantineWorker {
        task_queue_id,
        worker_group,
        worker_id,
        until: now.plus(HOUR),
        info: "test".into(),
        by: "tester".into(),
    };
    decide(&mut batch, &quarantine, now, &limits)
        .expect("the worker declared earlier in the batch is found");
    let claimed =
        |overlay: &mut Overlay, id: &str| match decide(overlay, &claim_work(id), now, &limits) {
            Ok((_, Outcome::Claims(claims))) => claims.len(),
            other => panic!("claimWork decided {other:?}"),
        };
    assert_eq!(claimed(&mut batch, "quarantined"), 0);
    assert_eq!(claimed(&mut Overlay::new(engine.view()), "other"), 1);
}

/// As upstream, a reclaim counts as its worker being seen: a worker busy with one long
/// task, reclaiming it, keeps its lastDateActive and expiry current (at most every 30
/// minutes, as claimWork does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaim_counts_as_the_worker_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _log, engine) = start(dir.path()).await;
    let task_id = Slug::nice();
    let create = QueueCommand::CreateTask {
        task_id,
        definition: definition(Millis::now(), Slug::nice()),
    };
    engine.execute(Actor::system("test"), create).await.unwrap();
    engine
        .execute(Actor::system("test"), claim_work("busy"))
        .await
        .unwrap();
    let limits = Limits::default();
    let reclaim = QueueCommand::ReclaimTask { task_id, run_id: 0 };
    let seen = |now: Millis| -> Vec<QueueEvent> {
        let (events, _) = decide(&mut Overlay::new(engine.view()), &reclaim, now, &limits)
            .expect("the run is running");
        events
            .into_iter()
            .filter(|e| matches!(e, QueueEvent::WorkerSeen { .. }))
            .collect()
    };
    // seen by its claimWork just now: not again yet
    assert_eq!(seen(Millis::now()), vec![]);
    let later = Millis::now().plus(31 * MINUTE);
    let events = seen(later);
    let [QueueEvent::WorkerSeen {
        worker_id,
        at,
        expires,
        ..
    }] = events.as_slice()
    else {
        panic!("no sighting 31 minutes later");
    };
    assert_eq!(worker_id, "busy");
    assert_eq!((*at, *expires), (later, later.plus(DAY)));
}

/// A follower publishes the position of every batch it folds as it goes, not once it reaches
/// the log's end: a node waiting to show a forwarded command's effect sees it as soon as it
/// is folded, however long the writer keeps appending (or, here, if the catch-up then fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_publishes_each_folded_batch() {
    let writer_dir = tempfile::tempdir().unwrap();
    let (_db, log, engine) = start(writer_dir.path()).await;
    // more events than one read returns (4,096)
    for _ in 0..2100 {
        let create = QueueCommand::CreateTask {
            task_id: Slug::nice(),
            definition: definition(Millis::now(), Slug::nice()),
        };
        engine.execute(Actor::system("test"), create).await.unwrap();
    }
    let end = log.end_offset(QUEUE_TOPIC, QUEUE_PARTITION).await.unwrap();
    assert!(end > 4096, "only {end} events");

    let follower_dir = tempfile::tempdir().unwrap();
    let view = QueueView::new(store::open(follower_dir.path()).unwrap()).unwrap();
    let role = WriterRole::new("queue", 0);
    let reads = Shaped {
        reads: 1.into(),
        ..Shaped::new(log.clone())
    };
    let failed = catch_up(&view, &reads, Some(&role)).await;
    assert!(failed.is_err(), "the second read should have failed");
    let folded = view
        .consumer_offset(VIEW_CONSUMER, QUEUE_TOPIC, QUEUE_PARTITION)
        .unwrap();
    assert!(folded > 0 && folded < end, "folded up to {folded} of {end}");
    assert_eq!(role.position(), folded);

    // the broker back, the next catch-up goes on from there to the end
    assert_eq!(catch_up(&view, &*log, Some(&role)).await.unwrap(), end);
    assert_eq!(role.position(), end);
}

/// A writer whose append came after records it had not seen folds them from the log, and a
/// read that comes back short (a slow broker) does not make it answer before its own events
/// are in its projection: the caller reads its task there at once.
#[test]
fn a_writer_answers_only_once_its_own_events_are_folded() {
    let dir = tempfile::tempdir().unwrap();
    let Bare {
        rt,
        log,
        view,
        shaped,
        mut writer,
    } = bare_writer(dir.path(), Shaped::new);
    let create = |task_id: TaskId| {
        job(QueueCommand::CreateTask {
            task_id,
            definition: definition(Millis::now(), Slug::nice()),
        })
    };
    let first = Slug::nice();
    let (job, rx) = create(first);
    assert!(writer.commit(vec![job]));
    assert!(rx.blocking_recv().unwrap().result.is_ok());
    // the writer forgets where the log stands, as after records another writer appended
    writer.next_offset = 0;
    shaped.empty.store(3, std::sync::atomic::Ordering::SeqCst);
    let second = Slug::nice();
    let (job, rx) = create(second);
    assert!(writer.commit(vec![job]));
    assert!(rx.blocking_recv().unwrap().result.is_ok());
    assert!(
        view.task(&second).unwrap().is_some(),
        "answered before its task was in the projection"
    );
    let end = rt
        .block_on(log.end_offset(QUEUE_TOPIC, QUEUE_PARTITION))
        .unwrap();
    assert_eq!(writer.next_offset, end);
    assert_eq!(writer.role.position(), end);
}
