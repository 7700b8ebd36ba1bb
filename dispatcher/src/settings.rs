//! The Prefect settings flow pods inherit from the dispatcher, as they inherit
//! them from the Python worker: prefect 3.9.1's `BaseJobConfiguration`
//! puts every Prefect setting set in the worker's process
//! (`get_current_settings().to_environment_variables(exclude_unset=True)`)
//! first in each flow container's environment, where the `env` job variable
//! may override it. The dispatcher does the same with its own `PREFECT_*`
//! environment, except:
//!
//! - credentials: `PREFECT_API_KEY` and `PREFECT_API_AUTH_STRING` reach pods
//!   only as secretKeyRef (`--api-key-secret`, `--api-auth-string-secret`),
//!   and any variable whose name suggests a secret (`KEY`, `TOKEN`, `SECRET`,
//!   `PASSWORD`, `AUTH`, `CREDENTIAL`, `HEADER`) or whose value is a URL carrying
//!   credentials (e.g. a database URL with a password) is not forwarded at all;
//! - `PREFECT_API_URL`, which pods get from `--flow-api-url` (or the
//!   dispatcher's URL);
//! - `PREFECT_K8S_*`, the agent's own flags, and `PREFECT__*`, per-run context
//!   (`PREFECT__FLOW_RUN_ID`, ...), which are not Prefect settings.
//!
//! Unlike Python, any `PREFECT_*` name is forwarded, not only names of known
//! settings (Prefect ignores names it does not know), and settings from a
//! Prefect profile file are not read.

/// Substrings (upper case) of names never forwarded: they suggest a secret.
/// `HEADER`: `PREFECT_CLIENT_CUSTOM_HEADERS` carries `Authorization` in
/// Prefect's own example.
const SECRET_HINTS: [&str; 7] = [
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "AUTH",
    "CREDENTIAL",
    "HEADER",
];

/// Settings forwarded by their own rules (see the module doc).
const FORWARDED_OTHERWISE: [&str; 3] = [
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
];

/// Why a `PREFECT_*` variable is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotForwarded {
    /// Its name or value suggests a secret.
    Secret,
    /// Forwarded by its own rule, or not a Prefect setting.
    NotASetting,
    /// Empty.
    Empty,
}

/// Whether the dispatcher's variable `name=value` goes to flow pods.
pub fn verdict(name: &str, value: &str) -> Result<(), NotForwarded> {
    let upper = name.to_ascii_uppercase();
    let setting = upper.starts_with("PREFECT_")
        && !upper.starts_with("PREFECT__")
        && !upper.starts_with("PREFECT_K8S_");
    if !setting {
        return Err(NotForwarded::NotASetting);
    }
    if SECRET_HINTS.iter().any(|hint| upper.contains(hint)) || carries_credentials(value) {
        return Err(NotForwarded::Secret);
    }
    if FORWARDED_OTHERWISE.contains(&upper.as_str()) {
        return Err(NotForwarded::NotASetting);
    }
    if value.trim().is_empty() {
        return Err(NotForwarded::Empty);
    }
    Ok(())
}

/// A URL with a user, password or query (where tokens hide).
fn carries_credentials(value: &str) -> bool {
    value.contains("://")
        && prefect_client::Url::parse(value.trim())
            .is_ok_and(|url| prefect_client::url_has_credentials(&url))
}

/// The settings to forward, sorted by name.
pub fn to_forward(variables: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut forwarded: Vec<(String, String)> = variables
        .into_iter()
        .filter(|(name, value)| verdict(name, value).is_ok())
        .collect();
    forwarded.sort();
    forwarded
}

/// The settings of this process to forward (variables that are not UTF-8 are
/// skipped). Logs the names forwarded and those held back as secrets (never a
/// value).
pub fn from_process_environment() -> Vec<(String, String)> {
    let variables: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    let secrets: Vec<&str> = variables
        .iter()
        .filter(|(name, value)| verdict(name, value) == Err(NotForwarded::Secret))
        .map(|(name, _)| name.as_str())
        .collect();
    let forwarded = to_forward(variables.iter().cloned());
    let names: Vec<&str> = forwarded.iter().map(|(name, _)| name.as_str()).collect();
    tracing::info!(
        forwarded = ?names,
        held_back_as_secrets = ?secrets,
        "Prefect settings flow pods inherit from the dispatcher"
    );
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn prefect_settings_are_forwarded_sorted() {
        let forwarded = to_forward(pairs(&[
            ("PREFECT_LOGGING_LEVEL", "DEBUG"),
            ("PREFECT_API_REQUEST_TIMEOUT", "90"),
            ("PREFECT_CLIENT_MAX_RETRIES", "3"),
            ("PREFECT_API_SSL_CERT_FILE", "/etc/prefect/ca.pem"),
            ("HOME", "/root"),
        ]));
        assert_eq!(
            forwarded,
            pairs(&[
                ("PREFECT_API_REQUEST_TIMEOUT", "90"),
                ("PREFECT_API_SSL_CERT_FILE", "/etc/prefect/ca.pem"),
                ("PREFECT_CLIENT_MAX_RETRIES", "3"),
                ("PREFECT_LOGGING_LEVEL", "DEBUG"),
            ])
        );
    }

    #[test]
    fn secrets_are_never_forwarded() {
        for (name, value) in [
            ("PREFECT_API_KEY", "pnu_x"),
            ("PREFECT_API_AUTH_STRING", "admin:pass"),
            ("PREFECT_SERVER_API_AUTH_STRING", "admin:pass"),
            ("PREFECT_CLOUD_API_TOKEN", "t"),
            ("PREFECT_SOME_SECRET", "s"),
            ("PREFECT_DB_PASSWORD", "p"),
            ("PREFECT_INTEGRATIONS_AWS_CREDENTIALS", "c"),
            (
                "PREFECT_CLIENT_CUSTOM_HEADERS",
                r#"{"Authorization": "Bearer token"}"#,
            ),
            ("prefect_api_key", "lower case too"),
            (
                "PREFECT_API_DATABASE_CONNECTION_URL",
                "postgresql+asyncpg://prefect:hunter2@db:5432/prefect",
            ),
            (
                "PREFECT_WEBHOOK_URL",
                "https://hooks.example.com/x?token=abc",
            ),
        ] {
            assert_eq!(verdict(name, value), Err(NotForwarded::Secret), "{name}");
        }
        assert_eq!(
            verdict(
                "PREFECT_API_DATABASE_CONNECTION_URL",
                "sqlite+aiosqlite:///x.db"
            ),
            Ok(())
        );
    }

    #[test]
    fn the_agents_own_flags_and_run_context_are_not_settings() {
        for name in [
            "PREFECT_API_URL",
            "PREFECT_K8S_WORK_POOL",
            "PREFECT_K8S_FLOW_API_URL",
            "PREFECT__FLOW_RUN_ID",
            "PREFECT__CLOUD__AGENT__AUTH_TOKEN",
            "PREFECTX",
            "NATS_URL",
        ] {
            assert_eq!(verdict(name, "x"), Err(NotForwarded::NotASetting), "{name}");
        }
        assert_eq!(
            verdict("PREFECT_LOGGING_LEVEL", " "),
            Err(NotForwarded::Empty)
        );
    }
}
