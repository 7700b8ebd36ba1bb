//! Claiming a flow run: who may create its Job.
//!
//! Prefect's orchestration ABORTs a `Pending` proposal on a run that is
//! already Pending, Running, Cancelling or Cancelled, so of several claimants
//! one wins. But it *accepts* `Pending` on a Completed, Failed or Crashed run
//! (measured on 3.9.1), so a stale or redelivered message must never claim.
//! The rules here close that gap:
//!
//! * A message names the run and the SCHEDULED-type state it was published
//!   for. The claim is proposed only while the run is still in exactly that
//!   state (same state id), read in one batched call for all messages at hand.
//! * The claim's `transition_id` is derived from (run id, state id), so the
//!   claim of one message is always the same proposal. Re-proposing it after a
//!   crash is answered REJECT with our own Pending state (Prefect's duplicate
//!   transition rule), which we recognise as our claim.
//! * A run found Pending with our `transition_id` was claimed by us and the
//!   claimant died before acking: we resume it (the Job name is derived from
//!   the same key, so creating it again cannot make a second Job).
//! * The Job is created suspended and released only if a read made after it
//!   existed still shows the run ours ([`release`]): Pending or Running with
//!   our `infrastructure_pid`. Anything else (cancelled, crashed, deleted,
//!   rescheduled) withdraws the Job before it ever had a pod, except another
//!   pid under our own claim: only the claim's holder writes the pid, so that
//!   is an earlier submission's update landing late, and ours is recorded again.

use flow_run_proto::{InfrastructurePid, SubmissionKey};
use prefect_client::{ClaimOutcome as PrefectClaim, FlowRun, OrchestrationResult, StateType};
use uuid::Uuid;

/// What to do with a message, given the run as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// The run is still in the published state: propose the claim.
    Propose,
    /// We claimed this run for this message before; carry on.
    Resume,
    /// Leave the run alone and drop the message.
    Skip(SkipReason),
}

/// Why a message is dropped without touching the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The run no longer exists.
    RunDeleted,
    /// The run has left the state the message was published for.
    StateMoved {
        state_type: String,
        state_name: String,
    },
    /// Prefect refused the claim: another claimant won, or the run became
    /// ineligible (e.g. `AwaitingConcurrencySlot`, or Cancelled).
    NotClaimed { reason: String },
    /// The run is not of this dispatcher's work pool (a message that should
    /// never have reached it, forged or misrouted).
    OtherPool { pool: Option<String> },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::RunDeleted => write!(f, "the flow run no longer exists"),
            SkipReason::StateMoved {
                state_type,
                state_name,
            } => write!(f, "the flow run is now {state_name} ({state_type})"),
            SkipReason::NotClaimed { reason } => write!(f, "Prefect refused the claim: {reason}"),
            SkipReason::OtherPool { pool } => write!(
                f,
                "the flow run belongs to work pool {}, not this dispatcher's",
                pool.as_deref().unwrap_or("<none>")
            ),
        }
    }
}

/// Decides from the run as Prefect has it now whether the message may claim
/// it: only a run of `work_pool`, still in the published state (or already
/// claimed by this very submission).
pub fn decide(key: &SubmissionKey, run: Option<&FlowRun>, work_pool: &str) -> ClaimDecision {
    let Some(run) = run else {
        return ClaimDecision::Skip(SkipReason::RunDeleted);
    };
    if run.work_pool_name.as_deref() != Some(work_pool) {
        return ClaimDecision::Skip(SkipReason::OtherPool {
            pool: run.work_pool_name.clone(),
        });
    }
    let Some(state) = run.state.as_ref() else {
        return ClaimDecision::Skip(moved("NONE", "without state"));
    };
    if run.is_still_scheduled_as(key.scheduled_state_id) {
        return ClaimDecision::Propose;
    }
    if state.state_type == StateType::Pending
        && state.state_details.transition_id == Some(key.claim_transition_id())
    {
        return ClaimDecision::Resume;
    }
    ClaimDecision::Skip(moved(state.state_type.as_str(), state.display_name()))
}

fn moved(state_type: &str, state_name: &str) -> SkipReason {
    SkipReason::StateMoved {
        state_type: state_type.to_string(),
        state_name: state_name.to_string(),
    }
}

/// Whether a suspended Job may start, from a read of its run made after the
/// Job existed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The run is still ours: unsuspend the Job.
    Go,
    /// The run is not ours any more: delete the Job before it has a pod.
    Withdraw(SkipReason),
    /// The run is in our claim but its `infrastructure_pid` names another Job (or
    /// none): only the current claim's holder writes the pid, so this is an
    /// earlier submission's write landing late (a retried or held PATCH). Record
    /// ours again and read again; never withdraw for it.
    Rerecord,
    /// The run is in our claim and its pid names another Job of this same
    /// submission (two deliveries at once, rendered apart): delete ours before
    /// it has a pod and try the message again, which resumes under the
    /// recorded pid.
    Yield,
}

/// The run is ours while it is Pending or Running with our pid recorded, and
/// not claimed meanwhile for another submission (a late create of an earlier
/// submission's Job, landing after the run was rescheduled and claimed again
/// but before the new claim recorded its pid, must not start).
pub fn release(key: &SubmissionKey, pid: &InfrastructurePid, run: Option<&FlowRun>) -> Release {
    let Some(run) = run else {
        return Release::Withdraw(SkipReason::RunDeleted);
    };
    let Some(state) = run.state.as_ref() else {
        return Release::Withdraw(moved("NONE", "without state"));
    };
    let recorded = run
        .infrastructure_pid
        .as_deref()
        .and_then(InfrastructurePid::parse);
    let active = matches!(state.state_type, StateType::Pending | StateType::Running);
    let claimed_for_another = state.state_type == StateType::Pending
        && state.name.as_deref() == Some("Pending")
        && state
            .state_details
            .transition_id
            .is_some_and(|id| id != key.claim_transition_id());
    if claimed_for_another {
        return Release::Withdraw(SkipReason::NotClaimed {
            reason: "the run was claimed again for another submission".into(),
        });
    }
    if active && recorded.as_ref() == Some(pid) {
        return Release::Go;
    }
    let our_claim = state.state_type == StateType::Pending
        && state.state_details.transition_id == Some(key.claim_transition_id());
    let same_submission = recorded.as_ref().is_some_and(|r| key.named(&r.job_name));
    if our_claim && same_submission {
        // Another delivery of this very submission rendered the Job elsewhere
        // (the template changed between them): its Job is the one Prefect knows.
        return Release::Yield;
    }
    if our_claim {
        return Release::Rerecord;
    }
    if active {
        return Release::Withdraw(SkipReason::NotClaimed {
            reason: format!(
                "the run's infrastructure_pid is now {}",
                run.infrastructure_pid.as_deref().unwrap_or("empty")
            ),
        });
    }
    Release::Withdraw(moved(state.state_type.as_str(), state.display_name()))
}

/// Whether the run is still in our claim and that claim is `limit` old at
/// `now`: its Job must not start any more (the reporter crashes a Job left
/// suspended past its own, longer, grace; a release racing that crash would
/// run a flow the reporter has just crashed).
pub fn claim_expired(
    key: &SubmissionKey,
    run: Option<&FlowRun>,
    limit: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(state) = run.and_then(|run| run.state.as_ref()) else {
        return false;
    };
    let ours = state.state_type == StateType::Pending
        && state.state_details.transition_id == Some(key.claim_transition_id());
    let age = state
        .timestamp
        .and_then(|claimed| (now - claimed).to_std().ok())
        .unwrap_or_default();
    ours && age >= limit
}

/// The answer to a claim proposal, in the dispatcher's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    /// The run is ours: create its Job.
    Claimed,
    /// Not ours; drop the message.
    Refused(SkipReason),
    /// Prefect asked us to wait and propose again.
    Wait(std::time::Duration),
}

/// Interprets Prefect's answer to our `Pending` proposal. A REJECT that
/// returns our own Pending state (a re-sent proposal whose first attempt
/// committed) is a claim; a REJECT with another state (for example
/// `AwaitingConcurrencySlot`) and an ABORT are refusals.
pub fn interpret(result: &OrchestrationResult, transition_id: Uuid) -> ClaimOutcome {
    match result.claim_outcome(transition_id) {
        PrefectClaim::Claimed(_) => ClaimOutcome::Claimed,
        PrefectClaim::Lost { reason } => ClaimOutcome::Refused(SkipReason::NotClaimed {
            reason: reason.unwrap_or_else(|| "aborted".into()),
        }),
        PrefectClaim::Redirected(state) => ClaimOutcome::Refused(SkipReason::NotClaimed {
            reason: match state {
                Some(state) => format!("the run was redirected to {}", state.display_name()),
                None => "rejected".into(),
            },
        }),
        PrefectClaim::Wait { delay_seconds } => ClaimOutcome::Wait(std::time::Duration::from_secs(
            delay_seconds.clamp(1, 300) as u64,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_in(state_type: &str, state_id: Uuid, transition_id: Option<Uuid>) -> FlowRun {
        serde_json::from_value(json!({
            "id": "0b0e4a6e-5d0a-4a35-9d8a-1f6f0d8c9b11",
            "name": "crimson-otter",
            "flow_id": "5f8a1a5e-0000-4000-8000-000000000001",
            "work_pool_name": POOL,
            "state": {
                "id": state_id,
                "type": state_type,
                "name": "whatever",
                "state_details": { "transition_id": transition_id },
            },
        }))
        .expect("a flow run")
    }

    const POOL: &str = "k8s";

    #[test]
    fn a_run_of_another_pool_is_never_claimed() {
        let (key, _) = ids();
        let mut run = run_in("SCHEDULED", key.scheduled_state_id, None);
        run.work_pool_name = Some("elsewhere".into());
        assert!(matches!(
            decide(&key, Some(&run), POOL),
            ClaimDecision::Skip(SkipReason::OtherPool { .. })
        ));
        run.work_pool_name = None;
        assert!(matches!(
            decide(&key, Some(&run), POOL),
            ClaimDecision::Skip(SkipReason::OtherPool { .. })
        ));
    }

    fn ids() -> (SubmissionKey, Uuid) {
        let state = Uuid::from_u128(7);
        let run = Uuid::parse_str("0b0e4a6e-5d0a-4a35-9d8a-1f6f0d8c9b11").unwrap();
        let key = SubmissionKey::new(run, state);
        (key, key.claim_transition_id())
    }

    #[test]
    fn a_run_still_in_the_published_state_is_claimed() {
        let (key, _) = ids();
        let state = key.scheduled_state_id;
        assert_eq!(
            decide(&key, Some(&run_in("SCHEDULED", state, None)), POOL),
            ClaimDecision::Propose
        );
    }

    #[test]
    fn a_run_rescheduled_under_a_new_state_is_not_claimed_by_the_old_message() {
        let (key, _) = ids();
        let run = run_in("SCHEDULED", Uuid::from_u128(8), None);
        assert!(matches!(
            decide(&key, Some(&run), POOL),
            ClaimDecision::Skip(SkipReason::StateMoved { .. })
        ));
    }

    #[test]
    fn finished_runs_are_never_claimed() {
        // Prefect would ACCEPT a Pending proposal on these: the check is ours.
        let (key, transition) = ids();
        let state = key.scheduled_state_id;
        for finished in [
            "COMPLETED",
            "FAILED",
            "CRASHED",
            "CANCELLED",
            "RUNNING",
            "CANCELLING",
        ] {
            let run = run_in(finished, state, Some(transition));
            assert!(
                matches!(decide(&key, Some(&run), POOL), ClaimDecision::Skip(_)),
                "{finished} must not be claimed"
            );
        }
    }

    #[test]
    fn our_own_pending_claim_is_resumed_and_a_rivals_is_not() {
        let (key, transition) = ids();
        let ours = run_in("PENDING", Uuid::from_u128(9), Some(transition));
        assert_eq!(decide(&key, Some(&ours), POOL), ClaimDecision::Resume);
        let rival = run_in("PENDING", Uuid::from_u128(9), Some(Uuid::from_u128(10)));
        assert!(matches!(
            decide(&key, Some(&rival), POOL),
            ClaimDecision::Skip(_)
        ));
    }

    #[test]
    fn a_deleted_run_is_skipped() {
        let (key, _) = ids();
        assert_eq!(
            decide(&key, None, POOL),
            ClaimDecision::Skip(SkipReason::RunDeleted)
        );
    }

    fn with_pid(mut run: FlowRun, pid: &str) -> FlowRun {
        run.infrastructure_pid = Some(pid.to_string());
        run
    }

    #[test]
    fn a_job_is_released_only_while_the_run_is_ours() {
        let pid = InfrastructurePid::new("prefect", "crimson-otter-0123456789abcdef");
        let (key, transition) = ids();
        let state = key.scheduled_state_id;
        let ours = with_pid(run_in("PENDING", state, Some(transition)), &pid.to_string());
        assert_eq!(release(&key, &pid, Some(&ours)), Release::Go);
        let running = with_pid(run_in("RUNNING", state, None), &pid.to_string());
        assert_eq!(release(&key, &pid, Some(&running)), Release::Go);
        for gone in [
            "CANCELLING",
            "CANCELLED",
            "CRASHED",
            "COMPLETED",
            "SCHEDULED",
            "PAUSED",
        ] {
            let run = with_pid(run_in(gone, state, None), &pid.to_string());
            assert!(
                matches!(release(&key, &pid, Some(&run)), Release::Withdraw(_)),
                "{gone} must withdraw the Job"
            );
        }
        // In our claim, only we write the pid: another one (or none) is a stale
        // write of an earlier submission, and ours is recorded again.
        let elsewhere = with_pid(run_in("PENDING", state, Some(transition)), "other:job-1");
        assert_eq!(release(&key, &pid, Some(&elsewhere)), Release::Rerecord);
        let unrecorded = run_in("PENDING", state, Some(transition));
        assert_eq!(release(&key, &pid, Some(&unrecorded)), Release::Rerecord);
        // Another delivery of this submission recorded its Job in another
        // namespace: that one stays, ours goes and the message is tried again.
        let name = format!("crimson-otter-{}", key.job_name_suffix());
        let ours_in_a = InfrastructurePid::new("team-a", name.clone());
        let same_key_elsewhere = InfrastructurePid::new("team-b", name);
        let rendered_apart = with_pid(
            run_in("PENDING", state, Some(transition)),
            &same_key_elsewhere.to_string(),
        );
        assert_eq!(
            release(&key, &ours_in_a, Some(&rendered_apart)),
            Release::Yield
        );
        // Not in our claim (the reporter's InfrastructurePending, Running), a pid
        // of another Job withdraws ours.
        let mut moved_on = with_pid(run_in("RUNNING", state, None), "other:job-1");
        assert!(matches!(
            release(&key, &pid, Some(&moved_on)),
            Release::Withdraw(_)
        ));
        moved_on.state.as_mut().unwrap().state_type = StateType::Pending;
        moved_on.state.as_mut().unwrap().name = Some("InfrastructurePending".into());
        assert!(matches!(
            release(&key, &pid, Some(&moved_on)),
            Release::Withdraw(_)
        ));
        assert_eq!(
            release(&key, &pid, None),
            Release::Withdraw(SkipReason::RunDeleted)
        );
        // Rescheduled and claimed again for another submission, the new claim's
        // pid not yet recorded: this (earlier) submission's Job must not start.
        let mut claimed_again = with_pid(
            run_in("PENDING", state, Some(Uuid::from_u128(77))),
            &pid.to_string(),
        );
        claimed_again.state.as_mut().unwrap().name = Some("Pending".into());
        assert!(matches!(
            release(&key, &pid, Some(&claimed_again)),
            Release::Withdraw(_)
        ));
        // The reporter's InfrastructurePending (our Job's pod) is still ours.
        claimed_again.state.as_mut().unwrap().name = Some("InfrastructurePending".into());
        assert_eq!(release(&key, &pid, Some(&claimed_again)), Release::Go);
    }

    #[test]
    fn an_earlier_submissions_late_pid_under_our_claim_is_overwritten_not_obeyed() {
        // Short campaign (seed 9): a run rescheduled by its user right after the
        // first claim; the first submission's pid update, retried, lands after the
        // second claim recorded its own. Both Jobs used to be withdrawn and the run
        // stayed Pending with no Job.
        let first = SubmissionKey::new(ids().0.flow_run_id, Uuid::from_u128(7));
        let second = SubmissionKey::new(first.flow_run_id, Uuid::from_u128(8));
        let first_pid =
            InfrastructurePid::new("prefect", format!("otter-{}", first.job_name_suffix()));
        let second_pid =
            InfrastructurePid::new("prefect", format!("otter-{}", second.job_name_suffix()));
        let mut run = with_pid(
            run_in(
                "PENDING",
                Uuid::from_u128(8),
                Some(second.claim_transition_id()),
            ),
            &first_pid.to_string(),
        );
        run.state.as_mut().unwrap().name = Some("Pending".into());
        assert_eq!(release(&second, &second_pid, Some(&run)), Release::Rerecord);
        assert!(matches!(
            release(&first, &first_pid, Some(&run)),
            Release::Withdraw(_)
        ));
    }

    #[test]
    fn a_claim_past_the_submission_timeout_never_starts_its_job() {
        let (key, transition) = ids();
        let limit = std::time::Duration::from_secs(600);
        let mut run = run_in("PENDING", key.scheduled_state_id, Some(transition));
        let claimed = chrono::DateTime::parse_from_rfc3339("2027-01-15T08:00:00Z")
            .unwrap()
            .to_utc();
        run.state.as_mut().unwrap().timestamp = Some(claimed);
        let at = |seconds| claimed + chrono::TimeDelta::seconds(seconds);
        assert!(!claim_expired(&key, Some(&run), limit, at(599)));
        assert!(claim_expired(&key, Some(&run), limit, at(600)));
        // Not our claim (moved on, or another's): the release rules decide.
        run.state.as_mut().unwrap().state_details.transition_id = Some(Uuid::from_u128(3));
        assert!(!claim_expired(&key, Some(&run), limit, at(900)));
        assert!(!claim_expired(&key, None, limit, at(900)));
    }

    fn result(value: serde_json::Value) -> OrchestrationResult {
        serde_json::from_value(value).expect("an orchestration result")
    }

    #[test]
    fn accept_and_duplicate_reject_are_claims_abort_is_not() {
        let (_, transition) = ids();
        let accepted = result(
            json!({"status": "ACCEPT", "state": {"id": Uuid::from_u128(1), "type": "PENDING", "name": "Pending", "state_details": {"transition_id": transition}}, "details": {"type": "accept_details"}}),
        );
        assert_eq!(interpret(&accepted, transition), ClaimOutcome::Claimed);
        let duplicate = result(
            json!({"status": "REJECT", "state": {"id": Uuid::from_u128(1), "type": "PENDING", "name": "Pending", "state_details": {"transition_id": transition}}, "details": {"type": "reject_details", "reason": "This run has already made this state transition."}}),
        );
        assert_eq!(interpret(&duplicate, transition), ClaimOutcome::Claimed);
        let aborted = result(
            json!({"status": "ABORT", "state": null, "details": {"type": "abort_details", "reason": "This run is in a PENDING state and cannot transition to a PENDING state."}}),
        );
        assert!(matches!(
            interpret(&aborted, transition),
            ClaimOutcome::Refused(_)
        ));
        let slot = result(
            json!({"status": "REJECT", "state": {"id": Uuid::from_u128(2), "type": "SCHEDULED", "name": "AwaitingConcurrencySlot", "state_details": {}}, "details": {"type": "reject_details"}}),
        );
        assert!(matches!(
            interpret(&slot, transition),
            ClaimOutcome::Refused(_)
        ));
        let wait = result(
            json!({"status": "WAIT", "state": null, "details": {"type": "wait_details", "delay_seconds": 3}}),
        );
        assert_eq!(
            interpret(&wait, transition),
            ClaimOutcome::Wait(std::time::Duration::from_secs(3))
        );
    }
}
