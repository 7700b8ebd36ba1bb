//! What the poller, the dispatchers and the reporter share: how they are
//! configured to reach NATS, Prefect and Kubernetes, how they log, the
//! JetStream streams they agree on, gRPC health, and shutdown on SIGTERM.
//!
//! # Layout
//! - [`telemetry`]: one `tracing` initialiser (`RUST_LOG`, `LOG_FORMAT`).
//! - [`shutdown`]: a future that completes on SIGTERM or SIGINT.
//! - [`nats`]: connection options and the JetStream streams and consumers.
//! - [`nats_auth`]: each service's NATS user and permissions, the nats-server
//!   `authorization` block.
//! - [`options`]: options more than one service has (work pool, worker name,
//!   stream replicas), flattened into each config.
//! - [`prefect`]: Prefect connection options (`PREFECT_API_URL`, `PREFECT_API_KEY`, ...).
//! - [`kubernetes`]: a `kube::Client` from in-cluster config or `KUBECONFIG`.
//! - [`deadline`]: deadlines checked before a call starts, for calls that must
//!   not land late.
//! - [`health`]: the gRPC health service every Deployment probes.
//! - [`metrics`]: the Prometheus registry, `/metrics`, and the metrics all services share.
//! - [`serve`]: the one shape of a service binary: telemetry, command line,
//!   signals, health, metrics, exit code.
#![forbid(unsafe_code)]

pub mod deadline;
pub mod health;
pub mod kubernetes;
pub mod metrics;
pub mod nats;
pub mod nats_auth;
mod nats_url;
#[warn(missing_docs)]
pub mod options;
pub mod prefect;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
