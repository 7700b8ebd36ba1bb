//! The `reporter` binary: its command line and what it runs once
//! `service_runtime::serve::serve` has set up telemetry, health and metrics.

use anyhow::Context;
use service_runtime::prefect::PrefectOptions;
use service_runtime::serve::{Running, Service, ServiceMetrics};

use crate::service::{Reporter, ReporterConfig, ReporterMetrics};

/// The reporter as a service: its name and its health and metrics addresses.
pub const SERVICE: Service = Service {
    name: "reporter",
    about: "Reports pod and Job failures to Prefect, cancels runs and cleans up Jobs",
    health_addr: "0.0.0.0:8083",
    metrics_addr: "0.0.0.0:9093",
};

/// The reporter's own options (`service_runtime::serve::ServeOptions` adds
/// the health and metrics addresses).
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Cli {
    #[command(flatten)]
    pub prefect: PrefectOptions,
    #[command(flatten)]
    pub reporter: ReporterConfig,
}

/// The binary's whole command line.
pub fn cli_command() -> clap::Command {
    service_runtime::serve::command::<Cli>(&SERVICE)
}

impl ServiceMetrics for ReporterMetrics {
    fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        ReporterMetrics::register(registry)
    }
}

/// Connects to Prefect and Kubernetes and reports until shutdown. Ready once
/// the Job and pod lists are in (the Kubernetes API answers and the replica,
/// leader or standby, can act); see `Reporter::with_telemetry`.
pub async fn serve(cli: Cli, running: Running<ReporterMetrics>) -> anyhow::Result<()> {
    let worker_name = &cli.reporter.pool.worker_name;
    let prefect =
        service_runtime::prefect::client_with_metrics(&cli.prefect, worker_name, &running.calls)
            .context("configuring the Prefect client")?;
    let kube = service_runtime::kubernetes::client_with_metrics(running.calls).await?;
    let reporter =
        Reporter::new(cli.reporter, prefect, kube).with_telemetry(running.metrics, running.health);
    reporter.run(running.shutdown).await.map_err(Into::into)
}
