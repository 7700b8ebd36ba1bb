//! Test-only builders of Pod, Job and Event objects, written as `serde_json::json!` in the
//! shape the Kubernetes 1.36 API server returns (see the recordings in
//! `kube-emulator/tests/testdata/k8s-transcripts/v1-36/`), deserialized into k8s-openapi types and, for Pods and Jobs, into our views.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use serde_json::{json, Value};

use crate::observe::{JobView, PodView, Timestamp};
use crate::run_state::{FlowRunState, StateType};

pub const FLOW_RUN_ID: &str = "0f6c2a3e-7c1d-4b7e-9a51-3d2f1e0c9b88";
pub const NAMESPACE: &str = "prefect";
pub const JOB_NAME: &str = "crimson-otter-x7k2p";
pub const JOB_UID: &str = "f2bd6b7a-351c-4667-9c48-a56f59473c5f";
pub const POD_NAME: &str = "crimson-otter-x7k2p-5bhw4";
pub const POD_UID: &str = "35ae7cd4-5a0f-4730-bd1d-d22a890906bd";
pub const CONTAINER: &str = "prefect-job";
pub const IMAGE: &str = "registry.example.com/flows/etl:2.1";

/// `2026-06-15T04:15:57Z` plus `seconds` (the transcripts' clock).
pub fn at(seconds: i64) -> Timestamp {
    DateTime::<Utc>::from_timestamp(1_781_496_957, 0).expect("valid base time")
        + TimeDelta::seconds(seconds)
}

pub fn rfc3339(time: Timestamp) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn run_state(state_type: StateType, name: &str) -> FlowRunState {
    FlowRunState::new(state_type, name)
}

fn prefect_labels(job_name: &str, job_uid: &str) -> Value {
    json!({
        "batch.kubernetes.io/controller-uid": job_uid,
        "batch.kubernetes.io/job-name": job_name,
        "controller-uid": job_uid,
        "job-name": job_name,
        "prefect.io/flow-run-id": FLOW_RUN_ID,
        "prefect.io/flow-run-name": "crimson-otter",
        "prefect.io/version": "3.9.1",
        "app.kubernetes.io/managed-by": "prefect",
        "app.kubernetes.io/part-of": "prefect",
        "prefect.io/work-pool-name": "kubernetes"
    })
}

/// A Job as `GET /apis/batch/v1/namespaces/{ns}/jobs/{name}` returns it.
#[derive(Clone, Debug)]
pub struct JobFixture {
    name: String,
    uid: String,
    created: Timestamp,
    backoff_limit: Option<i32>,
    pod_watch_timeout: Option<String>,
    scale_up_timeout: Option<String>,
    deletion: Option<Timestamp>,
    suspend: bool,
    claim: Option<flow_run_proto::SubmissionKey>,
    status: Value,
}

impl JobFixture {
    /// Just created by the dispatcher: no status yet.
    pub fn new() -> Self {
        Self {
            name: JOB_NAME.to_owned(),
            uid: JOB_UID.to_owned(),
            created: at(0),
            backoff_limit: Some(0),
            pod_watch_timeout: Some("60".to_owned()),
            scale_up_timeout: None,
            deletion: None,
            suspend: false,
            claim: None,
            status: json!({}),
        }
    }

    /// Created suspended by the dispatcher, not yet released.
    pub fn suspended(mut self) -> Self {
        self.suspend = true;
        self
    }

    /// Released (unsuspended) at `time`, as the Job controller records it.
    pub fn released(mut self, time: Timestamp) -> Self {
        self.status = json!({"conditions": [{
            "type": "Suspended", "status": "False", "reason": "JobResumed",
            "message": "Job resumed", "lastProbeTime": rfc3339(time),
            "lastTransitionTime": rfc3339(time)
        }]});
        self
    }

    /// Carries the dispatcher's claim annotation for `key`.
    pub fn claimed_for(mut self, key: flow_run_proto::SubmissionKey) -> Self {
        self.claim = Some(key);
        self
    }

    pub fn named(mut self, name: &str, uid: &str) -> Self {
        self.name = name.to_owned();
        self.uid = uid.to_owned();
        self
    }

    pub fn created(mut self, time: Timestamp) -> Self {
        self.created = time;
        self
    }

    pub fn backoff_limit(mut self, limit: Option<i32>) -> Self {
        self.backoff_limit = limit;
        self
    }

    /// The annotation value as the dispatcher writes it (`None`: no annotation).
    pub fn pod_watch_timeout(mut self, value: Option<&str>) -> Self {
        self.pod_watch_timeout = value.map(str::to_owned);
        self
    }

    /// The scale-up limit annotation as the dispatcher writes it (`None`: no annotation).
    pub fn scale_up_timeout(mut self, value: Option<&str>) -> Self {
        self.scale_up_timeout = value.map(str::to_owned);
        self
    }

    pub fn deleting(mut self, time: Timestamp) -> Self {
        self.deletion = Some(time);
        self
    }

    /// One pod running or pending (REPLAY: `active:1, ready:0`).
    pub fn active(mut self) -> Self {
        self.status = json!({
            "startTime": rfc3339(self.created),
            "active": 1,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "ready": 0
        });
        self
    }

    /// Still active after `failed` pod failures (retries left).
    pub fn active_after_failures(mut self, failed: i32) -> Self {
        self.status = json!({
            "startTime": rfc3339(self.created),
            "active": 1,
            "failed": failed,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "ready": 0
        });
        self
    }

    /// `FailureTarget` then `Failed` with `reason`, as the v1.31+ controller writes them.
    pub fn failed(mut self, reason: &str, message: &str, time: Timestamp) -> Self {
        let condition = |kind: &str| {
            json!({
                "type": kind, "status": "True",
                "lastProbeTime": rfc3339(time), "lastTransitionTime": rfc3339(time),
                "reason": reason, "message": message
            })
        };
        self.status = json!({
            "conditions": [condition("FailureTarget"), condition("Failed")],
            "startTime": rfc3339(self.created),
            "failed": 1,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "ready": 0
        });
        self
    }

    /// `failed` pods counted but no condition written yet.
    pub fn failed_without_condition(mut self, failed: i32) -> Self {
        self.status = json!({
            "startTime": rfc3339(self.created),
            "failed": failed,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "ready": 0
        });
        self
    }

    /// `SuccessCriteriaMet` then `Complete` (`CompletionsReached`).
    pub fn complete(mut self, time: Timestamp) -> Self {
        let condition = |kind: &str| {
            json!({
                "type": kind, "status": "True",
                "lastProbeTime": rfc3339(time), "lastTransitionTime": rfc3339(time),
                "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"
            })
        };
        self.status = json!({
            "conditions": [condition("SuccessCriteriaMet"), condition("Complete")],
            "startTime": rfc3339(self.created),
            "completionTime": rfc3339(time),
            "succeeded": 1,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "ready": 0
        });
        self
    }

    pub fn json(&self) -> Value {
        json!({
            "kind": "Job",
            "apiVersion": "batch/v1",
            "metadata": self.metadata_json(),
            "spec": self.spec_json(),
            "status": self.status
        })
    }

    /// The Job's `metadata`, with the annotations and deletion this fixture asks for.
    fn metadata_json(&self) -> Value {
        let mut metadata = json!({
            "name": self.name,
            "generateName": "crimson-otter-",
            "namespace": NAMESPACE,
            "uid": self.uid,
            "resourceVersion": "554",
            "generation": 1,
            "creationTimestamp": rfc3339(self.created),
            "labels": prefect_labels(&self.name, &self.uid),
            "managedFields": [{
                "manager": "prefect-k8s-dispatcher", "operation": "Update", "apiVersion": "batch/v1",
                "time": rfc3339(self.created), "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:backoffLimit": {}, "f:template": {}}}
            }]
        });
        let mut annotations = serde_json::Map::new();
        if let Some(timeout) = &self.pod_watch_timeout {
            annotations.insert(
                "prefect-k8s.io/pod-watch-timeout-seconds".into(),
                json!(timeout),
            );
        }
        if let Some(timeout) = &self.scale_up_timeout {
            annotations.insert(
                "prefect-k8s.io/scale-up-timeout-seconds".into(),
                json!(timeout),
            );
        }
        if let Some(key) = &self.claim {
            annotations.insert(
                flow_run_proto::kubernetes::CLAIM_ANNOTATION.into(),
                json!(key.claim_annotation()),
            );
        }
        if !annotations.is_empty() {
            metadata["annotations"] = Value::Object(annotations);
        }
        if let Some(deletion) = self.deletion {
            metadata["deletionTimestamp"] = json!(rfc3339(deletion));
            metadata["deletionGracePeriodSeconds"] = json!(0);
            metadata["finalizers"] = json!(["foregroundDeletion"]);
        }
        metadata
    }

    /// The Job's `spec`, with this fixture's `suspend` and backoff limit.
    fn spec_json(&self) -> Value {
        let mut spec = json!({
            "parallelism": 1,
            "completions": 1,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": self.uid}},
            "manualSelector": false,
            "template": {
                "metadata": {"labels": prefect_labels(&self.name, &self.uid)},
                "spec": {
                    "containers": [{
                        "name": CONTAINER, "image": IMAGE,
                        "args": ["prefect", "flow-run", "execute"],
                        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": FLOW_RUN_ID}],
                        "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent"
                    }],
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst",
                    "securityContext": {},
                    "schedulerName": "default-scheduler"
                }
            },
            "completionMode": "NonIndexed",
            "suspend": self.suspend,
            "podReplacementPolicy": "TerminatingOrFailed",
            "ttlSecondsAfterFinished": 3600
        });
        if let Some(limit) = self.backoff_limit {
            spec["backoffLimit"] = json!(limit);
        }
        spec
    }

    pub fn job(&self) -> Job {
        serde_json::from_value(self.json()).expect("fixture is a valid Job")
    }

    pub fn view(&self) -> JobView {
        JobView::from_job(&self.job()).expect("fixture carries the flow-run label")
    }
}

/// A pod of a Job as `GET /api/v1/namespaces/{ns}/pods` returns it, stage by stage
/// (kube-emulator.md §5).
#[derive(Clone, Debug)]
pub struct PodFixture {
    name: String,
    uid: String,
    job_name: String,
    job_uid: String,
    created: Timestamp,
    deletion: Option<Timestamp>,
    status: Value,
}

impl PodFixture {
    /// Created by the Job controller, not yet looked at by the scheduler.
    pub fn new() -> Self {
        Self {
            name: POD_NAME.to_owned(),
            uid: POD_UID.to_owned(),
            job_name: JOB_NAME.to_owned(),
            job_uid: JOB_UID.to_owned(),
            created: at(0),
            deletion: None,
            status: json!({"phase": "Pending", "qosClass": "BestEffort"}),
        }
    }

    pub fn of_job(mut self, job_name: &str, job_uid: &str, pod_name: &str, pod_uid: &str) -> Self {
        self.job_name = job_name.to_owned();
        self.job_uid = job_uid.to_owned();
        self.name = pod_name.to_owned();
        self.uid = pod_uid.to_owned();
        self
    }

    pub fn created(mut self, time: Timestamp) -> Self {
        self.created = time;
        self
    }

    pub fn deleting(mut self, time: Timestamp) -> Self {
        self.deletion = Some(time);
        self
    }

    /// Stage "Unschedulable": `PodScheduled=False, reason Unschedulable`.
    pub fn unschedulable(mut self, message: &str, since: Timestamp) -> Self {
        self.status = json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "lastProbeTime": null,
                "lastTransitionTime": rfc3339(since), "reason": "Unschedulable", "message": message
            }],
            "qosClass": "Burstable"
        });
        self
    }

    fn pending_on_node(
        scheduled: Timestamp,
        container_state: Value,
        containers_ready_reason: &str,
    ) -> Value {
        json!({
            "observedGeneration": 1,
            "phase": "Pending",
            "conditions": [
                {"type": "PodReadyToStartContainers", "observedGeneration": 1, "status": "False", "lastProbeTime": null, "lastTransitionTime": rfc3339(scheduled)},
                {"type": "Initialized", "observedGeneration": 1, "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(scheduled)},
                {"type": "Ready", "observedGeneration": 1, "status": "False", "lastProbeTime": null, "lastTransitionTime": rfc3339(scheduled), "reason": containers_ready_reason, "message": format!("containers with unready status: [{CONTAINER}]")},
                {"type": "ContainersReady", "observedGeneration": 1, "status": "False", "lastProbeTime": null, "lastTransitionTime": rfc3339(scheduled), "reason": containers_ready_reason, "message": format!("containers with unready status: [{CONTAINER}]")},
                {"type": "PodScheduled", "observedGeneration": 1, "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(scheduled)}
            ],
            "hostIP": "172.18.0.3",
            "hostIPs": [{"ip": "172.18.0.3"}],
            "startTime": rfc3339(scheduled),
            "containerStatuses": [{
                "name": CONTAINER,
                "state": container_state,
                "lastState": {},
                "ready": false,
                "restartCount": 0,
                "image": IMAGE,
                "imageID": "",
                "started": false
            }],
            "qosClass": "BestEffort"
        })
    }

    /// Stage "ContainerCreating" after being scheduled at `scheduled`.
    pub fn container_creating(mut self, scheduled: Timestamp) -> Self {
        self.status = Self::pending_on_node(
            scheduled,
            json!({"waiting": {"reason": "ContainerCreating"}}),
            "ContainersNotReady",
        );
        self
    }

    /// Scheduled at `scheduled`, container waiting with `reason`/`message`
    /// (ErrImagePull, ImagePullBackOff, InvalidImageName, CreateContainerConfigError).
    pub fn waiting(mut self, scheduled: Timestamp, reason: &str, message: &str) -> Self {
        self.status = Self::pending_on_node(
            scheduled,
            json!({"waiting": {"reason": reason, "message": message}}),
            "ContainersNotReady",
        );
        self
    }

    /// Stage "Running" since `started`.
    pub fn running(mut self, started: Timestamp) -> Self {
        self.status = json!({
            "observedGeneration": 1,
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(started)},
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(self.created)},
                {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(started)},
                {"type": "ContainersReady", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(started)},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(self.created)}
            ],
            "hostIP": "172.18.0.3",
            "podIP": "10.244.0.5",
            "startTime": rfc3339(self.created),
            "containerStatuses": [{
                "name": CONTAINER,
                "state": {"running": {"startedAt": rfc3339(started)}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": IMAGE,
                "imageID": "registry.example.com/flows/etl@sha256:a2d49ea686c2adfe3c992e47dc3b5e7fa6e6b5055609400dc2acaeb241c829f4",
                "containerID": "containerd://e52fde683fcbf6c352884cd1730c462dbd4aa57d940ebc876a660ed706cafab0",
                "started": true
            }],
            "qosClass": "BestEffort"
        });
        self
    }

    /// Container terminated with `reason`/`exit_code` at `finished`; phase `Succeeded`
    /// for exit 0, else `Failed` (REPLAY: exit 5, reason Error).
    pub fn terminated(mut self, reason: &str, exit_code: i32, finished: Timestamp) -> Self {
        let (phase, ready_reason) = if exit_code == 0 {
            ("Succeeded", "PodCompleted")
        } else {
            ("Failed", "PodFailed")
        };
        self.status = json!({
            "observedGeneration": 1,
            "phase": phase,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "False", "lastProbeTime": null, "lastTransitionTime": rfc3339(finished)},
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(self.created)},
                {"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": rfc3339(finished), "reason": ready_reason},
                {"type": "ContainersReady", "status": "False", "lastProbeTime": null, "lastTransitionTime": rfc3339(finished), "reason": ready_reason},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": rfc3339(self.created)}
            ],
            "hostIP": "172.18.0.3",
            "podIP": "10.244.0.5",
            "startTime": rfc3339(self.created),
            "containerStatuses": [{
                "name": CONTAINER,
                "state": {"terminated": {
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": rfc3339(self.created), "finishedAt": rfc3339(finished),
                    "containerID": "containerd://e52fde683fcbf6c352884cd1730c462dbd4aa57d940ebc876a660ed706cafab0"
                }},
                "lastState": {},
                "ready": false,
                "restartCount": 0,
                "image": IMAGE,
                "imageID": "registry.example.com/flows/etl@sha256:a2d49ea686c2adfe3c992e47dc3b5e7fa6e6b5055609400dc2acaeb241c829f4",
                "started": false
            }],
            "qosClass": "BestEffort"
        });
        self
    }

    /// Stage "Eviction (node pressure)": `phase Failed, reason Evicted`, `DisruptionTarget`.
    pub fn evicted(mut self, message: &str, time: Timestamp) -> Self {
        self = self.terminated("Error", 137, time);
        self.status["reason"] = json!("Evicted");
        self.status["message"] = json!(message);
        let disruption = json!({
            "type": "DisruptionTarget", "status": "True", "lastProbeTime": null,
            "lastTransitionTime": rfc3339(time), "reason": "TerminationByKubelet",
            "message": "Pod was terminated in response to imminent node shutdown."
        });
        self.status["conditions"]
            .as_array_mut()
            .expect("conditions array")
            .push(disruption);
        self
    }

    pub fn json(&self) -> Value {
        let mut metadata = json!({
            "name": self.name,
            "generateName": format!("{}-", self.job_name),
            "namespace": NAMESPACE,
            "uid": self.uid,
            "resourceVersion": "634",
            "generation": 1,
            "creationTimestamp": rfc3339(self.created),
            "labels": prefect_labels(&self.job_name, &self.job_uid),
            "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": self.job_name,
                "uid": self.job_uid, "controller": true, "blockOwnerDeletion": true
            }],
            "finalizers": ["batch.kubernetes.io/job-tracking"],
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": rfc3339(self.created), "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {}}}
            }]
        });
        if let Some(deletion) = self.deletion {
            metadata["deletionTimestamp"] = json!(rfc3339(deletion));
            metadata["deletionGracePeriodSeconds"] = json!(30);
        }
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": {
                "containers": [{
                    "name": CONTAINER, "image": IMAGE,
                    "args": ["prefect", "flow-run", "execute"],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent"
                }],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "nodeName": "v1.36-control-plane",
                "schedulerName": "default-scheduler",
                "priority": 0,
                "enableServiceLinks": true,
                "preemptionPolicy": "PreemptLowerPriority"
            },
            "status": self.status
        })
    }

    pub fn pod(&self) -> Pod {
        serde_json::from_value(self.json()).expect("fixture is a valid Pod")
    }

    pub fn view(&self) -> PodView {
        PodView::from_pod(&self.pod()).expect("fixture carries the flow-run label")
    }
}

/// A core/v1 Event about our pod as the kubelet or scheduler records it.
pub fn pod_event(
    event_type: &str,
    reason: &str,
    message: &str,
    count: i32,
    last_seen: Timestamp,
    field_path: Option<&str>,
) -> Event {
    let mut involved = json!({
        "kind": "Pod", "namespace": NAMESPACE, "name": POD_NAME, "uid": POD_UID,
        "apiVersion": "v1", "resourceVersion": "634"
    });
    if let Some(path) = field_path {
        involved["fieldPath"] = json!(path);
    }
    serde_json::from_value(json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": format!("{POD_NAME}.18a3c2f1d2e3b4c5"),
            "namespace": NAMESPACE,
            "uid": "6d1c8a2b-93f4-4e0a-8b7e-1f2a3b4c5d6e",
            "resourceVersion": "700",
            "creationTimestamp": rfc3339(at(0))
        },
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "v1.36-control-plane"},
        "firstTimestamp": rfc3339(at(0)),
        "lastTimestamp": rfc3339(last_seen),
        "count": count,
        "type": event_type,
        "eventTime": null,
        "reportingComponent": "kubelet",
        "reportingInstance": "v1.36-control-plane"
    }))
    .expect("fixture is a valid Event")
}

/// A core/v1 Event a node autoscaler (`cluster-autoscaler`, `karpenter`) records about
/// our pod, with the legacy recorder both use (`source.component`, first and last
/// timestamps, `reportingComponent`).
pub fn autoscaler_event(
    component: &str,
    event_type: &str,
    reason: &str,
    message: &str,
    first_seen: Timestamp,
    last_seen: Timestamp,
) -> Event {
    serde_json::from_value(json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": format!("{POD_NAME}.18a3c2f1d2e3{:04x}", last_seen.timestamp() % 0xffff),
            "namespace": NAMESPACE,
            "uid": format!("7e2d9b1c-0000-4000-8000-{:012x}", last_seen.timestamp()),
            "resourceVersion": "900",
            "creationTimestamp": rfc3339(first_seen)
        },
        "involvedObject": {
            "kind": "Pod", "namespace": NAMESPACE, "name": POD_NAME, "uid": POD_UID,
            "apiVersion": "v1", "resourceVersion": "634"
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": rfc3339(first_seen),
        "lastTimestamp": rfc3339(last_seen),
        "count": 1,
        "type": event_type,
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": ""
    }))
    .expect("fixture is a valid Event")
}

/// cluster-autoscaler's `TriggeredScaleUp` for a scale-up of node group `gpu` 1→2.
pub fn triggered_scale_up(at_time: Timestamp) -> Event {
    autoscaler_event(
        "cluster-autoscaler",
        "Normal",
        "TriggeredScaleUp",
        "pod triggered scale-up: [{gpu 1->2 (max: 3)}]",
        at_time,
        at_time,
    )
}

/// cluster-autoscaler's `NotTriggerScaleUp` for a node group at its maximum size.
pub fn not_triggered_scale_up(at_time: Timestamp) -> Event {
    autoscaler_event(
        "cluster-autoscaler",
        "Normal",
        "NotTriggerScaleUp",
        "pod didn't trigger scale-up: 1 max node group size reached",
        at_time,
        at_time,
    )
}

/// The pod view as the store holds it after these autoscaler Events about the pod.
pub fn with_autoscaler_events(mut view: PodView, events: &[Event]) -> PodView {
    for event in events {
        let (_, signal) = crate::autoscaler::scale_up_signal(event).expect("an autoscaler Event");
        match view.scale_up.as_deref_mut() {
            Some(scale_up) => {
                scale_up.observe(signal);
            }
            None => view.scale_up = Some(Box::new(crate::autoscaler::ScaleUpView::new(signal))),
        }
    }
    view
}
