//! The secrets projection and its writer.
//!
//! `SecretsView` folds `SecretEvent`s (topic `taskledger.secrets`) into the `secrets` column
//! family: each secret by name (its value still sealed), each stream's last applied sequence,
//! an expiry index (time, name) the expiry reactor walks, and the audit rows upstream keeps
//! (`created`, `updated`, `deleted`, `expired`) by secret and by the client that acted.
//!
//! `SecretsEngine` is the partition's single writer (`single::ServiceEngine`).
//!
//! **Invariant:** rows, sequences, the expiry index, the audit rows and the consumed offset
//! go in one batch.

use crate::auth_view::{audit_rows, AuditEntry};
use crate::keys;
use crate::single::{Decision, Footprint, Service, ServiceEngine, ServiceError};
use crate::store::{cf, keyset_page, read_u64, scan_expiry_index, StoreError};
use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::secrets::{
    self, Secret, SecretCommand, SecretError, SecretEvent, SECRETS_TOPIC,
};
use taskledger_core::time::Millis;

/// The secrets service's single partition.
pub const SECRETS_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const SECRETS_CONSUMER: &str = "secrets-view";

pub struct SecretsView {
    db: Arc<DB>,
    /// Serializes folds: each reads the rows the previous one wrote.
    folding: Mutex<()>,
}

impl SecretsView {
    pub fn open(db: Arc<DB>) -> Result<SecretsView, StoreError> {
        cf(&db, keys::CF_SECRETS)?;
        Ok(SecretsView {
            db,
            folding: Mutex::new(()),
        })
    }

    /// A secret by name, expired or not (an expired one stays until the reactor removes it:
    /// callers check `Secret::visible`).
    pub fn get(&self, name: &str) -> Result<Option<Secret>, StoreError> {
        let secrets = cf(&self.db, keys::CF_SECRETS)?;
        match self.db.get_pinned_cf(secrets, keys::secret(name))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// The names of the secrets visible at `now` (`expires >= now`), in ascending order,
    /// after the name `after`, at most `limit`; and the last name taken when more rows remain
    /// (a next page may then be empty, as upstream's).
    pub fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        now: Millis,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let visible = |s: &Secret| s.visible(now);
        let (rows, more) = keyset_page(
            &self.db,
            keys::CF_SECRETS,
            keys::SECRET_PREFIX,
            after,
            limit,
            visible,
        )?;
        Ok((rows.into_iter().map(|(name, _)| name).collect(), more))
    }

    /// Secrets whose `expires` lies in `from..now` (expired: `expires < now`), earliest
    /// first, at most `limit`, each with its expiry. Starting at `from` (the earliest a
    /// previous scan left) skips the deletions of everything removed before.
    pub fn due(
        &self,
        from: Millis,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, String)>, StoreError> {
        let start = keys::secret_expiry(from, "");
        scan_expiry_index(
            &self.db,
            keys::CF_SECRETS,
            &start,
            keys::parse_secret_expiry,
            |at| at < now,
            limit,
        )
    }

    /// getEntityHistory of a secret: what happened to it, oldest first.
    pub fn secret_history(
        &self,
        name: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        audit_rows(
            &self.db,
            keys::CF_SECRETS,
            &keys::secret_audit_prefix(name),
            after,
            limit,
        )
    }

    /// What one client did to secrets, oldest first, after the row key `after`, at most
    /// `limit`; and the key to continue from when more remain.
    pub fn actor_history(
        &self,
        client_id: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        audit_rows(
            &self.db,
            keys::CF_SECRETS,
            &keys::secret_audit_actor_prefix(client_id),
            after,
            limit,
        )
    }

    fn sequence(&self, stream: &str) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_SECRETS, &keys::secret_stream(stream))
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(SECRETS_CONSUMER, SECRETS_TOPIC, SECRETS_PARTITION)
    }
}

pub type SecretsEngineError = ServiceError<SecretError>;

/// The secrets service's writer (see `single`).
pub type SecretsEngine = ServiceEngine<SecretsView>;

impl Service for SecretsView {
    type Event = SecretEvent;
    type Command = SecretCommand;
    type Refusal = SecretError;
    const TOPIC: &'static str = SECRETS_TOPIC;
    const PARTITION: u32 = SECRETS_PARTITION;
    const NAME: &'static str = "secrets";

    fn decide(
        &self,
        command: &SecretCommand,
        now: Millis,
    ) -> Result<Decision<SecretEvent>, SecretsEngineError> {
        let name = command.name();
        let events = secrets::decide(self.get(name)?.as_ref(), command, now)
            .map_err(ServiceError::Domain)?;
        let stream = secrets::stream_id(name);
        Ok(Decision {
            last_sequence: self.sequence(&stream)?,
            stream,
            events,
        })
    }
    fn type_name(event: &SecretEvent) -> &'static str {
        event.type_name()
    }
    /// A command reads and writes its secret alone.
    fn footprint(command: &SecretCommand) -> Footprint {
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
        envelopes: &[Envelope<SecretEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("secrets fold lock");
        let secrets_cf = cf(&self.db, keys::CF_SECRETS)?;
        let mut batch = WriteBatch::default();
        // per secret touched: as stored, its last sequence, as this fold leaves it
        let mut touched: HashMap<String, (Option<Secret>, u64, Option<Secret>)> = HashMap::new();
        for (env, &offset) in envelopes.iter().zip(offsets) {
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
            let entry = AuditEntry {
                client_id: env.actor.client_id.clone(),
                action_type: env.payload.action_type(current.is_some()).into(),
                created: env.time,
                entity_id: name.to_string(),
                entity_type: "secret".into(),
                offset,
            };
            let bytes = codec::encode(&entry)?;
            batch.put_cf(secrets_cf, keys::secret_audit(name, offset), &bytes);
            batch.put_cf(
                secrets_cf,
                keys::secret_audit_actor(&entry.client_id, offset),
                &bytes,
            );
            *current = secrets::apply(current.take(), &env.payload, env.time);
        }
        for (name, (stored, sequence, after)) in &touched {
            if let Some(s) = stored {
                batch.delete_cf(secrets_cf, keys::secret_expiry(s.expires, name));
            }
            match after {
                Some(s) => {
                    batch.put_cf(secrets_cf, keys::secret(name), codec::encode(s)?);
                    batch.put_cf(secrets_cf, keys::secret_expiry(s.expires, name), []);
                }
                None => batch.delete_cf(secrets_cf, keys::secret(name)),
            }
            batch.put_cf(
                secrets_cf,
                keys::secret_stream(&secrets::stream_id(name)),
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
    use taskledger_core::access::seal::SealKey;
    use taskledger_core::envelope::Actor;

    const VALUE: &str = r#"{"password":"correct-horse-battery-staple"}"#;

    fn set(name: &str, expires: Millis) -> SecretCommand {
        let value = SealKey::new([7; 32]).seal(&secrets::seal_owner(name), VALUE, [1; 12]);
        SecretCommand::Set {
            name: name.into(),
            value,
            expires,
        }
    }

    /// Commands on one secret wait together but go in groups of one (they conflict). When the
    /// first group's append fails, its caller hears so, and the others are written once the
    /// writer has settled its role again, not refused with it.
    #[tokio::test]
    async fn commands_behind_a_failed_append_are_written_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(crate::embedded_log::Watched::new(db.clone(), true));
        let view = Arc::new(SecretsView::open(db.clone()).unwrap());
        let engine = SecretsEngine::start(view.clone(), log.clone())
            .await
            .unwrap();
        let later = Millis::now().plus(3_600_000);
        let commands = [
            set("s", later),
            set("s", later.plus(1)),
            set("s", later.plus(2)),
        ];
        // all three are sent before the writer runs (this runtime has one thread)
        let answers = futures::future::join_all(
            commands
                .into_iter()
                .map(|c| engine.execute(Actor::system("tester"), c)),
        )
        .await;
        assert!(
            matches!(answers[0], Err(ServiceError::Unavailable(_))),
            "{:?}",
            answers[0]
        );
        assert!(answers[1].is_ok() && answers[2].is_ok(), "{answers:?}");
        assert_eq!(view.get("s").unwrap().unwrap().expires, later.plus(2));
        let records = log
            .log
            .read_sync(SECRETS_TOPIC, SECRETS_PARTITION, 0, 10)
            .unwrap();
        assert_eq!(records.len(), 2);
    }

    #[tokio::test]
    async fn secrets_fold_list_expire_audit_and_replay_without_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(SecretsView::open(db.clone()).unwrap());
        let engine = SecretsEngine::start(view.clone(), log.clone())
            .await
            .unwrap();
        let (alice, bob) = (Actor::system("alice"), Actor::system("bob"));
        let now = Millis::now();
        let soon = now.plus(300);
        let later = now.plus(3_600_000);
        let mut times = Vec::new();
        for (actor, command) in [
            (&alice, set("project/b", later)),
            (&alice, set("project/a", soon)),
            (&bob, set("project/b", later)),
            (&bob, set("project/c", later)),
            (
                &alice,
                SecretCommand::Remove {
                    name: "project/c".into(),
                },
            ),
            (
                &bob,
                SecretCommand::Remove {
                    name: "never-was".into(),
                },
            ),
        ] {
            let envelopes = engine.execute(actor.clone(), command).await.unwrap();
            assert_eq!(envelopes.len(), 1);
            times.push(envelopes[0].time);
        }
        // created by alice's write, updated by bob's
        let b = view.get("project/b").unwrap().unwrap();
        assert_eq!((b.created, b.updated), (times[0], times[2]));
        assert!(view.get("project/c").unwrap().is_none());

        // ascending, paged, the expired left out
        let (page, more) = view.list(None, 1, now).unwrap();
        assert_eq!(
            (page, more.as_deref()),
            (vec!["project/a".to_string()], Some("project/a"))
        );
        let (page, more) = view.list(Some("project/a"), 1, now).unwrap();
        assert_eq!((page, more), (vec!["project/b".to_string()], None));
        let (page, _) = view.list(None, 10, soon.plus(1)).unwrap();
        assert_eq!(page, vec!["project/b".to_string()]);

        // audit rows as upstream names them, by secret and by client
        let actions = |name: &str| -> Vec<(String, String)> {
            let (rows, _) = view.secret_history(name, None, 10).unwrap();
            rows.into_iter()
                .map(|r| (r.client_id, r.action_type))
                .collect()
        };
        assert_eq!(
            actions("project/b"),
            vec![
                (alice.client_id.clone(), "created".to_string()),
                (bob.client_id.clone(), "updated".to_string())
            ]
        );
        assert_eq!(actions("never-was").len(), 1);
        let (bobs, _) = view.actor_history(&bob.client_id, None, 10).unwrap();
        assert_eq!(bobs.len(), 3);

        // expiry: only what has expired is due
        assert!(view.due(Millis(0), soon, 10).unwrap().is_empty());
        assert_eq!(
            view.due(Millis(0), soon.plus(1), 10).unwrap(),
            vec![(soon, "project/a".to_string())]
        );
        tokio::time::sleep(std::time::Duration::from_millis(320)).await;
        let expire = SecretCommand::Expire {
            name: "project/a".into(),
        };
        assert_eq!(
            engine.execute(alice.clone(), expire).await.unwrap().len(),
            1
        );
        assert!(view.get("project/a").unwrap().is_none());
        assert_eq!(actions("project/a").last().unwrap().1, "expired");

        // the log never holds a value in clear; a fresh fold of it gives the same rows
        let records = log
            .read_sync(SECRETS_TOPIC, SECRETS_PARTITION, 0, 100)
            .unwrap();
        assert_eq!(records.len(), 7);
        for r in &records {
            assert!(!r
                .value
                .windows(b"correct-horse".len())
                .any(|w| w == b"correct-horse"));
        }
        let scratch_dir = tempfile::tempdir().unwrap();
        let scratch = SecretsView::open(store::open(scratch_dir.path()).unwrap()).unwrap();
        let envs: Vec<Envelope<SecretEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        // in two folds, the second repeating the first's last event (skipped by sequence)
        scratch
            .apply(&offsets[..4], offsets[4], &envs[..4])
            .unwrap();
        scratch
            .apply(&offsets[3..], offsets[6] + 1, &envs[3..])
            .unwrap();
        assert_eq!(
            scratch.get("project/b").unwrap(),
            view.get("project/b").unwrap()
        );
        assert!(scratch.get("project/a").unwrap().is_none());
        assert_eq!(
            scratch.list(None, 10, now).unwrap(),
            view.list(None, 10, now).unwrap()
        );
        let (rows, _) = scratch.secret_history("project/b", None, 10).unwrap();
        assert_eq!(rows.len(), 2);
    }
}
