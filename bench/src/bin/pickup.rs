//! Pickup: how soon a run gets its Job when runs arrive one by one at a
//! steady rate, for prefect-k8s and the Python worker, each with its default
//! settings (prefect-k8s polls every 5 s and, by default, at once on the
//! server's Scheduled events; the Python worker polls every 10 s).
//!
//! ```sh
//! cargo build --release --bins -p poller -p dispatcher -p reporter -p benchmarks
//! target/release/pickup --rate 10 --seconds 30
//! target/release/pickup --rate 10 --seconds 30 --scheduled-ahead-seconds 15
//! ```
//!
//! With `--scheduled-ahead-seconds 0` (the default) each run is created due
//! now and its latency runs from the creation call's answer to its Job. With
//! a positive value each run is scheduled that far ahead and the figure is
//! its Job's time against its scheduled time (negative: the Job was there
//! before the run was due, as prefetch intends).

use std::time::{Duration, Instant};

use anyhow::bail;
use benchmarks::agents::{self, Running, Shape};
use benchmarks::backlog::Backlog;
use benchmarks::jobs::JobClock;
use benchmarks::procs;
use benchmarks::stack::BenchStack;
use clap::Parser;
use prefect_client::{DeploymentFlowRunCreate, StateCreate, StateType};

/// Time for an agent to start before the first run arrives.
const WARM_UP: Duration = Duration::from_secs(8);
/// The longest a run may wait for its Job after the last arrival.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
struct Args {
    /// Runs created per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of arrivals.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Each run scheduled this far ahead (0: due now).
    #[arg(long, default_value_t = 0.0)]
    scheduled_ahead_seconds: f64,
    /// Agents, comma separated: `prefect-k8s`, `python`; `prefect-k8s@DIR`
    /// runs the services built in DIR (another commit, side by side).
    #[arg(long, value_delimiter = ',', default_value = "prefect-k8s,python")]
    agents: Vec<String>,
    /// Dispatcher replicas of prefect-k8s.
    #[arg(long, default_value_t = 3)]
    dispatchers: usize,
    /// Extra arguments for prefect-k8s's poller, e.g. `--poll-on-events=false`.
    #[arg(long, allow_hyphen_values = true)]
    poller_arg: Vec<String>,
    /// The Prefect server's database: `postgres` or `sqlite`.
    #[arg(long, default_value = "postgres")]
    database: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = BenchStack::start(&args.database, None).await?;
    println!("| agent | runs | runs/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | Jobs before their time | Prefect server busy |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for agent in &args.agents {
        let (mut latencies, server_busy) = measure(&stack, &args, agent).await?;
        latencies.sort_unstable_by(f64::total_cmp);
        let early = latencies.iter().filter(|l| **l < 0.0).count();
        println!(
            "| {agent} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {early} | {:.0} % |",
            latencies.len(),
            args.rate,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
            server_busy * 100.0,
        );
    }
    let what = if args.scheduled_ahead_seconds > 0.0 {
        format!(
            "Job time − scheduled time, runs scheduled {} s ahead",
            args.scheduled_ahead_seconds
        )
    } else {
        "creation call's answer → Job".to_owned()
    };
    println!("\n{what}; {}", stack.describe());
    Ok(())
}

/// Each run's latency in milliseconds (see the module's doc), and the Prefect
/// server's CPU time over the arrivals and the drain as a share of one core
/// (the server is one Python process, on one core for its request handling:
/// near 100 % it is saturated, and runs queue at the server whatever the
/// agent does). PostgreSQL's own CPU is not in it.
async fn measure(stack: &BenchStack, args: &Args, agent: &str) -> anyhow::Result<(Vec<f64>, f64)> {
    let backlog = Backlog::create(&stack.prefect, 0).await?;
    let clock = JobClock::start(stack.kube.clone(), &backlog.pool);
    let running = start(stack, args, agent, &backlog.pool)?;
    tokio::time::sleep(WARM_UP).await;
    let total = (args.rate * args.seconds as f64).round() as usize;
    let started = Instant::now();
    let cpu_before = procs::group_cpu(stack.server.pid());
    let mut creations = Vec::with_capacity(total);
    for n in 0..total {
        let at = started + Duration::from_secs_f64(n as f64 / args.rate);
        tokio::time::sleep_until(at.into()).await;
        let prefect = stack.prefect.clone();
        let ahead = args.scheduled_ahead_seconds;
        let deployment = backlog.deployment;
        creations.push(tokio::spawn(async move {
            let mut run = DeploymentFlowRunCreate::default();
            let due = chrono::Utc::now() + chrono::TimeDelta::milliseconds((ahead * 1000.0) as i64);
            if ahead > 0.0 {
                let mut state = StateCreate::new(StateType::Scheduled, "Scheduled");
                state.state_details.scheduled_time = Some(due);
                run.state = Some(state);
            }
            let created = prefect
                .create_flow_run_from_deployment(deployment, &run)
                .await?;
            let answered = Instant::now();
            let reference = if ahead > 0.0 {
                at + Duration::from_secs_f64(ahead)
            } else {
                answered
            };
            anyhow::Ok((created.id.to_string(), reference))
        }));
    }
    let mut references = Vec::with_capacity(total);
    for creation in creations {
        references.push(creation.await??);
    }
    let drained = clock.wait_for(total, DRAIN_LIMIT).await;
    let server_cpu = procs::group_cpu(stack.server.pid()).saturating_sub(cpu_before);
    let server_busy = server_cpu.as_secs_f64() / started.elapsed().as_secs_f64();
    running.stop().await;
    drained?;
    if clock.count() > clock.runs() {
        bail!(
            "{} Jobs for {} runs: duplicates",
            clock.count(),
            clock.runs()
        );
    }
    let latencies = references
        .iter()
        .map(|(run, reference)| {
            let appeared = clock.appeared(run).expect("every run has a Job");
            signed_millis(appeared, *reference)
        })
        .collect();
    Ok((latencies, server_busy))
}

fn start(stack: &BenchStack, args: &Args, agent: &str, pool: &str) -> anyhow::Result<Running> {
    let (kind, binaries) = agents::agent_kind(agent)?;
    match kind {
        "prefect-k8s" => agents::start_ours(
            &stack.endpoints,
            pool,
            Shape {
                dispatchers: args.dispatchers,
                concurrency: 16,
                poll_interval_seconds: None,
                env: &[],
                binaries,
            },
            &args.poller_arg,
        ),
        "python" => agents::start_python(&stack.server, &stack.endpoints, pool, None),
        other => bail!("unknown agent {other:?} (prefect-k8s, prefect-k8s@DIR, python)"),
    }
}

/// `a − b` in milliseconds, negative when `a` came first.
fn signed_millis(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(after) => after.as_secs_f64() * 1000.0,
        None => -(b.duration_since(a).as_secs_f64() * 1000.0),
    }
}

/// The `q` quantile of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
