//! Init containers: run one at a time, in order, before the main containers; a failed one is
//! restarted with back-off (or fails the pod under `restartPolicy: Never`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::containers::{random_hex, restart_policy};
use super::env::resolve_env;
use super::{Interrupt, PodWorker};
use crate::controllers::pod_status::set_condition;
use crate::runtime::{ContainerExit, ContainerLaunch, ContainerRun, StopSignal};
use crate::time::now_rfc3339;

impl PodWorker {
    /// Run init containers in order. Returns false when the pod ended (failed or deleted).
    pub(super) async fn run_init_containers(&mut self, init_containers: &[Value]) -> bool {
        let Some(pod) = self.pod() else { return false };
        let restart_policy = restart_policy(&pod);
        let mut backoff = self.cluster.config.job_backoff_base;
        let mut index = 0;
        let mut restarts = 0i64;
        while index < init_containers.len() {
            let spec = &init_containers[index];
            let cname = spec["name"].as_str().unwrap_or_default().to_string();
            let (mut run, started) = self.start_init_container(&pod, spec, index, restarts);
            let Some(exit) = self.await_init_exit(&mut run).await else {
                return false;
            };
            self.record_init_exit(index, started, &exit);
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
        self.mark_initialized();
        true
    }

    /// Start init container `index` and mark it running; returns the run and its start time.
    fn start_init_container(
        &self,
        pod: &Arc<Value>,
        spec: &Value,
        index: usize,
        restarts: i64,
    ) -> (ContainerRun, String) {
        let cname = spec["name"].as_str().unwrap_or_default().to_string();
        let env = resolve_env(&self.cluster, pod, spec).unwrap_or_default();
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
            if let Some(status) = p.pointer_mut(&format!("/status/initContainerStatuses/{index}")) {
                status["state"] = json!({"running": {"startedAt": started}});
                status["started"] = json!(true);
                status["restartCount"] = json!(restart_count);
                status["containerID"] = json!(format!("containerd://{}", random_hex(64)));
            }
        });
        (run, started)
    }

    /// Wait for an init container to exit. None when the pod was deleted or removed (the
    /// container is killed and the pod stopped) or on shutdown.
    async fn await_init_exit(&mut self, run: &mut ContainerRun) -> Option<ContainerExit> {
        let signals = run.signals.clone();
        let exit_rx = &mut run.exit;
        loop {
            tokio::select! {
                exit = &mut *exit_rx => return Some(exit.unwrap_or(ContainerExit::from_code(137))),
                changed = self.signals.changed() => {
                    if changed.is_err() || self.interrupt().is_some() {
                        let _ = signals.try_send(StopSignal::Kill);
                        let interrupt = self.interrupt().unwrap_or(Interrupt::Removed);
                        self.stop_before_start(interrupt).await;
                        return None;
                    }
                }
                _ = self.cluster.shutdown.cancelled() => {
                    let _ = signals.try_send(StopSignal::Kill);
                    return None;
                }
            }
        }
    }

    /// Record how init container `index` ended.
    fn record_init_exit(&self, index: usize, started: String, exit: &ContainerExit) {
        let finished = now_rfc3339();
        let started_at = started.clone();
        self.write_status(|p| {
            if let Some(status) = p.pointer_mut(&format!("/status/initContainerStatuses/{index}")) {
                status["state"] = json!({"terminated": {
                    "exitCode": exit.exit_code, "reason": exit.reason,
                    "startedAt": started_at, "finishedAt": finished,
                    "containerID": status["containerID"].clone()
                }});
                status["ready"] = json!(exit.exit_code == 0);
                status["started"] = json!(false);
            }
        });
    }

    /// Every init container succeeded: Initialized, and the main containers are creating.
    fn mark_initialized(&self) {
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
    }
}
