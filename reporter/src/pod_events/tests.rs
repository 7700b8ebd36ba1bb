//! The events of pods as the observer would make them, ids checked against
//! values computed with prefect-kubernetes' own formula in Python.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::*;

const UID: &str = "0b0e4a6e-5d0a-4a35-9d8a-1f6f0d8c9b11";

fn now() -> Timestamp {
    "2026-05-01T12:00:00Z".parse().unwrap()
}

fn pod(status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "uid": UID,
            "name": "crimson-otter-0123456789abcdef-x7k2p",
            "namespace": "prefect",
            "creationTimestamp": "2026-05-01T11:00:00Z",
            "labels": {
                "prefect.io/flow-run-id": "5f8a1a5e-0000-4000-8000-000000000001",
                "prefect.io/flow-run-name": "crimson-otter",
                "prefect.io/deployment-id": "5f8a1a5e-0000-4000-8000-000000000002",
                "prefect.io/deployment-name": "nightly",
                "prefect.io/flow-id": "5f8a1a5e-0000-4000-8000-000000000003",
                "prefect.io/flow-name": "etl",
                "prefect.io/work-pool-id": "5f8a1a5e-0000-4000-8000-000000000004",
                "prefect.io/work-pool-name": "k8s",
                "prefect.io/worker-name": "My-Worker_1",
            },
        },
        "status": status,
    }))
    .unwrap()
}

fn running(restarts: i32) -> Value {
    json!({
        "phase": "Running",
        "startTime": "2026-05-01T11:00:05Z",
        "containerStatuses": [{
            "name": "prefect-job", "image": "x", "imageID": "", "ready": true,
            "restartCount": restarts,
            "state": {"running": {"startedAt": "2026-05-01T11:00:09Z"}},
        }],
    })
}

#[test]
fn ids_are_the_observers() {
    // uuid.uuid5(uuid.NAMESPACE_URL, json.dumps({"uid": UID, "phase": "Running",
    // "restart_count": 1, "diagnosis": d}, sort_keys=True)) in prefect-kubernetes 0.8.
    assert_eq!(
        event_id(UID, "Running", 1, None).to_string(),
        "9160b5e9-dd4e-5386-8051-ffe320814829"
    );
    assert_eq!(
        event_id(UID, "Running", 1, Some("ImagePullError")).to_string(),
        "9cdc1665-3d88-55ce-b2ac-64bf0d31bc22"
    );
    let event = PodEvent::from_pod(&pod(running(1)), true, now()).unwrap();
    assert_eq!(event.id.to_string(), "9160b5e9-dd4e-5386-8051-ffe320814829");
}

#[test]
fn a_running_pod_names_its_run_deployment_flow_pool_and_worker() {
    let event = PodEvent::from_pod(&pod(running(0)), true, now()).unwrap();
    assert_eq!(event.event, "prefect.kubernetes.pod.running");
    assert_eq!(
        event.occurred,
        "2026-05-01T11:00:09Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(
        serde_json::to_value(&event.resource).unwrap(),
        json!({
            "prefect.resource.id": format!("prefect.kubernetes.pod.{UID}"),
            "prefect.resource.name": "crimson-otter-0123456789abcdef-x7k2p",
            "kubernetes.namespace": "prefect",
        })
    );
    let related = serde_json::to_value(&event.related).unwrap();
    assert_eq!(
        related,
        json!([
            {"prefect.resource.id": "prefect.flow-run.5f8a1a5e-0000-4000-8000-000000000001",
             "prefect.resource.role": "flow-run", "prefect.resource.name": "crimson-otter"},
            {"prefect.resource.id": "prefect.deployment.5f8a1a5e-0000-4000-8000-000000000002",
             "prefect.resource.role": "deployment", "prefect.resource.name": "nightly"},
            {"prefect.resource.id": "prefect.flow.5f8a1a5e-0000-4000-8000-000000000003",
             "prefect.resource.role": "flow", "prefect.resource.name": "etl"},
            {"prefect.resource.id": "prefect.work-pool.5f8a1a5e-0000-4000-8000-000000000004",
             "prefect.resource.role": "work-pool", "prefect.resource.name": "k8s"},
            {"prefect.resource.id": "prefect.worker.kubernetes.my-worker-1",
             "prefect.resource.role": "worker", "prefect.resource.name": "My-Worker_1",
             "prefect.worker-type": "kubernetes", "prefect.version": "3.9.1"},
        ])
    );
    assert_eq!(event.work_pool_label.as_deref(), Some("k8s"));
    let sent = event.to_prefect(Some(Uuid::from_u128(7)));
    assert_eq!(sent.follows, Some(Uuid::from_u128(7)));
    assert_eq!(sent.id, event.id);
}

#[test]
fn a_pending_pod_occurs_at_its_creation_and_carries_its_diagnosis() {
    let pulling = json!({
        "phase": "Pending",
        "containerStatuses": [{
            "name": "prefect-job", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}},
        }],
    });
    let event = PodEvent::from_pod(&pod(pulling), true, now()).unwrap();
    assert_eq!(event.event, "prefect.kubernetes.pod.pending");
    assert_eq!(
        event.occurred,
        "2026-05-01T11:00:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(event.resource["kubernetes.diagnosis"], "ImagePullError");
    assert_eq!(
        event.id,
        event_id(UID, "Pending", 0, Some("ImagePullError"))
    );
    let unschedulable = json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu."}],
    });
    let event = PodEvent::from_pod(&pod(unschedulable), false, now()).unwrap();
    assert_eq!(
        event.resource["kubernetes.diagnosis"],
        "Unschedulable.InsufficientResources"
    );
}

fn failed(reason: &str) -> Value {
    json!({
        "phase": "Failed",
        "containerStatuses": [{
            "name": "prefect-job", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"reason": reason, "exitCode": 1,
                                     "finishedAt": "2026-05-01T11:05:00Z"}},
        }],
    })
}

#[test]
fn a_failure_seen_live_is_named_evicted_as_the_observer_names_it() {
    let live = PodEvent::from_pod(&pod(failed("Error")), true, now()).unwrap();
    assert_eq!(live.event, "prefect.kubernetes.pod.evicted");
    assert_eq!(live.resource["kubernetes.reason"], "Error");
    assert_eq!(
        live.occurred,
        "2026-05-01T11:05:00Z".parse::<Timestamp>().unwrap()
    );
    let listed = PodEvent::from_pod(&pod(failed("Error")), false, now()).unwrap();
    assert_eq!(listed.event, "prefect.kubernetes.pod.failed");
    assert!(!listed.resource.contains_key("kubernetes.reason"));
    assert_eq!(
        live.id, listed.id,
        "the same observation, whatever its name"
    );
    let oom = PodEvent::from_pod(&pod(failed("OOMKilled")), false, now()).unwrap();
    assert_eq!(oom.resource["kubernetes.diagnosis"], "OOMKilled");
}

#[test]
fn a_phase_without_a_time_occurs_when_seen_and_a_pod_without_phase_has_no_event() {
    let event = PodEvent::from_pod(&pod(json!({"phase": "Unknown"})), true, now()).unwrap();
    assert_eq!(event.event, "prefect.kubernetes.pod.unknown");
    assert_eq!(event.occurred, now());
    assert_eq!(PodEvent::from_pod(&pod(json!({})), true, now()), None);
}
