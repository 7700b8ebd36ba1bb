//! The campaign's flags: seed, phase lengths, workload size, fault pacing,
//! the services' tunings and where the parts come from.

use std::path::PathBuf;
use std::time::Duration;

/// Which database the Prefect server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatabaseChoice {
    /// PostgreSQL at 127.0.0.1:5432 (user `postgres`, trust auth); an error if it is not running.
    Postgres,
    /// PostgreSQL when it answers, else SQLite (said so in the report).
    Auto,
    /// SQLite in the server's home.
    Sqlite,
}

/// Everything a campaign is run with. Same seed and flags, same plan.
#[derive(Clone, Debug, clap::Args)]
pub struct CampaignConfig {
    /// Seeds the workload plan and the nemesis schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of arrivals and faults (the recovery window comes after).
    #[arg(long, default_value_t = 120)]
    pub duration_seconds: u64,
    /// Runs already due when the services start.
    #[arg(long, default_value_t = 20)]
    pub backlog: usize,
    /// New runs per second during the campaign.
    #[arg(long, default_value_t = 0.3)]
    pub arrival_rate: f64,
    /// Longest wait, after the last fault healed and the last run arrived,
    /// for the system to become quiet before the checker runs.
    #[arg(long, default_value_t = 90)]
    pub recovery_seconds: u64,
    /// Mean seconds between two fault episodes of one nemesis lane.
    #[arg(long, default_value_t = 4.0)]
    pub fault_gap_seconds: f64,
    /// Longest Prefect or Kubernetes blackhole, in seconds.
    #[arg(long, default_value_t = 15)]
    pub max_blackhole_seconds: u64,
    /// Longest SIGSTOP of a service, in seconds.
    #[arg(long, default_value_t = 15)]
    pub max_stop_seconds: u64,
    /// The flows' work: each run sleeps between these many milliseconds.
    #[arg(long, num_args = 2, value_names = ["MIN", "MAX"], default_values_t = [1000, 6000])]
    pub flow_sleep_ms: Vec<u64>,
    /// The Prefect server's database.
    #[arg(long, value_enum, default_value = "postgres")]
    pub database: DatabaseChoice,
    /// Dispatcher replicas.
    #[arg(long, default_value_t = 3)]
    pub dispatchers: usize,
    /// Reporter replicas (one leads).
    #[arg(long, default_value_t = 2)]
    pub reporters: usize,
    /// The dispatchers' `--ack-wait-seconds` (Job-create latency faults exceed it).
    #[arg(long, default_value_t = 10)]
    pub ack_wait_seconds: u64,
    /// The reporters' `--image-error-grace-seconds`.
    #[arg(long, default_value_t = 5.0)]
    pub image_error_grace_seconds: f64,
    /// A service whose resident memory exceeds this many MiB breaks invariant (h).
    #[arg(long, default_value_t = 256)]
    pub rss_limit_mib: u64,
    /// Where logs, kubeconfigs and stores go (default: a new temp dir, removed
    /// after a clean campaign unless `--keep`).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the work dir even when the campaign found nothing.
    #[arg(long)]
    pub keep: bool,
    /// Directory holding poller, dispatcher, reporter, kube-emulator and
    /// fake-flow (default: the campaign binary's own).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// nats-server binary.
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "/usr/sbin/nats-server")]
    pub nats_server: PathBuf,
}

impl CampaignConfig {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_seconds)
    }

    pub fn recovery(&self) -> Duration {
        Duration::from_secs(self.recovery_seconds)
    }

    /// (min, max) of a flow's sleep.
    pub fn flow_sleep(&self) -> (u64, u64) {
        let min = self.flow_sleep_ms.first().copied().unwrap_or(1000);
        let max = self.flow_sleep_ms.get(1).copied().unwrap_or(min);
        (min.min(max), min.max(max))
    }
}
