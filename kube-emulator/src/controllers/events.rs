//! Recording core/v1 Events the way the kubelet, scheduler and Job controller's legacy event
//! recorders do: name `<object>.<hex nanos>`, `involvedObject`, `source`, timestamps, count.

use serde_json::{json, Value};

use crate::admission::WriteContext;
use crate::cluster::Cluster;
use crate::resources;
use crate::time::{now_micro, now_rfc3339};

/// Who reports an event.
#[derive(Debug, Clone, Copy)]
pub enum Reporter {
    /// `kubelet` (with the node as host).
    Kubelet,
    /// `default-scheduler`.
    Scheduler,
    /// `job-controller`.
    JobController,
    /// `controllermanager` (the disruption controller's recorder).
    ControllerManager,
    /// `cluster-autoscaler`.
    ClusterAutoscaler,
    /// `karpenter`.
    Karpenter,
}

impl Reporter {
    fn component(self) -> &'static str {
        match self {
            Reporter::Kubelet => "kubelet",
            Reporter::Scheduler => "default-scheduler",
            Reporter::JobController => "job-controller",
            Reporter::ControllerManager => "controllermanager",
            Reporter::ClusterAutoscaler => "cluster-autoscaler",
            Reporter::Karpenter => "karpenter",
        }
    }
}

/// Record an event about `object`.
pub fn record(
    cluster: &Cluster,
    object: &Value,
    event_type: &str,
    reason: &str,
    message: &str,
    reporter: Reporter,
    field_path: Option<&str>,
) {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let now = now_rfc3339();
    let involved = involved_object(object, namespace, name, field_path);
    let mut source = json!({"component": reporter.component()});
    let mut reporting_instance = String::new();
    if matches!(reporter, Reporter::Kubelet) {
        source["host"] = json!(cluster.config.node_name);
        reporting_instance = cluster.config.node_name.clone();
    }
    let mut event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": event_type,
        "eventTime": null,
        "reportingComponent": reporter.component(),
        "reportingInstance": reporting_instance,
    });
    if matches!(reporter, Reporter::Scheduler) {
        as_scheduler_event(cluster, &mut event, reason);
    }
    let ctx = WriteContext::update(reporter.component());
    // Like client-go's event correlator: an identical event (same object, reason, message,
    // type, source) within the aggregation window bumps `count` and `lastTimestamp` instead of
    // creating a new object.
    let key = format!(
        "{}|{}|{}|{}|{}",
        object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or(name),
        reason,
        message,
        event_type,
        reporter.component()
    );
    if bump_existing(cluster, &key, namespace, &ctx) {
        return;
    }
    create_event(cluster, key, namespace, event, &ctx);
}

/// The event's `involvedObject`.
fn involved_object(object: &Value, namespace: &str, name: &str, field_path: Option<&str>) -> Value {
    let mut involved = json!({
        "kind": object["kind"],
        "namespace": namespace,
        "name": name,
        "uid": object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        "apiVersion": object["apiVersion"],
        "resourceVersion": object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null),
    });
    if let Some(path) = field_path {
        involved["fieldPath"] = json!(path);
    }
    involved
}

/// The scheduler uses the events.k8s.io recorder: eventTime set, no first/last timestamps.
fn as_scheduler_event(cluster: &Cluster, event: &mut Value, reason: &str) {
    event["eventTime"] = json!(now_micro());
    event["action"] = json!(if reason == "Scheduled" {
        "Binding"
    } else {
        "Scheduling"
    });
    event["firstTimestamp"] = Value::Null;
    event["lastTimestamp"] = Value::Null;
    event["reportingInstance"] = json!(format!("default-scheduler-{}", cluster.config.node_name));
}

/// Bump `count` and `lastTimestamp` of the event last recorded under `key`; false when there
/// is none (or it is gone).
fn bump_existing(cluster: &Cluster, key: &str, namespace: &str, ctx: &WriteContext) -> bool {
    let existing = cluster.recorded_events.lock().get(key).cloned();
    if let Some(existing_name) = existing {
        let bumped = cluster.registry.modify(
            resources::core_events(),
            namespace,
            &existing_name,
            ctx,
            |e| {
                let count = e["count"].as_i64().unwrap_or(1);
                e["count"] = json!(count + 1);
                e["lastTimestamp"] = json!(now_rfc3339());
            },
        );
        if matches!(bumped, Ok(Some(_))) {
            return true;
        }
    }
    false
}

/// Create the event and remember its name under `key`.
fn create_event(cluster: &Cluster, key: String, namespace: &str, event: Value, ctx: &WriteContext) {
    match cluster
        .registry
        .create(resources::core_events(), namespace, event, ctx, false)
    {
        Ok(created) => {
            let created_name = created
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let mut index = cluster.recorded_events.lock();
            if index.len() > 100_000 {
                index.clear();
            }
            index.insert(key, created_name);
        }
        Err(err) => tracing::debug!(%err, "could not record event"),
    }
}
