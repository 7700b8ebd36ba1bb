//! Configuration a container takes from the API: Secret/ConfigMap volume sources that must
//! exist, and its environment (`env` with `valueFrom`, `envFrom`).

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::resources;

/// The kubelet's FailedMount message for the first non-optional Secret/ConfigMap volume whose
/// source does not exist.
pub(super) fn missing_volume_source(cluster: &Cluster, pod: &Value) -> Option<String> {
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array)?;
    for volume in volumes {
        let name = volume["name"].as_str().unwrap_or_default();
        let (kind, source, resource) = if let Some(secret) = volume.get("secret") {
            (
                "secret",
                secret["secretName"].as_str(),
                resources::secrets(),
            )
        } else if let Some(config_map) = volume.get("configMap") {
            (
                "configmap",
                config_map["name"].as_str(),
                resources::configmaps(),
            )
        } else {
            continue;
        };
        let optional = volume
            .get("secret")
            .or_else(|| volume.get("configMap"))
            .and_then(|v| v["optional"].as_bool())
            .unwrap_or(false);
        let Some(source) = source else { continue };
        if !optional && cluster.store.get(resource, namespace, source).is_none() {
            return Some(format!(
                "MountVolume.SetUp failed for volume \"{name}\" : {kind} \"{source}\" not found"
            ));
        }
    }
    None
}

/// Resolve a container's environment (`env` with `valueFrom`, then `envFrom`). A missing
/// non-optional Secret/ConfigMap/key yields the kubelet's CreateContainerConfigError message.
pub fn resolve_env(
    cluster: &Cluster,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let sources = ConfigSources { cluster, namespace };
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(list) = container["envFrom"].as_array() {
        for source in list {
            sources.env_from(source, &mut env)?;
        }
    }
    if let Some(list) = container["env"].as_array() {
        for var in list {
            sources.env_var(pod, var, &mut env)?;
        }
    }
    Ok(env)
}

/// The Secrets and ConfigMaps of the pod's namespace.
struct ConfigSources<'a> {
    cluster: &'a Cluster,
    namespace: &'a str,
}

impl ConfigSources<'_> {
    fn lookup(&self, kind: &str, name: &str) -> Option<Arc<Value>> {
        let resource = if kind == "secret" {
            resources::secrets()
        } else {
            resources::configmaps()
        };
        self.cluster.store.get(resource, self.namespace, name)
    }

    /// One `envFrom` entry: every key of its Secret/ConfigMap, with the entry's prefix.
    fn env_from(&self, source: &Value, env: &mut Vec<(String, String)>) -> Result<(), String> {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        for (field, kind) in [("secretRef", "secret"), ("configMapRef", "configmap")] {
            let Some(reference) = source.get(field) else {
                continue;
            };
            let name = reference["name"].as_str().unwrap_or_default();
            let optional = reference["optional"].as_bool().unwrap_or(false);
            match self.lookup(kind, name) {
                Some(object) => {
                    if let Some(data) = object["data"].as_object() {
                        for key in data.keys() {
                            if let Some(v) = data_value(kind, &object, key) {
                                env.push((format!("{prefix}{key}"), v));
                            }
                        }
                    }
                }
                None if optional => {}
                None => return Err(format!("{kind} \"{name}\" not found")),
            }
        }
        Ok(())
    }

    /// One `env` entry: a value (with `$(VAR)` references expanded) or a `valueFrom`.
    fn env_var(
        &self,
        pod: &Value,
        var: &Value,
        env: &mut Vec<(String, String)>,
    ) -> Result<(), String> {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        if let Some(value) = var.get("value").and_then(Value::as_str) {
            let expanded = crate::runtime::process::expand_references(value, env);
            env.push((name, expanded));
            return Ok(());
        }
        let Some(from) = var.get("valueFrom") else {
            env.push((name, String::new()));
            return Ok(());
        };
        for (field, kind) in [("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")] {
            let Some(reference) = from.get(field) else {
                continue;
            };
            if let Some(v) = self.key_ref(kind, reference)? {
                env.push((name.clone(), v));
            }
        }
        if let Some(field_ref) = from.get("fieldRef") {
            let path = field_ref["fieldPath"].as_str().unwrap_or_default();
            let value = field_ref_value(pod, path);
            env.push((
                name.clone(),
                value
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            ));
        }
        if from.get("resourceFieldRef").is_some() {
            env.push((name.clone(), "0".to_string()));
        }
        Ok(())
    }

    /// A `secretKeyRef`/`configMapKeyRef`'s value; None when it is optional and missing.
    fn key_ref(&self, kind: &str, reference: &Value) -> Result<Option<String>, String> {
        let namespace = self.namespace;
        let object_name = reference["name"].as_str().unwrap_or_default();
        let key = reference["key"].as_str().unwrap_or_default();
        let optional = reference["optional"].as_bool().unwrap_or(false);
        match self.lookup(kind, object_name) {
            None if optional => Ok(None),
            None => Err(format!("{kind} \"{object_name}\" not found")),
            Some(object) => match data_value(kind, &object, key) {
                Some(v) => Ok(Some(v)),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {key} in {} {namespace}/{object_name}",
                    if kind == "secret" {
                        "Secret"
                    } else {
                        "ConfigMap"
                    }
                )),
            },
        }
    }
}

/// The value under `key` of a Secret (base64-decoded) or ConfigMap.
fn data_value(kind: &str, object: &Value, key: &str) -> Option<String> {
    if kind == "secret" {
        object
            .pointer(&format!(
                "/data/{}",
                key.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    } else {
        object
            .pointer(&format!(
                "/data/{}",
                key.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(String::from)
    }
}

/// The pod field a `fieldRef` names (the downward API).
fn field_ref_value(pod: &Value, path: &str) -> Option<Value> {
    match path {
        "metadata.name" => pod.pointer("/metadata/name").cloned(),
        "metadata.namespace" => pod.pointer("/metadata/namespace").cloned(),
        "metadata.uid" => pod.pointer("/metadata/uid").cloned(),
        "spec.nodeName" => pod.pointer("/spec/nodeName").cloned(),
        "spec.serviceAccountName" => pod.pointer("/spec/serviceAccountName").cloned(),
        "status.podIP" => pod.pointer("/status/podIP").cloned(),
        "status.hostIP" => Some(json!("172.18.0.2")),
        other => other
            .strip_prefix("metadata.labels['")
            .and_then(|k| k.strip_suffix("']"))
            .and_then(|k| {
                pod.pointer("/metadata/labels")
                    .and_then(|l| l.get(k))
                    .cloned()
            })
            .or_else(|| {
                other
                    .strip_prefix("metadata.annotations['")
                    .and_then(|k| k.strip_suffix("']"))
                    .and_then(|k| {
                        pod.pointer("/metadata/annotations")
                            .and_then(|l| l.get(k))
                            .cloned()
                    })
            }),
    }
}
