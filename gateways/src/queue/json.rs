//! The queue's JSON shapes: task definitions in and out, status, artifacts, and the
//! create-task-request checks that Taskcluster's JSON schema performs.

use crate::error::ApiError;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use taskledger_core::ids::{is_ident38, is_worker_type, Slug, TaskId, TaskQueueId};
use taskledger_core::queue::{JsonText, Metadata, Priority, Requires, Task, TaskDefinition};
use taskledger_core::time::Millis;

use super::call::{repeated_item, SLUGID_RE};

/// A task definition as the API returns it (getTask, claimWork, ...), written straight from
/// the definition, with the task's current priority (upstream keeps one priority, which
/// changeTaskPriority moves). Keys come in sorted order, as a `serde_json::Value` object
/// writes them.
pub struct TaskJson<'a>(pub &'a TaskDefinition, pub Priority);

impl<'a> TaskJson<'a> {
    /// A task's definition as it reads now.
    pub fn of(task: &'a Task) -> TaskJson<'a> {
        TaskJson(&task.definition, task.priority)
    }
}

impl Serialize for TaskJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let def = self.0;
        let meta = &def.metadata;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("created", &def.created.rfc3339())?;
        m.serialize_entry("deadline", &def.deadline.rfc3339())?;
        m.serialize_entry(
            "dependencies",
            &Seq(def.dependencies.iter().map(Slug::text)),
        )?;
        m.serialize_entry("expires", &def.expires.rfc3339())?;
        m.serialize_entry("extra", &Raw(&def.extra))?;
        m.serialize_entry(
            "metadata",
            &Fields([
                ("description", &meta.description),
                ("name", &meta.name),
                ("owner", &meta.owner),
                ("source", &meta.source),
            ]),
        )?;
        m.serialize_entry("payload", &Raw(&def.payload))?;
        m.serialize_entry("priority", self.1.as_str())?;
        m.serialize_entry("projectId", &def.project_id)?;
        m.serialize_entry("provisionerId", def.task_queue_id.provisioner_id())?;
        m.serialize_entry("requires", def.requires.as_str())?;
        m.serialize_entry("retries", &def.retries)?;
        m.serialize_entry("routes", &def.routes)?;
        m.serialize_entry("schedulerId", &def.scheduler_id)?;
        m.serialize_entry("scopes", &def.scopes)?;
        m.serialize_entry("tags", &Raw(&def.tags))?;
        m.serialize_entry("taskGroupId", &def.task_group_id.text())?;
        m.serialize_entry("taskQueueId", def.task_queue_id.as_str())?;
        m.serialize_entry("workerType", def.task_queue_id.worker_type())?;
        m.end()
    }
}

/// Stored JSON text (always written by serde_json from a `Value`, so already compact with
/// sorted keys) as it stands; `null` if it does not parse.
struct Raw<'a>(&'a JsonText);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(&self.0 .0) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_unit(),
        }
    }
}

/// The items as a JSON array.
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// Named strings as a JSON object, in the order given.
struct Fields<'a, const N: usize>([(&'static str, &'a String); N]);

impl<const N: usize> Serialize for Fields<'_, N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().copied())
    }
}

/// The same, as a `Value`, to embed in a reply built with `json!`.
pub fn task_json(task: &Task) -> Value {
    serde_json::to_value(TaskJson::of(task)).unwrap_or(Value::Null)
}

pub use taskledger_core::queue::json::{artifact_info, run_json, status_json};

/// Collects schema errors the way Taskcluster lists them.
#[derive(Default)]
pub struct Checks {
    pub errors: Vec<String>,
}

impl Checks {
    pub fn fail(&mut self, msg: String) {
        self.errors.push(msg);
    }
    pub fn string<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        required: bool,
    ) -> Option<&'a str> {
        self.string_in(obj, "data", key, required)
    }
    /// `string` of an object nested at `path` (`data.metadata`, say), named by that path.
    pub fn string_in<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'a str> {
        match obj.get(key) {
            None if required => {
                self.fail(format!("{path} should have required property '{key}'"));
                None
            }
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.fail(format!("{path}.{key} should be string"));
                None
            }
        }
    }
    /// JSON schema's `minLength`/`maxLength` (in characters) of the string at `path` (made
    /// only for an error: most strings pass, and cheaply, by their length in bytes).
    pub fn length(&mut self, path: impl Fn() -> String, v: &str, min: usize, max: usize) {
        // bytes bound characters from above; a string that is not empty has one at least
        if v.len() <= max && (min == 0 || min == 1 && !v.is_empty()) {
            return;
        }
        let n = v.chars().count();
        if n < min {
            self.fail(format!(
                "{} should NOT be shorter than {min} characters",
                path()
            ));
        }
        if n > max {
            self.fail(format!(
                "{} should NOT be longer than {max} characters",
                path()
            ));
        }
    }
    /// An identifier as the schemas declare one: 1 to 38 characters of `^([a-zA-Z0-9-_]*)$`,
    /// each rule its own error (the path made only for one).
    pub fn identifier(&mut self, path: impl Fn() -> String, v: &str) {
        self.length(&path, v, 1, 38);
        if !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.fail(format!(
                "{} should match pattern \"^([a-zA-Z0-9-_]*)$\"",
                path()
            ));
        }
    }
    pub fn finish(self, schema: &str) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(schema, &self.errors))
        }
    }
}

const CREATE_TASK_KEYS: &[&str] = &[
    "taskQueueId",
    "provisionerId",
    "workerType",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "dependencies",
    "requires",
    "routes",
    "priority",
    "retries",
    "created",
    "deadline",
    "expires",
    "scopes",
    "payload",
    "metadata",
    "tags",
    "extra",
];

pub const CREATE_TASK_SCHEMA: &str = "/schemas/queue/v1/create-task-request.json#";

/// The strings of an array property, each with its index (items that are no string are
/// errors), checked for `maxItems` and, if `unique`, `uniqueItems` (the validator scans from
/// the end and names the later item first).
fn string_list(
    c: &mut Checks,
    obj: &Map<String, Value>,
    key: &str,
    max_items: usize,
    unique: bool,
) -> Vec<(usize, String)> {
    match obj.get(key) {
        None => vec![],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => out.push((i, s.to_string())),
                    None => c.fail(format!("data.{key}[{i}] should be string")),
                }
            }
            if items.len() > max_items {
                c.fail(format!(
                    "data.{key} should NOT have more than {max_items} items"
                ));
            }
            let repeated = unique
                .then(|| repeated_item(out.iter().map(|(i, s)| (*i, s.as_str()))))
                .flatten();
            if let Some((later, i)) = repeated {
                c.fail(format!(
                    "data.{key} should NOT have duplicate items (items ## {later} and {i} are identical)"
                ));
            }
            out
        }
        Some(_) => {
            c.fail(format!("data.{key} should be array"));
            vec![]
        }
    }
}

fn date(c: &mut Checks, obj: &Map<String, Value>, key: &str, required: bool) -> Option<Millis> {
    let s = c.string(obj, key, required)?;
    let t = Millis::parse_rfc3339(s);
    if t.is_none() {
        c.fail(format!("data.{key} should match format \"date-time\""));
    }
    t
}

/// Parses and checks a createTask body; fills defaults; reconciles the queue-id forms.
pub fn parse_task_definition(body: &Value, task_id: TaskId) -> Result<TaskDefinition, ApiError> {
    let mut c = Checks::default();
    let Some(obj) = body.as_object() else {
        return Err(ApiError::validation(
            CREATE_TASK_SCHEMA,
            &["data should be object".into()],
        ));
    };
    for key in obj.keys() {
        if !CREATE_TASK_KEYS.contains(&key.as_str()) {
            c.fail(format!(
                "data should NOT have additional properties: {}",
                Value::from(key.as_str())
            ));
        }
    }
    let tq = c.string(obj, "taskQueueId", false);
    let prov = c.string(obj, "provisionerId", false);
    let wt = c.string(obj, "workerType", false);
    if let Some(p) = prov {
        if !is_ident38(p) {
            c.fail("data.provisionerId should match pattern \"^[a-zA-Z0-9-_]{1,38}$\"".into());
        }
    }
    if let Some(w) = wt {
        if !is_worker_type(w) {
            c.fail(
                "data.workerType should match pattern \"^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$\"".into(),
            );
        }
    }
    if let Some(q) = tq {
        if q.parse::<TaskQueueId>().is_err() {
            c.fail("data.taskQueueId should match pattern \"^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$\"".into());
        }
    }
    let scheduler_id = c
        .string(obj, "schedulerId", false)
        .unwrap_or("-")
        .to_string();
    c.identifier(|| "data.schedulerId".into(), &scheduler_id);
    let project_id = c
        .string(obj, "projectId", false)
        .unwrap_or("none")
        .to_string();
    c.length(|| "data.projectId".into(), &project_id, 1, 500);
    if !project_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
    {
        c.fail("data.projectId should match pattern \"^([a-zA-Z0-9._/-]*)$\"".into());
    }
    let group = match c.string(obj, "taskGroupId", false) {
        None => Some(task_id),
        Some(g) => match g.parse::<Slug>() {
            Ok(g) => Some(g),
            Err(_) => {
                c.fail(format!(
                    "data.taskGroupId should match pattern \"{SLUGID_RE}\""
                ));
                None
            }
        },
    };
    let deps_text = string_list(&mut c, obj, "dependencies", 10000, true);
    let mut dependencies = Vec::new();
    for (i, d) in &deps_text {
        match d.parse::<Slug>() {
            Ok(d) => dependencies.push(d),
            Err(_) => c.fail(format!(
                "data.dependencies[{i}] should match pattern \"{SLUGID_RE}\""
            )),
        }
    }
    let requires = match c.string(obj, "requires", false) {
        None => Requires::AllCompleted,
        Some(r) => Requires::parse(r).unwrap_or_else(|| {
            c.fail("data.requires should be equal to one of the allowed values".into());
            Requires::AllCompleted
        }),
    };
    let routes = string_list(&mut c, obj, "routes", 64, true);
    for (i, r) in &routes {
        c.length(|| format!("data.routes[{i}]"), r, 1, 249);
    }
    let routes: Vec<String> = routes.into_iter().map(|(_, r)| r).collect();
    let priority = match c.string(obj, "priority", false) {
        // upstream still accepts the old default, `normal`, and stores it as `lowest`
        None | Some("normal") => Priority::Lowest,
        Some(p) => Priority::parse(p).unwrap_or_else(|| {
            c.fail("data.priority should be equal to one of the allowed values".into());
            Priority::Lowest
        }),
    };
    // an integer as JSON schema reads one: `3.0` is 3
    let retries = match obj.get("retries") {
        None => 5,
        // every rule it breaks is listed: 50.5 is no integer and above 49
        Some(v) => match v.as_f64() {
            Some(n) => {
                let whole = n.fract() == 0.0;
                if !whole {
                    c.fail("data.retries should be integer".into());
                }
                if n > 49.0 {
                    c.fail("data.retries should be <= 49".into());
                }
                if n < 0.0 {
                    c.fail("data.retries should be >= 0".into());
                }
                if whole && (0.0..=49.0).contains(&n) {
                    n as u32
                } else {
                    0
                }
            }
            None => {
                c.fail("data.retries should be integer".into());
                0
            }
        },
    };
    let created = date(&mut c, obj, "created", true);
    let deadline = date(&mut c, obj, "deadline", true);
    let expires = date(&mut c, obj, "expires", false);
    let scopes = string_list(&mut c, obj, "scopes", usize::MAX, false);
    for (i, scope) in &scopes {
        if !taskledger_core::scopes::is_valid_scope(scope) {
            c.fail(format!(
                "data.scopes[{i}] should match pattern \"^[\\x20-\\x7e]*$\""
            ));
        }
    }
    let scopes: Vec<String> = scopes.into_iter().map(|(_, s)| s).collect();
    let payload = match obj.get("payload") {
        Some(v @ Value::Object(_)) => JsonText(js_text(v)),
        Some(_) => {
            c.fail("data.payload should be object".into());
            JsonText::default()
        }
        None => {
            c.fail("data should have required property 'payload'".into());
            JsonText::default()
        }
    };
    let metadata = match obj.get("metadata") {
        Some(Value::Object(m)) => {
            for key in m.keys() {
                if !["name", "description", "owner", "source"].contains(&key.as_str()) {
                    c.fail(format!(
                        "data.metadata should NOT have additional properties: {}",
                        Value::from(key.as_str())
                    ));
                }
            }
            let mut field = |k: &str, max: usize| {
                let v = c.string_in(m, "data.metadata", k, true);
                // JSON Schema counts characters, not bytes
                if let Some(v) = v {
                    c.length(|| format!("data.metadata.{k}"), v, 0, max);
                }
                v.map(str::to_string)
            };
            let (name, description, owner, source) = (
                field("name", 255),
                field("description", 32768),
                field("owner", 255),
                field("source", 4096),
            );
            // a pattern and a format apply to strings only: a source of another type has its
            // type error
            let src_ok = source.as_deref().is_none_or(|src| {
                ["http://", "https://", "ssh://", "git@"]
                    .iter()
                    .any(|p| src.starts_with(p))
            });
            let src_uri = source.as_deref().is_none_or(is_uri);
            let md = Metadata {
                name: name.unwrap_or_default(),
                description: description.unwrap_or_default(),
                owner: owner.unwrap_or_default(),
                source: source.unwrap_or_default(),
            };
            if !src_ok {
                c.fail(
                    "data.metadata.source should match pattern \"^(https?|ssh)://|^git@\"".into(),
                );
            }
            if !src_uri {
                c.fail("data.metadata.source should match format \"uri\"".into());
            }
            Some(md)
        }
        Some(_) => {
            c.fail("data.metadata should be object".into());
            None
        }
        None => {
            c.fail("data should have required property 'metadata'".into());
            None
        }
    };
    let tags = match obj.get("tags") {
        None => JsonText("{}".into()),
        Some(Value::Object(t)) => {
            for (k, v) in t {
                // a property chosen at run time is named in brackets, as it is
                let path = || format!("data.tags['{k}']");
                match v.as_str() {
                    Some(v) => c.length(path, v, 0, 4096),
                    None => c.fail(format!("{} should be string", path())),
                }
            }
            JsonText(Value::Object(t.clone()).to_string())
        }
        Some(_) => {
            c.fail("data.tags should be object".into());
            JsonText::default()
        }
    };
    let extra = match obj.get("extra") {
        None => JsonText("{}".into()),
        Some(v @ Value::Object(_)) => JsonText(js_text(v)),
        Some(_) => {
            c.fail("data.extra should be object".into());
            JsonText::default()
        }
    };
    c.finish(CREATE_TASK_SCHEMA)?;

    let task_queue_id = match (tq, prov, wt) {
        (Some(q), Some(p), Some(w)) if q != format!("{p}/{w}") => {
            return Err(ApiError::input(
                "taskQueueId must match \"provisionerId/workerType\"",
            ))
        }
        (Some(q), _, _) => q.parse::<TaskQueueId>().ok(),
        (None, Some(p), Some(w)) => TaskQueueId::new(p, w).ok(),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::input(
            "at least a provisionerId and a workerType or a taskQueueId must be provided",
        )
    })?;
    let (Some(created), Some(deadline), Some(metadata), Some(task_group_id)) =
        (created, deadline, metadata, group)
    else {
        return Err(ApiError::validation(
            CREATE_TASK_SCHEMA,
            &["data is incomplete".into()],
        ));
    };
    Ok(TaskDefinition {
        task_queue_id,
        scheduler_id,
        project_id,
        task_group_id,
        dependencies,
        requires,
        routes,
        priority,
        retries,
        created,
        deadline,
        expires: expires.unwrap_or_else(|| deadline.plus_one_year()),
        scopes,
        payload,
        metadata,
        tags,
        extra,
    })
}

/// The JSON text of a payload or `extra` as upstream keeps it. JavaScript has one kind of
/// number, so `1.0` parses to `1`: upstream hands it back as `1` and takes `{"n": 1.0}` and
/// `{"n": 1}` for the same definition. Integral floats up to 2^53, where JavaScript and an
/// integer print alike, become integers here too. Other floats are written in serde_json's
/// shortest form (`2.50` as `2.5`, as JavaScript does too); integral ones past 2^53 keep the
/// exponent form (`1e16`), where JavaScript writes every digit.
fn js_text(v: &Value) -> String {
    if has_integral_float(v) {
        let mut v = v.clone();
        integral_floats_to_integers(&mut v);
        v.to_string()
    } else {
        v.to_string()
    }
}

/// 2^53: beyond it JavaScript's numbers skip integers.
const JS_EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;

fn integral_float(n: &serde_json::Number) -> Option<i64> {
    let f = n.as_f64().filter(|_| n.is_f64())?;
    // exact: the value has no fraction and lies within i64
    (f.fract() == 0.0 && f.abs() <= JS_EXACT_INTEGERS).then_some(f as i64)
}

fn has_integral_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => integral_float(n).is_some(),
        Value::Array(items) => items.iter().any(has_integral_float),
        Value::Object(fields) => fields.values().any(has_integral_float),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(i) = integral_float(n) {
                *v = Value::from(i);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// JSON schema's `uri` format (RFC 3986): a scheme (a letter, then letters, digits, `+`, `-`
/// or `.`) and a colon, then only the characters a URI may hold, with `%` starting a
/// two-digit hex escape. No spaces, quotes, angle brackets, braces or non-ASCII text.
pub(crate) fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return false;
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let escaped = bytes.get(i + 1..i + 3);
                if !escaped.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
