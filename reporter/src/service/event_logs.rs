//! Kubernetes Events about our pods and Jobs (Scheduled, Pulling, BackOff,
//! FailedScheduling, …) forwarded as flow-run logs, each observation once, across
//! restarts and failovers.
//!
//! Every replica watches core/v1 Events and keeps, per Event, only what is still to be
//! forwarded ([`EventBacklog`]); the leader resolves each one's flow run through the
//! view store, sends the lines with `create_logs`, then records the highest forwarded
//! count **on the Event itself**, as the annotation
//! `prefect-k8s.io/forwarded-count`. Why there:
//! - the record lives exactly as long as what it deduplicates (Events expire after an
//!   hour; so does their annotation), so it needs no cleanup and no extra store;
//! - a restarted reporter or a standby taking over sees it in its own Event watch,
//!   with no extra read (NATS KV would add a dependency the reporter has no other use
//!   for; an annotation on the pod or Job would wake our own pod/Job watchers and
//!   race with the controllers that update them);
//! - the kubelet and controllers update an Event by patching `count`/`lastTimestamp`,
//!   which keeps annotations.
//!
//! A line is sent before its Event is annotated: a reporter killed between the two
//! sends that line again (at least once); every other restart repeats nothing.
//! Batches are sent without HTTP retries: when a send fails (the answer may have been
//! lost after Prefect stored the lines, or the server may still be storing them), the
//! lines wait one Prefect request timeout, then the runs' logs of that time window
//! are read back and only the lines not there are sent. The same check is made
//! for everything pending when a replica starts leading: the previous leader may have
//! sent lines it did not live to annotate. Those are held for one Prefect request
//! timeout first, so that a request of the previous leader still on its way (a
//! leader stopped between its last leadership check and its send, a slow proxy) has
//! landed, or failed, before the read-back.
//!
//! The same watch feeds the decisions: what a node autoscaler (cluster-autoscaler,
//! Karpenter) says about a pod is kept in the view store on every replica, whether or
//! not Events are forwarded (`--disable-event-logs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use prefect_client::{LogCreate, PrefectClient, PrefectError};
use tokio_util::sync::CancellationToken;

use super::lease::Leadership;
use uuid::Uuid;

use super::metrics::ReporterMetrics;
use super::store::SharedStore;
use super::watch::ApiScope;
use crate::{event_log, scale_up_signal, EventLog};

/// Annotation on an Event: the highest count of it forwarded as a flow-run log.
pub use flow_run_proto::kubernetes::FORWARDED_COUNT_ANNOTATION;
/// Logger name of forwarded lines.
pub const EVENT_LOGGER: &str = "prefect_k8s.reporter.kubernetes_events";
/// An Event whose subject is not (yet) one of our pods or Jobs is dropped after this.
const UNMATCHED_TTL: Duration = Duration::from_secs(120);
/// How often the leader forwards.
const FORWARD_PERIOD: Duration = Duration::from_millis(500);
/// Lines per `create_logs` call.
const LOGS_PER_CALL: usize = 200;
/// Event annotations written at once.
const PATCHES_IN_FLIGHT: usize = 8;
/// How far the clock that stamps Events (the kubelet's, the apiserver's) may be
/// ahead of ours: an Event stamped up to this much after a takeover may still
/// have been seen, and sent, by the previous leader.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// Pause after a failed forward.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// An Event observation not forwarded yet.
#[derive(Clone, Debug)]
struct PendingEvent {
    namespace: Box<str>,
    name: Box<str>,
    log: EventLog,
    first_seen: Instant,
    /// A send of this line failed: it may have been stored anyway.
    maybe_sent: bool,
    /// Not sent before this: a previous leader's request for it may still land.
    held_until: Option<Instant>,
    /// The flow run, once resolved (kept: the pod's views may be gone by the time
    /// a held line is sent).
    run: Option<Uuid>,
}

/// What is left to forward, per Event uid (or namespace/name).
#[derive(Debug, Default)]
pub struct EventBacklog {
    pending: HashMap<Box<str>, PendingEvent>,
    /// Counts this process forwarded whose annotation it has not seen yet.
    forwarded: HashMap<Box<str>, u32>,
    /// Since the last takeover, for a line first seen after it (this
    /// replica's watch lagged or was cut across the takeover).
    takeover: Option<Takeover>,
}

/// When this replica last began leading.
#[derive(Clone, Copy, Debug)]
struct Takeover {
    /// Its time (our clock).
    at: chrono::DateTime<chrono::Utc>,
    /// Until when what the previous leader may have sent is held.
    quiet_until: Instant,
}

impl Takeover {
    /// How a line first seen after the takeover and observed (by Kubernetes'
    /// clock, to the second) at `observed` is treated: `Some(hold)` to be read
    /// back first, held until `hold` when the previous leader may still have a
    /// request for it on its way.
    fn check(&self, observed: chrono::DateTime<chrono::Utc>) -> Option<Option<Instant>> {
        // Stamped well before the takeover: the previous leader may have sent it
        // (and it stopped acting before the Lease came here, so not after).
        if observed < self.at - chrono::TimeDelta::seconds(1) {
            return Some(Some(self.quiet_until));
        }
        // Around it, or after it within the skew of Kubernetes' clock: read back.
        (observed < self.at + CLOCK_SKEW).then_some(None)
    }
}

fn annotated_count(event: &KubeEvent) -> u32 {
    event
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(FORWARDED_COUNT_ANNOTATION))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

impl EventBacklog {
    /// Takes in an added or modified Event.
    pub fn observe(&mut self, event: &KubeEvent, now: Instant) {
        let Some(log) = event_log(event) else {
            return;
        };
        let key = log.dedup_key.event.clone();
        let annotated = annotated_count(event);
        let local = self.forwarded.get(&key).copied().unwrap_or(0);
        if annotated >= local {
            self.forwarded.remove(&key);
        }
        if log.dedup_key.is_covered_by(annotated.max(local)) {
            self.pending.remove(&key);
            return;
        }
        let previous = self.pending.get(&key);
        let first_seen = previous.map_or(now, |pending| pending.first_seen);
        let same_line = previous.filter(|pending| pending.log.dedup_key == log.dedup_key);
        let mut maybe_sent = same_line.is_some_and(|pending| pending.maybe_sent);
        let mut held_until = same_line.and_then(|pending| pending.held_until);
        let run = previous.and_then(|pending| pending.run);
        let mut log = log;
        // A line's timestamp must not change between attempts (the read-back matches it).
        if let Some(pending) = same_line {
            log.timestamp = pending.log.timestamp;
        }
        // To the microsecond, as Prefect stores it (the read-back compares it).
        let now = || chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
        let observed = *log.timestamp.get_or_insert_with(now);
        let check = self.takeover.filter(|_| same_line.is_none());
        if let Some(hold) = check.and_then(|takeover| takeover.check(observed)) {
            maybe_sent = true;
            held_until = hold;
        }
        self.pending.insert(
            key,
            PendingEvent {
                namespace: event
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or_default()
                    .into(),
                name: event.metadata.name.as_deref().unwrap_or_default().into(),
                log,
                first_seen,
                maybe_sent,
                held_until,
                run,
            },
        );
    }

    /// Forgets a deleted Event.
    pub fn remove(&mut self, event: &KubeEvent) {
        if let Some(log) = event_log(event) {
            self.pending.remove(&log.dedup_key.event);
            self.forwarded.remove(&log.dedup_key.event);
        }
    }

    /// The pending Events whose flow run `run_of` finds; drops those unmatched for too long.
    fn ready(
        &mut self,
        run_of: impl Fn(&EventLog) -> Option<Uuid>,
        now: Instant,
    ) -> Vec<(Uuid, PendingEvent)> {
        let mut ready = Vec::new();
        self.pending
            .retain(|_, pending| match run_of(&pending.log).or(pending.run) {
                Some(run) => {
                    pending.run = Some(run);
                    if pending.held_until.is_none_or(|until| now >= until) {
                        ready.push((run, pending.clone()));
                    }
                    true
                }
                None => now.duration_since(pending.first_seen) < UNMATCHED_TTL,
            });
        ready
    }

    /// Records that `log` was forwarded.
    fn forwarded(&mut self, log: &EventLog) {
        let key = &log.dedup_key.event;
        let count = log.dedup_key.count;
        if self
            .pending
            .get(key)
            .is_some_and(|pending| pending.log.dedup_key.count <= count)
        {
            self.pending.remove(key);
        }
        let entry = self.forwarded.entry(key.clone()).or_insert(0);
        *entry = (*entry).max(count);
    }

    /// This replica starts leading. Everything pending may have been sent by a
    /// previous leader, whose requests may still be on their way for `quiet`:
    /// held until then, then read back. A line seen later is read back too
    /// when Kubernetes stamped it before (or around) now, and held as well
    /// when stamped well before ([`Takeover::check`]); one stamped just after
    /// the takeover is not held, so a new leader forwards at once.
    fn took_over(&mut self, now: Instant, quiet: Duration) {
        let until = now + quiet;
        for pending in self.pending.values_mut() {
            pending.maybe_sent = true;
            pending.held_until = Some(until);
        }
        self.takeover = Some(Takeover {
            at: chrono::Utc::now(),
            quiet_until: until,
        });
    }

    /// Records that a send of `log` failed after it may have reached Prefect (or
    /// may still reach it): held until `until`, then read back.
    fn maybe_sent(&mut self, log: &EventLog, until: Instant) {
        if let Some(pending) = self.pending.get_mut(&log.dedup_key.event) {
            if pending.log.dedup_key == log.dedup_key {
                pending.maybe_sent = true;
                pending.held_until = Some(until);
            }
        }
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// Watches Events until `shutdown`: records what node autoscalers say about pods in the
/// store (every replica), and, when `forward` and leading, forwards them as run logs.
pub async fn run_event_logs(
    scope: ApiScope,
    store: SharedStore,
    prefect: PrefectClient,
    leadership: Leadership,
    forward_logs: bool,
    metrics: ReporterMetrics,
    shutdown: CancellationToken,
) {
    let api: Api<KubeEvent> = scope.api();
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut backlog = EventBacklog::default();
    let mut forward_ticks = tokio::time::interval(FORWARD_PERIOD);
    forward_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_listed = false;
    // Sends are not retried by the client: a failed one is checked and redone here.
    let once = prefect.with_retry(prefect_client::RetryPolicy::no_retries());
    let mut retry_at: Option<Instant> = None;
    // Whether what was pending when this replica began leading (with the Event
    // list in and the store in sync) has been marked as maybe sent.
    let mut took_over = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(Event::Init) => {}
                    Ok(Event::InitApply(event) | Event::Apply(event)) => {
                        observe_scale_up(&store, &event);
                        if forward_logs {
                            backlog.observe(&event, Instant::now());
                        }
                    }
                    Ok(Event::InitDone) => events_listed = true,
                    Ok(Event::Delete(event)) => backlog.remove(&event),
                    Err(error) => {
                        metrics.watch_restart("events");
                        tracing::warn!(%error, "Event watch failed; retrying with backoff")
                    }
                }
            }
            _ = forward_ticks.tick() => {
                let leading = leadership.is_leading();
                let ready = forward_logs && events_listed && store.is_synced();
                if !leading {
                    took_over = false;
                } else if ready && !took_over {
                    // A previous leader (another replica, or this one before a restart)
                    // may have sent lines whose requests are still on their way (a slow
                    // network, a proxy): they land within its request timeout. Marked
                    // once the Event list is in, so that every listed Event counts.
                    backlog.took_over(Instant::now(), prefect.request_timeout());
                    took_over = true;
                }
                let due = retry_at.is_none_or(|at| Instant::now() >= at);
                if due && ready && leadership.is_leading() {
                    let clients = Clients { send: &once, read: &prefect, kube: &scope.client };
                    match forward(&mut backlog, &store, clients, &leadership).await {
                        Ok(sent) => {
                            metrics.event_lines(sent);
                            retry_at = None;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "forwarding Kubernetes events failed; retrying");
                            retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                        }
                    }
                }
            }
        }
    }
}

/// Keeps the autoscaler's word about a pod in the store (for the decisions).
fn observe_scale_up(store: &SharedStore, event: &KubeEvent) {
    if let Some((pod, signal)) = scale_up_signal(event) {
        let now = chrono::Utc::now();
        store.update(|store| store.observe_scale_up(&pod, signal, now));
    }
}

/// What forwarding talks to.
#[derive(Clone, Copy)]
struct Clients<'a> {
    /// Sends lines, without HTTP retries (a failed send is checked, then redone).
    send: &'a PrefectClient,
    /// Reads lines back, with the client's retries.
    read: &'a PrefectClient,
    kube: &'a kube::Client,
}

async fn forward(
    backlog: &mut EventBacklog,
    store: &SharedStore,
    clients: Clients<'_>,
    leadership: &Leadership,
) -> Result<usize, PrefectError> {
    let Clients {
        send: prefect,
        read,
        kube,
    } = clients;
    let ready = store.read(|store| backlog.ready(|log| store.run_of_event(log), Instant::now()));
    let mut sent = 0;
    for chunk in ready.chunks(LOGS_PER_CALL) {
        if !leadership.is_leading() {
            return Ok(sent);
        }
        let lines: Vec<LogCreate> = chunk
            .iter()
            .map(|(run, pending)| line(*run, pending))
            .collect();
        let unsent = if chunk.iter().any(|(_, pending)| pending.maybe_sent) {
            not_stored_yet(read, lines).await?
        } else {
            lines
        };
        // The read-back can be slow under faults: a replica that lost the Lease
        // meanwhile must not send (the next leader will).
        if !leadership.is_leading() {
            return Ok(sent);
        }
        if let Err(error) = prefect.create_logs(&unsent).await {
            // The request may still be on its way, or the server still at it.
            let until = Instant::now() + prefect.request_timeout();
            for (_, pending) in chunk {
                backlog.maybe_sent(&pending.log, until);
            }
            return Err(error);
        }
        sent += unsent.len();
        tracing::debug!(lines = unsent.len(), "forwarded Kubernetes event lines");
        for (_, pending) in chunk {
            backlog.forwarded(&pending.log);
        }
        futures::stream::iter(chunk)
            .for_each_concurrent(PATCHES_IN_FLIGHT, |(_, pending)| async move {
                annotate(kube, pending).await;
            })
            .await;
    }
    Ok(sent)
}

/// The flow-run log line of a pending Event.
fn line(run: Uuid, pending: &PendingEvent) -> LogCreate {
    let mut line = LogCreate::for_flow_run(
        run,
        EVENT_LOGGER,
        u32::from(pending.log.level.python_level()),
        pending.log.message.clone(),
    );
    if let Some(at) = pending.log.timestamp {
        line.timestamp = at;
    }
    line
}

/// The lines Prefect does not have yet: reads back the runs' logs around the lines'
/// timestamps and drops every line already stored (same run, logger, message and
/// timestamp: a line's timestamp is its Event's, the same on every replica, so
/// another Event with the same words is not taken for it).
async fn not_stored_yet(
    prefect: &PrefectClient,
    lines: Vec<LogCreate>,
) -> Result<Vec<LogCreate>, PrefectError> {
    let (Some(first), Some(last)) = (
        lines.iter().map(|l| l.timestamp).min(),
        lines.iter().map(|l| l.timestamp).max(),
    ) else {
        return Ok(lines);
    };
    let mut runs: Vec<Uuid> = lines.iter().filter_map(|l| l.flow_run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    let margin = chrono::TimeDelta::seconds(1);
    let stored = prefect
        .read_logs_between(&runs, first - margin, last + margin)
        .await?;
    let stored: std::collections::HashSet<(Option<Uuid>, &str, i64)> = stored
        .iter()
        .filter(|log| log.name == EVENT_LOGGER)
        .map(|log| {
            (
                log.flow_run_id,
                log.message.as_str(),
                log.timestamp.timestamp_micros(),
            )
        })
        .collect();
    let before = lines.len();
    let unsent: Vec<LogCreate> = lines
        .into_iter()
        .filter(|line| {
            let micros = line.timestamp.timestamp_micros();
            !stored.contains(&(line.flow_run_id, line.message.as_str(), micros))
        })
        .collect();
    tracing::info!(
        stored = before - unsent.len(),
        unsent = unsent.len(),
        "checked which Kubernetes event lines of a failed send reached Prefect"
    );
    Ok(unsent)
}

/// Records the forwarded count on the Event (404: the Event expired meanwhile).
async fn annotate(kube: &kube::Client, pending: &PendingEvent) {
    if pending.name.is_empty() {
        return;
    }
    let api: Api<KubeEvent> = Api::namespaced(kube.clone(), &pending.namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {FORWARDED_COUNT_ANNOTATION: pending.log.dedup_key.count.to_string()}}
    });
    let patched = service_runtime::kubernetes::deadline(api.patch(
        &pending.name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    ))
    .await;
    match patched {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => {
            tracing::warn!(%error, event = %pending.name, "recording a forwarded event failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::rfc3339;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn event(count: i32, annotated: Option<u32>) -> KubeEvent {
        KubeEvent {
            metadata: ObjectMeta {
                name: Some("pod-1.17f".into()),
                namespace: Some("prefect".into()),
                uid: Some("event-uid".into()),
                annotations: annotated.map(|count| {
                    [(FORWARDED_COUNT_ANNOTATION.to_owned(), count.to_string())].into()
                }),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("pod-1".into()),
                namespace: Some("prefect".into()),
                uid: Some("pod-uid".into()),
                ..ObjectReference::default()
            },
            reason: Some("BackOff".into()),
            message: Some("Back-off pulling image \"x\"".into()),
            type_: Some("Normal".into()),
            count: Some(count),
            ..KubeEvent::default()
        }
    }

    /// `event` last seen `from_now` from now (to the second, as Kubernetes stamps).
    fn stamped(mut event: KubeEvent, from_now: chrono::TimeDelta) -> KubeEvent {
        let at = rfc3339(chrono::Utc::now() + from_now);
        event.last_timestamp = Some(serde_json::from_value::<Time>(at.into()).unwrap());
        event
    }

    fn run() -> Uuid {
        Uuid::from_u128(9)
    }

    #[test]
    fn each_new_count_is_forwarded_once() {
        let mut backlog = EventBacklog::default();
        let now = Instant::now();
        backlog.observe(&event(1, None), now);
        let ready = backlog.ready(|_| Some(run()), now);
        assert_eq!(ready.len(), 1);
        backlog.forwarded(&ready[0].1.log);
        assert!(backlog.ready(|_| Some(run()), now).is_empty(), "sent once");
        // The same observation again, before our annotation shows: still covered.
        backlog.observe(&event(1, None), now);
        assert!(backlog.ready(|_| Some(run()), now).is_empty());
        // The Event repeats: a new line.
        backlog.observe(&event(2, Some(1)), now);
        let ready = backlog.ready(|_| Some(run()), now);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].1.log.dedup_key.count, 2);
    }

    #[test]
    fn a_line_whose_send_failed_is_checked_before_it_is_sent_again() {
        let mut backlog = EventBacklog::default();
        let now = Instant::now();
        backlog.observe(&event(1, None), now);
        let ready = backlog.ready(|_| Some(run()), now);
        assert!(!ready[0].1.maybe_sent);
        let stamped = ready[0].1.log.timestamp;
        assert!(
            stamped.is_some(),
            "a line keeps one timestamp across attempts"
        );
        backlog.maybe_sent(&ready[0].1.log, now + Duration::from_secs(30));
        assert!(
            backlog.ready(|_| Some(run()), now).is_empty(),
            "held while the failed request may still land"
        );
        // The Event is seen again unchanged (a relist): still to be checked.
        backlog.observe(&event(1, None), now);
        let now = now + Duration::from_secs(30);
        let again = backlog.ready(|_| Some(run()), now);
        assert!(again[0].1.maybe_sent);
        assert_eq!(again[0].1.log.timestamp, stamped);
        // A new count is a new line, never sent.
        backlog.observe(&event(2, None), now);
        assert!(!backlog.ready(|_| Some(run()), now)[0].1.maybe_sent);
    }

    #[test]
    fn what_was_pending_at_a_takeover_waits_for_the_previous_leaders_requests() {
        let mut backlog = EventBacklog::default();
        let now = Instant::now();
        backlog.observe(&event(1, None), now);
        let quiet = Duration::from_secs(30);
        backlog.took_over(now, quiet);
        assert!(
            backlog.ready(|_| Some(run()), now + quiet / 2).is_empty(),
            "a request of the previous leader may still land"
        );
        // Seen again meanwhile (a relist): still held.
        backlog.observe(&event(1, None), now + quiet / 2);
        assert!(backlog.ready(|_| Some(run()), now + quiet / 2).is_empty());
        let ready = backlog.ready(|_| Some(run()), now + quiet);
        assert_eq!(ready.len(), 1);
        assert!(ready[0].1.maybe_sent, "then read back before it is sent");
        // The run resolved while held is kept for when its pod's views are gone.
        backlog.observe(&event(1, None), now);
        backlog.took_over(now, quiet);
        assert!(backlog.ready(|_| Some(run()), now).is_empty());
        assert_eq!(backlog.ready(|_| None, now + quiet).len(), 1);
        // A new observation after the takeover is not held.
        let later = stamped(event(2, None), chrono::TimeDelta::seconds(60));
        backlog.observe(&later, now + quiet / 2);
        assert_eq!(backlog.ready(|_| Some(run()), now + quiet / 2).len(), 1);
    }

    #[test]
    fn an_event_first_seen_after_a_takeover_but_observed_before_it_is_checked() {
        let mut backlog = EventBacklog::default();
        let now = Instant::now();
        let quiet = Duration::from_secs(30);
        backlog.took_over(now, quiet);
        // This replica's watch lagged (cut, relisted): the Event is older than
        // the takeover, and the previous leader may have sent it.
        let old = stamped(event(1, None), chrono::TimeDelta::seconds(-20));
        backlog.observe(&old, now + quiet / 2);
        assert!(
            backlog.ready(|_| Some(run()), now + quiet / 2).is_empty(),
            "held"
        );
        let ready = backlog.ready(|_| Some(run()), now + quiet);
        assert_eq!(ready.len(), 1);
        assert!(ready[0].1.maybe_sent, "read back before it is sent");
        // One that happened as this replica took over (stamped to the second, so
        // maybe a little before): read back, but not held, so it goes at once.
        let mut fresh = stamped(event(1, None), chrono::TimeDelta::zero());
        fresh.metadata.uid = Some("another-event".into());
        backlog.observe(&fresh, now);
        let ready = backlog.ready(|_| Some(run()), now);
        assert_eq!(ready.len(), 1, "not held");
        assert!(ready[0].1.maybe_sent, "read back");
    }

    #[test]
    fn a_restarted_reporter_skips_what_the_annotation_covers() {
        let mut backlog = EventBacklog::default();
        let now = Instant::now();
        backlog.observe(&event(3, Some(3)), now);
        assert!(backlog.ready(|_| Some(run()), now).is_empty());
        backlog.observe(&event(4, Some(3)), now);
        assert_eq!(backlog.ready(|_| Some(run()), now).len(), 1);
    }

    #[test]
    fn events_about_unknown_subjects_wait_a_while_then_go() {
        let mut backlog = EventBacklog::default();
        let now = Instant::now();
        backlog.observe(&event(1, None), now);
        assert!(backlog.ready(|_| None, now).is_empty());
        assert_eq!(backlog.pending_len(), 1, "kept: the pod may show up later");
        assert!(backlog.ready(|_| None, now + UNMATCHED_TTL).is_empty());
        assert_eq!(backlog.pending_len(), 0);
    }
}
