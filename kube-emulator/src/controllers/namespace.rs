//! The namespace controller, as kube-controller-manager's namespace deleter does it: a deleted
//! Namespace is `Terminating` (the apiserver sets the phase); after the controller's grace
//! period (`namespace_deletion_delay`, real: 5 s) it deletes every namespaced resource with a
//! Background deletecollection (so finalizers and the garbage collector run as usual), records
//! the five deletion conditions (`NamespaceDeletionDiscoveryFailure`, `...GroupVersionParsingFailure`,
//! `NamespaceDeletionContentFailure`, `NamespaceContentRemaining`, `NamespaceFinalizersRemaining`)
//! with the real reasons and messages, and once nothing is left removes its `kubernetes`
//! finalizer through `namespaces/finalize`, which lets the Namespace go.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::registry::{DeleteOptions, Propagation};
use crate::resources::{self, ResourceType, RESOURCES};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::ChangeKind;

const MANAGER: &str = "kube-controller-manager";
/// The finalizer the namespace controller owns (`spec.finalizers`).
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// The real deleter's estimate when remaining content only waits on finalizers.
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;
/// How often a namespace whose content is still going away is looked at again.
const RESYNC: Duration = Duration::from_millis(200);

/// The condition types the deleter maintains, in its order.
const CONDITION_TYPES: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// What one pass over the namespace's content found.
#[derive(Debug, Default)]
struct ContentTotals {
    /// Seconds the remaining content is expected to take (0 = nothing left to wait for).
    estimate: i64,
    /// `pods.` / `jobs.batch` -> instances left.
    remaining: BTreeMap<String, usize>,
    /// finalizer -> instances still carrying it.
    finalizers: BTreeMap<String, usize>,
    /// Per-resource failures (`ProcessDeleteContentErr`).
    errors: Vec<String>,
}

/// Run the namespace controller until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    let mut queue: HashMap<String, Instant> = HashMap::new();
    enqueue_terminating(&cluster, &mut queue);
    let mut tick = tokio::time::interval(RESYNC / 2);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => {
                    if change.kind != ChangeKind::Deleted
                        && change.resource.is(resources::namespaces())
                        && change.object.pointer("/metadata/deletionTimestamp").is_some()
                    {
                        let (_, name) = crate::store::object_key(&change.object);
                        let due = Instant::now() + cluster.config.namespace_deletion_delay;
                        queue.entry(name).or_insert(due);
                    }
                }
                Err(RecvError::Lagged(_)) => enqueue_terminating(&cluster, &mut queue),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick(), if !queue.is_empty() => process_due(&cluster, &mut queue),
            _ = cluster.shutdown.cancelled() => return,
        }
    }
}

/// Queue every namespace already terminating (start-up, or after missing changes).
fn enqueue_terminating(cluster: &Cluster, queue: &mut HashMap<String, Instant>) {
    let (_, namespaces) = cluster.store.list(resources::namespaces(), None);
    for ns in namespaces {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            let (_, name) = crate::store::object_key(&ns);
            let due = Instant::now() + cluster.config.namespace_deletion_delay;
            queue.entry(name).or_insert(due);
        }
    }
}

fn process_due(cluster: &Cluster, queue: &mut HashMap<String, Instant>) {
    let now = Instant::now();
    let due: Vec<String> = queue
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(name, _)| name.clone())
        .collect();
    for name in due {
        if sync(cluster, &name) {
            queue.remove(&name);
        } else {
            queue.insert(name, now + RESYNC);
        }
    }
}

/// One pass of the deleter; true when the namespace needs no more work.
fn sync(cluster: &Cluster, name: &str) -> bool {
    let Some(ns) = cluster.store.get(resources::namespaces(), "", name) else {
        return true;
    };
    if ns.pointer("/metadata/deletionTimestamp").is_none() {
        return true;
    }
    if ns.pointer("/status/phase").and_then(Value::as_str) != Some("Terminating") {
        let _ = cluster.registry.modify(
            resources::namespaces(),
            "",
            name,
            &WriteContext::status(MANAGER),
            |n| n["status"]["phase"] = json!("Terminating"),
        );
    }
    if !has_kubernetes_finalizer(&ns) {
        delete_namespace(cluster, &ns);
        return true;
    }
    let totals = delete_all_content(cluster, name);
    update_conditions(cluster, name, &totals);
    if totals.estimate > 0 || !totals.errors.is_empty() {
        return false;
    }
    finalize(cluster, name);
    true
}

fn has_kubernetes_finalizer(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Remove `kubernetes` from `spec.finalizers` (the `finalize` subresource); the apiserver then
/// deletes the Namespace if no `metadata.finalizers` hold it.
fn finalize(cluster: &Cluster, name: &str) {
    let Some(ns) = cluster.store.get(resources::namespaces(), "", name) else {
        return;
    };
    let mut next = (*ns).clone();
    if let Some(list) = next
        .pointer_mut("/spec/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f != KUBERNETES_FINALIZER);
    }
    let result = cluster.registry.replace(
        resources::namespaces(),
        "",
        name,
        next,
        Some("finalize"),
        &WriteContext::update(MANAGER),
        false,
    );
    match result {
        Err(err) => tracing::debug!(namespace = name, error = %err.message, "finalize failed"),
        Ok(_) => {
            if let Some(ns) = cluster.store.get(resources::namespaces(), "", name) {
                delete_namespace(cluster, &ns);
            }
        }
    }
}

/// The deleter's final delete (with a UID precondition).
fn delete_namespace(cluster: &Cluster, ns: &Value) {
    let (_, name) = crate::store::object_key(ns);
    let options = DeleteOptions {
        precondition_uid: ns
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(String::from),
        ..DeleteOptions::default()
    };
    let _ = cluster
        .registry
        .delete(resources::namespaces(), "", &name, &options);
}

/// The resources the deleter walks: namespaced and deletable, as discovery lists them.
fn deletable() -> impl Iterator<Item = &'static ResourceType> {
    RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.verbs.contains(&"delete"))
}

/// `deleteAllContent`: deletecollection per resource, then count what is left.
fn delete_all_content(cluster: &Cluster, namespace: &str) -> ContentTotals {
    let mut totals = ContentTotals::default();
    for resource in deletable() {
        let estimate = if resource.is(resources::pods()) {
            pod_termination_estimate(cluster, namespace)
        } else {
            0
        };
        let options = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..DeleteOptions::default()
        };
        let _ = cluster.registry.delete_collection(
            resource,
            Some(namespace),
            &LabelSelector::default(),
            &FieldSelector::default(),
            &options,
        );
        let (_, left) = cluster.store.list(resource, Some(namespace));
        if left.is_empty() {
            continue;
        }
        let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
        for item in &left {
            for f in item
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                *finalizers.entry(f.to_string()).or_default() += 1;
            }
        }
        let estimate = match (estimate, finalizers.is_empty()) {
            (0, false) => FINALIZER_ESTIMATE_SECONDS,
            (0, true) => {
                totals.errors.push(format!(
                    "unexpected items still remain in namespace: {namespace} for gvr: {}/{}, Resource={}",
                    resource.group, resource.version, resource.plural
                ));
                0
            }
            (estimate, _) => estimate,
        };
        totals.estimate = totals.estimate.max(estimate);
        let key = format!("{}.{}", resource.plural, resource.group);
        totals.remaining.insert(key, left.len());
        for (f, n) in finalizers {
            *totals.finalizers.entry(f).or_default() += n;
        }
    }
    totals
}

/// `estimateGracefulTerminationForPods`: the longest grace period of non-terminal pods.
fn pod_termination_estimate(cluster: &Cluster, namespace: &str) -> i64 {
    let (_, pods) = cluster.store.list(resources::pods(), Some(namespace));
    pods.iter()
        .filter(|p| {
            !matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
        })
        .filter_map(|p| {
            p.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .max()
        .unwrap_or(0)
}

/// The condition the deleter sets for `kind`: `(status, reason, message)`.
fn desired_condition(kind: &str, totals: &ContentTotals) -> (&'static str, &'static str, String) {
    let join = |map: &BTreeMap<String, usize>, unit: &str| {
        map.iter()
            .map(|(k, n)| format!("{k} {unit} {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        "NamespaceDeletionDiscoveryFailure" => (
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        "NamespaceDeletionGroupVersionParsingFailure" => (
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        "NamespaceDeletionContentFailure" if !totals.errors.is_empty() => (
            "True",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                totals.errors.len(),
                totals.errors.join(", ")
            ),
        ),
        "NamespaceDeletionContentFailure" => (
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
        "NamespaceContentRemaining" if !totals.remaining.is_empty() => (
            "True",
            "SomeResourcesRemain",
            format!(
                "Some resources are remaining: {}",
                join(&totals.remaining, "has")
            ),
        ),
        "NamespaceFinalizersRemaining" if !totals.finalizers.is_empty() => (
            "True",
            "SomeFinalizerRemain",
            format!(
                "Some finalizers are remaining: {}",
                join(&totals.finalizers, "in")
            ),
        ),
        _ => (
            "False",
            "ContentRemoved",
            "All content successfully removed".into(),
        ),
    }
}

/// `updateConditions`: add missing conditions, update changed ones (the transition time moves
/// only when the status does), through the status subresource.
fn update_conditions(cluster: &Cluster, name: &str, totals: &ContentTotals) {
    let now = crate::time::now_rfc3339();
    let _ = cluster.registry.modify(
        resources::namespaces(),
        "",
        name,
        &WriteContext::status(MANAGER),
        |ns| {
            if !ns["status"]["conditions"].is_array() {
                ns["status"]["conditions"] = json!([]);
            }
            let conditions = ns["status"]["conditions"]
                .as_array_mut()
                .expect("conditions array");
            for kind in CONDITION_TYPES {
                let (status, reason, message) = desired_condition(kind, totals);
                match conditions.iter_mut().find(|c| c["type"] == kind) {
                    None => conditions.push(json!({"type": kind, "status": status,
                        "lastTransitionTime": now, "reason": reason, "message": message})),
                    Some(c) => {
                        if c["status"] != status {
                            c["lastTransitionTime"] = json!(now);
                        }
                        c["status"] = json!(status);
                        c["reason"] = json!(reason);
                        c["message"] = json!(message);
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_worded_like_the_namespace_deleter() {
        let mut totals = ContentTotals::default();
        totals.remaining.insert("pods.".into(), 2);
        totals.remaining.insert("jobs.batch".into(), 1);
        totals
            .finalizers
            .insert("batch.kubernetes.io/job-tracking".into(), 2);
        assert_eq!(
            desired_condition("NamespaceContentRemaining", &totals).2,
            "Some resources are remaining: jobs.batch has 1 resource instances, pods. has 2 resource instances"
        );
        assert_eq!(
            desired_condition("NamespaceFinalizersRemaining", &totals),
            (
                "True",
                "SomeFinalizerRemain",
                "Some finalizers are remaining: batch.kubernetes.io/job-tracking in 2 resource instances".to_string()
            )
        );
        let done = ContentTotals::default();
        assert_eq!(
            desired_condition("NamespaceContentRemaining", &done),
            (
                "False",
                "ContentRemoved",
                "All content successfully removed".to_string()
            )
        );
    }
}
