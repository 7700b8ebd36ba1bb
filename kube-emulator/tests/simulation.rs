//! Behaviour of the simulated control plane (scheduler, kubelet stages, Job controller, garbage
//! collector) as seen through kube-rs: the field values, reasons and events a real cluster
//! produces for each scenario.

mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, EmulatorConfig, NodeCapacity, RuntimeKind};
use serde_json::json;

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn wait_pod<F>(pods: &Api<Pod>, name: &str, what: &str, check: F) -> Pod
where
    F: Fn(&Pod) -> bool,
{
    support::eventually(what, || async {
        let pod = pods.get_opt(name).await.ok()??;
        check(&pod).then_some(pod)
    })
    .await
}

async fn wait_job<F>(jobs: &Api<Job>, name: &str, what: &str, check: F) -> Job
where
    F: Fn(&Job) -> bool,
{
    support::eventually(what, || async {
        let job = jobs.get_opt(name).await.ok()??;
        check(&job).then_some(job)
    })
    .await
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn has_condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn condition_reason(job: &Job, kind: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)?
        .reason
        .clone()
}

async fn event_reasons(client: &kube::Client, object: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test]
async fn pods_that_do_not_fit_are_unschedulable() {
    let emulator = Emulator::start(EmulatorConfig {
        node_capacity: NodeCapacity {
            cpu: "1".into(),
            memory: "1Gi".into(),
            pods: 10,
        },
        ..EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"containers": [{"name": "c", "image": "hang", "resources": {"requests": {"cpu": "2"}}}]});
    pods.create(&PostParams::default(), &pod("big", spec))
        .await
        .unwrap();
    let pending = wait_pod(&pods, "big", "Unschedulable", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    })
    .await;
    let status = pending.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let message = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .message
        .unwrap();
    assert_eq!(message, "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.");
    assert!(event_reasons(&client, "big")
        .await
        .contains(&"FailedScheduling".to_string()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn missing_secret_blocks_start_until_it_exists() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "hang",
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]}]});
    pods.create(&PostParams::default(), &pod("needs-secret", spec))
        .await
        .unwrap();
    let blocked = wait_pod(&pods, "needs-secret", "CreateContainerConfigError", |p| {
        waiting_reason(p).as_deref() == Some("CreateContainerConfigError")
    })
    .await;
    let waiting = blocked.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("secret \"creds\" not found")
    );
    assert_eq!(blocked.metadata.name.as_deref(), Some("needs-secret"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "t"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_pod(&pods, "needs-secret", "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    assert!(event_reasons(&client, "needs-secret")
        .await
        .contains(&"Failed".to_string()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn image_problems_stay_pending_and_never_fail_the_job() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(
            "pull",
            json!({"containers": [{"name": "c", "image": "registry.example/pull-error:1"}]}),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod(
            "invalid",
            json!({"containers": [{"name": "c", "image": "Not/Valid"}]}),
        ),
    )
    .await
    .unwrap();
    let backoff = wait_pod(&pods, "pull", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(backoff.status.unwrap().phase.as_deref(), Some("Pending"));
    let reasons = event_reasons(&client, "pull").await;
    for reason in ["Pulling", "Failed", "BackOff"] {
        assert!(reasons.contains(&reason.to_string()), "{reasons:?}");
    }
    wait_pod(&pods, "invalid", "InvalidImageName", |p| {
        waiting_reason(p).as_deref() == Some("InvalidImageName")
    })
    .await;
    assert!(event_reasons(&client, "invalid")
        .await
        .contains(&"InspectFailed".to_string()));

    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &support::job("pulljob", "pull-error", &["x"], 0),
    )
    .await
    .unwrap();
    let job_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    support::eventually("job pod in ImagePullBackOff", || async {
        let list = job_pods
            .list(&ListParams::default().labels("job-name=pulljob"))
            .await
            .ok()?;
        list.items
            .iter()
            .any(|p| waiting_reason(p).as_deref() == Some("ImagePullBackOff"))
            .then_some(())
    })
    .await;
    let job = jobs.get("pulljob").await.unwrap();
    assert!(!has_condition(&job, "Failed"));
    assert_eq!(job.status.unwrap().active, Some(1));
    emulator.shutdown().await;
}

#[tokio::test]
async fn failed_pods_are_replaced_until_the_backoff_limit() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &support::job("retry", "fail", &["x"], 2),
    )
    .await
    .unwrap();
    let job = wait_job(&jobs, "retry", "job Failed", |j| has_condition(j, "Failed")).await;
    assert_eq!(job.status.as_ref().unwrap().failed, Some(3));
    assert_eq!(
        condition_reason(&job, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("job-name=retry"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    for pod in &list.items {
        assert!(
            pod.metadata.finalizers.is_none(),
            "tracking finalizer removed after counting"
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str),
            Some("retry")
        );
    }
    let reasons = event_reasons(&client, "retry").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "SuccessfulCreate").count(),
        3
    );
    assert!(reasons.contains(&"BackoffLimitExceeded".to_string()));
    emulator.shutdown().await;
}

#[tokio::test]
async fn oom_killed_container_reports_oomkilled() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(
            "oom",
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "oom"}]}),
        ),
    )
    .await
    .unwrap();
    let done = wait_pod(&pods, "oom", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let terminated = done.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn eviction_fails_the_pod_with_disruption_target() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod(
            "evicted",
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "evict"}]}),
        ),
    )
    .await
    .unwrap();
    let done = wait_pod(&pods, "evicted", "Evicted", |p| {
        p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert!(status
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "DisruptionTarget"
            && c.reason.as_deref() == Some("TerminationByKubelet")));
    emulator.shutdown().await;
}

#[tokio::test]
async fn deadline_ttl_and_suspend_follow_the_job_controller() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

    let mut deadline = support::job("deadline", "hang", &["x"], 6);
    deadline.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    jobs.create(&PostParams::default(), &deadline)
        .await
        .unwrap();
    let job = wait_job(&jobs, "deadline", "DeadlineExceeded", |j| {
        has_condition(j, "Failed")
    })
    .await;
    assert_eq!(
        condition_reason(&job, "FailureTarget").as_deref(),
        Some("DeadlineExceeded")
    );
    assert_eq!(
        condition_reason(&job, "Failed").as_deref(),
        Some("DeadlineExceeded")
    );

    let mut ttl = support::job("ttl", "busybox", &["x"], 0);
    ttl.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(0);
    jobs.create(&PostParams::default(), &ttl).await.unwrap();
    support::eventually("ttl job deleted", || async {
        jobs.get_opt("ttl").await.ok()?.is_none().then_some(())
    })
    .await;

    let mut suspended = support::job("paused", "hang", &["x"], 0);
    suspended.spec.as_mut().unwrap().suspend = Some(true);
    jobs.create(&PostParams::default(), &suspended)
        .await
        .unwrap();
    let job = wait_job(&jobs, "paused", "Suspended", |j| {
        has_condition(j, "Suspended")
    })
    .await;
    assert!(job.status.unwrap().start_time.is_none());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert!(pods
        .list(&ListParams::default().labels("job-name=paused"))
        .await
        .unwrap()
        .items
        .is_empty());
    jobs.patch(
        "paused",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let job = wait_job(&jobs, "paused", "resumed", |j| {
        j.status.as_ref().and_then(|s| s.active) == Some(1)
    })
    .await;
    assert_eq!(
        condition_reason(&job, "Suspended").as_deref(),
        Some("JobResumed")
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn foreground_deletion_removes_pods_before_the_job() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &support::job("fg", "hang", &["x"], 0),
    )
    .await
    .unwrap();
    wait_job(&jobs, "fg", "active", |j| {
        j.status.as_ref().and_then(|s| s.active) == Some(1)
    })
    .await;
    let pending = jobs
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let job = pending
        .left()
        .expect("the job is returned while deletion is pending");
    assert!(job
        .metadata
        .finalizers
        .unwrap()
        .contains(&"foregroundDeletion".to_string()));
    support::eventually("job gone", || async {
        jobs.get_opt("fg").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(pods
        .list(&ListParams::default().labels("job-name=fg"))
        .await
        .unwrap()
        .items
        .is_empty());

    // Background: the job is gone at once, the pods follow.
    jobs.create(
        &PostParams::default(),
        &support::job("bg", "hang", &["x"], 0),
    )
    .await
    .unwrap();
    wait_job(&jobs, "bg", "active", |j| {
        j.status.as_ref().and_then(|s| s.active) == Some(1)
    })
    .await;
    let status = jobs
        .delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    assert!(status.is_right(), "Status returned for an immediate delete");
    support::eventually("pods collected", || async {
        pods.list(&ListParams::default().labels("job-name=bg"))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn logs_support_tail_previous_and_container_selection() {
    let emulator = support::start(RuntimeKind::Process).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"restartPolicy": "OnFailure", "containers": [
        {"name": "main", "image": "alpine", "command": ["sh", "-c", "echo one; echo two; echo three; exit 1"]},
        {"name": "side", "image": "alpine", "command": ["sh", "-c", "echo side; sleep 30"]}
    ]});
    pods.create(&PostParams::default(), &pod("multi", spec))
        .await
        .unwrap();
    let restarted = wait_pod(&pods, "multi", "a restart", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.restart_count >= 1))
    })
    .await;
    let main = restarted
        .status
        .unwrap()
        .container_statuses
        .unwrap()
        .into_iter()
        .find(|c| c.name == "main")
        .unwrap();
    assert_eq!(main.last_state.unwrap().terminated.unwrap().exit_code, 1);

    let err = pods.logs("multi", &LogParams::default()).await.unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 400);
            assert_eq!(
                status.message,
                "a container name must be specified for pod multi, choose one of: [main side]"
            );
        }
        other => panic!("{other:?}"),
    }
    let tail = pods
        .logs(
            "multi",
            &LogParams {
                container: Some("main".into()),
                tail_lines: Some(1),
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "three\n");
    emulator.shutdown().await;
}

#[tokio::test]
async fn pod_failure_policy_fail_job_short_circuits_the_backoff_limit() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "policy"},
        "spec": {
            "backoffLimit": 6,
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}
            ]},
            "template": {
                "metadata": {"annotations": {"kube-emulator.io/script": "fail:42:0.1"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}
            }
        }
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let failed = wait_job(&jobs, "policy", "Failed", |j| has_condition(j, "Failed")).await;
    assert_eq!(
        condition_reason(&failed, "Failed").as_deref(),
        Some("PodFailurePolicy")
    );
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(1));
    let message = failed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .message
        .unwrap();
    assert!(
        message.starts_with("Container main for pod default/policy-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 1"),
        "{message}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn pod_deadline_and_repeated_back_off_events() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("short-lived", json!({"restartPolicy": "Never", "activeDeadlineSeconds": 1, "containers": [{"name": "c", "image": "hang"}]})),
    )
    .await
    .unwrap();
    let done = wait_pod(&pods, "short-lived", "DeadlineExceeded", |p| {
        p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("DeadlineExceeded")
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );

    // ImagePullBackOff keeps emitting BackOff, aggregated into one Event with a growing count.
    pods.create(
        &PostParams::default(),
        &pod(
            "never-pulls",
            json!({"containers": [{"name": "c", "image": "pull-error"}]}),
        ),
    )
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    support::eventually("BackOff counted more than once", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=never-pulls,reason=BackOff"))
            .await
            .ok()?;
        (list.items.len() == 1 && list.items[0].count.unwrap_or(1) >= 2).then_some(())
    })
    .await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn init_containers_run_first_and_in_order() {
    let emulator = support::start(RuntimeKind::Process).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let spec = json!({"restartPolicy": "Never",
        "initContainers": [{"name": "prepare", "image": "alpine", "command": ["sh", "-c", format!("echo prepared > {}", marker.display())]}],
        "containers": [{"name": "main", "image": "alpine", "command": ["sh", "-c", format!("cat {}", marker.display())]}]});
    pods.create(&PostParams::default(), &pod("with-init", spec))
        .await
        .unwrap();
    let done = wait_pod(&pods, "with-init", "Succeeded", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    let status = done.status.unwrap();
    let init = status.init_container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (init.exit_code, init.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(status
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True"));
    let main_log = pods
        .logs(
            "with-init",
            &LogParams {
                container: Some("main".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(main_log, "prepared\n", "main ran after the init container");

    let failing = json!({"restartPolicy": "Never",
        "initContainers": [{"name": "prepare", "image": "alpine", "command": ["sh", "-c", "exit 2"]}],
        "containers": [{"name": "main", "image": "alpine", "command": ["true"]}]});
    pods.create(&PostParams::default(), &pod("init-fails", failing))
        .await
        .unwrap();
    let failed = wait_pod(&pods, "init-fails", "Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    let init = failed.status.unwrap().init_container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(init.exit_code, 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn missing_secret_volume_keeps_the_pod_container_creating() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let spec = json!({"restartPolicy": "Never",
        "volumes": [{"name": "creds", "secret": {"secretName": "not-there"}}],
        "containers": [{"name": "c", "image": "hang", "volumeMounts": [{"name": "creds", "mountPath": "/creds"}]}]});
    pods.create(&PostParams::default(), &pod("mounts", spec))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = support::eventually("FailedMount", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=mounts,reason=FailedMount"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    assert_eq!(
        event.message.as_deref(),
        Some("MountVolume.SetUp failed for volume \"creds\" : secret \"not-there\" not found")
    );
    let pod_now = pods.get("mounts").await.unwrap();
    assert_eq!(
        waiting_reason(&pod_now).as_deref(),
        Some("ContainerCreating")
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "not-there"}, "stringData": {"a": "b"}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_pod(&pods, "mounts", "Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    emulator.shutdown().await;
}
