//! Prometheus metrics: one registry per process, served as OpenMetrics text at
//! `GET /metrics` on `--metrics-addr`. It holds the process's own resident
//! memory and CPU (the standard `process_*` names, read from `/proc` at each
//! scrape), `prefect_k8s_build_info`, and the measurements every service
//! shares — Prefect and Kubernetes requests by endpoint and status, with
//! latency ([`CallMetrics`]). Each service registers its own metrics under
//! the `prefect_k8s_` prefix before serving. Every name is documented in
//! `docs/metrics.md`, which a test checks against what `/metrics` serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The prefix of every metric of ours.
pub const PREFIX: &str = "prefect_k8s";

/// The registry being filled at start; [`MetricsRegistry::serve`] freezes it.
pub struct MetricsRegistry {
    root: Registry,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    service: String,
    version: String,
}

impl MetricsRegistry {
    /// A registry with the process collector and `prefect_k8s_build_info`.
    pub fn new(service: &str) -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let info = Family::<BuildLabels, Gauge>::default();
        info.get_or_create(&BuildLabels {
            service: service.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
        root.sub_registry_with_prefix(PREFIX).register(
            "build_info",
            "The service and its version (always 1)",
            info,
        );
        MetricsRegistry { root }
    }

    /// Where a service registers its metrics (names get the `prefect_k8s_` prefix).
    pub fn registry(&mut self) -> &mut Registry {
        self.root.sub_registry_with_prefix(PREFIX)
    }

    /// Serves `GET /metrics` on `addr` until `shutdown`; returns the bound address.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<SocketAddr, std::io::Error> {
        let registry = Arc::new(self.root);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move { render(&registry) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "metrics server stopped");
            }
        });
        Ok(bound)
    }

    /// The text a scrape gets now (tests).
    pub fn render_text(&self) -> String {
        encode(&self.root)
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

fn render(registry: &Registry) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        encode(registry),
    )
}

/// Latency buckets of requests: 5 ms to about 40 s.
pub fn request_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 14)
}

/// A histogram with [`request_buckets`].
pub fn request_histogram() -> Histogram {
    Histogram::new(request_buckets())
}

/// Labels of one Prefect request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrefectRequest {
    pub method: String,
    /// The path with ids and names replaced, e.g. `/flow_runs/{id}/set_state`.
    pub endpoint: String,
    /// The HTTP status, or `error` when no answer came.
    pub status: String,
}

/// Labels of one Kubernetes request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubernetesRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// The resource plural, with its subresource (`jobs`, `pods/log`).
    pub resource: String,
    pub status: String,
}

/// Labels of a request's latency (no status: one series per endpoint).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Endpoint {
    pub endpoint: String,
}

/// Requests to Prefect and to Kubernetes, shared by every service.
#[derive(Clone)]
pub struct CallMetrics {
    pub prefect_requests: Family<PrefectRequest, Counter>,
    pub prefect_duration: Family<Endpoint, Histogram>,
    pub kubernetes_requests: Family<KubernetesRequest, Counter>,
    pub kubernetes_duration: Family<Endpoint, Histogram>,
}

impl CallMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CallMetrics {
            prefect_requests: Family::default(),
            prefect_duration: Family::new_with_constructor(request_histogram),
            kubernetes_requests: Family::default(),
            kubernetes_duration: Family::new_with_constructor(request_histogram),
        };
        registry.register(
            "prefect_requests",
            "HTTP requests to the Prefect API, by method, endpoint and status",
            metrics.prefect_requests.clone(),
        );
        registry.register(
            "prefect_request_duration_seconds",
            "Latency of Prefect API requests, by endpoint",
            metrics.prefect_duration.clone(),
        );
        registry.register(
            "kubernetes_requests",
            "Requests to the Kubernetes API, by verb, resource and status",
            metrics.kubernetes_requests.clone(),
        );
        registry.register(
            "kubernetes_request_duration_seconds",
            "Latency of Kubernetes API requests (watches excepted), by verb and resource",
            metrics.kubernetes_duration.clone(),
        );
        metrics
    }

    /// Records one Prefect request.
    pub fn prefect(&self, method: &str, endpoint: &str, status: Option<u16>, took: Duration) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.prefect_requests
            .get_or_create(&PrefectRequest {
                method: method.to_string(),
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
        self.prefect_duration
            .get_or_create(&Endpoint {
                endpoint: format!("{method} {endpoint}"),
            })
            .observe(took.as_secs_f64());
    }

    /// Records one Kubernetes request (a watch's latency is not recorded).
    pub fn kubernetes(&self, verb: &str, resource: &str, status: Option<u16>, took: Duration) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.kubernetes_requests
            .get_or_create(&KubernetesRequest {
                verb: verb.to_string(),
                resource: resource.to_string(),
                status,
            })
            .inc();
        if verb != "watch" {
            self.kubernetes_duration
                .get_or_create(&Endpoint {
                    endpoint: format!("{verb} {resource}"),
                })
                .observe(took.as_secs_f64());
        }
    }
}

/// `process_resident_memory_bytes` and `process_cpu_seconds_total`, read from
/// `/proc/self` at each scrape (absent where `/proc` is not).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stats) = process_stats() else {
            return Ok(());
        };
        let rss = ConstGauge::new(stats.resident_bytes as i64);
        let metric = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?;
        rss.encode(metric)?;
        let cpu = ConstCounter::new(stats.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
}

/// `/proc` counts CPU time in ticks of `USER_HZ`, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

/// Resident memory and CPU time of this process, from `/proc/self`.
pub fn process_stats() -> Option<ProcessStats> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after ") ".
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ProcessStats {
        resident_bytes: resident_kib * 1024,
        cpu_seconds: ticks as f64 / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_serves_process_build_and_call_metrics() {
        let mut registry = MetricsRegistry::new("tester");
        let calls = CallMetrics::register(registry.registry());
        calls.prefect(
            "POST",
            "/flow_runs/{id}/set_state",
            Some(201),
            Duration::from_millis(12),
        );
        calls.kubernetes("create", "jobs", None, Duration::from_millis(3));
        let text = registry.render_text();
        for expected in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "prefect_k8s_build_info{service=\"tester\"",
            "prefect_k8s_prefect_requests_total{method=\"POST\",endpoint=\"/flow_runs/{id}/set_state\",status=\"201\"} 1",
            "prefect_k8s_kubernetes_requests_total{verb=\"create\",resource=\"jobs\",status=\"error\"} 1",
            "prefect_k8s_prefect_request_duration_seconds_bucket",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }

    #[test]
    fn process_stats_are_read_from_proc() {
        let stats = process_stats().expect("Linux has /proc/self");
        assert!(stats.resident_bytes > 1024 * 1024, "{stats:?}");
        assert!(stats.cpu_seconds >= 0.0);
    }
}
