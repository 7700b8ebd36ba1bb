//! `Table` responses as kubectl asks for them: `includeObject` (`None`, `Metadata` — the
//! default —, `Object`) on list, get and watch for every resource that serves tables, the
//! 400 for other values, and the printers' columns, checked over real HTTP.

mod support;

use kube_emulator::RuntimeKind;
use serde_json::Value;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

async fn get_table(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).header("accept", TABLE).send().await.unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

fn column_names(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn tables_embed_objects_as_include_object_asks() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let http = support::http_client(&emulator);
    let base = emulator.url();
    let lease = serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "poller-0", "leaseDurationSeconds": 15}});
    let created = http
        .post(format!(
            "{base}/apis/coordination.k8s.io/v1/namespaces/default/leases"
        ))
        .json(&lease)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);

    let leases = format!("{base}/apis/coordination.k8s.io/v1/namespaces/default/leases");
    let (_, default) = get_table(&http, &leases).await;
    assert_eq!(column_names(&default), ["Name", "Holder", "Age"]);
    assert_eq!(default["rows"][0]["cells"][1], "poller-0");
    assert_eq!(
        default["rows"][0]["object"]["kind"],
        "PartialObjectMetadata"
    );
    assert!(default["rows"][0]["object"].get("spec").is_none());

    let (_, full) = get_table(&http, &format!("{leases}?includeObject=Object")).await;
    assert_eq!(full["rows"][0]["object"]["kind"], "Lease");
    assert_eq!(
        full["rows"][0]["object"]["apiVersion"],
        "coordination.k8s.io/v1"
    );
    assert_eq!(
        full["rows"][0]["object"]["spec"]["holderIdentity"],
        "poller-0"
    );
    let (_, none) = get_table(&http, &format!("{leases}?includeObject=None")).await;
    assert_eq!(none["rows"][0]["object"], Value::Null);
    assert_eq!(none["rows"][0]["cells"][0], "leader");

    // A single object, and a resource without a printer (the default Name/Created At table).
    let (_, one) = get_table(&http, &format!("{leases}/leader?includeObject=Object")).await;
    assert_eq!(one["rows"][0]["object"]["spec"]["leaseDurationSeconds"], 15);
    assert!(one["metadata"]["resourceVersion"].is_string());
    let roles =
        format!("{base}/apis/rbac.authorization.k8s.io/v1/clusterroles?includeObject=Object");
    let (_, roles) = get_table(&http, &roles).await;
    assert_eq!(column_names(&roles), ["Name", "Created At"]);
    assert!(roles["rows"][0]["object"]["rules"].is_array());

    let (code, status) = get_table(&http, &format!("{leases}?includeObject=Everything")).await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "unrecognized includeObject value: \"Everything\""
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn watched_tables_carry_whole_objects_when_asked() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let http = support::http_client(&emulator);
    let base = emulator.url();
    let response = http
        .get(format!(
            "{base}/api/v1/namespaces/default/configmaps?watch=true&includeObject=Object&timeoutSeconds=2"
        ))
        .header("accept", TABLE)
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    let event: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["kind"], "Table");
    assert_eq!(column_names(&event["object"]), ["Name", "Data", "Age"]);
    let row = &event["object"]["rows"][0];
    assert_eq!(row["cells"][0], "kube-root-ca.crt");
    assert_eq!(row["cells"][1], 1);
    assert_eq!(row["object"]["kind"], "ConfigMap");
    assert!(row["object"]["data"]["ca.crt"].is_string());
    emulator.shutdown().await;
}
