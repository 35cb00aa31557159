//! taskledger-core: the pure domain. Ids, the event envelope and codec, the queue's state
//! machine (`decide`/`apply`), scopes and scope expressions, Hawk and temporary-credential math,
//! the worker-manager's domain (`worker_manager`: pools, static workers, registration), the object
//! service's domain (`object`: uploads, hashes, expiry), the secrets service's (`secrets`), the index service's (`index`:
//! paths, the rank rule, route indexing), the hooks service's (`hooks`: definitions, cron
//! schedules, fires), the notify service's (`notify`: the denylist, the email outbox, Pulse
//! notifications, task routes), the GitHub integration's (`github`: webhooks, builds,
//! installations), and the `EventLog` trait.
//!
//! Invariant: no I/O and no clock. Time and randomness are arguments.

pub mod access;
pub mod auth;
pub mod codec;
pub mod envelope;
pub mod github;
pub mod hooks;
pub mod ids;
pub mod index;
pub mod log;
pub mod notify;
pub mod object;
pub mod queue;
pub mod scopes;
pub mod secrets;
pub mod time;
pub mod worker_manager;
