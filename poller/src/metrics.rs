//! The poller's metrics: polls by outcome and how long they took, runs found
//! and published, and the server's events that woke it. Registered under the `prefect_k8s_poller_` prefix.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::publish::PollError;
use crate::PollOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `ok` or `error`.
    outcome: &'static str,
}

/// The poller's counters and histograms.
#[derive(Clone)]
pub struct PollerMetrics {
    polls: Family<Outcome, Counter>,
    runs_found: Counter,
    runs_published: Counter,
    poll_duration: Histogram,
    event_wakeups: Counter,
}

impl PollerMetrics {
    /// Registers the poller's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = PollerMetrics {
            polls: Family::default(),
            runs_found: Counter::default(),
            runs_published: Counter::default(),
            poll_duration: service_runtime::metrics::request_histogram(),
            event_wakeups: Counter::default(),
        };
        let poller = registry.sub_registry_with_prefix("poller");
        poller.register(
            "polls",
            "Polls of the work pool, by outcome",
            metrics.polls.clone(),
        );
        poller.register(
            "runs_found",
            "Due flow runs the polls returned (a run still queued is counted again)",
            metrics.runs_found.clone(),
        );
        poller.register(
            "runs_published",
            "Due flow runs stored as new messages in JetStream",
            metrics.runs_published.clone(),
        );
        poller.register(
            "poll_duration_seconds",
            "How long a poll took, publishing included",
            metrics.poll_duration.clone(),
        );
        poller.register(
            "event_wakeups",
            "Scheduled-run events of the pool from the server's event stream (each asks for a poll)",
            metrics.event_wakeups.clone(),
        );
        for outcome in ["ok", "error"] {
            let _ = metrics.polls.get_or_create(&Outcome { outcome });
        }
        metrics
    }

    /// Metrics kept in a registry nobody serves (tests, embedding).
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Records an event that asks for a poll.
    pub fn event_wakeup(&self) {
        self.event_wakeups.inc();
    }

    /// Records one poll.
    pub fn record(&self, result: &Result<PollOutcome, PollError>, took: Duration) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.polls.get_or_create(&Outcome { outcome }).inc();
        self.poll_duration.observe(took.as_secs_f64());
        if let Ok(outcome) = result {
            self.runs_found.inc_by(outcome.found as u64);
            self.runs_published.inc_by(outcome.published as u64);
        }
    }
}
