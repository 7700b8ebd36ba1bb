//! The real stack for the dispatcher's acceptance tests: a nats-server of the
//! test's own, the Prefect server shared by the tests of this binary (each
//! test uses its own work pool), and a Kubernetes API emulator. The poller and
//! dispatchers run in-process through their libraries, or as child processes
//! of the real binaries where a test must SIGKILL one.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatcher::{DispatchStats, DispatcherConfig};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use poller::PollerConfig;
use prefect_client::{
    ClientConfig, Deployment, DeploymentCreate, DeploymentFlowRunCreate, FlowRun, PrefectClient,
};
use serde_json::Value;
use test_stack::nats::NatsServer;
use test_stack::prefect::{unique_name, PrefectServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything a test waits for; tests assert what happens,
/// not how fast.
pub const PATIENCE: Duration = Duration::from_secs(180);

pub struct Stack {
    pub nats: NatsServer,
    pub prefect_server: &'static PrefectServer,
    pub emulator: kube_emulator::Emulator,
    pub prefect: PrefectClient,
    pub kube: kube::Client,
    pub pool: String,
    services: Vec<(CancellationToken, JoinHandle<()>)>,
}

impl Stack {
    pub async fn start(runtime: kube_emulator::RuntimeKind) -> Stack {
        Stack::start_with_emulator(kube_emulator::EmulatorConfig {
            runtime,
            ..kube_emulator::EmulatorConfig::fast()
        })
        .await
    }

    /// With an emulator of this configuration (e.g. a node autoscaler).
    pub async fn start_with_emulator(emulator: kube_emulator::EmulatorConfig) -> Stack {
        service_runtime::telemetry::init();
        let nats = NatsServer::start();
        let prefect_server = PrefectServer::shared();
        let emulator = kube_emulator::Emulator::start(emulator)
            .await
            .expect("start the Kubernetes API emulator");
        // The test's own set-up calls (creating hundreds of runs while
        // services poll a SQLite server on a loaded machine) get a longer
        // retry budget than the services' default: "database is locked"
        // answers (503) are expected and must not fail the set-up. 30 retries
        // of at most 5 s ride out about two minutes of them (12 did not, once,
        // in a full test run). The services started in this process keep the
        // 12 they always had here ([`Stack::services_prefect`]).
        let patient = prefect_client::RetryPolicy {
            max_retries: 30,
            max_delay: Duration::from_secs(5),
            ..Default::default()
        };
        let prefect = PrefectClient::new(
            ClientConfig::new(&prefect_server.api_url())
                .unwrap()
                .with_retry(patient),
        )
        .unwrap();
        let kube = emulator.client().expect("a client for the emulator");
        Stack {
            nats,
            prefect_server,
            emulator,
            prefect,
            kube,
            pool: unique_name("pool"),
            services: Vec::new(),
        }
    }

    pub fn poller_config(&self) -> PollerConfig {
        let mut config = PollerConfig::for_pool(&self.pool);
        config.poll_interval_seconds = 0.5;
        config
    }

    pub fn dispatcher_config(&self) -> DispatcherConfig {
        let mut config = DispatcherConfig::for_pool(&self.pool);
        config.ack_wait_seconds = 10;
        config.job.flow_api_url = Some(self.prefect_server.api_url());
        config
    }

    pub async fn nats_client(&self) -> async_nats::Client {
        service_runtime::nats::connect(
            &service_runtime::nats::NatsOptions::plain(self.nats.url()),
            "test",
        )
        .await
        .expect("connect to the test nats-server")
    }

    /// The Prefect client of the services started in this process: the
    /// test's, with the retry budget they were tuned with (not the set-up's).
    pub fn services_prefect(&self) -> PrefectClient {
        self.prefect.with_retry(prefect_client::RetryPolicy {
            max_retries: 12,
            max_delay: Duration::from_secs(5),
            ..Default::default()
        })
    }

    /// Starts a poller in this process.
    pub async fn spawn_poller(&mut self, config: PollerConfig) {
        let token = CancellationToken::new();
        let (prefect, nats) = (self.services_prefect(), self.nats_client().await);
        let child = token.clone();
        let handle = tokio::spawn(async move {
            poller::Poller::new(config, prefect, nats)
                .run(child)
                .await
                .expect("poller runs");
        });
        self.services.push((token, handle));
    }

    /// Starts a dispatcher replica in this process; returns its counters.
    pub async fn spawn_dispatcher(&mut self, config: DispatcherConfig) -> Arc<DispatchStats> {
        let token = CancellationToken::new();
        let (prefect, kube, nats) = (
            self.services_prefect(),
            self.kube.clone(),
            self.nats_client().await,
        );
        let replica = dispatcher::Dispatcher::new(config, prefect, kube, nats);
        let stats = replica.stats();
        let child = token.clone();
        let handle = tokio::spawn(async move {
            replica.run(child).await.expect("dispatcher runs");
        });
        self.services.push((token, handle));
        stats
    }

    /// The poller must create the pool before deployments can use it.
    pub async fn wait_for_pool(&self) {
        eventually("the work pool exists", || async {
            self.prefect.read_work_pool(&self.pool).await.is_ok()
        })
        .await;
    }

    /// A flow and a deployment in the test's pool with these job variables.
    pub async fn deployment(&self, job_variables: Value) -> Deployment {
        let flow = self
            .prefect
            .create_flow(&unique_name("flow"))
            .await
            .expect("create flow");
        self.prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(self.pool.clone()),
                job_variables: Some(job_variables),
                ..DeploymentCreate::new(unique_name("deployment"), flow.id)
            })
            .await
            .expect("create deployment")
    }

    /// A run of the deployment, due now.
    pub async fn run_of(&self, deployment: &Deployment, job_variables: Option<Value>) -> FlowRun {
        self.prefect
            .create_flow_run_from_deployment(
                deployment.id,
                &DeploymentFlowRunCreate {
                    job_variables,
                    ..Default::default()
                },
            )
            .await
            .expect("create flow run")
    }

    /// `count` runs of the deployment, due now; their ids.
    pub async fn runs_of(&self, deployment: &Deployment, count: usize) -> Vec<uuid::Uuid> {
        let mut runs = Vec::with_capacity(count);
        for _ in 0..count {
            runs.push(self.run_of(deployment, None).await.id);
        }
        runs
    }

    /// Every Job (any namespace) labelled with the run's id.
    pub async fn jobs_of(&self, flow_run_id: uuid::Uuid) -> Vec<Job> {
        let jobs: Api<Job> = Api::all(self.kube.clone());
        jobs.list(&ListParams::default().labels(&format!("prefect.io/flow-run-id={flow_run_id}")))
            .await
            .expect("list jobs")
            .items
    }

    /// Every Job in the emulator labelled as a flow run's.
    pub async fn all_flow_run_jobs(&self) -> Vec<Job> {
        let jobs: Api<Job> = Api::all(self.kube.clone());
        jobs.list(&ListParams::default().labels("prefect.io/flow-run-id"))
            .await
            .expect("list jobs")
            .items
    }

    pub async fn run(&self, id: uuid::Uuid) -> FlowRun {
        self.prefect.read_flow_run(id).await.expect("read flow run")
    }

    /// Starts the real dispatcher binary against this stack, for tests that
    /// must signal a process (SIGKILL, SIGTERM).
    pub fn dispatcher_process(&self, args: &[&str]) -> std::process::Child {
        self.dispatcher_process_with_env(args, &[])
    }

    /// [`Stack::dispatcher_process`] with more environment variables.
    pub fn dispatcher_process_with_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> std::process::Child {
        std::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
            .envs(env.iter().copied())
            .env("PREFECT_API_URL", self.prefect_server.api_url())
            .env("NATS_URL", self.nats.url())
            .env("KUBECONFIG", self.emulator.kubeconfig_path())
            .env("PREFECT_K8S_WORK_POOL", &self.pool)
            .args(args)
            .args([
                "--metrics-addr",
                "127.0.0.1:0",
                "--health-addr",
                &format!("127.0.0.1:{}", test_stack::ports::free_port()),
            ])
            .spawn()
            .expect("start the dispatcher binary")
    }

    /// Stops the in-process services (cancel, then wait).
    pub async fn stop_services(&mut self) {
        for (token, _) in &self.services {
            token.cancel();
        }
        for (_, handle) in self.services.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(60), handle).await;
        }
    }
}

/// Polls `check` until it holds, panicking with `what` after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    test_stack::wait::until(what, PATIENCE, Duration::from_millis(200), check).await
}
