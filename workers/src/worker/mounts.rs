//! Payload mounts (worker-protocol.md §8): writable caches kept between tasks, and files
//! written from inline content, a URL or a dependency's artifact before the commands run.
//!
//! Caches live under `<tasksDir>/caches`, one directory per cache instance, named
//! `<hex of the cache name>.<n>`, so a restarted worker finds them again. A task takes a free
//! instance of its cache name (or a new, empty one when every instance is in use, as with
//! capacity above 1), has it moved to its mount point, and after its commands and artifacts
//! gives it back, or has it deleted when `onExitStatus.purgeCaches` lists the last command's
//! exit code or the task was aborted. A writable cache needs `generic-worker:cache:<name>` in
//! the task's scopes (expanded through `auth.expandScopes` with the worker's credentials when
//! the scopes as given do not hold it).

use super::livelog::TaskLog;
use super::payload::{Content, Mount};
use super::SharedQueue;
use super::Shortfall;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use taskledger_core::time::{Millis, MINUTE};
use taskledger_projections::audit::{hex, unhex};
use tokio::io::AsyncWriteExt;

/// Why mounting failed, as the task resolves.
#[derive(Debug)]
pub(crate) enum MountError {
    /// The task asked for something it may not have or that does not exist:
    /// `malformed-payload`.
    Malformed(String),
    /// The task's scopes could not be expanded: `resource-unavailable`.
    Unavailable(String),
    /// The mount could not be made (a download refused or failed, bytes that are not the
    /// ones the task pinned, the disk): the task fails, as generic-worker fails it.
    Failed(String),
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountError::Malformed(why) | MountError::Unavailable(why) | MountError::Failed(why) => {
                f.write_str(why)
            }
        }
    }
}

/// The caches of one worker.
pub(crate) struct Caches {
    root: PathBuf,
    /// Per cache name, the instances no task holds.
    free: Mutex<HashMap<String, Vec<PathBuf>>>,
    next: AtomicU64,
    /// When purge-cache was last asked (the next question asks from 5 minutes before).
    purges_asked: Mutex<Option<Millis>>,
    /// Per cache name, the latest purge request's `before`: an instance made before it is
    /// deleted whenever it comes back or would be handed out (one in use when the request
    /// was seen included).
    purged_before: Mutex<HashMap<String, Millis>>,
    /// When each instance was made (this process's own, or the directory's time for those
    /// found at start).
    created: Mutex<HashMap<PathBuf, Millis>>,
}

/// The time a directory found at start was made (its birth time, else its last change).
fn made_at(dir: &Path) -> Millis {
    std::fs::metadata(dir)
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .map(|t| Millis(chrono::DateTime::<chrono::Utc>::from(t).timestamp_millis()))
        .unwrap_or(Millis(0))
}

/// Deletes a directory on a thread of its own: a large cache must not hold up the runtime.
fn delete_apart(dir: PathBuf) {
    std::thread::spawn(move || {
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// A directory itself, not a symlink to one.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

impl Caches {
    /// The caches under `root`, with those a previous run of the worker left there.
    pub(crate) fn open(root: PathBuf) -> std::io::Result<Caches> {
        std::fs::create_dir_all(&root)?;
        let mut free: HashMap<String, Vec<PathBuf>> = HashMap::new();
        let mut created = HashMap::new();
        let mut next = 0;
        for entry in std::fs::read_dir(&root)? {
            let path = entry?.path();
            let Some((name, n)) = path
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.rsplit_once('.'))
                .and_then(|(h, n)| {
                    Some((String::from_utf8(unhex(h)?).ok()?, n.parse::<u64>().ok()?))
                })
            else {
                continue;
            };
            next = next.max(n + 1);
            if is_real_dir(&path) {
                created.insert(path.clone(), made_at(&path));
                free.entry(name).or_default().push(path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Caches {
            root,
            free: Mutex::new(free),
            next: AtomicU64::new(next),
            purges_asked: Mutex::new(None),
            purged_before: Mutex::new(HashMap::new()),
            created: Mutex::new(created),
        })
    }

    /// A free instance of `name` (one whose directory vanished meanwhile is forgotten), or a
    /// new empty one.
    fn take(&self, name: &str) -> std::io::Result<PathBuf> {
        loop {
            let popped = self
                .free
                .lock()
                .expect("caches lock")
                .get_mut(name)
                .and_then(Vec::pop);
            match popped {
                Some(dir) if self.purged(name, &dir) => {
                    self.forget(&dir);
                    delete_apart(dir);
                }
                Some(dir) if is_real_dir(&dir) => return Ok(dir),
                Some(dir) => self.forget(&dir),
                None => break,
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{}.{n}", hex(name.as_bytes())));
        std::fs::create_dir_all(&dir)?;
        self.created
            .lock()
            .expect("caches lock")
            .insert(dir.clone(), Millis::now());
        Ok(dir)
    }

    /// Whether a purge request of `name` came after `dir` was made.
    fn purged(&self, name: &str, dir: &Path) -> bool {
        let Some(before) = self
            .purged_before
            .lock()
            .expect("caches lock")
            .get(name)
            .copied()
        else {
            return false;
        };
        let made = self.created.lock().expect("caches lock").get(dir).copied();
        made.unwrap_or_else(|| made_at(dir)) < before
    }

    fn forget(&self, dir: &Path) {
        self.created.lock().expect("caches lock").remove(dir);
    }

    /// Records a purge request of `name` made at `before`, and deletes the free instances
    /// made before it; how many went (those in use go when they come back).
    fn purge(&self, name: &str, before: Millis) -> usize {
        {
            let mut purged = self.purged_before.lock().expect("caches lock");
            let latest = purged.entry(name.to_string()).or_insert(before);
            *latest = (*latest).max(before);
        }
        let gone: Vec<PathBuf> = {
            let mut free = self.free.lock().expect("caches lock");
            let Some(list) = free.get_mut(name) else {
                return 0;
            };
            let (gone, kept) = std::mem::take(list)
                .into_iter()
                .partition(|dir| self.purged(name, dir));
            *list = kept;
            gone
        };
        let n = gone.len();
        for dir in gone {
            self.forget(&dir);
            delete_apart(dir);
        }
        n
    }

    fn give_back(&self, name: &str, dir: PathBuf) {
        if self.purged(name, &dir) {
            self.forget(&dir);
            delete_apart(dir);
            return;
        }
        self.free
            .lock()
            .expect("caches lock")
            .entry(name.to_string())
            .or_default()
            .push(dir);
    }
}

/// Caches a task holds, to give back (or purge) after it.
pub(crate) struct Mounted<'a> {
    caches: &'a Caches,
    /// (cache name, its home under the caches root, where the task has it)
    held: Vec<(String, PathBuf, PathBuf)>,
}

impl Mounted<'_> {
    /// Moves every cache back home (the last mounted first), or, when `purge`, leaves it in
    /// the task directory, which is deleted after the run off the task's path; logs what it
    /// did. A cache the task replaced by something other than a directory is not kept.
    pub(crate) fn release(self, purge: bool, log: &TaskLog) {
        for (name, home, at) in self.held.into_iter().rev() {
            if purge {
                log.info(format!("Purging cache {name:?}"));
                continue;
            }
            if !is_real_dir(&at) {
                log.warn(format!(
                    "cache {name:?} not kept: the task left no directory at its mount point"
                ));
                continue;
            }
            match std::fs::rename(&at, &home) {
                Ok(()) => self.caches.give_back(&name, home),
                Err(e) => log.warn(format!("cache {name:?} not kept: {e}")),
            }
        }
    }
}

/// What mounting needs from the run.
pub(crate) struct MountContext<'a> {
    pub caches: &'a Caches,
    pub dir: &'a Path,
    /// The task's credentials: artifacts of its dependencies.
    pub queue: &'a SharedQueue,
    /// The worker's own: expanding the task's scopes, asking purge-cache.
    pub worker: &'a SharedQueue,
    /// The worker's pool (its task queue): whose purge requests apply.
    pub pool: &'a str,
    pub task: &'a serde_json::Value,
    pub log: &'a TaskLog,
}

/// Mounts `mounts` in order: files written, caches moved into place. On an error the caches
/// already taken are given back.
pub(crate) async fn mount<'a>(
    cx: &MountContext<'a>,
    mounts: &[Mount],
) -> Result<Mounted<'a>, MountError> {
    let mut mounted = Mounted {
        caches: cx.caches,
        held: Vec::new(),
    };
    let names: Vec<&str> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Cache { cache_name, .. } => Some(cache_name.as_str()),
            Mount::File { .. } => None,
        })
        .collect();
    check_cache_scopes(cx, &names).await?;
    if !names.is_empty() {
        apply_purges(cx).await;
    }
    for m in mounts {
        let step = match m {
            Mount::File { file, content } => write_file(cx, file, content).await,
            Mount::Cache {
                directory,
                cache_name,
            } => mount_cache(cx, &mut mounted, directory, cache_name),
        };
        if let Err(e) = step {
            mounted.release(false, cx.log);
            return Err(e);
        }
    }
    Ok(mounted)
}

/// Asks purge-cache (with the worker's credentials) which caches of this pool must go, and
/// deletes the free instances of each such name made before its request; instances in use
/// are left to their task. A failure is only a warning (worker-protocol.md §8).
async fn apply_purges(cx: &MountContext<'_>) {
    let asked = Millis::now();
    let since = cx
        .caches
        .purges_asked
        .lock()
        .expect("caches lock")
        .map(|t| t.minus(5 * MINUTE).to_rfc3339());
    let answer = match taskcluster::PurgeCache::new(cx.worker.builder(Duration::from_secs(30))) {
        Ok(client) => client.purgeRequests(cx.pool, since.as_deref()).await,
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            cx.log.warn(format!(
                "could not ask purge-cache for this pool's purges: {e}"
            ));
            return;
        }
    };
    *cx.caches.purges_asked.lock().expect("caches lock") = Some(asked);
    for r in answer["requests"].as_array().into_iter().flatten() {
        let (Some(name), Some(before)) = (
            r["cacheName"].as_str(),
            r["before"].as_str().and_then(Millis::parse_rfc3339),
        ) else {
            continue;
        };
        let gone = cx.caches.purge(name, before);
        if gone > 0 {
            cx.log.info(format!(
                "Purged {gone} instance(s) of cache {name:?}, as purge-cache asked"
            ));
        }
    }
}

/// Every cache name needs `generic-worker:cache:<name>` in the task's scopes.
async fn check_cache_scopes(cx: &MountContext<'_>, names: &[&str]) -> Result<(), MountError> {
    let required: Vec<String> = names
        .iter()
        .map(|n| format!("generic-worker:cache:{n}"))
        .collect();
    match super::task_holds(cx.worker, cx.task, &required).await {
        Ok(()) => Ok(()),
        Err(Shortfall::Unavailable(why)) => Err(MountError::Unavailable(why)),
        Err(Shortfall::Missing(missing)) => Err(MountError::Malformed(format!(
            "the task's scopes do not include {missing}, which its writable cache needs"
        ))),
    }
}

fn mount_cache(
    cx: &MountContext<'_>,
    mounted: &mut Mounted<'_>,
    directory: &str,
    name: &str,
) -> Result<(), MountError> {
    let at = cx.dir.join(directory);
    if at.exists() {
        return Err(MountError::Malformed(format!(
            "cache {name:?} cannot be mounted at {directory}: something is already there"
        )));
    }
    let failed = |e: std::io::Error| MountError::Failed(format!("cache {name:?}: {e}"));
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let home = cx.caches.take(name).map_err(failed)?;
    if let Err(e) = std::fs::rename(&home, &at) {
        if is_real_dir(&home) {
            cx.caches.give_back(name, home);
        }
        return Err(failed(e));
    }
    cx.log
        .info(format!("Mounted cache {name:?} at {directory}"));
    mounted.held.push((name.to_string(), home, at));
    Ok(())
}

async fn write_file(
    cx: &MountContext<'_>,
    file: &str,
    content: &Content,
) -> Result<(), MountError> {
    let path = cx.dir.join(file);
    let failed = |e: std::io::Error| MountError::Failed(format!("file {file}: {e}"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let (url, sha256) = match content {
        Content::Bytes(bytes) => {
            std::fs::write(&path, bytes).map_err(failed)?;
            cx.log.info(format!("Mounted file {file}"));
            return Ok(());
        }
        Content::Url { url, sha256 } => (url.clone(), sha256),
        Content::Artifact {
            task_id,
            artifact,
            sha256,
        } => {
            let depends = cx.task["dependencies"]
                .as_array()
                .is_some_and(|d| d.iter().any(|t| t.as_str() == Some(task_id)));
            if !depends {
                return Err(MountError::Malformed(format!(
                    "file {file} names an artifact of task {task_id}, which is not among the task's dependencies"
                )));
            }
            let url = cx
                .queue
                .get()
                .getLatestArtifact_signed_url(task_id, artifact, Duration::from_secs(15 * 60))
                .map_err(|e| MountError::Failed(format!("file {file}: {e}")))?;
            (url, sha256)
        }
    };
    let digest = download(&url, &path).await.map_err(|e| match e {
        Download::Refused(status) => MountError::Failed(format!(
            "file {file}: its content could not be fetched ({status}{})",
            if status == reqwest::StatusCode::FORBIDDEN {
                ": the task's scopes do not allow reading it"
            } else {
                ""
            }
        )),
        Download::Failed(why) => MountError::Failed(format!("file {file}: {why}")),
    })?;
    if let Some(expected) = sha256 {
        if &digest != expected {
            return Err(MountError::Failed(format!(
                "file {file}: its content has SHA-256 {digest}, not the {expected} the task pinned"
            )));
        }
    }
    cx.log
        .info(format!("Mounted file {file} (SHA-256 {digest})"));
    Ok(())
}

enum Download {
    /// The server answered 4xx.
    Refused(reqwest::StatusCode),
    Failed(String),
}

/// Streams `url` into `path`; the content's SHA-256, in hex.
/// Errors never quote the URL: a signed one carries a bewit or a signature.
async fn download(url: &str, path: &Path) -> Result<String, Download> {
    let failed = |e: &dyn std::fmt::Display| Download::Failed(e.to_string());
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| failed(&e.without_url()))?;
    let status = response.status();
    if status.is_client_error() {
        return Err(Download::Refused(status));
    }
    if !status.is_success() {
        return Err(Download::Failed(format!("answered {status}")));
    }
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| failed(&e))?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| failed(&e.without_url()))?;
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| failed(&e))?;
    }
    file.flush().await.map_err(|e| failed(&e))?;
    Ok(hex(hash.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_instances_are_found_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("caches");
        let caches = Caches::open(root.clone()).unwrap();
        let a = caches.take("cargo/registry").unwrap();
        let b = caches.take("cargo/registry").unwrap();
        assert_ne!(a, b, "a taken instance is not handed out twice");
        std::fs::write(a.join("kept"), "x").unwrap();
        caches.give_back("cargo/registry", a.clone());
        assert_eq!(caches.take("cargo/registry").unwrap(), a);
        caches.give_back("cargo/registry", a.clone());
        caches.give_back("cargo/registry", b);
        drop(caches);

        let again = Caches::open(root).unwrap();
        let mut found = [
            again.take("cargo/registry").unwrap(),
            again.take("cargo/registry").unwrap(),
        ];
        found.sort();
        assert!(found.contains(&a));
        assert!(found[0].join("kept").exists() || found[1].join("kept").exists());
        let fresh = again.take("cargo/registry").unwrap();
        assert!(!found.contains(&fresh), "a third instance is new");
        assert_eq!(unhex(&hex(b"a.b/c")).as_deref(), Some(&b"a.b/c"[..]));
    }

    /// A purge request deletes the free instances made before it, and an instance in use
    /// when it came is deleted when it comes back, not handed out again.
    #[test]
    fn a_purge_reaches_instances_in_use_when_they_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let caches = Caches::open(dir.path().join("caches")).unwrap();
        let free = caches.take("c").unwrap();
        let in_use = caches.take("c").unwrap();
        caches.give_back("c", free.clone());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(caches.purge("c", Millis::now()), 1);
        caches.give_back("c", in_use.clone());
        let next = caches.take("c").unwrap();
        assert!(next != free && next != in_use, "{next:?}");
        assert_eq!(caches.purge("other", Millis::now()), 0);
    }

    /// An instance whose directory vanished (cleared by hand) is forgotten, not handed out
    /// again and again; a file where an instance was is not taken for one after a restart.
    #[test]
    fn vanished_or_replaced_instances_are_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("caches");
        let caches = Caches::open(root.clone()).unwrap();
        let a = caches.take("c").unwrap();
        caches.give_back("c", a.clone());
        std::fs::remove_dir(&a).unwrap();
        let b = caches.take("c").unwrap();
        assert_ne!(a, b);
        assert!(is_real_dir(&b));
        std::fs::remove_dir(&b).unwrap();
        std::fs::write(&b, "not a directory").unwrap();
        drop(caches);
        let again = Caches::open(root).unwrap();
        let c = again.take("c").unwrap();
        assert!(c != a && c != b && is_real_dir(&c), "{c:?}");
        assert!(!b.exists(), "the stray file is removed");
    }
}
