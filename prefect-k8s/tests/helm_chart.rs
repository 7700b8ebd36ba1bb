//! The Helm chart `charts/prefect-k8s`, driven by real Helm: Helm v4's Go
//! library, bundled by PyPI's `helm-sdkpy` and called from
//! `tests/helm_chart.py`. Helm lints the chart, and installs, upgrades and
//! uninstalls it against the Kubernetes API emulator with RBAC authorization
//! on (over TLS, so Helm's client-go sends its credentials). What Helm
//! rendered is the release's manifest; every rendering here is checked
//! strictly against the Kubernetes schemas (and KEDA's and the Prometheus
//! Operator's CRDs), and the services' containers are checked to start with
//! their own flags.
//!
//! One source of truth: with default values the chart renders exactly
//! `kubectl kustomize deploy/`, and with the matching values each overlay.

mod manifest_tools;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, FromArgMatches};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube_emulator::{AuthorizationMode, Emulator, EmulatorConfig};
use manifest_tools::{
    assert_same_objects, assert_valid_kubernetes, container, find, kustomize, parse_stream,
    venv_python, workspace_root,
};
use serde_json::{json, Value};
use service_runtime::nats::NatsOptions;
use service_runtime::prefect::PrefectOptions;

const RELEASE: &str = "prefect-k8s";

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/prefect-k8s")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helm_chart.py")
}

/// Runs `helm_chart.py <args>`; its JSON answer, or Helm's error message.
fn helm(args: &[&OsStr]) -> Result<Value, String> {
    let output = Command::new(venv_python())
        .arg(script())
        .args(args)
        .output()
        .expect("helm_chart.py runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).expect("helm_chart.py prints JSON")),
        Some(1) => Err(stderr),
        _ => panic!("helm_chart.py failed ({}):\n{stderr}", output.status),
    }
}

/// The emulator with RBAC on, and Helm pointed at it.
struct Cluster {
    emulator: Emulator,
    values_dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let emulator = Emulator::start(EmulatorConfig {
            authorization: AuthorizationMode::Rbac,
            // client-go sends kubeconfig credentials only over TLS.
            tls: true,
            ..EmulatorConfig::fast()
        })
        .await
        .expect("start the Kubernetes API emulator");
        Cluster {
            emulator,
            values_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn release_action(
        &self,
        action: &str,
        namespace: &str,
        values: &Value,
    ) -> Result<Value, String> {
        let file = self
            .values_dir
            .path()
            .join(format!("{action}-{namespace}.json"));
        std::fs::write(&file, values.to_string()).expect("write values");
        let chart = chart_dir();
        helm(&[
            OsStr::new(action),
            self.emulator.kubeconfig_path().as_os_str(),
            OsStr::new(namespace),
            OsStr::new(RELEASE),
            chart.as_os_str(),
            file.as_os_str(),
        ])
    }

    /// `helm install` into `namespace` (created if missing); the manifest Helm applied.
    async fn install(&self, namespace: &str, values: &Value) -> String {
        let release = self
            .release_action("install", namespace, values)
            .unwrap_or_else(|error| panic!("helm install in {namespace} failed:\n{error}"));
        assert_eq!(release["info"]["status"], "deployed", "{}", release["info"]);
        release["manifest"].as_str().expect("a manifest").to_owned()
    }

    async fn upgrade(&self, namespace: &str, values: &Value) -> String {
        let release = self
            .release_action("upgrade", namespace, values)
            .unwrap_or_else(|error| panic!("helm upgrade in {namespace} failed:\n{error}"));
        assert_eq!(release["info"]["status"], "deployed", "{}", release["info"]);
        assert_eq!(
            release["version"], 2,
            "the upgrade is the release's revision 2"
        );
        release["manifest"].as_str().expect("a manifest").to_owned()
    }

    async fn uninstall(&self, namespace: &str) {
        let answer = helm(&[
            OsStr::new("uninstall"),
            self.emulator.kubeconfig_path().as_os_str(),
            OsStr::new(namespace),
            OsStr::new(RELEASE),
        ])
        .unwrap_or_else(|error| panic!("helm uninstall in {namespace} failed:\n{error}"));
        assert_eq!(
            answer["release"]["info"]["status"], "uninstalled",
            "{answer}"
        );
    }

    /// An object as the cluster holds it.
    async fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Value {
        let api = self.dynamic_api(api_version, kind, namespace);
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|error| panic!("get {kind} {namespace}/{name}: {error}"));
        serde_json::to_value(object).expect("JSON")
    }

    fn dynamic_api(&self, api_version: &str, kind: &str, namespace: &str) -> Api<DynamicObject> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let admin = self.emulator.client().expect("admin client");
        Api::namespaced_with(admin, namespace, &resource)
    }

    /// Names of the `kind` objects in `namespace`.
    async fn names(&self, api_version: &str, kind: &str, namespace: &str) -> Vec<String> {
        let api = self.dynamic_api(api_version, kind, namespace);
        api.list(&ListParams::default())
            .await
            .unwrap_or_else(|error| panic!("list {kind} in {namespace}: {error}"))
            .items
            .into_iter()
            .filter_map(|object| object.metadata.name)
            .collect()
    }

    /// Creates the Secret with the NATS passwords, as docs/install.md has you do.
    async fn create_nats_secret(&self, namespace: &str) {
        let admin = self.emulator.client().expect("admin client");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
        let _ = namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "prefect-k8s-nats-auth"},
            "stringData": {
                "poller-password": "poller-secret-password",
                "dispatcher-password": "dispatcher-secret-password",
                "route-password": "route-secret-password"
            }
        }))
        .unwrap();
        Api::<Secret>::namespaced(admin, namespace)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the NATS Secret");
    }
}

// ---------------------------------------------------------------------------
// The services' own flags, as prefect-k8s/tests/service_flags.rs checks the
// kustomize base: every environment variable of a service container is read
// by one of the service's flags (or outside clap), and the whole parses.

/// Read outside clap: logging, the health and metrics addresses and the
/// reporter's Lease namespace fallback.
const READ_OUTSIDE_CLAP: [&str; 5] = [
    "RUST_LOG",
    "LOG_FORMAT",
    "HEALTH_ADDR",
    "METRICS_ADDR",
    "POD_NAMESPACE",
];
const POD_NAMESPACE_VALUE: &str = "from-the-downward-api";
const SECRET_VALUE: &str = "from-a-secret";

fn service_cli(service: &'static str) -> clap::Command {
    let command = PrefectOptions::augment_args(clap::Command::new(service));
    match service {
        "poller" => poller::PollerConfig::augment_args(NatsOptions::augment_args(command)),
        "dispatcher" => {
            dispatcher::DispatcherConfig::augment_args(NatsOptions::augment_args(command))
        }
        "reporter" => reporter::service::ReporterConfig::augment_args(command),
        other => panic!("no service {other}"),
    }
}

/// A service's command line built from its container in `objects`: the
/// settings ConfigMap, then the container's env (downward API and Secret
/// values stood in for), each as the flag that reads it, then its args. Every
/// variable of the container's own env must be read by the service.
fn service_argv(objects: &[Value], service: &'static str) -> Vec<String> {
    let cli = service_cli(service);
    let container = container(objects, "Deployment", &format!("prefect-k8s-{service}"));
    let mut environment = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            if name == "prefect-k8s-settings" {
                let data = &find(objects, "ConfigMap", name)["data"];
                for (key, value) in data.as_object().expect("data") {
                    environment.insert(key.clone(), value.as_str().unwrap().to_owned());
                }
            }
        }
    }
    for entry in container["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = entry["value"].as_str() {
            value.to_owned()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" {
            POD_NAMESPACE_VALUE.to_owned()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            format!("prefect-k8s-{service}-0")
        } else if entry["valueFrom"]["secretKeyRef"].is_object() {
            SECRET_VALUE.to_owned()
        } else {
            panic!("{service}: unexpected env entry {entry}");
        };
        environment.insert(name, value);
    }
    let own: BTreeSet<&str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["name"].as_str())
        .collect();
    let mut argv = vec![service.to_owned()];
    for (name, value) in &environment {
        let flag = cli
            .get_arguments()
            .find(|argument| argument.get_env() == Some(OsStr::new(name)))
            .and_then(|argument| argument.get_long());
        match flag {
            Some(long) => argv.push(format!("--{long}={value}")),
            None => assert!(
                !own.contains(name.as_str()) || READ_OUTSIDE_CLAP.contains(&name.as_str()),
                "the {service} container sets {name}, which the {service} does not read"
            ),
        }
    }
    for arg in container["args"].as_array().into_iter().flatten() {
        argv.push(arg.as_str().unwrap().to_owned());
    }
    argv
}

fn parse_service<T: FromArgMatches>(
    objects: &[Value],
    service: &'static str,
) -> (T, PrefectOptions, Option<NatsOptions>) {
    let argv = service_argv(objects, service);
    let matches = service_cli(service)
        .try_get_matches_from(&argv)
        .unwrap_or_else(|error| panic!("the {service} rejects {argv:?}:\n{error}"));
    let config = T::from_arg_matches(&matches).expect("the service's settings");
    let prefect = PrefectOptions::from_arg_matches(&matches).expect("the Prefect options");
    let nats = (service != "reporter")
        .then(|| NatsOptions::from_arg_matches(&matches).expect("the NATS options"));
    (config, prefect, nats)
}

/// The three services start with the settings of `objects`; the dispatcher
/// accepts its Job options as at start-up. Returns the dispatcher's config.
fn assert_services_start(objects: &[Value]) -> dispatcher::DispatcherConfig {
    let (_, _, _): (poller::PollerConfig, _, _) = parse_service(objects, "poller");
    let (_, _, _): (reporter::service::ReporterConfig, _, _) = parse_service(objects, "reporter");
    let (config, prefect, _): (dispatcher::DispatcherConfig, _, _) =
        parse_service(objects, "dispatcher");
    let client = service_runtime::prefect::client(&prefect, &config.worker_name)
        .expect("a Prefect client from the chart's settings");
    if let Err(error) = dispatcher::render::JobRenderer::new(client, &config) {
        panic!("the dispatcher refuses the settings the chart wrote: {error}");
    }
    config
}

/// No credential in plain text: every env entry whose name says key,
/// password, token or auth string is a secretKeyRef (the `*_SECRET` entries
/// name a Secret, not its content).
fn assert_no_plain_secrets(objects: &[Value], label: &str) {
    for object in objects {
        let containers = object
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array);
        for container in containers.into_iter().flatten() {
            for entry in container["env"].as_array().into_iter().flatten() {
                let name = entry["name"].as_str().unwrap_or_default();
                let sensitive = ["KEY", "PASSWORD", "TOKEN", "AUTH_STRING"]
                    .iter()
                    .any(|word| name.contains(word))
                    && !name.ends_with("_SECRET");
                if sensitive {
                    assert!(
                        entry["valueFrom"]["secretKeyRef"].is_object(),
                        "{label}: {name} of {} is not a secretKeyRef: {entry}",
                        manifest_tools::object_key(object)
                    );
                }
            }
        }
        if object["kind"] == "ConfigMap" {
            for (key, _) in object["data"].as_object().into_iter().flatten() {
                assert!(
                    !["KEY", "PASSWORD", "TOKEN", "AUTH_STRING"]
                        .iter()
                        .any(|word| key.contains(word)),
                    "{label}: ConfigMap {} holds {key}",
                    manifest_tools::object_key(object)
                );
            }
        }
    }
}

fn env_entry<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|entry| entry["name"] == name))
        .unwrap_or_else(|| panic!("no env {name} in {}", container["name"]))
}

// ---------------------------------------------------------------------------

#[test]
fn helm_lint_is_clean() {
    let chart = chart_dir();
    let report = helm(&[OsStr::new("lint"), chart.as_os_str()]).expect("helm lint runs");
    assert_eq!(report["charts"], 1, "{report}");
    assert_eq!(report["errors"], json!([]), "{report}");
    // Helm's one remark is its INFO "icon is recommended" on Chart.yaml: no
    // warning, no error.
    assert_eq!(
        report["messages"],
        json!([{"severity": "INFO", "path": "Chart.yaml"}]),
        "helm lint found more than the missing icon: {report}"
    );
}

/// With default values, Helm renders what `kubectl kustomize deploy/` does;
/// with the values of the external-nats and nats-cluster overlays, what
/// kustomize renders of the overlay. (The keda and pod-monitor overlays add
/// custom resources, whose CRDs the emulator does not serve: Helm cannot
/// install them there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_values_render_the_kustomize_base_and_values_render_the_nats_overlays() {
    let cluster = Cluster::start().await;
    let root = workspace_root();
    let cases = [
        ("deploy", json!({})),
        (
            "deploy/overlays/external-nats",
            json!({"nats": {"enabled": false, "external": {"url": "nats://nats.example.internal:4222"}}}),
        ),
        (
            "deploy/overlays/nats-cluster",
            json!({"nats": {"cluster": {"enabled": true}}}),
        ),
    ];
    for (dir, values) in cases {
        // kustomize's objects are in `default`: so is the release.
        let rendered = cluster.install("default", &values).await;
        let expected = kustomize(&root.join(dir));
        assert_same_objects(
            &rendered,
            &format!("the chart with {values}"),
            &expected,
            &format!("kubectl kustomize {dir}"),
        );
        assert_valid_kubernetes(&rendered, &format!("the chart with {values}"));
        cluster.uninstall("default").await;
    }
}

/// install → upgrade → uninstall with real Helm on the emulator with RBAC
/// on: the objects are there, the Roles work for the services' own tokens,
/// changed values take effect, and nothing of the agent is left after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_and_uninstall_with_real_helm() {
    let cluster = Cluster::start().await;
    let namespace = "agent";
    cluster.create_nats_secret(namespace).await;

    let values = json!({
        "worker": {
            "selfHostedServerApiConfig": {"apiUrl": "http://prefect.example.internal:4200/api"},
            "config": {"workPool": "k8s-pool", "workQueues": ["critical", "batch"]}
        }
    });
    let manifest = cluster.install(namespace, &values).await;
    let objects = parse_stream(&manifest);
    assert_valid_kubernetes(&manifest, "the installed chart");
    assert_no_plain_secrets(&objects, "the installed chart");
    for (api_version, kind, name) in [
        ("v1", "ConfigMap", "prefect-k8s-settings"),
        ("v1", "ConfigMap", "prefect-k8s-nats-config"),
        ("v1", "ServiceAccount", "prefect-k8s-poller"),
        ("apps/v1", "Deployment", "prefect-k8s-poller"),
        ("apps/v1", "Deployment", "prefect-k8s-dispatcher"),
        ("apps/v1", "Deployment", "prefect-k8s-reporter"),
        ("apps/v1", "StatefulSet", "prefect-k8s-nats"),
        ("v1", "Service", "prefect-k8s-nats"),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "prefect-k8s-dispatcher",
        ),
        ("policy/v1", "PodDisruptionBudget", "prefect-k8s-reporter"),
        ("networking.k8s.io/v1", "NetworkPolicy", "prefect-k8s-nats"),
    ] {
        let object = cluster.get(api_version, kind, namespace, name).await;
        assert_eq!(
            object["metadata"]["annotations"]["meta.helm.sh/release-name"], RELEASE,
            "{kind} {name} belongs to the release"
        );
    }
    let settings = cluster
        .get("v1", "ConfigMap", namespace, "prefect-k8s-settings")
        .await;
    assert_eq!(settings["data"]["PREFECT_K8S_WORK_POOL"], "k8s-pool");
    assert_eq!(
        settings["data"]["PREFECT_API_URL"],
        "http://prefect.example.internal:4200/api"
    );

    // The services start with what the cluster now holds.
    let mut in_cluster = Vec::new();
    for (api_version, kind, name) in [
        ("v1", "ConfigMap", "prefect-k8s-settings"),
        ("apps/v1", "Deployment", "prefect-k8s-poller"),
        ("apps/v1", "Deployment", "prefect-k8s-dispatcher"),
        ("apps/v1", "Deployment", "prefect-k8s-reporter"),
    ] {
        let mut object = cluster.get(api_version, kind, namespace, name).await;
        object["kind"] = json!(kind);
        in_cluster.push(object);
    }
    let dispatcher = assert_services_start(&in_cluster);
    assert_eq!(dispatcher.work_pool, "k8s-pool");
    let (poller, _, nats): (poller::PollerConfig, _, _) = parse_service(&in_cluster, "poller");
    assert_eq!(poller.work_queues, vec!["critical", "batch"]);
    let nats = nats.unwrap();
    assert_eq!(nats.url, "nats://prefect-k8s-nats:4222");
    assert_eq!(nats.user.as_deref(), Some("prefect-k8s-poller"));

    // The chart's Roles, enforced: the dispatcher's token creates Jobs and
    // may not list pods; the poller's token may do nothing.
    let dispatcher_client = cluster
        .emulator
        .service_account_client(namespace, "prefect-k8s-dispatcher")
        .expect("the dispatcher's token");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "helm-rbac-check"},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "prefect-job", "image": "prefecthq/prefect:3.9.1-python3.11"}]}}}
    }))
    .unwrap();
    Api::<Job>::namespaced(dispatcher_client.clone(), namespace)
        .create(&PostParams::default(), &job)
        .await
        .expect("the dispatcher's Role lets it create a Job");
    match Api::<Pod>::namespaced(dispatcher_client, namespace)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.is_forbidden() => {}
        other => panic!("the dispatcher must not list pods: {other:?}"),
    }
    let poller_client = cluster
        .emulator
        .service_account_client(namespace, "prefect-k8s-poller")
        .expect("the poller's token");
    match Api::<Job>::namespaced(poller_client, namespace)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) if status.is_forbidden() => {}
        other => panic!("the poller has no Kubernetes permissions: {other:?}"),
    }

    // Upgrade with changed values: they take effect in the cluster.
    let upgraded = json!({
        "worker": {
            "selfHostedServerApiConfig": {"apiUrl": "http://prefect.example.internal:4200/api"},
            "config": {"workPool": "other-pool"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "prefect", "effect": "NoSchedule"}]
        },
        "dispatcher": {"autoscaling": {"minReplicas": 3, "maxReplicas": 12}},
        "reporter": {"replicaCount": 3},
        "nats": {"podDisruptionBudget": {"enabled": false}}
    });
    let manifest = cluster.upgrade(namespace, &upgraded).await;
    assert_valid_kubernetes(&manifest, "the upgraded chart");
    let settings = cluster
        .get("v1", "ConfigMap", namespace, "prefect-k8s-settings")
        .await;
    assert_eq!(settings["data"]["PREFECT_K8S_WORK_POOL"], "other-pool");
    let nats_config = cluster
        .get("v1", "ConfigMap", namespace, "prefect-k8s-nats-config")
        .await;
    assert!(
        nats_config["data"]["auth.conf"]
            .as_str()
            .unwrap()
            .contains("\"flow-runs.due.other-pool\""),
        "NATS's users follow the new pool"
    );
    let hpa = cluster
        .get(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            namespace,
            "prefect-k8s-dispatcher",
        )
        .await;
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    let reporter = cluster
        .get("apps/v1", "Deployment", namespace, "prefect-k8s-reporter")
        .await;
    assert_eq!(reporter["spec"]["replicas"], 3);
    for name in ["prefect-k8s-poller", "prefect-k8s-dispatcher"] {
        let deployment = cluster.get("apps/v1", "Deployment", namespace, name).await;
        assert_eq!(
            deployment["spec"]["template"]["spec"]["tolerations"][0]["key"], "dedicated",
            "{name} tolerates the taint"
        );
    }
    assert!(
        !cluster
            .names("policy/v1", "PodDisruptionBudget", namespace)
            .await
            .contains(&"prefect-k8s-nats".to_owned()),
        "the budget turned off is deleted"
    );

    // Uninstall: nothing of the agent is left, not even the release records;
    // what Helm never owned (the NATS Secret, the Job the test created) stays.
    cluster.uninstall(namespace).await;
    for (api_version, kind) in [
        ("v1", "ConfigMap"),
        ("v1", "ServiceAccount"),
        ("v1", "Service"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ] {
        let left: Vec<String> = cluster
            .names(api_version, kind, namespace)
            .await
            .into_iter()
            .filter(|name| name.starts_with("prefect-k8s"))
            .collect();
        assert!(left.is_empty(), "{kind} left after uninstall: {left:?}");
    }
    let secrets = cluster.names("v1", "Secret", namespace).await;
    assert_eq!(
        secrets,
        vec!["prefect-k8s-nats-auth".to_owned()],
        "only the Secret Helm never owned is left (no release records)"
    );
}

/// The value cases a Prefect user reaches for, each rendered by Helm,
/// strictly valid, started by the services' own flags, with no credential
/// in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefect_worker_value_cases_render_validate_and_start() {
    let cluster = Cluster::start().await;

    // Prefect Cloud: the account's workspace URL, the key from an existing
    // Secret (required), referenced by flow-run pods.
    let cloud = parse_stream(
        &cluster
            .install(
                "cloud",
                &json!({"worker": {
                    "apiConfig": "cloud",
                    "cloudApiConfig": {
                        "accountId": "0b5a0f3e-2f6e-4a53-9d57-8c1b9a7f3c21",
                        "workspaceId": "5d1c7e0a-7c8f-4d0e-a6a4-3e9f2b1d8c44",
                        "apiKeySecret": {"name": "prefect-cloud", "key": "api-key"}
                    }
                }}),
            )
            .await,
    );
    check_case(&cloud, "Prefect Cloud");
    let (config, prefect, _): (dispatcher::DispatcherConfig, _, _) =
        parse_service(&cloud, "dispatcher");
    assert_eq!(
        prefect.api_url,
        "https://api.prefect.cloud/api/accounts/0b5a0f3e-2f6e-4a53-9d57-8c1b9a7f3c21/workspaces/5d1c7e0a-7c8f-4d0e-a6a4-3e9f2b1d8c44"
    );
    assert_eq!(prefect.api_key.as_deref(), Some(SECRET_VALUE));
    assert_eq!(
        config.job.api_key_secret.as_deref(),
        Some("prefect-cloud:api-key")
    );
    for service in ["poller", "dispatcher", "reporter"] {
        let key = env_entry(
            container(&cloud, "Deployment", &format!("prefect-k8s-{service}")),
            "PREFECT_API_KEY",
        );
        assert_eq!(key["valueFrom"]["secretKeyRef"]["name"], "prefect-cloud");
        assert_eq!(key["valueFrom"]["secretKeyRef"]["key"], "api-key");
        assert!(
            key["valueFrom"]["secretKeyRef"].get("optional").is_none(),
            "Prefect Cloud needs the key: {key}"
        );
    }

    // A self-hosted server with basic auth from an existing Secret.
    let basic = parse_stream(
        &cluster
            .install(
                "basic-auth",
                &json!({"worker": {"selfHostedServerApiConfig": {
                    "apiUrl": "https://prefect.example.internal/api",
                    "basicAuth": {"enabled": true, "existingSecret": "prefect-basic-auth"}
                }}}),
            )
            .await,
    );
    check_case(&basic, "basic auth");
    let (config, prefect, _): (dispatcher::DispatcherConfig, _, _) =
        parse_service(&basic, "dispatcher");
    assert_eq!(prefect.api_url, "https://prefect.example.internal/api");
    assert_eq!(prefect.auth_string.as_deref(), Some(SECRET_VALUE));
    assert_eq!(
        config.job.api_auth_string_secret.as_deref(),
        Some("prefect-basic-auth:auth-string")
    );
    for service in ["poller", "reporter"] {
        let auth = env_entry(
            container(&basic, "Deployment", &format!("prefect-k8s-{service}")),
            "PREFECT_API_AUTH_STRING",
        );
        assert_eq!(
            auth["valueFrom"]["secretKeyRef"]["name"],
            "prefect-basic-auth"
        );
        assert_eq!(auth["valueFrom"]["secretKeyRef"]["key"], "auth-string");
    }

    // IRSA: the role's annotation on the ServiceAccounts.
    let role_arn = "arn:aws:iam::123456789012:role/prefect-k8s";
    let irsa = parse_stream(
        &cluster
            .install(
                "irsa",
                &json!({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role_arn}}}),
            )
            .await,
    );
    check_case(&irsa, "IRSA");
    for service in ["poller", "dispatcher", "reporter"] {
        let account = find(&irsa, "ServiceAccount", &format!("prefect-k8s-{service}"));
        assert_eq!(
            account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], role_arn,
            "{service}"
        );
    }

    // Your NATS, with the services' credentials from your Secret.
    let external = parse_stream(
        &cluster
            .install(
                "external-nats",
                &json!({"nats": {
                    "enabled": false,
                    "external": {
                        "url": "tls://nats.example.internal:4222",
                        "pollerUser": "pool-poller",
                        "dispatcherUser": "pool-dispatcher"
                    },
                    "auth": {"existingSecret": "my-nats-credentials"}
                }}),
            )
            .await,
    );
    check_case(&external, "external NATS");
    assert!(
        !external
            .iter()
            .any(|object| object["metadata"]["labels"]["app.kubernetes.io/component"] == "nats"),
        "no bundled NATS object"
    );
    for (service, user) in [("poller", "pool-poller"), ("dispatcher", "pool-dispatcher")] {
        let argv_objects = &external;
        let nats = match service {
            "poller" => parse_service::<poller::PollerConfig>(argv_objects, service).2,
            _ => parse_service::<dispatcher::DispatcherConfig>(argv_objects, service).2,
        }
        .unwrap();
        assert_eq!(nats.url, "tls://nats.example.internal:4222");
        assert_eq!(nats.user.as_deref(), Some(user));
        assert_eq!(nats.password.as_deref(), Some(SECRET_VALUE));
        let password = env_entry(
            container(&external, "Deployment", &format!("prefect-k8s-{service}")),
            "NATS_PASSWORD",
        );
        assert_eq!(
            password["valueFrom"]["secretKeyRef"]["name"],
            "my-nats-credentials"
        );
    }

    // Tolerations, global and per service, on the pods they name.
    let taint = json!({"key": "dedicated", "operator": "Equal", "value": "prefect", "effect": "NoSchedule"});
    let gpu = json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"});
    let tolerations = parse_stream(
        &cluster
            .install(
                "tolerations",
                &json!({
                    "worker": {"tolerations": [taint], "nodeSelector": {"pool": "agents"}},
                    "dispatcher": {"tolerations": [gpu]}
                }),
            )
            .await,
    );
    check_case(&tolerations, "tolerations");
    for (kind, name, expected) in [
        ("Deployment", "prefect-k8s-poller", json!([taint])),
        ("Deployment", "prefect-k8s-dispatcher", json!([taint, gpu])),
        ("Deployment", "prefect-k8s-reporter", json!([taint])),
        ("StatefulSet", "prefect-k8s-nats", json!([taint])),
    ] {
        let pod = &find(&tolerations, kind, name)["spec"]["template"]["spec"];
        assert_eq!(pod["tolerations"], expected, "{name}");
        assert_eq!(pod["nodeSelector"], json!({"pool": "agents"}), "{name}");
    }

    // The bundled NATS's users are those `prefect-k8s nats-auth` prints for
    // the pool, whatever its name (one that is no NATS token is hashed).
    for pool in ["prod", "team a/etl.nightly"] {
        let namespace = format!("pool-{}", pool.len());
        let objects = parse_stream(
            &cluster
                .install(
                    &namespace,
                    &json!({"worker": {"config": {"workPool": pool}}}),
                )
                .await,
        );
        let auth = find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"]["auth.conf"]
            .as_str()
            .unwrap()
            .to_owned();
        let users = service_runtime::nats_auth::agent_users(pool);
        assert_eq!(
            auth,
            service_runtime::nats_auth::authorization(&users),
            "auth.conf of pool {pool:?}"
        );
        let config = assert_services_start(&objects);
        assert_eq!(config.work_pool, pool);
    }
}

/// Checks every case shares: strictly valid, no credential in plain text,
/// and the three services start with its settings.
fn check_case(objects: &[Value], label: &str) {
    let stream: String = objects
        .iter()
        .map(|object| format!("---\n{}", serde_yaml::to_string(object).unwrap()))
        .collect();
    assert_valid_kubernetes(&stream, label);
    assert_no_plain_secrets(objects, label);
    assert_services_start(objects);
}

/// values.schema.json refuses bad values at install, naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_bad_values_with_a_clear_message() {
    let cluster = Cluster::start().await;
    let cases = [
        (
            json!({"worker": {"apiConfig": "clould"}}),
            "/worker/apiConfig",
            "must be one of 'selfHostedServer', 'cloud'",
        ),
        (
            json!({"worker": {"config": {"workpool": "typo"}}}),
            "/worker/config",
            "workpool",
        ),
        (
            json!({"dispatcher": {"autoscaling": {"minReplicas": 0}}}),
            "/dispatcher/autoscaling/minReplicas",
            "minimum",
        ),
        (
            json!({"worker": {"apiConfig": "cloud"}}),
            "/worker/cloudApiConfig/accountId",
            "minLength",
        ),
        (
            json!({"nats": {"enabled": false}}),
            "/nats/external/url",
            "minLength",
        ),
        (
            json!({"worker": {"selfHostedServerApiConfig": {"basicAuth": {"enabled": true}}}}),
            "/worker/selfHostedServerApiConfig/basicAuth/existingSecret",
            "minLength",
        ),
        (
            json!({"worker": {"tolerations": {"key": "not-a-list"}}}),
            "/worker/tolerations",
            "want array",
        ),
    ];
    for (values, path, detail) in cases {
        let error = cluster
            .release_action("install", "refused", &values)
            .expect_err(&format!("Helm must refuse {values}"));
        assert!(
            error.contains(path) && error.contains(detail),
            "the error for {values} should name {path} ({detail}):\n{error}"
        );
    }
    assert!(
        cluster.names("v1", "Secret", "refused").await.is_empty(),
        "nothing was installed"
    );
}

/// Every value of values.yaml is in the README's table with its default, and
/// the table names no value values.yaml lacks.
#[test]
fn the_readme_lists_every_value_with_its_default() {
    let chart = chart_dir();
    let values: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .expect("values.yaml");
    let mut leaves = BTreeMap::new();
    flatten("", &values, &mut leaves);
    let readme = std::fs::read_to_string(chart.join("README.md")).expect("README.md");
    let mut table = BTreeMap::new();
    let values_section = readme
        .split("\n## Values\n")
        .nth(1)
        .expect("README.md has a Values section");
    let values_section = values_section.split("\n## ").next().unwrap();
    for line in values_section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() >= 4 {
            if let Some(key) = cells[1].strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
                let default = cells[2].trim_matches('`').to_owned();
                table.insert(key.to_owned(), default);
            }
        }
    }
    let documented: BTreeSet<&String> = table.keys().collect();
    let defined: BTreeSet<&String> = leaves.keys().collect();
    let missing: Vec<_> = defined.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&defined).collect();
    assert!(
        missing.is_empty(),
        "values missing from README.md: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "README.md lists values values.yaml lacks: {extra:?}"
    );
    for (key, default) in &leaves {
        assert_eq!(&table[key], default, "README.md's default of {key}");
    }
}

/// The values' leaves (empty maps and lists, scalars; resources blocks
/// whole) as `path -> JSON default`.
fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_yaml::Value::Mapping(map) if !map.is_empty() && !prefix.ends_with("resources") => {
            for (key, child) in map {
                let key = key.as_str().expect("string keys");
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, child, out);
            }
        }
        other => {
            let json: Value = serde_json::to_value(other).expect("JSON");
            out.insert(prefix.to_owned(), json.to_string());
        }
    }
}
