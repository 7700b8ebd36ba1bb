//! Measures what the reporter holds per flow run: 10,000 realistic Pods and their Jobs
//! (labels, env, managed fields, statuses as a kubelet and the Job controller write
//! them) are turned into views and kept in the view store, and a counting allocator
//! reports the heap the store holds, next to what the whole objects would take.
//!
//! `cargo run --release -p reporter --example view_memory [count]`

use std::alloc::System;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use reporter::service::store::ViewStore;
use reporter::{JobView, PodView};
use serde_json::{json, Value};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use uuid::Uuid;

/// The system allocator, counting the bytes currently allocated
/// (`stats_alloc` holds the `unsafe` of a global allocator, so this crate
/// stays free of it).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn allocated() -> isize {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

fn managed_fields(manager: &str) -> Value {
    json!([{
        "manager": manager, "operation": "Update", "apiVersion": "v1",
        "time": "2026-11-27T05:00:00Z", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:prefect.io/flow-run-id": {}, "f:prefect.io/flow-run-name": {}, "f:prefect.io/deployment-id": {}}},
                     "f:spec": {"f:containers": {"k:{\"name\":\"prefect-job\"}": {".": {}, "f:env": {}, "f:image": {}, "f:resources": {}}}},
                     "f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:phase": {}}}
    }])
}

fn pod(index: usize, run: Uuid, job_uid: &str) -> Pod {
    let job = format!("flow-run-{index}-a1b2c3d4e5f60718");
    let env: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("PREFECT_VAR_{i}"), "value": format!("value-{i}-{run}")}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("{job}-x7k2p"), "namespace": "prefect", "uid": Uuid::new_v4().to_string(),
            "creationTimestamp": "2026-11-27T05:00:00Z", "resourceVersion": "123456",
            "labels": {"prefect.io/flow-run-id": run.to_string(), "prefect.io/flow-run-name": "crimson-otter",
                       "prefect.io/deployment-id": Uuid::new_v4().to_string(), "job-name": job,
                       "batch.kubernetes.io/job-name": job, "controller-uid": job_uid,
                       "batch.kubernetes.io/controller-uid": job_uid},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": job_uid,
                                 "controller": true, "blockOwnerDeletion": true}],
            "managedFields": managed_fields("kube-controller-manager"),
        },
        "spec": {
            "restartPolicy": "Never", "nodeName": "node-1",
            "containers": [{"name": "prefect-job", "image": "registry.example.com/flows/etl:2.1",
                            "args": ["prefect", "flow-run", "execute"], "env": env,
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}],
        },
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-27T05:00:01Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-27T05:00:01Z"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "message": "containers with unready status: [prefect-job]", "lastTransitionTime": "2026-11-27T05:00:01Z"},
            ],
            "containerStatuses": [{
                "name": "prefect-job", "image": "registry.example.com/flows/etl:2.1", "imageID": "",
                "ready": false, "restartCount": 0, "started": false,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                                      "message": "Back-off pulling image \"registry.example.com/flows/etl:2.1\""}},
            }],
            "hostIP": "10.0.0.4", "podIP": "10.244.1.17", "startTime": "2026-11-27T05:00:01Z", "qosClass": "Burstable",
        },
    }))
    .expect("a Pod")
}

fn job(index: usize, run: Uuid, uid: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {
            "name": format!("flow-run-{index}-a1b2c3d4e5f60718"), "namespace": "prefect", "uid": uid,
            "creationTimestamp": "2026-11-27T05:00:00Z", "resourceVersion": "123400",
            "labels": {"prefect.io/flow-run-id": run.to_string(), "prefect.io/flow-run-name": "crimson-otter"},
            "annotations": {"prefect-k8s.io/pod-watch-timeout-seconds": "60"},
            "managedFields": managed_fields("prefect-k8s-dispatcher"),
        },
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600,
                 "template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "prefect-job", "image": "registry.example.com/flows/etl:2.1"}]}}},
        "status": {"active": 1, "startTime": "2026-11-27T05:00:00Z", "ready": 0, "terminating": 0,
                   "uncountedTerminatedPods": {}},
    }))
    .expect("a Job")
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let mut objects_bytes = 0usize;
    let before = allocated();
    let mut store = ViewStore::default();
    let now = chrono::Utc::now();
    for index in 0..count {
        let run = Uuid::new_v4();
        let job_uid = Uuid::new_v4().to_string();
        let job = job(index, run, &job_uid);
        let pod = pod(index, run, &job_uid);
        objects_bytes += serde_json::to_vec(&job).map_or(0, |b| b.len());
        objects_bytes += serde_json::to_vec(&pod).map_or(0, |b| b.len());
        store.apply_job(JobView::from_job(&job).expect("ours"));
        store.apply_pod(PodView::from_pod(&pod).expect("ours"), now);
    }
    let _ = store.take_dirty();
    let held = allocated() - before;
    let mb = |bytes: f64| bytes / (1024.0 * 1024.0);
    println!(
        "{count} pods + {count} Jobs: the view store holds {:.1} MiB ({:.0} bytes per run); \
         the whole objects as JSON would be {:.1} MiB",
        mb(held as f64),
        held as f64 / count as f64,
        mb(objects_bytes as f64),
    );
    let (jobs, pods, runs) = store.counts();
    assert_eq!((jobs, pods, runs), (count, count, count));

    // For comparison: what a reflector keeping the typed objects would hold.
    let before = allocated();
    let objects: Vec<(Job, Pod)> = (0..count)
        .map(|index| {
            let (run, job_uid) = (Uuid::new_v4(), Uuid::new_v4().to_string());
            (job(index, run, &job_uid), pod(index, run, &job_uid))
        })
        .collect();
    let typed = allocated() - before;
    println!(
        "the same objects kept whole (k8s-openapi types) hold {:.1} MiB",
        mb(typed as f64)
    );
    drop(objects);
}
