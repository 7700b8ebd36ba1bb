//! Submitting one flow run: claim it, render its Job, record where the Job
//! will be, create the Job. Every step is safe to repeat, so a message that
//! is delivered again after any crash ends in exactly one Job.
//!
//! Order and why:
//! 1. Claim (`Pending`, deterministic transition id) — see [`crate::claim`].
//! 2. Render — a bad job variable Crashes the run with a message naming it.
//! 3. Record `infrastructure_pid = <namespace>:<job name>` *before* creating
//!    the Job, so there is never a Job that Prefect cannot cancel. The name is
//!    derived from the claim, so it is known before the Job exists.
//! 4. Create the Job; AlreadyExists with our label means an earlier attempt
//!    created it. A permanent Kubernetes refusal Crashes the run.

use std::time::Duration;

use flow_run_proto::FlowRunDue;
use prefect_client::{FlowRun, PrefectClient, StateCreate};
use uuid::Uuid;

use crate::claim::{self, ClaimDecision, ClaimOutcome, SkipReason};
use crate::kubernetes::{self, CreateError};
use crate::render::{JobRenderer, RenderedJob};

/// A decoded message with its ids parsed.
#[derive(Debug, Clone)]
pub struct DueRun {
    pub message: FlowRunDue,
    pub flow_run_id: Uuid,
    pub state_id: Uuid,
}

impl DueRun {
    /// Parses the ids; a message without valid ids cannot be handled.
    pub fn parse(message: FlowRunDue) -> Result<DueRun, String> {
        let flow_run_id = Uuid::parse_str(&message.flow_run_id)
            .map_err(|e| format!("flow_run_id {:?} is not a UUID: {e}", message.flow_run_id))?;
        let state_id = Uuid::parse_str(&message.state_id)
            .map_err(|e| format!("state_id {:?} is not a UUID: {e}", message.state_id))?;
        Ok(DueRun {
            message,
            flow_run_id,
            state_id,
        })
    }
}

/// How handling one message ended; the consumer acks or naks accordingly.
#[derive(Debug)]
pub enum Outcome {
    /// The run's Job exists (now or from an earlier attempt).
    Submitted { job: String, resumed: bool },
    /// The message was stale or the claim refused; the run was not touched
    /// (or was not ours).
    Skipped(SkipReason),
    /// The run could not run and is now Crashed with this message.
    Crashed(String),
    /// Something transient failed; deliver the message again later.
    Retry { after: Duration, error: String },
}

/// Everything a submission needs, shared by all in-flight submissions.
pub struct Submitter {
    pub prefect: PrefectClient,
    pub kube: kube::Client,
    pub renderer: JobRenderer,
}

impl Submitter {
    /// Handles one message. `run` is the run as read (in a batch) just now;
    /// `deliveries` is how many times NATS has delivered the message.
    pub async fn submit(&self, due: &DueRun, run: Option<&FlowRun>, deliveries: u64) -> Outcome {
        let transition_id = claim::claim_transition_id(due.flow_run_id, due.state_id);
        let resumed = match claim::decide(due.state_id, transition_id, run) {
            ClaimDecision::Skip(reason) => return Outcome::Skipped(reason),
            ClaimDecision::Resume => true,
            ClaimDecision::Propose => {
                let proposal = StateCreate::pending_claim(transition_id);
                match self
                    .prefect
                    .set_flow_run_state(due.flow_run_id, &proposal, false)
                    .await
                {
                    Ok(result) => match claim::interpret(&result, transition_id) {
                        ClaimOutcome::Claimed => false,
                        ClaimOutcome::Refused(reason) => return Outcome::Skipped(reason),
                        ClaimOutcome::Wait(after) => {
                            return Outcome::Retry {
                                after,
                                error: "Prefect asked to wait before claiming".into(),
                            }
                        }
                    },
                    Err(e) if e.is_not_found() => return Outcome::Skipped(SkipReason::RunDeleted),
                    Err(e) => return retry(deliveries, format!("claiming the flow run: {e}")),
                }
            }
        };

        let rendered = match self.renderer.render(&due.message).await {
            Ok(rendered) => rendered,
            Err(crate::render::RenderFailure::Invalid(message)) => {
                return self
                    .crash(
                        due,
                        deliveries,
                        format!("Invalid job configuration: {message}"),
                    )
                    .await
            }
            Err(crate::render::RenderFailure::Transient(message)) => {
                return retry(deliveries, message)
            }
        };
        let RenderedJob {
            namespace,
            name,
            manifest,
        } = rendered;

        let pid = format!("{namespace}:{name}");
        if let Err(e) = self
            .prefect
            .update_flow_run_infrastructure_pid(due.flow_run_id, &pid)
            .await
        {
            if e.is_not_found() {
                return Outcome::Skipped(SkipReason::RunDeleted);
            }
            return retry(
                deliveries,
                format!("recording infrastructure_pid {pid}: {e}"),
            );
        }

        let run_id = due.flow_run_id.to_string();
        match kubernetes::create_job(&self.kube, &namespace, &manifest, &run_id).await {
            Ok(created) => Outcome::Submitted {
                job: pid,
                resumed: resumed || created.already_existed,
            },
            Err(CreateError::Rejected(message)) => {
                self.crash(
                    due,
                    deliveries,
                    format!("Failed to submit flow run to infrastructure: {message}"),
                )
                .await
            }
            Err(CreateError::Transient(message)) => retry(deliveries, message),
        }
    }

    /// Proposes `Crashed`. An ABORT (the run is already final) is fine.
    async fn crash(&self, due: &DueRun, deliveries: u64, message: String) -> Outcome {
        tracing::warn!(flow_run_id = %due.flow_run_id, %message, "crashing flow run");
        let proposal = StateCreate::crashed(message.clone());
        match self
            .prefect
            .set_flow_run_state(due.flow_run_id, &proposal, false)
            .await
        {
            Ok(_) => Outcome::Crashed(message),
            Err(e) if e.is_not_found() => Outcome::Skipped(SkipReason::RunDeleted),
            Err(e) => retry(deliveries, format!("reporting the crash ({message}): {e}")),
        }
    }
}

/// Backoff for a message delivered `deliveries` times: 1 s doubling to 60 s.
pub fn backoff(deliveries: u64) -> Duration {
    let exponent = deliveries.saturating_sub(1).min(6) as u32;
    Duration::from_secs((1u64 << exponent).min(60))
}

fn retry(deliveries: u64, error: String) -> Outcome {
    Outcome::Retry {
        after: backoff(deliveries),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_at_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(7), Duration::from_secs(60));
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }
}
