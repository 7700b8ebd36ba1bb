//! Publishing due runs to JetStream. A message counts as published only once
//! JetStream acknowledges storing it; a publish that times out is retried
//! with the same message id, so it cannot be stored twice.

use async_nats::jetstream::{self, context::PublishErrorKind};
use flow_run_proto::{subjects, FlowRunDue, SubmissionKey};
use prost::Message;

/// Why a poll did not publish everything it found.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("Prefect: {0}")]
    Prefect(#[from] prefect_client::PrefectError),
    #[error("publishing flow run {flow_run_id} to JetStream: {message}")]
    Publish {
        flow_run_id: String,
        message: String,
    },
}

/// Publishes [`FlowRunDue`] messages on a pool's subject; re-creates the
/// streams (with `stream_replicas`) when they are gone.
pub struct Publisher {
    js: jetstream::Context,
    stream_replicas: usize,
}

const PUBLISH_ATTEMPTS: usize = 5;

impl Publisher {
    pub fn new(js: jetstream::Context, stream_replicas: usize) -> Self {
        Publisher {
            js,
            stream_replicas,
        }
    }

    /// Publishes every message and waits for its ack. Returns how many were
    /// new (not duplicates of a message already in the window).
    pub async fn publish_all(
        &self,
        work_pool: &str,
        messages: &[FlowRunDue],
    ) -> Result<usize, PollError> {
        let subject = subjects::due_subject(work_pool);
        let acks = futures::future::join_all(
            messages
                .iter()
                .map(|message| self.publish_one(subject.clone(), message)),
        )
        .await;
        let mut new = 0;
        for ack in acks {
            if !ack? {
                continue;
            }
            new += 1;
        }
        Ok(new)
    }

    /// Publishes one message; `Ok(true)` when it was stored as new.
    async fn publish_one(&self, subject: String, message: &FlowRunDue) -> Result<bool, PollError> {
        let id = SubmissionKey::of_message(message)
            .map_err(|e| PollError::Publish {
                flow_run_id: message.flow_run_id.clone(),
                message: e.to_string(),
            })?
            .message_id();
        let payload = message.encode_to_vec();
        let mut last_error = String::new();
        for attempt in 1..=PUBLISH_ATTEMPTS {
            let publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(id.as_str());
            let result = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map_err(|e| (e.kind(), e.to_string())),
                Err(e) => Err((e.kind(), e.to_string())),
            };
            match result {
                Ok(ack) => {
                    tracing::debug!(flow_run_id = %message.flow_run_id, seq = ack.sequence, duplicate = ack.duplicate, "published");
                    return Ok(!ack.duplicate);
                }
                Err((kind, text)) => {
                    last_error = text;
                    let retryable = matches!(
                        kind,
                        PublishErrorKind::TimedOut
                            | PublishErrorKind::BrokenPipe
                            | PublishErrorKind::StreamNotFound
                    );
                    if !retryable {
                        break;
                    }
                    if kind == PublishErrorKind::StreamNotFound {
                        tracing::warn!("the work queue stream is gone; creating it again");
                        if let Err(error) =
                            service_runtime::nats::ensure_streams(&self.js, self.stream_replicas)
                                .await
                        {
                            tracing::warn!(%error, "re-creating the streams failed");
                        }
                    }
                    tracing::debug!(attempt, error = %last_error, "publish not acknowledged; retrying with the same id");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt as u64))
                        .await;
                }
            }
        }
        Err(PollError::Publish {
            flow_run_id: message.flow_run_id.clone(),
            message: last_error,
        })
    }
}
