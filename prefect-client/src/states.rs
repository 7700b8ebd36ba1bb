//! Flow-run states and the state-proposal contract of
//! `POST /flow_runs/{id}/set_state`: what is sent ([`StateCreate`]), what
//! comes back ([`OrchestrationResult`]), how to read a claim's outcome
//! ([`ClaimOutcome`]). The claim's deterministic transition id is the
//! submission key's (`flow_run_proto::SubmissionKey::claim_transition_id`).
//!
//! # What the server does with a `Pending` proposal (measured on 3.9.1)
//!
//! | current state | answer |
//! | --- | --- |
//! | Scheduled (incl. Late, AwaitingRetry) | ACCEPT (HTTP 201) |
//! | Pending, same `transition_id` re-sent | REJECT, state = that Pending |
//! | Pending/Running/Cancelling, other `transition_id` | ABORT |
//! | Cancelled | ABORT |
//! | **Completed, Failed, Crashed** | **ACCEPT** |
//!
//! The server therefore does not stop a stale claim on a finished run: read
//! the run first and claim only if it is still in the state you expect
//! (see [`crate::flow_runs`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Prefect's state types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateType {
    Scheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Crashed,
    Paused,
    Cancelling,
}

impl StateType {
    /// Completed, Failed, Cancelled, Crashed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Cancelled | StateType::Crashed
        )
    }

    /// The wire name, e.g. `"SCHEDULED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateType::Scheduled => "SCHEDULED",
            StateType::Pending => "PENDING",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
            StateType::Cancelled => "CANCELLED",
            StateType::Crashed => "CRASHED",
            StateType::Paused => "PAUSED",
            StateType::Cancelling => "CANCELLING",
        }
    }
}

/// The fields of `state_details` this project uses; everything else the
/// server sends is kept in `extra` and sent back unchanged when a state is
/// re-proposed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_run_id: Option<Uuid>,
    /// Identifies one logical proposal; re-sending the same id is answered
    /// with REJECT + the current state instead of a second transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_concurrency_lease_id: Option<Uuid>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A state as stored by the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub state_type: StateType,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub state_details: StateDetails,
    /// The state's result (a persisted result's reference), as the server has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl State {
    /// The state's name, or the type's canonical name if it has none.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.state_type.as_str())
    }
}

/// A state to propose (`state` of the set_state body).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateCreate {
    #[serde(rename = "type")]
    pub state_type: StateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub state_details: StateDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl StateCreate {
    pub fn new(state_type: StateType, name: impl Into<String>) -> Self {
        StateCreate {
            state_type,
            name: Some(name.into()),
            message: None,
            state_details: StateDetails::default(),
            data: None,
        }
    }

    /// The same state again (type, name, message, details, result) under
    /// `transition_id`: to put back a state that another proposal replaced.
    pub fn copy_of(state: &State, transition_id: Uuid) -> Self {
        StateCreate {
            state_type: state.state_type,
            name: state.name.clone(),
            message: state.message.clone(),
            state_details: state.state_details.clone(),
            data: state.data.clone(),
        }
        .with_transition_id(transition_id)
    }

    /// `PENDING` named `Pending`: the claim a worker makes before creating
    /// infrastructure. The server lets only one of several rival claims
    /// through (others ABORT).
    pub fn pending_claim(transition_id: Uuid) -> Self {
        StateCreate::new(StateType::Pending, "Pending").with_transition_id(transition_id)
    }

    /// `CRASHED` named `Crashed` with a message.
    pub fn crashed(message: impl Into<String>) -> Self {
        StateCreate::new(StateType::Crashed, "Crashed").with_message(message)
    }

    /// `CANCELLED` named `Cancelled` with a message.
    pub fn cancelled(message: impl Into<String>) -> Self {
        StateCreate::new(StateType::Cancelled, "Cancelled").with_message(message)
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn with_transition_id(mut self, transition_id: Uuid) -> Self {
        self.state_details.transition_id = Some(transition_id);
        self
    }
}

/// `status` of an orchestration result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SetStateStatus {
    /// The proposed state was written (HTTP 201).
    Accept,
    /// Not written; `state` is the run's current (or a server-chosen) state.
    Reject,
    /// Not written; the transition is not allowed at all.
    Abort,
    /// Not written yet; propose again after `details.delay_seconds`.
    Wait,
}

/// `details` of an orchestration result; which fields are set depends on
/// `details_type` (`accept_details`, `reject_details`, `abort_details`,
/// `wait_details`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrchestrationDetails {
    #[serde(rename = "type", default)]
    pub details_type: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub delay_seconds: Option<i64>,
}

/// Answer of `POST /flow_runs/{id}/set_state`.
///
/// Reading it:
/// - `Accept`: `state` is the new current state (with the server's id and
///   timestamp); `new_state_written` is true.
/// - `Reject`: `state` is the run's state instead of the proposal. If its
///   `transition_id` equals the one proposed, an earlier attempt of this very
///   proposal was already written (a retried request) — treat as accepted.
///   Otherwise the run went elsewhere (e.g. `AwaitingConcurrencySlot`,
///   Cancelled).
/// - `Abort`: the transition is forbidden (already claimed, already final);
///   `details.reason` says why. For Crashed/Cancelled reports this is a no-op.
/// - `Wait`: retry after `details.delay_seconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrchestrationResult {
    pub status: SetStateStatus,
    #[serde(default)]
    pub state: Option<State>,
    #[serde(default)]
    pub details: OrchestrationDetails,
    /// True when the server answered 201 Created, i.e. wrote a new state.
    #[serde(skip)]
    pub new_state_written: bool,
}

/// What a `Pending` claim amounted to, from [`OrchestrationResult::claim_outcome`].
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// The run is ours: ACCEPTed now, or an earlier attempt with the same
    /// transition id was (REJECT returning our own Pending state). Proceed
    /// to create infrastructure. Holds the current state.
    Claimed(State),
    /// Another claim won, or the run is in a state that cannot go to
    /// Pending (Running, Cancelled, …). Do not create infrastructure.
    Lost { reason: Option<String> },
    /// The server put the run somewhere else instead, e.g. Scheduled
    /// `AwaitingConcurrencySlot` or Cancelled. Do not create infrastructure.
    Redirected(Option<State>),
    /// The server wants the proposal repeated after this many seconds.
    Wait { delay_seconds: i64 },
}

impl OrchestrationResult {
    /// Interprets this result as the answer to a `Pending` claim proposed
    /// with `transition_id`.
    pub fn claim_outcome(&self, transition_id: Uuid) -> ClaimOutcome {
        match self.status {
            SetStateStatus::Accept => match &self.state {
                Some(state) => ClaimOutcome::Claimed(state.clone()),
                None => ClaimOutcome::Lost {
                    reason: Some("server accepted without returning a state".into()),
                },
            },
            SetStateStatus::Reject => match &self.state {
                Some(state) if self.is_our_transition(transition_id) => {
                    ClaimOutcome::Claimed(state.clone())
                }
                other => ClaimOutcome::Redirected(other.clone()),
            },
            SetStateStatus::Abort => ClaimOutcome::Lost {
                reason: self.details.reason.clone(),
            },
            SetStateStatus::Wait => ClaimOutcome::Wait {
                delay_seconds: self.details.delay_seconds.unwrap_or(1),
            },
        }
    }

    /// True when the run's current state (as returned) was written by the
    /// proposal carrying `transition_id`: either ACCEPT now, or REJECT
    /// because a retried request had already been applied.
    pub fn is_our_transition(&self, transition_id: Uuid) -> bool {
        match self.status {
            SetStateStatus::Accept => true,
            SetStateStatus::Reject => self
                .state
                .as_ref()
                .is_some_and(|state| state.state_details.transition_id == Some(transition_id)),
            SetStateStatus::Abort | SetStateStatus::Wait => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_with_our_transition_id_counts_as_claimed() {
        let ours = Uuid::from_u128(7);
        let result: OrchestrationResult = serde_json::from_value(serde_json::json!({
            "status": "REJECT",
            "state": {
                "id": Uuid::from_u128(9),
                "type": "PENDING",
                "name": "Pending",
                "timestamp": "2026-11-27T05:00:00.123456Z",
                "message": null,
                "data": null,
                "state_details": {"transition_id": ours, "pause_reschedule": false}
            },
            "details": {"type": "reject_details", "reason": "This run has already made this state transition."}
        }))
        .unwrap();
        assert!(matches!(
            result.claim_outcome(ours),
            ClaimOutcome::Claimed(_)
        ));
        assert!(matches!(
            result.claim_outcome(Uuid::from_u128(8)),
            ClaimOutcome::Redirected(Some(_))
        ));
        let state = result.state.unwrap();
        assert_eq!(
            state.state_details.extra.get("pause_reschedule"),
            Some(&serde_json::Value::Bool(false))
        );
    }

    #[test]
    fn state_create_serialises_type_and_transition_id() {
        let id = Uuid::from_u128(5);
        let body = serde_json::to_value(StateCreate::pending_claim(id)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "PENDING",
                "name": "Pending",
                "state_details": {"transition_id": id}
            })
        );
    }
}
