//! The overlays for clusters that run operators: `deploy/overlays/keda`
//! (dispatchers scaled on the queue by KEDA's `nats-jetstream` scaler) and
//! `deploy/overlays/pod-monitor` (a Prometheus Operator `PodMonitor`).
//!
//! Their schemas are checked in `install_manifests.rs` with every overlay
//! (custom resources against the CRDs in `tests/testdata/crds`). Here: the
//! ScaledObject names what the scaler really reads — the stream, the work
//! pool's consumer, the account and a monitoring port that exists — and a
//! real nats-server, configured as `deploy/` configures it, answers the
//! scaler's request with the lag the queue holds; the PodMonitor selects the
//! three services and nothing else, on a port each of them serves.

mod manifest_tools;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use manifest_tools::{find, kustomize, parse_stream, workspace_root};
use serde_json::Value;
use service_runtime::nats::{dispatcher_consumer, ensure_streams, NatsOptions};
use service_runtime::nats_auth::{DISPATCHER_PASSWORD_ENV, POLLER_PASSWORD_ENV};
use test_stack::nats::NatsServer;

/// The trigger metadata KEDA's `nats-jetstream` scaler reads
/// (`natsJetStreamMetadata` in kedacore/keda `pkg/scalers/nats_jetstream_scaler.go`,
/// v2.20): a key it does not know is silently ignored, so a misspelt one
/// must fail here.
const NATS_JETSTREAM_KEYS: [&str; 8] = [
    "account",
    "accountID",
    "stream",
    "consumer",
    "lagThreshold",
    "activationLagThreshold",
    "useHttps",
    "natsServerMonitoringEndpoint",
];
const NATS_JETSTREAM_REQUIRED: [&str; 4] = [
    "stream",
    "consumer",
    "natsServerMonitoringEndpoint",
    "account",
];

fn overlay(name: &str) -> Vec<Value> {
    parse_stream(&kustomize(
        &workspace_root().join("deploy/overlays").join(name),
    ))
}

fn base() -> Vec<Value> {
    parse_stream(&kustomize(&workspace_root().join("deploy")))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn trigger<'a>(scaled_object: &'a Value, kind: &str) -> &'a Value {
    scaled_object["spec"]["triggers"]
        .as_array()
        .and_then(|triggers| triggers.iter().find(|t| t["type"] == kind))
        .unwrap_or_else(|| panic!("the ScaledObject has a {kind} trigger"))
}

fn setting<'a>(objects: &'a [Value], name: &str) -> &'a str {
    find(objects, "ConfigMap", "prefect-k8s-settings")["data"][name]
        .as_str()
        .unwrap_or_else(|| panic!("prefect-k8s-settings has {name}"))
}

#[test]
fn the_scaled_object_reads_the_dispatchers_consumer_and_replaces_the_cpu_autoscaler() {
    let objects = overlay("keda");
    let base = base();
    assert!(
        of_kind(&objects, "HorizontalPodAutoscaler").is_empty(),
        "KEDA makes the autoscaler; a second one on the Deployment would fight it"
    );
    let scaled = find(&objects, "ScaledObject", "prefect-k8s-dispatcher");
    let target = &scaled["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    let deployment = target["name"].as_str().unwrap();
    find(&objects, "Deployment", deployment);
    assert_eq!(scaled["metadata"]["namespace"], "default");

    let hpa = find(&base, "HorizontalPodAutoscaler", "prefect-k8s-dispatcher");
    assert_eq!(
        scaled["spec"]["minReplicaCount"],
        hpa["spec"]["minReplicas"]
    );
    assert_eq!(
        scaled["spec"]["maxReplicaCount"],
        hpa["spec"]["maxReplicas"]
    );
    let cpu_target = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
        .as_u64()
        .unwrap();
    let cpu = trigger(scaled, "cpu");
    assert_eq!(cpu["metricType"], "Utilization");
    assert_eq!(cpu["metadata"]["value"], cpu_target.to_string());
    assert_eq!(
        scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        hpa["spec"]["behavior"],
        "scaling down as slowly as the base"
    );

    let nats = &trigger(scaled, "nats-jetstream")["metadata"];
    let keys: Vec<&str> = nats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in &keys {
        assert!(
            NATS_JETSTREAM_KEYS.contains(key),
            "the scaler reads no `{key}`"
        );
    }
    for key in NATS_JETSTREAM_REQUIRED {
        assert!(keys.contains(&key), "the scaler needs `{key}`");
    }
    let pool = setting(&objects, "PREFECT_K8S_WORK_POOL");
    assert_eq!(nats["stream"], flow_run_proto::subjects::FLOW_RUNS_STREAM);
    assert_eq!(
        nats["consumer"],
        flow_run_proto::subjects::dispatcher_consumer(pool)
    );
    assert_eq!(nats["account"], "$G", "users without an account are in $G");
    let lag: u64 = nats["lagThreshold"].as_str().unwrap().parse().unwrap();
    assert!(lag >= 1);

    // The endpoint is a Service of the bundled NATS, in its namespace, on
    // the port nats.conf serves monitoring on.
    let endpoint = nats["natsServerMonitoringEndpoint"].as_str().unwrap();
    let (host, port) = endpoint.rsplit_once(':').unwrap();
    let port: u64 = port.parse().expect("a port number");
    let (service, namespace) = host
        .strip_suffix(".svc.cluster.local")
        .and_then(|rest| rest.split_once('.'))
        .unwrap_or_else(|| panic!("{endpoint}: <service>.<namespace>.svc.cluster.local:<port>"));
    let service = find(&objects, "Service", service);
    assert_eq!(service["metadata"]["namespace"], namespace);
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(
        ports.iter().any(|p| p["port"] == port),
        "{endpoint}: the Service has no port {port}"
    );
    let nats_conf = find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"]["nats.conf"]
        .as_str()
        .unwrap();
    assert!(nats_conf.contains(&format!("http_port: {port}")));
}

/// `GET <path>` on 127.0.0.1:`port`, the body as JSON.
fn get_json(port: u16, path: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// What the scaler computes from `/jsz`: the named consumer's pending plus
/// ack-pending, found in the named stream of the named account.
fn lag_as_keda_reads_it(monitor_port: u16, metadata: &Value) -> i64 {
    let account = metadata["account"].as_str().unwrap();
    let mut url = reqwest::Url::parse("http://localhost/jsz").unwrap();
    url.query_pairs_mut()
        .append_pair("acc", account)
        .append_pair("consumers", "true")
        .append_pair("config", "true");
    let path = format!("{}?{}", url.path(), url.query().unwrap());
    let jsz = get_json(monitor_port, &path);
    let accounts = jsz["account_details"].as_array().expect("account_details");
    let stream = accounts
        .iter()
        .filter(|a| a["name"] == account || a["id"] == account)
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == metadata["stream"])
        .unwrap_or_else(|| {
            panic!(
                "no stream {} in account {account}: {jsz}",
                metadata["stream"]
            )
        });
    let consumer = stream["consumer_detail"]
        .as_array()
        .and_then(|consumers| {
            consumers
                .iter()
                .find(|c| c["name"] == metadata["consumer"])
                .cloned()
        })
        .unwrap_or_else(|| panic!("no consumer {} in {stream}", metadata["consumer"]));
    consumer["num_pending"].as_i64().unwrap() + consumer["num_ack_pending"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_configured_as_deployed_answers_the_scaler_with_the_queues_lag() {
    let objects = overlay("keda");
    let auth_conf = find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"]["auth.conf"]
        .as_str()
        .unwrap();
    let server = NatsServer::start_with_config(
        auth_conf,
        &[
            (POLLER_PASSWORD_ENV, "poller-secret"),
            (DISPATCHER_PASSWORD_ENV, "dispatcher-secret"),
        ],
    );
    let metadata = trigger(
        find(&objects, "ScaledObject", "prefect-k8s-dispatcher"),
        "nats-jetstream",
    )["metadata"]
        .clone();
    let pool = setting(&objects, "PREFECT_K8S_WORK_POOL").to_owned();

    let login = |user: &str, password: &str| NatsOptions::with_user(server.url(), user, password);
    let poller =
        service_runtime::nats::connect(&login("prefect-k8s-poller", "poller-secret"), "poller")
            .await
            .expect("the poller logs in");
    let poller = jetstream::new(poller);
    ensure_streams(&poller, 1).await.expect("streams");
    let dispatcher = service_runtime::nats::connect(
        &login("prefect-k8s-dispatcher", "dispatcher-secret"),
        "dispatcher",
    )
    .await
    .expect("the dispatcher logs in");
    let (flow_runs, _) = ensure_streams(&jetstream::new(dispatcher), 1)
        .await
        .expect("streams");
    let consumer = dispatcher_consumer(&flow_runs, &pool, Duration::from_secs(60), 1000)
        .await
        .expect("the dispatchers' consumer");
    assert_eq!(lag_as_keda_reads_it(server.monitor_port(), &metadata), 0);

    let subject = flow_run_proto::subjects::due_subject(&pool);
    for run in 0..7 {
        poller
            .publish(subject.clone(), format!("run {run}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    assert_eq!(
        lag_as_keda_reads_it(server.monitor_port(), &metadata),
        7,
        "seven runs waiting"
    );

    // Three in a dispatcher's hands, not yet acknowledged: still lag.
    let mut batch = consumer
        .fetch()
        .max_messages(3)
        .messages()
        .await
        .expect("fetch");
    let mut held = Vec::new();
    while let Some(message) = batch.next().await {
        held.push(message.expect("message"));
    }
    assert_eq!(held.len(), 3);
    assert_eq!(lag_as_keda_reads_it(server.monitor_port(), &metadata), 7);

    for message in held {
        message.double_ack().await.expect("ack");
    }
    assert_eq!(
        lag_as_keda_reads_it(server.monitor_port(), &metadata),
        4,
        "acknowledged runs leave the queue"
    );
}

fn matches(selector: &Value, labels: &Value) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| &labels[key] == value);
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            assert_eq!(expression["operator"], "In", "only In is evaluated here");
            let values = expression["values"].as_array().unwrap();
            values.contains(&labels[expression["key"].as_str().unwrap()])
        });
    by_label && by_expression
}

#[test]
fn the_pod_monitor_scrapes_the_three_services_on_the_port_they_serve_metrics_on() {
    let objects = overlay("pod-monitor");
    let monitor = find(&objects, "PodMonitor", "prefect-k8s");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let port_name = endpoint["port"].as_str().unwrap();
    let path = endpoint["path"].as_str().unwrap();

    let mut selected = Vec::new();
    for workload in objects.iter().filter(|o| o["spec"]["template"].is_object()) {
        let template = &workload["spec"]["template"];
        if !matches(
            &monitor["spec"]["selector"],
            &template["metadata"]["labels"],
        ) {
            continue;
        }
        let name = workload["metadata"]["name"].as_str().unwrap().to_owned();
        let annotations = &template["metadata"]["annotations"];
        let port = template["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == port_name)
            .unwrap_or_else(|| panic!("{name} has no port named {port_name}"));
        assert_eq!(
            annotations["prometheus.io/port"],
            port["containerPort"].to_string(),
            "{name}: the PodMonitor and the annotations scrape the same port"
        );
        assert_eq!(annotations["prometheus.io/path"], path);
        selected.push(name);
    }
    selected.sort();
    assert_eq!(
        selected,
        [
            "prefect-k8s-dispatcher",
            "prefect-k8s-poller",
            "prefect-k8s-reporter"
        ],
        "the three services and nothing else (not NATS)"
    );
}
