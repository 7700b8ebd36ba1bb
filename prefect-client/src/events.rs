//! Prefect events (`POST /events`, `POST /events/filter`): what Automations
//! trigger on. An event names a resource (`prefect.resource.id`) and related
//! resources by their labels, each label a string.
//!
//! The server stores an event once per `id` (a re-sent event is dropped, on
//! SQLite and PostgreSQL alike) and its triggers skip an id seen in the last
//! 15 minutes, so a sender that derives ids from what happened may re-send
//! after a lost answer without making a second event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::error::PrefectError;

/// A resource's labels (`prefect.resource.id`, `prefect.resource.name`,
/// `prefect.resource.role` for a related one, and any others).
pub type ResourceLabels = BTreeMap<String, String>;

/// Events read per `POST /events/filter` page (the server's maximum).
pub const EVENTS_PAGE_SIZE: usize = 50;

/// One event, as sent and as read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    /// e.g. `prefect.kubernetes.pod.running`.
    pub event: String,
    pub occurred: DateTime<Utc>,
    pub resource: ResourceLabels,
    #[serde(default)]
    pub related: Vec<ResourceLabels>,
    #[serde(default)]
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// An event known to have happened just before this one.
    #[serde(default)]
    pub follows: Option<Uuid>,
}

impl Event {
    /// The resource's `prefect.resource.id`.
    pub fn resource_id(&self) -> Option<&str> {
        self.resource.get("prefect.resource.id").map(String::as_str)
    }

    /// The related resource of `role`, if any.
    pub fn related_in_role(&self, role: &str) -> Option<&ResourceLabels> {
        self.related
            .iter()
            .find(|labels| labels.get("prefect.resource.role").map(String::as_str) == Some(role))
    }
}

/// Which events to read: all criteria combined with AND; unset ones do not
/// filter. `occurred` bounds are required by the server (it defaults to the
/// last 180 days up to now).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Exact event names.
    pub names: Option<Vec<String>>,
    /// Event name prefixes, e.g. `prefect.kubernetes.pod.`.
    pub name_prefixes: Option<Vec<String>>,
    /// Event ids.
    pub ids: Option<Vec<Uuid>>,
    /// `prefect.resource.id` of the event's own resource.
    pub resource_ids: Option<Vec<String>>,
    /// `prefect.resource.id` of a related resource (e.g. `prefect.flow-run.<id>`).
    /// Stored events only: Prefect's live stream ([`crate::events_out`])
    /// ignores related-resource criteria; use `any_resource_ids` there.
    pub related_ids: Option<Vec<String>>,
    /// `prefect.resource.id` of the event's resource or of a related one
    /// (honoured by the live stream too).
    pub any_resource_ids: Option<Vec<String>>,
}

impl EventFilter {
    /// The request body (`{"filter": …, "limit": …}`).
    fn to_body(&self, limit: usize) -> serde_json::Value {
        serde_json::json!({ "filter": self.to_filter_json(), "limit": limit.min(EVENTS_PAGE_SIZE) })
    }

    /// The server's `EventFilter` object.
    pub(crate) fn to_filter_json(&self) -> serde_json::Value {
        let mut filter = serde_json::Map::new();
        let mut occurred = serde_json::Map::new();
        if let Some(since) = self.since {
            occurred.insert("since".into(), serde_json::json!(since));
        }
        if let Some(until) = self.until {
            occurred.insert("until".into(), serde_json::json!(until));
        }
        filter.insert("occurred".into(), occurred.into());
        let mut event = serde_json::Map::new();
        if let Some(names) = &self.names {
            event.insert("name".into(), serde_json::json!(names));
        }
        if let Some(prefixes) = &self.name_prefixes {
            event.insert("prefix".into(), serde_json::json!(prefixes));
        }
        if !event.is_empty() {
            filter.insert("event".into(), event.into());
        }
        if let Some(ids) = &self.ids {
            filter.insert("id".into(), serde_json::json!({ "id": ids }));
        }
        if let Some(resources) = &self.resource_ids {
            filter.insert("resource".into(), serde_json::json!({ "id": resources }));
        }
        if let Some(related) = &self.related_ids {
            filter.insert("related".into(), serde_json::json!({ "id": related }));
        }
        if let Some(any) = &self.any_resource_ids {
            filter.insert("any_resource".into(), serde_json::json!({ "id": any }));
        }
        serde_json::Value::Object(filter)
    }
}

/// One page of `POST /events/filter`.
#[derive(Debug, Deserialize)]
struct EventPage {
    events: Vec<Event>,
}

impl PrefectClient {
    /// `POST /events` with a batch of events (204). An empty batch sends
    /// nothing.
    pub async fn create_events(&self, events: &[Event]) -> Result<(), PrefectError> {
        if events.is_empty() {
            return Ok(());
        }
        self.send_json_no_content(Method::POST, &["events"], events)
            .await
    }

    /// `POST /events/filter`: the first [`EVENTS_PAGE_SIZE`] events matching
    /// `filter`, newest first (the server's order).
    pub async fn read_events(&self, filter: &EventFilter) -> Result<Vec<Event>, PrefectError> {
        let page: EventPage = self
            .send_json(
                Method::POST,
                &["events", "filter"],
                &filter.to_body(EVENTS_PAGE_SIZE),
            )
            .await?;
        Ok(page.events)
    }

    /// Which of these event ids the server has stored, looking at events that
    /// occurred between `since` and `until` (one call per
    /// [`EVENTS_PAGE_SIZE`] ids).
    pub async fn stored_event_ids(
        &self,
        ids: &[Uuid],
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, PrefectError> {
        let mut stored = Vec::new();
        for chunk in ids.chunks(EVENTS_PAGE_SIZE) {
            let filter = EventFilter {
                since: Some(since),
                until: Some(until),
                ids: Some(chunk.to_vec()),
                ..EventFilter::default()
            };
            stored.extend(self.read_events(&filter).await?.into_iter().map(|e| e.id));
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_filter_body_names_only_what_is_set() {
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let filter = EventFilter {
            since: Some(since),
            name_prefixes: Some(vec!["prefect.kubernetes.pod.".into()]),
            related_ids: Some(vec!["prefect.flow-run.x".into()]),
            ..EventFilter::default()
        };
        assert_eq!(
            filter.to_body(500),
            json!({
                "filter": {
                    "occurred": {"since": "2026-01-01T00:00:00Z"},
                    "event": {"prefix": ["prefect.kubernetes.pod."]},
                    "related": {"id": ["prefect.flow-run.x"]},
                },
                "limit": 50,
            })
        );
    }

    #[test]
    fn an_event_serialises_as_the_server_reads_it() {
        let event = Event {
            id: Uuid::from_u128(1),
            event: "prefect.kubernetes.pod.running".into(),
            occurred: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            resource: [(
                "prefect.resource.id".to_string(),
                "prefect.kubernetes.pod.u".to_string(),
            )]
            .into(),
            related: vec![[
                (
                    "prefect.resource.id".to_string(),
                    "prefect.flow-run.r".to_string(),
                ),
                ("prefect.resource.role".to_string(), "flow-run".to_string()),
            ]
            .into()],
            payload: Default::default(),
            follows: None,
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value["resource"]["prefect.resource.id"],
            "prefect.kubernetes.pod.u"
        );
        assert_eq!(value["related"][0]["prefect.resource.role"], "flow-run");
        assert_eq!(
            event.related_in_role("flow-run").unwrap()["prefect.resource.id"],
            "prefect.flow-run.r"
        );
        assert_eq!(event.resource_id(), Some("prefect.kubernetes.pod.u"));
    }
}
