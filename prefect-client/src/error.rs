//! Errors of the Prefect client, one variant per way a call can fail that a
//! caller may want to handle differently.

use reqwest::StatusCode;

/// A failed Prefect API call. Returned after the transport's own retries
/// are spent; [`PrefectError::is_retryable`] tells whether trying again
/// later could succeed.
#[derive(Debug, thiserror::Error)]
pub enum PrefectError {
    /// 404: the object (or the pool/queue named in the path) does not exist.
    #[error("not found: {detail}")]
    NotFound { detail: String },
    /// 409: an object with that name already exists.
    #[error("conflict: {detail}")]
    Conflict { detail: String },
    /// 401: missing or wrong credentials.
    #[error("unauthorized (HTTP {status}): {detail}")]
    Unauthorized { status: u16, detail: String },
    /// Any other 4xx (validation errors are 422, CSRF and reserved names 403).
    #[error("request refused (HTTP {status}): {detail}")]
    Client { status: u16, detail: String },
    /// 5xx, also after retries of 502/503 were spent.
    #[error("server error (HTTP {status}): {detail}")]
    Server { status: u16, detail: String },
    /// The request never got an HTTP answer (connect, timeout, reset).
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server answered 2xx with a body this client cannot read.
    #[error("cannot decode the response of {endpoint}: {source}")]
    Decode {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
    /// The event stream (`/events/out`) refused or broke off.
    #[error("event stream: {0}")]
    Stream(String),

    /// The client was configured with something unusable.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl PrefectError {
    /// True for failures that are expected to go away by themselves:
    /// transport errors, timeouts, 408, 429 and 5xx. A caller should back off
    /// and try again (keeping the same transition id), not give up on the
    /// work item.
    pub fn is_retryable(&self) -> bool {
        match self {
            PrefectError::Transport(_) | PrefectError::Stream(_) => true,
            PrefectError::Server { .. } => true,
            PrefectError::Client { status, .. } => *status == 408 || *status == 429,
            PrefectError::NotFound { .. }
            | PrefectError::Conflict { .. }
            | PrefectError::Unauthorized { .. }
            | PrefectError::Decode { .. }
            | PrefectError::Config(_) => false,
        }
    }

    /// The HTTP status of an error answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            PrefectError::NotFound { .. } => Some(404),
            PrefectError::Conflict { .. } => Some(409),
            PrefectError::Unauthorized { status, .. }
            | PrefectError::Client { status, .. }
            | PrefectError::Server { status, .. } => Some(*status),
            PrefectError::Transport(err) => err.status().map(|s| s.as_u16()),
            PrefectError::Decode { .. } | PrefectError::Stream(_) | PrefectError::Config(_) => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, PrefectError::NotFound { .. })
    }

    /// Builds the error for a non-2xx answer from its status and body.
    pub(crate) fn from_response(status: StatusCode, body: &[u8]) -> Self {
        let detail = detail_from_body(body);
        let code = status.as_u16();
        match code {
            404 => PrefectError::NotFound { detail },
            409 => PrefectError::Conflict { detail },
            401 => PrefectError::Unauthorized {
                status: code,
                detail,
            },
            400..=499 => PrefectError::Client {
                status: code,
                detail,
            },
            _ => PrefectError::Server {
                status: code,
                detail,
            },
        }
    }
}

const MAX_DETAIL_CHARS: usize = 2000;

/// Prefect puts the reason in `detail` (FastAPI; a list for 422 validation
/// errors) or `exception_message` (its own middlewares). Falls back to the
/// raw body, shortened.
fn detail_from_body(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let detail = parsed.as_ref().and_then(|value| {
        value
            .get("detail")
            .or_else(|| value.get("exception_message"))
            .map(|detail| match detail {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            })
    });
    let text = detail.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    if text.chars().count() > MAX_DETAIL_CHARS {
        let mut shortened: String = text.chars().take(MAX_DETAIL_CHARS).collect();
        shortened.push('…');
        shortened
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_variants() {
        let not_found = PrefectError::from_response(
            StatusCode::NOT_FOUND,
            br#"{"detail":"Flow run not found"}"#,
        );
        assert!(
            matches!(&not_found, PrefectError::NotFound { detail } if detail == "Flow run not found")
        );
        assert!(!not_found.is_retryable());

        let unauthorized = PrefectError::from_response(
            StatusCode::UNAUTHORIZED,
            br#"{"exception_message":"Unauthorized"}"#,
        );
        assert!(
            matches!(&unauthorized, PrefectError::Unauthorized { status: 401, detail } if detail == "Unauthorized")
        );

        let locked =
            PrefectError::from_response(StatusCode::SERVICE_UNAVAILABLE, b"database is locked");
        assert!(matches!(&locked, PrefectError::Server { status: 503, .. }));
        assert!(locked.is_retryable());

        let invalid = PrefectError::from_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"detail":[{"loc":["body","limit"],"msg":"too big"}]}"#,
        );
        match invalid {
            PrefectError::Client { status, detail } => {
                assert_eq!(status, 422);
                assert!(detail.contains("too big"));
            }
            other => panic!("expected Client, got {other:?}"),
        }
        let rate_limited = PrefectError::from_response(StatusCode::TOO_MANY_REQUESTS, b"");
        assert!(rate_limited.is_retryable());
    }
}
