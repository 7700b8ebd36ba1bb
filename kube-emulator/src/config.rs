//! [`EmulatorConfig`]: every knob of the emulator (port, pod runtime, node capacity, the node
//! autoscaler and its node groups, controller and kubelet delays, watch history, authorization
//! mode) with defaults close to a real cluster's and a [`EmulatorConfig::fast`] preset for tests.

use std::path::PathBuf;
use std::time::Duration;

mod autoscaler;

pub use autoscaler::{AutoscalerConfig, AutoscalerStyle, NodeGroup, Provisioning};

/// Which pod runtime the simulated kubelet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// Outcomes follow rules on image names and annotations (see `runtime::scripted`).
    #[default]
    Scripted,
    /// Containers run as local child processes (see `runtime::process`).
    Process,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scripted" => Ok(Self::Scripted),
            "process" => Ok(Self::Process),
            other => Err(format!(
                "unknown runtime {other:?} (expected scripted or process)"
            )),
        }
    }
}

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthorizationMode {
    /// Everything is allowed (any or no bearer token).
    #[default]
    AlwaysAllow,
    /// Bearer tokens map to users/ServiceAccounts; RBAC objects are enforced.
    Rbac,
}

/// Allocatable resources of a simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCapacity {
    /// CPU quantity, e.g. `"4"`.
    pub cpu: String,
    /// Memory quantity, e.g. `"16Gi"`.
    pub memory: String,
    /// Maximum pods.
    pub pods: u32,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        Self {
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 110_000,
        }
    }
}

/// Configuration of an [`crate::Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Pod runtime.
    pub runtime: RuntimeKind,
    /// Node allocatable; pods whose requests do not fit stay Pending/Unschedulable.
    pub node_capacity: NodeCapacity,
    /// Name of the simulated node.
    pub node_name: String,
    /// Where to write the kubeconfig; a temp file when `None`.
    pub kubeconfig_path: Option<PathBuf>,
    /// Authorization mode.
    pub authorization: AuthorizationMode,
    /// Serve HTTPS with a generated CA (the kubeconfig carries it). kubectl only sends kubeconfig
    /// credentials over TLS, so use this with RBAC when kubectl must authenticate.
    pub tls: bool,
    /// Base of the Job controller's pod failure backoff (real: 10 s, doubling, capped).
    pub job_backoff_base: Duration,
    /// Cap of the pod failure backoff (real: 10 min).
    pub job_backoff_max: Duration,
    /// Delay of each kubelet stage (scheduling, ContainerCreating, pulling).
    pub kubelet_stage_delay: Duration,
    /// How long a scripted container runs when no rule says otherwise.
    pub scripted_default_run: Duration,
    /// Delay between ErrImagePull and ImagePullBackOff.
    pub image_pull_backoff: Duration,
    /// Interval of watch BOOKMARK events (when the client allows them).
    pub watch_bookmark_interval: Duration,
    /// Number of changes retained for watches resuming from a resourceVersion.
    pub watch_history: usize,
    /// Capacity of the change broadcast; a watcher lagging further gets 410 and relists.
    pub watch_buffer: usize,
    /// Events older than this are deleted (the apiserver's `--event-ttl`, default 1 h).
    pub event_ttl: Duration,
    /// How long the namespace controller waits after a Namespace is deleted before it removes
    /// the content (real: 5 s, so `kubectl delete -f` of a stream starting with the Namespace
    /// still finds the rest).
    pub namespace_deletion_delay: Duration,
    /// Working directory of process-runtime containers (a temp dir per container when `None`).
    pub process_workdir: Option<PathBuf>,
    /// Extra environment for process-runtime containers (after the container's own env).
    pub process_env: Vec<(String, String)>,
    /// A node autoscaler growing node groups for unschedulable pods (none by default: the
    /// cluster is the one node).
    pub autoscaler: Option<AutoscalerConfig>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            port: 0,
            runtime: RuntimeKind::Scripted,
            node_capacity: NodeCapacity::default(),
            node_name: "kube-emulator-node".into(),
            kubeconfig_path: None,
            authorization: AuthorizationMode::AlwaysAllow,
            tls: false,
            job_backoff_base: Duration::from_secs(10),
            job_backoff_max: Duration::from_secs(600),
            kubelet_stage_delay: Duration::from_millis(500),
            scripted_default_run: Duration::from_secs(2),
            image_pull_backoff: Duration::from_secs(2),
            watch_bookmark_interval: Duration::from_secs(30),
            watch_history: 50_000,
            watch_buffer: 65_536,
            event_ttl: Duration::from_secs(3600),
            namespace_deletion_delay: Duration::from_secs(5),
            process_workdir: None,
            process_env: Vec::new(),
            autoscaler: None,
        }
    }
}

impl EmulatorConfig {
    /// Short delays for tests: 100 ms backoff base, 20 ms kubelet stages, 200 ms scripted runs,
    /// 1 s bookmarks, 1 s namespace deletion delay.
    pub fn fast() -> Self {
        Self {
            job_backoff_base: Duration::from_millis(100),
            job_backoff_max: Duration::from_secs(2),
            kubelet_stage_delay: Duration::from_millis(20),
            scripted_default_run: Duration::from_millis(200),
            image_pull_backoff: Duration::from_millis(200),
            watch_bookmark_interval: Duration::from_secs(1),
            namespace_deletion_delay: Duration::from_secs(1),
            ..Self::default()
        }
    }
}
