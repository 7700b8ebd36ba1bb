//! When each Job of a pool first appeared in the Kubernetes API: a watch,
//! started before the agent, records the moment it sees each Job, by the
//! flow run it is for (label `prefect.io/flow-run-id`, set by both agents).
//! A second Job for the same run is counted apart: a duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flow_run_proto::kubernetes::{FLOW_RUN_ID_LABEL, WORK_POOL_NAME_LABEL};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::watcher::{self, watcher};
use kube::Api;

/// The Jobs of one pool, as they appear.
pub struct JobClock {
    seen: Arc<Mutex<Seen>>,
    watch: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    /// Job name → its flow run.
    jobs: HashMap<String, String>,
    /// Flow run → when its first Job appeared.
    runs: HashMap<String, Instant>,
}

impl JobClock {
    /// Starts watching the pool's Jobs (label [`WORK_POOL_NAME_LABEL`]).
    pub fn start(kube: kube::Client, pool: &str) -> JobClock {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let api: Api<Job> = Api::all(kube);
        let config = watcher::Config::default().labels(&format!("{WORK_POOL_NAME_LABEL}={pool}"));
        let record = seen.clone();
        let watch = tokio::spawn(async move {
            let stream = watcher(api, config);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let jobs = match event {
                    Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) => vec![job],
                    _ => continue,
                };
                let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                for job in jobs {
                    let name = job.metadata.name.clone().unwrap_or_default();
                    let labels = job.metadata.labels.unwrap_or_default();
                    let run = labels
                        .get(FLOW_RUN_ID_LABEL)
                        .cloned()
                        .unwrap_or_else(|| name.clone());
                    seen.runs.entry(run.clone()).or_insert(now);
                    seen.jobs.insert(name, run);
                }
            }
        });
        JobClock { seen, watch }
    }

    /// How many Jobs have appeared (more than [`JobClock::runs`]: duplicates).
    pub fn count(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jobs
            .len()
    }

    /// How many runs have a Job.
    pub fn runs(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .runs
            .len()
    }

    /// When the first Job of `run` appeared.
    pub fn appeared(&self, run: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.runs.get(run).copied()
    }

    /// Waits until `runs` runs have a Job; an error after `limit`.
    pub async fn wait_for(&self, runs: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.runs() < runs {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "only {} of {runs} runs have a Job after {limit:?}",
                    self.runs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// When each run's first Job appeared, counted from `start`, earliest first.
    pub fn appeared_after(&self, start: Instant) -> Vec<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut times: Vec<Duration> = seen
            .runs
            .values()
            .map(|at| at.saturating_duration_since(start))
            .collect();
        times.sort();
        times
    }
}

impl Drop for JobClock {
    fn drop(&mut self) {
        self.watch.abort();
    }
}
