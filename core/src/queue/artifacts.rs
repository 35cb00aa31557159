//! The artifact rules: createArtifact and finishArtifact decided against the task and the
//! artifact already there (queue.md §9).

use super::decide::{repeated, Decision, QueueError, ARTIFACT_GRACE_MS, DRIFT_MS};
use super::events::{QueueEvent, Repeat};
use super::model::{Artifact, ArtifactStorage, RunState, Task};
use crate::ids::TaskId;
use crate::time::{Millis, MINUTE};

/// An existing artifact as upstream quotes it in a conflict: `{storageType, contentType,
/// expires}` written by `JSON.stringify(value, null, 2)`.
fn original_artifact(a: &Artifact) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Quoted<'a> {
        storage_type: &'a str,
        content_type: &'a str,
        expires: String,
    }
    serde_json::to_string_pretty(&Quoted {
        storage_type: a.storage.type_str(),
        content_type: &a.content_type,
        expires: a.expires.to_rfc3339(),
    })
    .unwrap_or_default()
}

fn compatible(old: &Artifact, new: &Artifact) -> bool {
    use ArtifactStorage as S;
    let storage_ok = match (&old.storage, &new.storage) {
        (S::Reference { .. }, S::Reference { .. } | S::Link { .. }) => true,
        (S::Link { .. }, S::Link { .. }) => old.storage == new.storage,
        // an s3 artifact's details are its bucket and prefix, the same for every create of
        // the name: a different `contentLength` is no conflict (the first one stays)
        (S::S3 { .. }, S::S3 { .. }) => true,
        (S::Object { .. }, S::Object { .. }) => {
            // a retried create keeps the upload id it was given first
            matches!((&old.storage, &new.storage),
                (S::Object { content_length: a, .. }, S::Object { content_length: b, .. }) if a == b)
        }
        (a, b) => a == b,
    };
    let content_type_ok =
        matches!(new.storage, S::Link { .. }) || old.content_type == new.content_type;
    // an object's expiry is locked in when its upload starts: it cannot move with the artifact
    let expires_ok = match new.storage {
        S::Object { .. } => new.expires == old.expires,
        S::S3 { .. } | S::Reference { .. } | S::Link { .. } | S::Error { .. } => {
            new.expires >= old.expires
        }
    };
    storage_ok && content_type_ok && expires_ok
}

/// createArtifact (§10.2, steps 1 to 7). `existing` is the artifact of that name, if any.
pub fn create_artifact(
    task: Option<&Task>,
    run_id: u32,
    existing: Option<&Artifact>,
    artifact: Artifact,
    now: Millis,
) -> Decision {
    if artifact.expires < now.minus(DRIFT_MS) {
        return Err(QueueError::Input("Expires must be in the future".into()));
    }
    let task = task.ok_or_else(|| QueueError::Input("Task not found".into()))?;
    let run = task
        .runs
        .get(run_id as usize)
        .ok_or_else(|| QueueError::Input("Run not found".into()))?;
    if run.worker_group.is_none() {
        return Err(QueueError::Input(
            "Run was not claimed by a worker and so no artifacts can exist".into(),
        ));
    }
    if artifact.expires > task.definition.expires {
        return Err(QueueError::Input(format!(
            "Artifact expires ({}) after the task expiration {} (task.expires < expires) - this is not allowed, artifacts may not expire after the task they belong to expires",
            artifact.expires, task.definition.expires
        )));
    }
    let accepting = match run.state {
        RunState::Running => true,
        RunState::Exception => run
            .resolved
            .is_some_and(|r| now < r.plus(ARTIFACT_GRACE_MS)),
        RunState::Pending | RunState::Completed | RunState::Failed => false,
    };
    if !accepting {
        // upstream's text as it is (no space after "resolution."), with the task's status
        // as JSON.stringify(status, null, 2) writes it
        let status =
            serde_json::to_string_pretty(&super::json::StatusJson(task)).unwrap_or_default();
        return Err(QueueError::Conflict(format!(
            "Artifacts cannot be created for a task after it is resolved, unless it is resolved 'exception', and even in this case only up to {} min past resolution.This to ensure that artifacts have been uploaded before a task is 'completed' and output is consumed by a dependent task\n\nTask status: {status}",
            ARTIFACT_GRACE_MS / MINUTE,
        )));
    }
    let artifact = match (existing, artifact) {
        (Some(old), new) if !compatible(old, &new) => {
            return Err(QueueError::Conflict(format!(
                "Artifact already exists with different properties, and none of the allowed exceptions apply: {}",
                original_artifact(old)
            )))
        }
        // upstream updates only an existing artifact's storage type, details and expiry: its
        // content type and length stay, and a repeated object create keeps its upload id and
        // presence
        (Some(old), mut new) => {
            if let (ArtifactStorage::Object { upload_id, .. }, ArtifactStorage::Object { upload_id: u, .. }) =
                (&old.storage, &mut new.storage)
            {
                *u = *upload_id;
            }
            if let (ArtifactStorage::S3 { content_length }, ArtifactStorage::S3 { content_length: l }) =
                (&old.storage, &mut new.storage)
            {
                *l = *content_length;
            }
            new.content_type.clone_from(&old.content_type);
            new.present = new.present || old.present;
            new
        }
        (None, new) => new,
    };
    Ok(vec![QueueEvent::ArtifactCreated {
        task_id: task.task_id,
        run_id,
        artifact,
    }])
}

/// finishArtifact (§10.2). `upload_id` is the id the caller sent, `derived` the id the
/// gateway derives for this artifact: the one to match when the artifact stores none
/// (`Slug::NIL`).
pub fn finish_artifact(
    task_id: TaskId,
    run_id: u32,
    existing: Option<&Artifact>,
    upload_id: TaskId,
    derived: TaskId,
    now: Millis,
) -> Decision {
    let artifact = existing.ok_or(QueueError::ArtifactNotFound)?;
    let ArtifactStorage::Object {
        upload_id: expected,
        ..
    } = &artifact.storage
    else {
        return Err(QueueError::Input(
            "Only object artifacts can be finished".into(),
        ));
    };
    if artifact.present {
        // finished already: artifact-created again, as upstream
        return Ok(repeated(
            Repeat::ArtifactCreated {
                task_id,
                run_id,
                name: artifact.name.clone(),
            },
            now,
        ));
    }
    if super::model::object_upload_id(*expected, || derived) != upload_id {
        return Err(QueueError::Input(
            "given uploadId does not match that for the artifact".into(),
        ));
    }
    Ok(vec![QueueEvent::ArtifactFinished {
        task_id,
        run_id,
        name: artifact.name.clone(),
    }])
}
