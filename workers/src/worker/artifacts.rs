//! Uploading a run's artifacts through the queue: `createArtifact` (type `object`) with the
//! task's credentials, the bytes through the object service, `finishArtifact`
//! (worker-protocol.md §6).

use super::livelog::TaskLog;
use super::payload::{content_type_for, ArtifactKind, ArtifactSpec};
use super::SharedQueue;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Uploads in parallel, as generic-worker.
const PARALLEL: usize = 10;

/// What went wrong with one artifact, in the terms that decide the run's resolution (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A non-optional artifact is missing or unreadable: the run fails.
    Missing,
    /// The queue or blob store answered 5xx or could not be reached.
    ServerError,
    /// 409: the name exists with different content.
    Conflict,
    /// Another 4xx (e.g. the run is already resolved).
    Refused,
}

fn classify(e: &anyhow::Error) -> Problem {
    match taskcluster::err_status_code(e).map(|s| s.as_u16()) {
        Some(409) => Problem::Conflict,
        Some(s) if (400..500).contains(&s) => Problem::Refused,
        _ => Problem::ServerError,
    }
}

/// One file to upload, or one error artifact to record.
enum Item {
    File {
        name: String,
        path: PathBuf,
        content_type: String,
        expires: DateTime<Utc>,
    },
    Error {
        name: String,
        reason: &'static str,
        message: String,
        expires: DateTime<Utc>,
        optional: bool,
    },
}

/// Every file of a directory, recursively, sorted; names relative to `root` with `/`.
fn walk(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(std::io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn plan(dir: &Path, specs: &[ArtifactSpec], reserved: &[&str], log: &TaskLog) -> Vec<Item> {
    let mut items = Vec::new();
    for spec in specs {
        let path = dir.join(&spec.path);
        let error = |reason: &'static str, message: String| Item::Error {
            name: spec.name.clone(),
            reason,
            message,
            expires: spec.expires,
            optional: spec.optional,
        };
        let meta = std::fs::metadata(&path);
        let item = match (spec.kind, meta) {
            (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => error(
                "file-missing-on-worker",
                format!("Could not read {} {}", kind_word(spec.kind), spec.path),
            ),
            (_, Err(e)) => error(
                "file-not-readable-on-worker",
                format!("Could not read {} {}: {e}", kind_word(spec.kind), spec.path),
            ),
            (ArtifactKind::File, Ok(m)) if !m.is_file() => error(
                "invalid-resource-on-worker",
                format!("{} is not a file", spec.path),
            ),
            (ArtifactKind::Directory, Ok(m)) if !m.is_dir() => error(
                "invalid-resource-on-worker",
                format!("{} is not a directory", spec.path),
            ),
            // a file that is there but cannot be opened (its mode, say) is an error artifact
            // too, planned like the others so that `optional` applies
            (ArtifactKind::File, Ok(_)) if std::fs::File::open(&path).is_err() => error(
                "file-not-readable-on-worker",
                format!("Could not read file {}", spec.path),
            ),
            (ArtifactKind::File, Ok(_)) => Item::File {
                name: spec.name.clone(),
                content_type: spec
                    .content_type
                    .clone()
                    .unwrap_or_else(|| content_type_for(&spec.path).into()),
                path,
                expires: spec.expires,
            },
            (ArtifactKind::Directory, Ok(_)) => match walk(&path) {
                Ok(files) => {
                    for (rel, file) in files {
                        items.push(Item::File {
                            name: format!("{}/{rel}", spec.name.trim_end_matches('/')),
                            content_type: spec
                                .content_type
                                .clone()
                                .unwrap_or_else(|| content_type_for(&rel).into()),
                            path: file,
                            expires: spec.expires,
                        });
                    }
                    continue;
                }
                Err(e) => error(
                    "invalid-resource-on-worker",
                    format!("Could not walk directory {}: {e}", spec.path),
                ),
            },
        };
        items.push(item);
    }
    items.retain(|i| {
        let name = match i {
            Item::File { name, .. } | Item::Error { name, .. } => name,
        };
        if reserved.contains(&name.as_str()) {
            log.warn(format!(
                "artifact {name} is reserved for the task log; skipped"
            ));
            false
        } else {
            true
        }
    });
    items
}

fn kind_word(k: ArtifactKind) -> &'static str {
    match k {
        ArtifactKind::File => "file",
        ArtifactKind::Directory => "directory",
    }
}

/// Uploads the payload's artifacts; returns the problems met (logged as they happen).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn upload_payload(
    queue: &SharedQueue,
    task_id: &str,
    run_id: &str,
    dir: &Path,
    specs: &[ArtifactSpec],
    reserved: &[&str],
    log: &TaskLog,
) -> Vec<Problem> {
    let items = plan(dir, specs, reserved, log);
    futures::stream::iter(items)
        .map(|item| async move {
            match item {
                Item::File {
                    name,
                    path,
                    content_type,
                    expires,
                } => {
                    log.info(format!("Uploading artifact {name} from {}", path.display()));
                    let r =
                        upload_file(queue, task_id, run_id, &name, &path, &content_type, expires)
                            .await;
                    if let Err(p) = r {
                        log.error(format!("Uploading artifact {name} failed ({p:?})"));
                    }
                    r.err()
                }
                Item::Error {
                    name,
                    reason,
                    message,
                    expires,
                    optional,
                } => {
                    if optional {
                        log.info(format!("Optional artifact {name} skipped: {message}"));
                        return None;
                    }
                    log.error(format!("{message} ({reason})"));
                    let body = json!({
                        "storageType": "error",
                        "reason": reason,
                        "message": message,
                        "expires": expires.to_rfc3339(),
                    });
                    if let Err(e) = queue
                        .get()
                        .createArtifact(task_id, run_id, &name, &body)
                        .await
                    {
                        log.error(format!("Recording error artifact {name} failed: {e}"));
                        let p = classify(&e);
                        if p != Problem::Refused {
                            return Some(p);
                        }
                    }
                    Some(Problem::Missing)
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|p| async move { p })
        .collect()
        .await
}

/// `createArtifact` (storage type `object`, as generic-worker), then the bytes through the
/// object service with the official upload helper (`taskcluster-upload`: inline or PUT URL,
/// retried, sha256 and sha512 sent), then `finishArtifact`.
pub(crate) async fn upload_file(
    queue: &SharedQueue,
    task_id: &str,
    run_id: &str,
    name: &str,
    path: &Path,
    content_type: &str,
    expires: DateTime<Utc>,
) -> Result<(), Problem> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|_| Problem::Missing)?;
    let length = file.metadata().await.map_err(|_| Problem::Missing)?.len();
    let body = json!({
        "storageType": "object",
        "contentType": content_type,
        "contentLength": length,
        "expires": expires.to_rfc3339(),
    });
    let q = queue.get();
    let reply = q
        .createArtifact(task_id, run_id, name, &body)
        .await
        .map_err(|e| {
            tracing::warn!(task_id, name, error = %e, "createArtifact failed");
            classify(&e)
        })?;
    let field = |k: &str| reply[k].as_str().ok_or(Problem::ServerError);
    let (project_id, object_name, upload_id) =
        (field("projectId")?, field("name")?, field("uploadId")?);
    let creds: taskcluster::Credentials =
        serde_json::from_value(reply["credentials"].clone()).map_err(|_| Problem::ServerError)?;
    let object = taskcluster::Object::new(
        taskcluster::ClientBuilder::new(queue.root_url()).credentials(creds),
    )
    .map_err(|_| Problem::ServerError)?;
    let retry = taskcluster::retry::Retry::default();
    taskcluster_upload::upload_from_file(
        project_id,
        object_name,
        content_type,
        &expires,
        file,
        &retry,
        &object,
        upload_id,
    )
    .await
    .map_err(|e| {
        let error = without_urls(&format!("{e:#}"));
        tracing::warn!(task_id, name, %error, "artifact upload failed");
        classify(&e)
    })?;
    q.finishArtifact(task_id, run_id, name, &json!({ "uploadId": upload_id }))
        .await
        .map_err(|e| {
            tracing::warn!(task_id, name, error = %e, "finishArtifact failed");
            classify(&e)
        })?;
    Ok(())
}

/// An error's text without the URLs reqwest appends (` for url (...)`): an upload's URL is
/// signed, and good for a while after a failed PUT, so it must not reach the worker's log.
fn without_urls(text: &str) -> String {
    const MARK: &str = " for url (";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        // the URL ends at a `)` that ends the text or comes before the next cause (`: `); a
        // `)` inside the URL's path does not
        let close = after
            .match_indices(')')
            .map(|(i, _)| i)
            .find(|&i| after[i + 1..].is_empty() || after[i + 1..].starts_with(": "));
        rest = close.map_or("", |i| &after[i + 1..]);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::without_urls;

    #[test]
    fn signed_urls_are_cut_from_error_texts() {
        let text = "upload failed: HTTP status client error (409 Conflict) for url \
                    (http://h/objects/a(1)b?expires=9&sig=SECRET): retried 5 times";
        let cut = without_urls(text);
        assert!(!cut.contains("SECRET"), "{cut}");
        assert_eq!(
            cut,
            "upload failed: HTTP status client error (409 Conflict): retried 5 times"
        );
        let last = without_urls("error sending request for url (http://h/x?sig=SECRET)");
        assert_eq!(last, "error sending request");
        let unclosed = without_urls("error for url (http://h/x?sig=SECRET");
        assert_eq!(unclosed, "error");
        assert_eq!(without_urls("no url here"), "no url here");
    }
}
