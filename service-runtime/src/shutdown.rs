//! The shutdown trigger: SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
//!
//! Services take the trigger as a `CancellationToken` so tests can cancel
//! them without signals; the binaries connect the token to [`signal`].

use tokio_util::sync::CancellationToken;

/// Completes when the process receives SIGTERM or SIGINT, and says which.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("received Ctrl-C, shutting down");
    }
}

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn token_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}
