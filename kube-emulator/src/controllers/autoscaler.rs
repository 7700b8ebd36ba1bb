//! The simulated node autoscaler (only with [`EmulatorConfig::autoscaler`]): every scan it
//! looks at the pods the scheduler left `Unschedulable` and, as cluster-autoscaler or
//! Karpenter would, adds a node of the first node group whose node would fit the pod (one
//! node per scale-up, up to the group's maximum). The node registers after the group's
//! delay (or never, or the cloud refuses the scale-up), and the scheduler binds the pod to
//! it. The Events on the pod are the imitated autoscaler's own, worded as in its sources:
//!
//! | situation | cluster-autoscaler | Karpenter |
//! |---|---|---|
//! | scale-up | `TriggeredScaleUp` `pod triggered scale-up: [{gpu 1->2 (max: 3)}]` | `Nominated` `Pod should schedule on: nodeclaim/gpu-x7k2p` |
//! | fits on a node already coming | (no Event) | `Nominated` for that node |
//! | group at its maximum | `NotTriggerScaleUp` `pod didn't trigger scale-up: 1 max node group size reached` | `FailedScheduling` `Failed to schedule pod, node limits have been exhausted for nodepool` |
//! | cloud refused (then backoff) | `TriggeredScaleUp`, then `… 1 in backoff after failed scale-up` | `Nominated`, then `Failed to schedule pod, no instance type has the required offering, …` |
//! | no node of any group fits | `… 1 Insufficient cpu` | `Failed to schedule pod, no instance type has enough resources, …` |
//!
//! Each verdict is recorded once per pod (the real ones repeat every scan, aggregated into
//! the Event's `count`).
//!
//! [`EmulatorConfig::autoscaler`]: crate::config::EmulatorConfig::autoscaler

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::events::{record, Reporter};
use super::pod_status::is_terminal;
use super::scheduler::pod_requests;
use crate::admission::WriteContext;
use crate::cluster::{node_object, Cluster};
use crate::config::{AutoscalerConfig, AutoscalerStyle, NodeGroup, Provisioning};
use crate::quantity::parse_quantity;
use crate::resources;

/// How long a node group backs off after the cloud refused a scale-up
/// (cluster-autoscaler's initial backoff).
const BACKOFF: Duration = Duration::from_secs(300);
/// Label naming a node's group (cluster-autoscaler reads the cloud's; Karpenter writes
/// `karpenter.sh/nodepool`).
pub const NODE_GROUP_LABEL: &str = "kube-emulator.io/node-group";

/// A node asked for and not registered yet, with the room left on it.
struct Upcoming {
    group: usize,
    name: String,
    ready_at: Option<Instant>,
    room: Room,
}

/// Allocatable left (cpu cores, memory bytes, pods).
#[derive(Clone, Copy)]
struct Room {
    cpu: f64,
    memory: f64,
    pods: u64,
}

impl Room {
    fn of(group: &NodeGroup) -> Room {
        let capacity = &group.node_capacity;
        Room {
            cpu: parse_quantity(&capacity.cpu).unwrap_or(f64::MAX),
            memory: parse_quantity(&capacity.memory).unwrap_or(f64::MAX),
            pods: u64::from(capacity.pods),
        }
    }

    /// Why `(cpu, memory)` does not fit (the scheduler's predicate reasons).
    fn misfits(&self, (cpu, memory): (f64, f64)) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if cpu > self.cpu + 1e-9 {
            reasons.push("Insufficient cpu");
        }
        if memory > self.memory + 0.5 {
            reasons.push("Insufficient memory");
        }
        if self.pods == 0 {
            reasons.push("Too many pods");
        }
        reasons
    }

    fn take(&mut self, (cpu, memory): (f64, f64)) {
        self.cpu -= cpu;
        self.memory -= memory;
        self.pods = self.pods.saturating_sub(1);
    }
}

/// Why a node group could not help a pod.
enum Rejection {
    DoesNotFit(Vec<&'static str>),
    AtMaximum,
    InBackoff,
}

struct GroupState {
    registered: u32,
    created: u32,
    backoff_until: Option<Instant>,
}

struct Autoscaler {
    cluster: Arc<Cluster>,
    config: AutoscalerConfig,
    groups: Vec<GroupState>,
    upcoming: Vec<Upcoming>,
    /// Pods (uid) a node is coming for.
    helped: HashMap<String, String>,
    /// The last verdict recorded per pod (uid), so each is recorded once.
    told: HashMap<String, String>,
}

/// Run the node autoscaler until shutdown (returns at once without one configured).
pub async fn run(cluster: Arc<Cluster>) {
    let Some(config) = cluster.config.autoscaler.clone() else {
        return;
    };
    let mut autoscaler = Autoscaler::start(cluster.clone(), config);
    let mut ticks = tokio::time::interval(autoscaler.config.scan_interval);
    loop {
        tokio::select! {
            _ = cluster.shutdown.cancelled() => return,
            _ = ticks.tick() => autoscaler.scan(),
        }
    }
}

impl Autoscaler {
    /// The groups with their initial nodes registered.
    fn start(cluster: Arc<Cluster>, config: AutoscalerConfig) -> Self {
        let groups = config
            .node_groups
            .iter()
            .map(|_| GroupState {
                registered: 0,
                created: 0,
                backoff_until: None,
            })
            .collect();
        let mut autoscaler = Autoscaler {
            cluster,
            config,
            groups,
            upcoming: Vec::new(),
            helped: HashMap::new(),
            told: HashMap::new(),
        };
        for index in 0..autoscaler.groups.len() {
            for _ in 0..autoscaler.config.node_groups[index].initial_size {
                let name = autoscaler.node_name(index);
                autoscaler.register(index, &name);
            }
        }
        autoscaler
    }

    fn scan(&mut self) {
        self.register_due_nodes();
        let pods = self.unschedulable_pods();
        let pending: std::collections::HashSet<&str> = pods.iter().map(|p| uid(p)).collect();
        self.helped.retain(|pod, _| pending.contains(pod.as_str()));
        self.told.retain(|pod, _| pending.contains(pod.as_str()));
        for pod in &pods {
            if !self.helped.contains_key(uid(pod)) {
                self.consider(pod);
            }
        }
    }

    fn register_due_nodes(&mut self) {
        let now = Instant::now();
        let (due, waiting): (Vec<Upcoming>, Vec<Upcoming>) = std::mem::take(&mut self.upcoming)
            .into_iter()
            .partition(|node| node.ready_at.is_some_and(|at| at <= now));
        self.upcoming = waiting;
        for node in due {
            self.register(node.group, &node.name);
            // Its pods are the scheduler's now; one that does not get it is considered again.
            self.helped.retain(|_, coming| *coming != node.name);
        }
    }

    /// Creates the Node as its kubelet registers it.
    fn register(&mut self, group: usize, name: &str) {
        let spec = &self.config.node_groups[group];
        let mut labels = vec![(NODE_GROUP_LABEL, spec.name.as_str())];
        if self.config.style == AutoscalerStyle::Karpenter {
            labels.push(("karpenter.sh/nodepool", spec.name.as_str()));
            labels.push(("karpenter.sh/registered", "true"));
        }
        let node = node_object(name, &spec.node_capacity, &labels);
        let ctx = WriteContext::update("kubelet");
        match self
            .cluster
            .registry
            .create(resources::nodes(), "", node, &ctx, false)
        {
            Ok(_) => self.groups[group].registered += 1,
            Err(err) => tracing::warn!(%err, node = name, "registering an autoscaled node failed"),
        }
    }

    fn node_name(&mut self, group: usize) -> String {
        let base = &self.config.node_groups[group].name;
        self.groups[group].created += 1;
        match self.config.style {
            AutoscalerStyle::ClusterAutoscaler => format!("{base}-{}", self.groups[group].created),
            AutoscalerStyle::Karpenter => crate::admission::generate_name(&format!("{base}-")),
        }
    }

    /// Pods the scheduler marked `Unschedulable` that are still waiting, oldest first.
    fn unschedulable_pods(&self) -> Vec<Arc<Value>> {
        let (_, pods) = self.cluster.store.list(resources::pods(), None);
        let mut pods: Vec<Arc<Value>> = pods
            .into_iter()
            .filter(|pod| is_unschedulable(pod))
            .collect();
        pods.sort_by(|a, b| {
            let created = |pod: &Value| pod.pointer("/metadata/creationTimestamp").cloned();
            created(a)
                .as_ref()
                .and_then(Value::as_str)
                .cmp(&created(b).as_ref().and_then(Value::as_str))
        });
        pods
    }

    fn consider(&mut self, pod: &Value) {
        let requests = pod_requests(pod);
        if let Some(index) = self
            .upcoming
            .iter()
            .position(|node| node.room.misfits(requests).is_empty())
        {
            let node = &mut self.upcoming[index];
            node.room.take(requests);
            let name = node.name.clone();
            self.helped.insert(uid(pod).to_owned(), name.clone());
            if self.config.style == AutoscalerStyle::Karpenter {
                self.tell(
                    pod,
                    "Normal",
                    "Nominated",
                    &format!("Pod should schedule on: nodeclaim/{name}"),
                );
            }
            return;
        }
        let mut rejections = Vec::new();
        for group in 0..self.groups.len() {
            match self.rejection(group, requests) {
                Some(rejection) => rejections.push((group, rejection)),
                None => return self.scale_up(group, pod, requests),
            }
        }
        self.refuse(pod, &rejections, requests);
    }

    fn rejection(&self, group: usize, requests: (f64, f64)) -> Option<Rejection> {
        let spec = &self.config.node_groups[group];
        let misfits = Room::of(spec).misfits(requests);
        if !misfits.is_empty() {
            return Some(Rejection::DoesNotFit(misfits));
        }
        let state = &self.groups[group];
        if state
            .backoff_until
            .is_some_and(|until| until > Instant::now())
        {
            return Some(Rejection::InBackoff);
        }
        (self.size(group) >= spec.max_size).then_some(Rejection::AtMaximum)
    }

    /// Registered plus upcoming nodes of the group (cluster-autoscaler's target size).
    fn size(&self, group: usize) -> u32 {
        let upcoming = self
            .upcoming
            .iter()
            .filter(|node| node.group == group)
            .count();
        self.groups[group].registered + u32::try_from(upcoming).unwrap_or(u32::MAX)
    }

    fn scale_up(&mut self, group: usize, pod: &Value, requests: (f64, f64)) {
        let spec = self.config.node_groups[group].clone();
        let current = self.size(group);
        let name = self.node_name(group);
        match &spec.provisioning {
            Provisioning::Refused(error) => {
                tracing::info!(group = %spec.name, %error, "the cloud refused a scale-up");
                self.groups[group].backoff_until = Some(Instant::now() + BACKOFF);
            }
            Provisioning::After(delay) => {
                self.add_upcoming(group, &name, Some(Instant::now() + *delay), pod, requests)
            }
            Provisioning::Never => self.add_upcoming(group, &name, None, pod, requests),
        }
        let (reason, message) = match self.config.style {
            AutoscalerStyle::ClusterAutoscaler => (
                "TriggeredScaleUp",
                format!(
                    "pod triggered scale-up: [{{{} {current}->{} (max: {})}}]",
                    spec.name,
                    current + 1,
                    spec.max_size
                ),
            ),
            AutoscalerStyle::Karpenter => (
                "Nominated",
                format!("Pod should schedule on: nodeclaim/{name}"),
            ),
        };
        self.tell(pod, "Normal", reason, &message);
    }

    fn add_upcoming(
        &mut self,
        group: usize,
        name: &str,
        ready_at: Option<Instant>,
        pod: &Value,
        requests: (f64, f64),
    ) {
        let mut room = Room::of(&self.config.node_groups[group]);
        room.take(requests);
        self.upcoming.push(Upcoming {
            group,
            name: name.to_owned(),
            ready_at,
            room,
        });
        self.helped.insert(uid(pod).to_owned(), name.to_owned());
    }

    fn refuse(&mut self, pod: &Value, rejections: &[(usize, Rejection)], requests: (f64, f64)) {
        match self.config.style {
            AutoscalerStyle::ClusterAutoscaler => {
                let message = format!("pod didn't trigger scale-up: {}", ca_reasons(rejections));
                self.tell(pod, "Normal", "NotTriggerScaleUp", &message);
            }
            AutoscalerStyle::Karpenter => {
                let errors: Vec<String> = rejections
                    .iter()
                    .map(|(group, rejection)| self.karpenter_error(*group, rejection, requests))
                    .collect();
                let message = format!("Failed to schedule pod, {}", errors.join("; "));
                self.tell(pod, "Warning", "FailedScheduling", &message);
            }
        }
    }

    /// Karpenter's scheduling error for one NodePool (`scheduler.go`, `nodeclaim.go`).
    fn karpenter_error(
        &self,
        group: usize,
        rejection: &Rejection,
        (cpu, memory): (f64, f64),
    ) -> String {
        let pool = &self.config.node_groups[group].name;
        let mut resources = vec![format!("\"cpu\":\"{}\"", format_cpu(cpu))];
        if memory > 0.0 {
            resources.push(format!("\"memory\":\"{}\"", memory.round()));
        }
        resources.push("\"pods\":\"1\"".to_owned());
        let detail = format!(
            "requirements=karpenter.sh/nodepool In [{pool}], resources={{{}}}",
            resources.join(",")
        );
        match rejection {
            Rejection::AtMaximum => "node limits have been exhausted for nodepool".to_owned(),
            Rejection::InBackoff => format!("no instance type has the required offering, {detail}"),
            Rejection::DoesNotFit(_) => format!("no instance type has enough resources, {detail}"),
        }
    }

    /// Records the verdict on the pod unless it was the last one recorded for it.
    fn tell(&mut self, pod: &Value, event_type: &str, reason: &str, message: &str) {
        let verdict = format!("{reason}: {message}");
        if self.told.get(uid(pod)) == Some(&verdict) {
            return;
        }
        let reporter = match self.config.style {
            AutoscalerStyle::ClusterAutoscaler => Reporter::ClusterAutoscaler,
            AutoscalerStyle::Karpenter => Reporter::Karpenter,
        };
        record(
            &self.cluster,
            pod,
            event_type,
            reason,
            message,
            reporter,
            None,
        );
        self.told.insert(uid(pod).to_owned(), verdict);
    }
}

/// cluster-autoscaler's `ReasonsMessage`: each reason counted over the node groups.
fn ca_reasons(rejections: &[(usize, Rejection)]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, rejection) in rejections {
        let reasons = match rejection {
            Rejection::DoesNotFit(reasons) => reasons.clone(),
            Rejection::AtMaximum => vec!["max node group size reached"],
            Rejection::InBackoff => vec!["in backoff after failed scale-up"],
        };
        for reason in reasons {
            *counts.entry(reason).or_default() += 1;
        }
    }
    let mut messages: Vec<String> = counts
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    messages.sort();
    messages.join(", ")
}

fn format_cpu(cores: f64) -> String {
    if (cores - cores.round()).abs() < 1e-9 {
        format!("{}", cores.round())
    } else {
        format!("{}m", (cores * 1000.0).round())
    }
}

fn uid(pod: &Value) -> &str {
    pod.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Waiting for a node: `PodScheduled=False Unschedulable`, unbound, not going away.
fn is_unschedulable(pod: &Value) -> bool {
    let unbound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let marked = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
            })
        });
    unbound && marked && pod.pointer("/metadata/deletionTimestamp").is_none() && !is_terminal(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_autoscaler_counts_each_reason_over_the_groups() {
        let rejections = [
            (0, Rejection::AtMaximum),
            (
                1,
                Rejection::DoesNotFit(vec!["Insufficient cpu", "Insufficient memory"]),
            ),
            (2, Rejection::AtMaximum),
        ];
        assert_eq!(
            ca_reasons(&rejections),
            "1 Insufficient cpu, 1 Insufficient memory, 2 max node group size reached"
        );
    }

    #[test]
    fn cpu_is_written_as_kubernetes_quantities() {
        assert_eq!(format_cpu(12.0), "12");
        assert_eq!(format_cpu(0.5), "500m");
    }
}
