//! The `poller` binary: its command line and what it runs once
//! `service_runtime::serve::serve` has set up telemetry, health and metrics.

use anyhow::Context;
use service_runtime::nats::NatsOptions;
use service_runtime::prefect::PrefectOptions;
use service_runtime::serve::{Running, Service, ServiceMetrics};

use crate::metrics::PollerMetrics;
use crate::{Poller, PollerConfig};

/// The poller as a service: its name and its health and metrics addresses.
pub const SERVICE: Service = Service {
    name: "poller",
    about: "Publishes due Prefect flow runs to NATS JetStream",
    health_addr: "0.0.0.0:8081",
    metrics_addr: "0.0.0.0:9091",
};

/// The poller's own options (`service_runtime::serve::ServeOptions` adds
/// the health and metrics addresses).
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Cli {
    #[command(flatten)]
    pub prefect: PrefectOptions,
    #[command(flatten)]
    pub nats: NatsOptions,
    #[command(flatten)]
    pub poller: PollerConfig,
}

/// The binary's whole command line.
pub fn cli_command() -> clap::Command {
    service_runtime::serve::command::<Cli>(&SERVICE)
}

impl ServiceMetrics for PollerMetrics {
    fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        PollerMetrics::register(registry)
    }
}

/// Connects to Prefect and NATS and polls until shutdown.
pub async fn serve(cli: Cli, running: Running<PollerMetrics>) -> anyhow::Result<()> {
    let worker_name = &cli.poller.pool.worker_name;
    let prefect =
        service_runtime::prefect::client_with_metrics(&cli.prefect, worker_name, &running.calls)
            .context("configuring the Prefect client")?;
    let nats = service_runtime::nats::connect(&cli.nats, "prefect-k8s-poller").await?;
    Poller::new(cli.poller, prefect, nats)
        .with_telemetry(running.metrics, running.health)
        .run(running.shutdown)
        .await
        .map_err(Into::into)
}
