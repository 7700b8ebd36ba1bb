//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch
//! with the list merge keys of the Kubernetes types we serve (`containers`/`env`/`volumes` by
//! `name`, `conditions` by `type`, `ownerReferences` by `uid`, `finalizers` as a set) and the
//! `$patch`, `$deleteFromPrimitiveList`, `$setElementOrder`, `$retainKeys` directives.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The PATCH flavours selected by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply, create-or-update).
    Apply,
}

impl PatchKind {
    /// Map a Content-Type header value (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let base = content_type.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Apply `patch` of `kind` to `original`.
pub fn apply_patch(original: &Value, patch: &Value, kind: PatchKind) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Merge => {
            let mut out = original.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchKind::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut out = original.clone();
            json_patch::patch(&mut out, &operations).map_err(|e| {
                ApiError::invalid_options(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            Ok(out)
        }
        PatchKind::StrategicMerge | PatchKind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}",
                ));
            }
            Ok(strategic_merge(original, patch, ""))
        }
    }
}

/// How a list field merges under strategic merge patch.
enum ListStrategy {
    /// Merge elements with equal value of the first of these keys the element has
    /// (`ports` are keyed by `containerPort` in containers and by `port` in Services).
    MergeByKey(&'static [&'static str]),
    /// Union of primitive values.
    PrimitiveSet,
    /// Replace the whole list.
    Replace,
}

fn list_strategy(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "volumeDevices"
        | "containerStatuses"
        | "initContainerStatuses"
        | "resourceClaims" => ListStrategy::MergeByKey(&["name"]),
        "ports" => ListStrategy::MergeByKey(&["containerPort", "port"]),
        "conditions" => ListStrategy::MergeByKey(&["type"]),
        "ownerReferences" => ListStrategy::MergeByKey(&["uid"]),
        "podIPs" | "hostIPs" => ListStrategy::MergeByKey(&["ip"]),
        "finalizers" => ListStrategy::PrimitiveSet,
        _ => ListStrategy::Replace,
    }
}

/// Strategic merge of `patch` into `original` (both JSON objects at `path`).
pub fn strategic_merge(original: &Value, patch: &Value, path: &str) -> Value {
    let (Some(orig_map), Some(patch_map)) = (original.as_object(), patch.as_object()) else {
        return patch.clone();
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        return Value::Object(replaced);
    }
    let mut out: Map<String, Value> = orig_map.clone();
    if let Some(retain) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch_map {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (
                out.get_mut(field).and_then(Value::as_array_mut),
                value.as_array(),
            ) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if value.is_null() {
            out.remove(key);
            continue;
        }
        let child_path = format!("{path}/{key}");
        let merged = match (out.get(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value, &child_path)
            }
            (Some(Value::Array(existing)), Value::Array(items)) => {
                merge_list(key, existing, items, &child_path)
            }
            (None, Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .cloned()
                    .collect(),
            ),
            (None, Value::Object(_)) => strip_directives(value),
            _ => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    Value::Object(out)
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_list(field: &str, existing: &[Value], patch: &[Value], path: &str) -> Value {
    match list_strategy(field) {
        ListStrategy::Replace => Value::Array(patch.to_vec()),
        ListStrategy::PrimitiveSet => {
            let mut out = existing.to_vec();
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            Value::Array(out)
        }
        ListStrategy::MergeByKey(candidates) => {
            let mut out = existing.to_vec();
            for item in patch {
                let merge_key = candidates
                    .iter()
                    .copied()
                    .find(|k| item.get(*k).is_some())
                    .unwrap_or(candidates[0]);
                let key_value = item.get(merge_key);
                let position =
                    key_value.and_then(|kv| out.iter().position(|e| e.get(merge_key) == Some(kv)));
                let directive = item.get("$patch").and_then(Value::as_str);
                match (position, directive) {
                    (Some(i), Some("delete")) => {
                        out.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), Some("replace")) => {
                        let mut replaced = item.clone();
                        if let Some(m) = replaced.as_object_mut() {
                            m.remove("$patch");
                        }
                        out[i] = replaced;
                    }
                    (Some(i), _) => {
                        out[i] = strategic_merge(&out[i], item, path);
                    }
                    (None, _) => out.push(strip_directives(item)),
                }
            }
            Value::Array(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let original = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}]}});
        let merged = apply_patch(&original, &patch, PatchKind::StrategicMerge).unwrap();
        assert_eq!(merged["spec"]["containers"][0]["image"], "x");
        assert_eq!(merged["spec"]["containers"][1]["image"], "z");
    }

    #[test]
    fn merge_patch_replaces_lists() {
        let original = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b"}]}});
        let merged = apply_patch(&original, &patch, PatchKind::Merge).unwrap();
        assert_eq!(merged["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn delete_from_primitive_list_removes_finalizer() {
        let original =
            json!({"metadata": {"finalizers": ["batch.kubernetes.io/job-tracking", "x"]}});
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["batch.kubernetes.io/job-tracking"]}});
        let merged = apply_patch(&original, &patch, PatchKind::StrategicMerge).unwrap();
        assert_eq!(merged["metadata"]["finalizers"], json!(["x"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let original = json!({"spec": {"ports": [{"name": "client", "port": 4222}]}});
        let patch =
            json!({"spec": {"ports": [{"name": "client", "port": 4222, "protocol": "TCP"}]}});
        let merged = apply_patch(&original, &patch, PatchKind::StrategicMerge).unwrap();
        assert_eq!(
            merged["spec"]["ports"],
            json!([{"name": "client", "port": 4222, "protocol": "TCP"}])
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let original = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
        let patch = json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}});
        let merged = apply_patch(&original, &patch, PatchKind::StrategicMerge).unwrap();
        assert_eq!(
            merged["metadata"]["ownerReferences"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
