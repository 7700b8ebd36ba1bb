//! Namespace deletion as kube-controller-manager does it: `Terminating` with `spec.finalizers`
//! kept, creation refused with the NamespaceLifecycle 403, the content left alone for the
//! controller's grace period, then deleted (finalizers and GC included) while the deletion
//! conditions report what remains, and finally the Namespace itself goes. `kubectl delete -f`
//! of a stream that starts with its Namespace deletes everything it lists.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

fn slow_job() -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "slow"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"kube-emulator.io/script": "ignore-sigterm"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 3,
                     "containers": [{"name": "main", "image": "busybox:1.36"}]}}}
    }))
    .unwrap()
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn condition(namespaces: &Api<Namespace>, kind: &str) -> Option<(String, String, String)> {
    let ns = namespaces.get_opt("work").await.ok()??;
    let c = ns
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == kind)?;
    Some((c.status, c.reason?, c.message?))
}

#[tokio::test]
async fn a_deleted_namespace_terminates_then_goes() {
    let emulator = support::start(kube_emulator::RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "work"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "work");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "work");
    jobs.create(&PostParams::default(), &slow_job())
        .await
        .unwrap();
    support::eventually("job pod running", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .then_some(())
    })
    .await;

    let deleted = namespaces
        .delete("work", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the Namespace is returned while it terminates");
    assert_eq!(
        deleted.status.as_ref().unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert!(deleted.metadata.deletion_timestamp.is_some());
    assert_eq!(
        deleted.spec.as_ref().unwrap().finalizers,
        Some(vec!["kubernetes".to_string()])
    );
    // The controller waits its grace period: the content is still there.
    assert!(jobs.get_opt("slow").await.unwrap().is_some());

    // Nothing new may be created, with the NamespaceLifecycle wording.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "work");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
    let err = api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(err.code, 403);
    assert_eq!(err.reason, "Forbidden");
    assert_eq!(
        err.message,
        "configmaps \"late\" is forbidden: unable to create new content in namespace work because it is being terminated"
    );
    let mut generated = support::job("", "busybox", &["true"], 0);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("run-".into());
    let err = api_error(
        jobs.create(&PostParams::default(), &generated)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "jobs.batch is forbidden: unable to create new content in namespace work because it is being terminated"
    );

    // The pod ignores SIGTERM for its 3 s grace period: the conditions say what remains.
    let remaining = support::eventually("content-remaining condition", || async {
        condition(&namespaces, "NamespaceContentRemaining")
            .await
            .filter(|c| c.0 == "True")
    })
    .await;
    assert_eq!(remaining.1, "SomeResourcesRemain");
    assert!(
        remaining
            .2
            .starts_with("Some resources are remaining: pods. has 1 resource instances"),
        "{remaining:?}"
    );
    let failure = condition(&namespaces, "NamespaceDeletionContentFailure")
        .await
        .unwrap();
    assert_eq!(
        failure,
        (
            "False".into(),
            "ContentDeleted".into(),
            "All content successfully deleted, may be waiting on finalization".into()
        )
    );
    let discovery = condition(&namespaces, "NamespaceDeletionDiscoveryFailure")
        .await
        .unwrap();
    assert_eq!(discovery.1, "ResourcesDiscovered");

    support::eventually("namespace gone", || async {
        namespaces
            .get_opt("work")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(jobs.get_opt("slow").await.unwrap().is_none());
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    emulator.shutdown().await;
}

const STACK: &str = "apiVersion: v1
kind: Namespace
metadata: {name: stack}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: runner, namespace: stack}
---
apiVersion: v1
kind: Secret
metadata: {name: api-key, namespace: stack}
stringData: {key: secret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: stack}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: stack}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx:1.27}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: task, namespace: stack}
spec:
  template:
    metadata: {annotations: {kube-emulator.io/script: hang}}
    spec:
      restartPolicy: Never
      containers: [{name: main, image: busybox:1.36}]
";

#[tokio::test]
async fn kubectl_delete_f_of_a_stream_starting_with_its_namespace_deletes_it_all() {
    let emulator = Emulator::start(EmulatorConfig {
        namespace_deletion_delay: Duration::from_secs(5),
        ..EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let (ok, out, err) = support::kubectl_with_input(&emulator, &["apply", "-f", "-"], STACK).await;
    assert!(ok, "{err}");
    assert!(out.contains("job.batch/task created"), "{out}");
    support::eventually("job pod running", || async {
        let (_, out, _) = support::kubectl(&emulator, &["-n", "stack", "get", "pods"]).await;
        out.contains("Running").then_some(())
    })
    .await;
    let (ok, out, err) =
        support::kubectl_with_input(&emulator, &["delete", "-f", "-"], STACK).await;
    assert!(ok, "delete -f failed: {err}");
    for line in [
        "namespace \"stack\" deleted",
        "serviceaccount \"runner\" deleted",
        "secret \"api-key\" deleted",
        "configmap \"settings\" deleted",
        "deployment.apps \"web\" deleted",
        "job.batch \"task\" deleted",
    ] {
        assert!(out.contains(line), "{line:?} missing from {out}");
    }
    assert_eq!(err, "", "kubectl reported errors");
    // kubectl waited for every object, the Namespace included.
    let (ok, _, err) = support::kubectl(&emulator, &["get", "namespace", "stack"]).await;
    assert!(!ok);
    assert!(err.contains("namespaces \"stack\" not found"), "{err}");
    emulator.shutdown().await;
}
