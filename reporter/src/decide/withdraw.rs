//! Jobs of final runs that must be deleted, whatever their state, and why:
//!
//! | run | Job | why |
//! |---|---|---|
//! | `CANCELLED` | not finished, not going away | a create that was in flight when the run was cancelled; its pod would run a cancelled flow |
//! | any final | still suspended | never released (a create in flight when the run ended) |
//! | `CRASHED` | not finished, no pod running (pods pending or failed, or none created) | the run crashed before its pod started (an image that can never be pulled, a node that never comes, a quota): left alone, Kubernetes retries forever, and a pod that starts late would run the flow of a crashed run |
//!
//! A Job the watchers never saw (a tombstone for a missing Job) is never named, nor a
//! `CANCELLING` run's (the canceller's), nor a `CRASHED` run's Job whose pod runs (the
//! flow may be finishing; Prefect may have crashed the run for missed heartbeats).

use super::{job_has_ended, pods_of};
use crate::observe::{JobView, PodPhase, PodView};
use crate::run_state::{FlowRunState, StateType};

/// Why a Job is withdrawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithdrawReason {
    RunCancelled,
    NeverReleased,
    RunCrashed,
    /// The run was deleted from Prefect while its Job was still suspended.
    RunDeleted,
}

impl WithdrawReason {
    /// The line for the run's logs once the Job is deleted.
    pub fn log_message(self, job: &JobView) -> String {
        let job = format!("{}/{}", job.namespace, job.name);
        match self {
            Self::RunCancelled => format!(
                "Deleted Kubernetes Job {job}: the flow run is cancelled and the Job had not finished."
            ),
            Self::NeverReleased => format!(
                "Deleted Kubernetes Job {job}: it was still suspended (never started) and the \
                 flow run is already final."
            ),
            Self::RunDeleted => format!(
                "Deleted Kubernetes Job {job}: it was still suspended (never started) and its \
                 flow run was deleted."
            ),
            Self::RunCrashed => format!(
                "Deleted Kubernetes Job {job}: the flow run crashed and no pod of the Job runs; \
                 Kubernetes would otherwise keep retrying it (pulling the image, waiting for a \
                 node, replacing failed pods) and could start the flow of a crashed run."
            ),
        }
    }
}

/// A Job to delete and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Withdrawal<'a> {
    pub job: &'a JobView,
    pub reason: WithdrawReason,
}

/// The run's Jobs that must be deleted (see the module's table).
pub fn jobs_to_withdraw<'a>(
    state: &FlowRunState,
    jobs: &'a [JobView],
    pods: &[PodView],
) -> Vec<Withdrawal<'a>> {
    if !state.state_type.is_final() {
        return Vec::new();
    }
    jobs.iter()
        .filter(|job| job.gone_at().is_none() && !job.never_observed)
        .filter_map(|job| {
            let reason = withdraw_reason(state.state_type, job, pods)?;
            Some(Withdrawal { job, reason })
        })
        .collect()
}

fn withdraw_reason(state: StateType, job: &JobView, pods: &[PodView]) -> Option<WithdrawReason> {
    if job.is_suspended() {
        return Some(WithdrawReason::NeverReleased);
    }
    if job_has_ended(job) {
        return None;
    }
    match state {
        StateType::Cancelled => Some(WithdrawReason::RunCancelled),
        StateType::Crashed if nothing_running(job, pods) => Some(WithdrawReason::RunCrashed),
        _ => None,
    }
}

/// No pod of the Job runs: every pod is pending or failed, or there is none and the Job
/// counts none active (a pod it counts but the store lacks may be running).
fn nothing_running(job: &JobView, pods: &[PodView]) -> bool {
    let mut pods = pods_of(job, pods).peekable();
    if pods.peek().is_none() {
        return job.active == 0;
    }
    pods.all(|pod| matches!(pod.phase, PodPhase::Pending | PodPhase::Failed))
}

#[cfg(test)]
mod tests;
