//! Extraction of `PodView`/`JobView` from API-shaped Pods and Jobs, and their size.

use serde_json::json;

use super::*;
use crate::test_fixtures::*;

#[test]
fn failed_pod_keeps_phase_job_link_and_termination() {
    let view = PodFixture::new().terminated("Error", 5, at(2)).view();
    assert_eq!(&*view.uid, POD_UID);
    assert_eq!(&*view.name, POD_NAME);
    assert_eq!(&*view.namespace, NAMESPACE);
    assert_eq!(view.flow_run_id.to_string(), FLOW_RUN_ID);
    assert_eq!(view.job_name.as_deref(), Some(JOB_NAME));
    assert_eq!(view.job_uid.as_deref(), Some(JOB_UID));
    assert_eq!(view.phase, PodPhase::Failed);
    assert_eq!(view.created, Some(at(0)));
    assert_eq!(view.scheduled_at(), Some(at(0)));
    assert_eq!(view.finished_at(), Some(at(2)));
    let container = &view.containers[0];
    assert_eq!(&*container.name, CONTAINER);
    assert_eq!(container.role, ContainerRole::Main);
    assert_eq!(
        container.terminated.as_deref(),
        Some(&TerminatedView {
            reason: TerminatedReason::Error,
            exit_code: 5,
            finished_at: Some(at(2)),
            message: None,
        })
    );
    assert_eq!(view.failed_container().map(|c| &*c.name), Some(CONTAINER));
}

#[test]
fn waiting_container_and_unschedulable_condition_are_extracted() {
    let waiting = PodFixture::new()
        .waiting(
            at(1),
            "CreateContainerConfigError",
            "secret \"db\" not found",
        )
        .view();
    let state = waiting.containers[0].waiting.as_deref().expect("waiting");
    assert_eq!(state.reason, WaitingReason::CreateContainerConfigError);
    assert_eq!(
        state.reason.grace_class(),
        Some(WaitingGraceClass::Configuration)
    );
    assert_eq!(state.message.as_deref(), Some("secret \"db\" not found"));
    assert!(!waiting.is_unscheduled());

    let unschedulable = PodFixture::new()
        .unschedulable("0/1 nodes are available", at(0))
        .view();
    assert!(unschedulable.is_unscheduled());
    let condition = unschedulable.scheduled.as_ref().expect("PodScheduled");
    assert_eq!(condition.status, ConditionStatus::False);
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        condition.message.as_deref(),
        Some("0/1 nodes are available")
    );
}

#[test]
fn fresh_pod_without_conditions_counts_as_unscheduled() {
    let view = PodFixture::new().view();
    assert_eq!(view.phase, PodPhase::Pending);
    assert!(view.is_unscheduled());
}

#[test]
fn evicted_pod_keeps_status_reason_and_message() {
    let view = PodFixture::new()
        .evicted("The node was low on resource: memory.", at(9))
        .view();
    assert!(view.is_evicted());
    assert_eq!(
        view.status_message.as_deref(),
        Some("The node was low on resource: memory.")
    );
}

#[test]
fn objects_without_a_flow_run_uuid_label_are_not_ours() {
    let mut pod = PodFixture::new().json();
    pod["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("prefect.io/flow-run-id");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("pod");
    assert_eq!(PodView::from_pod(&pod), None);

    let mut job = JobFixture::new().json();
    job["metadata"]["labels"]["prefect.io/flow-run-id"] = json!("not-a-uuid");
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(job).expect("job");
    assert_eq!(JobView::from_job(&job), None);
}

#[test]
fn pod_without_owner_reference_finds_its_job_through_labels() {
    let mut pod = PodFixture::new().json();
    pod["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("ownerReferences");
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).expect("pod");
    let view = PodView::from_pod(&pod).expect("ours");
    assert_eq!(view.job_name.as_deref(), Some(JOB_NAME));
    assert_eq!(view.job_uid.as_deref(), Some(JOB_UID));
}

#[test]
fn failed_job_keeps_counters_conditions_and_annotation() {
    let view = JobFixture::new()
        .failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            at(5),
        )
        .view();
    assert_eq!(&*view.uid, JOB_UID);
    assert_eq!(&*view.name, JOB_NAME);
    assert_eq!(view.backoff_limit, 0);
    assert_eq!((view.active, view.succeeded, view.failed), (0, 0, 1));
    assert_eq!(view.pod_watch_timeout_seconds, Some(60));
    let failure = view.failure().expect("Failed condition");
    assert_eq!(failure.kind, JobConditionKind::Failed);
    assert_eq!(failure.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(failure.since, Some(at(5)));
    assert!(view.backoff_exhausted());
    assert_eq!(view.completion(), None);
    assert_eq!(view.gone_at(), None);
}

#[test]
fn job_defaults_apply_when_fields_are_absent_or_malformed() {
    let view = JobFixture::new()
        .backoff_limit(None)
        .pod_watch_timeout(Some("soon"))
        .view();
    assert_eq!(view.backoff_limit, 6);
    assert_eq!(view.pod_watch_timeout_seconds, None);
    assert_eq!(view.conditions.len(), 0);
}

#[test]
fn job_deletion_is_the_earlier_of_its_timestamp_and_the_observed_delete() {
    let mut view = JobFixture::new().active().deleting(at(50)).view();
    assert_eq!(view.gone_at(), Some(at(50)));
    view.mark_deleted(at(53));
    view.mark_deleted(at(99));
    assert_eq!(
        view.deleted_observed_at,
        Some(at(53)),
        "first observation wins"
    );
    assert_eq!(view.gone_at(), Some(at(50)));
}

#[test]
fn carry_over_restarts_the_clock_when_the_waiting_class_changes() {
    let pull = PodFixture::new()
        .waiting(at(1), "ErrImagePull", "not found")
        .view();
    let mut pull_again = pull.clone();
    pull_again.carry_over_from(&pull, at(10));
    let mut config = PodFixture::new()
        .waiting(
            at(1),
            "CreateContainerConfigError",
            "secret \"db\" not found",
        )
        .view();
    config.carry_over_from(&pull_again, at(20));
    let first = |view: &PodView| {
        view.containers[0]
            .waiting
            .as_ref()
            .and_then(|w| w.first_observed)
    };
    assert_eq!(first(&pull_again), Some(at(10)));
    assert_eq!(first(&config), Some(at(20)));
}

/// The reporter must hold 10,000 pods in tens of MB: a pod view with one container and
/// its strings stays far below 1 KiB.
#[test]
fn views_stay_small() {
    assert!(
        std::mem::size_of::<PodView>() <= 240,
        "{}",
        std::mem::size_of::<PodView>()
    );
    assert!(
        std::mem::size_of::<ContainerView>() <= 64,
        "{}",
        std::mem::size_of::<ContainerView>()
    );
    assert!(
        std::mem::size_of::<JobView>() <= 240,
        "{}",
        std::mem::size_of::<JobView>()
    );
    let view = PodFixture::new().terminated("Error", 5, at(2)).view();
    let heap = view.uid.len()
        + view.name.len()
        + view.namespace.len()
        + view.job_name.as_ref().map_or(0, |s| s.len())
        + view.job_uid.as_ref().map_or(0, |s| s.len())
        + view.containers.len() * std::mem::size_of::<ContainerView>()
        + view
            .containers
            .iter()
            .map(|c| c.name.len() + std::mem::size_of::<TerminatedView>())
            .sum::<usize>();
    assert!(std::mem::size_of::<PodView>() + heap < 1024, "{heap}");
}
