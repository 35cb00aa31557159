//! Whether this process writes a partition or follows its writer.
//!
//! Every engine runs a loop that, between commands, calls [`tend`]: when the log says this
//! process should write the partition and it does not yet, it takes the partition (after which
//! no earlier writer can append) and folds everything before its own ownership marker, and only
//! then decides commands; when the log says it should not, it folds what the writer appends so
//! reads here stay current. A failed append ends the writing; the next turn takes the partition
//! afresh (single writer) or goes on following (the group moved it elsewhere).
//!
//! **Invariant:** an engine decides only while [`WriterRole::is_writer`], and it became the writer only
//! after its projection folded the log up to its own acquisition.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::log::EventLog;
use tokio::sync::{mpsc, watch};

/// How often a follower folds what the writer appended.
pub const FOLLOW_POLL: Duration = Duration::from_millis(10);
/// How often a writer waiting for commands checks that it still should write.
pub const WRITER_CHECK: Duration = Duration::from_millis(200);
/// Pause after a failed attempt to take the partition (broker away, say).
const RETAKE_BACKOFF: Duration = Duration::from_millis(500);
/// Most a writer keeps folding to reach a position it knows the log holds (its own marker, its
/// own append) before it gives up and answers unavailable.
pub const REACH_PATIENCE: Duration = Duration::from_secs(10);

/// A partition's writer role in this process, shared by its engine and everyone who asks.
/// Cheap to clone.
#[derive(Clone)]
pub struct WriterRole {
    name: &'static str,
    writing: Arc<watch::Sender<bool>>,
    applied: Arc<watch::Sender<u64>>,
}

impl WriterRole {
    /// Not writing; the projection stands at `applied`.
    pub fn new(name: &'static str, applied: u64) -> WriterRole {
        WriterRole {
            name,
            writing: Arc::new(watch::channel(false).0),
            applied: Arc::new(watch::channel(applied).0),
        }
    }

    /// Whether this process writes the partition now.
    pub fn is_writer(&self) -> bool {
        *self.writing.borrow()
    }

    /// Changes of [`WriterRole::is_writer`].
    pub fn writer_changes(&self) -> watch::Receiver<bool> {
        self.writing.subscribe()
    }

    /// The log position this process's projection has applied, after each change.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The log position this process's projection has applied now.
    pub fn position(&self) -> u64 {
        *self.applied.borrow()
    }

    pub fn set_applied(&self, position: u64) {
        self.applied.send_if_modified(|p| {
            let moved = position > *p;
            *p = (*p).max(position);
            moved
        });
    }

    /// Gives up writing (after a failed append: the partition may have another writer now).
    pub fn lost(&self) {
        self.set_writing(false);
    }

    fn set_writing(&self, writing: bool) {
        if self.writing.send_replace(writing) != writing {
            tracing::info!(partition = self.name, writing, "writer role changed");
        }
    }

    /// Waits until the projection has applied `position` (a forwarded command's events, for
    /// read-your-writes on this node); false if it did not within `patience`.
    pub async fn wait_applied(&self, position: u64, patience: Duration) -> bool {
        let mut rx = self.applied();
        tokio::time::timeout(patience, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// One turn of an engine's loop between commands: takes the partition when the log says this
/// process should write it and it does not yet (returning the position its projection then
/// stands at), gives it up when the log says otherwise, and while following folds what the
/// writer appended. `catch_up` folds the log into the engine's projection and returns the
/// position reached.
pub async fn tend<L, F, Fut>(
    role: &WriterRole,
    log: &L,
    topic: &str,
    partition: u32,
    catch_up: F,
) -> Option<u64>
where
    L: EventLog,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, String>>,
{
    let assigned = log.assigned(topic, partition);
    if role.is_writer() {
        if assigned && log.holds(topic, partition) {
            return None;
        }
        role.set_writing(false);
    }
    if !assigned {
        match catch_up().await {
            Ok(position) => role.set_applied(position),
            Err(e) => tracing::debug!(topic, error = %e, "following the writer failed"),
        }
        return None;
    }
    let target = match log.acquire(topic, partition).await {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(topic, error = %e, "cannot take the partition; retrying");
            // meanwhile this node still shows what the log holds: commands it forwarded wait
            // for their positions, and reads here should not fall behind while the broker is slow
            match catch_up().await {
                Ok(position) => role.set_applied(position),
                Err(e) => tracing::debug!(topic, error = %e, "following the writer failed"),
            }
            tokio::time::sleep(RETAKE_BACKOFF).await;
            return None;
        }
    };
    // a read may come back short (a slow broker); deciding before the projection holds
    // everything up to this writer's own marker would decide on a stale state
    let position = match fold_until(target, &catch_up).await {
        Ok(Reached::At(position)) => position,
        Ok(Reached::Short(position)) => {
            role.set_applied(position);
            tracing::warn!(
                topic,
                position,
                target,
                "the projection did not fold up to this writer's acquisition in time; retrying"
            );
            tokio::time::sleep(RETAKE_BACKOFF).await;
            return None;
        }
        Err(e) => {
            tracing::warn!(topic, error = %e, "cannot fold the log after taking the partition; retrying");
            tokio::time::sleep(RETAKE_BACKOFF).await;
            return None;
        }
    };
    role.set_applied(position);
    // the fold may have taken a while: the group may have moved the partition meanwhile
    if !(log.assigned(topic, partition) && log.holds(topic, partition)) {
        return None;
    }
    role.set_writing(true);
    Some(position)
}

/// Why a writer answers unavailable after an append the log did not return to its fold in
/// time: the command happened, its effect is not visible yet.
pub fn unseen_append(next: u64, position: u64) -> String {
    format!(
        "appended, but not yet visible: the log returned this writer's own append (up to \
         {next}) only up to {position}"
    )
}

/// How far [`fold_until`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Reached {
    /// The target, or past it.
    At(u64),
    /// Short of the target when patience ran out.
    Short(u64),
}

/// Folds with `catch_up` until the projection stands at `target` or beyond: a position the log
/// is known to hold (this writer's marker or append), which a single read may still come
/// back short of, when the broker is slow to return it. Gives up after [`REACH_PATIENCE`].
pub async fn fold_until<F, Fut, E>(target: u64, catch_up: F) -> Result<Reached, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
{
    let deadline = tokio::time::Instant::now() + REACH_PATIENCE;
    loop {
        let position = catch_up().await?;
        if position >= target {
            return Ok(Reached::At(position));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Reached::Short(position));
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// A single-writer engine (auth, worker-manager, object, secrets, index).
pub trait Writes: Send + Sync + 'static {
    type Job: Send + 'static;
    type Log: EventLog + 'static;
    fn log(&self) -> &Self::Log;
    fn topic(&self) -> (&'static str, u32);
    /// Folds the log into the projection, publishing on `role` the position after each
    /// batch it folds; the position reached.
    fn catch_up(&self, role: &WriterRole) -> impl Future<Output = Result<u64, String>> + Send;
    /// Decides, appends and applies the jobs (in their order), publishes the position its
    /// projection then stands at on `role` and only then answers them (a forwarded command's
    /// caller reads that position). False when the log or the projection failed (this process
    /// may no longer write, or must fold the log again), with the jobs it did not run.
    fn run(
        &self,
        jobs: Vec<Self::Job>,
        role: &WriterRole,
    ) -> impl Future<Output = (bool, Vec<Self::Job>)> + Send;
    /// Answers a job that arrived while this process does not write the partition.
    fn refuse(&self, job: Self::Job);
}

/// How long a follower of `topic` waits between looks at the log: `FOLLOW_POLL`, or half a
/// second where a test armed the fail point `<topic>-follow-slow`, to see what a follower
/// that lags behind its writer answers.
fn follow_poll(topic: &str) -> Duration {
    #[cfg(feature = "failpoints")]
    if fail::eval(&format!("{topic}-follow-slow"), |_| ()).is_some() {
        return Duration::from_millis(500);
    }
    let _ = topic;
    FOLLOW_POLL
}

/// The most jobs `drive` hands the writer at once.
pub const MAX_JOBS: usize = 64;

/// The loop of a single-writer engine: tends the role between commands, and hands the writer
/// each command with those already waiting behind it (up to `MAX_JOBS`).
pub async fn drive<W: Writes>(writer: W, role: WriterRole, mut rx: mpsc::Receiver<W::Job>) {
    let (topic, partition) = writer.topic();
    // jobs a failed run left: run (or refused) first once the role is settled again; every
    // failed run answers at least the jobs of the group that failed, so none waits forever
    let mut held: Vec<W::Job> = Vec::new();
    loop {
        tend(&role, writer.log(), topic, partition, || {
            writer.catch_up(&role)
        })
        .await;
        let wait = if role.is_writer() {
            WRITER_CHECK
        } else {
            follow_poll(topic)
        };
        let mut jobs = std::mem::take(&mut held);
        if jobs.is_empty() {
            match tokio::time::timeout(wait, rx.recv()).await {
                Err(_) => continue,
                Ok(None) => return,
                Ok(Some(job)) => jobs.push(job),
            }
        }
        while jobs.len() < MAX_JOBS {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if !role.is_writer() {
            jobs.into_iter().for_each(|job| writer.refuse(job));
            continue;
        }
        let (ran, left) = writer.run(jobs, &role).await;
        if !ran {
            role.lost();
        }
        held = left;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::log::{Appended, Batch, LogError, Record};

    /// A log that assigns this process the partition and gives it with the position its
    /// projection must reach first, or (`None`) cannot give it (a slow or lost broker
    /// refusing the acquisition); with `.1`, the group takes the partition back as soon as it
    /// is given.
    struct Takes(Option<u64>, std::sync::atomic::AtomicBool);

    impl EventLog for Takes {
        async fn append(&self, _: &str, _: u32, _: Vec<Record>) -> Result<Appended, LogError> {
            Err(LogError::NotWriter)
        }
        async fn read(&self, _: &str, _: u32, offset: u64, _: usize) -> Result<Batch, LogError> {
            Ok(Batch {
                records: vec![],
                next: offset,
            })
        }
        async fn end_offset(&self, _: &str, _: u32) -> Result<u64, LogError> {
            Ok(self.0.unwrap_or(0))
        }
        fn assigned(&self, _: &str, _: u32) -> bool {
            !self.1.load(std::sync::atomic::Ordering::SeqCst)
        }
        async fn acquire(&self, _: &str, _: u32) -> Result<u64, LogError> {
            self.0
                .ok_or_else(|| LogError::Unavailable("the broker timed out".into()))
        }
    }

    fn takes(at: Option<u64>) -> Takes {
        Takes(at, false.into())
    }

    /// A partition the group moved elsewhere while the node folded up to its acquisition is
    /// not written: the node publishes how far it folded and stays a follower.
    #[tokio::test]
    async fn a_partition_revoked_during_the_fold_is_not_written() {
        let role = WriterRole::new("queue", 0);
        let log = takes(Some(10));
        let took = tend(&role, &log, "queue", 0, || async {
            log.1.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, String>(12)
        })
        .await;
        assert_eq!(took, None);
        assert!(!role.is_writer());
        assert_eq!(role.position(), 12);
    }

    /// A node that took the partition writes only once its projection has folded up to its
    /// acquisition: reads that come back short (a slow broker) are repeated until then.
    #[tokio::test]
    async fn a_writer_decides_only_after_folding_up_to_its_acquisition() {
        let role = WriterRole::new("queue", 0);
        // each catch-up gets 4 records further, as reads of a slow broker might
        let folded = std::sync::atomic::AtomicU64::new(0);
        let catch_up = || async {
            Ok::<_, String>(folded.fetch_add(4, std::sync::atomic::Ordering::SeqCst) + 4)
        };
        let took = tend(&role, &takes(Some(10)), "queue", 0, catch_up).await;
        assert_eq!(took, Some(12));
        assert!(role.is_writer());
        assert_eq!(role.position(), 12);
    }

    /// When the projection cannot reach its acquisition in time (`REACH_PATIENCE`, 10 s), the
    /// node does not write, and publishes how far it got.
    #[tokio::test]
    async fn a_writer_that_cannot_fold_up_to_its_acquisition_does_not_write() {
        let role = WriterRole::new("queue", 0);
        let took = tend(&role, &takes(Some(10)), "queue", 0, || async {
            Ok::<_, String>(7)
        })
        .await;
        assert_eq!(took, None);
        assert!(!role.is_writer());
        assert_eq!(role.position(), 7);
    }

    /// While the partition cannot be taken, the node still folds what the log holds and
    /// publishes how far it got, and it does not write.
    #[tokio::test]
    async fn a_partition_that_cannot_be_taken_is_still_followed() {
        let role = WriterRole::new("queue", 3);
        let took = tend(&role, &takes(None), "queue", 0, || async { Ok(42) }).await;
        assert_eq!(took, None);
        assert!(!role.is_writer());
        assert_eq!(role.position(), 42);
    }
}
