//! The admission chain every write goes through, whether it came over HTTP or from a simulated
//! controller: decoding (type/kind checks, typed pruning of unknown fields), defaulting,
//! validation (422 naming the field) and the system fields (`uid`, `creationTimestamp`,
//! `generation`, `managedFields`) that only the server may set.

pub mod defaults;
pub mod validation;

use serde_json::{json, Value};

use crate::error::{ApiError, FieldCause};
use crate::resources::ResourceType;
use crate::time::now_rfc3339;

use validation::NameRule;

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop unknown fields and return `Warning` headers (the server default).
    #[default]
    Warn,
    /// Reject unknown fields with 400.
    Strict,
}

impl FieldValidation {
    /// Parse the query value.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// A decoded request body and the warnings produced while decoding it.
#[derive(Debug)]
pub struct Decoded {
    /// The pruned object.
    pub object: Value,
    /// `unknown field "..."` warnings.
    pub warnings: Vec<String>,
}

/// Parse and check a request body for `resource` the way the apiserver's decoder does.
pub fn decode_body(
    resource: &ResourceType,
    body: &[u8],
    field_validation: FieldValidation,
) -> Result<Decoded, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    decode_value(resource, value, field_validation)
}

/// Like [`decode_body`] for an already-parsed JSON value (patch results, apply bodies).
pub fn decode_value(
    resource: &ResourceType,
    mut value: Value,
    field_validation: FieldValidation,
) -> Result<Decoded, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal {} into Go value of type struct",
            resource.kind,
            resource.version,
            resource.kind,
            json_type_name(&value)
        )));
    }
    let expected_version = resource.api_version();
    if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str) {
        if api_version != expected_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
            )));
        }
    }
    if let Some(kind) = value.get("kind").and_then(Value::as_str) {
        if kind != resource.kind {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{}\" cannot be handled as a {}: no kind \"{kind}\" is registered for version \"{expected_version}\" in the {} resource",
                resource.version, resource.kind, resource.qualified_plural()
            )));
        }
    }
    normalize_numeric_quantities(&mut value);
    if let Some(bad) = validation::find_malformed_quantity(&value) {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {} (got {bad:?})",
            resource.kind,
            resource.version,
            resource.kind,
            validation::QUANTITY_DECODE_ERROR
        )));
    }
    let pruned = match resource.typed_round_trip {
        Some(round_trip) => round_trip(value.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                resource.kind, resource.version, resource.kind
            ))
        })?,
        None => value.clone(),
    };
    let mut unknown = Vec::new();
    find_unknown_fields(&value, &pruned, "", &mut unknown);
    let mut pruned = pruned;
    restore_empty_objects(&value, &mut pruned);
    let warnings: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if field_validation == FieldValidation::Strict && !warnings.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            warnings.join(", ")
        )));
    }
    pruned["apiVersion"] = json!(expected_version);
    pruned["kind"] = json!(resource.kind);
    if pruned.get("metadata").is_none_or(Value::is_null) {
        pruned["metadata"] = json!({});
    }
    Ok(Decoded {
        object: pruned,
        warnings: if field_validation == FieldValidation::Ignore {
            Vec::new()
        } else {
            warnings
        },
    })
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        Value::Object(_) => "object",
    }
}

/// The apiserver accepts `cpu: 1` (a JSON number) for quantities; k8s-openapi wants strings.
fn normalize_numeric_quantities(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if matches!(
                    key.as_str(),
                    "limits" | "requests" | "capacity" | "allocatable"
                ) {
                    if let Some(q) = child.as_object_mut() {
                        for v in q.values_mut() {
                            if v.is_number() {
                                *v = Value::String(v.to_string());
                            }
                        }
                    }
                }
                normalize_numeric_quantities(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numeric_quantities),
        _ => {}
    }
}

/// Paths present (non-null) in `original` but missing from the typed round trip.
fn find_unknown_fields(original: &Value, pruned: &Value, path: &str, out: &mut Vec<String>) {
    match (original, pruned) {
        (Value::Object(o), Value::Object(p)) => {
            for (key, value) in o {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match p.get(key) {
                    None => {
                        // Empty objects/arrays disappear in some round trips; they are not unknown.
                        let empty = value.as_object().is_some_and(|m| m.is_empty())
                            || value.as_array().is_some_and(|a| a.is_empty());
                        if !empty {
                            out.push(child);
                        }
                    }
                    Some(next) => find_unknown_fields(value, next, &child, out),
                }
            }
        }
        (Value::Array(o), Value::Array(p)) => {
            for (i, (a, b)) in o.iter().zip(p.iter()).enumerate() {
                find_unknown_fields(a, b, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// k8s-openapi drops some empty collections (e.g. `labels: {}`); keep the caller's empties where
/// the typed result still has the parent, so no-op detection and replays stay faithful.
fn restore_empty_objects(original: &Value, pruned: &mut Value) {
    if let (Value::Object(o), Value::Object(p)) = (original, pruned) {
        for (key, value) in o {
            match p.get_mut(key) {
                Some(next) => restore_empty_objects(value, next),
                None => {
                    if value.as_object().is_some_and(|m| m.is_empty()) && is_known_empty_object(key)
                    {
                        p.insert(key.clone(), value.clone());
                    }
                }
            }
        }
    }
}

fn is_known_empty_object(key: &str) -> bool {
    matches!(
        key,
        "resources" | "securityContext" | "status" | "emptyDir" | "data" | "spec" | "metadata"
    )
}

/// How a resource's names are validated.
pub fn name_rule(resource: &ResourceType) -> NameRule {
    match (resource.group, resource.plural) {
        ("", "namespaces") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("", "events") | ("events.k8s.io", _) => NameRule::Subdomain,
        _ => NameRule::Subdomain,
    }
}

/// Characters for generated name suffixes (apimachinery `rand.String`).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` + 5 random characters, the base truncated to 58 characters.
pub fn generate_name(base: &str) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    let base: String = base.chars().take(58).collect();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// A random 5-character suffix (for token volume names).
pub fn random_suffix() -> String {
    generate_name("")
}

/// Who performs a write, recorded in `managedFields`.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// `fieldManager` or a default (`unknown`, `kube-controller-manager`, `kubelet`).
    pub manager: String,
    /// `Update` or `Apply`.
    pub operation: &'static str,
    /// `Some("status")` for status writes.
    pub subresource: Option<&'static str>,
    /// The `fieldsV1` to record for a new entry (server-side apply creates).
    pub fields_v1: Option<Value>,
}

impl WriteContext {
    /// A plain update by `manager`.
    pub fn update(manager: &str) -> Self {
        Self {
            manager: manager.to_string(),
            operation: "Update",
            subresource: None,
            fields_v1: None,
        }
    }

    /// A status write by `manager`.
    pub fn status(manager: &str) -> Self {
        Self {
            manager: manager.to_string(),
            operation: "Update",
            subresource: Some("status"),
            fields_v1: None,
        }
    }
}

/// Record (or refresh) this manager's `managedFields` entry.
pub fn record_manager(object: &mut Value, resource: &ResourceType, ctx: &WriteContext) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("managedFields").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let entries = list.as_array_mut().expect("array");
    let subresource = ctx.subresource.map(Value::from);
    if let Some(existing) = entries.iter_mut().find(|e| {
        e["manager"] == ctx.manager.as_str()
            && e["operation"] == ctx.operation
            && e.get("subresource") == subresource.as_ref()
    }) {
        // Keep the time stable on refresh so no-op writes stay no-ops.
        let _ = existing;
        return;
    }
    let mut entry = json!({
        "manager": ctx.manager,
        "operation": ctx.operation,
        "apiVersion": resource.api_version(),
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": ctx.fields_v1.clone().unwrap_or_else(|| json!({})),
    });
    if let Some(sub) = ctx.subresource {
        entry["subresource"] = json!(sub);
    }
    entries.push(entry);
}

/// Defaults for a new object of `resource` (called after uid and name are known).
pub fn default_on_create(resource: &ResourceType, object: &mut Value, uid: &str) {
    match (resource.group, resource.plural) {
        ("batch", "jobs") => defaults::default_job(object, uid),
        ("", "pods") => defaults::default_pod(object, &random_suffix()),
        ("", "namespaces") => defaults::default_namespace(object),
        ("", "secrets") => defaults::normalize_secret(object),
        ("apps", "deployments") => defaults::default_workload(object, "Deployment"),
        ("apps", "statefulsets") => defaults::default_workload(object, "StatefulSet"),
        _ => {}
    }
}

/// Validate a new or updated object; `old` is the stored object on update.
pub fn validate(
    resource: &ResourceType,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut causes = Vec::new();
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    validation::validate_object_meta(&meta, name_rule(resource), resource.namespaced, &mut causes);
    match (resource.group, resource.plural) {
        ("batch", "jobs") => validate_job(object, old, &mut causes),
        ("", "pods") => {
            if let Some(spec) = object.get("spec") {
                validation::validate_pod_spec(spec, "spec", &mut causes);
            } else {
                causes.push(FieldCause::required("spec.containers", ""));
            }
            if let Some(old) = old {
                validate_pod_update(object, old, &mut causes);
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        validate_finalizer_addition(object, old, &mut causes);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(resource, &name, causes))
    }
}

fn non_negative(spec: &Value, field: &str, path: &str, causes: &mut Vec<FieldCause>) {
    if let Some(v) = spec.get(field).and_then(Value::as_i64) {
        if v < 0 {
            causes.push(FieldCause::invalid(
                format!("{path}.{field}"),
                &json!(v),
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn validate_job(job: &Value, old: Option<&Value>, causes: &mut Vec<FieldCause>) {
    let spec = job.get("spec").cloned().unwrap_or_else(|| json!({}));
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(&spec, field, "spec", causes);
    }
    if let Some(v) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if v <= 0 {
            causes.push(FieldCause::invalid(
                "spec.activeDeadlineSeconds",
                &json!(v),
                "must be greater than or equal to 0",
            ));
        }
    }
    let template_labels = spec.pointer("/template/metadata/labels");
    validation::validate_labels(template_labels, "spec.template.metadata.labels", causes);
    validate_job_pod_template(&spec, causes);
    if let Some(selector) = spec.get("selector") {
        let selector = crate::selectors::LabelSelector::from_label_selector_object(selector);
        let labels = crate::selectors::object_labels(
            &json!({"metadata": {"labels": template_labels.cloned().unwrap_or(json!({}))}}),
        );
        if !selector.matches_labels(&labels) {
            causes.push(FieldCause::invalid(
                "spec.template.metadata.labels",
                &template_labels.cloned().unwrap_or(json!({})),
                "`selector` does not match template `labels`",
            ));
        }
    } else if old.is_none() {
        causes.push(FieldCause::required("spec.selector", ""));
    }
    if let Some(old) = old {
        validate_job_immutable(job, old, causes);
    }
}

/// A Job's pod template: a valid pod spec whose restartPolicy is OnFailure or Never (Never
/// with a podFailurePolicy).
fn validate_job_pod_template(spec: &Value, causes: &mut Vec<FieldCause>) {
    match spec.pointer("/template/spec") {
        Some(pod_spec) => {
            validation::validate_pod_spec(pod_spec, "spec.template.spec", causes);
            let policy = pod_spec
                .get("restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Always");
            if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) && policy != "Never" {
                causes.push(FieldCause::invalid(
                    "spec.template.spec.restartPolicy",
                    &json!(policy),
                    "only \"Never\" is supported when podFailurePolicy is specified",
                ));
            }
            if policy != "OnFailure" && policy != "Never" {
                causes.push(FieldCause::not_supported(
                    "spec.template.spec.restartPolicy",
                    &json!(policy),
                    &["OnFailure", "Never"],
                ));
            }
        }
        None => causes.push(FieldCause::required("spec.template.spec.containers", "")),
    }
}

/// The fields of a Job that cannot change.
fn validate_job_immutable(job: &Value, old: &Value, causes: &mut Vec<FieldCause>) {
    for (field, path) in [
        ("/spec/selector", "spec.selector"),
        ("/spec/completions", "spec.completions"),
        ("/spec/podFailurePolicy", "spec.podFailurePolicy"),
    ] {
        if old.pointer(field) != job.pointer(field) {
            causes.push(FieldCause::invalid(
                path,
                job.pointer(field).unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    if old.pointer("/spec/template") != job.pointer("/spec/template") {
        causes.push(FieldCause::invalid(
            "spec.template",
            &json!("core.PodTemplateSpec{...}"),
            "field is immutable",
        ));
    }
}

fn validate_pod_update(pod: &Value, old: &Value, causes: &mut Vec<FieldCause>) {
    let strip = |spec: &Value| {
        let mut spec = spec.clone();
        for field in ["containers", "initContainers"] {
            if let Some(list) = spec.get_mut(field).and_then(Value::as_array_mut) {
                for c in list {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
        if let Some(s) = spec.as_object_mut() {
            s.remove("activeDeadlineSeconds");
            s.remove("tolerations");
            s.remove("terminationGracePeriodSeconds");
            s.remove("nodeName");
        }
        spec
    };
    let new_spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    if strip(&new_spec) != strip(&old_spec) {
        causes.push(FieldCause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    let old_node = old.pointer("/spec/nodeName");
    if old_node.is_some() && pod.pointer("/spec/nodeName") != old_node {
        causes.push(FieldCause::forbidden("spec.nodeName", "field is immutable"));
    }
}

fn validate_finalizer_addition(object: &Value, old: &Value, causes: &mut Vec<FieldCause>) {
    if old.pointer("/metadata/deletionTimestamp").is_none() {
        return;
    }
    let old_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_finalizers = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if new_finalizers.iter().any(|f| !old_finalizers.contains(f)) {
        causes.push(FieldCause::forbidden(
            "metadata.finalizers",
            "no new finalizers can be added if the object is being deleted",
        ));
    }
}

/// Stamp the server-owned metadata of a new object.
pub fn stamp_new_object(object: &mut Value, uid: &str) {
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    meta.remove("selfLink");
}

/// Copy server-owned metadata from `old` onto an updated object.
pub fn carry_system_metadata(object: &mut Value, old: &Value) {
    let meta = object["metadata"].as_object_mut().expect("metadata");
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
        "namespace",
        "name",
        "generateName",
    ] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pod_spec_fields_are_dropped_with_a_warning() {
        let body = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"completions": 1, "containers": [{"name": "c", "image": "i"}]}}}});
        let decoded = decode_value(crate::resources::jobs(), body, FieldValidation::Warn).unwrap();
        assert!(decoded
            .object
            .pointer("/spec/template/spec/completions")
            .is_none());
        assert_eq!(
            decoded.warnings,
            vec!["unknown field \"spec.template.spec.completions\""]
        );
    }

    #[test]
    fn wrong_kind_is_bad_request() {
        let body = json!({"apiVersion": "batch/v1", "kind": "Pod", "metadata": {"name": "j"}});
        let err = decode_value(crate::resources::jobs(), body, FieldValidation::Warn).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
