//! Flow runs (`/flow_runs/...`, `/flow_run_states/`): reading and filtering
//! them, proposing states, recording the infrastructure pid and labels, and
//! creating runs from a deployment.
//!
//! # Claiming a run safely
//!
//! The server ABORTs a `Pending` proposal only when the run is already
//! Pending, Running, Cancelling or Cancelled; it ACCEPTs one on a Completed,
//! Failed or Crashed run (see [`crate::states`]). A dispatcher working from
//! a poll result of unknown age must therefore:
//! 1. [`PrefectClient::read_flow_run`] (or [`PrefectClient::read_flow_runs`]
//!    by ids, batched) and continue only if the run is still SCHEDULED with
//!    the state id it was published with;
//! 2. propose [`StateCreate::pending_claim`] with
//!    the submission key's transition id through [`PrefectClient::set_flow_run_state`];
//! 3. act on [`OrchestrationResult::claim_outcome`].

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::client::{decode, encode, PrefectClient};
use crate::error::PrefectError;
use crate::states::{OrchestrationResult, State, StateCreate, StateType};
use crate::work_pools::MAX_PAGE_SIZE;

/// A flow run as the server returns it (fields this project uses; the rest
/// are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRun {
    pub id: Uuid,
    #[serde(default)]
    pub name: String,
    pub flow_id: Uuid,
    #[serde(default)]
    pub deployment_id: Option<Uuid>,
    #[serde(default)]
    pub deployment_version: Option<String>,
    #[serde(default)]
    pub flow_version: Option<String>,
    /// `null` in `get_scheduled_flow_runs` entries (use `work_queue_id`).
    #[serde(default)]
    pub work_queue_name: Option<String>,
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
    /// Set by `GET /flow_runs/{id}`, `/flow_runs/filter` and
    /// `create_flow_run`; **absent** in `get_scheduled_flow_runs` entries,
    /// which carry the pool in [`crate::WorkerFlowRunResponse::work_pool_id`].
    #[serde(default)]
    pub work_pool_id: Option<Uuid>,
    /// Same caveat as `work_pool_id`.
    #[serde(default)]
    pub work_pool_name: Option<String>,
    #[serde(default)]
    pub parameters: Value,
    /// Per-run job variable overrides (`null` when none).
    #[serde(default)]
    pub job_variables: Option<Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: Option<Map<String, Value>>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Retry settings (`retries`, `retry_delay`, `pause_keys`, ...).
    #[serde(default)]
    pub empirical_policy: Value,
    #[serde(default)]
    pub state_id: Option<Uuid>,
    #[serde(default)]
    pub state_type: Option<StateType>,
    #[serde(default)]
    pub state_name: Option<String>,
    #[serde(default)]
    pub state: Option<State>,
    #[serde(default)]
    pub infrastructure_pid: Option<String>,
    #[serde(default)]
    pub run_count: u32,
    #[serde(default)]
    pub expected_start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub next_scheduled_start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub updated: Option<DateTime<Utc>>,
}

impl FlowRun {
    /// True when the run is SCHEDULED and its current state has id
    /// `state_id`, i.e. nothing has happened to it since that state was
    /// observed.
    pub fn is_still_scheduled_as(&self, state_id: Uuid) -> bool {
        self.state
            .as_ref()
            .is_some_and(|state| state.state_type == StateType::Scheduled && state.id == state_id)
    }
}

/// Criteria for `POST /flow_runs/filter`; unset fields do not filter.
/// Combined with AND.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowRunFilter {
    pub ids: Option<Vec<Uuid>>,
    pub state_types: Option<Vec<StateType>>,
    pub state_names: Option<Vec<String>>,
    pub work_pool_names: Option<Vec<String>>,
    pub deployment_ids: Option<Vec<Uuid>>,
    /// Runs whose next scheduled start is before this (due runs).
    pub scheduled_before: Option<DateTime<Utc>>,
    /// At most [`MAX_PAGE_SIZE`]; `None` = server default (200).
    pub limit: Option<usize>,
    pub offset: usize,
    /// e.g. `ID_DESC` (server default), `EXPECTED_START_TIME_ASC`.
    pub sort: Option<String>,
}

impl FlowRunFilter {
    pub fn by_ids(ids: impl Into<Vec<Uuid>>) -> Self {
        FlowRunFilter {
            ids: Some(ids.into()),
            ..FlowRunFilter::default()
        }
    }

    pub fn with_state_types(mut self, types: impl Into<Vec<StateType>>) -> Self {
        self.state_types = Some(types.into());
        self
    }

    pub fn with_state_names(mut self, names: impl Into<Vec<String>>) -> Self {
        self.state_names = Some(names.into());
        self
    }

    pub fn with_work_pool_names(mut self, names: impl Into<Vec<String>>) -> Self {
        self.work_pool_names = Some(names.into());
        self
    }

    pub fn with_deployment_ids(mut self, ids: impl Into<Vec<Uuid>>) -> Self {
        self.deployment_ids = Some(ids.into());
        self
    }

    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn with_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// The request body in the server's filter schema.
    pub fn to_body(&self) -> Value {
        let mut flow_runs = Map::new();
        if let Some(ids) = &self.ids {
            flow_runs.insert("id".into(), json!({ "any_": ids }));
        }
        if let Some(deployment_ids) = &self.deployment_ids {
            flow_runs.insert("deployment_id".into(), json!({ "any_": deployment_ids }));
        }
        if let Some(before) = self.scheduled_before {
            flow_runs.insert(
                "next_scheduled_start_time".into(),
                json!({ "before_": before }),
            );
        }
        let mut state = Map::new();
        if let Some(types) = &self.state_types {
            state.insert("type".into(), json!({ "any_": types }));
        }
        if let Some(names) = &self.state_names {
            state.insert("name".into(), json!({ "any_": names }));
        }
        if !state.is_empty() {
            flow_runs.insert("state".into(), Value::Object(state));
        }
        let mut body = Map::new();
        if !flow_runs.is_empty() {
            body.insert("flow_runs".into(), Value::Object(flow_runs));
        }
        if let Some(pools) = &self.work_pool_names {
            body.insert("work_pools".into(), json!({ "name": { "any_": pools } }));
        }
        if let Some(limit) = self.limit {
            body.insert("limit".into(), json!(limit.min(MAX_PAGE_SIZE)));
        }
        body.insert("offset".into(), json!(self.offset));
        if let Some(sort) = &self.sort {
            body.insert("sort".into(), json!(sort));
        }
        Value::Object(body)
    }
}

/// Body of `POST /deployments/{id}/create_flow_run`; unset fields take the
/// deployment's values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeploymentFlowRunCreate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_variables: Option<Value>,
    /// Initial state; the server's default is Scheduled for now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateCreate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_queue_name: Option<String>,
}

#[derive(Serialize)]
struct SetStateBody<'a> {
    state: &'a StateCreate,
    force: bool,
}

#[derive(Serialize)]
struct InfrastructurePidUpdate<'a> {
    infrastructure_pid: &'a str,
}

impl PrefectClient {
    /// `GET /flow_runs/{id}`.
    pub async fn read_flow_run(&self, flow_run_id: Uuid) -> Result<FlowRun, PrefectError> {
        self.get_json(&["flow_runs", &flow_run_id.to_string()])
            .await
    }

    /// `POST /flow_runs/filter`: one page of runs matching `filter`.
    pub async fn read_flow_runs(
        &self,
        filter: &FlowRunFilter,
    ) -> Result<Vec<FlowRun>, PrefectError> {
        self.send_json(Method::POST, &["flow_runs", "filter"], &filter.to_body())
            .await
    }

    /// Every run matching `filter` (its `limit` and `offset` are ignored),
    /// fetched in pages of [`MAX_PAGE_SIZE`]. Pages are separate queries: a
    /// run that changes meanwhile may be missed or seen twice.
    pub async fn read_all_flow_runs(
        &self,
        filter: &FlowRunFilter,
    ) -> Result<Vec<FlowRun>, PrefectError> {
        let mut page_filter = filter.clone().with_limit(MAX_PAGE_SIZE);
        page_filter.offset = 0;
        let mut runs = Vec::new();
        loop {
            let page = self.read_flow_runs(&page_filter).await?;
            let complete = page.len() < MAX_PAGE_SIZE;
            runs.extend(page);
            if complete {
                return Ok(runs);
            }
            page_filter.offset += MAX_PAGE_SIZE;
        }
    }

    /// `POST /flow_runs/count`: how many runs match `filter` (its limit,
    /// offset and sort do not apply).
    pub async fn count_flow_runs(&self, filter: &FlowRunFilter) -> Result<u64, PrefectError> {
        let mut body = filter.to_body();
        if let Some(body) = body.as_object_mut() {
            for paging in ["limit", "offset", "sort"] {
                body.remove(paging);
            }
        }
        self.send_json(Method::POST, &["flow_runs", "count"], &body)
            .await
    }

    /// The runs with these ids (in no particular order; unknown ids are
    /// missing from the answer), in pages of [`MAX_PAGE_SIZE`].
    pub async fn read_flow_runs_by_ids(&self, ids: &[Uuid]) -> Result<Vec<FlowRun>, PrefectError> {
        let mut runs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PAGE_SIZE) {
            let filter = FlowRunFilter::by_ids(chunk.to_vec()).with_limit(chunk.len());
            runs.extend(self.read_flow_runs(&filter).await?);
        }
        Ok(runs)
    }

    /// `POST /flow_runs/{id}/set_state`.
    ///
    /// If `state.state_details.transition_id` is unset, a fresh random one
    /// is filled in before sending; either way the same body (and so the same
    /// transition id) is re-sent on every retry, which the server answers
    /// with REJECT + the written state if an earlier attempt got through.
    /// `force = true` bypasses the orchestration rules (used for Cancelled
    /// after tearing infrastructure down); do not force a claim.
    ///
    /// [`PrefectError::NotFound`] for an unknown run. See
    /// [`OrchestrationResult`] for reading the answer.
    pub async fn set_flow_run_state(
        &self,
        flow_run_id: Uuid,
        state: &StateCreate,
        force: bool,
    ) -> Result<OrchestrationResult, PrefectError> {
        let mut state = state.clone();
        if state.state_details.transition_id.is_none() {
            state.state_details.transition_id = Some(Uuid::new_v4());
        }
        let id = flow_run_id.to_string();
        let segments = ["flow_runs", id.as_str(), "set_state"];
        let body = encode(&SetStateBody {
            state: &state,
            force,
        })?;
        let response = self.send(Method::POST, &segments, Some(body)).await?;
        let mut result: OrchestrationResult = decode(&Method::POST, &segments, &response)?;
        result.new_state_written = response.status == StatusCode::CREATED;
        Ok(result)
    }

    /// `PATCH /flow_runs/{id}` `{"infrastructure_pid": pid}` (204). The
    /// Kubernetes convention is `<namespace>:<job name>`.
    pub async fn update_flow_run_infrastructure_pid(
        &self,
        flow_run_id: Uuid,
        infrastructure_pid: &str,
    ) -> Result<(), PrefectError> {
        self.send_json_no_content(
            Method::PATCH,
            &["flow_runs", &flow_run_id.to_string()],
            &InfrastructurePidUpdate { infrastructure_pid },
        )
        .await
    }

    /// `PATCH /flow_runs/{id}/labels` (204): merges these labels into the
    /// run's labels.
    pub async fn update_flow_run_labels(
        &self,
        flow_run_id: Uuid,
        labels: &Map<String, Value>,
    ) -> Result<(), PrefectError> {
        self.send_json_no_content(
            Method::PATCH,
            &["flow_runs", &flow_run_id.to_string(), "labels"],
            labels,
        )
        .await
    }

    /// `GET /flow_run_states/?flow_run_id=`: the run's state history.
    pub async fn read_flow_run_states(
        &self,
        flow_run_id: Uuid,
    ) -> Result<Vec<State>, PrefectError> {
        self.get_json_with_query(
            &["flow_run_states", ""],
            &[("flow_run_id", flow_run_id.to_string())],
        )
        .await
    }

    /// `POST /deployments/{id}/create_flow_run`: a new run of the deployment
    /// (Scheduled for now unless `run.state` says otherwise).
    pub async fn create_flow_run_from_deployment(
        &self,
        deployment_id: Uuid,
        run: &DeploymentFlowRunCreate,
    ) -> Result<FlowRun, PrefectError> {
        self.send_json(
            Method::POST,
            &["deployments", &deployment_id.to_string(), "create_flow_run"],
            run,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_body_uses_server_schema() {
        let id = Uuid::from_u128(1);
        let filter = FlowRunFilter::by_ids(vec![id])
            .with_state_types(vec![StateType::Cancelling])
            .with_state_names(vec!["Cancelling".to_string()])
            .with_work_pool_names(vec!["k8s".to_string()])
            .with_limit(500);
        assert_eq!(
            filter.to_body(),
            json!({
                "flow_runs": {
                    "id": {"any_": [id]},
                    "state": {"type": {"any_": ["CANCELLING"]}, "name": {"any_": ["Cancelling"]}}
                },
                "work_pools": {"name": {"any_": ["k8s"]}},
                "limit": 200,
                "offset": 0
            })
        );
    }
}
