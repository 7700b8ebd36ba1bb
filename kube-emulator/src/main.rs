//! `kube-emulator serve`: run the emulator until SIGTERM/SIGINT (a thin CLI over the library).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kube_emulator::{
    AuthorizationMode, AutoscalerConfig, AutoscalerStyle, Emulator, EmulatorConfig, FaultSettings,
    NodeCapacity, NodeGroup, RuntimeKind,
};

#[derive(Parser)]
#[command(
    name = "kube-emulator",
    about = "A Kubernetes API emulator for tests and local development"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum RuntimeArg {
    Scripted,
    Process,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthorizationArg {
    AlwaysAllow,
    Rbac,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on 127.0.0.1 until SIGTERM.
    Serve {
        /// TCP port (0 = any free port).
        #[arg(long, default_value_t = 6443)]
        port: u16,
        /// Where to write the kubeconfig.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Pod runtime.
        #[arg(long, value_enum, default_value = "scripted")]
        runtime: RuntimeArg,
        /// Authorization mode.
        #[arg(long, value_enum, default_value = "always-allow")]
        authorization: AuthorizationArg,
        /// Serve HTTPS with a generated CA written into the kubeconfig (kubectl only sends
        /// credentials over TLS, so use this with `--authorization rbac`).
        #[arg(long)]
        tls: bool,
        /// Node allocatable CPU.
        #[arg(long, default_value = "8")]
        node_cpu: String,
        /// Node allocatable memory.
        #[arg(long, default_value = "32Gi")]
        node_memory: String,
        /// Node pod capacity.
        #[arg(long, default_value_t = 110_000)]
        node_pods: u32,
        /// Base of the Job pod-failure backoff in milliseconds (real clusters: 10000).
        #[arg(long, default_value_t = 10_000)]
        job_backoff_base_ms: u64,
        /// Delay of each kubelet stage in milliseconds.
        #[arg(long, default_value_t = 500)]
        kubelet_stage_delay_ms: u64,
        /// Default run time of scripted containers in milliseconds.
        #[arg(long, default_value_t = 2000)]
        scripted_run_ms: u64,
        /// Delay before the namespace controller empties a deleted Namespace, in milliseconds
        /// (real clusters: 5000).
        #[arg(long, default_value_t = 5000)]
        namespace_deletion_delay_ms: u64,
        /// Inject this much latency into every request (ms).
        #[arg(long, default_value_t = 0)]
        fault_latency_ms: u64,
        /// Fail this fraction of requests (0..1) with --fault-error-code.
        #[arg(long, default_value_t = 0.0)]
        fault_error_rate: f64,
        /// 429, 500 or 503.
        #[arg(long, default_value_t = 429)]
        fault_error_code: u16,
        /// Working directory of process-runtime containers (default: the temp dir).
        #[arg(long)]
        process_workdir: Option<PathBuf>,
        /// Extra environment for process-runtime containers, `KEY=VALUE` (repeatable).
        #[arg(long = "process-env", value_parser = parse_key_value)]
        process_env: Vec<(String, String)>,
        /// Run a node autoscaler imitating cluster-autoscaler or karpenter (its Events on
        /// pods); it grows the --node-group groups.
        #[arg(long, value_parser = AutoscalerStyle::from_str)]
        autoscaler: Option<AutoscalerStyle>,
        /// A node group for the autoscaler (repeatable):
        /// `name=gpu,cpu=16,memory=64Gi,pods=110,initial=0,max=3,delay-ms=60000`, plus
        /// `provisioning=never` (nodes never register) or `refuse=<cloud error>` at the end.
        #[arg(long = "node-group", value_parser = NodeGroup::from_str)]
        node_groups: Vec<NodeGroup>,
        /// How often the autoscaler looks at unschedulable pods, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        autoscaler_scan_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let (config, faults) = cli.command.into_config();
    let emulator = Emulator::start(config)
        .await
        .context("starting kube-emulator")?;
    if let Some(faults) = faults {
        emulator.set_faults(faults);
    }
    println!(
        "kube-emulator listening on {} (kubeconfig {})",
        emulator.url(),
        emulator.kubeconfig_path().display()
    );
    wait_for_termination().await?;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    Ok(())
}

impl Command {
    /// The emulator's configuration, and the faults to inject from the start (if any).
    fn into_config(self) -> (EmulatorConfig, Option<FaultSettings>) {
        match self {
            Command::Serve {
                port,
                kubeconfig,
                runtime,
                authorization,
                tls,
                node_cpu,
                node_memory,
                node_pods,
                job_backoff_base_ms,
                kubelet_stage_delay_ms,
                scripted_run_ms,
                namespace_deletion_delay_ms,
                fault_latency_ms,
                fault_error_rate,
                fault_error_code,
                process_workdir,
                process_env,
                autoscaler,
                node_groups,
                autoscaler_scan_ms,
            } => {
                let autoscaler =
                    (autoscaler.is_some() || !node_groups.is_empty()).then(|| AutoscalerConfig {
                        style: autoscaler.unwrap_or_default(),
                        node_groups,
                        scan_interval: Duration::from_millis(autoscaler_scan_ms),
                    });
                let config = EmulatorConfig {
                    port,
                    runtime: match runtime {
                        RuntimeArg::Scripted => RuntimeKind::Scripted,
                        RuntimeArg::Process => RuntimeKind::Process,
                    },
                    authorization: match authorization {
                        AuthorizationArg::AlwaysAllow => AuthorizationMode::AlwaysAllow,
                        AuthorizationArg::Rbac => AuthorizationMode::Rbac,
                    },
                    tls,
                    node_capacity: NodeCapacity {
                        cpu: node_cpu,
                        memory: node_memory,
                        pods: node_pods,
                    },
                    kubeconfig_path: Some(kubeconfig),
                    job_backoff_base: Duration::from_millis(job_backoff_base_ms),
                    kubelet_stage_delay: Duration::from_millis(kubelet_stage_delay_ms),
                    scripted_default_run: Duration::from_millis(scripted_run_ms),
                    namespace_deletion_delay: Duration::from_millis(namespace_deletion_delay_ms),
                    process_workdir,
                    process_env,
                    autoscaler,
                    ..EmulatorConfig::default()
                };
                let faults =
                    (fault_latency_ms > 0 || fault_error_rate > 0.0).then(|| FaultSettings {
                        latency_ms: fault_latency_ms,
                        error_rate: fault_error_rate,
                        error_code: fault_error_code,
                        retry_after_seconds: 1,
                        ..FaultSettings::default()
                    });
                (config, faults)
            }
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

async fn wait_for_termination() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result.context("waiting for ctrl-c")?,
    }
    Ok(())
}
