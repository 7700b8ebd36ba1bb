//! Shared helpers for the integration tests: start an emulator and poll for conditions with
//! generous timeouts (behaviour, never timing, is asserted).

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use kube_emulator::{Emulator, EmulatorConfig, RuntimeKind};

/// Start an emulator with fast delays.
pub async fn start(runtime: RuntimeKind) -> Emulator {
    Emulator::start(EmulatorConfig {
        runtime,
        ..EmulatorConfig::fast()
    })
    .await
    .expect("emulator starts")
}

/// Poll `check` until it returns `Some`, panicking with `what` after 30 s.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let (within, every) = (Duration::from_secs(30), Duration::from_millis(50));
    test_stack::wait::eventually(what, within, every, check).await
}

/// A Job manifest with one container.
pub fn job(
    name: &str,
    image: &str,
    command: &[&str],
    backoff_limit: i32,
) -> k8s_openapi::api::batch::v1::Job {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": command}]
            }}
        }
    }))
    .expect("job manifest")
}

/// A plain HTTP client. Building a kube client first installs the process-wide rustls crypto
/// provider that reqwest needs.
pub fn http_client(emulator: &Emulator) -> reqwest::Client {
    let _ = emulator.client();
    reqwest::Client::new()
}

/// Run the real kubectl against the emulator with `stdin`; returns (success, stdout, stderr).
pub async fn kubectl_with_input(
    emulator: &Emulator,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", emulator.kubeconfig_path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("kubectl finishes");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Run the real kubectl against the emulator; returns (success, stdout, stderr).
pub async fn kubectl(emulator: &Emulator, args: &[&str]) -> (bool, String, String) {
    kubectl_with_input(emulator, args, "").await
}
