//! An `InfrastructurePending` that lands after the flow moved on (Prefect has no
//! compare-and-set, and accepts `PENDING` on `AwaitingRetry` and on final states) is
//! undone: the reporter puts back the state the flow reported, so the run is
//! submitted again or stays finished, never left `InfrastructurePending` for good.
//! Found by the fault campaign (seed 22): `Running → AwaitingRetry →
//! InfrastructurePending`, the Job complete, the run stuck. Real reporter, real
//! Prefect server, the Kubernetes API emulator.

mod support;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use prefect_client::{FlowRun, SetStateStatus, StateCreate, StateType};
use reporter::service::evaluate::transition_id;
use reporter::INFRASTRUCTURE_PENDING;
use support::{eventually, JobSpec, Stack, NAMESPACE};

/// A run whose Job's pod ran and ended, after the flow reported `flow_state`; then
/// the reporter's `InfrastructurePending` (its transition id, for that Job) lands.
async fn late_infrastructure_pending(stack: &Stack, flow_state: StateCreate) -> FlowRun {
    let (run, job) = stack.submitted_run(&JobSpec::script("succeed:0.2")).await;
    let jobs: Api<Job> = Api::namespaced(stack.kube.clone(), NAMESPACE);
    eventually("the Job completes", || async {
        let job = jobs.get(&job).await.expect("read the Job");
        job.status.and_then(|s| s.succeeded).unwrap_or(0) == 1
    })
    .await;
    stack
        .set_state(run.id, StateType::Running, "Running", false)
        .await;
    let reported = stack
        .prefect
        .set_flow_run_state(run.id, &flow_state, false)
        .await
        .expect("the flow reports");
    assert_eq!(reported.status, SetStateStatus::Accept);
    let uid = jobs.get(&job).await.unwrap().metadata.uid.unwrap();
    let ours = transition_id(run.id, &uid, "infrastructure-pending");
    let late = StateCreate::new(StateType::Pending, INFRASTRUCTURE_PENDING)
        .with_message("Kubernetes pod is pending.")
        .with_transition_id(ours);
    let landed = stack
        .prefect
        .set_flow_run_state(run.id, &late, false)
        .await
        .expect("the late proposal");
    assert_eq!(landed.status, SetStateStatus::Accept, "Prefect takes it");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_infrastructure_pending_on_a_rescheduled_run_gives_the_run_back_to_the_scheduler() {
    let stack = Stack::start().await;
    let in_an_hour = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let mut awaiting_retry = StateCreate::new(StateType::Scheduled, "AwaitingRetry");
    awaiting_retry.state_details.scheduled_time = Some(in_an_hour);
    let run = late_infrastructure_pending(&stack, awaiting_retry).await;
    let _reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));

    eventually("the run is AwaitingRetry again", || async {
        let state = stack.run(run.id).await.state.unwrap();
        state.state_type == StateType::Scheduled
    })
    .await;
    let state = stack.run(run.id).await.state.unwrap();
    assert_eq!(state.display_name(), "AwaitingRetry");
    let scheduled = state.state_details.scheduled_time.expect("scheduled time");
    assert!(
        (scheduled - in_an_hour).num_milliseconds().abs() < 1_000,
        "the retry keeps its time: {scheduled}"
    );
    // It stays there: nothing crashes it or claims it again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = stack.run(run.id).await.state.unwrap();
    assert_eq!(after.id, state.id, "left alone once restored");
    assert!(stack
        .states_of(run.id, StateType::Crashed, None)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_infrastructure_pending_on_a_completed_run_gives_it_its_final_state_back() {
    let stack = Stack::start().await;
    let completed = StateCreate::new(StateType::Completed, "Completed");
    let run = late_infrastructure_pending(&stack, completed).await;
    let _reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));

    eventually("the run is Completed again", || async {
        let state = stack.run(run.id).await.state.unwrap();
        state.state_type == StateType::Completed
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let state = stack.run(run.id).await.state.unwrap();
    assert_eq!(
        state.state_type,
        StateType::Completed,
        "and stays Completed"
    );
    assert!(stack
        .states_of(run.id, StateType::Crashed, None)
        .await
        .is_empty());
}
