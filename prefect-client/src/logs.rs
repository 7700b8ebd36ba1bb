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
    /// stable on PostgreSQL: a line can be skipped at a page boundary. A full
    /// page is therefore never followed by the next offset; the read is split
    /// instead, the time window in halves, then the runs, until each part fits
    /// in one page. Only a single run's single microsecond holding more than a
    /// page of lines falls back to offset pages.
    pub async fn read_logs_between(
        &self,
        flow_run_ids: &[Uuid],
        after: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<Log>, PrefectError> {
        let (Some(after), Some(before)) = (micros(after, false), micros(before, true)) else {
            return Ok(Vec::new());
        };
        let mut found = std::collections::HashMap::new();
        let mut parts = vec![(flow_run_ids.to_vec(), after, before)];
        while let Some((runs, after, before)) = parts.pop() {
            if runs.is_empty() || after > before {
                continue;
            }
            let page = self.log_page(&runs, after, before, 0).await?;
            if page.len() < MAX_PAGE_SIZE {
                found.extend(page.into_iter().map(|log| (log.id, log)));
            } else if let Some(halves) = split_log_read(&runs, after, before) {
                parts.extend(halves);
            } else {
                let all = self.log_pages(&runs, after, before, page).await?;
                found.extend(all.into_iter().map(|log| (log.id, log)));
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

    /// The last resort: offset pages after `first` (a full page), for a read
    /// that cannot be split (one run, one microsecond).
    async fn log_pages(
        &self,
        flow_run_ids: &[Uuid],
        after: DateTime<Utc>,
        before: DateTime<Utc>,
        first: Vec<Log>,
    ) -> Result<Vec<Log>, PrefectError> {
        tracing::warn!(
            lines = first.len(),
            "more than a page of log lines share one timestamp; reading them by offset"
        );
        let mut logs = first;
        loop {
            let page = self
                .log_page(flow_run_ids, after, before, logs.len())
                .await?;
            let full = page.len() == MAX_PAGE_SIZE;
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

/// Two reads that together cover `[after, before]` of `runs` exactly: the
/// window's halves, or when it is one microsecond, the runs' halves; `None`
/// for one run at one microsecond.
fn split_log_read(
    runs: &[Uuid],
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Option<[LogRead; 2]> {
    let width = (before - after).num_microseconds()?;
    if width >= 1 {
        let middle = after + chrono::TimeDelta::microseconds(width / 2);
        let next = middle + chrono::TimeDelta::microseconds(1);
        return Some([
            (runs.to_vec(), after, middle),
            (runs.to_vec(), next, before),
        ]);
    }
    if runs.len() < 2 {
        return None;
    }
    let (left, right) = runs.split_at(runs.len() / 2);
    Some([
        (left.to_vec(), after, before),
        (right.to_vec(), after, before),
    ])
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

    #[test]
    fn a_split_covers_the_read_exactly_and_always_shrinks() {
        let runs = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        let [(r1, a1, b1), (r2, a2, b2)] = split_log_read(&runs, at(0), at(9)).unwrap();
        assert_eq!((r1.len(), a1, b1), (3, at(0), at(4)));
        assert_eq!((r2.len(), a2, b2), (3, at(5), at(9)));
        let [(_, a1, b1), (_, a2, b2)] = split_log_read(&runs, at(0), at(1)).unwrap();
        assert_eq!((a1, b1, a2, b2), (at(0), at(0), at(1), at(1)));
        // One microsecond: the runs are split instead.
        let [(r1, a1, b1), (r2, _, _)] = split_log_read(&runs, at(7), at(7)).unwrap();
        assert_eq!((r1, r2.len(), a1, b1), (vec![runs[0]], 2, at(7), at(7)));
        assert!(split_log_read(&runs[..1], at(7), at(7)).is_none());
    }
}
