//! The hooks projection and its writer.
//!
//! `HooksView` folds `HookEvent`s (topic `taskledger.hooks`) into the `hooks` column family:
//! each hook under its group then its id (`listHooks` walks one group, `listHookGroups` skips
//! from group to group), its last fires newest first (removed with the hook), each stream's
//! last applied sequence, and a schedule index (next fire time, hook) the scheduler walks.
//!
//! `HooksEngine` is the partition's single writer (`single::ServiceEngine`); commands on
//! different hooks are written together.
//!
//! **Invariant:** rows, sequences, the schedule index, the last fires and the consumed offset
//! go in one batch.

use crate::keys;
use crate::single::{Decision, Footprint, Service, ServiceEngine, ServiceError};
use crate::store::{cf, read_u64, scan_expiry_index, StoreError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::hooks::{
    self, Hook, HookCommand, HookError, HookEvent, LastFire, HOOKS_TOPIC,
};
use taskledger_core::time::Millis;

/// The hooks service's single partition.
pub const HOOKS_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const HOOKS_CONSUMER: &str = "hooks-view";

/// A last-fires row as stored: the fire, and the log offset that recorded it (its place in the
/// newest-first order, and the continuation of a listing).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FireRow {
    pub offset: u64,
    pub fire: LastFire,
}

pub struct HooksView {
    db: Arc<DB>,
    /// Serializes folds: each reads the rows the previous one wrote.
    folding: Mutex<()>,
    /// Write the stream index (`log_index`) as events are folded, for a log that does not
    /// keep one in this database (Kafka): the audit tools find a hook's history there.
    index_streams: bool,
}

impl HooksView {
    pub fn open(db: Arc<DB>) -> Result<HooksView, StoreError> {
        cf(&db, keys::CF_HOOKS)?;
        Ok(HooksView {
            db,
            folding: Mutex::new(()),
            index_streams: false,
        })
    }

    /// This view also records which stream each folded event belongs to.
    pub fn with_stream_index(mut self) -> HooksView {
        self.index_streams = true;
        self
    }

    pub fn hook(&self, group: &str, id: &str) -> Result<Option<Hook>, StoreError> {
        let hooks = cf(&self.db, keys::CF_HOOKS)?;
        match self.db.get_pinned_cf(hooks, keys::hook(group, id))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// The hooks of `group`, by id.
    pub fn hooks_in(&self, group: &str) -> Result<Vec<Hook>, StoreError> {
        let prefix = keys::hooks_of(group);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            cf(&self.db, keys::CF_HOOKS)?,
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(codec::decode(&v)?);
        }
        Ok(out)
    }

    /// The groups that hold at least one hook, in order: one seek per group.
    pub fn groups(&self) -> Result<Vec<String>, StoreError> {
        let mut iter = self.db.raw_iterator_cf(cf(&self.db, keys::CF_HOOKS)?);
        let mut out = Vec::new();
        let mut from = keys::HOOK_PREFIX.to_vec();
        loop {
            iter.seek(&from);
            let Some(k) = iter.key() else {
                iter.status()?;
                break;
            };
            let Some(group) = keys::hook_group(k) else {
                break;
            };
            let group = group.to_string();
            // past every key of this group: its name, then a byte above the 0 that ends it
            from = keys::hooks_of(&group);
            *from.last_mut().expect("ends with 0") = 1;
            out.push(group);
        }
        Ok(out)
    }

    /// The last fires of a hook, newest first, after the row at offset `after`, at most
    /// `limit`; and the offset to continue after when more remain.
    pub fn last_fires(
        &self,
        group: &str,
        id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<FireRow>, Option<u64>), StoreError> {
        let prefix = keys::hook_fires_of(group, id);
        let start = match after {
            // nothing is older than the log's first record
            Some(0) => return Ok((vec![], None)),
            // the rows are keyed by `u64::MAX - offset`: the next older one sorts after it
            Some(offset) => keys::hook_fire(group, id, offset - 1),
            None => prefix.clone(),
        };
        let mut rows: Vec<FireRow> = Vec::new();
        for item in self.db.iterator_cf(
            cf(&self.db, keys::CF_HOOKS)?,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if rows.len() == limit {
                let more = rows.last().map(|r| r.offset);
                return Ok((rows, more));
            }
            rows.push(codec::decode(&v)?);
        }
        Ok((rows, None))
    }

    /// Hooks whose next scheduled fire is at or before `now`, earliest first, at most `limit`.
    pub fn due(&self, now: Millis, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let due = scan_expiry_index(
            &self.db,
            keys::CF_HOOKS,
            keys::HOOK_SCHEDULE_PREFIX,
            keys::parse_hook_schedule,
            |at| at <= now,
            limit,
        )?;
        Ok(due
            .into_iter()
            .filter_map(|(_, hook)| {
                let (group, id) = hook.split_once('\0')?;
                Some((group.to_string(), id.to_string()))
            })
            .collect())
    }

    /// The earliest next scheduled fire of any hook.
    pub fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let mut iter = self.db.raw_iterator_cf(cf(&self.db, keys::CF_HOOKS)?);
        iter.seek(keys::HOOK_SCHEDULE_PREFIX);
        match iter.key().and_then(keys::parse_hook_schedule) {
            Some((at, _)) => Ok(Some(at)),
            None => {
                iter.status()?;
                Ok(None)
            }
        }
    }

    fn sequence(&self, stream: &str) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_HOOKS, &keys::hook_stream(stream))
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(HOOKS_CONSUMER, HOOKS_TOPIC, HOOKS_PARTITION)
    }
}

pub type HooksEngineError = ServiceError<HookError>;

/// The hooks service's writer (see `single`).
pub type HooksEngine = ServiceEngine<HooksView>;

impl Service for HooksView {
    type Event = HookEvent;
    type Command = HookCommand;
    type Refusal = HookError;
    const TOPIC: &'static str = HOOKS_TOPIC;
    const PARTITION: u32 = HOOKS_PARTITION;
    const NAME: &'static str = "hooks";

    fn decide(
        &self,
        command: &HookCommand,
        now: Millis,
    ) -> Result<Decision<HookEvent>, HooksEngineError> {
        let (group, id) = command.hook();
        let events = hooks::decide(self.hook(group, id)?.as_ref(), command, now)
            .map_err(ServiceError::Domain)?;
        let stream = hooks::stream_id(group, id);
        Ok(Decision {
            last_sequence: self.sequence(&stream)?,
            stream,
            events,
        })
    }
    fn type_name(event: &HookEvent) -> &'static str {
        event.type_name()
    }
    /// A command reads and writes its hook alone (its group is listed from the hooks); but
    /// the record of a triggered fire only adds a row and reads only whether the hook exists,
    /// which no command it may share a group with changes: fires of one hook are written
    /// together (their events numbered on in the hook's stream).
    fn footprint(command: &HookCommand) -> Footprint {
        let (group, id) = command.hook();
        let key = hooks::stream_id(group, id);
        match command {
            HookCommand::RecordFire {
                scheduled: None, ..
            } => Footprint::Keys {
                exclusive: vec![],
                shared: vec![key],
            },
            HookCommand::Create { .. }
            | HookCommand::Update { .. }
            | HookCommand::Remove { .. }
            | HookCommand::ResetToken { .. }
            | HookCommand::RecordFire { .. } => Footprint::Keys {
                exclusive: vec![key],
                shared: vec![],
            },
        }
    }
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<HookEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("hooks fold lock");
        let hooks_cf = cf(&self.db, keys::CF_HOOKS)?;
        let mut batch = WriteBatch::default();
        // per hook touched: as stored, its last sequence, as this fold leaves it
        type Touched = (Option<Hook>, u64, Option<Hook>);
        let mut touched: HashMap<(String, String), Touched> = HashMap::new();
        for (env, &offset) in envelopes.iter().zip(offsets) {
            let (group, id) = env.payload.hook();
            let key = (group.to_string(), id.to_string());
            if !touched.contains_key(&key) {
                let stored = self.hook(group, id)?;
                let seen = self.sequence(&env.stream_id)?;
                touched.insert(key.clone(), (stored.clone(), seen, stored));
            }
            let (_, seen, current) = touched.get_mut(&key).expect("just inserted");
            if env.sequence <= *seen {
                continue;
            }
            *seen = env.sequence;
            if self.index_streams {
                batch.put_cf(
                    cf(&self.db, keys::CF_LOG_INDEX)?,
                    keys::log_index(HOOKS_TOPIC, HOOKS_PARTITION, &env.stream_id, offset),
                    [],
                );
            }
            match &env.payload {
                HookEvent::HookFired {
                    fire: Some(fire), ..
                } if current.is_some() => {
                    let row = FireRow {
                        offset,
                        fire: fire.clone(),
                    };
                    batch.put_cf(
                        hooks_cf,
                        keys::hook_fire(group, id, offset),
                        codec::encode(&row)?,
                    );
                }
                HookEvent::HookRemoved { .. } => {
                    let prefix = keys::hook_fires_of(group, id);
                    let mut end = prefix.clone();
                    *end.last_mut().expect("ends with 0") = 1;
                    batch.delete_range_cf(hooks_cf, prefix, end);
                }
                HookEvent::HookCreated { .. }
                | HookEvent::HookCreateRepeated { .. }
                | HookEvent::HookUpdated { .. }
                | HookEvent::TriggerTokenReset { .. }
                | HookEvent::HookFired { .. } => {}
            }
            *current = hooks::apply(current.take(), &env.payload);
        }
        for ((group, id), (stored, sequence, after)) in &touched {
            if let Some(h) = stored {
                batch.delete_cf(hooks_cf, keys::hook_schedule(h.next.at, group, id));
            }
            match after {
                Some(h) => {
                    batch.put_cf(hooks_cf, keys::hook(group, id), codec::encode(h)?);
                    if h.next.at < hooks::NEVER {
                        batch.put_cf(hooks_cf, keys::hook_schedule(h.next.at, group, id), []);
                    }
                }
                None => batch.delete_cf(hooks_cf, keys::hook(group, id)),
            }
            batch.put_cf(
                hooks_cf,
                keys::hook_stream(&hooks::stream_id(group, id)),
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
    use taskledger_core::hooks::{FiredBy, HookDefinition};
    use taskledger_core::ids::Slug;

    const TOKEN: &str = "trigger-token-in-clear";

    fn definition(schedule: &[&str]) -> HookDefinition {
        HookDefinition {
            name: "n".into(),
            description: "d".into(),
            owner: "o@example.com".into(),
            email_on_error: true,
            task: "{}".into(),
            bindings: vec![],
            schedule: schedule.iter().map(|s| s.to_string()).collect(),
            trigger_schema: "{}".into(),
        }
    }

    fn create(group: &str, id: &str, schedule: &[&str]) -> HookCommand {
        HookCommand::Create {
            group: group.into(),
            id: id.into(),
            definition: definition(schedule),
            token: SealKey::new([1; 32]).seal(&hooks::token_owner(group, id), TOKEN, [2; 12]),
            next_task_id: Slug::nice(),
        }
    }

    fn fire(group: &str, id: &str, n: u8) -> HookCommand {
        HookCommand::RecordFire {
            group: group.into(),
            id: id.into(),
            fire: Some(LastFire {
                fired_by: FiredBy::TriggerHook,
                task_id: Slug([n; 16]),
                time: Millis(n as i64),
                error: None,
            }),
            scheduled: None,
        }
    }

    /// Fires of one hook waiting together are written in few appends, their events numbered
    /// on in the hook's stream; a removal waiting among them is written alone, in its place.
    #[tokio::test]
    async fn fires_of_one_hook_are_written_together_and_numbered_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(crate::embedded_log::Watched::new(db.clone(), false));
        let view = Arc::new(HooksView::open(db.clone()).unwrap());
        let engine = HooksEngine::start(view.clone(), log.clone()).await.unwrap();
        let actor = Actor::system("tester");
        engine
            .execute(actor.clone(), create("g", "h", &[]))
            .await
            .unwrap();
        let before = log.appends.load(std::sync::atomic::Ordering::SeqCst);
        let n = 200u8;
        let mut commands: Vec<HookCommand> = (1..=n).map(|i| fire("g", "h", i)).collect();
        // the hook is removed after the 150th fire: later ones record nothing
        commands.insert(
            150,
            HookCommand::Remove {
                group: "g".into(),
                id: "h".into(),
            },
        );
        // spawned in order, each sends its command before the writer (woken by the first,
        // queued behind them on this one-thread runtime) runs
        let sent: Vec<_> = commands
            .into_iter()
            .map(|c| {
                let (engine, actor) = (engine.clone(), actor.clone());
                tokio::spawn(async move { engine.execute(actor, c).await })
            })
            .collect();
        for answer in sent {
            assert!(answer.await.unwrap().is_ok());
        }
        let appends = log.appends.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert!(appends < 20, "{appends} appends for {n} fires");
        let records = log
            .log
            .read_sync(HOOKS_TOPIC, HOOKS_PARTITION, 0, 1_000)
            .unwrap();
        let envelopes: Vec<Envelope<HookEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let sequences: Vec<u64> = envelopes.iter().map(|e| e.sequence).collect();
        assert_eq!(envelopes[151].payload.type_name(), "HookRemoved");
        // created, 150 fires, removed: one stream numbered 1, 2, 3, ...
        assert_eq!(sequences, (1..=152).collect::<Vec<u64>>());
        assert!(view.hook("g", "h").unwrap().is_none());
        assert!(view.last_fires("g", "h", None, 1_000).unwrap().0.is_empty());
        // created again, its fires start afresh and keep numbering the stream
        engine
            .execute(actor.clone(), create("g", "h", &[]))
            .await
            .unwrap();
        engine
            .execute(actor.clone(), fire("g", "h", 1))
            .await
            .unwrap();
        let (rows, _) = view.last_fires("g", "h", None, 1_000).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[tokio::test]
    async fn hooks_fold_list_fire_schedule_remove_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(HooksView::open(db.clone()).unwrap());
        let engine = HooksEngine::start(view.clone(), log.clone()).await.unwrap();
        let actor = Actor::system("tester");
        for command in [
            create("b", "x/y", &["0 * * * * *"]),
            create("a", "one", &[]),
            create("b", "x", &[]),
            create("a-b", "z", &[]),
            fire("b", "x/y", 1),
            fire("b", "x/y", 2),
            fire("b", "x/y", 3),
            fire("a", "one", 4),
        ] {
            engine.execute(actor.clone(), command).await.unwrap();
        }
        assert_eq!(view.groups().unwrap(), vec!["a", "a-b", "b"]);
        let ids: Vec<String> = view
            .hooks_in("b")
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, vec!["x", "x/y"], "b's hooks only, not a-b's");
        // newest first, in pages
        let (page, more) = view.last_fires("b", "x/y", None, 2).unwrap();
        let tasks: Vec<u8> = page.iter().map(|r| r.fire.task_id.0[0]).collect();
        assert_eq!(tasks, vec![3, 2]);
        let (rest, end) = view.last_fires("b", "x/y", more, 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].fire.task_id, Slug([1; 16]));
        assert_eq!(end, None);
        // only the scheduled hook is in the schedule index
        let next = view.next_due().unwrap().unwrap();
        assert!(next > Millis::now().minus(1_000) && next <= Millis::now().plus(61_000));
        assert_eq!(
            view.due(next, 10).unwrap(),
            vec![("b".into(), "x/y".into())]
        );
        assert!(view.due(next.minus(1), 10).unwrap().is_empty());
        // removing a hook takes its fires and schedule entry with it, not its neighbours'
        engine
            .execute(
                actor.clone(),
                HookCommand::Remove {
                    group: "b".into(),
                    id: "x/y".into(),
                },
            )
            .await
            .unwrap();
        assert!(view.hook("b", "x/y").unwrap().is_none());
        assert!(view.last_fires("b", "x/y", None, 10).unwrap().0.is_empty());
        assert_eq!(view.last_fires("a", "one", None, 10).unwrap().0.len(), 1);
        assert_eq!(view.next_due().unwrap(), None);
        // a refused command changes nothing
        let again = engine
            .execute(actor.clone(), {
                let mut c = create("a", "one", &[]);
                if let HookCommand::Create { definition, .. } = &mut c {
                    definition.name = "other".into();
                }
                c
            })
            .await;
        assert!(
            matches!(again, Err(ServiceError::Domain(HookError::Conflict(_)))),
            "{again:?}"
        );
        // a rebuild from the log gives the same rows, and the log holds no token in clear
        let records = log
            .read_sync(HOOKS_TOPIC, HOOKS_PARTITION, 0, 1_000)
            .unwrap();
        assert_eq!(
            records.len(),
            9,
            "eight commands and the remove, not the refused one"
        );
        for r in &records {
            assert!(!r.value.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        }
        let rebuilt_dir = tempfile::tempdir().unwrap();
        let rebuilt = HooksView::open(store::open(rebuilt_dir.path()).unwrap()).unwrap();
        let envelopes: Vec<Envelope<HookEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        rebuilt
            .apply(&offsets, offsets[offsets.len() - 1] + 1, &envelopes)
            .unwrap();
        assert_eq!(rebuilt.groups().unwrap(), view.groups().unwrap());
        assert_eq!(rebuilt.hooks_in("a").unwrap(), view.hooks_in("a").unwrap());
        assert_eq!(
            rebuilt.last_fires("a", "one", None, 10).unwrap(),
            view.last_fires("a", "one", None, 10).unwrap()
        );
    }
}
