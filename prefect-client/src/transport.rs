//! HTTP plumbing shared by every endpoint: fixed headers and auth, the CSRF
//! token handshake, and the retry loop.
//!
//! The request body is serialised once by the caller and the same bytes are
//! re-sent on every attempt, so a retried state proposal carries the same
//! `transition_id` and the server's duplicate-transition rule makes it
//! idempotent.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::config::{ClientConfig, RetryPolicy, API_VERSION};
use crate::error::PrefectError;

const API_VERSION_HEADER: &str = "x-prefect-api-version";
const WORKER_NAME_HEADER: &str = "x-prefect-worker-name";
const CSRF_TOKEN_HEADER: &str = "prefect-csrf-token";
const CSRF_CLIENT_HEADER: &str = "prefect-csrf-client";
const MAINTENANCE_HEADER: &str = "prefect-maintenance";

/// A CSRF token is refreshed this long before the server says it expires.
const CSRF_EXPIRY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Statuses retried with backoff, as Prefect's own client does.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 502 | 503)
}

/// Transport failures worth another attempt: the request may not have
/// reached the server, or its answer was lost.
fn is_retryable_transport_error(err: &reqwest::Error) -> bool {
    err.is_timeout() || err.is_connect() || err.is_request() || err.is_body()
}

/// A successful (2xx) answer.
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

enum CsrfState {
    /// Not asked yet.
    Unknown,
    /// The server has CSRF protection off (or predates it), or the client
    /// was configured without CSRF support.
    Disabled,
    Active {
        token: String,
        expires: Option<DateTime<Utc>>,
    },
}

#[derive(Deserialize)]
struct CsrfTokenResponse {
    token: String,
    expiration: Option<DateTime<Utc>>,
}

pub(crate) struct Transport {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    csrf: Mutex<CsrfState>,
    /// Identifies this client to the CSRF token store
    /// (`GET /csrf-token?client=<id>`).
    csrf_client_id: Uuid,
    /// Strip URLs from transport errors when the base URL carries
    /// credentials.
    url_has_credentials: bool,
    observer: Option<std::sync::Arc<dyn crate::RequestObserver>>,
    request_timeout: Duration,
    /// The credential the event stream's `auth` message carries (the auth
    /// string, else the API key), as Prefect's own subscriber sends it.
    stream_token: Option<crate::config::Secret>,
}

impl Transport {
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub(crate) fn new(config: &ClientConfig) -> Result<Self, PrefectError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(API_VERSION_HEADER),
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(name) = &config.worker_name {
            let value = HeaderValue::from_str(name).map_err(|_| {
                PrefectError::Config(format!(
                    "worker name {name:?} cannot be sent as an HTTP header"
                ))
            })?;
            headers.insert(HeaderName::from_static(WORKER_NAME_HEADER), value);
        }
        if let Some(value) = authorization_header(config)? {
            headers.insert(AUTHORIZATION, value);
        }
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent())
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(25));
        if let Some(path) = &config.ssl_cert_file {
            builder = builder.tls_certs_only(certificate_authorities(path)?);
        }
        let http = builder
            .build()
            .map_err(|err| PrefectError::Config(format!("cannot build HTTP client: {err}")))?;
        Ok(Transport {
            http,
            base: config.api_url.clone(),
            retry: config.retry.clone(),
            csrf: Mutex::new(if config.csrf_support {
                CsrfState::Unknown
            } else {
                CsrfState::Disabled
            }),
            csrf_client_id: Uuid::new_v4(),
            url_has_credentials: crate::config::url_has_credentials(&config.api_url),
            observer: config.observer.clone(),
            request_timeout: config.request_timeout,
            stream_token: config
                .auth_string
                .clone()
                .or_else(|| config.api_key.clone()),
        })
    }

    /// The same connection pool, headers and base URL with another retry
    /// policy (and a CSRF token of its own).
    pub(crate) fn with_retry(&self, retry: RetryPolicy) -> Self {
        let disabled = self
            .csrf
            .try_lock()
            .is_ok_and(|state| matches!(*state, CsrfState::Disabled));
        let csrf = if disabled {
            CsrfState::Disabled
        } else {
            CsrfState::Unknown
        };
        Transport {
            http: self.http.clone(),
            base: self.base.clone(),
            retry,
            csrf: Mutex::new(csrf),
            csrf_client_id: Uuid::new_v4(),
            url_has_credentials: self.url_has_credentials,
            observer: self.observer.clone(),
            request_timeout: self.request_timeout,
            stream_token: self.stream_token.clone(),
        }
    }

    pub(crate) fn stream_token(&self) -> Option<&str> {
        self.stream_token.as_ref().map(|token| token.expose())
    }

    /// `GET <api_url>/<segments>` upgraded to a WebSocket speaking
    /// `protocol` (RFC 6455 handshake over this client's HTTP stack: same
    /// TLS roots, proxies and headers). Not retried.
    pub(crate) async fn upgrade_to_websocket(
        &self,
        segments: &[&str],
        protocol: &str,
    ) -> Result<reqwest::Upgraded, PrefectError> {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let response = self
            .http
            .get(self.url(segments))
            .header(reqwest::header::CONNECTION, "Upgrade")
            .header(reqwest::header::UPGRADE, "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", &key)
            .header("Sec-WebSocket-Protocol", protocol)
            .send()
            .await
            .map_err(|error| self.transport_error(error))?;
        let status = response.status();
        if status != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            let body = response.bytes().await.unwrap_or_default();
            return Err(PrefectError::from_response(status, &body));
        }
        let accept = response
            .headers()
            .get("Sec-WebSocket-Accept")
            .and_then(|value| value.to_str().ok());
        let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        if accept != Some(expected.as_str()) {
            return Err(PrefectError::Stream(
                "the server's WebSocket handshake answer does not match the request".into(),
            ));
        }
        response
            .upgrade()
            .await
            .map_err(|error| self.transport_error(error))
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.base
    }

    /// `<api_url>/<segment>/<segment>...`, each segment percent-encoded (a
    /// pool name with spaces or slashes stays one segment). An empty last
    /// segment yields a trailing slash, which collection endpoints such as
    /// `/flows/` need.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            // The base URL was checked to be http(s), so it can be a base.
            let mut path = url
                .path_segments_mut()
                .expect("http(s) URLs have path segments");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// Sends `body` (already-serialised JSON) and returns the 2xx answer, or
    /// the error after retries.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<ApiResponse, PrefectError> {
        let mutating = matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        let mut retries_used: u32 = 0;
        loop {
            let csrf_token = if mutating {
                self.csrf_token().await?
            } else {
                None
            };
            let request = self.request(&method, &url, body.as_ref(), csrf_token.as_deref());

            let started = std::time::Instant::now();
            let outcome = self.attempt(request).await;
            self.observe(&method, &url, &outcome, started.elapsed());
            let delay = match outcome {
                AttemptOutcome::Success(response) => return Ok(response),
                AttemptOutcome::TransportFailure(err) => {
                    if !is_retryable_transport_error(&err) || retries_used >= self.retry.max_retries
                    {
                        return Err(self.transport_error(err));
                    }
                    retries_used += 1;
                    tracing::debug!(
                        %method, path = url.path(), attempt = retries_used, error = %err.without_url(),
                        "Prefect API request failed in transport; retrying"
                    );
                    self.backoff(retries_used)
                }
                AttemptOutcome::ErrorStatus {
                    status,
                    body: error_body,
                    maintenance,
                    retry_after,
                } => {
                    let invalid_csrf = mutating
                        && status == StatusCode::FORBIDDEN
                        && String::from_utf8_lossy(&error_body).contains("Invalid CSRF token");
                    if !invalid_csrf && !is_retryable_status(status) {
                        return Err(PrefectError::from_response(status, &error_body));
                    }
                    if !maintenance {
                        if retries_used >= self.retry.max_retries {
                            return Err(PrefectError::from_response(status, &error_body));
                        }
                        retries_used += 1;
                    }
                    tracing::debug!(
                        %method, path = url.path(), status = status.as_u16(), maintenance,
                        attempt = retries_used, "Prefect API answered with a retryable status"
                    );
                    if invalid_csrf {
                        self.forget_csrf_token(csrf_token.as_ref()).await;
                        Duration::ZERO
                    } else {
                        match retry_after {
                            Some(wait) => self.stretch_retry_after(wait),
                            None => self.backoff(retries_used.max(1)),
                        }
                    }
                }
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt's request: the JSON `body` and the CSRF token, when there are.
    fn request(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&Bytes>,
        csrf_token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Some(token) = csrf_token {
            request = request
                .header(CSRF_TOKEN_HEADER, token)
                .header(CSRF_CLIENT_HEADER, self.csrf_client_id.to_string());
        }
        request
    }

    /// After the server refused the CSRF token `used`.
    async fn forget_csrf_token(&self, used: Option<&String>) {
        // Forget the token unless a concurrent request has
        // already replaced it with a fresh one.
        let mut state = self.csrf.lock().await;
        if matches!(&*state, CsrfState::Active { token, .. } if Some(token) == used) {
            *state = CsrfState::Unknown;
        }
    }

    fn observe(&self, method: &Method, url: &Url, outcome: &AttemptOutcome, took: Duration) {
        let Some(observer) = &self.observer else {
            return;
        };
        let status = match outcome {
            AttemptOutcome::Success(response) => Some(response.status.as_u16()),
            AttemptOutcome::ErrorStatus { status, .. } => Some(status.as_u16()),
            AttemptOutcome::TransportFailure(_) => None,
        };
        let endpoint = endpoint_template(self.base.path(), url.path());
        observer.observe(method.as_str(), &endpoint, status, took);
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> AttemptOutcome {
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return AttemptOutcome::TransportFailure(err),
        };
        let status = response.status();
        let maintenance = response
            .headers()
            .get(MAINTENANCE_HEADER)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(err) => return AttemptOutcome::TransportFailure(err),
        };
        if status.is_success() {
            AttemptOutcome::Success(ApiResponse { status, body })
        } else {
            AttemptOutcome::ErrorStatus {
                status,
                body,
                maintenance,
                retry_after,
            }
        }
    }

    /// The token to send with a mutating request, fetching one first if
    /// needed; `None` when the server does not use CSRF protection.
    async fn csrf_token(&self) -> Result<Option<String>, PrefectError> {
        let mut state = self.csrf.lock().await;
        if let CsrfState::Active { token, expires } = &*state {
            let fresh = expires.is_none_or(|at| Utc::now() + CSRF_EXPIRY_MARGIN < at);
            if fresh {
                return Ok(Some(token.clone()));
            }
        }
        if matches!(*state, CsrfState::Disabled) {
            return Ok(None);
        }
        let mut url = self.url(&["csrf-token"]);
        url.query_pairs_mut()
            .append_pair("client", &self.csrf_client_id.to_string());
        // GET is not mutating, so this does not come back here; boxed because
        // the future type is recursive all the same.
        match Box::pin(self.send(Method::GET, url, None)).await {
            Ok(response) => {
                let parsed: CsrfTokenResponse =
                    serde_json::from_slice(&response.body).map_err(|source| {
                        PrefectError::Decode {
                            endpoint: "GET /csrf-token".into(),
                            source,
                        }
                    })?;
                tracing::debug!("Prefect server requires CSRF tokens; obtained one");
                *state = CsrfState::Active {
                    token: parsed.token.clone(),
                    expires: parsed.expiration,
                };
                Ok(Some(parsed.token))
            }
            Err(PrefectError::NotFound { .. }) => {
                *state = CsrfState::Disabled;
                Ok(None)
            }
            Err(PrefectError::Client {
                status: 422,
                detail,
            }) if detail.contains("CSRF protection is disabled") => {
                tracing::debug!("Prefect server has CSRF protection disabled");
                *state = CsrfState::Disabled;
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Exponential backoff for retry number `retry` (1-based), with
    /// symmetric jitter.
    fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let nominal = self
            .retry
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.retry.max_delay);
        let jitter = self.retry.jitter_factor.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return nominal;
        }
        let factor = 1.0 + jitter * (2.0 * rand::random::<f64>() - 1.0);
        nominal.mul_f64(factor)
    }

    /// A server-requested wait, never shortened, stretched by up to the
    /// jitter factor so that many clients do not return at once.
    fn stretch_retry_after(&self, wait: Duration) -> Duration {
        let wait = wait.min(self.retry.max_retry_after);
        let jitter = self.retry.jitter_factor.clamp(0.0, 1.0);
        wait.mul_f64(1.0 + jitter * rand::random::<f64>())
    }

    fn transport_error(&self, err: reqwest::Error) -> PrefectError {
        if self.url_has_credentials {
            PrefectError::Transport(err.without_url())
        } else {
            PrefectError::Transport(err)
        }
    }
}

enum AttemptOutcome {
    Success(ApiResponse),
    TransportFailure(reqwest::Error),
    ErrorStatus {
        status: StatusCode,
        body: Bytes,
        maintenance: bool,
        retry_after: Option<Duration>,
    },
}

/// reqwest is built without a default rustls crypto provider (the
/// workspace standardises on `ring`); make `ring` the process default unless
/// something else already installed one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: one is in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The certificates of a PEM bundle (`PREFECT_API_SSL_CERT_FILE`); an
/// unreadable file or one without a certificate is a configuration error
/// naming the file.
fn certificate_authorities(
    path: &std::path::Path,
) -> Result<Vec<reqwest::Certificate>, PrefectError> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|err| {
        PrefectError::Config(format!(
            "cannot read PREFECT_API_SSL_CERT_FILE {shown}: {err}"
        ))
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
        PrefectError::Config(format!(
            "PREFECT_API_SSL_CERT_FILE {shown} is not a PEM bundle: {err}"
        ))
    })?;
    if certificates.is_empty() {
        return Err(PrefectError::Config(format!(
            "PREFECT_API_SSL_CERT_FILE {shown} holds no certificate"
        )));
    }
    Ok(certificates)
}

fn authorization_header(config: &ClientConfig) -> Result<Option<HeaderValue>, PrefectError> {
    use base64::Engine as _;
    let text = if let Some(auth_string) = &config.auth_string {
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth_string.expose());
        format!("Basic {encoded}")
    } else if let Some(key) = &config.api_key {
        format!("Bearer {}", key.expose())
    } else {
        return Ok(None);
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        PrefectError::Config("the API key contains characters not allowed in a header".into())
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// `Retry-After` as delay-seconds (integer or decimal) or an HTTP date.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds.max(0.0)).ok();
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 05:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 04:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = ClientConfig::new("http://127.0.0.1:1/api")
            .unwrap()
            .with_retry(RetryPolicy {
                max_retries: 5,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_millis(350),
                max_retry_after: Duration::from_secs(1),
                jitter_factor: 0.0,
            });
        let transport = Transport::new(&config).unwrap();
        assert_eq!(transport.backoff(1), Duration::from_millis(100));
        assert_eq!(transport.backoff(2), Duration::from_millis(200));
        assert_eq!(transport.backoff(3), Duration::from_millis(350));
        assert_eq!(
            transport.stretch_retry_after(Duration::from_secs(9)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn url_segments_are_encoded_and_collections_keep_trailing_slash() {
        let config = ClientConfig::new("http://127.0.0.1:4200/api/").unwrap();
        let transport = Transport::new(&config).unwrap();
        assert_eq!(
            transport.url(&["work_pools", "my pool/x"]).as_str(),
            "http://127.0.0.1:4200/api/work_pools/my%20pool%2Fx"
        );
        assert_eq!(
            transport.url(&["flows", ""]).as_str(),
            "http://127.0.0.1:4200/api/flows/"
        );
    }

    #[test]
    fn auth_string_takes_priority_over_api_key() {
        let config = ClientConfig::new("http://127.0.0.1:4200/api")
            .unwrap()
            .with_api_key("key")
            .with_auth_string("admin:pass");
        let header = authorization_header(&config).unwrap().unwrap();
        assert_eq!(header.to_str().unwrap(), "Basic YWRtaW46cGFzcw==");
        assert!(header.is_sensitive());
        let bearer = authorization_header(
            &ClientConfig::new("http://127.0.0.1:4200/api")
                .unwrap()
                .with_api_key("key"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(bearer.to_str().unwrap(), "Bearer key");
    }
}

/// The path below the API's base path, ids replaced by `{id}` and the names
/// of work pools and queues by `{name}` (bounded label values for metrics).
pub(crate) fn endpoint_template(base_path: &str, path: &str) -> String {
    let below = path
        .strip_prefix(base_path.trim_end_matches('/'))
        .unwrap_or(path);
    let mut previous = "";
    let mut parts = Vec::new();
    for segment in below.split('/').filter(|s| !s.is_empty()) {
        let part = if Uuid::parse_str(segment).is_ok() {
            "{id}"
        } else if matches!(previous, "work_pools" | "work_queues" | "name") {
            "{name}"
        } else {
            segment
        };
        parts.push(part);
        previous = segment;
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod endpoint_tests {
    use super::endpoint_template;

    #[test]
    fn ids_and_names_are_replaced() {
        let run = "0b0e4a6e-5d0a-4a35-9d8a-1f6f0d8c9b11";
        assert_eq!(
            endpoint_template("/api", &format!("/api/flow_runs/{run}/set_state")),
            "/flow_runs/{id}/set_state"
        );
        assert_eq!(
            endpoint_template("/api/", "/api/work_pools/my%20pool/get_scheduled_flow_runs"),
            "/work_pools/{name}/get_scheduled_flow_runs"
        );
        assert_eq!(endpoint_template("/api", "/api/logs/"), "/logs");
    }
}
