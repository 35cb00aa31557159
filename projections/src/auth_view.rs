//! The auth projection and its writer.
//!
//! `AuthView` folds `AuthEvent`s into the `auth` column family (clients, roles, stream
//! sequences, audit indexes by entity and by acting client) and keeps the whole state in
//! memory: clients and roles are few and every request reads them. Role expansion results are
//! cached per scope set and the cache is dropped whenever a role changes (the expanded-role
//! index of the auth issue).
//!
//! `AuthEngine` is the auth partition's single writer (`single::ServiceEngine`): load -> decide
//! -> append -> apply -> answer, one command at a time (auth writes are rare; the queue's group
//! commit is not needed).
//!
//! **Invariant:** state, sequences, audit rows and the consumed offset go in one batch.

use crate::keys;
use crate::single::{Decision, Service, ServiceEngine, ServiceError};
use crate::store::{cf, StoreError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use taskledger_core::access::seal::Sealed;
use taskledger_core::access::{
    AuthCommand, AuthError, AuthEvent, AuthState, Client, Role, AUTH_TOPIC,
};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::scopes::ScopeSet;
use taskledger_core::time::Millis;

/// The auth service's single partition.
pub const AUTH_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const AUTH_CONSUMER: &str = "auth-view";
/// Cached expansions kept before the cache starts over...
const EXPAND_CACHE_MAX: usize = 10_000;
/// ...or bytes of scopes (inputs and results) held: expandScopes is keyed by a caller's list,
/// which may be megabytes, so the count alone would not bound the cache's memory.
const EXPAND_CACHE_BYTES: usize = 32 << 20;

/// Expansions by input scope set, bounded by `EXPAND_CACHE_MAX` entries and
/// `EXPAND_CACHE_BYTES`; full, it starts over.
#[derive(Default)]
struct Memo {
    map: HashMap<Vec<String>, ScopeSet>,
    bytes: usize,
}

impl Memo {
    fn get(&self, key: &[String]) -> Option<&ScopeSet> {
        self.map.get(key)
    }

    fn insert(&mut self, key: &[String], value: ScopeSet) {
        // another caller computed it meanwhile: the same scopes, already counted
        if let Some(kept) = self.map.get_mut(key) {
            *kept = value;
            return;
        }
        let size = |scopes: &[String]| scopes.iter().map(|s| s.len() + 24).sum::<usize>();
        let bytes = size(key) + size(value.as_slice());
        if bytes > EXPAND_CACHE_BYTES / 4 {
            // larger than any client's scopes: computed again when asked again
            return;
        }
        if self.map.len() >= EXPAND_CACHE_MAX || self.bytes + bytes > EXPAND_CACHE_BYTES {
            self.clear();
        }
        self.map.insert(key.to_vec(), value);
        self.bytes += bytes;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// Every request holds this scope (auth.md §4.5).
const ANONYMOUS: &str = "assume:anonymous";

/// One row of Taskcluster's audit history (auth.md §9, getEntityHistory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub client_id: String,
    pub action_type: String,
    pub created: Millis,
    pub entity_id: String,
    pub entity_type: String,
    /// The log offset of the event, for tools that want the event itself.
    pub offset: u64,
}

struct Inner {
    state: AuthState,
    /// Last applied sequence per stream (kept after deletions so ids can be reused).
    sequences: HashMap<String, u64>,
}

pub struct AuthView {
    db: Arc<DB>,
    inner: RwLock<Inner>,
    expanded: Mutex<Memo>,
    /// Clients' final scopes, `expand(configured ∪ {assume:anonymous})`, by configured set.
    finals: Mutex<Memo>,
    /// Bumped on every role change; an expansion computed under an older generation is not
    /// cached (it may have read the roles before the change).
    generation: AtomicU64,
    /// Write the stream index (`log_index`) as events are folded, for a log that does not
    /// keep one in this database (Kafka).
    index_streams: bool,
}

fn decode_err(e: codec::CodecError) -> StoreError {
    StoreError::Codec(e)
}

impl AuthView {
    /// Loads the projection's rows into memory.
    pub fn open(db: Arc<DB>) -> Result<AuthView, StoreError> {
        let mut state = AuthState::default();
        let mut sequences = HashMap::new();
        let auth = cf(&db, keys::CF_AUTH)?;
        for item in db.iterator_cf(auth, IteratorMode::Start) {
            let (k, v) = item?;
            match k.first() {
                Some(b'c') => {
                    let c: Client = codec::decode(&v).map_err(decode_err)?;
                    state.clients.insert(c.client_id.clone(), c);
                }
                Some(b'r') => {
                    let r: Role = codec::decode(&v).map_err(decode_err)?;
                    state.roles.insert(r.role_id.clone(), r);
                }
                Some(b's') => {
                    if let (Some(id), Ok(b)) = (keys::auth_id(&k), <[u8; 8]>::try_from(&v[..])) {
                        sequences.insert(id.to_string(), u64::from_be_bytes(b));
                    }
                }
                _ => {}
            }
        }
        state.rebuild_roles();
        Ok(AuthView {
            db,
            inner: RwLock::new(Inner { state, sequences }),
            expanded: Mutex::new(Memo::default()),
            finals: Mutex::new(Memo::default()),
            generation: AtomicU64::new(0),
            index_streams: false,
        })
    }

    /// Reads the state under the lock.
    pub fn read<R>(&self, f: impl FnOnce(&AuthState) -> R) -> R {
        f(&self.inner.read().expect("auth state lock").state)
    }

    pub fn client(&self, id: &str) -> Option<Client> {
        self.read(|s| s.clients.get(id).cloned())
    }

    pub fn role(&self, id: &str) -> Option<Role> {
        self.read(|s| s.roles.get(id).cloned())
    }

    /// Expansion through the current roles, cached per input set.
    pub fn expand(&self, scopes: Vec<String>) -> Arc<Vec<String>> {
        // keyed by the input as given: a hit costs one hash and one comparison, no sort or
        // copy (the same client sends the same list every time)
        self.memo(&self.expanded, &scopes, |s| s.role_set.expand(&scopes))
    }

    /// A client's final scopes, `expand(configured ∪ {assume:anonymous})` (auth.md §4.5), cached
    /// per configured set: a request of a known client costs one lookup and no copy.
    pub fn final_scopes(&self, configured: &[String]) -> ScopeSet {
        self.memo(&self.finals, configured, |s| {
            let mut held = configured.to_vec();
            held.push(ANONYMOUS.to_string());
            s.role_set.expand(&held)
        })
    }

    /// `cache[key]`, else `compute` over the current state, kept under `key` unless a role
    /// changed meanwhile (the computation may have read the roles before the change).
    fn memo(
        &self,
        cache: &Mutex<Memo>,
        key: &[String],
        compute: impl FnOnce(&AuthState) -> Vec<String>,
    ) -> ScopeSet {
        if let Some(hit) = cache.lock().expect("scope cache").get(key) {
            return hit.clone();
        }
        let generation = self.generation.load(Ordering::Acquire);
        let result = Arc::new(self.read(compute));
        let mut cache = cache.lock().expect("scope cache");
        if self.generation.load(Ordering::Acquire) == generation {
            cache.insert(key, result.clone());
        }
        result
    }

    /// What authenticating `id` needs: its sealed token, expiry, disabled flag and final
    /// scopes; None for an unknown client.
    pub fn client_for_auth(&self, id: &str) -> Option<(Sealed, Millis, bool, ScopeSet)> {
        let (token, expires, disabled, scopes) = self.read(|s| {
            let c = s.clients.get(id)?;
            let hit = self
                .finals
                .lock()
                .expect("finals cache")
                .get(c.scopes.as_slice())
                .cloned();
            Some((
                c.token.clone(),
                c.expires,
                c.disabled,
                hit.ok_or_else(|| c.scopes.clone()),
            ))
        })?;
        let scopes = match scopes {
            Ok(hit) => hit,
            Err(configured) => self.final_scopes(&configured),
        };
        Some((token, expires, disabled, scopes))
    }

    /// Expansion without the cache (for benchmarks and checks).
    pub fn expand_uncached(&self, scopes: &[String]) -> Vec<String> {
        self.read(|s| s.role_set.expand(scopes))
    }

    fn sequence(&self, stream: &str) -> u64 {
        self.inner
            .read()
            .expect("auth state lock")
            .sequences
            .get(stream)
            .copied()
            .unwrap_or(0)
    }

    /// This view also records which stream each folded event belongs to (see `index_streams`).
    pub fn with_stream_index(mut self) -> AuthView {
        self.index_streams = true;
        self
    }

    fn audit_rows(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        audit_rows(&self.db, keys::CF_AUTH, &prefix, after, limit)
    }

    /// getEntityHistory: what happened to one entity, oldest first.
    pub fn entity_history(
        &self,
        kind: &str,
        id: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        self.audit_rows(keys::audit_entity_prefix(kind, id), after, limit)
    }

    /// listAuditHistory: what one client did, oldest first.
    pub fn actor_history(
        &self,
        client_id: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
        self.audit_rows(keys::audit_actor_prefix(client_id), after, limit)
    }
}

/// Audit rows of column family `cf_name` under `prefix` (each the prefix and an 8-byte
/// offset), after the row key `after`, at most `limit`; and the key to continue from when
/// more remain. The auth and worker-manager projections keep their audit rows so.
pub(crate) fn audit_rows(
    db: &DB,
    cf_name: &'static str,
    prefix: &[u8],
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<(Vec<AuditEntry>, Option<Vec<u8>>), StoreError> {
    let handle = cf(db, cf_name)?;
    let start = match &after {
        Some(k) if k.starts_with(prefix) => {
            let mut k = k.clone();
            k.push(0);
            k
        }
        _ => prefix.to_vec(),
    };
    let mut out = Vec::new();
    let mut last = None;
    for item in db.iterator_cf(handle, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = item?;
        if !k.starts_with(prefix) || k.len() != prefix.len() + 8 {
            if k.starts_with(prefix) {
                continue;
            }
            break;
        }
        if out.len() == limit {
            return Ok((out, last));
        }
        out.push(codec::decode(&v)?);
        last = Some(k.to_vec());
    }
    Ok((out, None))
}

pub type AuthEngineError = ServiceError<AuthError>;

/// The auth partition's writer (see `single`).
pub type AuthEngine = ServiceEngine<AuthView>;

impl Service for AuthView {
    type Event = AuthEvent;
    type Command = AuthCommand;
    type Refusal = AuthError;
    const TOPIC: &'static str = AUTH_TOPIC;
    const PARTITION: u32 = AUTH_PARTITION;
    const NAME: &'static str = "auth";

    fn decide(
        &self,
        command: &AuthCommand,
        now: Millis,
    ) -> Result<Decision<AuthEvent>, AuthEngineError> {
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
    fn type_name(event: &AuthEvent) -> &'static str {
        event.type_name()
    }
    /// Folds envelopes stored at `offsets`; one batch with the position to read from next.
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<AuthEvent>],
    ) -> Result<(), StoreError> {
        let auth = cf(&self.db, keys::CF_AUTH)?;
        let meta = cf(&self.db, keys::CF_META)?;
        let mut batch = WriteBatch::default();
        let mut inner = self.inner.write().expect("auth state lock");
        let mut roles_changed = false;
        for (&offset, env) in offsets.iter().zip(envelopes) {
            let seen = inner.sequences.get(&env.stream_id).copied().unwrap_or(0);
            if env.sequence <= seen {
                continue;
            }
            let event = &env.payload;
            inner.state.apply(event, env.time);
            inner.sequences.insert(env.stream_id.clone(), env.sequence);
            if self.index_streams {
                batch.put_cf(
                    cf(&self.db, keys::CF_LOG_INDEX)?,
                    keys::log_index(AUTH_TOPIC, AUTH_PARTITION, &env.stream_id, offset),
                    [],
                );
            }
            batch.put_cf(
                auth,
                keys::auth_stream(&env.stream_id),
                env.sequence.to_be_bytes(),
            );
            if !event.changes_state() {
                continue;
            }
            let (kind, id) = event.entity();
            match kind {
                taskledger_core::access::EntityType::Client => match inner.state.clients.get(id) {
                    Some(c) => batch.put_cf(auth, keys::auth_client(id), codec::encode(c)?),
                    None => batch.delete_cf(auth, keys::auth_client(id)),
                },
                taskledger_core::access::EntityType::Role => {
                    roles_changed = true;
                    match inner.state.roles.get(id) {
                        Some(r) => batch.put_cf(auth, keys::auth_role(id), codec::encode(r)?),
                        None => batch.delete_cf(auth, keys::auth_role(id)),
                    }
                }
            }
            if !event.is_audited() {
                continue;
            }
            let entry = AuditEntry {
                client_id: env.actor.client_id.clone(),
                action_type: event.action_type().to_string(),
                created: env.time,
                entity_id: id.to_string(),
                entity_type: kind.as_str().to_string(),
                offset,
            };
            let bytes = codec::encode(&entry)?;
            batch.put_cf(auth, keys::audit_entity(kind.as_str(), id, offset), &bytes);
            batch.put_cf(
                auth,
                keys::audit_actor(&env.actor.client_id, offset),
                &bytes,
            );
        }
        batch.put_cf(
            meta,
            keys::consumer_offset(AUTH_CONSUMER, AUTH_TOPIC, AUTH_PARTITION),
            next.to_be_bytes(),
        );
        self.db.write(batch)?;
        drop(inner);
        if roles_changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.expanded.lock().expect("expand cache").clear();
            self.finals.lock().expect("finals cache").clear();
        }
        Ok(())
    }
    fn consumer_offset(&self) -> Result<u64, StoreError> {
        crate::store::read_u64(
            &self.db,
            keys::CF_META,
            &keys::consumer_offset(AUTH_CONSUMER, AUTH_TOPIC, AUTH_PARTITION),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store, EmbeddedLog};

    /// The expansion cache holds at most its byte budget, keeps no entry larger than a
    /// quarter of it, and answers what it kept.
    #[test]
    fn the_expansion_cache_is_bounded_by_bytes() {
        let mut memo = Memo::default();
        let huge: Vec<String> = (0..EXPAND_CACHE_BYTES / 4 / 32)
            .map(|i| format!("s:{i:08}"))
            .collect();
        memo.insert(&huge, Arc::new(huge.clone()));
        assert!(memo.get(&huge).is_none(), "an oversized entry is not kept");
        assert_eq!(memo.bytes, 0);
        // entries of about 1 MB each: the budget holds some, never more than the budget
        let mut last = Vec::new();
        for n in 0..100 {
            let key: Vec<String> = (0..20_000).map(|i| format!("k:{n}:{i:08}")).collect();
            memo.insert(&key, Arc::new(vec!["x".into()]));
            assert!(
                memo.bytes <= EXPAND_CACHE_BYTES,
                "{} bytes held",
                memo.bytes
            );
            last = key;
        }
        assert!(memo.get(&last).is_some(), "the latest entry is kept");
        assert!(memo.map.len() < 100, "older entries were dropped");
        memo.clear();
        assert!(memo.get(&last).is_none());
    }
    use taskledger_core::access::seal::SealKey;
    use taskledger_core::envelope::Actor;

    #[tokio::test]
    async fn commands_fold_persist_and_audit() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::new([3; 32]);
        let token = "tokentokentokentokentokentokentokentokentok";
        {
            let db = store::open(dir.path()).unwrap();
            let log = Arc::new(EmbeddedLog::new(db.clone()));
            let view = Arc::new(AuthView::open(db).unwrap());
            let engine = AuthEngine::start(view.clone(), log).await.unwrap();
            let alice = Actor {
                client_id: "alice".into(),
                request_id: None,
            };
            engine
                .execute(
                    alice.clone(),
                    AuthCommand::CreateClient {
                        client_id: "c1".into(),
                        description: "d".into(),
                        expires: Millis(i64::MAX / 2),
                        scopes: vec!["assume:r".into()],
                        delete_on_expiration: false,
                        token: key.seal("c1", token, [5; 12]),
                    },
                )
                .await
                .unwrap();
            engine
                .execute(
                    alice.clone(),
                    AuthCommand::CreateRole {
                        role_id: "r".into(),
                        description: "d".into(),
                        scopes: vec!["s".into()],
                    },
                )
                .await
                .unwrap();
            assert_eq!(*view.expand(vec!["assume:r".into()]), vec!["assume:r", "s"]);
            engine
                .execute(
                    alice,
                    AuthCommand::UpdateRole {
                        role_id: "r".into(),
                        description: "d".into(),
                        scopes: vec!["t".into()],
                    },
                )
                .await
                .unwrap();
            // the role change dropped the cached expansion
            assert_eq!(*view.expand(vec!["assume:r".into()]), vec!["assume:r", "t"]);
            let err = engine
                .execute(
                    Actor::system("x"),
                    AuthCommand::DeleteClient {
                        client_id: "c1".into(),
                    },
                )
                .await;
            assert_eq!(err.unwrap().len(), 1);
        }
        // reopen once the writer task has seen its channel close and dropped the database
        let mut opened = store::open(dir.path());
        for _ in 0..500 {
            if opened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            opened = store::open(dir.path());
        }
        let db = opened.expect("the database reopens once the writer stopped");
        let view = AuthView::open(db.clone()).unwrap();
        assert!(view.client("c1").is_none());
        assert_eq!(view.role("r").unwrap().scopes, vec!["t"]);
        let (rows, more) = view.entity_history("client", "c1", None, 10).unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action_type.as_str()).collect();
        assert_eq!(actions, vec!["created", "deleted"]);
        assert!(more.is_none());
        let (page, more) = view.actor_history("alice", None, 2).unwrap();
        assert_eq!(page.len(), 2);
        let (rest, _) = view.actor_history("alice", more, 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].action_type, "updated");
        // the log re-applied from zero leaves the same state (sequences skip duplicates)
        let log = EmbeddedLog::new(db);
        let records = log.read_sync(AUTH_TOPIC, AUTH_PARTITION, 0, 100).unwrap();
        assert_eq!(records.len(), 4);
        for r in &records {
            assert!(!r.value.windows(token.len()).any(|w| w == token.as_bytes()));
        }
        let envs: Vec<Envelope<AuthEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        view.apply(&offsets, offsets.len() as u64, &envs).unwrap();
        assert_eq!(view.role("r").unwrap().scopes, vec!["t"]);
        assert_eq!(
            view.entity_history("role", "r", None, 10).unwrap().0.len(),
            2
        );
    }
}
