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
//! `kubectl kustomize deploy/`, with the matching values each overlay, and
//! with each documented value what `prefect-k8s install` prints with the
//! option it maps (the chart's checksum annotations aside, which only it has).

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
    venv_python, without_generated_nats_auth, workspace_root,
};
use serde_json::{json, Value};
use service_runtime::nats::NatsOptions;
use service_runtime::prefect::PrefectOptions;
use test_stack::nats::NatsServer;

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

    async fn upgrade(&self, namespace: &str, values: &Value, revision: u64) -> String {
        let release = self
            .release_action("upgrade", namespace, values)
            .unwrap_or_else(|error| panic!("helm upgrade in {namespace} failed:\n{error}"));
        assert_eq!(release["info"]["status"], "deployed", "{}", release["info"]);
        assert_eq!(
            release["version"], revision,
            "the upgrade is the release's revision {revision}"
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

    /// Creates `namespace` unless it exists.
    async fn create_namespace(&self, namespace: &str) {
        let admin = self.emulator.client().expect("admin client");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin);
        let _ = namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await;
    }

    /// Creates the Secret with the NATS passwords, as docs/install.md has you do.
    async fn create_nats_secret(&self, namespace: &str) {
        self.create_namespace(namespace).await;
        let admin = self.emulator.client().expect("admin client");
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
// The bundled NATS as Kubernetes runs it. The emulator runs no pods, so the
// StatefulSet controller and the kubelet are modelled: a NATS pod is a real
// nats-server started with the ConfigMap's `auth.conf` and the pod's
// environment (the Secret's passwords) as they are when it starts, and it is
// replaced only when the StatefulSet's pod template changes. A ConfigMap
// change alone restarts nothing, and nats-server reads its configuration only
// at start.

struct NatsPod {
    template: Value,
    server: NatsServer,
    /// The Secret's entries the pod read: key -> value.
    secret: BTreeMap<String, String>,
}

impl NatsPod {
    /// The NATS pod of what the cluster now holds in `namespace`.
    async fn start(cluster: &Cluster, namespace: &str) -> NatsPod {
        let statefulset = cluster
            .get("apps/v1", "StatefulSet", namespace, "prefect-k8s-nats")
            .await;
        let config = cluster
            .get("v1", "ConfigMap", namespace, "prefect-k8s-nats-config")
            .await;
        let admin = cluster.emulator.client().expect("admin client");
        let template = statefulset["spec"]["template"].clone();
        let mut env = Vec::new();
        let mut read = BTreeMap::new();
        for entry in template["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env")
        {
            let reference = &entry["valueFrom"]["secretKeyRef"];
            if let (Some(secret), Some(key)) =
                (reference["name"].as_str(), reference["key"].as_str())
            {
                let secret = Api::<Secret>::namespaced(admin.clone(), namespace)
                    .get(secret)
                    .await
                    .expect("the NATS Secret");
                let value = secret
                    .data
                    .unwrap_or_default()
                    .get(key)
                    .map(|bytes| String::from_utf8(bytes.0.clone()).expect("a UTF-8 password"));
                let value = value.expect("the Secret has the key");
                read.insert(key.to_owned(), value.clone());
                env.push((entry["name"].as_str().unwrap().to_owned(), value));
            }
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let auth = config["data"]["auth.conf"].as_str().expect("auth.conf");
        NatsPod {
            template,
            server: NatsServer::start_with_config(auth, &env),
            secret: read,
        }
    }

    /// What the StatefulSet controller does after an upgrade: a new pod (with
    /// the ConfigMap as it now is) if the pod template changed, else nothing.
    async fn follow(&mut self, cluster: &Cluster, namespace: &str) -> bool {
        let statefulset = cluster
            .get("apps/v1", "StatefulSet", namespace, "prefect-k8s-nats")
            .await;
        if statefulset["spec"]["template"] == self.template {
            return false;
        }
        *self = NatsPod::start(cluster, namespace).await;
        true
    }

    /// The poller and the dispatchers of the cluster's Deployments and
    /// settings (their NATS_USER, the Secret's passwords) may publish the
    /// work pool's subjects: the poller its due subject, a dispatcher its
    /// consumer's requests.
    async fn assert_serves_the_pool(&self, cluster: &Cluster, namespace: &str) {
        let settings = cluster
            .get("v1", "ConfigMap", namespace, "prefect-k8s-settings")
            .await;
        let pool = settings["data"]["PREFECT_K8S_WORK_POOL"].as_str().unwrap();
        for (service, subject) in [
            ("poller", flow_run_proto::subjects::due_subject(pool)),
            (
                "dispatcher",
                format!(
                    "$JS.API.CONSUMER.INFO.{}.{}",
                    flow_run_proto::subjects::FLOW_RUNS_STREAM,
                    flow_run_proto::subjects::dispatcher_consumer(pool)
                ),
            ),
        ] {
            let mut deployment = cluster
                .get(
                    "apps/v1",
                    "Deployment",
                    namespace,
                    &format!("prefect-k8s-{service}"),
                )
                .await;
            deployment["kind"] = json!("Deployment");
            let objects = [deployment];
            let container = container(&objects, "Deployment", &format!("prefect-k8s-{service}"));
            let user = env_entry(container, "NATS_USER")["value"]
                .as_str()
                .expect("NATS_USER");
            let key = env_entry(container, "NATS_PASSWORD")["valueFrom"]["secretKeyRef"]["key"]
                .as_str()
                .expect("NATS_PASSWORD from the Secret");
            let password = &self.secret[key];
            let answer = publish_raw(self.server.port(), user, password, &subject);
            assert!(
                answer.contains("PONG") && !answer.contains("-ERR"),
                "NATS refuses the {service} ({user}) of pool {pool:?} publishing {subject}: {answer}"
            );
        }
    }
}

/// Logs in on NATS's raw protocol and publishes an empty message to
/// `subject`; everything the server answered, up to the PONG after it.
fn publish_raw(port: u16, user: &str, password: &str, subject: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("NATS's port");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let connect = json!({"verbose": false, "pedantic": false, "user": user, "pass": password});
    let _ = write!(
        stream,
        "CONNECT {connect}\r\nPING\r\nPUB {subject} 0\r\n\r\nPING\r\n"
    );
    let mut answer = String::new();
    let mut buffer = [0u8; 4096];
    while answer.matches("PONG").count() < 2 && !answer.contains("Authorization Violation") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.push_str(&String::from_utf8_lossy(&buffer[..read])),
        }
    }
    answer
}

// ---------------------------------------------------------------------------
// The services' own flags, as prefect-k8s/tests/service_flags.rs checks the
// kustomize base: every environment variable of a service container is read
// by one of the service's flags (or outside clap), and the whole parses.

/// Read outside clap: logging, the health and metrics addresses, the
/// reporter's Lease namespace fallback and the Prefect client's CA bundle
/// (prefect-client/src/config.rs).
const READ_OUTSIDE_CLAP: [&str; 6] = [
    "RUST_LOG",
    "LOG_FORMAT",
    "HEALTH_ADDR",
    "METRICS_ADDR",
    "POD_NAMESPACE",
    "PREFECT_API_SSL_CERT_FILE",
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
    let client = service_runtime::prefect::client(&prefect, &config.pool.worker_name)
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

/// The pod-template annotation with the checksum of the settings ConfigMap.
const SETTINGS_CHECKSUM: &str = "checksum/settings";
const SERVICES: [&str; 3] = ["poller", "dispatcher", "reporter"];

/// The settings checksum of the poller's, dispatchers' and reporters' pod
/// templates: a SHA-256 in hex, the same on all three.
fn settings_checksum(objects: &[Value]) -> String {
    let sums: Vec<String> = SERVICES
        .iter()
        .map(|service| {
            let deployment = find(objects, "Deployment", &format!("prefect-k8s-{service}"));
            deployment["spec"]["template"]["metadata"]["annotations"][SETTINGS_CHECKSUM]
                .as_str()
                .unwrap_or_else(|| {
                    panic!("the {service}'s pod template has no {SETTINGS_CHECKSUM}")
                })
                .to_owned()
        })
        .collect();
    assert!(
        sums[0].len() == 64 && sums[0].chars().all(|c| c.is_ascii_hexdigit()),
        "{SETTINGS_CHECKSUM} is a SHA-256: {}",
        sums[0]
    );
    assert!(
        sums.iter().all(|sum| sum == &sums[0]),
        "one checksum on the three Deployments: {sums:?}"
    );
    sums[0].clone()
}

/// The pod-template annotation of the NATS StatefulSet with the checksum of
/// NATS's ConfigMap (nats-server reads it only at start).
const NATS_CONFIG_CHECKSUM: &str = "checksum/nats-config";

/// The NATS config checksum of the bundled NATS's pod template: a SHA-256.
fn nats_config_checksum(objects: &[Value]) -> String {
    let statefulset = find(objects, "StatefulSet", "prefect-k8s-nats");
    let sum = statefulset["spec"]["template"]["metadata"]["annotations"][NATS_CONFIG_CHECKSUM]
        .as_str()
        .unwrap_or_else(|| panic!("the NATS pod template has no {NATS_CONFIG_CHECKSUM}"))
        .to_owned();
    assert!(
        sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()),
        "{NATS_CONFIG_CHECKSUM} is a SHA-256: {sum}"
    );
    sum
}

/// A rendering without the two checksum annotations, which kustomize's and
/// `prefect-k8s install`'s renderings do not have (charts/prefect-k8s/README.md);
/// a pod template's annotations left empty go too. Nothing else is removed.
fn without_checksums(yaml: &str) -> String {
    let mut objects = parse_stream(yaml);
    for object in &mut objects {
        if let Some(metadata) = object
            .pointer_mut("/spec/template/metadata")
            .and_then(Value::as_object_mut)
        {
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(SETTINGS_CHECKSUM);
                annotations.remove(NATS_CONFIG_CHECKSUM);
                if annotations.is_empty() {
                    metadata.remove("annotations");
                }
            }
        }
    }
    objects
        .iter()
        .map(|object| format!("---\n{}", serde_norway::to_string(object).unwrap()))
        .collect()
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
/// with the values the chart's README gives for each overlay, what kustomize
/// renders of the overlay (the checksum annotations aside, which only the chart
/// has). The keda and pod-monitor overlays' custom resources are rendered and
/// applied by Helm too (the emulator serves their kinds as a cluster with the
/// CRDs does) and validated strictly against KEDA's and the Prometheus
/// Operator's CRDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_values_render_the_kustomize_base_and_values_render_each_overlay() {
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
        (
            "deploy/overlays/keda",
            json!({"dispatcher": {"autoscaling": {"keda": {"enabled": true}}}}),
        ),
        (
            "deploy/overlays/pod-monitor",
            json!({"podMonitor": {"enabled": true}}),
        ),
        (
            "deploy/overlays/api-key",
            json!({"worker": {"selfHostedServerApiConfig": {"passApiKeyToFlowRuns": true}}}),
        ),
    ];
    for (dir, values) in cases {
        // kustomize's objects are in `default`: so is the release.
        let rendered = cluster.install("default", &values).await;
        settings_checksum(&parse_stream(&rendered));
        if dir != "deploy/overlays/external-nats" {
            nats_config_checksum(&parse_stream(&rendered));
        }
        let expected = kustomize(&root.join(dir));
        assert_same_objects(
            &without_checksums(&rendered),
            &format!("the chart with {values}"),
            &expected,
            &format!("kubectl kustomize {dir}"),
        );
        assert_valid_kubernetes(&rendered, &format!("the chart with {values}"));
        cluster.uninstall("default").await;
    }

    // The custom resources: Helm applied them (the cluster held them until
    // the uninstall) and they pass their CRDs' schemas (assert_valid_kubernetes
    // routes them there); checked here once more on their own, so a stream
    // without them cannot pass.
    for (values, kind, name) in [
        (
            json!({"dispatcher": {"autoscaling": {"keda": {"enabled": true, "lagThreshold": 8}}}, "worker": {"config": {"workPool": "team a/etl"}}}),
            "ScaledObject",
            "prefect-k8s-dispatcher",
        ),
        (
            json!({"podMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}, "interval": "15s"}}),
            "PodMonitor",
            "prefect-k8s",
        ),
    ] {
        let objects = parse_stream(&cluster.install("custom", &values).await);
        let custom: Vec<&Value> = objects
            .iter()
            .filter(|object| object["kind"] == kind)
            .collect();
        assert_eq!(custom.len(), 1, "one {kind} with {values}");
        let stream = format!("---\n{}", serde_norway::to_string(custom[0]).unwrap());
        assert_valid_kubernetes(&stream, &format!("the {kind} with {values}"));
        let api_version = custom[0]["apiVersion"].as_str().unwrap();
        let stored = cluster.get(api_version, kind, "custom", name).await;
        assert_eq!(
            stored["spec"], custom[0]["spec"],
            "the cluster holds the {kind}"
        );
        match kind {
            "ScaledObject" => {
                assert!(
                    objects
                        .iter()
                        .all(|object| object["kind"] != "HorizontalPodAutoscaler"),
                    "KEDA's ScaledObject replaces the HorizontalPodAutoscaler"
                );
                let trigger = &custom[0]["spec"]["triggers"][0]["metadata"];
                // The consumer of the pool's subject token (a name that is no
                // NATS token is hashed), as the dispatchers create it.
                assert_eq!(
                    trigger["consumer"],
                    flow_run_proto::subjects::dispatcher_consumer("team a/etl")
                );
                assert_eq!(trigger["lagThreshold"], "8");
                assert_eq!(
                    trigger["natsServerMonitoringEndpoint"],
                    "prefect-k8s-nats-headless.custom.svc.cluster.local:8222"
                );
            }
            _ => {
                assert_eq!(
                    custom[0]["metadata"]["labels"]["release"],
                    "kube-prometheus-stack"
                );
                assert_eq!(
                    custom[0]["spec"]["podMetricsEndpoints"][0]["interval"],
                    "15s"
                );
            }
        }
        cluster.uninstall("custom").await;
        assert!(
            cluster.names(api_version, kind, "custom").await.is_empty(),
            "helm uninstall deletes the {kind}"
        );
    }
}

/// Prefect Cloud renders the api-key overlay but for the two fields Cloud
/// changes: the workspace's API URL, and the key no longer optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_values_render_the_api_key_overlay_with_the_workspace_url() {
    let cluster = Cluster::start().await;
    let account = "0b5a0f3e-2f6e-4a53-9d57-8c1b9a7f3c21";
    let workspace = "5d1c7e0a-7c8f-4d0e-a6a4-3e9f2b1d8c44";
    let rendered = cluster
        .install(
            "default",
            &json!({"worker": {
                "apiConfig": "cloud",
                "cloudApiConfig": {"accountId": account, "workspaceId": workspace}
            }}),
        )
        .await;
    assert_valid_kubernetes(&rendered, "the chart for Prefect Cloud");
    settings_checksum(&parse_stream(&rendered));
    let mut expected = parse_stream(&kustomize(
        &workspace_root().join("deploy/overlays/api-key"),
    ));
    let mut changed = 0;
    for object in &mut expected {
        if object["kind"] == "ConfigMap" && object["metadata"]["name"] == "prefect-k8s-settings" {
            object["data"]["PREFECT_API_URL"] = json!(format!(
                "https://api.prefect.cloud/api/accounts/{account}/workspaces/{workspace}"
            ));
            changed += 1;
        }
        if object["kind"] == "Deployment" {
            let containers = object
                .pointer_mut("/spec/template/spec/containers")
                .and_then(Value::as_array_mut)
                .unwrap();
            for entry in containers[0]["env"].as_array_mut().unwrap() {
                if entry["name"] == "PREFECT_API_KEY" {
                    let reference = entry["valueFrom"]["secretKeyRef"].as_object_mut().unwrap();
                    assert_eq!(reference.remove("optional"), Some(json!(true)));
                    changed += 1;
                }
            }
        }
    }
    assert_eq!(changed, 4, "the settings and the three services' key");
    let expected: String = expected
        .iter()
        .map(|object| format!("---\n{}", serde_norway::to_string(object).unwrap()))
        .collect();
    assert_same_objects(
        &without_checksums(&rendered),
        "the chart for Prefect Cloud",
        &expected,
        "kubectl kustomize deploy/overlays/api-key with Cloud's URL and a required key",
    );
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
    assert_eq!(dispatcher.pool.work_pool, "k8s-pool");
    let (poller, _, nats): (poller::PollerConfig, _, _) = parse_service(&in_cluster, "poller");
    assert_eq!(poller.work_queues, vec!["critical", "batch"]);
    let nats = nats.unwrap();
    assert_eq!(nats.url, "nats://prefect-k8s-nats:4222");
    assert_eq!(nats.user.as_deref(), Some("prefect-k8s-poller"));
    // NATS lets them in, with the permissions of the pool.
    let mut nats_pod = NatsPod::start(&cluster, namespace).await;
    nats_pod.assert_serves_the_pool(&cluster, namespace).await;

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

    // An upgrade that changes settings alone (the work pool) changes the
    // settings checksum of the services' pod templates, and nothing else of
    // them: the Deployments roll their pods onto the new settings.
    let deployments = |objects: Vec<Value>| -> Vec<Value> {
        objects
            .into_iter()
            .filter(|object| object["kind"] == "Deployment")
            .map(|object| object["spec"]["template"].clone())
            .collect()
    };
    let installed_checksum = settings_checksum(&objects);
    let settings_only = json!({
        "worker": {
            "selfHostedServerApiConfig": {"apiUrl": "http://prefect.example.internal:4200/api"},
            "config": {"workPool": "other-pool", "workQueues": ["critical", "batch"]}
        }
    });
    let settings_manifest = cluster.upgrade(namespace, &settings_only, 2).await;
    assert_valid_kubernetes(&settings_manifest, "the chart upgraded to a new work pool");
    let settings_upgrade = parse_stream(&settings_manifest);
    let mut live = Vec::new();
    for service in SERVICES {
        let mut object = cluster
            .get(
                "apps/v1",
                "Deployment",
                namespace,
                &format!("prefect-k8s-{service}"),
            )
            .await;
        object["kind"] = json!("Deployment");
        live.push(object);
    }
    // NATS's users follow the pool: the pod template changed, so the
    // StatefulSet replaces the NATS pod, which reads the new auth.conf; the
    // rolled poller and dispatchers may publish the new pool's subjects.
    assert!(
        nats_pod.follow(&cluster, namespace).await,
        "a new work pool replaces the NATS pod (nats-server reads auth.conf only at start)"
    );
    nats_pod.assert_serves_the_pool(&cluster, namespace).await;
    assert_ne!(
        nats_config_checksum(&settings_upgrade),
        nats_config_checksum(&objects)
    );
    let rolled_checksum = settings_checksum(&live);
    assert_ne!(
        rolled_checksum, installed_checksum,
        "a settings change rolls the services' pods"
    );
    assert_eq!(rolled_checksum, settings_checksum(&settings_upgrade));
    let strip = |templates: Vec<Value>| -> Vec<Value> {
        templates
            .into_iter()
            .map(|mut template| {
                template["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(SETTINGS_CHECKSUM);
                template
            })
            .collect()
    };
    assert_eq!(
        strip(deployments(objects.clone())),
        strip(deployments(settings_upgrade.clone())),
        "the settings checksum is all that changed in the pod templates"
    );

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
    let manifest = cluster.upgrade(namespace, &upgraded, 3).await;
    assert_valid_kubernetes(&manifest, "the upgraded chart");
    assert_eq!(
        settings_checksum(&parse_stream(&manifest)),
        rolled_checksum,
        "changes that leave the settings alone leave the checksum alone"
    );
    assert_eq!(
        nats_config_checksum(&parse_stream(&manifest)),
        nats_config_checksum(&settings_upgrade),
        "changes that leave the work pool alone leave NATS's config checksum alone"
    );
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
    assert_eq!(
        prefect.api_key.as_ref().map(|key| key.expose()),
        Some(SECRET_VALUE)
    );
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
    assert_eq!(
        prefect.auth_string.as_ref().map(|auth| auth.expose()),
        Some(SECRET_VALUE)
    );
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
        assert_eq!(
            nats.password.as_ref().map(|p| p.expose()),
            Some(SECRET_VALUE)
        );
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
        assert_eq!(config.pool.work_pool, pool);
    }
}

/// Checks every case shares: strictly valid, no credential in plain text,
/// and the three services start with its settings.
fn check_case(objects: &[Value], label: &str) {
    let stream: String = objects
        .iter()
        .map(|object| format!("---\n{}", serde_norway::to_string(object).unwrap()))
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
    let inverted = json!({"dispatcher": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}});
    let error = cluster
        .release_action("install", "refused", &inverted)
        .expect_err("Helm must refuse minReplicas above maxReplicas");
    assert!(
        error.contains("dispatcher.autoscaling.minReplicas (5) is greater than dispatcher.autoscaling.maxReplicas (2)"),
        "{error}"
    );
    // prefect-worker's default apiConfig is cloud: its values with only the
    // Cloud ids would silently get the self-hosted URL here, so they fail.
    for cloud_ids in [
        json!({"accountId": "0b5a0f3e-2f6e-4a53-9d57-8c1b9a7f3c21", "workspaceId": "5d1c7e0a-7c8f-4d0e-a6a4-3e9f2b1d8c44"}),
        json!({"workspaceId": "5d1c7e0a-7c8f-4d0e-a6a4-3e9f2b1d8c44"}),
    ] {
        let values = json!({"worker": {"cloudApiConfig": cloud_ids}});
        let error = cluster
            .release_action("install", "refused", &values)
            .expect_err(&format!("Helm must refuse {values}"));
        assert!(
            error.contains("worker.apiConfig is selfHostedServer")
                && error.contains("set worker.apiConfig=cloud"),
            "the error for {values} should say to set worker.apiConfig=cloud:\n{error}"
        );
    }
    assert!(
        cluster.names("v1", "Secret", "refused").await.is_empty(),
        "nothing was installed"
    );
}

/// The README's table of the prefect-worker values the chart refuses: value
/// -> what to use instead.
fn readme_refused_table() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## prefect-worker values this chart refuses\n")
        .nth(1)
        .expect("README.md has the refused values section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .skip_while(|line| !line.starts_with("|---"))
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            assert_eq!(cells.len(), 2, "a row of two cells: {line}");
            (
                cells[0]
                    .trim_start_matches("| ")
                    .trim_matches('`')
                    .to_owned(),
                cells[1].trim_end_matches(" |").to_owned(),
            )
        })
        .collect()
}

/// The schema's properties that only a `const` message allows: dotted path
/// -> the message.
fn schema_refusals(prefix: &str, schema: &Value, out: &mut BTreeMap<String, String>) {
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let Some(message) = property["const"].as_str() {
            out.insert(path, message.to_owned());
        } else {
            schema_refusals(&path, property, out);
        }
    }
}

/// A values document setting the dotted `path` to `value`.
fn values_at(path: &str, value: Value) -> Value {
    path.rsplit('.')
        .fold(value, |inner, key| json!({ key: inner }))
}

/// The prefect-worker values with no same-meaning value here are refused at
/// install by a schema message that names the value and says what to use
/// instead; the README lists the same values with the same words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_says_what_to_use_instead_of_the_prefect_worker_values_it_refuses() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .expect("values.schema.json");
    let mut refusals = BTreeMap::new();
    schema_refusals("", &schema, &mut refusals);
    assert_eq!(
        readme_refused_table(),
        refusals,
        "the README's refused values and the schema's differ"
    );
    for required in [
        "fullnameOverride",
        "worker.replicaCount",
        "worker.resources",
        "worker.image.prefectTag",
        "worker.selfHostedServerApiConfig.basicAuth.authString",
        "serviceAccount.name",
    ] {
        assert!(refusals.contains_key(required), "{required} is refused");
    }
    let cluster = Cluster::start().await;
    for (path, message) in &refusals {
        let values = values_at(path, json!("prefect-worker"));
        let error = cluster
            .release_action("install", "refused", &values)
            .expect_err(&format!("Helm must refuse {values}"));
        let pointer = format!("/{}", path.replace('.', "/"));
        assert!(
            error.contains(&format!("'{pointer}'")) && error.contains(message.as_str()),
            "the error for {path} should name {pointer} and say {message:?}:\n{error}"
        );
    }
}

/// The shell commands of docs/install.md's Helm section, in order, each with
/// its `\` continuation lines joined.
fn documented_helm_commands() -> Vec<String> {
    let docs = std::fs::read_to_string(workspace_root().join("docs/install.md")).unwrap();
    let section = docs
        .split("\n## 2. With Helm")
        .nth(1)
        .expect("docs/install.md has the Helm section");
    let section = section.split("\n## ").next().unwrap();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut command = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        command.push_str(line.trim_end_matches('\\').trim());
        if line.ends_with('\\') {
            command.push(' ');
        } else {
            commands.push(std::mem::take(&mut command));
        }
    }
    commands
}

/// docs/install.md's Helm commands as written: the namespace is created
/// before anything goes into it, the NATS Secret lands where the release
/// looks for it, and the documented self-hosted install (its `--set` values)
/// renders, validates and starts against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_helm_commands_work_in_their_order() {
    let commands = documented_helm_commands();
    let mut created = BTreeSet::new();
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        if let ["kubectl", "create", "namespace", namespace] = words.as_slice() {
            created.insert(namespace.to_string());
            continue;
        }
        if let Some(at) = words.iter().position(|word| *word == "-n") {
            let namespace = words[at + 1];
            assert!(
                created.contains(namespace),
                "`{command}` uses namespace {namespace} before `kubectl create namespace {namespace}`"
            );
        }
    }
    assert!(
        !created.is_empty(),
        "the Helm section creates its namespace"
    );

    let cluster = Cluster::start().await;
    let kubectl_dir = manifest_tools::kubectl_with_kustomize()
        .parent()
        .unwrap()
        .to_path_buf();
    let mut install = None;
    for command in &commands {
        if command.starts_with("kubectl ") {
            manifest_tools::run_ok(
                Command::new("sh")
                    .args(["-c", command])
                    .env("KUBECONFIG", cluster.emulator.kubeconfig_path())
                    .env("PREFECT_API_KEY", "pnu_not-a-real-key")
                    .env(
                        "PATH",
                        format!(
                            "{}:{}",
                            kubectl_dir.display(),
                            std::env::var("PATH").unwrap_or_default()
                        ),
                    ),
                command,
            );
        } else if command.starts_with("helm install") && install.is_none() {
            install = Some(command.clone());
        }
    }
    let install = install.expect("a documented helm install");
    let words: Vec<&str> = install.split_whitespace().collect();
    let namespace = words[words.iter().position(|word| *word == "-n").unwrap() + 1];
    let mut values = json!({});
    for (at, word) in words.iter().enumerate() {
        if *word == "--set" {
            let (path, value) = words[at + 1].split_once('=').unwrap();
            merge(&mut values, values_at(path, json!(value)));
        }
    }
    let objects = parse_stream(&cluster.install(namespace, &values).await);
    check_case(&objects, "the documented helm install");
    let secret = find(&objects, "StatefulSet", "prefect-k8s-nats")["spec"]["template"]["spec"]
        ["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        cluster
            .names("v1", "Secret", namespace)
            .await
            .contains(&secret),
        "the documented commands created {secret} in {namespace}, where the release looks"
    );
    NatsPod::start(&cluster, namespace)
        .await
        .assert_serves_the_pool(&cluster, namespace)
        .await;
}

/// Merges `extra` into `values` (objects key by key).
fn merge(values: &mut Value, extra: Value) {
    match (values, extra) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Wherever the docs say the chart renders exactly the kustomize base, the
/// same paragraph names the exception: the checksum annotations.
#[test]
fn the_exactly_the_kustomize_base_claims_name_the_checksum_exception() {
    let root = workspace_root();
    for file in [
        "charts/prefect-k8s/Chart.yaml",
        "charts/prefect-k8s/values.yaml",
        "charts/prefect-k8s/README.md",
        "docs/install.md",
        "README.md",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut claims = 0;
        for paragraph in text.split("\n\n") {
            let flat = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
            if flat.contains("exactly") && flat.contains("kustomize") {
                claims += 1;
                assert!(
                    flat.contains("checksum"),
                    "{file}: a claim of exactly the kustomize base without the checksum exception: {flat}"
                );
            }
        }
        assert!(
            claims > 0,
            "{file} states how the chart relates to kustomize"
        );
    }
}

/// Every value of values.yaml is in the README's table with its default, and
/// the table names no value values.yaml lacks.
#[test]
fn the_readme_lists_every_value_with_its_default() {
    let chart = chart_dir();
    let values: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
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
fn flatten(prefix: &str, value: &serde_norway::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_norway::Value::Mapping(map) if !map.is_empty() && !prefix.ends_with("resources") => {
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

// ---------------------------------------------------------------------------
// The README's table of `prefect-k8s install` options and the values they map
// to: each row, run both ways, renders the same objects.

/// One row of the table: its first cell as written, the options (besides
/// `-n <namespace> --rbac --existing-nats-secret`, which every run has unless
/// the row is about them), the values, and the value names its second cell
/// must name (every value set here is under one of them).
struct OptionRow {
    option: &'static str,
    args: &'static [&'static str],
    values: Value,
    names: &'static [&'static str],
}

fn option_rows() -> Vec<OptionRow> {
    vec![
        OptionRow {
            option: "`-t/--token KEY`",
            args: &["-t", "pnu_not-a-real-key"],
            values: json!({"worker": {"selfHostedServerApiConfig": {"passApiKeyToFlowRuns": true}}}),
            names: &["worker.selfHostedServerApiConfig.passApiKeyToFlowRuns"],
        },
        OptionRow {
            option: "`-l/--label QUEUE` (repeated)",
            args: &["-l", "critical", "-l", "batch"],
            values: json!({"worker": {"config": {"workQueues": ["critical", "batch"]}}}),
            names: &["worker.config.workQueues"],
        },
        OptionRow {
            option: "`-e/--env KEY=VALUE` (repeated)",
            args: &["-e", "EXTRA_PIP_PACKAGES=s3fs", "-e", "TZ=UTC"],
            values: json!({"flowRuns": {"env": {"EXTRA_PIP_PACKAGES": "s3fs", "TZ": "UTC"}}}),
            names: &["flowRuns.env"],
        },
        OptionRow {
            option: "`-a/--api URL`",
            args: &["-a", "https://prefect.example.internal/api"],
            values: json!({"worker": {"selfHostedServerApiConfig": {"apiUrl": "https://prefect.example.internal/api"}}}),
            names: &["worker.selfHostedServerApiConfig.apiUrl"],
        },
        OptionRow {
            option: "`-n/--namespace NS`",
            // Helm's release lives elsewhere; namespaceOverride places the objects.
            args: &["-n", "agents"],
            values: json!({"namespaceOverride": "agents"}),
            names: &["namespaceOverride"],
        },
        OptionRow {
            option: "`-i/--image-pull-secrets NAME,...`",
            args: &["-i", "regcred,mirror"],
            values: json!({"worker": {"image": {"pullSecrets": ["regcred", "mirror"]}}}),
            names: &["worker.image.pullSecrets"],
        },
        OptionRow {
            option: "`--rbac`",
            // The row is the option's absence: no Role, no RoleBinding.
            args: &[],
            values: json!({"role": {"create": false}, "rolebinding": {"create": false}}),
            names: &["role.create", "rolebinding.create"],
        },
        OptionRow {
            option: "`--latest`",
            args: &["--latest"],
            values: json!({"worker": {"image": {"tag": "latest", "pullPolicy": "Always"}}}),
            names: &["worker.image.tag", "worker.image.pullPolicy"],
        },
        OptionRow {
            option: "`--image IMAGE`",
            args: &["--image", "registry.example.com/prefect-k8s:0.2.0"],
            values: json!({"worker": {"image": {"repository": "registry.example.com/prefect-k8s", "tag": "0.2.0"}}}),
            names: &["worker.image.repository", "worker.image.tag"],
        },
        OptionRow {
            option: "`--mem-request`, `--mem-limit`, `--cpu-request`, `--cpu-limit`",
            args: &[
                "--mem-request",
                "256Mi",
                "--mem-limit",
                "1Gi",
                "--cpu-request",
                "250m",
                "--cpu-limit",
                "2",
            ],
            values: json!({"flowRuns": {"resources": {
                "requests": {"memory": "256Mi", "cpu": "250m"},
                "limits": {"memory": "1Gi", "cpu": "2"}
            }}}),
            names: &[
                "flowRuns.resources.requests.memory",
                "flowRuns.resources.limits.memory",
                "flowRuns.resources.requests.cpu",
                "flowRuns.resources.limits.cpu",
            ],
        },
        OptionRow {
            option: "`--image-pull-policy POLICY`",
            args: &["--image-pull-policy", "Always"],
            values: json!({"flowRuns": {"imagePullPolicy": "Always"}}),
            names: &["flowRuns.imagePullPolicy"],
        },
        OptionRow {
            option: "`--service-account-name NAME`",
            args: &["--service-account-name", "flow-runner"],
            values: json!({"flowRuns": {"serviceAccountName": "flow-runner"}}),
            names: &["flowRuns.serviceAccountName"],
        },
        OptionRow {
            option: "`--work-pool POOL`",
            args: &["--work-pool", "team a/etl"],
            values: json!({"worker": {"config": {"workPool": "team a/etl"}}}),
            names: &["worker.config.workPool"],
        },
        OptionRow {
            option: "`--dispatchers N`, `--max-dispatchers M`",
            args: &["--dispatchers", "3", "--max-dispatchers", "12"],
            values: json!({"dispatcher": {"autoscaling": {"minReplicas": 3, "maxReplicas": 12}}}),
            names: &[
                "dispatcher.autoscaling.minReplicas",
                "dispatcher.autoscaling.maxReplicas",
            ],
        },
        OptionRow {
            option: "`--nats-url URL`",
            args: &["--nats-url", "nats://nats.example.internal:4222"],
            values: json!({"nats": {"enabled": false, "external": {"url": "nats://nats.example.internal:4222"}}}),
            names: &["nats.enabled", "nats.external.url"],
        },
        OptionRow {
            option: "`--existing-nats-secret`",
            // The row is the option's absence: install generates the Secret
            // (dropped below, with its pod annotation), the chart never does.
            args: &[],
            values: json!({"nats": {"auth": {"existingSecret": "prefect-k8s-nats-auth"}}}),
            names: &["nats.auth.existingSecret"],
        },
        OptionRow {
            option: "`--flow-namespace NS`",
            args: &["--flow-namespace", "flows"],
            values: json!({"flowRuns": {"namespace": "flows"}}),
            names: &["flowRuns.namespace"],
        },
    ]
}

/// The README's `prefect-k8s install` table: first cell -> second cell.
fn readme_option_table() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## `prefect-k8s install` options as values\n")
        .nth(1)
        .expect("README.md has the install options section");
    let section = section.split("\n## ").next().unwrap();
    let mut table = BTreeMap::new();
    // The rows after the header and its |---| line.
    let rows = section
        .lines()
        .skip_while(|line| !line.starts_with("|---"))
        .skip(1)
        .take_while(|line| line.starts_with('|'));
    for line in rows {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cells.len(), 2, "a row of two cells: {line}");
        let option = cells[0].trim_start_matches("| ").to_owned();
        let value = cells[1].trim_end_matches(" |").to_owned();
        assert!(table.insert(option, value).is_none(), "a row twice: {line}");
    }
    table
}

/// The leaves of a values document as dotted names.
fn value_names(prefix: &str, values: &Value, out: &mut Vec<String>) {
    match values {
        Value::Object(map) => {
            for (key, child) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                value_names(&name, child, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// A rendering as the two ways can share it: no Namespace and no Secret (the
/// chart creates neither: `helm install --create-namespace`, and Secrets are
/// yours), no generated NATS-password annotation and no checksum annotations.
fn comparable(yaml: &str) -> String {
    parse_stream(&without_checksums(&without_generated_nats_auth(yaml)))
        .into_iter()
        .filter(|object| object["kind"] != "Namespace" && object["kind"] != "Secret")
        .map(|object| format!("---\n{}", serde_norway::to_string(&object).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_install_option_and_its_documented_value_render_the_same_objects() {
    let rows = option_rows();
    let table = readme_option_table();
    let tested: BTreeSet<String> = rows.iter().map(|row| row.option.to_owned()).collect();
    let documented: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        documented, tested,
        "the README's install options table and this test's rows differ"
    );
    let cluster = Cluster::start().await;
    // The job namespace of --flow-namespace, and the one namespaceOverride
    // names, exist before Helm installs into them.
    cluster.create_namespace("flows").await;
    cluster.create_namespace("agents").await;
    for (index, row) in rows.iter().enumerate() {
        let cell = &table[row.option];
        for name in row.names {
            assert!(
                ["`", "=", "."]
                    .iter()
                    .any(|after| cell.contains(&format!("`{name}{after}"))),
                "the README's row {} should name `{name}`: {cell}",
                row.option
            );
        }
        let mut set = Vec::new();
        value_names("", &row.values, &mut set);
        for name in &set {
            assert!(
                row.names
                    .iter()
                    .any(|documented| name == documented
                        || name.starts_with(&format!("{documented}."))),
                "{}: the value {name} is not in the README's row",
                row.option
            );
        }

        // Both ways, in a namespace of the row's own.
        let namespace = format!("option-{index}");
        let own_namespace = row.args.contains(&"-n");
        let mut args: Vec<&str> = Vec::new();
        if !own_namespace {
            args.extend(["-n", namespace.as_str()]);
        }
        if row.option != "`--rbac`" {
            args.push("--rbac");
        }
        if row.option != "`--existing-nats-secret`" {
            args.push("--existing-nats-secret");
        }
        args.extend(row.args);
        let printed = manifest_tools::install(&args);
        let rendered = cluster.install(&namespace, &row.values).await;
        assert_valid_kubernetes(&rendered, &format!("the chart with {}", row.values));
        settings_checksum(&parse_stream(&rendered));
        assert_same_objects(
            &comparable(&rendered),
            &format!("the chart with {}", row.values),
            &comparable(&printed),
            &format!("prefect-k8s install {}", args.join(" ")),
        );
        // The option does something: without it (and its value) the
        // renderings differ from the above.
        let mut plain_args: Vec<&str> = vec!["--rbac", "--existing-nats-secret"];
        if !own_namespace {
            plain_args.extend(["-n", namespace.as_str()]);
        }
        let plain = manifest_tools::install(&plain_args);
        let changed = if row.option == "`--existing-nats-secret`" {
            printed != plain
        } else {
            comparable(&printed) != comparable(&plain)
        };
        assert!(changed, "{} changes nothing", row.option);
    }
}

// ---------------------------------------------------------------------------
// The rest of the prefect-worker values: each takes effect in the rendered
// objects, which validate strictly, and the services still start.

/// The Roles and RoleBindings of a rendering as `kind/namespace/name`.
fn rbac_keys(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|object| object["kind"] == "Role" || object["kind"] == "RoleBinding")
        .map(manifest_tools::object_key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_worker_values_take_effect() {
    let cluster = Cluster::start().await;

    // flowRuns.namespace: the Jobs' Roles in the job namespace, bound to the
    // agent's ServiceAccounts; the reporter's Lease Role stays home.
    // prefect-worker's worker.config.jobNamespace (the namespaces its observer
    // watches) may name the same namespace, which the reporter watches.
    cluster.create_namespace("flows").await;
    let objects = parse_stream(
        &cluster
            .install(
                "agent",
                &json!({
                    "flowRuns": {"namespace": "flows"},
                    "worker": {"config": {"jobNamespace": "flows"}}
                }),
            )
            .await,
    );
    check_case(&objects, "flowRuns.namespace");
    assert_eq!(
        rbac_keys(&objects),
        [
            "Role/flows/prefect-k8s-dispatcher",
            "RoleBinding/flows/prefect-k8s-dispatcher",
            "Role/flows/prefect-k8s-reporter",
            "RoleBinding/flows/prefect-k8s-reporter",
            "Role/agent/prefect-k8s-reporter",
            "RoleBinding/agent/prefect-k8s-reporter",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
    );
    for object in objects
        .iter()
        .filter(|object| object["kind"] == "RoleBinding")
    {
        assert_eq!(
            object["subjects"][0]["namespace"], "agent",
            "{}",
            object["metadata"]
        );
    }
    let lease_role = objects
        .iter()
        .find(|object| object["kind"] == "Role" && object["metadata"]["namespace"] == "agent")
        .unwrap();
    assert!(
        lease_role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|rule| rule["resources"] == json!(["leases"])),
        "only the Lease at home: {lease_role}"
    );
    let (dispatcher, _, _): (dispatcher::DispatcherConfig, _, _) =
        parse_service(&objects, "dispatcher");
    assert_eq!(dispatcher.job.namespace.as_deref(), Some("flows"));
    let (reporter, _, _): (reporter::service::ReporterConfig, _, _) =
        parse_service(&objects, "reporter");
    assert_eq!(reporter.namespace.as_deref(), Some("flows"));
    // Enforced: the dispatcher's token creates Jobs in `flows`, not at home.
    let client = cluster
        .emulator
        .service_account_client("agent", "prefect-k8s-dispatcher")
        .expect("the dispatcher's token");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "job-namespace-check"},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "prefect-job", "image": "prefecthq/prefect:3.9.1-python3.11"}]}}}
    }))
    .unwrap();
    Api::<Job>::namespaced(client.clone(), "flows")
        .create(&PostParams::default(), &job)
        .await
        .expect("the dispatcher creates Jobs in the job namespace");
    match Api::<Job>::namespaced(client, "agent")
        .create(&PostParams::default(), &job)
        .await
    {
        Err(kube::Error::Api(status)) if status.is_forbidden() => {}
        other => panic!("the dispatcher must not create Jobs in its own namespace: {other:?}"),
    }

    // Strings that look like numbers stay strings: namespaces, NATS users.
    for namespace in ["123", "456"] {
        cluster.create_namespace(namespace).await;
    }
    let manifest = cluster
        .install(
            "numeric-home",
            &json!({"namespaceOverride": "123", "flowRuns": {"namespace": "456"}}),
        )
        .await;
    let objects = parse_stream(&manifest);
    check_case(&objects, "numeric-looking namespaces");
    for object in &objects {
        assert!(
            object["metadata"]["namespace"] == "123" || object["metadata"]["namespace"] == "456",
            "{}",
            manifest_tools::object_key(object)
        );
    }
    let (dispatcher, _, _): (dispatcher::DispatcherConfig, _, _) =
        parse_service(&objects, "dispatcher");
    assert_eq!(dispatcher.job.namespace.as_deref(), Some("456"));
    let (reporter, _, _): (reporter::service::ReporterConfig, _, _) =
        parse_service(&objects, "reporter");
    assert_eq!(reporter.namespace.as_deref(), Some("456"));
    let objects = parse_stream(
        &cluster
            .install(
                "numeric-users",
                &json!({"nats": {"enabled": false, "external": {
                    "url": "nats://nats.example.internal:4222",
                    "pollerUser": "007",
                    "dispatcherUser": "008"
                }}}),
            )
            .await,
    );
    check_case(&objects, "numeric-looking NATS users");
    let (_, _, nats): (poller::PollerConfig, _, _) = parse_service(&objects, "poller");
    assert_eq!(nats.unwrap().user.as_deref(), Some("007"));
    let (_, _, nats): (dispatcher::DispatcherConfig, _, _) = parse_service(&objects, "dispatcher");
    assert_eq!(nats.unwrap().user.as_deref(), Some("008"));

    // prefect-worker's default jobNamespace (null) passes; any other
    // namespace than the flow runs' is refused, saying what to set.
    let objects = parse_stream(
        &cluster
            .install(
                "observer-default",
                &json!({"worker": {"config": {"jobNamespace": null}}}),
            )
            .await,
    );
    check_case(&objects, "jobNamespace null");
    let error = cluster
        .release_action(
            "install",
            "observer-other",
            &json!({"flowRuns": {"namespace": "flows"}, "worker": {"config": {"jobNamespace": "default,flows"}}}),
        )
        .expect_err("a jobNamespace other than the flow runs' is refused");
    assert!(
        error.contains("worker.config.jobNamespace \"default,flows\"")
            && error.contains("the flow-run namespace \"flows\"")
            && error.contains("set flowRuns.namespace"),
        "{error}"
    );

    // A private CA for the Prefect API: extraEnvVars, extraVolumes and
    // extraVolumeMounts; with the base job template from a ConfigMap (whose
    // volume the poller's extra volumes join); env from a ConfigMap and a
    // Secret of yours; extra RBAC rules for the dispatcher.
    let ca_env = json!({"name": "PREFECT_API_SSL_CERT_FILE", "value": "/etc/prefect-ca/ca.crt"});
    let ca_volume = json!({"name": "prefect-ca", "configMap": {"name": "prefect-ca"}});
    let ca_mount = json!({"name": "prefect-ca", "mountPath": "/etc/prefect-ca", "readOnly": true});
    let extra_rule =
        json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]});
    let objects = parse_stream(
        &cluster
            .install(
                "extras",
                &json!({
                    "worker": {
                        "config": {"baseJobTemplate": {"existingConfigMapName": "my-job-template"}},
                        "extraEnvVars": [ca_env],
                        "extraVolumes": [ca_volume],
                        "extraVolumeMounts": [ca_mount],
                        "extraEnvVarsCM": "agent-settings",
                        "extraEnvVarsCMs": ["team-settings", "site-settings"],
                        "extraEnvVarsSecret": "agent-secrets",
                        "extraEnvVarsSecrets": ["team-secrets"]
                    },
                    "role": {"extraPermissions": [extra_rule]}
                }),
            )
            .await,
    );
    check_case(&objects, "extra env, volumes and rules");
    for service in SERVICES {
        let name = format!("prefect-k8s-{service}");
        let pod = &find(&objects, "Deployment", &name)["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(
            env_entry(container, "PREFECT_API_SSL_CERT_FILE"),
            &ca_env,
            "{service}"
        );
        assert_eq!(
            container["envFrom"],
            json!([
                {"configMapRef": {"name": "prefect-k8s-settings"}},
                {"configMapRef": {"name": "agent-settings"}},
                {"configMapRef": {"name": "team-settings"}},
                {"configMapRef": {"name": "site-settings"}},
                {"secretRef": {"name": "agent-secrets"}},
                {"secretRef": {"name": "team-secrets"}}
            ]),
            "{service}: the settings first, then yours"
        );
        let (volumes, mounts) = if service == "poller" {
            (
                json!([{"name": "base-job-template", "configMap": {"name": "my-job-template"}}, ca_volume]),
                json!([{"name": "base-job-template", "mountPath": "/etc/prefect-k8s/base-job-template", "readOnly": true}, ca_mount]),
            )
        } else {
            (json!([ca_volume]), json!([ca_mount]))
        };
        assert_eq!(pod["volumes"], volumes, "{service}");
        assert_eq!(container["volumeMounts"], mounts, "{service}");
    }
    let (poller, _, _): (poller::PollerConfig, _, _) = parse_service(&objects, "poller");
    assert_eq!(
        poller.base_job_template.as_deref(),
        Some(Path::new(
            "/etc/prefect-k8s/base-job-template/baseJobTemplate.json"
        )),
        "the poller reads the template where the ConfigMap is mounted"
    );
    let rules = &find(&objects, "Role", "prefect-k8s-dispatcher")["rules"];
    assert_eq!(rules.as_array().unwrap().last(), Some(&extra_rule));
    let client = cluster
        .emulator
        .service_account_client("extras", "prefect-k8s-dispatcher")
        .expect("the dispatcher's token");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, "extras")
        .list(&ListParams::default())
        .await
        .expect("the extra rule lets the dispatcher list ConfigMaps");

    // worker.config.queryInterval, prefetchSeconds and name: the poller's
    // query interval and prefetch, and the worker name of the poller and
    // the dispatchers, as prefect-worker's values set them for its worker.
    let objects = parse_stream(
        &cluster
            .install(
                "timing",
                &json!({"worker": {"config": {
                    "queryInterval": 2.5,
                    "prefetchSeconds": 0,
                    "name": "k8s-east",
                    "type": "kubernetes"
                }}}),
            )
            .await,
    );
    check_case(&objects, "queryInterval, prefetchSeconds and name");
    let (poller, _, _): (poller::PollerConfig, _, _) = parse_service(&objects, "poller");
    assert_eq!(poller.poll_interval_seconds, 2.5);
    assert_eq!(poller.prefetch_seconds, 0);
    assert_eq!(poller.pool.worker_name, "k8s-east");
    let (dispatcher, _, _): (dispatcher::DispatcherConfig, _, _) =
        parse_service(&objects, "dispatcher");
    assert_eq!(dispatcher.pool.worker_name, "k8s-east");
    let (reporter, _, _): (reporter::service::ReporterConfig, _, _) =
        parse_service(&objects, "reporter");
    assert_eq!(reporter.pool.worker_name, "prefect-k8s-reporter");
    let defaults = parse_stream(&cluster.install("timing-defaults", &json!({})).await);
    let (poller, _, _): (poller::PollerConfig, _, _) = parse_service(&defaults, "poller");
    assert_eq!(
        (
            poller.poll_interval_seconds,
            poller.prefetch_seconds,
            poller.pool.worker_name.as_str()
        ),
        (5.0, 10, "prefect-k8s"),
        "null: the poller's defaults, prefect-worker's too"
    );

    // namespaceOverride: every object in the named namespace, whatever the
    // release's; the cluster holds them there.
    cluster.create_namespace("agents-elsewhere").await;
    let objects = parse_stream(
        &cluster
            .install(
                "release-home",
                &json!({"namespaceOverride": "agents-elsewhere"}),
            )
            .await,
    );
    check_case(&objects, "namespaceOverride");
    for object in &objects {
        assert_eq!(
            object["metadata"]["namespace"],
            "agents-elsewhere",
            "{}",
            manifest_tools::object_key(object)
        );
        for subject in object["subjects"].as_array().into_iter().flatten() {
            assert_eq!(subject["namespace"], "agents-elsewhere");
        }
    }
    cluster
        .get(
            "apps/v1",
            "Deployment",
            "agents-elsewhere",
            "prefect-k8s-dispatcher",
        )
        .await;
    assert!(
        cluster
            .names("apps/v1", "Deployment", "release-home")
            .await
            .is_empty(),
        "nothing in the release's namespace"
    );

    // serviceAccount.create=false with your ServiceAccounts' names: none is
    // created, and the pods and RoleBindings use yours.
    let objects = parse_stream(
        &cluster
            .install(
                "own-accounts",
                &json!({
                    "serviceAccount": {"create": false},
                    "poller": {"serviceAccount": {"name": "team-poller"}},
                    "dispatcher": {"serviceAccount": {"name": "team-dispatcher"}},
                    "reporter": {"serviceAccount": {"name": "team-reporter"}}
                }),
            )
            .await,
    );
    check_case(&objects, "own ServiceAccounts");
    assert!(
        objects
            .iter()
            .all(|object| object["kind"] != "ServiceAccount"),
        "no ServiceAccount is created"
    );
    for service in SERVICES {
        let pod = &find(&objects, "Deployment", &format!("prefect-k8s-{service}"))["spec"]
            ["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], format!("team-{service}"));
    }
    // The dispatcher refuses flows asking for the renamed accounts.
    let dispatcher = find(&objects, "Deployment", "prefect-k8s-dispatcher");
    let reserved = dispatcher["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|env| env["name"] == "PREFECT_K8S_RESERVED_SERVICE_ACCOUNTS")
        .map(|env| env["value"].clone());
    assert_eq!(
        reserved,
        Some(json!("team-poller,team-dispatcher,team-reporter")),
        "renamed agent accounts are reserved"
    );
    for name in ["prefect-k8s-dispatcher", "prefect-k8s-reporter"] {
        let binding = find(&objects, "RoleBinding", name);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": name.replace("prefect-k8s", "team"), "namespace": "own-accounts"}])
        );
    }

    // dispatcher.autoscaling.enabled=false: a fixed count, no autoscaler of
    // either kind.
    let objects = parse_stream(
        &cluster
            .install(
                "fixed",
                &json!({"dispatcher": {"replicaCount": 4, "autoscaling": {"enabled": false, "keda": {"enabled": true}}}}),
            )
            .await,
    );
    check_case(&objects, "no autoscaling");
    assert_eq!(
        find(&objects, "Deployment", "prefect-k8s-dispatcher")["spec"]["replicas"],
        4
    );
    assert!(
        objects
            .iter()
            .all(|object| object["kind"] != "HorizontalPodAutoscaler"
                && object["kind"] != "ScaledObject"),
        "no autoscaler"
    );
}
