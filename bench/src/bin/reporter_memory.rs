//! Reporter memory: what the reporter's watch caches cost with N concurrent
//! flow-run pods (issue 4 asks for 10,000 in tens of megabytes).
//!
//! ```sh
//! cargo run --release -p benchmarks --bin reporter-memory -- --jobs 10000
//! ```
//!
//! The Kubernetes API emulator runs as its own process (`kube-emulator
//! serve`), so its memory is not counted. N Jobs labelled like the
//! dispatcher's are created with an image the scripted runtime keeps running,
//! giving N running pods. Then this process runs the reporter's own Job and
//! Pod watchers into its view store, exactly as the service does, and
//! reports its resident memory before and after the caches are full.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flow_run_proto::kubernetes::{FLOW_RUN_ID_LABEL, WORK_POOL_NAME_LABEL};
use futures::stream::{self, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use reporter::service::store::SharedStore;
use reporter::service::watch::{watch_jobs, watch_pods, ApiScope};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Concurrent flow-run Jobs (each with one running pod).
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// The kube-emulator binary (default: beside this one).
    #[arg(long)]
    emulator: Option<std::path::PathBuf>,
}

struct EmulatorProcess(Child);

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = tempfile::tempdir()?;
    let (_emulator, client) = start_emulator(&args, &state.path().join("kubeconfig")).await?;
    create_jobs(&client, args.jobs).await?;
    let (before, after) = watch_into_store(client, args.jobs).await?;
    let grown = after.saturating_sub(before);
    println!(
        "| concurrent pods | RSS before watchers | RSS with full caches | growth | per pod (Job + pod) |\n| ---: | ---: | ---: | ---: | ---: |\n| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} bytes |",
        args.jobs,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        grown as f64 / 1024.0,
        grown as f64 * 1024.0 / args.jobs as f64
    );
    Ok(())
}

/// Starts the emulator writing `kubeconfig` and connects to it.
async fn start_emulator(
    args: &Args,
    kubeconfig: &std::path::Path,
) -> anyhow::Result<(EmulatorProcess, kube::Client)> {
    let binary = match &args.emulator {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("kube-emulator"),
    };
    let port = test_stack::ports::free_port();
    let emulator = EmulatorProcess(
        Command::new(&binary)
            .args([
                "serve",
                "--port",
                &port.to_string(),
                "--kubelet-stage-delay-ms",
                "1",
                "--kubeconfig",
            ])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("start {} (cargo build -p kube-emulator)", binary.display())
            })?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            bail!("the emulator did not write its kubeconfig");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    Ok((emulator, client))
}

/// Creates `count` Jobs, 32 at a time, each with a pod that keeps running.
async fn create_jobs(client: &kube::Client, count: usize) -> anyhow::Result<()> {
    println!("creating {count} Jobs with running pods...");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let created = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..count)
        .map(|i| {
            let jobs = jobs.clone();
            async move {
                let job: Job = serde_json::from_value(job_manifest(i))?;
                jobs.create(&PostParams::default(), &job).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    if let Some(Err(error)) = results.into_iter().find(|r| r.is_err()) {
        bail!("creating Jobs: {error}");
    }
    println!("created in {:.1} s", created.elapsed().as_secs_f64());
    Ok(())
}

/// Runs the reporter's Job and pod watchers into a view store until it holds
/// `jobs` of each; the resident memory (KiB) before and after.
async fn watch_into_store(client: kube::Client, jobs: usize) -> anyhow::Result<(u64, u64)> {
    // The reporter's side starts here.
    let before = resident_kib();
    let store = SharedStore::new();
    let shutdown = CancellationToken::new();
    let scope = ApiScope {
        client,
        namespace: None,
    };
    let metrics = reporter::service::ReporterMetrics::detached();
    let job_watch = tokio::spawn(watch_jobs(
        scope.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let pod_watch = tokio::spawn(watch_pods(
        scope,
        store.clone(),
        metrics,
        reporter::service::pod_events::PodEventSink::disabled(),
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (job_views, pod_views, runs) = store.read(|s| s.counts());
        if job_views >= jobs && pod_views >= jobs {
            println!("cached {job_views} Job views, {pod_views} pod views, {runs} runs");
            break;
        }
        if Instant::now() > deadline {
            bail!("the caches reached only {job_views} Jobs and {pod_views} pods");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let the initial list pages be freed, then read the steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = resident_kib();
    shutdown.cancel();
    let _ = tokio::join!(job_watch, pod_watch);
    Ok((before, after))
}

/// A Job shaped like the dispatcher's (labels, one container), whose pod the
/// scripted runtime keeps running (`hang`).
fn job_manifest(index: usize) -> serde_json::Value {
    let run = uuid::Uuid::new_v4().to_string();
    let labels = serde_json::json!({
        FLOW_RUN_ID_LABEL: run,
        "prefect.io/flow-run-name": format!("bench-run-{index}"),
        WORK_POOL_NAME_LABEL: "bench",
        "app.kubernetes.io/managed-by": "prefect",
    });
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": format!("bench-run-{index}"), "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "prefect-job",
                        "image": "example/hang:1",
                        "args": ["prefect", "flow-run", "execute"],
                        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": run}],
                    }],
                },
            },
        },
    })
}
