//! Event-driven polls. The Prefect server publishes `prefect.flow-run.<state
//! name>` on its event stream (`/api/events/out`) for every state a run
//! enters; the poller listens for `Scheduled` and `AwaitingRetry` of its pool
//! and polls at once when one arrives (a run scheduled for later makes a poll
//! that finds nothing new: the event does not carry the scheduled time), so a run created to start now (a Quick Run, an API call, an
//! automation, a retry) is published within a moment instead of at the next
//! tick. The timed poll stays as the safety net: while the stream is down
//! (reopened with backoff) or when an event is missed, runs are found as
//! before, one interval later.

use std::sync::Arc;
use std::time::Duration;

use prefect_client::{EventFilter, PrefectClient};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::PollerMetrics;

/// The events that ask for a poll: a run entered a scheduled state.
pub const SCHEDULED_EVENTS: [&str; 2] = [
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.AwaitingRetry",
];
/// Without any message (the server pings every 20 s) for this long, the
/// stream is taken for dead and reopened.
const IDLE_LIMIT: Duration = Duration::from_secs(65);
/// A stream open this long was healthy, whatever ended it.
const HEALTHY_LIFE: Duration = Duration::from_secs(60);
/// First and longest pause before reopening a failed stream.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Starts listening; the returned [`Notify`] is notified for every
/// scheduled-state event of the pool (a notification that finds nobody waiting is
/// kept for the next wait, so an event during a poll asks for one more).
pub fn spawn(
    prefect: PrefectClient,
    work_pool_id: uuid::Uuid,
    metrics: PollerMetrics,
    shutdown: CancellationToken,
) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let filter = EventFilter {
        names: Some(SCHEDULED_EVENTS.map(String::from).to_vec()),
        any_resource_ids: Some(vec![format!("prefect.work-pool.{work_pool_id}")]),
        ..EventFilter::default()
    };
    let wake = notify.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = listen(&prefect, &filter, &wake, &metrics) => {}
        }
    });
    notify
}

/// Opens the stream and notifies for each event, for good; reopens it with
/// backoff when it fails or ends.
async fn listen(
    prefect: &PrefectClient,
    filter: &EventFilter,
    wake: &Notify,
    metrics: &PollerMetrics,
) {
    let mut pause = BACKOFF.0;
    loop {
        match prefect.subscribe_events(filter).await {
            Ok(mut stream) => {
                tracing::info!("listening to the server's event stream for scheduled runs");
                let opened = std::time::Instant::now();
                let ended = loop {
                    match stream.next_event(IDLE_LIMIT).await {
                        Ok(Some(_)) => {
                            pause = BACKOFF.0;
                            metrics.event_wakeup();
                            wake.notify_one();
                        }
                        Ok(None) => {
                            let why = stream.closed_because().unwrap_or("no reason given");
                            break format!("the server closed it: {why}");
                        }
                        Err(error) => break error.to_string(),
                    }
                };
                // A stream that lived a while was healthy: start the backoff over.
                // One closed at once (a proxy, a refused filter) keeps backing off.
                if opened.elapsed() >= HEALTHY_LIFE {
                    pause = BACKOFF.0;
                }
                tracing::warn!(reason = %ended, "event stream ended; polls are timed only until it is reopened");
            }
            Err(error) => {
                tracing::warn!(%error, "opening the server's event stream failed; polls are timed only until it opens");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF.1);
    }
}
