//! Inputs shared by the criterion benchmarks: a realistic task definition and its events.

#![allow(dead_code)]

use taskledger_core::envelope::{Actor, Envelope, EventId};
use taskledger_core::ids::Slug;
use taskledger_core::queue::{
    self, JsonText, Limits, Metadata, Priority, QueueEvent, Requires, TaskDefinition,
};
use taskledger_core::time::{Millis, HOUR};

pub fn definition(now: Millis) -> TaskDefinition {
    let id = Slug::nice();
    TaskDefinition {
        task_queue_id: "bench-prov/bench-wt".parse().unwrap(),
        scheduler_id: "-".into(),
        project_id: "none".into(),
        task_group_id: id,
        dependencies: vec![],
        requires: Requires::AllCompleted,
        routes: vec!["index.project.bench.latest".into()],
        priority: Priority::Lowest,
        retries: 5,
        created: now,
        deadline: now.plus(HOUR),
        expires: now.plus(48 * HOUR),
        scopes: vec!["secrets:get:project/bench".into()],
        payload: JsonText(r#"{"command":["/bin/bash","-c","echo hello"],"maxRunTime":600,"image":"ubuntu:24.04"}"#.into()),
        metadata: Metadata {
            name: "bench task".into(),
            description: "a task shaped like a real CI task".into(),
            owner: "bench@example.com".into(),
            source: "https://example.com/bench".into(),
        },
        tags: JsonText("{}".into()),
        extra: JsonText("{}".into()),
    }
}

/// `definition(now)` whose payload also carries `padding` bytes of environment, as real
/// payloads (commands, environment, mounts) of a few kilobytes do.
pub fn padded_definition(now: Millis, padding: usize) -> TaskDefinition {
    let mut def = definition(now);
    if padding > 0 {
        let env = "x".repeat(padding);
        def.payload = JsonText(format!(
            r#"{{"command":["/bin/bash","-c","echo hello"],"env":{{"PAD":"{env}"}},"maxRunTime":600,"image":"ubuntu:24.04"}}"#
        ));
    }
    def
}

/// The events of one full lifecycle: define (+group, +pending), claim, complete.
pub fn lifecycle_events(now: Millis) -> Vec<QueueEvent> {
    padded_lifecycle_events(now, 0)
}

/// `lifecycle_events` of a task defined by `padded_definition(now, padding)`.
pub fn padded_lifecycle_events(now: Millis, padding: usize) -> Vec<QueueEvent> {
    let id = Slug::nice();
    let limits = Limits::default();
    let def = padded_definition(now, padding);
    let mut events = queue::create_task(None, None, &[], id, def.clone(), now, &limits).unwrap();
    let mut task = queue::Task::defined(id, def, vec![]);
    for e in &events {
        task.apply(e);
    }
    let claimed = queue::claim_run(&task, 0, "g", "w", now, &limits).unwrap();
    claimed.iter().for_each(|e| task.apply(e));
    let done = queue::report(&task, 0, queue::ReasonResolved::Completed, now).unwrap();
    events.extend(claimed);
    events.extend(done);
    events
}

pub fn envelope(payload: QueueEvent, sequence: u64, now: Millis) -> Envelope<QueueEvent> {
    Envelope {
        event_id: EventId::new(),
        stream_id: payload.stream().id(),
        sequence,
        time: now,
        actor: Actor {
            client_id: "static/taskcluster/root".into(),
            request_id: Some(uuid::Uuid::new_v4()),
        },
        causation_id: None,
        writer_epoch: 1,
        payload,
    }
}

/// Appends full lifecycles to the queue topic of `log` until at least `target` events are
/// written (synced appends of about `batch` events); returns how many.
pub fn write_lifecycles(
    log: &taskledger_projections::EmbeddedLog,
    target: u64,
    batch: usize,
) -> u64 {
    write_padded_lifecycles(log, target, batch, 0)
}

/// `write_lifecycles` of tasks whose payloads carry `padding` more bytes (`padded_definition`).
pub fn write_padded_lifecycles(
    log: &taskledger_projections::EmbeddedLog,
    target: u64,
    batch: usize,
    padding: usize,
) -> u64 {
    let now = Millis::now();
    let mut written = 0u64;
    let mut seqs: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    while written < target {
        let mut records = Vec::with_capacity(batch);
        while records.len() < batch {
            for e in padded_lifecycle_events(now, padding) {
                let seq = seqs.entry(e.stream().id()).or_insert(0);
                *seq += 1;
                let env = envelope(e, *seq, now);
                records.push(taskledger_core::log::Record {
                    key: env.stream_id.clone(),
                    event_type: env.payload.type_name(),
                    event_id: env.event_id.to_string(),
                    value: taskledger_core::codec::encode(&env).unwrap(),
                });
            }
        }
        written += records.len() as u64;
        log.append_sync(taskledger_core::log::QUEUE_TOPIC, 0, records)
            .unwrap();
    }
    written
}

/// Appends one task lifecycle stamped with the current time (one append per command, as the
/// engine would); returns how many events it wrote.
#[allow(dead_code)]
pub fn append_lifecycle_now(log: &taskledger_projections::EmbeddedLog) -> u64 {
    let now = Millis::now();
    let events = lifecycle_events(now);
    let n = events.len() as u64;
    // each lifecycle is a fresh task: its streams start at sequence 1
    let mut seqs: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for e in events {
        let seq = seqs.entry(e.stream().id()).or_insert(0);
        *seq += 1;
        let env = envelope(e, *seq, now);
        let record = taskledger_core::log::Record {
            key: env.stream_id.clone(),
            event_type: env.payload.type_name(),
            event_id: env.event_id.to_string(),
            value: taskledger_core::codec::encode(&env).unwrap(),
        };
        log.append_sync(taskledger_core::log::QUEUE_TOPIC, 0, vec![record])
            .unwrap();
    }
    n
}

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`; None
/// where there is no such file. The difference over a phase, divided by its wall time, says
/// how many cores the phase kept busy.
#[allow(dead_code)]
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // clock ticks per second: 100 on every Linux this runs on (USER_HZ)
    Some(ticks / 100.0)
}
