//! One child process the campaign owns: spawned with its log appended to a
//! file, SIGKILLed and restarted, stopped and continued, terminated. Every
//! child joins the process group of a small keeper shell that kills the
//! group if the campaign itself dies, so no service outlives a crashed
//! harness.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("opening the log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How to start a process (again).
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// A process and its restarts.
pub struct Managed {
    spec: ProcessSpec,
    group: Option<i32>,
    child: Option<Child>,
    /// True from a deliberate kill until the restart: the supervisor leaves it down.
    held_down: bool,
    pub starts: u32,
    /// How it ended each time it exited without being asked to.
    pub unexpected_exits: Vec<String>,
}

/// Shared handle: the nemesis, the supervisor and the RSS sampler use it.
pub type Proc = Arc<tokio::sync::Mutex<Managed>>;

/// Variables that would point a child at some other Prefect or cluster.
const SCRUBBED_ENV: &[&str] = &[
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_PROFILE",
    "PREFECT_HOME",
    "KUBECONFIG",
    "NATS_URL",
];

impl Managed {
    pub fn new(spec: ProcessSpec, group: Option<i32>) -> Managed {
        Managed {
            spec,
            group,
            child: None,
            held_down: false,
            starts: 0,
            unexpected_exits: Vec::new(),
        }
    }

    pub fn shared(self) -> Proc {
        Arc::new(tokio::sync::Mutex::new(self))
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// Starts the process; its stdout and stderr are appended to its log.
    pub fn spawn(&mut self) -> Result<(), ProcessError> {
        let log = open_log(&self.spec.log)?;
        let log_err = log.try_clone().map_err(|source| ProcessError::Log {
            path: self.spec.log.clone(),
            source,
        })?;
        let mut command = Command::new(&self.spec.program);
        command.args(&self.spec.args);
        for name in SCRUBBED_ENV {
            command.env_remove(name);
        }
        command
            .envs(self.spec.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        if let Some(group) = self.group {
            command.process_group(group);
        }
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            name: self.spec.name.clone(),
            program: self.spec.program.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        self.held_down = false;
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref()?.id().map(|id| id as i32)
    }

    /// SIGKILL and reap; it stays down until [`Managed::spawn`].
    pub async fn sigkill(&mut self) {
        self.held_down = true;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the running process.
    pub fn signal(&self, signal: Signal) -> bool {
        self.pid()
            .is_some_and(|pid| kill(Pid::from_raw(pid), signal).is_ok())
    }

    /// If it exited although nobody asked, records how and forgets the child.
    pub fn reap_unexpected_exit(&mut self) -> Option<String> {
        if self.held_down {
            return None;
        }
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        let text = format!("{} exited by itself: {status}", self.spec.name);
        self.unexpected_exits.push(text.clone());
        Some(text)
    }

    /// SIGCONT, SIGTERM, then SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        self.held_down = true;
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let pid = Pid::from_raw(pid as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }
}

fn open_log(path: &Path) -> Result<std::fs::File, ProcessError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ProcessError::Log {
            path: path.to_owned(),
            source,
        })
}

/// The last `lines` lines of a text file ("" when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A shell in its own process group that outlives nothing: once the
/// campaign process is gone it SIGTERMs, then SIGKILLs, its whole group.
pub struct Keeper {
    child: Child,
}

impl Keeper {
    pub fn start() -> Result<Keeper, ProcessError> {
        let script = r#"trap "" TERM
while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -TERM 0; sleep 3; kill -KILL 0"#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("chaos-keeper")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                name: "keeper".into(),
                program: "sh".into(),
                source,
            })?;
        Ok(Keeper { child })
    }

    /// The process group children join.
    pub fn group(&self) -> Option<i32> {
        self.child.id().map(|id| id as i32)
    }
}
