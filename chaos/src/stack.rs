//! The deployed system, as separate processes: the Prefect server on a fresh
//! PostgreSQL database, nats-server with a file store, the Kubernetes API
//! emulator running pods as local processes, the two fault proxies, and the
//! services (one poller, N dispatchers, M reporters) configured as in a
//! deployment but reaching Prefect and Kubernetes through the proxies.
//! Also what the nemesis does to processes: SIGKILL and restart, SIGSTOP
//! and SIGCONT, and a supervisor that restarts a service that died by
//! itself (as a Deployment would) and counts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use test_stack::prefect::{PrefectServer, PrefectServerOptions};

use crate::config::{CampaignConfig, DatabaseChoice};
use crate::prefect_proxy::PrefectProxy;
use crate::process::{log_tail, Keeper, Managed, Proc, ProcessError, ProcessSpec};
use crate::tcp_proxy::TcpProxy;
use test_stack::postgres::Database;

/// The system could not be brought up (or a part could not be restarted).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("{0}")]
    Missing(String),
    #[error("{what} did not become ready: {detail}")]
    NotReady { what: String, detail: String },
    #[error("{0}")]
    Database(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let context = context.into();
    move |source| StackError::Io { context, source }
}

/// The programs a campaign runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub poller: PathBuf,
    pub dispatcher: PathBuf,
    pub reporter: PathBuf,
    pub emulator: PathBuf,
    pub fake_flow: PathBuf,
    pub nats_server: PathBuf,
}

impl Binaries {
    /// The services beside the campaign binary (or in `--bin-dir`).
    pub fn locate(config: &CampaignConfig) -> Result<Binaries, StackError> {
        let dir = match &config.bin_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_exe()
                .map_err(io_error("locating the campaign binary"))?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        // Absolute: pods run the fake flow from their own working directory.
        let dir = std::path::absolute(&dir).map_err(io_error("resolving --bin-dir"))?;
        let find = |name: &str| {
            let path = dir.join(name);
            path.is_file().then_some(path).ok_or_else(|| {
                StackError::Missing(format!(
                    "{name} not found in {}: build it first (cargo build -p poller -p dispatcher -p reporter -p kube-emulator -p chaos)",
                    dir.display()
                ))
            })
        };
        let nats_server = config.nats_server.clone();
        if !nats_server.is_file() {
            return Err(StackError::Missing(format!(
                "{} not found (install the Debian package nats-server or set NATS_SERVER_BIN)",
                nats_server.display()
            )));
        }
        Ok(Binaries {
            poller: find("poller")?,
            dispatcher: find("dispatcher")?,
            reporter: find("reporter")?,
            emulator: find("kube-emulator")?,
            fake_flow: find("fake-flow")?,
            nats_server,
        })
    }
}

/// Which service a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Poller,
    Dispatcher,
    Reporter,
}

/// One service replica.
#[derive(Clone)]
pub struct Service {
    pub role: Role,
    pub name: String,
    pub proc: Proc,
}

/// The running system.
pub struct Stack {
    pub dir: PathBuf,
    pub pool: String,
    pub binaries: Binaries,
    /// "PostgreSQL (database …)" or "SQLite (PostgreSQL unavailable)".
    pub database_label: String,
    pub prefect: PrefectServer,
    pub prefect_proxy: PrefectProxy,
    pub nats: Proc,
    pub nats_url: String,
    pub emulator: Proc,
    /// The emulator itself (admin endpoints, the checker's watches).
    pub emulator_url: String,
    pub emulator_kubeconfig: PathBuf,
    pub kube_proxy: TcpProxy,
    /// The kubeconfig the services use: the emulator through the TCP proxy.
    pub services_kubeconfig: PathBuf,
    pub services: Vec<Service>,
    database: Option<Database>,
    keeper: Keeper,
}

impl Stack {
    /// Starts everything but the services.
    pub async fn start(config: &CampaignConfig, dir: &Path) -> Result<Stack, StackError> {
        let binaries = Binaries::locate(config)?;
        for sub in ["logs", "pods", "nats"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_error("creating the work dir"))?;
        }
        let keeper = Keeper::start()?;
        let (database, database_label) = choose_database(config)?;
        let prefect = start_prefect(database.as_ref()).await?;
        let prefect_upstream = SocketAddr::from(([127, 0, 0, 1], prefect.port()));
        let prefect_proxy = PrefectProxy::start(prefect_upstream)
            .await
            .map_err(io_error("starting the Prefect fault proxy"))?;
        let (nats, nats_url) = start_nats(&binaries, dir, keeper.group()).await?;
        let kube = start_kubernetes(&binaries, dir, keeper.group()).await?;
        Ok(Stack {
            dir: dir.to_owned(),
            pool: format!("chaos-{}", config.seed),
            binaries,
            database_label,
            prefect,
            prefect_proxy,
            nats,
            nats_url,
            emulator: kube.emulator,
            emulator_url: kube.url,
            emulator_kubeconfig: kube.kubeconfig,
            kube_proxy: kube.proxy,
            services_kubeconfig: kube.services_kubeconfig,
            services: Vec::new(),
            database,
            keeper,
        })
    }

    /// The Prefect API straight to the server (workload, checker, pods).
    pub fn prefect_url(&self) -> String {
        self.prefect.api_url()
    }

    /// Starts the poller, the dispatchers and the reporters.
    pub fn start_services(&mut self, config: &CampaignConfig) -> Result<(), StackError> {
        let mut specs = vec![(Role::Poller, self.poller_spec())];
        for index in 1..=config.dispatchers {
            specs.push((Role::Dispatcher, self.dispatcher_spec(config, index)));
        }
        for index in 1..=config.reporters {
            specs.push((Role::Reporter, self.reporter_spec(config, index)));
        }
        for (role, spec) in specs {
            let name = spec.name.clone();
            let mut managed = Managed::new(spec, self.keeper.group());
            managed.spawn()?;
            self.services.push(Service {
                role,
                name,
                proc: managed.shared(),
            });
        }
        Ok(())
    }

    fn service_spec(&self, name: &str, program: &Path, args: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            name: name.to_owned(),
            program: program.to_owned(),
            args,
            env: vec![
                ("PREFECT_API_URL".into(), self.prefect_proxy.api_url()),
                ("NATS_URL".into(), self.nats_url.clone()),
                (
                    "KUBECONFIG".into(),
                    self.services_kubeconfig.display().to_string(),
                ),
                ("PREFECT_K8S_WORK_POOL".into(), self.pool.clone()),
                ("RUST_LOG".into(), "info".into()),
            ],
            log: self.dir.join("logs").join(format!("{name}.log")),
        }
    }

    fn poller_spec(&self) -> ProcessSpec {
        let args = strings(&[
            "--name",
            "chaos-poller",
            "--poll-interval",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
        ]);
        self.service_spec("poller", &self.binaries.poller, args)
    }

    fn dispatcher_spec(&self, config: &CampaignConfig, index: usize) -> ProcessSpec {
        let name = format!("dispatcher-{index}");
        let mut args = strings(&[
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--flow-api-url",
        ]);
        args.push(self.prefect_url());
        args.extend(["--name".into(), format!("chaos-{name}")]);
        args.extend([
            "--ack-wait-seconds".into(),
            config.ack_wait_seconds.to_string(),
        ]);
        self.service_spec(&name, &self.binaries.dispatcher, args)
    }

    fn reporter_spec(&self, config: &CampaignConfig, index: usize) -> ProcessSpec {
        let name = format!("reporter-{index}");
        let mut args = strings(&[
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            "127.0.0.1:0",
            "--lease-duration-seconds",
            "6",
            "--cancel-poll-seconds",
            "2",
            "--reconcile-seconds",
            "10",
        ]);
        args.extend([
            "--image-error-grace-seconds".into(),
            config.image_error_grace_seconds.to_string(),
        ]);
        self.service_spec(&name, &self.binaries.reporter, args)
    }

    /// SIGKILLs nats-server; it stays down until [`Stack::restart_nats`].
    pub async fn kill_nats(&self) {
        self.nats.lock().await.sigkill().await;
    }

    /// Starts nats-server again on the same port and store; waits until it is ready.
    pub async fn restart_nats(&self) -> Result<(), StackError> {
        let mut nats = self.nats.lock().await;
        let ready_before = ready_lines(nats.log_path());
        nats.spawn()?;
        wait_nats_ready(&nats, ready_before).await
    }

    /// Stops every process, newest first, and drops the campaign's database.
    pub async fn shutdown(self) {
        for service in self.services.iter().rev() {
            service
                .proc
                .lock()
                .await
                .terminate(Duration::from_secs(5))
                .await;
        }
        self.emulator
            .lock()
            .await
            .terminate(Duration::from_secs(10))
            .await;
        self.nats
            .lock()
            .await
            .terminate(Duration::from_secs(5))
            .await;
        let Stack {
            prefect,
            database,
            keeper,
            ..
        } = self;
        let _ = tokio::task::spawn_blocking(move || drop(prefect)).await;
        drop(database);
        drop(keeper);
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn choose_database(config: &CampaignConfig) -> Result<(Option<Database>, String), StackError> {
    let name = format!("chaos_{}_{}", config.seed, std::process::id());
    let available = Database::postgres_available();
    match (config.database, available) {
        (DatabaseChoice::Sqlite, _) => Ok((None, "SQLite (--database sqlite)".into())),
        (DatabaseChoice::Auto, false) => Ok((
            None,
            "SQLite (PostgreSQL at 127.0.0.1:5432 did not answer)".into(),
        )),
        (DatabaseChoice::Postgres, false) => Err(StackError::Database(
            "PostgreSQL at 127.0.0.1:5432 (user postgres) does not answer: start it \
             (scripts/install-deps.sh does) or pass --database auto|sqlite"
                .into(),
        )),
        (_, true) => {
            let database = Database::create(&name).map_err(StackError::Database)?;
            Ok((Some(database), format!("PostgreSQL (database {name})")))
        }
    }
}

async fn start_prefect(database: Option<&Database>) -> Result<PrefectServer, StackError> {
    let venv_prefect = test_stack::prefect::venv_dir().join("bin").join("prefect");
    if !venv_prefect.is_file() {
        return Err(StackError::Missing(format!(
            "{} not found: create the project virtualenv (scripts/install-deps.sh) or set PREFECT_K8S_VENV",
            venv_prefect.display()
        )));
    }
    let mut options = PrefectServerOptions {
        startup_timeout: Some(Duration::from_secs(180)),
        ..PrefectServerOptions::default()
    };
    if let Some(database) = database {
        options.extra_env.push((
            "PREFECT_API_DATABASE_CONNECTION_URL".into(),
            database.connection_url(),
        ));
    }
    let started = tokio::task::spawn_blocking(move || PrefectServer::start_with(options)).await;
    started.map_err(|join| StackError::NotReady {
        what: "the Prefect server".into(),
        detail: panic_text(join),
    })
}

fn panic_text(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into()),
        Err(join) => join.to_string(),
    }
}

async fn start_nats(
    binaries: &Binaries,
    dir: &Path,
    group: Option<i32>,
) -> Result<(Proc, String), StackError> {
    let port = test_stack::ports::free_port();
    let spec = ProcessSpec {
        name: "nats-server".into(),
        program: binaries.nats_server.clone(),
        args: vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.join("nats").display().to_string(),
        ],
        env: Vec::new(),
        log: dir.join("logs").join("nats-server.log"),
    };
    let mut nats = Managed::new(spec, group);
    nats.spawn()?;
    wait_nats_ready(&nats, 0).await?;
    Ok((nats.shared(), format!("nats://127.0.0.1:{port}")))
}

fn ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.matches("Server is ready").count())
        .unwrap_or(0)
}

async fn wait_nats_ready(nats: &Managed, ready_before: usize) -> Result<(), StackError> {
    for _ in 0..200 {
        if ready_lines(nats.log_path()) > ready_before {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StackError::NotReady {
        what: "nats-server".into(),
        detail: nats.log_tail(20),
    })
}

/// The emulator, the TCP proxy in front of it and the services' kubeconfig.
struct Kubernetes {
    emulator: Proc,
    url: String,
    kubeconfig: PathBuf,
    proxy: TcpProxy,
    services_kubeconfig: PathBuf,
}

async fn start_kubernetes(
    binaries: &Binaries,
    dir: &Path,
    group: Option<i32>,
) -> Result<Kubernetes, StackError> {
    let (emulator, url, kubeconfig) = start_emulator(binaries, dir, group).await?;
    let proxy = TcpProxy::start(socket_of(&url)?)
        .await
        .map_err(io_error("starting the Kubernetes TCP proxy"))?;
    let services_kubeconfig = dir.join("services.kubeconfig");
    write_proxied_kubeconfig(&kubeconfig, &url, &proxy, &services_kubeconfig)?;
    Ok(Kubernetes {
        emulator,
        url,
        kubeconfig,
        proxy,
        services_kubeconfig,
    })
}

async fn start_emulator(
    binaries: &Binaries,
    dir: &Path,
    group: Option<i32>,
) -> Result<(Proc, String, PathBuf), StackError> {
    let kubeconfig = dir.join("emulator.kubeconfig");
    let args = vec![
        "serve".into(),
        "--port".into(),
        "0".into(),
        "--runtime".into(),
        "process".into(),
        "--kubelet-stage-delay-ms".into(),
        "200".into(),
        "--job-backoff-base-ms".into(),
        "2000".into(),
        "--process-workdir".into(),
        dir.join("pods").display().to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ];
    let spec = ProcessSpec {
        name: "kube-emulator".into(),
        program: binaries.emulator.clone(),
        args,
        env: vec![("RUST_LOG".into(), "warn".into())],
        log: dir.join("logs").join("kube-emulator.log"),
    };
    let mut emulator = Managed::new(spec, group);
    emulator.spawn()?;
    let url = wait_for_kubeconfig(&kubeconfig, &emulator).await?;
    Ok((emulator.shared(), url, kubeconfig))
}

/// Waits for the emulator's kubeconfig; returns its server URL.
async fn wait_for_kubeconfig(path: &Path, emulator: &Managed) -> Result<String, StackError> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(url) = server_url(&text) {
            return Ok(url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(StackError::NotReady {
        what: "the Kubernetes API emulator".into(),
        detail: log_tail(emulator.log_path(), 20),
    })
}

fn server_url(kubeconfig: &str) -> Option<String> {
    kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server:"))
        .map(|url| url.trim().trim_matches('"').to_owned())
        .filter(|url| url.starts_with("http"))
}

fn socket_of(url: &str) -> Result<SocketAddr, StackError> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|_| StackError::Missing(format!("the emulator URL {url} is not http://host:port")))
}

fn write_proxied_kubeconfig(
    original: &Path,
    emulator_url: &str,
    proxy: &TcpProxy,
    target: &Path,
) -> Result<(), StackError> {
    let text = std::fs::read_to_string(original).map_err(io_error("reading the kubeconfig"))?;
    let proxied = text.replace(emulator_url, &format!("http://{}", proxy.addr()));
    std::fs::write(target, proxied).map_err(io_error("writing the services' kubeconfig"))
}
