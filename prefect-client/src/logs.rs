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

    /// `POST /logs/filter`: every line of these flow runs stamped between
    /// `after` and `before` (inclusive), oldest first, read page by page. Used
    /// to find out whether a batch whose answer was lost was stored.
    pub async fn read_logs_between(
        &self,
        flow_run_ids: &[Uuid],
        after: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<Log>, PrefectError> {
        let mut logs = Vec::new();
        loop {
            let body = serde_json::json!({
                "logs": {
                    "flow_run_id": {"any_": flow_run_ids},
                    "timestamp": {"after_": after, "before_": before},
                },
                "sort": "TIMESTAMP_ASC",
                "limit": MAX_PAGE_SIZE,
                "offset": logs.len(),
            });
            let page: Vec<Log> = self
                .send_json(Method::POST, &["logs", "filter"], &body)
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
