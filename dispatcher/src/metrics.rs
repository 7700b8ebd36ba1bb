//! The dispatcher's metrics: submissions and claims by outcome, the time from
//! a run's scheduled time to its Job, how long Job creation takes, the runs in
//! hand, and the shared JetStream consumer's backlog as this replica sees it.
//! Registered under the `prefect_k8s_dispatcher_` prefix.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The dispatcher's metrics.
#[derive(Clone)]
pub struct DispatcherMetrics {
    submissions: Family<Outcome, Counter>,
    claims: Family<Outcome, Counter>,
    due_to_job: Histogram,
    job_create: Histogram,
    pub in_flight: Gauge,
    pub consumer_pending: Gauge,
    pub consumer_ack_pending: Gauge,
    pub consumer_redelivered: Gauge,
}

impl DispatcherMetrics {
    /// Registers the dispatcher's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = DispatcherMetrics {
            submissions: Family::default(),
            claims: Family::default(),
            // 50 ms to about 27 minutes.
            due_to_job: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
            job_create: service_runtime::metrics::request_histogram(),
            in_flight: Gauge::default(),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            consumer_redelivered: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("dispatcher");
        r.register(
            "submissions",
            "Messages handled, by outcome: submitted, skipped, withdrawn, crashed, retried, dead_lettered",
            metrics.submissions.clone(),
        );
        r.register(
            "claims",
            "Claims of flow runs, by outcome: claimed, resumed, refused, wait, error",
            metrics.claims.clone(),
        );
        r.register(
            "due_to_job_seconds",
            "From a run's scheduled time to its Job's creation (0 when created early)",
            metrics.due_to_job.clone(),
        );
        r.register(
            "job_create_duration_seconds",
            "How long creating a Job took at the Kubernetes API",
            metrics.job_create.clone(),
        );
        r.register(
            "in_flight",
            "Runs this replica is handling now",
            metrics.in_flight.clone(),
        );
        r.register(
            "consumer_pending",
            "Messages of the pool's consumer not yet delivered to any replica",
            metrics.consumer_pending.clone(),
        );
        r.register(
            "consumer_ack_pending",
            "Messages of the pool's consumer delivered and not yet acked, all replicas",
            metrics.consumer_ack_pending.clone(),
        );
        r.register(
            "consumer_redelivered",
            "Messages of the pool's consumer delivered more than once and not yet acked",
            metrics.consumer_redelivered.clone(),
        );
        // Every known series from the start, at 0, so rates and alerts see them.
        let submissions = [
            "submitted",
            "skipped",
            "withdrawn",
            "crashed",
            "retried",
            "dead_lettered",
        ];
        for outcome in submissions {
            let _ = metrics.submissions.get_or_create(&Outcome { outcome });
        }
        for outcome in ["claimed", "resumed", "refused", "wait", "error"] {
            let _ = metrics.claims.get_or_create(&Outcome { outcome });
        }
        metrics
    }

    /// Metrics kept in a registry nobody serves (tests, embedding).
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn submission(&self, outcome: &'static str) {
        self.submissions.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn claim(&self, outcome: &'static str) {
        self.claims.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn job_created(&self, took: Duration, late_by: Duration) {
        self.job_create.observe(took.as_secs_f64());
        self.due_to_job.observe(late_by.as_secs_f64());
    }
}

/// Sets a gauge from a count the consumer reports.
pub fn set(gauge: &Gauge, count: u64) {
    gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
}
