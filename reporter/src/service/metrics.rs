//! The reporter's metrics: proposals by kind and Prefect's answer, Jobs it
//! deleted by reason, watch restarts, event lines forwarded, what its caches
//! hold, and whether this replica leads. Registered under the
//! `prefect_k8s_reporter_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Proposal {
    /// `infrastructure_pending`, `crashed`, `cancelled`.
    kind: &'static str,
    /// `accept`, `reject`, `abort`, `wait`, `error`.
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Resource {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The reporter's metrics.
#[derive(Clone)]
pub struct ReporterMetrics {
    proposals: Family<Proposal, Counter>,
    jobs_deleted: Family<Reason, Counter>,
    watch_restarts: Family<Resource, Counter>,
    event_lines: Counter,
    cached: Family<Kind, Gauge>,
    leader: Gauge,
}

impl ReporterMetrics {
    /// Registers the reporter's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ReporterMetrics {
            proposals: Family::default(),
            jobs_deleted: Family::default(),
            watch_restarts: Family::default(),
            event_lines: Counter::default(),
            cached: Family::default(),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("reporter");
        r.register(
            "proposals",
            "States proposed to Prefect, by kind and Prefect's answer",
            metrics.proposals.clone(),
        );
        r.register(
            "jobs_deleted",
            "Jobs the reporter deleted, by reason: cancelled, withdrawn, swept",
            metrics.jobs_deleted.clone(),
        );
        r.register(
            "watch_restarts",
            "Times a watch failed and restarted, by resource",
            metrics.watch_restarts.clone(),
        );
        r.register(
            "event_lines",
            "Kubernetes events forwarded as flow-run log lines",
            metrics.event_lines.clone(),
        );
        r.register(
            "cached_objects",
            "What the watch caches hold: jobs, pods, runs",
            metrics.cached.clone(),
        );
        r.register(
            "leader",
            "1 while this replica leads, else 0",
            metrics.leader.clone(),
        );
        // Every known series from the start, at 0, so rates and alerts see them.
        for kind in ["infrastructure_pending", "crashed"] {
            for status in ["accept", "reject", "abort", "wait", "error"] {
                let _ = metrics.proposals.get_or_create(&Proposal { kind, status });
            }
        }
        for reason in ["cancelled", "withdrawn", "swept"] {
            let _ = metrics.jobs_deleted.get_or_create(&Reason { reason });
        }
        for resource in ["jobs", "pods", "events"] {
            let _ = metrics.watch_restarts.get_or_create(&Resource { resource });
        }
        metrics.status((0, 0, 0), false);
        metrics
    }

    /// Metrics kept in a registry nobody serves (tests, embedding).
    pub fn detached() -> Self {
        Self::register(&mut Registry::default())
    }

    pub fn proposal(&self, kind: &'static str, status: &'static str) {
        self.proposals
            .get_or_create(&Proposal { kind, status })
            .inc();
    }

    pub fn job_deleted(&self, reason: &'static str) {
        self.jobs_deleted.get_or_create(&Reason { reason }).inc();
    }

    pub fn watch_restart(&self, resource: &'static str) {
        self.watch_restarts
            .get_or_create(&Resource { resource })
            .inc();
    }

    pub fn event_lines(&self, lines: usize) {
        self.event_lines.inc_by(lines as u64);
    }

    /// The caches' sizes and leadership, as of now.
    pub fn status(&self, (jobs, pods, runs): (usize, usize, usize), leading: bool) {
        for (kind, count) in [("jobs", jobs), ("pods", pods), ("runs", runs)] {
            let value = i64::try_from(count).unwrap_or(i64::MAX);
            self.cached.get_or_create(&Kind { kind }).set(value);
        }
        self.leader.set(i64::from(leading));
    }
}
