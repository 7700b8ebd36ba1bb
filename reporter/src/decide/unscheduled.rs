//! The rule for a pod that no node has taken yet. Without a word from the node
//! autoscaler, the run is crashed at the Job's pod-watch timeout. When the autoscaler
//! says a node is coming (its latest Event about the pod is `TriggeredScaleUp` or
//! Karpenter's `Nominated`), the pod may wait until the later of that timeout and the
//! Job's scale-up limit, counted from the first such Event. When its latest word is a
//! refusal, the run is crashed at once with it. A pod-watch timeout of `0` turns all of
//! this off: the pod waits for as long as it takes.

use chrono::TimeDelta;

use super::{crash_or_wait, later_by, to_delta, CrashCause, CrashReport, CrashedPod, Decision};
use super::{DecisionInput, DecisionSettings};
use crate::autoscaler::ScaleUpView;
use crate::observe::{JobView, PodView};

/// Crash or wait for an unscheduled pending pod of an in-progress Job.
pub(super) fn verdict(
    job: &JobView,
    pod: &PodView,
    pod_watch_timeout: Option<TimeDelta>,
    input: &DecisionInput<'_>,
) -> Decision {
    let Some(watch) = pod_watch_timeout else {
        return Decision::Nothing;
    };
    let since = pod.created.or(pod.scheduled.as_ref().and_then(|s| s.since));
    let watch_deadline = since.map_or(input.now, |since| later_by(since, watch));
    let report = |cause: CrashCause| report(job, pod, cause);
    match pod.scale_up.as_deref() {
        None => crash_or_wait(watch_deadline, input.now, || {
            report(CrashCause::PodNotScheduled {
                timeout_seconds: watch.num_seconds().unsigned_abs(),
                reason: pod.scheduled.as_ref().and_then(|s| s.reason.clone()),
                message: pod.scheduled.as_ref().and_then(|s| s.message.clone()),
            })
        }),
        Some(view) if view.is_refused() => {
            Decision::ProposeCrashed(report(CrashCause::ScaleUpRefused {
                signal: Box::new(view.latest.clone()),
                scheduler: scheduler_message(pod),
            }))
        }
        Some(view) => {
            let Some(limit) = scale_up_timeout(job, input.settings) else {
                return Decision::Nothing;
            };
            let coming_since = view.coming_since.or(since).unwrap_or(input.now);
            let deadline = watch_deadline.max(later_by(coming_since, limit));
            crash_or_wait(deadline, input.now, || report(timed_out(view, limit, pod)))
        }
    }
}

fn timed_out(view: &ScaleUpView, limit: TimeDelta, pod: &PodView) -> CrashCause {
    CrashCause::ScaleUpTimedOut {
        timeout_seconds: limit.num_seconds().unsigned_abs(),
        signal: Box::new(view.latest.clone()),
        scheduler: scheduler_message(pod),
    }
}

fn report(job: &JobView, pod: &PodView, cause: CrashCause) -> CrashReport {
    CrashReport {
        cause,
        namespace: job.namespace.clone(),
        job_name: job.name.clone(),
        pod: Some(CrashedPod {
            name: pod.name.clone(),
            reason: None,
            message: None,
            container: None,
            logs: Box::new([]),
        }),
    }
}

/// The scheduler's `PodScheduled` message (`0/3 nodes are available: …`).
fn scheduler_message(pod: &PodView) -> Option<Box<str>> {
    pod.scheduled.as_ref().and_then(|s| s.message.clone())
}

/// The Job's scale-up limit (annotation, else the default); `None` when disabled (`0`).
fn scale_up_timeout(job: &JobView, settings: &DecisionSettings) -> Option<TimeDelta> {
    let timeout = match job.scale_up_timeout_seconds {
        Some(seconds) => std::time::Duration::from_secs(u64::from(seconds)),
        None => settings.default_scale_up_timeout,
    };
    (!timeout.is_zero()).then(|| to_delta(timeout))
}

#[cfg(test)]
mod tests;
