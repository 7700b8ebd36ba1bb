//! The simulated kubelet of every node (the emulator's and those the node autoscaler adds):
//! for every pod bound to one, a worker walks the
//! stages ContainerCreating -> (config check, image pull) -> Running -> terminated, writing pod
//! status through the status path and emitting the kubelet's events. Graceful deletion sends
//! SIGTERM, then SIGKILL after the grace period, moves the pod to a terminal phase and finishes
//! the delete with grace 0. Restart policies OnFailure/Always restart containers with
//! CrashLoopBackOff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use regex::Regex;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::events::{record, Reporter};
use super::pod_status::{is_terminal, set_condition};
use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::registry::DeleteOptions;
use crate::resources;
use crate::runtime::{
    ContainerExit, ContainerLaunch, ContainerRuntime, PodFate, PullOutcome, StopSignal,
};
use crate::store::ChangeKind;
use crate::time::now_rfc3339;

static IMAGE_REFERENCE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"^((([a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+|localhost)(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
        .expect("regex")
});

/// Whether the container runtime could parse this image reference.
pub fn is_valid_image_reference(image: &str) -> bool {
    IMAGE_REFERENCE.is_match(image)
}

const POD_DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// What the worker learns about its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodSignal {
    Running,
    /// `deletionTimestamp` set with this grace period.
    Deleting(i64),
    Removed,
}

/// Run the kubelet until shutdown.
pub async fn run(cluster: Arc<Cluster>, runtime: Arc<dyn ContainerRuntime>) {
    let mut changes = cluster.store.subscribe();
    let mut workers: HashMap<String, watch::Sender<PodSignal>> = HashMap::new();
    let (_, existing) = cluster.store.list(resources::pods(), None);
    for pod in existing {
        observe(&cluster, &runtime, &mut workers, &pod, false);
    }
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = cluster.shutdown.cancelled() => return,
        };
        match change {
            Ok(change) if change.resource.is(resources::pods()) => {
                let removed = change.kind == ChangeKind::Deleted;
                observe(&cluster, &runtime, &mut workers, &change.object, removed);
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                let (_, pods) = cluster.store.list(resources::pods(), None);
                for pod in pods {
                    observe(&cluster, &runtime, &mut workers, &pod, false);
                }
            }
            Err(RecvError::Closed) => return,
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
}

fn observe(
    cluster: &Arc<Cluster>,
    runtime: &Arc<dyn ContainerRuntime>,
    workers: &mut HashMap<String, watch::Sender<PodSignal>>,
    pod: &Value,
    removed: bool,
) {
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !workers.contains_key(&uid) && !on_a_simulated_node(cluster, pod) {
        return;
    }
    if removed {
        if let Some(tx) = workers.remove(&uid) {
            let _ = tx.send(PodSignal::Removed);
        }
        cluster.logs.forget_pod(&uid);
        return;
    }
    let signal = match pod.pointer("/metadata/deletionTimestamp") {
        Some(_) => PodSignal::Deleting(
            pod.pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        ),
        None => PodSignal::Running,
    };
    if let Some(tx) = workers.get(&uid) {
        tx.send_if_modified(|current| {
            if *current != signal {
                *current = signal;
                true
            } else {
                false
            }
        });
        return;
    }
    let (ns, name) = crate::store::object_key(pod);
    if is_terminal(pod) {
        // Nothing runs; finish a pending graceful delete.
        if let PodSignal::Deleting(grace) = signal {
            if grace != 0 {
                final_delete(cluster, &ns, &name, &uid);
            }
        }
        return;
    }
    let (tx, rx) = watch::channel(signal);
    workers.insert(uid.clone(), tx);
    let cluster = cluster.clone();
    let runtime = runtime.clone();
    tokio::spawn(async move {
        PodWorker {
            cluster,
            runtime,
            namespace: ns,
            name,
            uid,
            signals: rx,
        }
        .run()
        .await;
    });
}

/// Bound to a Node of the emulator's (its own, or one the node autoscaler added): this
/// kubelet runs every node's pods.
fn on_a_simulated_node(cluster: &Cluster, pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|node| !node.is_empty())
        .is_some_and(|node| cluster.store.get(resources::nodes(), "", node).is_some())
}

fn final_delete(cluster: &Cluster, namespace: &str, name: &str, uid: &str) {
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: Some(uid.to_string()),
        ..DeleteOptions::default()
    };
    if let Err(err) = cluster
        .registry
        .delete(resources::pods(), namespace, name, &options)
    {
        if err.code != 404 && err.code != 409 {
            tracing::warn!(%err, "kubelet final delete failed");
        }
    }
}

/// Per-container bookkeeping in the worker.
struct ContainerSlot {
    spec: Value,
    restart_count: i64,
    exit: Option<ContainerExit>,
}

struct PodWorker {
    cluster: Arc<Cluster>,
    runtime: Arc<dyn ContainerRuntime>,
    namespace: String,
    name: String,
    uid: String,
    signals: watch::Receiver<PodSignal>,
}

/// Why the worker stopped waiting.
enum Interrupt {
    Deleted(i64),
    Removed,
}

impl PodWorker {
    fn pod(&self) -> Option<Arc<Value>> {
        self.cluster
            .store
            .get(resources::pods(), &self.namespace, &self.name)
            .filter(|p| {
                p.pointer("/metadata/uid").and_then(Value::as_str) == Some(self.uid.as_str())
            })
    }

    fn write_status(&self, edit: impl FnOnce(&mut Value)) -> Option<Arc<Value>> {
        let ctx = WriteContext::status("kubelet");
        let uid = self.uid.clone();
        self.cluster
            .registry
            .modify(
                resources::pods(),
                &self.namespace,
                &self.name,
                &ctx,
                |pod| {
                    if pod.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str()) {
                        edit(pod);
                        pod["status"]["observedGeneration"] = pod
                            .pointer("/metadata/generation")
                            .cloned()
                            .unwrap_or(json!(1));
                    }
                },
            )
            .ok()
            .flatten()
    }

    fn event(&self, event_type: &str, reason: &str, message: &str, container: Option<&str>) {
        if let Some(pod) = self.pod() {
            let field_path = container.map(|c| format!("spec.containers{{{c}}}"));
            record(
                &self.cluster,
                &pod,
                event_type,
                reason,
                message,
                Reporter::Kubelet,
                field_path.as_deref(),
            );
        }
    }

    /// Sleep unless the pod is deleted/removed first.
    async fn sleep(&mut self, duration: Duration) -> Option<Interrupt> {
        let deadline = tokio::time::sleep(duration);
        tokio::pin!(deadline);
        loop {
            if let Some(interrupt) = self.interrupt() {
                return Some(interrupt);
            }
            tokio::select! {
                _ = &mut deadline => return None,
                changed = self.signals.changed() => if changed.is_err() { return Some(Interrupt::Removed) },
                _ = self.cluster.shutdown.cancelled() => return Some(Interrupt::Removed),
            }
        }
    }

    fn interrupt(&self) -> Option<Interrupt> {
        match *self.signals.borrow() {
            PodSignal::Running => None,
            PodSignal::Deleting(grace) => Some(Interrupt::Deleted(grace)),
            PodSignal::Removed => Some(Interrupt::Removed),
        }
    }

    async fn run(mut self) {
        let stage = self.cluster.config.kubelet_stage_delay;
        let Some(pod) = self.pod() else { return };
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = containers
            .iter()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect();
        let init_containers: Vec<Value> = pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let init_names: Vec<String> = init_containers
            .iter()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect();
        // Stage 1: ContainerCreating (PodInitializing while init containers are pending).
        let now = now_rfc3339();
        let unready = format!("containers with unready status: [{}]", names.join(" "));
        let main_waiting = if init_containers.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        self.write_status(|p| {
            p["status"]["phase"] = json!("Pending");
            p["status"]["hostIP"] = json!("172.18.0.2");
            p["status"]["hostIPs"] = json!([{"ip": "172.18.0.2"}]);
            p["status"]["startTime"] = json!(now);
            set_condition(p, "PodReadyToStartContainers", "False", None, None);
            if init_containers.is_empty() {
                set_condition(p, "Initialized", "True", None, None);
            } else {
                set_condition(
                    p,
                    "Initialized",
                    "False",
                    Some("ContainersNotInitialized"),
                    Some(&format!(
                        "containers with incomplete status: [{}]",
                        init_names.join(" ")
                    )),
                );
                p["status"]["initContainerStatuses"] = json!(init_containers
                    .iter()
                    .map(|c| waiting_status(c, "PodInitializing", None, 0, None))
                    .collect::<Vec<_>>());
            }
            set_condition(
                p,
                "Ready",
                "False",
                Some("ContainersNotReady"),
                Some(&unready),
            );
            set_condition(
                p,
                "ContainersReady",
                "False",
                Some("ContainersNotReady"),
                Some(&unready),
            );
            p["status"]["containerStatuses"] = json!(containers
                .iter()
                .map(|c| waiting_status(c, main_waiting, None, 0, None))
                .collect::<Vec<_>>());
        });
        if let Some(i) = self.sleep(stage).await {
            return self.stop_before_start(i).await;
        }
        // Stage 2: image names, configuration, pulls — repeated until all containers can start.
        let mut envs: Vec<Vec<(String, String)>> = Vec::new();
        let mut pull_failures = 0u32;
        loop {
            let Some(pod) = self.pod() else { return };
            let mut blocked = false;
            let mut pull_blocked = false;
            envs.clear();
            // Volumes first: a missing Secret/ConfigMap volume keeps the pod in ContainerCreating
            // and no container is looked at until it appears.
            let volume_problem = missing_volume_source(&self.cluster, &pod);
            if let Some(message) = &volume_problem {
                self.event("Warning", "FailedMount", message, None);
                blocked = true;
            }
            let to_check = if volume_problem.is_some() {
                &containers[..0]
            } else {
                &containers[..]
            };
            for (i, c) in to_check.iter().enumerate() {
                let cname = c["name"].as_str().unwrap_or_default().to_string();
                let image = c["image"].as_str().unwrap_or_default().to_string();
                if !is_valid_image_reference(&image) {
                    let message = format!("Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format");
                    if self.set_waiting(i, "InvalidImageName", Some(&message)) {
                        self.event("Warning", "InspectFailed", &message, Some(&cname));
                        self.event("Warning", "Failed", "Error: InvalidImageName", Some(&cname));
                    }
                    blocked = true;
                    continue;
                }
                match resolve_env(&self.cluster, &pod, c) {
                    Err(message) => {
                        if self.set_waiting(i, "CreateContainerConfigError", Some(&message)) {
                            self.event(
                                "Warning",
                                "Failed",
                                &format!("Error: {message}"),
                                Some(&cname),
                            );
                        }
                        blocked = true;
                        continue;
                    }
                    Ok(env) => envs.push(env),
                }
                match self.runtime.pull(&pod, c) {
                    PullOutcome::Pulled => {}
                    PullOutcome::Fails(error) => {
                        blocked = true;
                        pull_blocked = true;
                        let (reason, message) = if pull_failures == 0 {
                            ("ErrImagePull", error.clone())
                        } else {
                            (
                                "ImagePullBackOff",
                                format!("Back-off pulling image \"{image}\""),
                            )
                        };
                        // Back-off events repeat on every retry (aggregated into `count`).
                        let changed = self.set_waiting(i, reason, Some(&message));
                        if changed || reason == "ImagePullBackOff" {
                            if reason == "ErrImagePull" {
                                self.event(
                                    "Normal",
                                    "Pulling",
                                    &format!("Pulling image \"{image}\""),
                                    Some(&cname),
                                );
                                self.event(
                                    "Warning",
                                    "Failed",
                                    &format!("Failed to pull image \"{image}\": {error}"),
                                    Some(&cname),
                                );
                                self.event(
                                    "Warning",
                                    "Failed",
                                    "Error: ErrImagePull",
                                    Some(&cname),
                                );
                            } else {
                                self.event("Normal", "BackOff", &message, Some(&cname));
                                self.event(
                                    "Warning",
                                    "Failed",
                                    "Error: ImagePullBackOff",
                                    Some(&cname),
                                );
                            }
                        }
                    }
                }
            }
            if !blocked {
                break;
            }
            pull_failures += 1;
            // The kubelet's image back-off doubles up to five minutes; configuration errors are
            // retried at the base interval.
            let base = self
                .cluster
                .config
                .image_pull_backoff
                .max(Duration::from_millis(50));
            let wait = if pull_blocked {
                (base * 2u32.saturating_pow(pull_failures.saturating_sub(1).min(16)))
                    .min(Duration::from_secs(300))
            } else {
                base
            };
            if let Some(i) = self.sleep(wait).await {
                return self.stop_before_start(i).await;
            }
        }
        for c in &containers {
            let image = c["image"].as_str().unwrap_or_default();
            let cname = c["name"].as_str().unwrap_or_default();
            if c["imagePullPolicy"] == "IfNotPresent" || c["imagePullPolicy"] == "Never" {
                self.event(
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                    Some(cname),
                );
            } else {
                self.event(
                    "Normal",
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                    Some(cname),
                );
                self.event("Normal", "Pulled", &format!("Successfully pulled image \"{image}\" in 1.2s (1.2s including waiting). Image size: 3623807 bytes."), Some(cname));
            }
        }
        // Stage 3: init containers, one at a time.
        if !init_containers.is_empty() && !self.run_init_containers(&init_containers).await {
            return;
        }
        // Stage 4: run.
        let slots: Vec<ContainerSlot> = containers
            .iter()
            .map(|c| ContainerSlot {
                spec: c.clone(),
                restart_count: 0,
                exit: None,
            })
            .collect();
        self.run_containers(slots, envs).await;
    }

    /// Run init containers in order. Returns false when the pod ended (failed or deleted).
    async fn run_init_containers(&mut self, init_containers: &[Value]) -> bool {
        let Some(pod) = self.pod() else { return false };
        let restart_policy = pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
            .to_string();
        let mut backoff = self.cluster.config.job_backoff_base;
        let mut index = 0;
        let mut restarts = 0i64;
        while index < init_containers.len() {
            let spec = &init_containers[index];
            let cname = spec["name"].as_str().unwrap_or_default().to_string();
            let env = resolve_env(&self.cluster, &pod, spec).unwrap_or_default();
            self.event(
                "Normal",
                "Created",
                &format!("Created container: {cname}"),
                Some(&cname),
            );
            let log = self.cluster.logs.start_run(&self.uid, &cname);
            let run = self.runtime.start(ContainerLaunch {
                pod: pod.clone(),
                container: spec.clone(),
                env,
                log,
            });
            self.event(
                "Normal",
                "Started",
                &format!("Started container {cname}"),
                Some(&cname),
            );
            let started = now_rfc3339();
            let restart_count = restarts;
            self.write_status(|p| {
                if let Some(status) =
                    p.pointer_mut(&format!("/status/initContainerStatuses/{index}"))
                {
                    status["state"] = json!({"running": {"startedAt": started}});
                    status["started"] = json!(true);
                    status["restartCount"] = json!(restart_count);
                    status["containerID"] = json!(format!("containerd://{}", random_hex(64)));
                }
            });
            let signals = run.signals.clone();
            let mut exit_rx = run.exit;
            let exit = loop {
                tokio::select! {
                    exit = &mut exit_rx => break exit.unwrap_or(ContainerExit::from_code(137)),
                    changed = self.signals.changed() => {
                        if changed.is_err() || self.interrupt().is_some() {
                            let _ = signals.try_send(StopSignal::Kill);
                            let interrupt = self.interrupt().unwrap_or(Interrupt::Removed);
                            self.stop_before_start(interrupt).await;
                            return false;
                        }
                    }
                    _ = self.cluster.shutdown.cancelled() => {
                        let _ = signals.try_send(StopSignal::Kill);
                        return false;
                    }
                }
            };
            let finished = now_rfc3339();
            let started_at = started.clone();
            self.write_status(|p| {
                if let Some(status) =
                    p.pointer_mut(&format!("/status/initContainerStatuses/{index}"))
                {
                    status["state"] = json!({"terminated": {
                        "exitCode": exit.exit_code, "reason": exit.reason,
                        "startedAt": started_at, "finishedAt": finished,
                        "containerID": status["containerID"].clone()
                    }});
                    status["ready"] = json!(exit.exit_code == 0);
                    status["started"] = json!(false);
                }
            });
            if exit.exit_code == 0 {
                index += 1;
                restarts = 0;
                continue;
            }
            if restart_policy == "Never" {
                self.write_status(|p| {
                    p["status"]["phase"] = json!("Failed");
                    set_condition(p, "Ready", "False", Some("PodFailed"), None);
                    set_condition(p, "ContainersReady", "False", Some("PodFailed"), None);
                });
                return false;
            }
            restarts += 1;
            self.event(
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {cname} in pod {}_{}({})",
                    self.name, self.namespace, self.uid
                ),
                Some(&cname),
            );
            if let Some(interrupt) = self.sleep(backoff).await {
                self.stop_before_start(interrupt).await;
                return false;
            }
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
        self.write_status(|p| {
            set_condition(p, "Initialized", "True", None, None);
            if let Some(list) = p
                .pointer_mut("/status/containerStatuses")
                .and_then(Value::as_array_mut)
            {
                for status in list {
                    status["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                }
            }
        });
        true
    }

    /// Set a container's waiting state; returns true if it changed (so events are not repeated).
    fn set_waiting(&self, index: usize, reason: &str, message: Option<&str>) -> bool {
        let mut changed = false;
        self.write_status(|p| {
            if let Some(status) = p.pointer_mut(&format!("/status/containerStatuses/{index}")) {
                let current = status
                    .pointer("/state/waiting/reason")
                    .and_then(Value::as_str);
                if current != Some(reason) {
                    changed = true;
                }
                let mut waiting = json!({"reason": reason});
                if let Some(m) = message {
                    waiting["message"] = json!(m);
                }
                status["state"] = json!({"waiting": waiting});
            }
        });
        changed
    }

    /// Deleted before any container ran: go terminal and finish the delete.
    async fn stop_before_start(&self, interrupt: Interrupt) {
        if let Interrupt::Deleted(_) = interrupt {
            self.write_status(|p| {
                p["status"]["phase"] = json!("Failed");
                set_condition(p, "Ready", "False", Some("PodFailed"), None);
                set_condition(p, "ContainersReady", "False", Some("PodFailed"), None);
                if let Some(list) = p.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut) {
                    for s in list {
                        s["state"] = json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                            "message": "The container could not be located when the pod was terminated",
                            "startedAt": null, "finishedAt": now_rfc3339()}});
                    }
                }
            });
            final_delete(&self.cluster, &self.namespace, &self.name, &self.uid);
        }
    }

    async fn run_containers(
        mut self,
        mut slots: Vec<ContainerSlot>,
        envs: Vec<Vec<(String, String)>>,
    ) {
        let Some(pod) = self.pod() else { return };
        let restart_policy = pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
            .to_string();
        let fate = self.runtime.pod_fate(&pod);
        let mut runs = Vec::new();
        let (exit_tx, mut exit_rx) = tokio::sync::mpsc::channel::<(usize, ContainerExit)>(16);
        let mut signal_senders = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let (signals, started_at) = self.start_container(
                &pod,
                slot,
                envs.get(i).cloned().unwrap_or_default(),
                i,
                exit_tx.clone(),
            );
            signal_senders.push(signals);
            runs.push(started_at);
        }
        self.mark_running();
        let evict_at = match fate {
            PodFate::EvictAfterMillis(ms) => {
                Some(tokio::time::Instant::now() + Duration::from_millis(ms))
            }
            PodFate::Normal => None,
        };
        // Pod-level activeDeadlineSeconds, measured from status.startTime.
        let pod_deadline_at = pod
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_i64)
            .map(|seconds| {
                let started = pod
                    .pointer("/status/startTime")
                    .and_then(Value::as_str)
                    .and_then(crate::time::parse_time)
                    .unwrap_or_else(chrono::Utc::now);
                let remaining = (started + chrono::Duration::seconds(seconds)) - chrono::Utc::now();
                tokio::time::Instant::now() + remaining.to_std().unwrap_or_default()
            });
        let mut deadline_exceeded = false;
        let mut crash_backoff = self.cluster.config.job_backoff_base;
        let mut pending_restarts: Vec<(usize, tokio::time::Instant)> = Vec::new();
        let mut kill_deadline: Option<tokio::time::Instant> = None;
        let mut deleting = false;
        let mut evicted = false;
        loop {
            let running = slots.iter().filter(|s| s.exit.is_none()).count();
            if running == 0 && pending_restarts.is_empty() {
                break;
            }
            if !deleting {
                let requested = match self.interrupt() {
                    Some(Interrupt::Deleted(g)) => Some(g),
                    Some(Interrupt::Removed) => Some(0),
                    None => None,
                };
                if let Some(grace) = requested {
                    deleting = true;
                    pending_restarts.clear();
                    let grace = if grace > 0 { grace } else { 0 };
                    for (i, s) in slots.iter().enumerate() {
                        if s.exit.is_none() {
                            let cname = s.spec["name"].as_str().unwrap_or_default().to_string();
                            self.event(
                                "Normal",
                                "Killing",
                                &format!("Stopping container {cname}"),
                                Some(&cname),
                            );
                            let _ = signal_senders[i].try_send(if grace == 0 {
                                StopSignal::Kill
                            } else {
                                StopSignal::Terminate
                            });
                        }
                    }
                    kill_deadline =
                        Some(tokio::time::Instant::now() + Duration::from_secs(grace as u64));
                    if running == 0 {
                        break;
                    }
                }
            }
            let next_restart = pending_restarts.iter().map(|(_, at)| *at).min();
            tokio::select! {
                Some((index, exit)) = exit_rx.recv() => {
                    let failed = exit.exit_code != 0;
                    let restart = !deleting && !evicted && !deadline_exceeded && match restart_policy.as_str() {
                        "Always" => true,
                        "OnFailure" => failed,
                        _ => false,
                    };
                    slots[index].exit = Some(exit.clone());
                    self.record_exit(index, &slots[index], &exit, restart, crash_backoff);
                    if restart {
                        let cname = slots[index].spec["name"].as_str().unwrap_or_default().to_string();
                        self.event("Warning", "BackOff", &format!("Back-off restarting failed container {cname} in pod {}_{}({})", self.name, self.namespace, self.uid), Some(&cname));
                        pending_restarts.push((index, tokio::time::Instant::now() + crash_backoff));
                        crash_backoff = (crash_backoff * 2).min(Duration::from_secs(300));
                    }
                }
                _ = async { match next_restart { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    let now = tokio::time::Instant::now();
                    let due: Vec<usize> = pending_restarts.iter().filter(|(_, at)| *at <= now).map(|(i, _)| *i).collect();
                    pending_restarts.retain(|(_, at)| *at > now);
                    let Some(pod) = self.pod() else { return };
                    for index in due {
                        slots[index].restart_count += 1;
                        slots[index].exit = None;
                        let (signals, _) = self.start_container(&pod, &slots[index], envs.get(index).cloned().unwrap_or_default(), index, exit_tx.clone());
                        signal_senders[index] = signals;
                    }
                    self.mark_running();
                }
                _ = async { match kill_deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    for (i, s) in slots.iter().enumerate() {
                        if s.exit.is_none() {
                            let _ = signal_senders[i].try_send(StopSignal::Kill);
                        }
                    }
                    kill_deadline = None;
                }
                _ = async { match evict_at { Some(at) if !evicted => tokio::time::sleep_until(at).await, _ => std::future::pending().await } } => {
                    evicted = true;
                    let message = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ";
                    for (i, s) in slots.iter().enumerate() {
                        if s.exit.is_none() {
                            let _ = signal_senders[i].try_send(StopSignal::Kill);
                        }
                    }
                    self.write_status(|p| {
                        set_condition(p, "DisruptionTarget", "True", Some("TerminationByKubelet"), Some(message));
                    });
                    self.event("Warning", "Evicted", message, None);
                }
                _ = async { match pod_deadline_at { Some(at) if !deadline_exceeded && !evicted => tokio::time::sleep_until(at).await, _ => std::future::pending().await } } => {
                    deadline_exceeded = true;
                    pending_restarts.clear();
                    for (i, s) in slots.iter().enumerate() {
                        if s.exit.is_none() {
                            let _ = signal_senders[i].try_send(StopSignal::Kill);
                        }
                    }
                    self.event("Normal", "DeadlineExceeded", POD_DEADLINE_MESSAGE, None);
                }
                changed = self.signals.changed() => {
                    if changed.is_err() { return; }
                    if matches!(*self.signals.borrow(), PodSignal::Removed) {
                        for (i, s) in slots.iter().enumerate() {
                            if s.exit.is_none() {
                                let _ = signal_senders[i].try_send(StopSignal::Kill);
                            }
                        }
                        return;
                    }
                }
                _ = self.cluster.shutdown.cancelled() => {
                    for (i, s) in slots.iter().enumerate() {
                        if s.exit.is_none() {
                            let _ = signal_senders[i].try_send(StopSignal::Kill);
                        }
                    }
                    return;
                }
            }
        }
        // All containers are done: terminal phase.
        let all_succeeded = slots
            .iter()
            .all(|s| s.exit.as_ref().is_some_and(|e| e.exit_code == 0));
        let phase = if all_succeeded && !evicted && !deadline_exceeded {
            "Succeeded"
        } else {
            "Failed"
        };
        let ready_reason = if phase == "Succeeded" {
            "PodCompleted"
        } else {
            "PodFailed"
        };
        self.write_status(|p| {
            p["status"]["phase"] = json!(phase);
            if deadline_exceeded {
                p["status"]["reason"] = json!("DeadlineExceeded");
                p["status"]["message"] = json!(POD_DEADLINE_MESSAGE);
            }
            if evicted {
                p["status"]["reason"] = json!("Evicted");
                p["status"]["message"] = json!("The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ");
            }
            set_condition(p, "PodReadyToStartContainers", "False", None, None);
            set_condition(p, "Ready", "False", Some(ready_reason), None);
            set_condition(p, "ContainersReady", "False", Some(ready_reason), None);
        });
        if deleting {
            final_delete(&self.cluster, &self.namespace, &self.name, &self.uid);
        } else {
            // A delete may have arrived while we were finishing.
            loop {
                if let Some(Interrupt::Deleted(_)) = self.interrupt() {
                    final_delete(&self.cluster, &self.namespace, &self.name, &self.uid);
                    return;
                }
                tokio::select! {
                    changed = self.signals.changed() => if changed.is_err() || matches!(*self.signals.borrow(), PodSignal::Removed) { return },
                    _ = self.cluster.shutdown.cancelled() => return,
                }
            }
        }
    }

    fn start_container(
        &self,
        pod: &Arc<Value>,
        slot: &ContainerSlot,
        env: Vec<(String, String)>,
        index: usize,
        exit_tx: tokio::sync::mpsc::Sender<(usize, ContainerExit)>,
    ) -> (tokio::sync::mpsc::Sender<StopSignal>, String) {
        let cname = slot.spec["name"].as_str().unwrap_or_default().to_string();
        self.event(
            "Normal",
            "Created",
            &format!("Created container: {cname}"),
            Some(&cname),
        );
        let log = self.cluster.logs.start_run(&self.uid, &cname);
        let run = self.runtime.start(ContainerLaunch {
            pod: pod.clone(),
            container: slot.spec.clone(),
            env,
            log,
        });
        self.event(
            "Normal",
            "Started",
            &format!("Started container {cname}"),
            Some(&cname),
        );
        let started_at = now_rfc3339();
        let container_id = format!("containerd://{}", random_hex(64));
        let image = normalized_image(slot.spec["image"].as_str().unwrap_or_default());
        let restart_count = slot.restart_count;
        let started = started_at.clone();
        self.write_status(|p| {
            if let Some(status) = p.pointer_mut(&format!("/status/containerStatuses/{index}")) {
                let last_state = status.get("lastState").cloned().unwrap_or(json!({}));
                *status = json!({
                    "name": cname,
                    "state": {"running": {"startedAt": started}},
                    "lastState": last_state,
                    "ready": true,
                    "restartCount": restart_count,
                    "image": image,
                    "imageID": format!("{}@sha256:{}", image.split(':').next().unwrap_or_default(), random_hex(64)),
                    "containerID": container_id,
                    "started": true,
                });
            }
        });
        let mut exit = run.exit;
        tokio::spawn(async move {
            let result = (&mut exit).await.unwrap_or(ContainerExit::from_code(137));
            let _ = exit_tx.send((index, result)).await;
        });
        (run.signals, started_at)
    }

    fn mark_running(&self) {
        let pod_ip = format!("10.244.0.{}", 2 + (self.uid.as_bytes()[0] as u32 % 250));
        self.write_status(|p| {
            let all_ready = p
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().all(|s| s["ready"] == true));
            p["status"]["phase"] = json!("Running");
            p["status"]["podIP"] = json!(pod_ip);
            p["status"]["podIPs"] = json!([{"ip": pod_ip}]);
            set_condition(p, "PodReadyToStartContainers", "True", None, None);
            if all_ready {
                set_condition(p, "Ready", "True", None, None);
                set_condition(p, "ContainersReady", "True", None, None);
            }
        });
    }

    fn record_exit(
        &self,
        index: usize,
        slot: &ContainerSlot,
        exit: &ContainerExit,
        restarting: bool,
        backoff: Duration,
    ) {
        let finished = now_rfc3339();
        let cname = slot.spec["name"].as_str().unwrap_or_default().to_string();
        let name = self.name.clone();
        let namespace = self.namespace.clone();
        let uid = self.uid.clone();
        self.write_status(|p| {
            let Some(status) = p.pointer_mut(&format!("/status/containerStatuses/{index}")) else { return };
            let started = status.pointer("/state/running/startedAt").cloned().unwrap_or(json!(finished));
            let mut terminated = json!({
                "exitCode": exit.exit_code,
                "reason": exit.reason,
                "startedAt": started,
                "finishedAt": finished,
                "containerID": status["containerID"],
            });
            if let Some(m) = &exit.message {
                terminated["message"] = json!(m);
            }
            status["ready"] = json!(false);
            status["started"] = json!(false);
            if restarting {
                status["lastState"] = json!({"terminated": terminated});
                status["state"] = json!({"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": format!("back-off {}s restarting failed container={cname} pod={name}_{namespace}({uid})", backoff.as_secs().max(1))
                }});
            } else {
                status["state"] = json!({"terminated": terminated});
            }
            let unready: Vec<String> = p
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map(|l| l.iter().filter(|s| s["ready"] != true).filter_map(|s| s["name"].as_str().map(String::from)).collect())
                .unwrap_or_default();
            let message = format!("containers with unready status: [{}]", unready.join(" "));
            set_condition(p, "Ready", "False", Some("ContainersNotReady"), Some(&message));
            set_condition(p, "ContainersReady", "False", Some("ContainersNotReady"), Some(&message));
        });
    }
}

fn waiting_status(
    container: &Value,
    reason: &str,
    message: Option<&str>,
    restarts: i64,
    last: Option<Value>,
) -> Value {
    let mut waiting = json!({"reason": reason});
    if let Some(m) = message {
        waiting["message"] = json!(m);
    }
    json!({
        "name": container["name"],
        "state": {"waiting": waiting},
        "lastState": last.unwrap_or(json!({})),
        "ready": false,
        "restartCount": restarts,
        "image": container["image"],
        "imageID": "",
        "started": false,
    })
}

fn normalized_image(image: &str) -> String {
    let mut name = image.to_string();
    let last = name.rsplit('/').next().unwrap_or_default().to_string();
    if !last.contains(':') && !name.contains('@') {
        name.push_str(":latest");
    }
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        if name.contains('/') {
            name = format!("docker.io/{name}");
        } else {
            name = format!("docker.io/library/{name}");
        }
    }
    name
}

fn random_hex(len: usize) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

/// The kubelet's FailedMount message for the first non-optional Secret/ConfigMap volume whose
/// source does not exist.
fn missing_volume_source(cluster: &Cluster, pod: &Value) -> Option<String> {
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
    let mut env: Vec<(String, String)> = Vec::new();
    let lookup = |kind: &str, name: &str| -> Option<Arc<Value>> {
        let resource = if kind == "secret" {
            resources::secrets()
        } else {
            resources::configmaps()
        };
        cluster.store.get(resource, namespace, name)
    };
    let data_value = |kind: &str, object: &Value, key: &str| -> Option<String> {
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
    };
    if let Some(list) = container["envFrom"].as_array() {
        for source in list {
            let prefix = source["prefix"].as_str().unwrap_or_default();
            for (field, kind) in [("secretRef", "secret"), ("configMapRef", "configmap")] {
                let Some(reference) = source.get(field) else {
                    continue;
                };
                let name = reference["name"].as_str().unwrap_or_default();
                let optional = reference["optional"].as_bool().unwrap_or(false);
                match lookup(kind, name) {
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
        }
    }
    if let Some(list) = container["env"].as_array() {
        for var in list {
            let name = var["name"].as_str().unwrap_or_default().to_string();
            if let Some(value) = var.get("value").and_then(Value::as_str) {
                let expanded = crate::runtime::process::expand_references(value, &env);
                env.push((name, expanded));
                continue;
            }
            let Some(from) = var.get("valueFrom") else {
                env.push((name, String::new()));
                continue;
            };
            for (field, kind) in [("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")] {
                let Some(reference) = from.get(field) else {
                    continue;
                };
                let object_name = reference["name"].as_str().unwrap_or_default();
                let key = reference["key"].as_str().unwrap_or_default();
                let optional = reference["optional"].as_bool().unwrap_or(false);
                match lookup(kind, object_name) {
                    None if optional => {}
                    None => return Err(format!("{kind} \"{object_name}\" not found")),
                    Some(object) => match data_value(kind, &object, key) {
                        Some(v) => env.push((name.clone(), v)),
                        None if optional => {}
                        None => {
                            return Err(format!(
                                "couldn't find key {key} in {} {namespace}/{object_name}",
                                if kind == "secret" {
                                    "Secret"
                                } else {
                                    "ConfigMap"
                                }
                            ))
                        }
                    },
                }
            }
            if let Some(field_ref) = from.get("fieldRef") {
                let path = field_ref["fieldPath"].as_str().unwrap_or_default();
                let value = match path {
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
                };
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
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_checked_like_containerd() {
        assert!(is_valid_image_reference("alpine"));
        assert!(is_valid_image_reference("docker.io/library/alpine:3.20"));
        assert!(is_valid_image_reference(
            "localhost:5000/prefecthq/prefect:3-latest"
        ));
        assert!(!is_valid_image_reference("Alpine"));
        assert!(!is_valid_image_reference("bad image"));
    }

    #[test]
    fn short_images_normalize_to_docker_hub() {
        assert_eq!(
            normalized_image("alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            normalized_image("prefecthq/prefect:3"),
            "docker.io/prefecthq/prefect:3"
        );
    }
}
