//! The queue's state: task definitions, runs, task groups, artifacts.

use crate::ids::{TaskGroupId, TaskId, TaskQueueId};
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// JSON text kept verbatim (payload, extra, tags). postcard cannot carry `serde_json::Value`,
/// and the queue never looks inside these.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, Default)]
pub struct JsonText(pub String);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Priority {
    Highest,
    VeryHigh,
    High,
    Medium,
    Low,
    VeryLow,
    Lowest,
}

impl Priority {
    pub const ALL: [Priority; 7] = [
        Priority::Highest,
        Priority::VeryHigh,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::VeryLow,
        Priority::Lowest,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Highest => "highest",
            Priority::VeryHigh => "very-high",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::VeryLow => "very-low",
            Priority::Lowest => "lowest",
        }
    }
    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
    /// 0 for highest: the order claimWork serves.
    pub fn rank(self) -> u8 {
        self as u8
    }
    /// This priority and every higher one (the AnyOf of createTask's scope check).
    pub fn at_least(self) -> impl Iterator<Item = Priority> {
        Priority::ALL.into_iter().filter(move |p| *p <= self)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Requires {
    AllCompleted,
    AllResolved,
}

impl Requires {
    pub fn as_str(self) -> &'static str {
        match self {
            Requires::AllCompleted => "all-completed",
            Requires::AllResolved => "all-resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Requires> {
        match s {
            "all-completed" => Some(Requires::AllCompleted),
            "all-resolved" => Some(Requires::AllResolved),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub source: String,
}

/// The immutable part of a task, with defaults filled and times canonical.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TaskDefinition {
    pub task_queue_id: TaskQueueId,
    pub scheduler_id: String,
    pub project_id: String,
    pub task_group_id: TaskGroupId,
    pub dependencies: Vec<TaskId>,
    pub requires: Requires,
    pub routes: Vec<String>,
    pub priority: Priority,
    pub retries: u32,
    pub created: Millis,
    pub deadline: Millis,
    pub expires: Millis,
    pub scopes: Vec<String>,
    pub payload: JsonText,
    pub metadata: Metadata,
    pub tags: JsonText,
    pub extra: JsonText,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum RunState {
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Exception => "exception",
        }
    }
    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Exception
        )
    }
    /// A run in this state resolves its task so (unless a retry follows it).
    pub fn resolution(self) -> Option<Resolution> {
        match self {
            RunState::Completed => Some(Resolution::Completed),
            RunState::Failed | RunState::Exception => Some(Resolution::Unsuccessful),
            RunState::Pending | RunState::Running => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ReasonCreated {
    Scheduled,
    Retry,
    TaskRetry,
    Rerun,
    Exception,
}

impl ReasonCreated {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCreated::Scheduled => "scheduled",
            ReasonCreated::Retry => "retry",
            ReasonCreated::TaskRetry => "task-retry",
            ReasonCreated::Rerun => "rerun",
            ReasonCreated::Exception => "exception",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ReasonResolved {
    Completed,
    Failed,
    DeadlineExceeded,
    Canceled,
    ClaimExpired,
    WorkerShutdown,
    MalformedPayload,
    ResourceUnavailable,
    InternalError,
    IntermittentTask,
}

impl ReasonResolved {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonResolved::Completed => "completed",
            ReasonResolved::Failed => "failed",
            ReasonResolved::DeadlineExceeded => "deadline-exceeded",
            ReasonResolved::Canceled => "canceled",
            ReasonResolved::ClaimExpired => "claim-expired",
            ReasonResolved::WorkerShutdown => "worker-shutdown",
            ReasonResolved::MalformedPayload => "malformed-payload",
            ReasonResolved::ResourceUnavailable => "resource-unavailable",
            ReasonResolved::InternalError => "internal-error",
            ReasonResolved::IntermittentTask => "intermittent-task",
        }
    }
    /// The reasons a worker may give to `reportException`.
    pub fn parse_worker_reason(s: &str) -> Option<ReasonResolved> {
        match s {
            "worker-shutdown" => Some(ReasonResolved::WorkerShutdown),
            "malformed-payload" => Some(ReasonResolved::MalformedPayload),
            "resource-unavailable" => Some(ReasonResolved::ResourceUnavailable),
            "internal-error" => Some(ReasonResolved::InternalError),
            "intermittent-task" => Some(ReasonResolved::IntermittentTask),
            _ => None,
        }
    }
    /// The state a run resolved for this reason ends in.
    pub fn state(self) -> RunState {
        match self {
            ReasonResolved::Completed => RunState::Completed,
            ReasonResolved::Failed => RunState::Failed,
            ReasonResolved::DeadlineExceeded
            | ReasonResolved::Canceled
            | ReasonResolved::ClaimExpired
            | ReasonResolved::WorkerShutdown
            | ReasonResolved::MalformedPayload
            | ReasonResolved::ResourceUnavailable
            | ReasonResolved::InternalError
            | ReasonResolved::IntermittentTask => RunState::Exception,
        }
    }
    /// The reasonCreated of the automatic retry this resolution earns, if any.
    pub fn retry_reason(self) -> Option<ReasonCreated> {
        match self {
            ReasonResolved::ClaimExpired | ReasonResolved::WorkerShutdown => {
                Some(ReasonCreated::Retry)
            }
            ReasonResolved::IntermittentTask => Some(ReasonCreated::TaskRetry),
            ReasonResolved::Completed
            | ReasonResolved::Failed
            | ReasonResolved::DeadlineExceeded
            | ReasonResolved::Canceled
            | ReasonResolved::MalformedPayload
            | ReasonResolved::ResourceUnavailable
            | ReasonResolved::InternalError => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Run {
    pub run_id: u32,
    pub state: RunState,
    pub reason_created: ReasonCreated,
    pub reason_resolved: Option<ReasonResolved>,
    pub worker_group: Option<String>,
    pub worker_id: Option<String>,
    pub taken_until: Option<Millis>,
    pub scheduled: Millis,
    pub started: Option<Millis>,
    pub resolved: Option<Millis>,
}

/// The task aggregate: definition plus mutable status.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Task {
    pub task_id: TaskId,
    pub definition: TaskDefinition,
    /// The current priority (changeTaskPriority moves it; the definition keeps the original).
    pub priority: Priority,
    pub retries_left: u32,
    pub runs: Vec<Run>,
    /// Dependencies not yet satisfied, sorted.
    pub unsatisfied: Vec<TaskId>,
}

/// A stored task read for its status alone: the fields `Task` serializes, in its order, with
/// the text a status never shows (payload, metadata, tags, extra, routes, scopes) passed
/// over in the stored bytes rather than copied out and checked as UTF-8. Decoding one
/// allocates only for the runs. **Keep in step with `Task` and `TaskDefinition`**: a test
/// decodes tasks of every shape both ways and compares their statuses byte for byte.
#[derive(Deserialize)]
pub struct TaskStatusRow<'a> {
    task_id: TaskId,
    #[serde(borrow)]
    definition: DefinitionStatusRow<'a>,
    priority: Priority,
    retries_left: u32,
    runs: Vec<Run>,
    _unsatisfied: Skipped<Vec<Skipped<Id>>>,
}

/// `TaskDefinition`'s fields as `TaskStatusRow` reads them.
#[derive(Deserialize)]
struct DefinitionStatusRow<'a> {
    /// `TaskQueueId`, a newtype of its text
    task_queue_id: &'a str,
    scheduler_id: &'a str,
    project_id: &'a str,
    task_group_id: TaskGroupId,
    _dependencies: Skipped<Vec<Skipped<Id>>>,
    _requires: Requires,
    _routes: Skipped<Vec<Skipped<Text>>>,
    _priority: Priority,
    _retries: u32,
    _created: Millis,
    deadline: Millis,
    expires: Millis,
    _scopes: Skipped<Vec<Skipped<Text>>>,
    _payload: Skipped<Text>,
    /// name, description, owner, source
    _metadata: Skipped<(Text, Text, Text, Text)>,
    _tags: Skipped<Text>,
    _extra: Skipped<Text>,
}

impl TaskStatusRow<'_> {
    pub fn status(&self) -> super::json::TaskStatus<'_> {
        let def = &self.definition;
        super::json::TaskStatus {
            task_id: self.task_id,
            task_queue_id: def.task_queue_id,
            scheduler_id: def.scheduler_id,
            project_id: def.project_id,
            task_group_id: def.task_group_id,
            deadline: def.deadline,
            expires: def.expires,
            priority: self.priority,
            retries_left: self.retries_left,
            runs: &self.runs,
        }
    }
}

/// A value read from the stored bytes and dropped; with `Text` inside, nothing is allocated.
struct Skipped<T>(std::marker::PhantomData<T>);

impl<'de, T: SkipRead<'de>> Deserialize<'de> for Skipped<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::skip(d)?;
        Ok(Skipped(std::marker::PhantomData))
    }
}

/// How a skipped value is read.
trait SkipRead<'de> {
    fn skip<D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error>;
}

/// A string, read as the bytes it is stored as (a length, then the bytes), borrowed.
struct Text;

impl<'de> SkipRead<'de> for Text {
    fn skip<D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string's bytes")
            }
            fn visit_borrowed_bytes<E>(self, _: &'de [u8]) -> Result<(), E> {
                Ok(())
            }
            fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
                Ok(())
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

impl<'de, T: SkipRead<'de>> SkipRead<'de> for Skipped<T> {
    fn skip<D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        T::skip(d)
    }
}

/// A task id, read and dropped.
struct Id;

impl<'de> SkipRead<'de> for Id {
    fn skip<D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        TaskId::deserialize(d).map(drop)
    }
}

impl<'de, T: SkipRead<'de>> SkipRead<'de> for Vec<Skipped<T>> {
    fn skip<D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        struct Each<T>(std::marker::PhantomData<T>);
        impl<'de, T: SkipRead<'de>> serde::de::Visitor<'de> for Each<T> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element::<Skipped<T>>()?.is_some() {}
                Ok(())
            }
        }
        d.deserialize_seq(Each::<T>(std::marker::PhantomData))
    }
}

impl<'de> SkipRead<'de> for (Text, Text, Text, Text) {
    fn skip<D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        <(Skipped<Text>, Skipped<Text>, Skipped<Text>, Skipped<Text>)>::deserialize(d).map(drop)
    }
}

/// Whether a task counts as resolved for its dependents and its group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resolution {
    Completed,
    /// failed, or exception without a retry
    Unsuccessful,
}

impl Task {
    pub fn last_run(&self) -> Option<&Run> {
        self.runs.last()
    }
    /// `unscheduled` when there are no runs, else the last run's state.
    pub fn state_str(&self) -> &'static str {
        self.last_run().map_or("unscheduled", |r| r.state.as_str())
    }
    /// The task is resolved when its last run is resolved.
    pub fn resolution(&self) -> Option<Resolution> {
        self.last_run().and_then(|run| run.state.resolution())
    }

    /// Whether the task was ever resolved: a rerun since does not undo that.
    pub fn ever_resolved(&self) -> bool {
        self.runs
            .iter()
            .any(|run| self.resolution_by_run(run.run_id).is_some())
    }

    /// What the resolution of run `run_id` was for the task: the task's resolution, unless a
    /// retry followed it in the same command (then the task was not resolved). A resolved run
    /// never changes and a retry comes with its resolution, so the answer stays the same
    /// whatever happens to the task later (a rerun, say): the dependency resolver reads it
    /// when it gets to the event, upstream passes it along with the event.
    pub fn resolution_by_run(&self, run_id: u32) -> Option<Resolution> {
        let index = usize::try_from(run_id).ok()?;
        let resolution = self.runs.get(index)?.state.resolution()?;
        match self.runs.get(index + 1) {
            Some(next)
                if matches!(
                    next.reason_created,
                    ReasonCreated::Retry | ReasonCreated::TaskRetry
                ) =>
            {
                None
            }
            _ => Some(resolution),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TaskGroup {
    pub task_group_id: TaskGroupId,
    pub scheduler_id: String,
    pub expires: Millis,
    pub sealed: Option<Millis>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ErrorReason {
    FileMissingOnWorker,
    InvalidResourceOnWorker,
    TooLargeFileOnWorker,
    FileNotReadableOnWorker,
}

impl ErrorReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::FileMissingOnWorker => "file-missing-on-worker",
            ErrorReason::InvalidResourceOnWorker => "invalid-resource-on-worker",
            ErrorReason::TooLargeFileOnWorker => "too-large-file-on-worker",
            ErrorReason::FileNotReadableOnWorker => "file-not-readable-on-worker",
        }
    }
    pub fn parse(s: &str) -> Option<ErrorReason> {
        [
            ErrorReason::FileMissingOnWorker,
            ErrorReason::InvalidResourceOnWorker,
            ErrorReason::TooLargeFileOnWorker,
            ErrorReason::FileNotReadableOnWorker,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The upload id an `Object` artifact answers to: the id it stores, or, when it stores
/// `Slug::NIL`, the one the gateway derives for it (`derived`, only called then).
pub fn object_upload_id(stored: TaskId, derived: impl FnOnce() -> TaskId) -> TaskId {
    if stored == crate::ids::Slug::NIL {
        derived()
    } else {
        stored
    }
}

/// Where an artifact's bytes are.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ArtifactStorage {
    /// Bytes in taskledger's blob store, uploaded through a signed URL; present after finish.
    /// `upload_id` is `Slug::NIL` for an id derived from the artifact and a server key, which
    /// the log therefore never holds (the gateway derives it again for an answer and a finish);
    /// logs written before then hold the id itself.
    Object {
        upload_id: TaskId,
        content_length: Option<u64>,
    },
    /// Deprecated S3 type: bytes in the blob store too, present at once.
    S3 {
        content_length: Option<u64>,
    },
    Reference {
        url: String,
    },
    Link {
        target: String,
    },
    Error {
        reason: ErrorReason,
        message: String,
    },
}

impl ArtifactStorage {
    pub fn type_str(&self) -> &'static str {
        match self {
            ArtifactStorage::Object { .. } => "object",
            ArtifactStorage::S3 { .. } => "s3",
            ArtifactStorage::Reference { .. } => "reference",
            ArtifactStorage::Link { .. } => "link",
            ArtifactStorage::Error { .. } => "error",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub storage: ArtifactStorage,
    pub content_type: String,
    pub expires: Millis,
    pub present: bool,
}
