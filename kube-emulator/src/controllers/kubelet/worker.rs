//! One pod's worker: its stages from ContainerCreating through the configuration and image
//! checks to running its containers, plus what every stage shares (reading the pod, writing
//! its status, events, interruptible sleeps, stopping before any container started).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::containers::ContainerSlot;
use super::env::{missing_volume_source, resolve_env};
use super::images::is_valid_image_reference;
use super::{final_delete, Interrupt, PodSignal, PodWorker};
use crate::admission::WriteContext;
use crate::controllers::events::{record, Reporter};
use crate::controllers::pod_status::set_condition;
use crate::resources;
use crate::runtime::PullOutcome;
use crate::time::now_rfc3339;

impl PodWorker {
    pub(super) fn pod(&self) -> Option<Arc<Value>> {
        self.cluster
            .store
            .get(resources::pods(), &self.namespace, &self.name)
            .filter(|p| {
                p.pointer("/metadata/uid").and_then(Value::as_str) == Some(self.uid.as_str())
            })
    }

    pub(super) fn write_status(&self, edit: impl FnOnce(&mut Value)) -> Option<Arc<Value>> {
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

    pub(super) fn event(
        &self,
        event_type: &str,
        reason: &str,
        message: &str,
        container: Option<&str>,
    ) {
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
    pub(super) async fn sleep(&mut self, duration: Duration) -> Option<Interrupt> {
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

    pub(super) fn interrupt(&self) -> Option<Interrupt> {
        match *self.signals.borrow() {
            PodSignal::Running => None,
            PodSignal::Deleting(grace) => Some(Interrupt::Deleted(grace)),
            PodSignal::Removed => Some(Interrupt::Removed),
        }
    }

    pub(super) async fn run(mut self) {
        let stage = self.cluster.config.kubelet_stage_delay;
        let Some(pod) = self.pod() else { return };
        let containers = container_specs(&pod, "/spec/containers");
        let init_containers = container_specs(&pod, "/spec/initContainers");
        // Stage 1: ContainerCreating (PodInitializing while init containers are pending).
        self.write_creating_status(&containers, &init_containers);
        if let Some(i) = self.sleep(stage).await {
            return self.stop_before_start(i).await;
        }
        // Stage 2: image names, configuration, pulls — repeated until all containers can start.
        let Some(envs) = self.wait_until_startable(&containers).await else {
            return;
        };
        self.report_images_pulled(&containers);
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

    /// Stage 1: the pod is Pending with every container waiting (ContainerCreating, or
    /// PodInitializing behind init containers).
    fn write_creating_status(&self, containers: &[Value], init_containers: &[Value]) {
        let names = container_names(containers);
        let init_names = container_names(init_containers);
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
    }

    /// Stage 2, repeated until every container can start: returns each container's
    /// environment, or None when the pod is gone or was deleted first (then stopped).
    async fn wait_until_startable(
        &mut self,
        containers: &[Value],
    ) -> Option<Vec<Vec<(String, String)>>> {
        let mut envs: Vec<Vec<(String, String)>> = Vec::new();
        let mut pull_failures = 0u32;
        loop {
            let pod = self.pod()?;
            envs.clear();
            let (blocked, pull_blocked) =
                self.check_containers(&pod, containers, pull_failures, &mut envs);
            if !blocked {
                return Some(envs);
            }
            pull_failures += 1;
            let wait = self.retry_wait(pull_blocked, pull_failures);
            if let Some(i) = self.sleep(wait).await {
                self.stop_before_start(i).await;
                return None;
            }
        }
    }

    /// One pass of stage 2: volumes, then each container's image name, configuration and
    /// pull, pushing the environments of those that get that far. Returns (blocked, blocked
    /// by an image pull).
    fn check_containers(
        &self,
        pod: &Value,
        containers: &[Value],
        pull_failures: u32,
        envs: &mut Vec<Vec<(String, String)>>,
    ) -> (bool, bool) {
        let mut blocked = false;
        let mut pull_blocked = false;
        // Volumes first: a missing Secret/ConfigMap volume keeps the pod in ContainerCreating
        // and no container is looked at until it appears.
        let volume_problem = missing_volume_source(&self.cluster, pod);
        if let Some(message) = &volume_problem {
            self.event("Warning", "FailedMount", message, None);
            blocked = true;
        }
        let to_check = if volume_problem.is_some() {
            &containers[..0]
        } else {
            containers
        };
        for (i, c) in to_check.iter().enumerate() {
            let cname = c["name"].as_str().unwrap_or_default().to_string();
            let image = c["image"].as_str().unwrap_or_default().to_string();
            if !is_valid_image_reference(&image) {
                self.report_invalid_image(i, &cname, &image);
                blocked = true;
                continue;
            }
            match resolve_env(&self.cluster, pod, c) {
                Err(message) => {
                    self.report_config_error(i, &cname, &message);
                    blocked = true;
                    continue;
                }
                Ok(env) => envs.push(env),
            }
            match self.runtime.pull(pod, c) {
                PullOutcome::Pulled => {}
                PullOutcome::Fails(error) => {
                    blocked = true;
                    pull_blocked = true;
                    self.report_pull_failure(i, &cname, &image, &error, pull_failures);
                }
            }
        }
        (blocked, pull_blocked)
    }

    /// A container whose `env`/`envFrom` cannot be resolved: CreateContainerConfigError.
    fn report_config_error(&self, index: usize, cname: &str, message: &str) {
        if self.set_waiting(index, "CreateContainerConfigError", Some(message)) {
            self.event(
                "Warning",
                "Failed",
                &format!("Error: {message}"),
                Some(cname),
            );
        }
    }

    /// Set a container's waiting state; returns true if it changed (so events are not repeated).
    pub(super) fn set_waiting(&self, index: usize, reason: &str, message: Option<&str>) -> bool {
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
    pub(super) async fn stop_before_start(&self, interrupt: Interrupt) {
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

/// The container specs at `pointer` (`/spec/containers` or `/spec/initContainers`).
fn container_specs(pod: &Value, pointer: &str) -> Vec<Value> {
    pod.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn container_names(containers: &[Value]) -> Vec<String> {
    containers
        .iter()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}
