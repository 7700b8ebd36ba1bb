//! The Roles `prefect-k8s install --rbac` prints, enforced by the Kubernetes
//! API emulator with RBAC authorization on: each service's ServiceAccount
//! token can make every request its service makes (the RBAC suffices) and
//! gets 403 Forbidden for anything outside its role (the RBAC is tight).
//!
//! The emulator serves the RBAC objects, ServiceAccounts, ConfigMaps, Secrets
//! and Namespaces of the install output; it has no Deployment, StatefulSet,
//! Service, HorizontalPodAutoscaler or PodDisruptionBudget API, so those are
//! not applied here (their schemas are checked in install_manifests.rs).

mod manifest_tools;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams, PostParams, WatchParams,
};
use kube_emulator::{AuthorizationMode, Emulator, EmulatorConfig};
use manifest_tools::{install, parse_stream};
use serde_json::{json, Value};

/// Where the install puts the agent and its flow-run Jobs in this test.
const NAMESPACE: &str = "flows";
/// The kinds of the install output the emulator serves.
const SERVED_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
];

async fn start_emulator_with_rbac() -> Emulator {
    Emulator::start(EmulatorConfig {
        authorization: AuthorizationMode::Rbac,
        ..EmulatorConfig::fast()
    })
    .await
    .expect("start the Kubernetes API emulator")
}

/// Creates, as the cluster admin, the objects of `prefect-k8s install --rbac
/// -n flows -t …` the emulator serves; returns how many.
async fn apply_install_output(emulator: &Emulator) -> usize {
    apply(
        emulator,
        &install(&["--rbac", "-n", NAMESPACE, "-t", "pnu_rbac_test"]),
    )
    .await
}

/// Creates, as the cluster admin, the objects of an install stream the
/// emulator serves, each in its namespace; returns how many.
async fn apply(emulator: &Emulator, stream: &str) -> usize {
    let admin = emulator.client().expect("admin client");
    let mut applied = 0;
    for object in parse_stream(stream) {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if !SERVED_KINDS.contains(&kind.as_str()) {
            continue;
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            None => Api::all_with(admin.clone(), &resource),
            Some(namespace) => Api::namespaced_with(admin.clone(), namespace, &resource),
        };
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("an object");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|error| panic!("creating {kind} as admin: {error}"));
        applied += 1;
    }
    applied
}

fn client_of(emulator: &Emulator, service: &str) -> kube::Client {
    emulator
        .service_account_client(NAMESPACE, &format!("prefect-k8s-{service}"))
        .expect("a ServiceAccount client")
}

fn flow_run_job(name: &str) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "labels": {"prefect.io/flow-run-id": "0b4d3f6e-5f2a-4c39-9d6e-2f3b7b1c9a10"}
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "prefect-job",
                        "image": "prefecthq/prefect:3.9.1-python3.11",
                        "args": ["prefect", "flow-run", "execute"]
                    }]
                }
            }
        }
    }))
    .expect("a Job")
}

/// Asserts a request was refused with 403 Forbidden (not 401, not 404).
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.is_forbidden() => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn assert_allowed<T>(result: Result<T, kube::Error>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: the role should allow it: {error}"))
}

async fn eventually<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    test_stack::wait::eventually(
        what,
        Duration::from_secs(60),
        Duration::from_millis(100),
        attempt,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_can_do_its_work_and_nothing_else_with_its_own_token() {
    let emulator = start_emulator_with_rbac().await;
    let applied = apply_install_output(&emulator).await;
    assert_eq!(
        applied, 12,
        "Namespace, 3 ServiceAccounts, 2 Roles, 2 RoleBindings, 2 ConfigMaps, 2 Secrets"
    );

    // The dispatcher creates a flow run's Job (suspended), reads it back on
    // AlreadyExists, releases it and may withdraw it.
    let dispatcher = client_of(&emulator, "dispatcher");
    let dispatcher_jobs: Api<Job> = Api::namespaced(dispatcher.clone(), NAMESPACE);
    assert_allowed(
        dispatcher_jobs
            .create(&PostParams::default(), &flow_run_job("rbac-check"))
            .await,
        "dispatcher creates a Job",
    );
    assert_allowed(
        dispatcher_jobs.get("rbac-check").await,
        "dispatcher reads the Job",
    );
    match dispatcher_jobs
        .create(&PostParams::default(), &flow_run_job("rbac-check"))
        .await
    {
        Err(kube::Error::Api(status)) if status.is_already_exists() => {}
        other => panic!("a second create must be AlreadyExists (409), got {other:?}"),
    }
    assert_forbidden(
        Api::<Pod>::namespaced(dispatcher.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await,
        "dispatcher lists pods",
    );
    assert_allowed(
        dispatcher_jobs
            .patch(
                "rbac-check",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
            )
            .await,
        "dispatcher releases the Job",
    );
    assert_allowed(
        dispatcher_jobs
            .create(&PostParams::default(), &flow_run_job("rbac-withdrawn"))
            .await,
        "dispatcher creates another Job",
    );
    assert_allowed(
        dispatcher_jobs
            .delete("rbac-withdrawn", &DeleteParams::default())
            .await,
        "dispatcher withdraws the Job",
    );
    assert_forbidden(
        dispatcher_jobs
            .watch(&WatchParams::default().timeout(1), "0")
            .await
            .map(drop),
        "dispatcher watches Jobs",
    );
    assert_forbidden(
        Api::<Job>::namespaced(dispatcher.clone(), "default")
            .create(&PostParams::default(), &flow_run_job("elsewhere"))
            .await,
        "dispatcher creates a Job outside its namespace",
    );
    for secret in ["prefect-k8s-api-key", "prefect-k8s-nats-auth"] {
        assert_forbidden(
            Api::<Secret>::namespaced(dispatcher.clone(), NAMESPACE)
                .get(secret)
                .await,
            "dispatcher reads a Secret",
        );
    }

    // The poller may do nothing at all.
    let poller = client_of(&emulator, "poller");
    assert_forbidden(
        Api::<Pod>::namespaced(poller.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await,
        "poller lists pods",
    );
    assert_forbidden(
        Api::<Job>::namespaced(poller.clone(), NAMESPACE)
            .create(&PostParams::default(), &flow_run_job("from-poller"))
            .await,
        "poller creates a Job",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(poller, NAMESPACE)
            .get("prefect-k8s-reporter")
            .await,
        "poller reads a Lease",
    );

    // The reporter watches Jobs, pods and Events, reads logs, marks Events,
    // holds its Lease and deletes Jobs.
    let reporter = client_of(&emulator, "reporter");
    let reporter_jobs: Api<Job> = Api::namespaced(reporter.clone(), NAMESPACE);
    let reporter_pods: Api<Pod> = Api::namespaced(reporter.clone(), NAMESPACE);
    let reporter_events: Api<Event> = Api::namespaced(reporter.clone(), NAMESPACE);
    let listed = assert_allowed(
        reporter_jobs
            .list(&ListParams::default().labels("prefect.io/flow-run-id"))
            .await,
        "reporter lists Jobs",
    );
    assert_eq!(listed.items.len(), 1);
    // Opening a watch checks its status; the stream itself is not needed.
    drop(assert_allowed(
        reporter_jobs
            .watch(&WatchParams::default().timeout(1), "0")
            .await,
        "reporter watches Jobs",
    ));
    drop(assert_allowed(
        reporter_pods
            .watch(&WatchParams::default().timeout(1), "0")
            .await,
        "reporter watches pods",
    ));
    drop(assert_allowed(
        reporter_events
            .watch(&WatchParams::default().timeout(1), "0")
            .await,
        "reporter watches Events",
    ));
    let pod_name = eventually("the Job's pod to start", || {
        let pods = reporter_pods.clone();
        async move {
            let pods = pods
                .list(&ListParams::default().labels("job-name=rbac-check"))
                .await
                .expect("reporter lists pods");
            pods.items
                .into_iter()
                .find(|pod| {
                    matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Running" | "Succeeded" | "Failed")
                    )
                })
                .and_then(|pod| pod.metadata.name)
        }
    })
    .await;
    assert_allowed(
        reporter_pods.logs(&pod_name, &LogParams::default()).await,
        "reporter reads the pod's log",
    );
    let events = assert_allowed(
        reporter_events.list(&ListParams::default()).await,
        "reporter lists Events",
    );
    let event_name = events
        .items
        .iter()
        .find_map(|event| event.metadata.name.clone())
        .expect("the emulator recorded Events about the Job and its pod");
    assert_allowed(
        reporter_events
            .patch(
                &event_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"prefect-k8s/check": "1"}}})),
            )
            .await,
        "reporter marks an Event",
    );

    let reporter_leases: Api<Lease> = Api::namespaced(reporter.clone(), NAMESPACE);
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "prefect-k8s-reporter"},
        "spec": {"holderIdentity": "reporter-0", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    assert_allowed(
        reporter_leases.create(&PostParams::default(), &lease).await,
        "reporter creates its Lease",
    );
    let mut current = assert_allowed(
        reporter_leases.get("prefect-k8s-reporter").await,
        "reporter reads its Lease",
    );
    current
        .spec
        .get_or_insert_with(Default::default)
        .holder_identity = Some("reporter-1".into());
    assert_allowed(
        reporter_leases
            .replace("prefect-k8s-reporter", &PostParams::default(), &current)
            .await,
        "reporter renews its Lease",
    );
    let mut other = lease.clone();
    other.metadata.name = Some("another-lease".into());
    assert_allowed(
        reporter_leases.create(&PostParams::default(), &other).await,
        "creating a Lease cannot be limited by name",
    );
    assert_forbidden(
        reporter_leases.get("another-lease").await,
        "reporter reads a Lease not its own",
    );
    assert_forbidden(
        reporter_leases
            .replace("another-lease", &PostParams::default(), &other)
            .await,
        "reporter takes over a Lease not its own",
    );
    assert_forbidden(
        reporter_jobs
            .create(&PostParams::default(), &flow_run_job("from-reporter"))
            .await,
        "reporter creates a Job",
    );
    assert_forbidden(
        reporter_pods
            .delete(&pod_name, &DeleteParams::default())
            .await,
        "reporter deletes a pod",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(reporter.clone(), NAMESPACE)
            .get("prefect-k8s-api-key")
            .await,
        "reporter reads the API key Secret",
    );
    assert_allowed(
        reporter_jobs
            .delete("rbac-check", &DeleteParams::foreground())
            .await,
        "reporter deletes a Job",
    );

    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_install_output_a_service_account_is_refused_everything() {
    let emulator = start_emulator_with_rbac().await;
    let admin = emulator.client().expect("admin client");
    // The ServiceAccounts alone, as `install` without --rbac prints them.
    let stream = install(&["-n", NAMESPACE]);
    let accounts: Vec<Value> = parse_stream(&stream)
        .into_iter()
        .filter(|object| {
            matches!(
                object["kind"].as_str(),
                Some("ServiceAccount" | "Namespace")
            )
        })
        .collect();
    assert_eq!(accounts.len(), 4, "the Namespace and three ServiceAccounts");
    for object in accounts {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "",
            "v1",
            object["kind"].as_str().unwrap(),
        ));
        let api: Api<DynamicObject> = if object["kind"] == "Namespace" {
            Api::all_with(admin.clone(), &resource)
        } else {
            Api::namespaced_with(admin.clone(), NAMESPACE, &resource)
        };
        api.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .expect("admin creates it");
    }
    let dispatcher = client_of(&emulator, "dispatcher");
    assert_forbidden(
        Api::<Job>::namespaced(dispatcher, NAMESPACE)
            .create(&PostParams::default(), &flow_run_job("no-rbac"))
            .await,
        "dispatcher without its Role",
    );
    let reporter = client_of(&emulator, "reporter");
    assert_forbidden(
        Api::<Job>::namespaced(reporter, NAMESPACE)
            .list(&ListParams::default())
            .await,
        "reporter without its Role",
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_flow_namespace_the_services_work_there_and_the_agent_namespace_keeps_only_the_lease(
) {
    let emulator = start_emulator_with_rbac().await;
    let stream = install(&[
        "--rbac",
        "-n",
        "agent",
        "--flow-namespace",
        NAMESPACE,
        "-t",
        "pnu_flow_namespace",
    ]);
    let applied = apply(&emulator, &stream).await;
    assert_eq!(
        applied, 16,
        "2 Namespaces, 3 ServiceAccounts, 3 Roles, 3 RoleBindings, 2 ConfigMaps, 3 Secrets"
    );
    let account = |service: &str| {
        emulator
            .service_account_client("agent", &format!("prefect-k8s-{service}"))
            .expect("a ServiceAccount client")
    };

    let dispatcher = account("dispatcher");
    let flow_jobs: Api<Job> = Api::namespaced(dispatcher.clone(), NAMESPACE);
    assert_allowed(
        flow_jobs
            .create(&PostParams::default(), &flow_run_job("in-flows"))
            .await,
        "dispatcher creates a Job in the flow namespace",
    );
    assert_allowed(flow_jobs.get("in-flows").await, "dispatcher reads it");
    assert_forbidden(
        Api::<Job>::namespaced(dispatcher.clone(), "agent")
            .create(&PostParams::default(), &flow_run_job("in-agent"))
            .await,
        "dispatcher creates a Job in the agent's namespace",
    );
    assert_forbidden(
        Api::<Pod>::namespaced(dispatcher, NAMESPACE)
            .list(&ListParams::default())
            .await,
        "dispatcher lists pods",
    );

    let reporter = account("reporter");
    let reporter_jobs: Api<Job> = Api::namespaced(reporter.clone(), NAMESPACE);
    drop(assert_allowed(
        reporter_jobs
            .watch(&WatchParams::default().timeout(1), "0")
            .await,
        "reporter watches Jobs in the flow namespace",
    ));
    let reporter_pods: Api<Pod> = Api::namespaced(reporter.clone(), NAMESPACE);
    let pod_name = eventually("the Job's pod to start", || {
        let pods = reporter_pods.clone();
        async move {
            let pods = pods
                .list(&ListParams::default().labels("job-name=in-flows"))
                .await
                .expect("reporter lists pods in the flow namespace");
            pods.items
                .into_iter()
                .find(|pod| {
                    pod.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_some_and(|p| p != "Pending")
                })
                .and_then(|pod| pod.metadata.name)
        }
    })
    .await;
    assert_allowed(
        reporter_pods.logs(&pod_name, &LogParams::default()).await,
        "reporter reads a flow pod's log",
    );
    assert_allowed(
        Api::<Event>::namespaced(reporter.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await,
        "reporter lists Events in the flow namespace",
    );
    assert_forbidden(
        Api::<Job>::namespaced(reporter.clone(), "agent")
            .list(&ListParams::default())
            .await,
        "reporter lists Jobs in the agent's namespace",
    );
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "prefect-k8s-reporter"},
        "spec": {"holderIdentity": "reporter-0", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    assert_allowed(
        Api::<Lease>::namespaced(reporter.clone(), "agent")
            .create(&PostParams::default(), &lease)
            .await,
        "reporter creates its Lease in the agent's namespace",
    );
    assert_allowed(
        Api::<Lease>::namespaced(reporter.clone(), "agent")
            .get("prefect-k8s-reporter")
            .await,
        "reporter reads its Lease",
    );
    assert_forbidden(
        Api::<Lease>::namespaced(reporter.clone(), NAMESPACE)
            .create(&PostParams::default(), &lease)
            .await,
        "reporter creates a Lease in the flow namespace",
    );
    for namespace in [NAMESPACE, "agent"] {
        assert_forbidden(
            Api::<Secret>::namespaced(reporter.clone(), namespace)
                .get("prefect-k8s-api-key")
                .await,
            "reporter reads the API key Secret",
        );
    }
    assert_allowed(
        reporter_jobs
            .delete("in-flows", &DeleteParams::foreground())
            .await,
        "reporter deletes a Job in the flow namespace",
    );

    let poller = account("poller");
    for namespace in [NAMESPACE, "agent"] {
        assert_forbidden(
            Api::<Job>::namespaced(poller.clone(), namespace)
                .list(&ListParams::default())
                .await,
            "poller lists Jobs",
        );
    }
    emulator.shutdown().await;
}
