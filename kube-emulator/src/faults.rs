//! Fault injection switchable at run time through `/admin/faults`: added latency, error
//! responses (429 with Retry-After, 500, 503) at a rate or for the next N requests, optionally
//! limited to one verb or resource.

use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The active fault settings (JSON body of `PUT /admin/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultSettings {
    /// Extra latency before every matching request.
    pub latency_ms: u64,
    /// When above 0, the latency applies only to this many more matching requests.
    pub latency_next: u32,
    /// The latency comes after the request was served (the change is committed, the
    /// answer is late), not before.
    pub latency_after_commit: bool,
    /// Probability (0..1) that a matching request fails with `error_code`.
    pub error_rate: f64,
    /// Fail this many matching requests unconditionally.
    pub fail_next: u32,
    /// 429, 500 or 503.
    pub error_code: u16,
    /// `Retry-After` seconds for 429/503.
    pub retry_after_seconds: u64,
    /// Only requests with this verb (`get`, `list`, `watch`, `create`, ...).
    pub verb: Option<String>,
    /// Only requests for this resource plural.
    pub resource: Option<String>,
    /// Failing requests lose their connection (reset mid-response) instead of getting a Status.
    pub connection_reset: bool,
    /// A watch resuming from an expired resourceVersion gets 200 and an immediate close without
    /// the ERROR 410 event (the behaviour of kubernetes/kubernetes PR #137307's bug).
    pub silent_watch_expiry: bool,
}

/// What fault injection decided for one request.
#[derive(Debug, Default)]
pub struct FaultDecision {
    /// Added latency.
    pub latency: Option<Duration>,
    /// An error response to return instead of serving.
    pub error: Option<ApiError>,
    /// Reset the connection instead of answering.
    pub reset: bool,
    /// Serve first, then wait `latency` before answering.
    pub latency_after_commit: bool,
}

/// Shared fault state.
#[derive(Default)]
pub struct Faults {
    settings: Mutex<FaultSettings>,
}

impl Faults {
    /// Replace the settings.
    pub fn set(&self, settings: FaultSettings) {
        *self.settings.lock() = settings;
    }

    /// Current settings.
    pub fn get(&self) -> FaultSettings {
        self.settings.lock().clone()
    }

    /// Decide the fate of a request: latency to add and maybe an error or a reset.
    pub fn check(&self, verb: &str, resource: Option<&str>) -> FaultDecision {
        let mut settings = self.settings.lock();
        if settings.verb.as_deref().is_some_and(|v| v != verb)
            || settings
                .resource
                .as_deref()
                .is_some_and(|r| Some(r) != resource)
        {
            return FaultDecision::default();
        }
        let latency = take_latency(&mut settings);
        let latency_after_commit = settings.latency_after_commit;
        let fail = if settings.fail_next > 0 {
            settings.fail_next -= 1;
            true
        } else {
            settings.error_rate > 0.0 && rand::rng().random::<f64>() < settings.error_rate
        };
        if fail && settings.connection_reset {
            return FaultDecision {
                latency,
                error: None,
                reset: true,
                latency_after_commit,
            };
        }
        let error = fail.then(|| match settings.error_code {
            500 => ApiError::internal("injected fault"),
            503 => {
                let mut e = ApiError::service_unavailable(
                    "the server is currently unable to handle the request",
                );
                e.retry_after_seconds = Some(settings.retry_after_seconds.max(1));
                e
            }
            _ => ApiError::too_many_requests(settings.retry_after_seconds.max(1)),
        });
        FaultDecision {
            latency,
            error,
            reset: false,
            latency_after_commit,
        }
    }
}

/// The latency for one matching request, counting down `latency_next`.
fn take_latency(settings: &mut FaultSettings) -> Option<Duration> {
    let latency = Duration::from_millis(settings.latency_ms);
    if latency.is_zero() {
        return None;
    }
    if settings.latency_next > 0 {
        settings.latency_next -= 1;
        if settings.latency_next == 0 {
            settings.latency_ms = 0;
        }
    }
    Some(latency)
}
