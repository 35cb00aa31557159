//! `.taskcluster.yml` version 1 (reference/github.md §2): parsed, rendered with JSON-e and
//! turned into the task definitions a job creates, in the order it creates them.
//!
//! Rendering is deterministic for one webhook: `now` is the time it arrived and every id is
//! derived from its delivery (`github::derived_slug`). json-e's Rust crate takes no functions
//! in its context, so `as_slugid("label")` is resolved before rendering: each call with a
//! quoted label, in any string of the file, becomes the quoted slugid. A label computed at
//! render time (`as_slugid(name)`) is not supported, and fails the render as an unknown name.

use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use taskledger_core::github::{derived_slug, SCHEDULER_ID};
use taskledger_core::ids::Slug;
use taskledger_core::time::Millis;

/// What a job renders against.
pub struct Context<'a> {
    pub tasks_for: &'a str,
    /// The webhook's body (with `pull_request` and `taskcluster_comment` for a comment).
    pub event: &'a Value,
    /// The delivery the ids are derived from.
    pub event_id: &'a str,
    pub root_url: &'a str,
    pub now: Millis,
}

/// The file's settings, read before rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `policy.pullRequests`: `public`, `public_restricted`, `collaborators` (the default) or
    /// `collaborators_quiet`.
    pub pull_requests: String,
    /// `policy.allowComments` is `collaborators`.
    pub allow_comments: bool,
}

/// A rendered file.
#[derive(Debug)]
pub struct Rendered {
    /// `(taskId, definition without taskId)`, dependencies first.
    pub tasks: Vec<(Slug, Value)>,
    /// `reporting: checks-v1`.
    pub checks: bool,
    pub auto_cancel: bool,
    /// `hooks:` entries (`name`s), which this server does not trigger.
    pub hooks: Vec<String>,
}

const KEYS: [&str; 6] = [
    "version",
    "policy",
    "reporting",
    "autoCancelPreviousChecks",
    "hooks",
    "tasks",
];

/// The file parsed: a YAML mapping of version 1 with only the keys the schema allows.
pub fn parse(text: &str) -> Result<Map<String, Value>, String> {
    let value: Value = yaml_serde::from_str(text)
        .map_err(|e| format!("`.taskcluster.yml` is not valid YAML: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("`.taskcluster.yml` must be a YAML mapping".into());
    };
    match obj.get("version") {
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) if v.as_u64() == Some(0) => {
            return Err("`.taskcluster.yml` version 0 is not supported by this server: write version 1 (https://docs.taskcluster.net/docs/reference/integrations/github/taskcluster-yml-v1)".into())
        }
        Some(v) => return Err(format!("`.taskcluster.yml` has an unknown version: {v}")),
        None => return Err("`.taskcluster.yml` must have required property 'version'".into()),
    }
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "`.taskcluster.yml` must NOT have additional properties: {k}"
        ));
    }
    Ok(obj)
}

/// The file's policy (the default branch's file decides it).
pub fn policy(file: &Map<String, Value>) -> Result<Policy, String> {
    let policy = file.get("policy").cloned().unwrap_or(json!({}));
    let Value::Object(p) = policy else {
        return Err("`policy` must be an object".into());
    };
    let pull_requests = match p.get("pullRequests") {
        None => "collaborators".to_string(),
        Some(Value::String(s))
            if [
                "public",
                "public_restricted",
                "collaborators",
                "collaborators_quiet",
            ]
            .contains(&s.as_str()) =>
        {
            s.clone()
        }
        Some(other) => return Err(format!("`policy.pullRequests` may not be {other}")),
    };
    let allow_comments = match p.get("allowComments") {
        None => false,
        Some(Value::String(s)) if s == "collaborators" => true,
        Some(other) => return Err(format!("`policy.allowComments` may not be {other}")),
    };
    Ok(Policy {
        pull_requests,
        allow_comments,
    })
}

/// Every `as_slugid("label")` (or with single quotes) in `text`, replaced with the quoted
/// slugid derived for the label.
fn resolve_slugids(text: &str, event_id: &str) -> String {
    const CALL: &str = "as_slugid(";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(CALL) {
        let (before, call) = rest.split_at(at);
        out.push_str(before);
        let args = &call[CALL.len()..];
        let trimmed = args.trim_start();
        let quote = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'');
        let resolved = quote.and_then(|q| {
            let body = &trimmed[1..];
            let end = body.find(q)?;
            let label = &body[..end];
            let after = body[end + 1..].trim_start();
            let tail = after.strip_prefix(')')?;
            Some((label, tail))
        });
        match (quote, resolved) {
            (Some(q), Some((label, tail))) => {
                out.push(q);
                out.push_str(derived_slug(event_id, label).text().as_str());
                out.push(q);
                rest = tail;
            }
            _ => {
                out.push_str(CALL);
                rest = args;
            }
        }
    }
    out.push_str(rest);
    out
}

fn resolve_all(v: &mut Value, event_id: &str) {
    match v {
        Value::String(s) if s.contains("as_slugid") => *s = resolve_slugids(s, event_id),
        Value::Array(items) => items.iter_mut().for_each(|i| resolve_all(i, event_id)),
        Value::Object(obj) => {
            let renamed: Vec<(String, Value)> = std::mem::take(obj)
                .into_iter()
                .map(|(k, mut v)| {
                    resolve_all(&mut v, event_id);
                    let k = if k.contains("as_slugid") {
                        resolve_slugids(&k, event_id)
                    } else {
                        k
                    };
                    (k, v)
                })
                .collect();
            obj.extend(renamed);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// A file ready for JSON-e: the template, the context, and the file's `hooks:` entries.
pub struct Prepared {
    pub template: Value,
    pub context: Value,
    pub hooks: Vec<String>,
}

/// The template and context `ctx` renders the file with.
pub fn prepare(file: &Map<String, Value>, ctx: &Context) -> Result<Prepared, String> {
    let hooks: Vec<String> = match file.get("hooks") {
        None => vec![],
        Some(Value::Array(hs)) => hs
            .iter()
            .map(|h| {
                h.get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| "each of `hooks` must have a string `name`".to_string())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`hooks` must be an array".into()),
    };
    let mut template = Value::Object(
        file.iter()
            .filter(|(k, _)| *k != "version" && *k != "hooks")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    resolve_all(&mut template, ctx.event_id);
    let now = ctx.now.to_rfc3339();
    // json-e's `now` is its own clock's; a `$let` sets it to the webhook's arrival
    let template = json!({ "$let": { "now": now }, "in": template });
    let context = json!({
        "tasks_for": ctx.tasks_for,
        "event": ctx.event,
        "taskcluster_root_url": ctx.root_url,
    });
    Ok(Prepared {
        template,
        context,
        hooks,
    })
}

/// JSON-e in this process: for tests and for the sandbox's child (`sandbox`), never on a
/// server's own threads, since a template may ask for unbounded memory.
pub fn evaluate(template: &Value, context: &Value) -> Result<Value, String> {
    json_e::render(template, context).map_err(|e| e.to_string())
}

/// The rendered file (`evaluated`: JSON-e's output for `prepare`'s template) as tasks.
pub fn finish(
    evaluated: Result<Value, String>,
    hooks: Vec<String>,
    ctx: &Context,
) -> Result<Rendered, String> {
    let rendered = evaluated.map_err(|e| format!("rendering `.taskcluster.yml` failed: {e}"))?;
    let checks = match rendered.get("reporting") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "checks-v1" => true,
        Some(other) => return Err(format!("`reporting` may not be {other}")),
    };
    let auto_cancel = match rendered.get("autoCancelPreviousChecks") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`autoCancelPreviousChecks` may not be {other}")),
    };
    let tasks = match rendered.get("tasks") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(tasks)) => tasks.iter().filter(|t| !t.is_null()).cloned().collect(),
        Some(_) => return Err("`tasks` must render to an array".into()),
    };
    Ok(Rendered {
        tasks: complete(tasks, ctx, checks)?,
        checks,
        auto_cancel,
        hooks,
    })
}

/// Renders a parsed file for `ctx` in this process (the unit tests; the server renders
/// through `render_sandboxed`).
#[cfg(test)]
fn render(file: &Map<String, Value>, ctx: &Context) -> Result<Rendered, String> {
    let p = prepare(file, ctx)?;
    finish(evaluate(&p.template, &p.context), p.hooks, ctx)
}

/// Renders a parsed file for `ctx` with JSON-e in a child process of its own
/// (`sandbox::evaluate`): a template that asks for more memory or time than the child may
/// have fails its render, never the server.
pub async fn render_sandboxed(
    file: &Map<String, Value>,
    ctx: &Context<'_>,
) -> Result<Rendered, String> {
    let p = prepare(file, ctx)?;
    let evaluated = super::sandbox::evaluate(&p.template, &p.context).await;
    finish(evaluated, p.hooks, ctx)
}

/// The ids and defaults of the rendered tasks, and their creation order.
fn complete(tasks: Vec<Value>, ctx: &Context, checks: bool) -> Result<Vec<(Slug, Value)>, String> {
    let single = tasks.len() == 1;
    let group_default = derived_slug(ctx.event_id, "\0taskGroupId");
    let mut out = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        let Value::Object(mut t) = task else {
            return Err(format!("task {i} must render to an object"));
        };
        let id_of = |t: &Map<String, Value>, key: &str| -> Result<Option<Slug>, String> {
            match t.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => s
                    .parse::<Slug>()
                    .map(Some)
                    .map_err(|_| format!("task {i}: {key} `{s}` is not a slugid")),
                Some(other) => Err(format!("task {i}: {key} must be a string, not {other}")),
            }
        };
        let task_id = id_of(&t, "taskId")?;
        let group = id_of(&t, "taskGroupId")?;
        // a single task is its own group (a decision task); several share a group of their own
        let (task_id, group) = match (task_id, group, single) {
            (Some(id), Some(g), _) => (id, g),
            (Some(id), None, true) => (id, id),
            (None, Some(g), true) => (g, g),
            (None, None, true) => (group_default, group_default),
            (id, g, false) => (
                id.unwrap_or_else(|| derived_slug(ctx.event_id, &format!("\0task{i}"))),
                g.unwrap_or(group_default),
            ),
        };
        t.remove("taskId");
        t.insert("taskGroupId".into(), json!(group.text().as_str()));
        t.entry("schedulerId").or_insert(json!(SCHEDULER_ID));
        t.entry("created").or_insert(json!(ctx.now.to_rfc3339()));
        let route = if checks { "checks" } else { "statuses" };
        let routes = t.entry("routes").or_insert(json!([]));
        if let Value::Array(rs) = routes {
            if !rs.iter().any(|r| r == route) {
                rs.push(json!(route));
            }
        }
        out.push((task_id, Value::Object(t)));
    }
    topological(out)
}

/// Tasks ordered so that each comes after the tasks of the set it depends on.
fn topological(tasks: Vec<(Slug, Value)>) -> Result<Vec<(Slug, Value)>, String> {
    let ids: HashSet<Slug> = tasks.iter().map(|(id, _)| *id).collect();
    let deps: HashMap<Slug, Vec<Slug>> = tasks
        .iter()
        .map(|(id, t)| {
            let within = t
                .get("dependencies")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str()?.parse::<Slug>().ok())
                .filter(|d| ids.contains(d) && d != id)
                .collect();
            (*id, within)
        })
        .collect();
    let mut placed: HashSet<Slug> = HashSet::new();
    let mut out = Vec::with_capacity(tasks.len());
    let mut waiting = tasks;
    while !waiting.is_empty() {
        let (ready, rest): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|(id, _)| deps[id].iter().all(|d| placed.contains(d)));
        if ready.is_empty() {
            return Err("the tasks' dependencies form a cycle".into());
        }
        placed.extend(ready.iter().map(|(id, _)| *id));
        out.extend(ready);
        waiting = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(event: &'a Value) -> Context<'a> {
        Context {
            tasks_for: "github-push",
            event,
            event_id: "d-1",
            root_url: "https://tc.example.com",
            now: Millis(1_700_000_000_000),
        }
    }

    const FILE: &str = r#"
version: 1
policy:
  pullRequests: public
tasks:
  $if: 'tasks_for == "github-push"'
  then:
    - taskId: {$eval: as_slugid("test")}
      dependencies: ['${as_slugid("build")}']
      provisionerId: proj
      workerType: ci
      metadata: {name: test, description: d, owner: 'a@b.c', source: '${event.repository.html_url}'}
      payload: {}
      deadline: {$fromNow: '1 day'}
    - taskId: {$eval: 'as_slugid( "build" )'}
      created: {$fromNow: ''}
      provisionerId: proj
      workerType: ci
      routes: [statuses, 'index.x']
      metadata: {name: build, description: d, owner: 'a@b.c', source: 'https://x'}
      payload: {}
"#;

    #[test]
    fn a_file_renders_to_ordered_tasks_with_their_defaults() {
        let event = json!({"repository": {"html_url": "https://github.com/acme/app"}});
        let file = parse(FILE).unwrap();
        assert_eq!(policy(&file).unwrap().pull_requests, "public");
        let r = render(&file, &ctx(&event)).unwrap();
        let build = derived_slug("d-1", "build");
        let test = derived_slug("d-1", "test");
        assert_eq!(
            r.tasks.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [build, test],
            "dependencies first"
        );
        let group = derived_slug("d-1", "\0taskGroupId").to_string();
        for (_, t) in &r.tasks {
            assert_eq!(t["taskGroupId"], json!(group));
            assert_eq!(t["schedulerId"], json!(SCHEDULER_ID));
            assert!(t.get("taskId").is_none());
            assert_eq!(
                t["routes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| *r == "statuses")
                    .count(),
                1
            );
        }
        let (_, test_def) = &r.tasks[1];
        assert_eq!(test_def["dependencies"], json!([build.to_string()]));
        assert_eq!(
            test_def["metadata"]["source"],
            "https://github.com/acme/app"
        );
        // `now` is the webhook's arrival, so a second render gives the same tasks
        assert_eq!(
            test_def["created"],
            json!(Millis(1_700_000_000_000).to_rfc3339())
        );
        assert_eq!(
            test_def["deadline"],
            json!(Millis(1_700_000_000_000 + 86_400_000).to_rfc3339())
        );
        assert_eq!(r.tasks[0].1["created"], r.tasks[1].1["created"]);
        assert!(r.auto_cancel && !r.checks);
        let again = render(&file, &ctx(&event)).unwrap();
        assert_eq!(again.tasks, r.tasks);
    }

    #[test]
    fn a_single_task_is_its_own_group() {
        let file = parse("version: 1\nreporting: checks-v1\ntasks:\n  - {payload: {}}\n").unwrap();
        let r = render(&file, &ctx(&json!({}))).unwrap();
        let (id, t) = &r.tasks[0];
        assert_eq!(t["taskGroupId"], json!(id.to_string()));
        assert_eq!(t["routes"], json!(["checks"]));
        assert!(r.checks);
    }

    #[test]
    fn bad_files_say_why() {
        for (text, says) in [
            ("tasks: []", "required property 'version'"),
            ("version: 0\ntasks: []", "version 0"),
            ("version: 2", "unknown version"),
            ("version: 1\nextra: 1", "additional properties: extra"),
            ("- 1", "YAML mapping"),
            ("version: [1", "not valid YAML"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = |text: &str| render(&parse(text).unwrap(), &ctx(&json!({}))).unwrap_err();
        assert!(e("version: 1\ntasks: {a: 1}").contains("must render to an array"));
        assert!(e("version: 1\ntasks: [1]").contains("must render to an object"));
        assert!(e("version: 1\ntasks: [{$eval: 'nope'}]").contains("rendering"));
        assert!(e("version: 1\ntasks: [{taskId: 'x'}, {}]").contains("not a slugid"));
        let cycle = "version: 1\ntasks:\n  - {taskId: {$eval: 'as_slugid(\"a\")'}, dependencies: ['${as_slugid(\"b\")}']}\n  - {taskId: {$eval: 'as_slugid(\"b\")'}, dependencies: ['${as_slugid(\"a\")}']}\n";
        assert!(e(cycle).contains("cycle"));
        assert!(policy(&parse("version: 1\npolicy: {pullRequests: everyone}").unwrap()).is_err());
    }

    #[test]
    fn only_quoted_labels_are_resolved() {
        let s = derived_slug("d", "x").to_string();
        assert_eq!(resolve_slugids("as_slugid('x')", "d"), format!("'{s}'"));
        assert_eq!(
            resolve_slugids("a + as_slugid(\"x\") + b", "d"),
            format!("a + \"{s}\" + b")
        );
        assert_eq!(resolve_slugids("as_slugid(name)", "d"), "as_slugid(name)");
        assert_eq!(resolve_slugids("as_slugid('x'", "d"), "as_slugid('x'");
    }
}
