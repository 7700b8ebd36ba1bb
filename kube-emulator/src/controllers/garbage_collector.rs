//! The garbage collector: deletes dependents whose owners are gone (Background), strips
//! ownerReferences for `orphan` deletions, and deletes dependents before removing
//! `foregroundDeletion` owners. Terminating namespaces are the namespace controller's
//! (`controllers::namespace`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::registry::{DeleteOptions, Propagation, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::resources::{self, ResourceType, RESOURCES};
use crate::store::{Change, ChangeKind};

const MANAGER: &str = "kube-controller-manager";

struct GarbageCollector {
    cluster: Arc<Cluster>,
    /// owner uid -> dependents.
    dependents: HashMap<String, HashSet<Entry>>,
    /// uid -> object, for every live object.
    live: HashMap<String, Entry>,
}

fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `(table key, namespace, name)` of a stored object.
type Entry = ((&'static str, &'static str), String, String);

fn resource_by_id(key: &(&'static str, &'static str)) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|r| r.table_key() == *key)
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|v| v == finalizer))
}

/// Run the garbage collector until shutdown.
pub async fn run(cluster: Arc<Cluster>) {
    let mut changes = cluster.store.subscribe();
    let mut gc = GarbageCollector {
        cluster: cluster.clone(),
        dependents: HashMap::new(),
        live: HashMap::new(),
    };
    gc.rebuild();
    let mut event_expiry_tick = tokio::time::interval(
        (cluster.config.event_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60)),
    );
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => gc.observe(&change),
                Err(RecvError::Lagged(_)) => gc.rebuild(),
                Err(RecvError::Closed) => return,
            },
            _ = event_expiry_tick.tick() => gc.expire_events(),
            _ = cluster.shutdown.cancelled() => return,
        }
    }
}

impl GarbageCollector {
    fn rebuild(&mut self) {
        self.dependents.clear();
        self.live.clear();
        for resource in RESOURCES {
            let (_, objects) = self.cluster.store.list(resource, None);
            for object in objects {
                self.index(resource, &object, false);
                self.react(resource, &object);
            }
        }
    }

    fn index(&mut self, resource: &'static ResourceType, object: &Value, removed: bool) {
        let (ns, name) = crate::store::object_key(object);
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let entry = (resource.table_key(), ns, name);
        if removed {
            self.live.remove(&uid);
        } else {
            self.live.insert(uid.clone(), entry.clone());
        }
        for owner in owner_uids(object) {
            let set = self.dependents.entry(owner.clone()).or_default();
            if removed {
                set.remove(&entry);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            } else {
                set.insert(entry.clone());
            }
        }
    }

    fn observe(&mut self, change: &Change) {
        let resource = change.resource;
        if let Some(previous) = &change.previous {
            // Drop stale ownership edges before re-indexing.
            let (ns, name) = crate::store::object_key(previous);
            let entry = (resource.table_key(), ns, name);
            for owner in owner_uids(previous) {
                if let Some(set) = self.dependents.get_mut(&owner) {
                    set.remove(&entry);
                }
            }
        }
        let removed = change.kind == ChangeKind::Deleted;
        self.index(resource, &change.object, removed);
        if change.kind == ChangeKind::Added && resource.is(resources::namespaces()) {
            // The ServiceAccount and root-CA publisher controllers fill new namespaces.
            let (_, name) = crate::store::object_key(&change.object);
            self.cluster.ensure_namespace_defaults(&name);
        }
        if removed {
            let uid = change
                .object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            self.delete_orphaned_dependents(&uid);
            // A dependent went away: owners in foreground deletion may now finish.
            for owner in owner_uids(&change.object) {
                if let Some((rid, ns, name)) = self.live.get(&owner).cloned() {
                    if let Some(owner_resource) = resource_by_id(&rid) {
                        if let Some(object) = self.cluster.store.get(owner_resource, &ns, &name) {
                            self.react(owner_resource, &object);
                        }
                    }
                }
            }
        } else {
            self.react(resource, &change.object);
        }
    }

    /// Background deletion: dependents whose every owner is gone are deleted.
    fn delete_orphaned_dependents(&mut self, owner_uid: &str) {
        let Some(dependents) = self.dependents.get(owner_uid).cloned() else {
            return;
        };
        for (rid, ns, name) in dependents {
            let Some(resource) = resource_by_id(&rid) else {
                continue;
            };
            let Some(object) = self.cluster.store.get(resource, &ns, &name) else {
                continue;
            };
            let owners = owner_uids(&object);
            if owners.iter().all(|o| !self.live.contains_key(o)) {
                let options = DeleteOptions {
                    propagation: Some(Propagation::Background),
                    ..DeleteOptions::default()
                };
                let _ = self.cluster.registry.delete(resource, &ns, &name, &options);
            }
        }
    }

    fn react(&mut self, resource: &'static ResourceType, object: &Value) {
        if object.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let (ns, name) = crate::store::object_key(object);
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if resource.is(resources::namespaces()) {
            return;
        }
        let dependents: Vec<Entry> = self
            .dependents
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if has_finalizer(object, ORPHAN_FINALIZER) {
            self.orphan_dependents(resource, &ns, &name, &uid, &dependents);
        } else if has_finalizer(object, FOREGROUND_FINALIZER) {
            self.delete_dependents_first(resource, &ns, &name, &dependents);
        }
    }

    /// Orphan propagation: drop the owner from its dependents' ownerReferences, then the
    /// owner's orphan finalizer.
    fn orphan_dependents(
        &self,
        resource: &'static ResourceType,
        ns: &str,
        name: &str,
        uid: &str,
        dependents: &[Entry],
    ) {
        for (rid, dns, dname) in dependents {
            if let Some(dep_resource) = resource_by_id(rid) {
                let owner = uid.to_string();
                let _ = self.cluster.registry.modify(
                    dep_resource,
                    dns,
                    dname,
                    &WriteContext::update(MANAGER),
                    |d| {
                        if let Some(list) = d
                            .pointer_mut("/metadata/ownerReferences")
                            .and_then(Value::as_array_mut)
                        {
                            list.retain(|r| r["uid"] != owner.as_str());
                            if list.is_empty() {
                                d["metadata"]
                                    .as_object_mut()
                                    .expect("metadata")
                                    .remove("ownerReferences");
                            }
                        }
                    },
                );
            }
        }
        let _ =
            self.cluster
                .registry
                .remove_finalizer(resource, ns, name, ORPHAN_FINALIZER, MANAGER);
    }

    /// Foreground propagation: delete the dependents (in the foreground too) and drop the
    /// owner's finalizer once none is left.
    fn delete_dependents_first(
        &self,
        resource: &'static ResourceType,
        ns: &str,
        name: &str,
        dependents: &[Entry],
    ) {
        let mut remaining = 0;
        for (rid, dns, dname) in dependents {
            let Some(dep_resource) = resource_by_id(rid) else {
                continue;
            };
            let Some(dep) = self.cluster.store.get(dep_resource, dns, dname) else {
                continue;
            };
            remaining += 1;
            if dep.pointer("/metadata/deletionTimestamp").is_none() {
                let options = DeleteOptions {
                    propagation: Some(Propagation::Foreground),
                    ..DeleteOptions::default()
                };
                let _ = self
                    .cluster
                    .registry
                    .delete(dep_resource, dns, dname, &options);
            }
        }
        if remaining == 0 {
            let _ = self.cluster.registry.remove_finalizer(
                resource,
                ns,
                name,
                FOREGROUND_FINALIZER,
                MANAGER,
            );
        }
    }

    /// Delete Events older than the event TTL (etcd leases do this on a real cluster), measured
    /// from their last occurrence.
    fn expire_events(&mut self) {
        let ttl = chrono::Duration::from_std(self.cluster.config.event_ttl)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        let cutoff = chrono::Utc::now() - ttl;
        let (_, events) = self.cluster.store.list(resources::core_events(), None);
        for event in events {
            let last = ["lastTimestamp", "eventTime"]
                .iter()
                .filter_map(|f| event.get(*f).and_then(Value::as_str))
                .chain(
                    event
                        .pointer("/series/lastObservedTime")
                        .and_then(Value::as_str),
                )
                .chain(
                    event
                        .pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str),
                )
                .filter_map(crate::time::parse_time)
                .max();
            if last.is_some_and(|t| t < cutoff) {
                let (ns, name) = crate::store::object_key(&event);
                let uid = event.pointer("/metadata/uid").and_then(Value::as_str);
                self.cluster
                    .store
                    .remove(resources::core_events(), &ns, &name, uid);
            }
        }
    }
}
