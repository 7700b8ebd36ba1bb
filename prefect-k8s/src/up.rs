//! `prefect-k8s up`: the local stack, started as child processes whose logs go
//! to `.stack/logs/`, then a demo flow run followed to its final state.
//!
//! Everything listens on loopback. Ports are picked free at start unless
//! given. Ctrl-C (or SIGTERM) stops every child. NATS admits only the poller
//! and the dispatchers, each as its own user with the permissions of
//! `service_runtime::nats_auth`; the passwords are new at every start and live
//! only in the environment of nats-server and of the service that uses each.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use prefect_client::{ClientConfig, PrefectClient, StateType};
use tokio::process::{Child, Command};

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
}

/// Children to stop on the way out, in reverse start order.
struct Stack {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Stack {
    async fn spawn(&mut self, name: &str, command: &mut Command) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.logs.join(format!("{name}.log")))
            .with_context(|| format!("creating the log of {name}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        println!(
            "  started {name:<14} (log: {})",
            self.logs.join(format!("{name}.log")).display()
        );
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// SIGTERM to each child, newest first; SIGKILL after 10 s.
    async fn stop(&mut self) {
        while let Some((name, mut child)) = self.children.pop() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            println!("  stopped {name}");
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
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

    let mut stack = Stack {
        children: Vec::new(),
        logs: logs.clone(),
    };
    let result = bring_up_and_demo(&args, &mut stack, &state, &venv, &path_env).await;
    match &result {
        Ok(()) if !args.exit_after_demo => {
            println!("\nThe stack is up. Press Ctrl-C to stop it.");
            service_runtime::shutdown::signal().await;
        }
        Ok(()) => {}
        Err(error) => eprintln!("\nprefect-k8s up failed: {error:#}"),
    }
    stack.stop().await;
    result
}

async fn bring_up_and_demo(
    args: &UpArgs,
    stack: &mut Stack,
    state: &Path,
    venv: &Path,
    path_env: &str,
) -> anyhow::Result<()> {
    println!("Starting the prefect-k8s stack in {}", state.display());

    let nats = start_nats(stack, state, &args.work_pool).await?;
    let nats_url = nats.url.clone();

    let prefect_port = free_port()?;
    let prefect_home = state.join("prefect-home");
    std::fs::create_dir_all(&prefect_home)?;
    stack
        .spawn(
            "prefect-server",
            Command::new(venv.join("bin/prefect"))
                .args([
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &prefect_port.to_string(),
                ])
                .env("PREFECT_HOME", &prefect_home)
                .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
                .env("PREFECT_UI_ENABLED", "false")
                .env("PATH", path_env),
        )
        .await?;
    let api_url = format!("http://127.0.0.1:{prefect_port}/api");
    let prefect = PrefectClient::new(ClientConfig::new(&api_url)?)?;
    wait_for("the Prefect server", Duration::from_secs(120), || async {
        prefect.health().await.is_ok()
    })
    .await?;

    let kube_port = free_port()?;
    let kubeconfig = state.join("kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    stack
        .spawn(
            "kube-emulator",
            Command::new(sibling_binary("kube-emulator")?)
                .args([
                    "serve",
                    "--port",
                    &kube_port.to_string(),
                    "--runtime",
                    "process",
                    "--kubeconfig",
                ])
                .arg(&kubeconfig)
                .env("PATH", path_env),
        )
        .await?;
    wait_for(
        "the Kubernetes API emulator",
        Duration::from_secs(30),
        || async { kubeconfig.exists() },
    )
    .await?;

    let common = |command: &mut Command| {
        command
            .env("PREFECT_API_URL", &api_url)
            .env("NATS_URL", &nats_url)
            .env("KUBECONFIG", &kubeconfig)
            .env("PREFECT_K8S_WORK_POOL", &args.work_pool)
            // Replicas on one host: each its own metrics port.
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("PATH", path_env);
    };
    let mut poller = Command::new(sibling_binary("poller")?);
    common(&mut poller);
    nats.log_in(&mut poller, &nats.poller);
    poller.args([
        "--poll-interval",
        "2",
        "--health-addr",
        &format!("127.0.0.1:{}", free_port()?),
    ]);
    stack.spawn("poller", &mut poller).await?;
    for replica in 1..=2 {
        let mut dispatcher = Command::new(sibling_binary("dispatcher")?);
        common(&mut dispatcher);
        nats.log_in(&mut dispatcher, &nats.dispatcher);
        dispatcher.args(["--name", &format!("prefect-k8s-dispatcher-{replica}")]);
        dispatcher.args(["--health-addr", &format!("127.0.0.1:{}", free_port()?)]);
        stack
            .spawn(&format!("dispatcher-{replica}"), &mut dispatcher)
            .await?;
    }
    let mut reporter = Command::new(sibling_binary("reporter")?);
    common(&mut reporter);
    reporter.args(["--health-addr", &format!("127.0.0.1:{}", free_port()?)]);
    stack.spawn("reporter", &mut reporter).await?;

    println!(
        "\nPrefect API: {api_url}\nNATS:        {nats_url} (users {} and {}; no anonymous access)\nKUBECONFIG:  {}",
        nats.poller.0,
        nats.dispatcher.0,
        kubeconfig.display()
    );
    run_demo(args, &prefect, state).await
}

/// The local nats-server and how each service logs in to it.
struct LocalNats {
    url: String,
    poller: (String, String),
    dispatcher: (String, String),
}

impl LocalNats {
    /// Gives a service its user and password (in its environment only).
    fn log_in(&self, command: &mut Command, (user, password): &(String, String)) {
        command
            .env("NATS_USER", user)
            .env("NATS_PASSWORD", password);
    }
}

/// Starts nats-server with JetStream and the agent's users for `work_pool`
/// (`auth.conf` in the state directory names them; their fresh passwords
/// are passed in the server's environment).
async fn start_nats(stack: &mut Stack, state: &Path, work_pool: &str) -> anyhow::Result<LocalNats> {
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
    stack
        .spawn(
            "nats-server",
            Command::new(nats_binary())
                .arg("-c")
                .arg(&config)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(state.join("nats"))
                .env(&poller.password_env, &poller_password)
                .env(&dispatcher.password_env, &dispatcher_password),
        )
        .await?;
    Ok(LocalNats {
        url: format!("nats://127.0.0.1:{port}"),
        poller: (poller.name, poller_password),
        dispatcher: (dispatcher.name, dispatcher_password),
    })
}

/// Deploys `demo/flows/hello.py` to the pool and follows one run of it.
async fn run_demo(args: &UpArgs, prefect: &PrefectClient, state: &Path) -> anyhow::Result<()> {
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
            println!("  {}  {shown}", chrono::Utc::now().format("%H:%M:%S"));
            last = shown;
        }
        if let Some(state) = state {
            if state.state_type.is_final() {
                if state.state_type == StateType::Completed {
                    println!("\nDemo flow run reached Completed.");
                    return Ok(());
                }
                bail!("the demo run ended {}", state.display_name());
            }
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
