//! The simulated node autoscaler: a pod no node fits makes a node group grow (the node
//! registers after the group's delay and the pod runs on it), up to the group's maximum,
//! and the pod carries the Events of cluster-autoscaler or Karpenter, worded as theirs.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube_emulator::{
    AutoscalerConfig, AutoscalerStyle, Emulator, EmulatorConfig, NodeCapacity, NodeGroup,
    Provisioning,
};
use serde_json::json;

fn group(max_size: u32, provisioning: Provisioning) -> NodeGroup {
    NodeGroup {
        name: "gpu".into(),
        node_capacity: NodeCapacity {
            cpu: "16".into(),
            memory: "64Gi".into(),
            pods: 110,
        },
        initial_size: 0,
        max_size,
        provisioning,
    }
}

async fn start(style: AutoscalerStyle, group: NodeGroup) -> Emulator {
    Emulator::start(EmulatorConfig {
        node_capacity: NodeCapacity {
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
        },
        autoscaler: Some(AutoscalerConfig {
            style,
            node_groups: vec![group],
            scan_interval: Duration::from_millis(100),
        }),
        ..EmulatorConfig::fast()
    })
    .await
    .expect("emulator starts")
}

/// A pod asking for `cpu` cores.
async fn create_pod(client: &kube::Client, name: &str, cpu: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "hang",
            "resources": {"requests": {"cpu": cpu}}}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

/// The pod's Events from `component`: (reason, message).
async fn events_from(client: &kube::Client, pod: &str, component: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| {
            event.source.as_ref().and_then(|s| s.component.as_deref()) == Some(component)
        })
        .map(|event| {
            (
                event.reason.unwrap_or_default(),
                event.message.unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_for_event(client: &kube::Client, pod: &str, component: &str, reason: &str) -> String {
    support::eventually(&format!("{reason} on {pod}"), || async {
        events_from(client, pod, component)
            .await
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, message)| message)
    })
    .await
}

async fn node_of(client: &kube::Client, pod: &str) -> Option<String> {
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get(pod)
        .await
        .ok()?;
    pod.spec?.node_name
}

async fn running(client: &kube::Client, pod: &str) -> bool {
    let pod = Api::<Pod>::namespaced(client.clone(), "default")
        .get(pod)
        .await
        .unwrap();
    pod.status.and_then(|s| s.phase).as_deref() == Some("Running")
}

#[tokio::test]
async fn cluster_autoscaler_adds_a_node_after_its_delay_and_the_pod_runs_there() {
    let emulator = start(
        AutoscalerStyle::ClusterAutoscaler,
        group(2, Provisioning::After(Duration::from_millis(1500))),
    )
    .await;
    let client = emulator.client().unwrap();
    create_pod(&client, "trainer", "12").await;
    let triggered =
        wait_for_event(&client, "trainer", "cluster-autoscaler", "TriggeredScaleUp").await;
    assert_eq!(triggered, "pod triggered scale-up: [{gpu 0->1 (max: 2)}]");
    assert_eq!(node_of(&client, "trainer").await, None, "no node yet");
    let scheduling = events_from(&client, "trainer", "default-scheduler").await;
    assert!(scheduling
        .iter()
        .any(|(reason, message)| reason == "FailedScheduling"
            && message.starts_with("0/1 nodes are available: 1 Insufficient cpu.")));
    support::eventually("the pod runs on the new node", || async {
        (node_of(&client, "trainer").await.as_deref() == Some("gpu-1")
            && running(&client, "trainer").await)
            .then_some(())
    })
    .await;
    let node = Api::<Node>::all(client.clone()).get("gpu-1").await.unwrap();
    let labels = node.metadata.labels.unwrap();
    assert_eq!(
        labels
            .get("kube-emulator.io/node-group")
            .map(String::as_str),
        Some("gpu")
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn cluster_autoscaler_says_why_it_does_not_help() {
    let emulator = start(
        AutoscalerStyle::ClusterAutoscaler,
        group(1, Provisioning::Never),
    )
    .await;
    let client = emulator.client().unwrap();
    create_pod(&client, "first", "10").await;
    wait_for_event(&client, "first", "cluster-autoscaler", "TriggeredScaleUp").await;
    // Too big for the node there is, it fits on the node already coming: no Event
    // (cluster-autoscaler counts it as schedulable on upcoming nodes).
    create_pod(&client, "small", "5").await;
    // The group is at its maximum with the first node, which never registers.
    create_pod(&client, "second", "12").await;
    let refused =
        wait_for_event(&client, "second", "cluster-autoscaler", "NotTriggerScaleUp").await;
    assert_eq!(
        refused,
        "pod didn't trigger scale-up: 1 max node group size reached"
    );
    create_pod(&client, "huge", "100").await;
    let refused = wait_for_event(&client, "huge", "cluster-autoscaler", "NotTriggerScaleUp").await;
    assert_eq!(refused, "pod didn't trigger scale-up: 1 Insufficient cpu");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events_from(&client, "small", "cluster-autoscaler")
        .await
        .is_empty());
    assert_eq!(
        node_of(&client, "first").await,
        None,
        "the node never registers"
    );
    assert_eq!(
        events_from(&client, "first", "cluster-autoscaler")
            .await
            .len(),
        1,
        "each verdict once"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_refused_scale_up_puts_the_group_in_backoff() {
    let emulator = start(
        AutoscalerStyle::ClusterAutoscaler,
        group(
            3,
            Provisioning::Refused("QUOTA_EXCEEDED: Quota 'NVIDIA_T4_GPUS' exceeded.".into()),
        ),
    )
    .await;
    let client = emulator.client().unwrap();
    create_pod(&client, "trainer", "12").await;
    let triggered =
        wait_for_event(&client, "trainer", "cluster-autoscaler", "TriggeredScaleUp").await;
    assert_eq!(triggered, "pod triggered scale-up: [{gpu 0->1 (max: 3)}]");
    let refused = wait_for_event(
        &client,
        "trainer",
        "cluster-autoscaler",
        "NotTriggerScaleUp",
    )
    .await;
    assert_eq!(
        refused,
        "pod didn't trigger scale-up: 1 in backoff after failed scale-up"
    );
    assert!(Api::<Node>::all(client.clone())
        .get_opt("gpu-1")
        .await
        .unwrap()
        .is_none());
    emulator.shutdown().await;
}

#[tokio::test]
async fn karpenter_nominates_a_nodeclaim_and_says_when_its_limits_are_reached() {
    let emulator = start(
        AutoscalerStyle::Karpenter,
        group(1, Provisioning::After(Duration::from_millis(1000))),
    )
    .await;
    let client = emulator.client().unwrap();
    create_pod(&client, "trainer", "12").await;
    let nominated = wait_for_event(&client, "trainer", "karpenter", "Nominated").await;
    let claim = nominated
        .strip_prefix("Pod should schedule on: nodeclaim/")
        .unwrap_or_else(|| panic!("{nominated}"))
        .to_owned();
    assert!(claim.starts_with("gpu-") && claim.len() == 9, "{claim}");
    create_pod(&client, "second", "12").await;
    let failed = wait_for_event(&client, "second", "karpenter", "FailedScheduling").await;
    assert_eq!(
        failed,
        "Failed to schedule pod, node limits have been exhausted for nodepool"
    );
    support::eventually("the pod runs on the nodeclaim's node", || async {
        (node_of(&client, "trainer").await.as_deref() == Some(claim.as_str())
            && running(&client, "trainer").await)
            .then_some(())
    })
    .await;
    let node = Api::<Node>::all(client.clone()).get(&claim).await.unwrap();
    let labels = node.metadata.labels.unwrap();
    assert_eq!(
        labels.get("karpenter.sh/nodepool").map(String::as_str),
        Some("gpu")
    );
    emulator.shutdown().await;
}
