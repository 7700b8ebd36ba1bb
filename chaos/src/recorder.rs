//! Everything the cluster ever held for our runs, watched from before the
//! first Job with the checker's own kube-runtime watchers straight against
//! the emulator (not through the fault proxy): every Job with its run and
//! claim, whether it was created suspended, ever ran a pod, finished or was
//! deleted — so a Job created and deleted in between is still counted —
//! every pod, and every Event about them.
//!
//! Known blind spot: after a forced compaction the watch relists; a Job
//! created *and* deleted in the few milliseconds before the relist is not
//! seen. A Job missing from a relist is recorded as deleted then.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flow_run_proto::kubernetes::{CLAIM_ANNOTATION, FLOW_RUN_ID_LABEL};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::runtime::watcher::{self, watcher, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How a Job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobEnd {
    Complete,
    Failed,
}

/// One Job, as long as it lived.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub run_id: Option<Uuid>,
    /// The claim annotation: `<run id>:<scheduled state id>`.
    pub claim: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub created_suspended: bool,
    pub suspended: bool,
    /// Seen with `suspend` unset (created so, or released) at least once.
    pub ever_released: bool,
    /// A pod of it existed (or its status counted one).
    pub had_pod: bool,
    pub ended: Option<(JobEnd, DateTime<Utc>)>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// Could have started the flow: seen released (or created unsuspended) or had a
    /// pod. A Job created suspended and deleted without either is a withdrawn
    /// create (a late or repeated create the dispatcher took back): it never ran
    /// anything. Seen by the recorder's watch: a Job released and deleted within
    /// a relist gap (after a forced compaction) would look withdrawn.
    pub fn could_run(&self) -> bool {
        self.ever_released || self.had_pod
    }

    /// Exists and has not finished (suspended Jobs included).
    pub fn alive(&self) -> bool {
        self.deleted_at.is_none() && self.ended.is_none()
    }
}

/// One pod, as long as it lived.
#[derive(Clone, Debug)]
pub struct PodRecord {
    pub uid: String,
    pub name: String,
    pub job_uid: Option<String>,
    pub run_id: Option<Uuid>,
    pub phase: String,
    /// A container was seen running or terminated.
    pub started: bool,
    pub first_seen: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl PodRecord {
    pub fn alive(&self) -> bool {
        self.deleted_at.is_none() && !matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// One Event about a pod or a Job, with its highest count seen.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub uid: String,
    pub kind: String,
    pub object: String,
    pub reason: String,
    pub count: i32,
}

/// What the watchers saw.
#[derive(Debug, Default)]
pub struct Recorder {
    pub jobs: HashMap<String, JobRecord>,
    pub pods: HashMap<String, PodRecord>,
    pub events: HashMap<String, EventRecord>,
    /// Times a watch started over (after a cut with 410, or at start).
    pub relists: u32,
}

pub type SharedRecorder = Arc<parking_lot::Mutex<Recorder>>;

impl Recorder {
    /// Jobs of a run, oldest first.
    pub fn jobs_of(&self, run: Uuid) -> Vec<&JobRecord> {
        let mut jobs: Vec<_> = self
            .jobs
            .values()
            .filter(|job| job.run_id == Some(run))
            .collect();
        jobs.sort_by_key(|job| job.first_seen);
        jobs
    }

    pub fn pods_of(&self, run: Uuid) -> Vec<&PodRecord> {
        let mut pods: Vec<_> = self
            .pods
            .values()
            .filter(|pod| pod.run_id == Some(run))
            .collect();
        pods.sort_by_key(|pod| pod.first_seen);
        pods
    }

    /// Runs with a Job that exists and has not finished, or a live pod.
    pub fn runs_with_live_infrastructure(&self) -> Vec<Uuid> {
        let jobs = self
            .jobs
            .values()
            .filter(|job| job.alive())
            .filter_map(|job| job.run_id);
        let pods = self
            .pods
            .values()
            .filter(|pod| pod.alive())
            .filter_map(|pod| pod.run_id);
        let mut runs: Vec<Uuid> = jobs.chain(pods).collect();
        runs.sort();
        runs.dedup();
        runs
    }

    fn apply_job(&mut self, job: &Job, now: DateTime<Utc>) {
        let Some(uid) = job.metadata.uid.clone() else {
            return;
        };
        let suspended = job
            .spec
            .as_ref()
            .and_then(|spec| spec.suspend)
            .unwrap_or(false);
        let record = self.jobs.entry(uid.clone()).or_insert_with(|| JobRecord {
            uid,
            namespace: job.namespace().unwrap_or_default(),
            name: job.name_any(),
            run_id: run_label(job.labels()),
            claim: job.annotations().get(CLAIM_ANNOTATION).cloned(),
            first_seen: now,
            created_suspended: suspended,
            suspended,
            ever_released: false,
            had_pod: false,
            ended: None,
            deleted_at: None,
        });
        record.suspended = suspended;
        record.ever_released |= !suspended;
        record.had_pod |= counted_pods(job) > 0;
        if record.ended.is_none() {
            record.ended = job_end(job).map(|end| (end, now));
        }
        if job.meta().deletion_timestamp.is_some() && record.deleted_at.is_none() {
            record.deleted_at = Some(now);
        }
    }

    fn delete_job(&mut self, uid: &str, now: DateTime<Utc>) {
        if let Some(record) = self.jobs.get_mut(uid) {
            record.deleted_at.get_or_insert(now);
        }
    }

    fn apply_pod(&mut self, pod: &Pod, now: DateTime<Utc>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let job_uid = pod
            .owner_references()
            .iter()
            .find(|owner| owner.kind == "Job")
            .map(|owner| owner.uid.clone());
        if let Some(job) = job_uid.as_ref().and_then(|uid| self.jobs.get_mut(uid)) {
            job.had_pod = true;
        }
        let record = self.pods.entry(uid.clone()).or_insert_with(|| PodRecord {
            uid,
            name: pod.name_any(),
            job_uid,
            run_id: run_label(pod.labels()),
            phase: String::new(),
            started: false,
            first_seen: now,
            deleted_at: None,
        });
        let status = pod.status.as_ref();
        record.phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
        record.started |= status.is_some_and(container_started);
    }

    fn delete_pod(&mut self, uid: &str, now: DateTime<Utc>) {
        if let Some(record) = self.pods.get_mut(uid) {
            record.deleted_at.get_or_insert(now);
        }
    }

    fn apply_event(&mut self, event: &Event) {
        let Some(uid) = event.metadata.uid.clone() else {
            return;
        };
        let involved = &event.involved_object;
        let record = self
            .events
            .entry(uid.clone())
            .or_insert_with(|| EventRecord {
                uid,
                kind: involved.kind.clone().unwrap_or_default(),
                object: involved.name.clone().unwrap_or_default(),
                reason: event.reason.clone().unwrap_or_default(),
                count: 0,
            });
        record.count = record.count.max(event.count.unwrap_or(1));
    }
}

fn run_label(labels: &std::collections::BTreeMap<String, String>) -> Option<Uuid> {
    labels
        .get(FLOW_RUN_ID_LABEL)
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn counted_pods(job: &Job) -> i32 {
    job.status
        .as_ref()
        .map(|s| s.active.unwrap_or(0) + s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0))
        .unwrap_or(0)
}

fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|condition| condition.status == "True")
        .find_map(|condition| match condition.type_.as_str() {
            "Complete" => Some(JobEnd::Complete),
            "Failed" => Some(JobEnd::Failed),
            _ => None,
        })
}

fn container_started(status: &k8s_openapi::api::core::v1::PodStatus) -> bool {
    status.container_statuses.iter().flatten().any(|container| {
        let state = container.state.as_ref();
        state.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || container
                .last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some())
    })
}

/// Starts the Job, Pod and Event watchers; they run until `shutdown`.
/// Returns once the Job and Pod watchers have listed once.
pub async fn start(client: kube::Client, recorder: SharedRecorder, shutdown: CancellationToken) {
    let (jobs_ready, jobs_listed) = tokio::sync::oneshot::channel();
    let (pods_ready, pods_listed) = tokio::sync::oneshot::channel();
    tokio::spawn(watch_kind::<Job>(
        Api::all(client.clone()),
        recorder.clone(),
        shutdown.clone(),
        jobs_ready,
    ));
    tokio::spawn(watch_kind::<Pod>(
        Api::all(client.clone()),
        recorder.clone(),
        shutdown.clone(),
        pods_ready,
    ));
    tokio::spawn(watch_events(Api::all(client), recorder, shutdown));
    let _ = jobs_listed.await;
    let _ = pods_listed.await;
}

fn labelled() -> watcher::Config {
    watcher::Config::default().labels(FLOW_RUN_ID_LABEL)
}

/// A kind the recorder keeps a record of every object of.
trait Recorded:
    Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static
{
    /// A relist of this kind counts in `Recorder::relists`.
    const COUNTS_RELISTS: bool;
    fn apply(recorder: &mut Recorder, object: &Self, now: DateTime<Utc>);
    fn delete(recorder: &mut Recorder, uid: &str, now: DateTime<Utc>);
    /// Uids of the recorded objects not deleted yet.
    fn live(recorder: &Recorder) -> Vec<String>;
}

impl Recorded for Job {
    const COUNTS_RELISTS: bool = true;
    fn apply(recorder: &mut Recorder, job: &Job, now: DateTime<Utc>) {
        recorder.apply_job(job, now);
    }
    fn delete(recorder: &mut Recorder, uid: &str, now: DateTime<Utc>) {
        recorder.delete_job(uid, now);
    }
    fn live(recorder: &Recorder) -> Vec<String> {
        let live = recorder
            .jobs
            .values()
            .filter(|job| job.deleted_at.is_none());
        live.map(|job| job.uid.clone()).collect()
    }
}

impl Recorded for Pod {
    const COUNTS_RELISTS: bool = false;
    fn apply(recorder: &mut Recorder, pod: &Pod, now: DateTime<Utc>) {
        recorder.apply_pod(pod, now);
    }
    fn delete(recorder: &mut Recorder, uid: &str, now: DateTime<Utc>) {
        recorder.delete_pod(uid, now);
    }
    fn live(recorder: &Recorder) -> Vec<String> {
        let live = recorder
            .pods
            .values()
            .filter(|pod| pod.deleted_at.is_none());
        live.map(|pod| pod.uid.clone()).collect()
    }
}

/// Records every labelled object of kind `K`; an object missing from a
/// relist is recorded as deleted then. `ready` fires after the first list.
async fn watch_kind<K: Recorded>(
    api: Api<K>,
    recorder: SharedRecorder,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let stream = watcher(api, labelled()).default_backoff();
    futures::pin_mut!(stream);
    let mut ready = Some(ready);
    let mut listed: Vec<String> = Vec::new();
    while let Some(event) = next(&mut stream, &shutdown).await {
        let now = Utc::now();
        let mut recorder = recorder.lock();
        match event {
            WatchEvent::Init => {
                if K::COUNTS_RELISTS {
                    recorder.relists += 1;
                }
                listed.clear();
            }
            WatchEvent::InitApply(object) => {
                listed.extend(object.meta().uid.clone());
                K::apply(&mut recorder, &object, now);
            }
            WatchEvent::InitDone => {
                let gone = K::live(&recorder)
                    .into_iter()
                    .filter(|uid| !listed.contains(uid));
                for uid in gone.collect::<Vec<_>>() {
                    K::delete(&mut recorder, &uid, now);
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            WatchEvent::Apply(object) => K::apply(&mut recorder, &object, now),
            WatchEvent::Delete(object) => {
                K::apply(&mut recorder, &object, now);
                let uid = object.meta().uid.clone().unwrap_or_default();
                K::delete(&mut recorder, &uid, now);
            }
        }
    }
}

async fn watch_events(api: Api<Event>, recorder: SharedRecorder, shutdown: CancellationToken) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = next(&mut stream, &shutdown).await {
        if let WatchEvent::Apply(event) | WatchEvent::InitApply(event) = event {
            recorder.lock().apply_event(&event);
        }
    }
}

/// The next watch event; errors (the watcher retries with backoff) are skipped.
async fn next<S, K>(stream: &mut S, shutdown: &CancellationToken) -> Option<WatchEvent<K>>
where
    S: futures::Stream<Item = Result<WatchEvent<K>, watcher::Error>> + Unpin,
{
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return None,
            item = stream.next() => item?,
        };
        match item {
            Ok(event) => return Some(event),
            Err(error) => tracing::debug!(%error, "checker watch failed; retrying"),
        }
    }
}
