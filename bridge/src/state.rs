//! The bridge's own database (offsets and the folded state its messages need) and a batch's
//! view of it: the stored state under the unstored changes of the batch before.

use crate::BridgeError;
use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use taskledger_core::codec;
use taskledger_core::log::QUEUE_TOPIC;
use taskledger_core::queue::{
    Artifact, ArtifactStorage, JsonText, Metadata, QueueEvent, Repeat, Task, TaskDefinition,
    TaskGroup,
};
use taskledger_core::worker_manager::WorkerKey;

/// The bridge's own database: offsets and the folded state its messages need.
pub struct BridgeState {
    pub(crate) db: DB,
    /// Whether the per-group counts of never-resolved tasks were kept from the log's start
    /// (false for a bridge database older than them: task-group-resolved stays off rather
    /// than fire early).
    pub(crate) group_counts: bool,
    /// Whether this open created the database (a database an earlier run created and that
    /// never stored a position may still owe the broker everything: it is never skipped).
    pub(crate) created_now: bool,
}

/// Marks a bridge database whose group counts start at offset 0.
const GROUP_COUNTS_MARKER: &[u8] = b"v:group-counts";
/// Marks a bridge database folding history without publishing it (`skip_history`), until
/// that fold reached the log's end.
const SKIPPING_MARKER: &[u8] = b"v:skipping-history";
/// Marks a bridge database opened before (see `BridgeState::created_now`).
const CREATED_MARKER: &[u8] = b"v:created";

pub(crate) fn offset_key(topic: &str) -> Vec<u8> {
    [b"o".as_slice(), topic.as_bytes()].concat()
}
pub(crate) fn task_key(id: &[u8]) -> Vec<u8> {
    [b"t".as_slice(), id].concat()
}
pub(crate) fn group_key(id: &[u8]) -> Vec<u8> {
    [b"g".as_slice(), id].concat()
}
/// Never-resolved tasks of a group.
fn unresolved_key(group: &[u8]) -> Vec<u8> {
    [b"u".as_slice(), group].concat()
}

/// Present once a task was counted as resolved in its group.
fn counted_key(task: &[u8]) -> Vec<u8> {
    [b"r".as_slice(), task].concat()
}

/// A worker pool's current provider.
pub(crate) fn pool_key(pool: &str) -> Vec<u8> {
    [b"mp".as_slice(), pool.as_bytes()].concat()
}

/// A static worker's provider and capacity.
pub(crate) fn worker_key(worker: &WorkerKey) -> Vec<u8> {
    [b"mw".as_slice(), worker.path().as_bytes()].concat()
}

/// Where the unfinished object artifacts of every run of `task` are kept.
fn task_artifacts_prefix(task: &[u8]) -> Vec<u8> {
    [b"a".as_slice(), task].concat()
}
fn artifact_key(task: &[u8], run: u32, name: &str) -> Vec<u8> {
    [
        task_artifacts_prefix(task).as_slice(),
        &run.to_be_bytes(),
        name.as_bytes(),
    ]
    .concat()
}

impl BridgeState {
    pub fn open(dir: &Path) -> Result<BridgeState, BridgeError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir)?;
        let mut state = BridgeState {
            db,
            group_counts: false,
            created_now: false,
        };
        if state.db.get(CREATED_MARKER)?.is_none() {
            state.db.put(CREATED_MARKER, b"1")?;
            state.created_now = true;
        }
        state.group_counts = state.db.get(GROUP_COUNTS_MARKER)?.is_some();
        if !state.group_counts && state.offset(QUEUE_TOPIC)? == 0 {
            state.db.put(GROUP_COUNTS_MARKER, b"1")?;
            state.group_counts = true;
        }
        if !state.group_counts {
            tracing::warn!(
                "this bridge database predates task-group-resolved bookkeeping; \
                 task-group-resolved is not published (a bridge database made by this \
                 version keeps the counts)"
            );
        }
        Ok(state)
    }

    /// Whether a `skip_history` fold began and has not reached the log's end yet.
    pub(crate) fn skipping(&self) -> Result<bool, BridgeError> {
        Ok(self.db.get(SKIPPING_MARKER)?.is_some())
    }

    pub(crate) fn set_skipping(&self, on: bool) -> Result<(), BridgeError> {
        if on {
            self.db.put(SKIPPING_MARKER, b"1")?;
        } else {
            self.db.delete(SKIPPING_MARKER)?;
        }
        Ok(())
    }

    pub fn offset(&self, topic: &str) -> Result<u64, BridgeError> {
        Ok(self
            .db
            .get(offset_key(topic))?
            .and_then(|v| v.as_slice().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, BridgeError> {
        match self.db.get(key)? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }
}

/// `map[key]`, else `parent[key]` (the previous batch's unstored changes), else the stored
/// value (remembered in `map`, so later reads see this batch's changes).
pub(crate) fn through<T: serde::de::DeserializeOwned + Clone>(
    state: &BridgeState,
    parent: Option<&HashMap<Vec<u8>, Option<T>>>,
    map: &mut HashMap<Vec<u8>, Option<T>>,
    key: Vec<u8>,
) -> Result<Option<T>, BridgeError> {
    Ok(load(state, parent, map, key)?.clone())
}

/// `through` without the copy: the entry in `map`, loaded there first if need be.
pub(crate) fn load<'m, T: serde::de::DeserializeOwned + Clone>(
    state: &BridgeState,
    parent: Option<&HashMap<Vec<u8>, Option<T>>>,
    map: &'m mut HashMap<Vec<u8>, Option<T>>,
    key: Vec<u8>,
) -> Result<&'m mut Option<T>, BridgeError> {
    use std::collections::hash_map::Entry;
    match map.entry(key) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(e) => {
            let v: Option<T> = match parent.and_then(|p| p.get(e.key())) {
                Some(v) => v.clone(),
                None => state.get(e.key())?,
            };
            Ok(e.insert(v))
        }
    }
}

/// Writes each folded value, or deletes its key when it is gone.
pub(crate) fn put_all<T: serde::Serialize>(
    batch: &mut WriteBatch,
    map: &HashMap<Vec<u8>, Option<T>>,
) -> Result<(), BridgeError> {
    for (k, v) in map {
        match v {
            Some(v) => batch.put(k, codec::encode(v)?),
            None => batch.delete(k),
        }
    }
    Ok(())
}

/// A rendered batch's changes to the folded state, kept until its messages are confirmed and
/// they are stored; the next batch renders through them meanwhile (`Overlay::parent`).
#[derive(Default)]
pub(crate) struct Changes {
    pub(crate) tasks: HashMap<Vec<u8>, Option<Task>>,
    pub(crate) groups: HashMap<Vec<u8>, Option<TaskGroup>>,
    pub(crate) artifacts: HashMap<Vec<u8>, Option<Artifact>>,
    /// Never-resolved task counts by group (`None`: the group expired), and whether a task was
    /// already counted as resolved (`false`: the task expired).
    pub(crate) counts: HashMap<Vec<u8>, Option<u64>>,
    pub(crate) counted: HashMap<Vec<u8>, bool>,
    /// Worker-manager facts: pools' providers, workers' (provider, capacity).
    pub(crate) pools: HashMap<Vec<u8>, Option<String>>,
    pub(crate) workers: HashMap<Vec<u8>, Option<(String, u32)>>,
}

impl Changes {
    pub(crate) fn commit(&self, batch: &mut WriteBatch) -> Result<(), BridgeError> {
        put_all(batch, &self.tasks)?;
        put_all(batch, &self.groups)?;
        put_all(batch, &self.artifacts)?;
        for (k, n) in &self.counts {
            match n {
                Some(n) => batch.put(k, n.to_be_bytes()),
                None => batch.delete(k),
            }
        }
        for (k, counted) in &self.counted {
            if *counted {
                batch.put(k, b"1");
            } else {
                batch.delete(k);
            }
        }
        put_all(batch, &self.pools)?;
        put_all(batch, &self.workers)?;
        Ok(())
    }
}

/// A batch's view of the folded state: the stored state, then the changes of the batch
/// before it that are not stored yet (`parent`), then this batch's changes.
pub(crate) struct Overlay<'a> {
    pub(crate) state: &'a BridgeState,
    pub(crate) parent: Option<Arc<Changes>>,
    pub(crate) changes: Changes,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(state: &'a BridgeState, parent: Option<Arc<Changes>>) -> Self {
        Overlay {
            state,
            parent,
            changes: Changes::default(),
        }
    }

    pub(crate) fn pool_provider(&mut self, pool: &str) -> Result<Option<String>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.pools);
        through(self.state, parent, &mut self.changes.pools, pool_key(pool))
    }

    pub(crate) fn worker_facts(
        &mut self,
        worker: &WorkerKey,
    ) -> Result<Option<(String, u32)>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.workers);
        through(
            self.state,
            parent,
            &mut self.changes.workers,
            worker_key(worker),
        )
    }

    fn count(&mut self, key: &[u8]) -> Result<u64, BridgeError> {
        if let Some(n) = self.changes.counts.get(key) {
            return Ok(n.unwrap_or(0));
        }
        let n = match self.parent.as_deref().and_then(|p| p.counts.get(key)) {
            Some(n) => n.unwrap_or(0),
            None => self
                .state
                .db
                .get(key)?
                .and_then(|v| v.as_slice().try_into().ok())
                .map_or(0, u64::from_be_bytes),
        };
        self.changes.counts.insert(key.to_vec(), Some(n));
        Ok(n)
    }

    /// The first time `task` is resolved, it leaves its group's never-resolved count.
    /// Returns the count after this resolution.
    pub(crate) fn resolve_in_group(&mut self, task: &Task) -> Result<u64, BridgeError> {
        let group = unresolved_key(&task.definition.task_group_id.0);
        let n = self.count(&group)?;
        let key = counted_key(&task.task_id.0);
        let parent = self.parent.as_deref();
        let already = match self
            .changes
            .counted
            .get(&key)
            .or_else(|| parent.and_then(|p| p.counted.get(&key)))
        {
            Some(b) => *b,
            None => self.state.db.get(&key)?.is_some(),
        };
        if already {
            return Ok(n);
        }
        self.changes.counted.insert(key, true);
        self.changes.counts.insert(group, Some(n.saturating_sub(1)));
        Ok(n.saturating_sub(1))
    }

    pub(crate) fn task(&mut self, key: Vec<u8>) -> Result<Option<Task>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.tasks);
        through(self.state, parent, &mut self.changes.tasks, key)
    }

    /// The task as this batch has it, without copying it (a task is large: its definition).
    pub(crate) fn task_mut(&mut self, key: Vec<u8>) -> Result<Option<&mut Task>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.tasks);
        Ok(load(self.state, parent, &mut self.changes.tasks, key)?.as_mut())
    }

    pub(crate) fn group(&mut self, key: Vec<u8>) -> Result<Option<TaskGroup>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.groups);
        through(self.state, parent, &mut self.changes.groups, key)
    }

    pub(crate) fn artifact(&mut self, key: Vec<u8>) -> Result<Option<Artifact>, BridgeError> {
        let parent = self.parent.as_deref().map(|p| &p.artifacts);
        through(self.state, parent, &mut self.changes.artifacts, key)
    }

    /// Folds one queue event; returns the artifact an `ArtifactFinished` finished (or a
    /// repeated finishArtifact names).
    pub(crate) fn apply(&mut self, event: &QueueEvent) -> Result<Option<Artifact>, BridgeError> {
        match event {
            QueueEvent::Repeated { repeat, .. } => {
                return match repeat {
                    Repeat::ArtifactCreated {
                        task_id,
                        run_id,
                        name,
                    } => self.artifact(artifact_key(&task_id.0, *run_id, name)),
                    Repeat::TaskDefined { .. }
                    | Repeat::RunPending { .. }
                    | Repeat::RunResolved { .. }
                    | Repeat::TaskGroupSealed { .. } => Ok(None),
                };
            }
            QueueEvent::TaskDefined {
                task_id,
                definition,
                ..
            } => {
                let t = Task::defined(*task_id, kept_definition(definition), Vec::new());
                self.changes.tasks.insert(task_key(&task_id.0), Some(t));
                let group = unresolved_key(&definition.task_group_id.0);
                let n = self.count(&group)?;
                self.changes.counts.insert(group, Some(n + 1));
            }
            // expiry publishes nothing upstream; the bridge just forgets what it kept: the
            // task, its resolved mark and its runs' unfinished object artifacts
            QueueEvent::TaskExpired { task_id } => {
                self.changes.tasks.insert(task_key(&task_id.0), None);
                self.changes.counted.insert(counted_key(&task_id.0), false);
                let prefix = &task_artifacts_prefix(&task_id.0);
                let stored = self
                    .state
                    .db
                    .prefix_iterator(prefix)
                    .map(|kv| kv.map(|(k, _)| k.to_vec()))
                    .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(prefix)))
                    .collect::<Result<Vec<_>, _>>()?;
                // this batch's, and those of the batch before it not stored yet
                let pending: Vec<Vec<u8>> = self
                    .changes
                    .artifacts
                    .keys()
                    .chain(self.parent.iter().flat_map(|p| p.artifacts.keys()))
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect();
                for key in stored.into_iter().chain(pending) {
                    self.changes.artifacts.insert(key, None);
                }
            }
            QueueEvent::ArtifactExpired {
                task_id,
                run_id,
                name,
            } => {
                self.changes
                    .artifacts
                    .insert(artifact_key(&task_id.0, *run_id, name), None);
            }
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => {
                let key = group_key(&task_group_id.0);
                let g = TaskGroup::apply(self.group(key.clone())?, event);
                self.changes.groups.insert(key, g);
                if matches!(event, QueueEvent::TaskGroupExpired { .. }) {
                    self.changes
                        .counts
                        .insert(unresolved_key(&task_group_id.0), None);
                }
            }
            QueueEvent::ArtifactCreated {
                task_id,
                run_id,
                artifact,
            } => {
                if matches!(artifact.storage, ArtifactStorage::Object { .. }) {
                    let key = artifact_key(&task_id.0, *run_id, &artifact.name);
                    self.changes.artifacts.insert(key, Some(artifact.clone()));
                }
            }
            QueueEvent::ArtifactFinished {
                task_id,
                run_id,
                name,
            } => {
                // kept, finished, until it or its task expires: a repeated finishArtifact
                // publishes artifact-created again
                let key = artifact_key(&task_id.0, *run_id, name);
                let a = self.artifact(key.clone())?.map(|mut a| {
                    a.present = true;
                    a
                });
                self.changes.artifacts.insert(key, a.clone());
                return Ok(a);
            }
            QueueEvent::WorkerSeen { .. } | QueueEvent::WorkerQuarantined { .. } => {}
            QueueEvent::RunScheduled { task_id, .. }
            | QueueEvent::RunClaimed { task_id, .. }
            | QueueEvent::RunReclaimed { task_id, .. }
            | QueueEvent::RunResolved { task_id, .. }
            | QueueEvent::RunExceptionRecorded { task_id, .. }
            | QueueEvent::DependencySatisfied { task_id, .. }
            | QueueEvent::PriorityChanged { task_id, .. }
            | QueueEvent::GroupPriorityApplied { task_id, .. } => {
                if let Some(t) = self.task_mut(task_key(&task_id.0))? {
                    t.apply(event);
                }
            }
        }
        Ok(None)
    }
}

/// What the bridge keeps of a task's definition: the fields that messages, routing keys and
/// CC routes read (queue, scheduler, project, group, routes, times, tags, and the priority and
/// retries `Task::defined` starts from). The payload, metadata, scopes, extra and dependencies
/// are left empty: no message carries them, and a real payload alone is often kilobytes that
/// every fold of the task would decode and write again. The task's unsatisfied dependencies
/// are not kept either, for the same reason.
pub(crate) fn kept_definition(d: &TaskDefinition) -> TaskDefinition {
    TaskDefinition {
        task_queue_id: d.task_queue_id.clone(),
        scheduler_id: d.scheduler_id.clone(),
        project_id: d.project_id.clone(),
        task_group_id: d.task_group_id,
        dependencies: Vec::new(),
        requires: d.requires,
        routes: d.routes.clone(),
        priority: d.priority,
        retries: d.retries,
        created: d.created,
        deadline: d.deadline,
        expires: d.expires,
        scopes: Vec::new(),
        payload: JsonText("{}".into()),
        metadata: Metadata {
            name: String::new(),
            description: String::new(),
            owner: String::new(),
            source: String::new(),
        },
        tags: d.tags.clone(),
        extra: JsonText("{}".into()),
    }
}
