//! taskledger-projections: the event logs (embedded RocksDB, Kafka), the queue,
//! auth, worker-manager, object, secrets, index, hooks, notify and github projections in RocksDB column families, and the command engines
//! that turn commands into durable events (the queue's with group commit).
//!
//! Invariant: a projection's state and the offset it has consumed are written in one batch.

pub mod audit;
pub mod auth_view;
pub mod embedded_log;
pub mod engine;
pub mod exits;
pub mod github_view;
pub mod hooks_view;
pub mod index_view;
pub mod kafka_group;
pub mod kafka_log;
pub mod keys;
pub mod latency;
pub mod notify_view;
pub mod object_view;
pub mod queue_view;
pub mod role;
pub mod secrets_view;
pub mod single;
pub mod store;
pub mod worker_manager_view;

pub use auth_view::{AuditEntry, AuthEngine, AuthEngineError, AuthView};
pub use embedded_log::EmbeddedLog;
pub use engine::{Engine, EngineError, Outcome, QueueCommand};
pub use github_view::{GithubEngine, GithubEngineError, GithubView};
pub use hooks_view::{HooksEngine, HooksEngineError, HooksView};
pub use index_view::{IndexEngine, IndexEngineError, IndexView};
pub use kafka_log::{KafkaConfig, KafkaLog};
pub use notify_view::{NotifyEngine, NotifyEngineError, NotifyView};
pub use object_view::{ObjectEngine, ObjectEngineError, ObjectView};
pub use queue_view::QueueView;
pub use secrets_view::{SecretsEngine, SecretsEngineError, SecretsView};
pub use worker_manager_view::{WorkerManagerEngine, WorkerManagerEngineError, WorkerManagerView};
