//! Load check (ignored by default; run with `cargo test --release -p kube-emulator --test
//! bench_10k -- --ignored --nocapture`): N Jobs (default 10,000, env `BENCH_JOBS`) run to
//! completion through the scripted runtime while three watchers (jobs, pods, pods with a
//! label selector) consume every event. Prints the elapsed time; asserts only completion.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube_emulator::{Emulator, EmulatorConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load benchmark"]
async fn ten_thousand_jobs_with_watchers() {
    let count: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let emulator = Emulator::start(EmulatorConfig {
        scripted_default_run: Duration::from_millis(10),
        kubelet_stage_delay: Duration::from_millis(1),
        ..EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let client = emulator.client().unwrap();
    let events = Arc::new(AtomicUsize::new(0));
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
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    let mut creates = futures::stream::iter(0..count)
        .map(|i| {
            let jobs = jobs.clone();
            async move {
                let mut job = support::job(&format!("bench-{i}"), "busybox", &["true"], 0);
                job.spec.as_mut().unwrap().template.metadata = Some(
                    serde_json::from_value(serde_json::json!({"labels": {"bench": "yes"}}))
                        .unwrap(),
                );
                jobs.create(&PostParams::default(), &job).await.unwrap();
            }
        })
        .buffer_unordered(32);
    while creates.next().await.is_some() {}
    let created_in = started.elapsed();
    loop {
        let list = jobs.list(&ListParams::default()).await.unwrap();
        let done = list
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
            .count();
        if done == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "only {done}/{count} completed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{count} jobs created in {:.1?}, all complete after {:.1?}; watchers received {} events",
        created_in,
        started.elapsed(),
        events.load(Ordering::Relaxed)
    );
    for w in watchers {
        w.abort();
    }
    emulator.shutdown().await;
}
