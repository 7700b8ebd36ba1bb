//! Fault campaigns (issue 9): the real poller, three dispatchers and two
//! reporters run as separate processes beside nats-server, the Prefect
//! server on PostgreSQL and the Kubernetes API emulator; a seeded workload
//! and nemesis push them around; a checker reads Prefect's state history and
//! logs and every Job the emulator ever held, and names each broken
//! invariant with its evidence.
//!
//! - [`config`]: the campaign's flags.
//! - [`stack`], [`process`]: the processes (start, SIGKILL, SIGSTOP,
//!   restart); the Prefect server's database is `test_stack::postgres`.
//! - [`prefect_proxy`], [`tcp_proxy`]: the fault proxies in front of Prefect
//!   and Kubernetes.
//! - [`workload`], [`prefect_api`], [`fake_flow`]: the runs, what users do
//!   to them, and what their pods run.
//! - [`nemesis`]: the fault schedule and its execution.
//! - [`recorder`], [`monitor`], [`checker`], [`report`]: what is observed,
//!   the invariants and the report.
//! - [`campaign`]: one campaign from start to verdict.
#![forbid(unsafe_code)]

pub mod campaign;
pub mod checker;
pub mod config;
pub mod fake_flow;
pub mod monitor;
pub mod nemesis;
pub mod prefect_api;
pub mod prefect_proxy;
pub mod process;
pub mod recorder;
pub mod report;
pub mod stack;
pub mod tcp_proxy;
pub mod workload;
