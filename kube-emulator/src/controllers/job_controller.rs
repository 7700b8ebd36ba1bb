//! The simulated Job controller (batch/v1, NonIndexed): creates pods from the template with the
//! job labels, tracking finalizer and controller ownerReference; counts finished pods and strips
//! their finalizer; replaces failed pods after an exponential backoff; enforces `backoffLimit`,
//! `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished`; and writes the v1.31+
//! terminal condition sequence (FailureTarget -> Failed, SuccessCriteriaMet -> Complete) with
//! the real reasons, messages and events.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::events::{record, Reporter};
use super::pod_status::{has_true_condition, is_terminal, set_condition};
use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::registry::{DeleteOptions, Propagation};
use crate::resources;
use crate::store::ChangeKind;
use crate::time::{now_rfc3339, parse_time};

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
                Ok(change) => {
                    if change.resource.is(resources::jobs()) {
                        if change.kind == ChangeKind::Deleted {
                            if let Some(uid) = change.object.pointer("/metadata/uid").and_then(Value::as_str) {
                                controller.memory.remove(uid);
                                // Pods of a deleted job lose their tracking finalizer.
                                if let Some(names) = controller.pods_by_job.get(uid).cloned() {
                                    let ns = change.object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
                                    for name in names {
                                        let _ = cluster.registry.remove_finalizer(resources::pods(), ns, &name, TRACKING_FINALIZER, MANAGER);
                                    }
                                }
                            }
                        } else {
                            queue.insert(crate::store::object_key(&change.object));
                        }
                    } else if change.resource.is(resources::pods()) {
                        let removed = change.kind == ChangeKind::Deleted;
                        controller.index_pod(&change.object, removed);
                        if let Some((kind, name, uid)) = controller_of(&change.object) {
                            if kind == "Job" {
                                let ns = change.object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
                                let job_exists = cluster.store.get(resources::jobs(), &ns, &name)
                                    .is_some_and(|j| j.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid.as_str()));
                                if job_exists {
                                    queue.insert((ns, name));
                                } else if !removed && has_finalizer(&change.object, TRACKING_FINALIZER) {
                                    let pod_name = change.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                                    let _ = cluster.registry.remove_finalizer(resources::pods(), &ns, pod_name, TRACKING_FINALIZER, MANAGER);
                                }
                            }
                        } else if !removed && has_finalizer(&change.object, TRACKING_FINALIZER) {
                            // Orphaned pod: strip the tracking finalizer (syncOrphanPod).
                            let (ns, pod_name) = crate::store::object_key(&change.object);
                            let _ = cluster.registry.remove_finalizer(resources::pods(), &ns, &pod_name, TRACKING_FINALIZER, MANAGER);
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    let (_, jobs) = cluster.store.list(resources::jobs(), None);
                    for job in jobs {
                        queue.insert(crate::store::object_key(&job));
                    }
                    controller.pods_by_job.clear();
                    let (_, pods) = cluster.store.list(resources::pods(), None);
                    for pod in pods {
                        controller.index_pod(&pod, false);
                    }
                }
                Err(RecvError::Closed) => return,
            },
            Some(key) = timer_rx.recv() => { queue.insert(key); }
            _ = cluster.shutdown.cancelled() => return,
        }
    }
}

impl JobController {
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

    fn sync(&mut self, key: &JobKey) {
        let (ns, name) = key;
        let Some(job) = self.cluster.store.get(resources::jobs(), ns, name) else {
            return;
        };
        let uid = job
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let pod_names: Vec<String> = self
            .pods_by_job
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let pods: Vec<Arc<Value>> = pod_names
            .iter()
            .filter_map(|n| self.cluster.store.get(resources::pods(), ns, n))
            .filter(|p| controller_of(p).is_some_and(|(_, _, u)| u == uid))
            .collect();
        if job.pointer("/metadata/deletionTimestamp").is_some() {
            for pod in pods.iter().filter(|p| has_finalizer(p, TRACKING_FINALIZER)) {
                let pod_name = pod
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let _ = self.cluster.registry.remove_finalizer(
                    resources::pods(),
                    ns,
                    pod_name,
                    TRACKING_FINALIZER,
                    MANAGER,
                );
            }
            return;
        }
        let spec = job.get("spec").cloned().unwrap_or_default();
        let memory = self.memory.entry(uid.clone()).or_default();

        // 1. Count finished pods that still carry our finalizer.
        let mut newly_succeeded = 0i64;
        let mut newly_failed = 0i64;
        let mut fail_job: Option<String> = None;
        let mut to_release = Vec::new();
        for pod in &pods {
            let pod_uid = pod
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
            let scheduled = pod.pointer("/spec/nodeName").is_some();
            let finished = is_terminal(pod) || (deleting && !scheduled);
            if !finished || !has_finalizer(pod, TRACKING_FINALIZER) {
                continue;
            }
            if memory.counted.insert(pod_uid) {
                if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded") {
                    newly_succeeded += 1;
                    memory.consecutive_failures = 0;
                } else {
                    match pod_failure_policy_action(&job, pod) {
                        PolicyAction::Ignore => {}
                        PolicyAction::FailJob(message) => {
                            newly_failed += 1;
                            fail_job = Some(message);
                        }
                        PolicyAction::Count => {
                            newly_failed += 1;
                            memory.consecutive_failures += 1;
                            memory.last_failure = Some(Instant::now());
                        }
                    }
                }
            }
            to_release.push(
                pod.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        let status = job.get("status").cloned().unwrap_or_else(|| json!({}));
        let succeeded = status["succeeded"].as_i64().unwrap_or(0) + newly_succeeded;
        let failed = status["failed"].as_i64().unwrap_or(0) + newly_failed;
        let active_pods: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| !is_terminal(p) && p.pointer("/metadata/deletionTimestamp").is_none())
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| !is_terminal(p) && p.pointer("/metadata/deletionTimestamp").is_some())
            .count() as i64;
        let ready = active_pods
            .iter()
            .filter(|p| has_true_condition(p, "Ready"))
            .count() as i64;
        let active = active_pods.len() as i64;

        let finished = has_true_condition(&job, "Complete") || has_true_condition(&job, "Failed");
        let suspended = spec["suspend"].as_bool().unwrap_or(false);
        let completions = spec["completions"].as_i64();
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1);
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let now = chrono::Utc::now();

        let mut conditions_to_set: Vec<(&str, String, String)> = Vec::new();
        let mut events: Vec<(&str, String, String)> = Vec::new();
        let mut delete_active = false;
        let mut start_time = status["startTime"].as_str().map(String::from);
        let mut completion_time = status["completionTime"].as_str().map(String::from);
        let mut create = 0i64;
        let failure_target = has_true_condition(&job, "FailureTarget");
        let success_met = has_true_condition(&job, "SuccessCriteriaMet");

        if finished {
            delete_active = active > 0;
        } else if failure_target || success_met {
            delete_active = active > 0;
            if active == 0 && terminating == 0 {
                if failure_target {
                    let (reason, message) = condition_reason(&job, "FailureTarget");
                    conditions_to_set.push(("Failed", reason.clone(), message.clone()));
                    events.push(("Warning", reason, message));
                } else {
                    conditions_to_set.push((
                        "Complete",
                        "CompletionsReached".into(),
                        "Reached expected number of succeeded pods".into(),
                    ));
                    completion_time = Some(now_rfc3339());
                    events.push(("Normal", "Completed".into(), "Job completed".into()));
                }
            }
        } else if suspended {
            delete_active = active > 0;
            if !has_true_condition(&job, "Suspended") {
                conditions_to_set.push((
                    "Suspended",
                    "JobSuspended".into(),
                    "Job suspended".into(),
                ));
                events.push(("Normal", "Suspended".into(), "Job suspended".into()));
            }
        } else {
            if has_true_condition(&job, "Suspended") {
                conditions_to_set.push((
                    "Suspended-False",
                    "JobResumed".into(),
                    "Job resumed".into(),
                ));
                events.push(("Normal", "Resumed".into(), "Job resumed".into()));
                start_time = None;
            }
            if start_time.is_none() {
                start_time = Some(now_rfc3339());
            }
            let deadline_exceeded = spec["activeDeadlineSeconds"].as_i64().and_then(|ads| {
                let started = start_time.as_deref().and_then(parse_time)?;
                let deadline = started + chrono::Duration::seconds(ads);
                if now >= deadline {
                    Some(true)
                } else {
                    self.after(
                        key,
                        (deadline - now).to_std().unwrap_or_default() + Duration::from_millis(50),
                    );
                    None
                }
            });
            if let Some(message) = fail_job {
                conditions_to_set.push(("FailureTarget", "PodFailurePolicy".into(), message));
                delete_active = active > 0;
            } else if failed > backoff_limit {
                conditions_to_set.push((
                    "FailureTarget",
                    "BackoffLimitExceeded".into(),
                    "Job has reached the specified backoff limit".into(),
                ));
                delete_active = active > 0;
            } else if deadline_exceeded.is_some() {
                conditions_to_set.push((
                    "FailureTarget",
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
                delete_active = active > 0;
            } else if completions.is_some_and(|c| succeeded >= c)
                || (completions.is_none() && succeeded > 0 && active == 0)
            {
                conditions_to_set.push((
                    "SuccessCriteriaMet",
                    "CompletionsReached".into(),
                    "Reached expected number of succeeded pods".into(),
                ));
                delete_active = active > 0;
            } else {
                let remaining =
                    completions.map_or(parallelism, |c| (c - succeeded).min(parallelism));
                let want = remaining - active;
                if want > 0 {
                    let memory = self.memory.get(&uid).expect("memory");
                    let delay = backoff_delay(
                        memory.consecutive_failures,
                        self.cluster.config.job_backoff_base,
                        self.cluster.config.job_backoff_max,
                    );
                    let ready_at = memory.last_failure.map(|t| t + delay);
                    match ready_at {
                        Some(at) if at > Instant::now() => {
                            self.after(key, at - Instant::now() + Duration::from_millis(5))
                        }
                        _ => create = want,
                    }
                }
            }
        }

        // 2. Write status (counts first, then release finalizers, like uncountedTerminatedPods).
        let ctx = WriteContext::status(MANAGER);
        let conditions_to_set_clone = conditions_to_set.clone();
        let updated = self
            .cluster
            .registry
            .modify(resources::jobs(), ns, name, &ctx, |j| {
                let s = &mut j["status"];
                if !s.is_object() {
                    *s = json!({});
                }
                set_count(s, "succeeded", succeeded);
                set_count(s, "failed", failed);
                set_count(s, "active", active);
                s["ready"] = json!(ready);
                s["terminating"] = json!(terminating);
                s["uncountedTerminatedPods"] = json!({});
                if let Some(t) = &start_time {
                    s["startTime"] = json!(t);
                }
                if let Some(t) = &completion_time {
                    s["completionTime"] = json!(t);
                }
                for (kind, reason, message) in &conditions_to_set_clone {
                    if let Some(kind) = kind.strip_suffix("-False") {
                        set_condition(j, kind, "False", Some(reason), Some(message));
                    } else {
                        set_condition(j, kind, "True", Some(reason), Some(message));
                    }
                }
            });
        let Ok(Some(updated)) = updated else { return };
        for pod_name in to_release {
            let _ = self.cluster.registry.remove_finalizer(
                resources::pods(),
                ns,
                &pod_name,
                TRACKING_FINALIZER,
                MANAGER,
            );
        }
        for (event_type, reason, message) in events {
            record(
                &self.cluster,
                &updated,
                event_type,
                &reason,
                &message,
                Reporter::JobController,
                None,
            );
        }
        if delete_active {
            for pod in &active_pods {
                let pod_name = pod
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let _ = self.cluster.registry.delete(
                    resources::pods(),
                    ns,
                    pod_name,
                    &DeleteOptions::default(),
                );
            }
        }
        for _ in 0..create {
            self.create_pod(&updated);
        }
        if has_true_condition(&updated, "Complete") || has_true_condition(&updated, "Failed") {
            self.handle_ttl(key, &updated);
        }
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

/// What `spec.podFailurePolicy` says about a failed pod.
#[derive(Debug, PartialEq)]
enum PolicyAction {
    /// Counts toward `backoffLimit` (also the default without a policy).
    Count,
    /// Not counted; the pod is replaced.
    Ignore,
    /// Fail the Job at once with this message.
    FailJob(String),
}

/// Evaluate `spec.podFailurePolicy` rules in order (job controller `pod_failure_policy.go`).
fn pod_failure_policy_action(job: &Value, pod: &Value) -> PolicyAction {
    let Some(rules) = job
        .pointer("/spec/podFailurePolicy/rules")
        .and_then(Value::as_array)
    else {
        return PolicyAction::Count;
    };
    let (ns, name) = crate::store::object_key(pod);
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (index, rule) in rules.iter().enumerate() {
        let action = rule["action"].as_str().unwrap_or("Count");
        let mut matched: Option<String> = None;
        if let Some(on_exit) = rule.get("onExitCodes") {
            let values: Vec<i64> = on_exit["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let only = on_exit["containerName"].as_str();
            let negate = on_exit["operator"] == "NotIn";
            for status in &statuses {
                let cname = status["name"].as_str().unwrap_or_default();
                if only.is_some_and(|o| o != cname) {
                    continue;
                }
                let Some(code) = status
                    .pointer("/state/terminated/exitCode")
                    .and_then(Value::as_i64)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                if values.contains(&code) != negate {
                    matched = Some(format!(
                        "Container {cname} for pod {ns}/{name} failed with exit code {code} matching {action} rule at index {index}"
                    ));
                    break;
                }
            }
        }
        if let Some(patterns) = rule.get("onPodConditions").and_then(Value::as_array) {
            for pattern in patterns {
                let kind = pattern["type"].as_str().unwrap_or_default();
                let wanted = pattern["status"].as_str().unwrap_or("True");
                let present = pod
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == wanted));
                if present {
                    matched = Some(format!(
                        "Pod {ns}/{name} has condition {kind} matching {action} rule at index {index}"
                    ));
                    break;
                }
            }
        }
        if let Some(message) = matched {
            return match action {
                "FailJob" => PolicyAction::FailJob(message),
                "Ignore" => PolicyAction::Ignore,
                _ => PolicyAction::Count,
            };
        }
    }
    PolicyAction::Count
}

fn set_count(status: &mut Value, field: &str, value: i64) {
    if value > 0 {
        status[field] = json!(value);
    } else if let Some(map) = status.as_object_mut() {
        map.remove(field);
    }
}

fn condition_reason(job: &Value, kind: &str) -> (String, String) {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .unwrap_or_default()
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
