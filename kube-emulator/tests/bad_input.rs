//! Bad input gets the apiserver's 400/422 Status naming the problem, and the request parsers
//! never panic on arbitrary input (property tests).

mod support;

use kube_emulator::api::request::{parse_path, Query};
use kube_emulator::selectors::{FieldSelector, LabelSelector};
use kube_emulator::RuntimeKind;
use proptest::prelude::*;
use serde_json::{json, Value};

async fn post(http: &reqwest::Client, url: &str, body: &str) -> (u16, Value) {
    let response = http
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let status: Value = response.json().await.unwrap();
    serde_json::from_value::<kube::core::Status>(status.clone()).expect("a Status body");
    (code, status)
}

#[tokio::test]
async fn malformed_and_invalid_objects_are_rejected_with_reasons() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let http = support::http_client(&emulator);
    let jobs = format!("{}/apis/batch/v1/namespaces/default/jobs", emulator.url());

    let (code, status) = post(&http, &jobs, "{not json").await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));

    let (code, status) = post(
        &http,
        &jobs,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("does not match the expected API version"),
        "{status}"
    );

    let (code, status) = post(
        &http,
        &jobs,
        r#"{"apiVersion":"batch/v1","kind":"Pod","metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(code, 400, "{status}");

    let bad_name = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "Bad_Name"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
    let (code, status) = post(&http, &jobs, &bad_name.to_string()).await;
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");

    let missing_image = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}});
    let (code, status) = post(&http, &jobs, &missing_image.to_string()).await;
    assert_eq!(code, 422);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.template.spec.containers[0].image: Required value"),
        "{status}"
    );

    let bad_label = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok", "labels": {"a": "bad value!"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
    let (code, status) = post(&http, &jobs, &bad_label.to_string()).await;
    assert_eq!(code, 422);
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.labels");

    let bad_quantity = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "lots"}}}]}}}});
    let (code, status) = post(&http, &jobs, &bad_quantity.to_string()).await;
    assert_eq!(code, 400);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("quantities must match the regular expression"),
        "{status}"
    );

    let negative = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"memory": "-1Gi"}}}]}}}});
    let (code, status) = post(&http, &jobs, &negative.to_string()).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.template.spec.containers[0].resources.requests[memory]"
    );

    let always = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let (code, status) = post(&http, &jobs, &always.to_string()).await;
    assert_eq!(code, 422);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{status}"
    );

    // Unknown fields inside the pod template are dropped (Prefect puts `completions` there).
    let prefect_like = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "flow-"},
        "spec": {"template": {"spec": {"completions": 1, "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
    let (code, created) = {
        let response = http
            .post(&jobs)
            .header("Content-Type", "application/json")
            .body(prefect_like.to_string())
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(code, 201);
    assert!(created.pointer("/spec/template/spec/completions").is_none());

    let bad_selector = http
        .get(format!("{jobs}?labelSelector=a%20b"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_selector.status().as_u16(), 400);
    let bad_field = http
        .get(format!(
            "{}/api/v1/pods?fieldSelector=spec.foo%3Dbar",
            emulator.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_field.status().as_u16(), 400);
    let body: Value = bad_field.json().await.unwrap();
    assert_eq!(body["message"], "field label not supported: spec.foo");

    // JSON patch over raw HTTP; a precondition-violating JSON patch fails.
    let cm = format!("{}/api/v1/namespaces/default/configmaps", emulator.url());
    post(&http, &cm, r#"{"metadata":{"name":"p"},"data":{"a":"1"}}"#).await;
    let patched = http
        .patch(format!("{cm}/p"))
        .header("Content-Type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/data/a","value":"2"}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    let unsupported = http
        .patch(format!("{cm}/p"))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status().as_u16(), 415);
    emulator.shutdown().await;
}

proptest! {
    #[test]
    fn request_parsers_never_panic(path in "\\PC{0,80}", query in "\\PC{0,80}", selector in "\\PC{0,60}") {
        let _ = parse_path(&path);
        let _ = Query::parse(Some(&query));
        let _ = LabelSelector::parse(&selector);
        let _ = FieldSelector::parse(&selector, kube_emulator::resources::pods());
    }

    #[test]
    fn structured_paths_never_panic(segments in proptest::collection::vec("[a-z0-9./%-]{0,12}", 0..8)) {
        let path = format!("/{}", segments.join("/"));
        let _ = parse_path(&path);
        let _ = parse_path(&format!("/api/v1/{path}"));
        let _ = parse_path(&format!("/apis/batch/v1/{path}"));
    }

    #[test]
    fn protobuf_envelopes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut body = b"k8s\x00".to_vec();
        body.extend(tail);
        let _ = kube_emulator::protobuf::decode(&body, "application/vnd.kubernetes.protobuf");
    }

    #[test]
    fn selector_like_text_never_panics(text in "[a-z=!,() <>0-9/.-]{0,40}") {
        let _ = LabelSelector::parse(&text);
        let _ = FieldSelector::parse(&text, kube_emulator::resources::jobs());
    }
}

/// One emulator shared by the fuzz cases below, on its own runtime.
fn fuzz_target() -> &'static (
    tokio::runtime::Runtime,
    kube_emulator::Emulator,
    reqwest::Client,
) {
    static TARGET: std::sync::OnceLock<(
        tokio::runtime::Runtime,
        kube_emulator::Emulator,
        reqwest::Client,
    )> = std::sync::OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(support::start(RuntimeKind::Scripted));
        let http = runtime.block_on(async { support::http_client(&emulator) });
        (runtime, emulator, http)
    })
}

fn arbitrary_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("api".to_string()),
        Just("apis".to_string()),
        Just("v1".to_string()),
        Just("batch".to_string()),
        Just("namespaces".to_string()),
        Just("default".to_string()),
        Just("pods".to_string()),
        Just("jobs".to_string()),
        Just("status".to_string()),
        Just("log".to_string()),
        "[a-zA-Z0-9%._-]{0,10}",
    ];
    proptest::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever arrives over HTTP, the server answers (no panic drops the connection) and every
    /// error body is a Status.
    #[test]
    fn arbitrary_requests_get_an_answer(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE")],
        path in arbitrary_path(),
        query in "[a-zA-Z=&%0-9,!()._-]{0,40}",
        body in prop_oneof![Just(String::new()), Just("{}".to_string()), Just("{\"metadata\":{\"name\":\"x\"}}".to_string()), "\\PC{0,60}"],
        content_type in prop_oneof![Just("application/json"), Just("application/merge-patch+json"), Just("application/strategic-merge-patch+json"), Just("application/json-patch+json"), Just("application/apply-patch+yaml"), Just("text/plain")],
    ) {
        let (runtime, emulator, http) = fuzz_target();
        let url = format!("{}{}?{}", emulator.url(), path, query);
        let (status, content_type_back, text) = runtime.block_on(async {
            let response = http
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .header("Content-Type", content_type)
                .body(body.clone())
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .expect("the server answers");
            let status = response.status().as_u16();
            let content_type_back = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            // Watches stream; a bounded read is enough.
            let text = tokio::time::timeout(std::time::Duration::from_millis(300), response.text()).await.ok().and_then(Result::ok).unwrap_or_default();
            (status, content_type_back, text)
        });
        if status >= 400 && content_type_back.starts_with("application/json") {
            let parsed: Result<kube::core::Status, _> = serde_json::from_str(&text);
            prop_assert!(parsed.is_ok(), "{status} body is not a Status: {text}");
        }
    }
}
