//! Hooks fired by Pulse messages (reference/hooks.md §2, "Pulse bindings"): for every hook
//! with bindings, a durable queue `queue/<user>/<hookGroupId>/<hookId>` (the broker user's
//! namespace, as Pulse requires; at most 50 messages, as upstream's) bound to each
//! `(exchange, routingKeyPattern)`; each message's body is the payload of a fire (`firedBy:
//! pulseMessage`), checked against the trigger schema first (a message that fails it is
//! dropped, as upstream drops it).
//!
//! Reconciled every `RECONCILE` against the hooks projection: queues are made and bound for
//! new bindings, unbound for removed ones, deleted with their hook; a bind that fails (an
//! exchange that does not exist yet) is tried again at the next pass, and so is a hook whose
//! consumer ended. A name or binding AMQP cannot carry (over 255 bytes) is skipped. Only a
//! node that writes both the hooks and the queue partitions listens (a fire writes to both).

use super::fire;
use crate::AppState;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::hooks::{Binding, Hook};

/// How often the bindings are compared with the hooks.
const RECONCILE: Duration = Duration::from_secs(1);

/// A hook's queue holds at most this many messages (upstream's); the consumer takes at most
/// `PREFETCH` unacknowledged ones.
const MAX_QUEUED: i64 = 50;
const PREFETCH: u16 = 16;

/// The queue of a hook, in the namespace of the broker user `user`.
pub fn queue_name(user: &str, group: &str, id: &str) -> String {
    format!("queue/{user}/{group}/{id}")
}

/// The user a Pulse URL logs in as (whose namespace, `queue/<user>/...`, Pulse requires a
/// consumer's queues to be in); RabbitMQ's default, `guest`, when the URL names none.
pub(crate) fn broker_user(url: &str) -> String {
    url.parse::<lapin::uri::AMQPUri>()
        .map(|u| u.authority.userinfo.username)
        .unwrap_or_else(|_| "guest".into())
}

/// `s` as an AMQP short string, or `None` past 255 bytes (where lapin's conversion panics).
fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
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
/// failure) while this node writes the hooks and the queue partitions.
pub async fn run_listener(st: Arc<AppState>, url: String) {
    let user = broker_user(&url);
    loop {
        if let Err(e) = listen(&st, &url, &user).await {
            tracing::warn!(error = %e, "hook listener: reconnecting to Pulse");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One connection's life: reconcile until the connection fails.
async fn listen(st: &Arc<AppState>, url: &str, user: &str) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut listening: HashMap<(String, String), Listening> = HashMap::new();
    while conn.status().connected() {
        if let Err(e) = reconcile(st, &conn, user, &mut listening).await {
            tracing::warn!(error = %e, "hook listener: a reconciliation failed");
        }
        tokio::time::sleep(RECONCILE).await;
    }
    for (_, l) in listening.drain() {
        l.consumer.abort();
    }
    Ok(())
}

/// The hooks that have bindings; `None` when they cannot be read now (nothing is changed
/// then).
fn bound_hooks(st: &AppState) -> Option<HashMap<(String, String), Hook>> {
    let view = st.hooks.view();
    let mut out = HashMap::new();
    let groups = view
        .groups()
        .map_err(|e| tracing::warn!(error = %e, "hook listener: reading the hooks"))
        .ok()?;
    for group in groups {
        let hooks = view
            .hooks_in(&group)
            .map_err(|e| tracing::warn!(error = %e, "hook listener: reading the hooks"))
            .ok()?;
        for hook in hooks {
            if !hook.definition.bindings.is_empty() {
                out.insert((hook.group.clone(), hook.id.clone()), hook);
            }
        }
    }
    Some(out)
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
    user: &str,
    listening: &mut HashMap<(String, String), Listening>,
) -> Result<(), lapin::Error> {
    let writes = st.hooks.role().is_writer() && st.engine.role().is_writer();
    let wanted = if writes {
        match bound_hooks(st) {
            Some(w) => w,
            None => return Ok(()),
        }
    } else {
        HashMap::new()
    };
    // a consumer that ended (its channel closed, the broker cancelled it) is set up again
    listening.retain(|_, l| !l.consumer.is_finished());
    // hooks gone, or no longer bound: their queue goes (off the writer, only the consumer)
    let gone: Vec<(String, String)> = listening
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(l) = listening.remove(&key) {
            l.consumer.abort();
        }
        if let (true, Some(name)) = (writes, short(&queue_name(user, &key.0, &key.1))) {
            let ch = conn.create_channel().await?;
            let _ = ch.queue_delete(name, QueueDeleteOptions::default()).await;
            let _ = ch.close(200, "done".into()).await;
        }
    }
    for (key, hook) in wanted {
        if let Err(e) = listen_for(st, conn, user, listening, &key, &hook).await {
            tracing::warn!(hook = %format!("{}/{}", key.0, key.1), error = %e,
                "hook listener: tried again at the next pass");
        }
    }
    Ok(())
}

/// Brings the hook's queue, bindings and consumer in line with its definition.
async fn listen_for(
    st: &Arc<AppState>,
    conn: &Connection,
    user: &str,
    listening: &mut HashMap<(String, String), Listening>,
    key: &(String, String),
    hook: &Hook,
) -> Result<(), lapin::Error> {
    let want = pairs(&hook.definition.bindings);
    let had = match listening.get(key) {
        Some(l) if l.bound == want => return Ok(()),
        Some(l) => l.bound.clone(),
        None => HashSet::new(),
    };
    let Some(name) = short(&queue_name(user, &key.0, &key.1)) else {
        tracing::debug!(hook = %format!("{}/{}", key.0, key.1), "hook listener: a queue name past 255 bytes");
        return Ok(());
    };
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(MAX_QUEUED));
    ch.queue_declare(
        name.clone(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    for (exchange, pattern) in had.difference(&want) {
        if let (Some(e), Some(p)) = (short(exchange), short(pattern)) {
            ch.queue_unbind(name.clone(), e, p, FieldTable::default())
                .await?;
        }
    }
    let mut bound: HashSet<(String, String)> = had.intersection(&want).cloned().collect();
    for (exchange, pattern) in want.difference(&had) {
        let (Some(e), Some(p)) = (short(exchange), short(pattern)) else {
            // AMQP cannot carry it: never bound (and tried again each pass, cheaply)
            continue;
        };
        // a bind to a missing exchange closes its channel: each bind gets its own
        let bind_ch = conn.create_channel().await?;
        let done = bind_ch
            .queue_bind(
                name.clone(),
                e,
                p,
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
    match listening.get_mut(key) {
        Some(l) => {
            l.bound = bound;
            let _ = ch.close(200, "rebound".into()).await;
        }
        None => {
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let consumer = consume(st.clone(), ch, name, key.clone()).await?;
            listening.insert(key.clone(), Listening { bound, consumer });
        }
    }
    Ok(())
}

/// Consumes a hook's queue on `ch`: each message fires the hook (as it is when the message
/// arrives), then is acknowledged.
async fn consume(
    st: Arc<AppState>,
    ch: Channel,
    queue: ShortString,
    key: (String, String),
) -> Result<tokio::task::JoinHandle<()>, lapin::Error> {
    let mut deliveries = ch
        .basic_consume(
            queue,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        // the channel lives as long as its consumer
        let _ch = ch;
        loop {
            let delivery = match deliveries.next().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "hook listener: a consumer ended; set up again");
                    return;
                }
                None => return,
            };
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
