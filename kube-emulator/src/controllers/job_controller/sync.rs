//! One sync of a Job, in steps: count the pods it finished since the last sync (applying
//! `podFailurePolicy`), decide what happens next (terminal conditions, suspend/resume,
//! `activeDeadlineSeconds`, `backoffLimit`, how many pods to create after the backoff), write
//! the status, then act on it (release finalizers, events, delete or create pods, TTL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::pod_failure_policy::{pod_failure_policy_action, PolicyAction};
use super::{backoff_delay, controller_of, has_finalizer, JobController, JobKey};
use super::{MANAGER, TRACKING_FINALIZER};
use crate::admission::WriteContext;
use crate::controllers::events::{record, Reporter};
use crate::controllers::pod_status::{has_true_condition, is_terminal, set_condition};
use crate::registry::DeleteOptions;
use crate::resources;
use crate::time::{now_rfc3339, parse_time};

/// Finished pods this sync counts for the first time (step 1).
#[derive(Default)]
struct Finished {
    newly_succeeded: i64,
    newly_failed: i64,
    /// A `FailJob` rule of the pod failure policy matched, with its message.
    fail_job: Option<String>,
    /// Finished pods whose tracking finalizer goes once the status counts them.
    to_release: Vec<String>,
}

/// The Job's pods as its status counts them.
struct PodCounts<'a> {
    succeeded: i64,
    failed: i64,
    active: i64,
    ready: i64,
    terminating: i64,
    /// Pods neither terminal nor being deleted.
    active_pods: Vec<&'a Arc<Value>>,
}

/// What this sync writes and does (a condition kind ending in `-False` sets it to False).
#[derive(Default)]
struct SyncPlan {
    conditions_to_set: Vec<(&'static str, String, String)>,
    events: Vec<(&'static str, String, String)>,
    delete_active: bool,
    start_time: Option<String>,
    completion_time: Option<String>,
    create: i64,
}

impl JobController {
    pub(super) fn sync(&mut self, key: &JobKey) {
        let (ns, name) = key;
        let Some(job) = self.cluster.store.get(resources::jobs(), ns, name) else {
            return;
        };
        let uid = job
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let pods = self.pods_of(ns, &uid);
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
        // 1. Count finished pods that still carry our finalizer.
        let finished = self.count_finished(&job, &uid, &pods);
        let counts = count_pods(&job, &pods, &finished);
        let plan = self.plan(key, &job, &uid, &counts, finished.fail_job);
        // 2. Write status (counts first, then release finalizers, like uncountedTerminatedPods).
        let Some(updated) = self.write_status(key, &counts, &plan) else {
            return;
        };
        self.act(
            key,
            &updated,
            finished.to_release,
            plan,
            &counts.active_pods,
        );
    }

    /// The pods the job controls (by the index, checked against the store).
    fn pods_of(&self, ns: &str, uid: &str) -> Vec<Arc<Value>> {
        let pod_names: Vec<String> = self
            .pods_by_job
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        pod_names
            .iter()
            .filter_map(|n| self.cluster.store.get(resources::pods(), ns, n))
            .filter(|p| controller_of(p).is_some_and(|(_, _, u)| u == uid))
            .collect()
    }

    /// Step 1: count each finished pod once (the pod failure policy decides how a failed one
    /// counts) and collect the finished pods whose finalizer is to be released.
    fn count_finished(&mut self, job: &Value, uid: &str, pods: &[Arc<Value>]) -> Finished {
        let memory = self.memory.entry(uid.to_string()).or_default();
        let mut finished = Finished::default();
        for pod in pods {
            let pod_uid = pod
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
            let scheduled = pod.pointer("/spec/nodeName").is_some();
            let pod_finished = is_terminal(pod) || (deleting && !scheduled);
            if !pod_finished || !has_finalizer(pod, TRACKING_FINALIZER) {
                continue;
            }
            if memory.counted.insert(pod_uid) {
                if pod.pointer("/status/phase").and_then(Value::as_str) == Some("Succeeded") {
                    finished.newly_succeeded += 1;
                    memory.consecutive_failures = 0;
                } else {
                    match pod_failure_policy_action(job, pod) {
                        PolicyAction::Ignore => {}
                        PolicyAction::FailJob(message) => {
                            finished.newly_failed += 1;
                            finished.fail_job = Some(message);
                        }
                        PolicyAction::Count => {
                            finished.newly_failed += 1;
                            memory.consecutive_failures += 1;
                            memory.last_failure = Some(Instant::now());
                        }
                    }
                }
            }
            finished.to_release.push(
                pod.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        finished
    }

    /// Decide the conditions, events, pod deletions and creations of this sync.
    fn plan(
        &self,
        key: &JobKey,
        job: &Value,
        uid: &str,
        counts: &PodCounts<'_>,
        fail_job: Option<String>,
    ) -> SyncPlan {
        let status = job.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut plan = SyncPlan {
            start_time: status["startTime"].as_str().map(String::from),
            completion_time: status["completionTime"].as_str().map(String::from),
            ..SyncPlan::default()
        };
        let finished = has_true_condition(job, "Complete") || has_true_condition(job, "Failed");
        let suspended = job
            .pointer("/spec/suspend")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let failure_target = has_true_condition(job, "FailureTarget");
        let success_met = has_true_condition(job, "SuccessCriteriaMet");
        if finished {
            plan.delete_active = counts.active > 0;
        } else if failure_target || success_met {
            plan.delete_active = counts.active > 0;
            if counts.active == 0 && counts.terminating == 0 {
                plan_terminal(job, failure_target, &mut plan);
            }
        } else if suspended {
            plan.delete_active = counts.active > 0;
            if !has_true_condition(job, "Suspended") {
                plan.conditions_to_set.push((
                    "Suspended",
                    "JobSuspended".into(),
                    "Job suspended".into(),
                ));
                plan.events
                    .push(("Normal", "Suspended".into(), "Job suspended".into()));
            }
        } else {
            self.plan_running(key, job, uid, counts, fail_job, &mut plan);
        }
        plan
    }

    /// A running (not suspended, not finishing) Job: resume it, then fail it (pod failure
    /// policy, backoff limit, deadline), complete it, or create the pods it still wants.
    fn plan_running(
        &self,
        key: &JobKey,
        job: &Value,
        uid: &str,
        counts: &PodCounts<'_>,
        fail_job: Option<String>,
        plan: &mut SyncPlan,
    ) {
        let spec = job.get("spec").cloned().unwrap_or_default();
        let completions = spec["completions"].as_i64();
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1);
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let now = chrono::Utc::now();
        if has_true_condition(job, "Suspended") {
            plan.conditions_to_set.push((
                "Suspended-False",
                "JobResumed".into(),
                "Job resumed".into(),
            ));
            plan.events
                .push(("Normal", "Resumed".into(), "Job resumed".into()));
            plan.start_time = None;
        }
        if plan.start_time.is_none() {
            plan.start_time = Some(now_rfc3339());
        }
        let deadline_exceeded = spec["activeDeadlineSeconds"].as_i64().and_then(|ads| {
            let started = plan.start_time.as_deref().and_then(parse_time)?;
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
        let failure = if let Some(message) = fail_job {
            Some(("PodFailurePolicy", message))
        } else if counts.failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if deadline_exceeded.is_some() {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            plan.conditions_to_set
                .push(("FailureTarget", reason.into(), message));
            plan.delete_active = counts.active > 0;
        } else if completions.is_some_and(|c| counts.succeeded >= c)
            || (completions.is_none() && counts.succeeded > 0 && counts.active == 0)
        {
            plan.conditions_to_set.push((
                "SuccessCriteriaMet",
                "CompletionsReached".into(),
                "Reached expected number of succeeded pods".into(),
            ));
            plan.delete_active = counts.active > 0;
        } else {
            let remaining =
                completions.map_or(parallelism, |c| (c - counts.succeeded).min(parallelism));
            plan.create = self.pods_to_create(key, uid, remaining - counts.active);
        }
    }

    /// `want` more pods, unless the failure backoff is still running (then sync again when
    /// it is over).
    fn pods_to_create(&self, key: &JobKey, uid: &str, want: i64) -> i64 {
        if want <= 0 {
            return 0;
        }
        let memory = self.memory.get(uid).expect("memory");
        let delay = backoff_delay(
            memory.consecutive_failures,
            self.cluster.config.job_backoff_base,
            self.cluster.config.job_backoff_max,
        );
        let ready_at = memory.last_failure.map(|t| t + delay);
        match ready_at {
            Some(at) if at > Instant::now() => {
                self.after(key, at - Instant::now() + Duration::from_millis(5));
                0
            }
            _ => want,
        }
    }

    /// Step 2: the status with the counts, times and conditions; None when the Job is gone.
    fn write_status(
        &self,
        key: &JobKey,
        counts: &PodCounts<'_>,
        plan: &SyncPlan,
    ) -> Option<Arc<Value>> {
        let (ns, name) = key;
        let ctx = WriteContext::status(MANAGER);
        let updated = self
            .cluster
            .registry
            .modify(resources::jobs(), ns, name, &ctx, |j| {
                let s = &mut j["status"];
                if !s.is_object() {
                    *s = json!({});
                }
                set_count(s, "succeeded", counts.succeeded);
                set_count(s, "failed", counts.failed);
                set_count(s, "active", counts.active);
                s["ready"] = json!(counts.ready);
                s["terminating"] = json!(counts.terminating);
                s["uncountedTerminatedPods"] = json!({});
                if let Some(t) = &plan.start_time {
                    s["startTime"] = json!(t);
                }
                if let Some(t) = &plan.completion_time {
                    s["completionTime"] = json!(t);
                }
                for (kind, reason, message) in &plan.conditions_to_set {
                    if let Some(kind) = kind.strip_suffix("-False") {
                        set_condition(j, kind, "False", Some(reason), Some(message));
                    } else {
                        set_condition(j, kind, "True", Some(reason), Some(message));
                    }
                }
            });
        updated.ok().flatten()
    }

    /// After the status is written: release the counted pods' finalizers, record the events,
    /// delete active pods or create new ones, and look at the TTL of a finished Job.
    fn act(
        &mut self,
        key: &JobKey,
        updated: &Value,
        to_release: Vec<String>,
        plan: SyncPlan,
        active_pods: &[&Arc<Value>],
    ) {
        let ns = &key.0;
        for pod_name in to_release {
            let _ = self.cluster.registry.remove_finalizer(
                resources::pods(),
                ns,
                &pod_name,
                TRACKING_FINALIZER,
                MANAGER,
            );
        }
        for (event_type, reason, message) in plan.events {
            record(
                &self.cluster,
                updated,
                event_type,
                &reason,
                &message,
                Reporter::JobController,
                None,
            );
        }
        if plan.delete_active {
            for pod in active_pods {
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
        for _ in 0..plan.create {
            self.create_pod(updated);
        }
        if has_true_condition(updated, "Complete") || has_true_condition(updated, "Failed") {
            self.handle_ttl(key, updated);
        }
    }
}

/// Count the Job's pods: the finished ones from its status plus this sync's, and the active,
/// ready and terminating ones.
fn count_pods<'a>(job: &Value, pods: &'a [Arc<Value>], finished: &Finished) -> PodCounts<'a> {
    let status = job.get("status").cloned().unwrap_or_else(|| json!({}));
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
    PodCounts {
        succeeded: status["succeeded"].as_i64().unwrap_or(0) + finished.newly_succeeded,
        failed: status["failed"].as_i64().unwrap_or(0) + finished.newly_failed,
        active: active_pods.len() as i64,
        ready,
        terminating,
        active_pods,
    }
}

/// A Job with FailureTarget or SuccessCriteriaMet whose pods are all gone: Failed (with the
/// target's reason) or Complete.
fn plan_terminal(job: &Value, failure_target: bool, plan: &mut SyncPlan) {
    if failure_target {
        let (reason, message) = condition_reason(job, "FailureTarget");
        plan.conditions_to_set
            .push(("Failed", reason.clone(), message.clone()));
        plan.events.push(("Warning", reason, message));
    } else {
        plan.conditions_to_set.push((
            "Complete",
            "CompletionsReached".into(),
            "Reached expected number of succeeded pods".into(),
        ));
        plan.completion_time = Some(now_rfc3339());
        plan.events
            .push(("Normal", "Completed".into(), "Job completed".into()));
    }
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
