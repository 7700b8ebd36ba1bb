//! Compact snapshots of the Pods and Jobs the agent created, holding only what the
//! reporter's decisions need (no managed fields, no specs beyond a few numbers).
//!
//! The reporter keeps one [`PodView`] per pod and one [`JobView`] per Job of every
//! flow run it watches, so their size bounds its memory: text is stored as `Box<str>`,
//! well-known Kubernetes reasons as enums, optional blocks behind `Option<Box<_>>`.
//! Build them with [`PodView::from_pod`] and [`JobView::from_job`]; both return `None`
//! for objects without the `prefect.io/flow-run-id` label (not ours).

mod job;
mod pod;

pub use job::{JobConditionKind, JobConditionView, JobView};
pub use pod::{
    ContainerRole, ContainerView, PodPhase, PodScheduledView, PodView, TerminatedReason,
    TerminatedView, WaitingGraceClass, WaitingReason, WaitingView,
};

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use uuid::Uuid;

pub use flow_run_proto::kubernetes::{
    FLOW_RUN_ID_LABEL, POD_WATCH_TIMEOUT_ANNOTATION, SCALE_UP_TIMEOUT_ANNOTATION,
};

/// Labels the Job controller adds to the pods it creates (new name first).
pub(crate) const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
pub(crate) const JOB_UID_LABELS: [&str; 2] =
    ["batch.kubernetes.io/controller-uid", "controller-uid"];

/// A point in time as the reporter handles it (UTC).
pub type Timestamp = DateTime<Utc>;

/// `True`/`False`/`Unknown` status of a Kubernetes condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    fn parse(status: &str) -> Self {
        match status {
            "True" => Self::True,
            "False" => Self::False,
            _ => Self::Unknown,
        }
    }
}

/// Converts a Kubernetes `Time` into a [`Timestamp`].
pub(crate) fn timestamp_of(time: &Time) -> Option<Timestamp> {
    let nanos = u32::try_from(time.0.subsec_nanosecond()).ok()?;
    DateTime::from_timestamp(time.0.as_second(), nanos)
}

/// Converts a Kubernetes `MicroTime` into a [`Timestamp`].
pub(crate) fn timestamp_of_micro(time: &MicroTime) -> Option<Timestamp> {
    let nanos = u32::try_from(time.0.subsec_nanosecond()).ok()?;
    DateTime::from_timestamp(time.0.as_second(), nanos)
}

/// The flow-run id from the `prefect.io/flow-run-id` label, when present and a UUID.
pub(crate) fn flow_run_id_of(metadata: &ObjectMeta) -> Option<Uuid> {
    let value = metadata.labels.as_ref()?.get(FLOW_RUN_ID_LABEL)?;
    Uuid::parse_str(value).ok()
}

pub(crate) fn boxed(text: &Option<String>) -> Option<Box<str>> {
    text.as_deref()
        .filter(|text| !text.is_empty())
        .map(Box::from)
}

#[cfg(test)]
mod tests;
