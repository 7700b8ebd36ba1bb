//! A client no one here wrote: the Python Prefect Kubernetes worker
//! (prefect-kubernetes 0.8.0, unmodified, from the project virtualenv) runs
//! against the emulator through a kubeconfig, with a real Prefect server. It
//! must create the Job for a flow run, start its kopf observer, and the
//! observer must report the pod's failure on the flow run.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube_emulator::{Emulator, EmulatorConfig};
use prefect_client::{
    ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, PrefectClient, StateType,
};
use serde_json::json;
use test_stack::prefect::{unique_name, PrefectServer};

const PATIENCE: Duration = Duration::from_secs(240);

struct Worker {
    child: Child,
    log: std::path::PathBuf,
    _home: tempfile::TempDir,
}

impl Worker {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(prefect: &PrefectServer, emulator: &Emulator, pool: &str) -> Worker {
    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("worker.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(prefect.prefect_cli())
        .args([
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "kubernetes",
            "--name",
            "python-worker",
        ])
        .envs(prefect.env())
        .env("PREFECT_HOME", home.path())
        .env("KUBECONFIG", emulator.kubeconfig_path())
        .env("PREFECT_WORKER_QUERY_SECONDS", "1")
        .env("PREFECT_WORKER_PREFETCH_SECONDS", "5")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start the Python Prefect worker");
    Worker {
        child,
        log,
        _home: home,
    }
}

async fn eventually<F, Fut>(what: &str, worker: &Worker, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "gave up waiting: {what}\nworker log:\n{}",
        worker.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_prefect_kubernetes_worker_runs_a_job_and_reports_its_failure() {
    let prefect_server = PrefectServer::shared();
    let emulator = Emulator::start(EmulatorConfig::fast())
        .await
        .expect("start the emulator");
    let prefect =
        PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
    let pool = unique_name("python-pool");
    let worker = start_worker(prefect_server, &emulator, &pool);

    eventually("the worker creates its pool", &worker, || async {
        prefect.read_work_pool(&pool).await.is_ok()
    })
    .await;
    let flow = prefect.create_flow(&unique_name("flow")).await.unwrap();
    // The scripted runtime fails containers whose image name says "fail":
    // the pod exits 1 before any flow engine runs.
    let deployment = prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(pool.clone()),
            job_variables: Some(json!({"image": "example/fail-fast:1"})),
            ..DeploymentCreate::new(unique_name("deployment"), flow.id)
        })
        .await
        .unwrap();
    let run = prefect
        .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
        .await
        .unwrap();

    let jobs: Api<Job> = Api::all(emulator.client().unwrap());
    let selector = format!("prefect.io/flow-run-id={}", run.id);
    eventually("the worker creates the run's Job", &worker, || async {
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items.len() == 1)
            .unwrap_or(false)
    })
    .await;
    // The worker records the infrastructure pid after the Job exists: wait for it.
    eventually(
        "the worker records the Job on the flow run",
        &worker,
        || async {
            prefect
                .read_flow_run(run.id)
                .await
                .map(|r| r.infrastructure_pid.is_some())
                .unwrap_or(false)
        },
    )
    .await;
    let pid = prefect
        .read_flow_run(run.id)
        .await
        .unwrap()
        .infrastructure_pid;
    let job = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(
        pid,
        Some(format!(
            "{}:{}",
            job.metadata.namespace.clone().unwrap(),
            job.metadata.name.clone().unwrap()
        )),
        "the worker recorded the Job it created"
    );

    // Only the kopf observer reports a failed Job on the flow run.
    eventually(
        "the observer reports the pod failure as Crashed",
        &worker,
        || async {
            prefect
                .read_flow_run(run.id)
                .await
                .ok()
                .and_then(|r| r.state)
                .map(|s| s.state_type == StateType::Crashed)
                .unwrap_or(false)
        },
    )
    .await;
    let state = prefect.read_flow_run(run.id).await.unwrap().state.unwrap();
    assert!(
        state
            .message
            .clone()
            .unwrap_or_default()
            .to_lowercase()
            .contains("pod")
            || state
                .message
                .clone()
                .unwrap_or_default()
                .to_lowercase()
                .contains("job"),
        "the crash message speaks of the pod or Job: {state:?}"
    );
    drop(worker);
}
