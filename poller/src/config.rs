//! The poller's flags. Names follow Prefect's (`--work-pool`, `--work-queue`)
//! and the seed agent's (`-l/--label` is an alias of `--work-queue`).

use std::path::PathBuf;
use std::time::Duration;

use service_runtime::options::{PoolOptions, StreamOptions};

/// Poller settings, each with an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct PollerConfig {
    /// The work pool and the worker name the poller heartbeats as.
    #[command(flatten)]
    pub pool: PoolOptions,
    /// The JetStream streams' settings.
    #[command(flatten)]
    pub streams: StreamOptions,
    /// Work queues to poll (repeat or comma-separate); none means all queues.
    /// `-l/--label` is the seed agent's name for them.
    #[arg(
        long = "work-queue",
        short = 'q',
        visible_short_alias = 'l',
        visible_alias = "label",
        env = "PREFECT_K8S_WORK_QUEUES",
        value_delimiter = ','
    )]
    pub work_queues: Vec<String>,
    /// How far ahead of their scheduled time runs are published.
    #[arg(long, env = "PREFECT_WORKER_PREFETCH_SECONDS", default_value_t = 10)]
    pub prefetch_seconds: u64,
    /// Seconds between polls.
    #[arg(
        long = "poll-interval",
        env = "PREFECT_WORKER_QUERY_SECONDS",
        default_value_t = 5.0
    )]
    pub poll_interval_seconds: f64,
    /// Seconds between worker heartbeats.
    #[arg(
        long = "heartbeat-interval",
        env = "PREFECT_WORKER_HEARTBEAT_SECONDS",
        default_value_t = 30
    )]
    pub heartbeat_seconds: u64,
    /// Poll at once when the server's event stream says a run of the pool
    /// entered Scheduled (`prefect.flow-run.Scheduled` on `/api/events/out`),
    /// besides the timed polls, which stay as the safety net.
    #[arg(
        long = "poll-on-events",
        env = "PREFECT_K8S_POLL_ON_EVENTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub poll_on_events: bool,
    /// Most runs asked for in one poll (the server's maximum is 200).
    #[arg(long, env = "PREFECT_K8S_POLL_LIMIT", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub limit: u32,
    /// Seconds without a poll after which the poller reports itself not
    /// live (Kubernetes restarts it). Default: 30 poll intervals, at least 30 s
    /// (the Python worker's rule).
    #[arg(
        long = "liveness-timeout-seconds",
        env = "PREFECT_K8S_LIVENESS_TIMEOUT_SECONDS"
    )]
    pub liveness_timeout_seconds: Option<f64>,
    /// A base job template (JSON file) to create the work pool with, or to fill
    /// its empty template; prefect-kubernetes 0.8's default otherwise.
    #[arg(long = "base-job-template", env = "PREFECT_K8S_BASE_JOB_TEMPLATE")]
    pub base_job_template: Option<PathBuf>,
}

impl PollerConfig {
    /// Between polls (at least 50 ms).
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_seconds.max(0.05))
    }

    /// Between worker heartbeats (at least 1 s).
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds.max(1))
    }

    /// See `liveness_timeout_seconds`.
    pub fn liveness_timeout(&self) -> Duration {
        match self.liveness_timeout_seconds {
            Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
                Duration::from_secs_f64(seconds)
            }
            _ => (self.poll_interval() * 30).max(Duration::from_secs(30)),
        }
    }

    /// Settings for a test or an embedding: pool name, all queues, defaults.
    pub fn for_pool(work_pool: impl Into<String>) -> Self {
        let mut config: Self = service_runtime::serve::defaults();
        config.pool.work_pool = work_pool.into();
        config
    }
}
