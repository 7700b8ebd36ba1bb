//! Log set-up shared by every binary: `RUST_LOG` filters (default `info`),
//! `LOG_FORMAT=json` switches to one JSON object per line.
//!
//! Whatever `RUST_LOG` says, async-nats' connection module logs at most at
//! debug level: at trace level it prints each CONNECT it writes, password
//! and token included.

use tracing_subscriber::{fmt, EnvFilter};

/// The one directive a `RUST_LOG` cannot override.
const NATS_CONNECTION_CAP: &str = "async_nats::connection=debug";

/// Installs the global subscriber. Safe to call twice (the second call is a
/// no-op), so tests that start several services in one process can call it.
pub fn init() {
    let json = std::env::var("LOG_FORMAT")
        .map(|f| f.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let builder = fmt().with_env_filter(filter()).with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `RUST_LOG` (default `info`) with async-nats' connection module capped.
pub fn filter() -> EnvFilter {
    filter_of(std::env::var(EnvFilter::DEFAULT_ENV).ok().as_deref())
}

/// `spec` without its own directives for async-nats' connection module, plus
/// the cap.
fn filter_of(spec: Option<&str>) -> EnvFilter {
    let capped_target = NATS_CONNECTION_CAP.split('=').next().unwrap_or_default();
    let kept = spec.map(|spec| {
        spec.split(',')
            .filter(|directive| !directive.trim().starts_with(capped_target))
            .collect::<Vec<_>>()
            .join(",")
    });
    let filter = kept
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    filter.add_directive(
        NATS_CONNECTION_CAP
            .parse()
            .expect("a constant directive parses"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn rust_log_cannot_open_the_nats_connection_module_to_trace() {
        let explicit = filter_of(Some("warn,async_nats::connection=trace"));
        assert_eq!(explicit.max_level_hint(), Some(LevelFilter::DEBUG));
        assert_eq!(filter_of(None).max_level_hint(), Some(LevelFilter::DEBUG));
        let parent = filter_of(Some("async_nats=trace"));
        assert_eq!(
            parent.max_level_hint(),
            Some(LevelFilter::TRACE),
            "other modules may trace"
        );
    }
}
