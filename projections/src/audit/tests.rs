//! Reading the whole log through a slow one: a Kafka consumer's read may come back empty
//! before the partition's end, and no history, tail or rebuild may take that for the end.

use super::*;
use crate::engine::tests::{start, Shaped};
use crate::engine::QueueCommand;
use crate::queue_view::tests::definition;
use crate::store;
use std::sync::atomic::Ordering::SeqCst;
use taskledger_core::envelope::Actor;
use taskledger_core::ids::Slug;
use taskledger_core::log::Record;
use taskledger_core::time::Millis;

/// `2 * pairs` records, alternately of streams `a` and `b`, in `pairs` appends.
async fn records(log: &EmbeddedLog, pairs: u8) {
    for pair in 0..pairs {
        let records = ["a", "b"]
            .iter()
            .map(|stream| Record {
                key: stream.to_string(),
                event_type: "T",
                event_id: format!("{stream}{pair}"),
                value: vec![pair],
            })
            .collect();
        log.append(QUEUE_TOPIC, 0, records).await.unwrap();
    }
}

#[tokio::test]
async fn a_history_read_through_a_slow_log_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::new(store::open(dir.path()).unwrap()));
    records(&log, 100).await;
    let slow = Shaped::new(log.clone());

    slow.empty.store(3, SeqCst);
    let a = scan_stream(&slow, QUEUE_TOPIC, "a").await.unwrap();
    assert_eq!(slow.empty.load(SeqCst), 0, "the short reads were all taken");
    let offsets: Vec<u64> = a.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..200).step_by(2).collect::<Vec<u64>>());
    let values: Vec<u8> = a.iter().map(|r| r.value[0]).collect();
    assert_eq!(values, (0..100).collect::<Vec<u8>>());

    // records far apart (more than NEARBY) take one read each, and each read may come back
    // short
    let far = [1, 199];
    assert!(far[1] - far[0] > NEARBY);
    slow.empty.store(2, SeqCst);
    let b = records_at(&slow, QUEUE_TOPIC, &far).await.unwrap();
    assert_eq!(slow.empty.load(SeqCst), 0);
    assert_eq!(b.iter().map(|r| r.offset).collect::<Vec<_>>(), far);
    assert!(b.iter().all(|r| r.key == "b"));
}

#[tokio::test]
async fn a_log_that_never_moves_is_an_error_not_an_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::new(store::open(dir.path()).unwrap()));
    records(&log, 5).await;
    let stuck = Shaped::new(log.clone());
    stuck.empty.store(usize::MAX, SeqCst);
    let patience = Duration::from_millis(150);

    let started = Instant::now();
    let read = read_onward(&stuck, QUEUE_TOPIC, 0, 4, 100, 10, patience).await;
    assert!(started.elapsed() >= patience, "it waited its patience");
    match read {
        Err(LogError::Unavailable(m)) => assert!(m.contains("offset 4"), "{m}"),
        other => panic!("a stuck read is an error, got {other:?}"),
    }
    // at the end there is nothing to wait for: an empty batch at once
    let at_end = read_onward(&stuck, QUEUE_TOPIC, 0, 10, 100, 10, patience)
        .await
        .unwrap();
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.next, 10);

    // one read that moves is enough: what it brought
    stuck.empty.store(1, SeqCst);
    let moved = read_onward(&stuck, QUEUE_TOPIC, 0, 4, 3, 10, patience)
        .await
        .unwrap();
    assert_eq!(moved.records.len(), 3);
    assert_eq!(moved.next, 7);
}

/// A rebuild through reads that often come back empty folds every event the live projection
/// consumed and ends equal to it (not short of it, which `verify` would report as a
/// difference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_through_a_slow_log_equals_the_live_projection() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log, engine) = start(&dir.path().join("live")).await;
    for _ in 0..20 {
        let create = QueueCommand::CreateTask {
            task_id: Slug::nice(),
            definition: definition(Millis::now(), Slug::nice()),
        };
        engine.execute(Actor::system("test"), create).await.unwrap();
    }
    let end = EventLog::end_offset(&*log, QUEUE_TOPIC, 0).await.unwrap();
    // every other read comes back empty; the others bring at most seven records
    let slow = Shaped {
        alternate: true,
        per_read: 7,
        ..Shaped::new(log.clone())
    };
    let scratch = store::open(&dir.path().join("scratch")).unwrap();
    let report = replay_from(&slow, &db, &scratch, "queue", true, &mut |_, _| {})
        .await
        .unwrap();
    // each read that moved brought at most seven events, after one that came back empty
    assert!(slow.calls.load(SeqCst) as u64 >= 2 * end.div_ceil(7));
    assert_eq!(report.events, end, "every event folded");
    assert!(report.difference.is_none(), "{:?}", report.difference);
    assert_eq!(report.live_digest.as_ref(), Some(&report.rebuilt_digest));
}
