//! Hooks fired by Pulse messages (reference/hooks.md §2, "Pulse bindings"): for every hook
//! with bindings, a durable queue `queue/taskledger-hooks/<hookGroupId>/<hookId>` (at most 50
//! messages, as upstream's) bound to each `(exchange, routingKeyPattern)`; each message's body
//! is the payload of a fire (`firedBy: pulseMessage`), checked against the trigger schema
//! first (a message that fails it is dropped, as upstream drops it).
//!
//! Reconciled every `RECONCILE` against the hooks projection: queues are made and bound for
//! new bindings, unbound for removed ones, deleted with their hook; a bind to an exchange that
//! does not exist (yet) is tried again at the next reconciliation. Only the writer of the hooks
//! partition listens (a fire writes there).

use super::fire;
use crate::AppState;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::hooks::{Binding, Hook};

/// How often the bindings are compared with the hooks.
const RECONCILE: Duration = Duration::from_secs(1);

/// A hook's queue holds at most this many messages (upstream's).
const MAX_QUEUED: i64 = 50;

/// The queue of a hook.
pub fn queue_name(group: &str, id: &str) -> String {
    format!("queue/taskledger-hooks/{group}/{id}")
}

/// Messages dropped because their body failed a hook's trigger schema (logged on the first and
/// every 100th, as upstream).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A hook being listened for: the bindings in place, and its consumer.
struct Listening {
    bound: HashSet<(String, String)>,
    consumer: tokio::task::JoinHandle<()>,
}

/// Listens for the hooks' bound messages on the broker at `url` (reconnecting after a
/// failure) while this node writes the hooks partition.
pub async fn run_listener(st: Arc<AppState>, url: String) {
    loop {
        if let Err(e) = listen(&st, &url).await {
            tracing::warn!(error = %e, "hook listener: reconnecting to Pulse");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One connection's life: reconcile until the connection fails.
async fn listen(st: &Arc<AppState>, url: &str) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut listening: HashMap<(String, String), Listening> = HashMap::new();
    let result = loop {
        if let Err(e) = reconcile(st, &conn, &mut listening).await {
            break Err(e);
        }
        tokio::time::sleep(RECONCILE).await;
    };
    for (_, l) in listening.drain() {
        l.consumer.abort();
    }
    result
}

/// The hooks that have bindings, while this node writes the hooks partition.
fn bound_hooks(st: &AppState) -> HashMap<(String, String), Hook> {
    if !st.hooks.role().is_writer() {
        return HashMap::new();
    }
    let view = st.hooks.view();
    let mut out = HashMap::new();
    let groups = view.groups().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "hook listener: reading the hooks");
        vec![]
    });
    for group in groups {
        for hook in view.hooks_in(&group).unwrap_or_default() {
            if !hook.definition.bindings.is_empty() {
                out.insert((hook.group.clone(), hook.id.clone()), hook);
            }
        }
    }
    out
}

fn pairs(bindings: &[Binding]) -> HashSet<(String, String)> {
    bindings
        .iter()
        .map(|b| (b.exchange.clone(), b.routing_key_pattern.clone()))
        .collect()
}

async fn reconcile(
    st: &Arc<AppState>,
    conn: &Connection,
    listening: &mut HashMap<(String, String), Listening>,
) -> Result<(), lapin::Error> {
    let wanted = bound_hooks(st);
    // hooks gone, or no longer bound: their queue goes (or, off the writer, only the consumer)
    let gone: Vec<(String, String)> = listening
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(l) = listening.remove(&key) {
            l.consumer.abort();
        }
        if st.hooks.role().is_writer() {
            let ch = conn.create_channel().await?;
            let name = queue_name(&key.0, &key.1);
            let _ = ch
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "done".into()).await;
        }
    }
    for (key, hook) in wanted {
        let want = pairs(&hook.definition.bindings);
        let had = match listening.get(&key) {
            Some(l) if l.bound == want => continue,
            Some(l) => l.bound.clone(),
            None => HashSet::new(),
        };
        let name = queue_name(&key.0, &key.1);
        let ch = conn.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(MAX_QUEUED));
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
        for (exchange, pattern) in had.difference(&want) {
            ch.queue_unbind(
                name.as_str().into(),
                exchange.as_str().into(),
                pattern.as_str().into(),
                FieldTable::default(),
            )
            .await?;
        }
        let mut bound: HashSet<(String, String)> = had.intersection(&want).cloned().collect();
        for (exchange, pattern) in want.difference(&had) {
            // a bind to a missing exchange closes its channel: each bind gets its own
            let bind_ch = conn.create_channel().await?;
            let done = bind_ch
                .queue_bind(
                    name.as_str().into(),
                    exchange.as_str().into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await;
            match done {
                Ok(()) => {
                    bound.insert((exchange.clone(), pattern.clone()));
                    let _ = bind_ch.close(200, "bound".into()).await;
                }
                // tried again at the next reconciliation, `bound` lacking it
                Err(e) => tracing::debug!(%exchange, error = %e, "hook listener: bind later"),
            }
        }
        match listening.get_mut(&key) {
            Some(l) => {
                l.bound = bound;
                let _ = ch.close(200, "rebound".into()).await;
            }
            None => {
                let consumer = consume(st.clone(), ch, name, key.clone()).await?;
                listening.insert(key, Listening { bound, consumer });
            }
        }
    }
    Ok(())
}

/// Consumes a hook's queue on `ch`: each message fires the hook (as it is when the message
/// arrives), then is acknowledged.
async fn consume(
    st: Arc<AppState>,
    ch: Channel,
    queue: String,
    key: (String, String),
) -> Result<tokio::task::JoinHandle<()>, lapin::Error> {
    let mut deliveries = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        // the channel lives as long as its consumer
        let _ch = ch;
        while let Some(Ok(delivery)) = deliveries.next().await {
            match st.hooks.view().hook(&key.0, &key.1) {
                Ok(Some(hook)) => {
                    let payload =
                        serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null);
                    if let Err(e) = fire::fire_from_pulse(&st, &hook, payload).await {
                        let n = DROPPED.fetch_add(1, Ordering::Relaxed);
                        if n.is_multiple_of(100) {
                            tracing::warn!(hook = %format!("{}/{}", key.0, key.1), error = %e.message,
                                dropped = n + 1, "a Pulse message did not fire its hook");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "hook listener: reading a hook"),
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    }))
}
