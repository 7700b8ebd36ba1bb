//! Cancellation (leader only): every `--cancel-poll-seconds`, the runs of the pool in
//! `CANCELLING` are read from Prefect; each one's Job (from its `infrastructure_pid`,
//! `<namespace>:<job name>`), and any other Job of the run the watchers know, is
//! deleted with Foreground propagation (404: already gone), then the run is set
//! `Cancelled` with `force=true` and a message saying what was deleted, unless a fresh
//! read shows the flow ended on its own meanwhile (`Completed`, `Failed`: kept). A Job whose
//! creation was still in flight lands after this; the evaluator deletes it then
//! (see `reporter::jobs_to_withdraw`), and the dispatcher never releases it. A run without a pid (cancelled before its Job was recorded) is just
//! set `Cancelled`. Because it polls Prefect's state, it also catches runs cancelled
//! while no reporter was leading. A deletion that fails leaves the run `CANCELLING`
//! for the next poll.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use service_runtime::kubernetes::deadline;

use super::metrics::ReporterMetrics;
use super::store::SharedStore;
use kube::Api;
use prefect_client::{FlowRun, FlowRunFilter, PrefectClient, StateCreate, StateType};
use tokio_util::sync::CancellationToken;

use super::lease::Leadership;
use uuid::Uuid;

use flow_run_proto::kubernetes::{CLAIM_ANNOTATION, FLOW_RUN_ID_LABEL, WORK_POOL_NAME_LABEL};
pub use flow_run_proto::InfrastructurePid;
use flow_run_proto::SubmissionKey;

/// Runs cancelled at once.
const CANCELLATIONS_IN_FLIGHT: usize = 8;
/// Grace period of the deleted Job's pods (the Python worker's).
const DELETE_GRACE_SECONDS: u32 = 30;

/// What was done to a cancelled run's infrastructure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Teardown {
    Deleted(InfrastructurePid),
    AlreadyGone(InfrastructurePid),
    KeptByConfiguration(InfrastructurePid),
    NoJobRecorded,
    UnreadablePid(String),
    /// The pid names a Job that is not this run's (no claim of ours for it, another
    /// run's or pool's): never deleted.
    NotThisRunsJob(InfrastructurePid),
}

impl Teardown {
    /// The `Cancelled` state message.
    pub fn message(&self) -> String {
        match self {
            Teardown::Deleted(job) => format!(
                "Flow run cancelled: the reporter deleted Kubernetes Job {}/{} and its pods.",
                job.namespace, job.job_name
            ),
            Teardown::AlreadyGone(job) => format!(
                "Flow run cancelled: Kubernetes Job {}/{} was already gone.",
                job.namespace, job.job_name
            ),
            Teardown::KeptByConfiguration(job) => format!(
                "Flow run cancelled; Kubernetes Job {}/{} was not deleted (job deletion is disabled).",
                job.namespace, job.job_name
            ),
            Teardown::NoJobRecorded => {
                "Flow run cancelled before a Kubernetes Job was recorded for it.".to_owned()
            }
            Teardown::UnreadablePid(pid) => format!(
                "Flow run cancelled; its infrastructure_pid {pid:?} names no Kubernetes Job, so nothing was deleted."
            ),
            Teardown::NotThisRunsJob(job) => format!(
                "Flow run cancelled; its infrastructure_pid names Kubernetes Job {}/{}, which this agent did not create for this run, so it was not deleted.",
                job.namespace, job.job_name
            ),
        }
    }
}

/// The cancellation poller's settings.
#[derive(Clone)]
pub struct Canceller {
    pub prefect: PrefectClient,
    pub store: SharedStore,
    /// The pool's name as our Jobs' pool label spells it.
    pub work_pool_label: String,
    pub metrics: ReporterMetrics,
    pub kube: kube::Client,
    pub work_pool: String,
    pub delete_jobs: bool,
    pub interval: Duration,
    pub leadership: Leadership,
}

impl Canceller {
    /// Polls until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if self.leadership.is_leading() {
                self.poll_once().await;
            }
        }
    }

    /// Cancels every run of the pool that is CANCELLING now.
    pub async fn poll_once(&self) {
        let filter = FlowRunFilter::default()
            .with_work_pool_names(vec![self.work_pool.clone()])
            .with_state_types(vec![StateType::Cancelling]);
        let runs = match self.prefect.read_all_flow_runs(&filter).await {
            Ok(runs) => runs,
            Err(error) => {
                tracing::warn!(%error, "reading cancelling runs failed");
                return;
            }
        };
        futures::stream::iter(runs)
            .for_each_concurrent(CANCELLATIONS_IN_FLIGHT, |run| async move {
                self.cancel(&run).await;
            })
            .await;
    }

    async fn cancel(&self, run: &FlowRun) {
        let teardown = match self.tear_down(run).await {
            Ok(teardown) => teardown,
            Err(error) => {
                tracing::warn!(%error, flow_run_id = %run.id, "deleting the cancelled run's Job failed; retrying at the next poll");
                return;
            }
        };
        if !self.still_to_cancel(run).await || !self.leadership.is_leading() {
            return;
        }
        let cancelling_state = run.state.as_ref().map(|state| state.id).unwrap_or_default();
        let state = StateCreate::cancelled(teardown.message())
            .with_transition_id(cancel_transition_id(run.id, cancelling_state));
        match self.prefect.set_flow_run_state(run.id, &state, true).await {
            Ok(result) => {
                tracing::info!(flow_run_id = %run.id, status = ?result.status, message = %teardown.message(), "cancelled")
            }
            Err(error) if error.is_not_found() => {}
            Err(error) => {
                tracing::warn!(%error, flow_run_id = %run.id, "setting Cancelled failed; retrying at the next poll")
            }
        }
    }

    /// Reads the run again after its Job was deleted: `Cancelled` is forced (as
    /// Prefect's own cancellation does, over the `Crashed` a killed engine reports),
    /// so it must not overwrite a `Completed` or `Failed` the flow reached meanwhile.
    async fn still_to_cancel(&self, polled: &FlowRun) -> bool {
        match self.prefect.read_flow_run(polled.id).await {
            Ok(fresh) if may_force_cancelled(&fresh) => true,
            Ok(fresh) => {
                let state = fresh.state.as_ref().map(|state| state.state_type);
                tracing::info!(flow_run_id = %polled.id, ?state,
                    "the run finished on its own while being cancelled; its final state is kept");
                false
            }
            Err(error) if error.is_not_found() => false,
            Err(error) => {
                tracing::warn!(%error, flow_run_id = %polled.id, "reading the cancelled run again failed; retrying at the next poll");
                false
            }
        }
    }

    async fn tear_down(&self, run: &FlowRun) -> Result<Teardown, kube::Error> {
        let Some(pid) = run
            .infrastructure_pid
            .as_deref()
            .filter(|pid| !pid.is_empty())
        else {
            return Ok(Teardown::NoJobRecorded);
        };
        let Some(job) = InfrastructurePid::parse(pid) else {
            return Ok(Teardown::UnreadablePid(pid.to_owned()));
        };
        if !self.delete_jobs {
            return Ok(Teardown::KeptByConfiguration(job));
        }
        self.delete_other_jobs(run.id, &job).await?;
        let api: Api<Job> = Api::namespaced(self.kube.clone(), &job.namespace);
        let Some(found) = deadline(api.get_opt(&job.job_name)).await? else {
            return Ok(Teardown::AlreadyGone(job));
        };
        if !is_runs_job(&found, run.id, &self.work_pool_label) {
            tracing::warn!(flow_run_id = %run.id, namespace = %job.namespace, job = %job.job_name,
                "the cancelled run's pid names a Job this agent did not create for it; not deleting it");
            return Ok(Teardown::NotThisRunsJob(job));
        }
        let uid = found.metadata.uid.as_deref();
        match deadline(api.delete(&job.job_name, &delete_params(uid))).await {
            Ok(_) => {
                self.metrics.job_deleted("cancelled");
                tracing::info!(flow_run_id = %run.id, namespace = %job.namespace, job = %job.job_name, "deleted the cancelled run's Job");
                Ok(Teardown::Deleted(job))
            }
            Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => {
                Ok(Teardown::AlreadyGone(job))
            }
            Err(error) => Err(error),
        }
    }
}

/// `Cancelled` may be forced unless the flow ended on its own (`Completed`,
/// `Failed`) or the run is already `Cancelled`.
fn may_force_cancelled(run: &FlowRun) -> bool {
    !run.state.as_ref().is_some_and(|state| {
        matches!(
            state.state_type,
            StateType::Completed | StateType::Failed | StateType::Cancelled
        )
    })
}

/// A Job this agent created for the run, in this pool: it carries the run's id
/// label, the pool's label and a claim annotation naming the run.
fn is_runs_job(job: &Job, flow_run_id: Uuid, work_pool_label: &str) -> bool {
    let label = |key: &str| job.metadata.labels.as_ref().and_then(|l| l.get(key));
    let claim = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLAIM_ANNOTATION))
        .and_then(|claim| SubmissionKey::parse(claim));
    label(FLOW_RUN_ID_LABEL).map(String::as_str) == Some(flow_run_id.to_string().as_str())
        && label(WORK_POOL_NAME_LABEL).map(String::as_str) == Some(work_pool_label)
        && claim.is_some_and(|claim| claim.flow_run_id == flow_run_id)
}

impl Canceller {
    /// Deletes the run's other live Jobs the watchers know (a Job in another namespace
    /// after the run's template changed, say), each only if it is still that Job.
    async fn delete_other_jobs(
        &self,
        flow_run_id: Uuid,
        pid: &InfrastructurePid,
    ) -> Result<(), kube::Error> {
        let (jobs, _) = self.store.read(|store| store.snapshot(flow_run_id));
        let others = jobs.iter().filter(|job| {
            job.gone_at().is_none()
                && job.is_ours(&self.work_pool_label)
                && !job.never_observed
                && !(*job.namespace == pid.namespace && *job.name == pid.job_name)
        });
        for job in others {
            let api: Api<Job> = Api::namespaced(self.kube.clone(), &job.namespace);
            match deadline(api.delete(&job.name, &delete_params(Some(&job.uid)))).await {
                Ok(_) => {
                    self.metrics.job_deleted("cancelled");
                    tracing::info!(flow_run_id = %flow_run_id, namespace = %job.namespace, job = %job.name, "deleted another Job of the cancelled run")
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Foreground deletion with the Python worker's grace period, optionally only of the
/// Job with this uid.
fn delete_params(uid: Option<&str>) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(DELETE_GRACE_SECONDS),
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// The `Cancelled` proposal's transition id: one per CANCELLING state of the run.
pub fn cancel_transition_id(flow_run_id: Uuid, cancelling_state_id: Uuid) -> Uuid {
    super::evaluate::transition_id(flow_run_id, &cancelling_state_id.to_string(), "cancelled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_messages_say_what_was_deleted() {
        let job = InfrastructurePid::parse("prefect:etl-1").unwrap();
        assert_eq!(
            Teardown::Deleted(job.clone()).message(),
            "Flow run cancelled: the reporter deleted Kubernetes Job prefect/etl-1 and its pods."
        );
        assert!(Teardown::AlreadyGone(job.clone())
            .message()
            .contains("already gone"));
        assert!(Teardown::KeptByConfiguration(job)
            .message()
            .contains("not deleted"));
        assert!(Teardown::NoJobRecorded
            .message()
            .starts_with("Flow run cancelled"));
    }

    fn run_in(state_type: StateType) -> FlowRun {
        let mut run: FlowRun = serde_json::from_value(serde_json::json!({
            "id": Uuid::from_u128(1), "name": "r", "flow_id": Uuid::from_u128(2)
        }))
        .unwrap();
        run.state = Some(
            serde_json::from_value(serde_json::json!({
                "id": Uuid::from_u128(3), "type": state_type, "name": "s"
            }))
            .unwrap(),
        );
        run
    }

    #[test]
    fn a_run_that_finished_on_its_own_while_being_cancelled_keeps_its_final_state() {
        for kept in [
            StateType::Completed,
            StateType::Failed,
            StateType::Cancelled,
        ] {
            assert!(!may_force_cancelled(&run_in(kept)), "{kept:?}");
        }
        // The engine of a deleted pod reports Crashed: Prefect's cancellation forces
        // Cancelled over it, and so do we.
        for forced in [
            StateType::Cancelling,
            StateType::Crashed,
            StateType::Running,
        ] {
            assert!(may_force_cancelled(&run_in(forced)), "{forced:?}");
        }
    }

    #[test]
    fn a_new_cancellation_of_the_same_run_gets_a_new_transition_id() {
        let run = Uuid::from_u128(1);
        assert_eq!(
            cancel_transition_id(run, Uuid::from_u128(2)),
            cancel_transition_id(run, Uuid::from_u128(2))
        );
        assert_ne!(
            cancel_transition_id(run, Uuid::from_u128(2)),
            cancel_transition_id(run, Uuid::from_u128(3))
        );
    }
}
