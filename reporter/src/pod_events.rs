//! `prefect.kubernetes.pod.<phase>` events, as prefect-kubernetes 0.8's
//! observer (`observer.py::_replicate_pod_event`) makes them from a pod, so
//! Automations written for the Python worker fire the same:
//!
//! - name `prefect.kubernetes.pod.<phase in lower case>` (`pending`, `running`,
//!   `succeeded`, `failed`, `unknown`); a `Failed` pod seen in a live watch
//!   update whose regular container terminated with a reason is named
//!   `…evicted` (the observer's rule, which names every live-observed failure
//!   with a reason, `Error` included, so), with `kubernetes.reason`;
//! - resource `prefect.kubernetes.pod.<uid>`, its name, `kubernetes.namespace`,
//!   and `kubernetes.diagnosis` when the pod is diagnosed (image pull error,
//!   crash loop, OOM kill, eviction, unschedulable: `diagnostics.py`);
//! - related resources from the pod's labels: the flow run, deployment, flow,
//!   work pool and worker;
//! - id `uuid5(NAMESPACE_URL, json{uid, phase, restart_count, diagnosis})`, the
//!   observer's own: one event per pod, phase, restart count and diagnosis, the
//!   same id in every replica, after every restart, and as the Python observer
//!   would send it (Prefect stores an id once);
//! - `occurred` from the pod: its creation for `Pending`, the latest container
//!   start (else `status.startTime`) for `Running`, the latest container end
//!   for `Succeeded`/`Failed`/`evicted`; otherwise when it was seen.
//!
//! Pure: no I/O. [`crate::service::pod_events`] sends them.

use std::collections::BTreeMap;

use flow_run_proto::kubernetes::WORK_POOL_NAME_LABEL;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use prefect_client::{Event, ResourceLabels};
use uuid::Uuid;

use crate::observe::Timestamp;

/// Prefix of the events' names.
pub const POD_EVENT_PREFIX: &str = "prefect.kubernetes.pod.";

/// One pod event, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEvent {
    pub id: Uuid,
    pub pod_uid: Box<str>,
    /// e.g. `prefect.kubernetes.pod.running`.
    pub event: String,
    pub occurred: Timestamp,
    pub resource: ResourceLabels,
    pub related: Vec<ResourceLabels>,
    /// The pod's `prefect.io/work-pool-name` label.
    pub work_pool_label: Option<String>,
}

impl PodEvent {
    /// The event of the pod as it is now; `live` for a watch update (the
    /// observer's `MODIFIED`), not for a listed or deleted pod. `now` stands in
    /// for a time the pod does not give. `None` without uid or phase.
    pub fn from_pod(pod: &Pod, live: bool, now: Timestamp) -> Option<PodEvent> {
        let uid = pod.metadata.uid.as_deref().filter(|uid| !uid.is_empty())?;
        let status = pod.status.as_ref()?;
        let phase = status.phase.as_deref()?;
        let diagnosis = diagnosis(status);
        let id = event_id(uid, phase, restart_count(status), diagnosis);
        let mut resource = labels([
            (
                "prefect.resource.id",
                format!("prefect.kubernetes.pod.{uid}"),
            ),
            (
                "prefect.resource.name",
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "kubernetes.namespace",
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
        ]);
        if let Some(category) = diagnosis {
            resource.insert("kubernetes.diagnosis".into(), category.into());
        }
        let evicted = (live && phase == "Failed")
            .then(|| termination_reason(status))
            .flatten();
        let shown_phase = match evicted {
            Some(reason) => {
                resource.insert("kubernetes.reason".into(), reason.to_string());
                "evicted".to_string()
            }
            None => phase.to_lowercase(),
        };
        let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
        Some(PodEvent {
            id,
            pod_uid: uid.into(),
            occurred: occurred(pod, &shown_phase).unwrap_or(now),
            event: format!("{POD_EVENT_PREFIX}{shown_phase}"),
            resource,
            related: related_resources(&pod_labels),
            work_pool_label: pod_labels.get(WORK_POOL_NAME_LABEL).cloned(),
        })
    }

    /// The Prefect event, following `follows` (the pod's previous event).
    pub fn to_prefect(&self, follows: Option<Uuid>) -> Event {
        Event {
            id: self.id,
            event: self.event.clone(),
            occurred: self.occurred,
            resource: self.resource.clone(),
            related: self.related.clone(),
            payload: Default::default(),
            follows,
        }
    }
}

fn labels<const N: usize>(pairs: [(&str, String); N]) -> ResourceLabels {
    pairs
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
}

/// The observer's event id: `uuid5(NAMESPACE_URL, json.dumps({...}, sort_keys=True))`.
pub fn event_id(uid: &str, phase: &str, restart_count: i64, diagnosis: Option<&str>) -> Uuid {
    let text = |value: &str| serde_json::Value::from(value).to_string();
    let diagnosis = diagnosis.map_or_else(|| "null".to_string(), text);
    let name = format!(
        "{{\"diagnosis\": {diagnosis}, \"phase\": {}, \"restart_count\": {restart_count}, \"uid\": {}}}",
        text(phase),
        text(uid)
    );
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

/// Restarts of the regular containers, summed.
fn restart_count(status: &PodStatus) -> i64 {
    status
        .container_statuses
        .iter()
        .flatten()
        .map(|container| i64::from(container.restart_count))
        .sum()
}

/// Init containers first, then regular ones (the diagnosis' order).
fn all_containers(status: &PodStatus) -> impl Iterator<Item = &ContainerStatus> {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
}

/// `diagnostics.py::diagnose_k8s_pod`: the category of what keeps the pod
/// from running, if it is one the observer knows.
pub fn diagnosis(status: &PodStatus) -> Option<&'static str> {
    let waiting = all_containers(status).find_map(|container| {
        let reason = container
            .state
            .as_ref()?
            .waiting
            .as_ref()?
            .reason
            .as_deref()?;
        match reason {
            "ImagePullBackOff" | "ErrImagePull" => Some("ImagePullError"),
            "CrashLoopBackOff" => Some("CrashLoopBackOff"),
            _ => None,
        }
    });
    let terminated = || {
        all_containers(status).find_map(|container| {
            let terminated = container.state.as_ref()?.terminated.as_ref()?;
            match terminated.reason.as_deref()? {
                "OOMKilled" => Some("OOMKilled"),
                "Evicted" => Some("Evicted"),
                _ => None,
            }
        })
    };
    let unschedulable = || {
        status.conditions.iter().flatten().find_map(|condition| {
            let unschedulable = condition.type_ == "PodScheduled"
                && condition.reason.as_deref() == Some("Unschedulable");
            unschedulable.then(|| unschedulable_category(condition.message.as_deref()))
        })
    };
    let evicted = || (status.reason.as_deref() == Some("Evicted")).then_some("Evicted");
    waiting
        .or_else(terminated)
        .or_else(unschedulable)
        .or_else(evicted)
}

/// `_categorize_unschedulable`: the cause from the scheduler's message.
fn unschedulable_category(message: Option<&str>) -> &'static str {
    let text = message.unwrap_or_default().to_lowercase();
    if text.contains("taint") {
        "Unschedulable.Taint"
    } else if text.contains("affinity") || text.contains("node selector") {
        "Unschedulable.NodeAffinity"
    } else if text.contains("insufficient") {
        "Unschedulable.InsufficientResources"
    } else {
        "Unschedulable"
    }
}

/// The first regular container's termination reason (the observer's
/// "evicted" test).
fn termination_reason(status: &PodStatus) -> Option<&str> {
    status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|container| {
            let terminated = container.state.as_ref()?.terminated.as_ref()?;
            terminated
                .reason
                .as_deref()
                .filter(|reason| !reason.is_empty())
        })
}

/// `_pod_phase_occurred`: when the pod entered the phase, as far as it says.
fn occurred(pod: &Pod, phase: &str) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let time = |time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        Timestamp::from_timestamp(
            time.0.as_second(),
            u32::try_from(time.0.subsec_nanosecond()).ok()?,
        )
    };
    match phase {
        "pending" => pod.metadata.creation_timestamp.as_ref().and_then(time),
        "running" => status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .filter_map(time)
            .max()
            .or_else(|| status.start_time.as_ref().and_then(time)),
        "succeeded" | "failed" | "evicted" => all_containers(status)
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .filter_map(time)
            .max(),
        _ => None,
    }
}

/// `_related_resources_from_labels`: the flow run, deployment, flow, work pool
/// and worker the pod's labels name.
fn related_resources(labels: &BTreeMap<String, String>) -> Vec<ResourceLabels> {
    let kinds = [
        (
            "flow-run-id",
            "flow-run-name",
            "prefect.flow-run",
            "flow-run",
        ),
        (
            "deployment-id",
            "deployment-name",
            "prefect.deployment",
            "deployment",
        ),
        ("flow-id", "flow-name", "prefect.flow", "flow"),
        (
            "work-pool-id",
            "work-pool-name",
            "prefect.work-pool",
            "work-pool",
        ),
    ];
    let label = |key: &str| {
        labels
            .get(&format!("prefect.io/{key}"))
            .filter(|value| !value.is_empty())
    };
    let mut related: Vec<ResourceLabels> = kinds
        .iter()
        .filter_map(|(id_key, name_key, kind, role)| {
            let mut resource = labels_of(format!("{kind}.{}", label(id_key)?), role);
            if let Some(name) = label(name_key) {
                resource.insert("prefect.resource.name".into(), name.clone());
            }
            Some(resource)
        })
        .collect();
    if let Some(worker) = label("worker-name") {
        let slug = job_manifest::slugify_name(worker, usize::MAX).unwrap_or_default();
        let mut resource = labels_of(format!("prefect.worker.kubernetes.{slug}"), "worker");
        resource.insert("prefect.resource.name".into(), worker.clone());
        resource.insert("prefect.worker-type".into(), "kubernetes".into());
        resource.insert(
            "prefect.version".into(),
            prefect_client::PREFECT_CLIENT_VERSION.into(),
        );
        related.push(resource);
    }
    related
}

fn labels_of(id: String, role: &str) -> ResourceLabels {
    labels([
        ("prefect.resource.id", id),
        ("prefect.resource.role", role.to_string()),
    ])
}

#[cfg(test)]
mod tests;
