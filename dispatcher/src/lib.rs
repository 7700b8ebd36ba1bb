//! The dispatcher: takes due flow runs from NATS JetStream, claims each in
//! Prefect, renders its Kubernetes Job and creates it. Any number of replicas
//! share one durable pull consumer per work pool; each handles at most
//! `--concurrency` runs at once.
//!
//! What makes it safe to kill at any point is in [`submit`] and [`claim`];
//! `ARCHITECTURE.md` walks through every crash point.
//!
//! # Layout
//! - [`config`]: flags, including the seed agent's Job options.
//! - [`claim`]: whether a message may claim its run, and what Prefect's answer means.
//! - [`render`]: the Job manifest for a run (prefect-kubernetes 0.8 compatible).
//! - [`kubernetes`]: idempotent Job creation and error classification.
//! - [`submit`]: one run from claim to Job.
//! - [`dead_letter`]: parking messages that cannot be handled.
#![forbid(unsafe_code)]

pub mod claim;
pub mod config;
pub mod dead_letter;
pub mod kubernetes;
pub mod render;
pub mod submit;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use flow_run_proto::FlowRunDue;
use futures::{FutureExt, StreamExt};
use prefect_client::PrefectClient;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

pub use config::{DispatcherConfig, JobOptions};
use dead_letter::DeadLetters;
use submit::{DueRun, Outcome, Submitter};
use uuid::Uuid;

/// Everything that can stop the dispatcher from starting.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error(transparent)]
    Nats(#[from] service_runtime::nats::NatsSetupError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Counters of what this replica did, for logs, tests and metrics.
#[derive(Debug, Default)]
pub struct DispatchStats {
    pub submitted: AtomicU64,
    pub resumed: AtomicU64,
    pub skipped: AtomicU64,
    pub crashed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl DispatchStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Runs a dispatcher replica until `shutdown` is cancelled. On shutdown it
/// stops pulling, finishes the runs in hand, and hands back (naks) messages
/// it had received but not started.
pub async fn run(
    config: DispatcherConfig,
    prefect: PrefectClient,
    kube: kube::Client,
    nats: async_nats::Client,
    shutdown: CancellationToken,
    stats: Arc<DispatchStats>,
) -> Result<(), DispatcherError> {
    let js = jetstream::new(nats);
    let (flow_runs, _) =
        service_runtime::nats::ensure_streams(&js, config.stream_replicas.into()).await?;
    let max_ack_pending = (config.concurrency as i64 * 64).max(1000);
    let consumer = service_runtime::nats::dispatcher_consumer(
        &flow_runs,
        &config.work_pool,
        config.ack_wait(),
        max_ack_pending,
    )
    .await?;
    let renderer =
        render::JobRenderer::new(prefect.clone(), &config).map_err(DispatcherError::Config)?;
    let submitter = Arc::new(Submitter {
        prefect: prefect.clone(),
        kube,
        renderer,
    });
    let dead_letters = DeadLetters::new(js.clone(), config.worker_name.clone());
    let batch = config.concurrency as usize;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        work_pool = %config.work_pool,
        concurrency = batch,
        "Starting prefect-k8s dispatcher"
    );

    let mut reconnect_delay = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        let messages = match consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "pulling from JetStream failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(reconnect_delay) => {}
                }
                reconnect_delay = (reconnect_delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        reconnect_delay = Duration::from_millis(250);
        let mut chunks = messages.ready_chunks(batch);
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => {
                    hand_back(&mut chunks).await;
                    break;
                }
                chunk = chunks.next() => chunk,
            };
            let Some(chunk) = chunk else { break };
            let mut received = Vec::with_capacity(chunk.len());
            for item in chunk {
                match item {
                    Ok(message) => received.push(message),
                    // Heartbeat misses and pull errors while NATS is away: the
                    // stream keeps going; messages will be redelivered.
                    Err(error) => tracing::warn!(%error, "JetStream pull error"),
                }
            }
            if !received.is_empty() {
                handle_chunk(&config, &submitter, &dead_letters, &stats, received).await;
            }
        }
    }
    tracing::info!("dispatcher stopped");
    Ok(())
}

/// Naks, without delay, messages received but not started, so another
/// replica takes them at once instead of after the ack wait.
async fn hand_back<S>(chunks: &mut S)
where
    S: futures::Stream<
            Item = Vec<
                Result<jetstream::Message, async_nats::jetstream::consumer::pull::MessagesError>,
            >,
        > + Unpin,
{
    let mut handed = 0;
    while let Some(Some(chunk)) = chunks.next().now_or_never() {
        for message in chunk.into_iter().flatten() {
            let _ = message.ack_with(AckKind::Nak(None)).await;
            handed += 1;
        }
    }
    if handed > 0 {
        tracing::info!(handed, "handed back unstarted flow runs");
    }
}

/// Handles messages that arrived together: one batched read of their runs,
/// then every submission concurrently.
async fn handle_chunk(
    config: &DispatcherConfig,
    submitter: &Arc<Submitter>,
    dead_letters: &DeadLetters,
    stats: &Arc<DispatchStats>,
    received: Vec<jetstream::Message>,
) {
    let mut decoded = Vec::with_capacity(received.len());
    for message in received {
        let deliveries = message.info().map(|i| i.delivered as u64).unwrap_or(1);
        match FlowRunDue::decode(message.payload.as_ref()).map(DueRun::parse) {
            Ok(Ok(due)) => {
                if deliveries as i64 > config.max_deliveries {
                    give_up(submitter, dead_letters, stats, &message, &due, deliveries).await;
                } else {
                    decoded.push((message, due, deliveries));
                }
            }
            Ok(Err(reason)) => {
                park(
                    dead_letters,
                    stats,
                    &message,
                    deliveries,
                    "invalid",
                    &reason,
                )
                .await
            }
            Err(error) => {
                park(
                    dead_letters,
                    stats,
                    &message,
                    deliveries,
                    "undecodable",
                    &format!("not a FlowRunDue message: {error}"),
                )
                .await
            }
        }
    }
    if decoded.is_empty() {
        return;
    }

    let ids: Vec<Uuid> = decoded.iter().map(|(_, due, _)| due.flow_run_id).collect();
    let runs: HashMap<Uuid, prefect_client::FlowRun> =
        match submitter.prefect.read_flow_runs_by_ids(&ids).await {
            Ok(runs) => runs.into_iter().map(|r| (r.id, r)).collect(),
            Err(error) => {
                tracing::warn!(%error, runs = ids.len(), "reading flow runs failed; will retry");
                for (message, _, deliveries) in decoded {
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    let _ = message
                        .ack_with(AckKind::Nak(Some(submit::backoff(deliveries))))
                        .await;
                }
                return;
            }
        };

    let ack_wait = config.ack_wait();
    let outcomes =
        futures::future::join_all(decoded.into_iter().map(|(message, due, deliveries)| {
            let run = runs.get(&due.flow_run_id);
            async move {
                let outcome =
                    with_progress(&message, ack_wait, submitter.submit(&due, run, deliveries))
                        .await;
                settle(&message, &due, &outcome, stats).await;
                outcome
            }
        }))
        .await;
    let submitted = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Submitted { .. }))
        .count();
    if submitted > 0 {
        tracing::info!("Submitted {submitted} flow run(s) for execution.");
    }
}

/// Runs `work`, telling NATS the message is still being worked on every
/// third of the ack wait, so a slow Prefect does not cause a redelivery.
async fn with_progress<F: std::future::Future<Output = Outcome>>(
    message: &jetstream::Message,
    ack_wait: Duration,
    work: F,
) -> Outcome {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(ack_wait / 3);
    ticker.tick().await;
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticker.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
        }
    }
}

/// Acks or naks the message according to the outcome, and logs it.
async fn settle(
    message: &jetstream::Message,
    due: &DueRun,
    outcome: &Outcome,
    stats: &DispatchStats,
) {
    let flow_run_id = due.message.flow_run_id.as_str();
    match outcome {
        Outcome::Submitted { job, resumed } => {
            stats.submitted.fetch_add(1, Ordering::Relaxed);
            if *resumed {
                stats.resumed.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(flow_run_id, flow_run = %due.message.flow_run_name, job = %job, resumed, "flow run submitted");
            ack(message, flow_run_id).await;
        }
        Outcome::Skipped(reason) => {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(flow_run_id, %reason, "not submitting flow run");
            ack(message, flow_run_id).await;
        }
        Outcome::Crashed(text) => {
            stats.crashed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(flow_run_id, message = %text, "flow run crashed before its Job could run");
            ack(message, flow_run_id).await;
        }
        Outcome::Retry { after, error } => {
            stats.retried.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(flow_run_id, %error, retry_in = ?after, "submission failed; will retry");
            let _ = message.ack_with(AckKind::Nak(Some(*after))).await;
        }
    }
}

async fn ack(message: &jetstream::Message, flow_run_id: &str) {
    // A lost ack means one more delivery, which the claim rules make harmless.
    if let Err(error) = message.double_ack().await {
        tracing::warn!(flow_run_id, %error, "ack not confirmed; the message may be delivered again");
    }
}

/// Parks a message on the dead-letter stream and terminates it. If parking
/// fails the message is nak'ed, so it is never lost.
async fn park(
    dead_letters: &DeadLetters,
    stats: &DispatchStats,
    message: &jetstream::Message,
    deliveries: u64,
    kind: &str,
    reason: &str,
) {
    tracing::error!(subject = %message.subject, kind, reason, "dead-lettering message");
    match dead_letters
        .park(
            kind,
            message.subject.as_str(),
            reason,
            deliveries,
            &message.payload,
        )
        .await
    {
        Ok(()) => {
            stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(error) => {
            tracing::warn!(%error, "dead-lettering failed; will retry");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}

/// A message that failed more often than allowed: report the run Crashed
/// (best effort; Prefect may be what keeps failing) and park the message.
async fn give_up(
    submitter: &Submitter,
    dead_letters: &DeadLetters,
    stats: &DispatchStats,
    message: &jetstream::Message,
    due: &DueRun,
    deliveries: u64,
) {
    let reason = format!("gave up after {deliveries} deliveries");
    // Crash the run only if this message still owns it: in its published
    // state, or Pending under this message's claim.
    let transition_id = claim::claim_transition_id(due.flow_run_id, due.state_id);
    let owned = match submitter.prefect.read_flow_run(due.flow_run_id).await {
        Ok(run) => !matches!(
            claim::decide(due.state_id, transition_id, Some(&run)),
            claim::ClaimDecision::Skip(_)
        ),
        Err(_) => false,
    };
    if owned {
        let crash = prefect_client::StateCreate::crashed(format!(
            "The prefect-k8s dispatcher could not submit this flow run: {reason}. The message is parked on the dead-letter stream."
        ));
        if let Err(error) = submitter
            .prefect
            .set_flow_run_state(due.flow_run_id, &crash, false)
            .await
        {
            tracing::warn!(flow_run_id = %due.flow_run_id, %error, "could not report the crash");
        }
    }
    park(dead_letters, stats, message, deliveries, "gave-up", &reason).await;
}
