//! The worker-manager projection and its writer.
//!
//! `WorkerManagerView` folds `WorkerEvent`s (topic `taskledger.worker-manager`) into the
//! `worker_manager` column family: pools, workers and stream sequences, which it also keeps in
//! memory (static pools and workers are few), and pool errors, which stay on disk only (nothing
//! decides against them; they are listed by pool in log order).
//!
//! `WorkerManagerEngine` is the partition's single writer (`single::ServiceEngine`): load ->
//! decide -> append -> apply -> answer, one command at a time.
//!
//! **Invariant:** state, sequences, error rows and the consumed offset go in one batch.

use crate::auth_view::{audit_rows, AuditEntry};
use crate::keys;
use crate::single::{Decision, Service, ServiceEngine, ServiceError};
use crate::store::{cf, StoreError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::time::Millis;
use taskledger_core::worker_manager::{
    PoolError, PurgeRequest, Subject, Worker, WorkerCommand, WorkerEvent, WorkerManagerError,
    WorkerManagerState, WorkerPool, WorkerPoolId, NULL_PROVIDER, WORKER_MANAGER_TOPIC,
};

/// The worker-manager's single partition.
pub const WORKER_MANAGER_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const WORKER_MANAGER_CONSUMER: &str = "worker-manager-view";

struct Inner {
    state: WorkerManagerState,
    /// Last applied sequence per stream.
    sequences: HashMap<String, u64>,
}

pub struct WorkerManagerView {
    db: Arc<DB>,
    inner: RwLock<Inner>,
}

/// Calls `f` with every `worker_manager` row whose key starts with `prefix`.
fn scan_prefix(
    db: &DB,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let wm = cf(db, keys::CF_WORKER_MANAGER)?;
    for item in db.iterator_cf(wm, IteratorMode::From(prefix, Direction::Forward)) {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        f(&k, &v)?;
    }
    Ok(())
}

impl WorkerManagerView {
    /// Loads pools, workers and sequences into memory (with the default providers).
    pub fn open(db: Arc<DB>) -> Result<WorkerManagerView, StoreError> {
        let mut state = WorkerManagerState::default();
        let mut sequences = HashMap::new();
        scan_prefix(&db, keys::WM_POOL_PREFIX, |_, v| {
            let p: WorkerPool = codec::decode(v)?;
            state.pools.insert(p.worker_pool_id.clone(), p);
            Ok(())
        })?;
        scan_prefix(&db, keys::WM_WORKER_PREFIX, |_, v| {
            let w: Worker = codec::decode(v)?;
            state.workers.insert(w.key.clone(), w);
            Ok(())
        })?;
        scan_prefix(&db, keys::WM_PURGE_PREFIX, |_, v| {
            let r: PurgeRequest = codec::decode(v)?;
            state
                .purges
                .insert((r.worker_pool_id.clone(), r.cache_name.clone()), r);
            Ok(())
        })?;
        scan_prefix(&db, keys::WM_STREAM_PREFIX, |k, v| {
            if let (Some(id), Ok(b)) = (keys::wm_stream_id(k), <[u8; 8]>::try_from(v)) {
                sequences.insert(id.to_string(), u64::from_be_bytes(b));
            }
            Ok(())
        })?;
        Ok(WorkerManagerView {
            db,
            inner: RwLock::new(Inner { state, sequences }),
        })
    }

    /// Reads the state under the lock.
    pub fn read<R>(&self, f: impl FnOnce(&WorkerManagerState) -> R) -> R {
        f(&self.inner.read().expect("worker-manager state lock").state)
    }

    fn sequence(&self, stream: &str) -> u64 {
        self.inner
            .read()
            .expect("worker-manager state lock")
            .sequences
            .get(stream)
            .copied()
            .unwrap_or(0)
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(
            WORKER_MANAGER_CONSUMER,
            WORKER_MANAGER_TOPIC,
            WORKER_MANAGER_PARTITION,
        )
    }

    /// The rows one applied envelope changes: its stream's sequence and its subject's row.
    fn write_rows(
        &self,
        batch: &mut WriteBatch,
        batch_errors: &mut Vec<(WorkerPoolId, Millis, Vec<u8>)>,
        state: &WorkerManagerState,
        env: &Envelope<WorkerEvent>,
        offset: u64,
        action: Option<&'static str>,
    ) -> Result<(), StoreError> {
        let wm = cf(&self.db, keys::CF_WORKER_MANAGER)?;
        batch.put_cf(
            wm,
            keys::wm_stream(&env.stream_id),
            env.sequence.to_be_bytes(),
        );
        match env.payload.subject() {
            Subject::Pool(id) => {
                match state.pools.get(id) {
                    Some(p) => batch.put_cf(wm, keys::wm_pool(id.as_str()), codec::encode(p)?),
                    None => batch.delete_cf(wm, keys::wm_pool(id.as_str())),
                }
                if let Some(action_type) = action {
                    let entry = AuditEntry {
                        client_id: env.actor.client_id.clone(),
                        action_type: action_type.into(),
                        created: env.time,
                        entity_id: id.as_str().to_string(),
                        entity_type: "worker-pool".into(),
                        offset,
                    };
                    let bytes = codec::encode(&entry)?;
                    batch.put_cf(wm, keys::wm_audit(id.as_str(), offset), &bytes);
                    batch.put_cf(wm, keys::wm_audit_actor(&entry.client_id, offset), &bytes);
                }
            }
            Subject::Worker(k) => {
                let key = keys::wm_worker(k.worker_pool_id.as_str(), &k.worker_group, &k.worker_id);
                match state.workers.get(k) {
                    Some(w) => batch.put_cf(wm, key, codec::encode(w)?),
                    None => batch.delete_cf(wm, key),
                }
            }
            Subject::Purge {
                worker_pool_id,
                cache_name,
            } => {
                let key = (worker_pool_id.to_string(), cache_name.to_string());
                if let Some(r) = state.purges.get(&key) {
                    batch.put_cf(
                        wm,
                        keys::wm_purge(worker_pool_id, cache_name),
                        codec::encode(r)?,
                    );
                }
            }
            // by key: a request put earlier in the same batch (a rebuild) goes too
            Subject::PurgesExpired(requests) => {
                for (pool, cache_name) in requests {
                    batch.delete_cf(wm, keys::wm_purge(pool, cache_name));
                }
            }
            Subject::PoolError(pool) => {
                if let Some(row) = PoolError::from_event(&env.payload, env.time) {
                    let key = keys::wm_error(pool.as_str(), offset);
                    batch.put_cf(wm, &key, codec::encode(&row)?);
                    batch_errors.push((pool.clone(), row.reported, key));
                }
                if let WorkerEvent::PoolErrorsExpired { before, .. } = &env.payload {
                    // rows are in log order, which is the order of their times: the old ones
                    // come first
                    let prefix = keys::wm_error_prefix(pool.as_str());
                    for item in self
                        .db
                        .iterator_cf(wm, IteratorMode::From(&prefix, Direction::Forward))
                    {
                        let (k, v) = item?;
                        if !k.starts_with(&prefix) {
                            break;
                        }
                        let row: PoolError = codec::decode(&v)?;
                        if row.reported >= *before {
                            break;
                        }
                        batch.delete_cf(wm, k);
                    }
                    for (of, reported, key) in batch_errors.iter() {
                        if of == pool && reported < before {
                            batch.delete_cf(wm, key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A pool's errors that `keep` accepts, newest first (upstream orders them by `reported`
    /// descending; the log's order is the order they were reported in), after the row key
    /// `after`, at most `limit`; and the key to continue from when more may remain.
    pub fn errors(
        &self,
        pool: &str,
        after: Option<Vec<u8>>,
        limit: usize,
        keep: impl Fn(&PoolError) -> bool,
    ) -> Result<(Vec<PoolError>, Option<Vec<u8>>), StoreError> {
        let prefix = keys::wm_error_prefix(pool);
        let (start, skip) = match after {
            Some(k) if k.starts_with(&prefix) => (k.clone(), Some(k)),
            _ => {
                // past the last offset: a reverse seek lands on the newest row
                let mut end = prefix.clone();
                end.extend_from_slice(&[0xFF; 9]);
                (end, None)
            }
        };
        let wm = cf(&self.db, keys::CF_WORKER_MANAGER)?;
        let mut out = Vec::new();
        let mut last = None;
        for item in self
            .db
            .iterator_cf(wm, IteratorMode::From(&start, Direction::Reverse))
        {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if skip.as_deref() == Some(&k[..]) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, last));
            }
            let row: PoolError = codec::decode(&v)?;
            if keep(&row) {
                out.push(row);
            }
            last = Some(k.to_vec());
        }
        Ok((out, None))
    }
}

/// The audit action a worker-pool event records (auth.md §9, entity type `worker-pool`),
/// judged against the state before it: created; deleted, when it switches a pool of another
/// provider to `null-provider`; otherwise updated.
fn audited(before: &WorkerManagerState, event: &WorkerEvent) -> Option<&'static str> {
    match event {
        WorkerEvent::WorkerPoolCreated { .. } => Some("created"),
        WorkerEvent::WorkerPoolUpdated {
            worker_pool_id,
            provider_id,
            ..
        } => {
            let was_live = before
                .pools
                .get(worker_pool_id)
                .is_some_and(|p| p.provider_id != NULL_PROVIDER);
            Some(if provider_id == NULL_PROVIDER && was_live {
                "deleted"
            } else {
                "updated"
            })
        }
        WorkerEvent::WorkerCreated { .. }
        | WorkerEvent::WorkerUpdated { .. }
        | WorkerEvent::WorkerRemoved { .. }
        | WorkerEvent::WorkerRegistered { .. }
        | WorkerEvent::WorkerErrorReported { .. }
        | WorkerEvent::WorkerExpired { .. }
        | WorkerEvent::PoolErrorsExpired { .. }
        | WorkerEvent::CachePurgeRequested { .. }
        | WorkerEvent::PurgeRequestsExpired { .. } => None,
    }
}

impl WorkerManagerView {
    /// When the pool's oldest kept error was reported, if it has one.
    pub fn oldest_error(&self, pool: &str) -> Result<Option<Millis>, StoreError> {
        let wm = cf(&self.db, keys::CF_WORKER_MANAGER)?;
        let prefix = keys::wm_error_prefix(pool);
        let first = self
            .db
            .iterator_cf(wm, IteratorMode::From(&prefix, Direction::Forward))
            .next()
            .transpose()?;
        match first {
            Some((k, v)) if k.starts_with(&prefix) => {
                Ok(Some(codec::decode::<PoolError>(&v)?.reported))
            }
            _ => Ok(None),
        }
    }

    /// getEntityHistory of a worker pool: what happened to it, oldest first.
    pub fn pool_history(
        &self,
        pool: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        audit_rows(
            &self.db,
            keys::CF_WORKER_MANAGER,
            &keys::wm_audit_prefix(pool),
            after,
            limit,
        )
    }

    /// What one client did to worker pools, oldest first, after the row key `after`, at most
    /// `limit`; and the key to continue from when more remain.
    pub fn actor_history(
        &self,
        client_id: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        audit_rows(
            &self.db,
            keys::CF_WORKER_MANAGER,
            &keys::wm_audit_actor_prefix(client_id),
            after,
            limit,
        )
    }

    /// The errors of `pools` reported at or after `since`, each pool's newest first. Each
    /// pool's rows are read backwards from its newest and the scan stops at the first older
    /// one (rows are in log order, which is the order of their times), so older errors are
    /// never read.
    pub fn errors_since<'p>(
        &self,
        pools: impl IntoIterator<Item = &'p str>,
        since: Millis,
    ) -> Result<Vec<PoolError>, StoreError> {
        let wm = cf(&self.db, keys::CF_WORKER_MANAGER)?;
        let mut out = Vec::new();
        for pool in pools {
            let prefix = keys::wm_error_prefix(pool);
            let mut end = prefix.clone();
            end.extend_from_slice(&[0xFF; 9]);
            for item in self
                .db
                .iterator_cf(wm, IteratorMode::From(&end, Direction::Reverse))
            {
                let (k, v) = item?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let row: PoolError = codec::decode(&v)?;
                if row.reported < since {
                    break;
                }
                out.push(row);
            }
        }
        Ok(out)
    }
}

pub type WorkerManagerEngineError = ServiceError<WorkerManagerError>;

/// The worker-manager's writer (see `single`).
pub type WorkerManagerEngine = ServiceEngine<WorkerManagerView>;

impl Service for WorkerManagerView {
    type Event = WorkerEvent;
    type Command = WorkerCommand;
    type Refusal = WorkerManagerError;
    const TOPIC: &'static str = WORKER_MANAGER_TOPIC;
    const PARTITION: u32 = WORKER_MANAGER_PARTITION;
    const NAME: &'static str = "worker-manager";

    fn decide(
        &self,
        command: &WorkerCommand,
        now: Millis,
    ) -> Result<Decision<WorkerEvent>, WorkerManagerEngineError> {
        let events = self
            .read(|s| s.decide(command, now))
            .map_err(ServiceError::Domain)?;
        let stream = command.stream_id();
        Ok(Decision {
            last_sequence: self.sequence(&stream),
            stream,
            events,
        })
    }
    fn type_name(event: &WorkerEvent) -> &'static str {
        event.type_name()
    }
    /// Folds envelopes stored at `offsets`; one batch with the position to read from next.
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<WorkerEvent>],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let mut inner = self.inner.write().expect("worker-manager state lock");
        // error rows this batch put, which a later expiry in it must see: the database does
        // not hold them yet (a rebuild folds a whole log in one batch)
        let mut batch_errors = Vec::new();
        for (&offset, env) in offsets.iter().zip(envelopes) {
            let seen = inner.sequences.get(&env.stream_id).copied().unwrap_or(0);
            if env.sequence <= seen {
                continue;
            }
            let action = audited(&inner.state, &env.payload);
            inner.state.apply(&env.payload, env.time);
            inner.sequences.insert(env.stream_id.clone(), env.sequence);
            self.write_rows(
                &mut batch,
                &mut batch_errors,
                &inner.state,
                env,
                offset,
                action,
            )?;
        }
        batch.put_cf(
            cf(&self.db, keys::CF_META)?,
            Self::offset_key(),
            next.to_be_bytes(),
        );
        self.db.write(batch)?;
        Ok(())
    }
    fn consumer_offset(&self) -> Result<u64, StoreError> {
        crate::store::read_u64(&self.db, keys::CF_META, &Self::offset_key())
    }
}

#[cfg(test)]
mod tests;
