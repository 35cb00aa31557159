//! The queue's JSON shapes that more than one edge needs: the task status (the REST API's
//! `status` and every Pulse message's `status`), runs and artifact info.

use super::{Artifact, ArtifactStorage, Priority, Run, Task};
use crate::ids::{TaskGroupId, TaskId};
use crate::time::Millis;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Value};

/// A run as Taskcluster's JSON, written straight from the run (no intermediate `Value`).
/// Keys come in sorted order, as a `serde_json::Value` object writes them, so the bytes are
/// the same whichever way a run is rendered.
pub struct RunJson<'a>(pub &'a Run);

impl Serialize for RunJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let run = self.0;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("reasonCreated", run.reason_created.as_str())?;
        if let Some(r) = run.reason_resolved {
            m.serialize_entry("reasonResolved", r.as_str())?;
        }
        if let Some(t) = run.resolved {
            m.serialize_entry("resolved", &t.rfc3339())?;
        }
        m.serialize_entry("runId", &run.run_id)?;
        m.serialize_entry("scheduled", &run.scheduled.rfc3339())?;
        if let Some(t) = run.started {
            m.serialize_entry("started", &t.rfc3339())?;
        }
        m.serialize_entry("state", run.state.as_str())?;
        if let Some(t) = run.taken_until {
            m.serialize_entry("takenUntil", &t.rfc3339())?;
        }
        if let Some(g) = &run.worker_group {
            m.serialize_entry("workerGroup", g)?;
        }
        if let Some(w) = &run.worker_id {
            m.serialize_entry("workerId", w)?;
        }
        m.end()
    }
}

/// A task's status (the REST API's `status`, every Pulse message's `status`), written straight
/// from the task; keys in sorted order, as `RunJson`.
pub struct StatusJson<'a>(pub &'a Task);

impl Serialize for StatusJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TaskStatus::of(self.0).serialize(serializer)
    }
}

/// The status's keys in sorted order, as `RunJson`'s; `TaskStatus::write_json` writes the
/// same bytes directly.
impl Serialize for TaskStatus<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Runs<'a>(&'a [Run]);
        impl Serialize for Runs<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(RunJson))
            }
        }
        let (provisioner_id, worker_type) = self.queue_parts();
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("deadline", &self.deadline.rfc3339())?;
        m.serialize_entry("expires", &self.expires.rfc3339())?;
        m.serialize_entry("priority", self.priority.as_str())?;
        m.serialize_entry("projectId", self.project_id)?;
        m.serialize_entry("provisionerId", provisioner_id)?;
        m.serialize_entry("retriesLeft", &self.retries_left)?;
        m.serialize_entry("runs", &Runs(self.runs))?;
        m.serialize_entry("schedulerId", self.scheduler_id)?;
        m.serialize_entry("state", self.state())?;
        m.serialize_entry("taskGroupId", &self.task_group_id.text())?;
        m.serialize_entry("taskId", &self.task_id.text())?;
        m.serialize_entry("taskQueueId", self.task_queue_id)?;
        m.serialize_entry("workerType", worker_type)?;
        m.end()
    }
}

/// What a task's status shows, borrowed from a `Task` or straight from its stored bytes
/// (`TaskStatusRow`).
pub struct TaskStatus<'a> {
    pub task_id: TaskId,
    /// `provisionerId/workerType`
    pub task_queue_id: &'a str,
    pub scheduler_id: &'a str,
    pub project_id: &'a str,
    pub task_group_id: TaskGroupId,
    pub deadline: Millis,
    pub expires: Millis,
    pub priority: Priority,
    pub retries_left: u32,
    pub runs: &'a [Run],
}

impl<'a> TaskStatus<'a> {
    pub fn of(task: &'a Task) -> TaskStatus<'a> {
        let def = &task.definition;
        TaskStatus {
            task_id: task.task_id,
            task_queue_id: def.task_queue_id.as_str(),
            scheduler_id: &def.scheduler_id,
            project_id: &def.project_id,
            task_group_id: def.task_group_id,
            deadline: def.deadline,
            expires: def.expires,
            priority: task.priority,
            retries_left: task.retries_left,
            runs: &task.runs,
        }
    }

    /// `provisionerId` and `workerType`, as `TaskQueueId` splits them.
    fn queue_parts(&self) -> (&'a str, &'a str) {
        self.task_queue_id.split_once('/').unwrap_or(("", ""))
    }

    /// `unscheduled` when there are no runs, else the last run's state (`Task::state_str`).
    fn state(&self) -> &'static str {
        self.runs.last().map_or("unscheduled", |r| r.state.as_str())
    }

    /// Appends the bytes `serde_json` writes for `StatusJson` of the same task, written
    /// directly: the keys are constants, and a value is escaped only when it needs to be.
    /// serde_json's own escaping scans every key and value a byte at a time, which was a
    /// third of a getTaskStatus reply's cost.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let (provisioner_id, worker_type) = self.queue_parts();
        out.extend_from_slice(b"{\"deadline\":");
        push_str(out, self.deadline.rfc3339().as_str());
        out.extend_from_slice(b",\"expires\":");
        push_str(out, self.expires.rfc3339().as_str());
        out.extend_from_slice(b",\"priority\":");
        push_str(out, self.priority.as_str());
        out.extend_from_slice(b",\"projectId\":");
        push_str(out, self.project_id);
        out.extend_from_slice(b",\"provisionerId\":");
        push_str(out, provisioner_id);
        out.extend_from_slice(b",\"retriesLeft\":");
        push_u32(out, self.retries_left);
        out.extend_from_slice(b",\"runs\":[");
        for (i, run) in self.runs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_run(out, run);
        }
        out.extend_from_slice(b"],\"schedulerId\":");
        push_str(out, self.scheduler_id);
        out.extend_from_slice(b",\"state\":");
        push_str(out, self.state());
        out.extend_from_slice(b",\"taskGroupId\":");
        push_str(out, self.task_group_id.text().as_str());
        out.extend_from_slice(b",\"taskId\":");
        push_str(out, self.task_id.text().as_str());
        out.extend_from_slice(b",\"taskQueueId\":");
        push_str(out, self.task_queue_id);
        out.extend_from_slice(b",\"workerType\":");
        push_str(out, worker_type);
        out.push(b'}');
    }
}

/// `RunJson`'s bytes, written as `TaskStatus::write_json` writes.
fn write_run(out: &mut Vec<u8>, run: &Run) {
    out.extend_from_slice(b"{\"reasonCreated\":");
    push_str(out, run.reason_created.as_str());
    if let Some(r) = run.reason_resolved {
        out.extend_from_slice(b",\"reasonResolved\":");
        push_str(out, r.as_str());
    }
    if let Some(t) = run.resolved {
        out.extend_from_slice(b",\"resolved\":");
        push_str(out, t.rfc3339().as_str());
    }
    out.extend_from_slice(b",\"runId\":");
    push_u32(out, run.run_id);
    out.extend_from_slice(b",\"scheduled\":");
    push_str(out, run.scheduled.rfc3339().as_str());
    if let Some(t) = run.started {
        out.extend_from_slice(b",\"started\":");
        push_str(out, t.rfc3339().as_str());
    }
    out.extend_from_slice(b",\"state\":");
    push_str(out, run.state.as_str());
    if let Some(t) = run.taken_until {
        out.extend_from_slice(b",\"takenUntil\":");
        push_str(out, t.rfc3339().as_str());
    }
    if let Some(g) = &run.worker_group {
        out.extend_from_slice(b",\"workerGroup\":");
        push_str(out, g);
    }
    if let Some(w) = &run.worker_id {
        out.extend_from_slice(b",\"workerId\":");
        push_str(out, w);
    }
    out.push(b'}');
}

/// `text` as a JSON string: copied between quotes when nothing in it needs escaping (what
/// serde_json escapes: control characters, `"` and `\\`), else escaped by serde_json.
fn push_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // writing into a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

fn push_u32(out: &mut Vec<u8>, n: u32) {
    // writing into a Vec cannot fail
    let _ = serde_json::to_writer(&mut *out, &n);
}

fn to_value<T: Serialize>(v: T) -> Value {
    // a map of strings and numbers always converts
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub fn run_json(run: &Run) -> Value {
    to_value(RunJson(run))
}

pub fn status_json(task: &Task) -> Value {
    to_value(StatusJson(task))
}

pub fn artifact_info(a: &Artifact) -> Value {
    let mut v = json!({
        "storageType": a.storage.type_str(),
        "name": a.name,
        "expires": a.expires.to_rfc3339(),
        "contentType": a.content_type,
    });
    if let ArtifactStorage::Object {
        content_length: Some(n),
        ..
    }
    | ArtifactStorage::S3 {
        content_length: Some(n),
    } = &a.storage
    {
        v["contentLength"] = json!(n);
    }
    v
}
