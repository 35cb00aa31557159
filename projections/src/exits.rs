//! Exiting after a panic, and the record of such exits that lets an operator tell a crash
//! loop from a one-off.
//!
//! A writer or background service that panicked would leave the process answering its ping
//! while, say, no command could be written or no claim expire. The process exits instead
//! (status 70, EX_SOFTWARE) and its supervisor restarts it. A panic that recurs on the same
//! record then repeats after every restart, so each exit is appended to a file in the data
//! directory (`serve` names it with [`record_in`]); the next start reads it back
//! ([`PanicExits::read`]), logs what it finds and serves the counts on `/metrics`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where `exit_after_panic` records exits, once `serve` has said.
static RECORD: OnceLock<PathBuf> = OnceLock::new();

/// Records every later exit after a panic in `path` (one JSON line each).
pub fn record_in(path: PathBuf) {
    let _ = RECORD.set(path);
}

/// One recorded exit: which service panicked, and when (RFC 3339). Nothing of the panic's
/// message is kept: it could quote a request or a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PanicExit {
    pub service: String,
    pub time: String,
}

/// A writer that panicked leaves its service unable to write while the process still serves
/// reads and answers its ping. The process exits instead (status 70), so that its supervisor
/// restarts it: every group commit is one atomic write, so the restarted process folds the
/// log from where the projection stands. `serve` does the same for a background service (a
/// reactor, the Pulse bridge), which resumes from its checkpoint or rescans the projection.
pub fn exit_after_panic(service: &str) -> ! {
    tracing::error!(
        service,
        "panicked; exiting so that a restart resumes from the log"
    );
    if let Some(path) = RECORD.get() {
        if let Err(e) = append(path, service) {
            tracing::error!(error = %e, path = %path.display(), "could not record the exit");
        }
    }
    std::process::exit(70)
}

fn append(path: &Path, service: &str) -> std::io::Result<()> {
    let exit = PanicExit {
        service: service.to_string(),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    // each record starts a line of its own, so one cut short (a full disk) costs only itself
    let line = format!("\n{}", serde_json::to_string(&exit)?);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// The record's bound: past it, the next start moves the record aside (to `<name>.1`, in
/// place of an older one) and counts from zero, which Prometheus takes as a counter reset. A
/// crash loop restarting every second for days would otherwise grow it, and every start reads
/// it whole.
const ROTATE_AT: u64 = 1 << 20;

/// Moves the record at `path` aside once it has grown past a megabyte (about 15,000 exits).
pub fn rotate_if_large(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > ROTATE_AT => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".1");
            std::fs::rename(path, aside)
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the record holds: exits per service, and the latest.
#[derive(Debug, Default, PartialEq)]
pub struct PanicExits {
    pub per_service: BTreeMap<String, u64>,
    pub latest: Option<PanicExit>,
    /// Exits whose time lies within the hour before the read.
    pub last_hour: u64,
}

impl PanicExits {
    /// Reads the record at `path` (none there: no exits). A line that does not parse, such as
    /// one cut short by a full disk, is skipped.
    pub fn read(path: &Path) -> std::io::Result<PanicExits> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PanicExits::default()),
            Err(e) => return Err(e),
        };
        let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        let mut exits = PanicExits::default();
        for exit in text
            .lines()
            .filter_map(|l| serde_json::from_str::<PanicExit>(l).ok())
        {
            *exits.per_service.entry(exit.service.clone()).or_default() += 1;
            if chrono::DateTime::parse_from_rfc3339(&exit.time).is_ok_and(|t| t >= hour_ago) {
                exits.last_hour += 1;
            }
            exits.latest = Some(exit);
        }
        Ok(exits)
    }

    pub fn total(&self) -> u64 {
        self.per_service.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_counts_each_service_and_the_last_hour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("panic-exits.jsonl");
        assert_eq!(PanicExits::read(&path).unwrap(), PanicExits::default());
        append(&path, "queue").unwrap();
        append(&path, "dependencies").unwrap();
        // an old exit, and a torn line a full disk could leave
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"\n{\"service\":\"queue\",\"time\":\"2020-01-01T00:00:00.000Z\"}\n{\"serv")
            .unwrap();
        append(&path, "queue").unwrap();
        let exits = PanicExits::read(&path).unwrap();
        assert_eq!(
            exits.per_service,
            BTreeMap::from([("dependencies".to_string(), 1), ("queue".to_string(), 3)])
        );
        assert_eq!(exits.total(), 4);
        assert_eq!(exits.last_hour, 3);
        assert_eq!(exits.latest.map(|e| e.service).as_deref(), Some("queue"));

        // a small record stays; a large one moves aside and the count starts again
        rotate_if_large(&path).unwrap();
        assert_eq!(PanicExits::read(&path).unwrap().total(), 4);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![b' '; ROTATE_AT as usize]).unwrap();
        rotate_if_large(&path).unwrap();
        assert_eq!(PanicExits::read(&path).unwrap(), PanicExits::default());
        let aside = PanicExits::read(&dir.path().join("panic-exits.jsonl.1")).unwrap();
        assert_eq!(aside.total(), 4);
    }
}
