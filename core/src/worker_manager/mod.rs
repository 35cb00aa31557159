//! The worker-manager service's domain (reference/worker-manager.md): worker pools, the workers
//! of the `static` provider, their registration and worker-pool errors, as event-sourced
//! aggregates. `decide` holds every rule; `apply` only moves state (see `decide.rs`); pool
//! configurations are checked per provider type in `config`.
//!
//! **Invariant:** secrets never enter an event in clear. A static worker's `staticSecret` and
//! each registration's `secret` travel `Sealed` (AES-256-GCM, see `access::seal`) with owners
//! that bind them to one worker and one purpose; the caller seals them and owns the key and
//! the randomness. A presented secret is compared only inside `decide`, through a `Proof`.

pub mod config;
mod decide;
#[cfg(test)]
mod tests;

use crate::access::seal::{SealKey, Sealed};
use crate::ids::{Slug, TaskQueueId};
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Topic of the worker-manager's events.
pub const WORKER_MANAGER_TOPIC: &str = "taskledger.worker-manager";

/// The implicit provider of deleted pools; never configured, never listed.
pub const NULL_PROVIDER: &str = "null-provider";

/// A worker pool is identified like the task queue its workers claim from.
pub type WorkerPoolId = TaskQueueId;

/// A worker's identity: pool, group and id (each id `^[a-zA-Z0-9-_]{1,38}$`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct WorkerKey {
    pub worker_pool_id: WorkerPoolId,
    pub worker_group: String,
    pub worker_id: String,
}

impl WorkerKey {
    /// The worker's stream: `worker/<workerPoolId>/<workerGroup>/<workerId>`.
    pub fn stream_id(&self) -> String {
        format!("worker/{}", self.path())
    }

    /// `<workerPoolId>/<workerGroup>/<workerId>`, as scopes name a worker.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}",
            self.worker_pool_id, self.worker_group, self.worker_id
        )
    }

    /// The owner (associated data) of the sealed static secret.
    pub fn static_secret_owner(&self) -> String {
        format!("static-secret/{}", self.path())
    }

    /// The owner (associated data) of the sealed registration secret.
    pub fn registration_secret_owner(&self) -> String {
        format!("registration-secret/{}", self.path())
    }

    /// The clientId of the worker's temporary credentials (worker-manager.md §2).
    pub fn client_id(&self, provider_id: &str) -> String {
        format!("worker/{provider_id}/{}", self.path())
    }

    /// The scopes of the worker's temporary credentials, exactly worker-manager.md §2.
    pub fn credential_scopes(&self) -> Vec<String> {
        let pool = &self.worker_pool_id;
        let worker = format!("{}/{}", self.worker_group, self.worker_id);
        let path = self.path();
        vec![
            format!("assume:worker-type:{pool}"),
            format!("assume:worker-pool:{pool}"),
            format!("assume:worker-id:{worker}"),
            format!("queue:worker-id:{worker}"),
            format!("secrets:get:worker-type:{pool}"),
            format!("secrets:get:worker-pool:{pool}"),
            format!("queue:claim-work:{pool}"),
            format!("worker-manager:remove-worker:{path}"),
            format!("worker-manager:reregister-worker:{path}"),
            format!("worker-manager:should-worker-terminate:{path}"),
        ]
    }
}

/// The stream of a pool (its definition and its errors): `worker-pool/<workerPoolId>`.
pub fn pool_stream_id(pool: &WorkerPoolId) -> String {
    format!("worker-pool/{pool}")
}

/// Provider types this deployment implements.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ProviderType {
    /// Workers created by users with a static secret; never provisions.
    Static,
    /// `null-provider`: never creates workers (deleted pools).
    Null,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Static => "static",
            ProviderType::Null => "null",
        }
    }
}

/// The providers configured when none are: one `static` provider with id `static`.
pub fn default_providers() -> BTreeMap<String, ProviderType> {
    BTreeMap::from([("static".to_string(), ProviderType::Static)])
}

/// Worker-manager events. Wire format V1: variants are only ever appended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum WorkerEvent {
    WorkerPoolCreated {
        worker_pool_id: WorkerPoolId,
        provider_id: String,
        description: String,
        /// The pool's `config`, as JSON text.
        config: String,
        owner: String,
        email_on_error: bool,
    },
    /// An update, or a deletion (provider switched to `null-provider`).
    WorkerPoolUpdated {
        worker_pool_id: WorkerPoolId,
        provider_id: String,
        previous_provider_ids: Vec<String>,
        description: String,
        config: String,
        owner: String,
        email_on_error: bool,
    },
    /// A static worker, created `running`.
    WorkerCreated {
        worker: WorkerKey,
        provider_id: String,
        capacity: u32,
        expires: Millis,
        static_secret: Sealed,
    },
    WorkerUpdated {
        worker: WorkerKey,
        capacity: u32,
        expires: Millis,
        static_secret: Sealed,
    },
    /// removeWorker: the worker is `stopped` (kept until it expires).
    WorkerRemoved { worker: WorkerKey },
    /// registerWorker or reregisterWorker: credentials until `expires`, and the sealed secret
    /// that reregisterWorker must present next.
    WorkerRegistered {
        worker: WorkerKey,
        expires: Millis,
        secret: Sealed,
    },
    WorkerErrorReported {
        worker_pool_id: WorkerPoolId,
        error_id: Slug,
        worker_group: String,
        worker_id: String,
        kind: String,
        title: String,
        description: String,
        /// `extra` with `workerGroup` and `workerId` merged in, as JSON text.
        extra: String,
        launch_config_id: Option<String>,
    },
    /// The worker passed its `expires`: it is gone (upstream's daily `expireWorkers`).
    WorkerExpired { worker: WorkerKey },
    /// The pool's errors reported before `before` are dropped (upstream keeps them 7 days).
    PoolErrorsExpired {
        worker_pool_id: WorkerPoolId,
        before: Millis,
    },
    /// The purge-cache service's purgeCache: workers of the pool drop caches named
    /// `cache_name` made before `before`; the request is listed until `expires`. (Kept in the
    /// worker-manager's partition: it is about a pool's workers.) The pool id is purge-cache's
    /// own pattern, not a worker-manager pool's.
    CachePurgeRequested {
        worker_pool_id: String,
        cache_name: String,
        before: Millis,
        expires: Millis,
    },
    /// These purge requests passed their `expires` and go (upstream's daily cleanup).
    PurgeRequestsExpired { requests: Vec<(String, String)> },
}

/// An open purge request of one cache name in one pool (purge-cache.md §1).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PurgeRequest {
    pub worker_pool_id: String,
    pub cache_name: String,
    pub before: Millis,
    pub expires: Millis,
}

impl WorkerEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            WorkerEvent::WorkerPoolCreated { .. } => "WorkerPoolCreated",
            WorkerEvent::WorkerPoolUpdated { .. } => "WorkerPoolUpdated",
            WorkerEvent::WorkerCreated { .. } => "WorkerCreated",
            WorkerEvent::WorkerUpdated { .. } => "WorkerUpdated",
            WorkerEvent::WorkerRemoved { .. } => "WorkerRemoved",
            WorkerEvent::WorkerRegistered { .. } => "WorkerRegistered",
            WorkerEvent::WorkerErrorReported { .. } => "WorkerErrorReported",
            WorkerEvent::WorkerExpired { .. } => "WorkerExpired",
            WorkerEvent::PoolErrorsExpired { .. } => "PoolErrorsExpired",
            WorkerEvent::CachePurgeRequested { .. } => "CachePurgeRequested",
            WorkerEvent::PurgeRequestsExpired { .. } => "PurgeRequestsExpired",
        }
    }

    /// What the event is about: the projection rewrites that row.
    pub fn subject(&self) -> Subject<'_> {
        match self {
            WorkerEvent::WorkerPoolCreated { worker_pool_id, .. }
            | WorkerEvent::WorkerPoolUpdated { worker_pool_id, .. } => {
                Subject::Pool(worker_pool_id)
            }
            WorkerEvent::WorkerCreated { worker, .. }
            | WorkerEvent::WorkerUpdated { worker, .. }
            | WorkerEvent::WorkerRemoved { worker }
            | WorkerEvent::WorkerRegistered { worker, .. }
            | WorkerEvent::WorkerExpired { worker } => Subject::Worker(worker),
            WorkerEvent::WorkerErrorReported { worker_pool_id, .. }
            | WorkerEvent::PoolErrorsExpired { worker_pool_id, .. } => {
                Subject::PoolError(worker_pool_id)
            }
            WorkerEvent::CachePurgeRequested {
                worker_pool_id,
                cache_name,
                ..
            } => Subject::Purge {
                worker_pool_id,
                cache_name,
            },
            WorkerEvent::PurgeRequestsExpired { requests } => Subject::PurgesExpired(requests),
        }
    }

    /// The stream (aggregate) the event belongs to.
    pub fn stream_id(&self) -> String {
        match self.subject() {
            Subject::Pool(p) | Subject::PoolError(p) => pool_stream_id(p),
            Subject::Worker(w) => w.stream_id(),
            Subject::Purge {
                worker_pool_id,
                cache_name,
            } => format!("purge-cache/{worker_pool_id}/{cache_name}"),
            Subject::PurgesExpired(_) => PURGE_EXPIRY_STREAM.to_string(),
        }
    }
}

/// The stream of the purge requests' expiry.
pub const PURGE_EXPIRY_STREAM: &str = "purge-cache-expiry";

/// The entity an event changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Subject<'a> {
    Pool(&'a WorkerPoolId),
    Worker(&'a WorkerKey),
    /// The pool's error rows: a new one, or old ones dropped.
    PoolError(&'a WorkerPoolId),
    /// A purge request of one cache name in one pool.
    Purge {
        worker_pool_id: &'a str,
        cache_name: &'a str,
    },
    /// Expired purge requests, by (pool, cache name).
    PurgesExpired(&'a [(String, String)]),
}

/// A worker pool as the projection holds it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WorkerPool {
    pub worker_pool_id: WorkerPoolId,
    pub provider_id: String,
    /// Providers that may still own workers of this pool.
    pub previous_provider_ids: Vec<String>,
    pub description: String,
    /// JSON text.
    pub config: String,
    pub owner: String,
    pub email_on_error: bool,
    pub created: Millis,
    pub last_modified: Millis,
}

/// Worker states (worker-manager.md §1); static workers are only `running` or `stopped`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum WorkerState {
    Requested,
    Running,
    Stopping,
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Requested => "requested",
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A worker as the projection holds it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Worker {
    pub key: WorkerKey,
    pub provider_id: String,
    pub state: WorkerState,
    pub capacity: u32,
    pub created: Millis,
    pub expires: Millis,
    pub last_modified: Millis,
    pub last_checked: Millis,
    pub static_secret: Option<Sealed>,
    /// The secret of the latest registration (what reregisterWorker must present).
    pub secret: Option<Sealed>,
    /// When the latest registration's credentials expire.
    pub registered_until: Option<Millis>,
}

impl Worker {
    /// shouldWorkerTerminate: `(terminate, reason)`. A removed (stopped or stopping) worker
    /// must terminate; otherwise `(false, "none")`.
    pub fn should_terminate(&self) -> (bool, &'static str) {
        match self.state {
            WorkerState::Stopping | WorkerState::Stopped => (true, "worker was removed"),
            WorkerState::Requested | WorkerState::Running => (false, "none"),
        }
    }
}

/// A worker-pool error as the projection holds it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PoolError {
    pub worker_pool_id: WorkerPoolId,
    pub error_id: Slug,
    pub reported: Millis,
    pub kind: String,
    pub title: String,
    pub description: String,
    /// JSON text.
    pub extra: String,
    pub launch_config_id: Option<String>,
}

impl PoolError {
    /// The error row a `WorkerErrorReported` at `at` makes; None for other events.
    pub fn from_event(event: &WorkerEvent, at: Millis) -> Option<PoolError> {
        match event {
            WorkerEvent::WorkerErrorReported {
                worker_pool_id,
                error_id,
                kind,
                title,
                description,
                extra,
                launch_config_id,
                ..
            } => Some(PoolError {
                worker_pool_id: worker_pool_id.clone(),
                error_id: *error_id,
                reported: at,
                kind: kind.clone(),
                title: title.clone(),
                description: description.clone(),
                extra: extra.clone(),
                launch_config_id: launch_config_id.clone(),
            }),
            WorkerEvent::WorkerPoolCreated { .. }
            | WorkerEvent::WorkerPoolUpdated { .. }
            | WorkerEvent::WorkerCreated { .. }
            | WorkerEvent::WorkerUpdated { .. }
            | WorkerEvent::WorkerRemoved { .. }
            | WorkerEvent::WorkerRegistered { .. }
            | WorkerEvent::WorkerExpired { .. }
            | WorkerEvent::PoolErrorsExpired { .. }
            | WorkerEvent::CachePurgeRequested { .. }
            | WorkerEvent::PurgeRequestsExpired { .. } => None,
        }
    }
}

/// Workers and capacity of a pool by state (worker-pool-full's counters).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PoolCounts {
    /// Capacity of every worker not stopped.
    pub current_capacity: u64,
    /// Count and capacity per state, in `WorkerState` order.
    pub count: [u64; 4],
    pub capacity: [u64; 4],
}

/// Everything the worker-manager decides against. Pool errors live only in the projection's
/// rows: no rule reads them.
#[derive(Clone, Debug)]
pub struct WorkerManagerState {
    /// Configured providers (`null-provider` is implied, never listed here).
    pub providers: BTreeMap<String, ProviderType>,
    pub pools: BTreeMap<WorkerPoolId, WorkerPool>,
    pub workers: BTreeMap<WorkerKey, Worker>,
    /// Purge requests by (pool, cache name): the latest of each.
    pub purges: BTreeMap<(String, String), PurgeRequest>,
}

impl Default for WorkerManagerState {
    fn default() -> Self {
        WorkerManagerState {
            providers: default_providers(),
            pools: BTreeMap::new(),
            workers: BTreeMap::new(),
            purges: BTreeMap::new(),
        }
    }
}

/// A secret a caller presents, with the key that opens the stored one. Prints `[redacted]`.
#[derive(Clone)]
pub struct Proof {
    key: SealKey,
    presented: String,
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof([redacted])")
    }
}

impl Proof {
    pub fn new(key: SealKey, presented: impl Into<String>) -> Proof {
        Proof {
            key,
            presented: presented.into(),
        }
    }

    /// True when `stored`, sealed for `owner`, opens to the presented secret (constant time).
    pub fn matches(&self, owner: &str, stored: &Sealed) -> bool {
        self.key
            .open(owner, stored)
            .is_some_and(|s| crate::auth::constant_time_eq(s.as_bytes(), self.presented.as_bytes()))
    }
}

/// A pool definition as createWorkerPool and updateWorkerPool take it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolInput {
    pub worker_pool_id: WorkerPoolId,
    pub provider_id: String,
    pub description: String,
    pub config: serde_json::Value,
    pub owner: String,
    pub email_on_error: bool,
}

/// Commands. Secrets arrive sealed (new ones) or as a `Proof` (presented ones); the gateway
/// has already checked the caller's scopes and input shapes.
#[derive(Clone, Debug)]
pub enum WorkerCommand {
    /// purge-cache's purgeCache (the pool id already checked against its pattern).
    PurgeCache {
        worker_pool_id: String,
        cache_name: String,
    },
    /// The expiry reactor's: purge requests whose `expires` is at or before `now` go, at most
    /// 1000 (and about 256 KiB of keys) at a time.
    ExpirePurgeRequests {
        now: Millis,
    },
    CreateWorkerPool(PoolInput),
    UpdateWorkerPool(PoolInput),
    DeleteWorkerPool {
        worker_pool_id: WorkerPoolId,
    },
    CreateWorker {
        worker: WorkerKey,
        expires: Millis,
        capacity: u32,
        static_secret: Option<Sealed>,
    },
    /// `static_secret: None` keeps the current one.
    UpdateWorker {
        worker: WorkerKey,
        expires: Millis,
        capacity: u32,
        static_secret: Option<Sealed>,
    },
    RemoveWorker {
        worker: WorkerKey,
    },
    /// The expiry job's: the worker goes if it has passed its `expires`.
    ExpireWorker {
        worker: WorkerKey,
    },
    /// The expiry job's: the pool's errors reported before `before` go.
    ExpirePoolErrors {
        worker_pool_id: WorkerPoolId,
        before: Millis,
    },
    /// `proof`: the `staticSecret` of the identity proof, if it has one; `secret`: the new
    /// registration secret, sealed for `worker.registration_secret_owner()`.
    RegisterWorker {
        worker: WorkerKey,
        provider_id: String,
        proof: Option<Proof>,
        secret: Sealed,
    },
    ReregisterWorker {
        worker: WorkerKey,
        proof: Proof,
        secret: Sealed,
    },
    ReportWorkerError {
        worker_pool_id: WorkerPoolId,
        error_id: Slug,
        worker_group: String,
        worker_id: String,
        kind: String,
        title: String,
        description: String,
        extra: serde_json::Map<String, serde_json::Value>,
    },
}

impl WorkerCommand {
    /// The stream the command acts on.
    pub fn stream_id(&self) -> String {
        match self {
            WorkerCommand::CreateWorkerPool(p) | WorkerCommand::UpdateWorkerPool(p) => {
                pool_stream_id(&p.worker_pool_id)
            }
            WorkerCommand::DeleteWorkerPool { worker_pool_id }
            | WorkerCommand::ReportWorkerError { worker_pool_id, .. }
            | WorkerCommand::ExpirePoolErrors { worker_pool_id, .. } => {
                pool_stream_id(worker_pool_id)
            }
            WorkerCommand::CreateWorker { worker, .. }
            | WorkerCommand::UpdateWorker { worker, .. }
            | WorkerCommand::RemoveWorker { worker }
            | WorkerCommand::ExpireWorker { worker }
            | WorkerCommand::RegisterWorker { worker, .. }
            | WorkerCommand::ReregisterWorker { worker, .. } => worker.stream_id(),
            WorkerCommand::PurgeCache {
                worker_pool_id,
                cache_name,
            } => format!("purge-cache/{worker_pool_id}/{cache_name}"),
            WorkerCommand::ExpirePurgeRequests { .. } => PURGE_EXPIRY_STREAM.to_string(),
        }
    }
}

/// Why a command is refused, with Taskcluster's message; the gateway maps each variant to
/// its error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkerManagerError {
    /// 404 ResourceNotFound.
    #[error("{0}")]
    NotFound(String),
    /// 400 InputError.
    #[error("{0}")]
    Input(String),
    /// 400 InputValidationError: the pool's config does not fit its provider type.
    #[error("config invalid for provider type {provider_type}: {errors:?}")]
    InvalidConfig {
        provider_type: &'static str,
        errors: Vec<String>,
    },
    /// 409 RequestConflict.
    #[error("{0}")]
    Conflict(String),
}
