//! `decide` + `apply` over a whole task lifecycle, no I/O.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use taskledger_core::ids::Slug;
use taskledger_core::queue::{self, Limits, ReasonResolved, Task};
use taskledger_core::time::Millis;

fn bench(c: &mut Criterion) {
    let now = Millis::now();
    let limits = Limits::default();
    let mut g = c.benchmark_group("decide_apply");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lifecycle_create_claim_complete", |b| {
        b.iter_batched(
            || (Slug::nice(), common::definition(now)),
            |(id, def)| {
                let events =
                    queue::create_task(None, None, &[], id, def.clone(), now, &limits).unwrap();
                let mut task = Task::defined(id, def, vec![]);
                events.iter().for_each(|e| task.apply(e));
                let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
                claimed.iter().for_each(|e| task.apply(e));
                let done = queue::report(&task, 0, ReasonResolved::Completed, now).unwrap();
                done.iter().for_each(|e| task.apply(e));
                task
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
