//! Job variables: merging the deployment's and the flow run's (Prefect's
//! `resolve_for_flow_run`), expanding dotted keys (`env.FOO`), defaults from the
//! work pool's variable schema, and checking values against that schema (type,
//! `enum`, `minimum`/`maximum`, `additionalProperties`).

use serde_json::{Map, Value};

use crate::error::ManifestError;

fn variable_error(field: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::JobVariable {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn as_variables<'v>(
    value: &'v Value,
    field: &str,
) -> Result<Option<&'v Map<String, Value>>, ManifestError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(object) => Ok(Some(object)),
        other => Err(variable_error(
            field,
            format!(
                "job variables must be an object, got {}",
                json_type_name(other)
            ),
        )),
    }
}

/// The deployment's job variables overlaid by the flow run's; `env` is merged
/// key by key when the deployment's `env` is an object.
pub fn merge_deployment_and_run(
    deployment: &Value,
    flow_run: &Value,
) -> Result<Map<String, Value>, ManifestError> {
    let mut merged = as_variables(deployment, "job_variables")?
        .cloned()
        .unwrap_or_default();
    let Some(run) = as_variables(flow_run, "job_variables")? else {
        return Ok(merged);
    };
    let mut run = run.clone();
    if let Some(Value::Object(deployment_env)) = merged.get_mut("env") {
        match run.shift_remove("env") {
            None => {}
            Some(Value::Object(run_env)) => {
                for (name, value) in run_env {
                    deployment_env.insert(name, value);
                }
            }
            Some(other) => {
                return Err(variable_error(
                    "job_variables.env",
                    format!(
                        "the flow run's env must be an object of variable name to value, got {}",
                        json_type_name(&other)
                    ),
                ))
            }
        }
    }
    for (key, value) in run {
        merged.insert(key, value);
    }
    Ok(merged)
}

/// Expands dotted keys (`"env.FOO": "x"` -> `{"env": {"FOO": "x"}}`); nested
/// keys are then deep-merged on top, so they win over dotted ones.
pub fn expand_dotted_keys(
    values: &Map<String, Value>,
) -> Result<Map<String, Value>, ManifestError> {
    let mut expanded = Map::new();
    for (key, value) in values.iter().filter(|(key, _)| key.contains('.')) {
        let path = key.replace('[', ".").replace(']', "");
        let parts: Vec<&str> = path.split('.').collect();
        set_in_object(&mut expanded, &parts, value.clone())
            .map_err(|reason| variable_error(&format!("job_variables.{key}"), reason))?;
    }
    for (key, value) in values.iter().filter(|(key, _)| !key.contains('.')) {
        match (expanded.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(nested)) => {
                deep_merge(existing, nested);
            }
            _ => {
                expanded.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(expanded)
}

fn set_in_object(
    target: &mut Map<String, Value>,
    parts: &[&str],
    value: Value,
) -> Result<(), String> {
    let (last, parents) = parts.split_last().expect("split always yields a part");
    let mut current = target;
    for part in parents {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        current = match entry {
            Value::Object(object) => object,
            _ => return Err(format!("`{part}` is set both as a value and as an object")),
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// Prefect's `deep_merge`: `overlay` wins; objects on both sides merge recursively.
pub fn deep_merge(base: &mut Map<String, Value>, overlay: &Map<String, Value>) {
    for (key, value) in overlay {
        match (base.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(nested)) => deep_merge(existing, nested),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Non-null `default`s of the variable schema's properties.
pub fn schema_defaults(properties: &Map<String, Value>) -> Map<String, Value> {
    properties
        .iter()
        .filter_map(|(name, schema)| {
            schema
                .get("default")
                .filter(|default| !default.is_null())
                .map(|default| (name.clone(), default.clone()))
        })
        .collect()
}

/// JSON type names as JSON Schema spells them.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn matches_type(value: &Value, type_name: &str) -> bool {
    match type_name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

/// The types a schema allows; `None` when it does not say (or uses `$ref`).
fn allowed_types(schema: &Value) -> Option<Vec<String>> {
    match schema.get("type") {
        Some(Value::String(name)) => return Some(vec![name.clone()]),
        Some(Value::Array(names)) => {
            return Some(
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect(),
            )
        }
        _ => {}
    }
    let alternatives = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)?;
    let mut types = Vec::new();
    for alternative in alternatives {
        types.extend(allowed_types(alternative)?);
    }
    Some(types)
}

fn describe_types(types: &[String]) -> String {
    let words: Vec<String> = types
        .iter()
        .map(|name| match name.as_str() {
            "integer" => "an integer".to_string(),
            "object" => "an object".to_string(),
            "array" => "a list".to_string(),
            "null" => "null".to_string(),
            other => format!("a {other}"),
        })
        .collect();
    words.join(" or ")
}

fn describe_value(value: &Value) -> String {
    let text = value.to_string();
    let short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        format!("{} {short}...", json_type_name(value))
    } else {
        format!("{} {short}", json_type_name(value))
    }
}

/// Checks `value` against `schema`; `field` names it in errors.
fn check_value(field: &str, value: &Value, schema: &Value) -> Result<(), ManifestError> {
    if let Some(types) = allowed_types(schema) {
        if !types.iter().any(|name| matches_type(value, name)) {
            return Err(variable_error(
                field,
                format!(
                    "must be {}, got {}",
                    describe_types(&types),
                    describe_value(value)
                ),
            ));
        }
    }
    if value.is_null() {
        return Ok(());
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let listed: Vec<String> = options.iter().map(Value::to_string).collect();
            return Err(variable_error(
                field,
                format!("must be one of {}, got {value}", listed.join(", ")),
            ));
        }
    }
    if let Some(number) = value.as_f64() {
        if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
            if number < minimum {
                return Err(variable_error(
                    field,
                    format!("must be at least {minimum}, got {value}"),
                ));
            }
        }
        if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64) {
            if number > maximum {
                return Err(variable_error(
                    field,
                    format!("must be at most {maximum}, got {value}"),
                ));
            }
        }
    }
    if let (Value::Object(entries), Some(entry_schema)) =
        (value, schema.get("additionalProperties"))
    {
        if entry_schema.is_object() {
            for (key, entry) in entries {
                check_value(&format!("{field}.{key}"), entry, entry_schema)?;
            }
        }
    }
    Ok(())
}

/// Checks each job variable that the work pool's schema describes. A `null`
/// value is always accepted: it means "unset". So is a `command` given as a list
/// of strings (used as the container's `args` as is), although the schema only
/// allows a string.
pub fn check_against_schema(
    values: &Map<String, Value>,
    properties: &Map<String, Value>,
) -> Result<(), ManifestError> {
    for (name, value) in values {
        if value.is_null() {
            continue;
        }
        if name == "command"
            && value
                .as_array()
                .is_some_and(|words| words.iter().all(Value::is_string))
        {
            continue;
        }
        if let Some(schema) = properties.get(name) {
            check_value(&format!("job_variables.{name}"), value, schema)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn flow_run_variables_override_and_env_merges_key_wise() {
        let merged = merge_deployment_and_run(
            &json!({"image": "a:1", "env": {"A": "1", "B": "2"}}),
            &json!({"image": "b:2", "env": {"B": "3", "C": "4"}}),
        )
        .expect("merged");
        assert_eq!(
            Value::Object(merged),
            json!({"image": "b:2", "env": {"A": "1", "B": "3", "C": "4"}})
        );
    }

    #[test]
    fn null_job_variables_mean_none() {
        let merged = merge_deployment_and_run(&Value::Null, &json!({"x": 1})).expect("merged");
        assert_eq!(Value::Object(merged), json!({"x": 1}));
        let err = merge_deployment_and_run(&json!([1]), &Value::Null).expect_err("not an object");
        assert_eq!(err.field(), "job_variables");
    }

    #[test]
    fn a_non_object_flow_run_env_is_rejected() {
        let err = merge_deployment_and_run(&json!({"env": {"A": "1"}}), &json!({"env": "A=1"}))
            .expect_err("env must be an object");
        assert_eq!(err.field(), "job_variables.env");
    }

    #[test]
    fn dotted_keys_expand_and_nested_keys_win() {
        let expanded = expand_dotted_keys(&object(json!({
            "env.FOO": "dotted",
            "env.BAR": "dotted",
            "env": {"BAR": "nested", "BAZ": "nested"},
            "image": "x"
        })))
        .expect("expanded");
        assert_eq!(
            Value::Object(expanded.clone()),
            json!({"env": {"FOO": "dotted", "BAR": "nested", "BAZ": "nested"}, "image": "x"})
        );
        // Dotted keys come first, as in Prefect.
        let env_keys: Vec<&String> = expanded["env"].as_object().expect("env").keys().collect();
        assert_eq!(env_keys, ["FOO", "BAR", "BAZ"]);
    }

    #[test]
    fn dotted_key_through_a_value_is_rejected() {
        // Python overwrites `env.A` when it comes after `env.A.B`, and fails when
        // `env.A.B` has to go through the string set by `env.A`.
        let overwritten = expand_dotted_keys(&object(json!({"env.A.B": "x", "env.A": "y"})))
            .expect("later dotted key overwrites");
        assert_eq!(Value::Object(overwritten), json!({"env": {"A": "y"}}));
        let err = expand_dotted_keys(&object(json!({"env.A": "y", "env.A.B": "x"})))
            .expect_err("conflict");
        assert!(err.field().starts_with("job_variables.env.A"), "{err}");
    }

    #[test]
    fn defaults_skip_nulls() {
        let defaults = schema_defaults(&object(json!({
            "namespace": {"default": "default"},
            "image": {"default": null},
            "env": {"type": "object"}
        })));
        assert_eq!(Value::Object(defaults), json!({"namespace": "default"}));
    }

    #[test]
    fn schema_checks_name_the_variable() {
        let properties = object(json!({
            "backoff_limit": {"type": "integer", "minimum": 0},
            "command": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "image_pull_policy": {"type": "string", "enum": ["IfNotPresent", "Always", "Never"]},
            "env": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "cluster_config": {"anyOf": [{"$ref": "#/definitions/X"}, {"type": "null"}]}
        }));
        let cases = [
            (
                json!({"backoff_limit": "2"}),
                "job_variables.backoff_limit",
                "must be an integer",
            ),
            (
                json!({"backoff_limit": 1.5}),
                "job_variables.backoff_limit",
                "must be an integer",
            ),
            (
                json!({"backoff_limit": -1}),
                "job_variables.backoff_limit",
                "at least 0",
            ),
            (
                json!({"command": 3}),
                "job_variables.command",
                "a string or null",
            ),
            (
                json!({"image_pull_policy": "Sometimes"}),
                "job_variables.image_pull_policy",
                "one of",
            ),
            (
                json!({"env": ["A=1"]}),
                "job_variables.env",
                "must be an object",
            ),
            (
                json!({"env": {"A": {"x": 1}}}),
                "job_variables.env.A",
                "a string or null",
            ),
        ];
        for (values, field, reason) in cases {
            let err = check_against_schema(&object(values.clone()), &properties).expect_err(field);
            assert_eq!(err.field(), field, "{values}");
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert!(check_against_schema(
            &object(json!({"backoff_limit": 3, "env": {"A": null}, "cluster_config": {"a": 1}, "unknown": [1]})),
            &properties
        )
        .is_ok());
    }
}
