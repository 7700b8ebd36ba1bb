//! Undoing an `InfrastructurePending` that landed after the flow moved on.
//!
//! The reporter proposes `InfrastructurePending` for a `PENDING` run whose pod is
//! pending, but Prefect has no compare-and-set: the proposal applies to whatever state
//! the run is in when it arrives, and Prefect accepts `PENDING` on a `SCHEDULED`
//! (`AwaitingRetry`), `COMPLETED`, `FAILED` or `CRASHED` run. A fast flow (or a watch
//! lagging behind its pod) can reschedule or finish itself between the reporter's
//! read and the proposal's arrival; the run would then sit in `InfrastructurePending`
//! for good, its flow done, its new submission never made (the campaign's seed 22
//! found it: `Running → AwaitingRetry → InfrastructurePending`).
//!
//! So when a run's current state is the reporter's own `InfrastructurePending` (its
//! transition id names one of the run's Jobs) and that Job has ended (the flow, if it
//! ran, is done with the run), the evaluator reads the run's state history once and,
//! when our `InfrastructurePending` is still the newest state and the one it replaced
//! was not `PENDING`, proposes a copy of that state (type, name, message, details,
//! result). The read and the proposal share one deadline that is checked before
//! each is sent, and leadership is checked just before the proposal, so a frozen or
//! deposed leader does not send it late. (Between the read and the proposal's
//! arrival, milliseconds, another change to the run would be overwritten: Prefect
//! offers nothing to close that.)

use std::time::Duration;

use prefect_client::{PrefectClient, SetStateStatus, State, StateCreate, StateType};
use service_runtime::deadline::before;
use uuid::Uuid;

use crate::decide::DecisionInput;
use crate::observe::JobView;
use crate::INFRASTRUCTURE_PENDING;

/// How long the history read and the restoring proposal may take, together.
pub const RESTORE_DEADLINE: Duration = Duration::from_secs(5);

/// The uid of the ended Job whose `InfrastructurePending` is the run's current
/// state, when that state is the reporter's own (`ip_transition_id(job)` is its
/// transition id): the one case worth a look at the history.
pub fn own_infrastructure_pending_of_ended_job<'a>(
    input: &'a DecisionInput<'_>,
    ip_transition_id: impl Fn(&str) -> Uuid,
) -> Option<&'a str> {
    let state = input.run_state;
    if &*state.name != INFRASTRUCTURE_PENDING {
        return None;
    }
    let current = state.transition_id?;
    input
        .jobs
        .iter()
        .filter(|job| has_ended(job))
        .map(|job| &*job.uid)
        .find(|uid| ip_transition_id(uid) == current)
}

fn has_ended(job: &JobView) -> bool {
    job.gone_at().is_some()
        || job.failure().is_some()
        || job.backoff_exhausted()
        || job.completion().is_some()
}

/// The state our `InfrastructurePending` (transition id `ours`) replaced, when it
/// must be put back: ours is still the newest state, and the one before it was not
/// `PENDING`.
pub fn replaced_state(history: &[State], ours: Uuid) -> Option<&State> {
    let mut sorted: Vec<&State> = history.iter().collect();
    sorted.sort_by_key(|state| state.timestamp);
    let (newest, earlier) = sorted.split_last()?;
    if newest.state_details.transition_id != Some(ours) {
        return None;
    }
    let before = earlier.last()?;
    (before.state_type != StateType::Pending).then_some(*before)
}

/// What the check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Nothing to put back (the `InfrastructurePending` replaced a `PENDING` state).
    InPlace,
    /// The replaced state was proposed again; Prefect answered with this status.
    Restored(SetStateStatus, String),
    /// The run no longer exists.
    RunGone,
    /// Prefect could not be asked in time; try again.
    Failed(String),
}

/// Reads the run's history and puts back the state our `InfrastructurePending`
/// replaced, if it must be ([`replaced_state`]). `prefect` must not retry (the
/// restoring proposal must not land late); `leading` is asked just before it is
/// sent.
pub async fn check(
    prefect: &PrefectClient,
    flow_run_id: Uuid,
    ours: Uuid,
    restore_transition_id: Uuid,
    leading: impl Fn() -> bool,
) -> Checked {
    let deadline = tokio::time::Instant::now() + RESTORE_DEADLINE;
    let late = || Checked::Failed("no answer in time".into());
    let read = before(deadline, prefect.read_flow_run_states(flow_run_id)).await;
    let history = match read {
        None => return late(),
        Some(Ok(history)) => history,
        Some(Err(error)) if error.is_not_found() => return Checked::RunGone,
        Some(Err(error)) => return Checked::Failed(format!("reading the run's states: {error}")),
    };
    let Some(replaced) = replaced_state(&history, ours) else {
        return Checked::InPlace;
    };
    if !leading() {
        return Checked::Failed("no longer the leader".into());
    }
    let state = StateCreate::copy_of(replaced, restore_transition_id);
    let name = replaced.display_name().to_owned();
    let sent = before(
        deadline,
        prefect.set_flow_run_state(flow_run_id, &state, false),
    )
    .await;
    match sent {
        None => late(),
        Some(Ok(result)) => Checked::Restored(result.status, name),
        Some(Err(error)) if error.is_not_found() => Checked::RunGone,
        Some(Err(error)) => Checked::Failed(format!("proposing {name} again: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(kind: &str, name: &str, second: i64, transition_id: Option<Uuid>) -> State {
        serde_json::from_value(json!({
            "id": Uuid::new_v4(),
            "type": kind,
            "name": name,
            "timestamp": chrono::DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap(),
            "state_details": {"transition_id": transition_id, "scheduled_time": "2027-01-15T08:00:00Z"},
            "data": if kind == "COMPLETED" { json!({"storage_key": "r1"}) } else { json!(null) },
        }))
        .unwrap()
    }

    const OURS: Uuid = Uuid::from_u128(9);

    #[test]
    fn an_infrastructure_pending_that_replaced_a_rescheduled_run_gives_the_state_back() {
        // Seed 22: the flow rescheduled itself while the proposal was on its way.
        let history = [
            state("SCHEDULED", "Scheduled", 0, None),
            state("PENDING", "Pending", 1, Some(Uuid::from_u128(1))),
            state("RUNNING", "Running", 2, None),
            state("SCHEDULED", "AwaitingRetry", 3, None),
            state("PENDING", INFRASTRUCTURE_PENDING, 4, Some(OURS)),
        ];
        let replaced = replaced_state(&history, OURS).expect("to put back");
        assert_eq!(replaced.display_name(), "AwaitingRetry");
        let again = StateCreate::copy_of(replaced, Uuid::from_u128(10));
        assert_eq!(again.state_type, StateType::Scheduled);
        assert_eq!(
            again.state_details.scheduled_time,
            replaced.state_details.scheduled_time
        );
        assert_eq!(again.state_details.transition_id, Some(Uuid::from_u128(10)));
    }

    #[test]
    fn a_finished_run_gets_its_final_state_and_result_back() {
        let history = [
            state("RUNNING", "Running", 2, None),
            state("COMPLETED", "Completed", 3, None),
            state("PENDING", INFRASTRUCTURE_PENDING, 4, Some(OURS)),
        ];
        let replaced = replaced_state(&history, OURS).expect("to put back");
        let again = StateCreate::copy_of(replaced, Uuid::from_u128(10));
        assert_eq!(again.state_type, StateType::Completed);
        assert_eq!(again.data, Some(json!({"storage_key": "r1"})));
    }

    #[test]
    fn an_infrastructure_pending_on_the_claim_stays() {
        let history = [
            state("SCHEDULED", "Scheduled", 0, None),
            state("PENDING", "Pending", 1, Some(Uuid::from_u128(1))),
            state("PENDING", INFRASTRUCTURE_PENDING, 2, Some(OURS)),
        ];
        assert!(replaced_state(&history, OURS).is_none());
    }

    #[test]
    fn the_history_is_read_in_time_order_and_only_our_proposal_counts() {
        // Returned out of order.
        let history = [
            state("PENDING", INFRASTRUCTURE_PENDING, 4, Some(OURS)),
            state("COMPLETED", "Completed", 3, None),
        ];
        assert_eq!(
            replaced_state(&history, OURS).map(State::display_name),
            Some("Completed")
        );
        assert!(replaced_state(&history, Uuid::from_u128(3)).is_none());
    }

    #[test]
    fn nothing_is_put_back_once_the_run_moved_past_our_infrastructure_pending() {
        // An in-process retry: the engine's Running landed on our InfrastructurePending
        // after the evaluator saw it; putting AwaitingRetry back would run it twice.
        let history = [
            state("RUNNING", "Running", 2, None),
            state("SCHEDULED", "AwaitingRetry", 3, None),
            state("PENDING", INFRASTRUCTURE_PENDING, 4, Some(OURS)),
            state("RUNNING", "Running", 5, None),
        ];
        assert!(replaced_state(&history, OURS).is_none());
        // A user's cancel, likewise.
        let cancelled = [
            state("COMPLETED", "Completed", 3, None),
            state("PENDING", INFRASTRUCTURE_PENDING, 4, Some(OURS)),
            state("CANCELLED", "Cancelled", 5, None),
        ];
        assert!(replaced_state(&cancelled, OURS).is_none());
    }
}
