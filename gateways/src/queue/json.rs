//! The queue's JSON shapes: task definitions in and out, status, artifacts, and the
//! create-task-request checks that Taskcluster's JSON schema performs.

use crate::error::ApiError;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use taskledger_core::ids::{is_ident38, is_worker_type, Slug, TaskId, TaskQueueId};
use taskledger_core::queue::{JsonText, Metadata, Priority, Requires, TaskDefinition};
use taskledger_core::time::Millis;

/// A task definition as the API returns it (getTask, claimWork, ...), written straight from
/// the definition. Keys come in sorted order, as a `serde_json::Value` object writes them.
pub struct TaskJson<'a>(pub &'a TaskDefinition);

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
        m.serialize_entry("priority", def.priority.as_str())?;
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
pub fn task_json(def: &TaskDefinition) -> Value {
    serde_json::to_value(TaskJson(def)).unwrap_or(Value::Null)
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
        match obj.get(key) {
            None if required => {
                self.fail(format!("data should have required property '{key}'"));
                None
            }
            None => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.fail(format!("data.{key} should be string"));
                None
            }
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

fn string_list(
    c: &mut Checks,
    obj: &Map<String, Value>,
    key: &str,
    max_items: usize,
    unique: bool,
) -> Vec<String> {
    match obj.get(key) {
        None => vec![],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => c.fail(format!("data.{key}[{i}] should be string")),
                }
            }
            if out.len() > max_items {
                c.fail(format!(
                    "data.{key} should NOT have more than {max_items} items"
                ));
            }
            if unique {
                let mut sorted = out.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != out.len() {
                    c.fail(format!("data.{key} should NOT have duplicate items"));
                }
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
    if !is_ident38(&scheduler_id) {
        c.fail("data.schedulerId should match pattern \"^([a-zA-Z0-9-_]*)$\"".into());
    }
    let project_id = c
        .string(obj, "projectId", false)
        .unwrap_or("none")
        .to_string();
    if project_id.is_empty()
        || project_id.len() > 500
        || !project_id
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
                c.fail("data.taskGroupId should match the slugid pattern".into());
                None
            }
        },
    };
    let deps_text = string_list(&mut c, obj, "dependencies", 10000, true);
    let mut dependencies = Vec::new();
    for d in &deps_text {
        match d.parse::<Slug>() {
            Ok(d) => dependencies.push(d),
            Err(_) => c.fail(format!(
                "data.dependencies item `{d}` should match the slugid pattern"
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
    if routes
        .iter()
        .any(|r| r.is_empty() || r.chars().count() > 249)
    {
        c.fail("data.routes items should be 1 to 249 characters".into());
    }
    let priority = match c.string(obj, "priority", false) {
        // upstream still accepts the old default, `normal`, and stores it as `lowest`
        None | Some("normal") => Priority::Lowest,
        Some(p) => Priority::parse(p).unwrap_or_else(|| {
            c.fail("data.priority should be equal to one of the allowed values".into());
            Priority::Lowest
        }),
    };
    let retries = match obj.get("retries") {
        None => 5,
        Some(v) => match v.as_u64() {
            Some(n) if n <= 49 => n as u32,
            _ => {
                c.fail("data.retries should be an integer from 0 to 49".into());
                0
            }
        },
    };
    let created = date(&mut c, obj, "created", true);
    let deadline = date(&mut c, obj, "deadline", true);
    let expires = date(&mut c, obj, "expires", false);
    let scopes = string_list(&mut c, obj, "scopes", usize::MAX, false);
    if scopes
        .iter()
        .any(|s| !taskledger_core::scopes::is_valid_scope(s))
    {
        c.fail("data.scopes items should be printable ASCII".into());
    }
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
                let v = c.string(m, k, true).unwrap_or("").to_string();
                // JSON Schema counts characters, not bytes
                if v.chars().count() > max {
                    c.fail(format!(
                        "data.metadata.{k} should NOT be longer than {max} characters"
                    ));
                }
                v
            };
            let md = Metadata {
                name: field("name", 255),
                description: field("description", 32768),
                owner: field("owner", 255),
                source: field("source", 4096),
            };
            let src_ok = ["http://", "https://", "ssh://", "git@"]
                .iter()
                .any(|p| md.source.starts_with(p));
            if m.contains_key("source") && !src_ok {
                c.fail(
                    "data.metadata.source should match pattern \"^(https?|ssh)://|^git@\"".into(),
                );
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
            if t.values()
                .any(|v| v.as_str().is_none_or(|s| s.chars().count() > 4096))
            {
                c.fail("data.tags values should be strings of at most 4096 characters".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_read_back_as_javascript_prints_them() {
        let body: Value = serde_json::from_str(FULL).unwrap();
        let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
        let mut floats = body.clone();
        floats["payload"]["n"] = serde_json::from_str("[1.0, -0.0, 2.5, 1e3, 1e300]").unwrap();
        floats["extra"]["n"] = serde_json::from_str("4.0").unwrap();
        let def = parse_task_definition(&floats, task_id).unwrap();
        let back = task_json(&def);
        assert_eq!(back["payload"]["n"].to_string(), "[1,0,2.5,1000,1e+300]");
        assert_eq!(back["extra"]["n"].to_string(), "4");
        // the same definition as the one written with integers
        let mut integers = body;
        integers["payload"]["n"] = serde_json::from_str("[1, 0, 2.5, 1000, 1e300]").unwrap();
        integers["extra"]["n"] = serde_json::from_str("4").unwrap();
        assert_eq!(parse_task_definition(&integers, task_id).unwrap(), def);
    }

    #[test]
    fn the_old_default_priority_normal_is_stored_as_lowest() {
        let mut body: Value = serde_json::from_str(FULL).unwrap();
        let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
        body["priority"] = Value::from("normal");
        let def = parse_task_definition(&body, task_id).unwrap();
        assert_eq!(def.priority, Priority::Lowest);
        body["priority"] = Value::from("urgent");
        assert!(parse_task_definition(&body, task_id).is_err());
    }

    /// A definition with every field set, as the API writes it: compact, keys sorted.
    const FULL: &str = concat!(
        r#"{"created":"2026-12-06T10:00:00.000Z","deadline":"2026-12-07T10:00:00.000Z","#,
        r#""dependencies":["fN1SbArXTPSVFNUvaOlinQ","JVOrbSoLQESpYJ2J3OF2MQ"],"#,
        r#""expires":"2027-12-06T10:00:00.000Z","extra":{"a":[1,2.5,-3e-7,null,true]},"#,
        r#""metadata":{"description":"d \"quoted\"\n","name":"n","owner":"o@example.com","#,
        r#""source":"https://example.com/s"},"payload":{"command":["echo","hé"],"env":{"B":"2","#,
        r#""a":"1"},"max":18446744073709551615},"priority":"high","projectId":"proj","#,
        r#""provisionerId":"prov","requires":"all-resolved","retries":3,"routes":["index.a.b"],"#,
        r#""schedulerId":"sched","scopes":["queue:x","secrets:get:y"],"tags":{"kind":"test"},"#,
        r#""taskGroupId":"dF0sBQCkRCKB1n4EJM2kpw","taskQueueId":"prov/wt","workerType":"wt"}"#,
    );

    #[test]
    fn a_definition_reads_back_byte_for_byte() {
        let body: Value = serde_json::from_str(FULL).unwrap();
        let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
        let def = parse_task_definition(&body, task_id).unwrap();
        assert_eq!(serde_json::to_string(&TaskJson(&def)).unwrap(), FULL);
        // the `Value` form, for replies built with `json!`, holds the same
        assert_eq!(task_json(&def), body);
    }

    #[test]
    fn stored_json_that_does_not_parse_reads_as_null() {
        let body: Value = serde_json::from_str(FULL).unwrap();
        let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
        let mut def = parse_task_definition(&body, task_id).unwrap();
        def.payload = JsonText("{\"cut".into());
        let v: Value =
            serde_json::from_str(&serde_json::to_string(&TaskJson(&def)).unwrap()).unwrap();
        assert_eq!(v["payload"], Value::Null);
        assert_eq!(task_json(&def)["payload"], Value::Null);
    }
}
