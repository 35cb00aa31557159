//! The queue's JSON shapes that more than one edge needs: the task status (the REST API's
//! `status` and every Pulse message's `status`), runs and artifact info.

use super::{Artifact, ArtifactStorage, Run, Task};
use serde_json::{json, Map, Value};

pub fn run_json(run: &Run) -> Value {
    let mut m = Map::new();
    m.insert("runId".into(), json!(run.run_id));
    m.insert("state".into(), json!(run.state.as_str()));
    m.insert("reasonCreated".into(), json!(run.reason_created.as_str()));
    if let Some(r) = run.reason_resolved {
        m.insert("reasonResolved".into(), json!(r.as_str()));
    }
    if let Some(g) = &run.worker_group {
        m.insert("workerGroup".into(), json!(g));
    }
    if let Some(w) = &run.worker_id {
        m.insert("workerId".into(), json!(w));
    }
    if let Some(t) = run.taken_until {
        m.insert("takenUntil".into(), json!(t.to_rfc3339()));
    }
    m.insert("scheduled".into(), json!(run.scheduled.to_rfc3339()));
    if let Some(t) = run.started {
        m.insert("started".into(), json!(t.to_rfc3339()));
    }
    if let Some(t) = run.resolved {
        m.insert("resolved".into(), json!(t.to_rfc3339()));
    }
    Value::Object(m)
}

pub fn status_json(task: &Task) -> Value {
    let def = &task.definition;
    json!({
        "taskId": task.task_id.to_string(),
        "provisionerId": def.task_queue_id.provisioner_id(),
        "workerType": def.task_queue_id.worker_type(),
        "taskQueueId": def.task_queue_id.as_str(),
        "schedulerId": def.scheduler_id,
        "projectId": def.project_id,
        "taskGroupId": def.task_group_id.to_string(),
        "priority": task.priority.as_str(),
        "deadline": def.deadline.to_rfc3339(),
        "expires": def.expires.to_rfc3339(),
        "retriesLeft": task.retries_left,
        "state": task.state_str(),
        "runs": task.runs.iter().map(run_json).collect::<Vec<_>>(),
    })
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
