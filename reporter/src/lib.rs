//! The reporter: it turns what the cluster shows about a flow run's Jobs and pods into
//! the Prefect state proposals and logs the flow cannot send itself. The decision core
//! ([`observe`], [`run_state`], [`decide`](mod@decide), [`events`]) is pure code: no
//! I/O, no clock, no async; [`service`] wires watchers, Prefect calls, log reads and
//! leader election around it.
//!
//! Modules:
//! - [`observe`]: compact `PodView`/`JobView` snapshots of our Pods and Jobs (what the
//!   decisions need, small enough to keep 10,000 pods in memory).
//! - [`run_state`]: the flow run's current Prefect state (type and name).
//! - [`decide`](mod@decide): `decide()`, the `InfrastructurePending`/`Crashed` decision for one run,
//!   and `crash_message()`, the `Crashed` state message with the pod log tail.
//! - [`events`]: Events about our pods and Jobs as flow-run log lines with
//!   restart-stable dedup keys.
//! - [`pod_events`]: `prefect.kubernetes.pod.<phase>` events, as the prefect-kubernetes
//!   observer makes them, for Automations.
//! - [`autoscaler`]: what cluster-autoscaler or Karpenter says (in its Events) about a
//!   pod that waits for a node: a node is coming, or none will.
//! - [`service`]: the reporter service around the core (watchers, evaluation, leader
//!   election, cancellation, event forwarding, cleanup); the `reporter` binary runs it.
//! - [`cli`]: the binary's command line and start-up.
//!
//! How the service calls it for one flow run (watchers keep the views up to date):
//!
//! ```
//! use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
//! use reporter::{crash_message, decide, Decision, DecisionInput, DecisionSettings};
//! use reporter::{FlowRunState, JobView, PodView, StateType, Timestamp};
//!
//! fn evaluate(jobs: &[Job], pods: &[Pod], state: &FlowRunState, now: Timestamp) -> Option<String> {
//!     let jobs: Vec<JobView> = jobs.iter().filter_map(JobView::from_job).collect();
//!     let pods: Vec<PodView> = pods.iter().filter_map(PodView::from_pod).collect();
//!     let settings = DecisionSettings::default();
//!     let input = DecisionInput { run_state: state, jobs: &jobs, pods: &pods, now, settings: &settings };
//!     match decide(&input) {
//!         Decision::ProposeCrashed(report) => {
//!             // Read the first non-blank log of `report.log_plan()` first, then:
//!             Some(crash_message(&report, None))
//!         }
//!         Decision::ProposeInfrastructurePending => Some(reporter::INFRASTRUCTURE_PENDING_MESSAGE.to_owned()),
//!         Decision::WaitUntil(_) | Decision::Nothing => None,
//!     }
//! }
//!
//! let running = FlowRunState::new(StateType::Running, "Running");
//! assert_eq!(evaluate(&[], &[], &running, chrono::Utc::now()), None);
//! ```

pub mod autoscaler;
pub mod cli;
pub mod decide;
pub mod events;
pub mod observe;
pub mod pod_events;
pub mod run_state;
pub mod service;

#[cfg(test)]
mod test_fixtures;

pub use autoscaler::{scale_up_signal, ScaleUpSignal, ScaleUpVerdict, ScaleUpView};
pub use cli::cli_command;
pub use decide::{
    crash_message, decide, jobs_to_withdraw, CrashCause, CrashReport, Decision, DecisionInput,
    DecisionSettings, WithdrawReason, Withdrawal, INFRASTRUCTURE_PENDING_MESSAGE,
};
pub use events::{event_log, EventDedupKey, EventLog, EventSubjectKind, LogLevel};
pub use observe::{JobView, PodView, Timestamp};
pub use run_state::{FlowRunState, StateType, INFRASTRUCTURE_PENDING};
