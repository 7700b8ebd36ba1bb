//! What the benchmarks share (they are run by hand, never as tests; see
//! `bench/README.md`): the real parts they start, and how they measure.
//!
//! - [`procs`]: CPU time and peak resident memory of processes, from `/proc`.
//! - [`server_log`]: Prefect API calls counted at the server, from its access log.
//! - [`backlog`]: a work pool, a deployment and its runs, due now.
//! - [`jobs`]: when each Job of a pool first appeared in the Kubernetes API.
//! - [`agents`]: the agents under test, as separate processes, and the bare claim.
//! - [`report`]: figures and ratios, printed as Markdown tables.
//! - [`stack`]: the real parts the benchmarks run against.
#![forbid(unsafe_code)]

pub mod agents;
pub mod backlog;
pub mod jobs;
pub mod procs;
pub mod report;
pub mod server_log;
pub mod stack;
