//! The official Python kubernetes client (and kubernetes_asyncio, which the Prefect worker
//! uses) against the emulator via its kubeconfig. Ignored by default because it needs those
//! packages: run with `KUBE_EMULATOR_PYTHON=/path/to/python cargo test -p kube-emulator --test
//! python_client -- --ignored`.

mod support;

use kube_emulator::RuntimeKind;

#[tokio::test]
#[ignore = "needs a Python with the kubernetes package (set KUBE_EMULATOR_PYTHON)"]
async fn python_clients_work_through_the_kubeconfig() {
    let python = std::env::var("KUBE_EMULATOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let emulator = support::start(RuntimeKind::Scripted).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(emulator.kubeconfig_path())
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("sync client ok"), "{stdout}");
    emulator.shutdown().await;
}
