//! The dispatcher: takes due flow runs from NATS JetStream, claims each in
//! Prefect, renders its Kubernetes Job and creates it. Any number of replicas
//! share one durable pull consumer per work pool; each handles at most
//! `--concurrency` runs at once, each run on its own task, so one slow call
//! holds up only its own run.
//!
//! What makes it safe to kill at any point is in [`submit`] and [`claim`];
//! `ARCHITECTURE.md` walks through every crash point.
//!
//! # Layout
//! - [`cli`]: the binary's command line and start-up.
//! - [`config`]: flags, including the seed agent's Job options.
//! - [`intake`]: the pull loop, its self-healing JetStream setup, and how
//!   each message is acked, nak'ed or parked.
//! - [`reads`]: batched reads of the runs in flight.
//! - [`claim`]: whether a message may claim its run, and whether its Job may start.
//! - [`render`]: the Job manifest for a run (prefect-kubernetes 0.8 compatible).
//! - [`kubernetes`]: Job creation (suspended), release and withdrawal, under deadlines.
//! - [`submit`]: one run from claim to Job.
//! - [`run_logs`]: the Python worker's submission lines in the runs' logs, batched.
//! - [`settings`]: which of the dispatcher's own `PREFECT_*` settings flow pods get.
//! - [`dead_letter`]: parking messages that cannot be handled.
//! - [`metrics`]: submissions, claims, due-to-Job latency, the consumer's backlog.
#![forbid(unsafe_code)]

pub mod claim;
pub mod cli;
#[warn(missing_docs)]
pub mod config;
pub mod dead_letter;
pub mod intake;
pub mod kubernetes;
pub mod metrics;
pub mod reads;
pub mod render;
pub mod run_logs;
pub mod settings;
pub mod submit;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prefect_client::PrefectClient;
use service_runtime::health::Health;
use tokio_util::sync::CancellationToken;

pub use cli::cli_command;
pub use config::{DispatcherConfig, JobOptions};

/// Everything that can stop the dispatcher from starting.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error(transparent)]
    Nats(#[from] service_runtime::nats::NatsSetupError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Counters of what this replica did, for logs, tests and metrics.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub submitted: AtomicU64,
    pub resumed: AtomicU64,
    pub skipped: AtomicU64,
    pub withdrawn: AtomicU64,
    pub crashed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl DispatchStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One dispatcher replica and what it talks to. Built like each service's
/// library entry: `Dispatcher::new(…)`, optionally `.with_telemetry(…)`, then
/// `.run(shutdown)`.
pub struct Dispatcher {
    config: DispatcherConfig,
    prefect: PrefectClient,
    kube: kube::Client,
    nats: async_nats::Client,
    health: Health,
    stats: Arc<DispatchStats>,
    metrics: metrics::DispatcherMetrics,
}

impl Dispatcher {
    /// A replica without a health server or served metrics.
    pub fn new(
        config: DispatcherConfig,
        prefect: PrefectClient,
        kube: kube::Client,
        nats: async_nats::Client,
    ) -> Self {
        Dispatcher {
            config,
            prefect,
            kube,
            nats,
            health: Health::detached(),
            stats: Arc::default(),
            metrics: metrics::DispatcherMetrics::detached(),
        }
    }

    /// Records into `metrics` and reports through `health` (NOT_SERVING while the
    /// replica cannot pull).
    pub fn with_telemetry(mut self, metrics: metrics::DispatcherMetrics, health: Health) -> Self {
        self.metrics = metrics;
        self.health = health;
        self
    }

    /// What this replica did, counted as it goes (for tests and measurements).
    pub fn stats(&self) -> Arc<DispatchStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled. On shutdown it stops pulling,
    /// finishes the runs in hand, and hands back (naks) messages it had
    /// received but not started.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DispatcherError> {
        intake::run(self, shutdown).await
    }
}
