//! The finished-Job sweep (`--delete-finished-jobs-after`): Jobs that completed or
//! failed are deleted once old enough; a Job still running is left alone.

mod support;

use prefect_client::StateType;
use support::{eventually, JobSpec, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_and_running_ones_kept() {
    let stack = Stack::start().await;
    let mut config = stack.reporter_config("reporter-a");
    config.delete_finished_jobs_after = Some(1);
    let reporter = stack.spawn_reporter(config);

    let (completed_run, completed_job) = stack.submitted_run(&JobSpec::script("succeed:0.2")).await;
    let (failed_run, failed_job) = stack.submitted_run(&JobSpec::script("fail:1:0.2")).await;
    let (_, running_job) = stack.submitted_run(&JobSpec::script("hang")).await;

    for job in [&completed_job, &failed_job] {
        eventually(&format!("finished Job {job} is deleted"), || async {
            !stack.job_exists(job).await
        })
        .await;
    }
    // Deleting them did not turn the reports into "Job deleted" ones.
    for run in [&completed_run, &failed_run] {
        let state = stack.final_state(run.id).await;
        assert_eq!(state.state_type, StateType::Crashed);
        assert!(
            !state.message.unwrap_or_default().contains("was deleted"),
            "the crash names the Job's own end"
        );
    }
    assert!(stack.job_exists(&running_job).await, "a running Job stays");
    reporter.stop().await;
}
