//! The server-side printers behind `Table` responses: for each served kind the column
//! definitions and row cells kube-apiserver's printers produce (always the wide set, as the
//! apiserver generates them; kubectl hides priority-1 columns unless `-o wide`). Kinds without a
//! printer on a real server (Roles, ClusterRoles, ...) get the default `Name`/`Created At` table.

use serde_json::{json, Value};

use crate::resources::ResourceType;
use crate::time::parse_time;

/// Renders one row's cells for an object.
pub type RowRenderer = fn(&Value) -> Vec<Value>;

fn column(name: &str, kind: &str, priority: u32) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": name, "priority": priority})
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (minutes, hours, days) = (s / 60, s / 3600, s / 86400);
    let with_rest = |major: i64, unit: &str, minor: i64, minor_unit: &str| {
        if minor == 0 {
            format!("{major}{unit}")
        } else {
            format!("{major}{unit}{minor}{minor_unit}")
        }
    };
    if s < 120 {
        format!("{s}s")
    } else if minutes < 10 {
        with_rest(minutes, "m", s % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with_rest(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with_rest(days, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        with_rest(days / 365, "y", days % 365, "d")
    } else {
        format!("{}y", days / 365)
    }
}

/// Time since an RFC 3339 timestamp, or `<unknown>`.
pub fn since(timestamp: Option<&Value>) -> String {
    timestamp
        .and_then(Value::as_str)
        .and_then(parse_time)
        .map(|t| human_age((chrono::Utc::now() - t).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn age_of(object: &Value) -> Value {
    json!(since(object.pointer("/metadata/creationTimestamp")))
}

fn text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn len_of(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).map_or(0, |v| match v {
        Value::Object(m) => m.len() as i64,
        Value::Array(a) => a.len() as i64,
        _ => 0,
    })
}

/// `labels.FormatLabels`: sorted `k=v` pairs, `<none>` when empty.
pub fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `metav1.LabelSelector` as `labels.Selector.String()` (requirements sorted by key); empty
/// for an empty or missing selector.
pub fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr["key"].as_str().unwrap_or_default().to_string();
        let mut values: Vec<&str> = expr["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        let rendered = match expr["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        };
        requirements.push((key, rendered));
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty.
fn format_label_selector(selector: Option<&Value>) -> String {
    let text = selector_string(selector);
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

/// Container names and images, comma-joined (`layoutContainerCells`).
fn container_cells(object: &Value, pointer: &str) -> (Value, Value) {
    let containers = object
        .pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let images: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// The printers registered on a real apiserver for the kinds served here, by storage table.
/// Columns are comma-separated; `*` marks priority 1 (shown with `-o wide`), `#` an integer.
static PRINTERS: &[(&str, &str, &str, RowRenderer)] = &[
    ("", "pods", "Name,Ready,Status,Restarts,Age,IP*,Node*,Nominated Node*,Readiness Gates*", pod_row),
    ("batch", "jobs", "Name,Status,Completions,Duration,Age,Containers*,Images*,Selector*", job_row),
    ("", "events", "Last Seen,Type,Reason,Object,Subobject*,Source*,Message,First Seen*,Count*,Name*", event_row),
    ("", "namespaces", "Name,Status,Age", namespace_row),
    ("", "nodes", "Name,Status,Roles,Age,Version,Internal-IP*,External-IP*,OS-Image*,Kernel-Version*,Container-Runtime*", node_row),
    ("", "secrets", "Name,Type,Data,Age", secret_row),
    ("", "configmaps", "Name,Data,Age", config_map_row),
    ("", "serviceaccounts", "Name,Secrets,Age", service_account_row),
    ("coordination.k8s.io", "leases", "Name,Holder,Age", lease_row),
    ("apps", "deployments", "Name,Ready,Up-to-date,Available,Age,Containers*,Images*,Selector*", deployment_row),
    ("apps", "statefulsets", "Name,Ready,Age,Containers*,Images*", stateful_set_row),
    ("", "services", "Name,Type,Cluster-IP,External-IP,Port(s),Age,Selector*", service_row),
    ("", "persistentvolumeclaims", "Name,Status,Volume,Capacity,Access Modes,StorageClass,VolumeAttributesClass,Age,VolumeMode*", pvc_row),
    ("autoscaling", "horizontalpodautoscalers", "Name,Reference,Targets,MinPods,MaxPods,Replicas,Age", hpa_row),
    ("policy", "poddisruptionbudgets", "Name,Min Available,Max Unavailable,Allowed Disruptions#,Age", pdb_row),
    ("networking.k8s.io", "networkpolicies", "Name,Pod-Selector,Age", network_policy_row),
    ("rbac.authorization.k8s.io", "rolebindings", "Name,Role,Age,Users*,Groups*,ServiceAccounts*", binding_row),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "Name,Role,Age,Users*,Groups*,ServiceAccounts*", binding_row),
];

fn parse_columns(spec: &str) -> Vec<Value> {
    spec.split(',')
        .map(|c| {
            let priority = u32::from(c.ends_with('*'));
            let kind = if c.ends_with('#') {
                "integer"
            } else {
                "string"
            };
            column(c.trim_end_matches(['*', '#']), kind, priority)
        })
        .collect()
}

/// Column definitions and the row renderer for a resource (`events.k8s.io` Events share the
/// core printer, as they share storage on a real server).
pub fn printer(resource: &ResourceType) -> (Vec<Value>, RowRenderer) {
    let key = resource.table_key();
    match PRINTERS.iter().find(|(g, p, _, _)| (*g, *p) == key) {
        Some((_, _, spec, row)) => (parse_columns(spec), *row),
        None => (
            vec![
                column("Name", "string", 0),
                json!({"name": "Created At", "type": "date", "format": "", "description": "Created At", "priority": 0}),
            ],
            default_row,
        ),
    }
}

fn non_empty(field: Option<&Value>) -> Option<&Value> {
    field.filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
}

/// `printEvent` (wide): last seen, type, reason, object, subobject, source, message, first
/// seen, count, name.
fn event_row(event: &Value) -> Vec<Value> {
    let first = match non_empty(event.get("firstTimestamp")) {
        Some(t) => since(Some(t)),
        None => since(non_empty(event.get("eventTime"))),
    };
    let mut last = match non_empty(event.get("lastTimestamp")) {
        Some(t) => since(Some(t)),
        None => first.clone(),
    };
    let mut count = int(event, "/count");
    if let Some(series) = event.get("series").filter(|s| s.is_object()) {
        last = since(series.get("lastObservedTime"));
        count = int(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = text(event, "/involvedObject/kind").to_lowercase();
    let name = text(event, "/involvedObject/name");
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let component = [
        text(event, "/source/component"),
        text(event, "/reportingComponent"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    let instance = [
        text(event, "/source/host"),
        text(event, "/reportingInstance"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(target),
        json!(text(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(text(event, "/message").trim()),
        json!(first),
        json!(count),
        json!(text(event, "/metadata/name")),
    ]
}

fn namespace_row(ns: &Value) -> Vec<Value> {
    vec![
        json!(text(ns, "/metadata/name")),
        json!(text(ns, "/status/phase")),
        age_of(ns),
    ]
}

fn node_row(node: &Value) -> Vec<Value> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    let mut status = vec![match ready {
        Some(c) if c["status"] == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    }];
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
                    Some(role) if !role.is_empty() => Some(role.to_string()),
                    _ if k == "kubernetes.io/role" => v.as_str().map(String::from),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let address = |kind: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|a| a["type"] == kind))
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |field: &str| {
        let value = text(node, &format!("/status/nodeInfo/{field}"));
        if value.is_empty() {
            "<unknown>".to_string()
        } else {
            value
        }
    };
    vec![
        json!(text(node, "/metadata/name")),
        json!(status.join(",")),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        age_of(node),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn secret_row(secret: &Value) -> Vec<Value> {
    vec![
        json!(text(secret, "/metadata/name")),
        json!(text(secret, "/type")),
        json!(len_of(secret, "/data")),
        age_of(secret),
    ]
}

fn config_map_row(cm: &Value) -> Vec<Value> {
    vec![
        json!(text(cm, "/metadata/name")),
        json!(len_of(cm, "/data") + len_of(cm, "/binaryData")),
        age_of(cm),
    ]
}

fn service_account_row(sa: &Value) -> Vec<Value> {
    vec![
        json!(text(sa, "/metadata/name")),
        json!(len_of(sa, "/secrets")),
        age_of(sa),
    ]
}

fn lease_row(lease: &Value) -> Vec<Value> {
    vec![
        json!(text(lease, "/metadata/name")),
        json!(text(lease, "/spec/holderIdentity")),
        age_of(lease),
    ]
}

fn deployment_row(d: &Value) -> Vec<Value> {
    let (names, images) = container_cells(d, "/spec/template/spec/containers");
    vec![
        json!(text(d, "/metadata/name")),
        json!(format!(
            "{}/{}",
            int(d, "/status/readyReplicas"),
            int(d, "/spec/replicas")
        )),
        json!(int(d, "/status/updatedReplicas")),
        json!(int(d, "/status/availableReplicas")),
        age_of(d),
        names,
        images,
        json!(selector_string(d.pointer("/spec/selector"))),
    ]
}

fn stateful_set_row(s: &Value) -> Vec<Value> {
    let (names, images) = container_cells(s, "/spec/template/spec/containers");
    vec![
        json!(text(s, "/metadata/name")),
        json!(format!(
            "{}/{}",
            int(s, "/status/readyReplicas"),
            int(s, "/spec/replicas")
        )),
        age_of(s),
        names,
        images,
    ]
}

fn service_row(svc: &Value) -> Vec<Value> {
    let kind = text(svc, "/spec/type");
    let cluster_ip = svc
        .pointer("/spec/clusterIPs/0")
        .and_then(Value::as_str)
        .unwrap_or("<none>")
        .to_string();
    let external: Vec<&str> = svc
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let external_ip = match kind.as_str() {
        "ClusterIP" | "NodePort" | "" if external.is_empty() => "<none>".to_string(),
        "LoadBalancer" if external.is_empty() => "<pending>".to_string(),
        "ExternalName" => text(svc, "/spec/externalName"),
        _ => external.join(","),
    };
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    vec![
        json!(text(svc, "/metadata/name")),
        json!(kind),
        json!(cluster_ip),
        json!(external_ip),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        age_of(svc),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
}

fn pvc_row(pvc: &Value) -> Vec<Value> {
    let phase = if pvc.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating".to_string()
    } else {
        text(pvc, "/status/phase")
    };
    let bound = !text(pvc, "/spec/volumeName").is_empty();
    let capacity = if bound {
        text(pvc, "/status/capacity/storage")
    } else {
        String::new()
    };
    let modes: Vec<String> = if bound {
        pvc.pointer("/status/accessModes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|m| match m {
                "ReadWriteOnce" => "RWO".to_string(),
                "ReadOnlyMany" => "ROX".to_string(),
                "ReadWriteMany" => "RWX".to_string(),
                "ReadWriteOncePod" => "RWOP".to_string(),
                other => other.to_string(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let unset = |v: String| {
        if v.is_empty() {
            "<unset>".to_string()
        } else {
            v
        }
    };
    vec![
        json!(text(pvc, "/metadata/name")),
        json!(phase),
        json!(text(pvc, "/spec/volumeName")),
        json!(capacity),
        json!(modes.join(",")),
        json!(text(pvc, "/spec/storageClassName")),
        json!(unset(text(pvc, "/spec/volumeAttributesClassName"))),
        age_of(pvc),
        json!(unset(text(pvc, "/spec/volumeMode"))),
    ]
}

fn hpa_row(hpa: &Value) -> Vec<Value> {
    let targets: Vec<String> = hpa
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| match m["type"].as_str() {
            Some("Resource") => {
                let target = m
                    .pointer("/resource/target/averageUtilization")
                    .and_then(Value::as_i64)
                    .map_or("<auto>".to_string(), |u| format!("{u}%"));
                format!("{}: <unknown>/{target}", text(m, "/resource/name"))
            }
            _ => "<unknown>/<unknown>".to_string(),
        })
        .collect();
    let min = hpa
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .map_or("<unset>".to_string(), |m| m.to_string());
    let reference = format!(
        "{}/{}",
        text(hpa, "/spec/scaleTargetRef/kind"),
        text(hpa, "/spec/scaleTargetRef/name")
    );
    let targets = match targets.len() {
        0 => "<none>".to_string(),
        1 | 2 => targets.join(", "),
        n => format!("{} + {} more...", targets[..2].join(", "), n - 2),
    };
    vec![
        json!(text(hpa, "/metadata/name")),
        json!(reference),
        json!(targets),
        json!(min),
        json!(int(hpa, "/spec/maxReplicas")),
        json!(int(hpa, "/status/currentReplicas")),
        age_of(hpa),
    ]
}

fn int_or_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".to_string(),
    }
}

fn pdb_row(pdb: &Value) -> Vec<Value> {
    vec![
        json!(text(pdb, "/metadata/name")),
        json!(int_or_string(pdb.pointer("/spec/minAvailable"))),
        json!(int_or_string(pdb.pointer("/spec/maxUnavailable"))),
        json!(int(pdb, "/status/disruptionsAllowed")),
        age_of(pdb),
    ]
}

fn network_policy_row(np: &Value) -> Vec<Value> {
    vec![
        json!(text(np, "/metadata/name")),
        json!(format_label_selector(np.pointer("/spec/podSelector"))),
        age_of(np),
    ]
}

fn binding_row(binding: &Value) -> Vec<Value> {
    let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
    let of_kind = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| match (kind, s["namespace"].as_str()) {
                ("ServiceAccount", Some(ns)) => format!("{ns}/{}", text(s, "/name")),
                _ => text(s, "/name"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(text(binding, "/metadata/name")),
        json!(format!(
            "{}/{}",
            text(binding, "/roleRef/kind"),
            text(binding, "/roleRef/name")
        )),
        age_of(binding),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}

fn default_row(object: &Value) -> Vec<Value> {
    vec![
        json!(text(object, "/metadata/name")),
        object
            .pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    ]
}

fn has_condition(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .is_some_and(|c| c["status"] == "True")
}

/// `printJob`: status from the conditions (in the printer's order), completions, duration.
fn job_row(job: &Value) -> Vec<Value> {
    let status = if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(job, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let succeeded = int(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(job, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time = |field: &str| {
        job.pointer(&format!("/status/{field}"))
            .and_then(Value::as_str)
            .and_then(parse_time)
    };
    let duration = match (time("startTime"), time("completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_age((chrono::Utc::now() - start).num_seconds()),
        (Some(start), Some(end)) => human_age((end - start).num_seconds()),
    };
    let (names, images) = container_cells(job, "/spec/template/spec/containers");
    vec![
        json!(text(job, "/metadata/name")),
        json!(status),
        json!(completions),
        json!(duration),
        age_of(job),
        names,
        images,
        json!(format_label_selector(job.pointer("/spec/selector"))),
    ]
}

/// Container statuses of a pod (`containerStatuses` or `initContainerStatuses`).
fn statuses(pod: &Value, field: &str) -> Vec<Value> {
    pod.pointer(&format!("/status/{field}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The latest `lastState.terminated.finishedAt` of the given statuses.
fn last_restart(statuses: &[Value]) -> Option<chrono::DateTime<chrono::Utc>> {
    statuses
        .iter()
        .filter_map(|s| s.pointer("/lastState/terminated/finishedAt"))
        .filter_map(Value::as_str)
        .filter_map(parse_time)
        .max()
}

/// A terminated state's reason, or `Signal:N`/`ExitCode:N` when it has none.
fn terminated_reason(terminated: &Value) -> String {
    match terminated["reason"].as_str().filter(|r| !r.is_empty()) {
        Some(reason) => reason.to_string(),
        None => match terminated["signal"].as_i64().filter(|s| *s != 0) {
            Some(signal) => format!("Signal:{signal}"),
            None => format!("ExitCode:{}", terminated["exitCode"].as_i64().unwrap_or(0)),
        },
    }
}

/// The `Init:...` status while init containers run, if they do.
fn init_reason(pod: &Value) -> Option<String> {
    let init = statuses(pod, "initContainerStatuses");
    let total = len_of(pod, "/spec/initContainers");
    for (i, status) in init.iter().enumerate() {
        let terminated = status.pointer("/state/terminated");
        if terminated.is_some_and(|t| t["exitCode"] == 0) {
            continue;
        }
        let waiting = status
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        return Some(match (terminated, waiting) {
            (Some(t), _) => format!("Init:{}", terminated_reason(t)),
            (None, Some(reason)) => format!("Init:{reason}"),
            (None, None) => format!("Init:{i}/{total}"),
        });
    }
    None
}

/// `printPod`: READY, STATUS (the same precedence as the real printer), RESTARTS with the time
/// of the last restart, and the wide columns.
fn pod_row(pod: &Value) -> Vec<Value> {
    let phase = text(pod, "/status/phase");
    let reason = non_empty(pod.pointer("/status/reason"))
        .and_then(Value::as_str)
        .map_or(phase.clone(), String::from);
    let init = statuses(pod, "initContainerStatuses");
    let (mut reason, restarts, last, ready) = match init_reason(pod) {
        Some(init_status) if !has_condition(pod, "Initialized") => {
            let restarts = init.iter().map(|s| s["restartCount"].as_i64().unwrap_or(0));
            (init_status, restarts.sum(), last_restart(&init), 0)
        }
        _ => container_summary(pod, reason),
    };
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        if text(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let restarts = match last.filter(|_| restarts != 0) {
        Some(at) => format!(
            "{restarts} ({} ago)",
            human_age((chrono::Utc::now() - at).num_seconds())
        ),
        None => restarts.to_string(),
    };
    let or_none = |v: String| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v
        }
    };
    let pod_ip = pod
        .pointer("/status/podIPs/0/ip")
        .or_else(|| pod.pointer("/status/podIP"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{}", len_of(pod, "/spec/containers"))),
        json!(reason),
        json!(restarts),
        age_of(pod),
        json!(or_none(pod_ip)),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates(pod)),
    ]
}

/// The app containers' part of `printPod`: status reason (last container first), restarts,
/// last restart time and ready count.
fn container_summary(
    pod: &Value,
    mut reason: String,
) -> (String, i64, Option<chrono::DateTime<chrono::Utc>>, usize) {
    let containers = statuses(pod, "containerStatuses");
    let (mut restarts, mut ready, mut running) = (0, 0, false);
    for status in containers.iter().rev() {
        restarts += status["restartCount"].as_i64().unwrap_or(0);
        if let Some(waiting) = non_empty(status.pointer("/state/waiting/reason")) {
            reason = waiting.as_str().unwrap_or_default().to_string();
        } else if let Some(terminated) = status.pointer("/state/terminated") {
            reason = terminated_reason(terminated);
        } else if status["ready"] == true && status.pointer("/state/running").is_some() {
            running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && running {
        reason = if has_condition(pod, "Ready") {
            "Running"
        } else {
            "NotReady"
        }
        .into();
    }
    (reason, restarts, last_restart(&containers), ready)
}

fn readiness_gates(pod: &Value) -> String {
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if gates.is_empty() {
        return "<none>".into();
    }
    let met = gates
        .iter()
        .filter(|g| has_condition(pod, g["conditionType"].as_str().unwrap_or_default()))
        .count();
    format!("{met}/{}", gates.len())
}

/// Row conditions kubectl uses for completed pods (`podSuccessConditions`/`podFailedConditions`).
pub fn row_conditions(resource: &ResourceType, object: &Value) -> Option<Value> {
    if resource.table_key() != ("", "pods") {
        return None;
    }
    let (reason, message) = match object.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded") => ("Succeeded", "The pod has completed successfully."),
        Some("Failed") => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_apimachinery() {
        assert_eq!(human_age(-5), "<invalid>");
        assert_eq!(human_age(-1), "0s");
        assert_eq!(human_age(119), "119s");
        assert_eq!(human_age(125), "2m5s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 3600 + 60), "3h1m");
        assert_eq!(human_age(9 * 3600), "9h");
        assert_eq!(human_age(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_age(30 * 86400), "30d");
        assert_eq!(human_age(3 * 365 * 86400 + 86400), "3y1d");
    }

    #[test]
    fn selectors_render_sorted_like_labels_selector_string() {
        let selector = json!({"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}]});
        assert_eq!(selector_string(Some(&selector)), "a=1,b=2,c in (x,y)");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_labels(Some(&json!({"z": "1", "app": "web"}))),
            "app=web,z=1"
        );
    }

    #[test]
    fn events_render_every_wide_cell() {
        let event = json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{main}"},
            "reason": "Started", "type": "Normal", "message": " Started container main ", "count": 3,
            "source": {"component": "kubelet", "host": "node"}});
        let cells = event_row(&event);
        assert_eq!(
            cells.len(),
            printer(crate::resources::core_events()).0.len()
        );
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[5], "kubelet, node");
        assert_eq!(cells[6], "Started container main");
        assert_eq!(cells[8], 3);
    }
}
