//! Fault campaigns (issue 9): the real poller, three dispatchers and two
//! reporters run as separate processes beside nats-server, the Prefect
//! server on PostgreSQL and the Kubernetes API emulator; a seeded workload
//! and nemesis push them around; a checker reads Prefect's state history and
//! logs and every Job the emulator ever held, and names each broken
//! invariant with its evidence.
#![forbid(unsafe_code)]

pub mod fake_flow;
pub mod prefect_api;
pub mod prefect_proxy;
pub mod tcp_proxy;
