//! The Pulse bridge against the real RabbitMQ (127.0.0.1:5672), in one run: a log of
//! `PULSE_EVENTS` queue events (default 20,000; full task lifecycles) is drained by the bridge
//! (publish with confirms, offsets stored after confirms), on one channel and then, from a
//! fresh state, on `PULSE_CHANNELS` (default 4); then the very messages it published (bodies
//! and properties) are re-published raw with lapin in batches of the same size, on one confirm
//! channel and on as many. Reports messages/s for each and the ratios.

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::sync::Arc;
use std::time::{Duration, Instant};
use taskledger_bridge::{BridgeState, BridgeStats};
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_projections::{store, EmbeddedLog};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::main]
async fn main() {
    let target: u64 = std::env::var("PULSE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let root = std::env::temp_dir().join(format!("taskledger-bench-pulse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let db = store::open(&root.join("db")).unwrap();
    let log = Arc::new(EmbeddedLog::new(db));
    // PULSE_PAYLOAD_BYTES: padding in every task's payload (default 0: a small CI task's)
    let padding: usize = std::env::var("PULSE_PAYLOAD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let written = common::write_padded_lifecycles(&log, target, 5, padding);
    println!("{written} queue events of full task lifecycles, payloads padded by {padding} bytes");
    // a consumer that keeps every published body
    let conn = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = sink(&ch).await;

    let (bridge_one, published) = bridge_phase(&log, &root, written, 1).await;
    let mut bodies: Vec<Published> = Vec::new();
    while (bodies.len() as u64) < published {
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(Some(Ok(d))) => bodies.push((
                d.exchange.to_string(),
                d.routing_key.to_string(),
                d.data,
                d.properties,
            )),
            _ => break,
        }
    }
    // PULSE_CHANNELS: the channels of the second phase (default 4)
    let many: usize = std::env::var("PULSE_CHANNELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
        .clamp(1, 16);
    let (bridge_four, _) = bridge_phase(&log, &root, written, many).await;
    // the very messages: bodies and properties (message id, CC routes, headers)
    let bodies = Arc::new(bodies);
    let raw_one = raw_publish(&conn, &bodies, 1).await;
    let raw_four = raw_publish(&conn, &bodies, many).await;
    println!(
        "raw lapin publish with confirms, the same {} messages (bodies and properties), batches of 512: {raw_one:.0} msg/s on 1 channel, {raw_four:.0} msg/s on {many} channels",
        bodies.len()
    );
    println!(
        "ratio bridge / raw: {:.2} on 1 channel, {:.2} on {many} channels",
        bridge_one / raw_one,
        bridge_four / raw_four
    );
    live_latency(&conn, &root).await;
    let _ = std::fs::remove_dir_all(&root);
}

/// The bridge on `channels` channels draining `log` (its `written` queue events) from a
/// fresh state; returns messages/s (connecting included) and how many it published.
async fn bridge_phase(
    log: &Arc<EmbeddedLog>,
    root: &std::path::Path,
    written: u64,
    channels: usize,
) -> (f64, u64) {
    let state = Arc::new(BridgeState::open(&root.join(format!("bridge-{channels}"))).unwrap());
    let stats = Arc::new(BridgeStats::default());
    let started = Instant::now();
    let cpu = common::process_cpu_seconds();
    let bridge = tokio::spawn(taskledger_bridge::run(
        log.clone(),
        None,
        state.clone(),
        AMQP.into(),
        channels,
        None,
        stats.clone(),
        false,
    ));
    while state.offset(QUEUE_TOPIC).unwrap() < written {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    bridge.abort();
    let published = stats.published.load(std::sync::atomic::Ordering::Relaxed);
    let rate = published as f64 / secs;
    // this process's CPU: the bridge, and the bench's consumer taking the sink's deliveries
    let per_message = match (cpu, common::process_cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) * 1e6 / published.max(1) as f64),
        _ => "?".into(),
    };
    println!("bridge on {channels} channel(s): {written} events -> {published} messages confirmed in {secs:.2} s = {rate:.0} msg/s ({per_message} µs of this process's CPU per message)");
    (rate, published)
}

/// One published message: exchange, routing key, body, properties.
type Published = (String, String, Vec<u8>, lapin::BasicProperties);

/// Publishes `messages` with confirms over `n` channels (a contiguous share each, batches of
/// 512 awaited per channel, the channels in parallel); returns messages/s.
async fn raw_publish(conn: &Connection, messages: &Arc<Vec<Published>>, n: usize) -> f64 {
    let mut channels = Vec::new();
    for _ in 0..n {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channels.push(ch);
    }
    let per = messages.len().div_ceil(n);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, ch) in channels.into_iter().enumerate() {
        let messages = messages.clone();
        tasks.push(tokio::spawn(async move {
            let end = ((i + 1) * per).min(messages.len());
            for chunk in messages[(i * per).min(end)..end].chunks(512) {
                // handed to the connection together, as the bridge does
                let publishes = chunk.iter().map(|(exchange, key, body, props)| {
                    ch.basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        props.clone(),
                    )
                });
                let confirms = taskledger_bridge::publish_in_order(publishes)
                    .await
                    .unwrap();
                for c in confirms {
                    assert!(c.await.unwrap().is_ack());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    messages.len() as f64 / started.elapsed().as_secs_f64()
}

/// Event-to-delivery latency while events arrive at a steady pace (the bridge woken by each
/// append, as `serve` wakes it on each commit): the consumer subtracts each message's
/// `taskledger-time` header from its arrival time.
async fn live_latency(conn: &Connection, root: &std::path::Path) {
    let lifecycles: usize = std::env::var("PULSE_LIVE_LIFECYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let log = Arc::new(EmbeddedLog::new(
        store::open(&root.join("live-db")).unwrap(),
    ));
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = sink(&ch).await;
    let state = Arc::new(BridgeState::open(&root.join("live-bridge")).unwrap());
    let (wake_tx, wake_rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(taskledger_bridge::run(
        log.clone(),
        None,
        state,
        AMQP.into(),
        1,
        Some(wake_rx),
        Arc::new(BridgeStats::default()),
        false,
    ));
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..lifecycles {
                n += common::append_lifecycle_now(&log);
                wake_tx.send_replace(n);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // task-defined, -pending, -running, -completed and (each task is its own group)
    // task-group-resolved per lifecycle
    let expected = lifecycles * 5;
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await
        else {
            break;
        };
        let now = taskledger_core::time::Millis::now().0;
        let sent = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("taskledger-time").cloned());
        if let Some(lapin::types::AMQPValue::LongLongInt(t)) = sent {
            latencies.push((now - t) as f64);
        }
    }
    writer.await.unwrap();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "live: {lifecycles} lifecycles paced 2 ms apart, {} messages: event-to-delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

/// An exclusive queue bound to every queue exchange (declared as the bridge declares them)
/// with `primary.#`, consumed without acks.
async fn sink(ch: &lapin::Channel) -> lapin::Consumer {
    let sink = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for name in taskledger_bridge::messages::QUEUE_EXCHANGES {
        let exchange = format!(
            "{}{name}",
            taskledger_bridge::messages::QUEUE_EXCHANGE_PREFIX
        );
        ch.exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            sink.name().clone(),
            exchange.as_str().into(),
            "primary.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_consume(
        sink.name().clone(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}
