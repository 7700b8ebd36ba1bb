//! The simulated Job controller (batch/v1, NonIndexed): creates pods from the template with the
//! job labels, tracking finalizer and controller ownerReference; counts finished pods and strips
//! their finalizer; replaces failed pods after an exponential backoff; enforces `backoffLimit`,
//! `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished`; and writes the v1.31+
//! terminal condition sequence (FailureTarget -> Failed, SuccessCriteriaMet -> Complete) with
//! the real reasons, messages and events.

mod pod_failure_policy;
mod sync;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::events::{record, Reporter};
use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::registry::{DeleteOptions, Propagation};
use crate::resources;
use crate::store::{Change, ChangeKind};
use crate::time::parse_time;

/// The finalizer the controller puts on pods it tracks.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
const MANAGER: &str = "kube-controller-manager";

type JobKey = (String, String);

/// In-memory state per job (the real controller also keeps backoff records in memory).
#[derive(Default)]
struct JobMemory {
    counted: HashSet<String>,
    consecutive_failures: u32,
    last_failure: Option<Instant>,
}

struct JobController {
    cluster: Arc<Cluster>,
    /// job uid -> pod names it controls.
    pods_by_job: HashMap<String, BTreeSet<String>>,
    memory: HashMap<String, JobMemory>,
    timers: mpsc::UnboundedSender<JobKey>,
}

/// The controller ownerReference of an object, as (kind, name, uid).
fn controller_of(object: &Value) -> Option<(String, String, String)> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or_default().to_string(),
                r["name"].as_str().unwrap_or_default().to_string(),
                r["uid"].as_str().unwrap_or_default().to_string(),
            )
        })
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v == finalizer))
}

/// Run the Job controller until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let (timers, mut timer_rx) = mpsc::unbounded_channel();
    let mut changes = cluster.store.subscribe();
    let mut controller = JobController {
        cluster: cluster.clone(),
        pods_by_job: HashMap::new(),
        memory: HashMap::new(),
        timers,
    };
    let mut queue: BTreeSet<JobKey> = BTreeSet::new();
    let (_, pods) = cluster.store.list(resources::pods(), None);
    for pod in pods {
        controller.index_pod(&pod, false);
    }
    let (_, jobs) = cluster.store.list(resources::jobs(), None);
    for job in jobs {
        queue.insert(crate::store::object_key(&job));
    }
    loop {
        for key in std::mem::take(&mut queue) {
            controller.sync(&key);
        }
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => controller.on_change(&change, &mut queue),
                Err(RecvError::Lagged(_)) => controller.relist(&mut queue),
                Err(RecvError::Closed) => return,
            },
            Some(key) = timer_rx.recv() => { queue.insert(key); }
            _ = cluster.shutdown.cancelled() => return,
        }
    }
}

impl JobController {
    /// A change in the store: queue the Job it concerns, or release the pods of a deleted Job
    /// and orphaned pods.
    fn on_change(&mut self, change: &Change, queue: &mut BTreeSet<JobKey>) {
        if change.resource.is(resources::jobs()) {
            self.on_job_change(change, queue);
        } else if change.resource.is(resources::pods()) {
            self.on_pod_change(change, queue);
        }
    }

    /// A Job changed (queue it) or was deleted (forget it; its pods lose their finalizer).
    fn on_job_change(&mut self, change: &Change, queue: &mut BTreeSet<JobKey>) {
        if change.kind == ChangeKind::Deleted {
            if let Some(uid) = change
                .object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
            {
                self.memory.remove(uid);
                // Pods of a deleted job lose their tracking finalizer.
                if let Some(names) = self.pods_by_job.get(uid).cloned() {
                    let ns = change
                        .object
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    for name in names {
                        let _ = self.cluster.registry.remove_finalizer(
                            resources::pods(),
                            ns,
                            &name,
                            TRACKING_FINALIZER,
                            MANAGER,
                        );
                    }
                }
            }
        } else {
            queue.insert(crate::store::object_key(&change.object));
        }
    }

    /// A pod changed: index it and queue its Job, or strip the finalizer of a pod whose Job is
    /// gone.
    fn on_pod_change(&mut self, change: &Change, queue: &mut BTreeSet<JobKey>) {
        let removed = change.kind == ChangeKind::Deleted;
        self.index_pod(&change.object, removed);
        if let Some((kind, name, uid)) = controller_of(&change.object) {
            if kind == "Job" {
                let ns = change
                    .object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let job_exists = self
                    .cluster
                    .store
                    .get(resources::jobs(), &ns, &name)
                    .is_some_and(|j| {
                        j.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str())
                    });
                if job_exists {
                    queue.insert((ns, name));
                } else if !removed && has_finalizer(&change.object, TRACKING_FINALIZER) {
                    let pod_name = change
                        .object
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let _ = self.cluster.registry.remove_finalizer(
                        resources::pods(),
                        &ns,
                        pod_name,
                        TRACKING_FINALIZER,
                        MANAGER,
                    );
                }
            }
        } else if !removed && has_finalizer(&change.object, TRACKING_FINALIZER) {
            // Orphaned pod: strip the tracking finalizer (syncOrphanPod).
            let (ns, pod_name) = crate::store::object_key(&change.object);
            let _ = self.cluster.registry.remove_finalizer(
                resources::pods(),
                &ns,
                &pod_name,
                TRACKING_FINALIZER,
                MANAGER,
            );
        }
    }

    /// Missed changes: queue every Job and rebuild the pod index.
    fn relist(&mut self, queue: &mut BTreeSet<JobKey>) {
        let (_, jobs) = self.cluster.store.list(resources::jobs(), None);
        for job in jobs {
            queue.insert(crate::store::object_key(&job));
        }
        self.pods_by_job.clear();
        let (_, pods) = self.cluster.store.list(resources::pods(), None);
        for pod in pods {
            self.index_pod(&pod, false);
        }
    }

    fn index_pod(&mut self, pod: &Value, removed: bool) {
        let Some((kind, _, uid)) = controller_of(pod) else {
            return;
        };
        if kind != "Job" {
            return;
        }
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let set = self.pods_by_job.entry(uid.clone()).or_default();
        if removed {
            set.remove(&name);
            if set.is_empty() {
                self.pods_by_job.remove(&uid);
            }
        } else {
            set.insert(name);
        }
    }

    fn after(&self, key: &JobKey, delay: Duration) {
        let timers = self.timers.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = timers.send(key);
        });
    }

    fn create_pod(&mut self, job: &Value) {
        let (ns, name) = crate::store::object_key(job);
        let uid = job
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let template = job.pointer("/spec/template").cloned().unwrap_or_default();
        let mut metadata = json!({
            "generateName": format!("{name}-"),
            "namespace": ns,
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "finalizers": [TRACKING_FINALIZER],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        });
        if let Some(annotations) = template.pointer("/metadata/annotations") {
            metadata["annotations"] = annotations.clone();
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": template.get("spec").cloned().unwrap_or_default(),
        });
        let ctx = WriteContext::update(MANAGER);
        match self
            .cluster
            .registry
            .create(resources::pods(), &ns, pod, &ctx, false)
        {
            Ok(created) => {
                // Index right away (the real controller's "expectations") so a sync triggered
                // before the pod's ADDED event arrives does not create a second pod.
                self.index_pod(&created, false);
                let pod_name = created
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                record(
                    &self.cluster,
                    job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {pod_name}"),
                    Reporter::JobController,
                    None,
                );
            }
            Err(err) => {
                record(
                    &self.cluster,
                    job,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", err.message),
                    Reporter::JobController,
                    None,
                );
            }
        }
    }

    fn handle_ttl(&self, key: &JobKey, job: &Value) {
        let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_i64)
        else {
            return;
        };
        let finished_at = job
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter().find(|c| {
                    (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                })
            })
            .and_then(|c| c["lastTransitionTime"].as_str())
            .and_then(parse_time);
        let Some(finished_at) = finished_at else {
            return;
        };
        let expire = finished_at + chrono::Duration::seconds(ttl);
        let now = chrono::Utc::now();
        if now >= expire {
            let options = DeleteOptions {
                propagation: Some(Propagation::Foreground),
                precondition_uid: job
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(String::from),
                ..DeleteOptions::default()
            };
            let _ = self
                .cluster
                .registry
                .delete(resources::jobs(), &key.0, &key.1, &options);
        } else {
            self.after(
                key,
                (expire - now).to_std().unwrap_or_default() + Duration::from_millis(50),
            );
        }
    }
}

/// `base * 2^(failures-1)`, capped; zero when there were no failures.
pub fn backoff_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    (base * factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(600);
        assert_eq!(backoff_delay(0, base, max), Duration::ZERO);
        assert_eq!(backoff_delay(1, base, max), base);
        assert_eq!(backoff_delay(3, base, max), Duration::from_secs(40));
        assert_eq!(backoff_delay(30, base, max), max);
    }
}
