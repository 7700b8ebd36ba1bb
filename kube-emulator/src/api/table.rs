//! `meta.k8s.io/v1` `Table` rendering (what `kubectl get` asks for): the server-side printer
//! columns for pods (NAME READY STATUS RESTARTS AGE ...), jobs (STATUS COMPLETIONS DURATION AGE),
//! events, and `NAME`/`CREATED AT` for everything else.

use serde_json::{json, Value};

use crate::resources::ResourceType;
use crate::time::parse_time;

/// Renders one row of cells for an object.
type RowRenderer = fn(&Value) -> Vec<Value>;

fn column(name: &str, kind: &str, format: &str, priority: u32) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": name, "priority": priority})
}

/// kubectl's `HumanDuration`-style age.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 600 {
        let (m, r) = (s / 60, s % 60);
        if r == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{r}s")
        }
    } else if s < 3 * 3600 {
        format!("{}m", s / 60)
    } else if s < 8 * 3600 {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if m == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{m}m")
        }
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

fn age_of(object: &Value) -> String {
    object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .map(|t| human_age((chrono::Utc::now() - t).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn pod_row(pod: &Value) -> Vec<Value> {
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or_else(|| pod.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Unknown")
        .to_string();
    for s in statuses.iter().rev() {
        if let Some(r) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(t) = s.pointer("/state/terminated") {
            reason = match t["reason"].as_str() {
                Some(r) if !r.is_empty() => r.to_string(),
                _ => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        }
    }
    let init_statuses = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let init_done = init_statuses
        .iter()
        .filter(|s| s.pointer("/state/terminated/exitCode") == Some(&json!(0)))
        .count();
    if init_done < init_statuses.len() && !matches!(reason.as_str(), "Failed" | "Succeeded") {
        reason = format!("Init:{init_done}/{}", init_statuses.len());
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    vec![
        pod["metadata"]["name"].clone(),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age_of(pod)),
        pod.pointer("/status/podIP")
            .cloned()
            .unwrap_or(json!("<none>")),
        pod.pointer("/spec/nodeName")
            .cloned()
            .unwrap_or(json!("<none>")),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn has_condition(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

fn job_row(job: &Value) -> Vec<Value> {
    let status = if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(job, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let succeeded = job
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .map_or_else(
            || format!("{succeeded}/1 of 1"),
            |c| format!("{succeeded}/{c}"),
        );
    let start = job
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .and_then(parse_time);
    let end = job
        .pointer("/status/completionTime")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .unwrap_or_else(chrono::Utc::now);
    let duration = start.map_or_else(String::new, |s| human_age((end - s).num_seconds()));
    let containers = job
        .pointer("/spec/template/spec/containers")
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
    let selector = job
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    vec![
        job["metadata"]["name"].clone(),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age_of(job)),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(selector),
    ]
}

fn event_row(event: &Value) -> Vec<Value> {
    let last = event
        .get("lastTimestamp")
        .and_then(Value::as_str)
        .or_else(|| event.get("eventTime").and_then(Value::as_str))
        .and_then(parse_time)
        .map(|t| human_age((chrono::Utc::now() - t).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into());
    let object = format!(
        "{}/{}",
        event
            .pointer("/involvedObject/kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase(),
        event
            .pointer("/involvedObject/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    vec![
        json!(last),
        event.get("type").cloned().unwrap_or(json!("")),
        event.get("reason").cloned().unwrap_or(json!("")),
        json!(object),
        event.get("message").cloned().unwrap_or(json!("")),
    ]
}

/// Build a Table for `objects`. `include_object` embeds PartialObjectMetadata per row (kubectl's default).
pub fn table<T: std::borrow::Borrow<Value>>(
    resource: &ResourceType,
    objects: &[T],
    _rv: Option<u64>,
    include_object: bool,
) -> Value {
    let (columns, row_fn): (Vec<Value>, RowRenderer) = match (resource.group, resource.plural) {
        ("", "pods") => (
            vec![
                column("Name", "string", "name", 0),
                column("Ready", "string", "", 0),
                column("Status", "string", "", 0),
                column("Restarts", "string", "", 0),
                column("Age", "string", "", 0),
                column("IP", "string", "", 1),
                column("Node", "string", "", 1),
                column("Nominated Node", "string", "", 1),
                column("Readiness Gates", "string", "", 1),
            ],
            pod_row,
        ),
        ("batch", "jobs") => (
            vec![
                column("Name", "string", "name", 0),
                column("Status", "string", "", 0),
                column("Completions", "string", "", 0),
                column("Duration", "string", "", 0),
                column("Age", "date", "", 0),
                column("Containers", "string", "", 1),
                column("Images", "string", "", 1),
                column("Selector", "string", "", 1),
            ],
            job_row,
        ),
        ("", "events") => (
            vec![
                column("Last Seen", "string", "", 0),
                column("Type", "string", "", 0),
                column("Reason", "string", "", 0),
                column("Object", "string", "", 0),
                column("Message", "string", "", 0),
            ],
            event_row,
        ),
        ("", "namespaces") => (
            vec![
                column("Name", "string", "name", 0),
                column("Status", "string", "", 0),
                column("Age", "string", "", 0),
            ],
            |o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o.pointer("/status/phase").cloned().unwrap_or(json!("")),
                    json!(age_of(o)),
                ]
            },
        ),
        ("", "nodes") => (
            vec![
                column("Name", "string", "name", 0),
                column("Status", "string", "", 0),
                column("Roles", "string", "", 0),
                column("Age", "string", "", 0),
                column("Version", "string", "", 0),
            ],
            |o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!("Ready"),
                    json!("control-plane"),
                    json!(age_of(o)),
                    o.pointer("/status/nodeInfo/kubeletVersion")
                        .cloned()
                        .unwrap_or(json!("")),
                ]
            },
        ),
        _ => (
            vec![
                column("Name", "string", "name", 0),
                column("Created At", "date", "", 0),
            ],
            |o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                ]
            },
        ),
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let o: &Value = o.borrow();
            let mut row = json!({"cells": row_fn(o)});
            if include_object {
                row["object"] = json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"].clone()
                });
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows
    })
}
