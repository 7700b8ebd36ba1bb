//! docs/install.md as a new user runs it, against a Kubernetes API (the
//! emulator, through a kubeconfig, with the real kubectl): `prefect-k8s
//! install ... --rbac | kubectl apply -f -` for both documented variants, the
//! kustomize routes, and `... | kubectl delete -f -` to uninstall (the
//! self-hosted stream starts with its Namespace). Every command must succeed
//! and leave exactly the objects it printed.

mod manifest_tools;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kube_emulator::{Emulator, EmulatorConfig};
use manifest_tools::{install, kubectl_with_kustomize, run_ok, workspace_root};

/// `kubectl <args>` with the emulator's kubeconfig, feeding `stdin`.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(kubectl_with_kustomize())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kubectl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn names(kubeconfig: &Path, kind: &str, namespace: &str) -> Vec<String> {
    let out = kubectl(
        kubeconfig,
        &["get", kind, "-n", namespace, "-o", "name"],
        "",
    );
    out.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_install_commands_work_as_written() {
    // The namespace controller's real 5 s grace period: what lets `kubectl delete -f` of a
    // stream that starts with its Namespace still find the rest.
    let emulator = Emulator::start(EmulatorConfig {
        namespace_deletion_delay: std::time::Duration::from_secs(5),
        ..EmulatorConfig::fast()
    })
    .await
    .expect("start the emulator");
    let kubeconfig = emulator.kubeconfig_path().to_path_buf();

    // Prefect Cloud variant: API key into a Secret.
    let cloud = install(&[
        "-t",
        "pnu_documented_example",
        "-a",
        "https://api.prefect.cloud/api/accounts/a/workspaces/w",
        "--image",
        "registry.example.com/prefect-k8s:0.1.0",
        "--rbac",
    ]);
    let applied = kubectl(&kubeconfig, &["apply", "-f", "-"], &cloud);
    assert!(
        applied.contains("deployment.apps/prefect-k8s-dispatcher created"),
        "{applied}"
    );
    let deployments = names(&kubeconfig, "deployments", "default");
    for service in ["poller", "dispatcher", "reporter"] {
        assert!(
            deployments.contains(&format!("deployment.apps/prefect-k8s-{service}")),
            "{deployments:?}"
        );
    }
    assert!(names(&kubeconfig, "secrets", "default")
        .contains(&"secret/prefect-k8s-api-key".to_string()));
    assert!(
        names(&kubeconfig, "roles", "default").len() >= 2,
        "per-service Roles"
    );

    // Self-hosted variant in its own namespace.
    let self_hosted = install(&[
        "-a",
        "http://prefect-server.prefect.svc:4200/api",
        "-n",
        "prefect",
        "--image",
        "registry.example.com/prefect-k8s:0.1.0",
        "--rbac",
    ]);
    kubectl(&kubeconfig, &["apply", "-f", "-"], &self_hosted);
    assert_eq!(names(&kubeconfig, "deployments", "prefect").len(), 3);
    assert!(names(&kubeconfig, "statefulsets", "prefect")
        .contains(&"statefulset.apps/prefect-k8s-nats".to_string()));

    // The kustomize routes apply over the same objects.
    let applied = kubectl(&kubeconfig, &["apply", "-k", "deploy/"], "");
    assert!(applied.contains("prefect-k8s-poller"), "{applied}");
    kubectl(&kubeconfig, &["apply", "-k", "deploy/overlays/api-key"], "");

    // The documented uninstall: `prefect-k8s install --rbac | kubectl delete -f -`.
    let uninstall = install(&["--rbac"]);
    kubectl(&kubeconfig, &["delete", "-f", "-"], &uninstall);
    assert!(names(&kubeconfig, "deployments", "default").is_empty());
    assert!(names(&kubeconfig, "roles", "default").is_empty());

    // The self-hosted uninstall: the stream starts with its Namespace, which goes Terminating
    // while the rest is deleted, and kubectl waits until everything, the Namespace too, is gone.
    let deleted = kubectl(&kubeconfig, &["delete", "-f", "-"], &self_hosted);
    for line in [
        "namespace \"prefect\" deleted",
        "deployment.apps \"prefect-k8s-dispatcher\" deleted",
        "statefulset.apps \"prefect-k8s-nats\" deleted",
        "configmap \"prefect-k8s-settings\" deleted",
    ] {
        assert!(deleted.contains(line), "{line} missing from {deleted}");
    }
    let namespaces = kubectl(&kubeconfig, &["get", "namespaces", "-o", "name"], "");
    assert!(!namespaces.contains("namespace/prefect"), "{namespaces}");
    let _ = run_ok(
        Command::new(env!("CARGO_BIN_EXE_prefect-k8s")).args(["install", "--help"]),
        "prefect-k8s install --help",
    );
}
