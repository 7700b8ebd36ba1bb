//! A real Prefect 3 server for tests, run from the project's virtualenv
//! (`prefect server start`) on a free loopback port with its own
//! `PREFECT_HOME` (SQLite database) in a temp dir.
//!
//! Starting one takes 10–30 s, so a test binary normally shares one:
//! [`PrefectServer::shared`]. Tests on a shared server must use unique names
//! for what they create ([`unique_name`]). A test that needs different
//! server settings (CSRF protection, an auth string) starts its own with
//! [`PrefectServer::start_with`].
//!
//! Starting is **blocking** (it spawns a process and polls
//! `GET /api/health`); calling it once from an async test is fine, or wrap
//! it in `tokio::task::spawn_blocking`.
//!
//! The server runs in its own process group. Dropping a [`PrefectServer`]
//! terminates the group; a small watchdog shell process also terminates it
//! when the test process is gone, because the shared server lives in a
//! `static` that is never dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::ports::free_port;

/// Environment variable naming the virtualenv that has `prefect` installed.
pub const VENV_ENV: &str = "PREFECT_K8S_VENV";

/// How long the server may take to answer `/api/health`.
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// Inherited variables that would point the server or a child CLI at some
/// other Prefect.
const INHERITED_PREFECT_VARS: &[&str] = &[
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_PROFILE",
    "PREFECT_HOME",
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_SERVER_CSRF_PROTECTION_ENABLED",
];

/// The project virtualenv: `$PREFECT_K8S_VENV`, else `<workspace>/.venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os(VENV_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".venv"),
    }
}

/// The Cargo workspace root (parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-stack lives inside the workspace")
        .to_path_buf()
}

/// `<prefix>-<pid>-<counter>-<nanos>`, lowercase and URL-safe: unique
/// across the tests of all concurrently running test binaries.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{count}-{nanos:x}", std::process::id())
}

/// Settings a test may want to differ from a default server. `Debug`
/// masks the auth string.
#[derive(Clone, Default)]
pub struct PrefectServerOptions {
    /// `PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true`.
    pub csrf_protection: bool,
    /// `PREFECT_SERVER_API_AUTH_STRING` (e.g. `admin:secret`); clients must
    /// then send `Authorization: Basic base64(auth_string)`.
    pub auth_string: Option<String>,
    /// More `PREFECT_*` settings for the server process.
    pub extra_env: Vec<(String, String)>,
    /// Defaults to 90 s.
    pub startup_timeout: Option<Duration>,
}

impl std::fmt::Debug for PrefectServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefectServerOptions")
            .field("csrf_protection", &self.csrf_protection)
            .field("auth_string", &self.auth_string.as_ref().map(|_| "***"))
            .field(
                "extra_env",
                &self
                    .extra_env
                    .iter()
                    .map(|(key, _)| key)
                    .collect::<Vec<_>>(),
            )
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

/// A running Prefect server; killed (process group) on drop.
pub struct PrefectServer {
    port: u16,
    home: tempfile::TempDir,
    venv: PathBuf,
    auth_string: Option<String>,
    child: Child,
    log_path: PathBuf,
    terminated: bool,
}

impl PrefectServer {
    /// Starts a server with default settings. Blocking; panics with the
    /// server's log tail when it does not come up, since no test can go on.
    pub fn start() -> PrefectServer {
        PrefectServer::start_with(PrefectServerOptions::default())
    }

    /// Starts a server with `options`. Blocking; panics on failure.
    pub fn start_with(options: PrefectServerOptions) -> PrefectServer {
        let venv = venv_dir();
        let prefect = venv.join("bin").join("prefect");
        assert!(
            prefect.exists(),
            "{} not found: create the virtualenv with `python3 -m venv {venv} && {venv}/bin/pip install prefect==3.9.1 prefect-kubernetes==0.8.0`, or point {VENV_ENV} at one",
            prefect.display(),
            venv = venv.display(),
        );
        let mut home = tempfile::Builder::new()
            .prefix("prefect-test-")
            .tempdir()
            .expect("create a temp dir for PREFECT_HOME");
        std::fs::create_dir_all(home.path().join("server-home")).expect("create server home");
        std::fs::create_dir_all(home.path().join("client-home")).expect("create client home");
        let timeout = options.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT);

        // A port picked as free may be taken before the server binds it:
        // then the server exits at once and another port is tried.
        let mut last_failure = String::new();
        for attempt in 1..=3 {
            let port = free_port();
            let log_path = home.path().join(format!("server-{attempt}.log"));
            let child = spawn_server(&venv, home.path(), port, &options, &log_path);
            let mut server = PrefectServer {
                port,
                home,
                venv: venv.clone(),
                auth_string: options.auth_string.clone(),
                child,
                log_path,
                terminated: false,
            };
            match server.wait_until_healthy(timeout) {
                Ok(()) => {
                    server.start_watchdog();
                    return server;
                }
                Err(failure) => {
                    last_failure = format!(
                        "{failure}\n--- server log tail ---\n{}",
                        server.log_tail(40)
                    );
                    let exited_early = failure.starts_with("exited");
                    server.terminate();
                    if !exited_early {
                        break;
                    }
                    // Keep the temp dir for the next attempt.
                    home = server.take_home();
                }
            }
        }
        panic!("the Prefect server did not start: {last_failure}");
    }

    /// One server shared by all tests of this test binary, started on first
    /// use (blocking). Never dropped; its watchdog stops it when the test
    /// process exits.
    pub fn shared() -> &'static PrefectServer {
        static SHARED: OnceLock<PrefectServer> = OnceLock::new();
        SHARED.get_or_init(PrefectServer::start)
    }

    /// `http://127.0.0.1:<port>/api`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process's id, which is also its process group's (the
    /// server and every process it starts).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The auth string the server demands, if it was started with one.
    pub fn auth_string(&self) -> Option<&str> {
        self.auth_string.as_deref()
    }

    /// The virtualenv the server runs from.
    pub fn venv(&self) -> &Path {
        &self.venv
    }

    /// `<venv>/bin/python`.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin").join("python")
    }

    /// `<venv>/bin/prefect`.
    pub fn prefect_cli(&self) -> PathBuf {
        self.venv.join("bin").join("prefect")
    }

    /// The environment a child `prefect` CLI (or `python -m prefect...`)
    /// process needs to talk to this server: `PREFECT_API_URL`, its own
    /// `PREFECT_HOME`, the auth string if any, analytics off, and the venv
    /// first on `PATH`. Apply with `Command::envs`; also remove inherited
    /// `PREFECT_API_KEY`/`PREFECT_PROFILE` if the test environment may set
    /// them.
    pub fn env(&self) -> Vec<(String, String)> {
        let bin = self.venv.join("bin");
        let path = match std::env::var_os("PATH") {
            Some(existing) => format!("{}:{}", bin.display(), existing.to_string_lossy()),
            None => bin.display().to_string(),
        };
        let mut env = vec![
            ("PREFECT_API_URL".to_string(), self.api_url()),
            (
                "PREFECT_HOME".to_string(),
                self.home.path().join("client-home").display().to_string(),
            ),
            (
                "PREFECT_SERVER_ANALYTICS_ENABLED".to_string(),
                "false".to_string(),
            ),
            ("VIRTUAL_ENV".to_string(), self.venv.display().to_string()),
            ("PATH".to_string(), path),
        ];
        if let Some(auth) = &self.auth_string {
            env.push(("PREFECT_API_AUTH_STRING".to_string(), auth.clone()));
        }
        env
    }

    /// The server's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn wait_until_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status} before answering /api/health"));
            }
            if health_answers(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no healthy answer from {} within {timeout:?}",
                    self.api_url()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A shell loop that terminates the server's process group once either
    /// the test process or the server is gone, then removes the temp dir
    /// (the shared server is never dropped, so nothing else would).
    fn start_watchdog(&self) {
        let script = r#"while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
kill -TERM -"$2" 2>/dev/null; sleep 5; kill -KILL -"$2" 2>/dev/null
case "$3" in */prefect-test-*) rm -rf -- "$3" ;; esac
exit 0"#;
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("prefect-server-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.child.id().to_string())
            .arg(self.home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Err(err) = spawned {
            tracing::warn!(%err, "could not start the Prefect server watchdog");
        }
    }

    /// SIGTERM to the process group, SIGKILL after 10 s, then reap.
    fn terminate(&mut self) {
        if self.terminated {
            return;
        }
        self.terminated = true;
        let group = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Children of the server (uvicorn workers) may outlive its main
        // process; the group is killed either way.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Moves the temp dir out (leaving an empty placeholder) so a failed
    /// attempt does not delete it on drop.
    fn take_home(mut self) -> tempfile::TempDir {
        let placeholder = tempfile::tempdir().expect("create a placeholder temp dir");
        std::mem::replace(&mut self.home, placeholder)
    }
}

impl Drop for PrefectServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl std::fmt::Debug for PrefectServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefectServer")
            .field("api_url", &self.api_url())
            .field("home", &self.home.path())
            .field("venv", &self.venv)
            .field("auth_string", &self.auth_string.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

fn spawn_server(
    venv: &Path,
    home: &Path,
    port: u16,
    options: &PrefectServerOptions,
    log_path: &Path,
) -> Child {
    let log = File::create(log_path).expect("create the server log file");
    let log_err = log.try_clone().expect("clone the server log handle");
    let bin = venv.join("bin");
    let path = match std::env::var_os("PATH") {
        Some(existing) => format!("{}:{}", bin.display(), existing.to_string_lossy()),
        None => bin.display().to_string(),
    };
    let mut command = Command::new(bin.join("prefect"));
    command
        .args(["server", "start", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .current_dir(home);
    for name in INHERITED_PREFECT_VARS {
        command.env_remove(name);
    }
    command
        .env("PREFECT_HOME", home.join("server-home"))
        .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        .env("PREFECT_UI_ENABLED", "false")
        .env("PREFECT_SERVER_UI_ENABLED", "false")
        .env(
            "PREFECT_SERVER_CSRF_PROTECTION_ENABLED",
            if options.csrf_protection {
                "true"
            } else {
                "false"
            },
        )
        .env("VIRTUAL_ENV", venv)
        .env("PATH", path)
        .env("PYTHONUNBUFFERED", "1");
    if let Some(auth) = &options.auth_string {
        command.env("PREFECT_SERVER_API_AUTH_STRING", auth);
    }
    for (key, value) in &options.extra_env {
        command.env(key, value);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {}: {err}", bin.join("prefect").display()))
}

/// True when `GET /api/health` on the port answers 200 (exempt from the auth
/// string, so this works for every server configuration).
fn health_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}
