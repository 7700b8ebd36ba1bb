//! The submission lines in a run's logs, worded as the Python worker words
//! them (prefect 3.9.1 `BaseWorker` and prefect-kubernetes 0.8
//! `KubernetesWorker`, logger `prefect.flow_runs.worker`), so a run's log view
//! looks the same whichever agent submitted it.
//!
//! Writing a line never waits for Prefect and never fails a submission: lines
//! go to a bounded queue, and one task sends them in batches, one
//! `POST /logs/` per batch (lines of all submissions in flight share it, as
//! `reads` shares reads), each send under a deadline. A line that cannot be
//! queued (queue full) or sent (Prefect unreachable past the deadline) is
//! dropped and counted in this process's log.

use std::time::Duration;

use prefect_client::{log_level, LogCreate, PrefectClient};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Logger name of the Python worker's lines about a run.
pub const WORKER_LOGGER: &str = "prefect.flow_runs.worker";
/// How long the first line of a batch waits for others: Prefect's own API
/// log handler's interval (`PREFECT_LOGGING_TO_API_BATCH_INTERVAL`, 2 s). A
/// shorter one cost the server a `POST /logs/` every 200 ms per dispatcher
/// while a backlog drained (0.41 calls per run), on the server's one busy core.
const COALESCE: Duration = Duration::from_secs(2);
/// Lines per `POST /logs/`.
const LINES_PER_CALL: usize = 200;
/// Lines waiting to be sent, at most.
const QUEUE: usize = 10_000;
/// Deadline of one batch's send (the client's retries included).
const SEND_DEADLINE: Duration = Duration::from_secs(30);

/// `BaseWorker.get_and_submit_flow_runs`: the run is ours to submit.
pub fn submitting(worker_name: &str, flow_run_id: Uuid) -> String {
    format!("Worker '{worker_name}' submitting flow run '{flow_run_id}'")
}

/// `KubernetesWorker.run`, before the Job is created.
pub const CREATING: &str = "Creating Kubernetes job...";

/// `KubernetesWorker.run`, once the Job exists.
pub fn created(job_name: &str, namespace: &str) -> String {
    format!("Kubernetes job '{job_name}' created in namespace '{namespace}'")
}

/// `BaseWorker._submit_run`, once the run's infrastructure runs.
pub fn submitted(flow_run_name: &str) -> String {
    format!("Flow run '{flow_run_name}' submitted to infrastructure")
}

enum Message {
    Line(LogCreate),
    /// Send what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// A handle to the task that sends the lines; cheap to clone.
#[derive(Clone)]
pub struct RunLogs {
    queue: mpsc::Sender<Message>,
}

impl RunLogs {
    /// Starts the sending task; it stops when every handle is dropped.
    pub fn spawn(prefect: PrefectClient) -> RunLogs {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(send_batches(prefect, receiver));
        RunLogs { queue }
    }

    /// Queues an INFO line of the worker logger for the run, stamped now.
    pub fn info(&self, flow_run_id: Uuid, message: String) {
        let line = LogCreate::for_flow_run(flow_run_id, WORKER_LOGGER, log_level::INFO, message);
        if self.queue.try_send(Message::Line(line)).is_err() {
            tracing::warn!(%flow_run_id, "the run's log queue is full; a submission line was dropped");
        }
    }

    /// Waits until the lines queued so far were sent (or dropped), for at most
    /// `timeout`: at shutdown, so the last submissions' lines are not lost.
    pub async fn flush(&self, timeout: Duration) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(timeout, flushed).await;
        }
    }
}

async fn send_batches(prefect: PrefectClient, mut receiver: mpsc::Receiver<Message>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = Vec::new();
        let mut waiting = Vec::new();
        take(first, &mut batch, &mut waiting);
        let deadline = tokio::time::Instant::now() + COALESCE;
        while batch.len() < LINES_PER_CALL && waiting.is_empty() {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(message)) => take(message, &mut batch, &mut waiting),
                Ok(None) | Err(_) => break,
            }
        }
        // Lines queued before a flush came before it: they are in `batch`.
        for chunk in batch.chunks(LINES_PER_CALL) {
            send(&prefect, chunk).await;
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

fn take(message: Message, batch: &mut Vec<LogCreate>, waiting: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Line(line) => batch.push(line),
        Message::Flush(done) => waiting.push(done),
    }
}

async fn send(prefect: &PrefectClient, lines: &[LogCreate]) {
    match tokio::time::timeout(SEND_DEADLINE, prefect.create_logs(lines)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, lines = lines.len(), "sending submission lines to the runs' logs failed; dropped them")
        }
        Err(_) => tracing::warn!(
            lines = lines.len(),
            "sending submission lines to the runs' logs took longer than {} s; dropped them",
            SEND_DEADLINE.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_worded_as_the_python_worker_words_them() {
        let run = Uuid::from_u128(1);
        assert_eq!(
            submitting("prefect-k8s", run),
            "Worker 'prefect-k8s' submitting flow run '00000000-0000-0000-0000-000000000001'"
        );
        assert_eq!(CREATING, "Creating Kubernetes job...");
        assert_eq!(
            created("crimson-otter-0123456789abcdef", "prefect"),
            "Kubernetes job 'crimson-otter-0123456789abcdef' created in namespace 'prefect'"
        );
        assert_eq!(
            submitted("crimson-otter"),
            "Flow run 'crimson-otter' submitted to infrastructure"
        );
    }
}
