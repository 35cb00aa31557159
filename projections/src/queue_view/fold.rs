//! The fold: a batch of queue events over the projection's state, into one batch of writes.

use super::folded::{FastMap, Folded, Rows};
use super::recent::Recent;
use super::*;
use rocksdb::{Direction, IteratorMode};
use std::collections::BTreeMap;

/// The state the events of one batch are folded over: read through to the database, written
/// back into the batch once at the end.
pub(super) struct Fold<'a> {
    pub(super) db: &'a DB,
    /// The previous batch's writes while they are still on their way to the database (a
    /// rebuild's overlap). Reads look here before the database.
    pub(super) overlay: Option<&'a Folded>,
    /// The view's recent rows, read after the overlay and before the database.
    pub(super) recent: Option<&'a Mutex<Recent>>,
    /// Boxed: a task is moved out and back in for each of its events, and a batch's map of
    /// them is allocated anew for each fold.
    pub(super) tasks: FastMap<TaskId, Option<Box<Task>>>,
    pub(super) groups: FastMap<TaskId, Option<TaskGroup>>,
    pub(super) workers: FastMap<Vec<u8>, Option<WorkerRecord>>,
    pub(super) queues: FastMap<String, Option<TaskQueueRecord>>,
    pub(super) artifacts: FastMap<Vec<u8>, Option<Artifact>>,
    pub(super) streams: FastMap<String, u64>,
    /// The run index entries the database holds for the tasks this fold read from it.
    pub(super) indexed: FastMap<TaskId, Vec<IndexEntry>>,
}

/// A task's entry in one of the run indexes: column family, key, value.
pub(super) type IndexEntry = (&'static str, Vec<u8>, Vec<u8>);

/// The run indexes' entries for `task`, a function of its state alone: its last run in the
/// pending queue while pending, in the claims and the claim-expiry timers while running, and
/// its deadline timer until it is resolved. A fold writes the difference between a task's
/// entries before the batch and after it, so a task put in the pending queue and claimed
/// within one batch never reaches the pending column family.
pub(super) fn run_index(task: &Task) -> Result<Vec<IndexEntry>, StoreError> {
    let mut entries = Vec::with_capacity(3);
    let id = &task.task_id;
    let queue = task.definition.task_queue_id.as_str();
    if let Some(run) = task.last_run() {
        match run.state {
            RunState::Pending => entries.push((
                keys::CF_PENDING,
                keys::pending(queue, task.priority.rank(), run.scheduled, id, run.run_id),
                Vec::new(),
            )),
            RunState::Running => {
                let claim = ClaimRecord {
                    taken_until: run.taken_until.unwrap_or_default(),
                    worker_group: run.worker_group.clone().unwrap_or_default(),
                    worker_id: run.worker_id.clone().unwrap_or_default(),
                    claimed: run.started.unwrap_or_default(),
                };
                entries.push((
                    keys::CF_TIMERS,
                    keys::timer(claim.taken_until, TimerKind::ClaimExpiry, id, run.run_id),
                    Vec::new(),
                ));
                entries.push((
                    keys::CF_CLAIMS,
                    keys::claim(queue, id, run.run_id),
                    codec::encode(&claim)?,
                ));
            }
            RunState::Completed | RunState::Failed | RunState::Exception => {}
        }
    }
    if task.resolution().is_none() {
        entries.push((
            keys::CF_TIMERS,
            keys::timer(task.definition.deadline, TimerKind::Deadline, id, 0),
            Vec::new(),
        ));
    }
    Ok(entries)
}

impl<'a> Fold<'a> {
    /// A row's bytes as the database will hold them once the overlay is written, read by
    /// `read`.
    pub(super) fn read_raw<R>(
        &self,
        cf_name: &'static str,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        if let Some(unwritten) = self.overlay.and_then(|o| o.get(cf_name, key)) {
            return unwritten.map(read).transpose();
        }
        read_row(self.db, self.recent, cf_name, key, read)
    }

    /// A row as the database will hold it once the overlay is written.
    pub(super) fn get<T: serde::de::DeserializeOwned>(
        &self,
        cf_name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.read_raw(cf_name, key, decode_row)
    }

    /// The rows of `cf_name` under `prefix`, the overlay's writes included.
    pub(super) fn prefixed(
        &self,
        cf_name: &'static str,
        prefix: &[u8],
    ) -> Result<Rows, StoreError> {
        let mut found = BTreeMap::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(cf(self.db, cf_name)?, mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            found.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self
            .overlay
            .into_iter()
            .flat_map(|o| o.prefixed(cf_name, prefix))
        {
            match v {
                Some(v) => found.insert(k.clone(), v.clone()),
                None => found.remove(k),
            };
        }
        Ok(found.into_iter().collect())
    }

    /// The task, taken out of the fold (no copy of its definition); the caller puts it back.
    /// A task read from the database has its run index recorded as it is stored, for the
    /// fold's end to compare with the task's final state.
    pub(super) fn take_task(&mut self, id: &TaskId) -> Result<Option<Box<Task>>, StoreError> {
        if let Some(t) = self.tasks.remove(id) {
            return Ok(t);
        }
        let stored: Option<Box<Task>> = self.get(keys::CF_TASKS, &keys::task(id))?;
        if let Some(t) = &stored {
            self.indexed.insert(*id, run_index(t)?);
        }
        Ok(stored)
    }
    pub(super) fn group(&mut self, id: &TaskId) -> Result<Option<TaskGroup>, StoreError> {
        if let Some(g) = self.groups.get(id) {
            return Ok(g.clone());
        }
        let g: Option<TaskGroup> = self.get(keys::CF_GROUPS, &keys::task(id))?;
        self.groups.insert(*id, g.clone());
        Ok(g)
    }
    pub(super) fn worker(&mut self, key: &[u8]) -> Result<Option<WorkerRecord>, StoreError> {
        if let Some(w) = self.workers.get(key) {
            return Ok(w.clone());
        }
        let w: Option<WorkerRecord> = self.get(keys::CF_WORKERS, key)?;
        self.workers.insert(key.to_vec(), w.clone());
        Ok(w)
    }
    pub(super) fn queue(&mut self, q: &str) -> Result<Option<TaskQueueRecord>, StoreError> {
        if let Some(r) = self.queues.get(q) {
            return Ok(r.clone());
        }
        let r: Option<TaskQueueRecord> = self.get(keys::CF_TASK_QUEUES, &keys::task_queue(q))?;
        self.queues.insert(q.to_string(), r.clone());
        Ok(r)
    }
    pub(super) fn artifact(&mut self, key: &[u8]) -> Result<Option<Artifact>, StoreError> {
        if let Some(a) = self.artifacts.get(key) {
            return Ok(a.clone());
        }
        let a: Option<Artifact> = self.get(keys::CF_ARTIFACTS, key)?;
        self.artifacts.insert(key.to_vec(), a.clone());
        Ok(a)
    }
    pub(super) fn stream_seq(&mut self, stream: &str) -> Result<u64, StoreError> {
        if let Some(s) = self.streams.get(stream) {
            return Ok(*s);
        }
        let s = self
            .read_raw(keys::CF_STREAMS, stream.as_bytes(), decode_count)?
            .unwrap_or(0);
        self.streams.insert(stream.to_string(), s);
        Ok(s)
    }
}

impl QueueView {
    /// The first half of `apply`: folds the envelopes into the writes that `write_folded`
    /// then stores. `unwritten` is the previous batch while it is still being written (a
    /// rebuild overlaps the two): the fold reads through it, as if it were in the database.
    /// The caller runs one fold or write at a time, each batch's write after its
    /// predecessor's, and passes as `unwritten` every batch whose write has not finished.
    #[allow(clippy::too_many_arguments)]
    pub fn fold_batch(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<QueueEvent>],
        unwritten: Option<&Folded>,
    ) -> Result<Folded, StoreError> {
        let db = &*self.db;
        // sized for the batch, so a rebuild's batch of 32,768 events does not grow its maps
        // a doubling at a time: about 1.4 writes per event, a stream per 2.5 events and a
        // task per 5 in a run of full lifecycles
        let n = envelopes.len();
        let mut batch = Folded::for_events(n);
        let mut fold = Fold {
            db,
            overlay: unwritten,
            recent: self.recent.as_deref(),
            tasks: FastMap::with_capacity_and_hasher(n / 4, Default::default()),
            groups: FastMap::with_capacity_and_hasher(n / 4, Default::default()),
            workers: FastMap::default(),
            queues: FastMap::default(),
            artifacts: FastMap::default(),
            streams: FastMap::with_capacity_and_hasher(n / 2, Default::default()),
            indexed: FastMap::default(),
        };
        for (env, &offset) in envelopes.iter().zip(offsets) {
            // an envelope at or below the stream's applied sequence was applied already
            if env.sequence <= fold.stream_seq(&env.stream_id)? {
                continue;
            }
            fold.streams.insert(env.stream_id.clone(), env.sequence);
            if self.index_streams {
                batch.put(
                    keys::CF_LOG_INDEX,
                    keys::log_index(topic, partition, &env.stream_id, offset),
                    [],
                );
            }
            self.fold_event(&mut batch, &mut fold, &env.payload)?;
        }
        // each task's run index as its final state has it, against what the database holds
        let mut indexed = std::mem::take(&mut fold.indexed);
        for (id, t) in &fold.tasks {
            let before = indexed.remove(id).unwrap_or_default();
            let after = match t {
                Some(t) => run_index(t)?,
                None => Vec::new(),
            };
            for (cf_name, key, _) in &before {
                if !after.iter().any(|(c, k, _)| c == cf_name && k == key) {
                    batch.delete(cf_name, key.clone());
                }
            }
            for entry in after {
                if !before.contains(&entry) {
                    let (cf_name, key, value) = entry;
                    batch.put(cf_name, key, value);
                }
            }
        }
        for (id, t) in &fold.tasks {
            if let Some(t) = t {
                batch.put(keys::CF_TASKS, keys::task(id), codec::encode(t)?);
            }
        }
        for (id, g) in &fold.groups {
            if let Some(g) = g {
                batch.put(keys::CF_GROUPS, keys::task(id), codec::encode(g)?);
            }
        }
        for (k, w) in &fold.workers {
            if let Some(w) = w {
                batch.put(keys::CF_WORKERS, k.clone(), codec::encode(w)?);
            }
        }
        for (q, r) in &fold.queues {
            if let Some(r) = r {
                batch.put(keys::CF_TASK_QUEUES, keys::task_queue(q), codec::encode(r)?);
            }
        }
        for (k, a) in &fold.artifacts {
            if let Some(a) = a {
                batch.put(keys::CF_ARTIFACTS, k.clone(), codec::encode(a)?);
            }
        }
        for (s, seq) in &fold.streams {
            batch.put(keys::CF_STREAMS, s.as_bytes(), seq.to_be_bytes());
        }
        batch.put(
            keys::CF_META,
            keys::consumer_offset(consumer, topic, partition),
            next.to_be_bytes(),
        );
        {
            // a key of a mirrored column family that the mirror lacks is not in the database
            // either: deleting it would only add a tombstone (the key was put and deleted
            // within this fold). For a key the unwritten batch writes, that batch says instead.
            let mirror = self.mirror.read().expect("mirror lock");
            for (i, writes) in batch.hashed.iter_mut().enumerate() {
                let cf_name = FOLDED_CFS[i];
                let Some(mirrored) = mirror.get(cf_name) else {
                    // not mirrored: a delete stays, as the database may hold the key
                    continue;
                };
                let before = unwritten.map(|o| &o.hashed[i]);
                writes.retain(|key, value| {
                    value.is_some()
                        || match before.and_then(|b| b.get(key)) {
                            Some(before) => before.is_some(),
                            None => mirrored.contains_key(key),
                        }
                });
            }
        }
        Ok(batch)
    }

    pub(super) fn fold_event(
        &self,
        batch: &mut Folded,
        fold: &mut Fold,
        event: &QueueEvent,
    ) -> Result<(), StoreError> {
        match event {
            // changes nothing (it only has its messages published again)
            QueueEvent::Repeated { .. } => {}
            QueueEvent::TaskDefined {
                task_id,
                definition,
                unsatisfied,
            } => {
                let task = Task::defined(
                    *task_id,
                    TaskDefinition::clone(definition),
                    unsatisfied.clone(),
                );
                batch.put(
                    keys::CF_GROUP_MEMBERS,
                    keys::pair(&definition.task_group_id, task_id),
                    [],
                );
                for dep in &definition.dependencies {
                    batch.put(keys::CF_DEPENDENTS, keys::pair(dep, task_id), []);
                }
                batch.put(
                    keys::CF_EXPIRIES,
                    keys::expiry(definition.expires, &Expiring::Task(*task_id)),
                    [],
                );
                fold.tasks.insert(*task_id, Some(Box::new(task)));
            }
            QueueEvent::TaskExpired { task_id } => {
                if let Some(task) = fold.take_task(task_id)? {
                    self.forget_task(batch, fold, &task)?;
                }
                fold.tasks.insert(*task_id, None);
            }
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => {
                let before = fold.group(task_group_id)?;
                if let Some(g) = &before {
                    let key = keys::expiry(g.expires, &Expiring::TaskGroup(*task_group_id));
                    batch.delete(keys::CF_EXPIRIES, key);
                }
                let after = TaskGroup::apply(before, event);
                match &after {
                    Some(g) => batch.put(
                        keys::CF_EXPIRIES,
                        keys::expiry(g.expires, &Expiring::TaskGroup(*task_group_id)),
                        [],
                    ),
                    None => batch.delete(keys::CF_GROUPS, keys::task(task_group_id)),
                }
                fold.groups.insert(*task_group_id, after);
            }
            QueueEvent::ArtifactCreated {
                task_id,
                run_id,
                artifact,
            } => {
                let key = keys::artifact(task_id, *run_id, &artifact.name);
                let what = Expiring::Artifact(*task_id, *run_id, artifact.name.clone());
                // a compatible re-creation may extend `expires`
                if let Some(old) = fold.artifact(&key)? {
                    batch.delete(keys::CF_EXPIRIES, keys::expiry(old.expires, &what));
                }
                batch.put(keys::CF_EXPIRIES, keys::expiry(artifact.expires, &what), []);
                fold.artifacts.insert(key, Some(artifact.clone()));
            }
            QueueEvent::ArtifactExpired {
                task_id,
                run_id,
                name,
            } => {
                let key = keys::artifact(task_id, *run_id, name);
                if let Some(old) = fold.artifact(&key)? {
                    let what = Expiring::Artifact(*task_id, *run_id, name.clone());
                    batch.delete(keys::CF_EXPIRIES, keys::expiry(old.expires, &what));
                    batch.delete(keys::CF_ARTIFACTS, key.clone());
                }
                fold.artifacts.insert(key, None);
            }
            QueueEvent::ArtifactFinished {
                task_id,
                run_id,
                name,
            } => {
                let key = keys::artifact(task_id, *run_id, name);
                if let Some(mut a) = fold.artifact(&key)? {
                    a.present = true;
                    fold.artifacts.insert(key, Some(a));
                }
            }
            QueueEvent::WorkerSeen {
                task_queue_id,
                worker_group,
                worker_id,
                at,
                expires,
            } => {
                let key = keys::worker(task_queue_id.as_str(), worker_group, worker_id);
                let mut w = fold.worker(&key)?.unwrap_or(WorkerRecord {
                    first_claim: *at,
                    ..Default::default()
                });
                w.last_date_active = Some(*at);
                w.expires = w.expires.max(*expires);
                fold.workers.insert(key, Some(w));
                self.queue_seen(fold, task_queue_id, *at, *expires)?;
            }
            QueueEvent::WorkerQuarantined {
                task_queue_id,
                worker_group,
                worker_id,
                until,
                info,
                by,
                at,
            } => {
                let key = keys::worker(task_queue_id.as_str(), worker_group, worker_id);
                if let Some(mut w) = fold.worker(&key)? {
                    w.quarantine_until = Some(*until);
                    w.quarantine_info = Some(info.clone());
                    // events recorded before the caller was kept (an empty `by`) add none,
                    // in a rebuild as when they were first folded
                    if !by.is_empty() {
                        w.record_quarantine(QuarantineDetail {
                            client_id: by.clone(),
                            updated_at: *at,
                            until: *until,
                            info: info.clone(),
                        });
                    }
                    fold.workers.insert(key, Some(w));
                }
            }
            QueueEvent::RunScheduled { .. }
            | QueueEvent::RunClaimed { .. }
            | QueueEvent::RunReclaimed { .. }
            | QueueEvent::RunResolved { .. }
            | QueueEvent::RunExceptionRecorded { .. }
            | QueueEvent::DependencySatisfied { .. }
            | QueueEvent::PriorityChanged { .. }
            | QueueEvent::GroupPriorityApplied { .. } => self.fold_task_event(fold, event)?,
        }
        Ok(())
    }

    /// Everything a task left in the projection, for `TaskExpired`: its row, membership,
    /// dependency records (both ways), timers, expiry entry and artifacts. Its stream's
    /// sequence stays, so a task created later under the same id numbers its events on.
    pub(super) fn forget_task(
        &self,
        batch: &mut Folded,
        fold: &mut Fold,
        task: &Task,
    ) -> Result<(), StoreError> {
        let id = &task.task_id;
        let def = &task.definition;
        batch.delete(keys::CF_TASKS, keys::task(id));
        batch.delete(keys::CF_GROUP_MEMBERS, keys::pair(&def.task_group_id, id));
        for dep in &def.dependencies {
            batch.delete(keys::CF_DEPENDENTS, keys::pair(dep, id));
        }
        batch.delete(
            keys::CF_EXPIRIES,
            keys::expiry(def.expires, &Expiring::Task(*id)),
        );
        // its dependents' records, in the database and put earlier in this fold
        let mut dependents: Vec<Vec<u8>> = fold
            .prefixed(keys::CF_DEPENDENTS, &id.0)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        dependents.extend(
            batch
                .prefixed(keys::CF_DEPENDENTS, &id.0)
                .map(|(k, _)| k.clone()),
        );
        for key in dependents {
            batch.delete(keys::CF_DEPENDENTS, key);
        }
        // the artifacts, this fold's own first (the database does not hold them yet)
        let mut artifacts: HashMap<Vec<u8>, Option<Artifact>> = HashMap::new();
        for run in 0..task.runs.len() as u32 {
            for (key, v) in fold.prefixed(keys::CF_ARTIFACTS, &keys::artifact_prefix(id, run))? {
                artifacts.insert(key, Some(codec::decode(&v)?));
            }
        }
        for (key, a) in fold.artifacts.iter_mut() {
            if key.starts_with(&id.0) {
                artifacts.insert(key.clone(), a.take());
            }
        }
        for (key, a) in artifacts {
            if let (Some(a), Some((_, run))) = (a, keys::task_run_of_artifact(&key)) {
                let what = Expiring::Artifact(*id, run, a.name.clone());
                batch.delete(keys::CF_EXPIRIES, keys::expiry(a.expires, &what));
            }
            batch.delete(keys::CF_ARTIFACTS, key.clone());
            fold.artifacts.insert(key, None);
        }
        Ok(())
    }

    pub(super) fn queue_seen(
        &self,
        fold: &mut Fold,
        q: &TaskQueueId,
        at: Millis,
        expires: Millis,
    ) -> Result<(), StoreError> {
        let r = fold.queue(q.as_str())?;
        let expires = r.as_ref().map_or(expires, |r| r.expires.max(expires));
        fold.queues.insert(
            q.as_str().to_string(),
            Some(TaskQueueRecord {
                expires,
                last_date_active: at,
            }),
        );
        Ok(())
    }

    /// Run-level events: the task (its run indexes follow it at the end of the fold, see
    /// `run_index`) and, for a claim, its worker.
    pub(super) fn fold_task_event(
        &self,
        fold: &mut Fold,
        event: &QueueEvent,
    ) -> Result<(), StoreError> {
        let task_id = match event.stream() {
            taskledger_core::queue::Stream::Task(t) => t,
            taskledger_core::queue::Stream::TaskGroup(_)
            | taskledger_core::queue::Stream::Worker(_) => return Ok(()),
        };
        let Some(mut task) = fold.take_task(&task_id)? else {
            fold.tasks.insert(task_id, None);
            return Ok(());
        };
        task.apply(event);
        if let QueueEvent::RunClaimed {
            task_queue_id,
            worker_group,
            worker_id,
            run_id,
            at,
            ..
        } = event
        {
            let key = keys::worker(task_queue_id.as_str(), worker_group, worker_id);
            let mut w = fold.worker(&key)?.unwrap_or(WorkerRecord {
                first_claim: *at,
                expires: at.plus(DAY),
                ..Default::default()
            });
            w.recent_tasks.push((task_id, *run_id));
            if w.recent_tasks.len() > 20 {
                w.recent_tasks.remove(0);
            }
            fold.workers.insert(key, Some(w));
        }
        fold.tasks.insert(task_id, Some(task));
        Ok(())
    }
}
