//! The `dispatcher` binary: its command line and what it runs once
//! `service_runtime::serve::serve` has set up telemetry, health and metrics.

use anyhow::Context;
use service_runtime::nats::NatsOptions;
use service_runtime::prefect::PrefectOptions;
use service_runtime::serve::{Running, Service, ServiceMetrics};

use crate::config::FlowCredentials;
use crate::metrics::DispatcherMetrics;
use crate::{Dispatcher, DispatcherConfig};

/// The dispatcher as a service: its name and its health and metrics addresses.
pub const SERVICE: Service = Service {
    name: "dispatcher",
    about: "Creates Kubernetes Jobs for due Prefect flow runs",
    health_addr: "0.0.0.0:8082",
    metrics_addr: "0.0.0.0:9092",
};

/// The dispatcher's own options (`service_runtime::serve::ServeOptions` adds
/// the health and metrics addresses).
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Cli {
    #[command(flatten)]
    pub prefect: PrefectOptions,
    #[command(flatten)]
    pub nats: NatsOptions,
    #[command(flatten)]
    pub dispatcher: DispatcherConfig,
}

/// The binary's whole command line.
pub fn cli_command() -> clap::Command {
    service_runtime::serve::command::<Cli>(&SERVICE)
}

impl ServiceMetrics for DispatcherMetrics {
    fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        DispatcherMetrics::register(registry)
    }
}

/// Gives flow pods the dispatcher's credentials and settings, connects to
/// Prefect, Kubernetes and NATS, and dispatches until shutdown.
pub async fn serve(mut cli: Cli, running: Running<DispatcherMetrics>) -> anyhow::Result<()> {
    cli.dispatcher.credentials = FlowCredentials {
        api_key: cli.prefect.effective_api_key(),
        auth_string: cli.prefect.effective_auth_string(),
    };
    cli.dispatcher.forwarded_settings = crate::settings::from_process_environment();
    let worker_name = &cli.dispatcher.pool.worker_name;
    let prefect =
        service_runtime::prefect::client_with_metrics(&cli.prefect, worker_name, &running.calls)
            .context("configuring the Prefect client")?;
    let kube = service_runtime::kubernetes::client_with_metrics(running.calls).await?;
    let nats = service_runtime::nats::connect(&cli.nats, "prefect-k8s-dispatcher").await?;
    Dispatcher::new(cli.dispatcher, prefect, kube, nats)
        .with_telemetry(running.metrics, running.health)
        .run(running.shutdown)
        .await
        .map_err(Into::into)
}
