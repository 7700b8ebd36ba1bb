//! The Kubernetes client: in-cluster config when the service runs in a pod,
//! else the kubeconfig named by `KUBECONFIG` (or `~/.kube/config`), with the
//! seed agent's warning when running out of cluster.

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesConfigError {
    #[error("no usable Kubernetes configuration (in-cluster or KUBECONFIG): {0}")]
    Config(String),
    #[error("building the Kubernetes client failed: {0}")]
    Client(#[from] kube::Error),
}

/// Builds a client the way a Kubernetes user expects.
pub async fn client() -> Result<kube::Client, KubernetesConfigError> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some();
    if !in_cluster {
        tracing::warn!("Service host/port is not set. Using out of cluster configuration option.");
    }
    let config = kube::Config::infer()
        .await
        .map_err(|e| KubernetesConfigError::Config(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

/// Deadline of one Kubernetes request (watches excepted: they are long-lived
/// and kube-runtime's watcher guards them with its own idle timeout). kube's
/// client has no read timeout by default, so every other call goes through
/// [`deadline`] or [`within`].
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs a Kubernetes call under [`CALL_TIMEOUT`].
pub async fn deadline<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    within(CALL_TIMEOUT, call).await
}

/// Runs a Kubernetes call under `limit`; no answer in time is an error like
/// any transport failure.
pub async fn within<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(
            format!("no answer from Kubernetes within {} s", limit.as_secs_f64()).into(),
        )),
    }
}

/// The API server answered 404: the object is not there.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_call_without_an_answer_in_time_fails() {
        let hung = std::future::pending::<Result<(), kube::Error>>();
        let error = within(Duration::from_millis(20), hung).await.unwrap_err();
        assert!(
            error.to_string().contains("no answer from Kubernetes"),
            "{error}"
        );
        assert!(!is_not_found(&error));
    }
}
