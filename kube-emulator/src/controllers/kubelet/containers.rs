//! The main containers: started together once the init containers are done, supervised with
//! restarts and CrashLoopBackOff, graceful and forced stops, eviction and the pod's
//! `activeDeadlineSeconds`, then the terminal phase once every container is done.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::images::normalized_image;
use super::{final_delete, Interrupt, PodSignal, PodWorker};
use crate::controllers::pod_status::set_condition;
use crate::runtime::{ContainerExit, ContainerLaunch, PodFate, StopSignal};
use crate::time::now_rfc3339;

const POD_DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

const EVICTION_MESSAGE: &str =
    "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ";

/// Per-container bookkeeping in the worker.
pub(super) struct ContainerSlot {
    pub(super) spec: Value,
    pub(super) restart_count: i64,
    pub(super) exit: Option<ContainerExit>,
}

/// The main containers while they run: what supervising them keeps track of.
struct MainRun {
    slots: Vec<ContainerSlot>,
    envs: Vec<Vec<(String, String)>>,
    /// Each container's stop signals (replaced when it restarts).
    signal_senders: Vec<mpsc::Sender<StopSignal>>,
    exit_tx: mpsc::Sender<(usize, ContainerExit)>,
    exit_rx: mpsc::Receiver<(usize, ContainerExit)>,
    restart_policy: String,
    crash_backoff: Duration,
    /// Containers waiting out their back-off, with when they restart.
    pending_restarts: Vec<(usize, Instant)>,
    /// When the grace period of a delete is over (SIGKILL).
    kill_deadline: Option<Instant>,
    /// When the runtime evicts the pod, if it does.
    evict_at: Option<Instant>,
    /// Pod-level activeDeadlineSeconds.
    pod_deadline_at: Option<Instant>,
    deleting: bool,
    evicted: bool,
    deadline_exceeded: bool,
}

impl MainRun {
    fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.exit.is_none()).count()
    }

    /// SIGKILL every container still running.
    fn kill_running(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            if s.exit.is_none() {
                let _ = self.signal_senders[i].try_send(StopSignal::Kill);
            }
        }
    }
}

impl PodWorker {
    pub(super) async fn run_containers(
        mut self,
        slots: Vec<ContainerSlot>,
        envs: Vec<Vec<(String, String)>>,
    ) {
        let Some(pod) = self.pod() else { return };
        let restart_policy = restart_policy(&pod);
        let fate = self.runtime.pod_fate(&pod);
        let (exit_tx, exit_rx) = mpsc::channel::<(usize, ContainerExit)>(16);
        let mut run = MainRun {
            slots,
            envs,
            signal_senders: Vec::new(),
            exit_tx,
            exit_rx,
            restart_policy,
            crash_backoff: self.cluster.config.job_backoff_base,
            pending_restarts: Vec::new(),
            kill_deadline: None,
            evict_at: None,
            pod_deadline_at: None,
            deleting: false,
            evicted: false,
            deadline_exceeded: false,
        };
        for i in 0..run.slots.len() {
            let (signals, _started_at) = self.start_container(
                &pod,
                &run.slots[i],
                run.envs.get(i).cloned().unwrap_or_default(),
                i,
                run.exit_tx.clone(),
            );
            run.signal_senders.push(signals);
        }
        self.mark_running();
        run.evict_at = match fate {
            PodFate::EvictAfterMillis(ms) => Some(Instant::now() + Duration::from_millis(ms)),
            PodFate::Normal => None,
        };
        run.pod_deadline_at = pod_deadline(&pod);
        if !self.supervise(&mut run).await {
            return;
        }
        // All containers are done: terminal phase.
        self.write_terminal_status(&run);
        if run.deleting {
            final_delete(&self.cluster, &self.namespace, &self.name, &self.uid);
        } else {
            self.finish_pending_delete().await;
        }
    }

    /// Watch the containers until every one is done (true), or until the worker stops
    /// without a terminal phase: the pod removed or gone, or shutdown (false).
    async fn supervise(&mut self, run: &mut MainRun) -> bool {
        loop {
            let running = run.running();
            if running == 0 && run.pending_restarts.is_empty() {
                return true;
            }
            if !run.deleting && self.begin_stop(run) && running == 0 {
                return true;
            }
            let next_restart = run.pending_restarts.iter().map(|(_, at)| *at).min();
            let kill_at = run.kill_deadline;
            let evict_at = run.evict_at.filter(|_| !run.evicted);
            let deadline_at = run
                .pod_deadline_at
                .filter(|_| !run.deadline_exceeded && !run.evicted);
            tokio::select! {
                Some((index, exit)) = run.exit_rx.recv() => self.container_exited(run, index, exit),
                _ = sleep_until(next_restart) => {
                    if !self.restart_due(run) {
                        return false;
                    }
                }
                _ = sleep_until(kill_at) => {
                    run.kill_running();
                    run.kill_deadline = None;
                }
                _ = sleep_until(evict_at) => self.evict(run),
                _ = sleep_until(deadline_at) => self.exceed_deadline(run),
                changed = self.signals.changed() => {
                    if changed.is_err() { return false; }
                    if matches!(*self.signals.borrow(), PodSignal::Removed) {
                        run.kill_running();
                        return false;
                    }
                }
                _ = self.cluster.shutdown.cancelled() => {
                    run.kill_running();
                    return false;
                }
            }
        }
    }

    /// A delete (or the pod's removal) arrived: stop every running container, SIGTERM with a
    /// grace period (SIGKILL without), SIGKILL when it is over. Returns whether it did.
    fn begin_stop(&self, run: &mut MainRun) -> bool {
        let requested = match self.interrupt() {
            Some(Interrupt::Deleted(g)) => Some(g),
            Some(Interrupt::Removed) => Some(0),
            None => None,
        };
        let Some(grace) = requested else {
            return false;
        };
        run.deleting = true;
        run.pending_restarts.clear();
        let grace = if grace > 0 { grace } else { 0 };
        for (i, s) in run.slots.iter().enumerate() {
            if s.exit.is_none() {
                let cname = s.spec["name"].as_str().unwrap_or_default().to_string();
                self.event(
                    "Normal",
                    "Killing",
                    &format!("Stopping container {cname}"),
                    Some(&cname),
                );
                let _ = run.signal_senders[i].try_send(if grace == 0 {
                    StopSignal::Kill
                } else {
                    StopSignal::Terminate
                });
            }
        }
        run.kill_deadline = Some(Instant::now() + Duration::from_secs(grace as u64));
        true
    }

    /// A container exited: record it and, if the restart policy says so, schedule its
    /// restart after the crash back-off.
    fn container_exited(&self, run: &mut MainRun, index: usize, exit: ContainerExit) {
        let failed = exit.exit_code != 0;
        let restart = !run.deleting
            && !run.evicted
            && !run.deadline_exceeded
            && match run.restart_policy.as_str() {
                "Always" => true,
                "OnFailure" => failed,
                _ => false,
            };
        run.slots[index].exit = Some(exit.clone());
        self.record_exit(index, &run.slots[index], &exit, restart, run.crash_backoff);
        if restart {
            let cname = run.slots[index].spec["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            self.event(
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {cname} in pod {}_{}({})",
                    self.name, self.namespace, self.uid
                ),
                Some(&cname),
            );
            run.pending_restarts
                .push((index, Instant::now() + run.crash_backoff));
            run.crash_backoff = (run.crash_backoff * 2).min(Duration::from_secs(300));
        }
    }

    /// Restart the containers whose back-off is over. False when the pod is gone.
    fn restart_due(&self, run: &mut MainRun) -> bool {
        let now = Instant::now();
        let due: Vec<usize> = run
            .pending_restarts
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(i, _)| *i)
            .collect();
        run.pending_restarts.retain(|(_, at)| *at > now);
        let Some(pod) = self.pod() else { return false };
        for index in due {
            run.slots[index].restart_count += 1;
            run.slots[index].exit = None;
            let (signals, _) = self.start_container(
                &pod,
                &run.slots[index],
                run.envs.get(index).cloned().unwrap_or_default(),
                index,
                run.exit_tx.clone(),
            );
            run.signal_senders[index] = signals;
        }
        self.mark_running();
        true
    }

    /// The runtime's eviction (node memory pressure): kill the containers, DisruptionTarget.
    fn evict(&self, run: &mut MainRun) {
        run.evicted = true;
        let message = EVICTION_MESSAGE;
        run.kill_running();
        self.write_status(|p| {
            set_condition(
                p,
                "DisruptionTarget",
                "True",
                Some("TerminationByKubelet"),
                Some(message),
            );
        });
        self.event("Warning", "Evicted", message, None);
    }

    /// The pod's activeDeadlineSeconds passed: kill the containers, no more restarts.
    fn exceed_deadline(&self, run: &mut MainRun) {
        run.deadline_exceeded = true;
        run.pending_restarts.clear();
        run.kill_running();
        self.event("Normal", "DeadlineExceeded", POD_DEADLINE_MESSAGE, None);
    }

    /// Succeeded when every container exited 0 (and the pod was neither evicted nor past its
    /// deadline), Failed otherwise.
    fn write_terminal_status(&self, run: &MainRun) {
        let all_succeeded = run
            .slots
            .iter()
            .all(|s| s.exit.as_ref().is_some_and(|e| e.exit_code == 0));
        let (evicted, deadline_exceeded) = (run.evicted, run.deadline_exceeded);
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
                p["status"]["message"] = json!(EVICTION_MESSAGE);
            }
            set_condition(p, "PodReadyToStartContainers", "False", None, None);
            set_condition(p, "Ready", "False", Some(ready_reason), None);
            set_condition(p, "ContainersReady", "False", Some(ready_reason), None);
        });
    }

    /// The pod is terminal without a delete: finish one if it arrives.
    async fn finish_pending_delete(&mut self) {
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

/// The pod's `restartPolicy` (Always when unset).
pub(super) fn restart_policy(pod: &Value) -> String {
    pod.pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_string()
}

/// Pod-level activeDeadlineSeconds, measured from status.startTime.
fn pod_deadline(pod: &Value) -> Option<Instant> {
    pod.pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .map(|seconds| {
            let started = pod
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(crate::time::parse_time)
                .unwrap_or_else(chrono::Utc::now);
            let remaining = (started + chrono::Duration::seconds(seconds)) - chrono::Utc::now();
            Instant::now() + remaining.to_std().unwrap_or_default()
        })
}

/// Sleep until `at`; without one, never wake (a timer that is off in `select!`).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) fn random_hex(len: usize) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}
