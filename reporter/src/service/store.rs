//! The view store: the compact [`JobView`]s and [`PodView`]s of every Job and pod the
//! watchers see, keyed by uid and indexed by flow run, plus tombstones of deleted Jobs
//! and pods kept until their run settles, and the set of runs that changed since the
//! evaluator last looked ("dirty" runs).
//!
//! Every replica keeps its store warm (standbys too), so a standby that takes over
//! evaluates at once. [`SharedStore`] wraps it for the tasks: the watchers write, the
//! evaluator, the event forwarder and the sweep read, and a [`Notify`] wakes the
//! evaluator when a run becomes dirty.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::autoscaler::{PodRef, ScaleUpSignal, ScaleUpView};
use crate::{EventLog, EventSubjectKind, JobView, PodView, Timestamp};

/// Prefix of the uid of a tombstone made for a Job that was never seen (its run's
/// `infrastructure_pid` names it, the cluster does not have it).
pub const MISSING_JOB_UID_PREFIX: &str = "missing:";

/// The uids of one run's Jobs and pods, and whether the run is of our work pool.
#[derive(Debug, Default)]
struct RunIndex {
    jobs: Vec<Box<str>>,
    pods: Vec<Box<str>>,
    /// `None` until the evaluator has read the run from Prefect.
    of_our_pool: Option<bool>,
}

/// Views of our Jobs and pods. Plain data; see [`SharedStore`] for the shared handle.
#[derive(Debug, Default)]
pub struct ViewStore {
    jobs: HashMap<Box<str>, JobView>,
    pods: HashMap<Box<str>, PodView>,
    /// Pods gone from the cluster, kept for the crash message until the run settles.
    deleted_pods: HashSet<Box<str>>,
    runs: HashMap<Uuid, RunIndex>,
    /// What the node autoscaler said about pods the store does not know (yet): the
    /// Event list may come in before the pod list. Keyed by pod uid (else
    /// `namespace/name`), with when it was last observed; dropped with old tombstones.
    unmatched_scale_ups: HashMap<Box<str>, (ScaleUpView, Timestamp)>,
    dirty: HashSet<Uuid>,
    jobs_listed: bool,
    pods_listed: bool,
}

impl ViewStore {
    /// Both initial lists are in: decisions may trust the store.
    pub fn is_synced(&self) -> bool {
        self.jobs_listed && self.pods_listed
    }

    /// Adds or replaces a Job (a deleted Job keeps its tombstone mark).
    pub fn apply_job(&mut self, mut view: JobView) {
        let run = view.flow_run_id;
        if let Some(previous) = self.jobs.get(&view.uid) {
            if let Some(at) = previous.deleted_observed_at {
                view.mark_deleted(at);
            }
        } else {
            self.runs
                .entry(run)
                .or_default()
                .jobs
                .push(view.uid.clone());
        }
        self.jobs.insert(view.uid.clone(), view);
        self.dirty.insert(run);
    }

    /// Marks a Job confirmed gone; `false` when the store does not know it.
    pub fn mark_job_deleted(&mut self, uid: &str, observed_at: Timestamp) -> bool {
        let Some(job) = self.jobs.get_mut(uid) else {
            return false;
        };
        job.mark_deleted(observed_at);
        self.dirty.insert(job.flow_run_id);
        true
    }

    /// Adds or replaces a pod, carrying over when its containers started waiting.
    pub fn apply_pod(&mut self, view: PodView, observed_at: Timestamp) {
        self.insert_pod(view, observed_at, true);
    }

    /// `stamp_new`: a pod seen for the first time has its waiting containers stamped
    /// `observed_at`; not when it comes from the initial list (the wait may be older:
    /// the decision then counts from the pod's scheduling).
    fn insert_pod(&mut self, mut view: PodView, observed_at: Timestamp, stamp_new: bool) {
        let run = view.flow_run_id;
        match self.pods.get(&view.uid) {
            Some(previous) => view.carry_over_from(previous, observed_at),
            None => {
                if stamp_new {
                    view.carry_over_from(&view.clone(), observed_at);
                }
                if let Some(scale_up) = self.take_unmatched_scale_up(&view) {
                    view.scale_up = Some(Box::new(scale_up));
                }
                self.runs
                    .entry(run)
                    .or_default()
                    .pods
                    .push(view.uid.clone());
            }
        }
        self.pods.insert(view.uid.clone(), view);
        self.dirty.insert(run);
    }

    /// Records what the node autoscaler said about a pod (one of its Events); the pod's
    /// run becomes dirty when this changes the autoscaler's latest word or the start of
    /// its scale-up.
    pub fn observe_scale_up(
        &mut self,
        pod: &PodRef,
        signal: ScaleUpSignal,
        observed_at: Timestamp,
    ) {
        if let Some(view) = self.pod_mut(pod) {
            let changed = match view.scale_up.as_deref_mut() {
                Some(scale_up) => scale_up.observe(signal),
                None => {
                    view.scale_up = Some(Box::new(ScaleUpView::new(signal)));
                    true
                }
            };
            let run = view.flow_run_id;
            if changed {
                self.dirty.insert(run);
            }
            return;
        }
        let key = pod
            .uid
            .clone()
            .unwrap_or_else(|| format!("{}/{}", pod.namespace, pod.name).into());
        match self.unmatched_scale_ups.get_mut(&key) {
            Some((scale_up, seen)) => {
                scale_up.observe(signal);
                *seen = observed_at;
            }
            None => {
                self.unmatched_scale_ups
                    .insert(key, (ScaleUpView::new(signal), observed_at));
            }
        }
    }

    fn pod_mut(&mut self, pod: &PodRef) -> Option<&mut PodView> {
        match pod.uid.as_deref() {
            Some(uid) => self.pods.get_mut(uid),
            None => self
                .pods
                .values_mut()
                .find(|view| view.namespace == pod.namespace && view.name == pod.name),
        }
    }

    fn take_unmatched_scale_up(&mut self, view: &PodView) -> Option<ScaleUpView> {
        if self.unmatched_scale_ups.is_empty() {
            return None;
        }
        let by_name: Box<str> = format!("{}/{}", view.namespace, view.name).into();
        self.unmatched_scale_ups
            .remove(&view.uid)
            .or_else(|| self.unmatched_scale_ups.remove(&by_name))
            .map(|(scale_up, _)| scale_up)
    }

    /// Keeps a deleted pod as a tombstone (terminating from now if it was not already).
    pub fn mark_pod_deleted(&mut self, mut view: PodView, observed_at: Timestamp) {
        view.deletion_timestamp.get_or_insert(observed_at);
        let uid = view.uid.clone();
        if let Some(previous) = self.pods.get(&uid) {
            view.carry_over_from(previous, observed_at);
        }
        self.apply_pod(view, observed_at);
        self.deleted_pods.insert(uid);
    }

    /// Replaces every live Job after a (re)list; returns the live Jobs the list no
    /// longer has (deleted while the watch was down), for confirmation.
    pub fn replace_jobs(&mut self, listed: Vec<JobView>) -> Vec<JobView> {
        let listed_uids: HashSet<Box<str>> = listed.iter().map(|job| job.uid.clone()).collect();
        let vanished: Vec<JobView> = self
            .jobs
            .values()
            .filter(|job| job.deleted_observed_at.is_none() && !listed_uids.contains(&job.uid))
            .filter(|job| !job.uid.starts_with(MISSING_JOB_UID_PREFIX))
            .cloned()
            .collect();
        for job in listed {
            self.apply_job(job);
        }
        self.jobs_listed = true;
        vanished
    }

    /// Replaces every live pod after a (re)list; pods the list no longer has become
    /// tombstones.
    pub fn replace_pods(&mut self, listed: Vec<PodView>, observed_at: Timestamp) {
        let listed_uids: HashSet<Box<str>> = listed.iter().map(|pod| pod.uid.clone()).collect();
        let vanished: Vec<PodView> = self
            .pods
            .values()
            .filter(|pod| !self.deleted_pods.contains(&pod.uid) && !listed_uids.contains(&pod.uid))
            .cloned()
            .collect();
        for pod in vanished {
            self.mark_pod_deleted(pod, observed_at);
        }
        let first_list = !self.pods_listed;
        for pod in listed {
            self.insert_pod(pod, observed_at, !first_list);
        }
        self.pods_listed = true;
    }

    /// Records a Job named by a run's `infrastructure_pid` that the cluster does not
    /// have, as a tombstone deleted at `observed_at`.
    pub fn insert_missing_job(
        &mut self,
        flow_run_id: Uuid,
        namespace: &str,
        name: &str,
        observed_at: Timestamp,
    ) {
        let mut view = JobView {
            uid: format!("{MISSING_JOB_UID_PREFIX}{namespace}/{name}").into(),
            name: name.into(),
            namespace: namespace.into(),
            flow_run_id,
            created: None,
            backoff_limit: 0,
            active: 0,
            succeeded: 0,
            failed: 0,
            conditions: Box::new([]),
            pod_watch_timeout_seconds: None,
            scale_up_timeout_seconds: None,
            deletion_timestamp: None,
            suspend: false,
            never_observed: true,
            work_pool: None,
            claimed: false,
            claim_transition_id: None,
            deleted_observed_at: None,
        };
        view.mark_deleted(observed_at);
        self.apply_job(view);
    }

    /// Whether the store knows a Job (live or tombstone) of the run with this name.
    pub fn has_job_named(&self, flow_run_id: Uuid, namespace: &str, name: &str) -> bool {
        self.runs.get(&flow_run_id).is_some_and(|index| {
            index.jobs.iter().any(|uid| {
                self.jobs
                    .get(uid)
                    .is_some_and(|job| &*job.namespace == namespace && &*job.name == name)
            })
        })
    }

    /// Copies of the run's Job and pod views (tombstones included).
    pub fn snapshot(&self, flow_run_id: Uuid) -> (Vec<JobView>, Vec<PodView>) {
        let Some(index) = self.runs.get(&flow_run_id) else {
            return (Vec::new(), Vec::new());
        };
        let jobs = index
            .jobs
            .iter()
            .filter_map(|uid| self.jobs.get(uid))
            .cloned()
            .collect();
        let pods = index
            .pods
            .iter()
            .filter_map(|uid| self.pods.get(uid))
            .cloned()
            .collect();
        (jobs, pods)
    }

    /// Drops the run's tombstones (its live views stay: they mirror the cluster).
    pub fn prune_tombstones(&mut self, flow_run_id: Uuid) {
        let Some(index) = self.runs.get_mut(&flow_run_id) else {
            return;
        };
        let jobs = &mut self.jobs;
        index.jobs.retain(|uid| {
            let tombstone = jobs
                .get(uid)
                .is_none_or(|job| job.deleted_observed_at.is_some());
            if tombstone {
                jobs.remove(uid);
            }
            !tombstone
        });
        let (pods, deleted_pods) = (&mut self.pods, &mut self.deleted_pods);
        index.pods.retain(|uid| {
            let tombstone = deleted_pods.remove(uid) || !pods.contains_key(uid);
            if tombstone {
                pods.remove(uid);
            }
            !tombstone
        });
        if index.jobs.is_empty() && index.pods.is_empty() {
            self.runs.remove(&flow_run_id);
        }
    }

    /// Drops tombstones confirmed gone before `gone_before`, runs left with nothing, and
    /// autoscaler words about pods never seen since before then, on every replica. The leader prunes a run's tombstones as soon as the run settles;
    /// this bounds what a standby, or a run of another pool, or a run whose Prefect state
    /// could not be read, keeps. A pruned deleted Job whose run never settled is found
    /// again by the leader's search for missing Jobs. Returns how many views went.
    pub fn prune_older_than(&mut self, gone_before: Timestamp) -> usize {
        let stale_jobs: Vec<Box<str>> = self
            .jobs
            .values()
            .filter(|job| job.deleted_observed_at.is_some_and(|at| at < gone_before))
            .map(|job| job.uid.clone())
            .collect();
        let stale_pods: Vec<Box<str>> = self
            .deleted_pods
            .iter()
            .filter(|uid| {
                self.pods
                    .get(*uid)
                    .is_none_or(|pod| pod.deletion_timestamp.is_none_or(|at| at < gone_before))
            })
            .cloned()
            .collect();
        for uid in &stale_jobs {
            self.jobs.remove(uid);
        }
        for uid in &stale_pods {
            self.pods.remove(uid);
            self.deleted_pods.remove(uid);
        }
        self.unmatched_scale_ups
            .retain(|_, (_, seen)| *seen >= gone_before);
        let (jobs, pods) = (&self.jobs, &self.pods);
        self.runs.retain(|_, index| {
            index.jobs.retain(|uid| jobs.contains_key(uid));
            index.pods.retain(|uid| pods.contains_key(uid));
            !(index.jobs.is_empty() && index.pods.is_empty())
        });
        let runs = &self.runs;
        self.dirty.retain(|run| runs.contains_key(run));
        stale_jobs.len() + stale_pods.len()
    }

    /// The claim (transition id) of the run's Job of that name, when the store knows
    /// the Job (`Some(None)`: known, without a readable claim).
    pub fn claim_of_job_named(
        &self,
        flow_run_id: Uuid,
        namespace: &str,
        name: &str,
    ) -> Option<Option<Uuid>> {
        let index = self.runs.get(&flow_run_id)?;
        index
            .jobs
            .iter()
            .filter_map(|uid| self.jobs.get(uid))
            .find(|job| &*job.namespace == namespace && &*job.name == name)
            .map(|job| job.claim_transition_id)
    }

    /// Whether the store knows a Job of the run made for `claim`; without a
    /// claim to compare, whether it knows the run at all.
    pub fn knows_job_of_claim(&self, flow_run_id: Uuid, claim: Option<Uuid>) -> bool {
        let Some(index) = self.runs.get(&flow_run_id) else {
            return false;
        };
        let Some(claim) = claim else {
            return true;
        };
        index
            .jobs
            .iter()
            .filter_map(|uid| self.jobs.get(uid))
            .any(|job| job.claim_transition_id.is_none_or(|ours| ours == claim))
    }

    /// Whether the run has any view left.
    pub fn knows_run(&self, flow_run_id: Uuid) -> bool {
        self.runs.contains_key(&flow_run_id)
    }

    /// The runs that changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<Uuid> {
        self.dirty.drain().collect()
    }

    pub fn mark_dirty(&mut self, flow_run_id: Uuid) {
        self.dirty.insert(flow_run_id);
    }

    /// Every run with views.
    pub fn run_ids(&self) -> Vec<Uuid> {
        self.runs.keys().copied().collect()
    }

    /// Records whether the run belongs to our work pool (Jobs of other pools carry the
    /// same label when several pools share a cluster; their reporters handle them).
    pub fn set_of_our_pool(&mut self, flow_run_id: Uuid, ours: bool) {
        if let Some(index) = self.runs.get_mut(&flow_run_id) {
            index.of_our_pool = Some(ours);
        }
    }

    /// Known to belong to another work pool.
    pub fn is_of_another_pool(&self, flow_run_id: Uuid) -> bool {
        self.runs
            .get(&flow_run_id)
            .is_some_and(|index| index.of_our_pool == Some(false))
    }

    /// The run an Event is about, if it concerns one of our pods or Jobs and the run is
    /// known to be of our work pool.
    pub fn run_of_event(&self, log: &EventLog) -> Option<Uuid> {
        self.subject_run(log).filter(|run| {
            self.runs
                .get(run)
                .is_some_and(|index| index.of_our_pool == Some(true))
        })
    }

    fn subject_run(&self, log: &EventLog) -> Option<Uuid> {
        match (log.subject_kind, log.subject_uid.as_deref()) {
            (EventSubjectKind::Pod, Some(uid)) => self.pods.get(uid).map(|pod| pod.flow_run_id),
            (EventSubjectKind::Job, Some(uid)) => self.jobs.get(uid).map(|job| job.flow_run_id),
            (EventSubjectKind::Pod, None) => self
                .pods
                .values()
                .find(|pod| log.concerns_pod(pod))
                .map(|pod| pod.flow_run_id),
            (EventSubjectKind::Job, None) => self
                .jobs
                .values()
                .find(|job| log.concerns_job(job))
                .map(|job| job.flow_run_id),
        }
    }

    /// Live Jobs that completed or failed at or before `finished_before`.
    pub fn finished_jobs(&self, finished_before: Timestamp) -> Vec<JobView> {
        self.jobs
            .values()
            .filter(|job| job.gone_at().is_none())
            .filter(|job| {
                job.completion()
                    .or_else(|| job.failure())
                    .and_then(|condition| condition.since)
                    .is_some_and(|since| since <= finished_before)
            })
            .cloned()
            .collect()
    }

    /// Numbers of live Job views, pod views and runs (for logs and tests).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.jobs.len(), self.pods.len(), self.runs.len())
    }
}

/// The store shared by the reporter's tasks.
#[derive(Clone, Default)]
pub struct SharedStore {
    inner: Arc<Mutex<ViewStore>>,
    changed: Arc<Notify>,
}

impl SharedStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `change` on the store and wakes the evaluator if a run became dirty.
    pub fn update<T>(&self, change: impl FnOnce(&mut ViewStore) -> T) -> T {
        let (result, dirty) = {
            let mut store = self.inner.lock();
            let result = change(&mut store);
            (result, !store.dirty.is_empty())
        };
        if dirty {
            self.changed.notify_one();
        }
        result
    }

    /// Reads the store.
    pub fn read<T>(&self, look: impl FnOnce(&ViewStore) -> T) -> T {
        look(&self.inner.lock())
    }

    /// Completes when a run became dirty since the last wake-up.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn is_synced(&self) -> bool {
        self.read(ViewStore::is_synced)
    }

    /// Completes once both initial lists are in.
    pub async fn synced(&self) {
        while !self.is_synced() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ContainerRole, ContainerView, PodPhase, WaitingReason, WaitingView};
    use chrono::{TimeZone, Utc};

    fn at(second: i64) -> Timestamp {
        Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
    }

    fn run() -> Uuid {
        Uuid::from_u128(7)
    }

    fn job(uid: &str) -> JobView {
        JobView {
            uid: uid.into(),
            name: format!("job-{uid}").into(),
            namespace: "prefect".into(),
            flow_run_id: run(),
            created: Some(at(0)),
            backoff_limit: 0,
            active: 1,
            succeeded: 0,
            failed: 0,
            conditions: Box::new([]),
            pod_watch_timeout_seconds: None,
            scale_up_timeout_seconds: None,
            deletion_timestamp: None,
            suspend: false,
            never_observed: false,
            work_pool: None,
            claimed: false,
            claim_transition_id: None,
            deleted_observed_at: None,
        }
    }

    fn pulling_pod(uid: &str) -> PodView {
        PodView {
            uid: uid.into(),
            name: format!("pod-{uid}").into(),
            namespace: "prefect".into(),
            flow_run_id: run(),
            job_name: Some("job-j1".into()),
            job_uid: Some("j1".into()),
            phase: PodPhase::Pending,
            created: Some(at(0)),
            scheduled: None,
            containers: Box::new([ContainerView {
                name: "prefect-job".into(),
                role: ContainerRole::Main,
                waiting: Some(Box::new(WaitingView {
                    reason: WaitingReason::ErrImagePull,
                    message: None,
                    first_observed: None,
                })),
                terminated: None,
                last_terminated: None,
                restart_count: 0,
            }]),
            status_reason: None,
            status_message: None,
            deletion_timestamp: None,
            scale_up: None,
        }
    }

    fn first_observed(pod: &PodView) -> Option<Timestamp> {
        pod.containers[0].waiting.as_ref()?.first_observed
    }

    #[test]
    fn views_are_indexed_by_run_and_updates_mark_the_run_dirty() {
        let mut store = ViewStore::default();
        store.apply_job(job("j1"));
        store.apply_pod(pulling_pod("p1"), at(5));
        assert_eq!(store.take_dirty(), vec![run()]);
        assert!(store.take_dirty().is_empty());
        let (jobs, pods) = store.snapshot(run());
        assert_eq!((jobs.len(), pods.len()), (1, 1));
        assert!(store.has_job_named(run(), "prefect", "job-j1"));
        assert!(!store.has_job_named(run(), "other", "job-j1"));
    }

    #[test]
    fn a_waiting_container_keeps_the_time_it_was_first_seen_waiting() {
        let mut store = ViewStore::default();
        store.apply_pod(pulling_pod("p1"), at(5));
        store.apply_pod(pulling_pod("p1"), at(9));
        let (_, pods) = store.snapshot(run());
        assert_eq!(first_observed(&pods[0]), Some(at(5)));
    }

    #[test]
    fn pods_of_the_initial_list_count_their_wait_from_scheduling() {
        let mut store = ViewStore::default();
        store.replace_pods(vec![pulling_pod("p1")], at(30));
        let (_, pods) = store.snapshot(run());
        assert_eq!(first_observed(&pods[0]), None);
        store.apply_pod(pulling_pod("p2"), at(31));
        let (_, pods) = store.snapshot(run());
        let p2 = pods.iter().find(|pod| &*pod.uid == "p2").unwrap();
        assert_eq!(first_observed(p2), Some(at(31)));
    }

    #[test]
    fn deleted_job_stays_a_tombstone_until_pruned_even_if_the_list_shows_it_again() {
        let mut store = ViewStore::default();
        store.apply_job(job("j1"));
        assert!(store.mark_job_deleted("j1", at(3)));
        store.apply_job(job("j1"));
        let (jobs, _) = store.snapshot(run());
        assert_eq!(jobs[0].deleted_observed_at, Some(at(3)));
        store.prune_tombstones(run());
        assert!(!store.knows_run(run()));
        assert!(!store.mark_job_deleted("j1", at(4)));
    }

    #[test]
    fn relist_reports_vanished_jobs_and_tombstones_vanished_pods() {
        let mut store = ViewStore::default();
        store.apply_job(job("j1"));
        store.apply_job(job("j2"));
        store.apply_pod(pulling_pod("p1"), at(0));
        assert!(!store.is_synced());
        let vanished = store.replace_jobs(vec![job("j2")]);
        assert_eq!(vanished.iter().map(|j| &*j.uid).collect::<Vec<_>>(), ["j1"]);
        store.replace_pods(Vec::new(), at(8));
        assert!(store.is_synced());
        let (_, pods) = store.snapshot(run());
        assert_eq!(pods[0].deletion_timestamp, Some(at(8)));
        store.prune_tombstones(run());
        let (jobs, pods) = store.snapshot(run());
        assert_eq!(jobs.len(), 2, "live Jobs stay: j1 is only unconfirmed");
        assert!(pods.is_empty());
    }

    #[test]
    fn old_tombstones_go_on_every_replica_and_live_views_stay() {
        let mut store = ViewStore::default();
        store.apply_job(job("live"));
        store.apply_job(job("deleted-early"));
        store.mark_job_deleted("deleted-early", at(10));
        store.mark_pod_deleted(pulling_pod("pod-a"), at(10));
        let other_run = Uuid::from_u128(99);
        store.insert_missing_job(other_run, "prefect", "gone", at(20));
        assert_eq!(
            store.prune_older_than(at(15)),
            2,
            "the job and the pod deleted at 10"
        );
        let (jobs, pods) = store.snapshot(run());
        assert_eq!(jobs.len(), 1, "the live Job stays");
        assert!(pods.is_empty());
        assert!(store.knows_run(other_run), "younger tombstones stay");
        assert_eq!(store.prune_older_than(at(30)), 1);
        assert!(!store.knows_run(other_run), "a run left with nothing goes");
        assert!(!store.take_dirty().contains(&other_run));
    }

    #[test]
    fn a_missing_job_becomes_a_deleted_tombstone() {
        let mut store = ViewStore::default();
        store.insert_missing_job(run(), "prefect", "gone-job", at(4));
        let (jobs, _) = store.snapshot(run());
        assert_eq!(jobs[0].gone_at(), Some(at(4)));
        assert!(store.has_job_named(run(), "prefect", "gone-job"));
        assert!(
            store.replace_jobs(Vec::new()).is_empty(),
            "never re-confirmed"
        );
    }

    #[test]
    fn events_are_matched_only_to_runs_known_to_be_of_our_pool() {
        use crate::{EventDedupKey, EventSubjectKind, LogLevel};
        let mut store = ViewStore::default();
        store.apply_pod(pulling_pod("p1"), at(0));
        let log = EventLog {
            subject_kind: EventSubjectKind::Pod,
            subject_uid: Some("p1".into()),
            subject_name: "pod-p1".into(),
            namespace: "prefect".into(),
            level: LogLevel::Info,
            message: "Kubernetes event Scheduled on pod pod-p1".into(),
            timestamp: None,
            dedup_key: EventDedupKey {
                event: "e1".into(),
                count: 1,
            },
        };
        assert_eq!(store.run_of_event(&log), None, "not read from Prefect yet");
        store.set_of_our_pool(run(), false);
        assert_eq!(store.run_of_event(&log), None, "another pool's run");
        assert!(store.is_of_another_pool(run()));
        store.set_of_our_pool(run(), true);
        assert_eq!(store.run_of_event(&log), Some(run()));
    }

    fn scale_up_signal(verdict: crate::ScaleUpVerdict, second: i64) -> ScaleUpSignal {
        ScaleUpSignal {
            autoscaler: crate::autoscaler::Autoscaler::ClusterAutoscaler,
            verdict,
            reason: "TriggeredScaleUp".into(),
            message: "pod triggered scale-up: [{gpu 1->2 (max: 3)}]".into(),
            first_seen: Some(at(second)),
            last_seen: Some(at(second)),
        }
    }

    fn pod_ref(uid: &str) -> PodRef {
        PodRef {
            uid: Some(uid.into()),
            namespace: "prefect".into(),
            name: format!("pod-{uid}").into(),
        }
    }

    #[test]
    fn what_the_autoscaler_says_reaches_its_pod_and_survives_pod_updates() {
        use crate::ScaleUpVerdict::{Coming, Refused};
        let mut store = ViewStore::default();
        store.apply_pod(pulling_pod("p1"), at(0));
        store.take_dirty();
        store.observe_scale_up(&pod_ref("p1"), scale_up_signal(Coming, 5), at(5));
        assert_eq!(
            store.take_dirty(),
            vec![run()],
            "the run is evaluated again"
        );
        store.observe_scale_up(&pod_ref("p1"), scale_up_signal(Coming, 5), at(6));
        assert!(store.take_dirty().is_empty(), "a repeat changes nothing");
        store.apply_pod(pulling_pod("p1"), at(7));
        let (_, pods) = store.snapshot(run());
        let scale_up = pods[0].scale_up.as_deref().expect("kept across the update");
        assert_eq!(scale_up.coming_since, Some(at(5)));
        store.observe_scale_up(&pod_ref("p1"), scale_up_signal(Refused, 9), at(9));
        let (_, pods) = store.snapshot(run());
        assert!(pods[0]
            .scale_up
            .as_deref()
            .is_some_and(ScaleUpView::is_refused));
    }

    #[test]
    fn what_the_autoscaler_says_before_the_pod_is_listed_waits_for_it_a_while() {
        use crate::ScaleUpVerdict::Coming;
        let mut store = ViewStore::default();
        store.observe_scale_up(&pod_ref("p2"), scale_up_signal(Coming, 5), at(5));
        assert!(store.take_dirty().is_empty());
        store.replace_pods(vec![pulling_pod("p2")], at(6));
        let (_, pods) = store.snapshot(run());
        assert!(pods[0].scale_up.is_some(), "matched when the pod arrives");
        store.observe_scale_up(&pod_ref("stranger"), scale_up_signal(Coming, 5), at(5));
        store.prune_older_than(at(100));
        assert!(
            store.unmatched_scale_ups.is_empty(),
            "pods never seen are forgotten"
        );
    }

    #[test]
    fn finished_jobs_are_those_whose_end_is_old_enough() {
        use crate::observe::{ConditionStatus, JobConditionKind, JobConditionView};
        let mut store = ViewStore::default();
        let mut done = job("j1");
        done.conditions = Box::new([JobConditionView {
            kind: JobConditionKind::Complete,
            status: ConditionStatus::True,
            reason: None,
            message: None,
            since: Some(at(10)),
        }]);
        store.apply_job(done);
        store.apply_job(job("j2"));
        assert!(store.finished_jobs(at(9)).is_empty());
        let finished: Vec<_> = store
            .finished_jobs(at(10))
            .into_iter()
            .map(|job| (job.namespace, job.name))
            .collect();
        assert_eq!(finished, vec![("prefect".into(), "job-j1".into())]);
    }
}
