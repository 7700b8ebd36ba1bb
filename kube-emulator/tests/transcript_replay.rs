//! Replays of real-cluster recordings (`tests/testdata/k8s-transcripts/v1-36`, from the
//! k8s-openapi project, Apache-2.0: see `LICENSE-k8s-openapi` beside them): the same requests must
//! get the same status codes and response shapes (uids, timestamps, resourceVersions, generated
//! suffixes and runtime-only fields aside), and every body must round-trip through k8s-openapi.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube_emulator::RuntimeKind;
use serde_json::Value;

const TRANSCRIPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/testdata/k8s-transcripts/v1-36"
);

#[derive(serde::Deserialize)]
struct Step {
    request_url: String,
    request_method: String,
    request_body: String,
    request_content_type: Option<String>,
    response_status_code: u16,
    response_body: String,
}

fn load(name: &str) -> Vec<Step> {
    let path = format!("{TRANSCRIPTS}/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

/// Key paths of a JSON document; array indices collapse to `[]`.
fn shape(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{prefix}.{k}");
                out.insert(path.clone());
                shape(v, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// Fields a real node/runtime reports that the emulator does not model.
const IGNORED: &[&str] = &[
    "managedFields",
    ".user",
    ".volumeMounts",
    ".allocatedResources",
    ".resources",
    "recursiveReadOnly",
    ".stopSignal",
];

fn missing_paths(expected: &Value, actual: &Value) -> Vec<String> {
    let mut want = BTreeSet::new();
    shape(expected, "", &mut want);
    let mut have = BTreeSet::new();
    shape(actual, "", &mut have);
    want.into_iter()
        .filter(|p| !have.contains(p))
        .filter(|p| !IGNORED.iter().any(|i| p.contains(i)))
        .collect()
}

async fn send(client: &reqwest::Client, base: &str, step: &Step) -> (u16, String) {
    let url = format!("{base}{}", step.request_url);
    let method = reqwest::Method::from_bytes(step.request_method.as_bytes()).unwrap();
    let mut request = client.request(method, url);
    if let Some(ct) = &step.request_content_type {
        request = request.header("Content-Type", ct);
    }
    if !step.request_body.is_empty() {
        request = request.body(step.request_body.clone());
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    (code, response.text().await.unwrap())
}

fn round_trips(kind: &str, body: &Value) {
    use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
    let ok = match kind {
        "Job" => serde_json::from_value::<Job>(body.clone()).is_ok(),
        "Pod" => serde_json::from_value::<Pod>(body.clone()).is_ok(),
        "PodList" => serde_json::from_value::<k8s_openapi::List<Pod>>(body.clone()).is_ok(),
        "JobList" => serde_json::from_value::<k8s_openapi::List<Job>>(body.clone()).is_ok(),
        _ => true,
    };
    assert!(ok, "{kind} does not deserialize into k8s-openapi: {body}");
}

#[tokio::test]
async fn job_create_transcript_replays() {
    let emulator = support::start(RuntimeKind::Process).await;
    let http = support::http_client(&emulator);
    let base = emulator.url();
    let steps = load("job-create.json");
    // Step 0: create.
    let (code, body) = send(&http, &base, &steps[0]).await;
    assert_eq!(code, steps[0].response_status_code, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let expected: Value = serde_json::from_str(&steps[0].response_body).unwrap();
    assert_eq!(missing_paths(&expected, &created), Vec::<String>::new());
    round_trips("Job", &created);
    // Poll like the recording until the Job has failed, then compare the final shape.
    let final_step = &steps[6];
    let poll_step = &steps[1];
    let job = support::eventually("job Failed", || {
        let http = http.clone();
        let base = base.clone();
        async move {
            let (code, body) = send(&http, &base, poll_step).await;
            assert_eq!(code, 200);
            let job: Value = serde_json::from_str(&body).unwrap();
            let failed = job
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Failed"));
            failed.then_some(job)
        }
    })
    .await;
    let expected_final: Value = serde_json::from_str(&final_step.response_body).unwrap();
    assert_eq!(missing_paths(&expected_final, &job), Vec::<String>::new());
    assert_eq!(job["status"]["conditions"][0]["type"], "FailureTarget");
    assert_eq!(
        job["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(job["status"]["failed"], 1);
    round_trips("Job", &job);
    // Step 7: pod list; the pod failed with exit code 5 like the recording.
    let (code, body) = send(&http, &base, &steps[7]).await;
    assert_eq!(code, 200);
    let pods: Value = serde_json::from_str(&body).unwrap();
    let expected_pods: Value = serde_json::from_str(&steps[7].response_body).unwrap();
    assert_eq!(missing_paths(&expected_pods, &pods), Vec::<String>::new());
    assert_eq!(
        pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        5
    );
    assert!(
        pods["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    round_trips("PodList", &pods);
    // Step 8: DELETE without a body -> orphan finalizer, deletionTimestamp.
    let (code, body) = send(&http, &base, &steps[8]).await;
    assert_eq!(code, steps[8].response_status_code);
    let deleted: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(deleted["kind"], "Job");
    assert_eq!(
        deleted["metadata"]["finalizers"],
        serde_json::json!(["orphan"])
    );
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    // Step 9: deletecollection of the pods returns a PodList.
    let (code, body) = send(&http, &base, &steps[9]).await;
    assert_eq!(code, steps[9].response_status_code);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    round_trips("PodList", &list);
    emulator.shutdown().await;
}

#[tokio::test]
async fn api_versions_and_pod_list_transcripts_replay() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let http = support::http_client(&emulator);
    let step = &load("api_versions-list.json")[0];
    let (code, body) = send(&http, &emulator.url(), step).await;
    assert_eq!(code, 200);
    let ours: Value = serde_json::from_str(&body).unwrap();
    let theirs: Value = serde_json::from_str(&step.response_body).unwrap();
    assert_eq!(missing_paths(&theirs, &ours), Vec::<String>::new());
    let real_groups: BTreeSet<_> = theirs["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    // The recorded cluster has no CRDs: the custom resource groups the
    // emulator serves (as a cluster with KEDA and the Prometheus Operator)
    // are the only ones it may add.
    for group in ours["groups"].as_array().unwrap() {
        let name = group["name"].as_str().unwrap();
        assert!(
            real_groups.contains(name)
                || kube_emulator::resources::CUSTOM_RESOURCE_GROUPS.contains(&name),
            "{group}"
        );
    }
    for custom in kube_emulator::resources::CUSTOM_RESOURCE_GROUPS {
        assert!(
            ours["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|group| group["name"] == custom),
            "{custom} is served"
        );
    }
    serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList>(ours)
        .unwrap();

    let step = &load("pod-list.json")[0];
    let (code, body) = send(&http, &emulator.url(), step).await;
    assert_eq!(code, step.response_status_code);
    let ours: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ours["kind"], "PodList");
    assert!(ours["metadata"]["resourceVersion"].is_string());
    round_trips("PodList", &ours);
    emulator.shutdown().await;
}

async fn watch_lines(base: &str, step: &Step, wanted: usize) -> Vec<Value> {
    let mut response = reqwest::Client::builder()
        .build()
        .unwrap()
        .get(format!("{base}{}", step.request_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), step.response_status_code);
    let mut buffer = Vec::new();
    let mut lines = Vec::new();
    while lines.len() < wanted {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("watch data")
            .unwrap()
            .expect("chunk");
        buffer.extend_from_slice(&chunk);
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
    }
    lines
}

#[tokio::test]
async fn watch_transcripts_replay() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client, "kube-system");
    for name in ["b-pod", "a-pod"] {
        let pod = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "hang"}]}})).unwrap();
        pods.create(&kube::api::PostParams::default(), &pod)
            .await
            .unwrap();
    }
    // Plain watch: synthetic ADDED events for current pods.
    let step = &load("watch_event-watch_pods.json")[0];
    let expected_first: Value =
        serde_json::from_str(step.response_body.lines().next().unwrap()).unwrap();
    let lines = watch_lines(&emulator.url(), step, 2).await;
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[0]["object"]["kind"], expected_first["object"]["kind"]);
    round_trips("Pod", &lines[0]["object"]);

    // Streaming list: ADDED in name order, then the initial-events-end bookmark.
    let step = &load("watch_event-watch_pods_without_initial_events.json")[0];
    let expected_bookmark: Value =
        serde_json::from_str(step.response_body.lines().last().unwrap()).unwrap();
    let lines = watch_lines(&emulator.url(), step, 3).await;
    assert_eq!(lines[0]["object"]["metadata"]["name"], "a-pod");
    assert_eq!(lines[1]["object"]["metadata"]["name"], "b-pod");
    let mut bookmark = lines[2].clone();
    bookmark["object"]["metadata"]["resourceVersion"] =
        expected_bookmark["object"]["metadata"]["resourceVersion"].clone();
    assert_eq!(bookmark, expected_bookmark);
    emulator.shutdown().await;
}
