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
    let taken = match log.acquire(topic, partition).await {
        Ok(()) => catch_up().await,
        Err(e) => Err(e.to_string()),
    };
    match taken {
        Ok(position) => {
            role.set_applied(position);
            role.set_writing(true);
            Some(position)
        }
        Err(e) => {
            tracing::warn!(topic, error = %e, "cannot take the partition; retrying");
            // meanwhile this node still shows what the log holds: commands it forwarded wait
            // for their positions, and reads here should not fall behind while the broker is slow
            if let Ok(position) = catch_up().await {
                role.set_applied(position);
            }
            tokio::time::sleep(RETAKE_BACKOFF).await;
            None
        }
    }
}

/// An engine that decides one command at a time (auth, worker-manager).
pub trait Writes: Send + Sync + 'static {
    type Job: Send + 'static;
    type Log: EventLog + 'static;
    fn log(&self) -> &Self::Log;
    fn topic(&self) -> (&'static str, u32);
    /// Folds the log into the projection, publishing on `role` the position after each
    /// batch it folds; the position reached.
    fn catch_up(&self, role: &WriterRole) -> impl Future<Output = Result<u64, String>> + Send;
    /// Decides, appends and applies one job, publishes the position its projection then
    /// stands at on `role` and only then answers it (a forwarded command's caller reads that
    /// position); false when the log failed (this process may no longer write).
    fn run(&self, job: Self::Job, role: &WriterRole) -> impl Future<Output = bool> + Send;
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

/// The loop of a one-command-at-a-time engine: tends the role between commands.
pub async fn drive<W: Writes>(writer: W, role: WriterRole, mut rx: mpsc::Receiver<W::Job>) {
    let (topic, partition) = writer.topic();
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
        let job = match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => continue,
            Ok(None) => return,
            Ok(Some(job)) => job,
        };
        if !role.is_writer() {
            writer.refuse(job);
            continue;
        }
        if !writer.run(job, &role).await {
            role.lost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::log::{Appended, Batch, LogError, Record};

    /// A log that assigns this process the partition but cannot give it (a slow or lost
    /// broker refusing the acquisition).
    struct CannotTake;

    impl EventLog for CannotTake {
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
            Ok(0)
        }
        async fn acquire(&self, _: &str, _: u32) -> Result<(), LogError> {
            Err(LogError::Unavailable("the broker timed out".into()))
        }
    }

    /// While the partition cannot be taken, the node still folds what the log holds and
    /// publishes how far it got, and it does not write.
    #[tokio::test]
    async fn a_partition_that_cannot_be_taken_is_still_followed() {
        let role = WriterRole::new("queue", 3);
        let took = tend(&role, &CannotTake, "queue", 0, || async { Ok(42) }).await;
        assert_eq!(took, None);
        assert!(!role.is_writer());
        assert_eq!(role.position(), 42);
    }
}
