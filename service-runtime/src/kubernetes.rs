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
