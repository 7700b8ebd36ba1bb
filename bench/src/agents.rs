//! The agents under test, as deployed: our poller, dispatchers and reporter
//! as separate processes (the release binaries beside this one), the Python
//! Kubernetes worker as `prefect worker start`; and the bare claim, the least
//! any agent must ask of the server per run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prefect_client::{PrefectClient, StateCreate};
use test_stack::prefect::PrefectServer;
use uuid::Uuid;

use crate::procs::{self, Usage};

/// Where the agents reach the other parts.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub prefect_api_url: String,
    pub nats_url: String,
    pub kubeconfig: PathBuf,
    /// Each process logs to `<logs>/<name>.log`.
    pub logs: PathBuf,
}

/// Our deployment's shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape<'a> {
    pub dispatchers: usize,
    pub concurrency: u16,
    /// `None`: the poller's default.
    pub poll_interval_seconds: Option<f64>,
    /// More environment for our processes only (e.g. `MALLOC_ARENA_MAX`).
    pub env: &'a [(String, String)],
    /// Where our binaries are (`prefect-k8s@DIR`, another build side by side);
    /// `None`: beside this benchmark's own.
    pub binaries: Option<&'a Path>,
}

/// Processes of one agent.
pub struct Running {
    processes: Vec<(String, Child)>,
}

impl Running {
    /// Each process's usage so far (before [`Running::stop`]).
    pub fn usage(&self) -> Vec<(String, Usage)> {
        self.processes
            .iter()
            .filter_map(|(name, child)| Some((name.clone(), procs::usage(child.id())?)))
            .collect()
    }

    /// SIGTERM to every process, SIGKILL to those still there after 5 s.
    pub async fn stop(mut self) {
        for (_, child) in &self.processes {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.processes {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The release binaries of our services: in `dir`, or beside this
/// benchmark's own.
pub fn our_binaries(dir: Option<&Path>) -> anyhow::Result<[PathBuf; 3]> {
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's directory")?
            .to_owned(),
    };
    let binaries = ["poller", "dispatcher", "reporter"].map(|name| dir.join(name));
    if let Some(missing) = binaries.iter().find(|path| !path.exists()) {
        bail!(
            "{} not found: build the services (`cargo build --release --bins -p poller -p dispatcher -p reporter`) and copy them there, or beside the benchmark",
            missing.display()
        );
    }
    Ok(binaries)
}

/// An agent named `kind` or `kind@DIR` (our services built elsewhere, e.g. the
/// commit before a change, measured beside this one in one invocation).
/// Only `prefect-k8s` takes a DIR.
pub fn agent_kind(agent: &str) -> anyhow::Result<(&str, Option<&Path>)> {
    match agent.split_once('@') {
        Some(("prefect-k8s", dir)) => Ok(("prefect-k8s", Some(Path::new(dir)))),
        Some((kind, _)) => bail!("{kind}@DIR: only prefect-k8s runs binaries from a directory"),
        None => Ok((agent, None)),
    }
}

/// Starts one poller (with `poller_args` besides the shape's), `shape.dispatchers`
/// dispatchers and one reporter for `pool`.
pub fn start_ours(
    endpoints: &Endpoints,
    pool: &str,
    shape: Shape<'_>,
    poller_args: &[String],
) -> anyhow::Result<Running> {
    let [poller, dispatcher, reporter] = our_binaries(shape.binaries)?;
    let concurrency = shape.concurrency.to_string();
    let poll = shape
        .poll_interval_seconds
        .map(|seconds| vec!["--poll-interval".to_owned(), seconds.to_string()]);
    let mut poller_flags = poll.unwrap_or_default();
    poller_flags.extend(poller_args.iter().cloned());
    let mut specs = vec![("poller".to_owned(), poller, poller_flags)];
    for replica in 1..=shape.dispatchers {
        let name = format!("dispatcher-{replica}");
        let args = vec![
            "--concurrency".to_owned(),
            concurrency.clone(),
            "--name".to_owned(),
            format!("bench-{name}"),
        ];
        specs.push((name, dispatcher.clone(), args));
    }
    specs.push(("reporter".to_owned(), reporter, Vec::new()));
    let mut processes = Vec::new();
    for (name, program, mut args) in specs {
        args.extend(
            [
                "--metrics-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
            ]
            .map(String::from),
        );
        let child = Command::new(&program)
            .args(&args)
            .env("PREFECT_API_URL", &endpoints.prefect_api_url)
            .env("NATS_URL", &endpoints.nats_url)
            .env("KUBECONFIG", &endpoints.kubeconfig)
            .env("PREFECT_K8S_WORK_POOL", pool)
            .envs(shape.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log_file(&endpoints.logs, &name)?)
            .stderr(log_file(&endpoints.logs, &name)?)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        processes.push((name, child));
    }
    Ok(Running { processes })
}

/// Starts the Python Kubernetes worker (prefect-kubernetes 0.8.0) for
/// `pool`, polling every `poll_interval_seconds` (`None`: its default).
pub fn start_python(
    server: &PrefectServer,
    endpoints: &Endpoints,
    pool: &str,
    poll_interval_seconds: Option<f64>,
) -> anyhow::Result<Running> {
    let home = endpoints.logs.join(format!("python-home-{pool}"));
    std::fs::create_dir_all(&home)?;
    let mut command = Command::new(server.prefect_cli());
    if let Some(seconds) = poll_interval_seconds {
        command.env("PREFECT_WORKER_QUERY_SECONDS", seconds.to_string());
    }
    let child = command
        .args(["worker", "start", "--pool", pool, "--type", "kubernetes"])
        .envs(server.env())
        .env("PREFECT_HOME", &home)
        .env("KUBECONFIG", &endpoints.kubeconfig)
        .stdin(Stdio::null())
        .stdout(log_file(&endpoints.logs, "python-worker")?)
        .stderr(log_file(&endpoints.logs, "python-worker")?)
        .spawn()
        .context("start the Python Prefect worker")?;
    Ok(Running {
        processes: vec![("python-worker".to_owned(), child)],
    })
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?)
}

/// The bare claim: `set_state PENDING` for every run, `in_flight` at once,
/// and with `record_pid` the `infrastructure_pid` update every agent makes
/// after it (the Python worker too); nothing else. Returns how many claims
/// the server accepted.
pub async fn bare_claims(
    prefect: &PrefectClient,
    runs: &[Uuid],
    in_flight: usize,
    record_pid: bool,
) -> anyhow::Result<usize> {
    let results: Vec<_> = futures::stream::iter(runs)
        .map(|run| async move {
            let claim = StateCreate::pending_claim(Uuid::new_v4());
            let claimed = prefect.set_flow_run_state(*run, &claim, false).await?;
            if record_pid {
                let pid = format!("default:bench-{run}");
                prefect
                    .update_flow_run_infrastructure_pid(*run, &pid)
                    .await?;
            }
            anyhow::Ok(claimed.new_state_written)
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut accepted = 0;
    for result in results {
        if result? {
            accepted += 1;
        }
    }
    Ok(accepted)
}
