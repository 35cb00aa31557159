//! The notify service's Pulse message (reference/notify.md §5): a `PulseSent` (the `pulse`
//! call, or a task's `notify.pulse.<key>.on-*` route) on
//! `exchange/taskcluster-notify/v1/notification`, routing key `primary.<routingKey>`, CC'd to
//! `route.<routingKey>`, body `{version: 1, message}`.

use serde_json::{json, Value};
use taskledger_core::notify::NotifyEvent;

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
    // written by serde_json from an object, so it reads back
    let message: Value = serde_json::from_str(message).unwrap_or(Value::Null);
    Some(Message {
        exchange: format!("{NOTIFY_EXCHANGE_PREFIX}notification"),
        routing_key: format!("primary.{routing_key}"),
        cc: vec![format!("route.{routing_key}")],
        body: bytes(&json!({ "version": 1, "message": message })),
    })
}
