//! The reporter service around the decision core: watchers keep compact views of our
//! Jobs and pods ([`store`], [`watch`]); one replica, elected with a Lease ([`lease`]),
//! evaluates runs and proposes `InfrastructurePending`/`Crashed` ([`evaluate`], with
//! the crashed pod's log in the run's logs: [`pod_logs`]), forwards pod and Job events
//! as flow-run logs and keeps what node autoscalers say ([`event_logs`]), sends pod
//! phase changes as Prefect events for Automations ([`pod_events`]), carries out
//! cancellations ([`cancel`]) and, when asked, deletes finished Jobs ([`sweep`]).
//! Standbys keep their stores warm so a takeover acts at once. Flags: [`config`].
//!
//! ```no_run
//! # async fn example(prefect: prefect_client::PrefectClient, kube: kube::Client) -> Result<(), reporter::service::ReporterError> {
//! use reporter::service::{Reporter, ReporterConfig};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let reporter = Reporter::new(ReporterConfig::for_pool("k8s"), prefect, kube);
//! let _is_leader = reporter.leadership();
//! reporter.run(shutdown).await
//! # }
//! ```

pub mod cancel;
#[warn(missing_docs)]
pub mod config;
pub mod evaluate;
pub mod event_logs;
pub mod late_pending;
pub mod lease;
pub mod metrics;
pub mod pod_events;
pub mod pod_logs;
pub mod store;
pub mod sweep;
pub mod watch;

pub use config::{GraceOverrides, ReporterConfig};

use prefect_client::PrefectClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use metrics::ReporterMetrics;
use service_runtime::health::Health;

use cancel::Canceller;
use evaluate::Evaluator;
pub use lease::Leadership;
use lease::{LeadershipSender, LeaseSettings};
use pod_events::{PodEventSender, PodEventSink};
use store::SharedStore;
use watch::ApiScope;

/// Why the reporter stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    #[error("the reporter's {task} task failed: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// One reporter replica.
pub struct Reporter {
    config: ReporterConfig,
    prefect: PrefectClient,
    kube: kube::Client,
    store: SharedStore,
    leadership: LeadershipSender,
    metrics: ReporterMetrics,
    health: Health,
}

impl Reporter {
    pub fn new(config: ReporterConfig, prefect: PrefectClient, kube: kube::Client) -> Self {
        Reporter {
            config,
            prefect,
            kube,
            store: SharedStore::new(),
            leadership: LeadershipSender::new(),
            metrics: ReporterMetrics::detached(),
            health: Health::detached(),
        }
    }

    /// Records into `metrics` and reports through `health`: ready while the watch
    /// caches are in sync (leading or not), started once the first lists are in,
    /// live while the evaluation loop turns.
    pub fn with_telemetry(mut self, metrics: ReporterMetrics, health: Health) -> Self {
        self.metrics = metrics;
        self.health = health;
        self
    }

    /// `true` while this replica leads.
    pub fn leadership(&self) -> Leadership {
        self.leadership.subscribe()
    }

    /// The view store (for tests and measurements).
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Runs until `shutdown`; a leader releases its Lease on the way out. Dropping the
    /// future stops every task at once (as a killed process would, minus the release).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ReporterError> {
        self.health
            .watch_liveness(self.config.liveness_timeout(), shutdown.clone());
        tokio::spawn(report_status(
            self.store.clone(),
            self.leadership.subscribe(),
            self.metrics.clone(),
            self.health.clone(),
            shutdown.clone(),
        ));
        // Workers stop on `work_done`; the election stops last, to release the Lease
        // only once no worker can act any more.
        let work_done = shutdown.child_token();
        let mut tasks: JoinSet<&'static str> = JoinSet::new();
        self.spawn_watches(&mut tasks, &work_done);
        self.spawn_actors(&mut tasks, &work_done);
        let lease = self.lease_settings();
        tracing::info!(
            work_pool = %self.config.pool.work_pool,
            namespace = self.config.namespace.as_deref().unwrap_or("<all>"),
            lease = %format!("{}/{}", lease.namespace, lease.name),
            identity = %lease.identity,
            "reporter starting"
        );
        let election_stop = CancellationToken::new();
        let election = {
            let (kube, stop) = (self.kube.clone(), election_stop.clone());
            tokio::spawn(lease::run_election(kube, lease, self.leadership, stop))
        };
        // Aborts the election if this future is dropped (a "killed" replica).
        let election = AbortOnDrop(election);

        let mut failure = stop_workers(&shutdown, tasks, &work_done).await;
        election_stop.cancel();
        if let Err(source) = election.join().await {
            failure.get_or_insert(ReporterError::Task {
                task: "election",
                source,
            });
        }
        tracing::info!("reporter stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Spawns the Job and pod watches, the pod-event sender they feed and the
    /// Kubernetes event watch.
    fn spawn_watches(&self, tasks: &mut JoinSet<&'static str>, work_done: &CancellationToken) {
        let (config, prefect, store, metrics) =
            (&self.config, &self.prefect, &self.store, &self.metrics);
        let scope = ApiScope {
            client: self.kube.clone(),
            namespace: config.namespace.clone(),
        };
        {
            let (scope, store, token) = (scope.clone(), store.clone(), work_done.clone());
            let metrics = metrics.clone();
            tasks.spawn(async move {
                watch::watch_jobs(scope, store, metrics, token).await;
                "Job watch"
            });
        }
        let pod_events = if config.disable_pod_events {
            PodEventSink::disabled()
        } else {
            let (sink, source) = PodEventSink::new();
            let sender = PodEventSender {
                scope: scope.clone(),
                prefect: prefect.clone(),
                leadership: self.leadership.subscribe(),
                work_pool_label: config.work_pool_label(),
            };
            let token = work_done.clone();
            tasks.spawn(async move {
                pod_events::run_pod_events(sender, source, token).await;
                "pod events"
            });
            sink
        };
        {
            let (scope, store, token) = (scope.clone(), store.clone(), work_done.clone());
            let metrics = metrics.clone();
            tasks.spawn(async move {
                watch::watch_pods(scope, store, metrics, pod_events, token).await;
                "pod watch"
            });
        }
        {
            let metrics = metrics.clone();
            let (scope, store, prefect, leading, token) = (
                scope,
                store.clone(),
                prefect.clone(),
                self.leadership.subscribe(),
                work_done.clone(),
            );
            let forward = !config.disable_event_logs;
            tasks.spawn(async move {
                event_logs::run_event_logs(scope, store, prefect, leading, forward, metrics, token)
                    .await;
                "event watch"
            });
        }
    }

    /// Spawns the tasks that act on what the watches saw: evaluation, cancellation,
    /// tombstone pruning and, when asked, the finished-Job sweep.
    fn spawn_actors(&self, tasks: &mut JoinSet<&'static str>, work_done: &CancellationToken) {
        let (config, prefect, kube, store, leadership, metrics) = (
            &self.config,
            &self.prefect,
            &self.kube,
            &self.store,
            &self.leadership,
            &self.metrics,
        );
        {
            let evaluator = Evaluator::new(
                store.clone(),
                prefect.clone(),
                kube.clone(),
                config.decision_settings(),
                config.pool.work_pool.clone(),
                config.namespace.clone(),
                config.reconcile_interval(),
                !config.disable_job_deletion,
                leadership.subscribe(),
            )
            .with_crash_log_lines(config.crash_log_lines)
            .with_telemetry(metrics.clone(), self.health.clone());
            let token = work_done.clone();
            tasks.spawn(async move {
                evaluator.run(token).await;
                "evaluation"
            });
        }
        {
            let canceller = Canceller {
                prefect: prefect.clone(),
                store: store.clone(),
                work_pool_label: config.work_pool_label(),
                metrics: metrics.clone(),
                kube: kube.clone(),
                work_pool: config.pool.work_pool.clone(),
                delete_jobs: !config.disable_job_deletion,
                interval: config.cancel_poll_interval(),
                leadership: leadership.subscribe(),
            };
            let token = work_done.clone();
            tasks.spawn(async move {
                canceller.run(token).await;
                "cancellation"
            });
        }
        {
            let (store, token) = (store.clone(), work_done.clone());
            let keep = tombstone_keep(config);
            tasks.spawn(async move {
                prune_tombstones(store, keep, token).await;
                "tombstone pruning"
            });
        }
        if let Some(age) = config.finished_job_age() {
            let metrics = metrics.clone();
            let (store, kube, leading, token) = (
                store.clone(),
                kube.clone(),
                leadership.subscribe(),
                work_done.clone(),
            );
            let pool_label = config.work_pool_label();
            tasks.spawn(async move {
                sweep::run_sweep(store, kube, age, pool_label, leading, metrics, token).await;
                "finished-Job sweep"
            });
        }
    }

    fn lease_settings(&self) -> LeaseSettings {
        LeaseSettings {
            namespace: self.config.lease_namespace(),
            name: self.config.lease_name(),
            identity: self.config.identity(),
            duration: self.config.lease_duration(),
        }
    }
}

/// Waits for `shutdown` or for a worker to end, then stops every worker and waits for
/// them all; the first worker failure, if any.
async fn stop_workers(
    shutdown: &CancellationToken,
    mut tasks: JoinSet<&'static str>,
    work_done: &CancellationToken,
) -> Option<ReporterError> {
    let mut failure = None;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        Some(ended) = tasks.join_next() => {
            match ended {
                Ok(_) if shutdown.is_cancelled() => {}
                Ok(task) => tracing::error!(task, "a reporter task ended on its own; stopping"),
                Err(source) => failure = Some(ReporterError::Task { task: "worker", source }),
            }
        }
    }
    work_done.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Err(source) = ended {
            failure.get_or_insert(ReporterError::Task {
                task: "worker",
                source,
            });
        }
    }
    failure
}

/// How long tombstones are kept: the submission grace, and at least long enough for
/// the leader to decide on a deleted Job (its settle grace, plus two reconciles).
fn tombstone_keep(config: &ReporterConfig) -> std::time::Duration {
    let settings = config.decision_settings();
    let decided = settings.settle_grace * 3 + config.reconcile_interval() * 2;
    settings.submission_grace.max(decided)
}

/// Every second: the caches' sizes and leadership into the metrics; ready while
/// the watch caches are in sync, started once they first were.
async fn report_status(
    store: SharedStore,
    leadership: Leadership,
    metrics: ReporterMetrics,
    health: Health,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let synced = store.is_synced();
        if synced {
            health.started();
        }
        health.set_serving(synced);
        metrics.status(store.read(|store| store.counts()), leadership.is_leading());
    }
    health.set_serving(false);
    metrics.status(store.read(|store| store.counts()), false);
}

/// Drops tombstones older than `keep` (by then the leader has long reported the run),
/// every minute or every half `keep` if shorter, on every replica, leader or not.
async fn prune_tombstones(store: SharedStore, keep: std::time::Duration, stop: CancellationToken) {
    let period = (keep / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(60),
    );
    let mut ticks = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let cutoff = chrono::Utc::now()
            - chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
        let pruned = store.update(|store| store.prune_older_than(cutoff));
        if pruned > 0 {
            tracing::debug!(pruned, "dropped old tombstones");
        }
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<(), tokio::task::JoinError> {
        let handle = std::mem::replace(&mut self.0, tokio::spawn(async {}));
        handle.await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
