//! Timestamps in the two wire formats Kubernetes uses: `Time` (RFC 3339, seconds, `Z`) and
//! `MicroTime` (six fractional digits).

use chrono::{DateTime, SecondsFormat, Utc};

/// Now as a `metav1.Time` string.
pub fn now_rfc3339() -> String {
    format_time(Utc::now())
}

/// Now as a `metav1.MicroTime` string.
pub fn now_micro() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Format a timestamp as `metav1.Time`.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parse a `Time`/`MicroTime` string.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
