//! `{{ placeholder }}` substitution in a base job template, reproducing Prefect's
//! `prefect.utilities.templating.apply_values`:
//!
//! - a string that is exactly one placeholder is replaced by the typed value
//!   (object, list, number, boolean, string);
//! - a missing value removes the key (or list item); unlike Prefect, a value that
//!   is `null` removes it too (Prefect writes a JSON `null`, which Kubernetes reads
//!   as "unset" anyway);
//! - placeholders embedded in a longer string are interpolated with Python's
//!   `str()` of the value (`""` when missing), in a single pass;
//! - `{{ prefect.blocks.* }}`, `{{ prefect.variables.* }}` and `{{ $ENV }}`
//!   placeholders are not supported and reported as errors, as are block document
//!   references (`{"$ref": {...}}`).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::ManifestError;
use crate::python_text::python_str;

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\{\{\s*([\w\.\-\[\]$]+)\s*\}\})").expect("valid placeholder regex")
});

const BLOCK_PREFIX: &str = "prefect.blocks.";
const VARIABLE_PREFIX: &str = "prefect.variables.";
const ENV_VAR_PREFIX: &str = "$";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlaceholderKind {
    Standard,
    BlockDocument,
    Variable,
    ProcessEnv,
}

fn placeholder_kind(name: &str) -> PlaceholderKind {
    if name.starts_with(BLOCK_PREFIX) {
        PlaceholderKind::BlockDocument
    } else if name.starts_with(VARIABLE_PREFIX) {
        PlaceholderKind::Variable
    } else if name.starts_with(ENV_VAR_PREFIX) {
        PlaceholderKind::ProcessEnv
    } else {
        PlaceholderKind::Standard
    }
}

/// Distinct placeholders of a string as `(full match, name)`, in order of first use.
fn placeholders(text: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for caps in PLACEHOLDER.captures_iter(text) {
        let full = caps[1].to_string();
        if !found.iter().any(|(existing, _)| *existing == full) {
            found.push((full, caps[2].to_string()));
        }
    }
    found
}

/// The first path segment of every placeholder in `template` (`env` for
/// `{{ env.FOO }}`): the variables the template uses.
pub fn referenced_variables(template: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    collect_referenced(template, &mut names);
    names
}

fn collect_referenced(template: &Value, names: &mut Vec<String>) {
    match template {
        Value::String(text) => {
            for (_, name) in placeholders(text) {
                let root = name
                    .split(['.', '['])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if !names.contains(&root) {
                    names.push(root);
                }
            }
        }
        Value::Object(object) => object
            .values()
            .for_each(|value| collect_referenced(value, names)),
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_referenced(item, names)),
        _ => {}
    }
}

/// Applies `values` to `template`. `None` means "not set": the caller drops the key.
pub fn apply_values(template: &Value, values: &Map<String, Value>) -> Option<Value> {
    match template {
        Value::String(text) => apply_to_string(text, values),
        Value::Object(object) => {
            let mut rendered = Map::new();
            for (key, value) in object {
                if let Some(value) = apply_values(value, values) {
                    rendered.insert(key.clone(), value);
                }
            }
            Some(Value::Object(rendered))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|item| apply_values(item, values))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

fn apply_to_string(text: &str, values: &Map<String, Value>) -> Option<Value> {
    let found = placeholders(text);
    if found.is_empty() {
        return Some(Value::String(text.to_string()));
    }
    if let [(full, name)] = found.as_slice() {
        if full == text && placeholder_kind(name) == PlaceholderKind::Standard {
            return match lookup_path(values, name) {
                Some(Value::Null) | None => None,
                Some(value) => Some(value),
            };
        }
    }
    let rendered = PLACEHOLDER.replace_all(text, |caps: &regex::Captures<'_>| {
        let full = &caps[1];
        let name = &caps[2];
        match placeholder_kind(name) {
            PlaceholderKind::Standard => lookup_path(values, name)
                .map(|value| python_str(&value))
                .unwrap_or_default(),
            // Left untouched; reported by `find_unsupported_references`.
            _ => full.to_string(),
        }
    });
    Some(Value::String(rendered.into_owned()))
}

/// Prefect's `get_from_dict`: `a.b[0].c` style paths through objects and lists.
pub fn lookup_path(values: &Map<String, Value>, path: &str) -> Option<Value> {
    let normalised = path.replace('[', ".").replace(']', "");
    let mut keys = normalised.split('.');
    let first = keys.next()?;
    let mut current = values.get(first)?.clone();
    for key in keys {
        current = match current {
            Value::Object(object) => object.get(key)?.clone(),
            Value::Array(items) => {
                let index = python_index(key, items.len())?;
                items.get(index)?.clone()
            }
            Value::String(text) => {
                let chars: Vec<char> = text.chars().collect();
                let index = python_index(key, chars.len())?;
                Value::String(chars.get(index)?.to_string())
            }
            _ => return None,
        };
    }
    Some(current)
}

/// A Python list index (`int(key)`, negative counts from the end).
fn python_index(key: &str, len: usize) -> Option<usize> {
    let index: i64 = key.trim().replace('_', "").parse().ok()?;
    if index < 0 {
        let from_end = usize::try_from(index.unsigned_abs()).ok()?;
        len.checked_sub(from_end)
    } else {
        usize::try_from(index).ok()
    }
}

/// Reports the first placeholder or block reference that needs the Prefect API or
/// the worker's process environment to resolve.
pub fn find_unsupported_references(value: &Value, path: &str) -> Result<(), ManifestError> {
    match value {
        Value::String(text) => {
            for (full, name) in placeholders(text) {
                let what = match placeholder_kind(&name) {
                    PlaceholderKind::Standard => continue,
                    PlaceholderKind::BlockDocument => "block document",
                    PlaceholderKind::Variable => "Prefect variable",
                    PlaceholderKind::ProcessEnv => "worker environment variable",
                };
                return Err(ManifestError::UnsupportedPlaceholder {
                    field: path.to_string(),
                    placeholder: full,
                    kind: what,
                });
            }
            Ok(())
        }
        Value::Object(object) => {
            if object.contains_key("$ref") {
                return Err(ManifestError::UnsupportedPlaceholder {
                    field: path.to_string(),
                    placeholder: "{\"$ref\": ...}".to_string(),
                    kind: "block document reference",
                });
            }
            for (key, child) in object {
                find_unsupported_references(child, &join_path(path, key))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                find_unsupported_references(child, &format!("{path}[{index}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `parent.key`, or `key` at the top.
pub fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn whole_placeholder_takes_the_typed_value() {
        let vals = values(json!({"n": 3, "list": [1, 2], "obj": {"a": "b"}, "flag": true}));
        let template =
            json!({"a": "{{ n }}", "b": "{{list}}", "c": "{{ obj }}", "d": "{{ flag }}"});
        assert_eq!(
            apply_values(&template, &vals),
            Some(json!({"a": 3, "b": [1, 2], "c": {"a": "b"}, "d": true}))
        );
    }

    #[test]
    fn missing_or_null_whole_placeholder_removes_the_key_and_list_item() {
        let vals = values(json!({"gone": null}));
        let template = json!({"a": "{{ missing }}", "b": "{{ gone }}", "c": ["{{ missing }}", 1], "d": "kept"});
        assert_eq!(
            apply_values(&template, &vals),
            Some(json!({"c": [1], "d": "kept"}))
        );
    }

    #[test]
    fn embedded_placeholders_interpolate_python_strings() {
        let vals = values(json!({"name": "run", "n": 2, "flag": false, "none": null}));
        let template = json!("{{ name }}-{{ n }}-{{ flag }}-{{ none }}-{{ missing }}-");
        assert_eq!(
            apply_values(&template, &vals),
            Some(json!("run-2-False-None--"))
        );
    }

    #[test]
    fn inserted_values_are_not_rendered_again() {
        let vals = values(json!({"a": "{{ b }}", "b": "x"}));
        assert_eq!(
            apply_values(&json!("pre {{ a }}"), &vals),
            Some(json!("pre {{ b }}"))
        );
    }

    #[test]
    fn referenced_variables_are_the_placeholder_roots() {
        let template = json!({"a": "{{ image }}", "b": ["x {{ env.FOO }} {{ name }}"], "c": {"d": "{{ cpu_limit }}"}, "e": 1});
        assert_eq!(
            referenced_variables(&template),
            ["image", "env", "name", "cpu_limit"]
        );
    }

    #[test]
    fn paths_reach_into_objects_and_lists() {
        let vals = values(json!({"a": {"b": [10, {"c": "deep"}]}}));
        assert_eq!(lookup_path(&vals, "a.b[1].c"), Some(json!("deep")));
        assert_eq!(lookup_path(&vals, "a.b.0"), Some(json!(10)));
        assert_eq!(lookup_path(&vals, "a.b[-1].c"), Some(json!("deep")));
        assert_eq!(lookup_path(&vals, "a.x"), None);
    }

    #[test]
    fn block_and_variable_placeholders_are_reported() {
        let vals = values(json!({}));
        let rendered =
            apply_values(&json!({"x": "{{ prefect.blocks.secret.db }}"}), &vals).expect("rendered");
        let err =
            find_unsupported_references(&rendered, "job_configuration").expect_err("unsupported");
        assert_eq!(err.field(), "job_configuration.x");
        assert!(err.to_string().contains("not supported"), "{err}");

        let err = find_unsupported_references(
            &json!({"env": {"A": "x {{ prefect.variables.token }}"}}),
            "",
        )
        .expect_err("unsupported");
        assert_eq!(err.field(), "env.A");

        let err =
            find_unsupported_references(&json!({"c": {"$ref": {"block_document_id": "1"}}}), "")
                .expect_err("unsupported");
        assert_eq!(err.field(), "c");
    }
}
