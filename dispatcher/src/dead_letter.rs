//! Parking messages that cannot be handled on the dead-letter stream, with
//! the original bytes and the reason, so nothing is lost and an operator can
//! inspect or replay them.

use async_nats::jetstream;
use flow_run_proto::{subjects, DeadLetter};
use prost::Message;

/// Publishes dead letters and waits for JetStream to store them.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    dispatcher_name: String,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, dispatcher_name: impl Into<String>) -> Self {
        DeadLetters {
            js,
            dispatcher_name: dispatcher_name.into(),
        }
    }

    /// Stores the message under `flow-runs.dead.<kind>`. Only when this
    /// returns `Ok` may the original be acked away.
    pub async fn park(
        &self,
        kind: &str,
        subject: &str,
        reason: &str,
        deliveries: u64,
        payload: &[u8],
    ) -> Result<(), String> {
        let letter = DeadLetter {
            subject: subject.to_string(),
            reason: reason.to_string(),
            deliveries,
            payload: payload.to_vec(),
            dead_lettered_at: chrono::Utc::now().to_rfc3339(),
            dispatcher_name: self.dispatcher_name.clone(),
        };
        self.js
            .publish(subjects::dead_subject(kind), letter.encode_to_vec().into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
