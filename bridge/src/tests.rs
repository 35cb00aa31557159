//! The bridge's reads of a real (embedded) log: a read never cuts a command in two, and a
//! history skipped is folded without being published.

use super::*;
use crate::testing::definition;
use taskledger_core::envelope::{Actor, Envelope, EventId};
use taskledger_core::ids::{Slug, TaskId};
use taskledger_core::log::{LogError, Record};
use taskledger_core::queue::{self, Limits, QueueEvent, ReasonCreated, ReasonResolved};
use taskledger_core::time::Millis;
use taskledger_projections::{store, EmbeddedLog};

/// A directory of its own for one test.
fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "taskledger-bridge-{name}-{}-{}",
        std::process::id(),
        EventId::new()
    ))
}

/// An embedded log in `dir`.
fn embedded_log(dir: &std::path::Path) -> EmbeddedLog {
    EmbeddedLog::new(store::open(&dir.join("db")).unwrap())
}

/// Appends `commands` to the queue topic as the writer does: one command's events share
/// their stream, instant and actor; each command has an instant and an actor of its own.
fn append(log: &EmbeddedLog, commands: Vec<Vec<QueueEvent>>, start: Millis) {
    let mut records = Vec::new();
    for (c, events) in commands.into_iter().enumerate() {
        let actor = Actor::system("test");
        for (i, payload) in events.into_iter().enumerate() {
            let env = Envelope {
                event_id: EventId::new(),
                stream_id: payload.stream().id(),
                sequence: (c + i + 1) as u64,
                time: Millis(start.0 + c as i64),
                actor: actor.clone(),
                causation_id: None,
                writer_epoch: 1,
                payload,
            };
            records.push(Record::of(&env, env.payload.type_name()).unwrap());
        }
    }
    log.append_sync(QUEUE_TOPIC, 0, records).unwrap();
}

fn scheduled(task: TaskId, now: Millis) -> QueueEvent {
    QueueEvent::RunScheduled {
        task_id: task,
        run_id: 0,
        reason: ReasonCreated::Scheduled,
        retries_left: 5,
        at: now,
    }
}

/// A command whose events straddle a read's end is read whole by the next read (the live
/// bridge and `bridge replay` read alike), never split across two.
#[tokio::test]
async fn a_read_ends_before_a_command_it_would_cut() {
    let dir = temp_dir("whole-reads");
    let log = embedded_log(&dir);
    let now = Millis::now();
    let task = TaskId::nice();
    // 510 one-event commands, one of four events over offsets 510..514 (the read of 512
    // ends inside it), then ten more
    let mut commands: Vec<Vec<QueueEvent>> = (0..510).map(|_| vec![scheduled(task, now)]).collect();
    commands.push(vec![scheduled(task, now); 4]);
    commands.extend((0..10).map(|_| vec![scheduled(task, now)]));
    append(&log, commands, now);

    let first = read_whole(&log, QUEUE_TOPIC, 0).await.unwrap().unwrap();
    assert_eq!(
        (first.records.len(), first.next, first.end),
        (510, 510, 524)
    );
    let second = read_whole(&log, QUEUE_TOPIC, first.next)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.records.first().map(|r| r.offset), Some(510));
    assert_eq!((second.records.len(), second.next), (14, 524));
    assert!(read_whole(&log, QUEUE_TOPIC, 524).await.unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A new bridge told to skip the history folds it without a message, stores the log's end
/// as its position, and renders what follows from the folded state; asked again, it leaves
/// its position alone.
#[tokio::test]
async fn a_skipped_history_is_folded_not_published() {
    let dir = temp_dir("skip-history");
    let log = embedded_log(&dir);
    let (now, limits) = (Millis::now(), Limits::default());
    let id = Slug::nice();
    let def = definition(now);
    let mut task = queue::Task::defined(id, def.clone(), vec![]);
    let created = queue::create_task(None, None, &[], id, def, now, &limits).unwrap();
    created.iter().for_each(|e| task.apply(e));
    append(&log, vec![created.clone()], now);

    let state = BridgeState::open(&dir.join("bridge")).unwrap();
    let folded = skip_history(&log, &state).await.unwrap();
    assert_eq!(folded, created.len() as u64);
    assert_eq!(state.offset(QUEUE_TOPIC).unwrap(), created.len() as u64);
    assert!(!state.skipping().unwrap());
    assert_eq!(
        skip_history(&log, &state).await.unwrap(),
        0,
        "a position stays"
    );

    let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
    claimed.iter().for_each(|e| task.apply(e));
    let completed = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
    append(&log, vec![claimed, completed], now.plus(1));
    let read = read_whole(&log, QUEUE_TOPIC, state.offset(QUEUE_TOPIC).unwrap())
        .await
        .unwrap()
        .unwrap();
    let (_, out) = render(&state, None, QUEUE_TOPIC, &read.records).unwrap();
    let kinds: Vec<&str> = out
        .iter()
        .map(|o| o.message.exchange.rsplit('/').next().unwrap())
        .collect();
    // the group's count of unresolved tasks was folded too: its only task resolved it
    assert_eq!(
        kinds,
        ["task-running", "task-completed", "task-group-resolved"]
    );
    let completed = out[1].message.json();
    assert_eq!(completed["status"]["taskId"], id.to_string());
    assert_eq!(completed["status"]["runs"][0]["state"], "completed");
    // the folded definition's group and tags, not a blank task
    assert_eq!(
        completed["status"]["taskGroupId"],
        task.definition.task_group_id.to_string()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bridge that has a position publishes what it has not yet, whatever it is asked, and so
/// does one an earlier run created; one whose fold was cut short (a crash) finishes it.
#[tokio::test]
async fn only_a_new_or_unfinished_skip_folds() {
    let dir = temp_dir("skip-kept");
    let log = embedded_log(&dir);
    let now = Millis::now();
    let task = TaskId::nice();
    append(
        &log,
        (0..5).map(|_| vec![scheduled(task, now)]).collect(),
        now,
    );
    let positioned = BridgeState::open(&dir.join("positioned")).unwrap();
    positioned
        .db
        .put(offset_key(QUEUE_TOPIC), 1u64.to_be_bytes())
        .unwrap();
    assert_eq!(skip_history(&log, &positioned).await.unwrap(), 0);
    assert_eq!(positioned.offset(QUEUE_TOPIC).unwrap(), 1);

    let interrupted = BridgeState::open(&dir.join("interrupted")).unwrap();
    interrupted
        .db
        .put(offset_key(QUEUE_TOPIC), 2u64.to_be_bytes())
        .unwrap();
    interrupted.set_skipping(true).unwrap();
    assert_eq!(skip_history(&log, &interrupted).await.unwrap(), 3);
    assert_eq!(interrupted.offset(QUEUE_TOPIC).unwrap(), 5);
    assert!(!interrupted.skipping().unwrap());

    // made by an earlier run, which could not publish anything yet: it owes the broker the
    // whole log, and keeps it
    drop(BridgeState::open(&dir.join("earlier")).unwrap());
    let earlier = BridgeState::open(&dir.join("earlier")).unwrap();
    assert_eq!(skip_history(&log, &earlier).await.unwrap(), 0);
    assert_eq!(earlier.offset(QUEUE_TOPIC).unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The embedded log, with every other read coming back empty when `slow`, as a slow Kafka
/// broker's may.
struct EveryOtherEmpty {
    log: EmbeddedLog,
    slow: bool,
    reads: std::sync::atomic::AtomicUsize,
}

impl EventLog for EveryOtherEmpty {
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
        let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.slow && n.is_multiple_of(2) {
            return Ok(taskledger_core::log::Batch {
                records: vec![],
                next: offset,
            });
        }
        self.log.read(topic, partition, offset, max).await
    }
    async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.log.end_offset(topic, partition).await
    }
}

/// A history longer than a read is folded read after read, each bounded by the end the
/// topic had when the fold began, and stops exactly there; reads that come back empty short
/// of that end (a slow Kafka broker's) do not end it early (before, the fold stopped at the
/// first and the rest of the history went out to Pulse as new messages).
#[tokio::test]
async fn a_long_history_is_folded_to_the_end_it_began_with() {
    for slow in [false, true] {
        let dir = temp_dir(if slow { "skip-slow" } else { "skip-ends" });
        let log = EveryOtherEmpty {
            log: embedded_log(&dir),
            slow,
            reads: 0.into(),
        };
        let now = Millis::now();
        let task = TaskId::nice();
        append(
            &log.log,
            (0..1000).map(|_| vec![scheduled(task, now)]).collect(),
            now,
        );
        let state = BridgeState::open(&dir.join("bridge")).unwrap();
        let folded = skip_history(&log, &state).await.unwrap();
        assert_eq!(folded, 1000, "slow: {slow}");
        assert_eq!(state.offset(QUEUE_TOPIC).unwrap(), 1000);
        assert!(!state.skipping().unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
