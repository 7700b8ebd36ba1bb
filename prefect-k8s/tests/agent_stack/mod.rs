//! The agent as deployed, for black-box tests: the Kubernetes API emulator
//! with RBAC on (the `prefect-k8s install --rbac` objects applied), a real
//! Prefect server and nats-server, and the poller, dispatcher and reporter as
//! their real binaries, each with its ServiceAccount's token, its own health
//! and metrics ports, and its output captured to a file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube_emulator::{AuthorizationMode, Emulator, EmulatorConfig};
use prefect_client::{
    ClientConfig, Deployment, DeploymentCreate, DeploymentFlowRunCreate, FlowRun, PrefectClient,
};
use serde_json::Value;
use test_stack::nats::NatsServer;
use test_stack::prefect::{unique_name, PrefectServer};
use uuid::Uuid;

use crate::manifest_tools::{install, parse_stream};

pub const NAMESPACE: &str = "flows";
pub const PATIENCE: Duration = Duration::from_secs(180);
pub const API_KEY: &str = "pnu_TrustBoundaryKey0123456789";
pub const AUTH_STRING: &str = "admin:Tru5tB0undaryPassw0rd";

/// The real parts and the agent's binaries, RBAC on.
pub struct Stack {
    pub nats: NatsServer,
    pub prefect_server: &'static PrefectServer,
    pub emulator: Emulator,
    pub prefect: PrefectClient,
    pub pool: String,
    pub dir: tempfile::TempDir,
    pub services: Vec<(String, Child)>,
    /// The health and metrics ports of each service started.
    pub ports: HashMap<String, (u16, u16)>,
}

impl Stack {
    pub async fn start() -> Stack {
        build_services();
        let emulator = Emulator::start(EmulatorConfig {
            authorization: AuthorizationMode::Rbac,
            ..EmulatorConfig::fast()
        })
        .await
        .expect("start the emulator");
        let pool = unique_name("trust-pool");
        apply_install_output(&emulator, &pool).await;
        let prefect_server = PrefectServer::shared();
        let prefect =
            PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
        Stack {
            nats: NatsServer::start(),
            prefect_server,
            emulator,
            prefect,
            pool,
            dir: tempfile::tempdir().unwrap(),
            services: Vec::new(),
            ports: HashMap::new(),
        }
    }

    /// Starts a service binary as its ServiceAccount, with the key and the
    /// auth string given through the environment (and `extra`).
    pub fn spawn(&mut self, service: &str, extra: &[(&str, &str)]) {
        let kubeconfig = self.dir.path().join(format!("{service}.kubeconfig"));
        let account = format!("prefect-k8s-{service}");
        self.emulator
            .write_service_account_kubeconfig(&kubeconfig, NAMESPACE, &account)
            .unwrap();
        let log = std::fs::File::create(self.log_path(service)).unwrap();
        let (health, metrics) = (
            test_stack::ports::free_port(),
            test_stack::ports::free_port(),
        );
        self.ports.insert(service.to_string(), (health, metrics));
        let mut command = Command::new(binary(service));
        command
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", &kubeconfig)
            .env("PREFECT_API_URL", self.prefect_server.api_url())
            .env("PREFECT_API_KEY", API_KEY)
            .env("PREFECT_API_AUTH_STRING", AUTH_STRING)
            .env("NATS_URL", self.nats.url())
            .env("PREFECT_K8S_WORK_POOL", &self.pool)
            .env("RUST_LOG", "debug,hyper=info,h2=info,tower=info")
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env("HEALTH_ADDR", format!("127.0.0.1:{health}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().expect("start the service");
        self.services.push((service.to_string(), child));
    }

    pub fn spawn_agent(&mut self, reporter_env: &[(&str, &str)]) {
        self.spawn("poller", &[("PREFECT_WORKER_QUERY_SECONDS", "0.5")]);
        self.spawn(
            "dispatcher",
            &[
                ("NAMESPACE", NAMESPACE),
                ("PREFECT_K8S_API_KEY_SECRET", "prefect-api-key"),
                (
                    "PREFECT_K8S_API_AUTH_STRING_SECRET",
                    "prefect-auth:auth-string",
                ),
            ],
        );
        let mut env = vec![
            ("PREFECT_K8S_REPORTER_NAMESPACE", NAMESPACE),
            ("PREFECT_K8S_LEASE_NAMESPACE", NAMESPACE),
            ("PREFECT_K8S_LEASE_NAME", "prefect-k8s-reporter"),
            ("PREFECT_K8S_CANCEL_POLL_SECONDS", "0.5"),
            ("PREFECT_K8S_RECONCILE_SECONDS", "1"),
        ];
        env.extend_from_slice(reporter_env);
        self.spawn("reporter", &env);
    }

    pub fn log_path(&self, service: &str) -> PathBuf {
        self.dir.path().join(format!("{service}.log"))
    }

    pub fn output_of_every_service(&self) -> String {
        ["poller", "dispatcher", "reporter"]
            .iter()
            .filter_map(|service| std::fs::read_to_string(self.log_path(service)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn admin_jobs(&self) -> Api<Job> {
        Api::namespaced(self.emulator.client().unwrap(), NAMESPACE)
    }

    pub async fn jobs_of(&self, run: Uuid) -> Vec<Job> {
        self.admin_jobs()
            .list(&ListParams::default().labels(&format!("prefect.io/flow-run-id={run}")))
            .await
            .unwrap()
            .items
    }

    pub async fn deployment_in(&self, pool: &str, job_variables: Value) -> Deployment {
        let flow = self
            .prefect
            .create_flow(&unique_name("flow"))
            .await
            .unwrap();
        self.prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(pool.to_string()),
                job_variables: Some(job_variables),
                ..DeploymentCreate::new(unique_name("deployment"), flow.id)
            })
            .await
            .unwrap()
    }

    pub async fn run_of(&self, deployment: &Deployment) -> FlowRun {
        self.prefect
            .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
            .await
            .unwrap()
    }

    pub async fn wait_for_pool(&self) {
        eventually("the poller creates the work pool", || async {
            self.prefect.read_work_pool(&self.pool).await.ok()
        })
        .await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, child) in &mut self.services {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn build_services() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "poller",
            "-p",
            "dispatcher",
            "-p",
            "reporter",
            "--bins",
        ])
        .current_dir(root)
        .status()
        .expect("run cargo build");
    assert!(built.success(), "the services build");
}

/// A service's binary, beside this package's own.
pub fn binary(service: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_prefect-k8s"))
        .parent()
        .unwrap()
        .join(service)
}

pub async fn apply_install_output(emulator: &Emulator, pool: &str) {
    let admin = emulator.client().expect("admin client");
    let stream = install(&["--rbac", "-n", NAMESPACE, "--work-pool", pool]);
    for object in parse_stream(&stream) {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let served = [
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Secret",
        ];
        if !served.contains(&kind.as_str()) {
            continue;
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
        let api: Api<DynamicObject> = if kind == "Namespace" {
            Api::all_with(admin.clone(), &resource)
        } else {
            Api::namespaced_with(admin.clone(), NAMESPACE, &resource)
        };
        let dynamic: DynamicObject = serde_json::from_value(object).expect("an object");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|error| panic!("creating {kind} as admin: {error}"));
    }
}

pub async fn eventually<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    test_stack::wait::eventually(what, PATIENCE, Duration::from_millis(250), attempt).await
}
