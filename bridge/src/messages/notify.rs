//! The notify service's Pulse message (reference/notify.md §5): a `PulseSent` (the `pulse`
//! call, or a task's `notify.pulse.<key>.on-*` route) on
//! `exchange/taskcluster-notify/v1/notification`, routing key `primary.<routingKey>`, CC'd to
//! `route.<routingKey>`, body `{version: 1, message}`.

use serde_json::{json, Value};
use taskledger_core::notify::{NotifyEvent, MAX_ROUTING_KEY_BYTES};

use super::{bytes, Message};

pub const NOTIFY_EXCHANGE_PREFIX: &str = "exchange/taskcluster-notify/v1/";
pub const NOTIFY_EXCHANGES: &[&str] = &["notification"];

/// The message for a notify event: a Pulse notification; the denylist and emails publish
/// nothing.
pub fn notify_message(event: &NotifyEvent) -> Option<Message> {
    let (routing_key, message) = match event {
        NotifyEvent::PulseSent {
            routing_key,
            message,
            ..
        } => (routing_key, message),
        NotifyEvent::AddressDenied { .. }
        | NotifyEvent::AddressAllowed { .. }
        | NotifyEvent::EmailQueued { .. }
        | NotifyEvent::EmailDelivered { .. } => return None,
    };
    // the API and the listener refuse such a key; a log written before they did is passed
    // over rather than handed to AMQP, which takes routing keys of at most 255 bytes
    if routing_key.len() > MAX_ROUTING_KEY_BYTES {
        return None;
    }
    // written by serde_json from an object, so it reads back
    let message: Value = serde_json::from_str(message).unwrap_or(Value::Null);
    Some(Message {
        exchange: format!("{NOTIFY_EXCHANGE_PREFIX}notification"),
        routing_key: format!("primary.{routing_key}"),
        cc: vec![format!("route.{routing_key}")],
        body: bytes(&json!({ "version": 1, "message": message })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(routing_key: &str) -> NotifyEvent {
        NotifyEvent::PulseSent {
            routing_key: routing_key.into(),
            message: r#"{"a":1}"#.into(),
            digest: [0; 16],
        }
    }

    #[test]
    fn a_pulse_notification_as_upstream_publishes_it() {
        let m = notify_message(&sent("a.b")).unwrap();
        assert_eq!(m.exchange, "exchange/taskcluster-notify/v1/notification");
        assert_eq!(m.routing_key, "primary.a.b");
        assert_eq!(m.cc, vec!["route.a.b".to_string()]);
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body, json!({"version": 1, "message": {"a": 1}}));
        // AMQP takes routing keys of at most 255 bytes: a longer one is not published
        assert!(notify_message(&sent(&"k".repeat(247))).is_some());
        assert!(notify_message(&sent(&"k".repeat(248))).is_none());
    }
}
