//! Decision core of the reporter: it turns what the cluster shows about a flow run's
//! Jobs and pods into the Prefect state proposals and logs the reporter sends. Pure code:
//! no I/O, no clock, no async; the service wires watchers, Prefect calls, log reads and
//! leader election around it.
//!
//! Modules:
//! - [`observe`]: compact `PodView`/`JobView` snapshots of our Pods and Jobs (what the
//!   decisions need, small enough to keep 10,000 pods in memory).
//! - [`run_state`]: the flow run's current Prefect state (type and name).
//! - [`decide`]: `decide()`, the `InfrastructurePending`/`Crashed` decision for one run,
//!   and `crash_message()`, the `Crashed` state message with the pod log tail.
//! - [`events`]: pod Events as flow-run log lines with restart-stable dedup keys.

pub mod decide;
pub mod events;
pub mod observe;
pub mod run_state;

#[cfg(test)]
mod test_fixtures;

pub use decide::{
    crash_message, decide, CrashCause, CrashReport, Decision, DecisionInput, DecisionSettings,
};
pub use events::{pod_event_log, EventDedupKey, LogLevel, PodEventLog};
pub use observe::{JobView, PodView, Timestamp};
pub use run_state::{FlowRunState, StateType, INFRASTRUCTURE_PENDING};
