//! The dispatcher's flags. The Job options are the seed agent's
//! (`--namespace`, `--env`, `--image-pull-secrets`, `--service-account-name`,
//! `--image-pull-policy`, `--cpu-request/--cpu-limit/--mem-request/--mem-limit`)
//! and act as defaults that a deployment's or run's job variables override.

use std::time::Duration;

use prefect_client::Secret;
pub use service_runtime::options::parse_pairs;
use service_runtime::options::{PoolOptions, StreamOptions};

/// Dispatcher settings, each with an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct DispatcherConfig {
    /// The work pool and this replica's worker name.
    #[command(flatten)]
    pub pool: PoolOptions,
    /// The JetStream streams' settings.
    #[command(flatten)]
    pub streams: StreamOptions,
    /// Most runs this replica handles at once (one batched Prefect read
    /// covers them, so at most 200).
    #[arg(long, env = "PREFECT_K8S_DISPATCH_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub concurrency: u16,
    /// Seconds a replica may hold a message without progress before NATS
    /// hands it to another replica.
    #[arg(long, env = "PREFECT_K8S_ACK_WAIT_SECONDS", default_value_t = 60)]
    pub ack_wait_seconds: u64,
    /// Deliveries after which a message that keeps failing, and is older than
    /// the submission timeout, is dead-lettered (and its run Crashed when it is
    /// still this message's).
    #[arg(long, env = "PREFECT_K8S_MAX_DELIVERIES", default_value_t = 50)]
    pub max_deliveries: i64,
    /// Seconds after its claim by which a run's Job must exist; a claim that
    /// old whose Job could not be created is Crashed with that reason.
    #[arg(long, env = "PREFECT_K8S_SUBMISSION_TIMEOUT_SECONDS", default_value_t = flow_run_proto::DEFAULT_SUBMISSION_TIMEOUT_SECONDS)]
    pub submission_timeout_seconds: u64,
    /// Deadline of each Kubernetes call, in seconds.
    #[arg(
        long,
        env = "PREFECT_K8S_KUBERNETES_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub kubernetes_timeout_seconds: u64,
    /// ServiceAccounts flow Jobs may not use: the agent's own (comma separated).
    #[arg(
        long = "reserved-service-accounts",
        env = "PREFECT_K8S_RESERVED_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_values_t = flow_run_proto::kubernetes::AGENT_SERVICE_ACCOUNTS.map(String::from)
    )]
    pub reserved_service_accounts: Vec<String>,
    /// Seconds without progress of the pull loop after which the dispatcher
    /// reports itself not live (the loop shows progress at least every 10 s).
    #[arg(
        long,
        env = "PREFECT_K8S_LIVENESS_TIMEOUT_SECONDS",
        default_value_t = 60.0
    )]
    pub liveness_timeout_seconds: f64,
    /// Seconds the work pool's base job template is cached.
    #[arg(long, env = "PREFECT_K8S_TEMPLATE_CACHE_SECONDS", default_value_t = 30)]
    pub template_cache_seconds: u64,
    /// Seconds a deployment read is reused for other runs of it that were
    /// created before the read began (0: read it for every run). A run created
    /// after an edit always gets the edited deployment.
    #[arg(
        long,
        env = "PREFECT_K8S_DEPLOYMENT_CACHE_SECONDS",
        default_value_t = 5.0
    )]
    pub deployment_cache_seconds: f64,
    /// Agent-wide Job defaults (the seed agent's options).
    #[command(flatten)]
    pub job: JobOptions,
    /// Credentials forwarded to flow-run pods; set by the binary from the
    /// Prefect options, never from a flag of their own.
    #[arg(skip)]
    pub credentials: FlowCredentials,
    /// The dispatcher's own Prefect settings that flow pods inherit (see
    /// [`crate::settings`]); set by the binary from its environment.
    #[arg(skip)]
    pub forwarded_settings: Vec<(String, String)>,
}

/// The Prefect credentials flow-run pods receive when no Secret is named.
#[derive(Clone, Debug, Default)]
pub struct FlowCredentials {
    /// `PREFECT_API_KEY`.
    pub api_key: Option<Secret>,
    /// `PREFECT_API_AUTH_STRING`.
    pub auth_string: Option<Secret>,
}

/// Agent-wide Job defaults, as the seed agent's flags named them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobOptions {
    /// Namespace for flow-run Jobs when the job variables name none.
    #[arg(long = "namespace", short = 'n', env = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Environment variables for every flow run, `KEY=VALUE` (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Image pull secrets for flow-run pods (repeat or comma-separate).
    #[arg(
        long = "image-pull-secrets",
        short = 'i',
        env = "IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    pub image_pull_secrets: Vec<String>,
    /// Service account for flow-run pods.
    #[arg(long = "service-account-name", env = "SERVICE_ACCOUNT_NAME")]
    pub service_account_name: Option<String>,
    /// `imagePullPolicy` for flow-run containers: Always, IfNotPresent or Never.
    #[arg(long = "image-pull-policy", env = "IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// CPU request of flow-run containers (a Kubernetes quantity).
    #[arg(long = "cpu-request", env = "JOB_CPU_REQUEST")]
    pub cpu_request: Option<String>,
    /// CPU limit of flow-run containers.
    #[arg(long = "cpu-limit", env = "JOB_CPU_LIMIT")]
    pub cpu_limit: Option<String>,
    /// Memory request of flow-run containers.
    #[arg(
        long = "mem-request",
        visible_alias = "memory-request",
        env = "JOB_MEM_REQUEST"
    )]
    pub memory_request: Option<String>,
    /// Memory limit of flow-run containers.
    #[arg(
        long = "mem-limit",
        visible_alias = "memory-limit",
        env = "JOB_MEM_LIMIT"
    )]
    pub memory_limit: Option<String>,
    /// Extra labels for flow-run Jobs and pods, `KEY=VALUE` (repeatable).
    #[arg(long = "job-label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// A Secret holding the Prefect API key for flow-run pods, `NAME` or
    /// `NAME:KEY` (key defaults to `key`). The key reaches pods only as a
    /// secretKeyRef, never as plain text in the Job; required when the
    /// dispatcher itself has an API key.
    #[arg(long = "api-key-secret", env = "PREFECT_K8S_API_KEY_SECRET")]
    pub api_key_secret: Option<String>,
    /// A Secret holding `PREFECT_API_AUTH_STRING` for flow-run pods, `NAME` or
    /// `NAME:KEY` (key defaults to `key`); required when the dispatcher itself
    /// has an auth string.
    #[arg(
        long = "api-auth-string-secret",
        env = "PREFECT_K8S_API_AUTH_STRING_SECRET"
    )]
    pub api_auth_string_secret: Option<String>,
    /// The Prefect API URL flow-run pods use, when it differs from the
    /// dispatcher's own (e.g. an in-cluster service name).
    #[arg(long = "flow-api-url", env = "PREFECT_K8S_FLOW_API_URL")]
    pub flow_api_url: Option<String>,
}

impl DispatcherConfig {
    /// JetStream's ack wait (at least 5 s).
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_seconds.max(5))
    }

    /// How long a deployment read is reused (a negative or non-finite
    /// setting reads every time).
    pub fn deployment_cache(&self) -> Duration {
        Duration::try_from_secs_f64(self.deployment_cache_seconds).unwrap_or_default()
    }

    /// How long after its claim a run may still get its Job.
    pub fn submission_timeout(&self) -> Duration {
        Duration::from_secs(self.submission_timeout_seconds)
    }

    /// How long the loop may stall before the replica is not live.
    pub fn liveness_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.liveness_timeout_seconds)
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_millis(100))
    }

    /// The deadline of each Kubernetes call (at least 1 s).
    pub fn kubernetes_timeout(&self) -> Duration {
        Duration::from_secs(self.kubernetes_timeout_seconds.max(1))
    }

    /// Settings for a test or an embedding: a pool, defaults for the rest.
    pub fn for_pool(work_pool: impl Into<String>) -> Self {
        let mut config: Self = service_runtime::serve::defaults();
        config.pool.work_pool = work_pool.into();
        config
    }
}
