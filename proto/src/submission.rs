//! The submission key: everything about submitting one flow run is a function
//! of (flow run id, scheduled state id). The poller's message id, the
//! dispatcher's claim transition id, the Job's name suffix and its claim
//! annotation all come from [`SubmissionKey`], so every delivery of one due
//! run makes the same claim and names the same Job, and a new scheduled state
//! (a retry, `AwaitingRetry`) gets new ones.

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::FlowRunDue;

/// Namespace of the claim transition ids (a fixed random UUID; changing it
/// changes every derived id, so it never changes).
const CLAIM_TRANSITION_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_93c4_2a7e_4d55_9e0b_3c8a_51d2_7f46);

/// Seconds after its claim by which a run's Job must have been created. The
/// dispatcher stops trying (and crashes the run) after it; the reporter
/// treats a recorded Job that still does not exist after it, plus a margin,
/// as gone. Both services default to this value.
pub const DEFAULT_SUBMISSION_TIMEOUT_SECONDS: u64 = 600;

/// Hex characters of the Job name suffix.
pub const JOB_NAME_SUFFIX_LEN: usize = 16;

/// One due run: the run and the SCHEDULED-type state it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubmissionKey {
    pub flow_run_id: Uuid,
    pub scheduled_state_id: Uuid,
}

/// A message whose ids are not UUIDs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} is not a UUID")]
pub struct InvalidKey {
    pub field: &'static str,
    pub value: String,
}

impl SubmissionKey {
    pub fn new(flow_run_id: Uuid, scheduled_state_id: Uuid) -> Self {
        SubmissionKey {
            flow_run_id,
            scheduled_state_id,
        }
    }

    /// The key of a `FlowRunDue` message.
    pub fn of_message(message: &FlowRunDue) -> Result<Self, InvalidKey> {
        let parse = |field: &'static str, value: &str| {
            Uuid::parse_str(value).map_err(|_| InvalidKey {
                field,
                value: value.to_string(),
            })
        };
        Ok(SubmissionKey::new(
            parse("flow_run_id", &message.flow_run_id)?,
            parse("state_id", &message.state_id)?,
        ))
    }

    /// `Nats-Msg-Id` of the due-run message: JetStream stores one message per
    /// key within the stream's duplicate window.
    pub fn message_id(&self) -> String {
        self.to_string()
    }

    /// The claim's `transition_id`: UUID v5 over the 32 bytes of both ids.
    /// Re-proposing the same claim is answered REJECT with our own Pending
    /// state (Prefect's duplicate-transition rule), which counts as claimed.
    pub fn claim_transition_id(&self) -> Uuid {
        let mut name = [0u8; 32];
        name[..16].copy_from_slice(self.flow_run_id.as_bytes());
        name[16..].copy_from_slice(self.scheduled_state_id.as_bytes());
        Uuid::new_v5(&CLAIM_TRANSITION_NAMESPACE, &name)
    }

    /// The Job name's suffix: the first 16 hex characters of
    /// sha256(`<run id>:<state id>`). Creating the Job twice answers 409.
    pub fn job_name_suffix(&self) -> String {
        let digest = Sha256::digest(self.to_string().as_bytes());
        digest
            .iter()
            .take(JOB_NAME_SUFFIX_LEN / 2)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Whether a Job name was made for this submission (it ends with this
    /// key's suffix). A run's recorded pid may name the Job of an earlier
    /// submission (a retry, a reschedule) until this one records its own.
    pub fn named(&self, job_name: &str) -> bool {
        job_name
            .strip_suffix(self.job_name_suffix().as_str())
            .is_some_and(|base| base.ends_with('-'))
    }

    /// The value of the claim annotation on the Job.
    pub fn claim_annotation(&self) -> String {
        self.to_string()
    }

    /// Parses a claim annotation (or message id) back into the key.
    pub fn parse(text: &str) -> Option<Self> {
        let (run, state) = text.split_once(':')?;
        Some(SubmissionKey::new(
            Uuid::parse_str(run).ok()?,
            Uuid::parse_str(state).ok()?,
        ))
    }
}

/// `<flow run id>:<scheduled state id>`.
impl fmt::Display for SubmissionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.flow_run_id, self.scheduled_state_id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_job_name_tells_its_submission() {
        let run = uuid::Uuid::from_u128(7);
        let first = SubmissionKey::new(run, uuid::Uuid::from_u128(1));
        let second = SubmissionKey::new(run, uuid::Uuid::from_u128(2));
        let name = format!("etl-{}", first.job_name_suffix());
        assert!(first.named(&name));
        assert!(
            !second.named(&name),
            "a reschedule's key does not name the first Job"
        );
        assert!(
            !first.named(&first.job_name_suffix()),
            "the suffix alone is no name"
        );
        assert!(!first.named(&format!("etl{}", first.job_name_suffix())));
    }

    use super::*;

    fn key() -> SubmissionKey {
        SubmissionKey::new(Uuid::from_u128(1), Uuid::from_u128(2))
    }

    #[test]
    fn every_id_is_deterministic_and_depends_on_both_ids() {
        let key = key();
        let retry = SubmissionKey::new(key.flow_run_id, Uuid::from_u128(3));
        let swapped = SubmissionKey::new(key.scheduled_state_id, key.flow_run_id);
        assert_eq!(key.claim_transition_id(), self::key().claim_transition_id());
        for other in [retry, swapped] {
            assert_ne!(key.claim_transition_id(), other.claim_transition_id());
            assert_ne!(key.job_name_suffix(), other.job_name_suffix());
            assert_ne!(key.message_id(), other.message_id());
        }
    }

    #[test]
    fn the_ids_keep_their_published_values() {
        // Changing any of these strands the claims and Jobs of runs in flight.
        let key = SubmissionKey::new(
            Uuid::parse_str("1d96b242-11d9-4a53-8b8c-f603d3e7c280").unwrap(),
            Uuid::parse_str("7a1f0c55-2b3d-4e6f-8a9b-0c1d2e3f4a5b").unwrap(),
        );
        assert_eq!(
            key.message_id(),
            "1d96b242-11d9-4a53-8b8c-f603d3e7c280:7a1f0c55-2b3d-4e6f-8a9b-0c1d2e3f4a5b"
        );
        let digest = Sha256::digest(key.message_id().as_bytes());
        assert!(format!("{digest:x}").starts_with(&key.job_name_suffix()));
        assert_eq!(key.job_name_suffix().len(), JOB_NAME_SUFFIX_LEN);
        assert_eq!(SubmissionKey::parse(&key.claim_annotation()), Some(key));
    }

    #[test]
    fn messages_without_uuids_have_no_key() {
        let mut message = FlowRunDue {
            flow_run_id: Uuid::from_u128(1).to_string(),
            state_id: "nope".into(),
            ..Default::default()
        };
        assert_eq!(
            SubmissionKey::of_message(&message).unwrap_err().field,
            "state_id"
        );
        message.state_id = Uuid::from_u128(2).to_string();
        assert_eq!(SubmissionKey::of_message(&message), Ok(key()));
        assert_eq!(SubmissionKey::parse("a:b"), None);
    }
}
