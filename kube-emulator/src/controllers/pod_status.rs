//! Helpers for editing Pod and Job status the way the kubelet and controllers do: conditions
//! whose `lastTransitionTime` only moves when the status flips, container state records, and
//! the terminal-phase test.

use serde_json::{json, Value};

use crate::time::now_rfc3339;

/// Set (or update) a condition in `status.conditions`. `lastTransitionTime` changes only when
/// the condition's status changes. Pod conditions carry `lastProbeTime: null` like the kubelet's.
pub fn set_condition(
    object: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = json!({});
    }
    let is_pod = object["kind"] == "Pod";
    let generation = object
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let conditions = object["status"]
        .as_object_mut()
        .expect("status object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("conditions array");
    let now = now_rfc3339();
    let mut condition = json!({"type": kind, "status": status});
    condition["lastProbeTime"] = if is_pod { Value::Null } else { json!(now) };
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    if is_pod {
        // Kubelets since v1.33 stamp the pod generation they observed on each condition.
        condition["observedGeneration"] = generation.clone();
    }
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(existing) => {
            let transition = if existing["status"] == status {
                existing["lastTransitionTime"].clone()
            } else {
                json!(now)
            };
            if !is_pod {
                // Job conditions keep their probe time unless something changes.
                if existing["status"] == status && existing.get("reason") == condition.get("reason")
                {
                    condition["lastProbeTime"] = existing["lastProbeTime"].clone();
                }
            }
            condition["lastTransitionTime"] = transition;
            *existing = condition;
        }
        None => {
            condition["lastTransitionTime"] = json!(now);
            list.push(condition);
        }
    }
    if is_pod {
        // The kubelet's order: PodReadyToStartContainers, Initialized, Ready, ContainersReady,
        // PodScheduled, then anything else (e.g. DisruptionTarget).
        let rank = |c: &Value| match c["type"].as_str().unwrap_or_default() {
            "PodReadyToStartContainers" => 0,
            "Initialized" => 1,
            "Ready" => 2,
            "ContainersReady" => 3,
            "PodScheduled" => 4,
            _ => 5,
        };
        list.sort_by_key(rank);
    }
}

/// Whether a condition of `kind` is `True`.
pub fn has_true_condition(object: &Value, kind: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

/// `Succeeded` or `Failed`.
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    )
}

/// The pod's `status.phase`.
pub fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}
