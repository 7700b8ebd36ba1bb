//! The real parts for the reporter's acceptance tests: the Prefect server shared by the
//! tests of a binary (each test uses its own work pool and deployment) and a Kubernetes
//! API emulator of the test's own with the scripted runtime. Runs are claimed and their
//! Jobs created the way the dispatcher does it (claim `Pending`, record
//! `infrastructure_pid`, create a Job labelled `prefect.io/flow-run-id`); container
//! fates come from the emulator's scripted rules (image names, `kube-emulator.io/script`).

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use prefect_client::{
    ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, FlowRun, Log, PrefectClient, State,
    StateCreate, StateType, WorkPoolCreate,
};
use reporter::service::{GraceOverrides, Reporter, ReporterConfig, ReporterError};
use serde_json::{json, Value};
use test_stack::prefect::{unique_name, PrefectServer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Generous bound for anything a test waits for; tests assert what happens, not how fast.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Namespace of the test Jobs.
pub const NAMESPACE: &str = "default";

pub struct Stack {
    pub prefect_server: &'static PrefectServer,
    pub emulator: kube_emulator::Emulator,
    pub prefect: PrefectClient,
    pub kube: kube::Client,
    pub pool: String,
    pub deployment_id: Uuid,
}

/// How a test Job's pod behaves.
#[derive(Clone, Debug, Default)]
pub struct JobSpec {
    pub image: Option<String>,
    /// `kube-emulator.io/script` on the pod (e.g. `fail:3:0.2`, `hang`).
    pub script: Option<String>,
    /// `kube-emulator.io/log`: lines the scripted container prints.
    pub log: Option<String>,
    /// An env var from this (missing) Secret.
    pub secret_env: Option<String>,
    pub cpu_request: Option<String>,
    pub active_deadline_seconds: Option<i64>,
    pub pod_watch_timeout_seconds: Option<u64>,
    /// The `scale_up_timeout_seconds` job variable, as the dispatcher writes it.
    pub scale_up_timeout_seconds: Option<u64>,
    /// A second container, `sidecar`, with this script (e.g. `evict:0.3` evicts the
    /// pod while `prefect-job` still runs).
    pub sidecar_script: Option<String>,
}

impl JobSpec {
    pub fn image(image: &str) -> Self {
        JobSpec {
            image: Some(image.to_owned()),
            ..JobSpec::default()
        }
    }

    pub fn script(script: &str) -> Self {
        JobSpec {
            script: Some(script.to_owned()),
            ..JobSpec::default()
        }
    }
}

/// A reporter replica running in this process.
pub struct RunningReporter {
    pub shutdown: CancellationToken,
    pub leading: reporter::service::Leadership,
    handle: JoinHandle<Result<(), ReporterError>>,
}

impl RunningReporter {
    pub fn is_leader(&self) -> bool {
        self.leading.is_leading()
    }

    /// Stops it as SIGTERM would (a leader releases its Lease).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("the reporter stops");
        result
            .expect("reporter task")
            .expect("reporter ends cleanly");
    }

    /// Kills it as SIGKILL would: every task stops at once, the Lease is not released.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// A reporter replica running as a child process of the real binary.
pub struct ReporterProcess {
    child: std::process::Child,
}

impl ReporterProcess {
    /// SIGKILL: no cleanup at all, the Lease is not released.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL the reporter");
        let _ = self.child.wait();
    }
}

impl Drop for ReporterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(kube_emulator::EmulatorConfig::fast()).await
    }

    /// With an emulator of this configuration (e.g. a node autoscaler).
    pub async fn start_with(emulator: kube_emulator::EmulatorConfig) -> Stack {
        service_runtime::telemetry::init();
        let prefect_server = PrefectServer::shared();
        let emulator = kube_emulator::Emulator::start(emulator)
            .await
            .expect("start the Kubernetes API emulator");
        // The test's own calls ride out a loaded SQLite server's "database is
        // locked" answers (503) for about two minutes.
        let patient = prefect_client::RetryPolicy {
            max_retries: 30,
            max_delay: std::time::Duration::from_secs(5),
            ..Default::default()
        };
        let prefect = PrefectClient::new(
            ClientConfig::new(&prefect_server.api_url())
                .unwrap()
                .with_retry(patient),
        )
        .unwrap();
        let kube = emulator.client().expect("emulator client");
        let pool = unique_name("reporter-pool");
        prefect
            .create_work_pool(&WorkPoolCreate::new(&pool, "kubernetes", json!({})))
            .await
            .expect("create work pool");
        let flow = prefect
            .create_flow(&unique_name("flow"))
            .await
            .expect("create flow");
        let deployment = prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(pool.clone()),
                ..DeploymentCreate::new(unique_name("deployment"), flow.id)
            })
            .await
            .expect("create deployment");
        Stack {
            prefect_server,
            emulator,
            prefect,
            kube,
            pool,
            deployment_id: deployment.id,
        }
    }

    /// Reporter settings for tests: short grace periods and lease.
    pub fn reporter_config(&self, identity: &str) -> ReporterConfig {
        let mut config = ReporterConfig::for_pool(&self.pool);
        config.identity = Some(identity.to_owned());
        config.lease_namespace = Some(NAMESPACE.to_owned());
        config.lease_duration_seconds = 3;
        config.cancel_poll_seconds = 0.5;
        config.reconcile_seconds = 2.0;
        config.missing_job_grace_seconds = 1.0;
        config.grace = GraceOverrides {
            image_error_grace_seconds: Some(1.0),
            config_error_grace_seconds: Some(1.0),
            default_pod_watch_timeout_seconds: Some(30.0),
            settle_grace_seconds: Some(1.0),
            pod_start_timeout_seconds: None,
            scale_up_timeout_seconds: None,
        };
        config
    }

    /// The Prefect client of a reporter started in this process: the test's,
    /// with the services' own retry budget (not the set-up's).
    pub fn services_prefect(&self) -> PrefectClient {
        self.prefect
            .with_retry(prefect_client::RetryPolicy::default())
    }

    pub fn spawn_reporter(&self, config: ReporterConfig) -> RunningReporter {
        self.spawn_reporter_with(config, self.services_prefect())
    }

    /// A reporter replica reaching Prefect through `prefect` (e.g. a proxy).
    pub fn spawn_reporter_with(
        &self,
        config: ReporterConfig,
        prefect: PrefectClient,
    ) -> RunningReporter {
        let reporter = Reporter::new(config, prefect, self.kube.clone());
        let leading = reporter.leadership();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(reporter.run(shutdown.clone()));
        RunningReporter {
            shutdown,
            leading,
            handle,
        }
    }

    /// Starts the `reporter` binary with [`Stack::reporter_config`]'s settings, through
    /// its flags' environment variables and the emulator's kubeconfig.
    pub fn spawn_reporter_process(&self, identity: &str) -> ReporterProcess {
        let health_port = test_stack::ports::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_reporter"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", self.emulator.kubeconfig_path())
            .env("PREFECT_API_URL", self.prefect_server.api_url())
            .env("PREFECT_K8S_WORK_POOL", &self.pool)
            .env("PREFECT_K8S_REPORTER_IDENTITY", identity)
            .env("PREFECT_K8S_LEASE_NAMESPACE", NAMESPACE)
            .env("PREFECT_K8S_LEASE_DURATION_SECONDS", "3")
            .env("PREFECT_K8S_CANCEL_POLL_SECONDS", "0.5")
            .env("PREFECT_K8S_RECONCILE_SECONDS", "2")
            .env("PREFECT_K8S_MISSING_JOB_GRACE_SECONDS", "1")
            .env("PREFECT_K8S_IMAGE_ERROR_GRACE_SECONDS", "1")
            .env("PREFECT_K8S_CONFIG_ERROR_GRACE_SECONDS", "1")
            .env("PREFECT_K8S_DEFAULT_POD_WATCH_TIMEOUT_SECONDS", "30")
            .env("PREFECT_K8S_SETTLE_GRACE_SECONDS", "1")
            .env("HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start the reporter binary");
        ReporterProcess { child }
    }

    /// Who holds the reporters' Lease.
    pub async fn lease_holder(&self) -> Option<String> {
        let name = ReporterConfig::for_pool(&self.pool).lease_name();
        let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            self.kube.clone(),
            NAMESPACE,
        )
        .get_opt(&name)
        .await
        .expect("read the Lease")?;
        lease
            .spec?
            .holder_identity
            .filter(|holder| !holder.is_empty())
    }

    /// A run of the test deployment, claimed (`Pending`) as a dispatcher would.
    pub async fn claimed_run(&self) -> FlowRun {
        self.claimed_run_of(self.deployment_id).await
    }

    /// A deployment in another work pool (created here), as when several pools share
    /// a cluster.
    pub async fn deployment_in_another_pool(&self) -> Uuid {
        let pool = unique_name("other-pool");
        self.prefect
            .create_work_pool(&WorkPoolCreate::new(&pool, "kubernetes", json!({})))
            .await
            .expect("create work pool");
        let flow = self
            .prefect
            .create_flow(&unique_name("flow"))
            .await
            .expect("create flow");
        self.prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(pool),
                ..DeploymentCreate::new(unique_name("deployment"), flow.id)
            })
            .await
            .expect("create deployment")
            .id
    }

    /// A run of `deployment_id`, claimed (`Pending`) as a dispatcher would.
    pub async fn claimed_run_of(&self, deployment_id: Uuid) -> FlowRun {
        let run = self
            .prefect
            .create_flow_run_from_deployment(deployment_id, &DeploymentFlowRunCreate::default())
            .await
            .expect("create flow run");
        let claim = self
            .prefect
            .set_flow_run_state(
                run.id,
                &StateCreate::pending_claim(fixture_claim(run.id).claim_transition_id()),
                false,
            )
            .await
            .expect("claim");
        assert_eq!(
            claim.status,
            prefect_client::SetStateStatus::Accept,
            "claim accepted"
        );
        run
    }

    /// Records the pid and creates the run's Job; returns the Job name.
    pub async fn submit(&self, run: &FlowRun, spec: &JobSpec) -> String {
        let pool_label = self.pool_label();
        self.submit_manifest(run, |name| job_manifest(name, run.id, &pool_label, spec))
            .await
    }

    /// The pool's name as the dispatcher's Jobs' pool label spells it.
    pub fn pool_label(&self) -> String {
        job_manifest::slugify_label_value(&self.pool)
    }

    /// Records the pid and creates the Job `manifest` makes for the Job name.
    pub async fn submit_manifest(
        &self,
        run: &FlowRun,
        manifest: impl FnOnce(&str) -> Value,
    ) -> String {
        let name = format!("run-{}", &run.id.simple().to_string()[..12]);
        self.prefect
            .update_flow_run_infrastructure_pid(run.id, &format!("{NAMESPACE}:{name}"))
            .await
            .expect("record pid");
        let job: Job = serde_json::from_value(manifest(&name)).expect("a Job");
        Api::<Job>::namespaced(self.kube.clone(), NAMESPACE)
            .create(&PostParams::default(), &job)
            .await
            .expect("create the Job");
        name
    }

    /// A claimed run with its Job.
    pub async fn submitted_run(&self, spec: &JobSpec) -> (FlowRun, String) {
        let run = self.claimed_run().await;
        let job = self.submit(&run, spec).await;
        (run, job)
    }

    pub async fn set_state(&self, run_id: Uuid, state_type: StateType, name: &str, force: bool) {
        self.prefect
            .set_flow_run_state(run_id, &StateCreate::new(state_type, name), force)
            .await
            .expect("set state");
    }

    pub async fn run(&self, id: Uuid) -> FlowRun {
        self.prefect.read_flow_run(id).await.expect("read flow run")
    }

    pub async fn states(&self, id: Uuid) -> Vec<State> {
        self.prefect
            .read_flow_run_states(id)
            .await
            .expect("read states")
    }

    /// Waits until the run is final; returns its final state.
    pub async fn final_state(&self, id: Uuid) -> State {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let run = self.run(id).await;
            if let Some(state) = run.state.filter(|state| state.state_type.is_final()) {
                return state;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting: run {id} reaches a final state"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The run's states of `state_type` (optionally of this name).
    pub async fn states_of(
        &self,
        id: Uuid,
        state_type: StateType,
        name: Option<&str>,
    ) -> Vec<State> {
        self.states(id)
            .await
            .into_iter()
            .filter(|state| state.state_type == state_type)
            .filter(|state| name.is_none_or(|name| state.name.as_deref() == Some(name)))
            .collect()
    }

    /// Every log line of the run.
    pub async fn logs(&self, id: Uuid) -> Vec<Log> {
        let mut logs = Vec::new();
        loop {
            let page = self
                .prefect
                .read_flow_run_logs(id, 200, logs.len())
                .await
                .expect("read logs");
            let done = page.len() < 200;
            logs.extend(page);
            if done {
                return logs;
            }
        }
    }

    /// The `prefect.kubernetes.pod.*` events related to the run, oldest first.
    pub async fn pod_events(&self, id: Uuid) -> Vec<prefect_client::Event> {
        let filter = prefect_client::EventFilter {
            since: Some(chrono::Utc::now() - chrono::TimeDelta::hours(1)),
            until: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            name_prefixes: Some(vec!["prefect.kubernetes.pod.".into()]),
            related_ids: Some(vec![format!("prefect.flow-run.{id}")]),
            ..Default::default()
        };
        let mut events = self
            .prefect
            .read_events(&filter)
            .await
            .expect("read events");
        events.sort_by_key(|event| event.occurred);
        events
    }

    pub async fn pods_of_job(&self, job: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.kube.clone(), NAMESPACE)
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await
            .expect("list pods")
            .items
    }

    pub async fn job_exists(&self, job: &str) -> bool {
        Api::<Job>::namespaced(self.kube.clone(), NAMESPACE)
            .get_opt(job)
            .await
            .expect("get job")
            .is_some()
    }

    pub async fn delete_job(&self, job: &str) {
        Api::<Job>::namespaced(self.kube.clone(), NAMESPACE)
            .delete(
                job,
                &DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                },
            )
            .await
            .expect("delete job");
    }

    /// Waits until a pod of the Job runs.
    pub async fn wait_for_running_pod(&self, job: &str) {
        eventually(&format!("a pod of {job} runs"), || async {
            self.pods_of_job(job)
                .await
                .iter()
                .any(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
        .await;
    }
}

/// A Job like the dispatcher's: our label on the Job and its pods, no retries.
/// A Job as the dispatcher creates it for `flow_run_id` in the pool whose label value
/// is `pool_label`: the run's and the pool's labels, and a claim annotation.
pub fn job_manifest(name: &str, flow_run_id: Uuid, pool_label: &str, spec: &JobSpec) -> Value {
    let mut pod_annotations = serde_json::Map::new();
    if let Some(script) = &spec.script {
        pod_annotations.insert("kube-emulator.io/script".into(), json!(script));
    }
    if let Some(log) = &spec.log {
        pod_annotations.insert("kube-emulator.io/log".into(), json!(log));
    }
    let mut container = json!({
        "name": "prefect-job",
        "image": spec.image.clone().unwrap_or_else(|| "prefecthq/prefect:3-latest".to_owned()),
        "args": ["prefect", "flow-run", "execute"],
        "env": [{"name": "PREFECT__FLOW_RUN_ID", "value": flow_run_id.to_string()}],
    });
    if let Some(secret) = &spec.secret_env {
        container["env"].as_array_mut().unwrap().push(json!({
            "name": "DB_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}},
        }));
    }
    if let Some(cpu) = &spec.cpu_request {
        container["resources"] = json!({"requests": {"cpu": cpu}});
    }
    let mut containers = vec![container];
    if let Some(script) = &spec.sidecar_script {
        pod_annotations.insert("kube-emulator.io/script-sidecar".into(), json!(script));
        containers.push(json!({"name": "sidecar", "image": "busybox:1.36"}));
    }
    let mut job_annotations = serde_json::Map::new();
    let claim = fixture_claim(flow_run_id);
    job_annotations.insert(
        flow_run_proto::kubernetes::CLAIM_ANNOTATION.into(),
        json!(claim.claim_annotation()),
    );
    if let Some(seconds) = spec.pod_watch_timeout_seconds {
        job_annotations.insert(
            reporter::observe::POD_WATCH_TIMEOUT_ANNOTATION.into(),
            json!(seconds.to_string()),
        );
    }
    if let Some(seconds) = spec.scale_up_timeout_seconds {
        job_annotations.insert(
            reporter::observe::SCALE_UP_TIMEOUT_ANNOTATION.into(),
            json!(seconds.to_string()),
        );
    }
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {
                "prefect.io/flow-run-id": flow_run_id.to_string(),
                "prefect.io/work-pool-name": pool_label,
            },
            "annotations": job_annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    // The dispatcher copies the Job's labels to its pods, as
                    // prefect-kubernetes does.
                    "labels": {
                        "prefect.io/flow-run-id": flow_run_id.to_string(),
                        "prefect.io/work-pool-name": pool_label,
                    },
                    "annotations": pod_annotations,
                },
                "spec": {"restartPolicy": "Never", "containers": containers},
            },
        },
    });
    if let Some(deadline) = spec.active_deadline_seconds {
        job["spec"]["activeDeadlineSeconds"] = json!(deadline);
    }
    job
}

/// Polls `check` until it holds, panicking with `what` after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    test_stack::wait::until(what, PATIENCE, Duration::from_millis(200), check).await
}

/// The submission the fixtures claim a run for and annotate its Job with (one key
/// for both, as a dispatcher's claim and Job carry; the run id stands in for the
/// scheduled state's).
pub fn fixture_claim(flow_run_id: Uuid) -> flow_run_proto::SubmissionKey {
    flow_run_proto::SubmissionKey::new(flow_run_id, flow_run_id)
}
