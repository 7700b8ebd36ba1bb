//! Pod runtimes behind the simulated kubelet. A runtime decides whether an image "pulls" and
//! runs one container: it returns a [`ContainerRun`] whose exit arrives on a channel and which
//! accepts TERM/KILL signals. `scripted` follows rules; `process` runs real child processes.

pub mod process;
pub mod scripted;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::container_logs::LogStream;

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerExit {
    /// Exit code (128+signal when killed by a signal).
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`, ...
    pub reason: String,
    /// Optional termination message.
    pub message: Option<String>,
}

impl ContainerExit {
    /// An exit with the reason the kubelet derives from the code.
    pub fn from_code(exit_code: i32) -> Self {
        Self {
            exit_code,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_string(),
            message: None,
        }
    }
}

/// Signals the kubelet sends to a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Graceful stop (SIGTERM).
    Terminate,
    /// Forced stop (SIGKILL).
    Kill,
}

/// A started container.
pub struct ContainerRun {
    /// Resolves when the container exits.
    pub exit: oneshot::Receiver<ContainerExit>,
    /// Send stop signals.
    pub signals: mpsc::Sender<StopSignal>,
}

/// What happens when the kubelet pulls the image.
#[derive(Debug, Clone, PartialEq)]
pub enum PullOutcome {
    /// The image is available.
    Pulled,
    /// Pull fails (ErrImagePull then ImagePullBackOff), with the runtime's error text.
    Fails(String),
}

/// The pod-level fate a runtime may impose (scripted eviction).
#[derive(Debug, Clone, PartialEq)]
pub enum PodFate {
    /// Run normally.
    Normal,
    /// The kubelet evicts the pod after this many milliseconds of running.
    EvictAfterMillis(u64),
}

/// Everything a runtime needs to start one container.
pub struct ContainerLaunch {
    /// The pod as stored when the container starts.
    pub pod: Arc<Value>,
    /// The container spec.
    pub container: Value,
    /// Resolved environment (`env` + `envFrom`).
    pub env: Vec<(String, String)>,
    /// Where output goes.
    pub log: Arc<LogStream>,
}

/// A pod runtime.
pub trait ContainerRuntime: Send + Sync {
    /// Decide the pull outcome for a container.
    fn pull(&self, pod: &Value, container: &Value) -> PullOutcome;
    /// Pod-level fate (eviction) for scripted scenarios.
    fn pod_fate(&self, _pod: &Value) -> PodFate {
        PodFate::Normal
    }
    /// Start a container.
    fn start(&self, launch: ContainerLaunch) -> ContainerRun;
}
