//! `spec.podFailurePolicy`: which rule, if any, matches a failed pod, and what it says.

use serde_json::Value;

/// What `spec.podFailurePolicy` says about a failed pod.
#[derive(Debug, PartialEq)]
pub(super) enum PolicyAction {
    /// Counts toward `backoffLimit` (also the default without a policy).
    Count,
    /// Not counted; the pod is replaced.
    Ignore,
    /// Fail the Job at once with this message.
    FailJob(String),
}

/// Evaluate `spec.podFailurePolicy` rules in order (job controller `pod_failure_policy.go`).
pub(super) fn pod_failure_policy_action(job: &Value, pod: &Value) -> PolicyAction {
    let Some(rules) = job
        .pointer("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array)
    else {
        return PolicyAction::Count;
    };
    let (ns, name) = crate::store::object_key(pod);
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, rule) in rules.iter().enumerate() {
        let action = rule["action"].as_str().unwrap_or("Count");
        let mut matched: Option<String> = None;
        if let Some(on_exit) = rule.get("onExitCodes") {
            let values: Vec<i64> = on_exit["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let only = on_exit["containerName"].as_str();
            let negate = on_exit["operator"] == "NotIn";
            for status in &statuses {
                let cname = status["name"].as_str().unwrap_or_default();
                if only.is_some_and(|o| o != cname) {
                    continue;
                }
                let Some(code) = status
                    .pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                if values.contains(&code) != negate {
                    matched = Some(format!(
                        "Container {cname} for pod {ns}/{name} failed with exit code {code} matching {action} rule at index {index}"
                    ));
                    break;
                }
            }
        }
        if let Some(patterns) = rule.get("onPodConditions").and_then(Value::as_array) {
            for pattern in patterns {
                let kind = pattern["type"].as_str().unwrap_or_default();
                let wanted = pattern["status"].as_str().unwrap_or("True");
                let present = pod
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == wanted));
                if present {
                    matched = Some(format!(
                        "Pod {ns}/{name} has condition {kind} matching {action} rule at index {index}"
                    ));
                    break;
                }
            }
        }
        if let Some(message) = matched {
            return match action {
                "FailJob" => PolicyAction::FailJob(message),
                "Ignore" => PolicyAction::Ignore,
                _ => PolicyAction::Count,
            };
        }
    }
    PolicyAction::Count
}
