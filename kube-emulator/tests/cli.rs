//! The `kube-emulator serve` binary: writes a kubeconfig kubectl accepts, serves until SIGTERM,
//! then exits cleanly.

use std::time::Duration;

#[tokio::test]
async fn serve_writes_a_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--runtime",
            "process",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let namespaces = loop {
        if kubeconfig.exists() {
            let output = tokio::process::Command::new("kubectl")
                .env("KUBECONFIG", &kubeconfig)
                .args(["get", "namespaces", "-o", "name"])
                .output()
                .await
                .unwrap();
            if output.status.success() {
                break String::from_utf8_lossy(&output.stdout).into_owned();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
