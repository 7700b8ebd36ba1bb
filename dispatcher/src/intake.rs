//! The pull loop: messages come off the pool's durable consumer one at a time,
//! each only once a slot of the `--concurrency` window is free, and each is
//! handled on its own task (no batch waits for its slowest member). The
//! JetStream setup is re-done whenever pulling fails, so a lost stream or
//! consumer is re-created with the configured settings; health reports
//! NOT_SERVING meanwhile. This module also decides how each message ends:
//! acked, nak'ed with backoff, or parked on the dead-letter stream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use flow_run_proto::FlowRunDue;
use futures::{FutureExt, StreamExt};
use prefect_client::PrefectClient;
use prost::Message as _;
use service_runtime::health::Health;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::claim::{self, ClaimDecision};
use crate::dead_letter::DeadLetters;
use crate::kubernetes::Jobs;
use crate::metrics::DispatcherMetrics;
use crate::reads::Reads;
use crate::render::JobRenderer;
use crate::run_logs::RunLogs;
use crate::submit::{backoff, DueRun, Outcome, Submitter};
use crate::{DispatchStats, Dispatcher, DispatcherConfig, DispatcherError};

/// What every message task shares.
struct Handler {
    config: DispatcherConfig,
    submitter: Submitter,
    dead_letters: DeadLetters,
    stats: Arc<DispatchStats>,
    metrics: DispatcherMetrics,
}

/// How often an idle pull loop shows it is alive, and the consumer's backlog is read.
const IDLE_BEAT: Duration = Duration::from_secs(10);

/// Deadline of one set-up of the streams, the consumer and the pull.
const SET_UP_DEADLINE: Duration = Duration::from_secs(20);

type Messages = jetstream::consumer::pull::Stream;

/// How long a stopping dispatcher waits for the last submission lines to be sent.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    dispatcher: Dispatcher,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    let Dispatcher {
        config,
        prefect,
        kube,
        nats,
        health,
        stats,
        metrics,
    } = dispatcher;
    health.watch_liveness(config.liveness_timeout(), shutdown.clone());
    let js = jetstream::new(nats);
    let handler = Handler::new(config, prefect, kube, &js, stats, metrics)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        work_pool = %handler.config.pool.work_pool,
        concurrency = handler.config.concurrency,
        "Starting prefect-k8s dispatcher"
    );
    let window = Arc::new(Semaphore::new(handler.config.concurrency as usize));
    let handler = Arc::new(handler);
    let mut tasks = JoinSet::new();
    pull_until_shutdown(&js, &handler, &window, &mut tasks, &health, &shutdown).await;
    health.set_serving(false);
    while tasks.join_next().await.is_some() {}
    handler.submitter.logs.flush(LOG_FLUSH_TIMEOUT).await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

impl Handler {
    fn new(
        config: DispatcherConfig,
        prefect: PrefectClient,
        kube: kube::Client,
        js: &jetstream::Context,
        stats: Arc<DispatchStats>,
        metrics: DispatcherMetrics,
    ) -> Result<Handler, DispatcherError> {
        let renderer =
            JobRenderer::new(prefect.clone(), &config).map_err(DispatcherError::Config)?;
        let submitter = Submitter {
            reads: Reads::spawn(&prefect, config.deployment_cache()),
            logs: RunLogs::spawn(prefect.clone()),
            worker_name: config.pool.worker_name.clone(),
            work_pool: config.pool.work_pool.clone(),
            jobs: Jobs::new(kube, config.kubernetes_timeout()),
            claims: prefect.with_retry(prefect_client::RetryPolicy::no_retries()),
            claim_window: crate::submit::claim_window(config.ack_wait()),
            prefect,
            renderer,
            submission_timeout: config.submission_timeout(),
            metrics: metrics.clone(),
        };
        let dead_letters = DeadLetters::new(js.clone(), config.pool.worker_name.clone());
        Ok(Handler {
            config,
            submitter,
            dead_letters,
            stats,
            metrics,
        })
    }
}

/// Sets up the pull and pumps messages into `tasks` until `shutdown`, setting up
/// again (with a growing delay) whenever pulling fails.
async fn pull_until_shutdown(
    js: &jetstream::Context,
    handler: &Arc<Handler>,
    window: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    while !shutdown.is_cancelled() {
        // Setting up again (under its deadline) is progress: NATS away makes
        // the dispatcher not ready, never not live (Kubernetes must not restart
        // it for that).
        let set_up = tokio::time::timeout(SET_UP_DEADLINE, pull(js, &handler.config));
        let set_up = tokio::select! {
            _ = shutdown.cancelled() => break,
            set_up = while_beating(health, set_up) => set_up
                .unwrap_or_else(|_| Err(format!("no answer within {SET_UP_DEADLINE:?}"))),
        };
        match set_up {
            Ok((consumer, messages)) => {
                health.set_serving(true);
                health.started();
                delay = Duration::from_millis(250);
                let backlog =
                    watch_backlog(consumer, handler.metrics.clone(), shutdown.child_token());
                pump(messages, handler, window, tasks, health, shutdown).await;
                backlog.cancel();
            }
            Err(error) => tracing::warn!(%error, "cannot pull from JetStream; setting up again"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        health.set_serving(false);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = while_beating(health, tokio::time::sleep(delay)) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Awaits `work` (bounded by its own deadline), beating `health` every second
/// meanwhile.
async fn while_beating<F: std::future::Future>(health: &Health, work: F) -> F::Output {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticks.tick() => health.beat(),
        }
    }
}

/// Ensures the streams and the consumer (creating or updating them) and
/// starts pulling.
async fn pull(
    js: &jetstream::Context,
    config: &DispatcherConfig,
) -> Result<(PullConsumer, Messages), String> {
    let (flow_runs, _) = service_runtime::nats::ensure_streams(js, config.streams.replicas())
        .await
        .map_err(|e| e.to_string())?;
    let max_ack_pending = (i64::from(config.concurrency) * 64).max(1000);
    let consumer: PullConsumer = service_runtime::nats::dispatcher_consumer(
        &flow_runs,
        &config.pool.work_pool,
        config.ack_wait(),
        max_ack_pending,
    )
    .await
    .map_err(|e| e.to_string())?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(config.concurrency as usize)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    Ok((consumer, messages))
}

/// Reads the consumer's backlog into the metrics every [`IDLE_BEAT`] until
/// the returned token is cancelled.
fn watch_backlog(
    mut consumer: PullConsumer,
    metrics: DispatcherMetrics,
    stop: CancellationToken,
) -> CancellationToken {
    let token = stop.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(IDLE_BEAT);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let info = tokio::time::timeout(IDLE_BEAT, consumer.info()).await;
            if let Ok(Ok(info)) = info {
                crate::metrics::set(&metrics.consumer_pending, info.num_pending);
                crate::metrics::set(&metrics.consumer_ack_pending, info.num_ack_pending as u64);
                crate::metrics::set(&metrics.consumer_redelivered, info.num_redelivered as u64);
            }
        }
    });
    token
}

/// Takes messages while slots are free, until shutdown or until pulling
/// fails (the caller then sets up again).
async fn pump(
    mut messages: Messages,
    handler: &Arc<Handler>,
    window: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    loop {
        while tasks.try_join_next().is_some() {}
        health.beat();
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(IDLE_BEAT) => continue,
            permit = window.clone().acquire_owned() => permit.expect("the window is never closed"),
        };
        let item = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Idle: show the loop is alive, then wait again (the permit is returned).
            _ = tokio::time::sleep(IDLE_BEAT) => continue,
            item = messages.next() => item,
        };
        match item {
            Some(Ok(message)) => {
                let handler = handler.clone();
                tasks.spawn(async move { handler.handle(message, permit).await });
            }
            Some(Err(error)) => {
                tracing::warn!(%error, kind = ?error.kind(), "JetStream pull failed");
                return;
            }
            None => return,
        }
    }
    hand_back(&mut messages).await;
}

/// Naks, without delay, messages received but not started, so another
/// replica takes them at once instead of after the ack wait.
async fn hand_back(messages: &mut Messages) {
    let mut handed = 0;
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        let _ = message.ack_with(AckKind::Nak(None)).await;
        handed += 1;
    }
    if handed > 0 {
        tracing::info!(handed, "handed back unstarted flow runs");
    }
}

impl Handler {
    /// Decodes, submits (telling NATS it is in progress meanwhile) and
    /// settles one message. The window slot is freed when this returns.
    async fn handle(&self, message: jetstream::Message, _slot: OwnedSemaphorePermit) {
        self.metrics.in_flight.inc();
        self.handle_message(message).await;
        self.metrics.in_flight.dec();
    }

    async fn handle_message(&self, message: jetstream::Message) {
        let deliveries = message.info().map(|i| i.delivered as u64).unwrap_or(1);
        let due = match FlowRunDue::decode(message.payload.as_ref()).map(DueRun::parse) {
            Ok(Ok(due)) => due,
            Ok(Err(reason)) => return self.park(&message, deliveries, "invalid", &reason).await,
            Err(error) => {
                let reason = format!("not a FlowRunDue message: {error}");
                return self
                    .park(&message, deliveries, "undecodable", &reason)
                    .await;
            }
        };
        let ack_wait = self.config.ack_wait();
        if self.exhausted(&message, deliveries) {
            return with_progress(&message, ack_wait, self.give_up(&message, &due, deliveries))
                .await;
        }
        let outcome =
            with_progress(&message, ack_wait, self.submitter.submit(&due, deliveries)).await;
        self.settle(&message, &due, &outcome).await;
    }

    /// A message gives up only when it was delivered more than `--max-deliveries`
    /// times *and* is older than the submission timeout: deliveries that failed while
    /// Prefect or Kubernetes was unreachable say nothing against the run.
    fn exhausted(&self, message: &jetstream::Message, deliveries: u64) -> bool {
        let published = message
            .info()
            .ok()
            .map(|info| info.published.unix_timestamp());
        let age_seconds = published.map(|at| chrono::Utc::now().timestamp() - at);
        let timeout = i64::try_from(self.config.submission_timeout().as_secs()).unwrap_or(i64::MAX);
        deliveries as i64 > self.config.max_deliveries
            && age_seconds.is_some_and(|age| age > timeout)
    }

    /// Acks or naks the message according to the outcome, and logs it.
    async fn settle(&self, message: &jetstream::Message, due: &DueRun, outcome: &Outcome) {
        let flow_run_id = due.message.flow_run_id.as_str();
        let stats = &self.stats;
        self.metrics.submission(match outcome {
            Outcome::Submitted { .. } => "submitted",
            Outcome::Skipped(_) => "skipped",
            Outcome::Withdrawn { .. } => "withdrawn",
            Outcome::Crashed(_) => "crashed",
            Outcome::Retry { .. } => "retried",
        });
        match outcome {
            Outcome::Submitted { job, resumed } => {
                stats.submitted.fetch_add(1, Ordering::Relaxed);
                if *resumed {
                    stats.resumed.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(flow_run_id, flow_run = %due.message.flow_run_name, job = %job, resumed, "flow run submitted");
            }
            Outcome::Skipped(reason) => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(flow_run_id, %reason, "not submitting flow run");
            }
            Outcome::Withdrawn { job, reason } => {
                stats.withdrawn.fetch_add(1, Ordering::Relaxed);
                tracing::info!(flow_run_id, job = %job, %reason, "deleted the Job before it started");
            }
            Outcome::Crashed(text) => {
                stats.crashed.fetch_add(1, Ordering::Relaxed);
                let headline = text.lines().next().unwrap_or_default();
                tracing::warn!(flow_run_id, message = %headline, "flow run crashed before its Job could run");
            }
            Outcome::Retry { after, error } => {
                stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(flow_run_id, %error, retry_in = ?after, "submission failed; will retry");
                let _ = message.ack_with(AckKind::Nak(Some(*after))).await;
                return;
            }
        }
        ack(message, flow_run_id).await;
    }

    /// Parks a message on the dead-letter stream and terminates it. If
    /// parking fails the message is nak'ed, so it is never lost.
    async fn park(&self, message: &jetstream::Message, deliveries: u64, kind: &str, reason: &str) {
        tracing::error!(subject = %message.subject, kind, reason, "dead-lettering message");
        let parked = self
            .dead_letters
            .park(
                kind,
                message.subject.as_str(),
                reason,
                deliveries,
                &message.payload,
            )
            .await;
        match parked {
            Ok(()) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.metrics.submission("dead_lettered");
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

    /// A message delivered more often than allowed. Its run is Crashed and
    /// the message parked only when the run is known to be this message's
    /// (still in the published state, or Pending under its claim); a run
    /// that moved on is left alone; and while the run cannot be read the
    /// message is kept, because giving up blind could strand a claimed run.
    async fn give_up(&self, message: &jetstream::Message, due: &DueRun, deliveries: u64) {
        let flow_run_id = due.message.flow_run_id.as_str();
        let run = match self.submitter.reads.runs.read(due.key.flow_run_id).await {
            Ok(run) => run,
            Err(error) => {
                tracing::warn!(flow_run_id, %error, deliveries, "cannot read the run of a message that keeps failing; keeping it");
                let _ = message
                    .ack_with(AckKind::Nak(Some(backoff(deliveries))))
                    .await;
                return;
            }
        };
        let pool = &self.config.pool.work_pool;
        if let ClaimDecision::Skip(reason) = claim::decide(&due.key, run.as_ref(), pool) {
            return self.settle(message, due, &Outcome::Skipped(reason)).await;
        }
        let reason = format!("gave up after {deliveries} deliveries");
        let text = format!(
            "The prefect-k8s dispatcher could not submit this flow run: {reason}. The message is parked on the dead-letter stream."
        );
        match self.submitter.crash(due, deliveries, text).await {
            Outcome::Crashed(_) => self.park(message, deliveries, "gave-up", &reason).await,
            other => self.settle(message, due, &other).await,
        }
    }
}

/// Runs `work`, telling NATS the message is still being worked on every
/// third of the ack wait, so a slow call does not cause a redelivery.
async fn with_progress<F: std::future::Future>(
    message: &jetstream::Message,
    ack_wait: Duration,
    work: F,
) -> F::Output {
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

async fn ack(message: &jetstream::Message, flow_run_id: &str) {
    // A lost ack means one more delivery, which the claim rules make harmless.
    if let Err(error) = message.double_ack().await {
        tracing::warn!(flow_run_id, %error, "ack not confirmed; the message may be delivered again");
    }
}
