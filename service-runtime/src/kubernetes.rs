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

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let cases = [
            (
                "POST",
                "/apis/batch/v1/namespaces/flows/jobs",
                ("create", "jobs"),
            ),
            (
                "PATCH",
                "/apis/batch/v1/namespaces/flows/jobs/x",
                ("patch", "jobs"),
            ),
            (
                "GET",
                "/apis/batch/v1/namespaces/flows/jobs?watch=true&labelSelector=a",
                ("watch", "jobs"),
            ),
            ("GET", "/api/v1/pods?labelSelector=a", ("list", "pods")),
            (
                "GET",
                "/api/v1/namespaces/flows/pods/p-1/log?tailLines=5",
                ("get", "pods/log"),
            ),
            (
                "DELETE",
                "/apis/batch/v1/namespaces/flows/jobs/x",
                ("delete", "jobs"),
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/flows/leases/l",
                ("update", "leases"),
            ),
            ("GET", "/api/v1/namespaces/flows", ("get", "namespaces")),
        ];
        for (method, uri, (verb, resource)) in cases {
            let method: http::Method = method.parse().unwrap();
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(
                classify(&method, &uri),
                (verb, resource.to_string()),
                "{uri}"
            );
        }
    }

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

/// A client whose every request is counted and timed in `calls`.
pub async fn client_with_metrics(
    calls: crate::metrics::CallMetrics,
) -> Result<kube::Client, KubernetesConfigError> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some();
    if !in_cluster {
        tracing::warn!("Service host/port is not set. Using out of cluster configuration option.");
    }
    let config = kube::Config::infer()
        .await
        .map_err(|e| KubernetesConfigError::Config(e.to_string()))?;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&RequestMetricsLayer { calls }).build())
}

/// A tower layer recording each Kubernetes request in [`crate::metrics::CallMetrics`].
#[derive(Clone)]
pub struct RequestMetricsLayer {
    calls: crate::metrics::CallMetrics,
}

impl<S> tower::Layer<S> for RequestMetricsLayer {
    type Service = RequestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetrics {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// See [`RequestMetricsLayer`].
#[derive(Clone)]
pub struct RequestMetrics<S> {
    inner: S,
    calls: crate::metrics::CallMetrics,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for RequestMetrics<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        let calls = self.calls.clone();
        let started = std::time::Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let status = answer.as_ref().ok().map(|r| r.status().as_u16());
            calls.kubernetes(verb, &resource, status, started.elapsed());
            answer
        })
    }
}

/// The verb and resource (with subresource) of a Kubernetes API request.
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or(&[]);
    // `namespaces/<ns>/<resource>/...`; `namespaces/<name>` is the Namespace itself.
    let rest = if rest.len() >= 3 && rest[0] == "namespaces" {
        &rest[2..]
    } else {
        rest
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest
            .first()
            .map_or_else(|| "other".to_string(), |r| r.to_string()),
    };
    let named = rest.len() >= 2;
    let watch = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}
