//! What the cluster's node autoscaler says about a pod that waits for a node, read from
//! the Events it records on the pod, and what the reporter keeps of it per pod.
//!
//! The reasons and messages are the autoscalers' own (quoted from their sources, the
//! tests use them verbatim):
//!
//! | autoscaler | Event on the pod | meaning |
//! |---|---|---|
//! | cluster-autoscaler | `TriggeredScaleUp`, `pod triggered scale-up: [{gpu 1->2 (max: 3)}]` | a node is coming (`processors/status/eventing_scale_up_processor.go`; the list is `ScaleUpInfo.String()` of `processors/nodegroupset/nodegroup_set_processor.go`) |
//! | cluster-autoscaler | `NotTriggerScaleUp`, `pod didn't trigger scale-up: 1 max node group size reached` (also `… in backoff after failed scale-up`, `… not ready for scale-up`, `… Insufficient cpu`, `max total nodes in cluster reached`) | it will not add a node (`core/scaleup/orchestrator/skippedreasons.go`) |
//! | cluster-autoscaler (GKE) | `FailedScaleUp`, `Node scale up in zones … associated with this pod failed: … Pod is at risk of not being scheduled.` | the cloud refused the node |
//! | Karpenter | `Nominated`, `Pod should schedule on: nodeclaim/gpu-x7k2p` | a node is coming (`pkg/controllers/provisioning/scheduling/events.go`) |
//! | Karpenter | `FailedScheduling` from `karpenter`, `Failed to schedule pod, node limits have been exhausted for nodepool` | it cannot add a node (same file; errors of `scheduler.go`, `nodeclaim.go`) |
//!
//! The default scheduler also records `FailedScheduling`, from `default-scheduler` and
//! worded `0/3 nodes are available: …`; only Karpenter's counts here.

use std::fmt;

use k8s_openapi::api::core::v1::Event;

use crate::observe::{timestamp_of, timestamp_of_micro, Timestamp};

/// The autoscaler that spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Autoscaler {
    ClusterAutoscaler,
    Karpenter,
}

impl fmt::Display for Autoscaler {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::ClusterAutoscaler => "cluster-autoscaler",
            Self::Karpenter => "Karpenter",
        })
    }
}

/// Whether a node is coming for the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleUpVerdict {
    /// A scale-up that should bring a node for the pod is under way.
    Coming,
    /// The autoscaler will not or cannot add a node for the pod.
    Refused,
}

/// One Event of an autoscaler about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleUpSignal {
    pub autoscaler: Autoscaler,
    pub verdict: ScaleUpVerdict,
    /// The Event's reason (`TriggeredScaleUp`, `NotTriggerScaleUp`, `Nominated`, …).
    pub reason: Box<str>,
    /// The Event's message, as the autoscaler wrote it.
    pub message: Box<str>,
    /// When the autoscaler first said so (`firstTimestamp`, `eventTime`).
    pub first_seen: Option<Timestamp>,
    /// When it last said so (`lastTimestamp`, `series.lastObservedTime`).
    pub last_seen: Option<Timestamp>,
}

/// The pod an Event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub uid: Option<Box<str>>,
    pub namespace: Box<str>,
    pub name: Box<str>,
}

const TRIGGERED_PREFIX: &str = "pod triggered scale-up: ";
const NOMINATED_PREFIX: &str = "Pod should schedule on: ";
const KARPENTER_FAILED_PREFIX: &str = "Failed to schedule pod, ";

/// The autoscaler signal an Event carries, with the pod it is about; `None` for every
/// other Event.
pub fn scale_up_signal(event: &Event) -> Option<(PodRef, ScaleUpSignal)> {
    let involved = &event.involved_object;
    if involved.kind.as_deref() != Some("Pod") {
        return None;
    }
    let reason = event.reason.as_deref()?;
    let message = event.message.as_deref().unwrap_or_default().trim();
    let (autoscaler, verdict) = classify(reason, message, component(event))?;
    let pod = PodRef {
        uid: involved
            .uid
            .as_deref()
            .filter(|uid| !uid.is_empty())
            .map(Box::from),
        namespace: involved
            .namespace
            .as_deref()
            .or(event.metadata.namespace.as_deref())
            .unwrap_or_default()
            .into(),
        name: involved.name.as_deref().filter(|n| !n.is_empty())?.into(),
    };
    let signal = ScaleUpSignal {
        autoscaler,
        verdict,
        reason: reason.into(),
        message: message.into(),
        first_seen: first_seen(event),
        last_seen: last_seen(event),
    };
    Some((pod, signal))
}

fn classify(reason: &str, message: &str, component: &str) -> Option<(Autoscaler, ScaleUpVerdict)> {
    use Autoscaler::{ClusterAutoscaler, Karpenter};
    use ScaleUpVerdict::{Coming, Refused};
    match reason {
        "TriggeredScaleUp" => Some((ClusterAutoscaler, Coming)),
        "NotTriggerScaleUp" | "FailedScaleUp" => Some((ClusterAutoscaler, Refused)),
        "Nominated" if message.starts_with(NOMINATED_PREFIX) => Some((Karpenter, Coming)),
        "FailedScheduling"
            if component == "karpenter" || message.starts_with(KARPENTER_FAILED_PREFIX) =>
        {
            Some((Karpenter, Refused))
        }
        _ => None,
    }
}

fn component(event: &Event) -> &str {
    event
        .reporting_component
        .as_deref()
        .filter(|component| !component.is_empty())
        .or_else(|| event.source.as_ref()?.component.as_deref())
        .unwrap_or_default()
}

fn first_seen(event: &Event) -> Option<Timestamp> {
    event
        .first_timestamp
        .as_ref()
        .and_then(timestamp_of)
        .or_else(|| event.event_time.as_ref().and_then(timestamp_of_micro))
        .or_else(|| last_seen(event))
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    let series = || {
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
        .or_else(series)
        .or_else(|| event.event_time.as_ref().and_then(timestamp_of_micro))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(timestamp_of)
        })
}

impl ScaleUpSignal {
    /// What the pod waits for, or why no node comes, in a few words:
    /// `scale-up of nodegroup gpu 1→2 triggered`, `Karpenter nominated nodeclaim/gpu-x7k2p`,
    /// `cluster-autoscaler will not add a node: pod didn't trigger scale-up: …`.
    pub fn summary(&self) -> String {
        match (self.verdict, self.autoscaler) {
            (ScaleUpVerdict::Coming, Autoscaler::ClusterAutoscaler) => {
                match triggered_groups(&self.message) {
                    Some(groups) => format!("scale-up of {groups} triggered"),
                    None => format!("cluster-autoscaler triggered a scale-up ({})", self.message),
                }
            }
            (ScaleUpVerdict::Coming, Autoscaler::Karpenter) => {
                let target = self
                    .message
                    .strip_prefix(NOMINATED_PREFIX)
                    .unwrap_or(&self.message);
                format!("Karpenter nominated {target}")
            }
            (ScaleUpVerdict::Refused, autoscaler) => {
                format!("{autoscaler} will not add a node: {}", self.message)
            }
        }
    }

    /// The flow-run log line for the Event (the dedup and count suffix are the caller's).
    pub fn log_line(&self, pod_name: &str) -> String {
        let detail = format!(
            "Kubernetes event {} on pod {pod_name} from {}: {}",
            self.reason, self.autoscaler, self.message
        );
        match self.verdict {
            ScaleUpVerdict::Coming => {
                format!("Waiting for a new node: {} ({detail})", self.summary())
            }
            ScaleUpVerdict::Refused => format!("No new node is coming: {}", detail),
        }
    }
}

/// `nodegroup gpu 1→2` (or `nodegroups gpu 1→2, cpu 0→1`) from cluster-autoscaler's
/// `pod triggered scale-up: [{gpu 1->2 (max: 3)} {cpu 0->1 (max: 5)}]`. Group ids that
/// are URLs (GCE instance groups) are shortened to their last segment.
fn triggered_groups(message: &str) -> Option<String> {
    let list = message.strip_prefix(TRIGGERED_PREFIX)?;
    let groups: Vec<String> = list
        .split('{')
        .skip(1)
        .filter_map(|entry| {
            let entry = entry.split('}').next()?;
            let mut words = entry.split_whitespace();
            let id = words.next()?;
            let (from, to) = words.next()?.split_once("->")?;
            let id = id.rsplit('/').next().unwrap_or(id);
            Some(format!("{id} {from}→{to}"))
        })
        .collect();
    match groups.len() {
        0 => None,
        1 => Some(format!("nodegroup {}", groups[0])),
        _ => Some(format!("nodegroups {}", groups.join(", "))),
    }
}

/// What the reporter keeps per pod: when a node was first said to be coming, and the
/// latest word of the autoscaler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleUpView {
    /// The earliest `first_seen` of a [`ScaleUpVerdict::Coming`] signal: the scale-up
    /// limit counts from here, across repeated scale-ups for the same pod.
    pub coming_since: Option<Timestamp>,
    pub latest: ScaleUpSignal,
}

impl ScaleUpView {
    pub fn new(signal: ScaleUpSignal) -> Self {
        let mut view = ScaleUpView {
            coming_since: None,
            latest: signal.clone(),
        };
        view.note_coming(&signal);
        view
    }

    /// Takes in a later (or repeated) signal; `true` when the view changed. A signal
    /// older than the latest one only moves `coming_since`.
    pub fn observe(&mut self, signal: ScaleUpSignal) -> bool {
        let before = self.clone();
        self.note_coming(&signal);
        let newer = match (signal.last_seen, self.latest.last_seen) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        };
        if newer {
            self.latest = signal;
        }
        *self != before
    }

    fn note_coming(&mut self, signal: &ScaleUpSignal) {
        if signal.verdict != ScaleUpVerdict::Coming {
            return;
        }
        if let Some(at) = signal.first_seen.or(signal.last_seen) {
            self.coming_since = Some(self.coming_since.map_or(at, |since| since.min(at)));
        }
    }

    /// The autoscaler's latest word is that no node will come.
    pub fn is_refused(&self) -> bool {
        self.latest.verdict == ScaleUpVerdict::Refused
    }
}

#[cfg(test)]
mod tests;
