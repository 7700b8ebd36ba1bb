//! One shape for the three services: [`serve`] logs, parses the command line
//! (the service's own options plus [`ServeOptions`]), turns SIGTERM/SIGINT
//! into a `CancellationToken`, serves gRPC health and `/metrics`, runs the
//! service and returns its result (the binary's exit code: 0, or 1 with the
//! error). Each binary's `main` is one call of it.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::{CallMetrics, MetricsRegistry};

/// What tells one service from another before its own options.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The binary's name (`poller`, ...): the command's name, the health
    /// service name, the `service` label of `prefect_k8s_build_info`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Default of `--health-addr`.
    pub health_addr: &'static str,
    /// Default of `--metrics-addr`.
    pub metrics_addr: &'static str,
}

/// Where every service serves health and metrics. The defaults are the
/// service's own ([`Service`]), so that services on one host do not collide.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Address of the gRPC health service.
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
}

/// A service's own metrics, registered before `/metrics` is served.
pub trait ServiceMetrics: Sized {
    fn register(registry: &mut Registry) -> Self;
}

/// What [`serve`] hands the service: the shutdown trigger, the health
/// switches, the metrics of its calls and its own metrics.
pub struct Running<M> {
    pub shutdown: CancellationToken,
    pub health: Health,
    pub calls: CallMetrics,
    pub metrics: M,
}

/// The full command line of `service` whose own options are `C`.
pub fn command<C: CommandFactory>(service: &Service) -> clap::Command {
    ServeOptions::augment_args(C::command())
        .name(service.name)
        .about(service.about)
        .mut_arg("health_addr", |arg| {
            arg.default_value(service.health_addr).required(false)
        })
        .mut_arg("metrics_addr", |arg| {
            arg.default_value(service.metrics_addr).required(false)
        })
}

/// `A` as its flags' defaults make it, whatever the environment says: what
/// each config's `for_pool()` is built from, so every default is written
/// once, in its flag. Panics if `A` has a required flag without a default.
pub fn defaults<A: Args + FromArgMatches>() -> A {
    let command = A::augment_args(clap::Command::new("defaults"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every flag has a default");
    A::from_arg_matches(&matches).expect("the defaults parse")
}

/// Runs `service`: telemetry, the command line, signals, health, metrics,
/// then `run`. Readiness is NOT_SERVING from the first signal on, and when
/// `run` returns.
pub async fn serve<C, M, F, Fut>(service: Service, run: F) -> anyhow::Result<()>
where
    C: CommandFactory + FromArgMatches,
    M: ServiceMetrics,
    F: FnOnce(C, Running<M>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init();
    let matches = command::<C>(&service).get_matches();
    let options = ServeOptions::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let cli = C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let shutdown = crate::shutdown::token_on_signal();
    let health = Health::serve(options.health_addr, service.name, shutdown.clone())
        .await
        .with_context(|| format!("binding the health service on {}", options.health_addr))?;
    let mut registry = MetricsRegistry::new(service.name);
    let calls = CallMetrics::register(registry.registry());
    let metrics = M::register(registry.registry());
    let metrics_addr = registry
        .serve(options.metrics_addr, shutdown.clone())
        .await
        .with_context(|| format!("binding the metrics endpoint on {}", options.metrics_addr))?;
    tracing::info!(%metrics_addr, "serving metrics");
    let running = Running {
        shutdown,
        health: health.clone(),
        calls,
        metrics,
    };
    let result = run(cli, running).await;
    health.set_serving(false);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Own {
        #[arg(long, env = "SERVE_TEST_OWN", default_value = "x")]
        own: String,
    }

    const TEST: Service = Service {
        name: "svc",
        about: "A test service",
        health_addr: "0.0.0.0:8089",
        metrics_addr: "0.0.0.0:9099",
    };

    #[test]
    fn defaults_are_the_flags_defaults_whatever_the_environment() {
        std::env::set_var("SERVE_TEST_OWN", "from the environment");
        assert_eq!(defaults::<Own>().own, "x");
        std::env::remove_var("SERVE_TEST_OWN");
    }

    #[test]
    fn the_service_s_defaults_and_own_options_parse_together() {
        let command = command::<Own>(&TEST);
        command.clone().debug_assert();
        assert_eq!(command.get_name(), "svc");
        assert!(command.get_arguments().all(|arg| !arg.is_required_set()));
        let matches = command
            .try_get_matches_from(["svc", "--own", "y", "--metrics-addr", "127.0.0.1:1"])
            .unwrap();
        let options = ServeOptions::from_arg_matches(&matches).unwrap();
        assert_eq!(options.health_addr, "0.0.0.0:8089".parse().unwrap());
        assert_eq!(options.metrics_addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(Own::from_arg_matches(&matches).unwrap().own, "y");
    }
}
