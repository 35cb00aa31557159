//! Replay and audit rates on the embedded log, in one run: a log of `REPLAY_EVENTS` queue
//! events (default 1,000,000; full task lifecycles) is written, then three passes are timed
//! and reported as events/s and as ratios to the raw read:
//! - the raw sequential read of the log (the ceiling),
//! - `audit::replay` rebuilding the queue projection from offset zero,
//! - `audit::verify_chain` walking the hash chain.

mod common;

/// The allocator the `taskledger` binary (and so `taskledger replay`) runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_projections::engine::VIEW_CONSUMER;
use taskledger_projections::{audit, keys, store, EmbeddedLog};

fn main() {
    let target: u64 = std::env::var("REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = std::env::temp_dir().join(format!("taskledger-bench-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let live = store::open(&root.join("live")).unwrap();
    let log = EmbeddedLog::new(live.clone());
    let started = Instant::now();
    let written = common::write_lifecycles(&log, target, 5000);
    // the live projection "has consumed" the whole log, so replay rebuilds all of it
    live.put_cf(
        live.cf_handle(keys::CF_META).unwrap(),
        keys::consumer_offset(VIEW_CONSUMER, QUEUE_TOPIC, 0),
        written.to_be_bytes(),
    )
    .unwrap();
    println!(
        "wrote {written} events in {:.1} s ({:.0} events/s, synced appends of 5,000)",
        started.elapsed().as_secs_f64(),
        written as f64 / started.elapsed().as_secs_f64()
    );
    // a log is replayed long after it was written: let RocksDB finish flushing and compacting
    // what was just written, so its background threads do not share the two cores with the
    // reads and the replay measured below
    let settle = Instant::now();
    let settled = settle_background_work(&live);
    println!(
        "waited {:.1} s for the log's flushes and compactions to finish{}",
        settle.elapsed().as_secs_f64(),
        if settled {
            ""
        } else {
            " (gave up after 120 s)"
        }
    );

    let t = Instant::now();
    let n = audit::read_all(&live).unwrap();
    let raw = n as f64 / t.elapsed().as_secs_f64();
    println!("raw sequential read: {n} records, {raw:.0} records/s");

    let t = Instant::now();
    let chain = audit::verify_chain(&live).unwrap();
    assert!(chain.broken.is_none());
    let verify = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "audit verify: {verify:.0} events/s (ratio to raw read {:.2})",
        verify / raw
    );

    let scratch = store::open(&root.join("rebuilt")).unwrap();
    let cpu_before = common::process_cpu_seconds();
    let report = audit::replay(&live, &scratch, "queue", false, &mut |_, _| {}).unwrap();
    let cpu = cpu_before
        .zip(common::process_cpu_seconds())
        .map(|(a, b)| b - a);
    let rate = report.events as f64 / report.seconds;
    println!(
        "replay (queue projection): {} events in {:.1} s, {rate:.0} events/s (ratio to raw read {:.3})",
        report.events,
        report.seconds,
        rate / raw
    );
    if let Some(cpu) = cpu {
        println!(
            "replay CPU: {cpu:.1} s ({:.2} µs per event, {:.2} cores busy on average)",
            cpu * 1e6 / report.events as f64,
            cpu / report.seconds
        );
    }
    drop((log, live, scratch));
    let _ = std::fs::remove_dir_all(&root);
}

/// Waits until no flush or compaction runs or is pending in `db` (at most 120 s); false if
/// some were still going then.
fn settle_background_work(db: &rocksdb::DB) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let busy = || {
        let int = |name: &str| db.property_int_value(name).ok().flatten().unwrap_or(0);
        let pending = keys::ALL_CFS.iter().any(|name| {
            let Some(cf) = db.cf_handle(name) else {
                return false;
            };
            let int_cf = |p: &str| db.property_int_value_cf(cf, p).ok().flatten().unwrap_or(0);
            int_cf("rocksdb.compaction-pending") > 0
                || int_cf("rocksdb.mem-table-flush-pending") > 0
        });
        pending
            || int("rocksdb.num-running-compactions") > 0
            || int("rocksdb.num-running-flushes") > 0
    };
    while busy() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}
