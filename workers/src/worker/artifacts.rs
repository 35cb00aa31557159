//! Uploading a run's artifacts through the queue: `createArtifact` with the task's
//! credentials, then the bytes to the returned `putUrl` (worker-protocol.md §6).

use super::livelog::TaskLog;
use super::payload::{content_type_for, ArtifactKind, ArtifactSpec};
use super::SharedQueue;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Uploads in parallel, as generic-worker.
const PARALLEL: usize = 10;
const PUT_ATTEMPTS: u32 = 5;

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
    http: &reqwest::Client,
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
                    let r = upload_file(
                        queue,
                        http,
                        task_id,
                        run_id,
                        &name,
                        &path,
                        &content_type,
                        expires,
                    )
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

/// `createArtifact` (storage type `s3`), then PUT the file's bytes, retrying the PUT.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn upload_file(
    queue: &SharedQueue,
    http: &reqwest::Client,
    task_id: &str,
    run_id: &str,
    name: &str,
    path: &Path,
    content_type: &str,
    expires: DateTime<Utc>,
) -> Result<(), Problem> {
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|_| Problem::Missing)?
        .len();
    let body = json!({
        "storageType": "s3",
        "contentType": content_type,
        "contentLength": len,
        "expires": expires.to_rfc3339(),
    });
    let reply = queue
        .get()
        .createArtifact(task_id, run_id, name, &body)
        .await
        .map_err(|e| {
            tracing::warn!(task_id, name, error = %e, "createArtifact failed");
            classify(&e)
        })?;
    let put_url = reply["putUrl"].as_str().ok_or(Problem::ServerError)?;
    let ct = reply["contentType"].as_str().unwrap_or(content_type);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|_| Problem::Missing)?;
        let stream = tokio_util::io::ReaderStream::new(file);
        let sent = http
            .put(put_url)
            .header(reqwest::header::CONTENT_TYPE, ct)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_ENCODING, "identity")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        let retry = match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_server_error() || r.status() == 400 => true,
            Ok(r) => {
                tracing::warn!(task_id, name, status = %r.status(), "artifact PUT refused");
                return Err(Problem::Refused);
            }
            Err(_) => true,
        };
        if !retry || attempt >= PUT_ATTEMPTS {
            return Err(Problem::ServerError);
        }
        tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
    }
}
