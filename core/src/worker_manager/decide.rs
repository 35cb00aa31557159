//! The worker-manager's rules (`decide`) and its fold (`apply`). Messages are Taskcluster's
//! (services/worker-manager/src/api.js and the static provider).

use super::config;
use super::{
    PoolCounts, PoolInput, Proof, ProviderType, PurgeRequest, Worker, WorkerCommand, WorkerEvent,
    WorkerKey, WorkerManagerError as E, WorkerManagerState, WorkerPool, WorkerPoolId, WorkerState,
    NULL_PROVIDER,
};
use crate::access::seal::Sealed;
use crate::ids::Slug;
use crate::time::Millis;
use serde_json::{Map, Value};

type Decided = Result<Vec<WorkerEvent>, E>;

impl WorkerManagerState {
    /// The pure decision: events for `cmd`, or why not. An empty list means "already so".
    pub fn decide(&self, cmd: &WorkerCommand, now: Millis) -> Decided {
        match cmd {
            // a repeat moves `before` forward (purge-cache.md §1)
            WorkerCommand::PurgeCache {
                worker_pool_id,
                cache_name,
            } => Ok(vec![WorkerEvent::CachePurgeRequested {
                worker_pool_id: worker_pool_id.clone(),
                cache_name: cache_name.clone(),
                before: now,
                expires: now.plus(crate::time::DAY),
            }]),
            WorkerCommand::ExpirePurgeRequests { now } => {
                // at most 1000 keys and about 256 KiB of them (cache names are unbounded, and
                // a log may refuse a large event), at least one
                let mut bytes = 0;
                let requests: Vec<(String, String)> = self
                    .purges
                    .iter()
                    .filter(|(_, r)| r.expires <= *now)
                    .map(|(k, _)| k.clone())
                    .take(1000)
                    .take_while(|(pool, cache)| {
                        let first = bytes == 0;
                        bytes += pool.len() + cache.len() + 16;
                        first || bytes <= 256 * 1024
                    })
                    .collect();
                Ok(if requests.is_empty() {
                    vec![]
                } else {
                    vec![WorkerEvent::PurgeRequestsExpired { requests }]
                })
            }
            WorkerCommand::CreateWorkerPool(input) => self.create_pool(input),
            WorkerCommand::UpdateWorkerPool(input) => self.update_pool(input),
            WorkerCommand::DeleteWorkerPool { worker_pool_id } => self.delete_pool(worker_pool_id),
            WorkerCommand::CreateWorker {
                worker,
                expires,
                capacity,
                static_secret,
            } => self.create_worker(worker, *expires, *capacity, static_secret.as_ref(), now),
            WorkerCommand::UpdateWorker {
                worker,
                expires,
                capacity,
                static_secret,
            } => self.update_worker(worker, *expires, *capacity, static_secret.as_ref()),
            WorkerCommand::RemoveWorker { worker } => self.remove_worker(worker),
            WorkerCommand::ExpirePoolErrors {
                worker_pool_id,
                before,
            } => Ok(self
                .pools
                .get(worker_pool_id)
                .map(|_| WorkerEvent::PoolErrorsExpired {
                    worker_pool_id: worker_pool_id.clone(),
                    before: *before,
                })
                .into_iter()
                .collect()),
            WorkerCommand::ExpireWorker { worker } => Ok(self
                .workers
                .get(worker)
                .filter(|w| w.expires < now)
                .map(|_| WorkerEvent::WorkerExpired {
                    worker: worker.clone(),
                })
                .into_iter()
                .collect()),
            WorkerCommand::RegisterWorker {
                worker,
                provider_id,
                proof,
                secret,
            } => self.register(worker, provider_id, proof.as_ref(), secret, now),
            WorkerCommand::ReregisterWorker {
                worker,
                proof,
                secret,
            } => self.reregister(worker, proof, secret, now),
            WorkerCommand::ReportWorkerError {
                worker_pool_id,
                error_id,
                worker_group,
                worker_id,
                kind,
                title,
                description,
                extra,
            } => self.report_error(
                worker_pool_id,
                *error_id,
                (worker_group, worker_id),
                [kind, title, description],
                extra,
            ),
        }
    }

    /// The type of a provider id: a configured one, or the implied `null-provider`.
    pub fn provider_type(&self, provider_id: &str) -> Option<ProviderType> {
        if provider_id == NULL_PROVIDER {
            return Some(ProviderType::Null);
        }
        self.providers.get(provider_id).copied()
    }

    /// The pool's workers, in key order.
    pub fn pool_workers<'a>(&'a self, pool: &'a WorkerPoolId) -> impl Iterator<Item = &'a Worker> {
        let first = WorkerKey {
            worker_pool_id: pool.clone(),
            worker_group: String::new(),
            worker_id: String::new(),
        };
        self.workers
            .range(first..)
            .map(|(_, w)| w)
            .take_while(move |w| &w.key.worker_pool_id == pool)
    }

    /// The workers that have passed their `expires` at `now` (what the expiry job removes).
    pub fn expired_workers(&self, now: Millis) -> Vec<WorkerKey> {
        self.workers
            .values()
            .filter(|w| w.expires < now)
            .map(|w| w.key.clone())
            .collect()
    }

    /// Counts and capacities of the pool's workers by state.
    pub fn pool_counts(&self, pool: &WorkerPoolId) -> PoolCounts {
        let mut c = PoolCounts::default();
        for w in self.pool_workers(pool) {
            let i = w.state as usize;
            c.count[i] += 1;
            c.capacity[i] += u64::from(w.capacity);
            if w.state != WorkerState::Stopped {
                c.current_capacity += u64::from(w.capacity);
            }
        }
        c
    }

    // --- pools -----------------------------------------------------------------------------

    /// The provider of a pool definition must exist and its config must fit the type; the
    /// config as stored.
    pub fn check_definition(&self, input: &PoolInput) -> Result<String, E> {
        let ptype = self
            .provider_type(&input.provider_id)
            .ok_or_else(|| E::Input("Invalid Provider".into()))?;
        config::validate(ptype, &input.config).map_err(|errors| E::InvalidConfig {
            provider_type: ptype.as_str(),
            errors,
        })?;
        Ok(input.config.to_string())
    }

    fn create_pool(&self, input: &PoolInput) -> Decided {
        let config = self.check_definition(input)?;
        if let Some(existing) = self.pools.get(&input.worker_pool_id) {
            // idempotent, as upstream's create: the same definition again changes nothing
            let same_config = serde_json::from_str::<serde_json::Value>(&existing.config)
                .is_ok_and(|c| c == input.config);
            let same = existing.provider_id == input.provider_id
                && existing.description == input.description
                && same_config
                && existing.owner == input.owner
                && existing.email_on_error == input.email_on_error;
            if same {
                return Ok(vec![]);
            }
            return Err(E::Conflict("Worker pool already exists".into()));
        }
        Ok(vec![WorkerEvent::WorkerPoolCreated {
            worker_pool_id: input.worker_pool_id.clone(),
            provider_id: input.provider_id.clone(),
            description: input.description.clone(),
            config,
            owner: input.owner.clone(),
            email_on_error: input.email_on_error,
        }])
    }

    fn update_pool(&self, input: &PoolInput) -> Decided {
        let config = self.check_definition(input)?;
        let pool = self.pool_or(&input.worker_pool_id, "Worker pool does not exist")?;
        Ok(vec![WorkerEvent::WorkerPoolUpdated {
            worker_pool_id: input.worker_pool_id.clone(),
            previous_provider_ids: previous_providers(pool, &input.provider_id),
            provider_id: input.provider_id.clone(),
            description: input.description.clone(),
            config,
            owner: input.owner.clone(),
            email_on_error: input.email_on_error,
        }])
    }

    fn delete_pool(&self, id: &WorkerPoolId) -> Decided {
        let pool = self.pool_or(id, "Worker pool does not exist")?;
        if pool.provider_id == NULL_PROVIDER {
            return Ok(vec![]);
        }
        Ok(vec![WorkerEvent::WorkerPoolUpdated {
            worker_pool_id: id.clone(),
            previous_provider_ids: previous_providers(pool, NULL_PROVIDER),
            provider_id: NULL_PROVIDER.into(),
            description: pool.description.clone(),
            config: pool.config.clone(),
            owner: pool.owner.clone(),
            email_on_error: pool.email_on_error,
        }])
    }

    fn pool_or(&self, id: &WorkerPoolId, missing: &str) -> Result<&WorkerPool, E> {
        self.pools
            .get(id)
            .ok_or_else(|| E::NotFound(missing.to_string()))
    }

    // --- workers ---------------------------------------------------------------------------

    /// The pool and the type of its current provider, for createWorker and updateWorker.
    fn pool_provider(&self, id: &WorkerPoolId) -> Result<(&WorkerPool, ProviderType), E> {
        let pool = self.pool_or(id, &format!("Worker pool {id} does not exist"))?;
        let ptype = self.provider_type(&pool.provider_id).ok_or_else(|| {
            E::NotFound(format!(
                "Provider {} for worker pool {id} does not exist",
                pool.provider_id
            ))
        })?;
        Ok((pool, ptype))
    }

    fn create_worker(
        &self,
        key: &WorkerKey,
        expires: Millis,
        capacity: u32,
        static_secret: Option<&Sealed>,
        now: Millis,
    ) -> Decided {
        self.pool_or(
            &key.worker_pool_id,
            &format!("Worker pool {} does not exist", key.worker_pool_id),
        )?;
        if expires < now {
            return Err(E::Input("worker.expires must be in the future".into()));
        }
        let (pool, ptype) = self.pool_provider(&key.worker_pool_id)?;
        static_only(ptype)?;
        let static_secret =
            static_secret.ok_or_else(|| E::Input("no worker staticSecret provided".into()))?;
        if let Some(existing) = self.workers.get(key) {
            let same = existing.provider_id == pool.provider_id
                && existing.state == WorkerState::Running
                && existing.capacity == capacity;
            return if same {
                Ok(vec![])
            } else {
                Err(E::Conflict("Worker already exists".into()))
            };
        }
        Ok(vec![WorkerEvent::WorkerCreated {
            worker: key.clone(),
            provider_id: pool.provider_id.clone(),
            capacity,
            expires,
            static_secret: static_secret.clone(),
        }])
    }

    fn update_worker(
        &self,
        key: &WorkerKey,
        expires: Millis,
        capacity: u32,
        static_secret: Option<&Sealed>,
    ) -> Decided {
        let (_, ptype) = self.pool_provider(&key.worker_pool_id)?;
        let worker = self
            .workers
            .get(key)
            .ok_or_else(|| E::NotFound(format!("Worker {} does not exist", key.path())))?;
        static_only(ptype)?;
        let static_secret = static_secret
            .or(worker.static_secret.as_ref())
            .ok_or_else(|| E::Input("no worker staticSecret provided".into()))?;
        Ok(vec![WorkerEvent::WorkerUpdated {
            worker: key.clone(),
            capacity,
            expires,
            static_secret: static_secret.clone(),
        }])
    }

    fn remove_worker(&self, key: &WorkerKey) -> Decided {
        let worker = self
            .workers
            .get(key)
            .ok_or_else(|| E::NotFound("Worker not found".into()))?;
        let ptype = self.provider_type(&worker.provider_id).ok_or_else(|| {
            E::NotFound(format!(
                "Provider {} for this worker does not exist",
                worker.provider_id
            ))
        })?;
        static_only(ptype)?;
        if worker.state == WorkerState::Stopped {
            return Ok(vec![]);
        }
        Ok(vec![WorkerEvent::WorkerRemoved {
            worker: key.clone(),
        }])
    }

    // --- registration ----------------------------------------------------------------------

    /// registerWorker, in upstream's order of checks (worker-manager.md §2).
    fn register(
        &self,
        key: &WorkerKey,
        provider_id: &str,
        proof: Option<&Proof>,
        secret: &Sealed,
        now: Millis,
    ) -> Decided {
        let pool_id = &key.worker_pool_id;
        let pool = self.pool_or(pool_id, &format!("Worker pool {pool_id} does not exist"))?;
        let ptype = self
            .provider_type(provider_id)
            .ok_or_else(|| E::NotFound(format!("Provider {provider_id} does not exist")))?;
        if pool.provider_id != provider_id
            && !pool.previous_provider_ids.iter().any(|p| p == provider_id)
        {
            return Err(E::Input(format!(
                "Worker pool {pool_id} not associated with provider {provider_id}"
            )));
        }
        let (group, id) = (&key.worker_group, &key.worker_id);
        let worker = self.workers.get(key).ok_or_else(|| {
            E::NotFound(format!(
                "Worker {group}/{id} in worker pool {pool_id} does not exist"
            ))
        })?;
        if worker.expires < now {
            return Err(E::Input(format!("Worker {group}/{id} has expired")));
        }
        if worker.provider_id != provider_id {
            return Err(E::Input(format!(
                "Worker {group}/{id} does not have provider {provider_id}"
            )));
        }
        static_only(ptype)?;
        check_static_proof(worker, proof)?;
        Ok(vec![registered(key, pool, secret, now)])
    }

    /// reregisterWorker: the secret of the latest registration buys new credentials.
    fn reregister(&self, key: &WorkerKey, proof: &Proof, secret: &Sealed, now: Millis) -> Decided {
        let refused = || E::Input("Could not generate credentials for this secret".into());
        let worker = self.workers.get(key).ok_or_else(refused)?;
        let stored = worker.secret.as_ref().ok_or_else(refused)?;
        if !proof.matches(&key.registration_secret_owner(), stored) {
            return Err(refused());
        }
        let (group, id) = (&key.worker_group, &key.worker_id);
        if worker.state != WorkerState::Running {
            return Err(E::Input(format!("Worker {group}/{id} is not running")));
        }
        if worker.expires < now {
            return Err(E::Input(format!("Worker {group}/{id} has expired")));
        }
        let pool = self.pool_or(&key.worker_pool_id, "Worker pool does not exist")?;
        Ok(vec![registered(key, pool, secret, now)])
    }

    // --- errors ----------------------------------------------------------------------------

    fn report_error(
        &self,
        pool_id: &WorkerPoolId,
        error_id: Slug,
        (group, id): (&String, &String),
        [kind, title, description]: [&String; 3],
        extra: &Map<String, Value>,
    ) -> Decided {
        let pool = self.pool_or(pool_id, "Worker pool does not exist")?;
        if self.provider_type(&pool.provider_id).is_none() {
            return Err(E::Input("Invalid Provider".into()));
        }
        let mut extra = extra.clone();
        extra.insert("workerGroup".into(), Value::String(group.clone()));
        extra.insert("workerId".into(), Value::String(id.clone()));
        Ok(vec![WorkerEvent::WorkerErrorReported {
            worker_pool_id: pool_id.clone(),
            error_id,
            worker_group: group.clone(),
            worker_id: id.clone(),
            kind: kind.clone(),
            title: title.clone(),
            description: description.clone(),
            extra: Value::Object(extra).to_string(),
            launch_config_id: None,
        }])
    }

    // --- the fold --------------------------------------------------------------------------

    /// Moves state; no rules. `at` is the event's time.
    pub fn apply(&mut self, event: &WorkerEvent, at: Millis) {
        match event.clone() {
            WorkerEvent::PurgeRequestsExpired { requests } => {
                for key in &requests {
                    self.purges.remove(key);
                }
            }
            WorkerEvent::CachePurgeRequested {
                worker_pool_id,
                cache_name,
                before,
                expires,
            } => {
                self.purges.insert(
                    (worker_pool_id.clone(), cache_name.clone()),
                    PurgeRequest {
                        worker_pool_id,
                        cache_name,
                        before,
                        expires,
                    },
                );
            }
            WorkerEvent::WorkerPoolCreated {
                worker_pool_id,
                provider_id,
                description,
                config,
                owner,
                email_on_error,
            } => {
                let pool = WorkerPool {
                    worker_pool_id: worker_pool_id.clone(),
                    provider_id,
                    previous_provider_ids: vec![],
                    description,
                    config,
                    owner,
                    email_on_error,
                    created: at,
                    last_modified: at,
                };
                self.pools.insert(worker_pool_id, pool);
            }
            WorkerEvent::WorkerPoolUpdated {
                worker_pool_id,
                provider_id,
                previous_provider_ids,
                description,
                config,
                owner,
                email_on_error,
            } => {
                if let Some(p) = self.pools.get_mut(&worker_pool_id) {
                    p.provider_id = provider_id;
                    p.previous_provider_ids = previous_provider_ids;
                    p.description = description;
                    p.config = config;
                    p.owner = owner;
                    p.email_on_error = email_on_error;
                    p.last_modified = at;
                }
            }
            WorkerEvent::WorkerCreated {
                worker,
                provider_id,
                capacity,
                expires,
                static_secret,
            } => {
                let w = Worker {
                    key: worker.clone(),
                    provider_id,
                    state: WorkerState::Running,
                    capacity,
                    created: at,
                    expires,
                    last_modified: at,
                    last_checked: at,
                    static_secret: Some(static_secret),
                    secret: None,
                    registered_until: None,
                };
                self.workers.insert(worker, w);
            }
            WorkerEvent::WorkerUpdated {
                worker,
                capacity,
                expires,
                static_secret,
            } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.capacity = capacity;
                    w.expires = expires;
                    w.static_secret = Some(static_secret);
                    w.last_modified = at;
                }
            }
            WorkerEvent::WorkerRemoved { worker } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.state = WorkerState::Stopped;
                    w.last_modified = at;
                }
            }
            WorkerEvent::WorkerRegistered {
                worker,
                expires,
                secret,
            } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.secret = Some(secret);
                    w.registered_until = Some(expires);
                }
            }
            // errors are rows of the projection, not state
            WorkerEvent::WorkerErrorReported { .. } | WorkerEvent::PoolErrorsExpired { .. } => {}
            WorkerEvent::WorkerExpired { worker } => {
                self.workers.remove(&worker);
            }
        }
    }
}

/// The previous providers once `pool` switches to `next`: the current one joins them (when
/// it changes), the new one leaves them.
fn previous_providers(pool: &WorkerPool, next: &str) -> Vec<String> {
    let mut previous: Vec<String> = pool
        .previous_provider_ids
        .iter()
        .filter(|p| p.as_str() != next)
        .cloned()
        .collect();
    if pool.provider_id != next && !previous.contains(&pool.provider_id) {
        previous.push(pool.provider_id.clone());
    }
    previous
}

/// Only the static provider creates, updates, removes and registers workers by API; the
/// others answer with upstream's base provider's words.
fn static_only(ptype: ProviderType) -> Result<(), E> {
    match ptype {
        ProviderType::Static => Ok(()),
        ProviderType::Null => Err(E::Input("not supported for this provider".into())),
    }
}

/// The static provider's identity proof: a running worker and its exact `staticSecret`.
fn check_static_proof(worker: &Worker, proof: Option<&Proof>) -> Result<(), E> {
    if worker.state != WorkerState::Running {
        return Err(E::Input("worker is not running".into()));
    }
    let proof =
        proof.ok_or_else(|| E::Input("missing staticSecret in workerIdentityProof".into()))?;
    let owner = worker.key.static_secret_owner();
    match &worker.static_secret {
        Some(stored) if proof.matches(&owner, stored) => Ok(()),
        _ => Err(E::Input("bad staticSecret in workerIdentityProof".into())),
    }
}

/// A registration until now + the pool's reregistration timeout.
fn registered(key: &WorkerKey, pool: &WorkerPool, secret: &Sealed, now: Millis) -> WorkerEvent {
    WorkerEvent::WorkerRegistered {
        worker: key.clone(),
        expires: now.plus(config::reregistration_timeout_ms(&pool.config)),
        secret: secret.clone(),
    }
}
