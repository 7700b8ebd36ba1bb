//! [`JobView`]: the compact snapshot of one of our Jobs (counters, conditions, the
//! pod-watch and scale-up timeout annotations, deletion).

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use uuid::Uuid;

use flow_run_proto::kubernetes::{CLAIM_ANNOTATION, WORK_POOL_NAME_LABEL};
use flow_run_proto::SubmissionKey;

use super::{
    boxed, flow_run_id_of, timestamp_of, ConditionStatus, Timestamp, POD_WATCH_TIMEOUT_ANNOTATION,
    SCALE_UP_TIMEOUT_ANNOTATION,
};

/// Job controller default for `spec.backoffLimit`.
const DEFAULT_BACKOFF_LIMIT: u32 = 6;

/// `type` of a Job condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobConditionKind {
    Complete,
    Failed,
    /// Set before `Failed` while the controller terminates the remaining pods (v1.31+).
    FailureTarget,
    /// Set before `Complete` (v1.31+).
    SuccessCriteriaMet,
    Suspended,
    Other(Box<str>),
}

impl JobConditionKind {
    fn parse(kind: &str) -> Self {
        match kind {
            "Complete" => Self::Complete,
            "Failed" => Self::Failed,
            "FailureTarget" => Self::FailureTarget,
            "SuccessCriteriaMet" => Self::SuccessCriteriaMet,
            "Suspended" => Self::Suspended,
            other => Self::Other(other.into()),
        }
    }
}

/// One entry of `status.conditions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobConditionView {
    pub kind: JobConditionKind,
    pub status: ConditionStatus,
    /// e.g. `BackoffLimitExceeded`, `DeadlineExceeded`, `PodFailurePolicy`, `CompletionsReached`.
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
    /// `lastTransitionTime`.
    pub since: Option<Timestamp>,
}

impl JobConditionView {
    fn from_condition(condition: &JobCondition) -> Self {
        Self {
            kind: JobConditionKind::parse(&condition.type_),
            status: ConditionStatus::parse(&condition.status),
            reason: boxed(&condition.reason),
            message: boxed(&condition.message),
            since: condition
                .last_transition_time
                .as_ref()
                .and_then(timestamp_of),
        }
    }
}

/// Compact snapshot of one of our Jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub uid: Box<str>,
    pub name: Box<str>,
    pub namespace: Box<str>,
    pub flow_run_id: Uuid,
    pub created: Option<Timestamp>,
    /// `spec.backoffLimit` (6 when absent, as the Job controller assumes).
    pub backoff_limit: u32,
    pub active: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub conditions: Box<[JobConditionView]>,
    /// From the `prefect-k8s.io/pod-watch-timeout-seconds` annotation; `None` when
    /// absent or not a number (the decision then uses its default); `Some(0)` disables it.
    pub pod_watch_timeout_seconds: Option<u32>,
    /// From the `prefect-k8s.io/scale-up-timeout-seconds` annotation (the
    /// `scale_up_timeout_seconds` job variable); `None` when absent or not a number (the
    /// decision then uses its default); `Some(0)` disables it.
    pub scale_up_timeout_seconds: Option<u32>,
    pub deletion_timestamp: Option<Timestamp>,
    /// `spec.suspend`: the dispatcher creates Jobs suspended and releases them once
    /// their run is confirmed; a suspended Job has no pods.
    pub suspend: bool,
    /// A tombstone made for a Job that a run's `infrastructure_pid` names but that was
    /// never seen in the cluster: deleted, or never created.
    pub never_observed: bool,
    /// The `prefect.io/work-pool-name` label (the pool's name slugified).
    pub work_pool: Option<Box<str>>,
    /// Carries the dispatcher's claim annotation: created by this agent.
    pub claimed: bool,
    /// The claim transition id of the submission the claim annotation names.
    pub claim_transition_id: Option<Uuid>,
    /// Set by the watcher (via [`JobView::mark_deleted`]) once the Job is confirmed gone
    /// from the API server; the view is then kept as a tombstone until the run settles.
    pub deleted_observed_at: Option<Timestamp>,
}

/// A number of seconds the dispatcher wrote as an annotation.
fn annotated_seconds(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    annotation: &str,
) -> Option<u32> {
    let value = metadata.annotations.as_ref()?.get(annotation)?;
    value.trim().parse().ok()
}

impl JobView {
    /// Extracts the view; `None` when the Job has no `prefect.io/flow-run-id` label.
    pub fn from_job(job: &Job) -> Option<Self> {
        let metadata = &job.metadata;
        let flow_run_id = flow_run_id_of(metadata)?;
        let status = job.status.as_ref();
        let count = |value: Option<i32>| value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        Some(Self {
            uid: metadata.uid.as_deref().unwrap_or_default().into(),
            name: metadata.name.as_deref().unwrap_or_default().into(),
            namespace: metadata.namespace.as_deref().unwrap_or_default().into(),
            flow_run_id,
            created: metadata.creation_timestamp.as_ref().and_then(timestamp_of),
            backoff_limit: job
                .spec
                .as_ref()
                .and_then(|spec| spec.backoff_limit)
                .and_then(|limit| u32::try_from(limit).ok())
                .unwrap_or(DEFAULT_BACKOFF_LIMIT),
            active: count(status.and_then(|s| s.active)),
            succeeded: count(status.and_then(|s| s.succeeded)),
            failed: count(status.and_then(|s| s.failed)),
            conditions: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .map(JobConditionView::from_condition)
                .collect(),
            pod_watch_timeout_seconds: annotated_seconds(metadata, POD_WATCH_TIMEOUT_ANNOTATION),
            scale_up_timeout_seconds: annotated_seconds(metadata, SCALE_UP_TIMEOUT_ANNOTATION),
            deletion_timestamp: metadata.deletion_timestamp.as_ref().and_then(timestamp_of),
            suspend: job.spec.as_ref().and_then(|spec| spec.suspend) == Some(true),
            never_observed: false,
            work_pool: metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(WORK_POOL_NAME_LABEL))
                .map(|pool| pool.as_str().into()),
            claimed: metadata
                .annotations
                .as_ref()
                .is_some_and(|annotations| annotations.contains_key(CLAIM_ANNOTATION)),
            claim_transition_id: metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(CLAIM_ANNOTATION))
                .and_then(|claim| SubmissionKey::parse(claim))
                .map(|key| key.claim_transition_id()),
            deleted_observed_at: None,
        })
    }

    /// Records that the Job no longer exists (watch `Deleted` event confirmed by a GET
    /// returning 404 or another uid).
    pub fn mark_deleted(&mut self, observed_at: Timestamp) {
        self.deleted_observed_at.get_or_insert(observed_at);
    }

    /// The condition of `kind` when its status is `True`.
    pub fn true_condition(&self, kind: &JobConditionKind) -> Option<&JobConditionView> {
        self.conditions
            .iter()
            .find(|condition| &condition.kind == kind && condition.status == ConditionStatus::True)
    }

    /// `Failed=True`, else `FailureTarget=True` (the Job has failed, pods may still be terminating).
    pub fn failure(&self) -> Option<&JobConditionView> {
        self.true_condition(&JobConditionKind::Failed)
            .or_else(|| self.true_condition(&JobConditionKind::FailureTarget))
    }

    /// `Complete=True`, else `SuccessCriteriaMet=True`.
    pub fn completion(&self) -> Option<&JobConditionView> {
        self.true_condition(&JobConditionKind::Complete)
            .or_else(|| self.true_condition(&JobConditionKind::SuccessCriteriaMet))
    }

    /// More pods failed than `backoffLimit` allows, whether or not the controller has
    /// written its condition yet (the Python observer's trigger).
    pub fn backoff_exhausted(&self) -> bool {
        self.failed > self.backoff_limit
    }

    /// Suspended now (its spec says so, or the controller has not yet seen it resumed).
    pub fn is_suspended(&self) -> bool {
        self.suspend || self.true_condition(&JobConditionKind::Suspended).is_some()
    }

    /// When the Job could start its first pod: when it was resumed (the `Suspended`
    /// condition turned `False`), else when it was created.
    pub fn startable_since(&self) -> Option<Timestamp> {
        let resumed = self.conditions.iter().find(|condition| {
            condition.kind == JobConditionKind::Suspended
                && condition.status == ConditionStatus::False
        });
        resumed
            .and_then(|condition| condition.since)
            .or(self.created)
    }

    /// Created by this agent (our claim annotation) for `work_pool` (as its label
    /// spells it, slugified): a Job the reporter of that pool may delete.
    pub fn is_ours(&self, work_pool_label: &str) -> bool {
        self.claimed && self.work_pool.as_deref() == Some(work_pool_label)
    }

    /// When the Job started going away: confirmed deletion, else its deletion timestamp.
    pub fn gone_at(&self) -> Option<Timestamp> {
        match (self.deleted_observed_at, self.deletion_timestamp) {
            (Some(observed), Some(requested)) => Some(observed.min(requested)),
            (observed, requested) => observed.or(requested),
        }
    }
}
