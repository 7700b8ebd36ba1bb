//! The reporter's `InfrastructurePending`/`Crashed` decisions, as a pure function of one
//! flow run's Jobs and pods ([`crate::observe`] views), its current Prefect state, the
//! clock and the grace settings.
//!
//! The caller evaluates [`decide`] whenever a Job, a pod or the run's state changes, when a
//! [`Decision::WaitUntil`] instant is reached, and again right after acting on a proposal
//! (the run's state has then changed). Rules, per Job of the run:
//!
//! | situation | run state | decision |
//! |---|---|---|
//! | run final, `PAUSED`, `CANCELLING` | — | `Nothing` |
//! | Job failed (`Failed`/`FailureTarget` condition, or `failed > backoffLimit`) | `PENDING`/`RUNNING` | `Crashed` after `settle_grace` from the failure (reason, pod, container, exit code) |
//! | Job complete (`Complete`/`SuccessCriteriaMet`) | `PENDING`/`RUNNING` | `Crashed` after `settle_grace` (the flow reports its own final state just before exiting) |
//! | Job deleted or being deleted | `PENDING`/`RUNNING` | `Crashed` after `settle_grace` |
//! | pod pending, container waiting in `ErrImagePull`/`ImagePullBackOff`/`InvalidImageName` | `PENDING`/`RUNNING` | `Crashed` after `image_error_grace`, `WaitUntil` before |
//! | pod pending, container waiting in `CreateContainerConfigError` | `PENDING`/`RUNNING` | `Crashed` after `config_error_grace` naming the missing Secret/ConfigMap/key |
//! | pod pending, not scheduled, the autoscaler silent | `PENDING`/`RUNNING` | `Crashed` after the Job's pod-watch timeout from pod creation |
//! | pod pending, not scheduled, a node coming (`TriggeredScaleUp`, Karpenter `Nominated`) | `PENDING`/`RUNNING` | `Crashed` at the later of the pod-watch timeout and the Job's scale-up limit from the first such Event |
//! | pod pending, not scheduled, the autoscaler refuses (`NotTriggerScaleUp`, `FailedScaleUp`, Karpenter `FailedScheduling`) | `PENDING`/`RUNNING` | `Crashed` at once with its reason (unless the pod-watch timeout is `0`) |
//! | Job in progress without any pod and `status.active == 0` | `PENDING`/`RUNNING` | `Crashed` after the pod-watch timeout from the Job's release (`FailedCreate`: quota, missing ServiceAccount) |
//! | Job still suspended (a dispatcher creates Jobs suspended and releases them) | `PENDING`/`RUNNING` | `Crashed` after `submission_grace` from Job creation (never released) |
//! | pid names a Job never seen, `submission_grace` after the claim | `PENDING`/`RUNNING` | `Crashed` (deleted, or never created) |
//! | pod scheduled but still pending after `pod_start_timeout` (opt-in, off by default) | `PENDING`/`RUNNING` | `Crashed` |
//! | pod pending otherwise (or inside a grace period) | `SCHEDULED`, `PENDING` not named `InfrastructurePending` | `ProposeInfrastructurePending` |
//! | pod failed/evicted/OOM-killed while the Job still has retries | any | `Nothing` (the Job replaces the pod; the Job's failure decides) |
//!
//! Grace of a waiting container: from [`crate::observe::WaitingView::first_observed`]
//! (kept across updates by `PodView::carry_over_from`), else, right after a reporter
//! restart, from the pod's scheduling. The settle grace also lets an evicted pod's flow
//! reschedule its own run (`backoffLimit: 0` + SIGTERM ⇒ `SCHEDULED`/`AwaitingRetry`),
//! which is then never crashed.
//!
//! Besides proposals, [`jobs_to_withdraw`] names the Jobs of final runs that must be
//! deleted: any unfinished Job of a `CANCELLED` run, any suspended Job of a final run,
//! and any Job of a `CRASHED` run whose pod never started (an image that cannot be
//! pulled, a node that never comes), which Kubernetes would otherwise retry forever.
//!
//! Across Jobs: a Job's crash (or its pending settle wait) is dropped while another Job of
//! the same run still serves it (not deleted, not failed, not itself crashing): the
//! reschedule case. Several crashes: the newest Job's wins. Otherwise
//! `ProposeInfrastructurePending` beats the earliest `WaitUntil`, which beats `Nothing`.

mod crash;
mod unscheduled;
mod withdraw;

pub use crash::{
    crash_message, CrashCause, CrashReport, CrashedContainer, CrashedPod, LogSource,
    LoggedContainer, MissingReference, FLOW_CONTAINER, MAX_LOG_TAIL_CHARS,
};

use std::time::Duration;

use chrono::TimeDelta;

use crate::observe::{
    ContainerView, JobView, PodPhase, PodView, Timestamp, WaitingGraceClass, WaitingView,
};
use crate::run_state::{FlowRunState, StateType};
use crash::{culprit_pod, describe_container, logged_containers};
pub use withdraw::{jobs_to_withdraw, WithdrawReason, Withdrawal};

/// Grace periods and timeouts of the decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionSettings {
    /// How long a container may wait in `ErrImagePull`/`ImagePullBackOff`/`InvalidImageName`
    /// before the run is crashed. Default 60 s: the kubelet retries a pull after 10 s and
    /// 20 s, so a registry hiccup (rate limit, 5xx) gets about three attempts.
    pub image_error_grace: Duration,
    /// How long a container may wait in `CreateContainerConfigError` (missing Secret,
    /// ConfigMap or key). Default 30 s: leaves time for a Secret created alongside the run.
    pub config_error_grace: Duration,
    /// Pod-watch timeout when the Job carries no `prefect-k8s.io/pod-watch-timeout-seconds`
    /// annotation. Default 60 s, the default of the `pod_watch_timeout_seconds` job variable.
    pub default_pod_watch_timeout: Duration,
    /// How long after a Job ended (completed, failed, deleted) the run may still reach a
    /// final state by itself before it is crashed. Default 10 s: the flow proposes its
    /// final state before its process exits, so this only covers a stale read of it.
    pub settle_grace: Duration,
    /// How long a scheduled pod may stay `Pending` without any other rule firing (e.g.
    /// `ContainerCreating` while a Secret volume cannot be mounted: only `FailedMount`
    /// events tell) before the run is crashed. `None` (default) disables it, because
    /// pulling a large image legitimately takes minutes (prefect#12071). Counted from the
    /// pod's scheduling, so it includes the time init containers run.
    pub pod_start_timeout: Option<Duration>,
    /// How long after a claim its Job may be missing or still suspended before the run
    /// is crashed. Must exceed the dispatchers' submission timeout (they stop creating
    /// and releasing Jobs after it). Default: the shared default timeout plus 2 minutes.
    pub submission_grace: Duration,
    /// How long an unscheduled pod may wait for a node the autoscaler is bringing
    /// (counted from its first `TriggeredScaleUp`/`Nominated` Event) when the Job carries
    /// no `prefect-k8s.io/scale-up-timeout-seconds` annotation. `0` waits as long as the
    /// autoscaler says a node is coming. Default 20 minutes: longer than both
    /// cluster-autoscaler's `--max-node-provision-time` and Karpenter's registration TTL
    /// (15 minutes each), so their own verdict on a node that never registers usually
    /// comes first.
    pub default_scale_up_timeout: Duration,
}

impl Default for DecisionSettings {
    fn default() -> Self {
        Self {
            image_error_grace: Duration::from_secs(60),
            config_error_grace: Duration::from_secs(30),
            default_pod_watch_timeout: Duration::from_secs(60),
            settle_grace: Duration::from_secs(10),
            pod_start_timeout: None,
            submission_grace: Duration::from_secs(
                flow_run_proto::DEFAULT_SUBMISSION_TIMEOUT_SECONDS + 120,
            ),
            default_scale_up_timeout: Duration::from_secs(1200),
        }
    }
}

/// One flow run as the decisions see it.
#[derive(Clone, Copy, Debug)]
pub struct DecisionInput<'a> {
    /// The run's current Prefect state.
    pub run_state: &'a FlowRunState,
    /// Every Job of the run, including deleted ones kept as tombstones.
    pub jobs: &'a [JobView],
    /// Every pod of the run (matched to Jobs by owner uid, else by name).
    pub pods: &'a [PodView],
    pub now: Timestamp,
    pub settings: &'a DecisionSettings,
}

/// What the caller should do for the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// `set_state {type: PENDING, name: InfrastructurePending, message: INFRASTRUCTURE_PENDING_MESSAGE}`.
    ProposeInfrastructurePending,
    /// `set_state {type: CRASHED, name: Crashed, message: crash_message(report, log tail)}`.
    ProposeCrashed(CrashReport),
    /// Nothing yet; evaluate again at this instant (a grace period or timeout ends).
    WaitUntil(Timestamp),
}

/// Message of the `InfrastructurePending` proposal (the Python observer's).
pub const INFRASTRUCTURE_PENDING_MESSAGE: &str = "Kubernetes pod is pending.";

/// The decision for one flow run.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let state = input.run_state.state_type;
    if state.is_final()
        || !(input.run_state.may_crash() || input.run_state.wants_infrastructure_pending())
    {
        return Decision::Nothing;
    }
    let verdicts: Vec<(&JobView, Decision)> = input
        .jobs
        .iter()
        .filter(|job| !is_stale(job, input))
        .map(|job| (job, decide_for_job(job, input)))
        .collect();
    let serves_run = |job: &JobView, verdict: &Decision| {
        job.gone_at().is_none()
            && job.failure().is_none()
            && !job.backoff_exhausted()
            && !matches!(verdict, Decision::ProposeCrashed(_))
    };
    let served_by_another = |this: &JobView| {
        verdicts
            .iter()
            .any(|(other, verdict)| other.uid != this.uid && serves_run(other, verdict))
    };

    let mut crash: Option<(&JobView, &CrashReport)> = None;
    let mut infrastructure_pending = false;
    let mut wake_at: Option<Timestamp> = None;
    for (job, verdict) in &verdicts {
        match verdict {
            Decision::Nothing => {}
            Decision::ProposeInfrastructurePending => infrastructure_pending = true,
            Decision::ProposeCrashed(report) => {
                if served_by_another(job) {
                    continue;
                }
                if crash.is_none_or(|(chosen, _)| job.created > chosen.created) {
                    crash = Some((job, report));
                }
            }
            Decision::WaitUntil(at) => {
                if job_has_ended(job) && served_by_another(job) {
                    continue;
                }
                keep_earliest(&mut wake_at, *at);
            }
        }
    }
    if let Some((_, report)) = crash {
        return Decision::ProposeCrashed(report.clone());
    }
    if infrastructure_pending {
        return Decision::ProposeInfrastructurePending;
    }
    wake_at.map_or(Decision::Nothing, Decision::WaitUntil)
}

/// A Job of an earlier submission of the run (a retry, a reschedule): the run's pid
/// names another Job the reporter knows, or the run's state is a claim of another
/// submission (a flow that rescheduled itself is claimed again while its Job is
/// still finishing, before the new Job exists; an earlier submission's late create
/// lands after the new claim), or the
/// Job ended before the run entered its current state (that state was set after the
/// Job's end, so the end was dealt with).
fn is_stale(job: &JobView, input: &DecisionInput<'_>) -> bool {
    let state = input.run_state;
    let claimed_again = job
        .claim_transition_id
        .is_some_and(|ours| state.is_claim_other_than(ours));
    let named = |pid: &flow_run_proto::InfrastructurePid| {
        *job.namespace == pid.namespace && *job.name == pid.job_name
    };
    // A Job withdrawn before it ever had a pod (deleted while suspended) serves no
    // run: a pid naming it (an earlier submission's pid update that landed late)
    // does not make the Job that runs stale.
    let pid_names_another_known_job = state.infrastructure_pid.as_ref().is_some_and(|pid| {
        !named(pid)
            && input.jobs.iter().any(|other| {
                *other.namespace == pid.namespace
                    && *other.name == pid.job_name
                    && !other.never_observed
                    && !(other.gone_at().is_some() && other.is_suspended())
            })
    });
    // Kubernetes times have whole seconds (truncated): a Job that ended within the
    // second the state began may have ended after it. An `InfrastructurePending`
    // about the Job the pid names is no new submission (the reporter's may land
    // after that Job failed, held up by the network): a *failed* Job stays the
    // run's. (A completed one does not: the InfrastructurePending may have landed
    // on a new claim of the run, which a crash would take away. One that landed on
    // a state the flow reported is put back by `service::late_pending`.)
    let own_infrastructure_pending = &*state.name == crate::run_state::INFRASTRUCTURE_PENDING
        && state.infrastructure_pid.as_ref().is_some_and(named)
        && job.failure().is_some();
    let ended_before_state = match (job_end(job), state.since) {
        (Some(ended), Some(since)) => {
            ended + TimeDelta::seconds(1) <= since && !own_infrastructure_pending
        }
        _ => false,
    };
    pid_names_another_known_job || claimed_again || ended_before_state
}

/// When the Job ended (failed, completed, or went away), if it has.
fn job_end(job: &JobView) -> Option<Timestamp> {
    job.failure()
        .or_else(|| job.completion())
        .and_then(|condition| condition.since)
        .or_else(|| job.gone_at())
}

fn job_has_ended(job: &JobView) -> bool {
    job.gone_at().is_some()
        || job.failure().is_some()
        || job.backoff_exhausted()
        || job.completion().is_some()
}

fn pods_of<'a>(job: &'a JobView, pods: &'a [PodView]) -> impl Iterator<Item = &'a PodView> + 'a {
    pods.iter().filter(move |pod| {
        pod.namespace == job.namespace
            && match (&pod.job_uid, &pod.job_name) {
                (Some(uid), _) => *uid == job.uid,
                (None, Some(name)) => *name == job.name,
                (None, None) => false,
            }
    })
}

fn decide_for_job(job: &JobView, input: &DecisionInput<'_>) -> Decision {
    if let Some(ended) = ended_job_crash(job, input) {
        return ended;
    }
    let may_crash = input.run_state.may_crash();
    if job.is_suspended() {
        // A Running flow means its pod started: the view of a suspended Job is
        // behind (the long campaign, seed 20: a release the watch had not shown
        // yet, and the run crashed while its flow ran).
        let waiting = input.run_state.state_type == StateType::Pending;
        return unreleased_job(job, may_crash && waiting, input);
    }
    let pod_watch_timeout = pod_watch_timeout(job, input.settings);
    let mut pods = pods_of(job, input.pods).peekable();
    if pods.peek().is_none() {
        // No pod at all: the controller could not create one (FailedCreate) or is about to.
        // When it counts an active pod we merely do not see it (watch lag, labels removed
        // from the pod template): never crash for that.
        let (Some(timeout), Some(startable), true, 0) = (
            pod_watch_timeout,
            job.startable_since(),
            may_crash,
            job.active,
        ) else {
            return Decision::Nothing;
        };
        return crash_or_wait(later_by(startable, timeout), input.now, || CrashReport {
            cause: CrashCause::NoPodCreated {
                timeout_seconds: timeout.num_seconds().unsigned_abs(),
            },
            namespace: job.namespace.clone(),
            job_name: job.name.clone(),
            pod: None,
        });
    }

    let mut pending_pod_seen = false;
    let mut wake_at: Option<Timestamp> = None;
    for pod in pods.filter(|pod| pod.phase == PodPhase::Pending && !pod.is_terminating()) {
        pending_pod_seen = true;
        if !may_crash {
            continue;
        }
        match pending_pod_verdict(job, pod, pod_watch_timeout, input) {
            Decision::ProposeCrashed(report) => return Decision::ProposeCrashed(report),
            Decision::WaitUntil(at) => keep_earliest(&mut wake_at, at),
            Decision::Nothing | Decision::ProposeInfrastructurePending => {}
        }
    }
    if pending_pod_seen && input.run_state.wants_infrastructure_pending() {
        return Decision::ProposeInfrastructurePending;
    }
    wake_at.map_or(Decision::Nothing, Decision::WaitUntil)
}

/// A suspended Job waits for a dispatcher to release it; one that is never
/// released (its submission was lost) crashes the run after the submission grace.
fn unreleased_job(job: &JobView, may_crash: bool, input: &DecisionInput<'_>) -> Decision {
    let (true, Some(created)) = (may_crash, job.created) else {
        return Decision::Nothing;
    };
    let grace = input.settings.submission_grace;
    crash_or_wait(later_by(created, to_delta(grace)), input.now, || {
        CrashReport {
            cause: CrashCause::JobNeverReleased {
                timeout_seconds: grace.as_secs(),
            },
            namespace: job.namespace.clone(),
            job_name: job.name.clone(),
            pod: None,
        }
    })
}

/// Crash (or settle wait) for a Job that failed, completed or went away.
fn ended_job_crash(job: &JobView, input: &DecisionInput<'_>) -> Option<Decision> {
    let pods = || pods_of(job, input.pods);
    let (cause, ended_at) = if let Some(failure) = job.failure() {
        let cause = CrashCause::JobFailed {
            reason: failure.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: failure.message.clone(),
        };
        (cause, failure.since.or_else(|| job.gone_at()))
    } else if job.backoff_exhausted() {
        let cause = CrashCause::JobFailed {
            reason: "BackoffLimitExceeded".into(),
            message: Some(
                format!(
                    "{} failed pods, backoffLimit {}",
                    job.failed, job.backoff_limit
                )
                .into(),
            ),
        };
        (cause, pods().filter_map(PodView::finished_at).max())
    } else if let Some(completion) = job.completion() {
        (
            CrashCause::JobCompletedWithoutFinalState,
            completion.since.or_else(|| job.gone_at()),
        )
    } else if let Some(gone_at) = job.gone_at() {
        // A Job never seen is missing for a run still waiting for it, but it existed
        // for a run that got as far as Running: that one was deleted.
        let never_ran = input.run_state.state_type != StateType::Running;
        let cause = if job.never_observed && never_ran {
            CrashCause::JobMissing {
                grace_seconds: input.settings.submission_grace.as_secs(),
            }
        } else if job.succeeded > 0 {
            CrashCause::JobCompletedWithoutFinalState
        } else {
            CrashCause::JobDeleted
        };
        (cause, Some(gone_at))
    } else {
        return None;
    };
    if !input.run_state.may_crash() {
        return Some(Decision::Nothing);
    }
    // Without a timestamp the end is not recent enough to matter: no settle wait.
    let settle_until = ended_at.map_or(input.now, |at| {
        later_by(at, to_delta(input.settings.settle_grace))
    });
    Some(crash_or_wait(settle_until, input.now, || CrashReport {
        cause,
        namespace: job.namespace.clone(),
        job_name: job.name.clone(),
        pod: culprit_pod(pods()),
    }))
}

/// Crash or wait for one pending pod of an in-progress Job (run may crash).
fn pending_pod_verdict(
    job: &JobView,
    pod: &PodView,
    pod_watch_timeout: Option<TimeDelta>,
    input: &DecisionInput<'_>,
) -> Decision {
    let settings = input.settings;
    let mut wake_at: Option<Timestamp> = None;
    let started_waiting_fallback = pod.scheduled_at().or(pod.created);
    for container in pod.containers.iter() {
        let Some(waiting) = container.waiting.as_deref() else {
            continue;
        };
        let Some(class) = waiting.reason.grace_class() else {
            continue;
        };
        let grace = match class {
            WaitingGraceClass::Image => settings.image_error_grace,
            WaitingGraceClass::Configuration => settings.config_error_grace,
        };
        let since = waiting.first_observed.or(started_waiting_fallback);
        let deadline = since.map_or(input.now, |since| later_by(since, to_delta(grace)));
        let decision = crash_or_wait(deadline, input.now, || {
            container_crash(job, pod, container, waiting, class, grace)
        });
        match decision {
            Decision::WaitUntil(at) => keep_earliest(&mut wake_at, at),
            crashed => return crashed,
        }
    }
    if pod.is_unscheduled() {
        match unscheduled::verdict(job, pod, pod_watch_timeout, input) {
            Decision::WaitUntil(at) => keep_earliest(&mut wake_at, at),
            Decision::ProposeCrashed(report) => return Decision::ProposeCrashed(report),
            Decision::Nothing | Decision::ProposeInfrastructurePending => {}
        }
    }
    if let (Some(timeout), Some(scheduled_at)) = (settings.pod_start_timeout, pod.scheduled_at()) {
        let timeout = to_delta(timeout);
        let decision = crash_or_wait(later_by(scheduled_at, timeout), input.now, || {
            let container = pod
                .containers
                .iter()
                .find(|container| container.waiting.is_some())
                .map(describe_container);
            CrashReport {
                cause: CrashCause::PodNotStarted {
                    timeout_seconds: timeout.num_seconds().unsigned_abs(),
                },
                namespace: job.namespace.clone(),
                job_name: job.name.clone(),
                pod: Some(CrashedPod {
                    name: pod.name.clone(),
                    reason: pod.status_reason.clone(),
                    message: pod.status_message.clone(),
                    logs: logged_containers(pod, container.as_ref().map(|c| &*c.name)),
                    container,
                }),
            }
        });
        match decision {
            Decision::WaitUntil(at) => keep_earliest(&mut wake_at, at),
            crashed => return crashed,
        }
    }
    wake_at.map_or(Decision::Nothing, Decision::WaitUntil)
}

fn container_crash(
    job: &JobView,
    pod: &PodView,
    container: &ContainerView,
    waiting: &WaitingView,
    class: WaitingGraceClass,
    grace: Duration,
) -> CrashReport {
    let missing = match class {
        WaitingGraceClass::Configuration => {
            waiting.message.as_deref().and_then(MissingReference::parse)
        }
        WaitingGraceClass::Image => None,
    };
    CrashReport {
        cause: CrashCause::ContainerCannotStart {
            grace_seconds: grace.as_secs(),
            missing,
        },
        namespace: job.namespace.clone(),
        job_name: job.name.clone(),
        pod: Some(CrashedPod {
            name: pod.name.clone(),
            reason: pod.status_reason.clone(),
            message: pod.status_message.clone(),
            container: Some(describe_container(container)),
            logs: logged_containers(pod, Some(&container.name)),
        }),
    }
}

/// `None` when the timeout is disabled (`0`).
fn pod_watch_timeout(job: &JobView, settings: &DecisionSettings) -> Option<TimeDelta> {
    let timeout = match job.pod_watch_timeout_seconds {
        Some(seconds) => Duration::from_secs(u64::from(seconds)),
        None => settings.default_pod_watch_timeout,
    };
    (!timeout.is_zero()).then(|| to_delta(timeout))
}

fn crash_or_wait(
    deadline: Timestamp,
    now: Timestamp,
    report: impl FnOnce() -> CrashReport,
) -> Decision {
    if now >= deadline {
        Decision::ProposeCrashed(report())
    } else {
        Decision::WaitUntil(deadline)
    }
}

fn keep_earliest(wake_at: &mut Option<Timestamp>, candidate: Timestamp) {
    *wake_at = Some(wake_at.map_or(candidate, |earlier| earlier.min(candidate)));
}

fn to_delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

fn later_by(start: Timestamp, delta: TimeDelta) -> Timestamp {
    start
        .checked_add_signed(delta)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;
