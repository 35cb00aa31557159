//! Encode and decode of queue envelopes (version byte + postcard).

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::queue::QueueEvent;
use taskledger_core::time::Millis;

fn bench(c: &mut Criterion) {
    let now = Millis::now();
    let envs: Vec<_> = common::lifecycle_events(now)
        .into_iter()
        .map(|e| common::envelope(e, 1, now))
        .collect();
    let bytes: Vec<Vec<u8>> = envs.iter().map(|e| codec::encode(e).unwrap()).collect();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(envs.len() as u64));
    g.bench_function("encode_lifecycle_envelopes", |b| {
        b.iter(|| {
            envs.iter()
                .map(|e| codec::encode(e).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("decode_lifecycle_envelopes", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| {
                bytes
                    .iter()
                    .map(|b| codec::decode::<Envelope<QueueEvent>>(b).unwrap().sequence)
                    .sum::<u64>()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
