//! taskledger-projections: the event logs (embedded RocksDB today, Kafka next), the queue
//! projection in RocksDB column families, and the command engine that turns commands into
//! durable events with group commit.
//!
//! Invariant: a projection's state and the offset it has consumed are written in one batch.

pub mod audit;
pub mod auth_view;
pub mod embedded_log;
pub mod engine;
pub mod keys;
pub mod queue_view;
pub mod store;

pub use auth_view::{AuditEntry, AuthEngine, AuthEngineError, AuthView};
pub use embedded_log::EmbeddedLog;
pub use engine::{Engine, EngineError, Outcome, QueueCommand};
pub use queue_view::QueueView;
