//! Which Jobs of final runs are deleted, and why.

use super::*;
use crate::test_fixtures::*;

const PULL_BACK_OFF: &str = "Back-off pulling image \"registry.example.com/flows/pull-error:1\"";

fn crashed() -> FlowRunState {
    run_state(StateType::Crashed, "Crashed")
}

fn reasons(
    state: &FlowRunState,
    jobs: &[JobView],
    pods: &[PodView],
) -> Vec<(String, WithdrawReason)> {
    jobs_to_withdraw(state, jobs, pods)
        .iter()
        .map(|withdrawal| (withdrawal.job.name.to_string(), withdrawal.reason))
        .collect()
}

#[test]
fn a_crashed_run_s_job_whose_pod_cannot_pull_its_image_is_withdrawn() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(at(1), "ImagePullBackOff", PULL_BACK_OFF)
        .view()];
    assert_eq!(
        reasons(&crashed(), &jobs, &pods),
        [(JOB_NAME.to_owned(), WithdrawReason::RunCrashed)]
    );
    assert!(
        reasons(&run_state(StateType::Running, "Running"), &jobs, &pods).is_empty(),
        "only once the run is final"
    );
    assert!(
        reasons(&run_state(StateType::Failed, "Failed"), &jobs, &pods).is_empty(),
        "a run that failed by itself keeps its Job (the TTL controller's)"
    );
    assert_eq!(
        WithdrawReason::RunCrashed.log_message(&jobs[0]),
        "Deleted Kubernetes Job prefect/crimson-otter-x7k2p: the flow run crashed and no pod of \
         the Job runs; Kubernetes would otherwise keep retrying it (pulling the image, waiting \
         for a node, replacing failed pods) and could start the flow of a crashed run."
    );
}

#[test]
fn a_crashed_run_s_job_whose_pod_never_got_a_node_or_was_never_created_is_withdrawn() {
    let jobs = [JobFixture::new().active().view()];
    let unscheduled = [PodFixture::new()
        .unschedulable("0/1 nodes are available: 1 Insufficient cpu.", at(0))
        .view()];
    assert_eq!(reasons(&crashed(), &jobs, &unscheduled).len(), 1);
    let no_pod = [JobFixture::new().released(at(0)).view()];
    assert_eq!(
        reasons(&crashed(), &no_pod, &[]),
        [(JOB_NAME.to_owned(), WithdrawReason::RunCrashed)],
        "FailedCreate: nothing active"
    );
}

#[test]
fn a_crashed_run_s_job_with_a_running_or_unseen_pod_stays() {
    let jobs = [JobFixture::new().active().view()];
    let running = [PodFixture::new().running(at(3)).view()];
    assert!(
        reasons(&crashed(), &jobs, &running).is_empty(),
        "the flow may be finishing (e.g. crashed by Prefect for missed heartbeats)"
    );
    assert!(
        reasons(&crashed(), &jobs, &[]).is_empty(),
        "the Job counts an active pod the store has not seen"
    );
    let ended = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view()];
    assert!(
        reasons(&crashed(), &ended, &[]).is_empty(),
        "nothing runs any more"
    );
    let mut never_seen = JobFixture::new().released(at(0)).view();
    never_seen.never_observed = true;
    assert!(reasons(&crashed(), &[never_seen], &[]).is_empty());
}
