//! Each way a flow run's infrastructure fails ends in the right Prefect state with a
//! message that names it, reported by a real reporter against a real Prefect server
//! and the Kubernetes API emulator; a run that fails by itself stays `Failed`.

mod support;

use prefect_client::StateType;
use reporter::INFRASTRUCTURE_PENDING;
use support::{JobSpec, Stack};

/// One failure scenario: the Job's pod and what the `Crashed` message must say.
struct Case {
    what: &'static str,
    spec: JobSpec,
    message_contains: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "image pull error",
            spec: JobSpec::image("registry.example.com/flows/pull-error:1"),
            message_contains: &["could not start", "ImagePullBackOff", "prefect-job"],
        },
        Case {
            what: "invalid image name",
            spec: JobSpec::image("Registry.Example.com/Flows/ETL:latest"),
            message_contains: &["could not start", "InvalidImageName", "prefect-job"],
        },
        Case {
            what: "missing Secret",
            spec: JobSpec {
                secret_env: Some("missing-db-credentials".into()),
                ..JobSpec::default()
            },
            message_contains: &[
                "CreateContainerConfigError",
                "Secret \"missing-db-credentials\" does not exist",
            ],
        },
        Case {
            what: "unschedulable pod",
            spec: JobSpec {
                cpu_request: Some("500".into()),
                pod_watch_timeout_seconds: Some(2),
                ..JobSpec::default()
            },
            message_contains: &["was not scheduled within 2 s", "Unschedulable"],
        },
        Case {
            what: "OOM kill",
            spec: JobSpec::image("registry.example.com/flows/oom:1"),
            message_contains: &["BackoffLimitExceeded", "OOMKilled", "exit code 137"],
        },
        Case {
            what: "eviction",
            spec: JobSpec {
                sidecar_script: Some("evict:0.3".into()),
                ..JobSpec::script("hang")
            },
            message_contains: &["BackoffLimitExceeded", "Evicted"],
        },
        Case {
            what: "non-zero exit before the flow reports",
            spec: JobSpec {
                script: Some("fail:3:0.2".into()),
                log: Some("ModuleNotFoundError: No module named 'flows'".into()),
                ..JobSpec::default()
            },
            message_contains: &[
                "BackoffLimitExceeded",
                "exit code 3",
                "Last lines of the pod log:",
                "ModuleNotFoundError: No module named 'flows'",
            ],
        },
        Case {
            what: "deadline",
            spec: JobSpec {
                script: Some("hang".into()),
                active_deadline_seconds: Some(1),
                ..JobSpec::default()
            },
            message_contains: &["failed: DeadlineExceeded"],
        },
        Case {
            what: "Job completed without a final state",
            spec: JobSpec::script("succeed:0.2"),
            message_contains: &["completed, but the flow run did not report a final state"],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_kind_ends_crashed_with_a_message_that_names_it() {
    let stack = Stack::start().await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let mut submitted = Vec::new();
    for case in cases() {
        let (run, job) = stack.submitted_run(&case.spec).await;
        submitted.push((case, run, job));
    }
    for (case, run, job) in &submitted {
        let state = stack.final_state(run.id).await;
        assert_eq!(
            state.state_type,
            StateType::Crashed,
            "{}: {:?}",
            case.what,
            state.message
        );
        let message = state.message.clone().unwrap_or_default();
        assert!(
            message.contains(job.as_str()),
            "{}: names the Job: {message}",
            case.what
        );
        for fragment in case.message_contains {
            assert!(
                message.contains(fragment),
                "{}: {fragment:?} missing from {message}",
                case.what
            );
        }
        let crashed = stack.states_of(run.id, StateType::Crashed, None).await;
        assert_eq!(crashed.len(), 1, "{}: reported once", case.what);
    }
    let (pull_error_run, _) = (&submitted[0].1, ());
    let pending = stack
        .states_of(
            pull_error_run.id,
            StateType::Pending,
            Some(INFRASTRUCTURE_PENDING),
        )
        .await;
    assert_eq!(
        pending.len(),
        1,
        "the pending pod was reported InfrastructurePending once"
    );
    let logs = stack.logs(pull_error_run.id).await;
    assert!(
        logs.iter()
            .any(|line| line.message.starts_with("Kubernetes event")
                && line.message.contains("pull")),
        "pod events reach the run's logs: {:?}",
        logs.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_job_crashes_its_run_and_a_run_that_failed_by_itself_stays_failed() {
    let stack = Stack::start().await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));

    let (deleted_run, deleted_job) = stack.submitted_run(&JobSpec::script("hang")).await;
    let (failing_run, _) = stack.submitted_run(&JobSpec::script("fail:1:1.5")).await;
    // The flow itself reports Running then Failed before its container exits non-zero.
    stack
        .set_state(failing_run.id, StateType::Running, "Running", false)
        .await;
    stack
        .set_state(failing_run.id, StateType::Failed, "Failed", false)
        .await;

    stack.wait_for_running_pod(&deleted_job).await;
    stack
        .set_state(deleted_run.id, StateType::Running, "Running", false)
        .await;
    stack.delete_job(&deleted_job).await;

    let state = stack.final_state(deleted_run.id).await;
    assert_eq!(state.state_type, StateType::Crashed, "{:?}", state.message);
    let message = state.message.unwrap_or_default();
    assert!(
        message.contains(&format!("Kubernetes Job default/{deleted_job} was deleted")),
        "{message}"
    );

    // Wait until the failing Job has failed, then give the reporter time to (not) act.
    support::eventually("the failing Job fails", || async {
        let pods = stack
            .pods_of_job(&format!(
                "run-{}",
                &failing_run.id.simple().to_string()[..12]
            ))
            .await;
        pods.iter()
            .any(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
    })
    .await;
    // A later run of the same reporter is reported, so the failed run has been evaluated.
    let (witness, _) = stack.submitted_run(&JobSpec::script("succeed:0.1")).await;
    assert_eq!(
        stack.final_state(witness.id).await.state_type,
        StateType::Crashed
    );
    let failing = stack.run(failing_run.id).await;
    assert_eq!(failing.state.map(|s| s.state_type), Some(StateType::Failed));
    assert!(stack
        .states_of(failing_run.id, StateType::Crashed, None)
        .await
        .is_empty());
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_another_work_pool_are_left_to_that_pool_s_reporter() {
    let stack = Stack::start().await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let other_deployment = stack.deployment_in_another_pool().await;
    let foreign = stack.claimed_run_of(other_deployment).await;
    let foreign_job = stack
        .submit(
            &foreign,
            &JobSpec::image("registry.example.com/flows/pull-error:1"),
        )
        .await;
    support::eventually("the other pool's pod cannot pull its image", || async {
        stack.pods_of_job(&foreign_job).await.iter().any(|pod| {
            pod.status
                .as_ref()
                .and_then(|status| status.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .is_some_and(|w| w.reason.as_deref() == Some("ImagePullBackOff"))
                })
        })
    })
    .await;
    // A run of our pool with the same failure, submitted afterwards, is reported.
    let (ours, _) = stack
        .submitted_run(&JobSpec::image("registry.example.com/flows/pull-error:1"))
        .await;
    assert_eq!(
        stack.final_state(ours.id).await.state_type,
        StateType::Crashed
    );
    let foreign_states = stack.states(foreign.id).await;
    assert_eq!(
        foreign_states
            .last()
            .map(|s| (s.state_type, s.name.clone())),
        Some((StateType::Pending, Some("Pending".to_owned()))),
        "untouched: still the dispatcher's claim"
    );
    assert!(
        stack.logs(foreign.id).await.is_empty(),
        "no event logs for another pool's run"
    );
    reporter.stop().await;
}
