//! `taskledger bridge replay`: the history's messages, selected by exchange, routing key and
//! time, republished into one queue.

use crate::publish::publish_confirmed;
use crate::render::{properties, render};
use crate::state::BridgeState;
use crate::{read_whole, BridgeError, TOPICS};
use lapin::options::ConfirmSelectOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use rocksdb::WriteBatch;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use taskledger_core::time::Millis;
use taskledger_projections::EmbeddedLog;

/// AMQP topic matching (what a binding does): words split on `.`, `*` is one word, `#` zero
/// or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((w, rest)) => k
                .split_first()
                .is_some_and(|(kw, krest)| (*w == "*" || w == kw) && go(rest, krest)),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// What `taskledger bridge replay` selects from the history.
pub struct ReplayFilter {
    /// The full exchange name.
    pub exchange: String,
    /// A binding pattern, matched against the routing key and every CC'd route.
    pub routing_key: String,
    /// Events before this instant are skipped.
    pub since: Millis,
}

/// Republishes the history matching `filter` into the existing queue `queue` (through the
/// default exchange, so only that queue receives it), with publisher confirms. The messages
/// are the bridge's own (same bodies, message ids and headers) plus `taskledger-exchange` and
/// `taskledger-routing-key` headers naming where they were first published. The fold state
/// lives in `scratch`, a fresh directory. Returns how many messages were republished.
pub async fn replay(
    log: &EmbeddedLog,
    url: &str,
    filter: &ReplayFilter,
    queue: &str,
    scratch: &Path,
) -> Result<u64, BridgeError> {
    let state = BridgeState::open(scratch)?;
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut published = 0;
    for topic in TOPICS {
        let mut offset = 0;
        // never a read that cuts a command: its messages render from the state after it
        while let Some(read) = read_whole(log, topic, offset).await? {
            offset = read.next;
            let (changes, outgoing) = render(&state, None, topic, &read.records)?;
            let mut batch = WriteBatch::default();
            changes.commit(&mut batch)?;
            state.db.write(batch)?;
            let selected = outgoing.iter().filter(|o| {
                o.message.exchange == filter.exchange
                    && o.time >= filter.since
                    && (topic_matches(&filter.routing_key, &o.message.routing_key)
                        || o.message
                            .cc
                            .iter()
                            .any(|r| topic_matches(&filter.routing_key, r)))
            });
            // through the default exchange: only `queue` receives them
            let items = selected.map(|o| {
                let props = properties(o);
                let mut headers = props.headers().clone().unwrap_or_default();
                headers.insert(
                    "taskledger-exchange".into(),
                    AMQPValue::LongString(LongString::from(o.message.exchange.as_str())),
                );
                headers.insert(
                    "taskledger-routing-key".into(),
                    AMQPValue::LongString(LongString::from(o.message.routing_key.as_str())),
                );
                ("", queue, o, props.with_headers(headers))
            });
            published +=
                publish_confirmed(std::slice::from_ref(&channel), items, &AtomicU64::new(0))
                    .await?;
        }
    }
    let _ = conn.close(200, "replay done".into()).await;
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns_match_as_amqp_bindings_do() {
        assert!(topic_matches("primary.#", "primary.abc._._"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("primary.*.0.#", "primary.t1.0.g.w"));
        assert!(!topic_matches("primary.*.0.#", "primary.t1.1.g.w"));
        assert!(topic_matches(
            "primary.#.grp.#",
            "primary.t.0._._.p.w.-.grp._"
        ));
        assert!(topic_matches("route.it.#", "route.it.x.done"));
        assert!(!topic_matches("route.it.*", "route.it.x.done"));
        assert!(topic_matches("a.#.b", "a.b"));
        assert!(!topic_matches("a.*", "a"));
        assert!(topic_matches("_", "_"));
    }
}
