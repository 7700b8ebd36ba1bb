//! Log set-up shared by every binary. The filter is `RUST_LOG` when set, else
//! `PREFECT_LOGGING_LEVEL` (Prefect's level names, as users of the Python
//! worker set it) mapped onto `tracing`'s levels (`DEBUG` for the agent's own
//! crates only, as Prefect's level is for its own loggers), else `info`.
//! `LOG_FORMAT=json` switches to one JSON object per line. Colours only on a
//! terminal (never in a log file or a container's log) and never with
//! `NO_COLOR`.
//!
//! Whatever the filter says, async-nats' connection module logs at most at
//! debug level: at trace level it prints each CONNECT it writes, password
//! and token included.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::{fmt, EnvFilter};

/// The one directive no filter can override.
const NATS_CONNECTION_CAP: &str = "async_nats::connection=debug";

/// Prefect's logging setting, read when `RUST_LOG` is not set.
pub const PREFECT_LOGGING_LEVEL: &str = "PREFECT_LOGGING_LEVEL";

/// The agent's own crates: `DEBUG` applies to them only, as Prefect's level
/// applies to its own `prefect` loggers (libraries stay at `info`; `RUST_LOG`
/// says anything finer).
const OWN_CRATES: [&str; 9] = [
    "poller",
    "dispatcher",
    "reporter",
    "service_runtime",
    "prefect_client",
    "job_manifest",
    "flow_run_proto",
    "prefect_k8s",
    "kube_emulator",
];

/// The `tracing` filter of a Prefect (Python) level name: `DEBUG`, `INFO`,
/// `WARNING` (or `WARN`), `ERROR`, `CRITICAL` (or `FATAL`), any case, or
/// Python's numbers (10, 20, 30, 40, 50). `None` for anything else.
pub fn tracing_filter(prefect_level: &str) -> Option<String> {
    let level = prefect_level.trim().to_ascii_uppercase();
    Some(match level.as_str() {
        "DEBUG" | "10" => {
            let own: Vec<String> = OWN_CRATES.iter().map(|c| format!("{c}=debug")).collect();
            format!("info,{}", own.join(","))
        }
        "INFO" | "20" => "info".into(),
        "WARNING" | "WARN" | "30" => "warn".into(),
        "ERROR" | "40" | "CRITICAL" | "FATAL" | "50" => "error".into(),
        _ => return None,
    })
}

/// The filter directives: `RUST_LOG` wins; else `PREFECT_LOGGING_LEVEL`
/// mapped; else `info`. The second value is a complaint about an unknown
/// `PREFECT_LOGGING_LEVEL`, to be logged once logging works.
pub fn filter_directives(
    rust_log: Option<&str>,
    prefect_level: Option<&str>,
) -> (String, Option<String>) {
    if let Some(directives) = rust_log.filter(|d| !d.trim().is_empty()) {
        return (directives.to_string(), None);
    }
    match prefect_level.filter(|l| !l.trim().is_empty()) {
        None => ("info".into(), None),
        Some(level) => match tracing_filter(level) {
            Some(mapped) => (mapped, None),
            None => (
                "info".into(),
                Some(format!(
                    "{PREFECT_LOGGING_LEVEL}={level:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL; logging at INFO"
                )),
            ),
        },
    }
}

/// Whether to colour the output: only on a terminal, and not with `NO_COLOR`.
fn use_colours() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// Installs the global subscriber. Safe to call twice (the second call is a
/// no-op), so tests that start several services in one process can call it.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let prefect_level = std::env::var(PREFECT_LOGGING_LEVEL).ok();
    let (directives, complaint) = filter_directives(rust_log.as_deref(), prefect_level.as_deref());
    let filter = capped(&directives);
    let json = std::env::var("LOG_FORMAT")
        .map(|f| f.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(use_colours());
    let installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let (Ok(()), Some(complaint)) = (installed, complaint) {
        tracing::warn!("{complaint}");
    }
}

/// The filter of this process's environment (`RUST_LOG`, else
/// `PREFECT_LOGGING_LEVEL`, else `info`), async-nats' connection module capped.
pub fn filter() -> EnvFilter {
    let rust_log = std::env::var("RUST_LOG").ok();
    let prefect_level = std::env::var(PREFECT_LOGGING_LEVEL).ok();
    capped(&filter_directives(rust_log.as_deref(), prefect_level.as_deref()).0)
}

/// `directives` without their own directives for async-nats' connection
/// module, plus the cap when they trace anything, that module included (added
/// to a filter that traces nothing, it would only make the module louder);
/// `info` when they do not parse.
fn capped(directives: &str) -> EnvFilter {
    let capped_target = NATS_CONNECTION_CAP.split('=').next().unwrap_or_default();
    let traces = EnvFilter::try_new(directives)
        .is_ok_and(|asked| asked.max_level_hint() == Some(LevelFilter::TRACE));
    let kept = directives
        .split(',')
        .filter(|directive| !directive.trim().starts_with(capped_target))
        .collect::<Vec<_>>()
        .join(",");
    let filter = EnvFilter::try_new(kept).unwrap_or_else(|_| EnvFilter::new("info"));
    if !traces {
        return filter;
    }
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
    fn no_filter_opens_the_nats_connection_module_to_trace() {
        let explicit = capped("warn,async_nats::connection=trace");
        assert_eq!(explicit.max_level_hint(), Some(LevelFilter::DEBUG));
        assert_eq!(
            capped("info").max_level_hint(),
            Some(LevelFilter::INFO),
            "no louder than asked"
        );
        assert_eq!(capped("trace").max_level_hint(), Some(LevelFilter::TRACE));
        let parent = capped("async_nats=trace");
        assert_eq!(
            parent.max_level_hint(),
            Some(LevelFilter::TRACE),
            "other modules may trace"
        );
    }

    #[test]
    fn prefect_levels_map_onto_tracing_levels() {
        for (prefect, tracing) in [
            ("info", "info"),
            ("WARNING", "warn"),
            ("Warn", "warn"),
            ("ERROR", "error"),
            ("CRITICAL", "error"),
            ("30", "warn"),
        ] {
            assert_eq!(
                tracing_filter(prefect).as_deref(),
                Some(tracing),
                "{prefect}"
            );
        }
        for debug in ["DEBUG", "10"] {
            let filter = tracing_filter(debug).unwrap();
            assert!(filter.starts_with("info,"), "{filter}");
            assert!(filter.contains("dispatcher=debug"), "{filter}");
            assert!(EnvFilter::try_new(&filter).is_ok(), "{filter}");
        }
        assert_eq!(tracing_filter("LOUD"), None);
    }

    #[test]
    fn rust_log_wins_then_the_prefect_level_then_info() {
        assert_eq!(
            filter_directives(Some("dispatcher=trace"), Some("ERROR")),
            ("dispatcher=trace".to_string(), None)
        );
        assert_eq!(
            filter_directives(None, Some("WARNING")),
            ("warn".to_string(), None)
        );
        assert_eq!(filter_directives(Some(" "), Some("ERROR")).0, "error");
        assert_eq!(filter_directives(None, None), ("info".to_string(), None));
        let (directives, complaint) = filter_directives(None, Some("LOUD"));
        assert_eq!(directives, "info");
        assert!(complaint
            .unwrap()
            .contains("PREFECT_LOGGING_LEVEL=\"LOUD\""));
    }
}
