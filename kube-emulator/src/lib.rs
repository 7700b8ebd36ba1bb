//! kube-emulator: a real HTTP Kubernetes API emulator (API server, Job controller, scheduler,
//! kubelet with scripted or process runtimes, garbage collector) that kube-rs, kubectl and the
//! Python client use through an ordinary kubeconfig. See README.md for what is faithful.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_emulator::EmulatorError> {
//! use kube_emulator::{Emulator, EmulatorConfig};
//! let emulator = Emulator::start(EmulatorConfig::fast()).await?;
//! let client = emulator.client()?;
//! # let _ = client;
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod api;
pub mod apply;
pub mod cluster;
pub mod config;
pub mod container_logs;
pub mod controllers;
pub mod conversion;
pub mod emulator;
pub mod error;
pub mod faults;
pub mod kubeconfig;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod resources;
pub mod runtime;
pub mod selectors;
pub mod store;
pub mod time;
pub mod tls;

pub use config::{
    AuthorizationMode, AutoscalerConfig, AutoscalerStyle, EmulatorConfig, NodeCapacity, NodeGroup,
    Provisioning, RuntimeKind,
};
pub use emulator::Emulator;
pub use error::{ApiError, EmulatorError};
pub use faults::FaultSettings;
