//! Folding batches of queue events into the RocksDB projection (one WriteBatch per batch).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use taskledger_core::time::Millis;
use taskledger_projections::{store, QueueView};

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("taskledger-bench-proj-{}", std::process::id()));
    let db = store::open(&dir).unwrap();
    let view = QueueView::new(db).unwrap();
    let now = Millis::now();
    let tasks_per_batch = 100;
    let mut offset = 0u64;
    let mut g = c.benchmark_group("projection");
    let events_per_batch = common::lifecycle_events(now).len() * tasks_per_batch;
    g.throughput(Throughput::Elements(events_per_batch as u64));
    g.bench_function("apply_batch_of_100_lifecycles", |b| {
        b.iter_batched(
            || {
                let mut envs = Vec::new();
                for _ in 0..tasks_per_batch {
                    for (i, e) in common::lifecycle_events(now).into_iter().enumerate() {
                        envs.push(common::envelope(e, i as u64 + 1, now));
                    }
                }
                // per-stream sequences: group and task streams each start at 1
                let mut seqs = std::collections::HashMap::new();
                for e in envs.iter_mut() {
                    let s = seqs.entry(e.stream_id.clone()).or_insert(0u64);
                    *s += 1;
                    e.sequence = *s;
                }
                envs
            },
            |envs| {
                let offsets: Vec<u64> = (offset..offset + envs.len() as u64).collect();
                offset += envs.len() as u64;
                view.apply("bench", "bench", 0, &offsets, offset, &envs)
                    .unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(view);
    let _ = std::fs::remove_dir_all(&dir);
}

/// pendingTasks of a queue holding 100,000 pending runs: counted in place (`count`) against
/// listing every entry and taking the length (`scan`, which counts used before).
fn count_pending(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("taskledger-bench-count-{}", std::process::id()));
    let view = QueueView::new(store::open(&dir).unwrap()).unwrap();
    let now = Millis::now();
    let limits = taskledger_core::queue::Limits::default();
    let (mut offset, mut envs) = (0u64, Vec::new());
    for _ in 0..100_000 {
        let id = taskledger_core::ids::Slug::nice();
        let def = common::definition(now);
        let events =
            taskledger_core::queue::create_task(None, None, &[], id, def, now, &limits).unwrap();
        for (i, e) in events.into_iter().enumerate() {
            envs.push(common::envelope(e, i as u64 + 1, now));
        }
        if envs.len() >= 3_000 {
            let offsets: Vec<u64> = (offset..offset + envs.len() as u64).collect();
            offset += envs.len() as u64;
            view.apply("bench", "bench", 0, &offsets, offset, &envs)
                .unwrap();
            envs.clear();
        }
    }
    let offsets: Vec<u64> = (offset..offset + envs.len() as u64).collect();
    offset += envs.len() as u64;
    view.apply("bench", "bench", 0, &offsets, offset, &envs)
        .unwrap();
    let queue = "bench-prov/bench-wt";
    let pending = taskledger_projections::keys::CF_PENDING;
    assert_eq!(view.count(pending, queue).unwrap(), 100_000);
    let mut g = c.benchmark_group("pending_count_of_100k");
    g.bench_function("count_in_place", |b| {
        b.iter(|| view.count(pending, queue).unwrap())
    });
    g.bench_function("scan_then_len", |b| {
        b.iter(|| {
            let prefix = taskledger_projections::keys::queue_prefix(queue);
            view.scan(pending, &prefix, None, usize::MAX).unwrap().len()
        })
    });
    g.finish();
    drop(view);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench, count_pending);
criterion_main!(benches);
