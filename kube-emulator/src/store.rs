//! The versioned object store: one cluster-wide resourceVersion counter (like an etcd revision),
//! tables of JSON objects ordered by namespace/name, a bounded history of changes for watches
//! that resume from a resourceVersion, list snapshots for `limit`/`continue`, and a broadcast of
//! every change to watchers and controllers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::ResourceType;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Updated (any persisted change).
    Modified,
    /// Removed from storage.
    Deleted,
}

/// One persisted change, as delivered to watches and controllers.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion of this write.
    pub resource_version: u64,
    /// Which table changed.
    pub resource: &'static ResourceType,
    /// Kind of change.
    pub kind: ChangeKind,
    /// New object (Added/Modified) or last state carrying the deletion RV (Deleted).
    pub object: Arc<Value>,
    /// Previous state for Modified/Deleted (used for selector transitions).
    pub previous: Option<Arc<Value>>,
}

/// A frozen list result kept for `continue` tokens.
struct ListSnapshot {
    resource_version: u64,
    items: Vec<Arc<Value>>,
}

struct StoreState {
    resource_version: u64,
    tables: HashMap<(&'static str, &'static str), BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches asking for a resourceVersion below this get 410 Expired.
    oldest_watchable: u64,
    snapshots: HashMap<u64, ListSnapshot>,
    snapshot_order: VecDeque<u64>,
    next_snapshot_id: u64,
}

/// The shared store. All methods are synchronous and hold the lock only briefly.
pub struct Store {
    state: Mutex<StoreState>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// How many list snapshots (for continue tokens) are retained.
const MAX_SNAPSHOTS: usize = 256;

/// Where a watch starts: past changes to replay and a live receiver positioned right after them.
pub struct WatchStart {
    /// Changes with RV greater than the requested one, oldest first.
    pub backlog: Vec<Arc<Change>>,
    /// Live changes after the backlog.
    pub receiver: broadcast::Receiver<Arc<Change>>,
    /// The store RV at subscription time.
    pub resource_version: u64,
}

/// Result of starting a watch "from now" with the current state (rv unset / 0 / initial events).
pub struct StateAndWatch {
    /// Current objects, key-ordered.
    pub objects: Vec<Arc<Value>>,
    /// Live changes after the snapshot.
    pub receiver: broadcast::Receiver<Arc<Change>>,
    /// The snapshot RV.
    pub resource_version: u64,
}

impl Store {
    /// An empty store with the given history and broadcast capacities.
    pub fn new(history_limit: usize, broadcast_capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(broadcast_capacity.max(16));
        Self {
            state: Mutex::new(StoreState {
                resource_version: 1,
                tables: HashMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                oldest_watchable: 1,
                snapshots: HashMap::new(),
                snapshot_order: VecDeque::new(),
                next_snapshot_id: 1,
            }),
            changes,
        }
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().resource_version
    }

    /// Subscribe to every future change (controllers use this).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Read one object.
    pub fn get(&self, resource: &ResourceType, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let state = self.state.lock();
        state
            .tables
            .get(&resource.table_key())
            .and_then(|t| t.get(&(namespace.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of a resource (optionally in one namespace), key-ordered, with the current RV.
    pub fn list(&self, resource: &ResourceType, namespace: Option<&str>) -> (u64, Vec<Arc<Value>>) {
        let state = self.state.lock();
        (
            state.resource_version,
            Self::collect(&state, resource, namespace),
        )
    }

    fn collect(
        state: &StoreState,
        resource: &ResourceType,
        namespace: Option<&str>,
    ) -> Vec<Arc<Value>> {
        let Some(table) = state.tables.get(&resource.table_key()) else {
            return Vec::new();
        };
        match namespace {
            Some(ns) => table
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => table.values().cloned().collect(),
        }
    }

    /// Keep a list result for later pages; returns the snapshot id.
    pub fn save_snapshot(&self, resource_version: u64, items: Vec<Arc<Value>>) -> u64 {
        let mut state = self.state.lock();
        let id = state.next_snapshot_id;
        state.next_snapshot_id += 1;
        state.snapshots.insert(
            id,
            ListSnapshot {
                resource_version,
                items,
            },
        );
        state.snapshot_order.push_back(id);
        while state.snapshot_order.len() > MAX_SNAPSHOTS {
            if let Some(old) = state.snapshot_order.pop_front() {
                state.snapshots.remove(&old);
            }
        }
        id
    }

    /// Fetch a saved snapshot (None when expired or compacted).
    pub fn snapshot(&self, id: u64) -> Option<(u64, Vec<Arc<Value>>)> {
        let state = self.state.lock();
        let snap = state.snapshots.get(&id)?;
        if snap.resource_version < state.oldest_watchable.saturating_sub(1) {
            return None;
        }
        Some((snap.resource_version, snap.items.clone()))
    }

    /// Insert a new object. Fails with AlreadyExists if the key is taken.
    /// `object` must already carry `metadata.namespace`/`name`; its RV is set here.
    pub fn insert(
        &self,
        resource: &'static ResourceType,
        mut object: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let (namespace, name) = object_key(&object);
        let mut state = self.state.lock();
        let table = state.tables.entry(resource.table_key()).or_default();
        if let Some(existing) = table.get(&(namespace.clone(), name.clone())) {
            let terminating = existing.pointer("/metadata/deletionTimestamp").is_some();
            return Err(ApiError::already_exists(resource, &name, terminating));
        }
        state.resource_version += 1;
        let rv = state.resource_version;
        set_resource_version(&mut object, rv);
        let object = Arc::new(object);
        state
            .tables
            .get_mut(&resource.table_key())
            .expect("table")
            .insert((namespace, name), object.clone());
        self.record(
            &mut state,
            Change {
                resource_version: rv,
                resource,
                kind: ChangeKind::Added,
                object: object.clone(),
                previous: None,
            },
        );
        Ok(object)
    }

    /// Atomically read-modify-write one object. `mutate` returns the new object, or `None` to
    /// leave it unchanged. Writes equal to the stored object (ignoring resourceVersion) are no-ops:
    /// no RV bump, no event. Returns the stored object after the call.
    pub fn update<F>(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        mutate: F,
    ) -> Result<Arc<Value>, ApiError>
    where
        F: FnOnce(&Value) -> Result<Option<Value>, ApiError>,
    {
        let mut state = self.state.lock();
        let key = (namespace.to_string(), name.to_string());
        let current = state
            .tables
            .get(&resource.table_key())
            .and_then(|t| t.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        let Some(mut updated) = mutate(&current)? else {
            return Ok(current);
        };
        set_resource_version(&mut updated, current_rv_of(&current));
        if updated == *current {
            return Ok(current);
        }
        state.resource_version += 1;
        let rv = state.resource_version;
        set_resource_version(&mut updated, rv);
        let updated = Arc::new(updated);
        state
            .tables
            .get_mut(&resource.table_key())
            .expect("table")
            .insert(key, updated.clone());
        self.record(
            &mut state,
            Change {
                resource_version: rv,
                resource,
                kind: ChangeKind::Modified,
                object: updated.clone(),
                previous: Some(current),
            },
        );
        Ok(updated)
    }

    /// Remove an object (optionally only if its uid matches). The DELETED event carries the last
    /// stored state with the deletion's resourceVersion, which is also what is returned.
    pub fn remove(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        expected_uid: Option<&str>,
    ) -> Option<Arc<Value>> {
        let mut state = self.state.lock();
        let key = (namespace.to_string(), name.to_string());
        let table = state.tables.get_mut(&resource.table_key())?;
        let current = table.get(&key)?.clone();
        if let Some(uid) = expected_uid {
            if current.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return None;
            }
        }
        table.remove(&key);
        state.resource_version += 1;
        let rv = state.resource_version;
        let mut last = (*current).clone();
        set_resource_version(&mut last, rv);
        let last = Arc::new(last);
        self.record(
            &mut state,
            Change {
                resource_version: rv,
                resource,
                kind: ChangeKind::Deleted,
                object: last.clone(),
                previous: Some(current),
            },
        );
        Some(last)
    }

    fn record(&self, state: &mut StoreState, change: Change) {
        let change = Arc::new(change);
        state.history.push_back(change.clone());
        while state.history.len() > state.history_limit {
            if let Some(dropped) = state.history.pop_front() {
                state.oldest_watchable = dropped.resource_version + 1;
            }
        }
        // Sending while holding the lock keeps broadcast order == RV order.
        let _ = self.changes.send(change);
    }

    /// Start a watch after `resource_version`: replay retained history, then go live.
    /// Returns `Err(oldest)` when the RV is older than the retained history (410 Expired).
    pub fn watch_from(&self, resource_version: u64) -> Result<WatchStart, u64> {
        let state = self.state.lock();
        if resource_version + 1 < state.oldest_watchable {
            return Err(state.oldest_watchable);
        }
        let backlog = state
            .history
            .iter()
            .filter(|c| c.resource_version > resource_version)
            .cloned()
            .collect();
        Ok(WatchStart {
            backlog,
            receiver: self.changes.subscribe(),
            resource_version: state.resource_version,
        })
    }

    /// Start a watch from the current state (synthetic ADDED events for `objects`).
    pub fn watch_with_state(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
    ) -> StateAndWatch {
        let state = self.state.lock();
        StateAndWatch {
            objects: Self::collect(&state, resource, namespace),
            receiver: self.changes.subscribe(),
            resource_version: state.resource_version,
        }
    }

    /// Forget all history: watches resuming from any resourceVersion handed out so far get
    /// 410 Expired, and continue tokens expire. The counter moves by one (as if an unrelated
    /// write happened, which on a real cluster always does) so even an up-to-date watcher
    /// expires. Returns the compaction RV.
    pub fn compact(&self) -> u64 {
        let mut state = self.state.lock();
        state.resource_version += 1;
        state.history.clear();
        state.oldest_watchable = state.resource_version + 1;
        state.snapshots.clear();
        state.snapshot_order.clear();
        state.resource_version
    }

    /// Number of stored objects of a resource (used by the bench and admin endpoint).
    pub fn count(&self, resource: &ResourceType) -> usize {
        self.state
            .lock()
            .tables
            .get(&resource.table_key())
            .map_or(0, BTreeMap::len)
    }
}

/// `(namespace, name)` of a JSON object.
pub fn object_key(object: &Value) -> ObjectKey {
    (
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    )
}

/// Parse `metadata.resourceVersion` of an object (0 when absent).
pub fn current_rv_of(object: &Value) -> u64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config_map(name: &str) -> Value {
        json!({"metadata": {"namespace": "default", "name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn no_op_update_does_not_bump_resource_version() {
        let store = Store::new(100, 100);
        let cms = crate::resources::configmaps();
        store.insert(cms, config_map("a")).unwrap();
        let before = store.resource_version();
        store
            .update(cms, "default", "a", |current| Ok(Some(current.clone())))
            .unwrap();
        assert_eq!(store.resource_version(), before);
    }

    #[test]
    fn compaction_expires_old_resource_versions() {
        let store = Store::new(100, 100);
        let cms = crate::resources::configmaps();
        store.insert(cms, config_map("a")).unwrap();
        let rv = store.resource_version();
        store.insert(cms, config_map("b")).unwrap();
        assert_eq!(store.watch_from(rv).unwrap().backlog.len(), 1);
        store.compact();
        assert!(store.watch_from(rv).is_err());
    }
}
