//! What the services agree on, written once: the protobuf messages on NATS
//! (`proto/prefect_k8s/v1/*.proto` is their source of truth; `build.rs`
//! compiles it with `protox`, so no system `protoc` is needed), the subjects
//! and stream names they travel on ([`subjects`]), the [`SubmissionKey`] from
//! which every id of one submission derives, and the labels, annotations and
//! `infrastructure_pid` format on Kubernetes objects ([`kubernetes`]).
#![forbid(unsafe_code)]

pub mod kubernetes;
mod submission;

pub use kubernetes::InfrastructurePid;
pub use submission::{
    InvalidKey, SubmissionKey, DEFAULT_SUBMISSION_TIMEOUT_SECONDS, JOB_NAME_SUFFIX_LEN,
};

/// Generated types of package `prefect_k8s.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/prefect_k8s.v1.rs"));
}

pub use v1::{DeadLetter, FlowRunDue};

/// NATS names. Every subject and stream name is spelled here once.
pub mod subjects {
    use sha2::Digest;

    /// WorkQueue stream holding due flow runs until a dispatcher acks them.
    pub const FLOW_RUNS_STREAM: &str = "PREFECT_K8S_FLOW_RUNS";
    /// Limits stream holding messages that could not be handled.
    pub const DEAD_LETTER_STREAM: &str = "PREFECT_K8S_DEAD_LETTERS";
    /// Durable pull consumer shared by every dispatcher replica.
    pub const DISPATCHER_CONSUMER: &str = "dispatcher";

    /// Subject prefix of due flow runs: `flow-runs.due.<work pool>`.
    pub const DUE_PREFIX: &str = "flow-runs.due";
    /// Subject prefix of dead letters: `flow-runs.dead.<reason>`.
    pub const DEAD_PREFIX: &str = "flow-runs.dead";

    /// Subject a poller of `work_pool` publishes due runs on.
    pub fn due_subject(work_pool: &str) -> String {
        format!("{DUE_PREFIX}.{}", pool_token(work_pool))
    }

    /// Name of the durable consumer the dispatchers of `work_pool` share.
    pub fn dispatcher_consumer(work_pool: &str) -> String {
        format!("{DISPATCHER_CONSUMER}-{}", pool_token(work_pool))
    }

    /// Subject for a dead letter of the given reason kind (one of ours).
    pub fn dead_subject(reason_kind: &str) -> String {
        format!("{DEAD_PREFIX}.{}", pool_token(reason_kind))
    }

    /// A work pool's name as one NATS subject token and consumer name. Names
    /// made only of `[A-Za-z0-9_-]` are used as they are; any other name is
    /// reduced to those characters and followed by 8 hex characters of its
    /// sha256, so two pools never share a subject or a consumer.
    pub fn pool_token(work_pool: &str) -> String {
        let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if !work_pool.is_empty() && work_pool.chars().all(safe) {
            return work_pool.to_string();
        }
        let reduced: String = work_pool
            .chars()
            .map(|c| if safe(c) { c } else { '_' })
            .collect();
        let digest = sha2::Sha256::digest(work_pool.as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("{reduced}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn flow_run_due_round_trips() {
        let due = FlowRunDue {
            flow_run_id: "6f1c".into(),
            state_id: "s1".into(),
            work_pool_name: "k8s".into(),
            ..Default::default()
        };
        let bytes = due.encode_to_vec();
        assert_eq!(FlowRunDue::decode(bytes.as_slice()).unwrap(), due);
    }

    #[test]
    fn garbage_does_not_decode_as_a_flow_run() {
        // A truncated length-delimited field must be an error, not a panic.
        assert!(FlowRunDue::decode(&[0x0a, 0xff, 0x01][..]).is_err());
    }

    #[test]
    fn pools_get_their_own_subject_and_consumer() {
        assert_eq!(
            subjects::due_subject("k8s-prod_2"),
            "flow-runs.due.k8s-prod_2"
        );
        assert_eq!(subjects::dispatcher_consumer("k8s"), "dispatcher-k8s");
        let spaced = subjects::due_subject("my pool.a*");
        assert!(spaced.starts_with("flow-runs.due.my_pool_a_-"), "{spaced}");
        assert_eq!(spaced.matches('.').count(), 2, "one token: {spaced}");
        // Names that reduce to the same characters stay apart.
        let names = ["my pool", "my_pool", "my.pool", "my*pool", "my>pool", ""];
        let tokens: std::collections::HashSet<String> =
            names.iter().map(|n| subjects::pool_token(n)).collect();
        assert_eq!(tokens.len(), names.len(), "{tokens:?}");
        for token in tokens {
            assert!(!token.is_empty());
            assert!(token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        }
    }
}
