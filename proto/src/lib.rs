//! The protobuf messages shared by the poller, the dispatchers and the
//! reporter, and the NATS subject and stream names they travel on.
//!
//! `proto/prefect_k8s/v1/*.proto` is the source of truth; `build.rs` compiles it
//! with `protox`, so no system `protoc` is needed.
#![forbid(unsafe_code)]

/// Generated types of package `prefect_k8s.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/prefect_k8s.v1.rs"));
}

pub use v1::{DeadLetter, FlowRunDue};

/// NATS names. Every subject and stream name is spelled here once.
pub mod subjects {
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

    /// Subject a poller of `work_pool` publishes due runs on. Characters that
    /// NATS treats specially in a token are replaced by `_`.
    pub fn due_subject(work_pool: &str) -> String {
        format!("{DUE_PREFIX}.{}", subject_token(work_pool))
    }

    /// Subject for a dead letter of the given reason kind.
    pub fn dead_subject(reason_kind: &str) -> String {
        format!("{DEAD_PREFIX}.{}", subject_token(reason_kind))
    }

    /// Message id that makes re-publication of one scheduled state harmless.
    pub fn due_message_id(flow_run_id: &str, state_id: &str) -> String {
        format!("{flow_run_id}:{state_id}")
    }

    fn subject_token(raw: &str) -> String {
        let token: String = raw
            .chars()
            .map(|c| {
                if c.is_whitespace() || matches!(c, '.' | '*' | '>') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        if token.is_empty() {
            "_".to_string()
        } else {
            token
        }
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
    fn subjects_escape_nats_wildcards() {
        assert_eq!(
            subjects::due_subject("my pool.a*"),
            "flow-runs.due.my_pool_a_"
        );
        assert_eq!(subjects::due_message_id("r", "s"), "r:s");
    }
}
