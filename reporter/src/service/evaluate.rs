//! The evaluator (leader only): whenever a run's Jobs or pods change, a
//! [`Decision::WaitUntil`] instant passes, or the reconcile period ends, it reads the
//! runs' states from Prefect in batches, calls [`decide()`] and acts:
//!
//! - `InfrastructurePending`: `PENDING` named `InfrastructurePending`, `force=false`,
//!   only for a run that is `PENDING` (a `SCHEDULED` run with a pending pod is a
//!   rescheduled run whose old pod is still around: proposing `PENDING` would claim it
//!   behind the dispatcher's back);
//! - `Crashed`: reads the crashed pod's log ([`super::pod_logs`]), renders
//!   [`crash_message`] with its end and proposes `CRASHED`, `force=false`; once Prefect
//!   accepted it, the log's lines go to the run's logs.
//!
//! It also deletes the Jobs [`jobs_to_withdraw`] names (uid precondition), each with a
//! line in the run's logs saying why.
//!
//! Every proposal carries a transition id derived from (run, Job uid, kind), and the
//! evaluator remembers what it proposed per run, so a retried or repeated proposal is
//! never a second state: Prefect answers a re-sent transition id with REJECT, a late
//! `Crashed` on a final run with ABORT, and a second `InfrastructurePending` with ABORT.
//!
//! Runs of other work pools (their Jobs carry the same label when pools share a
//! cluster) are left to their own reporters.
//!
//! Reconciliation also looks for runs of the pool that are `PENDING`/`RUNNING` with an
//! `infrastructure_pid` naming a Job the cluster does not have (deleted while no reporter
//! watched): after a GET confirms it, such a Job becomes a deleted tombstone, and the run
//! is crashed like any run whose Job was deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::Api;
use prefect_client::{
    FlowRun, FlowRunFilter, PrefectClient, PrefectError, SetStateStatus, StateCreate,
};
use service_runtime::kubernetes::{deadline, is_not_found};
use tokio_util::sync::CancellationToken;

use super::late_pending;

use super::lease::Leadership;
use uuid::Uuid;

use super::cancel::InfrastructurePid;
use super::metrics::ReporterMetrics;
use super::pod_logs::{self, CrashLog};
use super::store::SharedStore;
use crate::{
    crash_message, decide, jobs_to_withdraw, CrashCause, CrashReport, Decision, DecisionInput,
    DecisionSettings, FlowRunState, JobView, StateType, Timestamp, WithdrawReason,
    INFRASTRUCTURE_PENDING, INFRASTRUCTURE_PENDING_MESSAGE,
};
use service_runtime::health::Health;

/// Runs read from Prefect per call.
const READ_BATCH: usize = 200;
/// Proposals (with their log reads) in flight at once.
const PROPOSALS_IN_FLIGHT: usize = 8;
/// Lines of a crashed pod's log read by default (the Python observer's).
pub const DEFAULT_CRASH_LOG_LINES: u32 = 500;
/// Logger name of the evaluator's own lines in a run's logs.
pub const REPORTER_LOGGER: &str = "prefect_k8s.reporter";
/// After a change, wait this long for more changes so a burst is read in one batch.
const COALESCE: Duration = Duration::from_millis(100);
/// An `InfrastructurePending` proposal not answered within this is given up.
const INFRASTRUCTURE_PENDING_DEADLINE: Duration = Duration::from_secs(5);
/// Retry delay after Prefect could not be reached.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// What the evaluator proposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalKind {
    InfrastructurePending,
    Crashed,
    /// Put back the state that the run's current `InfrastructurePending` (this
    /// transition id, ours) replaced, if it landed late ([`late_pending`]).
    Restore {
        infrastructure_pending: Uuid,
    },
}

impl ProposalKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::InfrastructurePending => "infrastructure-pending",
            Self::Crashed => "crashed",
            Self::Restore { .. } => "restore",
        }
    }
}

/// Namespace of the reporter's transition ids (a fixed random UUID).
const REPORTER_TRANSITION_NAMESPACE: Uuid =
    Uuid::from_u128(0x3f0c_58a1_7d2e_4b6f_a4c9_1e85_d7b2_6c03);

/// The transition id of a proposal about `job` of `flow_run_id`: the same in every
/// replica and after every restart.
pub fn transition_id(flow_run_id: Uuid, job_uid: &str, kind: &str) -> Uuid {
    let name = format!("{flow_run_id}/{job_uid}/{kind}");
    Uuid::new_v5(&REPORTER_TRANSITION_NAMESPACE, name.as_bytes())
}

/// The decision core's view of a Prefect run state; `None` when the run has none.
pub fn run_state_of(run: &FlowRun) -> Option<FlowRunState> {
    let state_type = run
        .state
        .as_ref()
        .map(|state| state.state_type)
        .or(run.state_type)?;
    let state_type: StateType = state_type.as_str().parse().ok()?;
    let name = run
        .state
        .as_ref()
        .and_then(|state| state.name.clone())
        .or_else(|| run.state_name.clone())
        .unwrap_or_default();
    let since = run.state.as_ref().and_then(|state| state.timestamp);
    let transition_id = run
        .state
        .as_ref()
        .and_then(|state| state.state_details.transition_id);
    let pid = run
        .infrastructure_pid
        .as_deref()
        .and_then(InfrastructurePid::parse);
    Some(
        FlowRunState::new(state_type, &name)
            .since(since)
            .with_pid(pid)
            .with_transition_id(transition_id),
    )
}

/// One proposal to send.
#[derive(Debug)]
struct Proposal {
    flow_run_id: Uuid,
    kind: ProposalKind,
    transition_id: Uuid,
    report: Option<CrashReport>,
}

/// How a proposal went.
enum Outcome {
    /// Prefect answered (accepted, rejected or aborted): never send it again.
    Answered,
    /// Ask again later.
    RetryAfter(Duration),
    /// The run no longer exists.
    RunGone,
    /// Not sent: this replica is no longer the leader.
    NotLeader,
}

/// What the evaluator needs.
pub struct Evaluator {
    pub store: SharedStore,
    pub prefect: PrefectClient,
    /// The same client without retries, for proposals that must not land late.
    prefect_once: PrefectClient,
    pub kube: kube::Client,
    pub settings: DecisionSettings,
    pub work_pool: String,
    /// The pool's name as our Jobs' pool label spells it.
    work_pool_label: String,
    /// Only Jobs of this namespace are looked for (all when `None`).
    pub namespace: Option<String>,
    pub reconcile_interval: Duration,
    /// Delete Jobs that must not run ([`jobs_to_withdraw`]); off with `--disable-job-deletion`.
    pub delete_jobs: bool,
    /// Lines of a crashed pod's log read (`--crash-log-lines`); 0 reads none.
    pub crash_log_lines: u32,
    metrics: ReporterMetrics,
    /// Beaten at every turn of the loop (liveness).
    health: Health,
    pub leadership: Leadership,
    /// Instants at which runs must be evaluated again.
    timers: BTreeMap<Timestamp, HashSet<Uuid>>,
    /// Transition ids proposed per run (never proposed twice).
    proposed: HashMap<Uuid, HashSet<Uuid>>,
    /// Runs found final whose Jobs still exist (until the TTL controller or the sweep
    /// removes them): the periodic reconcile skips them; a change to their Jobs or
    /// pods (e.g. a retry's new Job) still gets them evaluated.
    settled: HashSet<Uuid>,
}

impl Evaluator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: SharedStore,
        prefect: PrefectClient,
        kube: kube::Client,
        settings: DecisionSettings,
        work_pool: String,
        namespace: Option<String>,
        reconcile_interval: Duration,
        delete_jobs: bool,
        leadership: Leadership,
    ) -> Self {
        Evaluator {
            store,
            prefect_once: prefect.with_retry(prefect_client::RetryPolicy::no_retries()),
            prefect,
            kube,
            settings,
            work_pool_label: job_manifest::slugify_label_value(&work_pool),
            work_pool,
            namespace,
            reconcile_interval,
            delete_jobs,
            crash_log_lines: DEFAULT_CRASH_LOG_LINES,
            leadership,
            timers: BTreeMap::new(),
            proposed: HashMap::new(),
            settled: HashSet::new(),
            metrics: ReporterMetrics::detached(),
            health: Health::detached(),
        }
    }

    /// Reads this many lines of a crashed pod's log (0: none).
    pub fn with_crash_log_lines(mut self, lines: u32) -> Self {
        self.crash_log_lines = lines;
        self
    }

    /// Counts proposals and deletions in `metrics`; beats `health` each turn.
    pub fn with_telemetry(mut self, metrics: ReporterMetrics, health: Health) -> Self {
        self.metrics = metrics;
        self.health = health;
        self
    }

    fn is_leader(&self) -> bool {
        self.leadership.is_leading()
    }

    /// Evaluates until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut reconcile = tokio::time::interval(self.reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile_due = false;
        // The search for vanished Jobs reads every PENDING/RUNNING run of the pool: done
        // when this replica starts leading and every tenth reconcile after that.
        let mut reconciles_until_missing_job_search = 0u32;
        loop {
            let next_timer = self.timers.keys().next().copied();
            let sleep_for =
                next_timer.map(|at| (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.store.changed() => tokio::time::sleep(COALESCE).await,
                _ = tokio::time::sleep(sleep_for.unwrap_or(Duration::from_secs(3600))), if sleep_for.is_some() => {}
                _ = reconcile.tick() => reconcile_due = true,
                changed = self.leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    reconcile_due = true;
                    reconciles_until_missing_job_search = 0;
                }
            }
            self.health.beat();
            if !self.is_leader() || !self.store.is_synced() {
                continue;
            }
            let mut runs: HashSet<Uuid> = self
                .store
                .update(|store| store.take_dirty())
                .into_iter()
                .collect();
            let now = chrono::Utc::now();
            while let Some(entry) = self.timers.first_entry() {
                if *entry.key() > now {
                    break;
                }
                runs.extend(entry.remove());
            }
            if reconcile_due {
                reconcile_due = false;
                if reconciles_until_missing_job_search == 0 {
                    self.find_missing_jobs().await;
                    reconciles_until_missing_job_search = 10;
                }
                reconciles_until_missing_job_search -= 1;
                let known: HashSet<Uuid> = self
                    .store
                    .read(|store| store.run_ids())
                    .into_iter()
                    .collect();
                self.settled.retain(|run| known.contains(run));
                runs.extend(known.into_iter().filter(|run| !self.settled.contains(run)));
                runs.extend(self.store.update(|store| store.take_dirty()));
            }
            if !runs.is_empty() {
                self.evaluate(runs.into_iter().collect()).await;
            }
        }
    }

    fn wake_at(&mut self, at: Timestamp, flow_run_id: Uuid) {
        self.timers.entry(at).or_default().insert(flow_run_id);
    }

    fn wake_after(&mut self, delay: Duration, flow_run_id: Uuid) {
        let at = chrono::Utc::now()
            + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::seconds(5));
        self.wake_at(at, flow_run_id);
    }

    /// Reads the runs' states, decides, proposes.
    async fn evaluate(&mut self, mut runs: Vec<Uuid>) {
        self.store
            .read(|store| runs.retain(|run| !store.is_of_another_pool(*run)));
        for batch in runs.chunks(READ_BATCH) {
            let read = match self.prefect.read_flow_runs_by_ids(batch).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(%error, runs = batch.len(), "reading flow runs failed; retrying");
                    for run in batch {
                        self.wake_after(RETRY_AFTER_ERROR, *run);
                    }
                    continue;
                }
            };
            let states: HashMap<Uuid, &FlowRun> = read.iter().map(|run| (run.id, run)).collect();
            let now = chrono::Utc::now();
            let mut proposals = Vec::new();
            let mut withdrawals = Vec::new();
            for &flow_run_id in batch {
                let Some(run) = states.get(&flow_run_id) else {
                    // The run was deleted from Prefect: nothing to report, ever. A Job of it
                    // that never started (still suspended) is withdrawn.
                    withdrawals.extend(self.unstarted_jobs(flow_run_id));
                    self.forget(flow_run_id);
                    self.settled.insert(flow_run_id);
                    continue;
                };
                let ours = run
                    .work_pool_name
                    .as_deref()
                    .is_none_or(|pool| pool == self.work_pool);
                self.store
                    .update(|store| store.set_of_our_pool(flow_run_id, ours));
                if !ours {
                    // Another pool's reporter handles it.
                    self.settled.insert(flow_run_id);
                    continue;
                }
                let Some(state) = run_state_of(run) else {
                    continue;
                };
                withdrawals.extend(self.withdrawals(flow_run_id, &state));
                if let Some(proposal) = self.decide_one(flow_run_id, &state, now) {
                    proposals.push(proposal);
                }
            }
            self.send(proposals).await;
            self.withdraw(withdrawals).await;
        }
    }

    /// The run's Jobs that must be deleted (see [`jobs_to_withdraw`]), and why.
    fn withdrawals(
        &self,
        flow_run_id: Uuid,
        state: &FlowRunState,
    ) -> Vec<(JobView, WithdrawReason)> {
        if !self.delete_jobs {
            return Vec::new();
        }
        let (jobs, pods) = self.store.read(|store| store.snapshot(flow_run_id));
        jobs_to_withdraw(state, &jobs, &pods)
            .into_iter()
            .filter(|withdrawal| withdrawal.job.is_ours(&self.work_pool_label))
            .map(|withdrawal| (withdrawal.job.clone(), withdrawal.reason))
            .collect()
    }

    /// The run's Jobs that were created but never released (suspended).
    fn unstarted_jobs(&self, flow_run_id: Uuid) -> Vec<(JobView, WithdrawReason)> {
        if !self.delete_jobs {
            return Vec::new();
        }
        let (jobs, _) = self.store.read(|store| store.snapshot(flow_run_id));
        jobs.into_iter()
            .filter(|job| job.is_suspended() && job.gone_at().is_none() && !job.never_observed)
            .filter(|job| job.is_ours(&self.work_pool_label))
            .map(|job| (job, WithdrawReason::RunDeleted))
            .collect()
    }

    /// Deletes Jobs of final runs that must not run (uid precondition: only the Job
    /// that was judged), each with a line in the run's logs. A failure is retried at
    /// the next evaluation of the run.
    async fn withdraw(&mut self, jobs: Vec<(JobView, WithdrawReason)>) {
        for (job, reason) in jobs {
            if !self.is_leader() {
                return;
            }
            let api: Api<Job> = Api::namespaced(self.kube.clone(), &job.namespace);
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(Preconditions {
                    uid: Some(job.uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match deadline(api.delete(&job.name, &params)).await {
                Ok(_) => {
                    self.metrics.job_deleted("withdrawn");
                    tracing::info!(flow_run_id = %job.flow_run_id, namespace = %job.namespace,
                        job = %job.name, ?reason, "deleted a Job that must not run");
                    self.log_to_run(job.flow_run_id, reason.log_message(&job))
                        .await;
                }
                // Gone already, or a new Job of that name (the uid precondition).
                Err(error) if is_not_found(&error) || is_conflict(&error) => {}
                Err(error) => {
                    tracing::warn!(%error, job = %job.name, "deleting a final run's Job failed; will retry");
                    self.wake_after(RETRY_AFTER_ERROR, job.flow_run_id);
                }
            }
        }
    }

    /// One line of the reporter's own in the run's logs (best effort).
    async fn log_to_run(&self, flow_run_id: Uuid, message: String) {
        let line =
            prefect_client::LogCreate::for_flow_run(flow_run_id, REPORTER_LOGGER, 30, message);
        if let Err(error) = self.prefect.create_logs(&[line]).await {
            tracing::warn!(%error, %flow_run_id, "writing to the run's logs failed");
        }
    }

    fn forget(&mut self, flow_run_id: Uuid) {
        self.proposed.remove(&flow_run_id);
        self.store
            .update(|store| store.prune_tombstones(flow_run_id));
    }

    fn decide_one(
        &mut self,
        flow_run_id: Uuid,
        state: &FlowRunState,
        now: Timestamp,
    ) -> Option<Proposal> {
        let (jobs, pods) = self.store.read(|store| store.snapshot(flow_run_id));
        if jobs.is_empty() && pods.is_empty() {
            self.proposed.remove(&flow_run_id);
            self.settled.remove(&flow_run_id);
            return None;
        }
        if state.state_type.is_final() {
            self.settled.insert(flow_run_id);
        } else {
            self.settled.remove(&flow_run_id);
        }
        let already_sent = self.proposed.get(&flow_run_id);
        let input = DecisionInput {
            run_state: state,
            jobs: &jobs,
            pods: &pods,
            now,
            settings: &self.settings,
        };
        match next_step(flow_run_id, &input, already_sent) {
            NextStep::Nothing => None,
            NextStep::Settled => {
                self.forget(flow_run_id);
                None
            }
            NextStep::WakeAt(at) => {
                self.wake_at(at, flow_run_id);
                None
            }
            NextStep::Propose(proposal) => Some(*proposal),
        }
    }

    async fn send(&mut self, proposals: Vec<Proposal>) {
        if proposals.is_empty() {
            return;
        }
        let outcomes: Vec<(Uuid, Uuid, Outcome)> = futures::stream::iter(proposals)
            .map(|proposal| {
                let context = ProposalContext {
                    prefect: match proposal.kind {
                        ProposalKind::InfrastructurePending | ProposalKind::Restore { .. } => {
                            &self.prefect_once
                        }
                        ProposalKind::Crashed => &self.prefect,
                    },
                    kube: &self.kube,
                    leadership: &self.leadership,
                    crash_log_lines: self.crash_log_lines,
                    metrics: &self.metrics,
                };
                async move {
                    let outcome = propose(&context, &proposal).await;
                    (proposal.flow_run_id, proposal.transition_id, outcome)
                }
            })
            .buffer_unordered(PROPOSALS_IN_FLIGHT)
            .collect()
            .await;
        for (flow_run_id, transition_id, outcome) in outcomes {
            match outcome {
                Outcome::Answered => {
                    self.proposed
                        .entry(flow_run_id)
                        .or_default()
                        .insert(transition_id);
                    // The run's state changed (or is known): look again right away.
                    self.store.update(|store| store.mark_dirty(flow_run_id));
                }
                Outcome::RetryAfter(delay) => self.wake_after(delay, flow_run_id),
                Outcome::RunGone => self.forget(flow_run_id),
                Outcome::NotLeader => self.store.update(|store| store.mark_dirty(flow_run_id)),
            }
        }
    }

    /// Runs of the pool that are PENDING/RUNNING with a pid naming a Job the store does
    /// not know: confirmed missing with a GET, they get a deleted tombstone.
    async fn find_missing_jobs(&mut self) {
        let filter = FlowRunFilter::default()
            .with_work_pool_names(vec![self.work_pool.clone()])
            .with_state_types(vec![
                prefect_client::StateType::Pending,
                prefect_client::StateType::Running,
            ]);
        let runs = match self.prefect.read_all_flow_runs(&filter).await {
            Ok(runs) => runs,
            Err(error) => {
                tracing::warn!(%error, "listing the pool's pending and running runs failed");
                return;
            }
        };
        let now = chrono::Utc::now();
        let grace = chrono::TimeDelta::from_std(self.settings.submission_grace)
            .unwrap_or(chrono::TimeDelta::MAX);
        let mut lost_claims = Vec::new();
        for run in runs {
            let Some(job) = run
                .infrastructure_pid
                .as_deref()
                .and_then(InfrastructurePid::parse)
            else {
                lost_claims.extend(self.lost_claim(&run, now, grace));
                continue;
            };
            if self
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != job.namespace)
            {
                continue;
            }
            if self.pid_of_earlier_submission(&run, &job) {
                // Claimed again, and the new claim never recorded its own pid.
                lost_claims.extend(self.lost_claim(&run, now, grace));
                continue;
            }
            let since = run.state.as_ref().and_then(|state| state.timestamp);
            if since.is_none_or(|since| now - since < grace) {
                continue;
            }
            if self
                .store
                .read(|store| store.has_job_named(run.id, &job.namespace, &job.job_name))
            {
                continue;
            }
            let api: Api<Job> = Api::namespaced(self.kube.clone(), &job.namespace);
            match deadline(api.get_opt(&job.job_name)).await {
                Ok(None) => {
                    tracing::info!(flow_run_id = %run.id, namespace = %job.namespace, job = %job.job_name,
                        "the run's Job does not exist; treating it as missing");
                    self.store.update(|store| {
                        store.insert_missing_job(run.id, &job.namespace, &job.job_name, now)
                    });
                }
                Ok(Some(found)) => {
                    // Watch lag, or the Job lacks our label: use what the GET shows.
                    if let Some(view) =
                        JobView::from_job(&found).filter(|view| view.flow_run_id == run.id)
                    {
                        self.store.update(|store| store.apply_job(view));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, job = %job.job_name, "looking up a run's Job failed")
                }
            }
        }
        self.send(lost_claims).await;
    }

    /// The run's pid names a Job the store knows of an earlier claim than the run's
    /// current one (the run was rescheduled or retried and claimed again).
    fn pid_of_earlier_submission(&self, run: &FlowRun, pid: &InfrastructurePid) -> bool {
        let Some(state) = run_state_of(run) else {
            return false;
        };
        self.store.read(|store| {
            store
                .claim_of_job_named(run.id, &pid.namespace, &pid.job_name)
                .is_some_and(|claim| claim.is_some_and(|ours| state.is_claim_other_than(ours)))
        })
    }

    /// A run `PENDING` since longer than the submission grace with no Job of its
    /// current claim (no pid, or a pid of an earlier submission's Job): its
    /// submission was lost (the dispatcher stops trying after its submission timeout).
    fn lost_claim(
        &self,
        run: &FlowRun,
        now: Timestamp,
        grace: chrono::TimeDelta,
    ) -> Option<Proposal> {
        let state = run.state.as_ref()?;
        // A dispatcher's claim is named `Pending`; `InfrastructurePending` carries
        // the reporter's own transition id.
        let claim = state
            .state_details
            .transition_id
            .filter(|_| state.name.as_deref() == Some("Pending"));
        if state.state_type != prefect_client::StateType::Pending
            || state.timestamp.is_none_or(|since| now - since < grace)
            || self
                .store
                .read(|store| store.knows_job_of_claim(run.id, claim))
        {
            return None;
        }
        let report = CrashReport {
            cause: CrashCause::ClaimNeverRecorded {
                grace_seconds: self.settings.submission_grace.as_secs(),
            },
            namespace: "".into(),
            job_name: "".into(),
            pod: None,
        };
        Some(Proposal {
            flow_run_id: run.id,
            kind: ProposalKind::Crashed,
            transition_id: transition_id(run.id, &format!("claim/{}", state.id), "crashed"),
            report: Some(report),
        })
    }
}

/// The newest Job that is not gone (the one an `InfrastructurePending` is about).
fn newest_live_job(jobs: &[JobView]) -> Option<&JobView> {
    jobs.iter()
        .filter(|job| job.gone_at().is_none())
        .max_by_key(|job| job.created)
}

/// What the evaluator does next for one run.
#[derive(Debug)]
enum NextStep {
    Nothing,
    /// The run is final and needs nothing: drop its tombstones and proposals.
    Settled,
    WakeAt(Timestamp),
    Propose(Box<Proposal>),
}

/// The decision core's verdict turned into the evaluator's next step: only a `PENDING`
/// run gets `InfrastructurePending`, each proposal gets its deterministic transition
/// id, and a proposal already in `already_sent` is not made again.
fn next_step(
    flow_run_id: Uuid,
    input: &DecisionInput<'_>,
    already_sent: Option<&HashSet<Uuid>>,
) -> NextStep {
    let state = input.run_state;
    let own_ip = |job_uid: &str| {
        transition_id(
            flow_run_id,
            job_uid,
            ProposalKind::InfrastructurePending.as_str(),
        )
    };
    if let Some(job_uid) = late_pending::own_infrastructure_pending_of_ended_job(input, own_ip) {
        let kind = ProposalKind::Restore {
            infrastructure_pending: own_ip(job_uid),
        };
        let check = transition_id(flow_run_id, job_uid, kind.as_str());
        if !already_sent.is_some_and(|sent| sent.contains(&check)) {
            return NextStep::Propose(Box::new(Proposal {
                flow_run_id,
                kind,
                transition_id: check,
                report: None,
            }));
        }
    }
    let decision = decide(input);
    tracing::debug!(%flow_run_id, state = %state.state_type, ?decision, "decided");
    let (kind, job_uid, report) = match decision {
        Decision::Nothing if state.state_type.is_final() => return NextStep::Settled,
        Decision::Nothing => return NextStep::Nothing,
        Decision::WaitUntil(at) => return NextStep::WakeAt(at),
        Decision::ProposeInfrastructurePending => {
            if state.state_type != StateType::Pending || &*state.name == INFRASTRUCTURE_PENDING {
                return NextStep::Nothing;
            }
            let Some(job) = newest_live_job(input.jobs) else {
                return NextStep::Nothing;
            };
            (ProposalKind::InfrastructurePending, job.uid.clone(), None)
        }
        Decision::ProposeCrashed(report) => {
            let job_uid = input
                .jobs
                .iter()
                .find(|job| job.namespace == report.namespace && job.name == report.job_name)
                .map(|job| job.uid.clone())
                .unwrap_or_else(|| format!("{}/{}", report.namespace, report.job_name).into());
            (ProposalKind::Crashed, job_uid, Some(report))
        }
    };
    let transition_id = transition_id(flow_run_id, &job_uid, kind.as_str());
    if already_sent.is_some_and(|sent| sent.contains(&transition_id)) {
        return NextStep::Nothing;
    }
    NextStep::Propose(Box::new(Proposal {
        flow_run_id,
        kind,
        transition_id,
        report,
    }))
}

/// What [`propose`] needs.
struct ProposalContext<'a> {
    /// Without retries for `InfrastructurePending`.
    prefect: &'a PrefectClient,
    kube: &'a kube::Client,
    leadership: &'a Leadership,
    crash_log_lines: u32,
    metrics: &'a ReporterMetrics,
}

/// The state to propose, and the crashed pod's log for the run's logs.
async fn state_to_propose(
    context: &ProposalContext<'_>,
    proposal: &Proposal,
) -> (StateCreate, Option<CrashLog>) {
    let (state, log) = match (&proposal.kind, &proposal.report) {
        (ProposalKind::Crashed, Some(report)) => {
            let log = pod_logs::read_crash_log(context.kube, report, context.crash_log_lines).await;
            let tail = log.as_ref().map(CrashLog::text);
            (
                StateCreate::crashed(crash_message(report, tail.as_deref())),
                log,
            )
        }
        _ => (
            StateCreate::new(prefect_client::StateType::Pending, INFRASTRUCTURE_PENDING)
                .with_message(INFRASTRUCTURE_PENDING_MESSAGE),
            None,
        ),
    };
    (state.with_transition_id(proposal.transition_id), log)
}

async fn propose(context: &ProposalContext<'_>, proposal: &Proposal) -> Outcome {
    if let ProposalKind::Restore {
        infrastructure_pending,
    } = proposal.kind
    {
        return restore_if_late(context, proposal, infrastructure_pending).await;
    }
    let (state, crash_log) = state_to_propose(context, proposal).await;
    if !context.leadership.is_leading() {
        return Outcome::NotLeader;
    }
    let flow_run_id = proposal.flow_run_id;
    let sent = context
        .prefect
        .set_flow_run_state(flow_run_id, &state, false);
    let sent = match proposal.kind {
        // Prefect accepts PENDING on a Completed run: an InfrastructurePending held up by
        // retries or a slow network could land after the flow finished and undo its
        // final state. It is sent once (the context's client has no retries), briefly;
        // a failure is decided again from a fresh read of the run. One that still lands
        // after the flow moved on is undone by [`late_pending`].
        ProposalKind::InfrastructurePending => {
            match tokio::time::timeout(INFRASTRUCTURE_PENDING_DEADLINE, sent).await {
                Ok(sent) => sent,
                Err(_) => {
                    tracing::warn!(%flow_run_id, "InfrastructurePending got no answer in time; deciding again");
                    return Outcome::RetryAfter(RETRY_AFTER_ERROR);
                }
            }
        }
        ProposalKind::Crashed | ProposalKind::Restore { .. } => sent.await,
    };
    let kind = match proposal.kind {
        ProposalKind::InfrastructurePending => "infrastructure_pending",
        ProposalKind::Crashed => "crashed",
        ProposalKind::Restore { .. } => "restore",
    };
    let status = match &sent {
        Ok(result) => match result.status {
            SetStateStatus::Accept => "accept",
            SetStateStatus::Reject => "reject",
            SetStateStatus::Abort => "abort",
            SetStateStatus::Wait => "wait",
        },
        Err(_) => "error",
    };
    context.metrics.proposal(kind, status);
    match sent {
        Ok(result) => {
            let reason = result.details.reason.as_deref().unwrap_or("");
            match result.status {
                SetStateStatus::Accept => {
                    // The headline only: the log tail is the user's output and stays in Prefect.
                    let headline = state
                        .message
                        .as_deref()
                        .and_then(|message| message.lines().next())
                        .unwrap_or("");
                    tracing::info!(%flow_run_id, kind = ?proposal.kind, headline, "reported");
                    if let Some(log) = &crash_log {
                        pod_logs::forward(context.prefect, flow_run_id, log).await;
                    }
                    Outcome::Answered
                }
                SetStateStatus::Reject | SetStateStatus::Abort => {
                    tracing::info!(%flow_run_id, kind = ?proposal.kind, status = ?result.status, reason, "proposal not applied");
                    Outcome::Answered
                }
                SetStateStatus::Wait => {
                    let delay = result.details.delay_seconds.unwrap_or(1).clamp(1, 60);
                    Outcome::RetryAfter(Duration::from_secs(delay.unsigned_abs()))
                }
            }
        }
        Err(error) if error.is_not_found() => Outcome::RunGone,
        Err(error) => {
            tracing::warn!(%error, %flow_run_id, kind = ?proposal.kind, "proposing a state failed; will retry");
            Outcome::RetryAfter(retry_delay(&error))
        }
    }
}

/// Checks the run's own `InfrastructurePending` (the current state) against the run's
/// history, and puts back the state it replaced when that was not `PENDING`.
async fn restore_if_late(
    context: &ProposalContext<'_>,
    proposal: &Proposal,
    ours: Uuid,
) -> Outcome {
    if !context.leadership.is_leading() {
        return Outcome::NotLeader;
    }
    let flow_run_id = proposal.flow_run_id;
    let leading = || context.leadership.is_leading();
    let checked = late_pending::check(
        context.prefect,
        flow_run_id,
        ours,
        proposal.transition_id,
        leading,
    )
    .await;
    let status = match &checked {
        late_pending::Checked::InPlace => "in_place",
        late_pending::Checked::Restored(SetStateStatus::Accept, _) => "accept",
        late_pending::Checked::Restored(SetStateStatus::Reject, _) => "reject",
        late_pending::Checked::Restored(SetStateStatus::Abort, _) => "abort",
        late_pending::Checked::Restored(SetStateStatus::Wait, _) => "wait",
        late_pending::Checked::RunGone | late_pending::Checked::Failed(_) => "error",
    };
    context.metrics.proposal("restore", status);
    match checked {
        late_pending::Checked::InPlace => Outcome::Answered,
        late_pending::Checked::Restored(SetStateStatus::Wait, name) => {
            tracing::info!(%flow_run_id, restored = %name, "Prefect asked to wait before putting the state back");
            Outcome::RetryAfter(RETRY_AFTER_ERROR)
        }
        late_pending::Checked::Restored(status, name) => {
            tracing::warn!(%flow_run_id, restored = %name, ?status, "our InfrastructurePending landed after the flow moved on; proposed its state again");
            Outcome::Answered
        }
        late_pending::Checked::RunGone => Outcome::RunGone,
        late_pending::Checked::Failed(error) => {
            tracing::warn!(%flow_run_id, %error, "checking a late InfrastructurePending failed; will retry");
            Outcome::RetryAfter(RETRY_AFTER_ERROR)
        }
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

fn retry_delay(error: &PrefectError) -> Duration {
    if error.is_retryable() {
        RETRY_AFTER_ERROR
    } else {
        Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_ids_are_stable_and_distinct_per_job_and_kind() {
        let run = Uuid::from_u128(42);
        let crashed = transition_id(run, "job-uid-1", "crashed");
        assert_eq!(crashed, transition_id(run, "job-uid-1", "crashed"));
        assert_ne!(crashed, transition_id(run, "job-uid-2", "crashed"));
        assert_ne!(
            crashed,
            transition_id(run, "job-uid-1", "infrastructure-pending")
        );
        assert_ne!(
            crashed,
            transition_id(Uuid::from_u128(43), "job-uid-1", "crashed")
        );
    }

    use crate::observe::{
        ContainerRole, ContainerView, JobConditionKind, JobConditionView, PodPhase, PodView,
    };
    use chrono::{TimeZone, Utc};

    fn at(second: i64) -> Timestamp {
        Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
    }

    fn run_id() -> Uuid {
        Uuid::from_u128(5)
    }

    fn job(failed_at: Option<Timestamp>) -> JobView {
        JobView {
            uid: "job-uid".into(),
            name: "etl-1".into(),
            namespace: "prefect".into(),
            flow_run_id: run_id(),
            created: Some(at(0)),
            backoff_limit: 0,
            active: u32::from(failed_at.is_none()),
            succeeded: 0,
            failed: u32::from(failed_at.is_some()),
            conditions: failed_at
                .map(|since| JobConditionView {
                    kind: JobConditionKind::Failed,
                    status: crate::observe::ConditionStatus::True,
                    reason: Some("BackoffLimitExceeded".into()),
                    message: None,
                    since: Some(since),
                })
                .into_iter()
                .collect(),
            pod_watch_timeout_seconds: None,
            scale_up_timeout_seconds: None,
            deletion_timestamp: None,
            suspend: false,
            never_observed: false,
            work_pool: None,
            claimed: false,
            claim_transition_id: None,
            deleted_observed_at: None,
        }
    }

    fn pending_pod() -> PodView {
        PodView {
            uid: "pod-uid".into(),
            name: "etl-1-abcde".into(),
            namespace: "prefect".into(),
            flow_run_id: run_id(),
            job_name: Some("etl-1".into()),
            job_uid: Some("job-uid".into()),
            phase: PodPhase::Pending,
            created: Some(at(0)),
            scheduled: None,
            containers: Box::new([ContainerView {
                name: "prefect-job".into(),
                role: ContainerRole::Main,
                waiting: None,
                terminated: None,
                last_terminated: None,
                restart_count: 0,
            }]),
            status_reason: None,
            status_message: None,
            deletion_timestamp: None,
            scale_up: None,
        }
    }

    fn step(
        state: &FlowRunState,
        jobs: &[JobView],
        pods: &[PodView],
        sent: Option<&HashSet<Uuid>>,
    ) -> NextStep {
        let settings = DecisionSettings::default();
        let input = DecisionInput {
            run_state: state,
            jobs,
            pods,
            now: at(100),
            settings: &settings,
        };
        next_step(run_id(), &input, sent)
    }

    #[test]
    fn a_pending_run_with_a_pending_pod_gets_infrastructure_pending_once() {
        let claimed = FlowRunState::new(StateType::Pending, "Pending");
        let (jobs, pods) = ([job(None)], [pending_pod()]);
        let NextStep::Propose(proposal) = step(&claimed, &jobs, &pods, None) else {
            panic!("a proposal");
        };
        assert_eq!(proposal.kind, ProposalKind::InfrastructurePending);
        assert_eq!(
            proposal.transition_id,
            transition_id(run_id(), "job-uid", "infrastructure-pending")
        );
        let sent = HashSet::from([proposal.transition_id]);
        assert!(matches!(
            step(&claimed, &jobs, &pods, Some(&sent)),
            NextStep::Nothing
        ));
    }

    #[test]
    fn a_scheduled_run_with_a_lingering_pending_pod_is_not_claimed() {
        let rescheduled = FlowRunState::new(StateType::Scheduled, "AwaitingRetry");
        assert!(matches!(
            step(&rescheduled, &[job(None)], &[pending_pod()], None),
            NextStep::Nothing
        ));
    }

    #[test]
    fn a_failed_job_is_crashed_once_with_a_transition_id_of_that_job() {
        let running = FlowRunState::new(StateType::Running, "Running");
        let jobs = [job(Some(at(10)))];
        let NextStep::Propose(proposal) = step(&running, &jobs, &[], None) else {
            panic!("a proposal");
        };
        assert_eq!(proposal.kind, ProposalKind::Crashed);
        assert_eq!(
            proposal.transition_id,
            transition_id(run_id(), "job-uid", "crashed")
        );
        assert!(proposal.report.is_some());
        let sent = HashSet::from([proposal.transition_id]);
        assert!(matches!(
            step(&running, &jobs, &[], Some(&sent)),
            NextStep::Nothing
        ));
    }

    #[test]
    fn a_final_run_settles_and_a_grace_period_becomes_a_wake_up() {
        let failed = FlowRunState::new(StateType::Failed, "Failed");
        assert!(matches!(
            step(&failed, &[job(Some(at(10)))], &[], None),
            NextStep::Settled
        ));
        let running = FlowRunState::new(StateType::Running, "Running");
        // Failed one second before `now`: inside the settle grace.
        assert!(matches!(
            step(&running, &[job(Some(at(99)))], &[], None),
            NextStep::WakeAt(at_) if at_ == at(109)
        ));
    }

    #[test]
    fn prefect_states_map_to_the_decision_core() {
        let run: FlowRun = serde_json::from_value(serde_json::json!({
            "id": Uuid::from_u128(1),
            "name": "crimson-otter",
            "flow_id": Uuid::from_u128(2),
            "state": {
                "id": Uuid::from_u128(3),
                "type": "PENDING",
                "name": "InfrastructurePending",
            },
        }))
        .expect("a flow run");
        assert_eq!(
            run_state_of(&run),
            Some(FlowRunState::new(
                StateType::Pending,
                INFRASTRUCTURE_PENDING
            ))
        );
    }
}
