//! Deployments (`/deployments/...`): read one, read many by id, create one.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::error::PrefectError;
use crate::work_pools::MAX_PAGE_SIZE;

/// A deployment as the server returns it (fields this project uses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: Uuid,
    pub name: String,
    pub flow_id: Uuid,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub work_pool_name: Option<String>,
    #[serde(default)]
    pub work_queue_name: Option<String>,
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
    /// Job variable overrides of the deployment (`{}` when none).
    #[serde(default)]
    pub job_variables: Value,
    #[serde(default)]
    pub parameters: Value,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub pull_steps: Option<Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: Option<Map<String, Value>>,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub concurrency_limit: Option<u32>,
    /// When the deployment was last changed (the `prefect.io/deployment-updated` label).
    #[serde(default)]
    pub updated: Option<chrono::DateTime<chrono::Utc>>,
}

/// Body of `POST /deployments/`. Creating a deployment with the same flow
/// and name again updates it (the server upserts).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DeploymentCreate {
    pub name: String,
    pub flow_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_pool_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_queue_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_variables: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_steps: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    /// Server default is true; set false to skip parameter validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforce_parameter_schema: Option<bool>,
}

impl DeploymentCreate {
    pub fn new(name: impl Into<String>, flow_id: Uuid) -> Self {
        DeploymentCreate {
            name: name.into(),
            flow_id,
            ..DeploymentCreate::default()
        }
    }
}

impl PrefectClient {
    /// `GET /deployments/{id}`.
    pub async fn read_deployment(&self, deployment_id: Uuid) -> Result<Deployment, PrefectError> {
        self.get_json(&["deployments", &deployment_id.to_string()])
            .await
    }

    /// `POST /deployments/filter` by ids, in pages of [`MAX_PAGE_SIZE`];
    /// unknown ids are missing from the answer.
    pub async fn read_deployments_by_ids(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<Deployment>, PrefectError> {
        let mut deployments = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PAGE_SIZE) {
            let body = json!({
                "deployments": {"id": {"any_": chunk}},
                "limit": chunk.len(),
                "offset": 0,
            });
            let page: Vec<Deployment> = self
                .send_json(Method::POST, &["deployments", "filter"], &body)
                .await?;
            deployments.extend(page);
        }
        Ok(deployments)
    }

    /// `PATCH /deployments/{id}` with new job variables (what a user does
    /// from the UI or `prefect deployment` between runs).
    pub async fn update_deployment_job_variables(
        &self,
        deployment_id: Uuid,
        job_variables: &Value,
    ) -> Result<(), PrefectError> {
        self.send_json_no_content(
            Method::PATCH,
            &["deployments", &deployment_id.to_string()],
            &json!({"job_variables": job_variables}),
        )
        .await
    }

    /// `POST /deployments/`.
    pub async fn create_deployment(
        &self,
        deployment: &DeploymentCreate,
    ) -> Result<Deployment, PrefectError> {
        self.send_json(Method::POST, &["deployments", ""], deployment)
            .await
    }
}
