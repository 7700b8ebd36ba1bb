//! gRPC health (`grpc.health.v1.Health`), what the Deployments' probes call.
//! Three answers, by the `service` a probe asks for:
//!
//! - `""` and the service's own name (`poller`, ...): **readiness** — the
//!   service can do its work now (its dependencies answer). NOT_SERVING at
//!   start, while a dependency is away, and once shutdown has begun.
//! - `liveness`: the service's main loop is making progress. Each loop calls
//!   [`Health::beat`]; a watchdog reports NOT_SERVING when no beat came for
//!   the configured time, so Kubernetes restarts a stuck process.
//! - `startup`: SERVING once the service has finished starting (the
//!   reporter's first list of Jobs and pods, say), so the liveness probe does
//!   not judge a process still starting.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    born: Instant,
}

impl Health {
    /// Serves the health service on `addr` until `shutdown` is cancelled:
    /// not ready, not started, live.
    pub async fn serve(
        addr: SocketAddr,
        service: &'static str,
        shutdown: CancellationToken,
    ) -> Result<Health, std::io::Error> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let health = Health::detached();
        health.live.send_replace(true);
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
            born: Instant::now(),
        }
    }

    /// Readiness: SERVING (`true`) or NOT_SERVING (`false`).
    pub fn set_serving(&self, serving: bool) {
        set(&self.ready, serving);
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

    /// Readiness SERVING (kept for the binaries' shape).
    pub async fn serving(&self) {
        self.set_serving(true);
    }

    /// Readiness NOT_SERVING (kept for the binaries' shape).
    pub async fn not_serving(&self) {
        self.set_serving(false);
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
