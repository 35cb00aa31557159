//! Runs one command of a task: its own process group, output straight into the task log,
//! killed with everything it started when the run's time is up or the run is aborted.

use super::livelog::TaskLog;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a run is being stopped from outside its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// The run is no longer ours (reclaim refused, cancelled, deadline, claim expired).
    RunLost,
    /// The worker is shutting down without time to finish (SIGTERM).
    WorkerShutdown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEnd {
    /// The process exited; signals map to 128 + signal, as a shell reports them.
    Exited(i32),
    /// The program could not be started.
    SpawnFailed(String),
    /// maxRunTime passed.
    TimedOut,
    Aborted(Abort),
}

/// SIGKILL to every process in the group (the command and whatever it started).
pub fn kill_group(pgid: u32) {
    // SAFETY: killpg only sends a signal; a stale group id yields ESRCH, which is harmless.
    unsafe {
        libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
    }
}

pub async fn run(
    argv: &[String],
    dir: &Path,
    env: &BTreeMap<String, String>,
    log: &TaskLog,
    deadline: Instant,
    abort: &mut watch::Receiver<Option<Abort>>,
) -> CommandEnd {
    let (stdout, stderr) = match (log.stdio(), log.stdio()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return CommandEnd::SpawnFailed(format!("task log: {e}")),
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return CommandEnd::SpawnFailed(format!("{}: {e}", argv[0])),
    };
    let Some(pgid) = child.id() else {
        return CommandEnd::SpawnFailed("the process vanished at start".into());
    };
    let end = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                CommandEnd::Exited(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)))
            }
            Err(e) => CommandEnd::SpawnFailed(format!("waiting for the process: {e}")),
        },
        _ = tokio::time::sleep_until(deadline) => CommandEnd::TimedOut,
        a = abort.wait_for(|a| a.is_some()) => match a {
            Ok(a) => CommandEnd::Aborted(a.expect("wait_for returned a set value")),
            Err(_) => CommandEnd::Aborted(Abort::RunLost),
        },
    };
    // whatever the command left behind goes with it
    kill_group(pgid);
    let _ = child.wait().await;
    end
}

/// The names of the groups this process runs in: its effective group and its supplementary
/// groups (through the system's group database, so network groups count too).
pub fn own_groups() -> Vec<String> {
    // SAFETY: getgroups with a zero size only counts; the second call writes at most
    // `gids.len()` entries into the buffer it is given.
    let mut gids = unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut gids: Vec<libc::gid_t> = vec![0; n.max(0) as usize];
        let n = libc::getgroups(gids.len() as libc::c_int, gids.as_mut_ptr());
        gids.truncate(n.max(0) as usize);
        gids.push(libc::getegid());
        gids
    };
    gids.sort_unstable();
    gids.dedup();
    gids.into_iter().filter_map(group_name).collect()
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: getgrgid_r fills `group` with pointers into `buf`, which outlives their
        // use below; `found` is null or points at `group`.
        unsafe {
            let mut group: libc::group = std::mem::zeroed();
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr(), buf.len(), &mut found);
            if rc == libc::ERANGE && buf.len() < (1 << 20) {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 || found.is_null() || group.gr_name.is_null() {
                return None;
            }
            return std::ffi::CStr::from_ptr(group.gr_name)
                .to_str()
                .ok()
                .map(str::to_owned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn setup() -> (tempfile::TempDir, std::sync::Arc<TaskLog>) {
        let dir = tempfile::tempdir().unwrap();
        let log = TaskLog::create(&dir.path().join("log.txt")).unwrap();
        (dir, log)
    }

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())])
    }

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn output_lands_in_the_log_and_exit_codes_are_reported() {
        let (dir, log) = setup();
        let (_tx, mut rx) = watch::channel(None);
        let far = Instant::now() + Duration::from_secs(30);
        let end = run(
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            dir.path(),
            &env(),
            &log,
            far,
            &mut rx,
        )
        .await;
        assert_eq!(end, CommandEnd::Exited(3));
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        let missing = run(
            &argv(&["/no/such/program"]),
            dir.path(),
            &env(),
            &log,
            far,
            &mut rx,
        )
        .await;
        assert!(matches!(missing, CommandEnd::SpawnFailed(_)), "{missing:?}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let (dir, log) = setup();
        let (_tx, mut rx) = watch::channel(None);
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let soon = Instant::now() + Duration::from_millis(500);
        let end = run(
            &argv(&["sh", "-c", &script]),
            dir.path(),
            &env(),
            &log,
            soon,
            &mut rx,
        )
        .await;
        assert_eq!(end, CommandEnd::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "background child {pid} survived");
    }

    #[tokio::test]
    async fn abort_stops_the_command_at_once() {
        let (dir, log) = setup();
        let (tx, mut rx) = watch::channel(None);
        let far = Instant::now() + Duration::from_secs(60);
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send_replace(Some(Abort::WorkerShutdown));
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let end = run(
            &argv(&["sleep", "600"]),
            dir.path(),
            &env(),
            &log,
            far,
            &mut rx,
        )
        .await;
        assert_eq!(end, CommandEnd::Aborted(Abort::WorkerShutdown));
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    /// True once `pid` no longer exists (or is a zombie awaiting its reaper).
    pub async fn gone(pid: i32) -> bool {
        for _ in 0..50 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(s) if s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => return true,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        false
    }

    /// The same groups `id -Gn` names for this process's user (those with names).
    #[test]
    fn own_groups_are_the_ones_id_reports() {
        let out = std::process::Command::new("id")
            .arg("-Gn")
            .output()
            .unwrap();
        let mut expected: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            // a group without a name is printed as its number, and has no name to match
            .filter(|g| !g.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
            .collect();
        expected.sort();
        expected.dedup();
        let mut got = own_groups();
        got.sort();
        assert_eq!(got, expected);
    }
}
