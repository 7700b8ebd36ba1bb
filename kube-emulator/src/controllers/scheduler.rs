//! The simulated default-scheduler: binds unscheduled pods to the first Node whose allocatable
//! cpu/memory/pods fits their requests (the emulator's node, then the ones the node autoscaler
//! adds), otherwise marks them `PodScheduled=False` `Unschedulable` with the real FitError
//! message and a `FailedScheduling` event, retrying when capacity frees up or a node registers.

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

/// A node the scheduler may bind to: its allocatable and the requests of the non-terminal
/// pods bound to it.
struct NodeSlot {
    name: String,
    cpu: f64,
    memory: f64,
    pods: u64,
    used_cpu: f64,
    used_memory: f64,
    used_pods: u64,
}

impl NodeSlot {
    fn from_node(node: &Value) -> Option<Self> {
        let name = node.pointer("/metadata/name")?.as_str()?.to_string();
        let allocatable = |key: &str| {
            node.pointer(&format!("/status/allocatable/{key}"))
                .map(crate::admission::validation::quantity_text)
                .and_then(|q| parse_quantity(&q))
        };
        Some(NodeSlot {
            name,
            cpu: allocatable("cpu").unwrap_or(f64::MAX),
            memory: allocatable("memory").unwrap_or(f64::MAX),
            pods: allocatable("pods").map_or(u64::MAX, |pods| pods as u64),
            used_cpu: 0.0,
            used_memory: 0.0,
            used_pods: 0,
        })
    }

    /// Why `requests` do not fit here (the scheduler's filter reasons), empty if they do.
    fn misfits(&self, (cpu, memory): (f64, f64)) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if cpu > 0.0 && self.used_cpu + cpu > self.cpu + 1e-9 {
            reasons.push("Insufficient cpu");
        }
        if memory > 0.0 && self.used_memory + memory > self.memory + 0.5 {
            reasons.push("Insufficient memory");
        }
        if self.used_pods + 1 > self.pods {
            reasons.push("Too many pods");
        }
        reasons
    }
}

/// The schedulable nodes and what is bound to them, kept up to date from store changes so
/// scheduling a pod does not rescan every pod.
#[derive(Default)]
struct NodeUsage {
    nodes: Vec<NodeSlot>,
    /// Pod key -> (node index, cpu, memory) of pods counted on a node.
    pods: HashMap<(String, String), (usize, f64, f64)>,
}

impl NodeUsage {
    /// Every Node in the store and every pod bound to one.
    fn from_store(cluster: &Cluster) -> Self {
        let (_, nodes) = cluster.store.list(resources::nodes(), None);
        let mut usage = NodeUsage {
            nodes: nodes
                .iter()
                .filter_map(|n| NodeSlot::from_node(n))
                .collect(),
            pods: HashMap::new(),
        };
        let (_, pods) = cluster.store.list(resources::pods(), None);
        for pod in &pods {
            usage.observe(pod, false);
        }
        usage
    }

    fn observe(&mut self, pod: &Value, removed: bool) {
        let key = crate::store::object_key(pod);
        if let Some((index, c, m)) = self.pods.remove(&key) {
            let slot = &mut self.nodes[index];
            slot.used_cpu -= c;
            slot.used_memory -= m;
            slot.used_pods -= 1;
        }
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
        let Some(index) = node.and_then(|node| self.nodes.iter().position(|n| n.name == node))
        else {
            return;
        };
        if !removed && !is_terminal(pod) {
            let (c, m) = pod_requests(pod);
            let slot = &mut self.nodes[index];
            slot.used_cpu += c;
            slot.used_memory += m;
            slot.used_pods += 1;
            self.pods.insert(key, (index, c, m));
        }
    }
}

/// The node to bind the pod to (the first that fits), or the scheduler's FitError message.
fn place(usage: &NodeUsage, pod: &Value) -> Result<String, String> {
    let requests = pod_requests(pod);
    let mut histogram: HashMap<&'static str, usize> = HashMap::new();
    for node in &usage.nodes {
        let reasons = node.misfits(requests);
        if reasons.is_empty() {
            return Ok(node.name.clone());
        }
        for reason in reasons {
            *histogram.entry(reason).or_default() += 1;
        }
    }
    Err(fit_error(usage.nodes.len(), &histogram))
}

/// kube-scheduler's `FitError` text: the reasons counted over the nodes, sorted, then the
/// preemption post-filter's verdict.
pub fn fit_error(nodes: usize, histogram: &HashMap<&'static str, usize>) -> String {
    let mut reasons: Vec<String> = histogram
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    reasons.sort();
    format!(
        "0/{nodes} nodes are available: {}. preemption: 0/{nodes} nodes are available: {nodes} No preemption victims found for incoming pod.",
        reasons.join(", ")
    )
}

fn try_schedule(cluster: &Cluster, usage: &mut NodeUsage, namespace: &str, name: &str) -> bool {
    let Some(pod) = cluster.store.get(resources::pods(), namespace, name) else {
        return true;
    };
    if !unscheduled(&pod) {
        return true;
    }
    match place(usage, &pod) {
        Ok(node) => {
            match bind_pod(cluster, namespace, name, &node) {
                Ok(bound) => usage.observe(&bound, false),
                Err(err) => tracing::debug!(%err, "binding failed"),
            }
            true
        }
        Err(message) => {
            mark_unschedulable(cluster, &pod, namespace, name, &message);
            false
        }
    }
}

/// `PodScheduled=False Unschedulable` and a `FailedScheduling` event, unless the pod
/// already says exactly this.
fn mark_unschedulable(cluster: &Cluster, pod: &Value, namespace: &str, name: &str, message: &str) {
    let already = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "PodScheduled" && c["message"] == message)
        });
    if already {
        return;
    }
    let ctx = WriteContext::status("kube-scheduler");
    let _ = cluster
        .registry
        .modify(resources::pods(), namespace, name, &ctx, |p| {
            set_condition(
                p,
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(message),
            );
        });
    record(
        cluster,
        pod,
        "Warning",
        "FailedScheduling",
        message,
        Reporter::Scheduler,
        None,
    );
}

/// The order pods joined the scheduling queue: pods are tried oldest first, as
/// kube-scheduler's queue pops pods of equal priority by the time they were added.
#[derive(Default)]
struct ArrivalOrder {
    seen: HashMap<(String, String), u64>,
    next: u64,
}

impl ArrivalOrder {
    fn in_arrival_order(&mut self, keys: BTreeSet<(String, String)>) -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = keys.into_iter().collect();
        for key in &keys {
            if !self.seen.contains_key(key) {
                self.seen.insert(key.clone(), self.next);
                self.next += 1;
            }
        }
        keys.sort_by_key(|key| self.seen[key]);
        keys
    }

    fn forget(&mut self, key: &(String, String)) {
        self.seen.remove(key);
    }
}

/// Run the scheduler until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    // Pods to try now, and pods that did not fit (retried when capacity frees up).
    let mut fresh: BTreeSet<(String, String)> = BTreeSet::new();
    let mut unschedulable: BTreeSet<(String, String)> = BTreeSet::new();
    let mut usage = NodeUsage::from_store(&cluster);
    let mut queue = ArrivalOrder::default();
    let (_, existing) = cluster.store.list(resources::pods(), None);
    for pod in &existing {
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
        for key in queue.in_arrival_order(std::mem::take(&mut fresh)) {
            if try_schedule(&cluster, &mut usage, &key.0, &key.1) {
                queue.forget(&key);
            } else {
                unschedulable.insert(key);
            }
        }
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = cluster.shutdown.cancelled() => return,
        };
        match change {
            Ok(change) if change.resource.is(resources::pods()) => {
                usage.observe(&change.object, change.kind == ChangeKind::Deleted);
                let key = crate::store::object_key(&change.object);
                match change.kind {
                    ChangeKind::Deleted => {
                        unschedulable.remove(&key);
                        queue.forget(&key);
                        capacity_freed = true;
                    }
                    _ if unscheduled(&change.object) => {
                        if !unschedulable.contains(&key) {
                            fresh.insert(key);
                        }
                    }
                    _ => {
                        unschedulable.remove(&key);
                        if is_terminal(&change.object)
                            && !change.previous.as_deref().is_some_and(is_terminal)
                        {
                            capacity_freed = true;
                        }
                    }
                }
            }
            // A node registered or went away (the autoscaler's, or through the API).
            Ok(change) if change.resource.is(resources::nodes()) => {
                if change.kind != ChangeKind::Modified {
                    usage = NodeUsage::from_store(&cluster);
                    capacity_freed = true;
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                usage = NodeUsage::from_store(&cluster);
                let (_, pods) = cluster.store.list(resources::pods(), None);
                for pod in &pods {
                    if unscheduled(pod) {
                        fresh.insert(crate::store::object_key(pod));
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}
