//! A crashed run's pod log. Before proposing `Crashed`, the evaluator reads the last
//! lines (`--crash-log-lines`, 500) of the first log in the crash report's plan that is
//! not blank ([`CrashReport::log_plan`]: the flow container `prefect-job` first and
//! sidecars only when it printed nothing; for a restarted container, the previous
//! instance first). The end of it goes into the state message; once Prefect accepted the
//! state, every line goes to the run's logs (logger `prefect_k8s.reporter.pod_logs`,
//! level ERROR, as the Python observer forwards a crashed pod's log), stamped with the
//! time the container wrote it. The lines are the user's output: they go to Prefect and
//! never into the reporter's own log.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use prefect_client::{LogCreate, PrefectClient};
use service_runtime::kubernetes::deadline;
use uuid::Uuid;

use crate::decide::LogSource;
use crate::{CrashReport, Timestamp};

/// Logger name of forwarded pod log lines.
pub const POD_LOG_LOGGER: &str = "prefect_k8s.reporter.pod_logs";
/// Python's `logging.ERROR`.
const ERROR_LEVEL: u32 = 40;
/// Bytes read at most per log. The kubelet applies it from the start of the selected
/// tail, so 500 lines of more than 1 MiB lose their newest part (rare: 2 KiB a line).
const READ_BYTES: i64 = 1024 * 1024;
/// A longer line is cut (Prefect refuses records over 1 MB).
const LINE_CHARS: usize = 16 * 1024;
/// Records per `create_logs` call.
const RECORDS_PER_CALL: usize = 200;

/// The smallest step of a Prefect log time.
fn tick() -> chrono::TimeDelta {
    chrono::TimeDelta::microseconds(1)
}

/// One line of a container log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the container wrote it (the kubelet's timestamp).
    pub at: Option<Timestamp>,
    pub text: String,
}

/// The log read for a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashLog {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub previous: bool,
    pub lines: Vec<LogLine>,
}

impl CrashLog {
    /// The lines as text (for the state message's tail).
    pub fn text(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(|line| line.text.as_str()).collect();
        lines.join("\n")
    }

    /// The header and the lines as Prefect log records of `flow_run_id`.
    pub fn records(&self, flow_run_id: Uuid) -> Vec<LogCreate> {
        let first_at = self.lines.iter().find_map(|line| line.at);
        let instance = if self.previous {
            " (its previous instance, which failed)"
        } else {
            ""
        };
        let header = format!(
            "Last {} lines of container \"{}\"{instance} of pod {}/{}, read after the flow run \
             crashed:",
            self.lines.len(),
            self.container,
            self.namespace,
            self.pod
        );
        let mut header = LogCreate::for_flow_run(flow_run_id, POD_LOG_LOGGER, ERROR_LEVEL, header);
        if let Some(at) = first_at {
            header.timestamp = at - tick();
        }
        // Strictly increasing times (Prefect keeps microseconds and sorts by time): the
        // lines show in the order the container wrote them, lines without a time after
        // the one before.
        let mut last = header.timestamp;
        let lines = self.lines.iter().map(|line| {
            let at = line.at.filter(|at| *at > last).unwrap_or(last + tick());
            last = at;
            let mut record =
                LogCreate::for_flow_run(flow_run_id, POD_LOG_LOGGER, ERROR_LEVEL, &line.text);
            record.timestamp = at;
            record
        });
        std::iter::once(header).chain(lines).collect()
    }
}

/// The crash's log: the first non-blank log of the report's plan, its last `lines` lines;
/// `None` when `lines` is 0, no container ever ran, or nothing could be read.
pub async fn read_crash_log(
    kube: &kube::Client,
    report: &CrashReport,
    lines: u32,
) -> Option<CrashLog> {
    if lines == 0 {
        return None;
    }
    for source in report.log_plan() {
        let Some(text) = read(kube, &source, lines).await else {
            continue;
        };
        let parsed = parse_lines(&text);
        if parsed.iter().any(|line| !line.text.trim().is_empty()) {
            return Some(CrashLog {
                namespace: source.namespace.to_owned(),
                pod: source.pod.to_owned(),
                container: source.container.to_owned(),
                previous: source.previous,
                lines: parsed,
            });
        }
    }
    None
}

async fn read(kube: &kube::Client, source: &LogSource<'_>, lines: u32) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(kube.clone(), source.namespace);
    let params = LogParams {
        container: Some(source.container.to_owned()),
        previous: source.previous,
        tail_lines: Some(i64::from(lines)),
        limit_bytes: Some(READ_BYTES),
        timestamps: true,
        ..LogParams::default()
    };
    match deadline(api.logs(source.pod, &params)).await {
        Ok(text) => Some(text),
        Err(error) => {
            tracing::debug!(%error, pod = source.pod, container = source.container,
                previous = source.previous, "reading the pod log failed");
            None
        }
    }
}

/// Splits a log read with `timestamps=true` (`<RFC 3339> <text>` per line) into lines.
/// A line without a readable time keeps its whole text.
pub fn parse_lines(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|line| {
            let parsed = line.split_once(' ').and_then(|(time, rest)| {
                let at = chrono::DateTime::parse_from_rfc3339(time).ok()?;
                Some((at.with_timezone(&chrono::Utc), rest))
            });
            let (at, text) = match parsed {
                Some((at, rest)) => (Some(at), rest),
                None => (None, line),
            };
            LogLine {
                at,
                text: cut(text),
            }
        })
        .collect()
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(LINE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Sends the log to the run's logs. A failure is logged and not retried: the state
/// message already holds the end of the log.
pub async fn forward(prefect: &PrefectClient, flow_run_id: Uuid, log: &CrashLog) {
    for chunk in log.records(flow_run_id).chunks(RECORDS_PER_CALL) {
        if let Err(error) = prefect.create_logs(chunk).await {
            tracing::warn!(%error, %flow_run_id, "sending the crashed pod's log to Prefect failed");
            return;
        }
    }
    tracing::info!(%flow_run_id, lines = log.lines.len(), container = %log.container,
        "sent the crashed pod's log to the run's logs");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: u32) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(&format!("2026-06-15T04:15:{second:02}.5Z"))
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn timestamped_lines_are_split_and_odd_lines_kept_whole() {
        let text = "2026-06-15T04:15:07.500000000Z Traceback (most recent call last):\n\
                    2026-06-15T04:15:08.500000000Z ModuleNotFoundError: No module named 'flows'\n\
                    no time here\n";
        let lines = parse_lines(text);
        assert_eq!(
            lines,
            vec![
                LogLine {
                    at: Some(at(7)),
                    text: "Traceback (most recent call last):".into()
                },
                LogLine {
                    at: Some(at(8)),
                    text: "ModuleNotFoundError: No module named 'flows'".into()
                },
                LogLine {
                    at: None,
                    text: "no time here".into()
                },
            ]
        );
        let long = format!("2026-06-15T04:15:07.5Z {}", "x".repeat(LINE_CHARS + 10));
        assert_eq!(parse_lines(&long)[0].text.chars().count(), LINE_CHARS + 1);
    }

    #[test]
    fn records_start_with_a_header_and_keep_the_container_times() {
        let log = CrashLog {
            namespace: "prefect".into(),
            pod: "etl-1-abcde".into(),
            container: "prefect-job".into(),
            previous: true,
            lines: parse_lines("2026-06-15T04:15:07.5Z boom\nafter"),
        };
        let run = Uuid::from_u128(3);
        let records = log.records(run);
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[0].message,
            "Last 2 lines of container \"prefect-job\" (its previous instance, which failed) of \
             pod prefect/etl-1-abcde, read after the flow run crashed:"
        );
        assert!(records[0].timestamp < records[1].timestamp, "header first");
        assert_eq!(records[1].timestamp, at(7));
        assert!(records[2].timestamp > records[1].timestamp);
        assert!(records
            .iter()
            .all(|r| r.name == POD_LOG_LOGGER && r.level == 40 && r.flow_run_id == Some(run)));
        assert_eq!(log.text(), "boom\nafter");
    }
}
