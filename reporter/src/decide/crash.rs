//! What a `Crashed` proposal says: [`CrashReport`] (the cause plus the pod and container
//! that show it), the missing Secret/ConfigMap/key parsed from the kubelet's message,
//! which container logs to read ([`CrashReport::log_plan`]), and [`crash_message`],
//! which renders the state message.

use std::fmt;

use crate::autoscaler::ScaleUpSignal;
use crate::observe::{ContainerRole, ContainerView, PodPhase, PodView, TerminatedView};

/// The container that runs the flow in prefect-kubernetes' base job template.
pub const FLOW_CONTAINER: &str = "prefect-job";

/// At most this many characters of log tail end up in a state message (whole lines,
/// the most recent ones).
pub const MAX_LOG_TAIL_CHARS: usize = 4000;

/// Why the run crashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashCause {
    /// A container waited longer than its grace period in `ErrImagePull`,
    /// `ImagePullBackOff`, `InvalidImageName` or `CreateContainerConfigError`.
    ContainerCannotStart {
        grace_seconds: u64,
        /// For `CreateContainerConfigError`: what is missing, when the message says.
        missing: Option<MissingReference>,
    },
    /// The pod was not scheduled within `pod_watch_timeout_seconds`.
    PodNotScheduled {
        timeout_seconds: u64,
        /// `PodScheduled` reason and message (e.g. `Unschedulable`, `0/3 nodes are available: …`).
        reason: Option<Box<str>>,
        message: Option<Box<str>>,
    },
    /// The pod was scheduled but did not start within `DecisionSettings::pod_start_timeout`.
    PodNotStarted { timeout_seconds: u64 },
    /// The Job created no pod within `pod_watch_timeout_seconds` (quota, missing
    /// ServiceAccount, admission webhook: see the Job's `FailedCreate` events).
    NoPodCreated { timeout_seconds: u64 },
    /// The Job failed: `BackoffLimitExceeded`, `DeadlineExceeded`, `PodFailurePolicy`, …
    JobFailed {
        reason: Box<str>,
        message: Option<Box<str>>,
    },
    /// The Job completed but the flow run never reported a final state.
    JobCompletedWithoutFinalState,
    /// The Job was deleted before the flow run reached a final state.
    JobDeleted,
    /// The run's `infrastructure_pid` names a Job that was never seen in the cluster,
    /// long after the claim: deleted while no reporter watched, or never created.
    JobMissing { grace_seconds: u64 },
    /// The Job stayed suspended (never released by a dispatcher) for this long.
    JobNeverReleased { timeout_seconds: u64 },
    /// The run has been `PENDING` this long without any `infrastructure_pid`: its
    /// submission was lost between the claim and the recording of the Job.
    ClaimNeverRecorded { grace_seconds: u64 },
    /// The pod was not scheduled and the node autoscaler said it will not or cannot add
    /// a node for it.
    ScaleUpRefused {
        signal: Box<ScaleUpSignal>,
        /// The scheduler's `PodScheduled` message.
        scheduler: Option<Box<str>>,
    },
    /// The autoscaler was bringing a node for the pod, but none took it within the
    /// scale-up limit (`scale_up_timeout_seconds`).
    ScaleUpTimedOut {
        timeout_seconds: u64,
        /// The autoscaler's latest word (a node coming).
        signal: Box<ScaleUpSignal>,
        scheduler: Option<Box<str>>,
    },
}

/// The container that shows the crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashedContainer {
    pub name: Box<str>,
    /// Waiting or terminated reason (`ErrImagePull`, `OOMKilled`, `Error`, …).
    pub reason: Option<Box<str>>,
    pub exit_code: Option<i32>,
    /// The kubelet's waiting/termination message.
    pub message: Option<Box<str>>,
    /// The container ran at some point, so there is a log to read.
    pub has_log: bool,
    /// The reason comes from the previous run of a restarted container (`lastState`):
    /// read the log with `previous=true`.
    pub previous_run: bool,
}

/// The pod that shows the crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashedPod {
    pub name: Box<str>,
    /// `status.reason` / `status.message` (e.g. `Evicted`, `The node was low on resource: memory.`).
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
    pub container: Option<CrashedContainer>,
    /// The containers that have a log, in the order to read them (see
    /// [`CrashReport::log_plan`]).
    pub logs: Box<[LoggedContainer]>,
}

/// A container of the crashed pod that has a log to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedContainer {
    pub name: Box<str>,
    /// A previous instance ended (the container restarted): `previous=true` has a log.
    pub previous: bool,
    /// The current instance started (running or terminated): its log can be read.
    pub current: bool,
}

/// One log to read (`GET .../pods/{pod}/log?container=…&tailLines=…&previous=…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSource<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub previous: bool,
}

/// Everything a `Crashed` proposal needs; render it with [`crash_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashReport {
    pub cause: CrashCause,
    pub namespace: Box<str>,
    pub job_name: Box<str>,
    pub pod: Option<CrashedPod>,
}

impl CrashReport {
    /// The logs to read, in order; the first that is not blank is the crash's log. The
    /// flow container (`prefect-job`, else the first regular container) comes first,
    /// then the culprit container, then the other containers (sidecars, then init
    /// containers): a sidecar's log is used only when the flow printed nothing. For a
    /// restarted container, the previous instance (the one that failed) comes before
    /// the current one. Empty when no container of the pod ever ran.
    pub fn log_plan(&self) -> Vec<LogSource<'_>> {
        let Some(pod) = &self.pod else {
            return Vec::new();
        };
        let mut plan = Vec::new();
        for container in pod.logs.iter() {
            let instances = [(container.previous, true), (container.current, false)];
            for previous in instances
                .into_iter()
                .filter(|(has, _)| *has)
                .map(|(_, p)| p)
            {
                plan.push(LogSource {
                    namespace: &self.namespace,
                    pod: &pod.name,
                    container: &container.name,
                    previous,
                });
            }
        }
        plan
    }
}

/// The containers of `pod` that have a log, in the order [`CrashReport::log_plan`] reads
/// them; `culprit` is the container that shows the crash.
pub(crate) fn logged_containers(pod: &PodView, culprit: Option<&str>) -> Box<[LoggedContainer]> {
    let main = || {
        pod.containers
            .iter()
            .filter(|c| c.role == ContainerRole::Main)
    };
    let flow = main()
        .find(|c| &*c.name == FLOW_CONTAINER)
        .or_else(|| main().next())
        .map(|c| &*c.name);
    let rank = |container: &ContainerView| {
        if Some(&*container.name) == flow {
            0
        } else if Some(&*container.name) == culprit {
            1
        } else if container.role == ContainerRole::Main {
            2
        } else {
            3
        }
    };
    let mut containers: Vec<&ContainerView> = pod.containers.iter().collect();
    containers.sort_by_key(|container| rank(container));
    containers
        .into_iter()
        .map(|container| LoggedContainer {
            name: container.name.clone(),
            previous: container.last_terminated.is_some() || container.restart_count > 0,
            current: container.waiting.is_none(),
        })
        .filter(|container| container.previous || container.current)
        .collect()
}

/// The Secret, ConfigMap or key a `CreateContainerConfigError` complains about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissingReference {
    Secret {
        name: Box<str>,
    },
    ConfigMap {
        name: Box<str>,
    },
    /// `object` is `namespace/name` as the kubelet writes it.
    SecretKey {
        key: Box<str>,
        object: Box<str>,
    },
    ConfigMapKey {
        key: Box<str>,
        object: Box<str>,
    },
}

impl MissingReference {
    /// Parses the kubelet's messages `secret "s" not found`, `configmap "c" not found`,
    /// `couldn't find key K in Secret ns/s`, `couldn't find key K in ConfigMap ns/c`.
    pub fn parse(message: &str) -> Option<Self> {
        if let Some(rest) = after(message, "couldn't find key ") {
            let (key, rest) = rest.split_once(' ')?;
            let object = |text: &str| -> Box<str> {
                text.split_whitespace().next().unwrap_or_default().into()
            };
            if let Some(secret) = after(rest, "in Secret ") {
                return Some(Self::SecretKey {
                    key: key.into(),
                    object: object(secret),
                });
            }
            if let Some(config_map) = after(rest, "in ConfigMap ") {
                return Some(Self::ConfigMapKey {
                    key: key.into(),
                    object: object(config_map),
                });
            }
            return None;
        }
        let quoted_then_not_found = |prefix: &str| -> Option<Box<str>> {
            let rest = after(message, prefix)?;
            let (name, rest) = rest.split_once('"')?;
            rest.trim_start()
                .starts_with("not found")
                .then(|| name.into())
        };
        if let Some(name) = quoted_then_not_found("secret \"") {
            return Some(Self::Secret { name });
        }
        quoted_then_not_found("configmap \"").map(|name| Self::ConfigMap { name })
    }
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.find(marker).map(|at| &text[at + marker.len()..])
}

impl fmt::Display for MissingReference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret { name } => write!(formatter, "Secret \"{name}\" does not exist"),
            Self::ConfigMap { name } => write!(formatter, "ConfigMap \"{name}\" does not exist"),
            Self::SecretKey { key, object } => {
                write!(formatter, "key \"{key}\" is missing from Secret {object}")
            }
            Self::ConfigMapKey { key, object } => {
                write!(
                    formatter,
                    "key \"{key}\" is missing from ConfigMap {object}"
                )
            }
        }
    }
}

/// Renders the `Crashed` state message: the cause, the Job, the pod, the container,
/// its reason and exit code, then `Last lines of the pod log:` and `log_tail` when given
/// and not blank (trimmed to the last [`MAX_LOG_TAIL_CHARS`] characters, whole lines).
pub fn crash_message(report: &CrashReport, log_tail: Option<&str>) -> String {
    let mut message = headline(report);
    if let Some(tail) = log_tail
        .map(str::trim_end)
        .filter(|tail| !tail.trim().is_empty())
    {
        message.push_str("\n\nLast lines of the pod log:\n");
        message.push_str(bounded_tail(tail));
    }
    message
}

fn headline(report: &CrashReport) -> String {
    let job = format!("{}/{}", report.namespace, report.job_name);
    let pod_name = report.pod.as_ref().map_or("?", |pod| &pod.name);
    // The pod-scheduling and container-start causes describe the pod themselves.
    let mut text = match &report.cause {
        CrashCause::ContainerCannotStart {
            grace_seconds,
            missing,
        } => return container_cannot_start(report, pod_name, *grace_seconds, missing.as_ref()),
        CrashCause::PodNotScheduled {
            timeout_seconds,
            reason,
            message,
        } => {
            return pod_not_scheduled(
                report,
                pod_name,
                *timeout_seconds,
                reason.as_deref(),
                message.as_deref(),
            )
        }
        CrashCause::ScaleUpRefused { signal, scheduler } => {
            return scale_up_refused(report, pod_name, signal, scheduler.as_deref())
        }
        CrashCause::ScaleUpTimedOut {
            timeout_seconds,
            signal,
            scheduler,
        } => {
            return scale_up_timed_out(
                report,
                pod_name,
                *timeout_seconds,
                signal,
                scheduler.as_deref(),
            )
        }
        CrashCause::PodNotStarted { timeout_seconds } => format!(
            "Pod {}/{pod_name} (Job {}) was scheduled but did not start within {timeout_seconds} s; \
             see the pod's events (e.g. FailedMount).",
            report.namespace, report.job_name
        ),
        CrashCause::NoPodCreated { timeout_seconds } => format!(
            "Kubernetes Job {job} created no pod within {timeout_seconds} s \
             (pod_watch_timeout_seconds); see the Job's FailedCreate events."
        ),
        CrashCause::JobFailed { reason, message } => job_failed(&job, reason, message.as_deref()),
        CrashCause::JobCompletedWithoutFinalState => format!(
            "Kubernetes Job {job} completed, but the flow run did not report a final state."
        ),
        CrashCause::JobDeleted => {
            format!("Kubernetes Job {job} was deleted before the flow run reached a final state.")
        }
        CrashCause::JobMissing { grace_seconds } => format!(
            "Kubernetes Job {job}, recorded as the flow run's infrastructure, does not exist \
             more than {grace_seconds} s after the flow run was claimed: it was deleted, or \
             it was never created."
        ),
        CrashCause::ClaimNeverRecorded { grace_seconds } => format!(
            "The flow run was claimed for submission to Kubernetes more than {grace_seconds} s \
             ago, but no Kubernetes Job was ever recorded for that claim: the submission was lost."
        ),
        CrashCause::JobNeverReleased { timeout_seconds } => format!(
            "Kubernetes Job {job} was created suspended and no dispatcher released it within \
             {timeout_seconds} s; it was never started."
        ),
    };
    if let Some(pod) = &report.pod {
        text.push(' ');
        text.push_str(&describe_pod(pod));
    }
    text
}

/// The headline of [`CrashCause::JobFailed`]: the Job's reason and message.
fn job_failed(job: &str, reason: &str, message: Option<&str>) -> String {
    let mut text = format!("Kubernetes Job {job} failed: {reason}");
    if let Some(message) = message {
        text.push_str(&format!(" ({message})"));
    }
    text.push('.');
    text
}

/// The headline of [`CrashCause::ContainerCannotStart`]: the container, how long it
/// waited in which reason, what is missing and what Kubernetes says.
fn container_cannot_start(
    report: &CrashReport,
    pod_name: &str,
    grace_seconds: u64,
    missing: Option<&MissingReference>,
) -> String {
    let container = report.pod.as_ref().and_then(|pod| pod.container.as_ref());
    let container_name = container.map_or("?", |c| &c.name);
    let reason = container.and_then(|c| c.reason.as_deref()).unwrap_or("?");
    let mut text = format!(
        "Container \"{container_name}\" of pod {}/{pod_name} (Job {}) could not start: \
         it has been waiting in {reason} for more than {grace_seconds} s",
        report.namespace, report.job_name
    );
    if let Some(missing) = missing {
        text.push_str(&format!(" because {missing}"));
    }
    text.push('.');
    if let Some(detail) = container.and_then(|c| c.message.as_deref()) {
        text.push_str(&format!(" Kubernetes says: {detail}"));
        end_sentence(&mut text);
    }
    text
}

/// The headline of [`CrashCause::PodNotScheduled`], with the `PodScheduled` reason
/// and message.
fn pod_not_scheduled(
    report: &CrashReport,
    pod_name: &str,
    timeout_seconds: u64,
    reason: Option<&str>,
    message: Option<&str>,
) -> String {
    let mut text = format!(
        "Pod {}/{pod_name} (Job {}) was not scheduled within {timeout_seconds} s \
         (pod_watch_timeout_seconds)",
        report.namespace, report.job_name
    );
    match (reason, message) {
        (Some(reason), Some(message)) => text.push_str(&format!(": {reason}: {message}")),
        (Some(only), None) | (None, Some(only)) => text.push_str(&format!(": {only}")),
        (None, None) => {}
    }
    end_sentence(&mut text);
    text
}

/// The headline of [`CrashCause::ScaleUpRefused`]: what the autoscaler and the
/// scheduler said.
fn scale_up_refused(
    report: &CrashReport,
    pod_name: &str,
    signal: &ScaleUpSignal,
    scheduler: Option<&str>,
) -> String {
    let mut text = format!(
        "Pod {}/{pod_name} (Job {}) cannot be scheduled and {} will not add a node \
         for it: {}: {}",
        report.namespace, report.job_name, signal.autoscaler, signal.reason, signal.message
    );
    push_scheduler(&mut text, scheduler);
    text
}

/// The headline of [`CrashCause::ScaleUpTimedOut`]: the node the autoscaler was
/// bringing and what the scheduler said.
fn scale_up_timed_out(
    report: &CrashReport,
    pod_name: &str,
    timeout_seconds: u64,
    signal: &ScaleUpSignal,
    scheduler: Option<&str>,
) -> String {
    let mut text = format!(
        "Pod {}/{pod_name} (Job {}) was not scheduled: {} was bringing a new node \
         ({}), but no node took the pod within {timeout_seconds} s \
         (scale_up_timeout_seconds)",
        report.namespace,
        report.job_name,
        signal.autoscaler,
        signal.summary()
    );
    push_scheduler(&mut text, scheduler);
    text
}

/// Ends the sentence, then adds what the scheduler said.
fn push_scheduler(text: &mut String, scheduler: Option<&str>) {
    end_sentence(text);
    if let Some(scheduler) = scheduler {
        text.push_str(" The scheduler says: ");
        text.push_str(scheduler.trim());
        end_sentence(text);
    }
}

fn describe_pod(pod: &CrashedPod) -> String {
    let mut text = format!("Pod {}", pod.name);
    match (&pod.reason, &pod.message) {
        (Some(reason), Some(message)) => text.push_str(&format!(" ({reason}: {message})")),
        (Some(only), None) | (None, Some(only)) => text.push_str(&format!(" ({only})")),
        (None, None) => {}
    }
    if let Some(container) = &pod.container {
        text.push_str(&format!(", container \"{}\"", container.name));
        let mut facts = Vec::new();
        if let Some(reason) = &container.reason {
            facts.push(reason.to_string());
        }
        if let Some(code) = container.exit_code {
            facts.push(format!("exit code {code}"));
        }
        if container.previous_run {
            facts.push("in its previous run".to_owned());
        }
        if !facts.is_empty() {
            text.push_str(": ");
            text.push_str(&facts.join(", "));
        }
        if let Some(message) = &container.message {
            text.push_str(&format!(" ({})", message.trim_end()));
        }
    }
    end_sentence(&mut text);
    text
}

fn end_sentence(text: &mut String) {
    let trimmed = text.trim_end().len();
    text.truncate(trimmed);
    if !text.ends_with(['.', '!', '?']) {
        text.push('.');
    }
}

fn bounded_tail(tail: &str) -> &str {
    if tail.len() <= MAX_LOG_TAIL_CHARS {
        return tail;
    }
    let mut start = tail.len() - MAX_LOG_TAIL_CHARS;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    match tail[start..].find('\n') {
        Some(newline) if start + newline + 1 < tail.len() => &tail[start + newline + 1..],
        _ => &tail[start..],
    }
}

/// The pod and container of a Job that best explain a Job-level crash: a failed pod
/// before a live one before a succeeded one, the newest first.
pub(crate) fn culprit_pod<'a>(pods: impl Iterator<Item = &'a PodView>) -> Option<CrashedPod> {
    let rank = |pod: &PodView| match pod.phase {
        PodPhase::Failed => 2,
        PodPhase::Succeeded => 0,
        _ => 1,
    };
    let pod = pods.max_by_key(|pod| (rank(pod), pod.finished_at().or(pod.created)))?;
    let container = pod
        .failed_container()
        .or_else(|| {
            pod.containers
                .iter()
                .find(|c| c.role == ContainerRole::Main)
        })
        .map(describe_container);
    let culprit = container.as_ref().map(|c| &*c.name);
    Some(CrashedPod {
        name: pod.name.clone(),
        reason: pod.status_reason.clone(),
        message: pod.status_message.clone(),
        logs: logged_containers(pod, culprit),
        container,
    })
}

/// A container that is waiting (never started or restarting) or terminated.
pub(crate) fn describe_container(container: &ContainerView) -> CrashedContainer {
    let current: Option<&TerminatedView> = container.terminated.as_deref();
    let previous: Option<&TerminatedView> = container.last_terminated.as_deref();
    let ran_before = previous.is_some() || container.restart_count > 0;
    if let Some(terminated) = current.or(previous) {
        let from_previous = current.is_none();
        return CrashedContainer {
            name: container.name.clone(),
            reason: Some(terminated.reason.as_str())
                .filter(|reason| !reason.is_empty())
                .map(Box::from),
            exit_code: Some(terminated.exit_code),
            message: terminated.message.clone(),
            has_log: true,
            previous_run: from_previous,
        };
    }
    match container.waiting.as_deref() {
        Some(waiting) => CrashedContainer {
            name: container.name.clone(),
            reason: Some(waiting.reason.as_str().into()),
            exit_code: None,
            message: waiting.message.clone(),
            has_log: ran_before,
            previous_run: ran_before,
        },
        // Running (or state unknown): its current log is the one to read.
        None => CrashedContainer {
            name: container.name.clone(),
            reason: None,
            exit_code: None,
            message: None,
            has_log: true,
            previous_run: false,
        },
    }
}
