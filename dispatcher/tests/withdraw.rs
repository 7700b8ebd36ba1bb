//! Withdrawing a Job (its run is not ours any more) against the Kubernetes
//! API emulator: only a Job still suspended is deleted. Two deliveries of one
//! message can overlap (the first outlived its ack wait): one creates the Job,
//! the other finds it and releases it, and the flow may already be between
//! in-process retries (AwaitingRetry) when the first one's read says "moved
//! on". Found by the long fault campaign: the first delivery deleted the
//! running Job and the run stayed AwaitingRetry for good.

use std::time::Duration;

use dispatcher::kubernetes::{Jobs, Withdrawal};
use flow_run_proto::kubernetes::CLAIM_ANNOTATION;
use flow_run_proto::{InfrastructurePid, SubmissionKey};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use uuid::Uuid;

/// A Job as the renderer makes it: named, and annotated with its claim.
fn manifest(name: &str, key: &SubmissionKey) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "default",
            "annotations": {CLAIM_ANNOTATION: key.claim_annotation()},
        },
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "prefect-job", "image": "example/flow:1"}]
        }}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_released_by_another_delivery_is_not_withdrawn_and_a_suspended_one_is() {
    let emulator = kube_emulator::Emulator::start(kube_emulator::EmulatorConfig::fast())
        .await
        .unwrap();
    let client = emulator.client().unwrap();
    let jobs = Jobs::new(client.clone(), Duration::from_secs(10));
    let api: Api<Job> = Api::namespaced(client, "default");

    // Delivery A creates the Job; delivery B finds it and releases it.
    let key = SubmissionKey::new(Uuid::new_v4(), Uuid::new_v4());
    let released = InfrastructurePid::new("default", "released-run");
    jobs.create_suspended(&released, &manifest("released-run", &key), &key)
        .await
        .unwrap();
    let found = jobs
        .create_suspended(&released, &manifest("released-run", &key), &key)
        .await
        .unwrap();
    assert!(found.already_existed && found.suspended);
    assert!(jobs.release(&released).await.unwrap());
    // A's read found the run moved on: its withdrawal leaves B's Job alone.
    assert_eq!(
        jobs.withdraw(&released).await.unwrap(),
        Withdrawal::Released
    );
    let job = api.get_opt("released-run").await.unwrap();
    assert!(
        job.is_some_and(|job| job.metadata.deletion_timestamp.is_none()),
        "still there"
    );

    // A Job nobody released is deleted; withdrawing it again finds it gone.
    let other = SubmissionKey::new(Uuid::new_v4(), Uuid::new_v4());
    let suspended = InfrastructurePid::new("default", "suspended-run");
    jobs.create_suspended(&suspended, &manifest("suspended-run", &other), &other)
        .await
        .unwrap();
    assert_eq!(
        jobs.withdraw(&suspended).await.unwrap(),
        Withdrawal::Deleted
    );
    kube_emulator_gone(&api, "suspended-run").await;
    assert_eq!(jobs.withdraw(&suspended).await.unwrap(), Withdrawal::Gone);
}

async fn kube_emulator_gone(api: &Api<Job>, name: &str) {
    for _ in 0..100 {
        if api.get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} was not deleted");
}
