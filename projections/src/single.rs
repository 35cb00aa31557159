//! The engine of the services other than the queue (auth, worker-manager, object, secrets,
//! index): load -> decide -> append -> apply -> answer. A service brings its projection
//! (`Service`: how it decides and folds); `ServiceEngine` brings the writer loop, the catch-up
//! and the answers.
//!
//! Commands waiting together are written together when their `Footprint`s allow: each is
//! decided against the projection as it stands, so a group holds only commands none of which
//! reads or writes what another writes (a service that says nothing has each command run
//! alone). The group's events go to the log in one append (one durable write) and to the
//! projection in one fold, in the commands' order, which gives the state the commands would
//! have given one at a time. Commands that only share a key may write to one stream (a hook's
//! fires): their events are numbered on across the group, each after the one before.
//!
//! **Invariant:** a caller is answered only after its events are durable and applied.

use crate::engine::{fold_log, FoldError};
use crate::role::{drive, fold_until, unseen_append, Reached, WriterRole, Writes};
use crate::store::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use taskledger_core::envelope::EventId;
use taskledger_core::envelope::{Actor, Envelope};
use taskledger_core::log::{oversized, EventLog, LogError, Record};
use taskledger_core::time::Millis;
use tokio::sync::{mpsc, oneshot};

/// What one command decided: its stream, the stream's last applied sequence, the events.
pub struct Decision<E> {
    pub stream: String,
    pub last_sequence: u64,
    pub events: Vec<E>,
}

/// A projection with a single writer: its partition, how it decides and how it folds.
pub trait Service: Send + Sync + 'static {
    type Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    type Command: Send + 'static;
    /// The domain's refusal (bad input, conflict, not found).
    type Refusal: std::error::Error + Send + 'static;
    /// The topic and partition the service writes.
    const TOPIC: &'static str;
    const PARTITION: u32;
    /// The name its writer role is known by (metrics, logs).
    const NAME: &'static str;

    fn decide(
        &self,
        command: &Self::Command,
        now: Millis,
    ) -> Result<Decision<Self::Event>, ServiceError<Self::Refusal>>;
    fn type_name(event: &Self::Event) -> &'static str;
    /// What `command` touches, for writing it in one append with others (see the module's
    /// comment). By default, everything: the command is written alone.
    fn footprint(command: &Self::Command) -> Footprint {
        let _ = command;
        Footprint::Everything
    }
    /// Folds envelopes stored at `offsets`, with `next` (where to read on) in the same batch.
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<Self::Event>],
    ) -> Result<(), StoreError>;
    fn consumer_offset(&self) -> Result<u64, StoreError>;
}

/// What a command's decision reads and its events change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Footprint {
    /// Anything: the command is decided and written alone.
    Everything,
    /// `exclusive`: keys the decision reads or the events change in a way whose order matters;
    /// `shared`: keys the events only change in a way that gives the same state in any order
    /// (a namespace's expiry, only ever extended), which another command may share but no
    /// command may read.
    Keys {
        exclusive: Vec<String>,
        shared: Vec<String>,
    },
}

/// The footprints of a group being formed.
#[derive(Default)]
struct Claimed {
    /// Commands taken.
    taken: usize,
    everything: bool,
    exclusive: HashSet<String>,
    shared: HashSet<String>,
}

impl Claimed {
    /// Takes `footprint` into the group unless it conflicts with what the group holds;
    /// whether it did.
    fn claim(&mut self, footprint: &Footprint) -> bool {
        let taken = self.claim_keys(footprint);
        self.taken += usize::from(taken);
        taken
    }

    fn claim_keys(&mut self, footprint: &Footprint) -> bool {
        match footprint {
            Footprint::Everything if self.taken == 0 => {
                self.everything = true;
                true
            }
            Footprint::Everything => false,
            Footprint::Keys { exclusive, shared } => {
                let conflicts = self.everything
                    || exclusive
                        .iter()
                        .any(|k| self.exclusive.contains(k) || self.shared.contains(k))
                    || shared.iter().any(|k| self.exclusive.contains(k));
                if !conflicts {
                    self.exclusive.extend(exclusive.iter().cloned());
                    self.shared.extend(shared.iter().cloned());
                }
                !conflicts
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError<R: std::error::Error> {
    #[error(transparent)]
    Domain(R),
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// An event larger than the log takes (`EventLog::max_record_bytes`).
    #[error("{0}")]
    TooLarge(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

fn unavailable<R: std::error::Error>(e: impl std::fmt::Display) -> ServiceError<R> {
    ServiceError::Unavailable(e.to_string())
}

type Answer<S> =
    Result<Vec<Envelope<<S as Service>::Event>>, ServiceError<<S as Service>::Refusal>>;

struct Job<S: Service> {
    actor: Actor,
    command: S::Command,
    reply: oneshot::Sender<Answer<S>>,
}

/// A handle to a service's writer. Cheap to clone.
pub struct ServiceEngine<S: Service> {
    tx: mpsc::Sender<Job<S>>,
    view: Arc<S>,
    role: WriterRole,
}

impl<S: Service> Clone for ServiceEngine<S> {
    fn clone(&self) -> Self {
        ServiceEngine {
            tx: self.tx.clone(),
            view: self.view.clone(),
            role: self.role.clone(),
        }
    }
}

/// Applies the records of the service's partition its projection has not seen (`fold_log`,
/// publishing on `progress`); returns the position reached.
pub async fn catch_up<S: Service, L: EventLog>(
    view: &S,
    log: &L,
    progress: Option<&WriterRole>,
) -> Result<u64, ServiceError<S::Refusal>> {
    let from = view.consumer_offset()?;
    fold_log(
        log,
        S::TOPIC,
        S::PARTITION,
        from,
        progress,
        |offsets, next, envs| view.apply(offsets, next, envs),
    )
    .await
    .map_err(|e| match e {
        FoldError::Log(e) => unavailable(e),
        FoldError::Store(e) => ServiceError::Store(e),
    })
}

/// The partition's writer loop (see `role::drive`).
struct Writer<S, L> {
    view: Arc<S>,
    log: Arc<L>,
}

impl<S: Service, L: EventLog + 'static> Writes for Writer<S, L> {
    type Job = Job<S>;
    type Log = L;
    fn log(&self) -> &L {
        &self.log
    }
    fn topic(&self) -> (&'static str, u32) {
        (S::TOPIC, S::PARTITION)
    }
    async fn catch_up(&self, role: &WriterRole) -> Result<u64, String> {
        catch_up(&*self.view, &*self.log, Some(role))
            .await
            .map_err(|e| e.to_string())
    }
    async fn run(&self, jobs: Vec<Job<S>>, role: &WriterRole) -> (bool, Vec<Job<S>>) {
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            // the longest run of waiting jobs that can be written together
            let mut claimed = Claimed::default();
            let mut group = Vec::new();
            while let Some(job) = jobs.next_if(|j| claimed.claim(&S::footprint(&j.command))) {
                group.push(job);
            }
            let (commands, replies): (Vec<_>, Vec<_>) = group
                .into_iter()
                .map(|j| ((j.actor, j.command), j.reply))
                .unzip();
            let answers = write(&*self.view, &*self.log, commands).await;
            // the log failed (this process may no longer write), or the projection did not
            // take what the log now holds: nothing more is decided before the role is
            // settled again, which folds the log first
            let failed = answers.iter().any(|a| {
                matches!(
                    a,
                    Err(ServiceError::Unavailable(_)) | Err(ServiceError::Store(_))
                )
            });
            if let Ok(position) = self.view.consumer_offset() {
                role.set_applied(position);
            }
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            if failed {
                // the rest wait for the role to be settled again (`drive` runs them next)
                return (false, jobs.collect());
            }
        }
        (true, vec![])
    }
    fn refuse(&self, job: Job<S>) {
        let _ = job.reply.send(Err(unavailable(LogError::NotWriter)));
    }
}

impl<S: Service> ServiceEngine<S> {
    /// Catches the projection up with the log, then starts the writer task, which writes
    /// while the log assigns this process the partition and follows its writer otherwise.
    pub async fn start<L: EventLog + 'static>(
        view: Arc<S>,
        log: Arc<L>,
    ) -> Result<ServiceEngine<S>, ServiceError<S::Refusal>> {
        let end = catch_up(&*view, &*log, None).await?;
        let (tx, rx) = mpsc::channel::<Job<S>>(256);
        let role = WriterRole::new(S::NAME, end);
        let writer = Writer {
            view: view.clone(),
            log,
        };
        let driven = tokio::spawn(drive(writer, role.clone(), rx));
        tokio::spawn(async move {
            if driven.await.is_err_and(|e| e.is_panic()) {
                crate::exits::exit_after_panic(S::NAME);
            }
        });
        Ok(ServiceEngine { tx, view, role })
    }

    /// Whether this process writes the partition, and how far its projection is.
    pub fn role(&self) -> &WriterRole {
        &self.role
    }

    pub fn view(&self) -> &Arc<S> {
        &self.view
    }

    /// Runs a command; answers with its envelopes (none: "already so") once they are durable
    /// and applied.
    pub async fn execute(&self, actor: Actor, command: S::Command) -> Answer<S> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            actor,
            command,
            reply,
        };
        let stopped = || unavailable(format!("{} writer stopped", S::NAME));
        self.tx.send(job).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Envelopes and, in the same order, the log records that carry them.
type Stamped<E> = (Vec<Envelope<E>>, Vec<Record>);

/// A decision's events as envelopes of its stream numbered on from its last sequence, each
/// with the log record that carries it.
fn stamp<S: Service>(
    decision: &Decision<S::Event>,
    actor: &Actor,
    now: Millis,
) -> Result<Stamped<S::Event>, StoreError> {
    let stream = &decision.stream;
    let mut envelopes = Vec::with_capacity(decision.events.len());
    let mut records = Vec::with_capacity(decision.events.len());
    for (sequence, event) in (decision.last_sequence + 1..).zip(&decision.events) {
        let env = Envelope {
            event_id: EventId::new(),
            stream_id: stream.clone(),
            sequence,
            time: now,
            actor: actor.clone(),
            causation_id: None,
            writer_epoch: 1,
            payload: event.clone(),
        };
        records.push(Record::of(&env, S::type_name(event))?);
        envelopes.push(env);
    }
    Ok((envelopes, records))
}

/// The same failure for each of a group's commands: `e` for the first, a copy for the rest.
fn for_each_of<R: std::error::Error>(e: ServiceError<R>, n: usize) -> Vec<ServiceError<R>> {
    let copy = || match &e {
        ServiceError::Unavailable(m) => ServiceError::Unavailable(m.clone()),
        ServiceError::TooLarge(m) => ServiceError::TooLarge(m.clone()),
        // after the append: the events are durable, the projection did not take them
        ServiceError::Store(fault) => {
            ServiceError::Store(StoreError::Log(LogError::Corrupt(fault.to_string())))
        }
        ServiceError::Domain(refusal) => ServiceError::Unavailable(refusal.to_string()),
    };
    let mut out: Vec<ServiceError<R>> = (1..n).map(|_| copy()).collect();
    out.insert(0, e);
    out
}

/// Decides each command against the projection, appends all their events (one durable
/// write), applies them (one fold); each command's answer, in order.
async fn write<S: Service, L: EventLog>(
    view: &S,
    log: &L,
    commands: Vec<(Actor, S::Command)>,
) -> Vec<Answer<S>> {
    let now = Millis::now();
    let mut answers: Vec<Option<Answer<S>>> = Vec::with_capacity(commands.len());
    // the commands with events: where their answers go, and their envelopes
    let mut written: Vec<(usize, Vec<Envelope<S::Event>>)> = Vec::new();
    let mut records = Vec::new();
    // the last sequence numbered in this group, per stream
    let mut numbered: HashMap<String, u64> = HashMap::new();
    for (i, (actor, command)) in commands.iter().enumerate() {
        let decided = view.decide(command, now).and_then(|mut decision| {
            if decision.events.is_empty() {
                return Ok(None);
            }
            if let Some(&last) = numbered.get(&decision.stream) {
                decision.last_sequence = decision.last_sequence.max(last);
            }
            let (envelopes, stamped) = stamp::<S>(&decision, actor, now)?;
            if let Some(refused) = oversized(&stamped, log.max_record_bytes()) {
                return Err(ServiceError::TooLarge(refused.to_string()));
            }
            if let Some(last) = envelopes.last() {
                numbered.insert(decision.stream.clone(), last.sequence);
            }
            Ok(Some((envelopes, stamped)))
        });
        answers.push(match decided {
            Err(e) => Some(Err(e)),
            Ok(None) => Some(Ok(vec![])),
            Ok(Some((envelopes, stamped))) => {
                records.extend(stamped);
                written.push((i, envelopes));
                None
            }
        });
    }
    if !written.is_empty() {
        let envelopes: Vec<Envelope<S::Event>> = written
            .iter()
            .flat_map(|(_, envs)| envs.iter().cloned())
            .collect();
        match append_and_apply(view, log, records, &envelopes).await {
            Ok(()) => {
                for (i, envs) in written {
                    answers[i] = Some(Ok(envs));
                }
            }
            Err(e) => {
                for ((i, _), e) in written.iter().zip(for_each_of(e, written.len())) {
                    answers[*i] = Some(Err(e));
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.expect("every command answered"))
        .collect()
}

/// Appends `records` (one durable write) and applies their `envelopes`.
async fn append_and_apply<S: Service, L: EventLog>(
    view: &S,
    log: &L,
    records: Vec<Record>,
    envelopes: &[Envelope<S::Event>],
) -> Result<(), ServiceError<S::Refusal>> {
    let appended = log
        .append(S::TOPIC, S::PARTITION, records)
        .await
        .map_err(unavailable)?;
    // a crash here leaves the log ahead of the projection: the next start folds the rest
    #[cfg(feature = "failpoints")]
    fail::fail_point!(&format!("{}-after-append", S::NAME));
    if appended.prior == view.consumer_offset()? {
        view.apply(&appended.offsets, appended.next, envelopes)?;
    } else {
        // records this writer had not seen came first (or markers it skips): fold from the
        // log until it holds our own events too (a read may come back short)
        let reached = fold_until(appended.next, || catch_up(view, log, None)).await?;
        if let Reached::Short(position) = reached {
            return Err(unavailable(unseen_append(appended.next, position)));
        }
    }
    Ok(())
}
