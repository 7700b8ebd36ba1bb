//! Unscheduled pods and what the node autoscaler says about them: the three
//! cases (a node that comes late, a refusal, a scale-up that never brings a node) and
//! their edges, with the autoscalers' own Event wordings.

use super::super::{crash_message, decide, CrashCause, Decision, DecisionInput, DecisionSettings};
use crate::autoscaler::ScaleUpVerdict;
use crate::observe::{JobView, PodView};
use crate::run_state::{FlowRunState, StateType, INFRASTRUCTURE_PENDING};
use crate::test_fixtures::*;

const SCHEDULER_MESSAGE: &str =
    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";

fn waiting() -> FlowRunState {
    run_state(StateType::Pending, INFRASTRUCTURE_PENDING)
}

fn decide_at(jobs: &[JobView], pods: &[PodView], now: crate::Timestamp) -> Decision {
    decide(&DecisionInput {
        run_state: &waiting(),
        jobs,
        pods,
        now,
        settings: &DecisionSettings::default(),
    })
}

fn unschedulable_pod(events: &[k8s_openapi::api::core::v1::Event]) -> PodView {
    let pod = PodFixture::new()
        .unschedulable(SCHEDULER_MESSAGE, at(0))
        .view();
    with_autoscaler_events(pod, events)
}

fn job(scale_up_timeout: Option<&str>) -> JobView {
    JobFixture::new()
        .pod_watch_timeout(Some("60"))
        .scale_up_timeout(scale_up_timeout)
        .active()
        .view()
}

#[test]
fn a_pod_waiting_for_a_scale_up_outlives_the_pod_watch_timeout_until_the_scale_up_limit() {
    let jobs = [job(Some("600"))];
    let pods = [unschedulable_pod(&[triggered_scale_up(at(5))])];
    assert_eq!(
        decide_at(&jobs, &pods, at(60)),
        Decision::WaitUntil(at(605))
    );
    assert_eq!(
        decide_at(&jobs, &pods, at(604)),
        Decision::WaitUntil(at(605))
    );
    let Decision::ProposeCrashed(report) = decide_at(&jobs, &pods, at(605)) else {
        panic!("crashed at the scale-up limit");
    };
    assert!(matches!(
        report.cause,
        CrashCause::ScaleUpTimedOut {
            timeout_seconds: 600,
            ..
        }
    ));
    assert_eq!(
        crash_message(&report, None),
        format!(
            "Pod prefect/crimson-otter-x7k2p-5bhw4 (Job crimson-otter-x7k2p) was not scheduled: \
             cluster-autoscaler was bringing a new node (scale-up of nodegroup gpu 1→2 \
             triggered), but no node took the pod within 600 s (scale_up_timeout_seconds). \
             The scheduler says: {SCHEDULER_MESSAGE}"
        )
    );
}

#[test]
fn the_node_that_comes_ends_the_wait() {
    let jobs = [job(None)];
    let scheduled = PodFixture::new().container_creating(at(200)).view();
    let pods = [with_autoscaler_events(
        scheduled,
        &[triggered_scale_up(at(5))],
    )];
    assert_eq!(
        decide_at(&jobs, &pods, at(2000)),
        Decision::Nothing,
        "a scheduled pod is not waiting for a node any more"
    );
}

#[test]
fn without_the_annotation_the_default_limit_applies_and_zero_waits_while_a_node_comes() {
    let pods = [unschedulable_pod(&[triggered_scale_up(at(5))])];
    assert_eq!(
        decide_at(&[job(None)], &pods, at(60)),
        Decision::WaitUntil(at(1205)),
        "20 minutes from the scale-up by default"
    );
    assert_eq!(
        decide_at(&[job(Some("0"))], &pods, at(100_000)),
        Decision::Nothing
    );
    let settings = DecisionSettings {
        default_scale_up_timeout: std::time::Duration::from_secs(90),
        ..DecisionSettings::default()
    };
    let decision = decide(&DecisionInput {
        run_state: &waiting(),
        jobs: &[job(None)],
        pods: &pods,
        now: at(60),
        settings: &settings,
    });
    assert_eq!(decision, Decision::WaitUntil(at(95)));
}

#[test]
fn the_wait_never_ends_before_the_pod_watch_timeout() {
    let pods = [unschedulable_pod(&[triggered_scale_up(at(5))])];
    assert_eq!(
        decide_at(&[job(Some("10"))], &pods, at(20)),
        Decision::WaitUntil(at(60))
    );
}

#[test]
fn a_refusal_of_cluster_autoscaler_crashes_at_once_with_its_reason() {
    let jobs = [job(None)];
    let pods = [unschedulable_pod(&[not_triggered_scale_up(at(3))])];
    let Decision::ProposeCrashed(report) = decide_at(&jobs, &pods, at(4)) else {
        panic!("crashed at once, long before the pod-watch timeout");
    };
    let CrashCause::ScaleUpRefused { signal, .. } = &report.cause else {
        panic!("{:?}", report.cause);
    };
    assert_eq!(signal.verdict, ScaleUpVerdict::Refused);
    assert_eq!(
        crash_message(&report, None),
        format!(
            "Pod prefect/crimson-otter-x7k2p-5bhw4 (Job crimson-otter-x7k2p) cannot be scheduled \
             and cluster-autoscaler will not add a node for it: NotTriggerScaleUp: pod didn't \
             trigger scale-up: 1 max node group size reached. The scheduler says: \
             {SCHEDULER_MESSAGE}"
        )
    );
}

#[test]
fn a_refusal_of_karpenter_crashes_at_once_with_its_reason() {
    let nominated = autoscaler_event(
        "karpenter",
        "Normal",
        "Nominated",
        "Pod should schedule on: nodeclaim/gpu-x7k2p",
        at(2),
        at(2),
    );
    let failed = autoscaler_event(
        "karpenter",
        "Warning",
        "FailedScheduling",
        "Failed to schedule pod, all available instance types exceed limits for nodepool",
        at(30),
        at(30),
    );
    let jobs = [job(None)];
    let coming = [unschedulable_pod(std::slice::from_ref(&nominated))];
    assert_eq!(
        decide_at(&jobs, &coming, at(61)),
        Decision::WaitUntil(at(1202))
    );
    let refused = [unschedulable_pod(&[nominated, failed])];
    let Decision::ProposeCrashed(report) = decide_at(&jobs, &refused, at(31)) else {
        panic!("crashed");
    };
    assert!(
        crash_message(&report, None).contains(
            "Karpenter will not add a node for it: FailedScheduling: Failed to schedule pod, \
             all available instance types exceed limits for nodepool."
        ),
        "{}",
        crash_message(&report, None)
    );
}

#[test]
fn only_the_latest_word_counts_and_the_limit_runs_from_the_first_scale_up() {
    let jobs = [job(Some("600"))];
    let changed_mind = [unschedulable_pod(&[
        triggered_scale_up(at(5)),
        not_triggered_scale_up(at(100)),
        triggered_scale_up(at(200)),
    ])];
    assert_eq!(
        decide_at(&jobs, &changed_mind, at(300)),
        Decision::WaitUntil(at(605))
    );
}

#[test]
fn a_disabled_pod_watch_timeout_waits_whatever_the_autoscaler_says() {
    let jobs = [JobFixture::new()
        .pod_watch_timeout(Some("0"))
        .active()
        .view()];
    let pods = [unschedulable_pod(&[not_triggered_scale_up(at(3))])];
    assert_eq!(decide_at(&jobs, &pods, at(100_000)), Decision::Nothing);
}

#[test]
fn a_refusal_does_not_crash_a_run_that_is_not_pending_or_running() {
    let pods = [unschedulable_pod(&[not_triggered_scale_up(at(3))])];
    let cancelling = run_state(StateType::Cancelling, "Cancelling");
    let decision = decide(&DecisionInput {
        run_state: &cancelling,
        jobs: &[job(None)],
        pods: &pods,
        now: at(4),
        settings: &DecisionSettings::default(),
    });
    assert_eq!(decision, Decision::Nothing);
}
