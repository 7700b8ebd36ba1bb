//! The simulated default-scheduler: binds unscheduled pods to the single node when their
//! requests fit its allocatable cpu/memory/pods, otherwise marks them `PodScheduled=False`
//! `Unschedulable` with the real FitError message and a `FailedScheduling` event, retrying when
//! capacity frees up.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use super::events::{record, Reporter};
use super::pod_status::{is_terminal, set_condition};
use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::quantity::parse_quantity;
use crate::resources;
use crate::store::ChangeKind;

/// Sum of container requests (cpu cores, memory bytes) of a pod spec.
pub fn pod_requests(pod: &Value) -> (f64, f64) {
    let mut cpu = 0.0;
    let mut memory = 0.0;
    if let Some(list) = pod.pointer("/spec/containers").and_then(Value::as_array) {
        for c in list {
            let get = |res: &str| {
                c.pointer(&format!("/resources/requests/{res}"))
                    .map(crate::admission::validation::quantity_text)
                    .and_then(|q| parse_quantity(&q))
                    .unwrap_or(0.0)
            };
            cpu += get("cpu");
            memory += get("memory");
        }
    }
    (cpu, memory)
}

fn unscheduled(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .is_empty()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && !is_terminal(pod)
        && pod
            .pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .unwrap_or("default-scheduler")
            == "default-scheduler"
}

/// Bind a pod to `node` (the `pods/binding` subresource semantics).
pub fn bind_pod(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    node: &str,
) -> Result<Arc<Value>, ApiError> {
    let pods = resources::pods();
    let bound = cluster.store.update(pods, namespace, name, |pod| {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                pods,
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(existing) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                pods,
                name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            ));
        }
        let mut next = pod.clone();
        next["spec"]["nodeName"] = Value::from(node);
        set_condition(&mut next, "PodScheduled", "True", None, None);
        crate::admission::record_manager(&mut next, pods, &WriteContext::status("kube-scheduler"));
        Ok(Some(next))
    })?;
    record(
        cluster,
        &bound,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {namespace}/{name} to {node}"),
        Reporter::Scheduler,
        None,
    );
    Ok(bound)
}

/// Requests of the non-terminal pods bound to the node, kept up to date from store changes so
/// scheduling a pod does not rescan every pod.
#[derive(Default)]
struct NodeUsage {
    pods: HashMap<(String, String), (f64, f64)>,
    cpu: f64,
    memory: f64,
}

impl NodeUsage {
    fn observe(&mut self, node: &str, pod: &Value, removed: bool) {
        let key = crate::store::object_key(pod);
        let bound = pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
        if let Some((c, m)) = self.pods.remove(&key) {
            self.cpu -= c;
            self.memory -= m;
        }
        if bound && !removed && !is_terminal(pod) {
            let (c, m) = pod_requests(pod);
            self.cpu += c;
            self.memory += m;
            self.pods.insert(key, (c, m));
        }
    }
}

/// Why the pod does not fit, or `None` if it does.
fn fit_error(cluster: &Cluster, usage: &NodeUsage, pod: &Value) -> Option<String> {
    let capacity = &cluster.config.node_capacity;
    let (cpu_cap, mem_cap) = (
        parse_quantity(&capacity.cpu).unwrap_or(f64::MAX),
        parse_quantity(&capacity.memory).unwrap_or(f64::MAX),
    );
    let (cpu, mem) = pod_requests(pod);
    let mut reasons = Vec::new();
    if cpu > 0.0 && usage.cpu + cpu > cpu_cap + 1e-9 {
        reasons.push("1 Insufficient cpu");
    }
    if mem > 0.0 && usage.memory + mem > mem_cap + 0.5 {
        reasons.push("1 Insufficient memory");
    }
    if usage.pods.len() as u64 + 1 > u64::from(capacity.pods) {
        reasons.push("1 Too many pods");
    }
    if reasons.is_empty() {
        return None;
    }
    Some(format!(
        "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
        reasons.join(", ")
    ))
}

fn try_schedule(cluster: &Cluster, usage: &mut NodeUsage, namespace: &str, name: &str) -> bool {
    let Some(pod) = cluster.store.get(resources::pods(), namespace, name) else {
        return true;
    };
    if !unscheduled(&pod) {
        return true;
    }
    match fit_error(cluster, usage, &pod) {
        None => {
            match bind_pod(cluster, namespace, name, &cluster.config.node_name) {
                Ok(bound) => usage.observe(&cluster.config.node_name, &bound, false),
                Err(err) => tracing::debug!(%err, "binding failed"),
            }
            true
        }
        Some(message) => {
            let already = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "PodScheduled" && c["message"] == message.as_str())
                });
            if !already {
                let ctx = WriteContext::status("kube-scheduler");
                let _ = cluster
                    .registry
                    .modify(resources::pods(), namespace, name, &ctx, |p| {
                        set_condition(
                            p,
                            "PodScheduled",
                            "False",
                            Some("Unschedulable"),
                            Some(&message),
                        );
                    });
                record(
                    cluster,
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    &message,
                    Reporter::Scheduler,
                    None,
                );
            }
            false
        }
    }
}

/// Run the scheduler until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    // Pods to try now, and pods that did not fit (retried when capacity frees up).
    let mut fresh: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unschedulable: BTreeSet<(String, String)> = BTreeSet::new();
    let mut usage = NodeUsage::default();
    let node = cluster.config.node_name.clone();
    let (_, existing) = cluster.store.list(resources::pods(), None);
    for pod in &existing {
        usage.observe(&node, pod, false);
        if unscheduled(pod) {
            fresh.insert(crate::store::object_key(pod));
        }
    }
    let mut capacity_freed = false;
    loop {
        if capacity_freed {
            fresh.append(&mut unschedulable);
            capacity_freed = false;
        }
        for key in std::mem::take(&mut fresh) {
            if !try_schedule(&cluster, &mut usage, &key.0, &key.1) {
                unschedulable.insert(key);
            }
        }
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = cluster.shutdown.cancelled() => return,
        };
        match change {
            Ok(change) if change.resource.is(resources::pods()) => {
                usage.observe(&node, &change.object, change.kind == ChangeKind::Deleted);
                match change.kind {
                    ChangeKind::Deleted => {
                        unschedulable.remove(&crate::store::object_key(&change.object));
                        capacity_freed = true;
                    }
                    _ => {
                        let key = crate::store::object_key(&change.object);
                        if unscheduled(&change.object) {
                            if !unschedulable.contains(&key) {
                                fresh.insert(key);
                            }
                        } else {
                            unschedulable.remove(&key);
                            if is_terminal(&change.object)
                                && !change.previous.as_deref().is_some_and(is_terminal)
                            {
                                capacity_freed = true;
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                usage = NodeUsage::default();
                let (_, pods) = cluster.store.list(resources::pods(), None);
                for pod in &pods {
                    usage.observe(&node, pod, false);
                    if unscheduled(pod) {
                        fresh.insert(crate::store::object_key(pod));
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
