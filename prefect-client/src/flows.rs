//! Flows (`/flows/...`): create one, read many by id.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::error::PrefectError;
use crate::work_pools::MAX_PAGE_SIZE;

/// A flow as the server returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: Option<Map<String, Value>>,
}

impl PrefectClient {
    /// `POST /flows/ {name}`: creates the flow, or returns the existing one
    /// with that name.
    pub async fn create_flow(&self, name: &str) -> Result<Flow, PrefectError> {
        self.send_json(Method::POST, &["flows", ""], &json!({ "name": name }))
            .await
    }

    /// `GET /flows/{id}`.
    pub async fn read_flow(&self, flow_id: Uuid) -> Result<Flow, PrefectError> {
        self.get_json(&["flows", &flow_id.to_string()]).await
    }

    /// `POST /flows/filter` by ids, in pages of [`MAX_PAGE_SIZE`]; unknown
    /// ids are missing from the answer.
    pub async fn read_flows_by_ids(&self, ids: &[Uuid]) -> Result<Vec<Flow>, PrefectError> {
        let mut flows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PAGE_SIZE) {
            let body = json!({
                "flows": {"id": {"any_": chunk}},
                "limit": chunk.len(),
                "offset": 0,
            });
            let page: Vec<Flow> = self
                .send_json(Method::POST, &["flows", "filter"], &body)
                .await?;
            flows.extend(page);
        }
        Ok(flows)
    }
}
