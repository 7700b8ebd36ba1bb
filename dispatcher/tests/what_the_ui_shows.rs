//! Issue 11's acceptance: on a run submitted by prefect-k8s (poller, the
//! dispatcher binary, the reporter; a real flow in a process "pod"), the
//! Prefect API returns what it returns for the Python worker: the submission
//! lines in the run's logs, worded and named as prefect 3.9.1's worker writes
//! them, and `prefect.kubernetes.pod.*` events naming the run's pod, run,
//! deployment, flow, pool and worker. The dispatcher's own Prefect settings
//! reach the flow's container, its secrets do not.

mod support;

use prefect_client::{DeploymentCreate, EventFilter, StateType};
use reporter::service::{Reporter, ReporterConfig};
use serde_json::json;
use support::{eventually, Stack};
use test_stack::prefect::unique_name;
use tokio_util::sync::CancellationToken;

const FLOW_SOURCE: &str = r#"
from prefect import flow

@flow
def greet() -> str:
    print("hello from the pod")
    return "done"
"#;

const WORKER: &str = "prefect-k8s-ui";

fn spawn_reporter(stack: &Stack) -> tokio_util::sync::DropGuard {
    let mut config = ReporterConfig::for_pool(&stack.pool);
    config.identity = Some("reporter-ui".into());
    config.lease_namespace = Some("default".into());
    config.lease_duration_seconds = 3;
    let reporter = Reporter::new(config, stack.services_prefect(), stack.kube.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(reporter.run(shutdown.clone()));
    shutdown.drop_guard()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_submitted_by_prefect_k8s_shows_the_python_workers_lines_and_pod_events() {
    let mut stack = Stack::start(kube_emulator::RuntimeKind::Process).await;
    stack.spawn_poller(stack.poller_config()).await;
    let api_url = stack.prefect_server.api_url();
    let mut dispatcher = stack.dispatcher_process_with_env(
        &["--name", WORKER],
        &[
            ("PREFECT_K8S_FLOW_API_URL", api_url.as_str()),
            ("PREFECT_CLIENT_MAX_RETRIES", "7"),
            ("PREFECT_LOGGING_LEVEL", "INFO"),
            ("PREFECT_SERVER_API_AUTH_STRING", "admin:hunter2"),
            (
                "PREFECT_API_DATABASE_CONNECTION_URL",
                "postgresql+asyncpg://prefect:hunter2@db:5432/prefect",
            ),
        ],
    );
    let _reporter = spawn_reporter(&stack);
    stack.wait_for_pool().await;

    let code = tempfile::tempdir().unwrap();
    std::fs::write(code.path().join("greet.py"), FLOW_SOURCE).unwrap();
    let flow_home = tempfile::tempdir().unwrap();
    let venv_bin = stack.prefect_server.venv().join("bin");
    let flow = stack.prefect.create_flow("greet").await.unwrap();
    let deployment = stack
        .prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(stack.pool.clone()),
            entrypoint: Some("greet.py:greet".into()),
            path: Some(code.path().display().to_string()),
            pull_steps: Some(json!([
                {"prefect.deployments.steps.set_working_directory": {"directory": code.path()}}
            ])),
            job_variables: Some(json!({"env": {
                "PATH": format!("{}:/usr/local/bin:/usr/bin:/bin", venv_bin.display()),
                "PREFECT_HOME": flow_home.path(),
            }})),
            ..DeploymentCreate::new(unique_name("greet"), flow.id)
        })
        .await
        .unwrap();
    let run = stack.run_of(&deployment, None).await;

    eventually("the run completes", || async {
        stack
            .run(run.id)
            .await
            .state
            .is_some_and(|s| s.state_type == StateType::Completed)
    })
    .await;
    let job = stack.jobs_of(run.id).await.remove(0);
    let job_name = job.metadata.name.clone().unwrap();

    // The Python worker's lines, in order, once each.
    let expected = vec![
        format!("Worker '{WORKER}' submitting flow run '{}'", run.id),
        "Creating Kubernetes job...".to_string(),
        format!("Kubernetes job '{job_name}' created in namespace 'default'"),
        format!("Flow run '{}' submitted to infrastructure", run.name),
    ];
    let worker_lines = || async {
        let logs = stack
            .prefect
            .read_flow_run_logs(run.id, 200, 0)
            .await
            .unwrap();
        logs.into_iter()
            .filter(|log| log.name == "prefect.flow_runs.worker")
            .collect::<Vec<_>>()
    };
    eventually("the submission lines are in the run's logs", || async {
        worker_lines().await.len() >= expected.len()
    })
    .await;
    let worker_lines = worker_lines().await;
    let messages: Vec<&str> = worker_lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, expected);
    assert!(worker_lines.iter().all(|line| line.level == 20));
    for line in &worker_lines {
        eprintln!("log  {}  {}  {}", line.timestamp, line.name, line.message);
    }

    // The pod's phases as the observer's events.
    let filter = EventFilter {
        since: Some(chrono::Utc::now() - chrono::TimeDelta::hours(1)),
        until: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        name_prefixes: Some(vec!["prefect.kubernetes.pod.".into()]),
        related_ids: Some(vec![format!("prefect.flow-run.{}", run.id)]),
        ..EventFilter::default()
    };
    let read_events = || async { stack.prefect.read_events(&filter).await.unwrap() };
    eventually("the pod's phases are Prefect events", || async {
        let events = read_events().await;
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        names.contains(&"prefect.kubernetes.pod.running")
            && names.contains(&"prefect.kubernetes.pod.succeeded")
    })
    .await;
    let mut events = read_events().await;
    events.sort_by_key(|event| event.occurred);
    for event in &events {
        eprintln!(
            "event  {}  {}  {}",
            event.occurred,
            event.event,
            serde_json::to_string(&event.related).unwrap()
        );
    }
    let running = events
        .iter()
        .find(|e| e.event == "prefect.kubernetes.pod.running")
        .unwrap();
    assert!(running
        .resource_id()
        .unwrap()
        .starts_with("prefect.kubernetes.pod."));
    assert_eq!(running.resource["kubernetes.namespace"], "default");
    let related = |role: &str| {
        running
            .related_in_role(role)
            .map(|r| r["prefect.resource.id"].clone())
    };
    assert_eq!(
        related("flow-run"),
        Some(format!("prefect.flow-run.{}", run.id))
    );
    assert_eq!(
        related("deployment"),
        Some(format!("prefect.deployment.{}", deployment.id))
    );
    assert_eq!(related("flow"), Some(format!("prefect.flow.{}", flow.id)));
    assert!(related("work-pool")
        .unwrap()
        .starts_with("prefect.work-pool."));
    assert_eq!(
        related("worker"),
        Some(format!("prefect.worker.kubernetes.{WORKER}"))
    );

    // The dispatcher's Prefect settings, not its secrets, reach the flow's container.
    let manifest = serde_json::to_string(&job).unwrap();
    assert!(!manifest.contains("hunter2"), "{manifest}");
    let env =
        &serde_json::to_value(&job).unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name)
            .map(|entry| entry["value"].clone())
    };
    assert_eq!(value("PREFECT_CLIENT_MAX_RETRIES"), Some(json!("7")));
    assert_eq!(value("PREFECT_LOGGING_LEVEL"), Some(json!("INFO")));
    assert_eq!(value("PREFECT_API_URL"), Some(json!(api_url)));
    assert_eq!(value("PREFECT_SERVER_API_AUTH_STRING"), None);
    assert_eq!(value("PREFECT_API_DATABASE_CONNECTION_URL"), None);
    assert_eq!(value("PREFECT_K8S_FLOW_API_URL"), None);

    let _ = dispatcher.kill();
    let _ = dispatcher.wait();
    stack.stop_services().await;
}
