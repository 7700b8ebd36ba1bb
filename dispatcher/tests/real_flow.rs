//! A real Prefect flow runs in a "pod": the emulator's process runtime starts
//! the Job's container command (`prefect flow-run execute`) as a local
//! process, and the flow reports itself Completed to the real Prefect server.

mod support;

use prefect_client::{DeploymentCreate, StateType};
use serde_json::json;
use support::{eventually, Stack};
use test_stack::prefect::unique_name;

const FLOW_SOURCE: &str = r#"
from prefect import flow

@flow
def greet(name: str = "kubernetes") -> str:
    print(f"hello, {name}")
    return name
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_flow_runs_in_a_process_pod_and_completes() {
    let mut stack = Stack::start(kube_emulator::RuntimeKind::Process).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
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
            job_variables: Some(json!({
                "env": {
                    // The "pod" is a local process: it finds `prefect` in the
                    // project virtualenv and keeps its state in a temp dir.
                    "PATH": format!("{}:/usr/local/bin:/usr/bin:/bin", venv_bin.display()),
                    "PREFECT_HOME": flow_home.path(),
                }
            })),
            ..DeploymentCreate::new(unique_name("greet"), flow.id)
        })
        .await
        .unwrap();
    let run = stack.run_of(&deployment, None).await;

    eventually("the flow run reaches a final state", || async {
        stack
            .run(run.id)
            .await
            .state
            .map(|s| s.state_type.is_final())
            .unwrap_or(false)
    })
    .await;
    let state = stack.run(run.id).await.state.unwrap();
    assert_eq!(
        state.state_type,
        StateType::Completed,
        "the flow ran in the pod and completed: {state:?}"
    );
    assert_eq!(stack.jobs_of(run.id).await.len(), 1);
    stack.stop_services().await;
}
