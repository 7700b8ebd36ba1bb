//! Sends the `prefect.kubernetes.pod.<phase>` events of the pool's pods
//! ([`crate::pod_events`]) to Prefect (`POST /events`), leader only, so
//! Automations can fire on them.
//!
//! The pod watcher hands every pod it sees to a [`PodEventSink`] (on every
//! replica; a standby drops them). The leader queues each event whose id it has
//! not queued yet and, every half second, sends what is queued in batches of
//! 200, each call under a deadline and without the client's retries. A failure
//! never holds up anything else: the batch stays queued and is tried again two
//! seconds later; the reporter's other work does not wait for this task.
//!
//! Idempotence across retries, restarts and failovers rests on the event id,
//! which is the observer's own (pod uid, phase, restart count, diagnosis): the
//! same in every replica and every process. Prefect stores an id once and its
//! triggers skip an id they saw in the last 15 minutes. So that a retried send
//! or a new leader does not count on that window, events that may already be
//! stored are *checked* first (`POST /events/filter` by id, 50 ids per call)
//! and only those missing are sent: the events of a batch whose send failed,
//! and, when a replica starts leading (or its queue overflowed), the current
//! event of every pod of the pool, from a fresh list of the pods, as the
//! observer checks every pod it lists at start. A leader stopped after a send
//! and before noting it repeats nothing; events of a phase that came and went
//! while no replica led are not sent (only each pod's current phase is).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use prefect_client::{Event, PrefectClient, PrefectError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::lease::Leadership;
use super::watch::ApiScope;
use crate::observe::{Timestamp, FLOW_RUN_ID_LABEL};
use crate::pod_events::PodEvent;

/// How often the leader sends what is queued.
const SEND_PERIOD: Duration = Duration::from_millis(500);
/// Events per `POST /events`.
const EVENTS_PER_CALL: usize = 200;
/// Batches sent per round at most.
const BATCHES_PER_ROUND: usize = 5;
/// Deadline of one Prefect call (send or check).
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Pause after a failed send, check or list.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// Events queued at most; beyond, the queue starts over from a fresh list.
const QUEUE_LIMIT: usize = 10_000;
/// Pods per page when listing at takeover.
const LIST_PAGE: u32 = 500;
/// An event follows the pod's previous one when they occurred this close
/// (the observer's and Prefect's `TIGHT_TIMING`).
const FOLLOWS_WITHIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// How the watcher saw a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A watch update (the observer's `MODIFIED`).
    Updated,
    /// In a (re)list: its event may have been sent before.
    Listed,
    /// Its final state, as it was deleted.
    Deleted,
}

/// One pod's event, as the watcher hands it over.
struct Observed {
    event: PodEvent,
    seen: Seen,
}

/// Where the pod watcher hands pods over; cheap to clone.
#[derive(Clone)]
pub struct PodEventSink {
    /// `None`: events are off.
    queue: Option<mpsc::Sender<Observed>>,
    overflowed: Arc<AtomicBool>,
}

impl PodEventSink {
    /// A sink and the receiving end for [`run_pod_events`].
    pub fn new() -> (PodEventSink, PodEventSource) {
        let (queue, receiver) = mpsc::channel(QUEUE_LIMIT);
        let overflowed = Arc::new(AtomicBool::new(false));
        let sink = PodEventSink {
            queue: Some(queue),
            overflowed: overflowed.clone(),
        };
        (
            sink,
            PodEventSource {
                receiver,
                overflowed,
            },
        )
    }

    /// A sink whose pods go nowhere (events off).
    pub fn disabled() -> PodEventSink {
        PodEventSink {
            queue: None,
            overflowed: Arc::default(),
        }
    }

    /// Hands over the pod's current event. Never waits: when the sender is
    /// behind, the event is dropped and the leader starts over from a list.
    pub fn observe(&self, pod: &Pod, seen: Seen) {
        let Some(queue) = &self.queue else {
            return;
        };
        let live = seen == Seen::Updated;
        let Some(event) = PodEvent::from_pod(pod, live, chrono::Utc::now()) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(Observed { event, seen }) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }
}

/// The receiving end of a [`PodEventSink`].
pub struct PodEventSource {
    receiver: mpsc::Receiver<Observed>,
    overflowed: Arc<AtomicBool>,
}

/// An event waiting to be sent.
#[derive(Clone)]
struct Queued {
    event: PodEvent,
    /// It may be stored already: read back before sending.
    check: bool,
}

/// The leader's queue and what it sent.
#[derive(Default)]
struct Outbox {
    queued: VecDeque<Queued>,
    queued_ids: HashSet<Uuid>,
    /// Per pod uid, the last event sent or found stored (dedup, `follows`).
    last_sent: HashMap<Box<str>, (Uuid, Timestamp)>,
    /// Ids sent recently (a pod back in an earlier state is not sent again).
    sent_ids: HashSet<Uuid>,
    /// Pods deleted: forgotten once their last event is sent.
    deleted: HashSet<Box<str>>,
    /// Start over from a list of the pods before sending.
    resync: bool,
}

impl Outbox {
    fn push(&mut self, event: PodEvent, check: bool) {
        if self.is_sent(&event) || !self.queued_ids.insert(event.id) {
            return;
        }
        if self.queued.len() >= QUEUE_LIMIT {
            self.start_over();
            return;
        }
        self.queued.push_back(Queued { event, check });
    }

    /// Takes a pod the watcher saw.
    fn observe(&mut self, Observed { event, seen }: Observed) {
        if seen == Seen::Deleted {
            self.deleted.insert(event.pod_uid.clone());
        }
        self.push(event, seen == Seen::Listed);
    }

    fn is_sent(&self, event: &PodEvent) -> bool {
        let last = self.last_sent.get(&event.pod_uid).map(|(id, _)| *id);
        last == Some(event.id) || self.sent_ids.contains(&event.id)
    }

    fn start_over(&mut self) {
        self.queued.clear();
        self.queued_ids.clear();
        self.resync = true;
    }

    /// The events of the next call, with `follows` filled in.
    fn next_batch(&self) -> Vec<Queued> {
        self.queued.iter().take(EVENTS_PER_CALL).cloned().collect()
    }

    /// `batch` (the front of the queue) is stored: forget it.
    fn stored(&mut self, batch: &[Queued]) {
        for queued in batch {
            self.queued.pop_front();
            self.queued_ids.remove(&queued.event.id);
            self.sent_ids.insert(queued.event.id);
            let event = &queued.event;
            self.last_sent
                .insert(event.pod_uid.clone(), (event.id, event.occurred));
        }
    }

    /// The send of the front `count` events failed: they may be stored.
    fn maybe_stored(&mut self, count: usize) {
        for queued in self.queued.iter_mut().take(count) {
            queued.check = true;
        }
    }

    /// The Prefect events of `batch`, each following the pod's previous one.
    fn to_prefect(&self, batch: &[Queued]) -> Vec<Event> {
        let mut previous: HashMap<&str, (Uuid, Timestamp)> = HashMap::new();
        batch
            .iter()
            .map(|queued| {
                let event = &queued.event;
                let before = previous
                    .get(&*event.pod_uid)
                    .or_else(|| self.last_sent.get(&event.pod_uid));
                let follows = before
                    .filter(|(_, at)| (event.occurred - *at).abs() < FOLLOWS_WITHIN)
                    .map(|(id, _)| *id);
                previous.insert(&event.pod_uid, (event.id, event.occurred));
                event.to_prefect(follows)
            })
            .collect()
    }

    /// Forgets deleted pods whose last event is sent, and keeps the rest
    /// bounded (memory: one entry per pod of the pool).
    fn prune(&mut self) {
        if !self.deleted.is_empty() {
            let waiting: HashSet<&str> = self.queued.iter().map(|q| &*q.event.pod_uid).collect();
            let last_sent = &mut self.last_sent;
            self.deleted.retain(|uid| {
                let keep = waiting.contains(&**uid);
                if !keep {
                    last_sent.remove(uid);
                }
                keep
            });
        }
        if self.sent_ids.len() > 4 * QUEUE_LIMIT {
            self.sent_ids.clear();
        }
        if self.last_sent.len() > 4 * QUEUE_LIMIT {
            // Pods deleted while the watch was down: start over from a list.
            self.last_sent.clear();
            self.start_over();
        }
    }

    /// Keeps only the listed pods' entries (the others are gone).
    fn keep_pods(&mut self, listed: &HashSet<Box<str>>) {
        self.last_sent.retain(|uid, _| listed.contains(uid));
        self.deleted.retain(|uid| listed.contains(uid));
    }
}

/// What the sending task needs.
pub struct PodEventSender {
    pub scope: ApiScope,
    pub prefect: PrefectClient,
    pub leadership: Leadership,
    /// The pool's name as our pods' pool label spells it.
    pub work_pool_label: String,
}

/// Sends the pool's pod events while leading, until `shutdown`.
pub async fn run_pod_events(
    sender: PodEventSender,
    mut source: PodEventSource,
    shutdown: CancellationToken,
) {
    // Sends are not retried by the client: a failed one is checked and redone here.
    let once = sender
        .prefect
        .with_retry(prefect_client::RetryPolicy::no_retries());
    let mut outbox = Outbox::default();
    let mut ticks = tokio::time::interval(SEND_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leading = false;
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            observed = source.receiver.recv() => {
                let Some(observed) = observed else { return };
                let pool = observed.event.work_pool_label.as_deref();
                if was_leading && pool == Some(&*sender.work_pool_label) {
                    outbox.observe(observed);
                }
            }
            _ = ticks.tick() => {
                let leading = sender.leadership.is_leading();
                if leading != was_leading {
                    // A new leader checks every pod; a standby keeps nothing.
                    outbox = Outbox { resync: leading, ..Outbox::default() };
                    was_leading = leading;
                }
                if source.overflowed.swap(false, Ordering::Relaxed) {
                    outbox.start_over();
                }
                let due = retry_at.is_none_or(|at| Instant::now() >= at);
                if leading && due {
                    retry_at = match sender.round(&mut outbox, &once).await {
                        Ok(()) => None,
                        Err(error) => {
                            tracing::warn!(%error, "sending pod events to Prefect failed; retrying");
                            Some(Instant::now() + RETRY_AFTER_FAILURE)
                        }
                    };
                }
            }
        }
    }
}

impl PodEventSender {
    /// Lists the pods if asked to, then sends what is queued.
    async fn round(&self, outbox: &mut Outbox, prefect: &PrefectClient) -> Result<(), String> {
        if outbox.resync {
            let events = self.list_pod_events().await?;
            tracing::info!(pods = events.len(), "checking which pod events Prefect has");
            outbox.resync = false;
            outbox.keep_pods(&events.iter().map(|e| e.pod_uid.clone()).collect());
            for event in events {
                outbox.push(event, true);
            }
        }
        // A few batches per round, so the watcher's hand-overs are taken in between.
        for _ in 0..BATCHES_PER_ROUND {
            if outbox.queued.is_empty() || !self.leadership.is_leading() {
                break;
            }
            self.send_batch(outbox, prefect).await?;
        }
        outbox.prune();
        Ok(())
    }

    /// Sends the front of the queue (what Prefect lacks of it).
    async fn send_batch(&self, outbox: &mut Outbox, prefect: &PrefectClient) -> Result<(), String> {
        let batch = outbox.next_batch();
        let stored = already_stored(prefect, &batch)
            .await
            .map_err(|error| format!("reading pod events back: {error}"))?;
        let unsent: Vec<Queued> = batch
            .iter()
            .filter(|queued| !stored.contains(&queued.event.id))
            .cloned()
            .collect();
        let events = outbox.to_prefect(&unsent);
        let sent = tokio::time::timeout(CALL_DEADLINE, prefect.create_events(&events)).await;
        match sent {
            Ok(Ok(())) => {
                outbox.stored(&batch);
                Ok(())
            }
            Ok(Err(error)) => {
                outbox.maybe_stored(batch.len());
                Err(error.to_string())
            }
            Err(_) => {
                outbox.maybe_stored(batch.len());
                Err(format!("no answer within {} s", CALL_DEADLINE.as_secs()))
            }
        }
    }

    /// The current event of every pod of the pool, from a fresh list.
    async fn list_pod_events(&self) -> Result<Vec<PodEvent>, String> {
        let api: Api<Pod> = self.scope.api();
        let now = chrono::Utc::now();
        let mut events = Vec::new();
        let mut params = ListParams::default()
            .labels(FLOW_RUN_ID_LABEL)
            .limit(LIST_PAGE);
        loop {
            let page = service_runtime::kubernetes::deadline(api.list(&params))
                .await
                .map_err(|error| format!("listing pods: {error}"))?;
            events.extend(
                page.items
                    .iter()
                    .filter_map(|pod| PodEvent::from_pod(pod, false, now))
                    .filter(|event| {
                        event.work_pool_label.as_deref() == Some(&*self.work_pool_label)
                    }),
            );
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(events),
            }
        }
    }
}

/// The ids of `batch`'s events to check that Prefect has stored already.
async fn already_stored(
    prefect: &PrefectClient,
    batch: &[Queued],
) -> Result<HashSet<Uuid>, PrefectError> {
    let to_check: Vec<&PodEvent> = batch
        .iter()
        .filter(|queued| queued.check)
        .map(|queued| &queued.event)
        .collect();
    let (Some(first), Some(last)) = (
        to_check.iter().map(|event| event.occurred).min(),
        to_check.iter().map(|event| event.occurred).max(),
    ) else {
        return Ok(HashSet::new());
    };
    let ids: Vec<Uuid> = to_check.iter().map(|event| event.id).collect();
    let margin = chrono::TimeDelta::minutes(1);
    let read =
        prefect.stored_event_ids(&ids, first - margin, last.max(chrono::Utc::now()) + margin);
    match tokio::time::timeout(CALL_DEADLINE, read).await {
        Ok(stored) => stored.map(|ids| ids.into_iter().collect()),
        Err(_) => Err(PrefectError::Config(format!(
            "no answer within {} s",
            CALL_DEADLINE.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_events::PodEvent;

    fn event(uid: &str, id: u128, minute: i64) -> PodEvent {
        PodEvent {
            id: Uuid::from_u128(id),
            pod_uid: uid.into(),
            event: "prefect.kubernetes.pod.running".into(),
            occurred: "2026-05-01T12:00:00Z".parse::<Timestamp>().unwrap()
                + chrono::TimeDelta::minutes(minute),
            resource: Default::default(),
            related: Vec::new(),
            work_pool_label: Some("k8s".into()),
        }
    }

    #[test]
    fn an_event_is_queued_once_and_never_after_it_was_sent() {
        let mut outbox = Outbox::default();
        outbox.push(event("a", 1, 0), false);
        outbox.push(event("a", 1, 0), true);
        assert_eq!(outbox.queued.len(), 1);
        let batch = outbox.next_batch();
        outbox.stored(&batch);
        outbox.push(event("a", 1, 0), true);
        assert!(outbox.queued.is_empty(), "sent already");
        outbox.push(event("a", 2, 1), false);
        assert_eq!(outbox.queued.len(), 1);
    }

    #[test]
    fn an_event_follows_the_pods_previous_one_when_close_in_time() {
        let mut outbox = Outbox::default();
        outbox.push(event("a", 1, 0), false);
        outbox.push(event("a", 2, 1), false);
        outbox.push(event("b", 3, 1), false);
        let events = outbox.to_prefect(&outbox.next_batch());
        let follows: Vec<Option<Uuid>> = events.iter().map(|e| e.follows).collect();
        assert_eq!(follows, vec![None, Some(Uuid::from_u128(1)), None]);
        let batch = outbox.next_batch();
        outbox.stored(&batch);
        outbox.push(event("a", 4, 3), false);
        outbox.push(event("b", 5, 60), false);
        let events = outbox.to_prefect(&outbox.next_batch());
        assert_eq!(events[0].follows, Some(Uuid::from_u128(2)), "sent earlier");
        assert_eq!(events[1].follows, None, "an hour later: unrelated");
    }

    #[test]
    fn a_failed_send_is_checked_before_it_is_sent_again() {
        let mut outbox = Outbox::default();
        outbox.push(event("a", 1, 0), false);
        outbox.push(event("b", 2, 0), false);
        assert!(outbox.next_batch().iter().all(|queued| !queued.check));
        outbox.maybe_stored(2);
        assert!(outbox.next_batch().iter().all(|queued| queued.check));
    }

    #[test]
    fn a_pod_seen_again_unchanged_is_not_sent_again_and_a_deleted_one_is_forgotten() {
        let mut outbox = Outbox::default();
        let seen = |event, seen| Observed { event, seen };
        outbox.observe(seen(event("a", 1, 0), Seen::Updated));
        let batch = outbox.next_batch();
        outbox.stored(&batch);
        outbox.sent_ids.clear();
        outbox.observe(seen(event("a", 1, 0), Seen::Updated));
        assert!(outbox.queued.is_empty(), "the pod's last event");
        outbox.observe(seen(event("a", 2, 1), Seen::Deleted));
        outbox.prune();
        assert!(
            outbox.last_sent.contains_key("a"),
            "its last event is still to send"
        );
        let batch = outbox.next_batch();
        outbox.stored(&batch);
        outbox.prune();
        assert!(outbox.last_sent.is_empty() && outbox.deleted.is_empty());
    }

    #[test]
    fn an_overfull_queue_starts_over_from_a_list() {
        let mut outbox = Outbox::default();
        for id in 0..QUEUE_LIMIT as u128 {
            outbox.push(event("a", id, 0), false);
        }
        assert!(!outbox.resync);
        outbox.push(event("a", u128::MAX, 0), false);
        assert!(outbox.resync);
        assert!(outbox.queued.is_empty());
    }
}
