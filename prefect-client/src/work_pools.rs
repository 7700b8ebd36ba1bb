//! Work pools, their queues, worker heartbeats and the scheduled-run poll
//! (`/work_pools/...`).

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::error::PrefectError;
use crate::flow_runs::FlowRun;

/// The server's maximum (and default) page size for list endpoints
/// (`PREFECT_SERVER_API_DEFAULT_LIMIT`); larger limits are refused with 422.
pub const MAX_PAGE_SIZE: usize = 200;

/// A work pool as the server returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkPool {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `{job_configuration, variables}`; `{}` when never set.
    #[serde(default)]
    pub base_job_template: serde_json::Value,
    #[serde(default)]
    pub is_paused: bool,
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    /// `READY`, `NOT_READY` or `PAUSED`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub default_queue_id: Option<Uuid>,
}

/// Body of `POST /work_pools/`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkPoolCreate {
    pub name: String,
    #[serde(rename = "type")]
    pub pool_type: String,
    pub base_job_template: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
}

impl WorkPoolCreate {
    pub fn new(
        name: impl Into<String>,
        pool_type: impl Into<String>,
        base_job_template: serde_json::Value,
    ) -> Self {
        WorkPoolCreate {
            name: name.into(),
            pool_type: pool_type.into(),
            base_job_template,
            description: None,
            concurrency_limit: None,
        }
    }
}

/// A work queue of a pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkQueue {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub work_pool_id: Option<Uuid>,
    #[serde(default)]
    pub work_pool_name: Option<String>,
    #[serde(default)]
    pub is_paused: bool,
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub status: Option<String>,
}

/// Body of `POST /work_pools/{pool}/queues`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorkQueueCreate {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

/// One entry of the scheduled-runs poll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerFlowRunResponse {
    pub work_pool_id: Uuid,
    pub work_queue_id: Uuid,
    pub flow_run: FlowRun,
}

fn is_empty_template(template: &serde_json::Value) -> bool {
    match template {
        serde_json::Value::Null => true,
        serde_json::Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

#[derive(Serialize)]
struct ScheduledFlowRunsBody<'a> {
    work_queue_names: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_after: Option<String>,
    scheduled_before: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
}

#[derive(Serialize)]
struct HeartbeatBody<'a> {
    name: &'a str,
    heartbeat_interval_seconds: u32,
}

#[derive(Serialize)]
struct BaseJobTemplateUpdate<'a> {
    base_job_template: &'a serde_json::Value,
}

impl PrefectClient {
    /// `GET /work_pools/{name}`; [`PrefectError::NotFound`] if there is none.
    pub async fn read_work_pool(&self, name: &str) -> Result<WorkPool, PrefectError> {
        self.get_json(&["work_pools", name]).await
    }

    /// `POST /work_pools/`. [`PrefectError::Conflict`] if the name is taken
    /// (re-read it then); names starting with "prefect" are refused (403).
    pub async fn create_work_pool(&self, pool: &WorkPoolCreate) -> Result<WorkPool, PrefectError> {
        self.send_json(Method::POST, &["work_pools", ""], pool)
            .await
    }

    /// Makes sure the pool `pool.name` exists, as the Python worker's sync
    /// does: read it; if missing, create it from `pool` (a 409 from a
    /// concurrent creator means it exists now: read it again); if it exists
    /// with an empty base job template, set `pool.base_job_template`. An
    /// existing pool's type and non-empty template are left alone (compare
    /// `pool_type` yourself to warn about a mismatch).
    pub async fn ensure_work_pool(&self, pool: &WorkPoolCreate) -> Result<WorkPool, PrefectError> {
        let existing = match self.read_work_pool(&pool.name).await {
            Ok(existing) => existing,
            Err(PrefectError::NotFound { .. }) => match self.create_work_pool(pool).await {
                Ok(created) => return Ok(created),
                Err(PrefectError::Conflict { .. }) => self.read_work_pool(&pool.name).await?,
                Err(err) => return Err(err),
            },
            Err(err) => return Err(err),
        };
        if is_empty_template(&existing.base_job_template)
            && !is_empty_template(&pool.base_job_template)
        {
            self.update_work_pool_base_job_template(&pool.name, &pool.base_job_template)
                .await?;
            return self.read_work_pool(&pool.name).await;
        }
        Ok(existing)
    }

    /// `PATCH /work_pools/{name}` with only `base_job_template` (204).
    pub async fn update_work_pool_base_job_template(
        &self,
        name: &str,
        base_job_template: &serde_json::Value,
    ) -> Result<(), PrefectError> {
        self.send_json_no_content(
            Method::PATCH,
            &["work_pools", name],
            &BaseJobTemplateUpdate { base_job_template },
        )
        .await
    }

    /// `POST /work_pools/{pool}/workers/heartbeat` `{name,
    /// heartbeat_interval_seconds}` (204). Marks the worker online and the
    /// pool ready. [`PrefectError::NotFound`] if the pool does not exist.
    pub async fn send_worker_heartbeat(
        &self,
        pool: &str,
        worker_name: &str,
        heartbeat_interval_seconds: u32,
    ) -> Result<(), PrefectError> {
        self.send_json_no_content(
            Method::POST,
            &["work_pools", pool, "workers", "heartbeat"],
            &HeartbeatBody {
                name: worker_name,
                heartbeat_interval_seconds,
            },
        )
        .await
    }

    /// `POST /work_pools/{pool}/get_scheduled_flow_runs`: runs in a
    /// SCHEDULED-type state due before `scheduled_before`, in the named
    /// queues (empty = all queues of the pool), ordered by queue priority
    /// then time, capped by pool/queue concurrency slots and `limit` (at
    /// most [`MAX_PAGE_SIZE`]; `None` = server default 200).
    ///
    /// Does not claim anything: concurrent pollers get the same runs. Also
    /// marks the queues and their deployments as polled (READY in the UI).
    /// [`PrefectError::NotFound`] for an unknown pool or queue name.
    pub async fn get_scheduled_flow_runs(
        &self,
        pool: &str,
        work_queue_names: &[String],
        scheduled_before: DateTime<Utc>,
        limit: Option<usize>,
    ) -> Result<Vec<WorkerFlowRunResponse>, PrefectError> {
        self.get_scheduled_flow_runs_between(pool, work_queue_names, None, scheduled_before, limit)
            .await
    }

    /// `POST /work_pools/{pool}/get_scheduled_flow_runs` for the runs
    /// scheduled from `scheduled_after` (inclusive, when given) to
    /// `scheduled_before` (inclusive). Ordered as the server orders them:
    /// by work queue priority, then scheduled time.
    pub async fn get_scheduled_flow_runs_between(
        &self,
        pool: &str,
        work_queue_names: &[String],
        scheduled_after: Option<DateTime<Utc>>,
        scheduled_before: DateTime<Utc>,
        limit: Option<usize>,
    ) -> Result<Vec<WorkerFlowRunResponse>, PrefectError> {
        let timestamp = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let body = ScheduledFlowRunsBody {
            work_queue_names,
            scheduled_after: scheduled_after.map(timestamp),
            scheduled_before: timestamp(scheduled_before),
            limit: limit.map(|limit| limit.min(MAX_PAGE_SIZE)),
        };
        self.send_json(
            Method::POST,
            &["work_pools", pool, "get_scheduled_flow_runs"],
            &body,
        )
        .await
    }

    /// `POST /work_pools/{pool}/queues`.
    pub async fn create_work_queue(
        &self,
        pool: &str,
        queue: &WorkQueueCreate,
    ) -> Result<WorkQueue, PrefectError> {
        self.send_json(Method::POST, &["work_pools", pool, "queues"], queue)
            .await
    }

    /// `GET /work_pools/{pool}/queues/{name}`.
    pub async fn read_work_queue(&self, pool: &str, name: &str) -> Result<WorkQueue, PrefectError> {
        self.get_json(&["work_pools", pool, "queues", name]).await
    }
}
