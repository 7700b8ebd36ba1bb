//! Backlog throughput, side by side in one run: how fast a backlog of due
//! flow runs becomes Kubernetes Jobs, for the server's bare claim rate (the
//! ceiling of any agent), prefect-k8s (poller, dispatchers and reporter as
//! separate processes) and the Python Kubernetes worker (prefect-kubernetes
//! 0.8.0), against one Prefect 3.9.1 server and one Kubernetes API emulator
//! whose pods keep running.
//!
//! ```sh
//! bench/run.sh --runs 300,2000
//! ```
//!
//! For each backlog size and agent: a fresh pool with its runs due now, then
//! the agent starts and the clock runs until every run has its Job (the
//! claims are done, for the bare claim). Prefect calls are counted at the
//! server (its access log), CPU and peak RSS read from `/proc`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use benchmarks::agents::{self, Running, Shape};
use benchmarks::backlog::Backlog;
use benchmarks::jobs::JobClock;
use benchmarks::procs;
use benchmarks::report::{self, Measurement, CLAIM_AND_PID, SERVER_LIMIT};
use benchmarks::server_log::LogMark;
use benchmarks::stack::BenchStack;
use clap::Parser;
use prefect_client::FlowRunFilter;

/// The longest any agent may take for one backlog.
const DRAIN_LIMIT: Duration = Duration::from_secs(1800);
/// After the last Job: time for the agent's trailing writes (the Python
/// worker records the pid after creating the Job) before the count stops.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
struct Args {
    /// Backlog sizes, comma separated; each is measured for every agent.
    #[arg(long, value_delimiter = ',', default_value = "300")]
    runs: Vec<usize>,
    /// Agents, comma separated: `server-limit` (the bare claim), `claim+pid`
    /// (the bare claim and the pid update), `prefect-k8s`, `python`;
    /// `prefect-k8s@DIR` runs the services built in DIR (another commit,
    /// side by side in one invocation).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "server-limit,claim+pid,prefect-k8s,python"
    )]
    agents: Vec<String>,
    /// Dispatcher replicas of prefect-k8s, comma separated: one row per count.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    dispatchers: Vec<usize>,
    /// More environment for prefect-k8s's processes only, `KEY=VALUE`
    /// (repeatable), e.g. `MALLOC_ARENA_MAX=2`.
    #[arg(long = "service-env", value_parser = parse_key_value)]
    service_env: Vec<(String, String)>,
    /// Latency the emulator adds to every Job create, in milliseconds.
    #[arg(long, default_value_t = 0)]
    job_create_latency_ms: u64,
    /// Runs one dispatcher handles at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Claims the bare claim keeps in flight.
    #[arg(long, default_value_t = 8)]
    claims_in_flight: usize,
    /// Poll interval of our poller and of the Python worker, in seconds.
    #[arg(long, default_value_t = 1.0)]
    poll_interval_seconds: f64,
    /// The Prefect server's database: `postgres` (127.0.0.1:5432) or `sqlite`.
    #[arg(long, default_value = "postgres")]
    database: String,
    /// Where the processes' logs go (default: a new temp dir, kept).
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// The parts every measurement shares.
struct Bench {
    args: Args,
    stack: BenchStack,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stack = BenchStack::start(&args.database, args.logs.clone()).await?;
    stack
        .emulator
        .set_faults(kube_emulator::faults::FaultSettings {
            latency_ms: args.job_create_latency_ms,
            verb: Some("create".into()),
            resource: Some("jobs".into()),
            ..Default::default()
        });
    let bench = Bench { args, stack };
    let mut measurements = Vec::new();
    for &runs in &bench.args.runs {
        for agent in &bench.args.agents {
            let replicas: &[usize] = if agents::agent_kind(agent)?.0 == "prefect-k8s" {
                &bench.args.dispatchers
            } else {
                &[0]
            };
            for &dispatchers in replicas {
                let m = bench.measure(agent, runs, dispatchers).await?;
                eprintln!(
                    "{}, {runs} runs: {:.1} runs/s",
                    m.agent,
                    m.runs_per_second()
                );
                measurements.push(m);
            }
        }
    }
    println!("{}", report::table(&measurements));
    println!(
        "Prefect calls per run, by endpoint:\n\n{}",
        report::calls_table(&measurements)
    );
    println!(
        "{}; prefect-k8s: dispatchers × {} each, poll every {} s; bare claim: {} in flight; {} ms added to each Job create",
        bench.stack.describe(),
        bench.args.concurrency,
        bench.args.poll_interval_seconds,
        bench.args.claims_in_flight,
        bench.args.job_create_latency_ms,
    );
    Ok(())
}

impl Bench {
    /// One agent draining a fresh backlog of `runs` (prefect-k8s with `dispatchers`).
    async fn measure(
        &self,
        agent: &str,
        runs: usize,
        dispatchers: usize,
    ) -> anyhow::Result<Measurement> {
        let backlog = Backlog::create(&self.stack.prefect, runs).await?;
        let clock = JobClock::start(self.stack.kube.clone(), &backlog.pool);
        let server_pid = self.stack.server.pid();
        let cpu_before = procs::group_cpu(server_pid);
        let mark = LogMark::now(self.stack.server.log_path());
        let started = Instant::now();
        let bare = agent == SERVER_LIMIT || agent == CLAIM_AND_PID;
        let (elapsed, done, processes) = if bare {
            let claimed = agents::bare_claims(
                &self.stack.prefect,
                &backlog.runs,
                self.args.claims_in_flight,
                agent == CLAIM_AND_PID,
            )
            .await?;
            (started.elapsed(), claimed, Vec::new())
        } else {
            let running = self.start(agent, &backlog.pool, dispatchers)?;
            let drained = clock.wait_for(runs, DRAIN_LIMIT).await;
            let elapsed = started.elapsed();
            tokio::time::sleep(SETTLE).await;
            let usage = running.usage();
            running.stop().await;
            drained?;
            (elapsed, clock.count(), usage)
        };
        let server_cpu = procs::group_cpu(server_pid).saturating_sub(cpu_before);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = mark.calls_since();
        if !bare {
            self.check_recorded(&backlog).await?;
        }
        let name =
            if agents::agent_kind(agent)?.0 == "prefect-k8s" && self.args.dispatchers.len() > 1 {
                format!("{agent} ×{dispatchers}")
            } else {
                agent.to_owned()
            };
        Ok(Measurement {
            agent: name,
            runs,
            elapsed,
            job_times: clock.appeared_after(started),
            done,
            processes,
            server_cpu,
            calls,
        })
    }

    fn start(&self, agent: &str, pool: &str, dispatchers: usize) -> anyhow::Result<Running> {
        let poll = Some(self.args.poll_interval_seconds);
        let (kind, binaries) = agents::agent_kind(agent)?;
        match kind {
            "prefect-k8s" => agents::start_ours(
                &self.stack.endpoints,
                pool,
                Shape {
                    dispatchers,
                    concurrency: self.args.concurrency,
                    poll_interval_seconds: poll,
                    env: &self.args.service_env,
                    binaries,
                },
                &[],
            ),
            "python" => agents::start_python(&self.stack.server, &self.stack.endpoints, pool, poll),
            other => {
                bail!("unknown agent {other:?} (server-limit, claim+pid, prefect-k8s, prefect-k8s@DIR, python)")
            }
        }
    }

    /// Every run of the backlog has its pid recorded (after the agent stopped).
    async fn check_recorded(&self, backlog: &Backlog) -> anyhow::Result<()> {
        let filter = FlowRunFilter::default().with_deployment_ids(vec![backlog.deployment]);
        let runs = self.stack.prefect.read_all_flow_runs(&filter).await?;
        let missing = runs
            .iter()
            .filter(|run| run.infrastructure_pid.is_none())
            .count();
        if missing > 0 {
            eprintln!(
                "warning: {missing} runs of {} have a Job but no pid recorded",
                backlog.pool
            );
        }
        Ok(())
    }
}

/// One `--service-env` pair, split as the services split theirs.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let mut pairs = service_runtime::options::parse_pairs("--service-env", &[text.to_owned()])?;
    pairs
        .pop()
        .ok_or_else(|| "--service-env expects KEY=VALUE".to_owned())
}
