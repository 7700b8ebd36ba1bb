//! What the dispatcher writes on Kubernetes objects and the reporter reads
//! back: the labels and annotations of a flow run's Job and pods, and the
//! `infrastructure_pid` format that tells Prefect (and the reporter) where a
//! run's Job is.

use std::fmt;

/// Label on every Job and pod template of a flow run (prefect-kubernetes puts
/// it there too); its value is the flow run id.
pub const FLOW_RUN_ID_LABEL: &str = "prefect.io/flow-run-id";

/// Label prefect-kubernetes puts on Jobs and pod templates: the work pool's
/// name, slugified as a label value.
pub const WORK_POOL_NAME_LABEL: &str = "prefect.io/work-pool-name";

/// Label and annotation prefix of the agent's own: flow Jobs may not carry
/// labels with it (the agent's pods are selected by such labels, e.g. by the
/// NetworkPolicy that admits NATS clients).
pub const RESERVED_PREFIX: &str = "prefect-k8s.io/";

/// The ServiceAccounts the agent's own services run as (`deploy/`,
/// `prefect-k8s install`): flow Jobs may not use them.
pub const AGENT_SERVICE_ACCOUNTS: [&str; 3] = [
    "prefect-k8s-poller",
    "prefect-k8s-dispatcher",
    "prefect-k8s-reporter",
];

/// Annotation on a Job: the [`crate::SubmissionKey`] it was created for.
pub const CLAIM_ANNOTATION: &str = "prefect-k8s.io/claim";

/// Annotation on a Job: the `pod_watch_timeout_seconds` job variable (decimal
/// seconds; `0` disables the timeout), which prefect-kubernetes 0.8 accepts
/// but ignores and the reporter enforces.
pub const POD_WATCH_TIMEOUT_ANNOTATION: &str = "prefect-k8s.io/pod-watch-timeout-seconds";

/// Annotation on a Job: the `scale_up_timeout_seconds` job variable (decimal
/// seconds; `0` disables the limit): how long the reporter lets a pod wait
/// for a node that the cluster's autoscaler is bringing before it crashes
/// the run. Without it the reporter's `--scale-up-timeout-seconds` applies.
pub const SCALE_UP_TIMEOUT_ANNOTATION: &str = "prefect-k8s.io/scale-up-timeout-seconds";

/// The job variable whose value the dispatcher writes as
/// [`SCALE_UP_TIMEOUT_ANNOTATION`].
pub const SCALE_UP_TIMEOUT_VARIABLE: &str = "scale_up_timeout_seconds";

/// Annotation on an Event: how many of its occurrences were forwarded to the
/// run's logs.
pub const FORWARDED_COUNT_ANNOTATION: &str = "prefect-k8s.io/forwarded-count";

/// Where a flow run's Job is: Prefect's `infrastructure_pid`,
/// `<namespace>:<job name>` as prefect-kubernetes writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InfrastructurePid {
    pub namespace: String,
    pub job_name: String,
}

impl InfrastructurePid {
    pub fn new(namespace: impl Into<String>, job_name: impl Into<String>) -> Self {
        InfrastructurePid {
            namespace: namespace.into(),
            job_name: job_name.into(),
        }
    }

    /// Parses `<namespace>:<job name>`: exactly two non-empty parts. Anything
    /// else (another worker's pid, a process id) names no Job.
    pub fn parse(pid: &str) -> Option<Self> {
        let mut parts = pid.split(':');
        let (Some(namespace), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let (namespace, name) = (namespace.trim(), name.trim());
        if namespace.is_empty() || name.is_empty() {
            return None;
        }
        Some(InfrastructurePid::new(namespace, name))
    }
}

/// `<namespace>:<job name>`.
impl fmt::Display for InfrastructurePid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.namespace, self.job_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_name_a_namespace_and_a_job() {
        let pid = InfrastructurePid::parse("prefect:crimson-otter-x7k2p").unwrap();
        assert_eq!(
            pid,
            InfrastructurePid::new("prefect", "crimson-otter-x7k2p")
        );
        assert_eq!(pid.to_string(), "prefect:crimson-otter-x7k2p");
        for foreign in ["crimson-otter", "a:b:c", ":b", "a:", "12345", ""] {
            assert_eq!(InfrastructurePid::parse(foreign), None, "{foreign}");
        }
    }
}
