//! What the campaign watches while it runs: each service's resident memory
//! (from `/proc`), services that die by themselves (restarted, as a
//! Deployment would, and counted), and a probe of runs that are stuck —
//! the recovery clock: after a heal the system has recovered from a fault
//! once none of the runs that got stuck while it was on is stuck.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prefect_client::{FlowRun, FlowRunFilter, PrefectClient, StateType};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::recorder::{Recorder, SharedRecorder};
use crate::stack::Service;

/// A run in a transitional state longer than this is stuck.
pub const STUCK_AFTER: TimeDelta = TimeDelta::seconds(20);

/// Peak resident memory of one service (across its restarts).
#[derive(Clone, Debug, Default)]
pub struct RssPeak {
    pub peak_kib: u64,
    /// Seconds into the campaign of the peak.
    pub at: f64,
    pub samples: u64,
}

/// One probe: when, and which runs were stuck and why.
#[derive(Clone, Debug)]
pub struct Probe {
    pub at: Duration,
    pub stuck: BTreeMap<Uuid, String>,
    /// Runs not yet final (due-later SCHEDULED runs excluded).
    pub unsettled: usize,
}

/// Everything the monitor gathered.
#[derive(Debug, Default)]
pub struct Observations {
    pub rss: BTreeMap<String, RssPeak>,
    pub unexpected_exits: Vec<(Duration, String)>,
    pub probes: Vec<Probe>,
    pub probe_errors: u64,
}

pub type SharedObservations = Arc<parking_lot::Mutex<Observations>>;

/// The monitor's tasks; stop with the token.
pub struct Monitor {
    pub observations: SharedObservations,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Monitor {
    pub fn start(
        services: Vec<Service>,
        prefect: PrefectClient,
        pool: String,
        recorder: SharedRecorder,
        start: Instant,
        stop: CancellationToken,
    ) -> Monitor {
        let observations = SharedObservations::default();
        let tasks = vec![
            tokio::spawn(sample_rss(
                services.clone(),
                observations.clone(),
                start,
                stop.clone(),
            )),
            tokio::spawn(supervise(
                services,
                observations.clone(),
                start,
                stop.clone(),
            )),
            tokio::spawn(probe_loop(
                prefect,
                pool,
                recorder,
                observations.clone(),
                start,
                stop,
            )),
        ];
        Monitor {
            observations,
            tasks,
        }
    }

    pub async fn join(self) -> SharedObservations {
        for task in self.tasks {
            let _ = task.await;
        }
        self.observations
    }
}

async fn sample_rss(
    services: Vec<Service>,
    observations: SharedObservations,
    start: Instant,
    stop: CancellationToken,
) {
    while !stopped(&stop, Duration::from_secs(1)).await {
        for service in &services {
            let Some(pid) = service.proc.lock().await.pid() else {
                continue;
            };
            let Some(kib) = rss_kib(pid) else { continue };
            let mut observations = observations.lock();
            let peak = observations.rss.entry(service.name.clone()).or_default();
            peak.samples += 1;
            if kib > peak.peak_kib {
                peak.peak_kib = kib;
                peak.at = start.elapsed().as_secs_f64();
            }
        }
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn supervise(
    services: Vec<Service>,
    observations: SharedObservations,
    start: Instant,
    stop: CancellationToken,
) {
    while !stopped(&stop, Duration::from_secs(1)).await {
        for service in &services {
            let mut proc = service.proc.lock().await;
            let Some(exit) = proc.reap_unexpected_exit() else {
                continue;
            };
            tracing::warn!(%exit, "a service died by itself; restarting it");
            observations
                .lock()
                .unexpected_exits
                .push((start.elapsed(), exit));
            if let Err(error) = proc.spawn() {
                tracing::error!(%error, "restarting a service failed");
            }
        }
    }
}

async fn probe_loop(
    prefect: PrefectClient,
    pool: String,
    recorder: SharedRecorder,
    observations: SharedObservations,
    start: Instant,
    stop: CancellationToken,
) {
    while !stopped(&stop, Duration::from_secs(2)).await {
        match probe(&prefect, &pool, &recorder).await {
            Ok((stuck, unsettled)) => observations.lock().probes.push(Probe {
                at: start.elapsed(),
                stuck,
                unsettled,
            }),
            Err(error) => {
                tracing::debug!(%error, "probe failed");
                observations.lock().probe_errors += 1;
            }
        }
    }
}

/// Stuck runs and the count of unsettled ones, now.
pub async fn probe(
    prefect: &PrefectClient,
    pool: &str,
    recorder: &SharedRecorder,
) -> Result<(BTreeMap<Uuid, String>, usize), prefect_client::PrefectError> {
    let (runs, gone) = runs_to_probe(prefect, pool, recorder).await?;
    let now = Utc::now();
    let recorder = recorder.lock();
    let mut stuck: BTreeMap<Uuid, String> = runs
        .iter()
        .filter_map(|run| stuck_reason(run, &recorder, now).map(|why| (run.id, why)))
        .collect();
    let deleted = gone
        .into_iter()
        .map(|id| (id, "deleted run with a live Job or pod".to_owned()));
    stuck.extend(deleted);
    let unsettled = runs.iter().filter(|run| unsettled(run, now)).count();
    Ok((stuck, unsettled))
}

/// The pool's unsettled runs plus every run with a live Job or pod; and
/// the ids of those that no longer exist.
async fn runs_to_probe(
    prefect: &PrefectClient,
    pool: &str,
    recorder: &SharedRecorder,
) -> Result<(Vec<FlowRun>, Vec<Uuid>), prefect_client::PrefectError> {
    let transitional = vec![
        StateType::Scheduled,
        StateType::Pending,
        StateType::Running,
        StateType::Cancelling,
        StateType::Paused,
    ];
    let filter = FlowRunFilter::default()
        .with_work_pool_names(vec![pool.to_owned()])
        .with_state_types(transitional);
    let mut runs = prefect.read_all_flow_runs(&filter).await?;
    let known: BTreeSet<Uuid> = runs.iter().map(|run| run.id).collect();
    let with_infrastructure = recorder.lock().runs_with_live_infrastructure();
    let others: Vec<Uuid> = with_infrastructure
        .into_iter()
        .filter(|id| !known.contains(id))
        .collect();
    let found = prefect.read_flow_runs_by_ids(&others).await?;
    let gone = others
        .into_iter()
        .filter(|id| !found.iter().any(|run| run.id == *id))
        .collect();
    runs.extend(found);
    Ok((runs, gone))
}

/// Not final, and not a run that is legitimately waiting for a later time.
pub fn unsettled(run: &FlowRun, now: DateTime<Utc>) -> bool {
    let Some(state) = run.state.as_ref() else {
        return false;
    };
    if state.state_type.is_final() {
        return false;
    }
    // An in-process retry's AwaitingRetry is carried on by the run's own pod
    // once its delay is over: the run is under way, not waiting for a later
    // time. (Counted as settled, a 2 s retry delay let the campaign call the
    // system quiet and check a run that was Running a moment later: short
    // campaign, seed 9.)
    state.state_type != StateType::Scheduled
        || in_process_retry(run)
        || due_at(run).is_none_or(|due| due <= now)
}

/// When a SCHEDULED run is due.
pub fn due_at(run: &FlowRun) -> Option<DateTime<Utc>> {
    run.state
        .as_ref()
        .and_then(|state| state.state_details.scheduled_time)
        .or(run.next_scheduled_start_time)
}

/// An in-process retry waits in its own pod, not for a worker.
pub fn in_process_retry(run: &FlowRun) -> bool {
    run.empirical_policy
        .get("retry_type")
        .and_then(|v| v.as_str())
        == Some("in_process")
}

/// Why a run is stuck, if it is.
pub fn stuck_reason(run: &FlowRun, recorder: &Recorder, now: DateTime<Utc>) -> Option<String> {
    let state = run.state.as_ref()?;
    let since = state.timestamp.unwrap_or(now);
    let old = now - since > STUCK_AFTER;
    let jobs = recorder.jobs_of(run.id);
    let running_job = jobs.iter().any(|job| job.alive() && !job.suspended);
    let live_pod = recorder.pods_of(run.id).iter().any(|pod| pod.alive());
    let live_job = jobs.iter().any(|job| job.alive());
    match state.state_type {
        StateType::Scheduled if in_process_retry(run) => None,
        StateType::Scheduled => due_at(run)
            .filter(|due| now - *due > STUCK_AFTER)
            .map(|_| "due but not submitted".to_owned()),
        StateType::Pending if old && !running_job && !live_pod => {
            Some("Pending without a started Job".into())
        }
        StateType::Running if old && !live_job && !live_pod => Some("Running without a Job".into()),
        StateType::Cancelling if old => Some("Cancelling not carried out".into()),
        kind if kind.is_final() && old && (live_job || live_pod) => {
            Some(format!("{} with a live Job or pod", state.display_name()))
        }
        _ => None,
    }
}

/// How long after `healed` the system took to recover from a fault that
/// began at `started`: the first probe after the heal in which none of the
/// fault's runs is stuck. The fault's runs are those stuck while it was on or
/// within [`STUCK_AFTER`] of its heal (a run counts as stuck only that long
/// after its state began), except runs already stuck before it began and
/// runs that stay stuck to the end (those are the checker's violations, not a
/// recovery time). A run stuck later is another fault's. `None`: not within
/// the campaign.
pub fn recovery(probes: &[Probe], started: Duration, healed: Duration) -> Option<Duration> {
    let mut excused: BTreeSet<&Uuid> = probes
        .iter()
        .rev()
        .find(|probe| probe.at <= started)
        .map(|probe| probe.stuck.keys().collect())
        .unwrap_or_default();
    excused.extend(stuck_to_the_end(probes));
    let blame_until = healed + STUCK_AFTER.to_std().unwrap_or_default();
    let culprits: BTreeSet<&Uuid> = probes
        .iter()
        .filter(|probe| probe.at >= started && probe.at <= blame_until)
        .flat_map(|probe| probe.stuck.keys())
        .filter(|id| !excused.contains(id))
        .collect();
    probes
        .iter()
        .filter(|probe| probe.at >= healed)
        .find(|probe| !probe.stuck.keys().any(|id| culprits.contains(id)))
        .map(|probe| probe.at - healed)
}

/// Runs stuck in the last probe.
pub fn stuck_to_the_end(probes: &[Probe]) -> BTreeSet<&Uuid> {
    probes
        .last()
        .map(|probe| probe.stuck.keys().collect())
        .unwrap_or_default()
}

/// Waits `period`; true once `stop` is cancelled.
async fn stopped(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(period) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_in_process_retry_waiting_for_its_delay_is_unsettled() {
        let now = Utc::now();
        let retry_at = now + chrono::Duration::seconds(2);
        let awaiting = |retry_type: &str| -> FlowRun {
            serde_json::from_value(json!({
                "id": Uuid::from_u128(1), "flow_id": Uuid::nil(),
                "empirical_policy": {"retries": 1, "retry_delay": 2, "retry_type": retry_type},
                "state": {
                    "id": Uuid::from_u128(2), "type": "SCHEDULED", "name": "AwaitingRetry",
                    "timestamp": now, "state_details": {"scheduled_time": retry_at},
                },
            }))
            .unwrap()
        };
        assert!(unsettled(&awaiting("in_process"), now));
        // A run rescheduled for later (a worker will pick it up) is settled.
        assert!(!unsettled(&awaiting("reschedule"), now));
    }

    fn probe(at: u64, stuck: &[u128]) -> Probe {
        Probe {
            at: Duration::from_secs(at),
            stuck: stuck
                .iter()
                .map(|id| (Uuid::from_u128(*id), "x".into()))
                .collect(),
            unsettled: 0,
        }
    }

    #[test]
    fn recovery_ignores_runs_stuck_before_the_fault() {
        let probes = [
            probe(0, &[1]),
            probe(10, &[1, 2]),
            probe(20, &[1, 2]),
            probe(24, &[1]),
            probe(30, &[]),
        ];
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        assert_eq!(
            secs(recovery(
                &probes,
                Duration::from_secs(5),
                Duration::from_secs(12)
            )),
            Some(12)
        );
        assert_eq!(
            secs(recovery(
                &probes,
                Duration::from_secs(25),
                Duration::from_secs(26)
            )),
            Some(4)
        );
        assert_eq!(
            recovery(&probes, Duration::from_secs(25), Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn runs_stuck_long_after_the_heal_are_another_faults() {
        // Run 2 got stuck during the fault and recovered at 70; run 8 got stuck
        // 48 s after this fault's heal (another fault's) and recovered at 90.
        let probes = [
            probe(0, &[]),
            probe(10, &[2]),
            probe(60, &[2, 8]),
            probe(70, &[8]),
            probe(90, &[]),
        ];
        assert_eq!(
            recovery(&probes, Duration::from_secs(5), Duration::from_secs(12)),
            Some(Duration::from_secs(58)),
            "recovered when run 2 was, not when run 8 was"
        );
    }

    #[test]
    fn runs_stuck_to_the_end_do_not_count_against_a_recovery() {
        let probes = [
            probe(0, &[]),
            probe(10, &[3, 4]),
            probe(20, &[3, 4]),
            probe(30, &[3]),
        ];
        let recovered = recovery(&probes, Duration::from_secs(5), Duration::from_secs(8));
        assert_eq!(
            recovered,
            Some(Duration::from_secs(22)),
            "run 4 recovered at 30 s; run 3 never did"
        );
    }
}
