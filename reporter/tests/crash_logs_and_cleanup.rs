//! The whole story in the run's logs, and nothing left running (issue 16): a crashed
//! run's logs hold the last lines of its failing container (the flow container first,
//! a sidecar's only when the flow printed nothing), and the Job of a run crashed for a
//! reason that will not heal (an image that cannot be pulled) is deleted, unless Job
//! deletion is disabled.

mod support;

use prefect_client::{Log, StateType};
use reporter::service::pod_logs::POD_LOG_LOGGER;
use serde_json::json;
use support::{JobSpec, Stack, NAMESPACE};

async fn pod_log_lines(stack: &Stack, run: uuid::Uuid) -> Vec<Log> {
    stack
        .logs(run)
        .await
        .into_iter()
        .filter(|log| log.name == POD_LOG_LOGGER)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_run_s_logs_hold_the_last_500_lines_of_its_failing_container() {
    let stack = Stack::start().await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let output: Vec<String> = (1..=600).map(|n| format!("output line {n}")).collect();
    let spec = JobSpec {
        log: Some(output.join("\n")),
        ..JobSpec::script("fail:3:0.2")
    };
    let (run, job) = stack.submitted_run(&spec).await;
    let state = stack.final_state(run.id).await;
    assert_eq!(state.state_type, StateType::Crashed, "{:?}", state.message);
    let message = state.message.unwrap_or_default();
    assert!(message.contains("Last lines of the pod log:"), "{message}");
    assert!(message.ends_with("output line 600"), "{message}");

    let lines = wait_for_pod_log(&stack, run.id, 501).await;
    let header = &lines[0];
    assert!(
        header.message.starts_with(&format!(
            "Last 500 lines of container \"prefect-job\" of pod {NAMESPACE}/{job}-"
        )),
        "{}",
        header.message
    );
    let texts: Vec<&str> = lines[1..].iter().map(|log| log.message.as_str()).collect();
    assert_eq!(texts.len(), 500);
    assert_eq!(texts.first(), Some(&"output line 101"));
    assert_eq!(texts.last(), Some(&"output line 600"));
    assert!(
        lines.iter().all(|log| log.level == 40),
        "ERROR, as the Python observer"
    );
    reporter.stop().await;
}

/// The forwarded pod log (header first) once `count` records arrived.
async fn wait_for_pod_log(stack: &Stack, run: uuid::Uuid, count: usize) -> Vec<Log> {
    support::eventually("the pod's log reaches the run's logs", || async {
        pod_log_lines(stack, run).await.len() >= count
    })
    .await;
    let mut lines = pod_log_lines(stack, run).await;
    lines.sort_by_key(|log| log.timestamp);
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_s_log_is_read_when_the_flow_container_printed_nothing() {
    let stack = Stack::start_with(kube_emulator::EmulatorConfig {
        runtime: kube_emulator::RuntimeKind::Process,
        ..kube_emulator::EmulatorConfig::fast()
    })
    .await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let run = stack.claimed_run().await;
    let label = json!({"prefect.io/flow-run-id": run.id.to_string()});
    let job = stack
        .submit_manifest(&run, |name| {
            json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": name, "namespace": NAMESPACE, "labels": label},
                "spec": {"backoffLimit": 0, "template": {
                    "metadata": {"labels": label},
                    "spec": {"restartPolicy": "Never", "containers": [
                        {"name": "prefect-job", "image": "python:3.12", "command": ["sh", "-c", "exit 3"]},
                        {"name": "proxy", "image": "envoy", "command": ["sh", "-c", "echo proxy could not reach the database"]}
                    ]}
                }}
            })
        })
        .await;
    let state = stack.final_state(run.id).await;
    let message = state.message.unwrap_or_default();
    assert_eq!(state.state_type, StateType::Crashed, "{message}");
    assert!(message.contains("exit code 3"), "{message}");
    let lines = wait_for_pod_log(&stack, run.id, 2).await;
    assert_eq!(
        lines.len(),
        2,
        "only the proxy's line: prefect-job printed nothing"
    );
    assert!(
        lines[0].message.starts_with(&format!(
            "Last 1 lines of container \"proxy\" of pod {NAMESPACE}/{job}-"
        )),
        "{}",
        lines[0].message
    );
    assert_eq!(lines[1].message, "proxy could not reach the database");
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_crashed_for_a_pull_error_leaves_no_job_behind() {
    let stack = Stack::start().await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let (run, job) = stack
        .submitted_run(&JobSpec::image("registry.example.com/flows/pull-error:1"))
        .await;
    let state = stack.final_state(run.id).await;
    assert_eq!(state.state_type, StateType::Crashed, "{:?}", state.message);
    support::eventually(
        "the Job that would retry the pull forever is deleted",
        || async { !stack.job_exists(&job).await },
    )
    .await;
    support::eventually("the run's logs say why", || async {
        stack.logs(run.id).await.iter().any(|log| {
            log.message.starts_with(&format!(
                "Deleted Kubernetes Job {NAMESPACE}/{job}: the flow run crashed and no pod of the Job runs"
            ))
        })
    })
    .await;
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_job_deletion_disabled_the_crashed_run_s_job_stays() {
    let stack = Stack::start().await;
    let mut config = stack.reporter_config("reporter-a");
    config.disable_job_deletion = true;
    let reporter = stack.spawn_reporter(config);
    let (run, job) = stack
        .submitted_run(&JobSpec::image("registry.example.com/flows/pull-error:1"))
        .await;
    assert_eq!(
        stack.final_state(run.id).await.state_type,
        StateType::Crashed
    );
    // A later run's crash is reported, so the first run has been evaluated since.
    let (witness, _) = stack
        .submitted_run(&JobSpec::image("registry.example.com/flows/pull-error:2"))
        .await;
    stack.final_state(witness.id).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        stack.job_exists(&job).await,
        "--disable-job-deletion keeps it"
    );
    reporter.stop().await;
}
