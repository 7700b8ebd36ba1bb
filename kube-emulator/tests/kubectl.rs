//! kubectl (Debian's kubernetes-client) against the emulator through its kubeconfig: apply -f,
//! get, get -w, describe, logs, delete --cascade=foreground.

mod support;

use std::process::Stdio;
use std::time::Duration;

use kube_emulator::{Emulator, RuntimeKind};
use tokio::io::AsyncReadExt;

async fn kubectl(emulator: &Emulator, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", emulator.kubeconfig_path())
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: kubectl-job
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        kube-emulator.io/script: hang
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1.36
        command: [\"sleep\", \"3600\"]
";

#[tokio::test]
async fn kubectl_manages_jobs_and_pods() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("job.yaml");
    std::fs::write(&manifest, JOB).unwrap();

    // get -w streams changes; start it before anything exists.
    let mut watcher = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", emulator.kubeconfig_path())
        .args(["get", "pods", "-w", "--request-timeout=60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (ok, out, err) = kubectl(&emulator, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "apply failed: {err}");
    assert!(out.contains("job.batch/kubectl-job created"), "{out}");
    // Applying again is unchanged (client-side apply: GET + patch).
    let (ok, out, err) = kubectl(&emulator, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "re-apply failed: {err}");
    assert!(
        out.contains("unchanged") || out.contains("configured"),
        "{out}"
    );

    support::eventually("pod running", || async {
        let (_, out, _) = kubectl(&emulator, &["get", "pods", "-l", "job-name=kubectl-job"]).await;
        out.contains("Running").then_some(())
    })
    .await;
    let (ok, out, _) = kubectl(&emulator, &["get", "jobs"]).await;
    assert!(
        ok && out.contains("kubectl-job") && out.contains("COMPLETIONS"),
        "{out}"
    );
    let (ok, out, err) = kubectl(&emulator, &["describe", "job", "kubectl-job"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("SuccessfulCreate"), "{out}");
    let (ok, out, err) = kubectl(
        &emulator,
        &["describe", "pods", "-l", "job-name=kubectl-job"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("Started") && out.contains("Controlled By:  Job/kubectl-job"),
        "{out}"
    );
    let (ok, out, err) = kubectl(&emulator, &["logs", "job/kubectl-job"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("scripted container main"), "{out}");

    let (ok, out, err) = kubectl(
        &emulator,
        &[
            "delete",
            "job",
            "kubectl-job",
            "--cascade=foreground",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(ok, "delete failed: {err}");
    assert!(out.contains("deleted"), "{out}");
    let (_, out, _) = kubectl(
        &emulator,
        &["get", "pods", "-l", "job-name=kubectl-job", "-o", "name"],
    )
    .await;
    assert_eq!(out.trim(), "", "foreground delete removes the pods first");

    // The watcher saw the pod come and go.
    tokio::time::sleep(Duration::from_millis(200)).await;
    watcher.start_kill().unwrap();
    let mut seen = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .await
        .unwrap();
    assert!(
        seen.contains("kubectl-job-") && seen.contains("Running"),
        "{seen}"
    );
    emulator.shutdown().await;
}

const WORKLOADS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        resources:
          requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: nats
spec:
  serviceName: nats
  selector:
    matchLabels: {app: nats}
  template:
    metadata:
      labels: {app: nats}
    spec:
      containers:
      - name: nats
        image: nats:2.9
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
spec:
  podSelector:
    matchLabels: {app: web}
";

#[tokio::test]
async fn kubectl_applies_workload_manifests_it_only_stores() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("workloads.yaml");
    std::fs::write(&manifest, WORKLOADS).unwrap();
    let (ok, out, err) = kubectl(&emulator, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "apply failed: {err}");
    for created in [
        "deployment.apps/web created",
        "service/web created",
        "statefulset.apps/nats created",
        "poddisruptionbudget.policy/web created",
        "horizontalpodautoscaler.autoscaling/web created",
        "networkpolicy.networking.k8s.io/web created",
    ] {
        assert!(out.contains(created), "{created} missing from {out}");
    }
    let (ok, out, err) = kubectl(
        &emulator,
        &["get", "deployments,statefulsets,services", "-o", "name"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("deployment.apps/web") && out.contains("statefulset.apps/nats"),
        "{out}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn kubectl_typed_generators_send_protobuf_the_emulator_decodes() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let (ok, _, err) = kubectl(&emulator, &["create", "namespace", "work"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &emulator,
        &[
            "-n",
            "work",
            "create",
            "job",
            "gen",
            "--image=busybox:1.36",
            "--",
            "echo",
            "hi",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(
        &emulator,
        &["-n", "work", "get", "job", "gen", "-o", "jsonpath={.spec.template.spec.containers[0].command} {.spec.template.spec.containers[0].imagePullPolicy} {.spec.template.spec.restartPolicy}"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, r#"["echo","hi"] IfNotPresent Never"#);
    let (ok, _, err) = kubectl(
        &emulator,
        &[
            "-n",
            "work",
            "wait",
            "--for=condition=complete",
            "job/gen",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(
        &emulator,
        &[
            "-n",
            "work",
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=2",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let (_, out, _) = kubectl(
        &emulator,
        &[
            "-n",
            "work",
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    )
    .await;
    assert_eq!(out, "2");
    emulator.shutdown().await;
}
