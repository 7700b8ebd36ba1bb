//! The NATS configuration the manifests mount (`deploy/base` and the
//! `nats-cluster` overlay) runs on a real nats-server 2.9 with the
//! environment the pod gets: the server takes its name from `POD_NAME`,
//! enables JetStream with a file store under the volume, reads its users'
//! passwords from the Secret's variables, refuses anyone without one, joins
//! the named cluster over password-protected routes, and answers the health
//! checks the probes call. The pod's fixed ports are overridden with free ones
//! (client and monitoring on the command line, the cluster port in the file:
//! nats-server's `--cluster` flag would drop the routes' authorization).

mod manifest_tools;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manifest_tools::{find, install, kustomize, parse_stream, workspace_root};
use serde_json::Value;
use service_runtime::nats_auth::{random_password, DISPATCHER_USER, POLLER_USER};
use test_stack::ports::free_port;

/// Where Debian's package puts the server; `NATS_SERVER_BIN` overrides it.
fn nats_server_binary() -> PathBuf {
    let binary = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
    assert!(
        binary.is_file(),
        "{} is missing: install the Debian package nats-server (scripts/install-deps.sh)",
        binary.display()
    );
    binary
}

/// A plain HTTP GET on the monitoring port: (status code, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((status, body))
}

struct RunningServer {
    child: Child,
    client_port: u16,
    monitor_port: u16,
    _store: tempfile::TempDir,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One NATS pod: the ConfigMap's files, the container's environment, and
/// the cluster port it listens on.
struct Node {
    files: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    cluster_port: Option<u16>,
}

/// Starts nats-server with the ConfigMap's files as the pod would (store
/// under a temp dir standing in for the volume mounted at /data).
fn start(node: &Node) -> RunningServer {
    let store = tempfile::tempdir().expect("temp dir");
    let data = store.path().join("data");
    for (name, text) in &node.files {
        let mut text = text.clone();
        if name == "nats.conf" {
            assert!(text.contains("store_dir: /data\n"), "{text}");
            text = text.replace(
                "store_dir: /data\n",
                &format!("store_dir: {}\n", data.display()),
            );
            if let Some(port) = node.cluster_port {
                assert!(text.contains("  port: 6222\n"), "{text}");
                text = text.replace("  port: 6222\n", &format!("  port: {port}\n"));
            }
        }
        std::fs::write(store.path().join(name), text).unwrap();
    }
    let (client_port, monitor_port) = (free_port(), free_port());
    let log_path = store.path().join("nats-server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = Command::new(nats_server_binary())
        .arg("--config")
        .arg(store.path().join("nats.conf"))
        .args(["--addr", "127.0.0.1"])
        .args(["--port", &client_port.to_string()])
        .args(["--http_port", &monitor_port.to_string()])
        .env_clear()
        .envs(&node.env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nats-server");
    let server = RunningServer {
        child,
        client_port,
        monitor_port,
        _store: store,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(monitor_port, "/varz").is_none() {
        assert!(
            Instant::now() < deadline,
            "nats-server did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn config_files(objects: &[Value]) -> BTreeMap<String, String> {
    find(objects, "ConfigMap", "prefect-k8s-nats-config")["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(name, text)| (name.clone(), text.as_str().unwrap().to_owned()))
        .collect()
}

/// The NATS container's environment as Kubernetes builds it: Secret values
/// from `secret`, the pod's name, and `$(VAR)` references to earlier entries.
fn pod_env(
    objects: &[Value],
    pod_name: &str,
    secret: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let container = &find(objects, "StatefulSet", "prefect-k8s-nats")["spec"]["template"]["spec"]
        ["containers"][0];
    let mut env = BTreeMap::new();
    for entry in container["env"].as_array().expect("env") {
        let name = entry["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = entry["value"].as_str() {
            env.iter()
                .fold(value.to_owned(), |text, (k, v): (&String, &String)| {
                    text.replace(&format!("$({k})"), v)
                })
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.to_owned()
        } else {
            let key = &entry["valueFrom"]["secretKeyRef"];
            assert_eq!(key["name"], "prefect-k8s-nats-auth", "{entry}");
            secret[key["key"].as_str().unwrap()].clone()
        };
        env.insert(name, value);
    }
    env
}

/// The Secret's passwords as install printed them.
fn install_secret(objects: &[Value]) -> BTreeMap<String, String> {
    find(objects, "Secret", "prefect-k8s-nats-auth")["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn varz(server: &RunningServer) -> Value {
    let (status, body) = http_get(server.monitor_port, "/varz").expect("varz answers");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("varz is JSON")
}

/// Connects as `user` without retrying: the server's answer to the login.
async fn login(
    server: &RunningServer,
    user: Option<(&str, &str)>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let options = match user {
        Some((name, password)) => {
            async_nats::ConnectOptions::with_user_and_password(name.into(), password.into())
        }
        None => async_nats::ConnectOptions::new(),
    };
    options
        .connect(format!("nats://127.0.0.1:{}", server.client_port))
        .await
}

fn assert_refused(result: Result<async_nats::Client, async_nats::ConnectError>, who: &str) {
    match result {
        Err(error) if error.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {}
        other => panic!("{who} should be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_single_node_config_runs_jetstream_for_its_users_only_and_passes_the_probes() {
    let objects = parse_stream(&install(&[]));
    let secret = install_secret(&objects);
    let server = start(&Node {
        files: config_files(&objects),
        env: pod_env(&objects, "prefect-k8s-nats-0", &secret),
        cluster_port: None,
    });
    let varz = varz(&server);
    assert_eq!(varz["server_name"], "prefect-k8s-nats-0");
    assert!(
        varz["jetstream"]["config"]["store_dir"]
            .as_str()
            .is_some_and(|dir| dir.contains("/data")),
        "JetStream stores under the volume: {}",
        varz["jetstream"]
    );
    assert_eq!(varz["jetstream"]["config"]["max_storage"], 8u64 << 30);
    assert_eq!(varz["auth_required"], true);
    let container = &find(&objects, "StatefulSet", "prefect-k8s-nats")["spec"]["template"]["spec"]
        ["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .expect("an HTTP probe");
        let (status, body) = http_get(server.monitor_port, path).expect("the probe answers");
        assert_eq!(status, 200, "{probe} {path}: {body}");
    }

    for (user, key) in [
        (POLLER_USER, "poller-password"),
        (DISPATCHER_USER, "dispatcher-password"),
    ] {
        let client = login(&server, Some((user, &secret[key])))
            .await
            .unwrap_or_else(|error| panic!("{user} logs in with the Secret's password: {error}"));
        client.flush().await.unwrap();
    }
    assert_refused(login(&server, None).await, "an anonymous client");
    assert_refused(
        login(&server, Some((POLLER_USER, &secret["dispatcher-password"]))).await,
        "the poller with the dispatcher's password",
    );
    assert_refused(
        login(
            &server,
            Some(("prefect-k8s-route", &secret["route-password"])),
        )
        .await,
        "the route user as a client",
    );
}

/// Sends a route CONNECT to a cluster port; returns the server's answer.
fn route_connect(port: u16, user: Option<(&str, &str)>) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the cluster port");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut info = [0u8; 4096];
    let _ = stream.read(&mut info).expect("the route INFO");
    let mut connect = serde_json::json!({
        "verbose": false, "pedantic": false, "name": "rogue", "cluster": "prefect-k8s", "headers": true
    });
    if let Some((name, password)) = user {
        connect["user"] = name.into();
        connect["pass"] = password.into();
    }
    write!(stream, "CONNECT {connect}\r\nPING\r\n").unwrap();
    let mut answer = [0u8; 1024];
    let read = stream.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_node_overlay_forms_a_cluster_over_password_protected_routes() {
    let rendered = kustomize(&workspace_root().join("deploy/overlays/nats-cluster"));
    let objects = parse_stream(&rendered);
    assert_eq!(
        find(&objects, "StatefulSet", "prefect-k8s-nats")["spec"]["replicas"],
        3
    );
    // The Secret as the documented one-liner makes it.
    let secret: BTreeMap<String, String> =
        ["poller-password", "dispatcher-password", "route-password"]
            .iter()
            .map(|key| (key.to_string(), random_password()))
            .collect();
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<RunningServer> = (0..3)
        .map(|index| {
            let mut env = pod_env(&objects, &format!("prefect-k8s-nats-{index}"), &secret);
            for value in env.values_mut() {
                for (other, port) in cluster_ports.iter().enumerate() {
                    // The headless Service's names, as DNS would resolve them here.
                    *value = value.replace(
                        &format!("prefect-k8s-nats-{other}.prefect-k8s-nats-headless:6222"),
                        &format!("127.0.0.1:{port}"),
                    );
                }
            }
            start(&Node {
                files: config_files(&objects),
                env,
                cluster_port: Some(cluster_ports[index]),
            })
        })
        .collect();
    let varz = varz(&nodes[1]);
    assert_eq!(varz["server_name"], "prefect-k8s-nats-1");
    assert_eq!(varz["cluster"]["name"], "prefect-k8s");
    assert_eq!(varz["cluster"]["urls"].as_array().map(Vec::len), Some(3));

    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        loop {
            let (_, body) = http_get(node.monitor_port, "/routez").expect("routez");
            let routes: Value = serde_json::from_str(&body).unwrap();
            if routes["num_routes"] == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the routes did not form: {routes}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    for (user, answer) in [
        (None, route_connect(cluster_ports[0], None)),
        (
            Some("wrong password"),
            route_connect(cluster_ports[0], Some(("prefect-k8s-route", "wrong"))),
        ),
    ] {
        assert!(
            answer.contains("Authorization Violation"),
            "a route with {user:?} is refused: {answer}"
        );
    }

    // JetStream runs on the cluster for the services' users: the poller sets
    // up three-replica streams (as the overlay's NATS_STREAM_REPLICAS says).
    let settings = &find(&objects, "ConfigMap", "prefect-k8s-settings")["data"];
    assert_eq!(settings["NATS_STREAM_REPLICAS"], "3");
    let poller = service_runtime::nats::connect(
        &service_runtime::nats::NatsOptions::with_user(
            format!("nats://127.0.0.1:{}", nodes[2].client_port),
            POLLER_USER,
            &secret["poller-password"],
        ),
        "poller",
    )
    .await
    .expect("the poller logs in as the poller does");
    let js = async_nats::jetstream::new(poller);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match service_runtime::nats::ensure_streams(&js, 3).await {
            Ok(_) => break,
            Err(error) => assert!(
                tokio::time::Instant::now() < deadline,
                "JetStream did not come up on the cluster: {error}"
            ),
        }
    }
    assert_refused(login(&nodes[0], None).await, "an anonymous client");
}
