//! Regression tests of issue 9's scenarios that are the reporter's alone:
//!
//! 3. A leader whose Lease renewal hangs (an API server that accepts and
//!    never answers) stops acting before a standby may take over.
//! 8. Memory stays bounded: the views of deleted Jobs and pods (tombstones)
//!    go on standbys too, and for runs of other work pools.
//!
//! And one the long campaign's review found: a claim lost while the pid still
//! names an earlier submission's Job.

mod support;

use std::time::{Duration, Instant};

use flow_run_proto::SubmissionKey;
use kube_emulator::FaultSettings;
use prefect_client::{SetStateStatus, StateCreate, StateType};
use reporter::service::Reporter;
use support::{eventually, JobSpec, Stack};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_a_leader_whose_renewal_hangs_steps_down_before_a_standby_may_take_over() {
    let stack = Stack::start().await;
    let config = stack.reporter_config("hung-leader");
    let lease_duration = Duration::from_secs(config.lease_duration_seconds);
    let reporter = stack.spawn_reporter(config);
    eventually("the reporter leads", || async { reporter.is_leader() }).await;
    stack.emulator.set_faults(FaultSettings {
        latency_ms: 60_000,
        verb: Some("update".into()),
        resource: Some("leases".into()),
        ..FaultSettings::default()
    });
    let hung_at = Instant::now();
    eventually("the leader steps down", || async { !reporter.is_leader() }).await;
    let stepped_down_after = hung_at.elapsed();
    assert!(
        stepped_down_after < lease_duration,
        "stepped down {stepped_down_after:?} after its renewals started hanging; a standby may \
         take over after {lease_duration:?}"
    );
    stack.emulator.set_faults(FaultSettings::default());
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_tombstones_go_on_standbys_and_for_other_pools() {
    let stack = Stack::start().await;
    let shutdown = CancellationToken::new();
    let mut stores = Vec::new();
    for identity in ["leader", "standby"] {
        let reporter = Reporter::new(
            stack.reporter_config(identity),
            stack.services_prefect(),
            stack.kube.clone(),
        );
        stores.push(reporter.store());
        tokio::spawn(reporter.run(shutdown.clone()));
    }
    let other_pool = stack.deployment_in_another_pool().await;
    let mut jobs = Vec::new();
    for index in 0..12 {
        let run = if index % 2 == 0 {
            stack.claimed_run().await
        } else {
            stack.claimed_run_of(other_pool).await
        };
        jobs.push(stack.submit(&run, &JobSpec::script("hang")).await);
    }
    eventually("both replicas see every Job", || async {
        stores
            .iter()
            .all(|store| store.read(|s| s.counts().0) >= jobs.len())
    })
    .await;
    for job in &jobs {
        stack.delete_job(job).await;
    }
    eventually(
        "no replica keeps views of the deleted Jobs and pods",
        || async {
            stores
                .iter()
                .all(|store| store.read(|s| s.counts()) == (0, 0, 0))
        },
    )
    .await;
    shutdown.cancel();
}

/// A run rescheduled and claimed again whose new claim's message is lost for good
/// before that claim records its pid: the pid still names the first submission's
/// Job, which the store knows. The reporter crashes the run after the grace, as it
/// does a claim with no pid at all (found by the long campaign's review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_claim_lost_while_the_pid_names_an_earlier_submissions_job_is_crashed() {
    let stack = Stack::start().await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let (run, first_job) = stack.submitted_run(&JobSpec::script("hang")).await;
    stack.wait_for_running_pod(&first_job).await;
    stack
        .set_state(run.id, StateType::Scheduled, "AwaitingRetry", true)
        .await;
    let second_claim = SubmissionKey::new(run.id, Uuid::new_v4());
    let claimed = stack
        .prefect
        .set_flow_run_state(
            run.id,
            &StateCreate::pending_claim(second_claim.claim_transition_id()),
            false,
        )
        .await
        .expect("claim again");
    assert_eq!(claimed.status, SetStateStatus::Accept);

    let state = stack.final_state(run.id).await;
    assert_eq!(state.state_type, StateType::Crashed, "{state:?}");
    let message = state.message.unwrap_or_default();
    assert!(
        message.contains("no Kubernetes Job was ever recorded for that claim"),
        "{message}"
    );
    reporter.stop().await;
}
