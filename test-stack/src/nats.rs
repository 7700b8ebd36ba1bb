//! A real `nats-server` with JetStream for one test: its own free port and
//! store directory, so a test may SIGKILL it and start it again on the same
//! port with the same store, as a crashed broker would come back. A test may
//! give it a configuration file (users and permissions) and the environment
//! the file's `$VARIABLES` are read from; its monitoring port is open.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// Where Debian's package puts the server; `NATS_SERVER_BIN` overrides it.
const DEFAULT_BINARY: &str = "/usr/sbin/nats-server";

/// A running (or killed, restartable) nats-server.
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port. Panics with
    /// the server's log when it does not come up: a test cannot go on.
    pub fn start() -> NatsServer {
        Self::start_with_config("", &[])
    }

    /// Starts a server whose configuration file holds `config` (for example
    /// an `authorization` block), with `env` added to its environment.
    /// Address, ports and JetStream store still come from the command line.
    pub fn start_with_config(config: &str, env: &[(&str, &str)]) -> NatsServer {
        let store = tempfile::Builder::new()
            .prefix("nats-test-")
            .tempdir()
            .expect("create a temp dir for the JetStream store");
        let config = (!config.is_empty()).then(|| {
            let path = store.path().join("nats.conf");
            std::fs::write(&path, config).expect("write the nats-server configuration");
            path
        });
        let mut server = NatsServer {
            port: free_port(),
            monitor_port: free_port(),
            store,
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/connz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The server's log so far (permission violations are logged as errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILLs the server: no flush, no goodbye, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    fn spawn(&mut self) {
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| DEFAULT_BINARY.into());
        let store_dir = self.store.path().join("jetstream");
        let mut command = Command::new(&binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor_port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store_dir)
            .arg("-l")
            .arg(self.log_path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {binary} (install the Debian package nats-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.jetstream_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nats-server did not start on port {}; log:\n{}",
            self.port,
            read_tail(&self.log_path())
        );
    }

    /// JetStream announces itself in the log once it is enabled.
    fn jetstream_ready(&self) -> bool {
        std::fs::read_to_string(self.log_path())
            .map(|log| log.contains("Server is ready"))
            .unwrap_or(false)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
