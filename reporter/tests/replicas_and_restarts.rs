//! Several replicas and restarts: a standby takes over when the leader process is
//! SIGKILLed in the middle of a burst of failures and every run is reported exactly once; a restarted
//! reporter misses nothing (runs that failed and events that happened while it was
//! down) and repeats nothing (state proposals and logs are counted in Prefect); a Job
//! deleted while no reporter ran is still reported.

mod support;

use std::collections::HashMap;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use prefect_client::{FlowRun, StateType};
use reporter::INFRASTRUCTURE_PENDING;
use support::{eventually, JobSpec, Stack};

/// Every run ended Crashed, with exactly one Crashed and at most one
/// InfrastructurePending state in its history.
async fn assert_reported_exactly_once(stack: &Stack, runs: &[FlowRun]) {
    for run in runs {
        let state = stack.final_state(run.id).await;
        assert_eq!(state.state_type, StateType::Crashed, "{:?}", state.message);
        let crashed = stack.states_of(run.id, StateType::Crashed, None).await;
        assert_eq!(crashed.len(), 1, "run {} crashed once", run.id);
        let pending = stack
            .states_of(run.id, StateType::Pending, Some(INFRASTRUCTURE_PENDING))
            .await;
        assert!(
            pending.len() <= 1,
            "run {} InfrastructurePending at most once",
            run.id
        );
    }
}

/// No log line of the run was sent twice: a forwarded Event observation carries the
/// Event's text (with its count) and its time, so a repeat has both the same.
async fn assert_no_repeated_logs(stack: &Stack, runs: &[FlowRun]) {
    for run in runs {
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for line in stack.logs(run.id).await {
            *seen
                .entry((line.message, line.timestamp.to_rfc3339()))
                .or_default() += 1;
        }
        let repeated: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
        assert!(
            repeated.is_empty(),
            "run {}: repeated logs {repeated:?}",
            run.id
        );
    }
}

async fn has_event_log(stack: &Stack, run: &FlowRun, reason: &str) -> bool {
    let prefix = format!("Kubernetes event {reason} on pod");
    stack
        .logs(run.id)
        .await
        .iter()
        .any(|line| line.message.starts_with(&prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_is_sigkilled_and_every_run_is_reported_once() {
    let stack = Stack::start().await;
    let leader = stack.spawn_reporter_process("reporter-a");
    eventually("the reporter-a process leads", || async {
        stack.lease_holder().await.as_deref() == Some("reporter-a")
    })
    .await;
    let mut leader = Some(leader);
    let standby = stack.spawn_reporter(stack.reporter_config("reporter-b"));

    let mut runs = Vec::new();
    for index in 0..12 {
        let spec = if index % 2 == 0 {
            JobSpec::script("fail:2:0.3")
        } else {
            JobSpec::image("registry.example.com/flows/pull-error:1")
        };
        let (run, _) = stack.submitted_run(&spec).await;
        runs.push(run);
        if index == 5 {
            eventually("the leader reported some of the burst", || async {
                stack
                    .run(runs[0].id)
                    .await
                    .state
                    .is_some_and(|s| s.state_type.is_final())
            })
            .await;
            leader.take().expect("killed once").sigkill();
        }
    }
    eventually("reporter-b takes over", || async { standby.is_leader() }).await;
    assert_reported_exactly_once(&stack, &runs).await;
    assert_no_repeated_logs(&stack, &runs).await;
    standby.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_reporter_misses_nothing_and_repeats_nothing() {
    let stack = Stack::start().await;
    let first = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let mut before = Vec::new();
    for spec in [
        JobSpec::script("fail:1:0.2"),
        JobSpec::image("registry.example.com/flows/pull-error:1"),
        JobSpec::script("succeed:0.2"),
    ] {
        before.push(stack.submitted_run(&spec).await.0);
    }
    for run in &before {
        stack.final_state(run.id).await;
    }
    for run in &before {
        eventually("the run's pod events are logged", || async {
            has_event_log(&stack, run, "Scheduled").await
        })
        .await;
    }
    first.stop().await;

    // While no reporter runs: more failures, and their events.
    let mut during = Vec::new();
    for spec in [
        JobSpec::script("fail:1:0.2"),
        JobSpec::image("registry.example.com/flows/oom:1"),
        JobSpec::script("succeed:0.2"),
    ] {
        let (run, job) = stack.submitted_run(&spec).await;
        eventually("the pod finished", || async {
            stack.pods_of_job(&job).await.iter().any(|pod| {
                matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
            })
        })
        .await;
        during.push(run);
    }

    let second = stack.spawn_reporter(stack.reporter_config("reporter-a-restarted"));
    for run in &during {
        eventually("events from the downtime are logged", || async {
            has_event_log(&stack, run, "Scheduled").await
        })
        .await;
    }
    let all: Vec<FlowRun> = before.iter().chain(&during).cloned().collect();
    assert_reported_exactly_once(&stack, &all).await;
    // Another full reconcile cycle of the restarted reporter, then count again.
    let (witness, _) = stack.submitted_run(&JobSpec::script("succeed:0.1")).await;
    stack.final_state(witness.id).await;
    assert_reported_exactly_once(&stack, &all).await;
    assert_no_repeated_logs(&stack, &all).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_while_no_reporter_ran_is_reported_after_the_restart() {
    let stack = Stack::start().await;
    let (run, job) = stack.submitted_run(&JobSpec::script("hang")).await;
    stack.wait_for_running_pod(&job).await;
    stack
        .set_state(run.id, StateType::Running, "Running", false)
        .await;
    stack.delete_job(&job).await;
    eventually("the Job is gone", || async {
        !stack.job_exists(&job).await
    })
    .await;

    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let state = stack.final_state(run.id).await;
    assert_eq!(state.state_type, StateType::Crashed, "{:?}", state.message);
    let message = state.message.unwrap_or_default();
    // Never seen by this reporter, the Job may as well never have been created.
    assert!(
        message.contains(&format!("Kubernetes Job default/{job}"))
            && message.contains("it was deleted, or it was never created"),
        "{message}"
    );
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_gracefully_releases_its_lease_and_the_standby_leads() {
    let stack = Stack::start().await;
    let config = stack.reporter_config("reporter-a");
    let lease_name = config.lease_name();
    let leader = stack.spawn_reporter(config);
    eventually("reporter-a leads", || async { leader.is_leader() }).await;
    let standby = stack.spawn_reporter(stack.reporter_config("reporter-b"));
    leader.stop().await;
    eventually("reporter-b leads", || async { standby.is_leader() }).await;
    let lease = Api::<Lease>::namespaced(stack.kube.clone(), support::NAMESPACE)
        .get(&lease_name)
        .await
        .expect("the Lease");
    let spec = lease.spec.expect("a spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("reporter-b"));
    assert!(
        spec.lease_transitions.unwrap_or(0) >= 1,
        "the handover is counted"
    );
    standby.stop().await;
}
