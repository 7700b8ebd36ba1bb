//! docs/install.md as a new user runs it, against a Kubernetes API (the
//! emulator, through a kubeconfig, with the real kubectl): the command that
//! creates the NATS Secret for kustomize (taken from the docs), `prefect-k8s
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

/// The shell command of docs/install.md that starts with `first_line`, with
/// its `\` continuation lines.
fn documented_command(first_line: &str) -> String {
    let docs = std::fs::read_to_string(workspace_root().join("docs/install.md")).unwrap();
    let mut lines = docs
        .lines()
        .skip_while(|line| !line.starts_with(first_line));
    let mut command = String::new();
    for line in lines.by_ref() {
        command.push_str(line);
        command.push('\n');
        if !line.ends_with('\\') {
            break;
        }
    }
    assert!(!command.is_empty(), "docs/install.md shows `{first_line}`");
    command
}

/// The NATS Secret's passwords as the cluster holds them.
fn nats_passwords(kubeconfig: &Path) -> Vec<(String, String)> {
    let template = r#"{{range $k, $v := .data}}{{$k}}={{$v | base64decode}}{{"\n"}}{{end}}"#;
    kubectl(
        kubeconfig,
        &[
            "get",
            "secret",
            "prefect-k8s-nats-auth",
            "-o",
            &format!("go-template={template}"),
        ],
        "",
    )
    .lines()
    .map(|line| {
        let (key, value) = line.split_once('=').unwrap();
        (key.to_owned(), value.to_owned())
    })
    .collect()
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

    // The kustomize route's first step: the NATS passwords.
    let create_secret = documented_command("kubectl create secret generic prefect-k8s-nats-auth");
    run_ok(
        Command::new("sh")
            .args(["-c", &create_secret])
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    kubectl_with_kustomize().parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
        "the documented command creating the NATS Secret",
    );
    let passwords = nats_passwords(&kubeconfig);
    let keys: Vec<&str> = passwords.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["dispatcher-password", "poller-password", "route-password"]
    );
    for (key, password) in &passwords {
        assert!(
            service_runtime::nats_auth::is_config_safe_password(password) && password.len() >= 32,
            "{key}: nats-server reads it back unchanged"
        );
    }

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
