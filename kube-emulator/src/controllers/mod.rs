//! The simulated control plane: scheduler, kubelet, Job controller, garbage collector,
//! namespace controller, disruption controller and (when configured) a node autoscaler, each a task reacting to store changes (and timers) and writing back
//! through the registry.

pub mod autoscaler;
pub mod disruption;
pub mod events;
pub mod garbage_collector;
pub mod job_controller;
pub mod kubelet;
pub mod namespace;
pub mod pod_status;
pub mod scheduler;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::config::RuntimeKind;
use crate::runtime::process::ProcessRuntime;
use crate::runtime::scripted::ScriptedRuntime;
use crate::runtime::ContainerRuntime;

/// Start every controller; they stop when the cluster's shutdown token is cancelled.
pub fn spawn_all(cluster: &Arc<Cluster>) -> Vec<JoinHandle<()>> {
    let runtime: Arc<dyn ContainerRuntime> = match cluster.config.runtime {
        RuntimeKind::Scripted => Arc::new(ScriptedRuntime {
            default_run: cluster.config.scripted_default_run,
        }),
        RuntimeKind::Process => Arc::new(ProcessRuntime {
            workdir: cluster.config.process_workdir.clone(),
            extra_env: cluster.config.process_env.clone(),
        }),
    };
    vec![
        tokio::spawn(scheduler::run(cluster.clone())),
        tokio::spawn(kubelet::run(cluster.clone(), runtime)),
        tokio::spawn(job_controller::run(cluster.clone())),
        tokio::spawn(garbage_collector::run(cluster.clone())),
        tokio::spawn(namespace::run(cluster.clone())),
        tokio::spawn(disruption::run(cluster.clone())),
        tokio::spawn(autoscaler::run(cluster.clone())),
    ]
}
