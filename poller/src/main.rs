//! `poller`: publishes the flow runs due in a Prefect work pool to NATS
//! JetStream. Thin binary over the `poller` library.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use service_runtime::metrics::{CallMetrics, MetricsRegistry};
use service_runtime::{health::Health, nats::NatsOptions, prefect::PrefectOptions};

#[derive(Debug, Parser)]
#[command(
    name = "poller",
    version,
    about = "Publishes due Prefect flow runs to NATS JetStream"
)]
struct Cli {
    #[command(flatten)]
    prefect: PrefectOptions,
    #[command(flatten)]
    nats: NatsOptions,
    #[command(flatten)]
    poller: poller::PollerConfig,
    /// Address of the gRPC health service.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9091")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::telemetry::init();
    let cli = Cli::parse();
    let shutdown = service_runtime::shutdown::token_on_signal();
    let health = Health::serve(cli.health_addr, "poller", shutdown.clone())
        .await
        .with_context(|| format!("binding the health service on {}", cli.health_addr))?;
    let mut registry = MetricsRegistry::new("poller");
    let calls = CallMetrics::register(registry.registry());
    let metrics = poller::metrics::PollerMetrics::register(registry.registry());
    let metrics_addr = registry
        .serve(cli.metrics_addr, shutdown.clone())
        .await
        .with_context(|| format!("binding the metrics endpoint on {}", cli.metrics_addr))?;
    tracing::info!(%metrics_addr, "serving metrics");
    let prefect = service_runtime::prefect::client_with_metrics(
        &cli.prefect,
        &cli.poller.worker_name,
        &calls,
    )
    .context("configuring the Prefect client")?;
    let nats = service_runtime::nats::connect(&cli.nats, "prefect-k8s-poller").await?;
    let poller = poller::Poller {
        config: cli.poller,
        prefect,
        nats,
        health: health.clone(),
        metrics,
    };
    let result = poller.run(shutdown).await;
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
