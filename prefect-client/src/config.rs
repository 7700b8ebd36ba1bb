//! Client configuration: where the Prefect API is, how to authenticate, and
//! how patient to be. Secrets are wrapped in [`Secret`] so that neither
//! `Debug` output nor log lines can reveal them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::error::PrefectError;

/// Prefect REST API version this client speaks (`X-PREFECT-API-VERSION`).
pub const API_VERSION: &str = "0.8.4";

/// Prefect release whose client semantics we claim in `User-Agent`. The
/// server parses the version from the User-Agent and applies current-client
/// orchestration rules to it.
pub const PREFECT_CLIENT_VERSION: &str = "3.9.1";

/// A credential: the one type of every credential field of the agent (API
/// keys, auth strings, passwords). `Debug` prints `Secret(***)` and
/// `Display` `***`, so the value reaches a string only through
/// [`Secret::expose`]. Parses from a flag or an environment variable as is.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for building an `Authorization` header or handing the
    /// credential to a child process. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// How transient failures are retried.
///
/// A request is retried on HTTP 408/429/502/503 and on transport errors
/// (connect failures, timeouts, resets), up to `max_retries` extra attempts.
/// The delay is the server's `Retry-After` when it sends one (never less,
/// plus up to `jitter_factor` more), else `base_delay * 2^(attempt-1)`
/// capped at `max_delay` with a symmetric jitter of `jitter_factor`.
/// Responses carrying `Prefect-Maintenance: true` are retried without
/// consuming the budget.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Upper bound applied to a server-sent `Retry-After`.
    pub max_retry_after: Duration,
    /// 0.0 disables jitter; Prefect's own client uses 0.2.
    pub jitter_factor: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            jitter_factor: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (useful when the caller has its own loop).
    pub fn no_retries() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }
}

/// Everything [`crate::PrefectClient::new`] needs.
///
/// `Debug` is hand-written: credentials print as `***`, and a password in
/// the URL's userinfo is masked too.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL of the API including the `/api` path,
    /// e.g. `http://127.0.0.1:4200/api`.
    pub api_url: Url,
    /// Sent as `Authorization: Bearer <key>` (Prefect Cloud style) unless
    /// `auth_string` is set.
    pub api_key: Option<Secret>,
    /// `user:password` for a self-hosted server with
    /// `PREFECT_SERVER_API_AUTH_STRING`; sent as `Authorization: Basic
    /// base64(auth_string)`. Takes priority over `api_key`.
    pub auth_string: Option<Secret>,
    /// Timeout of one HTTP attempt (connect + response).
    pub request_timeout: Duration,
    /// Timeout for establishing the TCP connection alone.
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Sent as `X-Prefect-Worker-Name` (attribution only).
    pub worker_name: Option<String>,
    /// Product token appended to the User-Agent, e.g. `prefect-k8s/0.1.0`.
    pub product_token: Option<String>,
    /// Fetch and send CSRF tokens on mutating requests when the server asks
    /// for them. The client switches this off by itself on the first
    /// "CSRF protection is disabled." answer.
    pub csrf_support: bool,
    /// Told about every HTTP request (for metrics).
    pub observer: Option<std::sync::Arc<dyn crate::RequestObserver>>,
    /// A PEM bundle of the certificate authorities the API's TLS certificate
    /// is checked against (`PREFECT_API_SSL_CERT_FILE`). As in Prefect's own
    /// client, it replaces the system's roots; `None` uses the system's.
    pub ssl_cert_file: Option<PathBuf>,
}

/// Told about every HTTP request the client makes: method, endpoint (the path
/// below the API URL with ids replaced by `{id}` and pool or queue names by
/// `{name}`), status (`None` when no answer came) and how long it took.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, method: &str, endpoint: &str, status: Option<u16>, took: Duration);
}

impl ClientConfig {
    /// Configuration with defaults: no credentials, 30 s per attempt, 5
    /// retries, CSRF support on.
    pub fn new(api_url: &str) -> Result<Self, PrefectError> {
        Ok(ClientConfig {
            api_url: parse_api_url(api_url)?,
            api_key: None,
            auth_string: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            worker_name: None,
            product_token: None,
            csrf_support: true,
            observer: None,
            ssl_cert_file: None,
        })
    }

    /// Reads `PREFECT_API_URL` (required), `PREFECT_API_KEY`,
    /// `PREFECT_API_AUTH_STRING` and the settings of
    /// [`ClientConfig::with_env_settings`] from the environment.
    pub fn from_env() -> Result<Self, PrefectError> {
        let url = std::env::var("PREFECT_API_URL")
            .map_err(|_| PrefectError::Config("PREFECT_API_URL is not set".into()))?;
        let mut config = ClientConfig::new(&url)?;
        config.api_key = non_empty_env("PREFECT_API_KEY").map(Secret::from);
        config.auth_string = non_empty_env("PREFECT_API_AUTH_STRING").map(Secret::from);
        config.with_env_settings()
    }

    /// Applies the Prefect client settings a user may have set in the
    /// environment: `PREFECT_API_REQUEST_TIMEOUT` (seconds),
    /// `PREFECT_CLIENT_MAX_RETRIES` and `PREFECT_API_SSL_CERT_FILE` (a PEM
    /// bundle of the CAs to trust for the API; read when the client is built).
    pub fn with_env_settings(mut self) -> Result<Self, PrefectError> {
        let config = &mut self;
        if let Some(path) = non_empty_env("PREFECT_API_SSL_CERT_FILE") {
            config.ssl_cert_file = Some(PathBuf::from(path));
        }
        if let Some(timeout) = non_empty_env("PREFECT_API_REQUEST_TIMEOUT") {
            let seconds: f64 = timeout.parse().map_err(|_| {
                PrefectError::Config(format!(
                    "PREFECT_API_REQUEST_TIMEOUT is not a number of seconds: {timeout:?}"
                ))
            })?;
            config.request_timeout = Duration::try_from_secs_f64(seconds).map_err(|_| {
                PrefectError::Config(format!(
                    "PREFECT_API_REQUEST_TIMEOUT out of range: {timeout:?}"
                ))
            })?;
        }
        if let Some(retries) = non_empty_env("PREFECT_CLIENT_MAX_RETRIES") {
            config.retry.max_retries = retries.parse().map_err(|_| {
                PrefectError::Config(format!(
                    "PREFECT_CLIENT_MAX_RETRIES is not a count: {retries:?}"
                ))
            })?;
        }
        Ok(self)
    }

    pub fn with_api_key(mut self, key: impl Into<Secret>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    pub fn with_auth_string(mut self, auth_string: impl Into<Secret>) -> Self {
        self.auth_string = Some(auth_string.into());
        self
    }

    pub fn with_worker_name(mut self, name: impl Into<String>) -> Self {
        self.worker_name = Some(name.into());
        self
    }

    pub fn with_product_token(mut self, token: impl Into<String>) -> Self {
        self.product_token = Some(token.into());
        self
    }

    pub fn with_observer(mut self, observer: std::sync::Arc<dyn crate::RequestObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Trusts only the certificate authorities in this PEM bundle for the
    /// API's TLS (what `PREFECT_API_SSL_CERT_FILE` sets).
    pub fn with_ssl_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_cert_file = Some(path.into());
        self
    }

    /// `prefect/3.9.1 (API 0.8.4)` followed by the product token, if any.
    pub fn user_agent(&self) -> String {
        let base = format!("prefect/{PREFECT_CLIENT_VERSION} (API {API_VERSION})");
        match &self.product_token {
            Some(token) => format!("{base} {token}"),
            None => base,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &redacted_url(&self.api_url))
            .field("api_key", &self.api_key)
            .field("auth_string", &self.auth_string)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .field("worker_name", &self.worker_name)
            .field("product_token", &self.product_token)
            .field("csrf_support", &self.csrf_support)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .finish()
    }
}

/// The URL as text with any userinfo password replaced by `***`.
/// The URL as it may appear in a log line or an error: userinfo (user and
/// password, either may be a token) and every query value masked.
pub fn redacted_url(url: &Url) -> String {
    let mut masked = url.clone();
    if !masked.username().is_empty() {
        // Cannot fail: a URL with userinfo has a host.
        let _ = masked.set_username("***");
    }
    if masked.password().is_some() {
        let _ = masked.set_password(Some("***"));
    }
    if masked.query().is_some() {
        let keys: Vec<String> = masked.query_pairs().map(|(k, _)| k.into_owned()).collect();
        masked
            .query_pairs_mut()
            .clear()
            .extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
    }
    masked.to_string()
}

/// Whether the URL carries credentials (userinfo or a query).
pub fn url_has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some() || url.query().is_some()
}

fn parse_api_url(text: &str) -> Result<Url, PrefectError> {
    let mut url = Url::parse(text.trim())
        .map_err(|err| PrefectError::Config(format!("invalid Prefect API URL: {err}")))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
        return Err(PrefectError::Config(
            "the Prefect API URL must be an http(s) URL such as http://127.0.0.1:4200/api".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(PrefectError::Config(
            "the Prefect API URL must not have a query or fragment".into(),
        ));
    }
    // Normalise away a trailing slash so paths can be appended segment-wise.
    if url.path().ends_with('/') && url.path() != "/" {
        let trimmed = url.path().trim_end_matches('/').to_owned();
        url.set_path(&trimmed);
    }
    Ok(url)
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_logs_never_show_credentials() {
        let url =
            Url::parse("https://tok3n:s3cret@prefect.example.com/api?api_key=k3y&x=1").unwrap();
        let shown = redacted_url(&url);
        for secret in ["tok3n", "s3cret", "k3y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("prefect.example.com/api"), "{shown}");
        assert!(url_has_credentials(&url));
        let plain = Url::parse("http://127.0.0.1:4200/api").unwrap();
        assert_eq!(redacted_url(&plain), "http://127.0.0.1:4200/api");
        assert!(!url_has_credentials(&plain));
    }

    #[test]
    fn debug_of_config_never_prints_credentials() {
        let config = ClientConfig::new("http://user:url-password@127.0.0.1:4200/api")
            .unwrap()
            .with_api_key("pnu_supersecretkey")
            .with_auth_string("admin:hunter2");
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("pnu_supersecretkey"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("url-password"), "{printed}");
        assert!(printed.contains("Secret(***)"), "{printed}");
    }

    #[test]
    fn trailing_slash_is_normalised() {
        let config = ClientConfig::new("http://127.0.0.1:4200/api/").unwrap();
        assert_eq!(config.api_url.as_str(), "http://127.0.0.1:4200/api");
    }

    #[test]
    fn non_http_url_is_refused() {
        assert!(ClientConfig::new("ftp://example/api").is_err());
        assert!(ClientConfig::new("not a url").is_err());
    }

    #[test]
    fn user_agent_carries_prefect_version_and_product() {
        let config = ClientConfig::new("http://127.0.0.1:4200/api")
            .unwrap()
            .with_product_token("prefect-k8s/0.1.0");
        assert_eq!(
            config.user_agent(),
            "prefect/3.9.1 (API 0.8.4) prefect-k8s/0.1.0"
        );
    }
}
