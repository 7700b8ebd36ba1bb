//! The Python kubernetes clients against the emulator via its kubeconfig: kubernetes_asyncio
//! (what the Prefect worker and its observer use) always, and the official sync `kubernetes`
//! client when installed. Uses the project virtualenv (`$PREFECT_K8S_VENV`, else
//! `<workspace>/.venv`) or `$KUBE_EMULATOR_PYTHON`.

mod support;

use kube_emulator::RuntimeKind;

#[tokio::test]
async fn python_clients_work_through_the_kubeconfig() {
    let python = std::env::var("KUBE_EMULATOR_PYTHON").unwrap_or_else(|_| {
        test_stack::prefect::venv_dir()
            .join("bin/python")
            .display()
            .to_string()
    });
    let emulator = support::start(RuntimeKind::Scripted).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(emulator.kubeconfig_path())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("async client ok"), "{stdout}");
    emulator.shutdown().await;
}
