//! The object projection and its writer.
//!
//! `ObjectView` folds `ObjectEvent`s (topic `taskledger.object`) into the `objects` column
//! family: each object by name, each stream's last applied sequence, and an expiry index (time,
//! name) the expiry reactor walks. Objects stay on disk only: there is one per artifact, so
//! they are many, and a command needs just its own.
//!
//! `ObjectEngine` is the partition's single writer (`single::ServiceEngine`): load -> decide
//! -> append -> apply -> answer, one command at a time.
//!
//! **Invariant:** rows, sequences, the expiry index and the consumed offset go in one batch.

use crate::keys;
use crate::single::{Decision, Footprint, Service, ServiceEngine, ServiceError};
use crate::store::{cf, read_u64, scan_expiry_index, StoreError};
use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::object::{
    self, Object, ObjectCommand, ObjectError, ObjectEvent, OBJECT_TOPIC,
};
use taskledger_core::time::Millis;

/// The object service's single partition.
pub const OBJECT_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const OBJECT_CONSUMER: &str = "object-view";

pub struct ObjectView {
    db: Arc<DB>,
    /// Serializes folds: each reads the rows the previous one wrote.
    folding: Mutex<()>,
}

impl ObjectView {
    pub fn open(db: Arc<DB>) -> Result<ObjectView, StoreError> {
        cf(&db, keys::CF_OBJECTS)?;
        Ok(ObjectView {
            db,
            folding: Mutex::new(()),
        })
    }

    /// An object by name, finished or not (expired objects are gone).
    pub fn get(&self, name: &str) -> Result<Option<Object>, StoreError> {
        let objects = cf(&self.db, keys::CF_OBJECTS)?;
        match self.db.get_pinned_cf(objects, keys::object(name))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn sequence(&self, stream: &str) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_OBJECTS, &keys::object_stream(stream))
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(OBJECT_CONSUMER, OBJECT_TOPIC, OBJECT_PARTITION)
    }

    /// Objects due for expiry in `from..=now` (see `Object::due`), earliest first, at most
    /// `limit`, each with its due time. Starting at `from` (the earliest a previous scan left)
    /// skips the deletions of everything expired before.
    pub fn due(
        &self,
        from: Millis,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        let start = keys::object_expiry(from, "");
        scan_expiry_index(
            &self.db,
            keys::CF_OBJECTS,
            &start,
            keys::parse_object_expiry,
            |at| at <= now,
            limit,
        )
    }
}

pub type ObjectEngineError = ServiceError<ObjectError>;

/// The object service's writer (see `single`).
pub type ObjectEngine = ServiceEngine<ObjectView>;

impl Service for ObjectView {
    type Event = ObjectEvent;
    type Command = ObjectCommand;
    type Refusal = ObjectError;
    const TOPIC: &'static str = OBJECT_TOPIC;
    const PARTITION: u32 = OBJECT_PARTITION;
    const NAME: &'static str = "object";

    fn decide(
        &self,
        command: &ObjectCommand,
        now: Millis,
    ) -> Result<Decision<ObjectEvent>, ObjectEngineError> {
        let name = command.name();
        let events =
            object::decide(self.get(name)?.as_ref(), command, now).map_err(ServiceError::Domain)?;
        let stream = object::stream_id(name);
        Ok(Decision {
            last_sequence: self.sequence(&stream)?,
            stream,
            events,
        })
    }
    fn type_name(event: &ObjectEvent) -> &'static str {
        event.type_name()
    }
    /// A command reads and writes its object alone.
    fn footprint(command: &ObjectCommand) -> Footprint {
        Footprint::Keys {
            exclusive: vec![command.name().to_string()],
            shared: vec![],
        }
    }
    /// Folds envelopes stored at `offsets`; one batch with the position to read from next.
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<ObjectEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("object fold lock");
        let objects = cf(&self.db, keys::CF_OBJECTS)?;
        // per object touched: as stored, its last sequence, as this fold leaves it
        let mut touched: HashMap<String, (Option<Object>, u64, Option<Object>)> = HashMap::new();
        for env in envelopes.iter().take(offsets.len()) {
            let name = env.payload.name();
            if !touched.contains_key(name) {
                let stored = self.get(name)?;
                let seen = self.sequence(&env.stream_id)?;
                touched.insert(name.to_string(), (stored.clone(), seen, stored));
            }
            let (_, seen, current) = touched.get_mut(name).expect("just inserted");
            if env.sequence <= *seen {
                continue;
            }
            *seen = env.sequence;
            *current = object::apply(current.take(), &env.payload, env.time);
        }
        let mut batch = WriteBatch::default();
        for (name, (stored, sequence, after)) in &touched {
            if let Some(b) = stored {
                batch.delete_cf(objects, keys::object_expiry(b.due(), name));
            }
            match after {
                Some(o) => {
                    batch.put_cf(objects, keys::object(name), codec::encode(o)?);
                    batch.put_cf(objects, keys::object_expiry(o.due(), name), []);
                }
                None => batch.delete_cf(objects, keys::object(name)),
            }
            batch.put_cf(
                objects,
                keys::object_stream(&object::stream_id(name)),
                sequence.to_be_bytes(),
            );
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
    use std::collections::BTreeMap;
    use taskledger_core::envelope::Actor;

    fn create(name: &str, upload_id: &str, expires: Millis) -> ObjectCommand {
        ObjectCommand::CreateUpload {
            name: name.into(),
            project_id: "proj".into(),
            upload_id: upload_id.into(),
            expires,
            hashes: BTreeMap::new(),
            content_type: None,
        }
    }

    #[tokio::test]
    async fn uploads_fold_expire_and_replay_without_the_upload_id() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(ObjectView::open(db.clone()).unwrap());
        let engine = ObjectEngine::start(view.clone(), log.clone())
            .await
            .unwrap();
        let actor = Actor::system("test");
        let soon = Millis::now().plus(300);
        let upload_id = "upload-id-that-must-stay-out-of-the-log";
        engine
            .execute(actor.clone(), create("a", upload_id, soon))
            .await
            .unwrap();
        engine
            .execute(actor.clone(), create("b", "other", soon.plus(3_600_000)))
            .await
            .unwrap();
        let sha = "a".repeat(64);
        let finish = ObjectCommand::FinishUpload {
            name: "a".into(),
            project_id: "proj".into(),
            upload_id: upload_id.into(),
            hashes: [("sha256".to_string(), sha.clone())].into(),
        };
        assert_eq!(
            engine.execute(actor.clone(), finish).await.unwrap().len(),
            2
        );
        let a = view.get("a").unwrap().unwrap();
        assert!(a.finished.is_some());
        assert_eq!(a.hashes["sha256"], sha);
        // a wrong upload id changes nothing
        let err = engine
            .execute(actor.clone(), create("b", "guess", soon.plus(3_600_000)))
            .await;
        assert!(matches!(
            err,
            Err(ObjectEngineError::Domain(ObjectError::Conflict(_)))
        ));

        assert!(view.due(Millis(0), Millis::now(), 10).unwrap().is_empty());
        let later = soon.plus(1);
        assert_eq!(
            view.due(Millis(0), later, 10).unwrap(),
            vec![(soon, "a".to_string())]
        );
        assert!(view.due(later, later, 10).unwrap().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(320)).await;
        let expire = ObjectCommand::Expire { name: "a".into() };
        assert_eq!(
            engine.execute(actor.clone(), expire).await.unwrap().len(),
            1
        );
        assert!(view.get("a").unwrap().is_none());
        assert!(view.due(Millis(0), later, 10).unwrap().is_empty());

        // the log never holds the upload id; a fresh fold of it gives the same rows
        let records = log
            .read_sync(OBJECT_TOPIC, OBJECT_PARTITION, 0, 100)
            .unwrap();
        assert_eq!(records.len(), 5);
        for r in &records {
            assert!(!r
                .value
                .windows(upload_id.len())
                .any(|w| w == upload_id.as_bytes()));
        }
        let scratch_dir = tempfile::tempdir().unwrap();
        let scratch = ObjectView::open(store::open(scratch_dir.path()).unwrap()).unwrap();
        let envs: Vec<Envelope<ObjectEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        // in two folds, the second repeating the first's last event (skipped by sequence)
        scratch
            .apply(&offsets[..3], offsets[3], &envs[..3])
            .unwrap();
        scratch
            .apply(&offsets[2..], offsets[4] + 1, &envs[2..])
            .unwrap();
        assert_eq!(scratch.get("b").unwrap(), view.get("b").unwrap());
        assert!(scratch.get("a").unwrap().is_none());
        let b_due = soon.plus(3_600_000);
        let due = scratch.due(Millis(0), b_due, 10).unwrap();
        assert_eq!(due, vec![(b_due, "b".to_string())]);
    }
}
