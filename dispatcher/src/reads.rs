//! Batched reads of flow runs. Every submission reads its run twice (before
//! claiming, and after its Job exists); the reads of all submissions in
//! flight are coalesced into one `POST /flow_runs/filter` per batch, so a
//! backlog costs one read per batch rather than per run, and a slow read
//! holds up only the submissions waiting for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prefect_client::{FlowRun, PrefectClient, MAX_PAGE_SIZE};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

/// How long the first request of a batch waits for others.
const COALESCE: Duration = Duration::from_millis(5);
/// Batches read at once.
const READS_IN_FLIGHT: usize = 4;

/// A run as read just now: `None` when Prefect no longer has it.
pub type ReadResult = Result<Option<FlowRun>, String>;

type Request = (Uuid, oneshot::Sender<ReadResult>);

/// A handle to the batching reader task.
#[derive(Clone)]
pub struct RunReader {
    requests: mpsc::UnboundedSender<Request>,
}

impl RunReader {
    /// Starts the reader task; it stops when every handle is dropped.
    pub fn spawn(prefect: PrefectClient) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(batch_reads(prefect, receiver));
        RunReader { requests }
    }

    /// Reads one run (in a batch with whatever else is being read).
    pub async fn read(&self, flow_run_id: Uuid) -> ReadResult {
        let (answer, reply) = oneshot::channel();
        self.requests
            .send((flow_run_id, answer))
            .map_err(|_| "the flow-run reader stopped".to_string())?;
        reply
            .await
            .map_err(|_| "the flow-run reader stopped".to_string())?
    }
}

async fn batch_reads(prefect: PrefectClient, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let slots = Arc::new(Semaphore::new(READS_IN_FLIGHT));
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + COALESCE;
        while batch.len() < MAX_PAGE_SIZE {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(request)) => batch.push(request),
                Ok(None) | Err(_) => break,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let prefect = prefect.clone();
        tokio::spawn(async move {
            answer(&prefect, batch).await;
            drop(slot);
        });
    }
}

async fn answer(prefect: &PrefectClient, batch: Vec<Request>) {
    let mut ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    match prefect.read_flow_runs_by_ids(&ids).await {
        Ok(runs) => {
            let runs: HashMap<Uuid, FlowRun> = runs.into_iter().map(|r| (r.id, r)).collect();
            for (id, reply) in batch {
                let _ = reply.send(Ok(runs.get(&id).cloned()));
            }
        }
        Err(error) => {
            let text = format!("reading flow runs: {error}");
            for (_, reply) in batch {
                let _ = reply.send(Err(text.clone()));
            }
        }
    }
}
