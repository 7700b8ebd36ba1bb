//! `prefect-k8s up`: the local stack for a person at a terminal. Its parts run
//! as child processes whose logs go to `.stack/logs/` (without colour codes):
//! nats-server, the Prefect server with its UI (port 4200 when free), the
//! Kubernetes API emulator, the poller, two dispatchers and the reporter. Then
//! a demo flow run is followed to its final state, under a one-line live
//! status of the pool's runs ([`crate::status`]).
//!
//! Every child is watched ([`crate::children`]): one that exits is reported at
//! once with the end of its log, and `up` stops. Everything listens on
//! loopback. Ctrl-C (or SIGTERM) stops every child. NATS admits only the
//! poller and the dispatchers, each as its own user with the permissions of
//! `service_runtime::nats_auth`; the passwords are new at every start and live
//! only in the environment of nats-server and of the service that uses each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use prefect_client::{ClientConfig, FlowRun, PrefectClient, StateType};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::children::{ChildExit, Children};
use crate::status::{RunCounts, StatusLine};

/// The Prefect UI's usual port, used when free.
const UI_PORT: u16 = 4200;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where state, logs and the kubeconfig go.
    #[arg(long, default_value = ".stack")]
    state_dir: PathBuf,
    /// The project virtualenv with prefect 3.9.1.
    #[arg(long, env = "PREFECT_K8S_VENV", default_value = ".venv")]
    venv: PathBuf,
    /// The work pool the demo uses.
    #[arg(long, default_value = "demo-kubernetes")]
    work_pool: String,
    /// Stop everything once the demo run is final, instead of staying up.
    #[arg(long)]
    exit_after_demo: bool,
    /// Seconds to wait for the demo run to finish.
    #[arg(long, default_value_t = 300)]
    demo_timeout: u64,
    /// Port of the Prefect server and its UI, taken when free (else any free port).
    #[arg(long, default_value_t = UI_PORT)]
    ui_port: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// `port` when nothing listens on it, else a free one.
fn port_or_free(port: u16) -> anyhow::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(_) => Ok(port),
        Err(_) => free_port(),
    }
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the workspace first (cargo build)",
            path.display()
        );
    }
    Ok(path)
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let state = absolute(&args.state_dir)?;
    let venv = absolute(&args.venv)?;
    let logs = state.join("logs");
    std::fs::create_dir_all(&logs)?;
    let prefect_bin = venv.join("bin/prefect");
    if !prefect_bin.exists() {
        bail!(
            "{} not found: run scripts/install-deps.sh first",
            prefect_bin.display()
        );
    }
    let path_env = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (mut children, mut exits) = Children::new(logs);
    let mut status = StatusLine::new();
    let up = bring_up_and_demo(&args, &mut children, &mut status, &state, &venv, &path_env);
    let result = match watching(&mut exits, up).await {
        Ok(prefect) if !args.exit_after_demo => {
            status.println("\nThe stack is up. Press Ctrl-C to stop it.");
            watching(&mut exits, stay_up(&prefect, &args.work_pool, &mut status)).await
        }
        other => other.map(|_| ()),
    };
    status.finish();
    if let Err(error) = &result {
        eprintln!("\nprefect-k8s up failed: {error:#}");
    }
    children.stop().await;
    result
}

/// Runs `work` unless a child exits first, which is reported at once.
async fn watching<T>(
    exits: &mut mpsc::UnboundedReceiver<ChildExit>,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        Some(exit) = exits.recv() => {
            println!("\n{}", exit.report());
            bail!("{} exited; stopping the stack", exit.name)
        }
    }
}

/// Shows the live status until Ctrl-C or SIGTERM.
async fn stay_up(
    prefect: &PrefectClient,
    pool: &str,
    status: &mut StatusLine,
) -> anyhow::Result<()> {
    let signal = service_runtime::shutdown::signal();
    tokio::pin!(signal);
    loop {
        refresh(prefect, pool, status).await;
        tokio::select! {
            _ = &mut signal => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Reads the pool's counts and shows them (a failed read keeps the last line).
async fn refresh(prefect: &PrefectClient, pool: &str, status: &mut StatusLine) {
    if let Ok(counts) = RunCounts::read(prefect, pool).await {
        status.show(&counts.line());
    }
}

/// Where the parts of the stack listen.
struct Endpoints {
    nats: LocalNats,
    api_url: String,
    ui_url: String,
    kubeconfig: PathBuf,
}

async fn bring_up_and_demo(
    args: &UpArgs,
    children: &mut Children,
    status: &mut StatusLine,
    state: &Path,
    venv: &Path,
    path_env: &str,
) -> anyhow::Result<PrefectClient> {
    println!("Starting the prefect-k8s stack in {}", state.display());
    let nats = start_nats(children, state, &args.work_pool)?;
    let (api_url, ui_url) = start_prefect(children, args.ui_port, state, venv, path_env)?;
    let prefect = PrefectClient::new(ClientConfig::new(&api_url)?)?;
    wait_for("the Prefect server", Duration::from_secs(120), || async {
        prefect.health().await.is_ok()
    })
    .await?;
    let kubeconfig = start_emulator(children, state, path_env).await?;
    let endpoints = Endpoints {
        nats,
        api_url,
        ui_url,
        kubeconfig,
    };
    start_services(args, children, &endpoints, path_env)?;
    println!(
        "\nPrefect UI:  {}\nPrefect API: {}\nNATS:        {} (users {} and {}; no anonymous access)\nKUBECONFIG:  {}",
        endpoints.ui_url,
        endpoints.api_url,
        endpoints.nats.url,
        endpoints.nats.poller.0,
        endpoints.nats.dispatcher.0,
        endpoints.kubeconfig.display()
    );
    run_demo(args, &prefect, state, status).await?;
    Ok(prefect)
}

/// The local nats-server and how each service logs in to it.
struct LocalNats {
    url: String,
    poller: (String, String),
    dispatcher: (String, String),
}

impl LocalNats {
    /// Gives a service its user and password (in its environment only).
    fn log_in(command: &mut Command, (user, password): &(String, String)) {
        command
            .env("NATS_USER", user)
            .env("NATS_PASSWORD", password);
    }
}

/// Starts nats-server with JetStream and the agent's users for `work_pool`
/// (`nats-auth.conf` in the state directory names them; their fresh
/// passwords are passed in the server's environment).
fn start_nats(children: &mut Children, state: &Path, work_pool: &str) -> anyhow::Result<LocalNats> {
    use service_runtime::nats_auth::{self, NatsUser};
    let port = free_port()?;
    let (poller, dispatcher) = (NatsUser::poller(work_pool), NatsUser::dispatcher(work_pool));
    let (poller_password, dispatcher_password) =
        (nats_auth::random_password(), nats_auth::random_password());
    let config = state.join("nats-auth.conf");
    std::fs::write(
        &config,
        nats_auth::authorization(&[poller.clone(), dispatcher.clone()]),
    )
    .context("writing the NATS users")?;
    children.spawn(
        "nats-server",
        Command::new(nats_binary())
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(state.join("nats"))
            .env(&poller.password_env, &poller_password)
            .env(&dispatcher.password_env, &dispatcher_password),
    )?;
    Ok(LocalNats {
        url: format!("nats://127.0.0.1:{port}"),
        poller: (poller.name, poller_password),
        dispatcher: (dispatcher.name, dispatcher_password),
    })
}

/// The Prefect server with its UI (on `port` when free); its API and UI URLs.
fn start_prefect(
    children: &mut Children,
    port: u16,
    state: &Path,
    venv: &Path,
    path_env: &str,
) -> anyhow::Result<(String, String)> {
    let port = port_or_free(port)?;
    let home = state.join("prefect-home");
    std::fs::create_dir_all(&home)?;
    let ui_url = format!("http://127.0.0.1:{port}");
    let api_url = format!("{ui_url}/api");
    children.spawn(
        "prefect-server",
        Command::new(venv.join("bin/prefect"))
            .args(["server", "start", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .env("PREFECT_HOME", &home)
            .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            .env("PREFECT_UI_ENABLED", "true")
            .env("PREFECT_UI_API_URL", &api_url)
            .env("PREFECT_LOGGING_COLORS", "false")
            .env("PATH", path_env),
    )?;
    Ok((api_url, ui_url))
}

/// The Kubernetes API emulator (pods as local processes); its kubeconfig.
async fn start_emulator(
    children: &mut Children,
    state: &Path,
    path_env: &str,
) -> anyhow::Result<PathBuf> {
    let port = free_port()?;
    let kubeconfig = state.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    children.spawn(
        "kube-emulator",
        Command::new(sibling_binary("kube-emulator")?)
            .args(["serve", "--port", &port.to_string(), "--runtime", "process"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("PATH", path_env),
    )?;
    wait_for(
        "the Kubernetes API emulator",
        Duration::from_secs(30),
        || async { kubeconfig.exists() },
    )
    .await?;
    Ok(kubeconfig)
}

/// The poller, two dispatchers and the reporter.
fn start_services(
    args: &UpArgs,
    children: &mut Children,
    endpoints: &Endpoints,
    path_env: &str,
) -> anyhow::Result<()> {
    let service = |binary: &str| -> anyhow::Result<Command> {
        let mut command = Command::new(sibling_binary(binary)?);
        command
            .env("PREFECT_API_URL", &endpoints.api_url)
            .env("NATS_URL", &endpoints.nats.url)
            .env("KUBECONFIG", &endpoints.kubeconfig)
            .env("PREFECT_K8S_WORK_POOL", &args.work_pool)
            // Replicas on one host: each its own metrics port.
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("PATH", path_env)
            .args(["--health-addr", &format!("127.0.0.1:{}", free_port()?)]);
        Ok(command)
    };
    let mut poller = service("poller")?;
    LocalNats::log_in(&mut poller, &endpoints.nats.poller);
    children.spawn("poller", poller.args(["--poll-interval", "2"]))?;
    for replica in 1..=2 {
        let name = format!("prefect-k8s-dispatcher-{replica}");
        let mut dispatcher = service("dispatcher")?;
        LocalNats::log_in(&mut dispatcher, &endpoints.nats.dispatcher);
        children.spawn(
            &format!("dispatcher-{replica}"),
            dispatcher.args(["--name", &name]),
        )?;
    }
    children.spawn("reporter", &mut service("reporter")?)
}

/// Deploys `demo/flows/hello.py` to the pool and follows one run of it.
async fn run_demo(
    args: &UpArgs,
    prefect: &PrefectClient,
    state: &Path,
    status: &mut StatusLine,
) -> anyhow::Result<()> {
    let demo_dir = absolute(Path::new("demo/flows"))?;
    if !demo_dir.join("hello.py").exists() {
        bail!(
            "{} not found: run prefect-k8s up from the repository root",
            demo_dir.display()
        );
    }
    // The poller creates the pool; wait for it so the deployment can use it.
    wait_for("the work pool", Duration::from_secs(60), || async {
        prefect.read_work_pool(&args.work_pool).await.is_ok()
    })
    .await?;
    let flow = prefect.create_flow("hello").await?;
    let deployment = prefect
        .create_deployment(&prefect_client::DeploymentCreate {
            pull_steps: Some(serde_json::json!([
                {"prefect.deployments.steps.set_working_directory": {"directory": demo_dir}}
            ])),
            entrypoint: Some("hello.py:hello".into()),
            path: Some(demo_dir.display().to_string()),
            job_variables: Some(
                serde_json::json!({"env": {"PREFECT_HOME": state.join("flow-home")}}),
            ),
            work_pool_name: Some(args.work_pool.clone()),
            ..prefect_client::DeploymentCreate::new("demo", flow.id)
        })
        .await?;
    let run = prefect
        .create_flow_run_from_deployment(
            deployment.id,
            &prefect_client::DeploymentFlowRunCreate::default(),
        )
        .await?;
    println!(
        "\nDemo flow run {} ({}) created; following it:",
        run.name, run.id
    );
    follow(args, prefect, &run, status).await
}

/// Prints each state the demo run takes, under the live status, until it is final.
async fn follow(
    args: &UpArgs,
    prefect: &PrefectClient,
    run: &FlowRun,
    status: &mut StatusLine,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.demo_timeout);
    let mut last = String::new();
    loop {
        let current = prefect.read_flow_run(run.id).await?;
        let state = current.state.as_ref();
        let shown = state
            .map(|s| match s.message.as_deref().filter(|m| !m.is_empty()) {
                Some(message) => format!("{}: {message}", s.display_name()),
                None => s.display_name().to_string(),
            })
            .unwrap_or_else(|| "no state".into());
        if shown != last {
            status.println(&format!(
                "  {}  {shown}",
                chrono::Utc::now().format("%H:%M:%S")
            ));
            last = shown;
        }
        refresh(prefect, &args.work_pool, status).await;
        if let Some(state) = state.filter(|state| state.state_type.is_final()) {
            if state.state_type == StateType::Completed {
                status.println("\nDemo flow run reached Completed.");
                return Ok(());
            }
            bail!("the demo run ended {}", state.display_name());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the demo run did not finish within {} s", args.demo_timeout);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if ready().await {
            println!("  {what} is ready");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "{what} was not ready within {} s (see the logs)",
        timeout.as_secs()
    )
}

fn nats_binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_taken_only_when_free() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        assert_ne!(port_or_free(port).unwrap(), port);
        drop(taken);
        assert_eq!(port_or_free(port).unwrap(), port);
    }
}
