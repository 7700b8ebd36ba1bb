//! Every object the emulator serves survives a k8s-openapi round trip unchanged: deserializing
//! into the typed struct and serializing back loses no field (k8s-openapi ignores unknown
//! fields, so a lost field would be a misspelt or invented one).

mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube_emulator::RuntimeKind;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Drop nulls and empty maps/lists, which serializers may legitimately omit.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !v.is_null() && v != &Value::Object(Default::default()))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn assert_round_trips<K: DeserializeOwned + Serialize>(what: &str, raw: &Value) {
    let typed: K =
        serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{raw}"));
    let mut back = serde_json::to_value(&typed).unwrap();
    // List items carry no kind/apiVersion; k8s-openapi always writes them.
    for key in ["kind", "apiVersion"] {
        if raw.get(key).is_none() {
            back.as_object_mut().unwrap().remove(key);
        }
    }
    assert_eq!(
        normalize(&back),
        normalize(raw),
        "{what} changed in a k8s-openapi round trip"
    );
}

async fn raw_list(http: &reqwest::Client, url: String) -> Vec<Value> {
    let list: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn served_objects_round_trip_through_k8s_openapi() {
    let emulator = support::start(RuntimeKind::Process).await;
    let client = emulator.client().unwrap();
    let http = support::http_client(&emulator);
    let base = emulator.url();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &support::job("ok", "alpine", &["sh", "-c", "echo ok"], 0),
    )
    .await
    .unwrap();
    jobs.create(
        &PostParams::default(),
        &support::job("bad", "alpine", &["sh", "-c", "exit 4"], 0),
    )
    .await
    .unwrap();
    let lease: Lease = serde_json::from_value(serde_json::json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 10, "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:01.000000Z"}})).unwrap();
    Api::<Lease>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &lease)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    support::eventually("both jobs finished", || async {
        let list = jobs.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Complete" || c.type_ == "Failed")
                    })
            })
            .then_some(())
    })
    .await;

    for job in raw_list(
        &http,
        format!("{base}/apis/batch/v1/namespaces/default/jobs"),
    )
    .await
    {
        assert_round_trips::<Job>("Job", &job);
    }
    let pods = raw_list(&http, format!("{base}/api/v1/namespaces/default/pods")).await;
    assert!(pods.len() >= 2);
    for pod in pods {
        assert_round_trips::<Pod>("Pod", &pod);
    }
    for event in raw_list(&http, format!("{base}/api/v1/namespaces/default/events")).await {
        assert_round_trips::<Event>("Event", &event);
    }
    for event in raw_list(
        &http,
        format!("{base}/apis/events.k8s.io/v1/namespaces/default/events"),
    )
    .await
    {
        assert_round_trips::<k8s_openapi::api::events::v1::Event>("events.k8s.io Event", &event);
    }
    for lease in raw_list(
        &http,
        format!("{base}/apis/coordination.k8s.io/v1/namespaces/default/leases"),
    )
    .await
    {
        assert_round_trips::<Lease>("Lease", &lease);
    }
    for ns in raw_list(&http, format!("{base}/api/v1/namespaces")).await {
        assert_round_trips::<Namespace>("Namespace", &ns);
    }
    for node in raw_list(&http, format!("{base}/api/v1/nodes")).await {
        assert_round_trips::<Node>("Node", &node);
    }
    for secret in raw_list(&http, format!("{base}/api/v1/namespaces/default/secrets")).await {
        assert_round_trips::<Secret>("Secret", &secret);
    }
    for cm in raw_list(
        &http,
        format!("{base}/api/v1/namespaces/default/configmaps"),
    )
    .await
    {
        assert_round_trips::<ConfigMap>("ConfigMap", &cm);
    }
    for sa in raw_list(
        &http,
        format!("{base}/api/v1/namespaces/default/serviceaccounts"),
    )
    .await
    {
        assert_round_trips::<ServiceAccount>("ServiceAccount", &sa);
    }
    emulator.shutdown().await;
}
