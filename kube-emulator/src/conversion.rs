//! Version conversion between the stored form and the served form of a resource. Only Events
//! need it: `events.k8s.io/v1` Events are stored as core/v1 Events (one table, as on a real
//! cluster), renaming `regarding`/`note`/`reportingController`/`deprecated*` on the way.

use serde_json::{Map, Value};

use crate::resources::ResourceType;

/// `(events.k8s.io/v1 field, core/v1 field)` pairs.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_events_v1(resource: &ResourceType) -> bool {
    resource.group == "events.k8s.io"
}

fn rename(
    object: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
    kind: &str,
    api_version: &str,
) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out: Map<String, Value> = map.clone();
    for (from, to) in pairs {
        match out.remove(from) {
            Some(value) => {
                out.insert(to.to_string(), value);
            }
            None => {
                out.remove(to);
            }
        }
    }
    out.insert("kind".into(), Value::from(kind));
    out.insert("apiVersion".into(), Value::from(api_version));
    Value::Object(out)
}

/// Convert an object in `resource`'s served version to its stored form.
pub fn to_storage(resource: &ResourceType, object: Value) -> Value {
    if !is_events_v1(resource) {
        return object;
    }
    rename(&object, EVENT_FIELDS.iter().copied(), "Event", "v1")
}

/// Convert a stored object to `resource`'s served version.
pub fn from_storage(resource: &ResourceType, object: &Value) -> Value {
    if !is_events_v1(resource) {
        return object.clone();
    }
    rename(
        object,
        EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)),
        "Event",
        "events.k8s.io/v1",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_versions() {
        let events_v1 = crate::resources::by_plural("events.k8s.io", "events");
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reportingController": "me"});
        let stored = to_storage(events_v1, v1.clone());
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hello");
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(from_storage(events_v1, &stored), v1);
    }
}
