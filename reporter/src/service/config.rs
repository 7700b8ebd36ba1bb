//! The reporter's flags, each with an environment fallback: which work pool and
//! namespace it watches, its leader-election Lease, how often it polls for
//! cancellations and re-checks every run, Job cleanup, and overrides of the
//! decision core's grace periods ([`crate::DecisionSettings`]).

use std::time::Duration;

use service_runtime::options::PoolOptions;

use crate::DecisionSettings;

/// Reporter settings. Its worker name defaults to `prefect-k8s-reporter`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("worker_name", |arg| arg.default_value("prefect-k8s-reporter")))]
pub struct ReporterConfig {
    /// The work pool and the worker name.
    #[command(flatten)]
    pub pool: PoolOptions,
    /// Namespace whose Jobs, pods and events are watched; all namespaces when unset.
    #[arg(
        long = "namespace",
        short = 'n',
        env = "PREFECT_K8S_REPORTER_NAMESPACE"
    )]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: `POD_NAMESPACE`, else `default`).
    #[arg(long = "lease-namespace", env = "PREFECT_K8S_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease (default: `prefect-k8s-reporter-<pool>`).
    #[arg(long = "lease-name", env = "PREFECT_K8S_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// This replica's identity in the Lease (default: hostname and process id).
    #[arg(long = "identity", env = "PREFECT_K8S_REPORTER_IDENTITY")]
    pub identity: Option<String>,
    /// How long a leader that stops renewing keeps the Lease; it renews every third of it.
    #[arg(long, env = "PREFECT_K8S_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration_seconds: u64,
    /// Seconds between polls of Prefect for runs of the pool in CANCELLING.
    #[arg(long, env = "PREFECT_K8S_CANCEL_POLL_SECONDS", default_value_t = 5.0)]
    pub cancel_poll_seconds: f64,
    /// Seconds between re-evaluations of every watched run (and the search for
    /// runs whose Job vanished while no reporter was watching).
    #[arg(long, env = "PREFECT_K8S_RECONCILE_SECONDS", default_value_t = 30.0)]
    pub reconcile_seconds: f64,
    /// How long after its claim a run's Job may be missing, still suspended, or not
    /// even recorded before the run is crashed. Must exceed the dispatchers'
    /// `--submission-timeout-seconds` (600 by default): until then a dispatcher may
    /// still be creating the Job.
    #[arg(
        long,
        env = "PREFECT_K8S_MISSING_JOB_GRACE_SECONDS",
        default_value_t = (flow_run_proto::DEFAULT_SUBMISSION_TIMEOUT_SECONDS + 120) as f64
    )]
    pub missing_job_grace_seconds: f64,
    /// Never delete Jobs: neither for cancellations (runs are still set
    /// Cancelled) nor in the finished-Job sweep.
    #[arg(
        long = "disable-job-deletion",
        env = "PREFECT_K8S_DISABLE_JOB_DELETION",
        conflicts_with = "delete_finished_jobs_after"
    )]
    pub disable_job_deletion: bool,
    /// Delete Jobs that completed or failed this many seconds ago (for clusters
    /// without the TTL-after-finished controller). Off by default.
    #[arg(
        long = "delete-finished-jobs-after",
        env = "PREFECT_K8S_DELETE_FINISHED_JOBS_AFTER",
        value_name = "SECONDS"
    )]
    pub delete_finished_jobs_after: Option<u64>,
    /// Do not forward Kubernetes events about our pods and Jobs as flow-run logs
    /// (what node autoscalers say about pods is still read, for the decisions).
    #[arg(long = "disable-event-logs", env = "PREFECT_K8S_DISABLE_EVENT_LOGS")]
    pub disable_event_logs: bool,
    /// Do not send pod phase changes as `prefect.kubernetes.pod.<phase>` Prefect
    /// events (the Python observer's `PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_REPLICATE_POD_EVENTS=false`).
    #[arg(long = "disable-pod-events", env = "PREFECT_K8S_DISABLE_POD_EVENTS")]
    pub disable_pod_events: bool,
    /// How many of the last lines of a crashed run's pod log to read: they go to the
    /// run's logs, and their end into the Crashed state message. 0 reads none.
    #[arg(
        long = "crash-log-lines",
        env = "PREFECT_K8S_CRASH_LOG_LINES",
        default_value_t = super::evaluate::DEFAULT_CRASH_LOG_LINES
    )]
    pub crash_log_lines: u32,
    /// Seconds without a turn of the evaluation loop after which the reporter
    /// reports itself not live. Default: four reconcile periods, at least 60 s.
    #[arg(
        long = "liveness-timeout-seconds",
        env = "PREFECT_K8S_LIVENESS_TIMEOUT_SECONDS"
    )]
    pub liveness_timeout_seconds: Option<f64>,
    /// The decision graces that may be overridden.
    #[command(flatten)]
    pub grace: GraceOverrides,
}

/// Overrides of [`DecisionSettings`]; unset flags keep the core's defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GraceOverrides {
    /// Seconds a container may wait in ErrImagePull/ImagePullBackOff/InvalidImageName (default 60).
    #[arg(long, env = "PREFECT_K8S_IMAGE_ERROR_GRACE_SECONDS")]
    pub image_error_grace_seconds: Option<f64>,
    /// Seconds a container may wait in CreateContainerConfigError (default 30).
    #[arg(long, env = "PREFECT_K8S_CONFIG_ERROR_GRACE_SECONDS")]
    pub config_error_grace_seconds: Option<f64>,
    /// Pod-watch timeout for Jobs without the annotation (default 60).
    #[arg(long, env = "PREFECT_K8S_DEFAULT_POD_WATCH_TIMEOUT_SECONDS")]
    pub default_pod_watch_timeout_seconds: Option<f64>,
    /// Seconds after a Job ended during which the run may still report a final state (default 10).
    #[arg(long, env = "PREFECT_K8S_SETTLE_GRACE_SECONDS")]
    pub settle_grace_seconds: Option<f64>,
    /// Crash a scheduled pod that has not started after this many seconds (off by default).
    #[arg(long, env = "PREFECT_K8S_POD_START_TIMEOUT_SECONDS")]
    pub pod_start_timeout_seconds: Option<f64>,
    /// Seconds an unscheduled pod may wait for a node the cluster's autoscaler is
    /// bringing (cluster-autoscaler `TriggeredScaleUp`, Karpenter `Nominated`), counted
    /// from its first such event, before its run is crashed; 0 waits as long as a node
    /// is coming (default 1200). The `scale_up_timeout_seconds` job variable overrides it
    /// per deployment or run.
    #[arg(long, env = "PREFECT_K8S_SCALE_UP_TIMEOUT_SECONDS")]
    pub scale_up_timeout_seconds: Option<f64>,
}

impl GraceOverrides {
    /// The decision settings: the core's defaults with these overrides applied.
    pub fn settings(&self) -> DecisionSettings {
        let mut settings = DecisionSettings::default();
        if let Some(grace) = seconds(self.image_error_grace_seconds) {
            settings.image_error_grace = grace;
        }
        if let Some(grace) = seconds(self.config_error_grace_seconds) {
            settings.config_error_grace = grace;
        }
        if let Some(timeout) = seconds(self.default_pod_watch_timeout_seconds) {
            settings.default_pod_watch_timeout = timeout;
        }
        if let Some(grace) = seconds(self.settle_grace_seconds) {
            settings.settle_grace = grace;
        }
        if let Some(timeout) = seconds(self.pod_start_timeout_seconds) {
            settings.pod_start_timeout = Some(timeout);
        }
        if let Some(timeout) = seconds(self.scale_up_timeout_seconds) {
            settings.default_scale_up_timeout = timeout;
        }
        settings
    }
}

/// Seconds as a duration; negative, NaN and infinite values are ignored.
fn seconds(value: Option<f64>) -> Option<Duration> {
    value
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The environment variable Kubernetes' downward API usually fills with the pod's namespace.
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";

impl ReporterConfig {
    /// Settings for a test or an embedding: a pool, defaults for the rest.
    pub fn for_pool(work_pool: impl Into<String>) -> Self {
        let mut config: Self = service_runtime::serve::defaults();
        config.pool.work_pool = work_pool.into();
        config
    }

    /// Namespace of the Lease: the flag, else `POD_NAMESPACE`, else `default`.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var(POD_NAMESPACE_ENV).ok())
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    }

    /// Name of the Lease: the flag, else `prefect-k8s-reporter-<pool>` (made a valid
    /// Kubernetes name: lower case, `-` for anything else, at most 253 characters).
    pub fn lease_name(&self) -> String {
        if let Some(name) = self.lease_name.clone().filter(|name| !name.is_empty()) {
            return name;
        }
        let pool: String = self
            .pool
            .work_pool
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut name = format!("prefect-k8s-reporter-{pool}");
        name.truncate(253);
        name.trim_end_matches(['-', '.']).to_owned()
    }

    /// This replica's identity: the flag, else `<hostname>-<pid>`.
    pub fn identity(&self) -> String {
        if let Some(identity) = self.identity.clone().filter(|id| !id.is_empty()) {
            return identity;
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "reporter".to_owned());
        format!("{host}-{}", std::process::id())
    }

    /// The Lease's duration (at least 2 s).
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds.max(2))
    }

    /// Between polls for cancelling runs (at least 100 ms).
    pub fn cancel_poll_interval(&self) -> Duration {
        seconds(Some(self.cancel_poll_seconds))
            .unwrap_or(Duration::from_secs(5))
            .max(Duration::from_millis(100))
    }

    /// Between full re-evaluations (at least 500 ms).
    pub fn reconcile_interval(&self) -> Duration {
        seconds(Some(self.reconcile_seconds))
            .unwrap_or(Duration::from_secs(30))
            .max(Duration::from_millis(500))
    }

    /// The finished-Job sweep's age, unless Job deletion is disabled.
    pub fn finished_job_age(&self) -> Option<Duration> {
        if self.disable_job_deletion {
            return None;
        }
        self.delete_finished_jobs_after.map(Duration::from_secs)
    }

    /// The pool's name as the `prefect.io/work-pool-name` label spells it on our
    /// Jobs (slugified as prefect-kubernetes does).
    pub fn work_pool_label(&self) -> String {
        job_manifest::slugify_label_value(&self.pool.work_pool)
    }

    /// See `liveness_timeout_seconds`.
    pub fn liveness_timeout(&self) -> Duration {
        match seconds(self.liveness_timeout_seconds) {
            Some(timeout) if !timeout.is_zero() => timeout,
            _ => (self.reconcile_interval() * 4).max(Duration::from_secs(60)),
        }
    }

    /// The decision core's settings from these flags.
    pub fn decision_settings(&self) -> DecisionSettings {
        let mut settings = self.grace.settings();
        if let Some(grace) = seconds(Some(self.missing_job_grace_seconds)) {
            settings.submission_grace = grace;
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reporter_has_its_own_worker_name_by_default() {
        let config = ReporterConfig::for_pool("k8s");
        assert_eq!(config.pool.worker_name, "prefect-k8s-reporter");
        assert_eq!(config.pool.work_pool, "k8s");
    }

    #[test]
    fn lease_name_is_a_valid_kubernetes_name_derived_from_the_pool() {
        let config = ReporterConfig::for_pool("My Pool_1");
        assert_eq!(config.lease_name(), "prefect-k8s-reporter-my-pool-1");
        let mut named = ReporterConfig::for_pool("k8s");
        named.lease_name = Some("custom".into());
        assert_eq!(named.lease_name(), "custom");
    }

    #[test]
    fn grace_overrides_replace_only_what_is_set() {
        let overrides = GraceOverrides {
            image_error_grace_seconds: Some(1.5),
            settle_grace_seconds: Some(-3.0),
            pod_start_timeout_seconds: Some(120.0),
            scale_up_timeout_seconds: Some(0.0),
            ..GraceOverrides::default()
        };
        let settings = overrides.settings();
        let defaults = DecisionSettings::default();
        assert_eq!(settings.image_error_grace, Duration::from_millis(1500));
        assert_eq!(
            settings.settle_grace, defaults.settle_grace,
            "negative ignored"
        );
        assert_eq!(settings.config_error_grace, defaults.config_error_grace);
        assert_eq!(settings.pod_start_timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            settings.default_scale_up_timeout,
            Duration::ZERO,
            "0: no limit"
        );
        assert_eq!(
            GraceOverrides::default()
                .settings()
                .default_scale_up_timeout,
            Duration::from_secs(1200)
        );
    }

    #[test]
    fn disabling_job_deletion_turns_the_sweep_off() {
        let mut config = ReporterConfig::for_pool("k8s");
        config.delete_finished_jobs_after = Some(600);
        assert_eq!(config.finished_job_age(), Some(Duration::from_secs(600)));
        config.disable_job_deletion = true;
        assert_eq!(config.finished_job_age(), None);
    }

    #[test]
    fn identity_defaults_to_host_and_pid() {
        let identity = ReporterConfig::for_pool("k8s").identity();
        assert!(
            identity.ends_with(&format!("-{}", std::process::id())),
            "{identity}"
        );
    }
}
