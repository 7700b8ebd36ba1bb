//! How a service reaches the Prefect API, named as Prefect users name it:
//! `PREFECT_API_URL`, `PREFECT_API_KEY` (the seed agent's `-t/--token` and
//! `PREFECT__CLOUD__AGENT__AUTH_TOKEN` are accepted too) and
//! `PREFECT_API_AUTH_STRING` for a server protected by basic auth.
//! Secrets never reach `Debug` output or a log line.

use prefect_client::Secret;

/// Prefect connection flags with environment fallbacks; the credentials are
/// [`Secret`]s, so `Debug` never shows them.
#[derive(Clone, Debug, clap::Args)]
pub struct PrefectOptions {
    /// The Prefect API, e.g. http://127.0.0.1:4200/api.
    // hide_env_values: `--help` never shows the value (a URL may carry credentials).
    #[arg(
        short = 'a',
        long = "api",
        env = "PREFECT_API_URL",
        hide_env_values = true
    )]
    pub api_url: String,
    /// API key, sent as `Authorization: Bearer`.
    #[arg(
        short = 't',
        long = "api-key",
        visible_alias = "token",
        env = "PREFECT_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<Secret>,
    /// `user:password` for a server with `PREFECT_SERVER_API_AUTH_STRING`,
    /// sent as `Authorization: Basic`.
    #[arg(
        long = "api-auth-string",
        env = "PREFECT_API_AUTH_STRING",
        hide_env_values = true
    )]
    pub auth_string: Option<Secret>,
}

/// The seed agent's token variable, read when no API key was given.
pub const LEGACY_TOKEN_ENV: &str = "PREFECT__CLOUD__AGENT__AUTH_TOKEN";

impl PrefectOptions {
    /// The API key from the flag, `PREFECT_API_KEY`, or the legacy variable.
    pub fn effective_api_key(&self) -> Option<Secret> {
        self.api_key
            .clone()
            .or_else(|| std::env::var(LEGACY_TOKEN_ENV).ok().map(Secret::from))
            .filter(|k| !k.expose().is_empty())
    }

    /// The auth string, unless empty.
    pub fn effective_auth_string(&self) -> Option<Secret> {
        self.auth_string
            .clone()
            .filter(|auth| !auth.expose().is_empty())
    }

    /// Options for an unauthenticated server (tests, local dev).
    pub fn plain(api_url: impl Into<String>) -> Self {
        PrefectOptions {
            api_url: api_url.into(),
            api_key: None,
            auth_string: None,
        }
    }
}

/// Builds the Prefect client these options describe.
pub fn client(
    options: &PrefectOptions,
    worker_name: &str,
) -> Result<prefect_client::PrefectClient, prefect_client::PrefectError> {
    prefect_client::PrefectClient::new(config(options, worker_name)?)
}

/// [`client`], its every request counted and timed in `calls`.
pub fn client_with_metrics(
    options: &PrefectOptions,
    worker_name: &str,
    calls: &crate::metrics::CallMetrics,
) -> Result<prefect_client::PrefectClient, prefect_client::PrefectError> {
    let observer: std::sync::Arc<dyn prefect_client::RequestObserver> =
        std::sync::Arc::new(calls.clone());
    prefect_client::PrefectClient::new(config(options, worker_name)?.with_observer(observer))
}

impl prefect_client::RequestObserver for crate::metrics::CallMetrics {
    fn observe(
        &self,
        method: &str,
        endpoint: &str,
        status: Option<u16>,
        took: std::time::Duration,
    ) {
        self.prefect(method, endpoint, status, took);
    }
}

fn config(
    options: &PrefectOptions,
    worker_name: &str,
) -> Result<prefect_client::ClientConfig, prefect_client::PrefectError> {
    let mut config = prefect_client::ClientConfig::new(&options.api_url)?
        .with_env_settings()?
        .with_worker_name(worker_name)
        .with_product_token(format!("prefect-k8s/{}", env!("CARGO_PKG_VERSION")));
    if let Some(key) = options.effective_api_key() {
        config = config.with_api_key(key);
    }
    if let Some(auth) = options.effective_auth_string() {
        config = config.with_auth_string(auth);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let options = PrefectOptions {
            api_url: "http://x/api".into(),
            api_key: Some("pnu_secret_key".into()),
            auth_string: Some("admin:hunter2".into()),
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("pnu_secret_key"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }
}
