use super::*;

fn owner(epoch: u64, writer: &str) -> Owner {
    Owner {
        epoch,
        writer: writer.into(),
    }
}

#[test]
fn events_count_only_under_the_owner_announced_before_them() {
    let mut ix = EpochIndex::default();
    let a = owner(1, "a");
    let b = owner(2, "b");
    assert!(
        !ix.observe(0, &Seen::Event(Some(a.clone())), None),
        "no owner yet"
    );
    assert!(!ix.observe(1, &Seen::Marker(a.clone()), None));
    assert!(ix.observe(2, &Seen::Event(Some(a.clone())), None));
    assert!(!ix.observe(3, &Seen::Event(None), None), "unstamped");
    assert!(!ix.observe(4, &Seen::Marker(b.clone()), None));
    assert!(
        !ix.observe(5, &Seen::Event(Some(a.clone())), None),
        "a was superseded"
    );
    assert!(ix.observe(6, &Seen::Event(Some(b.clone())), None));
    // a marker that does not raise the epoch takes no effect
    assert!(!ix.observe(7, &Seen::Marker(owner(2, "c")), None));
    assert!(!ix.observe(8, &Seen::Event(Some(owner(2, "c"))), None));
    assert!(ix.observe(9, &Seen::Event(Some(b.clone())), None));
    // re-observing earlier positions gives the same verdicts
    assert!(ix.observe(2, &Seen::Event(Some(a.clone())), None));
    assert!(!ix.observe(5, &Seen::Event(Some(a)), None));
    assert_eq!(ix.max_epoch(), 2);
    assert_eq!(ix.scanned(), 10);
}

/// The node a marker announced is found by its epoch, also in a kept copy of the index.
#[test]
fn announced_nodes_are_kept_with_the_index() {
    let mut ix = EpochIndex::default();
    ix.observe(0, &Seen::Marker(owner(1, "a")), None);
    ix.note_node(0, 1, "http://a:8080".into());
    // a second announcement of the same epoch takes no effect, nor does its node
    ix.observe(1, &Seen::Marker(owner(1, "b")), None);
    ix.note_node(1, 1, "http://b:8080".into());
    ix.observe(2, &Seen::Event(Some(owner(1, "a"))), Some([7; 32]));
    let kept: EpochIndex = postcard::from_bytes(&postcard::to_stdvec(&ix).unwrap()).unwrap();
    assert_eq!(kept.node(1), Some("http://a:8080"));
    assert_eq!(kept.node(2), None);
    assert_eq!(kept.last_link(), Some((2, [7; 32])));
    assert_eq!(kept.scanned(), 3);
}

/// What lands in a partition: writers take it over (announcing the epoch they believe
/// comes next, possibly stale) and append, superseded ones included.
#[derive(Clone, Debug)]
enum Step {
    /// Writer `w` announces max-known-epoch + 1, where its knowledge lags by `stale`.
    TakeOver { w: u8, stale: u8 },
    /// Writer `w` appends under the last epoch it announced.
    Append { w: u8 },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0u8..4, 0u8..2).prop_map(|(w, stale)| Step::TakeOver { w, stale }),
        (0u8..4).prop_map(|w| Step::Append { w }),
        (0u8..4).prop_map(|w| Step::Append { w }),
    ]
}

fn build(steps: &[Step]) -> Vec<Seen> {
    let mut log = Vec::new();
    let mut announced: HashMap<u8, Owner> = HashMap::new();
    let mut max = 0u64;
    for s in steps {
        match *s {
            Step::TakeOver { w, stale } => {
                let epoch = max.saturating_sub(stale as u64) + 1;
                max = max.max(epoch);
                let o = owner(epoch, &format!("w{w}"));
                announced.insert(w, o.clone());
                log.push(Seen::Marker(o));
            }
            Step::Append { w } => log.push(Seen::Event(announced.get(&w).cloned())),
        }
    }
    log
}

proptest::proptest! {
    /// Readers agree whatever they read first; a valid event's writer owns the partition at
    /// that point (no other writer's marker took effect since its own); and an owner's
    /// appends count until someone takes over.
    #[test]
    fn epochs_fence_superseded_writers(steps in proptest::collection::vec(step(), 1..60), restart in 0usize..60, reread in 0usize..60) {
        let log = build(&steps);
        let mut one = EpochIndex::default();
        let verdicts: Vec<bool> = log.iter().enumerate().map(|(i, s)| one.observe(i as u64, s, None)).collect();

        // a second reader that re-reads from an earlier point gives the same verdicts
        let restart = restart.min(log.len());
        let mut two = EpochIndex::default();
        for (i, s) in log.iter().enumerate() {
            two.observe(i as u64, s, None);
        }
        for (i, s) in log.iter().enumerate().skip(restart) {
            proptest::prop_assert_eq!(two.observe(i as u64, s, None), verdicts[i]);
        }

        // a reader resuming from a copy of its index kept at any point (as a restart does)
        // gives the same verdicts and ends equal to one that observed everything, its last
        // chain link the last valid event's
        // (markers announce a node each, events claim a link; re-reading an earlier stretch
        // changes nothing)
        let link_of = |i: usize| Some([i as u8; 32]);
        let see = |ix: &mut EpochIndex, i: usize, s: &Seen| {
            let valid = ix.observe(i as u64, s, link_of(i));
            if let Seen::Marker(o) = s {
                ix.note_node(i as u64, o.epoch, format!("node-{i}"));
            }
            valid
        };
        let mut before = EpochIndex::default();
        for (i, s) in log.iter().enumerate().take(restart) {
            see(&mut before, i, s);
        }
        let kept = postcard::to_stdvec(&before).unwrap();
        let mut resumed: EpochIndex = postcard::from_bytes(&kept).unwrap();
        for (i, s) in log.iter().enumerate().skip(restart) {
            proptest::prop_assert_eq!(see(&mut resumed, i, s), verdicts[i]);
        }
        for (i, s) in log.iter().enumerate().skip(reread.min(log.len())) {
            proptest::prop_assert_eq!(see(&mut resumed, i, s), verdicts[i]);
        }
        let mut whole = EpochIndex::default();
        for (i, s) in log.iter().enumerate() {
            see(&mut whole, i, s);
        }
        proptest::prop_assert_eq!(&resumed, &whole);
        // the node in force is the one the last effective marker announced
        let last_effective = (0..log.len()).rev().find(|&i| {
            matches!(&log[i], Seen::Marker(o) if whole.owner_before(i as u64 + 1) == Some(o))
                && whole.owner_before(i as u64).is_none_or(|p| p.epoch < whole.owner_before(i as u64 + 1).unwrap().epoch)
        });
        let owner_now = whole.owner_before(u64::MAX).map(|o| o.epoch);
        proptest::prop_assert_eq!(
            owner_now.and_then(|e| whole.node(e)).map(str::to_string),
            last_effective.map(|i| format!("node-{i}"))
        );
        let last_valid = verdicts.iter().rposition(|v| *v);
        proptest::prop_assert_eq!(whole.last_link(), last_valid.map(|i| (i as u64, [i as u8; 32])));

        let mut owner_now: Option<Owner> = None;
        let mut max = 0;
        for (i, s) in log.iter().enumerate() {
            match s {
                Seen::Marker(o) => {
                    if o.epoch > max {
                        max = o.epoch;
                        owner_now = Some(o.clone());
                    }
                }
                Seen::Event(stamp) => {
                    let by_owner = stamp.is_some() && stamp == &owner_now;
                    proptest::prop_assert_eq!(verdicts[i], by_owner, "position {}", i);
                }
            }
        }
    }
}

/// The copy of a partition's index `serve` keeps: written after a read only once a second
/// (or every `KEEP_EVERY` positions), at once on a graceful stop, and what a later process
/// starts from. No broker is needed: nothing here reads a partition (the check of the copies
/// against the broker, `check_kept_indexes`, is the e2e tests').
#[tokio::test]
async fn index_copies_are_kept_throttled_forced_on_stop_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::store::open(dir.path()).unwrap();
    let config = KafkaConfig {
        timeout: Duration::from_millis(100),
        ..KafkaConfig::new("127.0.0.1:1")
    };
    let kept = |db: &rocksdb::DB| -> Option<EpochIndex> {
        let meta = crate::store::cf(db, keys::CF_META).unwrap();
        let bytes = db
            .get_cf(meta, keys::kafka_epochs("taskledger.queue", 0))
            .unwrap()?;
        assert_eq!(bytes[0], INDEX_FORMAT);
        Some(postcard::from_bytes(&bytes[1..]).unwrap())
    };
    let log = KafkaLog::new(config.clone()).unwrap();
    log.keep_indexes_in(db.clone());
    let inner = &log.inner;
    let see = |from: u64, to: u64| {
        inner.with_index("taskledger.queue", 0, |ix| {
            for offset in from..to {
                ix.observe(offset, &Seen::Event(None), None);
            }
        })
    };
    see(0, 10);
    inner.keep_index("taskledger.queue", 0, false);
    assert_eq!(
        kept(&db).map(|ix| ix.scanned()),
        Some(10),
        "the first copy at once"
    );
    see(10, 20);
    inner.keep_index("taskledger.queue", 0, false);
    assert_eq!(
        kept(&db).map(|ix| ix.scanned()),
        Some(10),
        "not again within a second"
    );
    log.keep_all_indexes().await;
    assert_eq!(
        kept(&db).map(|ix| ix.scanned()),
        Some(20),
        "at once on a stop"
    );

    // a later process starts from the copy, not from offset 0
    let later = KafkaLog::new(config).unwrap();
    later.keep_indexes_in(db.clone());
    let resumed = later
        .inner
        .with_index("taskledger.queue", 0, |ix| ix.scanned());
    assert_eq!(resumed, 20);
}
