//! Emulator load: N Jobs (default 10,000) run to completion through the
//! scripted runtime while three kube-runtime watchers (all pods, labelled
//! pods, all Jobs) consume every event. Prints how long creation and
//! completion took; the emulator must not be the bottleneck of the other
//! benchmarks.
//!
//! ```sh
//! cargo run --release -p benchmarks --bin emulator-load -- --jobs 10000
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube_emulator::{Emulator, EmulatorConfig};

#[derive(Debug, Parser)]
struct Args {
    /// Jobs to create (each with one pod).
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let emulator = Emulator::start(EmulatorConfig {
        scripted_default_run: Duration::from_millis(10),
        kubelet_stage_delay: Duration::from_millis(1),
        ..EmulatorConfig::fast()
    })
    .await?;
    let client = emulator.client()?;
    let events = Arc::new(AtomicUsize::new(0));
    let watchers = spawn_watchers(&client, &events);

    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    let results: Vec<Result<Job, kube::Error>> = futures::stream::iter(0..args.jobs)
        .map(|i| {
            let jobs = jobs.clone();
            async move { jobs.create(&PostParams::default(), &bench_job(i)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    if let Some(Err(error)) = results.into_iter().find(|r| r.is_err()) {
        bail!("creating Jobs: {error}");
    }
    let created_in = started.elapsed();
    wait_for_completion(&jobs, args.jobs, started).await?;
    println!(
        "{} jobs created in {:.1?}, all complete after {:.1?}; watchers received {} events",
        args.jobs,
        created_in,
        started.elapsed(),
        events.load(Ordering::Relaxed)
    );
    for watcher in watchers {
        watcher.abort();
    }
    emulator.shutdown().await;
    Ok(())
}

/// The three watchers (all pods, labelled pods, all Jobs), each counting the
/// objects it receives into `events`.
fn spawn_watchers(
    client: &kube::Client,
    events: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut watchers = Vec::new();
    for selector in [None, Some("bench=yes")] {
        let pods: Api<Pod> = Api::all(client.clone());
        let events = events.clone();
        let config = match selector {
            Some(s) => watcher::Config::default().labels(s),
            None => watcher::Config::default(),
        };
        watchers.push(tokio::spawn(async move {
            let mut stream =
                std::pin::pin!(watcher(pods, config).default_backoff().applied_objects());
            while stream.next().await.is_some() {
                events.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let jobs: Api<Job> = Api::all(client.clone());
        let events = events.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(jobs, watcher::Config::default())
                .default_backoff()
                .applied_objects());
            while stream.next().await.is_some() {
                events.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    watchers
}

/// Job `bench-{index}`: one pod, labelled `bench=yes`, that runs `true` and is not retried.
fn bench_job(index: usize) -> Job {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": format!("bench-{index}")},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"bench": "yes"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                },
            },
        },
    }))
    .expect("a valid Job")
}

/// Polls until `count` Jobs have succeeded, for at most 30 minutes after `started`.
async fn wait_for_completion(
    jobs: &Api<Job>,
    count: usize,
    started: Instant,
) -> anyhow::Result<()> {
    loop {
        let list = jobs.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
            .count();
        if done == count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("only {done}/{count} completed after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
