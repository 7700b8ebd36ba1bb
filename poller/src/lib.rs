//! The poller: finds the flow runs that are due in one Prefect work pool (and,
//! optionally, only in some of its work queues, the seed agent's "labels") and
//! publishes each to NATS JetStream as a [`FlowRunDue`] message.
//!
//! The poller never claims a run. Publishing is idempotent: the message id is
//! `<flow run id>:<scheduled state id>`, so the same scheduled state polled
//! many times (or by two pollers) is stored once within the stream's
//! duplicate window, and a dispatcher claims only a run still in that state.
//!
//! # Layout
//! - [`cli`]: the binary's command line and start-up.
//! - [`config`]: the poller's flags.
//! - [`pool`]: makes sure the work pool exists, and heartbeats it.
//! - [`ahead`]: the runs due within one more interval, polled at their time.
//! - [`due`]: turns one poll into messages (a message only says which run is
//!   due; the dispatcher reads what it renders from Prefect).
//! - [`publish`]: publishes messages and waits for JetStream's acks.
//! - [`wakeups`]: polls at once when the server's event stream says a run of
//!   the pool entered Scheduled.
//! - [`metrics`]: polls, runs found and published, poll duration.
#![forbid(unsafe_code)]

pub mod ahead;
pub mod cli;
#[warn(missing_docs)]
pub mod config;
pub mod due;
pub mod metrics;
pub mod pool;
pub mod publish;
pub mod wakeups;

use prefect_client::PrefectClient;
use service_runtime::health::Health;
use tokio_util::sync::CancellationToken;

use metrics::PollerMetrics;

pub use cli::cli_command;
pub use config::PollerConfig;
pub use flow_run_proto::FlowRunDue;

/// Everything that can stop the poller from starting.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error(transparent)]
    Prefect(#[from] prefect_client::PrefectError),
    #[error(transparent)]
    Nats(#[from] service_runtime::nats::NatsSetupError),
    #[error("invalid base job template: {0}")]
    Template(String),
}

/// One poller and what it talks to. Built like each service's library entry:
/// `Poller::new(…)`, optionally `.with_telemetry(…)`, then `.run(shutdown)`.
pub struct Poller {
    config: PollerConfig,
    prefect: PrefectClient,
    nats: async_nats::Client,
    health: Health,
    metrics: PollerMetrics,
}

impl Poller {
    /// A poller without a health server or served metrics.
    pub fn new(config: PollerConfig, prefect: PrefectClient, nats: async_nats::Client) -> Self {
        Poller {
            config,
            prefect,
            nats,
            health: Health::detached(),
            metrics: PollerMetrics::detached(),
        }
    }

    /// Records into `metrics` and reports through `health`: ready while polls
    /// succeed, live while the loop turns, started once the pool exists.
    pub fn with_telemetry(mut self, metrics: PollerMetrics, health: Health) -> Self {
        self.metrics = metrics;
        self.health = health;
        self
    }

    /// Runs the poller until `shutdown` is cancelled: ensures the pool, then
    /// heartbeats and polls on their own intervals. A failed poll is logged
    /// and retried on the next tick; it never stops the loop.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), PollerError> {
        let Poller {
            config,
            prefect,
            nats,
            health,
            metrics,
        } = self;
        health.watch_liveness(config.liveness_timeout(), shutdown.clone());
        run_poller(config, prefect, nats, health, metrics, shutdown).await
    }
}

async fn run_poller(
    config: PollerConfig,
    prefect: PrefectClient,
    nats: async_nats::Client,
    health: Health,
    metrics: PollerMetrics,
    shutdown: CancellationToken,
) -> Result<(), PollerError> {
    let js = async_nats::jetstream::new(nats);
    service_runtime::nats::ensure_streams(&js, config.streams.replicas()).await?;
    let Some(pool) =
        pool::ensure_work_pool_patiently(&prefect, &config, &health, &shutdown).await?
    else {
        return Ok(());
    };
    health.started();

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        work_pool = %config.pool.work_pool,
        work_queues = ?config.work_queues,
        worker = %config.pool.worker_name,
        api = %prefect.redacted_api_url(),
        "Starting prefect-k8s poller"
    );
    tracing::info!("Waiting for flow runs...");

    let heartbeat = tokio::spawn(pool::heartbeat_loop(
        prefect.clone(),
        config.clone(),
        shutdown.clone(),
    ));

    let publisher = publish::Publisher::new(js, config.streams.replicas());
    let wakeups = config
        .poll_on_events
        .then(|| wakeups::spawn(prefect.clone(), pool.id, metrics.clone(), shutdown.clone()));
    let mut interval = tokio::time::interval(config.poll_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = LastPoll::default();
    loop {
        let wake = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => Wake::Tick,
            _ = woken(wakeups.as_deref()), if last.wakes_help() => Wake::Event,
            // A run seen ahead becomes due (minus the prefetch): poll then,
            // not at the next tick.
            _ = due_at(last.ahead.next(), last.at.map(|at| at + WAKEUP_GAP)), if last.wakes_help() => Wake::Due,
        };
        let woken = wake == Wake::Event;
        let seen_ahead = std::mem::take(&mut last.ahead);
        if woken {
            // Runs created together (a burst, a bulk API call) make one poll,
            // and event-driven polls come at most every WAKEUP_GAP.
            let now = tokio::time::Instant::now();
            let earliest = last.at.map_or(now, |at| at + WAKEUP_GAP);
            tokio::time::sleep_until(earliest.max(now + WAKEUP_DEBOUNCE)).await;
            forget_pending_wakeup(wakeups.as_deref());
        }
        last = drain(
            &prefect, &publisher, &config, pool.id, &metrics, &health, &shutdown,
        )
        .await;
        if woken && last.published == Some(0) {
            // The event can come before the run is committed: look once more.
            tokio::time::sleep(WAKEUP_RECHECK).await;
            last = drain(
                &prefect, &publisher, &config, pool.id, &metrics, &health, &shutdown,
            )
            .await;
        }
        last.ahead = follow_ahead(&prefect, &config, &last, wake, seen_ahead).await;
    }
    heartbeat.abort();
    health.set_serving(false);
    tracing::info!("poller stopped");
    Ok(())
}

/// After an event asks for a poll, how long to wait for more before polling.
const WAKEUP_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(25);
/// The shortest time between the start of a poll and an event-driven one.
const WAKEUP_GAP: std::time::Duration = std::time::Duration::from_millis(150);
/// After an event-driven poll that found nothing new, when to look once more.
const WAKEUP_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Until `next_due` (a wall-clock time), and not before `not_before`; never
/// without a `next_due`.
async fn due_at(
    next_due: Option<chrono::DateTime<chrono::Utc>>,
    not_before: Option<tokio::time::Instant>,
) {
    let Some(at) = next_due else {
        return std::future::pending().await;
    };
    let now = tokio::time::Instant::now();
    let due = now + (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep_until(not_before.map_or(due, |gap| due.max(gap))).await;
}

/// What started a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The poll interval.
    Tick,
    /// The server's event stream.
    Event,
    /// A run seen ahead is due.
    Due,
}

/// The runs ahead after a drain: read again when [`LastPoll::looks_ahead`]
/// says so (a failed read keeps `seen`), less what the drain covered; none
/// after a failure or a full page (the timed poll comes first).
async fn follow_ahead(
    prefect: &PrefectClient,
    config: &PollerConfig,
    last: &LastPoll,
    wake: Wake,
    mut seen: ahead::Ahead,
) -> ahead::Ahead {
    let Some(covered) = last.covered.filter(|_| !last.full_page) else {
        return ahead::Ahead::default();
    };
    if last.looks_ahead(wake, seen.partial) {
        if let Some(read) = ahead::read(prefect, config, covered).await {
            seen = read;
        }
    }
    seen.covered_until(covered);
    seen
}

/// Until an event asks for a poll; never without an event stream.
async fn woken(wakeups: Option<&tokio::sync::Notify>) {
    match wakeups {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    }
}

/// Drops a wakeup stored while the poll was being prepared (it is answered by
/// that poll).
fn forget_pending_wakeup(wakeups: Option<&tokio::sync::Notify>) {
    use futures::FutureExt as _;
    if let Some(notify) = wakeups {
        let _ = notify.notified().now_or_never();
    }
}

/// What the last drain of due runs saw.
#[derive(Debug, Default, Clone)]
struct LastPoll {
    /// When its first poll started.
    at: Option<tokio::time::Instant>,
    /// Runs it published; `None` when a poll failed.
    published: Option<usize>,
    /// Its last page was full: a run created now sorts after what is queued.
    full_page: bool,
    /// The wall time its last successful poll began (`None` after a
    /// failure): its due read covered runs up to this + prefetch.
    covered: Option<chrono::DateTime<chrono::Utc>>,
    /// The runs seen ahead, polled at their time.
    ahead: ahead::Ahead,
}

impl LastPoll {
    /// Whether an event-driven poll could find the new run: not while due runs
    /// fill a whole page (they come first), nor after a failure (the timed
    /// poll retries).
    fn wakes_help(&self) -> bool {
        self.at.is_none() || (self.published.is_some() && !self.full_page)
    }

    /// Whether to read the runs ahead after this drain: after a timed poll,
    /// and after an event-driven poll that found nothing new (the event may
    /// be of a run scheduled for later); after a poll at a run's time only
    /// when the last read was a full page (`partial`); never after a poll
    /// that published on an event (the hot path stays at one call), a
    /// failure or a full page.
    fn looks_ahead(&self, wake: Wake, partial: bool) -> bool {
        let reads = match wake {
            Wake::Tick => true,
            Wake::Event => self.published == Some(0),
            Wake::Due => partial,
        };
        reads && self.published.is_some() && !self.full_page
    }
}

/// Polls, and polls again at once while full pages bring mostly new runs. A
/// full page of runs already queued (dispatchers down or behind) waits for the
/// next tick instead of being polled and re-published in a loop.
async fn drain(
    prefect: &PrefectClient,
    publisher: &publish::Publisher,
    config: &PollerConfig,
    work_pool_id: uuid::Uuid,
    metrics: &PollerMetrics,
    health: &Health,
    shutdown: &CancellationToken,
) -> LastPoll {
    let mut last = LastPoll {
        at: Some(tokio::time::Instant::now()),
        published: Some(0),
        full_page: false,
        covered: None,
        ahead: ahead::Ahead::default(),
    };
    loop {
        let started = std::time::Instant::now();
        let began = chrono::Utc::now();
        let polled = poll_once(prefect, publisher, config, work_pool_id).await;
        metrics.record(&polled, started.elapsed());
        health.beat();
        health.set_serving(polled.is_ok());
        match polled {
            Ok(outcome) => {
                last.published = last.published.map(|n| n + outcome.published);
                last.full_page = outcome.full_page;
                last.covered = Some(began);
                if !outcome.drains_a_backlog() || shutdown.is_cancelled() {
                    return last;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "poll failed; retrying at the next interval");
                last.published = None;
                last.covered = None;
                return last;
            }
        }
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOutcome {
    /// Runs returned by Prefect.
    pub found: usize,
    /// Runs stored as new messages (the rest were duplicates).
    pub published: usize,
    /// Prefect returned as many runs as asked for: more may be waiting.
    pub full_page: bool,
}

impl PollOutcome {
    /// A full page, more than half of it new: a backlog is being drained and the
    /// next page is worth asking for at once.
    pub fn drains_a_backlog(&self) -> bool {
        self.full_page && self.published * 2 > self.found
    }
}

/// One poll: a batched read of due runs and their deployments and flows,
/// then one message per run.
pub async fn poll_once(
    prefect: &PrefectClient,
    publisher: &publish::Publisher,
    config: &PollerConfig,
    work_pool_id: uuid::Uuid,
) -> Result<PollOutcome, publish::PollError> {
    let before = chrono::Utc::now() + chrono::Duration::seconds(config.prefetch_seconds as i64);
    let runs = prefect
        .get_scheduled_flow_runs(
            &config.pool.work_pool,
            &config.work_queues,
            before,
            Some(config.limit as usize),
        )
        .await?;
    let found = runs.len();
    let full_page = found >= config.limit as usize;
    if runs.is_empty() {
        return Ok(PollOutcome::default());
    }
    let messages = due::messages_for(
        &config.pool.work_pool,
        work_pool_id,
        &config.pool.worker_name,
        runs,
    );
    let published = publisher
        .publish_all(&config.pool.work_pool, &messages)
        .await?;
    if published > 0 {
        tracing::info!("Found {published} flow run(s) to submit for execution.");
    }
    Ok(PollOutcome {
        found,
        published,
        full_page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(published: Option<usize>, full_page: bool) -> LastPoll {
        LastPoll {
            published,
            full_page,
            ..LastPoll::default()
        }
    }

    #[test]
    fn the_runs_ahead_are_read_after_a_tick_an_empty_event_poll_or_a_partial_read() {
        let ok = after(Some(0), false);
        assert!(ok.looks_ahead(Wake::Tick, false));
        assert!(ok.looks_ahead(Wake::Event, false));
        assert!(!ok.looks_ahead(Wake::Due, false));
        assert!(ok.looks_ahead(Wake::Due, true));
        assert!(!after(Some(3), false).looks_ahead(Wake::Event, false));
        assert!(after(Some(3), false).looks_ahead(Wake::Tick, false));
    }

    #[test]
    fn never_after_a_failure_or_a_full_page() {
        for wake in [Wake::Tick, Wake::Event, Wake::Due] {
            assert!(!after(None, false).looks_ahead(wake, true));
            assert!(!after(Some(0), true).looks_ahead(wake, true));
        }
    }
}
