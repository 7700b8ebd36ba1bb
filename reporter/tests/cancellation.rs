//! Cancelling a run (Prefect `CANCELLING`) deletes its Job and ends it `Cancelled`:
//! for a pending run, a running one, one cancelled before its Job was recorded, and
//! one cancelled while no reporter was running.

mod support;

use prefect_client::StateType;
use support::{eventually, JobSpec, Stack};

fn assert_cancelled_with(state: &prefect_client::State, fragment: &str) {
    assert_eq!(
        state.state_type,
        StateType::Cancelled,
        "{:?}",
        state.message
    );
    let message = state.message.as_deref().unwrap_or_default();
    assert!(
        message.contains(fragment),
        "{fragment:?} missing from {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_pending_and_running_runs_deletes_their_jobs_and_ends_them_cancelled() {
    let stack = Stack::start().await;
    // The pending run's pod can never start (pull error); it is cancelled well within
    // the crash grace.
    let mut config = stack.reporter_config("reporter-a");
    config.grace.image_error_grace_seconds = Some(600.0);
    let reporter = stack.spawn_reporter(config);

    let (pending_run, pending_job) = stack
        .submitted_run(&JobSpec::image("registry.example.com/flows/pull-error:1"))
        .await;
    let (running_run, running_job) = stack.submitted_run(&JobSpec::script("hang")).await;
    stack.wait_for_running_pod(&running_job).await;
    stack
        .set_state(running_run.id, StateType::Running, "Running", false)
        .await;
    // Cancelled before the dispatcher recorded any Job.
    let unrecorded_run = stack.claimed_run().await;

    for run in [&pending_run, &running_run, &unrecorded_run] {
        stack
            .set_state(run.id, StateType::Cancelling, "Cancelling", false)
            .await;
    }

    for (run, job) in [(&pending_run, &pending_job), (&running_run, &running_job)] {
        let state = stack.final_state(run.id).await;
        assert_cancelled_with(&state, &format!("deleted Kubernetes Job default/{job}"));
        eventually(&format!("Job {job} and its pods are gone"), || async {
            !stack.job_exists(job).await && stack.pods_of_job(job).await.is_empty()
        })
        .await;
        assert!(
            stack
                .states_of(run.id, StateType::Crashed, None)
                .await
                .is_empty(),
            "a cancelled run is never crashed"
        );
    }
    let state = stack.final_state(unrecorded_run.id).await;
    assert_cancelled_with(&state, "before a Kubernetes Job was recorded");
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_while_no_reporter_ran_is_cancelled_after_the_restart() {
    let stack = Stack::start().await;
    let (run, job) = stack.submitted_run(&JobSpec::script("hang")).await;
    stack.wait_for_running_pod(&job).await;
    stack
        .set_state(run.id, StateType::Cancelling, "Cancelling", false)
        .await;

    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let state = stack.final_state(run.id).await;
    assert_cancelled_with(&state, &format!("deleted Kubernetes Job default/{job}"));
    eventually("the Job is gone", || async {
        !stack.job_exists(&job).await
    })
    .await;
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_job_deletion_disabled_the_job_is_kept_and_the_run_still_cancelled() {
    let stack = Stack::start().await;
    let mut config = stack.reporter_config("reporter-a");
    config.disable_job_deletion = true;
    let reporter = stack.spawn_reporter(config);
    let (run, job) = stack.submitted_run(&JobSpec::script("hang")).await;
    stack
        .set_state(run.id, StateType::Cancelling, "Cancelling", false)
        .await;
    let state = stack.final_state(run.id).await;
    assert_cancelled_with(&state, "was not deleted");
    assert!(stack.job_exists(&job).await);
    reporter.stop().await;
}
