//! Flow-run logs (`POST /logs/`), shown in the run's log view in the UI.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::error::PrefectError;
use crate::work_pools::MAX_PAGE_SIZE;

/// Python logging levels, which Prefect uses.
pub mod log_level {
    pub const DEBUG: u32 = 10;
    pub const INFO: u32 = 20;
    pub const WARNING: u32 = 30;
    pub const ERROR: u32 = 40;
    pub const CRITICAL: u32 = 50;
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogCreate {
    /// Logger name, e.g. `prefect.flow_runs.worker`.
    pub name: String,
    /// See [`log_level`].
    pub level: u32,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_run_id: Option<Uuid>,
}

impl LogCreate {
    /// A line for `flow_run_id`, stamped now.
    pub fn for_flow_run(
        flow_run_id: Uuid,
        name: impl Into<String>,
        level: u32,
        message: impl Into<String>,
    ) -> Self {
        LogCreate {
            name: name.into(),
            level,
            message: message.into(),
            timestamp: Utc::now(),
            flow_run_id: Some(flow_run_id),
        }
    }
}

/// A stored log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Log {
    pub id: Uuid,
    pub name: String,
    pub level: u32,
    pub message: String,
    pub timestamp: DateTime<Utc>,
    #[serde(default)]
    pub flow_run_id: Option<Uuid>,
}

impl PrefectClient {
    /// `POST /logs/` with a batch of lines (201). An empty batch sends
    /// nothing. A retry after a lost answer may store a batch twice.
    pub async fn create_logs(&self, logs: &[LogCreate]) -> Result<(), PrefectError> {
        if logs.is_empty() {
            return Ok(());
        }
        self.send_json_no_content(Method::POST, &["logs", ""], logs)
            .await
    }

    /// `POST /logs/filter`: every line of these flow runs stamped within
    /// `[after, before]` (to the microsecond, as Prefect stores them), each
    /// once, in no particular order. Used to find out whether a batch whose
    /// answer was lost was stored.
    ///
    /// Prefect sorts logs by timestamp alone, so offset pages over lines that
    /// share a timestamp (Kubernetes Events are stamped to the second) are not
    /// stable on PostgreSQL: a line can be skipped at a page boundary. The
    /// read goes by timestamp instead: a full page holds every line stamped
    /// before its last timestamp, and the next page starts at that timestamp.
    /// A page all of one timestamp is split by runs; a single run's single
    /// microsecond holding more than a page of lines falls back to offsets.
    pub async fn read_logs_between(
        &self,
        flow_run_ids: &[Uuid],
        after: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<Log>, PrefectError> {
        let (Some(after), Some(before)) = (micros(after, false), micros(before, true)) else {
            return Err(PrefectError::Config(format!(
                "log window {after} to {before} is out of range"
            )));
        };
        let mut found = std::collections::HashMap::new();
        let mut parts = vec![(flow_run_ids.to_vec(), after, before)];
        while let Some((runs, after, before)) = parts.pop() {
            if runs.is_empty() || after > before {
                continue;
            }
            let page = self.log_page(&runs, after, before, 0).await?;
            let full = page.len() >= MAX_PAGE_SIZE;
            let next = if full {
                next_log_reads(&runs, &page, before)
            } else {
                None
            };
            match next {
                Some(Next::After { last, reads }) => {
                    let earlier = page.into_iter().filter(|log| log.timestamp < last);
                    found.extend(earlier.map(|log| (log.id, log)));
                    parts.extend(reads);
                }
                Some(Next::Split(reads)) => parts.extend(reads),
                None if !full => found.extend(page.into_iter().map(|log| (log.id, log))),
                None => {
                    // One run, one microsecond, more than a page of lines.
                    let at = page[0].timestamp;
                    let all = self.log_pages(&runs, at, page).await?;
                    found.extend(all.into_iter().map(|log| (log.id, log)));
                    let rest = at + chrono::TimeDelta::microseconds(1);
                    parts.push((runs, rest, before));
                }
            }
        }
        Ok(found.into_values().collect())
    }

    /// One page of the runs' lines stamped within `[after, before]`.
    async fn log_page(
        &self,
        flow_run_ids: &[Uuid],
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        offset: usize,
    ) -> Result<Vec<Log>, PrefectError> {
        let body = serde_json::json!({
            "logs": {
                "flow_run_id": {"any_": flow_run_ids},
                "timestamp": {"after_": after, "before_": before},
            },
            "sort": "TIMESTAMP_ASC",
            "limit": MAX_PAGE_SIZE,
            "offset": offset,
        });
        self.send_json(Method::POST, &["logs", "filter"], &body)
            .await
    }

    /// The last resort: offset pages after `first` (a full page), of one
    /// run's lines stamped at exactly `at`.
    async fn log_pages(
        &self,
        flow_run_ids: &[Uuid],
        at: DateTime<Utc>,
        first: Vec<Log>,
    ) -> Result<Vec<Log>, PrefectError> {
        tracing::warn!(
            lines = first.len(),
            "more than a page of log lines share one timestamp; reading them by offset"
        );
        let mut logs = first;
        loop {
            let page = self.log_page(flow_run_ids, at, at, logs.len()).await?;
            let full = page.len() >= MAX_PAGE_SIZE;
            logs.extend(page);
            if !full {
                return Ok(logs);
            }
        }
    }

    /// `POST /logs/filter`: the first `limit` (at most [`MAX_PAGE_SIZE`])
    /// lines of a flow run after `offset`, oldest first.
    pub async fn read_flow_run_logs(
        &self,
        flow_run_id: Uuid,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Log>, PrefectError> {
        let body = serde_json::json!({
            "logs": {"flow_run_id": {"any_": [flow_run_id]}},
            "sort": "TIMESTAMP_ASC",
            "limit": limit.min(MAX_PAGE_SIZE),
            "offset": offset,
        });
        self.send_json(Method::POST, &["logs", "filter"], &body)
            .await
    }
}

/// A log read's runs and inclusive time window.
type LogRead = (Vec<Uuid>, DateTime<Utc>, DateTime<Utc>);

/// `at` to the microsecond (Prefect's precision), rounded inwards: up for a
/// window's start, down for its end.
fn micros(at: DateTime<Utc>, is_end: bool) -> Option<DateTime<Utc>> {
    let whole = at.timestamp_micros();
    let partial = !at.timestamp_subsec_nanos().is_multiple_of(1_000);
    let rounded = if partial && !is_end { whole + 1 } else { whole };
    DateTime::from_timestamp_micros(rounded)
}

/// What is left to read after a full page of `runs`' lines up to `before`.
#[derive(Debug, PartialEq)]
enum Next {
    /// The page holds every line stamped before `last` (its latest
    /// timestamp); the rest starts at `last`.
    After {
        last: DateTime<Utc>,
        reads: [LogRead; 1],
    },
    /// The page is all of one timestamp: read it again by halves of the runs.
    Split([LogRead; 2]),
}

/// `None` when a full page cannot be narrowed (one run, one timestamp).
fn next_log_reads(runs: &[Uuid], page: &[Log], before: DateTime<Utc>) -> Option<Next> {
    let first = page.iter().map(|log| log.timestamp).min()?;
    let last = page.iter().map(|log| log.timestamp).max()?;
    if first < last {
        return Some(Next::After {
            last,
            reads: [(runs.to_vec(), last, before)],
        });
    }
    if runs.len() < 2 {
        return None;
    }
    let (left, right) = runs.split_at(runs.len() / 2);
    Some(Next::Split([
        (left.to_vec(), first, before),
        (right.to_vec(), first, before),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_800_000_000_000_000 + micros).unwrap()
    }

    #[test]
    fn a_window_is_rounded_inwards_to_microseconds() {
        let start = at(5) + chrono::TimeDelta::nanoseconds(1);
        assert_eq!(micros(start, false), Some(at(6)));
        assert_eq!(micros(start, true), Some(at(5)));
        assert_eq!(micros(at(5), false), Some(at(5)));
    }

    fn log(micros: i64) -> Log {
        Log {
            id: Uuid::new_v4(),
            name: "n".into(),
            level: 20,
            message: "m".into(),
            timestamp: at(micros),
            flow_run_id: None,
        }
    }

    #[test]
    fn a_full_page_is_followed_from_its_last_timestamp_or_split_by_runs() {
        let runs = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let page = [log(3), log(5), log(5)];
        assert_eq!(
            next_log_reads(&runs, &page, at(9)),
            Some(Next::After {
                last: at(5),
                reads: [(runs.to_vec(), at(5), at(9))]
            })
        );
        // All of one timestamp: the runs are split, from that timestamp on.
        let tied = [log(5), log(5)];
        let Some(Next::Split([(left, a1, b1), (right, a2, _)])) =
            next_log_reads(&runs, &tied, at(9))
        else {
            panic!("split by runs");
        };
        assert_eq!(
            (left, right.len(), a1, b1, a2),
            (vec![runs[0]], 2, at(5), at(9), at(5))
        );
        assert_eq!(next_log_reads(&runs[..1], &tied, at(9)), None);
    }
}
