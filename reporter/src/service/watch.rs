//! The Job and Pod watchers: kube-runtime `watcher`s (with the default backoff) on
//! objects labelled `prefect.io/flow-run-id`, each object turned into its compact view
//! at once so no whole object is kept. A relist replaces the store's contents; a Job
//! that a `Deleted` event (or a relist) says is gone is confirmed with a GET (404 or
//! another uid) before it becomes a tombstone, as the Python observer does.

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio_util::sync::CancellationToken;

use super::metrics::ReporterMetrics;
use super::pod_events::{PodEventSink, Seen};
use super::store::SharedStore;
use crate::observe::FLOW_RUN_ID_LABEL;
use crate::{JobView, PodView};

/// Watch configuration of our Jobs and pods (label present, any value).
fn labelled() -> watcher::Config {
    watcher::Config::default().labels(FLOW_RUN_ID_LABEL)
}

/// Keeps the store's Job views in step with the cluster until `shutdown`.
pub async fn watch_jobs(
    api_for: ApiScope,
    store: SharedStore,
    metrics: ReporterMetrics,
    shutdown: CancellationToken,
) {
    let api: Api<Job> = api_for.api();
    let stream = watcher(api, labelled()).default_backoff();
    futures::pin_mut!(stream);
    let mut listed: Option<Vec<JobView>> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        let Some(event) = event else { return };
        match event {
            Ok(Event::Init) => listed = Some(Vec::new()),
            Ok(Event::InitApply(job)) => {
                if let (Some(listed), Some(view)) = (listed.as_mut(), JobView::from_job(&job)) {
                    listed.push(view);
                }
            }
            Ok(Event::InitDone) => {
                let views = listed.take().unwrap_or_default();
                let count = views.len();
                let vanished = store.update(|store| store.replace_jobs(views));
                tracing::info!(jobs = count, "listed our Jobs");
                for job in vanished {
                    confirm_job_deleted(&api_for, &store, &job).await;
                }
            }
            Ok(Event::Apply(job)) => {
                if let Some(view) = JobView::from_job(&job) {
                    store.update(|store| store.apply_job(view));
                }
            }
            Ok(Event::Delete(job)) => {
                if let Some(view) = JobView::from_job(&job) {
                    // The final object: its last conditions, which the watch may not
                    // have delivered before (they say how the Job ended).
                    store.update(|store| store.apply_job(view.clone()));
                    confirm_job_deleted(&api_for, &store, &view).await;
                }
            }
            Err(error) => {
                metrics.watch_restart("jobs");
                tracing::warn!(%error, "Job watch failed; retrying with backoff")
            }
        }
    }
}

/// Keeps the store's pod views in step with the cluster until `shutdown`, and
/// hands every pod to `events` (the pod events of [`super::pod_events`]).
pub async fn watch_pods(
    api_for: ApiScope,
    store: SharedStore,
    metrics: ReporterMetrics,
    events: PodEventSink,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = api_for.api();
    let stream = watcher(api, labelled()).default_backoff();
    futures::pin_mut!(stream);
    let mut listed: Option<Vec<PodView>> = None;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        let Some(event) = event else { return };
        let now = chrono::Utc::now();
        match event {
            Ok(Event::Init) => listed = Some(Vec::new()),
            Ok(Event::InitApply(pod)) => {
                events.observe(&pod, Seen::Listed);
                if let (Some(listed), Some(view)) = (listed.as_mut(), PodView::from_pod(&pod)) {
                    listed.push(view);
                }
            }
            Ok(Event::InitDone) => {
                let views = listed.take().unwrap_or_default();
                let count = views.len();
                store.update(|store| store.replace_pods(views, now));
                tracing::info!(pods = count, "listed our pods");
            }
            Ok(Event::Apply(pod)) => {
                events.observe(&pod, Seen::Updated);
                if let Some(view) = PodView::from_pod(&pod) {
                    store.update(|store| store.apply_pod(view, now));
                }
            }
            Ok(Event::Delete(pod)) => {
                events.observe(&pod, Seen::Deleted);
                if let Some(view) = PodView::from_pod(&pod) {
                    store.update(|store| store.mark_pod_deleted(view, now));
                }
            }
            Err(error) => {
                metrics.watch_restart("pods");
                tracing::warn!(%error, "pod watch failed; retrying with backoff")
            }
        }
    }
}

/// How many times a failing confirmation GET is tried before the watch's word is taken.
const CONFIRM_ATTEMPTS: u32 = 3;

/// Marks the Job deleted once a GET shows it gone (404, or a new Job of the same name).
/// A Job that is still there is put back. When the GET keeps failing, the watch's
/// `Deleted` is believed.
async fn confirm_job_deleted(api_for: &ApiScope, store: &SharedStore, job: &JobView) {
    let api: Api<Job> = Api::namespaced(api_for.client.clone(), &job.namespace);
    for attempt in 1..=CONFIRM_ATTEMPTS {
        match api.get_opt(&job.name).await {
            Ok(Some(current)) if current.metadata.uid.as_deref() == Some(&*job.uid) => {
                tracing::debug!(job = %job.name, "Job reported deleted is still there");
                if let Some(view) = JobView::from_job(&current) {
                    store.update(|store| store.apply_job(view));
                }
                return;
            }
            Ok(_) => break,
            Err(error) if attempt < CONFIRM_ATTEMPTS => {
                tracing::warn!(%error, job = %job.name, "confirming a Job deletion failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)))
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, job = %job.name, "cannot confirm a Job deletion; trusting the watch");
            }
        }
    }
    tracing::info!(namespace = %job.namespace, job = %job.name, flow_run_id = %job.flow_run_id, "Job deleted");
    store.update(|store| store.mark_job_deleted(&job.uid, chrono::Utc::now()));
}

/// Where the watchers look: one namespace or all of them.
#[derive(Clone)]
pub struct ApiScope {
    pub client: kube::Client,
    pub namespace: Option<String>,
}

impl ApiScope {
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }
}
