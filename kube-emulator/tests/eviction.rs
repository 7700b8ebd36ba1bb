//! Eviction: the `pods/eviction` subresource honouring PodDisruptionBudgets (whose status the
//! disruption controller keeps) with the real 429, and the kubelet's scripted node-pressure
//! eviction, which must win over the container's own exit every time.

mod support;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube_emulator::{Emulator, RuntimeKind};
use serde_json::{json, Value};

fn pod(name: &str, script: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": {"kube-emulator.io/script": script}},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [{"name": "main", "image": "busybox:1.36"}]}
    }))
    .unwrap()
}

async fn post_eviction(
    emulator: &Emulator,
    name: &str,
    query: &str,
) -> (u16, Option<String>, Value) {
    let http = support::http_client(emulator);
    let response = http
        .post(format!(
            "{}/api/v1/namespaces/default/pods/{name}/eviction{query}",
            emulator.url()
        ))
        .json(&json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}}))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (code, retry_after, response.json().await.unwrap())
}

async fn wait_budget(
    pdbs: &Api<PodDisruptionBudget>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    support::eventually(what, || async {
        let pdb = pdbs.get("web").await.ok()?;
        let status = serde_json::to_value(pdb.status?).ok()?;
        let generation = pdb.metadata.generation?;
        (status["observedGeneration"] == generation && check(&status)).then_some(status)
    })
    .await
}

async fn running(pods: &Api<Pod>, name: &str) {
    support::eventually("pod ready", || async {
        let pod = pods.get(name).await.ok()?;
        let ready = pod
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

#[tokio::test]
async fn evictions_honour_disruption_budgets() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for name in ["web-0", "web-1"] {
        // Ignoring SIGTERM keeps an evicted pod Terminating for its 2 s grace period.
        pods.create(
            &PostParams::default(),
            &pod(name, "ignore-sigterm", json!({"app": "web"})),
        )
        .await
        .unwrap();
        running(&pods, name).await;
    }
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &budget).await.unwrap();
    let status = wait_budget(&pdbs, "budget computed", |s| s["currentHealthy"] == 2).await;
    assert_eq!(status["desiredHealthy"], 2);
    assert_eq!(status["expectedPods"], 2);
    assert_eq!(status["disruptionsAllowed"], 0);
    assert_eq!(status["conditions"][0]["type"], "DisruptionAllowed");
    assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");

    let (code, retry_after, body) = post_eviction(&emulator, "web-0", "").await;
    assert_eq!(code, 429);
    assert_eq!(retry_after, None);
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        body["details"]["causes"],
        json!([{"reason": "DisruptionBudget", "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}])
    );
    assert!(pods
        .get("web-0")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());

    // A dry run spends nothing; a budget allowing one disruption lets one eviction through.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    wait_budget(&pdbs, "budget recomputed", |s| s["disruptionsAllowed"] == 1).await;
    let (code, _, body) = post_eviction(&emulator, "web-0", "?dryRun=All").await;
    assert_eq!((code, body["status"].as_str()), (201, Some("Success")));
    assert!(pods
        .get("web-0")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    let status = pods.evict("web-0", &EvictParams::default()).await.unwrap();
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );
    let evicted = pods.get("web-0").await.unwrap();
    assert!(evicted.metadata.deletion_timestamp.is_some());
    let condition = evicted
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap();
    assert_eq!(
        (condition.reason.as_deref(), condition.message.as_deref()),
        (
            Some("EvictionByEvictionAPI"),
            Some("Eviction API: evicting")
        )
    );
    // The eviction spent the one allowed disruption at once (as the apiserver
    // does), before the budget controller counts the Terminating pod out.
    let (code, _, _) = post_eviction(&emulator, "web-1", "").await;
    assert_eq!(code, 429, "the allowed disruption is spent");
    wait_budget(&pdbs, "terminating pod counted out", |s| {
        s["currentHealthy"] == 1
    })
    .await;
    let (code, _, body) = post_eviction(&emulator, "web-1", "").await;
    assert_eq!(code, 429);
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 1 currently"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn evictions_bypass_budgets_for_finished_pods_and_refuse_ambiguity() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    for (name, selector) in [("web", json!({"app": "web"})), ("all", json!({}))] {
        let budget: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": selector}}
        }))
        .unwrap();
        pdbs.create(&PostParams::default(), &budget).await.unwrap();
    }
    pods.create(
        &PostParams::default(),
        &pod("done", "succeed:0.1", json!({"app": "web"})),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("busy", "hang", json!({"app": "web"})),
    )
    .await
    .unwrap();
    running(&pods, "busy").await;
    let (code, _, body) = post_eviction(&emulator, "busy", "").await;
    assert_eq!(code, 500);
    assert_eq!(
        body["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    support::eventually("pod done", || async {
        let pod = pods.get("done").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let (code, _, _) = post_eviction(&emulator, "done", "").await;
    assert_eq!(code, 201, "a finished pod is evicted without budgets");
    support::eventually("finished pod deleted", || async {
        pods.get_opt("done").await.ok()?.is_none().then_some(())
    })
    .await;

    let (code, _, body) = post_eviction(&emulator, "missing", "").await;
    assert_eq!(
        (code, body["message"].as_str()),
        (404, Some("pods \"missing\" not found"))
    );
    let http = support::http_client(&emulator);
    let wrong_name = http
        .post(format!(
            "{}/api/v1/namespaces/default/pods/busy/eviction",
            emulator.url()
        ))
        .json(
            &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_name.status().as_u16(), 400);
    let body: Value = wrong_name.json().await.unwrap();
    assert_eq!(
        body["message"],
        "name in URL does not match name in Eviction object"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn scripted_eviction_never_races_the_container_exit() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let pods: Api<Pod> = Api::namespaced(emulator.client().unwrap(), "default");
    let names: Vec<String> = (0..6).map(|i| format!("pressure-{i}")).collect();
    for name in &names {
        pods.create(
            &PostParams::default(),
            &pod(name, "evict:0.2", json!({"app": "pressure"})),
        )
        .await
        .unwrap();
    }
    let finished = support::eventually("every pod finished", || async {
        let list = pods
            .list(&ListParams::default().labels("app=pressure"))
            .await
            .ok()?;
        let phases: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.status.as_ref()?.phase.clone())
            .filter(|p| p == "Succeeded" || p == "Failed")
            .collect();
        (phases.len() == names.len()).then_some(list.items)
    })
    .await;
    for pod in finished {
        let status = pod.status.unwrap();
        assert_eq!(
            status.phase.as_deref(),
            Some("Failed"),
            "{:?}",
            pod.metadata.name
        );
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        let terminated = status.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(terminated.exit_code, 137);
    }
    emulator.shutdown().await;
}
