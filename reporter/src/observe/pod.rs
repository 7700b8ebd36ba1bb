//! [`PodView`]: the compact snapshot of one of our pods (phase, scheduling condition,
//! container waiting/terminated states, eviction reason, deletion).

use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodCondition};

use super::{
    boxed, flow_run_id_of, timestamp_of, ConditionStatus, Timestamp, JOB_NAME_LABELS,
    JOB_UID_LABELS,
};
use crate::autoscaler::ScaleUpView;
use uuid::Uuid;

/// `status.phase` of a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Pending") | None => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            Some(_) => Self::Unknown,
        }
    }

    /// `Succeeded` or `Failed`: the pod will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// The pod's `PodScheduled` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodScheduledView {
    pub status: ConditionStatus,
    /// e.g. `Unschedulable`, `SchedulingGated`.
    pub reason: Option<Box<str>>,
    /// The scheduler's explanation, e.g. `0/3 nodes are available: 3 Insufficient cpu.`
    pub message: Option<Box<str>>,
    /// `lastTransitionTime`.
    pub since: Option<Timestamp>,
}

impl PodScheduledView {
    fn from_condition(condition: &PodCondition) -> Self {
        Self {
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

/// Whether a container is an init container or a regular one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerRole {
    Init,
    Main,
}

/// `state.waiting.reason` values the decisions care about; anything else is kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitingReason {
    ContainerCreating,
    PodInitializing,
    ErrImagePull,
    ImagePullBackOff,
    InvalidImageName,
    CreateContainerConfigError,
    CreateContainerError,
    CrashLoopBackOff,
    Other(Box<str>),
}

/// Which grace period applies while a container waits for a reason that will not
/// resolve by itself (see `decide::DecisionSettings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitingGraceClass {
    /// `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`.
    Image,
    /// `CreateContainerConfigError` (missing Secret, ConfigMap or key).
    Configuration,
}

impl WaitingReason {
    fn parse(reason: &str) -> Self {
        match reason {
            "ContainerCreating" => Self::ContainerCreating,
            "PodInitializing" => Self::PodInitializing,
            "ErrImagePull" => Self::ErrImagePull,
            "ImagePullBackOff" => Self::ImagePullBackOff,
            "InvalidImageName" => Self::InvalidImageName,
            "CreateContainerConfigError" => Self::CreateContainerConfigError,
            "CreateContainerError" => Self::CreateContainerError,
            "CrashLoopBackOff" => Self::CrashLoopBackOff,
            other => Self::Other(other.into()),
        }
    }

    /// The reason as Kubernetes spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ContainerCreating => "ContainerCreating",
            Self::PodInitializing => "PodInitializing",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::InvalidImageName => "InvalidImageName",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::CreateContainerError => "CreateContainerError",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::Other(reason) => reason,
        }
    }

    /// The grace class of a reason that keeps the container from ever starting, if it is one.
    pub fn grace_class(&self) -> Option<WaitingGraceClass> {
        match self {
            Self::ErrImagePull | Self::ImagePullBackOff | Self::InvalidImageName => {
                Some(WaitingGraceClass::Image)
            }
            Self::CreateContainerConfigError => Some(WaitingGraceClass::Configuration),
            _ => None,
        }
    }
}

/// `state.waiting` of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingView {
    pub reason: WaitingReason,
    /// The kubelet's message, e.g. `secret "db" not found` or `Back-off pulling image "x"`.
    pub message: Option<Box<str>>,
    /// When the reporter first saw the container waiting in this grace class. Kubernetes
    /// does not record it; [`PodView::carry_over_from`] fills it from the previous
    /// snapshot. `None` after a restart, when the decision falls back to the time the
    /// pod was scheduled.
    pub first_observed: Option<Timestamp>,
}

/// `state.terminated.reason` values the decisions care about; anything else is kept as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TerminatedReason {
    Completed,
    Error,
    OomKilled,
    ContainerCannotRun,
    DeadlineExceeded,
    ContainerStatusUnknown,
    Other(Box<str>),
    /// No reason given.
    Unspecified,
}

impl TerminatedReason {
    fn parse(reason: Option<&str>) -> Self {
        match reason {
            None | Some("") => Self::Unspecified,
            Some("Completed") => Self::Completed,
            Some("Error") => Self::Error,
            Some("OOMKilled") => Self::OomKilled,
            Some("ContainerCannotRun") => Self::ContainerCannotRun,
            Some("DeadlineExceeded") => Self::DeadlineExceeded,
            Some("ContainerStatusUnknown") => Self::ContainerStatusUnknown,
            Some(other) => Self::Other(other.into()),
        }
    }

    /// The reason as Kubernetes spells it (`""` when unspecified).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Completed => "Completed",
            Self::Error => "Error",
            Self::OomKilled => "OOMKilled",
            Self::ContainerCannotRun => "ContainerCannotRun",
            Self::DeadlineExceeded => "DeadlineExceeded",
            Self::ContainerStatusUnknown => "ContainerStatusUnknown",
            Self::Other(reason) => reason,
            Self::Unspecified => "",
        }
    }
}

/// `state.terminated` (or `lastState.terminated`) of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminatedView {
    pub reason: TerminatedReason,
    pub exit_code: i32,
    pub finished_at: Option<Timestamp>,
    pub message: Option<Box<str>>,
}

impl TerminatedView {
    fn from_state(state: Option<&ContainerState>) -> Option<Box<Self>> {
        let terminated = state?.terminated.as_ref()?;
        Some(Box::new(Self {
            reason: TerminatedReason::parse(terminated.reason.as_deref()),
            exit_code: terminated.exit_code,
            finished_at: terminated.finished_at.as_ref().and_then(timestamp_of),
            message: boxed(&terminated.message),
        }))
    }

    /// Ended by itself with exit code 0.
    pub fn is_success(&self) -> bool {
        self.exit_code == 0 && !matches!(self.reason, TerminatedReason::OomKilled)
    }
}

/// The status of one container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub name: Box<str>,
    pub role: ContainerRole,
    pub waiting: Option<Box<WaitingView>>,
    pub terminated: Option<Box<TerminatedView>>,
    /// `lastState.terminated`: the previous run of a restarted container.
    pub last_terminated: Option<Box<TerminatedView>>,
    pub restart_count: u32,
}

impl ContainerView {
    fn from_status(status: &ContainerStatus, role: ContainerRole) -> Self {
        let waiting = status
            .state
            .as_ref()
            .and_then(|state| state.waiting.as_ref())
            .map(|waiting| {
                Box::new(WaitingView {
                    reason: WaitingReason::parse(waiting.reason.as_deref().unwrap_or("")),
                    message: boxed(&waiting.message),
                    first_observed: None,
                })
            });
        Self {
            name: status.name.as_str().into(),
            role,
            waiting,
            terminated: TerminatedView::from_state(status.state.as_ref()),
            last_terminated: TerminatedView::from_state(status.last_state.as_ref()),
            restart_count: u32::try_from(status.restart_count).unwrap_or(0),
        }
    }

    /// The most relevant termination: the current one, else the previous run's.
    pub fn latest_termination(&self) -> Option<&TerminatedView> {
        self.terminated
            .as_deref()
            .or(self.last_terminated.as_deref())
    }
}

/// Compact snapshot of one of our pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub uid: Box<str>,
    pub name: Box<str>,
    pub namespace: Box<str>,
    pub flow_run_id: Uuid,
    /// Name of the Job that owns the pod (controller owner reference, else job-name label).
    pub job_name: Option<Box<str>>,
    /// Uid of the owning Job (controller owner reference, else controller-uid label).
    pub job_uid: Option<Box<str>>,
    pub phase: PodPhase,
    pub created: Option<Timestamp>,
    pub scheduled: Option<PodScheduledView>,
    /// Init containers first, then regular containers, in status order.
    pub containers: Box<[ContainerView]>,
    /// `status.reason`, e.g. `Evicted`, `DeadlineExceeded`.
    pub status_reason: Option<Box<str>>,
    pub status_message: Option<Box<str>>,
    pub deletion_timestamp: Option<Timestamp>,
    /// What the node autoscaler said about the pod (from its Events, not the pod
    /// object): kept across updates by [`PodView::carry_over_from`].
    pub scale_up: Option<Box<ScaleUpView>>,
}

impl PodView {
    /// Extracts the view; `None` when the pod has no `prefect.io/flow-run-id` label.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let metadata = &pod.metadata;
        let flow_run_id = flow_run_id_of(metadata)?;
        let controller = metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.kind == "Job" && owner.controller == Some(true));
        let label = |keys: [&str; 2]| {
            let labels = metadata.labels.as_ref()?;
            keys.iter()
                .find_map(|key| labels.get(*key))
                .map(|value| Box::<str>::from(value.as_str()))
        };
        let job_name = controller
            .map(|owner| owner.name.as_str().into())
            .or_else(|| label(JOB_NAME_LABELS));
        let job_uid = controller
            .map(|owner| owner.uid.as_str().into())
            .or_else(|| label(JOB_UID_LABELS));
        let status = pod.status.as_ref();
        let scheduled = status
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "PodScheduled"))
            .map(PodScheduledView::from_condition);
        let init = status
            .and_then(|status| status.init_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| ContainerView::from_status(c, ContainerRole::Init));
        let main = status
            .and_then(|status| status.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| ContainerView::from_status(c, ContainerRole::Main));
        Some(Self {
            uid: metadata.uid.as_deref().unwrap_or_default().into(),
            name: metadata.name.as_deref().unwrap_or_default().into(),
            namespace: metadata.namespace.as_deref().unwrap_or_default().into(),
            flow_run_id,
            job_name,
            job_uid,
            phase: PodPhase::parse(status.and_then(|s| s.phase.as_deref())),
            created: metadata.creation_timestamp.as_ref().and_then(timestamp_of),
            scheduled,
            containers: init.chain(main).collect(),
            status_reason: status.and_then(|s| boxed(&s.reason)),
            status_message: status.and_then(|s| boxed(&s.message)),
            deletion_timestamp: metadata.deletion_timestamp.as_ref().and_then(timestamp_of),
            scale_up: None,
        })
    }

    /// Keeps `first_observed` of containers that were already waiting in the same grace
    /// class in `previous`, and stamps `observed_at` on those that just started waiting.
    /// Call it on every update of a pod the reporter already knew. The autoscaler's
    /// word on the pod is carried over too.
    pub fn carry_over_from(&mut self, previous: &PodView, observed_at: Timestamp) {
        if self.scale_up.is_none() {
            self.scale_up = previous.scale_up.clone();
        }
        for container in self.containers.iter_mut() {
            let Some(waiting) = container.waiting.as_deref_mut() else {
                continue;
            };
            let Some(class) = waiting.reason.grace_class() else {
                continue;
            };
            let earlier = previous
                .containers
                .iter()
                .find(|old| old.name == container.name && old.role == container.role)
                .and_then(|old| old.waiting.as_deref())
                .filter(|old| old.reason.grace_class() == Some(class));
            waiting.first_observed = match earlier {
                Some(old) => old.first_observed.or(Some(observed_at)),
                None => Some(observed_at),
            };
        }
    }

    /// Being deleted (graceful deletion in progress).
    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// When the pod was bound to a node, if the scheduler has done so.
    pub fn scheduled_at(&self) -> Option<Timestamp> {
        self.scheduled
            .as_ref()
            .filter(|condition| condition.status == ConditionStatus::True)
            .and_then(|condition| condition.since)
    }

    /// Still waiting for a node: `PodScheduled` is not `True`, or the scheduler has not
    /// written it yet and no container status exists.
    pub fn is_unscheduled(&self) -> bool {
        match &self.scheduled {
            Some(condition) => condition.status != ConditionStatus::True,
            None => self.containers.is_empty(),
        }
    }

    /// `status.reason == Evicted`.
    pub fn is_evicted(&self) -> bool {
        self.status_reason.as_deref() == Some("Evicted")
    }

    /// The container that explains a failure best: an OOM-killed one, else one that
    /// exited non-zero, else any terminated one (regular containers before init ones
    /// only when equally relevant).
    pub fn failed_container(&self) -> Option<&ContainerView> {
        let rank = |container: &ContainerView| match container.latest_termination() {
            Some(t) if t.reason == TerminatedReason::OomKilled => 3,
            Some(t) if !t.is_success() => 2,
            Some(_) => 1,
            None => 0,
        };
        self.containers
            .iter()
            .filter(|container| rank(container) > 0)
            .max_by_key(|container| (rank(container), container.role == ContainerRole::Main))
    }

    /// When the pod's last container finished (max `finishedAt`).
    pub fn finished_at(&self) -> Option<Timestamp> {
        self.containers
            .iter()
            .filter_map(|container| container.terminated.as_ref()?.finished_at)
            .max()
    }
}
