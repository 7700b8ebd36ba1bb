//! Submitting one flow run: claim it, render its Job, record where the Job
//! will be, create the Job suspended, then release it once a fresh read shows
//! the run is still ours. Every step is safe to repeat, so a message that is
//! delivered again after any crash ends in exactly one Job, and a Job whose
//! run was cancelled meanwhile never starts a pod.
//!
//! Order and why:
//! 1. Read the run (batched) and claim it (`Pending`, the submission key's
//!    transition id) — see [`crate::claim`]. Only a run of this dispatcher's
//!    pool is claimed.
//! 2. Render from what Prefect says (the run's and its deployment's job
//!    variables, read in batches while the claim is on its way; never the
//!    message's) — a bad job variable
//!    Crashes the run with a message naming it.
//!    A resumed claim whose pid is already recorded for this submission keeps
//!    that pid: the Job's identity never changes once Prefect knows it. A pid
//!    of an earlier submission (the run rescheduled or retried, claimed again,
//!    and the claim's answer lost) is not ours: its Job belongs to that one.
//! 3. Record `infrastructure_pid = <namespace>:<job name>` *before* creating
//!    the Job, so there is never a Job that Prefect cannot cancel; once, within
//!    the claim window, so that it cannot land on a later claim of the run.
//! 4. Create the Job suspended; AlreadyExists with our claim means an earlier
//!    attempt created it. A permanent Kubernetes refusal Crashes the run.
//! 5. Read the run again (batched) and release the Job, or withdraw it.
//!
//! The run's logs get the Python worker's submission lines at the moments they
//! describe ([`crate::run_logs`]): "submitting" after a fresh claim, "Creating
//! Kubernetes job..." before that claim's create, "created" once the create
//! made the Job, "submitted to infrastructure" once the Job is released. They
//! are queued, never awaited.
//!
//! A claim older than the submission timeout whose Job does not exist is
//! Crashed with that reason instead of being tried again.

use std::time::Duration;

use flow_run_proto::{FlowRunDue, InfrastructurePid, SubmissionKey};
use prefect_client::{FlowRun, PrefectClient, StateCreate};

use crate::claim::{self, ClaimDecision, ClaimOutcome, Release, SkipReason};
use crate::kubernetes::{self, CreateError, Jobs};
use crate::metrics::DispatcherMetrics;
use crate::reads::Reads;
use crate::render::{JobRenderer, RenderFailure, RenderedJob, RunInputs};
use crate::run_logs::{self, RunLogs};

/// A decoded message with its key.
#[derive(Debug, Clone)]
pub struct DueRun {
    pub message: FlowRunDue,
    pub key: SubmissionKey,
}

impl DueRun {
    /// Parses the ids; a message without valid ids cannot be handled.
    pub fn parse(message: FlowRunDue) -> Result<DueRun, String> {
        let key = SubmissionKey::of_message(&message).map_err(|e| e.to_string())?;
        Ok(DueRun { message, key })
    }
}

/// How handling one message ended; the consumer acks or naks accordingly.
#[derive(Debug)]
pub enum Outcome {
    /// The run's Job exists and may run (now or from an earlier attempt).
    Submitted {
        job: InfrastructurePid,
        resumed: bool,
    },
    /// The message was stale or the claim refused; the run was not touched
    /// (or was not ours).
    Skipped(SkipReason),
    /// The Job was created but the run stopped being ours before it could
    /// start (cancelled, crashed, deleted): the Job was deleted unstarted.
    Withdrawn {
        job: InfrastructurePid,
        reason: SkipReason,
    },
    /// The run could not run and is now Crashed with this message.
    Crashed(String),
    /// Something transient failed; deliver the message again later.
    Retry { after: Duration, error: String },
}

/// What a submission needs.
pub struct Submitter {
    pub prefect: PrefectClient,
    /// The claim's client: without HTTP retries (see [`claim_window`]).
    pub claims: PrefectClient,
    /// See [`claim_window`].
    pub claim_window: Duration,
    pub reads: Reads,
    pub jobs: Jobs,
    /// The work pool whose runs this dispatcher may claim.
    pub work_pool: String,
    pub renderer: JobRenderer,
    /// A claim older than this whose Job does not exist is Crashed.
    pub submission_timeout: Duration,
    pub metrics: DispatcherMetrics,
    /// The submission lines in the runs' logs.
    pub logs: RunLogs,
    /// The worker name the submission lines give.
    pub worker_name: String,
}

/// Early return of a step: the outcome to settle the message with.
type Step<T> = Result<T, Outcome>;

/// What the render reads besides the run.
struct Sources {
    deployment: Option<prefect_client::Deployment>,
    flow_name: String,
}

impl Submitter {
    /// Handles one message; `deliveries` is how many times NATS delivered it.
    pub async fn submit(&self, due: &DueRun, deliveries: u64) -> Outcome {
        match self.try_submit(due, deliveries).await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    async fn try_submit(&self, due: &DueRun, deliveries: u64) -> Step<Outcome> {
        // From before the read: a pause while its answer is on the way counts.
        let read_at = std::time::Instant::now();
        let run = self.read(due.key, deliveries).await?;
        let decision = claim::decide(&due.key, run.as_ref(), &self.work_pool);
        if let ClaimDecision::Skip(reason) = decision {
            return Err(Outcome::Skipped(reason));
        }
        // A run to claim or resume was read (a missing one is skipped above).
        let run = run.ok_or(Outcome::Skipped(SkipReason::RunDeleted))?;
        // The claim and the reads the render needs go out together: the
        // reads change nothing in Prefect, and one run's path to its Job is a
        // call shorter. A failed claim settles the message at once; the
        // reads are then dropped, not waited for.
        let (resumed, sources) = claim_beside(
            self.claim(due, decision, read_at, deliveries),
            self.sources(&run, deliveries),
        )
        .await?;
        if !resumed {
            let line = run_logs::submitting(&self.worker_name, run.id);
            self.logs.info(run.id, line);
        }
        let rendered = self
            .render(due, &run, sources?, resumed, deliveries)
            .await?;
        let pid = rendered.pid.clone();
        if resumed {
            self.check_timeout(due, &run, &pid, deliveries).await?;
        }
        self.record(due, &run, &pid, deliveries).await?;
        if !resumed {
            self.logs.info(run.id, run_logs::CREATING.into());
        }
        let started = std::time::Instant::now();
        let existing = self.create(due, &rendered, deliveries).await?;
        if !existing.already_existed {
            self.metrics.job_created(started.elapsed(), late_by(&run));
            let line = run_logs::created(&pid.job_name, &pid.namespace);
            self.logs.info(run.id, line);
        }
        let resumed = resumed || existing.already_existed;
        let held = kubernetes::template_suspends(&rendered.manifest);
        if existing.already_existed && (held || !existing.suspended) {
            // Released (or held) by an earlier delivery, which wrote its lines.
            return Ok(Outcome::Submitted { job: pid, resumed });
        }
        let outcome = if held {
            // Suspended by the template itself: the user's choice.
            Outcome::Submitted { job: pid, resumed }
        } else {
            self.release(due, pid, resumed, deliveries).await?
        };
        if matches!(outcome, Outcome::Submitted { .. }) {
            self.logs.info(run.id, run_logs::submitted(&run.name));
        }
        Ok(outcome)
    }

    /// Creates the Job suspended; a permanent refusal crashes the run.
    async fn create(
        &self,
        due: &DueRun,
        rendered: &RenderedJob,
        deliveries: u64,
    ) -> Step<kubernetes::ExistingJob> {
        let created = self
            .jobs
            .create_suspended(&rendered.pid, &rendered.manifest, &due.key)
            .await;
        match created {
            Ok(existing) => Ok(existing),
            Err(CreateError::Rejected(message)) => {
                let text = format!("Failed to submit flow run to infrastructure: {message}");
                Err(self.crash(due, deliveries, text).await)
            }
            Err(CreateError::Transient(message)) => Err(retry(deliveries, message)),
        }
    }

    async fn read(&self, key: SubmissionKey, deliveries: u64) -> Step<Option<FlowRun>> {
        self.reads
            .runs
            .read(key.flow_run_id)
            .await
            .map_err(|error| retry(deliveries, error))
    }

    /// Carries out the claim rules' decision; `Ok(true)` when the run was
    /// already ours (a resumed claim).
    async fn claim(
        &self,
        due: &DueRun,
        decision: ClaimDecision,
        read_at: std::time::Instant,
        deliveries: u64,
    ) -> Step<bool> {
        match decision {
            ClaimDecision::Skip(reason) => Err(Outcome::Skipped(reason)),
            ClaimDecision::Resume => {
                self.metrics.claim("resumed");
                Ok(true)
            }
            ClaimDecision::Propose => self.propose(due, read_at, deliveries).await,
        }
    }

    /// Proposes the claim, within the claim window from `read_at`.
    async fn propose(
        &self,
        due: &DueRun,
        read_at: std::time::Instant,
        deliveries: u64,
    ) -> Step<bool> {
        if read_at.elapsed() >= self.claim_window {
            let error = "the run was read too long ago to claim it on that read".into();
            return Err(retry(deliveries, error));
        }
        let transition_id = due.key.claim_transition_id();
        let proposal = StateCreate::pending_claim(transition_id);
        let deadline = tokio::time::Instant::from_std(read_at + self.claim_window);
        let sent = self
            .claims
            .set_flow_run_state(due.key.flow_run_id, &proposal, false);
        let Some(result) = service_runtime::deadline::before(deadline, sent).await else {
            self.metrics.claim("error");
            let error = "the claim got no answer within the claim window".into();
            return Err(retry(deliveries, error));
        };
        let interpreted = result
            .as_ref()
            .map(|result| claim::interpret(result, transition_id));
        self.metrics.claim(match &interpreted {
            Ok(ClaimOutcome::Claimed) => "claimed",
            Ok(ClaimOutcome::Refused(_)) => "refused",
            Ok(ClaimOutcome::Wait(_)) => "wait",
            Err(_) => "error",
        });
        match interpreted {
            Ok(ClaimOutcome::Claimed) => Ok(false),
            Ok(ClaimOutcome::Refused(reason)) => Err(Outcome::Skipped(reason)),
            Ok(ClaimOutcome::Wait(after)) => Err(Outcome::Retry {
                after,
                error: "Prefect asked to wait before claiming".into(),
            }),
            Err(e) if e.is_not_found() => Err(Outcome::Skipped(SkipReason::RunDeleted)),
            Err(e) => Err(retry(deliveries, format!("claiming the flow run: {e}"))),
        }
    }

    /// The run's deployment and flow name, as Prefect has them.
    async fn sources(&self, run: &FlowRun, deliveries: u64) -> Step<Sources> {
        let deployment = match run.deployment_id {
            Some(id) => self.reads.deployment(id, run.created).await,
            None => Ok(None),
        }
        .map_err(|error| retry(deliveries, error))?;
        let flow_name = self
            .reads
            .flow_name(run.flow_id)
            .await
            .map_err(|error| retry(deliveries, error))?;
        Ok(Sources {
            deployment,
            flow_name,
        })
    }

    /// Renders the Job from the run and its sources. A resumed claim with a
    /// recorded pid keeps it.
    async fn render(
        &self,
        due: &DueRun,
        run: &FlowRun,
        sources: Sources,
        resumed: bool,
        deliveries: u64,
    ) -> Step<RenderedJob> {
        let inputs = RunInputs {
            run,
            deployment: sources.deployment.as_ref(),
            flow_name: &sources.flow_name,
        };
        let mut rendered = match self.renderer.render(&inputs, &due.key).await {
            Ok(rendered) => rendered,
            Err(RenderFailure::Invalid(message)) => {
                let text = format!("Invalid job configuration: {message}");
                return Err(self.crash(due, deliveries, text).await);
            }
            Err(RenderFailure::Transient(message)) => return Err(retry(deliveries, message)),
        };
        if let Some(recorded) = resumed_pid(&due.key, run, resumed) {
            rendered.pid = recorded;
        }
        Ok(rendered)
    }

    /// A resumed claim past the submission timeout whose Job was never
    /// created is Crashed: nothing keeps retrying a run forever.
    async fn check_timeout(
        &self,
        due: &DueRun,
        run: &FlowRun,
        pid: &InfrastructurePid,
        deliveries: u64,
    ) -> Step<()> {
        let claimed_at = run.state.as_ref().and_then(|s| s.timestamp);
        let Some(claimed_at) = claimed_at else {
            return Ok(());
        };
        let age = (chrono::Utc::now() - claimed_at)
            .to_std()
            .unwrap_or_default();
        if age < self.submission_timeout {
            return Ok(());
        }
        match self.jobs.exists(pid).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let text = format!(
                    "The prefect-k8s dispatcher could not create Kubernetes Job {}/{} within {} s of claiming the flow run.",
                    pid.namespace,
                    pid.job_name,
                    self.submission_timeout.as_secs()
                );
                Err(self.crash(due, deliveries, text).await)
            }
            Err(CreateError::Rejected(message) | CreateError::Transient(message)) => {
                Err(retry(deliveries, message))
            }
        }
    }

    /// Records the pid unless it is already recorded. A failure (404
    /// included: only the batched read decides that a run is gone) retries.
    async fn record(
        &self,
        due: &DueRun,
        run: &FlowRun,
        pid: &InfrastructurePid,
        deliveries: u64,
    ) -> Step<()> {
        if run.infrastructure_pid.as_deref() == Some(pid.to_string().as_str()) {
            return Ok(());
        }
        self.write_pid(due, pid, deliveries).await
    }

    /// Writes the pid once, like the claim: without HTTP retries, and not
    /// started or waited for longer than the claim window. A pid update that
    /// lands late, after the run was rescheduled and claimed again for another
    /// submission, would make that submission's release read find another pid
    /// under its claim (it records its own again: [`Release::Rerecord`]) or,
    /// after its release, point Prefect at this submission's withdrawn Job. A
    /// failure is redelivered and decided from a fresh read.
    async fn write_pid(&self, due: &DueRun, pid: &InfrastructurePid, deliveries: u64) -> Step<()> {
        let text = pid.to_string();
        let deadline = tokio::time::Instant::now() + self.claim_window;
        let sent = self
            .claims
            .update_flow_run_infrastructure_pid(due.key.flow_run_id, &text);
        let error = match service_runtime::deadline::before(deadline, sent).await {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => e.to_string(),
            None => "not done within the claim window".into(),
        };
        Err(retry(
            deliveries,
            format!("recording infrastructure_pid {text}: {error}"),
        ))
    }

    /// Reads the run again now that its Job exists; releases or withdraws.
    async fn release(
        &self,
        due: &DueRun,
        pid: InfrastructurePid,
        resumed: bool,
        deliveries: u64,
    ) -> Step<Outcome> {
        let run = self.read(due.key, deliveries).await?;
        let mut verdict = claim::release(&due.key, &pid, run.as_ref());
        if verdict == Release::Rerecord {
            verdict = self.record_again(due, &pid, deliveries).await?;
        }
        let withdrawn = match verdict {
            Release::Go => None,
            Release::Withdraw(reason) => Some(reason),
            Release::Yield => {
                let error = match self.jobs.withdraw(&pid).await {
                    Ok(kubernetes::Withdrawal::Released) => {
                        return Err(Outcome::Submitted {
                            job: pid,
                            resumed: true,
                        })
                    }
                    Ok(_) => "another delivery of this submission recorded its Job elsewhere; resuming under it".into(),
                    Err(CreateError::Rejected(message) | CreateError::Transient(message)) => message,
                };
                return Err(retry(deliveries, error));
            }
            Release::Rerecord => {
                let error = "the run's infrastructure_pid is still not ours under our claim".into();
                return Err(retry(deliveries, error));
            }
        };
        let expired = claim::claim_expired(
            &due.key,
            run.as_ref(),
            self.submission_timeout,
            chrono::Utc::now(),
        );
        if withdrawn.is_none() && expired {
            return Err(self.expire(due, &pid, deliveries).await);
        }
        let result = match &withdrawn {
            None => self.jobs.release(&pid).await.map(|_| ()),
            Some(_) => match self.jobs.withdraw(&pid).await {
                // Another delivery of this message released it, on a read that
                // found the run ours, and wrote the submission lines.
                Ok(kubernetes::Withdrawal::Released) => {
                    return Err(Outcome::Submitted {
                        job: pid,
                        resumed: true,
                    })
                }
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            },
        };
        if let Err(CreateError::Rejected(message) | CreateError::Transient(message)) = result {
            return Err(retry(deliveries, message));
        }
        Ok(match withdrawn {
            None => Outcome::Submitted { job: pid, resumed },
            Some(reason) => Outcome::Withdrawn { job: pid, reason },
        })
    }

    /// Our claim is past the submission timeout and its Job still suspended:
    /// withdraw the Job and crash the run, as a claim whose Job was never
    /// created is (the reporter would crash it too, a little later).
    async fn expire(&self, due: &DueRun, pid: &InfrastructurePid, deliveries: u64) -> Outcome {
        match self.jobs.withdraw(pid).await {
            Ok(kubernetes::Withdrawal::Released) => {
                return Outcome::Submitted {
                    job: pid.clone(),
                    resumed: true,
                }
            }
            Ok(_) => {}
            Err(CreateError::Rejected(message) | CreateError::Transient(message)) => {
                return retry(deliveries, message)
            }
        }
        let text = format!(
            "The prefect-k8s dispatcher could not start Kubernetes Job {}/{} within {} s of claiming the flow run.",
            pid.namespace,
            pid.job_name,
            self.submission_timeout.as_secs()
        );
        self.crash(due, deliveries, text).await
    }

    /// The run is in our claim but an earlier submission's pid update landed
    /// after ours (only the claim's holder writes the pid): records ours again
    /// and decides on a fresh read. (Still not ours: the message is tried again
    /// later, the Job staying suspended.)
    async fn record_again(
        &self,
        due: &DueRun,
        pid: &InfrastructurePid,
        deliveries: u64,
    ) -> Step<Release> {
        tracing::warn!(flow_run_id = %due.key.flow_run_id, %pid, "the run's infrastructure_pid was overwritten under our claim; recording ours again");
        self.write_pid(due, pid, deliveries).await?;
        let run = self.read(due.key, deliveries).await?;
        Ok(claim::release(&due.key, pid, run.as_ref()))
    }

    /// Proposes `Crashed`. An ABORT (the run is already final) is fine.
    pub async fn crash(&self, due: &DueRun, deliveries: u64, message: String) -> Outcome {
        tracing::warn!(flow_run_id = %due.key.flow_run_id, %message, "crashing flow run");
        let proposal = StateCreate::crashed(message.clone());
        match self
            .prefect
            .set_flow_run_state(due.key.flow_run_id, &proposal, false)
            .await
        {
            Ok(_) => Outcome::Crashed(message),
            Err(e) if e.is_not_found() => Outcome::Skipped(SkipReason::RunDeleted),
            Err(e) => retry(deliveries, format!("reporting the crash ({message}): {e}")),
        }
    }
}

/// How long after its scheduled time the run's Job came (zero when early).
/// Runs `claim` and `reads` together: the claim's failure is returned as
/// soon as it is known (the reads dropped); once the claim succeeded, the
/// reads are awaited.
async fn claim_beside<C, R>(
    claim: impl std::future::Future<Output = Step<C>>,
    reads: impl std::future::Future<Output = R>,
) -> Step<(C, R)> {
    tokio::pin!(claim, reads);
    let mut read = None;
    let claimed = loop {
        tokio::select! {
            claimed = &mut claim => break claimed?,
            done = &mut reads, if read.is_none() => read = Some(done),
        }
    };
    let read = match read {
        Some(read) => read,
        None => reads.await,
    };
    Ok((claimed, read))
}

fn late_by(run: &FlowRun) -> Duration {
    run.next_scheduled_start_time
        .or(run.expected_start_time)
        .and_then(|due| (chrono::Utc::now() - due).to_std().ok())
        .unwrap_or_default()
}

/// Backoff for a message delivered `deliveries` times: 1 s doubling to 60 s.
pub fn backoff(deliveries: u64) -> Duration {
    let exponent = deliveries.saturating_sub(1).min(6) as u32;
    Duration::from_secs((1u64 << exponent).min(60))
}

/// How long after the read began its claim may still be sent and answered:
/// half the ack wait. Prefect *accepts* `Pending` on a Completed, Failed or
/// Crashed run, and its duplicate-transition rule only recognises our claim
/// while it is the run's current state. A claim sent late — an HTTP retry
/// after the first attempt committed and lost its answer, or a proposal made
/// on a read from before a pause (SIGSTOP) long enough for the message to be
/// redelivered, resumed by another replica and its flow run to finish — would
/// reopen a finished run. So the claim is sent once (no HTTP retries: a
/// failure is redelivered and decided again from a fresh read), only within
/// this window of the read's start, and cut at its end. Another replica gets
/// the message only after the ack wait passed without this one's progress
/// acks, so within half of it no other replica can have resumed it. (A
/// request the network holds past that can still land late.)
pub fn claim_window(ack_wait: Duration) -> Duration {
    ack_wait / 2
}

fn retry(deliveries: u64, error: String) -> Outcome {
    Outcome::Retry {
        after: backoff(deliveries),
        error,
    }
}

/// The pid a resumed claim keeps: the recorded one, when it names a Job of
/// this very submission.
fn resumed_pid(key: &SubmissionKey, run: &FlowRun, resumed: bool) -> Option<InfrastructurePid> {
    let recorded = run
        .infrastructure_pid
        .as_deref()
        .and_then(InfrastructurePid::parse)?;
    (resumed && key.named(&recorded.job_name)).then_some(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_must_be_answered_before_another_replica_can_have_the_message() {
        assert_eq!(
            claim_window(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert!(claim_window(Duration::from_secs(5)) < Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_claim_does_not_wait_for_the_reads() {
        let claim = async { Err::<bool, _>(Outcome::Skipped(SkipReason::RunDeleted)) };
        let reads = tokio::time::sleep(Duration::from_secs(3600));
        let started = tokio::time::Instant::now();
        let result = claim_beside(claim, reads).await;
        assert!(matches!(
            result,
            Err(Outcome::Skipped(SkipReason::RunDeleted))
        ));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_waits_for_reads_still_under_way_and_keeps_reads_done_first() {
        let slow_claim = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<bool, Outcome>(true)
        };
        let fast_reads = async { 7 };
        let result = claim_beside(slow_claim, fast_reads).await;
        assert!(matches!(result, Ok((true, 7))));
        let fast_claim = async { Ok::<bool, Outcome>(false) };
        let slow_reads = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            8
        };
        let started = tokio::time::Instant::now();
        let result = claim_beside(fast_claim, slow_reads).await;
        assert!(matches!(result, Ok((false, 8))));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn backoff_doubles_and_caps_at_a_minute() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(7), Duration::from_secs(60));
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }
}
