//! The NATS configuration the manifests mount (`deploy/base` and the
//! `nats-cluster` overlay) runs on a real nats-server 2.9: the server takes
//! its name from `POD_NAME`, enables JetStream with a file store under the
//! volume, joins the named cluster, and answers the health checks the probes
//! call. The pod's fixed ports are overridden with free ones on the command
//! line; everything else comes from the file.

mod manifest_tools;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use manifest_tools::{find, install, kustomize, parse_stream, workspace_root};
use serde_json::Value;

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
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
    monitor_port: u16,
    _store: tempfile::TempDir,
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nats-server with `nats.conf` as the pod would (store under a temp
/// dir standing in for the volume mounted at /data).
fn start_with_config(config: &str, pod_name: &str) -> RunningServer {
    assert!(config.contains("store_dir: /data\n"), "{config}");
    let store = tempfile::tempdir().expect("temp dir");
    let data = store.path().join("data");
    let config_path = store.path().join("nats.conf");
    std::fs::write(
        &config_path,
        config.replace(
            "store_dir: /data\n",
            &format!("store_dir: {}\n", data.display()),
        ),
    )
    .unwrap();
    let monitor_port = free_port();
    let log_path = store.path().join("nats-server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(nats_server_binary());
    command
        .arg("--config")
        .arg(&config_path)
        .args(["--port", &free_port().to_string()])
        .args(["--http_port", &monitor_port.to_string()]);
    if config.contains("cluster {") {
        command.args(["--cluster", &format!("nats://127.0.0.1:{}", free_port())]);
    }
    let child = command
        .env("POD_NAME", pod_name)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nats-server");
    let server = RunningServer {
        child,
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

fn nats_conf(yaml: &str) -> String {
    let objects = parse_stream(yaml);
    find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf")
        .to_owned()
}

fn varz(server: &RunningServer) -> Value {
    let (status, body) = http_get(server.monitor_port, "/varz").expect("varz answers");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("varz is JSON")
}

#[test]
fn the_bundled_single_node_config_runs_jetstream_and_passes_the_probes() {
    let server = start_with_config(&nats_conf(&install(&[])), "prefect-k8s-nats-0");
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
    let objects = parse_stream(&install(&[]));
    let container = &find(&objects, "StatefulSet", "prefect-k8s-nats")["spec"]["template"]["spec"]
        ["containers"][0];
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .expect("an HTTP probe");
        let (status, body) = http_get(server.monitor_port, path).expect("the probe answers");
        assert_eq!(status, 200, "{probe} {path}: {body}");
    }
}

#[test]
fn the_three_node_overlay_config_names_the_cluster_and_its_routes() {
    let rendered = kustomize(&workspace_root().join("deploy/overlays/nats-cluster"));
    let config = nats_conf(&rendered);
    let server = start_with_config(&config, "prefect-k8s-nats-1");
    let varz = varz(&server);
    assert_eq!(varz["server_name"], "prefect-k8s-nats-1");
    assert_eq!(varz["cluster"]["name"], "prefect-k8s");
    let routes = varz["cluster"]["urls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(routes.len(), 3, "three routes: {}", varz["cluster"]);
    let objects = parse_stream(&rendered);
    assert_eq!(
        find(&objects, "StatefulSet", "prefect-k8s-nats")["spec"]["replicas"],
        3
    );
}
