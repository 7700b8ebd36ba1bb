//! Typed async client for the Prefect 3 REST API (server 3.9.1, API 0.8.4),
//! covering what a Kubernetes worker, its poller/dispatcher split and its
//! reporter need.
//!
//! - Transport ([`PrefectClient`], [`ClientConfig`]): `X-PREFECT-API-VERSION`,
//!   a Prefect-compatible `User-Agent`, `Basic` (auth string) or `Bearer`
//!   (API key) auth, the CSRF-token handshake when the server enables it,
//!   and retries on 408/429/502/503 and transport errors honouring
//!   `Retry-After` (SQLite servers answer 503 "database is locked" under
//!   concurrent writes). Each retry re-sends the same body.
//! - Endpoints, grouped with their types: [`work_pools`], [`flow_runs`],
//!   [`deployments`], [`flows`], [`logs`], [`events`], and the live event
//!   stream [`events_out`] (a WebSocket).
//! - The state-proposal contract and claim helpers: [`states`].
//! - Failures: [`PrefectError`], with [`PrefectError::is_retryable`].
//!
//! ```no_run
//! # async fn example() -> Result<(), prefect_client::PrefectError> {
//! use prefect_client::{ClientConfig, PrefectClient};
//! let client = PrefectClient::new(
//!     ClientConfig::new("http://127.0.0.1:4200/api")?.with_worker_name("poller-1"),
//! )?;
//! let runs = client
//!     .get_scheduled_flow_runs("k8s", &[], chrono::Utc::now(), Some(100))
//!     .await?;
//! # let _ = runs; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod client;
pub mod config;
pub mod deployments;
pub mod error;
pub mod events;
pub mod events_out;
pub mod flow_runs;
pub mod flows;
pub mod logs;
pub mod states;
mod transport;
pub mod work_pools;

pub use client::PrefectClient;
pub use reqwest::Url;

pub use config::{
    redacted_url, url_has_credentials, ClientConfig, RequestObserver, RetryPolicy, Secret,
    API_VERSION, PREFECT_CLIENT_VERSION,
};
pub use deployments::{Deployment, DeploymentCreate};
pub use error::PrefectError;
pub use events::{Event, EventFilter, ResourceLabels, EVENTS_PAGE_SIZE};
pub use events_out::EventSubscription;
pub use flow_runs::{DeploymentFlowRunCreate, FlowRun, FlowRunFilter};
pub use flows::Flow;
pub use logs::{log_level, Log, LogCreate};
pub use states::{
    ClaimOutcome, OrchestrationDetails, OrchestrationResult, SetStateStatus, State, StateCreate,
    StateDetails, StateType,
};
pub use work_pools::{
    WorkPool, WorkPoolCreate, WorkQueue, WorkQueueCreate, WorkerFlowRunResponse, MAX_PAGE_SIZE,
};
