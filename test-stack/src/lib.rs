//! The real parts integration tests run against, started by the tests
//! themselves: a `nats-server` with JetStream on a free port in a temp dir
//! and a Prefect 3 server from the project's virtualenv, each killed (and its
//! temp dir removed) on drop. (The Kubernetes API emulator is the
//! `kube-emulator` crate's; tests start it themselves.)
//!
//! # Layout
//! - [`nats`]: [`nats::NatsServer`], can be killed and restarted on the same port.
//! - [`prefect`]: [`prefect::PrefectServer`] and the virtualenv lookup.
//! - [`ports`]: free loopback ports.
//! - [`postgres`]: a fresh PostgreSQL database for a Prefect server.
//! - [`http_proxy`]: [`http_proxy::FaultProxy`], request counts and faults in front of a server.
//! - [`sources`]: product source files and their code lines, for the source checks.
//! - [`wait`]: `eventually`/`until`, polling until something happens or a deadline.
//! - [`workspace_root`]: the Cargo workspace's directory.
#![forbid(unsafe_code)]

pub mod http_proxy;
pub mod nats;
pub mod ports;
pub mod postgres;
pub mod prefect;
pub mod sources;
pub mod wait;

pub use prefect::workspace_root;
