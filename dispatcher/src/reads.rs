//! Batched reads from Prefect: the runs, deployments and flows that the
//! submissions in flight need. Every submission reads its run twice (before
//! claiming, and after its Job exists) and its deployment and flow once; the
//! reads of all submissions in flight are coalesced into one `filter` call per
//! kind and batch, so a backlog costs a few reads per batch rather than per
//! run, and a slow read holds up only the submissions waiting for it.
//!
//! Deployments are kept for `--deployment-cache-seconds` (5 s), and a kept
//! read serves only runs created before it began (with a second's margin for
//! clocks): a backlog of one deployment's runs reads it once per period, a run
//! created after an edit (deploy, then run) never gets the deployment as it was
//! before, and an edit made after a run's creation reaches its Job within the
//! period. Runs are never kept: every claim and release decides on a read made
//! for it.
//!
//! What is rendered comes from these reads, never from the NATS message: the
//! message only says which run is due.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use prefect_client::{Deployment, Flow, FlowRun, PrefectClient, PrefectError, MAX_PAGE_SIZE};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use uuid::Uuid;

/// How long the first request of a batch waits for others.
const COALESCE: Duration = Duration::from_millis(5);
/// Batches of one kind read at once.
const READS_IN_FLIGHT: usize = 4;
/// Flow names kept (a flow's name never changes).
const FLOW_NAMES_KEPT: usize = 10_000;
/// Deployments kept at most (the cache is emptied when full).
const DEPLOYMENTS_KEPT: usize = 10_000;

/// An object as read just now: `None` when Prefect does not have it.
pub type ReadResult<T> = Result<Option<T>, String>;

type Request<T> = (Uuid, oneshot::Sender<ReadResult<T>>);

/// A handle to a task that reads objects of one kind by id, in batches.
pub struct BatchReader<T> {
    requests: mpsc::UnboundedSender<Request<T>>,
}

impl<T> Clone for BatchReader<T> {
    fn clone(&self) -> Self {
        BatchReader {
            requests: self.requests.clone(),
        }
    }
}

impl<T: Clone + Send + 'static> BatchReader<T> {
    /// Starts the reader task; it stops when every handle is dropped. `fetch`
    /// reads up to [`MAX_PAGE_SIZE`] ids; `id_of` tells which id an object has.
    pub fn spawn<F, Fut>(what: &'static str, fetch: F, id_of: fn(&T) -> Uuid) -> Self
    where
        F: Fn(Vec<Uuid>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<T>, PrefectError>> + Send + 'static,
    {
        let (requests, receiver) = mpsc::unbounded_channel();
        let fetch = Arc::new(fetch);
        tokio::spawn(batch_reads(what, fetch, id_of, receiver));
        BatchReader { requests }
    }

    /// Reads one object (in a batch with whatever else is being read).
    pub async fn read(&self, id: Uuid) -> ReadResult<T> {
        let (answer, reply) = oneshot::channel();
        let stopped = || "the Prefect reader stopped".to_string();
        self.requests.send((id, answer)).map_err(|_| stopped())?;
        reply.await.map_err(|_| stopped())?
    }
}

async fn batch_reads<T, F, Fut>(
    what: &'static str,
    fetch: Arc<F>,
    id_of: fn(&T) -> Uuid,
    mut receiver: mpsc::UnboundedReceiver<Request<T>>,
) where
    T: Clone + Send + 'static,
    F: Fn(Vec<Uuid>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<T>, PrefectError>> + Send + 'static,
{
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
        let fetch = fetch.clone();
        tokio::spawn(async move {
            answer(what, fetch.as_ref(), id_of, batch).await;
            drop(slot);
        });
    }
}

async fn answer<T, F, Fut>(what: &str, fetch: &F, id_of: fn(&T) -> Uuid, batch: Vec<Request<T>>)
where
    T: Clone,
    F: Fn(Vec<Uuid>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, PrefectError>>,
{
    let mut ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    match fetch(ids).await {
        Ok(found) => {
            let found: HashMap<Uuid, T> = found.into_iter().map(|o| (id_of(&o), o)).collect();
            for (id, reply) in batch {
                let _ = reply.send(Ok(found.get(&id).cloned()));
            }
        }
        Err(error) => {
            let text = format!("reading {what}: {error}");
            for (_, reply) in batch {
                let _ = reply.send(Err(text.clone()));
            }
        }
    }
}

/// The readers a dispatcher's submissions share.
#[derive(Clone)]
pub struct Reads {
    pub runs: BatchReader<FlowRun>,
    deployments: BatchReader<Deployment>,
    flows: BatchReader<Flow>,
    flow_names: Arc<Mutex<HashMap<Uuid, String>>>,
    kept_deployments: Arc<Kept<Deployment>>,
}

impl Reads {
    /// Starts the readers; deployments are kept for `deployment_ttl`.
    pub fn spawn(prefect: &PrefectClient, deployment_ttl: Duration) -> Reads {
        let client = prefect.clone();
        let runs = BatchReader::spawn(
            "flow runs",
            move |ids| {
                let client = client.clone();
                async move { client.read_flow_runs_by_ids(&ids).await }
            },
            |run: &FlowRun| run.id,
        );
        let client = prefect.clone();
        let deployments = BatchReader::spawn(
            "deployments",
            move |ids| {
                let client = client.clone();
                async move { client.read_deployments_by_ids(&ids).await }
            },
            |deployment: &Deployment| deployment.id,
        );
        let client = prefect.clone();
        let flows = BatchReader::spawn(
            "flows",
            move |ids| {
                let client = client.clone();
                async move { client.read_flows_by_ids(&ids).await }
            },
            |flow: &Flow| flow.id,
        );
        Reads {
            runs,
            deployments,
            flows,
            flow_names: Arc::default(),
            kept_deployments: Arc::new(Kept::new(deployment_ttl, DEPLOYMENTS_KEPT)),
        }
    }

    /// The deployment of a run created at `run_created`, from a read made
    /// within the last `deployment_ttl` and begun after the run was created, or
    /// read now. `None` when Prefect does not have it (never kept).
    pub async fn deployment(
        &self,
        id: Uuid,
        run_created: Option<DateTime<Utc>>,
    ) -> ReadResult<Deployment> {
        if let Some(deployment) = self.kept_deployments.get(id, run_created) {
            return Ok(Some(deployment));
        }
        let began = Began::now();
        let deployment = self.deployments.read(id).await?;
        if let Some(deployment) = &deployment {
            self.kept_deployments.keep(id, began, deployment.clone());
        }
        Ok(deployment)
    }

    /// A flow's name (read once, then remembered: flows are never renamed).
    pub async fn flow_name(&self, flow_id: Uuid) -> Result<String, String> {
        if let Some(name) = self.flow_names.lock().get(&flow_id) {
            return Ok(name.clone());
        }
        let flow = self
            .flows
            .read(flow_id)
            .await?
            .ok_or_else(|| format!("flow {flow_id} does not exist"))?;
        let mut names = self.flow_names.lock();
        if names.len() >= FLOW_NAMES_KEPT {
            names.clear();
        }
        names.insert(flow_id, flow.name.clone());
        Ok(flow.name)
    }
}

/// When a read began: for its age, and (wall clock) for what it can have seen.
#[derive(Clone, Copy, Debug)]
struct Began {
    at: Instant,
    wall: DateTime<Utc>,
}

impl Began {
    fn now() -> Self {
        Began {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }
}

/// How much the Prefect server's clock may differ from ours.
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Objects kept for a while after their read, at most `capacity` of them (all
/// are dropped when it is reached: a cache, not a store).
struct Kept<T> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Uuid, (Began, T)>>,
}

impl<T: Clone> Kept<T> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Kept {
            ttl,
            capacity,
            entries: Mutex::default(),
        }
    }

    /// The object, if its read began less than `ttl` ago and after `since`
    /// (when given), so that it cannot predate a change made before `since`.
    fn get(&self, id: Uuid, since: Option<DateTime<Utc>>) -> Option<T> {
        let entries = self.entries.lock();
        let (began, object) = entries.get(&id)?;
        let fresh = began.at.elapsed() < self.ttl;
        let after = since.is_none_or(|since| began.wall > since + CLOCK_MARGIN);
        (fresh && after).then(|| object.clone())
    }

    /// Keeps an object whose read began at `began`.
    fn keep(&self, id: Uuid, began: Began, object: T) {
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(id, (began, object));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_kept_object_is_reused_until_its_period_ends() {
        let kept = Kept::new(Duration::from_secs(5), 10);
        let id = Uuid::from_u128(1);
        kept.keep(id, Began::now(), "v1");
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert_eq!(kept.get(id, None), Some("v1"));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            kept.get(id, None),
            None,
            "read again once the period is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_period_counts_from_the_start_of_the_read() {
        let kept = Kept::new(Duration::from_secs(5), 10);
        let began = Began::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        kept.keep(Uuid::from_u128(1), began, "slow answer");
        assert_eq!(kept.get(Uuid::from_u128(1), None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_serves_only_runs_created_before_it_began() {
        // Deploy, then run: a run created after the kept read may follow an
        // edit that read does not have.
        let kept = Kept::new(Duration::from_secs(5), 10);
        let id = Uuid::from_u128(1);
        let began = Began::now();
        kept.keep(id, began, "as read");
        let backlog_run = began.wall - chrono::TimeDelta::minutes(3);
        assert_eq!(kept.get(id, Some(backlog_run)), Some("as read"));
        let new_run = began.wall + chrono::TimeDelta::milliseconds(10);
        assert_eq!(kept.get(id, Some(new_run)), None);
        let within_the_margin = began.wall - chrono::TimeDelta::milliseconds(500);
        assert_eq!(kept.get(id, Some(within_the_margin)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_period_keeps_nothing_and_a_full_cache_starts_over() {
        let never = Kept::new(Duration::ZERO, 10);
        never.keep(Uuid::from_u128(1), Began::now(), 1);
        assert_eq!(never.get(Uuid::from_u128(1), None), None);
        let small = Kept::new(Duration::from_secs(5), 2);
        for n in 1..=3 {
            small.keep(Uuid::from_u128(n), Began::now(), n);
        }
        assert_eq!(small.get(Uuid::from_u128(1), None), None);
        assert_eq!(small.get(Uuid::from_u128(3), None), Some(3));
    }
}
