//! gRPC health (`grpc.health.v1.Health`), what the Deployments' probes call.
//! A service reports SERVING once its connections are up and NOT_SERVING as
//! the first step of shutdown, so Kubernetes stops routing to it.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service name reported next to the overall ("") status.
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    /// Serves the health service on `addr` until `shutdown` is cancelled.
    /// Returns the handle to flip the status.
    pub async fn serve(
        addr: SocketAddr,
        service: &'static str,
        shutdown: CancellationToken,
    ) -> Result<Health, std::io::Error> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
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
        Ok(Health { reporter, service })
    }

    pub async fn serving(&self) {
        self.reporter
            .set_service_status(self.service, ServingStatus::Serving)
            .await;
        self.reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
    }

    pub async fn not_serving(&self) {
        self.reporter
            .set_service_status(self.service, ServingStatus::NotServing)
            .await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}
