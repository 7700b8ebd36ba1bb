//! `dispatcher`: claims due flow runs from NATS JetStream and creates their
//! Kubernetes Jobs. Thin binary over the `dispatcher` library.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use service_runtime::metrics::{CallMetrics, MetricsRegistry};
use service_runtime::{health::Health, nats::NatsOptions, prefect::PrefectOptions};

#[derive(Debug, Parser)]
#[command(
    name = "dispatcher",
    version,
    about = "Creates Kubernetes Jobs for due Prefect flow runs"
)]
struct Cli {
    #[command(flatten)]
    prefect: PrefectOptions,
    #[command(flatten)]
    nats: NatsOptions,
    #[command(flatten)]
    dispatcher: dispatcher::DispatcherConfig,
    /// Address of the gRPC health service.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8082")]
    health_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9092")]
    metrics_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_runtime::telemetry::init();
    let mut cli = Cli::parse();
    cli.dispatcher.credentials = dispatcher::config::FlowCredentials {
        api_key: cli.prefect.effective_api_key(),
        auth_string: cli.prefect.auth_string.clone().filter(|a| !a.is_empty()),
    };
    cli.dispatcher.forwarded_settings = dispatcher::settings::from_process_environment();
    let shutdown = service_runtime::shutdown::token_on_signal();
    let health = Health::serve(cli.health_addr, "dispatcher", shutdown.clone())
        .await
        .with_context(|| format!("binding the health service on {}", cli.health_addr))?;
    let mut registry = MetricsRegistry::new("dispatcher");
    let calls = CallMetrics::register(registry.registry());
    let metrics = dispatcher::metrics::DispatcherMetrics::register(registry.registry());
    let metrics_addr = registry
        .serve(cli.metrics_addr, shutdown.clone())
        .await
        .with_context(|| format!("binding the metrics endpoint on {}", cli.metrics_addr))?;
    tracing::info!(%metrics_addr, "serving metrics");
    let worker_name = &cli.dispatcher.worker_name;
    let prefect = service_runtime::prefect::client_with_metrics(&cli.prefect, worker_name, &calls)
        .context("configuring the Prefect client")?;
    let kube = service_runtime::kubernetes::client_with_metrics(calls).await?;
    let nats = service_runtime::nats::connect(&cli.nats, "prefect-k8s-dispatcher").await?;
    let dispatcher = dispatcher::Dispatcher {
        config: cli.dispatcher,
        prefect,
        kube,
        nats,
        health: health.clone(),
        stats: Arc::new(dispatcher::DispatchStats::default()),
        metrics,
    };
    let result = dispatcher.run(shutdown).await;
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
