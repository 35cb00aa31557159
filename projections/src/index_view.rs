//! The index projection and its writer.
//!
//! `IndexView` folds `IndexEvent`s (topic `taskledger.index`) into the `index` column family:
//! each entry under its namespace and name (so one namespace's entries list in name order),
//! each namespace under its parent and last part, each stream's last applied sequence, one
//! expiry index for entries and one for namespaces (which the expiry reactor walks), and the
//! highest queue log offset of a completion indexed (`IndexState::last_completion`).
//!
//! `IndexEngine` is the partition's single writer (`single::ServiceEngine`).
//!
//! **Invariant:** rows, sequences, expiry indexes, the last completion and the consumed offset
//! go in one batch; a fold reads the rows earlier events of its own batch wrote.

use crate::keys;
use crate::single::{Decision, Footprint, Service, ServiceEngine, ServiceError};
use crate::store::{cf, keyset_page, read_u64, scan_expiry_index, Page, StoreError};
use rocksdb::{WriteBatch, DB};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::index::{
    self, IndexCommand, IndexError, IndexEvent, IndexState, IndexedTask, Namespace, INDEX_TOPIC,
};
use taskledger_core::time::Millis;

/// The index service's single partition.
pub const INDEX_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const INDEX_CONSUMER: &str = "index-view";

pub struct IndexView {
    db: Arc<DB>,
    /// Serializes folds: each reads the rows the previous one wrote.
    folding: Mutex<()>,
}

impl IndexView {
    pub fn open(db: Arc<DB>) -> Result<IndexView, StoreError> {
        cf(&db, keys::CF_INDEX)?;
        Ok(IndexView {
            db,
            folding: Mutex::new(()),
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get_pinned_cf(cf(&self.db, keys::CF_INDEX)?, key)? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// The entry at `path`, expired or not (callers check `IndexedTask::visible`).
    pub fn entry(&self, path: &str) -> Result<Option<IndexedTask>, StoreError> {
        self.get(&keys::index_entry(path))
    }

    pub fn namespace(&self, namespace: &str) -> Result<Option<Namespace>, StoreError> {
        self.get(&keys::index_namespace(namespace))
    }

    /// `listTasks`: the entries directly in `namespace` visible at `now`, by name.
    pub fn list_tasks(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
        now: Millis,
    ) -> Result<Page<IndexedTask>, StoreError> {
        let prefix = keys::index_entries_of(namespace);
        let visible = |e: &IndexedTask| e.visible(now);
        let (rows, more) = keyset_page(&self.db, keys::CF_INDEX, &prefix, after, limit, visible)?;
        Ok((rows.into_iter().map(|(_, e)| e).collect(), more))
    }

    /// `listNamespaces`: the namespaces directly in `parent` visible at `now`, by name.
    pub fn list_namespaces(
        &self,
        parent: &str,
        after: Option<&str>,
        limit: usize,
        now: Millis,
    ) -> Result<Page<Namespace>, StoreError> {
        let prefix = keys::index_namespaces_of(parent);
        let visible = |n: &Namespace| n.visible(now);
        let (rows, more) = keyset_page(&self.db, keys::CF_INDEX, &prefix, after, limit, visible)?;
        Ok((rows.into_iter().map(|(_, n)| n).collect(), more))
    }

    /// Entries whose `expires` has passed at `now` (`expires < now`), earliest first.
    pub fn entries_due(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        let start = keys::index_entry_expiry(Millis(0), "");
        scan_expiry_index(
            &self.db,
            keys::CF_INDEX,
            &start,
            keys::parse_index_entry_expiry,
            |at| at < now,
            limit,
        )
    }

    /// Namespaces whose `expires` has passed at `now`, earliest first.
    pub fn namespaces_due(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        let start = keys::index_namespace_expiry(Millis(0), "");
        scan_expiry_index(
            &self.db,
            keys::CF_INDEX,
            &start,
            keys::parse_index_namespace_expiry,
            |at| at < now,
            limit,
        )
    }

    /// The highest queue log offset of a completion indexed, if any.
    pub fn last_completion(&self) -> Result<Option<u64>, StoreError> {
        let stored = read_u64(&self.db, keys::CF_INDEX, keys::INDEX_LAST_COMPLETION)?;
        Ok(stored.checked_sub(1))
    }

    fn sequence(&self, stream: &str) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_INDEX, &keys::index_stream(stream))
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(INDEX_CONSUMER, INDEX_TOPIC, INDEX_PARTITION)
    }
}

/// What `decide` reads, loaded before it runs (rules read no store).
struct Loaded {
    entries: HashMap<String, Option<IndexedTask>>,
    namespace: Option<Namespace>,
    last_completion: Option<u64>,
}

impl IndexState for Loaded {
    fn entry(&self, path: &str) -> Option<IndexedTask> {
        self.entries.get(path).cloned().flatten()
    }
    fn namespace(&self, namespace: &str) -> Option<Namespace> {
        self.namespace.clone().filter(|n| n.namespace == namespace)
    }
    fn last_completion(&self) -> Option<u64> {
        self.last_completion
    }
}

/// A fold's writes, read back by its later events before they reach the batch.
struct Overlay<'v> {
    view: &'v IndexView,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.writes.get(key) {
            Some(Some(v)) => Ok(Some(codec::decode(v)?)),
            Some(None) => Ok(None),
            None => self.view.get(key),
        }
    }
    fn put<T: serde::Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        self.writes.insert(key, Some(codec::encode(value)?));
        Ok(())
    }
    fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }
    fn read_u64(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(match self.writes.get(key) {
            Some(Some(v)) => u64::from_be_bytes(v.as_slice().try_into().unwrap_or([0; 8])),
            Some(None) => 0,
            None => read_u64(&self.view.db, keys::CF_INDEX, key)?,
        })
    }

    /// Removes the entry at `path`, if any, with its expiry index row.
    fn remove_entry(&mut self, path: &str) -> Result<(), StoreError> {
        let key = keys::index_entry(path);
        if let Some(old) = self.get::<IndexedTask>(&key)? {
            self.delete(keys::index_entry_expiry(old.expires, path));
        }
        self.delete(key);
        Ok(())
    }

    fn fold(&mut self, event: &IndexEvent) -> Result<(), StoreError> {
        match event {
            IndexEvent::TaskIndexed { entry, completion } => {
                // namespaces outermost first, each only ever extended
                let expires = index::namespace_expiry(entry.expires);
                for namespace in index::namespaces_above(&entry.path) {
                    let key = keys::index_namespace(namespace);
                    let stored: Option<Namespace> = self.get(&key)?;
                    if stored.as_ref().is_some_and(|n| n.expires >= expires) {
                        continue;
                    }
                    if let Some(old) = stored {
                        self.delete(keys::index_namespace_expiry(old.expires, namespace));
                    }
                    let row = Namespace {
                        namespace: namespace.to_string(),
                        expires,
                    };
                    self.put(key, &row)?;
                    self.put_raw(keys::index_namespace_expiry(expires, namespace), vec![]);
                }
                self.remove_entry(&entry.path)?;
                self.put(keys::index_entry(&entry.path), entry)?;
                self.put_raw(keys::index_entry_expiry(entry.expires, &entry.path), vec![]);
                if let Some(offset) = completion {
                    let stored = self.read_u64(keys::INDEX_LAST_COMPLETION)?;
                    let next = stored.max(offset + 1);
                    self.put_raw(
                        keys::INDEX_LAST_COMPLETION.to_vec(),
                        next.to_be_bytes().to_vec(),
                    );
                }
            }
            IndexEvent::IndexedTaskDeleted { path } | IndexEvent::IndexedTaskExpired { path } => {
                self.remove_entry(path)?;
            }
            IndexEvent::NamespaceExpired { namespace } => {
                let key = keys::index_namespace(namespace);
                if let Some(old) = self.get::<Namespace>(&key)? {
                    self.delete(keys::index_namespace_expiry(old.expires, namespace));
                }
                self.delete(key);
            }
        }
        Ok(())
    }
}

pub type IndexEngineError = ServiceError<IndexError>;

/// The index service's writer (see `single`).
pub type IndexEngine = ServiceEngine<IndexView>;

impl Service for IndexView {
    type Event = IndexEvent;
    type Command = IndexCommand;
    type Refusal = IndexError;
    const TOPIC: &'static str = INDEX_TOPIC;
    const PARTITION: u32 = INDEX_PARTITION;
    const NAME: &'static str = "index";

    fn decide(
        &self,
        command: &IndexCommand,
        now: Millis,
    ) -> Result<Decision<IndexEvent>, IndexEngineError> {
        let mut entries = HashMap::new();
        for path in command.paths() {
            if !entries.contains_key(path) {
                entries.insert(path.to_string(), self.entry(path)?);
            }
        }
        let namespace = match command {
            IndexCommand::ExpireNamespace { namespace } => self.namespace(namespace)?,
            IndexCommand::Insert(_)
            | IndexCommand::Delete { .. }
            | IndexCommand::IndexCompletions(_)
            | IndexCommand::Expire { .. } => None,
        };
        let loaded = Loaded {
            entries,
            namespace,
            last_completion: self.last_completion()?,
        };
        let events = index::decide(&loaded, command, now).map_err(ServiceError::Domain)?;
        let stream = command.stream();
        Ok(Decision {
            last_sequence: self.sequence(&stream)?,
            stream,
            events,
        })
    }
    fn type_name(event: &IndexEvent) -> &'static str {
        event.type_name()
    }
    /// A command reads and writes the entries at its paths; writing one extends the
    /// namespaces above it, which only a namespace's expiry reads; a completion reads the
    /// last completion indexed.
    fn footprint(command: &IndexCommand) -> Footprint {
        let entry = |path: &str| format!("entry {path}");
        let namespaces = |paths: &[&str]| -> Vec<String> {
            paths
                .iter()
                .flat_map(|p| index::namespaces_above(p))
                .map(|n| format!("namespace {n}"))
                .collect()
        };
        let paths = command.paths();
        let (exclusive, shared) = match command {
            IndexCommand::Insert(_) => {
                (paths.iter().map(|p| entry(p)).collect(), namespaces(&paths))
            }
            IndexCommand::Delete { .. } | IndexCommand::Expire { .. } => {
                (paths.iter().map(|p| entry(p)).collect(), vec![])
            }
            IndexCommand::IndexCompletions(_) => {
                let mut exclusive: Vec<String> = paths.iter().map(|p| entry(p)).collect();
                exclusive.push("last completion".into());
                (exclusive, namespaces(&paths))
            }
            IndexCommand::ExpireNamespace { namespace } => {
                (vec![format!("namespace {namespace}")], vec![])
            }
        };
        Footprint::Keys { exclusive, shared }
    }
    /// Folds envelopes stored at `offsets`; one batch with the position to read from next.
    fn apply(
        &self,
        _offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<IndexEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("index fold lock");
        let mut overlay = Overlay {
            view: self,
            writes: BTreeMap::new(),
        };
        for env in envelopes {
            let key = keys::index_stream(&env.stream_id);
            if env.sequence <= overlay.read_u64(&key)? {
                continue;
            }
            overlay.put_raw(key, env.sequence.to_be_bytes().to_vec());
            overlay.fold(&env.payload)?;
        }
        let index_cf = cf(&self.db, keys::CF_INDEX)?;
        let mut batch = WriteBatch::default();
        for (key, value) in overlay.writes {
            match value {
                Some(v) => batch.put_cf(index_cf, key, v),
                None => batch.delete_cf(index_cf, key),
            }
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
        read_u64(&self.db, keys::CF_META, &Self::offset_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store, EmbeddedLog};
    use rocksdb::IteratorMode;
    use taskledger_core::envelope::Actor;
    use taskledger_core::ids::Slug;
    use taskledger_core::time::DAY;

    fn entry(path: &str, rank: i64, expires: Millis) -> IndexedTask {
        IndexedTask {
            path: path.into(),
            task_id: Slug::nice(),
            rank,
            data: format!(r#"{{"path":"{path}"}}"#),
            expires,
        }
    }

    /// Commands sent at once are written in far fewer appends than commands, and give the
    /// state they give one at a time: of many inserts at one path in any order, the highest
    /// rank stays (two of them decided together against the same entry would both be
    /// written, and the later one would stay whatever its rank).
    #[tokio::test]
    async fn commands_waiting_together_are_written_together_as_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(crate::embedded_log::Watched::new(db.clone(), false));
        let view = Arc::new(IndexView::open(db.clone()).unwrap());
        let engine = IndexEngine::start(view.clone(), log.clone()).await.unwrap();
        let later = Millis::now().plus(DAY);
        let (paths, n) = (10, 300);
        // ranks 0..300 in a scrambled order, spread over the paths
        let commands: Vec<IndexCommand> = (0..n)
            .map(|i| {
                let rank = (i * 7919 % n) as i64;
                IndexCommand::Insert(entry(&format!("load.ns.p{}", i % paths), rank, later))
            })
            .collect();
        let answers = futures::future::join_all(
            commands
                .iter()
                .map(|c| engine.execute(Actor::system("tester"), c.clone())),
        )
        .await;
        assert!(answers.iter().all(|a| a.is_ok()));
        let appends = log.appends.load(std::sync::atomic::Ordering::SeqCst);
        assert!(appends < n / 3, "{appends} appends for {n} commands");
        for p in 0..paths {
            let best = (0..n)
                .filter(|i| i % paths == p)
                .map(|i| (i * 7919 % n) as i64)
                .max()
                .unwrap();
            let stored = view.entry(&format!("load.ns.p{p}")).unwrap().unwrap();
            assert_eq!(stored.rank, best, "load.ns.p{p}");
        }
        assert_eq!(
            view.list_tasks("load.ns", None, 100, Millis::now())
                .unwrap()
                .0
                .len(),
            paths
        );
    }

    #[tokio::test]
    async fn the_index_folds_lists_expires_and_replays_to_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(IndexView::open(db.clone()).unwrap());
        let engine = IndexEngine::start(view.clone(), log.clone()).await.unwrap();
        let actor = Actor::system("tester");
        let now = Millis::now();
        let soon = now.plus(300);
        let later = now.plus(3 * DAY);
        let run = |command| engine.execute(actor.clone(), command);

        for e in [
            entry("proj.v1.linux", 5, later),
            entry("proj.v1.mac", 5, later),
            entry("proj.v1.win", 5, soon),
            entry("proj.v2.linux", 1, later),
            entry("top", 0, later),
        ] {
            assert_eq!(run(IndexCommand::Insert(e)).await.unwrap().len(), 1);
        }
        // a lower rank is kept out, an equal one replaces
        assert!(run(IndexCommand::Insert(entry("proj.v1.linux", 4, later)))
            .await
            .unwrap()
            .is_empty());
        let replacement = entry("proj.v1.linux", 5, later.plus(DAY));
        assert_eq!(
            run(IndexCommand::Insert(replacement.clone()))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(view.entry("proj.v1.linux").unwrap(), Some(replacement));

        // direct children only, in name order, paged
        let names = |page: Page<Namespace>| -> (Vec<String>, Option<String>) {
            (page.0.into_iter().map(|n| n.namespace).collect(), page.1)
        };
        assert_eq!(
            names(view.list_namespaces("", None, 10, now).unwrap()),
            (vec!["proj".to_string()], None)
        );
        assert_eq!(
            names(view.list_namespaces("proj", None, 1, now).unwrap()),
            (vec!["proj.v1".to_string()], Some("v1".to_string()))
        );
        assert_eq!(
            names(view.list_namespaces("proj", Some("v1"), 1, now).unwrap()),
            (vec!["proj.v2".to_string()], None)
        );
        let paths = |page: Page<IndexedTask>| -> Vec<String> {
            page.0.into_iter().map(|e| e.path).collect()
        };
        assert_eq!(
            paths(view.list_tasks("proj.v1", None, 10, now).unwrap()),
            ["proj.v1.linux", "proj.v1.mac", "proj.v1.win"]
        );
        assert_eq!(paths(view.list_tasks("", None, 10, now).unwrap()), ["top"]);
        // the namespace expiry: the next day boundary after the latest entry below it
        assert_eq!(
            view.namespace("proj").unwrap().unwrap().expires,
            index::namespace_expiry(later.plus(DAY))
        );

        // expiry: an expired entry leaves the listing at once and the store on its event
        assert_eq!(
            paths(view.list_tasks("proj.v1", None, 10, soon.plus(1)).unwrap()),
            ["proj.v1.linux", "proj.v1.mac"]
        );
        assert_eq!(
            view.entries_due(soon.plus(1), 10).unwrap(),
            vec![(soon, "proj.v1.win".to_string())]
        );
        tokio::time::sleep(std::time::Duration::from_millis(320)).await;
        let expire = IndexCommand::Expire {
            path: "proj.v1.win".into(),
        };
        assert_eq!(run(expire).await.unwrap().len(), 1);
        assert!(view.entry("proj.v1.win").unwrap().is_none());
        assert!(view.entries_due(Millis::now(), 10).unwrap().is_empty());
        // deleteTask
        let delete = IndexCommand::Delete { path: "top".into() };
        assert_eq!(run(delete.clone()).await.unwrap().len(), 1);
        assert!(run(delete).await.unwrap().is_empty());

        // completion indexing, once
        let completion = IndexCommand::IndexCompletions(vec![index::Completion {
            offset: 77,
            task_id: Slug::nice(),
            paths: vec!["proj.v3.latest".into()],
            rank: 0,
            data: "{}".into(),
            expires: later,
        }]);
        assert_eq!(run(completion.clone()).await.unwrap().len(), 1);
        assert!(run(completion).await.unwrap().is_empty());
        assert_eq!(view.last_completion().unwrap(), Some(77));
        // a namespace's own expiry
        let far = index::namespace_expiry(later.plus(DAY));
        assert_eq!(
            view.namespaces_due(far.plus(1), 10).unwrap().len(),
            4,
            "proj, proj.v1, proj.v2, proj.v3"
        );
        // proj.v2 and proj.v3 (entries expiring at `later`) go a day before the others
        let day_before = index::namespace_expiry(later).plus(1);
        let due: Vec<String> = view
            .namespaces_due(day_before, 10)
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(due, ["proj.v2", "proj.v3"]);

        // a fresh fold of the log gives the same rows, in two folds that overlap
        let records = log.read_sync(INDEX_TOPIC, INDEX_PARTITION, 0, 100).unwrap();
        let scratch_dir = tempfile::tempdir().unwrap();
        let scratch = IndexView::open(store::open(scratch_dir.path()).unwrap()).unwrap();
        let envs: Vec<Envelope<IndexEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let n = envs.len();
        scratch
            .apply(&offsets[..4], offsets[4], &envs[..4])
            .unwrap();
        scratch
            .apply(&offsets[3..], offsets[n - 1] + 1, &envs[3..])
            .unwrap();
        let dump = |db: &DB| -> Vec<(Vec<u8>, Vec<u8>)> {
            db.iterator_cf(db.cf_handle(keys::CF_INDEX).unwrap(), IteratorMode::Start)
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect()
        };
        assert_eq!(dump(&scratch.db), dump(&view.db));
    }
}
