//! The autoscalers' Events as they word them (see the module's table for the sources),
//! read into signals, summaries and per-pod views.

use super::*;
use crate::test_fixtures::*;

fn signal_of(event: &Event) -> ScaleUpSignal {
    let (pod, signal) = scale_up_signal(event).expect("an autoscaler signal");
    assert_eq!(pod.uid.as_deref(), Some(POD_UID));
    assert_eq!((&*pod.namespace, &*pod.name), (NAMESPACE, POD_NAME));
    signal
}

#[test]
fn cluster_autoscaler_scale_up_is_a_node_coming_for_a_node_group() {
    let signal = signal_of(&triggered_scale_up(at(5)));
    assert_eq!(signal.autoscaler, Autoscaler::ClusterAutoscaler);
    assert_eq!(signal.verdict, ScaleUpVerdict::Coming);
    assert_eq!(signal.first_seen, Some(at(5)));
    assert_eq!(signal.summary(), "scale-up of nodegroup gpu 1→2 triggered");
    assert_eq!(
        signal.log_line(POD_NAME),
        "Waiting for a new node: scale-up of nodegroup gpu 1→2 triggered (Kubernetes event \
         TriggeredScaleUp on pod crimson-otter-x7k2p-5bhw4 from cluster-autoscaler: pod \
         triggered scale-up: [{gpu 1->2 (max: 3)}])"
    );
}

#[test]
fn several_groups_and_gce_group_urls_are_summarized() {
    // The FAQ's example of a GCE managed instance group, plus a second group.
    let event = autoscaler_event(
        "cluster-autoscaler",
        "Normal",
        "TriggeredScaleUp",
        "pod triggered scale-up: [{https://content.googleapis.com/compute/v1/projects/p/zones/us-central1-b/instanceGroups/e2e-minion-group 3->4 (max: 10)} {cpu 0->1 (max: 5)}]",
        at(1),
        at(1),
    );
    assert_eq!(
        signal_of(&event).summary(),
        "scale-up of nodegroups e2e-minion-group 3→4, cpu 0→1 triggered"
    );
    let odd = autoscaler_event(
        "cluster-autoscaler",
        "Normal",
        "TriggeredScaleUp",
        "pod triggered scale-up: something new",
        at(1),
        at(1),
    );
    assert_eq!(
        signal_of(&odd).summary(),
        "cluster-autoscaler triggered a scale-up (pod triggered scale-up: something new)"
    );
}

#[test]
fn cluster_autoscaler_refusals_are_refused() {
    for (reason, message) in [
        (
            "NotTriggerScaleUp",
            "pod didn't trigger scale-up: 1 max node group size reached",
        ),
        (
            "NotTriggerScaleUp",
            "pod didn't trigger scale-up: 1 in backoff after failed scale-up",
        ),
        ("NotTriggerScaleUp", "pod didn't trigger scale-up: 2 Insufficient cpu"),
        (
            "FailedScaleUp",
            "Node scale up in zones us-central1-b associated with this pod failed: GCE quota exceeded. Pod is at risk of not being scheduled.",
        ),
    ] {
        let event = autoscaler_event("cluster-autoscaler", "Normal", reason, message, at(3), at(3));
        let signal = signal_of(&event);
        assert_eq!(signal.verdict, ScaleUpVerdict::Refused, "{reason}");
        assert_eq!(
            signal.summary(),
            format!("cluster-autoscaler will not add a node: {message}")
        );
        assert!(signal.log_line(POD_NAME).starts_with("No new node is coming: Kubernetes event"));
    }
}

#[test]
fn karpenter_nomination_is_a_node_coming_and_its_failed_scheduling_a_refusal() {
    let nominated = autoscaler_event(
        "karpenter",
        "Normal",
        "Nominated",
        "Pod should schedule on: nodeclaim/gpu-x7k2p",
        at(2),
        at(2),
    );
    let signal = signal_of(&nominated);
    assert_eq!(
        (signal.autoscaler, signal.verdict),
        (Autoscaler::Karpenter, ScaleUpVerdict::Coming)
    );
    assert_eq!(signal.summary(), "Karpenter nominated nodeclaim/gpu-x7k2p");
    let failed = autoscaler_event(
        "karpenter",
        "Warning",
        "FailedScheduling",
        "Failed to schedule pod, node limits have been exhausted for nodepool",
        at(4),
        at(4),
    );
    let signal = signal_of(&failed);
    assert_eq!(
        (signal.autoscaler, signal.verdict),
        (Autoscaler::Karpenter, ScaleUpVerdict::Refused)
    );
}

#[test]
fn the_default_scheduler_and_other_events_are_no_signal() {
    let scheduler = autoscaler_event(
        "default-scheduler",
        "Warning",
        "FailedScheduling",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
        at(1),
        at(1),
    );
    assert_eq!(scale_up_signal(&scheduler), None);
    let pulled = pod_event("Normal", "Pulled", "Pulled image", 1, at(1), None);
    assert_eq!(scale_up_signal(&pulled), None);
    let mut about_a_node = triggered_scale_up(at(1));
    about_a_node.involved_object.kind = Some("Node".into());
    assert_eq!(scale_up_signal(&about_a_node), None);
}

#[test]
fn the_view_keeps_the_first_scale_up_and_the_latest_word() {
    let mut view = ScaleUpView::new(signal_of(&triggered_scale_up(at(10))));
    assert_eq!(view.coming_since, Some(at(10)));
    assert!(!view.is_refused());
    assert!(
        !view.observe(signal_of(&triggered_scale_up(at(10)))),
        "a repeat changes nothing"
    );
    // A later scale-up for the same pod keeps the limit counting from the first.
    assert!(view.observe(signal_of(&triggered_scale_up(at(40)))));
    assert_eq!(view.coming_since, Some(at(10)));
    assert!(view.observe(signal_of(&not_triggered_scale_up(at(50)))));
    assert!(view.is_refused());
    // An older scale-up seen late (e.g. listed after the refusal) does not hide it.
    assert!(!view.observe(signal_of(&triggered_scale_up(at(40)))));
    assert!(view.is_refused());
    assert!(view.observe(signal_of(&triggered_scale_up(at(60)))));
    assert!(!view.is_refused(), "the autoscaler changed its mind");
}

#[test]
fn a_refusal_seen_first_then_a_scale_up_counts_from_the_scale_up() {
    let mut view = ScaleUpView::new(signal_of(&not_triggered_scale_up(at(5))));
    assert_eq!(view.coming_since, None);
    assert!(view.is_refused());
    view.observe(signal_of(&triggered_scale_up(at(30))));
    assert_eq!(view.coming_since, Some(at(30)));
    assert!(!view.is_refused());
}
