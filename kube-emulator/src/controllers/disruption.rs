//! The disruption controller: keeps each PodDisruptionBudget's status current from the pods its
//! selector matches, as kube-controller-manager's does — `expectedPods`, `desiredHealthy`
//! (from `minAvailable`, or `maxUnavailable` against the controllers' scale), `currentHealthy`
//! (Ready pods not being deleted and not recently evicted), `disruptionsAllowed`,
//! `disruptedPods` (evictions not yet seen through, dropped after 2 minutes),
//! `observedGeneration` and the `DisruptionAllowed` condition; a budget it cannot compute is
//! failed safe (0 disruptions, `SyncFailed`). The eviction subresource reads this status.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::controllers::events::{self, Reporter};
use crate::controllers::pod_status::has_true_condition;
use crate::resources::{self, ResourceType};
use crate::selectors::LabelSelector;
use crate::time::{format_time, parse_time};

const MANAGER: &str = "kube-controller-manager";
/// How long an approved eviction keeps a pod out of `currentHealthy` (`DeletionTimeout`).
const DELETION_TIMEOUT_SECONDS: i64 = 120;

/// `policy/v1` PodDisruptionBudgets.
pub fn pdbs() -> &'static ResourceType {
    resources::by_plural("policy", "poddisruptionbudgets")
}

/// Run the disruption controller until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut recheck = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.resource.is(pdbs()) || change.resource.is(resources::pods()) => {
                    let (ns, _) = crate::store::object_key(&change.object);
                    dirty.insert(ns);
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => dirty.extend(namespaces_with_budgets(&cluster)),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick(), if !dirty.is_empty() => {
                for ns in dirty.drain() {
                    sync_namespace(&cluster, &ns);
                }
            }
            // Expire disruptedPods entries that were never followed by a deletion.
            _ = recheck.tick() => dirty.extend(namespaces_with_budgets(&cluster)),
            _ = cluster.shutdown.cancelled() => return,
        }
    }
}

fn namespaces_with_budgets(cluster: &Cluster) -> HashSet<String> {
    let (_, all) = cluster.store.list(pdbs(), None);
    all.iter().map(|p| crate::store::object_key(p).0).collect()
}

fn sync_namespace(cluster: &Cluster, namespace: &str) {
    let (_, budgets) = cluster.store.list(pdbs(), Some(namespace));
    if budgets.is_empty() {
        return;
    }
    let (_, pods) = cluster.store.list(resources::pods(), Some(namespace));
    for pdb in budgets {
        let selected: Vec<&Value> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| selects(&pdb, p))
            .collect();
        sync_budget(cluster, &pdb, &selected);
    }
}

/// Whether the budget's selector matches the pod (a missing selector matches nothing; an
/// empty one everything, as in policy/v1).
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    match pdb.pointer("/spec/selector") {
        Some(selector) if selector.is_object() => {
            LabelSelector::from_label_selector_object(selector).matches(pod)
        }
        _ => false,
    }
}

/// The status the controller computes for one budget, or the error it fails safe with.
struct Computed {
    expected: i64,
    desired: i64,
    current: i64,
    disrupted: Map<String, Value>,
}

fn sync_budget(cluster: &Cluster, pdb: &Value, pods: &[&Value]) {
    let (namespace, name) = crate::store::object_key(pdb);
    let status = match compute(cluster, pdb, pods) {
        Ok(c) => desired_status(pdb, &c),
        Err(err) => {
            record(
                cluster,
                pdb,
                "CalculateExpectedPodCountFailed",
                &format!("Failed to calculate the number of expected pods: {err}"),
            );
            fail_safe_status(pdb, &err)
        }
    };
    if pdb.get("status") == Some(&status) {
        return;
    }
    if pods.is_empty() {
        record(cluster, pdb, "NoPods", "No matching pods found");
    }
    let _ = cluster.registry.modify(
        pdbs(),
        &namespace,
        &name,
        &WriteContext::status(MANAGER),
        |p| p["status"] = status.clone(),
    );
}

fn record(cluster: &Cluster, pdb: &Value, reason: &str, message: &str) {
    let event_type = if reason == "NoPods" {
        "Normal"
    } else {
        "Warning"
    };
    events::record(
        cluster,
        pdb,
        event_type,
        reason,
        message,
        Reporter::ControllerManager,
        None,
    );
}

fn compute(cluster: &Cluster, pdb: &Value, pods: &[&Value]) -> Result<Computed, String> {
    let (expected, desired) = expected_and_desired(cluster, pdb, pods)?;
    let now = chrono::Utc::now();
    let mut disrupted = Map::new();
    let previous = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object);
    for pod in pods {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let name = crate::store::object_key(pod).1;
        let Some(at) = previous.and_then(|m| m.get(&name)) else {
            continue;
        };
        let fresh = at
            .as_str()
            .and_then(parse_time)
            .is_some_and(|t| t + chrono::Duration::seconds(DELETION_TIMEOUT_SECONDS) > now);
        if fresh {
            disrupted.insert(name, at.clone());
        }
    }
    let current = pods
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| !disrupted.contains_key(&crate::store::object_key(p).1))
        .filter(|p| has_true_condition(p, "Ready"))
        .count() as i64;
    Ok(Computed {
        expected,
        desired,
        current,
        disrupted,
    })
}

/// `getExpectedPodCount`: `(expectedPods, desiredHealthy)`.
fn expected_and_desired(
    cluster: &Cluster,
    pdb: &Value,
    pods: &[&Value],
) -> Result<(i64, i64), String> {
    if let Some(max_unavailable) = pdb.pointer("/spec/maxUnavailable") {
        let expected = expected_scale(cluster, pods)?;
        let unavailable = scaled_value(max_unavailable, expected)?;
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match pdb.pointer("/spec/minAvailable") {
        Some(Value::Number(n)) => Ok((pods.len() as i64, n.as_i64().unwrap_or(0))),
        Some(min) => {
            let expected = expected_scale(cluster, pods)?;
            Ok((expected, scaled_value(min, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// `intstr.GetScaledValueFromIntOrPercent` rounding up.
fn scaled_value(value: &Value, total: i64) -> Result<i64, String> {
    match value {
        Value::Number(n) => Ok(n.as_i64().unwrap_or(0)),
        Value::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .to_string()
                })?;
            Ok((percent * total + 99) / 100)
        }
        _ => Ok(0),
    }
}

/// `getExpectedScale`: the summed scale of the pods' controllers. Controllers without a scale
/// subresource are an error; pods without a controller are skipped (the real controller warns).
fn expected_scale(cluster: &Cluster, pods: &[&Value]) -> Result<i64, String> {
    let mut scales: BTreeMap<String, i64> = BTreeMap::new();
    for pod in pods {
        let Some(owner) = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
        else {
            continue;
        };
        let uid = owner["uid"].as_str().unwrap_or_default().to_string();
        if scales.contains_key(&uid) {
            continue;
        }
        let kind = owner["kind"].as_str().unwrap_or_default();
        let name = owner["name"].as_str().unwrap_or_default();
        let namespace = crate::store::object_key(pod).0;
        let scalable = match kind {
            "Deployment" => Some(resources::by_plural("apps", "deployments")),
            "StatefulSet" => Some(resources::by_plural("apps", "statefulsets")),
            _ => None,
        };
        let scale = match (
            scalable,
            resources::RESOURCES.iter().find(|r| r.kind == kind),
        ) {
            (Some(resource), _) => cluster.store.get(resource, &namespace, name).map(|o| {
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            }),
            (None, Some(resource)) => {
                return Err(format!(
                    "{} does not implement the scale subresource",
                    resource.qualified_plural()
                ));
            }
            (None, None) => None,
        };
        match scale {
            Some(scale) => scales.insert(uid, scale),
            None => {
                return Err(format!(
                    "found no controllers for pod {:?}",
                    crate::store::object_key(pod).1
                ))
            }
        };
    }
    Ok(scales.values().sum())
}

/// `updatePdbStatus` + `UpdateDisruptionAllowedCondition`.
fn desired_status(pdb: &Value, c: &Computed) -> Value {
    let mut allowed = c.current - c.desired;
    if c.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = pdb
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let mut status = json!({
        "currentHealthy": c.current,
        "desiredHealthy": c.desired,
        "expectedPods": c.expected,
        "disruptionsAllowed": allowed,
        "observedGeneration": generation,
        "conditions": pdb.pointer("/status/conditions").cloned().unwrap_or(json!([])),
    });
    if !c.disrupted.is_empty() {
        status["disruptedPods"] = Value::Object(c.disrupted.clone());
    }
    let (cond_status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(&mut status, cond_status, reason, "", &generation);
    status
}

/// `failSafe`: no disruptions, `DisruptionAllowed=False` with reason `SyncFailed`.
fn fail_safe_status(pdb: &Value, err: &str) -> Value {
    let mut status = pdb
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    status["disruptionsAllowed"] = json!(0);
    let generation = status
        .get("observedGeneration")
        .cloned()
        .unwrap_or(json!(0));
    set_condition(&mut status, "False", "SyncFailed", err, &generation);
    status
}

/// `meta.SetStatusCondition` for `DisruptionAllowed`: the transition time moves with the status.
pub fn set_condition(
    status: &mut Value,
    cond_status: &str,
    reason: &str,
    message: &str,
    generation: &Value,
) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let list = status["conditions"].as_array_mut().expect("conditions");
    let now = format_time(chrono::Utc::now());
    match list.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            if c["status"] != cond_status {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(cond_status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            c["observedGeneration"] = generation.clone();
        }
        None => list.push(
            json!({"type": "DisruptionAllowed", "status": cond_status, "reason": reason,
            "message": message, "observedGeneration": generation, "lastTransitionTime": now}),
        ),
    }
}
