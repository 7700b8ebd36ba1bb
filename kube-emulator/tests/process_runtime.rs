//! The process runtime runs containers as local processes: the acceptance scenario
//! (`sh -c 'echo hi; exit 3'`, backoffLimit 0) and SIGTERM on pod deletion.

mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube_emulator::RuntimeKind;

#[tokio::test]
async fn failing_container_fails_the_job_and_keeps_its_logs() {
    let emulator = support::start(RuntimeKind::Process).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &support::job("hi", "alpine", &["sh", "-c", "echo hi; exit 3"], 0),
    )
    .await
    .unwrap();
    let job = support::eventually("job Failed", || {
        let jobs = jobs.clone();
        async move {
            let job = jobs.get("hi").await.ok()?;
            let failed = job
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Failed" && c.status == "True");
            failed.then_some(job)
        }
    })
    .await;
    let status = job.status.unwrap();
    assert_eq!(status.failed, Some(1));
    let conditions = status.conditions.unwrap();
    let types: Vec<_> = conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.reason.as_deref()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("FailureTarget", Some("BackoffLimitExceeded")),
            ("Failed", Some("BackoffLimitExceeded"))
        ]
    );

    let pod_list = pods
        .list(&ListParams::default().labels("job-name=hi"))
        .await
        .unwrap();
    assert_eq!(
        pod_list.items.len(),
        1,
        "exactly one pod with backoffLimit 0"
    );
    let pod = &pod_list.items[0];
    let pod_status = pod.status.clone().unwrap();
    assert_eq!(pod_status.phase.as_deref(), Some("Failed"));
    let terminated = pod_status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
    let logs = pods
        .logs(pod.metadata.name.as_deref().unwrap(), &LogParams::default())
        .await
        .unwrap();
    assert_eq!(logs, "hi\n");

    // kubectl prints the same log through the kubeconfig.
    let output = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", emulator.kubeconfig_path())
        .args(["logs", "job/hi"])
        .output()
        .await
        .expect("kubectl runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hi\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn deleting_a_running_pod_sends_sigterm() {
    let emulator = support::start(RuntimeKind::Process).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sleeper"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 10, "containers": [{
            "name": "main", "image": "alpine",
            "command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done"]
        }]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    support::eventually("pod running and logging", || {
        let pods = pods.clone();
        async move {
            let logs = pods.logs("sleeper", &LogParams::default()).await.ok()?;
            logs.contains("ready").then_some(())
        }
    })
    .await;
    // Follow the log while the pod is deleted gracefully.
    let follower = {
        let pods = pods.clone();
        tokio::spawn(async move {
            use futures::AsyncBufReadExt;
            let stream = pods
                .log_stream(
                    "sleeper",
                    &LogParams {
                        follow: true,
                        ..LogParams::default()
                    },
                )
                .await
                .unwrap();
            let mut lines = stream.lines();
            let mut all = Vec::new();
            while let Some(Ok(line)) = futures::StreamExt::next(&mut lines).await {
                all.push(line);
            }
            all
        })
    };
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually("pod removed", || {
        let pods = pods.clone();
        async move { pods.get_opt("sleeper").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let lines = follower.await.unwrap();
    assert!(lines.iter().any(|l| l == "got-term"), "{lines:?}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn dropping_the_emulator_kills_container_processes() {
    let emulator = support::start(RuntimeKind::Process).await;
    let pods: Api<Pod> = Api::namespaced(emulator.client().unwrap(), "default");
    // A unique marker so we only ever look at our own process.
    let marker = format!("sleep {}", 4000 + std::process::id() % 1000);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "lingering"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "alpine",
            "command": ["sh", "-c", format!("echo started; {marker}")]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = |marker: String| async move {
        let output = tokio::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .await
            .unwrap();
        !output.stdout.is_empty()
    };
    support::eventually("the container process runs", || {
        let marker = marker.clone();
        async move { running(marker).await.then_some(()) }
    })
    .await;
    drop(emulator);
    support::eventually("the container process is gone", || {
        let marker = marker.clone();
        async move { (!running(marker).await).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn an_image_no_registry_has_fails_to_pull_and_never_runs() {
    let emulator = support::start(RuntimeKind::Process).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let marker = std::env::temp_dir().join(format!("ran-{}", std::process::id()));
    let command = format!("touch {}", marker.display());
    jobs.create(
        &PostParams::default(),
        &support::job(
            "missing",
            "registry.example/pull-error:1",
            &["sh", "-c", &command],
            0,
        ),
    )
    .await
    .unwrap();
    let reason = support::eventually("pull error", || {
        let pods = pods.clone();
        async move {
            let pod = pods
                .list(&ListParams::default().labels("job-name=missing"))
                .await
                .ok()?
                .items
                .pop()?;
            let waiting = pod.status?.container_statuses?.pop()?.state?.waiting?;
            waiting
                .reason
                .filter(|r| r == "ImagePullBackOff" || r == "ErrImagePull")
        }
    })
    .await;
    assert!(reason.contains("Image"), "{reason}");
    assert!(!marker.exists(), "the container of an unpullable image ran");
}
