//! kube-rs `Api` verbs against the emulator over real HTTP: create/get/list/replace/patch
//! (merge, strategic, JSON, apply)/delete/deletecollection, status codes and Status errors,
//! generateName, resourceVersion discipline, paging and selectors.

mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube_emulator::RuntimeKind;
use serde_json::json;

fn api_error(err: kube::Error) -> Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "demo", "tier": name}}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn crud_verbs_follow_apiserver_semantics() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms
        .create(&PostParams::default(), &config_map("one"))
        .await
        .unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());

    // 409 AlreadyExists with the real message.
    let err = api_error(
        cms.create(&PostParams::default(), &config_map("one"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"one\" already exists");

    // A no-op replace does not bump the resourceVersion.
    let same = cms
        .replace("one", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );

    // Merge patch bumps it; a stale replace then conflicts.
    let patched = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert_ne!(
        patched.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let err = api_error(
        cms.replace("one", &PostParams::default(), &created)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );

    // Server-side apply creates when absent (create-or-update).
    let applied = cms
        .patch("two", &PatchParams::apply("test").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "two", "labels": {"app": "demo"}}, "data": {"a": "b"}})))
        .await
        .unwrap();
    assert_eq!(applied.metadata.name.as_deref(), Some("two"));

    // Label selectors (set-based) and paging with a consistent snapshot.
    for i in 0..5 {
        cms.create(&PostParams::default(), &config_map(&format!("page-{i}")))
            .await
            .unwrap();
    }
    let selected = cms
        .list(&ListParams::default().labels("app=demo,tier in (one, page-1)"))
        .await
        .unwrap();
    let names: Vec<_> = selected
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["one", "page-1"]);
    let first = cms.list(&ListParams::default().limit(3)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = cms
        .list(&ListParams::default().limit(100).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    assert!(first.items.len() + second.items.len() >= 8);

    // Field selector.
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=two"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    // Delete: 404 afterwards with the real message.
    cms.delete("two", &DeleteParams::default()).await.unwrap();
    let err = api_error(cms.get("two").await.unwrap_err());
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "configmaps \"two\" not found")
    );

    // Delete preconditions.
    let err = api_error(
        cms.delete(
            "one",
            &DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some("nope".into()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(
        err.message
            .contains("Precondition failed: UID in precondition: nope"),
        "{}",
        err.message
    );

    // deletecollection returns the deleted objects.
    let deleted = cms
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=demo"),
        )
        .await
        .unwrap();
    let list = deleted.left().expect("a list of deleted objects");
    assert!(list.items.len() >= 6);

    emulator.shutdown().await;
}

#[tokio::test]
async fn jobs_are_defaulted_and_orphan_on_default_delete() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut job = support::job("", "busybox", &["true"], 2);
    job.metadata.name = None;
    job.metadata.generate_name = Some("gen-".into());
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    let uid = created.metadata.uid.clone().unwrap();
    let labels = created.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("batch.kubernetes.io/controller-uid"), Some(&uid));
    assert_eq!(labels.get("job-name"), Some(&name));

    // The main endpoint ignores status; /status ignores spec.
    let mut edited = jobs.get(&name).await.unwrap();
    edited.status = Some(serde_json::from_value(json!({"succeeded": 5})).unwrap());
    let replaced = jobs
        .replace(&name, &PostParams::default(), &edited)
        .await
        .unwrap();
    assert_ne!(replaced.status.and_then(|s| s.succeeded), Some(5));

    // Wait until the Job completes (scripted success), then delete with defaults: orphan finalizer.
    let completed = support::eventually("job completes", || {
        let jobs = jobs.clone();
        let name = name.clone();
        async move {
            let job = jobs.get(&name).await.ok()?;
            let done = job
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True");
            done.then_some(job)
        }
    })
    .await;
    let conditions: Vec<_> = completed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.reason))
        .collect();
    assert!(conditions.contains(&(
        "SuccessCriteriaMet".to_string(),
        Some("CompletionsReached".to_string())
    )));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let owned = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .unwrap();
    assert_eq!(owned.items.len(), 1);
    jobs.delete(&name, &DeleteParams::default()).await.unwrap();
    support::eventually("job removed", || {
        let jobs = jobs.clone();
        let name = name.clone();
        async move { jobs.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    // Orphaned: the pod survives without its ownerReference.
    let survivor = support::eventually("pod orphaned", || {
        let pods = pods.clone();
        let name = name.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
                .ok()?;
            let pod = list.items.into_iter().next()?;
            pod.metadata.owner_references.is_none().then_some(pod)
        }
    })
    .await;
    assert!(survivor.metadata.finalizers.is_none());
    emulator.shutdown().await;
}

#[tokio::test]
async fn namespaces_secrets_and_leases_work() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<_> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&ns.to_string()), "{ns} missing");
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"token": "abc"}}))
            .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert_eq!(
        created.data.unwrap().get("token").map(|b| b.0.clone()),
        Some(b"abc".to_vec())
    );
    secrets
        .patch("s", &PatchParams::default(), &Patch::Strategic(json!({"metadata": {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u-1"}]}})))
        .await
        .unwrap();

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00.000000Z"}})).unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = api_error(
        leases
            .create(&PostParams::default(), &lease)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    let mut stale = created.clone();
    leases
        .patch(
            "leader",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "b"}})),
        )
        .await
        .unwrap();
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api_error(
        leases
            .replace("leader", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.reason, "Conflict");

    // A new namespace, then deleting it removes its contents.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    cms.create(&PostParams::default(), &config_map("x"))
        .await
        .unwrap();
    namespaces
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually("namespace removed", || {
        let namespaces = namespaces.clone();
        async move {
            namespaces
                .get_opt("scratch")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn server_side_apply_reports_conflicts_between_appliers() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let cms: Api<ConfigMap> = Api::namespaced(emulator.client().unwrap(), "default");
    let config = |value: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"k": value}});
    cms.patch(
        "shared",
        &PatchParams::apply("alpha"),
        &Patch::Apply(config("1")),
    )
    .await
    .unwrap();
    // Same value: shared ownership, no conflict.
    cms.patch(
        "shared",
        &PatchParams::apply("beta"),
        &Patch::Apply(config("1")),
    )
    .await
    .unwrap();
    // Different value: 409 naming the other manager and the field.
    let err = api_error(
        cms.patch(
            "shared",
            &PatchParams::apply("gamma"),
            &Patch::Apply(config("2")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.starts_with("Apply failed with"),
        "{}",
        err.message
    );
    assert!(err.message.contains(".data.k"), "{}", err.message);
    // Forcing takes the field over.
    let forced = cms
        .patch(
            "shared",
            &PatchParams::apply("gamma").force(),
            &Patch::Apply(config("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap().get("k").map(String::as_str), Some("2"));
    let err = api_error(
        cms.patch(
            "shared",
            &PatchParams::apply("alpha"),
            &Patch::Apply(config("1")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"gamma\": .data.k"
    );
    emulator.shutdown().await;
}
