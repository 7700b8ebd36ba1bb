//! The simulated kubelet of every node (the emulator's and those the node autoscaler adds):
//! for every pod bound to one, a worker walks the
//! stages ContainerCreating -> (config check, image pull) -> Running -> terminated, writing pod
//! status through the status path and emitting the kubelet's events. Graceful deletion sends
//! SIGTERM, then SIGKILL after the grace period, moves the pod to a terminal phase and finishes
//! the delete with grace 0. Restart policies OnFailure/Always restart containers with
//! CrashLoopBackOff.

mod containers;
mod env;
mod images;
mod init_containers;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::pod_status::is_terminal;
use crate::cluster::Cluster;
use crate::registry::DeleteOptions;
use crate::resources;
use crate::runtime::ContainerRuntime;
use crate::store::ChangeKind;

pub use env::resolve_env;
pub use images::is_valid_image_reference;

/// What the worker learns about its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodSignal {
    Running,
    /// `deletionTimestamp` set with this grace period.
    Deleting(i64),
    Removed,
}

/// Run the kubelet until shutdown.
pub async fn run(cluster: Arc<Cluster>, runtime: Arc<dyn ContainerRuntime>) {
    let mut changes = cluster.store.subscribe();
    let mut workers: HashMap<String, watch::Sender<PodSignal>> = HashMap::new();
    let (_, existing) = cluster.store.list(resources::pods(), None);
    for pod in existing {
        observe(&cluster, &runtime, &mut workers, &pod, false);
    }
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = cluster.shutdown.cancelled() => return,
        };
        match change {
            Ok(change) if change.resource.is(resources::pods()) => {
                let removed = change.kind == ChangeKind::Deleted;
                observe(&cluster, &runtime, &mut workers, &change.object, removed);
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                let (_, pods) = cluster.store.list(resources::pods(), None);
                for pod in pods {
                    observe(&cluster, &runtime, &mut workers, &pod, false);
                }
            }
            Err(RecvError::Closed) => return,
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
}

fn observe(
    cluster: &Arc<Cluster>,
    runtime: &Arc<dyn ContainerRuntime>,
    workers: &mut HashMap<String, watch::Sender<PodSignal>>,
    pod: &Value,
    removed: bool,
) {
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !workers.contains_key(&uid) && !on_a_simulated_node(cluster, pod) {
        return;
    }
    if removed {
        if let Some(tx) = workers.remove(&uid) {
            let _ = tx.send(PodSignal::Removed);
        }
        cluster.logs.forget_pod(&uid);
        return;
    }
    let signal = match pod.pointer("/metadata/deletionTimestamp") {
        Some(_) => PodSignal::Deleting(
            pod.pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        ),
        None => PodSignal::Running,
    };
    if let Some(tx) = workers.get(&uid) {
        tx.send_if_modified(|current| {
            if *current != signal {
                *current = signal;
                true
            } else {
                false
            }
        });
        return;
    }
    let (ns, name) = crate::store::object_key(pod);
    if is_terminal(pod) {
        // Nothing runs; finish a pending graceful delete.
        if let PodSignal::Deleting(grace) = signal {
            if grace != 0 {
                final_delete(cluster, &ns, &name, &uid);
            }
        }
        return;
    }
    let (tx, rx) = watch::channel(signal);
    workers.insert(uid.clone(), tx);
    let cluster = cluster.clone();
    let runtime = runtime.clone();
    tokio::spawn(async move {
        PodWorker {
            cluster,
            runtime,
            namespace: ns,
            name,
            uid,
            signals: rx,
        }
        .run()
        .await;
    });
}

/// Bound to a Node of the emulator's (its own, or one the node autoscaler added): this
/// kubelet runs every node's pods.
fn on_a_simulated_node(cluster: &Cluster, pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|node| !node.is_empty())
        .is_some_and(|node| cluster.store.get(resources::nodes(), "", node).is_some())
}

fn final_delete(cluster: &Cluster, namespace: &str, name: &str, uid: &str) {
    let options = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: Some(uid.to_string()),
        ..DeleteOptions::default()
    };
    if let Err(err) = cluster
        .registry
        .delete(resources::pods(), namespace, name, &options)
    {
        if err.code != 404 && err.code != 409 {
            tracing::warn!(%err, "kubelet final delete failed");
        }
    }
}

/// The worker of one pod: its stages are in `worker`, its containers in `containers`.
struct PodWorker {
    cluster: Arc<Cluster>,
    runtime: Arc<dyn ContainerRuntime>,
    namespace: String,
    name: String,
    uid: String,
    signals: watch::Receiver<PodSignal>,
}

/// Why the worker stopped waiting.
enum Interrupt {
    Deleted(i64),
    Removed,
}
