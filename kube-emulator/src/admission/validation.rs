//! Field validation a real apiserver enforces on the objects we create: DNS-1123 names, label
//! and annotation syntax, resource quantities, required container fields, Job restart policy.
//! Every problem becomes a [`FieldCause`] naming the field, collected into one 422.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::error::FieldCause;

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").expect("regex")
});
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("regex"));
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([eE][+-]?[0-9]+)|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
        .expect("regex")
});

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Problems with a DNS-1123 label (namespaces, container names); empty when valid.
pub fn dns1123_label_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_string());
    }
    if !DNS1123_LABEL.is_match(value) {
        problems.push(DNS1123_LABEL_MSG.to_string());
    }
    problems
}

/// Problems with a DNS-1123 subdomain (most object names); empty when valid.
pub fn dns1123_subdomain_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 253 {
        problems.push("must be no more than 253 characters".to_string());
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        problems.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    problems
}

/// Problems with a label/annotation key `[prefix/]name`.
pub fn label_key_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_string());
        } else {
            for p in dns1123_subdomain_problems(prefix) {
                problems.push(format!("prefix part {p}"));
            }
        }
    }
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            problems.push("name part must be no more than 63 characters".to_string());
        }
        if !QUALIFIED_NAME.is_match(name) {
            problems.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    problems
}

/// The problem with a label value, if any.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !QUALIFIED_NAME.is_match(value) {
        return Some(LABEL_VALUE_MSG.to_string());
    }
    None
}

/// Whether a string is a syntactically valid resource quantity.
pub fn is_valid_quantity(value: &str) -> bool {
    QUANTITY.is_match(value)
}

/// The decoder error real servers return (HTTP 400) for an unparseable quantity.
pub const QUANTITY_DECODE_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Validate `metadata.name`/`generateName` plus labels and annotations.
pub fn validate_object_meta(
    meta: &Value,
    name_rule: NameRule,
    namespaced: bool,
    causes: &mut Vec<FieldCause>,
) {
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let generate_name = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() && generate_name.is_empty() {
        causes.push(FieldCause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if !name.is_empty() {
        for problem in name_rule.problems(name) {
            causes.push(FieldCause::invalid(
                "metadata.name",
                &Value::String(name.to_string()),
                &problem,
            ));
        }
    }
    if namespaced {
        let namespace = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if namespace.is_empty() {
            causes.push(FieldCause::required("metadata.namespace", ""));
        }
    }
    validate_labels(meta.get("labels"), "metadata.labels", causes);
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        for key in annotations.keys() {
            for problem in label_key_problems(key) {
                causes.push(FieldCause::invalid(
                    "metadata.annotations",
                    &Value::String(key.clone()),
                    &problem,
                ));
            }
        }
    }
}

/// Validate a label map at `path`.
pub fn validate_labels(labels: Option<&Value>, path: &str, causes: &mut Vec<FieldCause>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        for problem in label_key_problems(key) {
            causes.push(FieldCause::invalid(
                path,
                &Value::String(key.clone()),
                &problem,
            ));
        }
        let text = value.as_str().unwrap_or_default();
        if let Some(problem) = label_value_problem(text) {
            causes.push(FieldCause::invalid(
                path,
                &Value::String(text.to_string()),
                &problem,
            ));
        }
    }
}

/// Which name syntax an object kind uses.
#[derive(Debug, Clone, Copy)]
pub enum NameRule {
    /// RFC 1123 subdomain (pods, jobs, secrets, ...).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// Any non-empty path segment (RBAC objects, events use subdomain-ish names with ':' allowed).
    PathSegment,
}

impl NameRule {
    fn problems(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain_problems(name),
            NameRule::Label => dns1123_label_problems(name),
            NameRule::PathSegment => {
                if name == "." || name == ".." {
                    vec![format!("may not be '{name}'")]
                } else if name.contains('/') || name.contains('%') {
                    vec![format!(
                        "may not contain '{}'",
                        if name.contains('/') { "/" } else { "%" }
                    )]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

/// Validate a pod spec found at `path` (e.g. `spec` or `spec.template.spec`).
pub fn validate_pod_spec(spec: &Value, path: &str, causes: &mut Vec<FieldCause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(FieldCause::required(format!("{path}.containers"), "")),
        Some(list) if list.is_empty() => {
            causes.push(FieldCause::required(format!("{path}.containers"), ""))
        }
        Some(list) => validate_containers(list, &format!("{path}.containers"), causes),
    }
    if let Some(list) = spec.get("initContainers").and_then(Value::as_array) {
        validate_containers(list, &format!("{path}.initContainers"), causes);
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&policy) {
            causes.push(FieldCause::not_supported(
                format!("{path}.restartPolicy"),
                &Value::String(policy.to_string()),
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
    if let Some(grace) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        if grace < 0 {
            causes.push(FieldCause::invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                &Value::from(grace),
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn validate_containers(list: &[Value], path: &str, causes: &mut Vec<FieldCause>) {
    let mut seen = Vec::new();
    for (i, container) in list.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            causes.push(FieldCause::required(format!("{here}.name"), ""));
        } else {
            for problem in dns1123_label_problems(name) {
                causes.push(FieldCause::invalid(
                    format!("{here}.name"),
                    &Value::String(name.to_string()),
                    &problem,
                ));
            }
            if seen.contains(&name) {
                causes.push(FieldCause {
                    reason: "FieldValueDuplicate",
                    field: format!("{here}.name"),
                    message: format!("Duplicate value: {name:?}"),
                });
            }
            seen.push(name);
        }
        let image = container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if image.is_empty() {
            causes.push(FieldCause::required(format!("{here}.image"), ""));
        } else if image.trim() != image {
            causes.push(FieldCause::invalid(
                format!("{here}.image"),
                &Value::String(image.to_string()),
                "must not have leading or trailing whitespace",
            ));
        }
        validate_resources(
            container.get("resources"),
            &format!("{here}.resources"),
            causes,
        );
        if let Some(env) = container.get("env").and_then(Value::as_array) {
            for (j, var) in env.iter().enumerate() {
                if var
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .is_empty()
                {
                    causes.push(FieldCause::required(format!("{here}.env[{j}].name"), ""));
                }
            }
        }
    }
}

/// Quantity values are checked by [`crate::admission`] before decoding (400); here we enforce
/// non-negative values and `requests <= limits` (422).
fn validate_resources(resources: Option<&Value>, path: &str, causes: &mut Vec<FieldCause>) {
    let Some(resources) = resources else { return };
    let limits = resources.get("limits").and_then(Value::as_object);
    for section in ["limits", "requests"] {
        let Some(map) = resources.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (name, quantity) in map {
            let text = quantity_text(quantity);
            let parsed = crate::quantity::parse_quantity(&text);
            if parsed.is_some_and(|v| v < 0.0) {
                causes.push(FieldCause::invalid(
                    format!("{path}.{section}[{name}]"),
                    &Value::String(text.clone()),
                    "must be greater than or equal to 0",
                ));
            }
            if section == "requests" {
                if let (Some(request), Some(limit)) = (
                    parsed,
                    limits
                        .and_then(|l| l.get(name))
                        .and_then(|l| crate::quantity::parse_quantity(&quantity_text(l))),
                ) {
                    if request > limit {
                        causes.push(FieldCause::invalid(
                            format!("{path}.requests"),
                            &Value::String(text.clone()),
                            &format!(
                                "must be less than or equal to {name} limit of {}",
                                quantity_text(&limits.expect("limits")[name])
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// A quantity may arrive as a JSON string or number.
pub fn quantity_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Collect every quantity under `resources.{limits,requests}` of all containers that fails to parse.
pub fn find_malformed_quantity(object: &Value) -> Option<String> {
    fn walk(value: &Value, found: &mut Option<String>) {
        if found.is_some() {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "resources" {
                        for section in ["limits", "requests"] {
                            if let Some(q) = child.get(section).and_then(Value::as_object) {
                                for v in q.values() {
                                    let text = quantity_text(v);
                                    if !is_valid_quantity(&text) {
                                        *found = Some(text);
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    walk(child, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, found)),
            _ => {}
        }
    }
    let mut found = None;
    walk(object, &mut found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc1123() {
        assert!(dns1123_subdomain_problems("my-job.v1").is_empty());
        assert!(!dns1123_subdomain_problems("Bad_Name").is_empty());
        assert!(!dns1123_label_problems("a.b").is_empty());
    }

    #[test]
    fn quantities_parse_like_resource_quantity() {
        for ok in ["1", "100m", "1.5Gi", "2e3", "512Mi", "0.5"] {
            assert!(is_valid_quantity(ok), "{ok}");
        }
        for bad in ["1.5GB", "abc", "", "1 Gi"] {
            assert!(!is_valid_quantity(bad), "{bad}");
        }
    }
}
