//! Schemas for the `/openapi/v3` documents (what `kubectl explain` reads): generated from the
//! k8s-openapi types (whose descriptions come from the Kubernetes OpenAPI spec) with OpenAPI 3
//! settings — `$ref`s to `#/components/schemas/io.k8s...`, siblings wrapped in `allOf` as in the
//! real documents — and tagged with `x-kubernetes-group-version-kind` for every served kind.
//! Built once per group-version and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::{
    apps, authorization, autoscaling, batch, coordination, core, events, networking, policy, rbac,
};
use k8s_openapi::schemars::{generate::SchemaSettings, JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::resources::RESOURCES;

/// Add `T` to the generator's definitions and return its schema name.
fn define<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The schema name of a served kind, after adding it (and what it refers to) to `generator`.
fn define_kind(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    let g = generator;
    Some(match (group, kind) {
        ("", "Namespace") => define::<core::v1::Namespace>(g),
        ("", "Node") => define::<core::v1::Node>(g),
        ("", "Pod") => define::<core::v1::Pod>(g),
        ("", "Event") => define::<core::v1::Event>(g),
        ("", "Secret") => define::<core::v1::Secret>(g),
        ("", "ConfigMap") => define::<core::v1::ConfigMap>(g),
        ("", "ServiceAccount") => define::<core::v1::ServiceAccount>(g),
        ("", "Service") => define::<core::v1::Service>(g),
        ("", "PersistentVolumeClaim") => define::<core::v1::PersistentVolumeClaim>(g),
        ("batch", "Job") => define::<batch::v1::Job>(g),
        ("coordination.k8s.io", "Lease") => define::<coordination::v1::Lease>(g),
        ("events.k8s.io", "Event") => define::<events::v1::Event>(g),
        ("rbac.authorization.k8s.io", "Role") => define::<rbac::v1::Role>(g),
        ("rbac.authorization.k8s.io", "RoleBinding") => define::<rbac::v1::RoleBinding>(g),
        ("rbac.authorization.k8s.io", "ClusterRole") => define::<rbac::v1::ClusterRole>(g),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            define::<rbac::v1::ClusterRoleBinding>(g)
        }
        ("apps", "Deployment") => define::<apps::v1::Deployment>(g),
        ("apps", "StatefulSet") => define::<apps::v1::StatefulSet>(g),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            define::<autoscaling::v2::HorizontalPodAutoscaler>(g)
        }
        ("policy", "PodDisruptionBudget") => define::<policy::v1::PodDisruptionBudget>(g),
        ("networking.k8s.io", "NetworkPolicy") => define::<networking::v1::NetworkPolicy>(g),
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            define::<authorization::v1::SelfSubjectAccessReview>(g)
        }
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            define::<authorization::v1::SelfSubjectRulesReview>(g)
        }
        _ => return None,
    })
}

/// Build `components.schemas` for one group-version.
fn build(group: &str, version: &str) -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    for resource in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        if let Some(name) = define_kind(&mut generator, resource.group, resource.kind) {
            kinds.push((name, resource.kind));
        }
    }
    let mut schemas = generator.take_definitions(true);
    for schema in schemas.values_mut() {
        // k8s-openapi marks `metadata` required (it is not optional in Rust); the API does not.
        if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
            required.retain(|r| r != "metadata");
            if required.is_empty() {
                schema.as_object_mut().map(|s| s.remove("required"));
            }
        }
    }
    for (name, kind) in kinds {
        if let Some(schema) = schemas.get_mut(&name) {
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": group, "kind": kind, "version": version}]);
        }
    }
    schemas
}

/// Built schemas by (group, version).
type SchemaCache = Mutex<HashMap<(String, String), Arc<Map<String, Value>>>>;

/// The cached `components.schemas` of a group-version.
pub fn schemas(group: &str, version: &str) -> Arc<Map<String, Value>> {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (group.to_string(), version.to_string());
    if let Some(found) = cache.lock().expect("schema cache").get(&key) {
        return found.clone();
    }
    let built = Arc::new(build(group, version));
    cache
        .lock()
        .expect("schema cache")
        .entry(key)
        .or_insert(built)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_tagged_and_fields_refer_to_components() {
        let schemas = schemas("batch", "v1");
        let job = &schemas["io.k8s.api.batch.v1.Job"];
        assert_eq!(
            job["x-kubernetes-group-version-kind"],
            json!([{"group": "batch", "kind": "Job", "version": "v1"}])
        );
        assert_eq!(
            job["description"],
            "Job represents the configuration of a single job."
        );
        assert!(job.get("required").is_none());
        assert_eq!(
            job["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.batch.v1.JobSpec"
        );
        assert!(schemas.contains_key("io.k8s.api.core.v1.PodSpec"));
        let spec = &schemas["io.k8s.api.batch.v1.JobSpec"];
        assert_eq!(spec["required"], json!(["template"]));
    }
}
