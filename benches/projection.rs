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

criterion_group!(benches, bench);
criterion_main!(benches);
