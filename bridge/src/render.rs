//! Rendering: a batch of the log's records becomes the messages Taskcluster would publish,
//! each from the folded state after its whole command.

use crate::messages::{self, Message};
use crate::state::{group_key, pool_key, task_key, worker_key, BridgeState, Changes, Overlay};
use crate::BridgeError;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::BasicProperties;
use std::sync::Arc;
use taskledger_core::access::AuthEvent;
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::github::{GithubEvent, GITHUB_TOPIC};
use taskledger_core::hooks::{HookEvent, HOOKS_TOPIC};
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_core::notify::{NotifyEvent, NOTIFY_TOPIC};
use taskledger_core::queue::QueueEvent;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{WorkerEvent, WORKER_MANAGER_TOPIC};

/// One outgoing message with its envelope's identity.
pub(crate) struct Outgoing {
    pub(crate) message: Message,
    pub(crate) event_id: String,
    pub(crate) stream: String,
    pub(crate) sequence: u64,
    /// When the event happened.
    pub(crate) time: Millis,
}

impl Outgoing {
    /// `message`, identified by the envelope it renders.
    pub(crate) fn of<E>(env: &Envelope<E>, message: Message) -> Outgoing {
        Outgoing {
            message,
            event_id: env.event_id.to_string(),
            stream: env.stream_id.clone(),
            sequence: env.sequence,
            time: env.time,
        }
    }
}

/// Envelopes of one command: same stream, time, actor and cause, back to back. The actor
/// holds the command's request id, which every command has had since reactors got one each
/// (`Actor::system`); in a log older than that, two commands of one reactor on one stream in
/// one millisecond (the built-in worker's claim and report) read as one.
fn same_command<E>(a: &Envelope<E>, b: &Envelope<E>) -> bool {
    a.stream_id == b.stream_id
        && a.time == b.time
        && a.actor == b.actor
        && a.causation_id == b.causation_id
}

/// How many of a read's records to render now: all of them, except, when more of the log
/// follows, the events at the end that belong to one command (which the read may have cut:
/// a command's messages render from the state after all its events, and a task-exception
/// followed by its retry's run must not look like a resolution of the group). All of them
/// when that command is the whole read.
pub(crate) fn whole_commands(
    topic: &str,
    records: &[taskledger_core::log::Stored],
    more_follows: bool,
) -> Result<usize, BridgeError> {
    if topic != QUEUE_TOPIC || !more_follows {
        return Ok(records.len());
    }
    let Some(last) = records.last() else {
        return Ok(0);
    };
    let last = codec::decode::<Envelope<QueueEvent>>(&last.value)?;
    let mut keep = records.len() - 1;
    while keep > 0 {
        let before = codec::decode::<Envelope<QueueEvent>>(&records[keep - 1].value)?;
        if !same_command(&before, &last) {
            break;
        }
        keep -= 1;
    }
    Ok(if keep == 0 { records.len() } else { keep })
}

/// Messages for a batch of queue records; the state after each command renders its messages.
fn queue_batch(
    overlay: &mut Overlay,
    envelopes: &[Envelope<QueueEvent>],
) -> Result<Vec<Outgoing>, BridgeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < envelopes.len() {
        let mut j = i + 1;
        while j < envelopes.len() && same_command(&envelopes[i], &envelopes[j]) {
            j += 1;
        }
        let mut finished = Vec::new();
        for env in &envelopes[i..j] {
            finished.push(overlay.apply(&env.payload)?);
        }
        for (env, fin) in envelopes[i..j].iter().zip(finished) {
            let (payload, fin) = (&env.payload, fin.as_ref());
            let message = match payload.stream() {
                taskledger_core::queue::Stream::Task(id) => {
                    let task = overlay.task_mut(task_key(&id.0))?;
                    messages::queue_message(payload, task.as_deref(), None, fin)
                }
                taskledger_core::queue::Stream::TaskGroup(id) => {
                    let group = overlay.group(group_key(&id.0))?;
                    messages::queue_message(payload, None, group.as_ref(), fin)
                }
                taskledger_core::queue::Stream::Worker(_) => {
                    messages::queue_message(payload, None, None, fin)
                }
            };
            if let Some(message) = message {
                out.push(Outgoing::of(env, message));
            }
        }
        if overlay.state.group_counts {
            out.extend(group_resolved(overlay, &envelopes[i..j])?);
        }
        i = j;
    }
    Ok(out)
}

/// task-group-resolved after a command that resolved a task (queue.md §8): when no task of its
/// group is still never-resolved. Derived, not an event of its own: it carries the resolving
/// event's stream and sequence, and that event's id suffixed `/task-group-resolved`.
fn group_resolved(
    overlay: &mut Overlay,
    command: &[Envelope<QueueEvent>],
) -> Result<Option<Outgoing>, BridgeError> {
    let Some(env) = command.iter().find(|e| {
        matches!(
            e.payload,
            QueueEvent::RunResolved { .. } | QueueEvent::RunExceptionRecorded { .. }
        )
    }) else {
        return Ok(None);
    };
    let taskledger_core::queue::Stream::Task(id) = env.payload.stream() else {
        return Ok(None);
    };
    // an exception that is retried leaves the task pending: not resolved
    let Some(task) = overlay
        .task(task_key(&id.0))?
        .filter(|t| t.resolution().is_some())
    else {
        return Ok(None);
    };
    if overlay.resolve_in_group(&task)? > 0 {
        return Ok(None);
    }
    let Some(group) = overlay.group(group_key(&task.definition.task_group_id.0))? else {
        return Ok(None);
    };
    Ok(Some(Outgoing {
        message: messages::group_message("task-group-resolved", &group),
        event_id: format!("{}/task-group-resolved", env.event_id),
        stream: env.stream_id.clone(),
        sequence: env.sequence,
        time: env.time,
    }))
}

pub(crate) fn properties(o: &Outgoing) -> BasicProperties {
    let mut headers = FieldTable::default();
    // always there, empty when nothing is CC'd, as upstream's publisher sends it
    let cc: Vec<AMQPValue> = o
        .message
        .cc
        .iter()
        .map(|r| AMQPValue::LongString(LongString::from(r.as_str())))
        .collect();
    headers.insert("CC".into(), AMQPValue::FieldArray(FieldArray::from(cc)));
    headers.insert(
        "taskledger-stream".into(),
        AMQPValue::LongString(LongString::from(o.stream.as_str())),
    );
    headers.insert(
        "taskledger-sequence".into(),
        AMQPValue::LongLongInt(o.sequence as i64),
    );
    // when the event happened (ms since the epoch): consumers can measure their lag
    headers.insert("taskledger-time".into(), AMQPValue::LongLongInt(o.time.0));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id(o.event_id.as_str().into())
        .with_headers(headers)
}

/// The messages of a batch of `topic`'s records, and the folded state after them.
/// `parent` is the previous batch of the same topic while it is not stored yet.
pub(crate) fn render(
    state: &BridgeState,
    parent: Option<Arc<Changes>>,
    topic: &str,
    records: &[taskledger_core::log::Stored],
) -> Result<(Changes, Vec<Outgoing>), BridgeError> {
    let mut overlay = Overlay::new(state, parent);
    let outgoing = if topic == QUEUE_TOPIC {
        let envs = records
            .iter()
            .map(|r| codec::decode::<Envelope<QueueEvent>>(&r.value))
            .collect::<Result<Vec<_>, _>>()?;
        queue_batch(&mut overlay, &envs)?
    } else if topic == WORKER_MANAGER_TOPIC {
        let envs = records
            .iter()
            .map(|r| codec::decode::<Envelope<WorkerEvent>>(&r.value))
            .collect::<Result<Vec<_>, _>>()?;
        worker_manager_batch(&mut overlay, &envs)?
    } else if topic == HOOKS_TOPIC {
        records
            .iter()
            .filter_map(|r| {
                let env = match codec::decode::<Envelope<HookEvent>>(&r.value) {
                    Ok(env) => env,
                    Err(e) => return Some(Err(e.into())),
                };
                let message = messages::hook_message(&env.payload)?;
                Some(Ok(Outgoing::of(&env, message)))
            })
            .collect::<Result<Vec<_>, BridgeError>>()?
    } else if topic == NOTIFY_TOPIC {
        records
            .iter()
            .filter_map(|r| {
                let env = match codec::decode::<Envelope<NotifyEvent>>(&r.value) {
                    Ok(env) => env,
                    Err(e) => return Some(Err(e.into())),
                };
                let message = messages::notify_message(&env.payload)?;
                Some(Ok(Outgoing::of(&env, message)))
            })
            .collect::<Result<Vec<_>, BridgeError>>()?
    } else if topic == GITHUB_TOPIC {
        records
            .iter()
            .filter_map(|r| {
                let env = match codec::decode::<Envelope<GithubEvent>>(&r.value) {
                    Ok(env) => env,
                    Err(e) => return Some(Err(e.into())),
                };
                let message = messages::github_message(&env.payload)?;
                Some(Ok(Outgoing::of(&env, message)))
            })
            .collect::<Result<Vec<_>, BridgeError>>()?
    } else {
        records
            .iter()
            .filter_map(|r| {
                let env = match codec::decode::<Envelope<AuthEvent>>(&r.value) {
                    Ok(env) => env,
                    Err(e) => return Some(Err(e.into())),
                };
                let message = messages::auth_message(&env.payload)?;
                Some(Ok(Outgoing::of(&env, message)))
            })
            .collect::<Result<Vec<_>, BridgeError>>()?
    };
    Ok((overlay.changes, outgoing))
}

/// The messages of worker-manager events (reference/worker-manager.md §3). A static worker is
/// created running (worker-running) and removeWorker removes it (worker-removed); its
/// registrations and updates publish nothing, as upstream. Pools and workers are remembered
/// for the provider and capacity later messages carry.
fn worker_manager_batch(
    overlay: &mut Overlay,
    envs: &[Envelope<WorkerEvent>],
) -> Result<Vec<Outgoing>, BridgeError> {
    let mut out = Vec::new();
    for env in envs {
        let message = match &env.payload {
            WorkerEvent::WorkerPoolCreated {
                worker_pool_id,
                provider_id,
                ..
            } => {
                overlay
                    .changes
                    .pools
                    .insert(pool_key(worker_pool_id.as_str()), Some(provider_id.clone()));
                Some(messages::pool_message(
                    "worker-pool-created",
                    worker_pool_id,
                    provider_id,
                    None,
                ))
            }
            WorkerEvent::WorkerPoolUpdated {
                worker_pool_id,
                provider_id,
                ..
            } => {
                let previous = overlay.pool_provider(worker_pool_id.as_str())?;
                overlay
                    .changes
                    .pools
                    .insert(pool_key(worker_pool_id.as_str()), Some(provider_id.clone()));
                Some(messages::pool_message(
                    "worker-pool-updated",
                    worker_pool_id,
                    provider_id,
                    previous.as_deref(),
                ))
            }
            WorkerEvent::WorkerCreated {
                worker,
                provider_id,
                capacity,
                ..
            } => {
                overlay
                    .changes
                    .workers
                    .insert(worker_key(worker), Some((provider_id.clone(), *capacity)));
                Some(messages::worker_message(
                    "worker-running",
                    worker,
                    provider_id,
                    *capacity,
                    env.time,
                    None,
                ))
            }
            WorkerEvent::WorkerUpdated {
                worker, capacity, ..
            } => {
                if let Some((provider, _)) = overlay.worker_facts(worker)? {
                    overlay
                        .changes
                        .workers
                        .insert(worker_key(worker), Some((provider, *capacity)));
                }
                None
            }
            WorkerEvent::WorkerRemoved { worker } => {
                overlay.worker_facts(worker)?.map(|(provider, capacity)| {
                    messages::worker_message(
                        "worker-removed",
                        worker,
                        &provider,
                        capacity,
                        env.time,
                        Some(messages::REMOVE_WORKER_REASON),
                    )
                })
            }
            WorkerEvent::WorkerRegistered { .. } => None,
            // upstream's expiry jobs delete rows and publish nothing
            WorkerEvent::WorkerExpired { worker } => {
                overlay.changes.workers.insert(worker_key(worker), None);
                None
            }
            // purge-cache has no Pulse exchanges (purge-cache.md)
            WorkerEvent::PoolErrorsExpired { .. }
            | WorkerEvent::CachePurgeRequested { .. }
            | WorkerEvent::PurgeRequestsExpired { .. } => None,
            e @ WorkerEvent::WorkerErrorReported { worker_pool_id, .. } => {
                let provider = overlay
                    .pool_provider(worker_pool_id.as_str())?
                    .unwrap_or_else(|| "_".into());
                messages::pool_error_message(e, &provider, env.time)
            }
        };
        if let Some(message) = message {
            out.push(Outgoing::of(env, message));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
