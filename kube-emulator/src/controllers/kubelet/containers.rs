//! Running a pod's containers: init containers one at a time, then the main containers
//! together, with restarts and CrashLoopBackOff, graceful and forced stops, eviction, the pod's
//! `activeDeadlineSeconds`, and the terminal phase once every container is done.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::env::resolve_env;
use super::images::normalized_image;
use super::{final_delete, Interrupt, PodSignal, PodWorker};
use crate::controllers::pod_status::set_condition;
use crate::runtime::{ContainerExit, ContainerLaunch, PodFate, StopSignal};
use crate::time::now_rfc3339;

const POD_DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Per-container bookkeeping in the worker.
pub(super) struct ContainerSlot {
    pub(super) spec: Value,
    pub(super) restart_count: i64,
    pub(super) exit: Option<ContainerExit>,
}

impl PodWorker {
    /// Run init containers in order. Returns false when the pod ended (failed or deleted).
    pub(super) async fn run_init_containers(&mut self, init_containers: &[Value]) -> bool {
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

    pub(super) async fn run_containers(
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

fn random_hex(len: usize) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}
