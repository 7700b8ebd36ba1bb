//! Issue 16 through every part: the poller, a dispatcher and the reporter against an
//! emulator whose cluster-autoscaler adds nodes. A real flow whose pod needs a node that
//! comes after three pod-watch timeouts runs and completes; the `scale_up_timeout_seconds`
//! job variable travels through the dispatcher's Job annotation to the reporter, and a
//! value that is not a number crashes the run naming it.

mod support;

use std::time::Duration;

use kube_emulator::{
    AutoscalerConfig, AutoscalerStyle, EmulatorConfig, NodeCapacity, NodeGroup, Provisioning,
    RuntimeKind,
};
use prefect_client::{DeploymentCreate, StateType};
use reporter::service::{Reporter, ReporterConfig};
use serde_json::json;
use support::{eventually, Stack};
use test_stack::prefect::unique_name;
use tokio_util::sync::CancellationToken;

const FLOW_SOURCE: &str = r#"
from prefect import flow

@flow
def train() -> str:
    print("training on the new node")
    return "done"
"#;

/// An emulator whose own node (8 cpu) is too small for a 12-cpu pod and whose
/// cluster-autoscaler grows node group `gpu` (16-cpu nodes).
fn emulator(runtime: RuntimeKind, provisioning: Provisioning) -> EmulatorConfig {
    EmulatorConfig {
        runtime,
        autoscaler: Some(AutoscalerConfig {
            style: AutoscalerStyle::ClusterAutoscaler,
            node_groups: vec![NodeGroup {
                name: "gpu".into(),
                node_capacity: NodeCapacity {
                    cpu: "16".into(),
                    memory: "64Gi".into(),
                    pods: 110,
                },
                initial_size: 0,
                max_size: 2,
                provisioning,
            }],
            scan_interval: Duration::from_millis(200),
        }),
        ..EmulatorConfig::fast()
    }
}

/// The reporter in this process, with short periods.
fn spawn_reporter(stack: &Stack) -> tokio_util::sync::DropGuard {
    let mut config = ReporterConfig::for_pool(&stack.pool);
    config.identity = Some("reporter-a".into());
    config.lease_namespace = Some("default".into());
    config.lease_duration_seconds = 3;
    config.reconcile_seconds = 2.0;
    let reporter = Reporter::new(config, stack.services_prefect(), stack.kube.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn(reporter.run(shutdown.clone()));
    shutdown.drop_guard()
}

async fn final_state(stack: &Stack, run: uuid::Uuid) -> prefect_client::State {
    eventually("the run reaches a final state", || async {
        stack
            .run(run)
            .await
            .state
            .is_some_and(|s| s.state_type.is_final())
    })
    .await;
    stack.run(run).await.state.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_flow_waits_for_the_node_the_autoscaler_brings_and_completes() {
    let node_delay = Duration::from_secs(7);
    let mut stack = Stack::start_with_emulator(emulator(
        RuntimeKind::Process,
        Provisioning::After(node_delay),
    ))
    .await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
    let _reporter = spawn_reporter(&stack);
    stack.wait_for_pool().await;

    let code = tempfile::tempdir().unwrap();
    std::fs::write(code.path().join("train.py"), FLOW_SOURCE).unwrap();
    let flow_home = tempfile::tempdir().unwrap();
    let venv_bin = stack.prefect_server.venv().join("bin");
    let flow = stack.prefect.create_flow("train").await.unwrap();
    let deployment = stack
        .prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(stack.pool.clone()),
            entrypoint: Some("train.py:train".into()),
            path: Some(code.path().display().to_string()),
            pull_steps: Some(json!([
                {"prefect.deployments.steps.set_working_directory": {"directory": code.path()}}
            ])),
            job_variables: Some(json!({
                "cpu_request": "12",
                "pod_watch_timeout_seconds": 2,
                "env": {
                    "PATH": format!("{}:/usr/local/bin:/usr/bin:/bin", venv_bin.display()),
                    "PREFECT_HOME": flow_home.path(),
                }
            })),
            ..DeploymentCreate::new(unique_name("train"), flow.id)
        })
        .await
        .unwrap();
    let run = stack.run_of(&deployment, None).await;

    let state = final_state(&stack, run.id).await;
    assert_eq!(
        state.state_type,
        StateType::Completed,
        "the flow ran on the new node: {state:?}"
    );
    let states = stack.prefect.read_flow_run_states(run.id).await.unwrap();
    assert!(
        states.iter().all(|s| s.state_type != StateType::Crashed),
        "never crashed while the node was coming: {states:?}"
    );
    let logs = stack
        .prefect
        .read_flow_run_logs(run.id, 200, 0)
        .await
        .unwrap();
    assert!(
        logs.iter().any(|log| log
            .message
            .starts_with("Waiting for a new node: scale-up of nodegroup gpu 0→1 triggered")),
        "the run's logs say what it waited for"
    );
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_up_limit_job_variable_reaches_the_reporter_and_bad_values_are_named() {
    let mut stack =
        Stack::start_with_emulator(emulator(RuntimeKind::Scripted, Provisioning::Never)).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
    let _reporter = spawn_reporter(&stack);
    stack.wait_for_pool().await;
    let deployment = stack
        .deployment(json!({
            "cpu_request": "12",
            "pod_watch_timeout_seconds": 2,
            "scale_up_timeout_seconds": 300,
        }))
        .await;
    // The run's own job variables win over the deployment's.
    let limited = stack
        .run_of(&deployment, Some(json!({"scale_up_timeout_seconds": 4})))
        .await;
    let misspelt = stack
        .run_of(
            &deployment,
            Some(json!({"scale_up_timeout_seconds": "ten"})),
        )
        .await;

    let state = final_state(&stack, limited.id).await;
    let message = state.message.unwrap_or_default();
    assert_eq!(state.state_type, StateType::Crashed, "{message}");
    // 4 s: the run's variable, through the dispatcher's annotation (not the
    // deployment's 300 s, nor the reporter's default).
    assert!(
        message.contains("but no node took the pod within 4 s (scale_up_timeout_seconds)"),
        "{message}"
    );

    let state = final_state(&stack, misspelt.id).await;
    let message = state.message.unwrap_or_default();
    assert_eq!(state.state_type, StateType::Crashed, "{message}");
    assert!(
        message.contains(
            "job variable scale_up_timeout_seconds must be a whole number of seconds (0 for no \
             limit), got \"ten\""
        ),
        "{message}"
    );
    assert!(stack.jobs_of(misspelt.id).await.is_empty(), "no Job for it");
    stack.stop_services().await;
}
