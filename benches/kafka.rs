//! The Kafka log, in one run: event appends through `KafkaLog` (one transaction per batch of
//! 64 events, as the engine's group commit appends them) against rdkafka's own raw produce rate
//! of the same bytes (idempotent, acks=all, pipelined, no transactions), and the rate at which
//! a fresh queue projection catches up from the topic.
//!
//! `KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo bench --bench kafka` (env KAFKA_BENCH_EVENTS, default
//! 100000). The HTTP lifecycle on Kafka vs the embedded log is `LOADGEN_KAFKA=... --bench
//! loadgen`.

mod common;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::{Duration, Instant};
use taskledger_core::codec;
use taskledger_core::log::{EventLog, Record, QUEUE_TOPIC};
use taskledger_core::time::Millis;
use taskledger_projections::{engine, store, KafkaConfig, KafkaLog, QueueView};

fn records(target: usize) -> Vec<Record> {
    let now = Millis::now();
    let mut out = Vec::with_capacity(target);
    while out.len() < target {
        // each lifecycle is a fresh task: its streams start at sequence 1
        let mut seqs = std::collections::HashMap::new();
        for e in common::lifecycle_events(now) {
            let seq = seqs.entry(e.stream().id()).or_insert(0u64);
            *seq += 1;
            let env = common::envelope(e, *seq, now);
            out.push(Record {
                key: env.stream_id.clone(),
                event_type: env.payload.type_name(),
                event_id: env.event_id.to_string(),
                value: codec::encode(&env).unwrap(),
            });
        }
    }
    out
}

async fn raw_produce(brokers: &str, topic: &str, records: &[Record]) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .unwrap();
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        loop {
            let rec = FutureRecord::to(topic)
                .partition(0)
                .key(r.key.as_str())
                .payload(r.value.as_slice());
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                // the local queue is full: let deliveries drain
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    records.len() as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let brokers = std::env::var("KAFKA_BOOTSTRAP")
        .expect("set KAFKA_BOOTSTRAP=host:port (./scripts/test.sh shows how to start noida-db)");
    let events: usize = std::env::var("KAFKA_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prefix = format!("bench-{}.", std::process::id());
        let config = KafkaConfig {
            topic_prefix: prefix.clone(),
            transactions: std::env::var("KAFKA_BENCH_TRANSACTIONS").as_deref() != Ok("false"),
            ..KafkaConfig::new(&brokers)
        };
        let log = KafkaLog::connect(config, &[QUEUE_TOPIC, "taskledger.raw"])
            .await
            .unwrap();
        let all = records(events);

        let raw = raw_produce(&brokers, &log.kafka_topic("taskledger.raw"), &all).await;

        let started = Instant::now();
        for chunk in all.chunks(64) {
            log.append(QUEUE_TOPIC, 0, chunk.to_vec()).await.unwrap();
        }
        let appended = all.len() as f64 / started.elapsed().as_secs_f64();

        let dir = std::env::temp_dir().join(format!("taskledger-bench-kafka-{}", std::process::id()));
        let db = store::open(&dir).unwrap();
        let view = QueueView::new(db.clone()).unwrap();
        // a separate log handle: its epoch index starts empty, as on a fresh node
        let reader = KafkaLog::connect(
            KafkaConfig {
                topic_prefix: prefix,
                ..KafkaConfig::new(&brokers)
            },
            &[QUEUE_TOPIC],
        )
        .await
        .unwrap();
        let started = Instant::now();
        engine::catch_up(&view, &reader, None).await.unwrap();
        let catch_up = all.len() as f64 / started.elapsed().as_secs_f64();
        drop(view);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);

        println!("kafka bench: {} events ({} bytes each on average) at {brokers}", all.len(),
            all.iter().map(|r| r.value.len()).sum::<usize>() / all.len());
        println!();
        println!("| measure | events/s |");
        println!("|---|---|");
        println!("| rdkafka raw produce (idempotent, acks=all, pipelined) | {raw:.0} |");
        println!("| KafkaLog::append, 64-event transactions, one at a time | {appended:.0} |");
        println!("| queue projection catch-up from the topic (read, epoch check, fold) | {catch_up:.0} |");
        println!();
        println!("ratio (this run): KafkaLog append / raw produce = {:.3}", appended / raw);
    });
}
