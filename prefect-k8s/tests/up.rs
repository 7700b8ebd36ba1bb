//! The README's first command, as a user runs it: `prefect-k8s up
//! --exit-after-demo` starts nats-server, the Prefect server, the emulator,
//! the poller, two dispatchers and the reporter, runs the demo flow in a
//! process "pod" and exits 0 once the run is Completed. The services log in
//! to NATS as their own users, and none of their calls is refused.

use std::path::Path;
use std::process::Command;

#[test]
fn up_runs_the_demo_flow_to_completed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // `up` starts the services' binaries from beside its own.
    let build = Command::new(env!("CARGO"))
        .args(["build", "--bins"])
        .current_dir(root)
        .status()
        .expect("run cargo build");
    assert!(build.success(), "the workspace's binaries build");
    let state = tempfile::tempdir().unwrap();
    // The binary under test; `up` finds the services' binaries beside it
    // (the build above put them in the same target directory).
    let output = Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
        .args([
            "up",
            "--exit-after-demo",
            "--demo-timeout",
            "240",
            "--state-dir",
        ])
        .arg(state.path())
        .current_dir(root)
        .output()
        .expect("run prefect-k8s up");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "prefect-k8s up failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("Demo flow run reached Completed."),
        "{stdout}"
    );
    let nats_log = std::fs::read_to_string(state.path().join("logs/nats-server.log"))
        .expect("nats-server's log");
    assert!(
        nats_log.contains("Using configuration file") && !nats_log.contains("Violation"),
        "NATS runs with the agent's users and refuses none of the services' calls:\n{nats_log}"
    );
    for service in [
        "poller",
        "dispatcher-1",
        "dispatcher-2",
        "reporter",
        "kube-emulator",
    ] {
        assert!(
            stdout.contains(&format!("stopped {service}")),
            "{service} was stopped: {stdout}"
        );
    }
}
