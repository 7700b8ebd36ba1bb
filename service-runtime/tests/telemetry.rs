//! The log filter a service gets from its environment, seen from outside: the
//! test binary runs itself again as a child with the environment under test
//! (`init` installs a process-wide subscriber, so each case needs a process)
//! and reads what the child printed.

use std::process::Command;

const CHILD: &str = "TELEMETRY_TEST_CHILD";

/// Runs only as the child: logs one line per level.
#[test]
fn child_logs_one_line_per_level() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    service_runtime::telemetry::init();
    // As the agent's own code logs (PREFECT_LOGGING_LEVEL=DEBUG is for it only).
    tracing::debug!(target: "dispatcher", "a debug line");
    tracing::debug!(target: "hyper", "a library's debug line");
    tracing::info!(target: "dispatcher", "an info line");
    tracing::warn!(target: "dispatcher", "a warning line");
    tracing::error!(target: "dispatcher", "an error line");
}

/// What the child prints with these variables set (and `RUST_LOG` unset
/// unless given).
fn child_output(env: &[(&str, &str)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_logs_one_line_per_level",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("RUST_LOG")
        .env_remove("PREFECT_LOGGING_LEVEL")
        .env_remove("NO_COLOR")
        .env_remove("LOG_FORMAT");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run the child");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn levels(output: &str) -> Vec<&'static str> {
    [
        ("a debug line", "debug"),
        ("an info line", "info"),
        ("a warning line", "warn"),
        ("an error line", "error"),
    ]
    .into_iter()
    .filter(|(line, _)| output.contains(line))
    .map(|(_, level)| level)
    .collect()
}

#[test]
fn prefect_logging_level_sets_the_filter_unless_rust_log_is_set() {
    assert_eq!(levels(&child_output(&[])), ["info", "warn", "error"]);
    assert_eq!(
        levels(&child_output(&[("PREFECT_LOGGING_LEVEL", "WARNING")])),
        ["warn", "error"]
    );
    let debug = child_output(&[("PREFECT_LOGGING_LEVEL", "DEBUG")]);
    assert_eq!(levels(&debug), ["debug", "info", "warn", "error"]);
    assert!(!debug.contains("a library's debug line"), "{debug}");
    assert_eq!(
        levels(&child_output(&[("PREFECT_LOGGING_LEVEL", "CRITICAL")])),
        ["error"]
    );
    assert_eq!(
        levels(&child_output(&[
            ("PREFECT_LOGGING_LEVEL", "DEBUG"),
            ("RUST_LOG", "error")
        ])),
        ["error"]
    );
    let unknown = child_output(&[("PREFECT_LOGGING_LEVEL", "LOUD")]);
    assert_eq!(levels(&unknown), ["info", "warn", "error"]);
    assert!(
        unknown.contains("PREFECT_LOGGING_LEVEL=\\\"LOUD\\\"")
            || unknown.contains("PREFECT_LOGGING_LEVEL=\"LOUD\""),
        "{unknown}"
    );
}

#[test]
fn output_that_is_not_a_terminal_has_no_colour_codes() {
    let output = child_output(&[("PREFECT_LOGGING_LEVEL", "DEBUG")]);
    assert!(output.contains("a debug line"), "{output}");
    assert!(!output.contains('\u{1b}'), "{output:?}");
}
