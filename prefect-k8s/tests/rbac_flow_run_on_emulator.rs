//! The whole agent on the permissions `prefect-k8s install --rbac` grants:
//! on the Kubernetes API emulator with RBAC authorization on, the install
//! output's ServiceAccounts, Roles and RoleBindings are applied, then the
//! real poller (no Kubernetes client at all), dispatcher and reporter run,
//! each with its own ServiceAccount's token, against a real Prefect server
//! and nats-server. A flow run becomes a Job, its pod is OOM-killed, and the
//! reporter tells Prefect: the run ends Crashed with the reason.

mod manifest_tools;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube_emulator::{AuthorizationMode, Emulator, EmulatorConfig};
use manifest_tools::{install, parse_stream};
use prefect_client::{
    ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, PrefectClient, StateType,
};
use test_stack::nats::NatsServer;
use test_stack::prefect::{unique_name, PrefectServer};
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "flows";
const SERVED_KINDS: [&str; 6] = [
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
];
const PATIENCE: Duration = Duration::from_secs(180);

async fn eventually<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    test_stack::wait::eventually(what, PATIENCE, Duration::from_millis(250), attempt).await
}

async fn apply_install_output(emulator: &Emulator, pool: &str) {
    let admin = emulator.client().expect("admin client");
    let stream = install(&["--rbac", "-n", NAMESPACE, "--work-pool", pool]);
    for object in parse_stream(&stream) {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        if !SERVED_KINDS.contains(&kind.as_str()) {
            continue;
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
        let api: Api<DynamicObject> = if kind == "Namespace" {
            Api::all_with(admin.clone(), &resource)
        } else {
            Api::namespaced_with(admin.clone(), NAMESPACE, &resource)
        };
        let dynamic: DynamicObject = serde_json::from_value(object).expect("an object");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|error| panic!("creating {kind} as admin: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flow_run_reaches_a_job_and_its_fate_reaches_prefect_with_install_rbac_only() {
    service_runtime::telemetry::init();
    let nats = NatsServer::start();
    let prefect_server = PrefectServer::shared();
    let emulator = Emulator::start(EmulatorConfig {
        authorization: AuthorizationMode::Rbac,
        ..EmulatorConfig::fast()
    })
    .await
    .expect("start the Kubernetes API emulator");
    let pool = unique_name("rbac-pool");
    apply_install_output(&emulator, &pool).await;

    let prefect =
        PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
    let nats_client = || async {
        service_runtime::nats::connect(
            &service_runtime::nats::NatsOptions::plain(nats.url()),
            "rbac-test",
        )
        .await
        .expect("connect to nats-server")
    };
    let shutdown = CancellationToken::new();
    let mut services = Vec::new();

    // The poller takes no Kubernetes client: it cannot use one.
    let mut poller_config = poller::PollerConfig::for_pool(&pool);
    poller_config.poll_interval_seconds = 0.5;
    services.push(tokio::spawn(fail_on_error(
        "poller",
        poller::Poller::new(poller_config, prefect.clone(), nats_client().await)
            .run(shutdown.clone()),
    )));

    let mut dispatcher_config = dispatcher::DispatcherConfig::for_pool(&pool);
    dispatcher_config.ack_wait_seconds = 10;
    dispatcher_config.job.namespace = Some(NAMESPACE.into());
    dispatcher_config.job.flow_api_url = Some(prefect_server.api_url());
    let dispatcher_kube = emulator
        .service_account_client(NAMESPACE, "prefect-k8s-dispatcher")
        .unwrap();
    services.push(tokio::spawn(fail_on_error(
        "dispatcher",
        dispatcher::Dispatcher::new(
            dispatcher_config,
            prefect.clone(),
            dispatcher_kube,
            nats_client().await,
        )
        .run(shutdown.clone()),
    )));

    let mut reporter_config = reporter::service::ReporterConfig::for_pool(&pool);
    reporter_config.namespace = Some(NAMESPACE.into());
    reporter_config.lease_namespace = Some(NAMESPACE.into());
    reporter_config.lease_name = Some("prefect-k8s-reporter".into());
    reporter_config.reconcile_seconds = 1.0;
    reporter_config.cancel_poll_seconds = 1.0;
    reporter_config.grace.settle_grace_seconds = Some(1.0);
    let reporter_kube = emulator
        .service_account_client(NAMESPACE, "prefect-k8s-reporter")
        .unwrap();
    let reporter =
        reporter::service::Reporter::new(reporter_config, prefect.clone(), reporter_kube);
    services.push(tokio::spawn(fail_on_error(
        "reporter",
        reporter.run(shutdown.clone()),
    )));

    eventually("the poller to create the work pool", || async {
        prefect.read_work_pool(&pool).await.ok().map(|_| ())
    })
    .await;
    let flow = prefect.create_flow(&unique_name("flow")).await.unwrap();
    // The emulator's scripted runtime OOM-kills a container whose image says `oom`.
    let deployment = prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(pool.clone()),
            job_variables: Some(serde_json::json!({"image": "registry.example.com/flows/oom:1"})),
            ..DeploymentCreate::new(unique_name("deployment"), flow.id)
        })
        .await
        .unwrap();
    let run = prefect
        .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
        .await
        .unwrap();

    let admin_jobs: Api<Job> = Api::namespaced(emulator.client().unwrap(), NAMESPACE);
    let job = eventually("the dispatcher to create the run's Job", || {
        let jobs = admin_jobs.clone();
        async move {
            jobs.list(&ListParams::default().labels(&format!("prefect.io/flow-run-id={}", run.id)))
                .await
                .ok()
                .and_then(|list| list.items.into_iter().next())
        }
    })
    .await;
    assert_eq!(job.metadata.namespace.as_deref(), Some(NAMESPACE));

    let crashed = eventually("the reporter to report the OOM kill to Prefect", || async {
        let current = prefect.read_flow_run(run.id).await.ok()?;
        let state = current.state?;
        (state.state_type == StateType::Crashed).then_some(state)
    })
    .await;
    let message = crashed.message.unwrap_or_default();
    assert!(
        message.to_lowercase().contains("oom") || message.contains("137"),
        "the Crashed message gives the reason: {message}"
    );

    let lease = Api::<Lease>::namespaced(emulator.client().unwrap(), NAMESPACE)
        .get("prefect-k8s-reporter")
        .await
        .expect("the reporter holds the Lease the Role names");
    assert!(lease
        .spec
        .and_then(|spec| spec.holder_identity)
        .is_some_and(|holder| !holder.is_empty()));

    shutdown.cancel();
    for service in services {
        let _ = tokio::time::timeout(Duration::from_secs(30), service).await;
    }
    emulator.shutdown().await;
    drop(nats);
}

/// Awaits a service, failing the test if it stops with an error.
async fn fail_on_error<E: std::fmt::Display>(
    service: &'static str,
    outcome: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(error) = outcome.await {
        panic!("the {service} stopped with an error: {error}");
    }
}
