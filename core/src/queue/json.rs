//! The queue's JSON shapes that more than one edge needs: the task status (the REST API's
//! `status` and every Pulse message's `status`), runs and artifact info.

use super::{Artifact, ArtifactStorage, Run, Task};
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
        struct Runs<'a>(&'a [Run]);
        impl Serialize for Runs<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(RunJson))
            }
        }
        let task = self.0;
        let def = &task.definition;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("deadline", &def.deadline.rfc3339())?;
        m.serialize_entry("expires", &def.expires.rfc3339())?;
        m.serialize_entry("priority", task.priority.as_str())?;
        m.serialize_entry("projectId", &def.project_id)?;
        m.serialize_entry("provisionerId", def.task_queue_id.provisioner_id())?;
        m.serialize_entry("retriesLeft", &task.retries_left)?;
        m.serialize_entry("runs", &Runs(&task.runs))?;
        m.serialize_entry("schedulerId", &def.scheduler_id)?;
        m.serialize_entry("state", task.state_str())?;
        m.serialize_entry("taskGroupId", &def.task_group_id.text())?;
        m.serialize_entry("taskId", &task.task_id.text())?;
        m.serialize_entry("taskQueueId", def.task_queue_id.as_str())?;
        m.serialize_entry("workerType", def.task_queue_id.worker_type())?;
        m.end()
    }
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
