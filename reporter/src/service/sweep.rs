//! The finished-Job sweep (leader only, off unless `--delete-finished-jobs-after` is
//! set): for clusters without the TTL-after-finished controller, Jobs *of this pool,
//! created by this agent* that completed or failed at least that long ago are deleted
//! with Background propagation (the garbage collector removes their pods), each with a
//! uid precondition. The sweep reads the watch store, so it costs no list calls.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::Api;
use service_runtime::kubernetes::deadline;
use tokio_util::sync::CancellationToken;

use super::lease::Leadership;

use super::store::SharedStore;

/// How often the sweep looks: a quarter of the age, between 1 s and 60 s.
pub fn sweep_interval(age: Duration) -> Duration {
    (age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Deletes finished Jobs older than `age` until `shutdown`.
pub async fn run_sweep(
    store: SharedStore,
    kube: kube::Client,
    age: Duration,
    work_pool_label: String,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(sweep_interval(age));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let age = chrono::TimeDelta::from_std(age).unwrap_or(chrono::TimeDelta::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if !leadership.is_leading() || !store.is_synced() {
            continue;
        }
        let finished_before = chrono::Utc::now() - age;
        let jobs = store.read(|store| store.finished_jobs(finished_before));
        for job in jobs.iter().filter(|job| job.is_ours(&work_pool_label)) {
            if !leadership.is_leading() || shutdown.is_cancelled() {
                break;
            }
            let (namespace, name) = (&job.namespace, &job.name);
            let api: Api<Job> = Api::namespaced(kube.clone(), namespace);
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: Some(job.uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match deadline(api.delete(name, &params)).await {
                Ok(_) => tracing::info!(%namespace, job = %name, "deleted a finished Job"),
                Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 409 => {}
                Err(error) => {
                    tracing::warn!(%error, %namespace, job = %name, "deleting a finished Job failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_looks_often_enough_but_not_constantly() {
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
    }
}
