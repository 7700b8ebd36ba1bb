//! Submission throughput: how long a backlog of due flow runs takes to become
//! Kubernetes Jobs, for prefect-k8s (poller + N dispatchers over JetStream)
//! and for the Python Prefect Kubernetes worker (prefect-kubernetes 0.8.0),
//! against the same Prefect server and the same Kubernetes API emulator.
//!
//! ```sh
//! cargo run --release -p benchmarks --bin submission -- --runs 300 --database postgres
//! ```
//!
//! For each agent: a fresh work pool with one deployment, `--runs` runs
//! created due now while no agent runs, then the agent starts and the clock
//! runs until every run has its Job (`infrastructure_pid` set and a Job
//! labelled with the run's pool exists). Duplicates are counted too.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use flow_run_proto::kubernetes::WORK_POOL_NAME_LABEL;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use prefect_client::{
    ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, FlowRunFilter, PrefectClient,
    WorkPoolCreate,
};
use test_stack::nats::NatsServer;
use test_stack::prefect::{unique_name, PrefectServer, PrefectServerOptions};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Flow runs in the backlog.
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Dispatcher replicas for prefect-k8s.
    #[arg(long, default_value_t = 3)]
    dispatchers: usize,
    /// Runs one dispatcher replica handles at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// The Prefect server's database: `postgres` (local PostgreSQL) or `sqlite`.
    #[arg(long, default_value = "postgres")]
    database: String,
    /// Which agents to measure, comma separated: `prefect-k8s`, `python`.
    #[arg(long, value_delimiter = ',', default_value = "prefect-k8s,python")]
    agents: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (extra_env, database) = database_settings(&args.database)?;
    let server = PrefectServer::start_with(PrefectServerOptions {
        extra_env,
        ..Default::default()
    });
    let prefect = PrefectClient::new(ClientConfig::new(&server.api_url())?)?;
    let nats = NatsServer::start();
    let emulator = kube_emulator::Emulator::start(kube_emulator::EmulatorConfig {
        // Pods run until the end of the benchmark: only submission is measured.
        scripted_default_run: Duration::from_secs(3600),
        ..kube_emulator::EmulatorConfig::fast()
    })
    .await?;
    let kube = emulator.client()?;

    println!("| agent | runs | seconds to all Jobs | runs/s | Jobs created |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for agent in &args.agents {
        let pool = unique_name("bench");
        prefect
            .create_work_pool(&WorkPoolCreate::new(
                &pool,
                "kubernetes",
                serde_json::from_str(poller::pool::DEFAULT_BASE_JOB_TEMPLATE)?,
            ))
            .await?;
        let flow = prefect.create_flow(&unique_name("bench-flow")).await?;
        let deployment = prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(pool.clone()),
                ..DeploymentCreate::new(unique_name("bench"), flow.id)
            })
            .await?;
        for _ in 0..args.runs {
            prefect
                .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
                .await?;
        }

        let started = Instant::now();
        let running = match agent.as_str() {
            "prefect-k8s" => Agent::Ours(start_ours(&args, &pool, &prefect, &kube, &nats).await?),
            "python" => Agent::Python(start_python(&server, &emulator, &pool)?),
            other => bail!("unknown agent {other:?}"),
        };
        let jobs = wait_for_all_jobs(&prefect, &kube, &pool, deployment.id, args.runs).await;
        let elapsed = started.elapsed();
        running.stop().await;
        let jobs = jobs?;
        println!(
            "| {agent} | {} | {:.1} | {:.1} | {jobs} |",
            args.runs,
            elapsed.as_secs_f64(),
            args.runs as f64 / elapsed.as_secs_f64()
        );
    }
    println!(
        "\nPrefect server database: {database}; machine: {} cores",
        num_cpus()
    );
    drop_database(&args.database);
    Ok(())
}

enum Agent {
    Ours(CancellationToken),
    Python(Child),
}

impl Agent {
    async fn stop(self) {
        match self {
            Agent::Ours(token) => {
                token.cancel();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Agent::Python(mut child) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn start_ours(
    args: &Args,
    pool: &str,
    prefect: &PrefectClient,
    kube: &kube::Client,
    nats: &NatsServer,
) -> anyhow::Result<CancellationToken> {
    let token = CancellationToken::new();
    let options = service_runtime::nats::NatsOptions::plain(nats.url());
    let mut poller_config = poller::PollerConfig::for_pool(pool);
    poller_config.poll_interval_seconds = 1.0;
    let client = service_runtime::nats::connect(&options, "bench-poller").await?;
    tokio::spawn(poller::Poller::new(poller_config, prefect.clone(), client).run(token.clone()));
    for replica in 0..args.dispatchers {
        let mut config = dispatcher::DispatcherConfig::for_pool(pool);
        config.pool.worker_name = format!("bench-dispatcher-{replica}");
        config.concurrency = args.concurrency;
        let client = service_runtime::nats::connect(&options, "bench-dispatcher").await?;
        tokio::spawn(
            dispatcher::Dispatcher::new(config, prefect.clone(), kube.clone(), client)
                .run(token.clone()),
        );
    }
    Ok(token)
}

fn start_python(
    server: &PrefectServer,
    emulator: &kube_emulator::Emulator,
    pool: &str,
) -> anyhow::Result<Child> {
    let home = std::env::temp_dir().join(unique_name("bench-worker-home"));
    std::fs::create_dir_all(&home)?;
    Command::new(server.prefect_cli())
        .args(["worker", "start", "--pool", pool, "--type", "kubernetes"])
        .envs(server.env())
        .env("PREFECT_HOME", &home)
        .env("KUBECONFIG", emulator.kubeconfig_path())
        .env("PREFECT_WORKER_QUERY_SECONDS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start the Python Prefect worker")
}

/// Waits until every run of the deployment has a pid and a Job; returns how
/// many Jobs the pool's runs have (more than the runs means duplicates).
async fn wait_for_all_jobs(
    prefect: &PrefectClient,
    kube: &kube::Client,
    pool: &str,
    deployment: uuid::Uuid,
    runs: usize,
) -> anyhow::Result<usize> {
    let jobs: Api<Job> = Api::all(kube.clone());
    let selector = format!("{WORK_POOL_NAME_LABEL}={pool}");
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let with_pid = prefect
            .read_all_flow_runs(&FlowRunFilter::default().with_deployment_ids(vec![deployment]))
            .await?
            .iter()
            .filter(|r| r.infrastructure_pid.is_some())
            .count();
        let created = jobs
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .len();
        if with_pid >= runs && created >= runs {
            return Ok(created);
        }
        if Instant::now() > deadline {
            bail!("only {with_pid} runs with a pid and {created} Jobs after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn database_settings(database: &str) -> anyhow::Result<(Vec<(String, String)>, String)> {
    match database {
        "sqlite" => Ok((Vec::new(), "SQLite".into())),
        "postgres" => {
            let name = bench_database();
            let status = Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-c"])
                .arg(format!("create database {name}"))
                .stdout(Stdio::null())
                .status()
                .context("psql (is PostgreSQL running? scripts/install-deps.sh starts it)")?;
            if !status.success() {
                bail!("creating database {name} failed");
            }
            Ok((
                vec![(
                    "PREFECT_API_DATABASE_CONNECTION_URL".into(),
                    format!("postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"),
                )],
                "PostgreSQL".into(),
            ))
        }
        other => bail!("unknown database {other:?} (postgres or sqlite)"),
    }
}

fn bench_database() -> String {
    format!("prefect_bench_{}", std::process::id())
}

fn drop_database(database: &str) {
    if database == "postgres" {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-c"])
            .arg(format!(
                "drop database if exists {} with (force)",
                bench_database()
            ))
            .stdout(Stdio::null())
            .status();
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
