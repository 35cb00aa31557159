//! The envelope every event travels in.

use crate::time::Millis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// UUIDv7: time-ordered, the dedup key downstream and the AMQP message id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct EventId(pub Uuid);

impl EventId {
    pub fn new() -> EventId {
        EventId(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who caused an event: the authenticated clientId and the request id, for audit.
/// Reactors act as `taskledger/<reactor>`. Every command has a request id of its own (the
/// gateway's for an API call, a fresh one for a reactor's or for the record of a client's
/// use), so the events of one command can be told from those of the next one on the same
/// stream in the same millisecond: the bridge renders a command's messages from the state
/// after all of its events.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub struct Actor {
    pub client_id: String,
    pub request_id: Option<Uuid>,
}

impl Actor {
    /// A reactor's actor for one command (a fresh request id each call).
    pub fn system(name: &str) -> Actor {
        Actor {
            client_id: format!("taskledger/{name}"),
            request_id: Some(Uuid::new_v4()),
        }
    }
}

#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Envelope<E> {
    pub event_id: EventId,
    /// The aggregate, e.g. `task/<taskId>`; the Kafka key.
    pub stream_id: String,
    /// Per stream, gap-free, starting at 1.
    pub sequence: u64,
    pub time: Millis,
    pub actor: Actor,
    /// The event that led a reactor to act, if any.
    pub causation_id: Option<EventId>,
    /// The epoch of the writer that appended this event (see DESIGN.md, "The write path").
    pub writer_epoch: u64,
    pub payload: E,
}
