use super::*;
use serde_json::json;

#[test]
fn integral_floats_read_back_as_javascript_prints_them() {
    let body: Value = serde_json::from_str(FULL).unwrap();
    let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
    let mut floats = body.clone();
    floats["payload"]["n"] = serde_json::from_str("[1.0, -0.0, 2.5, 1e3, 1e300]").unwrap();
    floats["extra"]["n"] = serde_json::from_str("4.0").unwrap();
    let def = parse_task_definition(&floats, task_id).unwrap();
    let back = serde_json::to_value(TaskJson(&def, def.priority)).unwrap();
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

/// The validator's texts, paths and indices for what the create-task schema refuses.
#[test]
fn schema_errors_read_as_the_validator_writes_them() {
    let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
    let refused = |change: Value| -> String {
        let mut body: Value = serde_json::from_str(FULL).unwrap();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        match parse_task_definition(&body, task_id) {
            Ok(_) => panic!("{change} was taken"),
            Err(e) => e.message,
        }
    };
    for (change, says) in [
        (json!({ "retries": 50 }), "data.retries should be <= 49"),
        (json!({ "retries": 1.5 }), "data.retries should be integer"),
        (
            json!({ "schedulerId": "" }),
            "data.schedulerId should NOT be shorter than 1 characters",
        ),
        (
            json!({ "projectId": "p".repeat(501) }),
            "data.projectId should NOT be longer than 500 characters",
        ),
        (
            json!({ "taskGroupId": "x" }),
            "data.taskGroupId should match pattern \"^[A-Za-z0-9_-]{8}",
        ),
        (
            json!({ "dependencies": ["fN1SbArXTPSVFNUvaOlinQ", "x"] }),
            "data.dependencies[1] should match pattern",
        ),
        (
            json!({ "routes": ["a", "b", "a"] }),
            "data.routes should NOT have duplicate items (items ## 2 and 0 are identical)",
        ),
        (
            json!({ "routes": ["ok", ""] }),
            "data.routes[1] should NOT be shorter than 1 characters",
        ),
        (
            json!({ "scopes": ["ok", "tab\t"] }),
            "data.scopes[1] should match pattern \"^[\\x20-\\x7e]*$\"",
        ),
        (
            json!({ "tags": { "it's": 5 } }),
            "data.tags['it's'] should be string",
        ),
        (
            json!({ "metadata": { "name": 5 } }),
            "data.metadata.name should be string",
        ),
        (
            json!({ "metadata": { "name": "n" } }),
            "data.metadata should have required property 'owner'",
        ),
    ] {
        let message = refused(change.clone());
        assert!(message.contains(says), "{change}: {message}");
    }
    // an integral float is an integer
    let mut body: Value = serde_json::from_str(FULL).unwrap();
    body["retries"] = json!(3.0);
    assert_eq!(parse_task_definition(&body, task_id).unwrap().retries, 3);
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
    assert_eq!(
        serde_json::to_string(&TaskJson(&def, def.priority)).unwrap(),
        FULL
    );
    // the `Value` form, for replies built with `json!`, holds the same
    assert_eq!(
        serde_json::to_value(TaskJson(&def, def.priority)).unwrap(),
        body
    );
}

#[test]
fn stored_json_that_does_not_parse_reads_as_null() {
    let body: Value = serde_json::from_str(FULL).unwrap();
    let task_id: TaskId = "dF0sBQCkRCKB1n4EJM2kpw".parse().unwrap();
    let mut def = parse_task_definition(&body, task_id).unwrap();
    def.payload = JsonText("{\"cut".into());
    let v: Value =
        serde_json::from_str(&serde_json::to_string(&TaskJson(&def, def.priority)).unwrap())
            .unwrap();
    assert_eq!(v["payload"], Value::Null);
    assert_eq!(
        serde_json::to_value(TaskJson(&def, def.priority)).unwrap()["payload"],
        Value::Null
    );
}
