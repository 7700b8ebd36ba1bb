//! Case-by-case tests of `decide` and `crash_message`, one per failure kind of the
//! reporter issue and of the research tables (kube-emulator.md §4–§5,
//! prefect3-worker.md §3.8).

use super::*;
use crate::run_state::StateType;
use crate::test_fixtures::*;

const SCHEDULER_MESSAGE: &str =
    "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
const PULL_MESSAGE: &str = "failed to pull and unpack image \"registry.example.com/flows/etl:2.1\": failed to resolve reference: registry.example.com/flows/etl:2.1: not found";

fn decide_at(state: &FlowRunState, jobs: &[JobView], pods: &[PodView], now: Timestamp) -> Decision {
    decide(&DecisionInput {
        run_state: state,
        jobs,
        pods,
        now,
        settings: &DecisionSettings::default(),
    })
}

fn crashed(decision: Decision) -> CrashReport {
    match decision {
        Decision::ProposeCrashed(report) => report,
        other => panic!("expected ProposeCrashed, got {other:?}"),
    }
}

fn pending() -> FlowRunState {
    run_state(StateType::Pending, "Pending")
}

fn infrastructure_pending() -> FlowRunState {
    run_state(StateType::Pending, INFRASTRUCTURE_PENDING_NAME)
}

fn running() -> FlowRunState {
    run_state(StateType::Running, "Running")
}

const INFRASTRUCTURE_PENDING_NAME: &str = crate::run_state::INFRASTRUCTURE_PENDING;

// --- InfrastructurePending -------------------------------------------------------------

#[test]
fn pending_pod_of_a_pending_run_proposes_infrastructure_pending() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().container_creating(at(1)).view()];
    assert_eq!(
        decide_at(&pending(), &jobs, &pods, at(2)),
        Decision::ProposeInfrastructurePending
    );
}

#[test]
fn pending_pod_of_a_scheduled_run_proposes_infrastructure_pending() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().view()];
    let state = run_state(StateType::Scheduled, "Scheduled");
    assert_eq!(
        decide_at(&state, &jobs, &pods, at(1)),
        Decision::ProposeInfrastructurePending
    );
}

#[test]
fn pending_pod_of_an_infrastructure_pending_run_needs_nothing() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().container_creating(at(1)).view()];
    assert_eq!(
        decide_at(&infrastructure_pending(), &jobs, &pods, at(2)),
        Decision::Nothing
    );
}

#[test]
fn pending_pod_never_moves_a_running_paused_or_final_run_back_to_pending() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().container_creating(at(1)).view()];
    for state in [
        running(),
        run_state(StateType::Paused, "Suspended"),
        run_state(StateType::Cancelling, "Cancelling"),
        run_state(StateType::Completed, "Completed"),
    ] {
        assert_eq!(
            decide_at(&state, &jobs, &pods, at(2)),
            Decision::Nothing,
            "state {state:?}"
        );
    }
}

#[test]
fn running_pod_needs_nothing() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().running(at(5)).view()];
    assert_eq!(
        decide_at(&running(), &jobs, &pods, at(600)),
        Decision::Nothing
    );
}

// --- Image pull errors -----------------------------------------------------------------

#[test]
fn pull_error_inside_its_grace_waits_until_the_grace_ends() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(at(1), "ErrImagePull", PULL_MESSAGE)
        .view()];
    // No earlier observation (e.g. right after a restart): grace runs from scheduling.
    assert_eq!(
        decide_at(&infrastructure_pending(), &jobs, &pods, at(30)),
        Decision::WaitUntil(at(61))
    );
}

#[test]
fn pull_error_past_its_grace_crashes_naming_pod_container_and_reason() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(
            at(1),
            "ImagePullBackOff",
            "Back-off pulling image \"registry.example.com/flows/etl:2.1\"",
        )
        .view()];
    let report = crashed(decide_at(&infrastructure_pending(), &jobs, &pods, at(61)));
    assert_eq!(
        report.cause,
        CrashCause::ContainerCannotStart {
            grace_seconds: 60,
            missing: None
        }
    );
    assert_eq!(report.log_plan(), [], "the container never ran");
    let message = crash_message(&report, None);
    assert_eq!(
        message,
        "Container \"prefect-job\" of pod prefect/crimson-otter-x7k2p-5bhw4 (Job crimson-otter-x7k2p) \
         could not start: it has been waiting in ImagePullBackOff for more than 60 s. \
         Kubernetes says: Back-off pulling image \"registry.example.com/flows/etl:2.1\"."
    );
}

#[test]
fn pull_error_grace_runs_from_the_first_observation_carried_across_updates() {
    let jobs = [JobFixture::new().active().view()];
    let creating = PodFixture::new().container_creating(at(1)).view();
    let mut err_image_pull = PodFixture::new()
        .waiting(at(1), "ErrImagePull", PULL_MESSAGE)
        .view();
    err_image_pull.carry_over_from(&creating, at(40));
    let mut back_off = PodFixture::new()
        .waiting(at(1), "ImagePullBackOff", "Back-off pulling image")
        .view();
    back_off.carry_over_from(&err_image_pull, at(55));

    let first_seen = back_off.containers[0]
        .waiting
        .as_ref()
        .and_then(|waiting| waiting.first_observed);
    assert_eq!(
        first_seen,
        Some(at(40)),
        "ErrImagePull -> ImagePullBackOff keeps the start"
    );
    assert_eq!(
        decide_at(
            &infrastructure_pending(),
            &jobs,
            &[back_off.clone()],
            at(99)
        ),
        Decision::WaitUntil(at(100))
    );
    assert!(matches!(
        decide_at(&infrastructure_pending(), &jobs, &[back_off], at(100)),
        Decision::ProposeCrashed(_)
    ));
}

#[test]
fn pull_error_in_a_run_not_yet_infrastructure_pending_first_proposes_infrastructure_pending() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(at(1), "ErrImagePull", PULL_MESSAGE)
        .view()];
    let state = run_state(StateType::Scheduled, "Scheduled");
    // Past the grace, but a SCHEDULED run is never crashed: it is moved to pending first.
    assert_eq!(
        decide_at(&state, &jobs, &pods, at(300)),
        Decision::ProposeInfrastructurePending
    );
}

#[test]
fn invalid_image_name_past_its_grace_crashes() {
    let message = "Failed to apply default image tag \"Registry/ETL:Latest\": couldn't parse image name \"Registry/ETL:Latest\": invalid reference format: repository name must be lowercase";
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(at(1), "InvalidImageName", message)
        .view()];
    let report = crashed(decide_at(&infrastructure_pending(), &jobs, &pods, at(62)));
    let text = crash_message(&report, None);
    assert!(text.contains("waiting in InvalidImageName"), "{text}");
    assert!(text.contains("repository name must be lowercase"), "{text}");
}

// --- Missing Secret / ConfigMap --------------------------------------------------------

#[test]
fn missing_secret_crashes_after_the_config_grace_naming_the_secret() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(
            at(1),
            "CreateContainerConfigError",
            "secret \"db-credentials\" not found",
        )
        .view()];
    assert_eq!(
        decide_at(&infrastructure_pending(), &jobs, &pods, at(20)),
        Decision::WaitUntil(at(31))
    );
    let report = crashed(decide_at(&infrastructure_pending(), &jobs, &pods, at(31)));
    assert_eq!(
        report.cause,
        CrashCause::ContainerCannotStart {
            grace_seconds: 30,
            missing: Some(MissingReference::Secret {
                name: "db-credentials".into()
            })
        }
    );
    let text = crash_message(&report, None);
    assert!(
        text.contains("CreateContainerConfigError for more than 30 s because Secret \"db-credentials\" does not exist."),
        "{text}"
    );
}

#[test]
fn missing_key_in_a_config_map_is_named_with_the_key() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .waiting(
            at(1),
            "CreateContainerConfigError",
            "couldn't find key DATABASE_URL in ConfigMap prefect/etl-settings",
        )
        .view()];
    let report = crashed(decide_at(&running(), &jobs, &pods, at(45)));
    let text = crash_message(&report, None);
    assert!(
        text.contains(
            "because key \"DATABASE_URL\" is missing from ConfigMap prefect/etl-settings."
        ),
        "{text}"
    );
}

#[test]
fn missing_references_are_parsed_from_the_kubelet_messages() {
    let cases = [
        (
            "configmap \"etl-settings\" not found",
            Some(MissingReference::ConfigMap {
                name: "etl-settings".into(),
            }),
        ),
        (
            "Error: secret \"s3\" not found",
            Some(MissingReference::Secret { name: "s3".into() }),
        ),
        (
            "couldn't find key password in Secret prefect/db",
            Some(MissingReference::SecretKey {
                key: "password".into(),
                object: "prefect/db".into(),
            }),
        ),
        (
            "container has runAsNonRoot and image will run as root",
            None,
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(MissingReference::parse(message), expected, "{message}");
    }
}

// --- Unschedulable ---------------------------------------------------------------------

#[test]
fn unschedulable_pod_before_the_pod_watch_timeout_waits_for_it() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .unschedulable(SCHEDULER_MESSAGE, at(0))
        .view()];
    assert_eq!(
        decide_at(&infrastructure_pending(), &jobs, &pods, at(59)),
        Decision::WaitUntil(at(60))
    );
}

#[test]
fn unschedulable_pod_past_the_pod_watch_timeout_crashes_with_the_scheduler_message() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new()
        .unschedulable(SCHEDULER_MESSAGE, at(0))
        .view()];
    let report = crashed(decide_at(&infrastructure_pending(), &jobs, &pods, at(60)));
    let text = crash_message(&report, None);
    assert_eq!(
        text,
        format!(
            "Pod prefect/crimson-otter-x7k2p-5bhw4 (Job crimson-otter-x7k2p) was not scheduled \
             within 60 s (pod_watch_timeout_seconds): Unschedulable: {SCHEDULER_MESSAGE}"
        )
    );
}

#[test]
fn pod_watch_timeout_comes_from_the_job_annotation_and_zero_disables_it() {
    let pods = [PodFixture::new()
        .unschedulable(SCHEDULER_MESSAGE, at(0))
        .view()];
    let five_minutes = [JobFixture::new()
        .pod_watch_timeout(Some("300"))
        .active()
        .view()];
    assert_eq!(
        decide_at(&infrastructure_pending(), &five_minutes, &pods, at(120)),
        Decision::WaitUntil(at(300))
    );
    let disabled = [JobFixture::new()
        .pod_watch_timeout(Some("0"))
        .active()
        .view()];
    assert_eq!(
        decide_at(&infrastructure_pending(), &disabled, &pods, at(100_000)),
        Decision::Nothing
    );
    let settings = DecisionSettings {
        default_pod_watch_timeout: Duration::from_secs(90),
        ..DecisionSettings::default()
    };
    let unannotated = [JobFixture::new().pod_watch_timeout(None).active().view()];
    let decision = decide(&DecisionInput {
        run_state: &infrastructure_pending(),
        jobs: &unannotated,
        pods: &pods,
        now: at(10),
        settings: &settings,
    });
    assert_eq!(decision, Decision::WaitUntil(at(90)));
}

#[test]
fn job_without_any_pod_past_the_pod_watch_timeout_crashes() {
    let jobs = [JobFixture::new().view()];
    assert_eq!(
        decide_at(&pending(), &jobs, &[], at(30)),
        Decision::WaitUntil(at(60))
    );
    let report = crashed(decide_at(&pending(), &jobs, &[], at(60)));
    assert_eq!(
        report.cause,
        CrashCause::NoPodCreated {
            timeout_seconds: 60
        }
    );
    assert!(crash_message(&report, None).contains("created no pod within 60 s"));
}

#[test]
fn job_counting_an_active_pod_the_reporter_does_not_see_is_not_crashed() {
    let jobs = [JobFixture::new().active().view()];
    assert_eq!(
        decide_at(&running(), &jobs, &[], at(3600)),
        Decision::Nothing
    );
}

// --- Which log a crash reads -------------------------------------------------------------

fn container(
    name: &str,
    role: crate::observe::ContainerRole,
    waiting: Option<crate::observe::WaitingReason>,
    terminated: Option<(crate::observe::TerminatedReason, i32)>,
    last_terminated: Option<(crate::observe::TerminatedReason, i32)>,
) -> crate::observe::ContainerView {
    use crate::observe::{TerminatedView, WaitingView};
    let ended = |(reason, exit_code)| {
        Box::new(TerminatedView {
            reason,
            exit_code,
            finished_at: Some(at(5)),
            message: None,
        })
    };
    crate::observe::ContainerView {
        name: name.into(),
        role,
        waiting: waiting.map(|reason| {
            Box::new(WaitingView {
                reason,
                message: None,
                first_observed: Some(at(1)),
            })
        }),
        restart_count: u32::from(last_terminated.is_some()),
        terminated: terminated.map(ended),
        last_terminated: last_terminated.map(ended),
    }
}

fn plan(report: &CrashReport) -> Vec<(String, bool)> {
    report
        .log_plan()
        .iter()
        .map(|source| (source.container.to_owned(), source.previous))
        .collect()
}

#[test]
fn the_log_plan_reads_the_flow_container_first_its_failed_instance_first_then_the_others() {
    use crate::observe::{ContainerRole::*, TerminatedReason, WaitingReason};
    let jobs = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(6),
        )
        .view()];
    let mut pod = PodFixture::new().terminated("Error", 1, at(5)).view();
    pod.containers = Box::new([
        container(
            "setup",
            Init,
            None,
            Some((TerminatedReason::Completed, 0)),
            None,
        ),
        container("sidecar", Main, None, None, None),
        container(
            "prefect-job",
            Main,
            Some(WaitingReason::CrashLoopBackOff),
            None,
            Some((TerminatedReason::Error, 1)),
        ),
    ]);
    let report = crashed(decide_at(&running(), &jobs, &[pod], at(60)));
    assert_eq!(
        plan(&report),
        [
            ("prefect-job".to_owned(), true),
            ("sidecar".to_owned(), false),
            ("setup".to_owned(), false)
        ],
        "prefect-job's failed instance, then the sidecar, then the init container"
    );
}

#[test]
fn a_flow_container_that_never_ran_leaves_the_sidecar_s_log() {
    use crate::observe::{ContainerRole::*, WaitingReason};
    let jobs = [JobFixture::new().active().view()];
    let mut pod = PodFixture::new()
        .waiting(at(1), "ErrImagePull", PULL_MESSAGE)
        .view();
    pod.containers = Box::new([
        container(
            "prefect-job",
            Main,
            Some(WaitingReason::ErrImagePull),
            None,
            None,
        ),
        container("sidecar", Main, None, None, None),
    ]);
    let report = crashed(decide_at(&infrastructure_pending(), &jobs, &[pod], at(100)));
    assert_eq!(plan(&report), [("sidecar".to_owned(), false)]);
}

// --- Pod and Job failures --------------------------------------------------------------

#[test]
fn oom_killed_pod_that_fails_the_job_crashes_naming_oomkilled_and_exit_137() {
    let jobs = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(42),
        )
        .view()];
    let pods = [PodFixture::new()
        .terminated("OOMKilled", 137, at(41))
        .view()];
    assert_eq!(
        decide_at(&running(), &jobs, &pods, at(45)),
        Decision::WaitUntil(at(52)),
        "settle grace after the failure"
    );
    let report = crashed(decide_at(&running(), &jobs, &pods, at(52)));
    let text = crash_message(&report, Some("Killed\n"));
    assert_eq!(
        text,
        "Kubernetes Job prefect/crimson-otter-x7k2p failed: BackoffLimitExceeded (Job has reached \
         the specified backoff limit). Pod crimson-otter-x7k2p-5bhw4, container \"prefect-job\": \
         OOMKilled, exit code 137.\n\nLast lines of the pod log:\nKilled"
    );
    assert_eq!(
        report.log_plan(),
        [LogSource {
            namespace: NAMESPACE,
            pod: POD_NAME,
            container: CONTAINER,
            previous: false
        }]
    );
}

#[test]
fn oom_killed_pod_while_the_job_still_has_retries_needs_nothing() {
    let jobs = [JobFixture::new()
        .backoff_limit(Some(2))
        .active_after_failures(1)
        .view()];
    let pods = [
        PodFixture::new()
            .terminated("OOMKilled", 137, at(30))
            .view(),
        PodFixture::new()
            .of_job(
                JOB_NAME,
                JOB_UID,
                "crimson-otter-x7k2p-q8w2z",
                "8b1f0c55-0f0e-4a59-9d0c-5b7b8e1f2a3c",
            )
            .created(at(41))
            .running(at(43))
            .view(),
    ];
    assert_eq!(
        decide_at(&running(), &jobs, &pods, at(60)),
        Decision::Nothing
    );
}

#[test]
fn non_zero_exit_before_the_flow_reports_crashes_a_pending_or_running_run() {
    let jobs = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view()];
    let pods = [PodFixture::new().terminated("Error", 5, at(2)).view()];
    for state in [infrastructure_pending(), running()] {
        let report = crashed(decide_at(&state, &jobs, &pods, at(15)));
        let text = crash_message(&report, None);
        assert!(
            text.ends_with(
                "Pod crimson-otter-x7k2p-5bhw4, container \"prefect-job\": Error, exit code 5."
            ),
            "{text}"
        );
    }
}

#[test]
fn failed_pods_beyond_the_backoff_limit_crash_before_the_condition_arrives() {
    let jobs = [JobFixture::new().failed_without_condition(1).view()];
    let pods = [PodFixture::new().terminated("Error", 1, at(3)).view()];
    let report = crashed(decide_at(&running(), &jobs, &pods, at(13)));
    assert_eq!(
        report.cause,
        CrashCause::JobFailed {
            reason: "BackoffLimitExceeded".into(),
            message: Some("1 failed pods, backoffLimit 0".into())
        }
    );
}

#[test]
fn evicted_pod_crashes_the_run_naming_the_eviction() {
    let eviction =
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 85Mi.";
    let jobs = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(20),
        )
        .view()];
    let pods = [PodFixture::new().evicted(eviction, at(19)).view()];
    let text = crash_message(&crashed(decide_at(&running(), &jobs, &pods, at(30))), None);
    assert!(
        text.contains(&format!(
            "Pod crimson-otter-x7k2p-5bhw4 (Evicted: {eviction}), container \"prefect-job\""
        )),
        "{text}"
    );
}

#[test]
fn deadline_exceeded_crashes_naming_the_deadline() {
    let jobs = [JobFixture::new()
        .failed(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            at(600),
        )
        .view()];
    let pods = [PodFixture::new()
        .deleting(at(600))
        .terminated("Error", 143, at(601))
        .view()];
    let report = crashed(decide_at(&running(), &jobs, &pods, at(611)));
    assert_eq!(
        report.cause,
        CrashCause::JobFailed {
            reason: "DeadlineExceeded".into(),
            message: Some("Job was active longer than specified deadline".into())
        }
    );
    assert!(crash_message(&report, None).starts_with(
        "Kubernetes Job prefect/crimson-otter-x7k2p failed: DeadlineExceeded (Job was active longer than specified deadline)."
    ));
}

#[test]
fn flow_that_failed_by_itself_stays_failed() {
    let jobs = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(50),
        )
        .view()];
    let pods = [PodFixture::new().terminated("Error", 1, at(49)).view()];
    let state = run_state(StateType::Failed, "Failed");
    assert_eq!(decide_at(&state, &jobs, &pods, at(500)), Decision::Nothing);
}

// --- Job deleted or completed ----------------------------------------------------------

#[test]
fn deleted_job_crashes_a_running_run_after_the_settle_grace() {
    let mut job = JobFixture::new().active().view();
    job.mark_deleted(at(100));
    let pods = [PodFixture::new().running(at(5)).view()];
    let jobs = [job];
    assert_eq!(
        decide_at(&running(), &jobs, &pods, at(105)),
        Decision::WaitUntil(at(110))
    );
    let report = crashed(decide_at(&running(), &jobs, &pods, at(110)));
    assert_eq!(report.cause, CrashCause::JobDeleted);
    assert_eq!(
        crash_message(&report, None),
        "Kubernetes Job prefect/crimson-otter-x7k2p was deleted before the flow run reached a \
         final state. Pod crimson-otter-x7k2p-5bhw4, container \"prefect-job\"."
    );
}

#[test]
fn job_being_deleted_counts_from_its_deletion_timestamp() {
    let jobs = [JobFixture::new().active().deleting(at(200)).view()];
    let pods = [PodFixture::new().running(at(5)).deleting(at(200)).view()];
    assert_eq!(
        decide_at(&pending(), &jobs, &pods, at(201)),
        Decision::WaitUntil(at(210))
    );
    assert_eq!(
        crashed(decide_at(&pending(), &jobs, &pods, at(210))).cause,
        CrashCause::JobDeleted
    );
}

#[test]
fn completed_job_without_a_final_state_crashes_after_the_settle_grace() {
    let jobs = [JobFixture::new().complete(at(300)).view()];
    let pods = [PodFixture::new().terminated("Completed", 0, at(299)).view()];
    assert_eq!(
        decide_at(&running(), &jobs, &pods, at(301)),
        Decision::WaitUntil(at(310)),
        "the flow's own Completed may still be on its way"
    );
    let report = crashed(decide_at(&running(), &jobs, &pods, at(310)));
    assert_eq!(report.cause, CrashCause::JobCompletedWithoutFinalState);
    assert!(crash_message(&report, None)
        .contains("completed, but the flow run did not report a final state"));
}

#[test]
fn completed_job_of_a_completed_run_needs_nothing() {
    let jobs = [JobFixture::new().complete(at(300)).view()];
    let pods = [PodFixture::new().terminated("Completed", 0, at(299)).view()];
    let state = run_state(StateType::Completed, "Completed");
    assert_eq!(decide_at(&state, &jobs, &pods, at(900)), Decision::Nothing);
}

// --- Settled runs and other Jobs of the run --------------------------------------------

#[test]
fn final_paused_cancelling_and_scheduled_runs_are_never_crashed() {
    let mut deleted = JobFixture::new().active().view();
    deleted.mark_deleted(at(10));
    let jobs = [deleted];
    for state in [
        run_state(StateType::Completed, "Completed"),
        run_state(StateType::Failed, "Failed"),
        run_state(StateType::Cancelled, "Cancelled"),
        run_state(StateType::Crashed, "Crashed"),
        run_state(StateType::Paused, "Suspended"),
        run_state(StateType::Cancelling, "Cancelling"),
        run_state(StateType::Scheduled, "AwaitingRetry"),
    ] {
        assert_eq!(
            decide_at(&state, &jobs, &[], at(1000)),
            Decision::Nothing,
            "state {state:?}"
        );
    }
}

#[test]
fn cancelling_run_with_a_failed_job_needs_nothing() {
    let jobs = [JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view()];
    let pods = [PodFixture::new().terminated("Error", 143, at(4)).view()];
    let state = run_state(StateType::Cancelling, "Cancelling");
    assert_eq!(decide_at(&state, &jobs, &pods, at(100)), Decision::Nothing);
}

#[test]
fn failed_job_is_ignored_while_another_job_of_the_run_is_active() {
    let old_job = JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(20),
        )
        .view();
    let new_job = JobFixture::new()
        .named(
            "crimson-otter-r4t5y",
            "a9e0c3d1-2b4f-4c6e-8d7a-9b0c1d2e3f4a",
        )
        .created(at(60))
        .active()
        .view();
    let pods = [
        PodFixture::new().terminated("Error", 143, at(19)).view(),
        PodFixture::new()
            .of_job(
                "crimson-otter-r4t5y",
                "a9e0c3d1-2b4f-4c6e-8d7a-9b0c1d2e3f4a",
                "crimson-otter-r4t5y-m2n3b",
                "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
            )
            .created(at(61))
            .running(at(65))
            .view(),
    ];
    assert_eq!(
        decide_at(&running(), &[old_job, new_job], &pods, at(120)),
        Decision::Nothing
    );
}

#[test]
fn deleted_job_is_ignored_while_another_job_of_the_run_succeeded_and_settles() {
    let mut old_job = JobFixture::new().active().view();
    old_job.mark_deleted(at(30));
    let new_job = JobFixture::new()
        .named(
            "crimson-otter-r4t5y",
            "a9e0c3d1-2b4f-4c6e-8d7a-9b0c1d2e3f4a",
        )
        .created(at(40))
        .complete(at(100))
        .view();
    // The new Job's own settle wait is what remains.
    assert_eq!(
        decide_at(&running(), &[old_job, new_job], &[], at(101)),
        Decision::WaitUntil(at(110))
    );
}

#[test]
fn two_crashing_jobs_report_the_newest() {
    let old_job = JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(20),
        )
        .view();
    let new_job = JobFixture::new()
        .named(
            "crimson-otter-r4t5y",
            "a9e0c3d1-2b4f-4c6e-8d7a-9b0c1d2e3f4a",
        )
        .created(at(60))
        .failed(
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            at(90),
        )
        .view();
    let report = crashed(decide_at(&running(), &[old_job, new_job], &[], at(200)));
    assert_eq!(&*report.job_name, "crimson-otter-r4t5y");
}

// --- crash_message ---------------------------------------------------------------------

fn deleted_job_report() -> CrashReport {
    CrashReport {
        cause: CrashCause::JobDeleted,
        namespace: NAMESPACE.into(),
        job_name: JOB_NAME.into(),
        pod: None,
    }
}

#[test]
fn crash_message_leaves_out_a_blank_log_tail() {
    let report = deleted_job_report();
    let without = crash_message(&report, None);
    assert_eq!(crash_message(&report, Some("  \n\n")), without);
    assert!(!without.contains("Last lines"));
}

#[test]
fn crash_message_keeps_only_the_last_whole_lines_of_a_long_log() {
    let log: String = (0..2000).map(|line| format!("line {line}\n")).collect();
    let text = crash_message(&deleted_job_report(), Some(&log));
    let (_, tail) = text
        .split_once("Last lines of the pod log:\n")
        .expect("log section present");
    assert!(tail.len() <= MAX_LOG_TAIL_CHARS, "{}", tail.len());
    assert!(
        tail.starts_with("line "),
        "starts on a whole line: {:?}",
        &tail[..20]
    );
    assert!(tail.ends_with("line 1999"));
}

// --- Pods that never start for other reasons -------------------------------------------

#[test]
fn pod_stuck_in_container_creating_is_left_alone_by_default() {
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().container_creating(at(1)).view()];
    assert_eq!(
        decide_at(&infrastructure_pending(), &jobs, &pods, at(3600)),
        Decision::Nothing
    );
}

#[test]
fn pod_stuck_in_container_creating_crashes_after_the_opt_in_start_timeout() {
    let settings = DecisionSettings {
        pod_start_timeout: Some(Duration::from_secs(600)),
        ..DecisionSettings::default()
    };
    let jobs = [JobFixture::new().active().view()];
    let pods = [PodFixture::new().container_creating(at(1)).view()];
    let state = infrastructure_pending();
    let input = |now| DecisionInput {
        run_state: &state,
        jobs: &jobs,
        pods: &pods,
        now,
        settings: &settings,
    };
    assert_eq!(decide(&input(at(100))), Decision::WaitUntil(at(601)));
    let report = crashed(decide(&input(at(601))));
    assert_eq!(
        report.cause,
        CrashCause::PodNotStarted {
            timeout_seconds: 600
        }
    );
    let text = crash_message(&report, None);
    assert!(text.contains("did not start within 600 s"), "{text}");
    assert!(
        text.contains("container \"prefect-job\": ContainerCreating."),
        "{text}"
    );
}

#[test]
fn init_container_pull_error_crashes_naming_the_init_container() {
    let mut pod = PodFixture::new()
        .waiting(at(1), "PodInitializing", "")
        .json();
    pod["spec"]["initContainers"] =
        serde_json::json!([{"name": "fetch-code", "image": "busybox:nope"}]);
    pod["status"]["initContainerStatuses"] = serde_json::json!([{
        "name": "fetch-code",
        "state": {"waiting": {"reason": "ErrImagePull", "message": "busybox:nope: not found"}},
        "lastState": {}, "ready": false, "restartCount": 0, "image": "busybox:nope", "imageID": "", "started": false
    }]);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("pod");
    let pods = [PodView::from_pod(&pod).expect("ours")];
    let jobs = [JobFixture::new().active().view()];
    let report = crashed(decide_at(&infrastructure_pending(), &jobs, &pods, at(70)));
    let text = crash_message(&report, None);
    assert!(
        text.starts_with("Container \"fetch-code\" of pod prefect/crimson-otter-x7k2p-5bhw4"),
        "{text}"
    );
    assert!(text.contains("waiting in ErrImagePull"), "{text}");
}

// --- Invariants over every scenario above ----------------------------------------------

/// Every (Jobs, pods) scenario of this file, at its most crash-prone.
fn all_scenarios() -> Vec<(Vec<JobView>, Vec<PodView>)> {
    let mut deleted = JobFixture::new().active().view();
    deleted.mark_deleted(at(10));
    let failed = JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view();
    let active = JobFixture::new().active().view();
    vec![
        (
            vec![active.clone()],
            vec![PodFixture::new()
                .waiting(at(1), "ErrImagePull", PULL_MESSAGE)
                .view()],
        ),
        (
            vec![active.clone()],
            vec![PodFixture::new()
                .waiting(at(1), "InvalidImageName", "bad")
                .view()],
        ),
        (
            vec![active.clone()],
            vec![PodFixture::new()
                .waiting(
                    at(1),
                    "CreateContainerConfigError",
                    "secret \"s\" not found",
                )
                .view()],
        ),
        (
            vec![active.clone()],
            vec![PodFixture::new()
                .unschedulable(SCHEDULER_MESSAGE, at(0))
                .view()],
        ),
        (vec![JobFixture::new().view()], vec![]),
        (
            vec![failed.clone()],
            vec![PodFixture::new().terminated("OOMKilled", 137, at(4)).view()],
        ),
        (
            vec![failed],
            vec![PodFixture::new().evicted("low memory", at(4)).view()],
        ),
        (
            vec![JobFixture::new()
                .failed("DeadlineExceeded", "deadline", at(5))
                .view()],
            vec![],
        ),
        (vec![deleted], vec![PodFixture::new().running(at(2)).view()]),
        (
            vec![JobFixture::new().complete(at(5)).view()],
            vec![PodFixture::new().terminated("Completed", 0, at(4)).view()],
        ),
    ]
}

#[test]
fn no_scenario_crashes_a_run_that_is_final_scheduled_paused_or_cancelling() {
    let settled = [
        run_state(StateType::Completed, "Completed"),
        run_state(StateType::Failed, "Failed"),
        run_state(StateType::Cancelled, "Cancelled"),
        run_state(StateType::Crashed, "Crashed"),
        run_state(StateType::Scheduled, "Scheduled"),
        run_state(StateType::Scheduled, "AwaitingRetry"),
        run_state(StateType::Paused, "Paused"),
        run_state(StateType::Cancelling, "Cancelling"),
    ];
    let mut crashing_scenarios = 0;
    for (jobs, pods) in all_scenarios() {
        if matches!(
            decide_at(&running(), &jobs, &pods, at(100_000)),
            Decision::ProposeCrashed(_)
        ) {
            crashing_scenarios += 1;
        }
        for state in &settled {
            for now in [at(0), at(61), at(100_000)] {
                let decision = decide_at(state, &jobs, &pods, now);
                assert!(
                    !matches!(decision, Decision::ProposeCrashed(_)),
                    "{state:?} at {now}: {decision:?} for {jobs:?} {pods:?}"
                );
            }
        }
    }
    assert_eq!(
        crashing_scenarios,
        all_scenarios().len(),
        "each scenario crashes a RUNNING run"
    );
}

#[test]
fn no_scenario_crashes_while_another_job_of_the_run_is_running() {
    let serving_job = JobFixture::new()
        .named(
            "crimson-otter-r4t5y",
            "a9e0c3d1-2b4f-4c6e-8d7a-9b0c1d2e3f4a",
        )
        .created(at(50))
        .active()
        .view();
    let serving_pod = PodFixture::new()
        .of_job(
            "crimson-otter-r4t5y",
            "a9e0c3d1-2b4f-4c6e-8d7a-9b0c1d2e3f4a",
            "crimson-otter-r4t5y-m2n3b",
            "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
        )
        .created(at(50))
        .running(at(55))
        .view();
    for (mut jobs, mut pods) in all_scenarios() {
        jobs.push(serving_job.clone());
        pods.push(serving_pod.clone());
        let decision = decide_at(&running(), &jobs, &pods, at(100_000));
        assert!(
            !matches!(decision, Decision::ProposeCrashed(_)),
            "{decision:?} for {jobs:?}"
        );
    }
}

// --- Suspended Jobs (created suspended, released by the dispatcher) --------------------

#[test]
fn a_suspended_job_waits_for_its_release_and_crashes_only_after_the_submission_grace() {
    let jobs = [JobFixture::new().suspended().view()];
    let grace = DecisionSettings::default().submission_grace.as_secs() as i64;
    assert_eq!(
        decide_at(&pending(), &jobs, &[], at(60)),
        Decision::WaitUntil(at(grace)),
        "no pod-watch timeout for a Job that may not have pods yet"
    );
    let report = crashed(decide_at(&pending(), &jobs, &[], at(grace)));
    assert_eq!(
        report.cause,
        CrashCause::JobNeverReleased {
            timeout_seconds: grace as u64
        }
    );
    assert!(crash_message(&report, None).contains("never started"));
}

#[test]
fn a_suspended_job_of_a_running_run_is_a_view_behind_its_release() {
    // The dispatcher released the Job and the flow reports Running before the
    // watch shows the release: never crash it as never released.
    let jobs = [JobFixture::new().suspended().view()];
    let grace = DecisionSettings::default().submission_grace.as_secs() as i64;
    let decision = decide_at(&running(), &jobs, &[], at(grace + 5));
    assert!(
        !matches!(decision, Decision::ProposeCrashed(_)),
        "{decision:?}"
    );
}

#[test]
fn a_released_job_counts_its_pod_watch_timeout_from_the_release() {
    let jobs = [JobFixture::new().released(at(50)).view()];
    assert_eq!(
        decide_at(&pending(), &jobs, &[], at(70)),
        Decision::WaitUntil(at(110))
    );
}

#[test]
fn a_job_never_seen_is_reported_missing_not_deleted() {
    let mut job = JobFixture::new().view();
    job.never_observed = true;
    job.mark_deleted(at(0));
    let report = crashed(decide_at(&pending(), &[job], &[], at(100)));
    assert!(matches!(report.cause, CrashCause::JobMissing { .. }));
    let message = crash_message(&report, None);
    assert!(
        message.contains("deleted, or it was never created"),
        "{message}"
    );
}

#[test]
fn jobs_of_cancelled_runs_and_unreleased_jobs_of_final_runs_are_withdrawn() {
    let active = JobFixture::new()
        .named("active", "uid-active")
        .active()
        .view();
    let suspended = JobFixture::new()
        .named("held", "uid-held")
        .suspended()
        .view();
    let failed = JobFixture::new()
        .named("failed", "uid-failed")
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view();
    let jobs = [active, suspended, failed];
    let names = |state: &FlowRunState| -> Vec<String> {
        jobs_to_withdraw(state, &jobs, &[])
            .iter()
            .map(|withdrawal| withdrawal.job.name.to_string())
            .collect()
    };
    assert_eq!(
        names(&run_state(StateType::Cancelled, "Cancelled")),
        ["active", "held"]
    );
    assert_eq!(names(&run_state(StateType::Crashed, "Crashed")), ["held"]);
    assert_eq!(
        names(&run_state(StateType::Completed, "Completed")),
        ["held"]
    );
    assert!(names(&pending()).is_empty());
    assert!(names(&run_state(StateType::Cancelling, "Cancelling")).is_empty());
}

// --- Jobs of earlier submissions (a retry, a reschedule) ---------------------------------

#[test]
fn a_job_that_ended_before_the_run_was_claimed_again_does_not_crash_the_new_claim() {
    // The first execution's Job failed at 5; the run was retried and claimed again at 20.
    let old = JobFixture::new()
        .named("first", "uid-first")
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view();
    let claimed = pending().since(Some(at(20)));
    assert_eq!(
        decide_at(&claimed, std::slice::from_ref(&old), &[], at(60)),
        Decision::Nothing
    );
    // Without the claim's time, the old rule would crash the new claim.
    assert!(matches!(
        decide_at(&pending(), &[old], &[], at(60)),
        Decision::ProposeCrashed(_)
    ));
}

#[test]
fn a_job_that_failed_before_our_late_infrastructure_pending_landed_still_crashes_the_run() {
    // The pod exited at 5; the reporter's InfrastructurePending, sent while it was
    // pending, was held up by the network and landed at 9 (long campaign, seed 20).
    let job = JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view();
    let pid = flow_run_proto::InfrastructurePid::new(&*job.namespace, &*job.name);
    let late = infrastructure_pending()
        .since(Some(at(9)))
        .with_pid(Some(pid));
    assert!(matches!(
        decide_at(&late, std::slice::from_ref(&job), &[], at(60)),
        Decision::ProposeCrashed(_)
    ));
    // An InfrastructurePending about another Job (the pid names a new submission's)
    // still makes the old one stale.
    let other = flow_run_proto::InfrastructurePid::new(&*job.namespace, "second");
    let about_another = infrastructure_pending()
        .since(Some(at(9)))
        .with_pid(Some(other));
    assert_eq!(
        decide_at(&about_another, &[job], &[], at(60)),
        Decision::Nothing
    );
    // A completed Job under a late InfrastructurePending is not taken for a crash:
    // it may have landed on a new claim of the run (a flow that rescheduled itself),
    // which goes on; one that landed on a state the flow reported is put back by
    // the evaluator (`service::late_pending`).
    let completed = JobFixture::new().complete(at(5)).view();
    let pid = flow_run_proto::InfrastructurePid::new(&*completed.namespace, &*completed.name);
    let late = infrastructure_pending()
        .since(Some(at(9)))
        .with_pid(Some(pid));
    assert_eq!(
        decide_at(&late, &[completed], &[], at(60)),
        Decision::Nothing
    );
}

#[test]
fn a_job_the_pid_no_longer_names_is_an_earlier_submissions() {
    let old = JobFixture::new()
        .named("first", "uid-first")
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(30),
        )
        .view();
    let new = JobFixture::new()
        .named("second", "uid-second")
        .active()
        .view();
    let pid = flow_run_proto::InfrastructurePid::new(&*new.namespace, &*new.name);
    let state = running().since(Some(at(10))).with_pid(Some(pid));
    assert_eq!(
        decide_at(&state, &[old, new], &[], at(90)),
        Decision::Nothing
    );
}

#[test]
fn a_pid_naming_a_withdrawn_job_does_not_hide_the_job_that_runs() {
    // An earlier submission's pid update landed after the run's current claim
    // recorded its own and released its Job; the earlier Job was withdrawn while
    // suspended. The Job that runs still decides: its failure crashes the run.
    let withdrawn = JobFixture::new()
        .named("first", "uid-first")
        .suspended()
        .deleting(at(12))
        .view();
    let runs = JobFixture::new()
        .named("second", "uid-second")
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(30),
        )
        .view();
    let pid = flow_run_proto::InfrastructurePid::new(&*withdrawn.namespace, &*withdrawn.name);
    let state = running().since(Some(at(10))).with_pid(Some(pid));
    assert!(matches!(
        decide_at(&state, &[withdrawn, runs], &[], at(90)),
        Decision::ProposeCrashed(_)
    ));
}

#[test]
fn a_run_claimed_again_while_its_rescheduled_job_finishes_is_not_crashed_by_that_job() {
    // The flow rescheduled itself (AwaitingRetry) and exited; a dispatcher claimed the
    // new submission at 20, before the first Job's completion was recorded at 21 and
    // before the second Job exists.
    let run = uuid::Uuid::parse_str(FLOW_RUN_ID).unwrap();
    let first = flow_run_proto::SubmissionKey::new(run, uuid::Uuid::from_u128(1));
    let second = flow_run_proto::SubmissionKey::new(run, uuid::Uuid::from_u128(2));
    let old = JobFixture::new()
        .claimed_for(first)
        .created(at(0))
        .complete(at(21))
        .view();
    let claimed_again = pending()
        .since(Some(at(20)))
        .with_transition_id(Some(second.claim_transition_id()));
    assert_eq!(
        decide_at(&claimed_again, std::slice::from_ref(&old), &[], at(60)),
        Decision::Nothing
    );
    // Still the first claim (re-sent by a dispatcher that resumed it): its Job's end
    // without a final state crashes the run.
    let first_claim = pending()
        .since(Some(at(20)))
        .with_transition_id(Some(first.claim_transition_id()));
    assert!(matches!(
        decide_at(&first_claim, std::slice::from_ref(&old), &[], at(60)),
        Decision::ProposeCrashed(_)
    ));
    // The reporter's own InfrastructurePending is no claim.
    let infrastructure = infrastructure_pending()
        .since(Some(at(20)))
        .with_transition_id(Some(second.claim_transition_id()));
    assert!(matches!(
        decide_at(&infrastructure, &[old], &[], at(60)),
        Decision::ProposeCrashed(_)
    ));
}
