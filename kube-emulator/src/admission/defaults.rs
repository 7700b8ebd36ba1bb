//! Defaulting the apiserver applies on create: Job spec defaults, the generated selector and
//! `controller-uid`/`job-name` labels, pod spec and container defaults, the service account
//! token volume, tolerations, QoS class, and namespace labels/finalizers.

use serde_json::{json, Map, Value};

/// The image pull policy default: `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn default_container(container: &mut Value) {
    let Some(c) = container.as_object_mut() else {
        return;
    };
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(c, "resources", json!({}));
    // Limits without requests default the requests to the limits.
    let limits = c.get("resources").and_then(|r| r.get("limits")).cloned();
    if let (Some(Value::Object(limits)), Some(resources)) = (
        limits,
        c.get_mut("resources").and_then(Value::as_object_mut),
    ) {
        let requests = resources.entry("requests").or_insert_with(|| json!({}));
        if let Some(requests) = requests.as_object_mut() {
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
}

/// Defaults shared by pods and pod templates.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_default(s, "restartPolicy", json!("Always"));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "schedulerName", json!("default-scheduler"));
    for field in ["containers", "initContainers"] {
        if let Some(list) = s.get_mut(field).and_then(Value::as_array_mut) {
            list.iter_mut().for_each(default_container);
        }
    }
}

/// Defaults that only real Pods get (admission plugins: ServiceAccount, DefaultTolerationSeconds, Priority).
pub fn default_pod(pod: &mut Value, token_volume_suffix: &str) {
    if let Some(spec) = pod.get_mut("spec") {
        default_pod_spec(spec);
        let Some(s) = spec.as_object_mut() else {
            return;
        };
        let sa = s
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .or_else(|| s.get("serviceAccount").and_then(Value::as_str))
            .unwrap_or("default")
            .to_string();
        s.insert("serviceAccountName".into(), json!(sa));
        s.insert("serviceAccount".into(), json!(sa));
        set_default(s, "enableServiceLinks", json!(true));
        set_default(s, "priority", json!(0));
        set_default(s, "preemptionPolicy", json!("PreemptLowerPriority"));
        let tolerations = s.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(list) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                if !list.iter().any(|t| t["key"] == key) {
                    list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
        if s.get("automountServiceAccountToken") != Some(&json!(false)) {
            let volume_name = format!("kube-api-access-{token_volume_suffix}");
            let volumes = s.entry("volumes").or_insert_with(|| json!([]));
            if let Some(list) = volumes.as_array_mut() {
                list.push(json!({
                    "name": volume_name,
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                        ],
                        "defaultMode": 420
                    }
                }));
            }
            for field in ["containers", "initContainers"] {
                if let Some(list) = s.get_mut(field).and_then(Value::as_array_mut) {
                    for c in list {
                        if let Some(c) = c.as_object_mut() {
                            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
                            if let Some(m) = mounts.as_array_mut() {
                                m.push(json!({"name": volume_name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
                            }
                        }
                    }
                }
            }
        }
    }
    let qos = qos_class(pod.get("spec").unwrap_or(&Value::Null));
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// The QoS class: Guaranteed when every container has equal cpu+memory requests and limits,
/// BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(res));
            let r = requests.and_then(|r| r.get(res));
            if l.is_none() || l != r {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Job defaults (batch/v1 `SetDefaults_Job` + the registry's `generateSelector`).
pub fn default_job(job: &mut Value, uid: &str) {
    let name = job
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let spec = job
        .as_object_mut()
        .expect("job object")
        .entry("spec")
        .or_insert_with(|| json!({}));
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    let completions_set = s.get("completions").is_some_and(|v| !v.is_null());
    let parallelism_set = s.get("parallelism").is_some_and(|v| !v.is_null());
    if !completions_set && !parallelism_set {
        s.insert("completions".into(), json!(1));
        s.insert("parallelism".into(), json!(1));
    }
    set_default(s, "parallelism", json!(1));
    if s.get("backoffLimitPerIndex").is_none_or(Value::is_null) {
        set_default(s, "backoffLimit", json!(6));
    }
    set_default(s, "completionMode", json!("NonIndexed"));
    set_default(s, "suspend", json!(false));
    if s.get("podFailurePolicy").is_none_or(Value::is_null) {
        set_default(s, "podReplacementPolicy", json!("TerminatingOrFailed"));
    } else {
        set_default(s, "podReplacementPolicy", json!("Failed"));
    }
    let manual = s
        .get("manualSelector")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // A template that is not an object ends the defaulting here.
    if !manual && !generate_selector(s, uid, &name) {
        return;
    }
    if let Some(pod_spec) = s.get_mut("template").and_then(|t| t.get_mut("spec")) {
        default_pod_spec(pod_spec);
    }
    // The Job's own labels default to the template labels when empty.
    let template_labels = job.pointer("/spec/template/metadata/labels").cloned();
    let meta = job["metadata"].as_object_mut().expect("metadata");
    let empty = meta
        .get("labels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if empty {
        if let Some(labels) = template_labels {
            meta.insert("labels".into(), labels);
        }
    }
    job["status"] = json!({});
}

/// The registry's `generateSelector`: select on the controller uid and put the job labels on
/// the template. False when the template is not an object.
fn generate_selector(s: &mut Map<String, Value>, uid: &str, name: &str) -> bool {
    s.insert("manualSelector".into(), json!(false));
    s.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = s.entry("template").or_insert_with(|| json!({}));
    let Some(t) = template.as_object_mut() else {
        return false;
    };
    let meta = t.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    let labels = meta
        .as_object_mut()
        .expect("template metadata")
        .entry("labels")
        .or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    if let Some(l) = labels.as_object_mut() {
        l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
        l.insert("batch.kubernetes.io/job-name".into(), json!(name));
        l.insert("controller-uid".into(), json!(uid));
        l.insert("job-name".into(), json!(name));
    }
    true
}

/// Namespace defaults.
pub fn default_namespace(namespace: &mut Value) {
    let name = namespace
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let meta = namespace["metadata"].as_object_mut().expect("metadata");
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if labels.is_null() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = json!(name);
    namespace["spec"] = json!({"finalizers": ["kubernetes"]});
    namespace["status"] = json!({"phase": "Active"});
}

/// apps/v1 Deployment and StatefulSet defaults (`SetDefaults_Deployment`/`_StatefulSet`): one
/// replica, the rolling-update strategies and history limits. Nothing reconciles them.
pub fn default_workload(object: &mut Value, kind: &str) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut set = |key: &str, value: Value| {
        spec.entry(key).or_insert(value);
    };
    set("replicas", json!(1));
    set("revisionHistoryLimit", json!(10));
    if kind == "Deployment" {
        set("progressDeadlineSeconds", json!(600));
        set(
            "strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
        );
    } else {
        set("podManagementPolicy", json!("OrderedReady"));
        set(
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
        );
        set(
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
    }
}

/// Secrets: fold `stringData` into base64 `data` and default `type`.
pub fn normalize_secret(secret: &mut Value) {
    use base64::Engine;
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if data.is_null() {
            *data = json!({});
        }
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            data[k.as_str()] =
                json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
        }
    }
    set_default(map, "type", json!("Opaque"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("alpine"), "Always");
        assert_eq!(default_pull_policy("alpine:latest"), "Always");
        assert_eq!(default_pull_policy("alpine:3.20"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/alpine"), "Always");
    }

    #[test]
    fn job_defaults_match_the_transcript() {
        let mut job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "alpine"}], "restartPolicy": "Never"}}}});
        default_job(&mut job, "u");
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["metadata"]["labels"]["job-name"], "j");
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u"
        );
    }
}
