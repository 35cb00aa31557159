//! Pool configurations per provider type (`config-static`, `config-null`) and what the rules
//! read from them: the reregistration timeout and the `workerConfig` handed to workers.

use super::ProviderType;
use crate::time::SECOND;
use serde_json::{Map, Value};

/// `lifecycle.reregistrationTimeout` when unset or 0: 96 hours, in seconds.
pub const DEFAULT_REREGISTRATION_TIMEOUT_SECS: i64 = 345_600;
/// The largest allowed `lifecycle.reregistrationTimeout`: 30 days, in seconds.
pub const MAX_REREGISTRATION_TIMEOUT_SECS: i64 = 2_592_000;

/// The schema a provider type's config is checked against (for error messages).
pub fn schema_id(provider: ProviderType) -> &'static str {
    match provider {
        ProviderType::Static => "/schemas/worker-manager/v1/config-static.json#",
        ProviderType::Null => "/schemas/worker-manager/v1/config-null.json#",
    }
}

/// Checks `config` against the provider type's schema; the schema errors otherwise.
pub fn validate(provider: ProviderType, config: &Value) -> Result<(), Vec<String>> {
    let Some(obj) = config.as_object() else {
        return Err(vec!["data must be object".into()]);
    };
    match provider {
        ProviderType::Null => Ok(()),
        ProviderType::Static => {
            let errors = static_errors(obj);
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            }
        }
    }
}

/// `config-static`: `{lifecycle?: {reregistrationTimeout?}, workerConfig?: object}`.
fn static_errors(obj: &Map<String, Value>) -> Vec<String> {
    let mut errors = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "lifecycle" => errors.extend(lifecycle_errors(v)),
            "workerConfig" if !v.is_object() => {
                errors.push("data/workerConfig must be object".into())
            }
            "workerConfig" => {}
            other => errors.push(format!(
                "data must NOT have additional properties: {}",
                serde_json::Value::from(other)
            )),
        }
    }
    errors
}

fn lifecycle_errors(v: &Value) -> Vec<String> {
    let Some(obj) = v.as_object() else {
        return vec!["data/lifecycle must be object".into()];
    };
    let mut errors = Vec::new();
    for (k, v) in obj {
        if k != "reregistrationTimeout" {
            errors.push(format!(
                "data/lifecycle must NOT have additional properties: {}",
                serde_json::Value::from(k.as_str())
            ));
            continue;
        }
        match v.as_i64() {
            Some(n) if (0..=MAX_REREGISTRATION_TIMEOUT_SECS).contains(&n) => {}
            _ => errors.push(format!(
                "data/lifecycle/reregistrationTimeout must be an integer from 0 to \
                 {MAX_REREGISTRATION_TIMEOUT_SECS}"
            )),
        }
    }
    errors
}

fn parse(config: &str) -> Value {
    serde_json::from_str(config).unwrap_or(Value::Null)
}

/// How long registration credentials last for a pool with `config` (JSON text), in ms.
pub fn reregistration_timeout_ms(config: &str) -> i64 {
    let secs = parse(config)
        .pointer("/lifecycle/reregistrationTimeout")
        .and_then(Value::as_i64)
        .filter(|n| (1..=MAX_REREGISTRATION_TIMEOUT_SECS).contains(n))
        .unwrap_or(DEFAULT_REREGISTRATION_TIMEOUT_SECS);
    secs * SECOND
}

/// The `workerConfig` registerWorker hands to the workers of a pool (`{}` when unset).
pub fn worker_config(config: &str) -> Value {
    match parse(config).get("workerConfig") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => Value::Object(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn static_config_shape() {
        let ok = json!({"lifecycle": {"reregistrationTimeout": 3600}, "workerConfig": {"a": 1}});
        assert_eq!(validate(ProviderType::Static, &ok), Ok(()));
        assert_eq!(validate(ProviderType::Static, &json!({})), Ok(()));
        let bad = json!({"minCapacity": 1, "lifecycle": {"reregistrationTimeout": -1}});
        assert_eq!(validate(ProviderType::Static, &bad).unwrap_err().len(), 2);
        assert!(validate(ProviderType::Static, &json!([])).is_err());
        assert!(validate(ProviderType::Static, &json!({"workerConfig": 3})).is_err());
        assert_eq!(
            validate(ProviderType::Null, &json!({"anything": 1})),
            Ok(())
        );
    }

    #[test]
    fn lifecycle_defaults() {
        assert_eq!(reregistration_timeout_ms("{}"), 345_600_000);
        assert_eq!(
            reregistration_timeout_ms(r#"{"lifecycle":{"reregistrationTimeout":0}}"#),
            345_600_000
        );
        assert_eq!(
            reregistration_timeout_ms(r#"{"lifecycle":{"reregistrationTimeout":60}}"#),
            60_000
        );
        assert_eq!(worker_config("{}"), json!({}));
        assert_eq!(
            worker_config(r#"{"workerConfig":{"x":true}}"#),
            json!({"x": true})
        );
    }
}
