//! gRPC health (`grpc.health.v1.Health`), what the Deployments' probes call.
//! Three answers, by the `service` a probe asks for:
//!
//! - `""` and the service's own name (`poller`, ...): **readiness** — the
//!   service can do its work now (its dependencies answer). NOT_SERVING at
//!   start, while a dependency is away, and from the moment shutdown begins
//!   (before the service stops anything; see [`Health::not_serving_from`]).
//! - `liveness`: the service's main loop is making progress. Each loop calls
//!   [`Health::beat`]; a watchdog reports NOT_SERVING when no beat came for
//!   the configured time, so Kubernetes restarts a stuck process.
//! - `startup`: SERVING once the service has finished starting (the
//!   reporter's first list of Jobs and pods, say), so the liveness probe does
//!   not judge a process still starting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The probe name of liveness.
pub const LIVENESS: &str = "liveness";
/// The probe name of startup.
pub const STARTUP: &str = "startup";

/// The health server's switches. Cheap to clone; every method is synchronous.
#[derive(Clone)]
pub struct Health {
    ready: watch::Sender<bool>,
    started: watch::Sender<bool>,
    live: watch::Sender<bool>,
    /// Milliseconds since `born` of the last beat.
    last_beat: Arc<AtomicU64>,
    /// Shutdown has begun: readiness stays NOT_SERVING.
    stopping: Arc<AtomicBool>,
    born: Instant,
}

impl Health {
    /// Serves the health service on `addr` until `shutdown` is cancelled:
    /// not ready, not started, live; not ready for good once `shutdown` is
    /// cancelled.
    pub async fn serve(
        addr: SocketAddr,
        service: &'static str,
        shutdown: CancellationToken,
    ) -> Result<Health, std::io::Error> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::detached();
        health.live.send_replace(true);
        health.not_serving_from(shutdown.clone());
        follow(&reporter, health.ready.subscribe(), &[service, ""]).await;
        follow(&reporter, health.started.subscribe(), &[STARTUP]).await;
        follow(&reporter, health.live.subscribe(), &[LIVENESS]).await;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "health server stopped");
            }
        });
        Ok(health)
    }

    /// Switches that serve nothing (tests, embedding).
    pub fn detached() -> Health {
        Health {
            ready: watch::channel(false).0,
            started: watch::channel(false).0,
            live: watch::channel(true).0,
            last_beat: Arc::default(),
            stopping: Arc::default(),
            born: Instant::now(),
        }
    }

    /// Readiness NOT_SERVING as soon as `shutdown` is cancelled, and from then
    /// on whatever the service sets: the first thing a shutdown does, before
    /// the service stops pulling or finishes the work in hand.
    pub fn not_serving_from(&self, shutdown: CancellationToken) {
        let health = self.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.stopping.store(true, Ordering::SeqCst);
            set(&health.ready, false);
        });
    }

    /// Readiness: SERVING (`true`) or NOT_SERVING (`false`). Once shutdown
    /// has begun it stays NOT_SERVING.
    pub fn set_serving(&self, serving: bool) {
        set(
            &self.ready,
            serving && !self.stopping.load(Ordering::SeqCst),
        );
    }

    pub fn is_serving(&self) -> bool {
        *self.ready.borrow()
    }

    /// The service has finished starting.
    pub fn started(&self) {
        set(&self.started, true);
    }

    /// The main loop made progress.
    pub fn beat(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.last_beat.store(now, Ordering::Relaxed);
    }

    /// Whether the liveness answer is SERVING now.
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Watches the beats until `shutdown`: liveness turns NOT_SERVING when no
    /// beat came for `limit` (and SERVING again when beats resume).
    pub fn watch_liveness(&self, limit: Duration, shutdown: CancellationToken) {
        let health = self.clone();
        health.beat();
        let period = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let silent = health.silence();
                let live = silent < limit;
                if live != health.is_live() && !live {
                    tracing::error!(
                        silent_seconds = silent.as_secs_f64(),
                        "the main loop made no progress: liveness fails"
                    );
                }
                set(&health.live, live);
            }
        });
    }

    /// Time since the last beat.
    fn silence(&self) -> Duration {
        let last = Duration::from_millis(self.last_beat.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }
}

fn set(switch: &watch::Sender<bool>, value: bool) {
    switch.send_if_modified(|current| {
        let changed = *current != value;
        *current = value;
        changed
    });
}

/// Reports `switch` under `names` now and on every change.
async fn follow(
    reporter: &HealthReporter,
    mut switch: watch::Receiver<bool>,
    names: &[&'static str],
) {
    let status = |on: bool| {
        if on {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    let initial = status(*switch.borrow_and_update());
    for name in names {
        reporter.set_service_status(*name, initial).await;
    }
    let (reporter, names) = (reporter.clone(), names.to_vec());
    tokio::spawn(async move {
        while switch.changed().await.is_ok() {
            let now = status(*switch.borrow_and_update());
            for name in &names {
                reporter.set_service_status(*name, now).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_turns_readiness_off_first_and_for_good() {
        let health = Health::detached();
        let shutdown = CancellationToken::new();
        health.not_serving_from(shutdown.clone());
        health.set_serving(true);
        tokio::task::yield_now().await;
        assert!(health.is_serving());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while health.is_serving() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("NOT_SERVING once shutdown begins");
        // A dependency recovering during the drain does not make it ready again.
        health.set_serving(true);
        assert!(!health.is_serving());
    }

    #[tokio::test]
    async fn a_served_health_goes_not_serving_when_shutdown_begins() {
        let shutdown = CancellationToken::new();
        let addr = "127.0.0.1:0".parse().unwrap();
        let health = Health::serve(addr, "svc", shutdown.clone()).await.unwrap();
        health.set_serving(true);
        assert!(health.is_serving());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while health.is_serving() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("NOT_SERVING once shutdown begins");
    }

    #[tokio::test]
    async fn liveness_fails_without_beats_and_returns_with_them() {
        let health = Health::detached();
        let stop = CancellationToken::new();
        health.watch_liveness(Duration::from_millis(200), stop.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(health.is_live());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!health.is_live(), "no beat for twice the limit");
        health.beat();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(health.is_live(), "beats resumed");
        stop.cancel();
    }
}
