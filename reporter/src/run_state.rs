//! The flow run's current Prefect state as the decisions see it: its type (parsed from
//! the API's `SCHEDULED`/`PENDING`/... spelling), its name (`InfrastructurePending`, ...),
//! since when, the proposal that set it (`transition_id`), and the Job its
//! `infrastructure_pid` names.

use std::fmt;
use std::str::FromStr;

use flow_run_proto::InfrastructurePid;
use uuid::Uuid;

use crate::observe::Timestamp;

/// Name of the `PENDING` state the reporter proposes while the pod is pending.
pub const INFRASTRUCTURE_PENDING: &str = "InfrastructurePending";

/// Prefect `StateType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateType {
    Scheduled,
    Pending,
    Running,
    Paused,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
    Crashed,
}

/// A state type the API returned that this crate does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown Prefect state type {0:?}")]
pub struct UnknownStateType(pub String);

impl FromStr for StateType {
    type Err = UnknownStateType;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "SCHEDULED" => Self::Scheduled,
            "PENDING" => Self::Pending,
            "RUNNING" => Self::Running,
            "PAUSED" => Self::Paused,
            "CANCELLING" => Self::Cancelling,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            "CRASHED" => Self::Crashed,
            other => return Err(UnknownStateType(other.to_owned())),
        })
    }
}

impl StateType {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Cancelling => "CANCELLING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Crashed => "CRASHED",
        }
    }

    /// `COMPLETED`, `FAILED`, `CANCELLED`, `CRASHED`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Crashed
        )
    }
}

impl fmt::Display for StateType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The flow run's current state (type, name, since when) and where Prefect says its
/// Job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRunState {
    pub state_type: StateType,
    pub name: Box<str>,
    /// When the run entered this state (the state's timestamp).
    pub since: Option<Timestamp>,
    /// The run's `infrastructure_pid`, when it names a Job.
    pub infrastructure_pid: Option<InfrastructurePid>,
    /// The state's `state_details.transition_id`: for a dispatcher's claim, the
    /// claim transition id of its submission.
    pub transition_id: Option<Uuid>,
}

impl FlowRunState {
    pub fn new(state_type: StateType, name: &str) -> Self {
        Self {
            state_type,
            name: name.into(),
            since: None,
            infrastructure_pid: None,
            transition_id: None,
        }
    }

    pub fn since(mut self, since: Option<Timestamp>) -> Self {
        self.since = since;
        self
    }

    pub fn with_pid(mut self, pid: Option<InfrastructurePid>) -> Self {
        self.infrastructure_pid = pid;
        self
    }

    pub fn with_transition_id(mut self, transition_id: Option<Uuid>) -> Self {
        self.transition_id = transition_id;
        self
    }

    /// A dispatcher's claim (`PENDING` named `Pending`) made by another proposal than
    /// `claim_transition_id`: the run was claimed again, for a later submission.
    pub fn is_claim_other_than(&self, claim_transition_id: Uuid) -> bool {
        self.state_type == StateType::Pending
            && &*self.name == "Pending"
            && self
                .transition_id
                .is_some_and(|id| id != claim_transition_id)
    }

    /// The reporter may propose `Crashed` only from `PENDING` or `RUNNING`: never for a
    /// final run, nor `SCHEDULED` (rescheduled: a new Job will serve it), `PAUSED` or
    /// `CANCELLING` (the cancellation path owns it).
    pub fn may_crash(&self) -> bool {
        matches!(self.state_type, StateType::Pending | StateType::Running)
    }

    /// The Python observer's rule: propose `InfrastructurePending` for a pending pod
    /// unless the run is running, final, paused, cancelling or already so named.
    pub fn wants_infrastructure_pending(&self) -> bool {
        match self.state_type {
            StateType::Scheduled => true,
            StateType::Pending => &*self.name != INFRASTRUCTURE_PENDING,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_types_round_trip_the_api_spelling() {
        for text in [
            "SCHEDULED",
            "PENDING",
            "RUNNING",
            "PAUSED",
            "CANCELLING",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "CRASHED",
        ] {
            let parsed: StateType = text.parse().expect("known type");
            assert_eq!(parsed.as_str(), text);
        }
        assert_eq!(
            "RETRYING".parse::<StateType>(),
            Err(UnknownStateType("RETRYING".to_owned()))
        );
    }

    #[test]
    fn only_pending_and_running_runs_may_crash() {
        let may_crash: Vec<StateType> = [
            StateType::Scheduled,
            StateType::Pending,
            StateType::Running,
            StateType::Paused,
            StateType::Cancelling,
            StateType::Completed,
            StateType::Failed,
            StateType::Cancelled,
            StateType::Crashed,
        ]
        .into_iter()
        .filter(|state_type| FlowRunState::new(*state_type, "x").may_crash())
        .collect();
        assert_eq!(may_crash, [StateType::Pending, StateType::Running]);
    }

    #[test]
    fn infrastructure_pending_is_wanted_once() {
        assert!(FlowRunState::new(StateType::Scheduled, "Scheduled").wants_infrastructure_pending());
        assert!(FlowRunState::new(StateType::Pending, "Pending").wants_infrastructure_pending());
        assert!(
            !FlowRunState::new(StateType::Pending, INFRASTRUCTURE_PENDING)
                .wants_infrastructure_pending()
        );
        assert!(!FlowRunState::new(StateType::Running, "Running").wants_infrastructure_pending());
    }
}
