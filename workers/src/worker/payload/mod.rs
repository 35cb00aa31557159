//! The generic-worker payload of the process engine (reference/worker-protocol.md §9), parsed
//! and checked before anything runs. A payload this worker cannot honour is refused with
//! `malformed-payload` and the reasons, never half-run.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

pub const DEFAULT_LIVE_LOG: &str = "public/logs/live.log";
pub const DEFAULT_BACKING_LOG: &str = "public/logs/live_backing.log";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    command: Vec<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    max_run_time: i64,
    #[serde(default)]
    artifacts: Vec<RawArtifact>,
    #[serde(default)]
    mounts: Vec<serde_json::Value>,
    #[serde(default)]
    os_groups: Vec<String>,
    #[serde(default)]
    on_exit_status: OnExitStatus,
    #[serde(default)]
    features: Features,
    #[serde(default)]
    logs: Logs,
    #[serde(default)]
    taskcluster_proxy_interface: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    superseder_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArtifact {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    name: Option<String>,
    expires: Option<DateTime<Utc>>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    #[serde(default)]
    optional: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OnExitStatus {
    #[serde(default)]
    pub retry: Vec<i64>,
    #[serde(default)]
    pub purge_caches: Vec<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Features {
    #[serde(default = "yes")]
    pub live_log: bool,
    #[serde(default = "yes")]
    pub backing_log: bool,
    #[serde(default)]
    pub taskcluster_proxy: bool,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default = "yes")]
    pub resource_monitor: bool,
    #[serde(default)]
    pub loopback_audio: bool,
    #[serde(default)]
    pub loopback_video: bool,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            live_log: true,
            backing_log: true,
            taskcluster_proxy: false,
            interactive: false,
            resource_monitor: true,
            loopback_audio: false,
            loopback_video: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    #[serde(default = "live_default")]
    pub live: String,
    #[serde(default = "backing_default")]
    pub backing: String,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            live: DEFAULT_LIVE_LOG.into(),
            backing: DEFAULT_BACKING_LOG.into(),
        }
    }
}

fn live_default() -> String {
    DEFAULT_LIVE_LOG.into()
}
fn backing_default() -> String {
    DEFAULT_BACKING_LOG.into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    File,
    Directory,
}

/// One payload artifact with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactSpec {
    pub kind: ArtifactKind,
    /// Relative to the task directory unless absolute.
    pub path: String,
    /// Artifact name (for a directory: the prefix of every file's name).
    pub name: String,
    pub expires: DateTime<Utc>,
    pub content_type: Option<String>,
    pub optional: bool,
}

/// A mount this worker honours (worker-protocol.md §8).
#[derive(Debug, Clone, PartialEq)]
pub enum Mount {
    /// A writable cache: the directory kept under `cache_name` between tasks, moved to
    /// `directory` (relative to the task directory) for the task's commands.
    Cache {
        directory: String,
        cache_name: String,
    },
    /// A file written from `content` (relative to the task directory) before the commands.
    File { file: String, content: Content },
}

impl Mount {
    /// Where the mount is, relative to the task directory.
    pub fn at(&self) -> &str {
        match self {
            Mount::Cache { directory, .. } => directory,
            Mount::File { file, .. } => file,
        }
    }
}

/// Whether two mount points are the same or one lies inside the other.
fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (std::path::Path::new(a), std::path::Path::new(b));
    a.starts_with(b) || b.starts_with(a)
}

/// Where a file mount's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// `raw` text or `base64` bytes, decoded.
    Bytes(Vec<u8>),
    Url {
        url: String,
        sha256: Option<String>,
    },
    /// The latest run's artifact of a task the task depends on, fetched with its credentials.
    Artifact {
        task_id: String,
        artifact: String,
        sha256: Option<String>,
    },
}

/// The most `raw` or `base64` content a mount may carry.
const INLINE_CONTENT_MAX: usize = 64 * 1024;

/// A payload that passed every check.
#[derive(Debug, Clone)]
pub struct Payload {
    pub command: Vec<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub max_run_time_secs: u64,
    pub artifacts: Vec<ArtifactSpec>,
    pub mounts: Vec<Mount>,
    pub on_exit_status: OnExitStatus,
    pub features: Features,
    pub logs: Logs,
    /// Groups the task asks to run in (the worker's user is in each; their scopes are checked
    /// when the run starts).
    pub os_groups: Vec<String>,
}

/// What the payload is checked against: the task's own times and this worker's limits.
pub struct Limits {
    pub task_deadline: DateTime<Utc>,
    pub task_expires: DateTime<Utc>,
    pub max_task_run_time_secs: u64,
    /// The groups the worker's user is in (names): `osGroups` may only name these, as on
    /// generic-worker's insecure engine, which adds the task to no group.
    pub worker_groups: Vec<String>,
}

/// Parses and validates `payload`; on refusal, every reason found (for the task log).
pub fn parse(payload: &serde_json::Value, limits: &Limits) -> Result<Payload, Vec<String>> {
    if payload.get("image").is_some() {
        return Err(vec![
            "this is a docker-worker payload (it has `image`); this worker runs the \
             generic-worker process engine and does not translate docker-worker payloads"
                .into(),
        ]);
    }
    let raw: Raw = serde_json::from_value(payload.clone())
        .map_err(|e| vec![format!("payload does not match the schema: {e}")])?;
    let mut errors = Vec::new();
    if raw.command.is_empty() {
        errors.push("`command` must hold at least one command".into());
    }
    for (i, argv) in raw.command.iter().enumerate() {
        if argv.is_empty() {
            errors.push(format!(
                "`command[{i}]` must hold at least the program to run"
            ));
        }
    }
    if raw.max_run_time < 1 {
        errors.push("`maxRunTime` must be at least 1 second".into());
    } else if raw.max_run_time as u64 > limits.max_task_run_time_secs {
        errors.push(format!(
            "`maxRunTime` {} exceeds this worker's maximum of {} seconds",
            raw.max_run_time, limits.max_task_run_time_secs
        ));
    }
    let mut mounts: Vec<Mount> = Vec::new();
    for (i, m) in raw.mounts.iter().enumerate() {
        match mount(m) {
            Ok(m) => {
                if let Some(other) = mounts.iter().find(|o| overlap(o.at(), m.at())) {
                    errors.push(format!(
                        "`mounts[{i}]`: {} overlaps the earlier mount at {}",
                        m.at(),
                        other.at()
                    ));
                }
                mounts.push(m);
            }
            Err(why) => errors.push(format!("`mounts[{i}]`: {why}")),
        }
    }
    for group in &raw.os_groups {
        if !limits
            .worker_groups
            .iter()
            .any(|g| g.eq_ignore_ascii_case(group))
        {
            errors.push(format!(
                "`osGroups`: the worker's user is not in group {group:?}, and this worker \
                 (as generic-worker's insecure engine) adds tasks to no group"
            ));
        }
    }
    match raw.taskcluster_proxy_interface.as_deref() {
        None | Some("localhost") => {}
        Some("docker-bridge") => errors.push(
            "`taskclusterProxyInterface` docker-bridge: this worker runs no docker, its proxy \
             listens on localhost"
                .into(),
        ),
        Some(other) => errors.push(format!(
            "`taskclusterProxyInterface` must be localhost or docker-bridge, got {other:?}"
        )),
    }
    for (flag, name) in [
        (raw.features.interactive, "interactive"),
        (raw.features.loopback_audio, "loopbackAudio"),
        (raw.features.loopback_video, "loopbackVideo"),
    ] {
        if flag {
            errors.push(format!(
                "this task is attempting to use feature {name}, which is not enabled on this worker"
            ));
        }
    }
    for code in &raw.on_exit_status.retry {
        if *code < 1 {
            errors.push(format!(
                "`onExitStatus.retry` codes must be ≥ 1, got {code}"
            ));
        }
    }
    for code in &raw.on_exit_status.purge_caches {
        if *code < 0 {
            errors.push(format!(
                "`onExitStatus.purgeCaches` codes must be ≥ 0, got {code}"
            ));
        }
    }
    let mut artifacts = Vec::new();
    for (i, a) in raw.artifacts.iter().enumerate() {
        if raw.artifacts[..i].contains(a) {
            errors.push(format!("`artifacts[{i}]` repeats an earlier artifact"));
            continue;
        }
        let kind = match a.kind.as_str() {
            "file" => ArtifactKind::File,
            "directory" => ArtifactKind::Directory,
            other => {
                errors.push(format!(
                    "`artifacts[{i}].type` must be file or directory, not {other:?}"
                ));
                continue;
            }
        };
        if let Some(enc) = &a.content_encoding {
            if enc != "identity" && enc != "gzip" {
                errors.push(format!(
                    "`artifacts[{i}].contentEncoding` must be identity or gzip"
                ));
            }
        }
        let expires = a.expires.unwrap_or(limits.task_expires);
        if expires < limits.task_deadline - chrono::Duration::seconds(1) {
            errors.push(format!(
                "`artifacts[{i}].expires` {expires} is before the task deadline {}",
                limits.task_deadline
            ));
        }
        if expires > limits.task_expires + chrono::Duration::seconds(1) {
            errors.push(format!(
                "`artifacts[{i}].expires` {expires} is after the task expiry {}",
                limits.task_expires
            ));
        }
        let name = a.name.clone().unwrap_or_else(|| a.path.clone());
        artifacts.push(ArtifactSpec {
            kind,
            path: a.path.clone(),
            name,
            expires,
            content_type: a.content_type.clone(),
            optional: a.optional,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Payload {
        os_groups: raw.os_groups,
        command: raw.command,
        env: raw.env,
        max_run_time_secs: raw.max_run_time as u64,
        artifacts,
        mounts,
        on_exit_status: raw.on_exit_status,
        features: raw.features,
        logs: raw.logs,
    })
}

/// A path inside the task directory: relative, not empty, never through `..`.
fn inside(path: &str) -> bool {
    let p = std::path::Path::new(path);
    !path.is_empty()
        && p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// One `payload.mounts[]` entry: a writable cache without preloaded content, or a file;
/// read-only directory mounts (archives), compressed files and index content are refused.
fn mount(m: &serde_json::Value) -> Result<Mount, String> {
    let Some(obj) = m.as_object() else {
        return Err("must be an object".into());
    };
    let text = |key: &str| obj.get(key).and_then(serde_json::Value::as_str);
    let only = |allowed: &[&str]| match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unexpected property `{k}`")),
        None => Ok(()),
    };
    if obj.contains_key("file") {
        only(&["file", "content", "format"])?;
        let file = text("file").ok_or("`file` must be a string")?;
        if !inside(file) {
            return Err(format!(
                "`file` {file:?} must be a relative path inside the task directory"
            ));
        }
        if std::path::Path::new(file).starts_with("generic-worker") {
            return Err(format!(
                "`file` {file:?} is inside generic-worker/, where the worker keeps the task's log"
            ));
        }
        if obj.contains_key("format") {
            return Err(
                "compressed file mounts (`format`) are not supported by this worker".into(),
            );
        }
        let content = content(obj.get("content").ok_or("a file mount needs `content`")?)?;
        return Ok(Mount::File {
            file: file.into(),
            content,
        });
    }
    if obj.contains_key("cacheName") {
        only(&["directory", "cacheName", "content", "format"])?;
        let cache_name = text("cacheName").ok_or("`cacheName` must be a string")?;
        let directory = text("directory").ok_or("a cache needs a `directory` string")?;
        if cache_name.is_empty() {
            return Err("`cacheName` must not be empty".into());
        }
        if !inside(directory) {
            return Err(format!(
                "`directory` {directory:?} must be a relative path inside the task directory"
            ));
        }
        if obj.contains_key("content") || obj.contains_key("format") {
            return Err("caches preloaded with `content` are not supported by this worker".into());
        }
        return Ok(Mount::Cache {
            directory: directory.into(),
            cache_name: cache_name.into(),
        });
    }
    if obj.contains_key("directory") {
        return Err(
            "read-only directory mounts (archives) are not supported by this worker".into(),
        );
    }
    Err("must be a file mount, a writable cache or a read-only directory mount".into())
}

/// A mount's `content`: `raw`, `base64`, `url` or `taskId` + `artifact` (`sha256` optional
/// for the last two).
fn content(c: &serde_json::Value) -> Result<Content, String> {
    let Some(obj) = c.as_object() else {
        return Err("`content` must be an object".into());
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`content.{key}` must be a string")),
        }
    };
    let sha256 = text("sha256")?;
    if let Some(h) = &sha256 {
        if h.len() != 64 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("`content.sha256` must be 64 lower-case hex digits".into());
        }
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let only = |allowed: &[&str]| match keys.iter().find(|k| !allowed.contains(k)) {
        Some(k) => Err(format!("unexpected property `content.{k}`")),
        None => Ok(()),
    };
    if let Some(raw) = text("raw")? {
        only(&["raw"])?;
        if raw.len() > INLINE_CONTENT_MAX {
            return Err(format!(
                "`content.raw` is longer than {INLINE_CONTENT_MAX} bytes"
            ));
        }
        return Ok(Content::Bytes(raw.into_bytes()));
    }
    if let Some(b64) = text("base64")? {
        only(&["base64"])?;
        if b64.len() > INLINE_CONTENT_MAX {
            return Err(format!(
                "`content.base64` is longer than {INLINE_CONTENT_MAX} bytes"
            ));
        }
        use base64::Engine as _;
        // wrapped lines (as the base64 tool writes them) are read as one
        let b64: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|e| format!("`content.base64` is not base64: {e}"))?;
        return Ok(Content::Bytes(bytes));
    }
    if let Some(url) = text("url")? {
        only(&["url", "sha256"])?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("`content.url` {url:?} must be an http(s) URL"));
        }
        return Ok(Content::Url { url, sha256 });
    }
    if let Some(task_id) = text("taskId")? {
        only(&["taskId", "artifact", "sha256"])?;
        let artifact = text("artifact")?.ok_or("`content.taskId` needs `content.artifact`")?;
        return Ok(Content::Artifact {
            task_id,
            artifact,
            sha256,
        });
    }
    if obj.contains_key("namespace") {
        return Err("content from the index (`namespace`) is not supported: taskledger has no index service".into());
    }
    Err("`content` needs one of raw, base64, url or taskId and artifact".into())
}

/// Content type of an uploaded file: `.log` → text/plain, `.jsonl` → application/jsonl, then
/// common extensions, else application/octet-stream (worker-protocol.md §6).
pub fn content_type_for(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("log" | "txt") => "text/plain; charset=utf-8",
        Some("jsonl") => "application/jsonl",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("xml") => "application/xml",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("gz" | "tgz") => "application/gzip",
        Some("zip") => "application/zip",
        Some("xz") => "application/x-xz",
        Some("zst") => "application/zstd",
        Some("tar") => "application/x-tar",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests;
