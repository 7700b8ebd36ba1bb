//! gRPC health (`grpc.health.v1.Health`), what the Deployments' probes call.
//! A service reports NOT_SERVING until its connections are up, while it
//! cannot do its work (e.g. its JetStream consumer is gone and being
//! re-created), and again once shutdown has begun.

use std::net::SocketAddr;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// The health server's status switch. Cheap to clone; [`Health::set_serving`]
/// is synchronous, so any task can flip it.
#[derive(Clone)]
pub struct Health {
    serving: watch::Sender<bool>,
}

impl Health {
    /// Serves the health service on `addr` until `shutdown` is cancelled,
    /// reporting `service` and the overall ("") status, NOT_SERVING at first.
    pub async fn serve(
        addr: SocketAddr,
        service: &'static str,
        shutdown: CancellationToken,
    ) -> Result<Health, std::io::Error> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let (serving, mut changes) = watch::channel(false);
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let status = if *changes.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status(service, status).await;
                reporter.set_service_status("", status).await;
            }
        });
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "health server stopped");
            }
        });
        Ok(Health { serving })
    }

    /// A switch that serves nothing (tests, embedding).
    pub fn detached() -> Health {
        Health {
            serving: watch::channel(false).0,
        }
    }

    /// Reports SERVING (`true`) or NOT_SERVING (`false`).
    pub fn set_serving(&self, serving: bool) {
        self.serving.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
    }

    /// The current status.
    pub fn is_serving(&self) -> bool {
        *self.serving.borrow()
    }

    pub async fn serving(&self) {
        self.set_serving(true);
    }

    pub async fn not_serving(&self) {
        self.set_serving(false);
    }
}
