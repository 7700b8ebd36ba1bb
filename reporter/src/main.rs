//! `reporter`: reports to Prefect what flow runs cannot report themselves (pending
//! pods, crashes, deleted Jobs), carries out cancellations and cleans up finished
//! Jobs. Thin binary over the `reporter` library.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use reporter::service::{Reporter, ReporterConfig, ReporterMetrics};
use service_runtime::metrics::{CallMetrics, MetricsRegistry};
use service_runtime::{health::Health, prefect::PrefectOptions};

#[derive(Debug, Parser)]
#[command(
    name = "reporter",
    version,
    about = "Reports pod and Job failures to Prefect, cancels runs and cleans up Jobs"
)]
struct Cli {
    #[command(flatten)]
    prefect: PrefectOptions,
    #[command(flatten)]
    reporter: ReporterConfig,
    /// Address of the gRPC health service.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8083")]
    health_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9093")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::telemetry::init();
    let cli = Cli::parse();
    let shutdown = service_runtime::shutdown::token_on_signal();
    let health = Health::serve(cli.health_addr, "reporter", shutdown.clone())
        .await
        .with_context(|| format!("binding the health service on {}", cli.health_addr))?;
    let mut registry = MetricsRegistry::new("reporter");
    let calls = CallMetrics::register(registry.registry());
    let metrics = ReporterMetrics::register(registry.registry());
    let metrics_addr = registry
        .serve(cli.metrics_addr, shutdown.clone())
        .await
        .with_context(|| format!("binding the metrics endpoint on {}", cli.metrics_addr))?;
    tracing::info!(%metrics_addr, "serving metrics");
    let worker_name = &cli.reporter.worker_name;
    let prefect = service_runtime::prefect::client_with_metrics(&cli.prefect, worker_name, &calls)
        .context("configuring the Prefect client")?;
    let kube = service_runtime::kubernetes::client_with_metrics(calls).await?;
    // Ready once the Job and pod lists are in (the Kubernetes API answers and the
    // replica, leader or standby, can act); see `Reporter::with_telemetry`.
    let reporter =
        Reporter::new(cli.reporter, prefect, kube).with_telemetry(metrics, health.clone());
    let result = reporter.run(shutdown).await;
    health.set_serving(false);
    result.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
