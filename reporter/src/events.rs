//! Events about our pods (core/v1 `Event`: Scheduled, Pulling, BackOff, FailedScheduling,
//! Killing, Evicted, …) and Jobs (SuccessfulCreate, FailedCreate, BackoffLimitExceeded, …)
//! turned into flow-run log lines, each with a dedup key that stays the same across
//! reporter restarts so a restarted reporter can skip what it already forwarded. The node
//! autoscaler's Events say what the pod waits for (`Waiting for a new node: scale-up of
//! nodegroup gpu 1→2 triggered …`) or that no node is coming ([`crate::autoscaler`]).
//!
//! The Event does not carry our labels: the caller finds the flow run through
//! [`EventLog::subject_uid`] (or namespace + name) in its pod and Job views, see
//! [`EventLog::concerns_pod`] and [`EventLog::concerns_job`].

use std::fmt;

use k8s_openapi::api::core::v1::Event;
use uuid::Uuid;

use crate::autoscaler::{ScaleUpSignal, ScaleUpVerdict};
use crate::observe::{timestamp_of, timestamp_of_micro, JobView, PodView, Timestamp};

/// Prefect (Python `logging`) level of a forwarded line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    /// The numeric level Prefect's `POST /api/logs/` expects.
    pub fn python_level(self) -> u8 {
        match self {
            Self::Debug => 10,
            Self::Info => 20,
            Self::Warning => 30,
            Self::Error => 40,
        }
    }
}

/// Identifies one observation of an Event: the Event's uid (its namespace/name when the
/// uid is missing) and its repeat count. Kubernetes aggregates repeats of an Event by
/// raising `count`, so each new count is forwarded once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventDedupKey {
    pub event: Box<str>,
    pub count: u32,
}

impl EventDedupKey {
    /// A UUID derived only from the key (v5), identical in every reporter process: usable
    /// as a `Nats-Msg-Id` or as the key of a KV bucket of forwarded events.
    pub fn to_uuid(&self) -> Uuid {
        let namespace = Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            b"https://prefect-k8s.io/reporter/pod-events",
        );
        Uuid::new_v5(&namespace, self.to_string().as_bytes())
    }

    /// Already forwarded when this Event was forwarded with the same or a higher count.
    pub fn is_covered_by(&self, forwarded_count: u32) -> bool {
        self.count <= forwarded_count
    }
}

impl fmt::Display for EventDedupKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}#{}", self.event, self.count)
    }
}

/// The kind of object an Event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSubjectKind {
    Pod,
    Job,
}

impl EventSubjectKind {
    fn parse(kind: Option<&str>) -> Option<Self> {
        match kind {
            Some("Pod") => Some(Self::Pod),
            Some("Job") => Some(Self::Job),
            _ => None,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Job => "Job",
        }
    }
}

/// An Event about one of our pods or Jobs as a flow-run log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    pub subject_kind: EventSubjectKind,
    pub subject_uid: Option<Box<str>>,
    pub subject_name: Box<str>,
    pub namespace: Box<str>,
    pub level: LogLevel,
    pub message: String,
    /// When it last happened (`lastTimestamp`, `series.lastObservedTime`, `eventTime`,
    /// `firstTimestamp`, then the Event's creation time).
    pub timestamp: Option<Timestamp>,
    pub dedup_key: EventDedupKey,
}

impl EventLog {
    /// The Event is about this pod (same uid when known, else same namespace and name).
    pub fn concerns_pod(&self, pod: &PodView) -> bool {
        self.subject_kind == EventSubjectKind::Pod
            && self.is_about(&pod.uid, &pod.namespace, &pod.name)
    }

    /// The Event is about this Job (same uid when known, else same namespace and name).
    pub fn concerns_job(&self, job: &JobView) -> bool {
        self.subject_kind == EventSubjectKind::Job
            && self.is_about(&job.uid, &job.namespace, &job.name)
    }

    fn is_about(&self, uid: &str, namespace: &str, name: &str) -> bool {
        match &self.subject_uid {
            Some(subject_uid) => **subject_uid == *uid,
            None => *self.namespace == *namespace && *self.subject_name == *name,
        }
    }
}

/// Reasons worth an ERROR line: the pod is being killed or will never run.
const ERROR_REASONS: [&str; 5] = [
    "Evicted",
    "Preempted",
    "OOMKilling",
    "DeadlineExceeded",
    "TaintManagerEviction",
];

/// Normal-typed reasons that still announce trouble (e.g. `Back-off pulling image`).
const WARNING_REASONS: [&str; 1] = ["BackOff"];

/// The log line for an Event about a pod or a Job; `None` when the Event is about
/// another kind of object or lacks a name/reason.
pub fn event_log(event: &Event) -> Option<EventLog> {
    let involved = &event.involved_object;
    let subject_kind = EventSubjectKind::parse(involved.kind.as_deref())?;
    let subject_name: Box<str> = involved.name.as_deref().filter(|n| !n.is_empty())?.into();
    let reason = event.reason.as_deref().filter(|r| !r.is_empty())?;
    let namespace: Box<str> = involved
        .namespace
        .as_deref()
        .or(event.metadata.namespace.as_deref())
        .unwrap_or_default()
        .into();
    let event_identity: Box<str> = match (&event.metadata.uid, &event.metadata.name) {
        (Some(uid), _) if !uid.is_empty() => uid.as_str().into(),
        (_, Some(name)) => format!("{namespace}/{name}").into(),
        _ => return None,
    };
    let count = event
        .series
        .as_ref()
        .and_then(|series| series.count)
        .or(event.count)
        .and_then(|count| u32::try_from(count).ok())
        .unwrap_or(1)
        .max(1);
    let (level, mut message) = match crate::autoscaler::scale_up_signal(event) {
        Some((_, signal)) => (autoscaler_level(&signal), signal.log_line(&subject_name)),
        None => (
            level_of(event, reason),
            describe(event, reason, subject_kind, &subject_name),
        ),
    };
    if count > 1 {
        message.push_str(&format!(" (seen {count} times)"));
    }
    Some(EventLog {
        subject_kind,
        subject_uid: involved
            .uid
            .as_deref()
            .filter(|uid| !uid.is_empty())
            .map(Box::from),
        subject_name,
        namespace,
        level,
        message,
        timestamp: last_seen(event),
        dedup_key: EventDedupKey {
            event: event_identity,
            count,
        },
    })
}

fn level_of(event: &Event, reason: &str) -> LogLevel {
    let warning = event.type_.as_deref() == Some("Warning");
    if ERROR_REASONS.contains(&reason) {
        LogLevel::Error
    } else if warning || WARNING_REASONS.contains(&reason) {
        LogLevel::Warning
    } else {
        LogLevel::Info
    }
}

/// A refusal of the autoscaler is trouble even when recorded as `Normal`
/// (`NotTriggerScaleUp`); a node coming is news.
fn autoscaler_level(signal: &ScaleUpSignal) -> LogLevel {
    match signal.verdict {
        ScaleUpVerdict::Coming => LogLevel::Info,
        ScaleUpVerdict::Refused => LogLevel::Warning,
    }
}

/// `Kubernetes event <reason> on <kind> <name>[, container "<c>"][: <message>]`.
fn describe(
    event: &Event,
    reason: &str,
    subject_kind: EventSubjectKind,
    subject_name: &str,
) -> String {
    let mut message = format!(
        "Kubernetes event {reason} on {} {subject_name}",
        subject_kind.noun()
    );
    if let Some(container) = event
        .involved_object
        .field_path
        .as_deref()
        .and_then(container_of_field_path)
    {
        message.push_str(&format!(", container \"{container}\""));
    }
    if let Some(text) = event
        .message
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        message.push_str(": ");
        message.push_str(text);
    }
    message
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    let series_time = || {
        let series = event.series.as_ref()?;
        series
            .last_observed_time
            .as_ref()
            .and_then(timestamp_of_micro)
    };
    event
        .last_timestamp
        .as_ref()
        .and_then(timestamp_of)
        .or_else(series_time)
        .or_else(|| event.event_time.as_ref().and_then(timestamp_of_micro))
        .or_else(|| event.first_timestamp.as_ref().and_then(timestamp_of))
        .or_else(|| {
            let created = event.metadata.creation_timestamp.as_ref()?;
            timestamp_of(created)
        })
}

/// `spec.containers{name}` / `spec.initContainers{name}` -> `name`.
fn container_of_field_path(field_path: &str) -> Option<&str> {
    let open = field_path.find('{')?;
    let inner = field_path[open + 1..].strip_suffix('}')?;
    (!inner.is_empty()).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::*;

    #[test]
    fn scheduled_event_is_an_info_line_with_a_stable_key() {
        let event = pod_event(
            "Normal",
            "Scheduled",
            "Successfully assigned prefect/crimson-otter-x7k2p-5bhw4 to v1.36-control-plane",
            1,
            at(1),
            None,
        );
        let line = event_log(&event).expect("pod event");
        assert_eq!(line.level, LogLevel::Info);
        assert_eq!(
            line.message,
            "Kubernetes event Scheduled on pod crimson-otter-x7k2p-5bhw4: Successfully assigned \
             prefect/crimson-otter-x7k2p-5bhw4 to v1.36-control-plane"
        );
        assert_eq!(line.timestamp, Some(at(1)));
        assert_eq!(
            line.dedup_key.to_string(),
            "6d1c8a2b-93f4-4e0a-8b7e-1f2a3b4c5d6e#1"
        );
        assert_eq!(
            line.dedup_key.to_uuid(),
            event_log(&event).expect("pod event").dedup_key.to_uuid(),
            "same key, same uuid"
        );
        assert!(line.concerns_pod(&PodFixture::new().view()));
        assert!(!line.concerns_job(&JobFixture::new().view()));
    }

    #[test]
    fn failed_scheduling_is_a_warning_with_the_scheduler_message() {
        let event = pod_event(
            "Warning",
            "FailedScheduling",
            "0/3 nodes are available: 3 Insufficient cpu.",
            1,
            at(0),
            None,
        );
        let line = event_log(&event).expect("pod event");
        assert_eq!(line.level, LogLevel::Warning);
        assert_eq!(line.level.python_level(), 30);
        assert!(line
            .message
            .ends_with(": 0/3 nodes are available: 3 Insufficient cpu."));
    }

    #[test]
    fn repeated_pull_back_off_names_the_container_and_gets_a_new_key_per_count() {
        let first = pod_event(
            "Normal",
            "BackOff",
            "Back-off pulling image \"registry.example.com/flows/etl:2.1\"",
            1,
            at(5),
            Some("spec.containers{prefect-job}"),
        );
        let fourth = pod_event(
            "Normal",
            "BackOff",
            "Back-off pulling image \"registry.example.com/flows/etl:2.1\"",
            4,
            at(70),
            Some("spec.containers{prefect-job}"),
        );
        let first = event_log(&first).expect("pod event");
        let fourth = event_log(&fourth).expect("pod event");
        assert_eq!(
            first.level,
            LogLevel::Warning,
            "a pull back-off is trouble even if Normal"
        );
        assert_eq!(
            fourth.message,
            "Kubernetes event BackOff on pod crimson-otter-x7k2p-5bhw4, container \"prefect-job\": \
             Back-off pulling image \"registry.example.com/flows/etl:2.1\" (seen 4 times)"
        );
        assert_ne!(first.dedup_key, fourth.dedup_key);
        assert_ne!(first.dedup_key.to_uuid(), fourth.dedup_key.to_uuid());
        assert!(first.dedup_key.is_covered_by(fourth.dedup_key.count));
        assert!(!fourth.dedup_key.is_covered_by(first.dedup_key.count));
    }

    #[test]
    fn eviction_is_an_error_line() {
        let event = pod_event(
            "Warning",
            "Evicted",
            "The node was low on resource: memory.",
            1,
            at(9),
            None,
        );
        assert_eq!(event_log(&event).expect("pod event").level, LogLevel::Error);
    }

    #[test]
    fn failed_create_on_the_job_is_a_warning_about_the_job() {
        let mut event = pod_event(
            "Warning",
            "FailedCreate",
            "Error creating: pods \"crimson-otter-x7k2p-5bhw4\" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8, limited: cpu=8",
            3,
            at(20),
            None,
        );
        event.involved_object.kind = Some("Job".to_owned());
        event.involved_object.name = Some(JOB_NAME.to_owned());
        event.involved_object.uid = Some(JOB_UID.to_owned());
        let line = event_log(&event).expect("job event");
        assert_eq!(line.subject_kind, EventSubjectKind::Job);
        assert_eq!(line.level, LogLevel::Warning);
        assert!(
            line.message.starts_with(
                "Kubernetes event FailedCreate on Job crimson-otter-x7k2p: Error creating:"
            ),
            "{}",
            line.message
        );
        assert!(line.concerns_job(&JobFixture::new().view()));
        assert!(!line.concerns_pod(&PodFixture::new().view()));
    }

    #[test]
    fn autoscaler_events_say_what_the_pod_waits_for_or_that_no_node_comes() {
        let coming = event_log(&triggered_scale_up(at(5))).expect("pod event");
        assert_eq!(coming.level, LogLevel::Info);
        assert!(
            coming
                .message
                .starts_with("Waiting for a new node: scale-up of nodegroup gpu 1→2 triggered"),
            "{}",
            coming.message
        );
        let refused = event_log(&not_triggered_scale_up(at(6))).expect("pod event");
        assert_eq!(
            refused.level,
            LogLevel::Warning,
            "even though recorded as Normal"
        );
        assert_eq!(
            refused.message,
            "No new node is coming: Kubernetes event NotTriggerScaleUp on pod \
             crimson-otter-x7k2p-5bhw4 from cluster-autoscaler: pod didn't trigger scale-up: 1 \
             max node group size reached"
        );
    }

    #[test]
    fn events_about_other_kinds_are_not_forwarded() {
        let mut event = pod_event("Normal", "Starting", "Starting kubelet.", 1, at(0), None);
        event.involved_object.kind = Some("Node".to_owned());
        assert_eq!(event_log(&event), None);
    }

    #[test]
    fn event_without_uid_is_keyed_by_its_name() {
        let mut event = pod_event("Normal", "Pulling", "Pulling image \"x\"", 2, at(3), None);
        event.metadata.uid = None;
        let line = event_log(&event).expect("pod event");
        assert_eq!(
            line.dedup_key.to_string(),
            "prefect/crimson-otter-x7k2p-5bhw4.18a3c2f1d2e3b4c5#2"
        );
        assert!(line.concerns_pod(&PodFixture::new().view()));
    }
}
