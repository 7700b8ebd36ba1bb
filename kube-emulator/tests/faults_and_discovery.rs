//! Fault injection (429 with Retry-After, 503, latency) and discovery as kube-rs uses it:
//! legacy and aggregated discovery, metadata-only requests, and typed round trips.

mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::discovery::Discovery;
use kube_emulator::{FaultSettings, RuntimeKind};

#[tokio::test]
async fn injected_429s_carry_retry_after_and_kube_rs_retries_them() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let http = support::http_client(&emulator);
    emulator.set_faults(FaultSettings {
        fail_next: 1,
        error_code: 429,
        retry_after_seconds: 1,
        ..FaultSettings::default()
    });
    let response = http
        .get(format!("{}/api/v1/namespaces/default/pods", emulator.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let status: kube::core::Status = response.json().await.unwrap();
    assert_eq!(status.reason, "TooManyRequests");

    // kube >= 4 retries 429/503 transparently.
    emulator.set_faults(FaultSettings {
        fail_next: 2,
        error_code: 503,
        retry_after_seconds: 1,
        ..FaultSettings::default()
    });
    let pods: Api<Pod> = Api::namespaced(emulator.client().unwrap(), "default");
    pods.list(&ListParams::default()).await.unwrap();

    // The admin endpoint switches faults at run time.
    let set = http
        .put(format!("{}/admin/faults", emulator.url()))
        .body(r#"{"failNext": 1, "errorCode": 500, "verb": "create"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    let jobs: Api<Job> = Api::namespaced(emulator.client().unwrap(), "default");
    let err = jobs
        .create(
            &PostParams::default(),
            &support::job("f", "busybox", &["true"], 0),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err:?}"
    );
    jobs.create(
        &PostParams::default(),
        &support::job("f", "busybox", &["true"], 0),
    )
    .await
    .unwrap();
    emulator.shutdown().await;
}

#[tokio::test]
async fn discovery_works_legacy_and_aggregated() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let groups: Vec<String> = discovery.groups().map(|g| g.name().to_string()).collect();
        for wanted in [
            "",
            "batch",
            "coordination.k8s.io",
            "rbac.authorization.k8s.io",
            "events.k8s.io",
        ] {
            assert!(
                groups.iter().any(|g| g == wanted),
                "{wanted:?} missing from {groups:?}"
            );
        }
        let batch = discovery.get("batch").unwrap();
        let (job, caps) = batch.recommended_kind("Job").unwrap();
        assert_eq!(job.plural, "jobs");
        assert!(caps.supports_operation("watch"));
    }
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn metadata_only_requests_return_partial_object_metadata() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &support::job("meta", "busybox", &["true"], 0),
    )
    .await
    .unwrap();
    let listed = jobs.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("meta"));
    let one = jobs.get_metadata("meta").await.unwrap();
    assert_eq!(
        one.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn connection_resets_and_silent_watch_expiry_can_be_injected() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let http = support::http_client(&emulator);
    let pods_url = format!("{}/api/v1/namespaces/default/pods", emulator.url());
    emulator.set_faults(FaultSettings {
        fail_next: 1,
        connection_reset: true,
        ..FaultSettings::default()
    });
    let outcome = match http.get(&pods_url).send().await {
        Ok(response) => response.text().await.map(|_| ()),
        Err(err) => Err(err),
    };
    assert!(outcome.is_err(), "the connection should break");
    assert!(http
        .get(&pods_url)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());

    // Silent expiry: 200 and an immediate clean close, no ERROR event.
    let list: serde_json::Value = http
        .get(&pods_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    emulator.compact();
    emulator.set_faults(FaultSettings {
        silent_watch_expiry: true,
        ..FaultSettings::default()
    });
    let body = http
        .get(format!("{pods_url}?watch=true&resourceVersion={rv}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "");
    emulator.set_faults(FaultSettings::default());
    let body = http
        .get(format!("{pods_url}?watch=true&resourceVersion={rv}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"code\":410"), "{body}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn latency_can_hit_only_the_next_requests_and_come_after_the_commit() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let map = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap()
    };
    emulator.set_faults(FaultSettings {
        latency_ms: 3000,
        latency_next: 1,
        latency_after_commit: true,
        verb: Some("create".into()),
        resource: Some("configmaps".into()),
        ..FaultSettings::default()
    });
    // The first create is stored at once but answered late: a client that gives
    // up early finds the object there.
    let late = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        maps.create(&PostParams::default(), &map("first")),
    )
    .await;
    assert!(late.is_err(), "the answer came before the latency");
    assert!(
        maps.get_opt("first").await.unwrap().is_some(),
        "already stored"
    );
    // Only the next request was delayed.
    let started = std::time::Instant::now();
    maps.create(&PostParams::default(), &map("second"))
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let faults: FaultSettings = reqwest::get(format!("{}/admin/faults", emulator.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults.latency_ms, 0, "the limited latency is used up");
}
