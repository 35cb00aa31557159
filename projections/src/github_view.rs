//! The GitHub projection and its writer.
//!
//! `GithubView` folds `GithubEvent`s (topic `taskledger.github`) into the `github` column
//! family: the deliveries taken (so GitHub's redelivery of a webhook is not published twice),
//! the webhooks waiting for their job (by log offset, until `JobDone`), each account's App
//! installation, the builds by task group with a listing index (organization, repository,
//! creation time) and each stream's last applied sequence.
//!
//! `GithubEngine` is the partition's single writer (`single::ServiceEngine`); commands on
//! different streams are written together.
//!
//! **Invariant:** every row and the consumed offset go in one batch.

use crate::keys;
use crate::single::{Decision, Footprint, Service, ServiceEngine, ServiceError};
use crate::store::{cf, read_u64, StoreError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::github::{
    self, sanitize, Build, BuildState, Facts, GithubCommand, GithubEvent, JobOutcome, Webhook,
    GITHUB_TOPIC,
};
use taskledger_core::ids::Slug;
use taskledger_core::time::Millis;

/// The GitHub integration's single partition.
pub const GITHUB_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const GITHUB_CONSUMER: &str = "github-view";

/// The domain never refuses a command: bad input is refused before it becomes one.
pub type GithubRefusal = std::convert::Infallible;

/// A webhook waiting for its job.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The log offset of its `WebhookReceived`.
    pub offset: u64,
    pub received: Millis,
    pub webhook: Webhook,
}

/// Which builds a listing shows (`builds`' query).
#[derive(Clone, Debug, Default)]
pub struct BuildFilter {
    /// As routing keys spell them (`sanitize`).
    pub organization: Option<String>,
    pub repository: Option<String>,
    pub sha: Option<String>,
    pub pull_request: Option<u64>,
}

impl BuildFilter {
    fn keeps(&self, b: &Build) -> bool {
        self.sha.as_ref().is_none_or(|s| *s == b.sha)
            && self.pull_request.is_none_or(|n| b.pull_request == Some(n))
    }
}

pub struct GithubView {
    db: Arc<DB>,
    /// Serializes folds: each reads the rows the previous one wrote.
    folding: Mutex<()>,
}

impl GithubView {
    pub fn open(db: Arc<DB>) -> Result<GithubView, StoreError> {
        cf(&db, keys::CF_GITHUB)?;
        Ok(GithubView {
            db,
            folding: Mutex::new(()),
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        let github = cf(&self.db, keys::CF_GITHUB)?;
        match self.db.get_pinned_cf(github, key)? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// An account's installation of the App.
    pub fn installation(&self, owner: &str) -> Result<Option<u64>, StoreError> {
        self.get(&keys::github_installation(owner))
    }

    pub fn build(&self, task_group_id: &Slug) -> Result<Option<Build>, StoreError> {
        self.get(&keys::github_build(task_group_id.as_bytes()))
    }

    /// The webhooks waiting for their job, oldest first, at most `limit`, each with the log
    /// offset and the time that received it.
    pub fn queued(&self, limit: usize) -> Result<Vec<Queued>, StoreError> {
        let prefix = keys::GITHUB_QUEUED_PREFIX;
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, keys::CF_GITHUB)?,
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(prefix) else {
                break;
            };
            if out.len() == limit {
                break;
            }
            let offset = u64::from_be_bytes(rest.try_into().unwrap_or([0; 8]));
            let (received, webhook) = codec::decode(&v)?;
            out.push(Queued {
                offset,
                received,
                webhook,
            });
        }
        Ok(out)
    }

    /// Builds whose state is `pending`, at most `limit`, after the task group `after`.
    pub fn pending_builds(
        &self,
        after: Option<&Slug>,
        limit: usize,
    ) -> Result<Vec<Build>, StoreError> {
        let prefix = keys::GITHUB_PENDING_PREFIX;
        let start = match after {
            Some(id) => {
                let mut k = keys::github_pending(id.as_bytes());
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let github = cf(&self.db, keys::CF_GITHUB)?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(github, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, _) = item?;
            let Some(id) = k.strip_prefix(prefix) else {
                break;
            };
            if out.len() == limit {
                break;
            }
            let id: [u8; 16] = id.try_into().unwrap_or([0; 16]);
            if let Some(b) = self.get::<Build>(&keys::github_build(&id))? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Builds `filter` keeps, by organization, repository and creation, after the listing
    /// key `after`, at most `limit`; and the key to go on from when more may remain.
    pub fn builds(
        &self,
        filter: &BuildFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Build>, Option<Vec<u8>>), StoreError> {
        let prefix = keys::github_listing_prefix(
            filter.organization.as_deref(),
            filter.repository.as_deref(),
        );
        let start = match after {
            Some(k) if k.starts_with(&prefix) => {
                let mut k = k.to_vec();
                k.push(0);
                k
            }
            _ => prefix.clone(),
        };
        let github = cf(&self.db, keys::CF_GITHUB)?;
        let mut out = Vec::new();
        let mut last = None;
        for item in self
            .db
            .iterator_cf(github, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                return Ok((out, None));
            }
            if out.len() == limit {
                return Ok((out, last));
            }
            let Some(id) = k.len().checked_sub(16).and_then(|at| k.get(at..)) else {
                continue;
            };
            let id: [u8; 16] = id.try_into().unwrap_or([0; 16]);
            if let Some(b) = self.get::<Build>(&keys::github_build(&id))? {
                if filter.keeps(&b) {
                    out.push(b);
                }
            }
            last = Some(k.to_vec());
        }
        Ok((out, None))
    }

    /// Every build `filter` keeps, in the listing's order (all its pages).
    pub fn all_builds(&self, filter: &BuildFilter) -> Result<Vec<Build>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (rows, more) = self.builds(filter, after.as_deref(), 1000)?;
            out.extend(rows);
            match more {
                Some(k) => after = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// Applies `change` to a build as the fold leaves it so far (`builds`, else stored); a
    /// build never recorded is left alone.
    fn edit_build(
        &self,
        builds: &mut HashMap<Slug, Build>,
        id: &Slug,
        change: impl FnOnce(&mut Build),
    ) -> Result<(), StoreError> {
        let stored = match builds.remove(id) {
            Some(b) => Some(b),
            None => self.build(id)?,
        };
        if let Some(mut b) = stored {
            change(&mut b);
            builds.insert(*id, b);
        }
        Ok(())
    }

    fn sequence(&self, stream: &str) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_GITHUB, &keys::github_stream(stream))
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(GITHUB_CONSUMER, GITHUB_TOPIC, GITHUB_PARTITION)
    }

    /// What `command`'s decision reads.
    fn facts(&self, command: &GithubCommand) -> Result<Facts, StoreError> {
        let github = cf(&self.db, keys::CF_GITHUB)?;
        let mut facts = Facts::default();
        match command {
            GithubCommand::Receive(w) => {
                facts.delivered = self
                    .db
                    .get_pinned_cf(github, keys::github_delivery(&w.event_id))?
                    .is_some()
            }
            GithubCommand::Install { owner, .. } => {
                facts.installation = self.installation(owner)?
            }
            GithubCommand::StartBuild(b) => {
                facts.build = self.build(&b.task_group_id)?.map(|b| b.state)
            }
            GithubCommand::SetBuildState { task_group_id, .. } => {
                facts.build = self.build(task_group_id)?.map(|b| b.state)
            }
            GithubCommand::Done { queued, .. } => {
                facts.queued = self
                    .db
                    .get_pinned_cf(github, keys::github_queued(*queued))?
                    .is_some()
            }
        }
        Ok(facts)
    }
}

pub type GithubEngineError = ServiceError<GithubRefusal>;

/// The GitHub integration's writer (see `single`).
pub type GithubEngine = ServiceEngine<GithubView>;

impl Service for GithubView {
    type Event = GithubEvent;
    type Command = GithubCommand;
    type Refusal = GithubRefusal;
    const TOPIC: &'static str = GITHUB_TOPIC;
    const PARTITION: u32 = GITHUB_PARTITION;
    const NAME: &'static str = "github";

    fn decide(
        &self,
        command: &GithubCommand,
        _now: Millis,
    ) -> Result<Decision<GithubEvent>, GithubEngineError> {
        let events = github::decide(&self.facts(command)?, command);
        let stream = command.stream();
        Ok(Decision {
            last_sequence: self.sequence(&stream)?,
            stream,
            events,
        })
    }
    fn type_name(event: &GithubEvent) -> &'static str {
        event.type_name()
    }
    /// A command reads and writes its stream's rows alone.
    fn footprint(command: &GithubCommand) -> Footprint {
        Footprint::Keys {
            exclusive: vec![command.stream()],
            shared: vec![],
        }
    }
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<GithubEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("github fold lock");
        let github_cf = cf(&self.db, keys::CF_GITHUB)?;
        let mut batch = WriteBatch::default();
        let mut sequences: HashMap<String, u64> = HashMap::new();
        // builds as this fold leaves them
        let mut builds: HashMap<Slug, Build> = HashMap::new();
        for (env, &offset) in envelopes.iter().zip(offsets) {
            let seen = match sequences.get(&env.stream_id) {
                Some(s) => *s,
                None => self.sequence(&env.stream_id)?,
            };
            if env.sequence <= seen {
                continue;
            }
            sequences.insert(env.stream_id.clone(), env.sequence);
            match &env.payload {
                GithubEvent::WebhookReceived(w) => {
                    batch.put_cf(
                        github_cf,
                        keys::github_delivery(&w.event_id),
                        offset.to_be_bytes(),
                    );
                    batch.put_cf(
                        github_cf,
                        keys::github_queued(offset),
                        codec::encode(&(env.time, w))?,
                    );
                }
                GithubEvent::JobDone {
                    queued, outcome, ..
                } => {
                    batch.delete_cf(github_cf, keys::github_queued(*queued));
                    if let JobOutcome::Created {
                        task_group_id,
                        tasks,
                        ..
                    } = outcome
                    {
                        self.edit_build(&mut builds, task_group_id, |b| b.tasks = Some(*tasks))?;
                    }
                }
                GithubEvent::InstallationSet {
                    owner,
                    installation_id,
                } => batch.put_cf(
                    github_cf,
                    keys::github_installation(owner),
                    codec::encode(installation_id)?,
                ),
                GithubEvent::BuildCreated(b) => {
                    let mut b = b.clone();
                    (b.created, b.updated) = (env.time, env.time);
                    batch.put_cf(
                        github_cf,
                        keys::github_listing(
                            &sanitize(&b.owner),
                            &sanitize(&b.repo),
                            b.created,
                            b.task_group_id.as_bytes(),
                        ),
                        [],
                    );
                    builds.insert(b.task_group_id, b);
                }
                GithubEvent::BuildStateChanged {
                    task_group_id,
                    state,
                } => {
                    self.edit_build(&mut builds, task_group_id, |b| {
                        b.state = *state;
                        b.updated = env.time;
                    })?;
                }
            }
        }
        for (id, b) in &builds {
            batch.put_cf(
                github_cf,
                keys::github_build(id.as_bytes()),
                codec::encode(b)?,
            );
            if b.state == BuildState::Pending {
                batch.put_cf(github_cf, keys::github_pending(id.as_bytes()), []);
            } else {
                batch.delete_cf(github_cf, keys::github_pending(id.as_bytes()));
            }
        }
        for (stream, sequence) in &sequences {
            batch.put_cf(
                github_cf,
                keys::github_stream(stream),
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
    use taskledger_core::envelope::Actor;
    use taskledger_core::github::{derived_slug, Exchange};

    fn webhook(event_id: &str, owner: &str) -> Webhook {
        Webhook {
            event_id: event_id.into(),
            event: "push".into(),
            exchange: Exchange::Push,
            owner: owner.into(),
            repo: "app".into(),
            action: None,
            installation_id: 7,
            tasks_for: "github-push".into(),
            branch: Some("main".into()),
            comment: None,
            check_run_id: None,
            check_suite_id: None,
            body: "{}".into(),
        }
    }

    fn build(event_id: &str, owner: &str, sha: &str) -> Build {
        Build {
            owner: owner.into(),
            repo: "app".into(),
            sha: sha.into(),
            branch: Some("main".into()),
            task_group_id: derived_slug(event_id, "\0taskGroupId"),
            state: BuildState::Pending,
            installation_id: 7,
            event_type: "push".into(),
            event_id: event_id.into(),
            pull_request: None,
            checks: false,
            tasks: None,
            created: Millis(0),
            updated: Millis(0),
        }
    }

    #[tokio::test]
    async fn webhooks_wait_for_their_job_and_builds_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(GithubView::open(db.clone()).unwrap());
        let engine = GithubEngine::start(view.clone(), log).await.unwrap();
        let run = |c| engine.execute(Actor::system("github"), c);
        assert_eq!(
            run(GithubCommand::Receive(webhook("d-1", "acme")))
                .await
                .unwrap()
                .len(),
            1
        );
        // GitHub's redelivery of the same webhook is taken once
        assert!(run(GithubCommand::Receive(webhook("d-1", "acme")))
            .await
            .unwrap()
            .is_empty());
        run(GithubCommand::Receive(webhook("d-2", "acme.co")))
            .await
            .unwrap();
        let queued = view.queued(10).unwrap();
        assert_eq!(
            queued
                .iter()
                .map(|q| q.webhook.event_id.as_str())
                .collect::<Vec<_>>(),
            ["d-1", "d-2"]
        );
        assert!(queued[0].received.0 > 0);
        let done = |q: &Queued| GithubCommand::Done {
            queued: q.offset,
            event_id: q.webhook.event_id.clone(),
            outcome: JobOutcome::Skipped {
                reason: "no .taskcluster.yml".into(),
            },
        };
        assert_eq!(run(done(&queued[0])).await.unwrap().len(), 1);
        assert!(run(done(&queued[0])).await.unwrap().is_empty());
        assert_eq!(view.queued(10).unwrap().len(), 1);

        for (e, owner, sha) in [
            ("d-1", "acme", "a1"),
            ("d-2", "acme.co", "b1"),
            ("d-3", "acme", "a2"),
        ] {
            run(GithubCommand::StartBuild(build(e, owner, sha)))
                .await
                .unwrap();
        }
        let g = derived_slug("d-1", "\0taskGroupId");
        run(GithubCommand::SetBuildState {
            task_group_id: g,
            state: BuildState::Success,
        })
        .await
        .unwrap();
        let b = view.build(&g).unwrap().unwrap();
        assert_eq!(b.state, BuildState::Success);
        let pending: Vec<String> = view
            .pending_builds(None, 10)
            .unwrap()
            .into_iter()
            .map(|b| b.sha)
            .collect();
        assert_eq!(pending.len(), 2);
        assert!(!pending.contains(&"a1".to_string()));
        let first = view.pending_builds(None, 1).unwrap();
        let rest = view
            .pending_builds(Some(&first[0].task_group_id), 10)
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_ne!(rest[0].task_group_id, first[0].task_group_id);
        assert!(b.updated >= b.created && b.created.0 > 0);

        let all = |f: &BuildFilter| {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let (page, next) = view.builds(f, after.as_deref(), 1).unwrap();
                out.extend(page.into_iter().map(|b| b.sha));
                match next {
                    Some(k) => after = Some(k),
                    None => return out,
                }
            }
        };
        assert_eq!(all(&BuildFilter::default()).len(), 3);
        let acme = BuildFilter {
            organization: Some("acme".into()),
            ..BuildFilter::default()
        };
        assert_eq!(all(&acme), ["a1", "a2"]);
        let dotted = BuildFilter {
            organization: Some("acme%co".into()),
            repository: Some("app".into()),
            ..BuildFilter::default()
        };
        assert_eq!(all(&dotted), ["b1"]);
        let sha = BuildFilter {
            sha: Some("a2".into()),
            ..acme.clone()
        };
        assert_eq!(all(&sha), ["a2"]);

        run(GithubCommand::Install {
            owner: "Acme".into(),
            installation_id: 7,
        })
        .await
        .unwrap();
        assert_eq!(view.installation("acme").unwrap(), Some(7));

        // the job's end says how many tasks its build has
        let d2 = derived_slug("d-2", "\0taskGroupId");
        assert_eq!(view.build(&d2).unwrap().unwrap().tasks, None);
        let waiting = view.queued(10).unwrap();
        assert_eq!(waiting[0].webhook.event_id, "d-2");
        run(GithubCommand::Done {
            queued: waiting[0].offset,
            event_id: "d-2".into(),
            outcome: JobOutcome::Created {
                task_group_id: d2,
                tasks: 2,
                routes: vec![],
                owner: "acme.co".into(),
                repo: "app".into(),
            },
        })
        .await
        .unwrap();
        assert_eq!(view.build(&d2).unwrap().unwrap().tasks, Some(2));
        assert!(view.queued(10).unwrap().is_empty());
    }
}
