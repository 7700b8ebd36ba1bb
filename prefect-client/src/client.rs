//! [`PrefectClient`]: the handle every endpoint method hangs off, plus the
//! JSON request helpers the endpoint modules share.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{redacted_url, ClientConfig};
use crate::error::PrefectError;
use crate::transport::{ApiResponse, Transport};

/// Async client for the Prefect 3 REST API. Cheap to clone (shared
/// connection pool and CSRF state); safe to use from many tasks at once.
///
/// Endpoint methods live in the modules that define their types:
/// [`crate::work_pools`], [`crate::flow_runs`], [`crate::deployments`],
/// [`crate::flows`], [`crate::logs`], [`crate::events`], [`crate::events_out`].
#[derive(Clone)]
pub struct PrefectClient {
    pub(crate) transport: Arc<Transport>,
}

impl PrefectClient {
    pub fn new(config: ClientConfig) -> Result<Self, PrefectError> {
        Ok(PrefectClient {
            transport: Arc::new(Transport::new(&config)?),
        })
    }

    /// [`ClientConfig::from_env`] then [`PrefectClient::new`].
    pub fn from_env() -> Result<Self, PrefectError> {
        PrefectClient::new(ClientConfig::from_env()?)
    }

    /// A client sharing this one's connections and settings but retrying
    /// by `retry` (e.g. [`crate::RetryPolicy::no_retries`] for a proposal
    /// that must not land late).
    pub fn with_retry(&self, retry: crate::RetryPolicy) -> PrefectClient {
        PrefectClient {
            transport: Arc::new(self.transport.with_retry(retry)),
        }
    }

    /// The API base URL for log lines and errors: credentials masked.
    pub fn redacted_api_url(&self) -> String {
        redacted_url(self.transport.base_url())
    }

    /// How long one request may take before it is cut (`PREFECT_API_REQUEST_TIMEOUT`).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.transport.request_timeout()
    }

    /// The API base URL, e.g. `http://127.0.0.1:4200/api`.
    pub fn api_url(&self) -> &Url {
        self.transport.base_url()
    }

    /// `GET /health`: Ok when the server answers 200.
    pub async fn health(&self) -> Result<(), PrefectError> {
        self.send(Method::GET, &["health"], None).await.map(|_| ())
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<T, PrefectError> {
        let response = self.send(Method::GET, segments, None).await?;
        decode(&Method::GET, segments, &response)
    }

    /// GET with query parameters.
    pub(crate) async fn get_json_with_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<T, PrefectError> {
        let mut url = self.transport.url(segments);
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(key, value)| (*key, value.as_str())));
        let response = self.transport.send(Method::GET, url, None).await?;
        decode(&Method::GET, segments, &response)
    }

    /// Sends `body` as JSON and decodes the JSON answer.
    pub(crate) async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, PrefectError> {
        let response = self
            .send(method.clone(), segments, Some(encode(body)?))
            .await?;
        decode(&method, segments, &response)
    }

    /// Sends `body` as JSON; the answer (usually 204) is discarded.
    pub(crate) async fn send_json_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<(), PrefectError> {
        self.send(method, segments, Some(encode(body)?))
            .await
            .map(|_| ())
    }

    /// Sends pre-encoded JSON and returns the raw 2xx answer.
    pub(crate) async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Bytes>,
    ) -> Result<ApiResponse, PrefectError> {
        let url = self.transport.url(segments);
        self.transport.send(method, url, body).await
    }
}

impl fmt::Debug for PrefectClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefectClient")
            .field("api_url", &redacted_url(self.transport.base_url()))
            .finish_non_exhaustive()
    }
}

pub(crate) fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Bytes, PrefectError> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|err| PrefectError::Config(format!("cannot encode request body: {err}")))
}

pub(crate) fn decode<T: DeserializeOwned>(
    method: &Method,
    segments: &[&str],
    response: &ApiResponse,
) -> Result<T, PrefectError> {
    serde_json::from_slice(&response.body).map_err(|source| PrefectError::Decode {
        endpoint: format!("{method} /{}", segments.join("/")),
        source,
    })
}
