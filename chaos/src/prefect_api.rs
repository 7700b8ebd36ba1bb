//! The Prefect calls a *user* makes and a worker's client lacks: creating a
//! run with a retry policy, deleting a run, forcing a state (the UI's
//! "Retry" and reschedule). Plain JSON over reqwest, straight to the server
//! (never through the fault proxy).

use std::time::Duration;

use prefect_client::{FlowRun, OrchestrationResult};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// A user-side call failed.
#[derive(Debug, thiserror::Error)]
pub enum UserApiError {
    #[error("{method} {path}: {source}")]
    Transport {
        method: Method,
        path: String,
        source: reqwest::Error,
    },
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {path}: undecodable answer: {source}")]
    Decode {
        method: Method,
        path: String,
        source: serde_json::Error,
    },
}

/// What a user does to runs, against `<api>` (e.g. `http://127.0.0.1:4200/api`).
#[derive(Clone)]
pub struct UserApi {
    http: reqwest::Client,
    base: String,
}

impl UserApi {
    pub fn new(api_url: &str) -> UserApi {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a plain HTTP client builds");
        UserApi {
            http,
            base: api_url.trim_end_matches('/').to_owned(),
        }
    }

    /// `POST /deployments/{id}/create_flow_run` with `body` as is.
    pub async fn create_run(
        &self,
        deployment: Uuid,
        body: &Value,
    ) -> Result<FlowRun, UserApiError> {
        let path = format!("/deployments/{deployment}/create_flow_run");
        let answer = self.call(Method::POST, &path, Some(body)).await?;
        decode(Method::POST, &path, &answer)
    }

    /// `DELETE /flow_runs/{id}`: `Ok(true)` deleted, `Ok(false)` already gone.
    pub async fn delete_run(&self, run: Uuid) -> Result<bool, UserApiError> {
        let path = format!("/flow_runs/{run}");
        match self.call(Method::DELETE, &path, None).await {
            Ok(_) => Ok(true),
            Err(UserApiError::Status { status, .. }) if status == StatusCode::NOT_FOUND => {
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }

    /// `POST /flow_runs/{id}/set_state` with a raw state object.
    pub async fn set_state(
        &self,
        run: Uuid,
        state: Value,
        force: bool,
    ) -> Result<OrchestrationResult, UserApiError> {
        let path = format!("/flow_runs/{run}/set_state");
        let body = serde_json::json!({"state": state, "force": force});
        let answer = self.call(Method::POST, &path, Some(&body)).await?;
        decode(Method::POST, &path, &answer)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String, UserApiError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| UserApiError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(UserApiError::Status {
                method,
                path: path.to_owned(),
                status,
                body: text.chars().take(500).collect(),
            });
        }
        Ok(text)
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    method: Method,
    path: &str,
    text: &str,
) -> Result<T, UserApiError> {
    serde_json::from_str(text).map_err(|source| UserApiError::Decode {
        method,
        path: path.to_owned(),
        source,
    })
}

/// reqwest is built without a default rustls provider in this workspace.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
