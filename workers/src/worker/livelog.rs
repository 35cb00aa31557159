//! The task log: one append-only file per run that the task's processes write into directly
//! (their stdout and stderr are the file), and the worker's own `[taskcluster ...]` lines.
//! While the run lasts, `LiveLogs` serves each open log over HTTP as a chunked stream that
//! follows the file as it grows, ending when the log is closed — the live log.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// How often a live reader looks for new bytes when nothing announced them.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

pub struct TaskLog {
    path: PathBuf,
    file: Mutex<File>,
    closed: watch::Sender<bool>,
}

impl TaskLog {
    pub fn create(path: &Path) -> std::io::Result<Arc<TaskLog>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)?;
        drop(file);
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Arc::new(TaskLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            closed: watch::channel(false).0,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_raw(&self, text: &str) {
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(text.as_bytes());
        }
        self.closed.send_modify(|_| {});
    }

    /// A worker line, as generic-worker prefixes them.
    pub fn info(&self, msg: impl AsRef<str>) {
        self.prefixed("taskcluster", msg.as_ref());
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        self.prefixed("taskcluster:warn", msg.as_ref());
    }

    pub fn error(&self, msg: impl AsRef<str>) {
        self.write_raw(&format!("[taskcluster:error] {}\n", msg.as_ref()));
    }

    fn prefixed(&self, tag: &str, msg: &str) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut out = String::with_capacity(msg.len() + 48);
        for line in msg.lines() {
            out.push_str(&format!("[{tag} {now}] {line}\n"));
        }
        self.write_raw(&out);
    }

    /// Plain text without a prefix (headers, the payload echo).
    pub fn plain(&self, msg: impl AsRef<str>) {
        let mut s = msg.as_ref().to_string();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        self.write_raw(&s);
    }

    /// A handle the task's processes write to directly (O_APPEND, so lines interleave whole).
    pub fn stdio(&self) -> std::io::Result<std::process::Stdio> {
        let f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("log poisoned"))?;
        Ok(f.try_clone()?.into())
    }

    /// Nothing more will be written; live readers finish what is there and end.
    pub fn close(&self) {
        // no fsync: the bytes are read back (upload, live readers) from the page cache
        self.closed.send_replace(true);
    }

    fn follow(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// Open logs by the secret in their URL.
type Published = Arc<Mutex<HashMap<String, Arc<TaskLog>>>>;

/// The HTTP server of live logs: `GET /log/<secret>`.
#[derive(Clone)]
pub struct LiveLogs {
    logs: Published,
    base_url: String,
}

impl LiveLogs {
    /// Binds `listen` and serves in the background. Readers reach it at `public_url` (default:
    /// `http://<bound address>`).
    pub async fn start(listen: SocketAddr, public_url: Option<String>) -> anyhow::Result<LiveLogs> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let bound = listener.local_addr()?;
        let base_url = public_url
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_string();
        let logs: Published = Arc::default();
        let app = Router::new()
            .route("/log/{secret}", get(stream_log))
            .with_state(logs.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "live log server stopped");
            }
        });
        tracing::info!(%base_url, "live log server listening");
        Ok(LiveLogs { logs, base_url })
    }

    /// Makes `log` readable at the returned URL until `retire`.
    pub fn publish(&self, log: Arc<TaskLog>) -> (String, String) {
        let secret = slugid::nice();
        let url = format!("{}/log/{secret}", self.base_url);
        if let Ok(mut m) = self.logs.lock() {
            m.insert(secret.clone(), log);
        }
        (secret, url)
    }

    pub fn retire(&self, secret: &str) {
        if let Ok(mut m) = self.logs.lock() {
            m.remove(secret);
        }
    }
}

async fn stream_log(State(logs): State<Published>, UrlPath(secret): UrlPath<String>) -> Response {
    let log = logs.lock().ok().and_then(|m| m.get(&secret).cloned());
    let Some(log) = log else {
        return (StatusCode::NOT_FOUND, "no such live log\n").into_response();
    };
    let file = match tokio::fs::File::open(log.path()).await {
        Ok(f) => f,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    };
    let closed = log.follow();
    let stream = futures::stream::unfold(
        (file, closed, false),
        |(mut file, mut closed, done)| async move {
            if done {
                return None;
            }
            let mut buf = vec![0u8; 64 * 1024];
            let mut writer_gone = false;
            loop {
                // read `closed` before reading: bytes written before the close are then seen
                let was_closed = *closed.borrow_and_update() || writer_gone;
                match file.read(&mut buf).await {
                    Ok(0) if was_closed => return None,
                    Ok(0) => {
                        if let Ok(Err(_)) =
                            tokio::time::timeout(FOLLOW_POLL, closed.changed()).await
                        {
                            writer_gone = true;
                        }
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        return Some((
                            Ok::<_, std::io::Error>(bytes::Bytes::from(buf)),
                            (file, closed, false),
                        ));
                    }
                    Err(e) => return Some((Err(e), (file, closed, true))),
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
