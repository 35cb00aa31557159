//! JSON-e for templates nobody vetted: a repository's `.taskcluster.yml` (any pull request's
//! author may write one) and renderTaskclusterYml's body (no scope needed). A template can ask
//! for unbounded memory (`range(0, 100000000000)`, `$map`s nested over a long array), which
//! in this process would abort the whole server, and, for a webhook still waiting for its job,
//! again after every restart. So it is evaluated by a child process of this binary
//! (`taskledger render-json-e`) whose address space and CPU time are bounded: a template past
//! either fails its own render and nothing else.

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "render-json-e";

/// The child's address space (the allocator reserves 1 GiB of it up front).
const MAX_ADDRESS_SPACE: u64 = 3 << 30;
const MAX_CPU_SECS: u64 = 10;
/// Wall time, past which the child is killed.
const TIMEOUT: Duration = Duration::from_secs(15);

/// What a render that ran out of room says.
const TOO_BIG: &str = "the template needs more memory or time than a render may have";

/// JSON-e's output for `template` in `context`, evaluated by a bounded child process.
pub async fn evaluate(template: &Value, context: &Value) -> Result<Value, String> {
    let input = serde_json::to_vec(&json!({ "template": template, "context": context }))
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("no renderer: {e}"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, with values on its stack
    unsafe {
        cmd.pre_exec(|| {
            let limit = |resource, value: u64| {
                let l = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &l) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            limit(libc::RLIMIT_AS, MAX_ADDRESS_SPACE)?;
            limit(libc::RLIMIT_CPU, MAX_CPU_SECS)?;
            limit(libc::RLIMIT_CORE, 0)
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("no renderer: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // a child that died early closes its end: its exit status says why
        let _ = stdin.write_all(&input).await;
    }
    let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("the renderer failed: {e}")),
        Err(_) => return Err(TOO_BIG.into()),
    };
    if !out.status.success() {
        return Err(TOO_BIG.into());
    }
    let answer: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the renderer's answer: {e}"))?;
    match (
        answer.get("ok"),
        answer.get("error").and_then(Value::as_str),
    ) {
        (Some(v), _) => Ok(v.clone()),
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Err("the renderer gave no answer".into()),
    }
}

/// The child's side: `{template, context}` on stdin, `{"ok": <output>}` or
/// `{"error": <message>}` on stdout.
pub fn serve_child() -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let answer = match serde_json::from_slice::<Value>(&input) {
        Ok(v) => match super::tcyaml::evaluate(&v["template"], &v["context"]) {
            Ok(out) => json!({ "ok": out }),
            Err(e) => json!({ "error": e }),
        },
        Err(e) => json!({ "error": format!("the renderer's input: {e}") }),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &answer)?;
    stdout.flush()
}
