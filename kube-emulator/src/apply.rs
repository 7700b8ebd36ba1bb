//! Server-side apply field ownership: the fields an apply configuration sets (as `fieldsV1`
//! paths, keyed list items as `k:{...}`), and the conflicts a real apiserver reports when a
//! different applier owns a field this apply would change. Only Apply managers are tracked;
//! fields written by Update operations never conflict (see README).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::resources::ResourceType;

/// One owned field: segments `f:<key>` or `k:<json key>`.
pub type FieldPath = Vec<String>;

/// The list merge key of a field for these items, when they are identified by one
/// (`ports` are keyed by `containerPort` in containers and by `port` in Services).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let candidates: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets" => &["name"],
        "ports" => &["containerPort", "port"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        _ => &[],
    };
    candidates
        .iter()
        .copied()
        .find(|k| !items.is_empty() && items.iter().all(|i| i.get(*k).is_some()))
}

fn walk(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(format!("f:{key}"));
                let keyed = child.as_array().and_then(|items| merge_key(key, items));
                match (child, keyed) {
                    (Value::Array(items), Some(merge_key)) => {
                        for item in items {
                            let key_json = json!({ merge_key: item[merge_key] }).to_string();
                            prefix.push(format!("k:{key_json}"));
                            walk(item, prefix, out);
                            prefix.pop();
                        }
                    }
                    _ => walk(child, prefix, out),
                }
                prefix.pop();
            }
        }
        // Empty maps own nothing (e.g. `metadata` once the identity fields are stripped).
        Value::Object(_) => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The leaf fields an apply configuration sets (identity fields excluded).
pub fn applied_fields(config: &Value) -> BTreeSet<FieldPath> {
    let mut config = config.clone();
    if let Some(map) = config.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "name",
                "namespace",
                "resourceVersion",
                "uid",
                "managedFields",
            ] {
                meta.remove(key);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&config, &mut Vec::new(), &mut out);
    out.retain(|p| !p.is_empty());
    out
}

/// Encode paths as a `fieldsV1` tree.
pub fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for segment in path {
            node = node
                .entry(segment.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

/// Decode a `fieldsV1` tree into its leaf paths.
pub fn from_fields_v1(fields: &Value) -> BTreeSet<FieldPath> {
    fn collect(node: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        let Some(map) = node.as_object() else { return };
        let children: Vec<_> = map.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (key, child) in children {
            prefix.push(key.clone());
            collect(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    collect(fields, &mut Vec::new(), &mut out);
    out
}

/// The value at a field path, if present.
pub fn value_at<'a>(object: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    let mut node = object;
    for segment in path {
        if let Some(key) = segment.strip_prefix("f:") {
            node = node.get(key)?;
        } else if let Some(key_json) = segment.strip_prefix("k:") {
            let wanted: Map<String, Value> = serde_json::from_str(key_json).ok()?;
            node = node
                .as_array()?
                .iter()
                .find(|item| wanted.iter().all(|(k, v)| item.get(k) == Some(v)))?;
        } else {
            return None;
        }
    }
    Some(node)
}

/// `.spec.template.spec.containers[name="c"].image`, as in apiserver conflict messages.
pub fn render_path(path: &FieldPath) -> String {
    let mut out = String::new();
    for segment in path {
        if let Some(key) = segment.strip_prefix("f:") {
            out.push('.');
            out.push_str(key);
        } else if let Some(key_json) = segment.strip_prefix("k:") {
            let wanted: Map<String, Value> = serde_json::from_str(key_json).unwrap_or_default();
            let parts: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    out
}

/// Check `config` (applied by `manager`) against the other appliers' fields: a conflict is a
/// field another applier owns whose value the apply changes (`current` vs `merged`, the object
/// after the apply, defaulting and normalization). Returns the managedFields list to store:
/// other appliers lose forced fields, and this manager's Apply entry records the applied fields.
pub fn check_and_record(
    resource: &ResourceType,
    name: &str,
    current: &Value,
    merged: &Value,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let applied = applied_fields(config);
    let mut entries: Vec<Value> = current
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for entry in entries.iter_mut() {
        if entry["operation"] != "Apply" || entry["manager"] == manager {
            continue;
        }
        let owned = from_fields_v1(&entry["fieldsV1"]);
        let clashing: BTreeSet<FieldPath> = owned
            .intersection(&applied)
            .filter(|p| value_at(current, p) != value_at(merged, p))
            .cloned()
            .collect();
        if clashing.is_empty() {
            continue;
        }
        let other = entry["manager"].as_str().unwrap_or_default().to_string();
        if force {
            let kept: BTreeSet<FieldPath> = owned.difference(&clashing).cloned().collect();
            entry["fieldsV1"] = to_fields_v1(&kept);
        } else {
            conflicts.extend(clashing.into_iter().map(|p| (other.clone(), p)));
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(resource, name, &conflicts));
    }
    let fields = to_fields_v1(&applied);
    match entries.iter_mut().find(|e| {
        e["manager"] == manager && e["operation"] == "Apply" && e.get("subresource").is_none()
    }) {
        Some(entry) => entry["fieldsV1"] = fields,
        None => entries.push(json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": resource.api_version(),
            "time": crate::time::now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        })),
    }
    Ok(Value::Array(entries))
}

fn conflict_error(
    resource: &ResourceType,
    name: &str,
    conflicts: &[(String, FieldPath)],
) -> ApiError {
    let managers: BTreeSet<&str> = conflicts.iter().map(|(m, _)| m.as_str()).collect();
    let detail = if conflicts.len() == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\": {}",
            conflicts[0].0,
            render_path(&conflicts[0].1)
        )
    } else if managers.len() == 1 {
        let fields: Vec<String> = conflicts
            .iter()
            .map(|(_, p)| format!("- {}", render_path(p)))
            .collect();
        format!(
            "Apply failed with {} conflicts: conflicts with \"{}\":\n{}",
            conflicts.len(),
            conflicts[0].0,
            fields.join("\n")
        )
    } else {
        let fields: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("- conflict with \"{m}\": {}", render_path(p)))
            .collect();
        format!(
            "Apply failed with {} conflicts:\n{}",
            conflicts.len(),
            fields.join("\n")
        )
    };
    let mut err = ApiError::conflict(resource, name, &detail);
    // The real message is the bare apply detail, not the generic conflict prefix.
    err.message = detail;
    if let Some(details) = err.details.as_mut() {
        details["causes"] = Value::Array(
            conflicts
                .iter()
                .map(|(m, p)| {
                    json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": render_path(p)})
                })
                .collect(),
        );
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_lists_become_key_segments() {
        let config = json!({"spec": {"containers": [{"name": "c", "image": "x"}], "replicas": 2}});
        let fields = applied_fields(&config);
        assert!(fields.contains(&vec!["f:spec".to_string(), "f:replicas".to_string()]));
        let image = vec![
            "f:spec".to_string(),
            "f:containers".to_string(),
            r#"k:{"name":"c"}"#.to_string(),
            "f:image".to_string(),
        ];
        assert!(fields.contains(&image));
        assert_eq!(value_at(&config, &image), Some(&json!("x")));
        assert_eq!(render_path(&image), r#".spec.containers[name="c"].image"#);
        assert_eq!(from_fields_v1(&to_fields_v1(&fields)), fields);
    }
}
