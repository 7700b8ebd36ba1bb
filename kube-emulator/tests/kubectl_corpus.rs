//! The kubectl commands people use every day, run with the real kubectl against the emulator,
//! each checked on what it prints: Jobs and Pods (apply, wait, get with custom columns,
//! jsonpath and field selectors, logs -f --since, describe, delete --grace-period, wait
//! --for=delete), Events (--sort-by=.lastTimestamp, -o wide, -w --output-watch-events,
//! kubectl events --for), Namespaces (Terminating, then gone), Leases and Secrets (patch merge,
//! JSON and strategic, label/annotate --overwrite, apply --dry-run=server, diff, explain, auth
//! can-i --list), the agent's Deployments (rollout status from stored status) and drain.

mod support;

use std::process::Stdio;
use std::time::Duration;

use kube_emulator::{Emulator, RuntimeKind};
use tokio::io::AsyncReadExt;

/// Run kubectl, require success, return stdout.
async fn ok(emulator: &Emulator, args: &[&str]) -> String {
    let (success, out, err) = support::kubectl(emulator, args).await;
    assert!(success, "kubectl {} failed: {err}\n{out}", args.join(" "));
    out
}

/// Run kubectl with stdin, require success, return stdout.
async fn ok_with(emulator: &Emulator, args: &[&str], stdin: &str) -> String {
    let (success, out, err) = support::kubectl_with_input(emulator, args, stdin).await;
    assert!(success, "kubectl {} failed: {err}\n{out}", args.join(" "));
    out
}

/// The whitespace-separated cells of each line.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// The row whose first cell is `first`.
fn row<'a>(out: &'a [Vec<String>], first: &str) -> &'a Vec<String> {
    out.iter()
        .find(|r| r.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in {out:?}"))
}

const DEMO_JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: demo
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations:
        kube-emulator.io/script: succeed:1
        kube-emulator.io/log: flow run 42 finished
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1.36
";

fn slow_pod(name: &str, script: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
  annotations: {{kube-emulator.io/script: \"{script}\", kube-emulator.io/log: \"hello from {name}\"}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers: [{{name: main, image: busybox:1.36}}]
"
    )
}

#[tokio::test]
async fn jobs_and_pods() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let e = &emulator;
    let pod = job_listing(e).await;
    job_logs_and_describe(e, &pod).await;
    follow_logs(e).await;
    graceful_delete(e).await;
    emulator.shutdown().await;
}

fn job(name: &str) -> String {
    DEMO_JOB.replace("name: demo", &format!("name: {name}"))
}

#[tokio::test]
async fn events() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let e = &emulator;
    let watcher = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", e.kubeconfig_path())
        .args([
            "get",
            "pods",
            "-l",
            "app=watched",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok_with(e, &["apply", "-f", "-"], &slow_pod("watched", "succeed:1")).await;

    finish_jobs(e).await;
    sorted_events(e).await;
    filtered_events(e).await;
    watched_pod_events(watcher).await;
    emulator.shutdown().await;
}

const LEASE: &str = "apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: leader, namespace: work}
spec: {holderIdentity: poller-0, leaseDurationSeconds: 15}
";

const SETTINGS: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: work}
data: {mode: fast}
";

#[tokio::test]
async fn namespaces_leases_and_secrets() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let e = &emulator;
    secrets(e).await;
    lease_patches(e).await;
    labels_and_annotations(e).await;
    dry_run_and_diff(e).await;
    explain_and_can_i(e).await;
    namespace_deletion(e).await;
    emulator.shutdown().await;
}

/// The Deployments of `kubectl apply -k deploy/` (the agent's install).
const AGENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

#[tokio::test]
async fn agent_deployments_and_drain() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let e = &emulator;
    rollout(e).await;
    strategic_patch(e).await;
    drain_blocked(e).await;
    drain_allowed(e).await;
    emulator.shutdown().await;
}

/// Apply and wait for a Job; its table, wide table, and pod queries. Returns the pod name.
async fn job_listing(e: &Emulator) -> String {
    let out = ok_with(e, &["apply", "-f", "-"], DEMO_JOB).await;
    assert_eq!(out.trim(), "job.batch/demo created");
    let out = ok(
        e,
        &[
            "wait",
            "--for=condition=complete",
            "job/demo",
            "--timeout=60s",
        ],
    )
    .await;
    assert_eq!(out.trim(), "job.batch/demo condition met");

    let jobs = rows(&ok(e, &["get", "jobs"]).await);
    assert_eq!(
        jobs[0],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(row(&jobs, "demo")[1..3], ["Complete", "1/1"]);
    let wide = rows(&ok(e, &["get", "jobs", "-o", "wide"]).await);
    assert_eq!(wide[0][5..], ["CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(row(&wide, "demo")[5..7], ["main", "busybox:1.36"]);
    assert!(row(&wide, "demo")[7].starts_with("batch.kubernetes.io/controller-uid="));

    let columns = "NAME:.metadata.name,PHASE:.status.phase,EXIT:.status.containerStatuses[0].state.terminated.exitCode";
    let pods = rows(
        &ok(
            e,
            &[
                "get",
                "pods",
                "-l",
                "job-name=demo",
                "-o",
                &format!("custom-columns={columns}"),
            ],
        )
        .await,
    );
    assert_eq!(pods[0], ["NAME", "PHASE", "EXIT"]);
    assert_eq!(pods.len(), 2);
    let pod = pods[1][0].clone();
    assert!(pod.starts_with("demo-"), "{pod}");
    assert_eq!(pods[1][1..], ["Succeeded", "0"]);
    let out = ok(e, &["get", "pods", "-l", "job-name=demo", "-o", "jsonpath={.items[0].metadata.labels.job-name} {.items[0].spec.containers[0].image} {.items[0].status.phase}"]).await;
    assert_eq!(out, "demo busybox:1.36 Succeeded");
    let out = ok(
        e,
        &[
            "get",
            "pods",
            "--field-selector=status.phase=Succeeded",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(out.trim(), format!("pod/{pod}"));
    let out = ok(
        e,
        &[
            "get",
            "pods",
            "--field-selector=status.phase=Running",
            "-o",
            "name",
        ],
    )
    .await;
    assert_eq!(out, "");
    let pods = rows(&ok(e, &["get", "pods", "-l", "job-name=demo"]).await);
    assert_eq!(pods[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(row(&pods, &pod)[1..4], ["0/1", "Completed", "0"]);
    pod
}

/// logs --since and describe of the Job and its pod.
async fn job_logs_and_describe(e: &Emulator, pod: &str) {
    let logs = ok(e, &["logs", "job/demo", "--since=1h"]).await;
    assert_eq!(
        logs,
        "scripted container main: Succeed(1s)\nflow run 42 finished\n"
    );
    let describe = ok(e, &["describe", "job", "demo"]).await;
    assert!(
        describe.contains("Pods Statuses:    0 Active (0 Ready) / 1 Succeeded / 0 Failed"),
        "{describe}"
    );
    assert!(
        describe.contains("SuccessfulCreate  ")
            && describe.contains(&format!("Created pod: {pod}")),
        "{describe}"
    );
    let describe = ok(e, &["describe", "pod", pod]).await;
    assert!(
        describe.contains("Status:           Succeeded"),
        "{describe}"
    );
    assert!(describe.contains("Controlled By:  Job/demo"), "{describe}");
    assert!(describe.contains("Reason:       Completed"), "{describe}");
}

/// logs -f follows a running container until it exits.
async fn follow_logs(e: &Emulator) {
    // logs -f follows a running container until it exits.
    ok_with(e, &["apply", "-f", "-"], &slow_pod("talker", "succeed:2")).await;
    ok(
        e,
        &[
            "wait",
            "--for=condition=ready",
            "pod/talker",
            "--timeout=60s",
        ],
    )
    .await;
    let logs = ok(e, &["logs", "-f", "--since=10m", "talker"]).await;
    assert_eq!(
        logs,
        "scripted container main: Succeed(2s)\nhello from talker\n"
    );
    let phase = ok(
        e,
        &["get", "pod", "talker", "-o", "jsonpath={.status.phase}"],
    )
    .await;
    assert_eq!(
        phase, "Succeeded",
        "logs -f returned when the container exited"
    );
}

/// delete --grace-period and wait --for=delete.
async fn graceful_delete(e: &Emulator) {
    // delete --grace-period: the pod ignores SIGTERM and is killed after its 2 s.
    ok_with(
        e,
        &["apply", "-f", "-"],
        &slow_pod("stubborn", "ignore-sigterm"),
    )
    .await;
    ok(
        e,
        &[
            "wait",
            "--for=condition=ready",
            "pod/stubborn",
            "--timeout=60s",
        ],
    )
    .await;
    let out = ok(
        e,
        &[
            "delete",
            "pod",
            "stubborn",
            "--grace-period=2",
            "--wait=false",
        ],
    )
    .await;
    assert_eq!(out.trim(), "pod \"stubborn\" deleted");
    let grace = ok(
        e,
        &[
            "get",
            "pod",
            "stubborn",
            "-o",
            "jsonpath={.metadata.deletionGracePeriodSeconds}",
        ],
    )
    .await;
    assert_eq!(grace, "2");
    let status = rows(&ok(e, &["get", "pod", "stubborn"]).await);
    assert_eq!(row(&status, "stubborn")[2], "Terminating");
    let out = ok(
        e,
        &["wait", "--for=delete", "pod/stubborn", "--timeout=60s"],
    )
    .await;
    assert_eq!(out.trim(), "pod/stubborn condition met");
    let out = ok(e, &["delete", "job", "demo"]).await;
    assert_eq!(out.trim(), "job.batch \"demo\" deleted");
}

/// A watched pod and two Jobs finishing at least a second apart.
async fn finish_jobs(e: &Emulator) {
    // Two Jobs finishing at least a second apart: sorting must put the earlier one first.
    ok_with(e, &["apply", "-f", "-"], &job("early")).await;
    ok(
        e,
        &[
            "wait",
            "--for=condition=complete",
            "job/early",
            "--timeout=60s",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ok_with(e, &["apply", "-f", "-"], &job("late")).await;
    ok(
        e,
        &[
            "wait",
            "--for=condition=complete",
            "job/late",
            "--timeout=60s",
        ],
    )
    .await;
    ok(
        e,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/watched",
            "--timeout=60s",
        ],
    )
    .await;
    ok(e, &["delete", "pod", "watched"]).await;
}

/// --sort-by=.lastTimestamp keeps every event, earliest first.
async fn sorted_events(e: &Emulator) {
    let plain = rows(&ok(e, &["get", "events", "-A"]).await);
    let sorted = rows(&ok(e, &["get", "events", "-A", "--sort-by=.lastTimestamp"]).await);
    assert_eq!(
        sorted[0],
        [
            "NAMESPACE",
            "LAST",
            "SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "MESSAGE"
        ]
    );
    assert_eq!(sorted.len(), plain.len(), "sorting keeps every event");
    let position = |object: &str, reason: &str| {
        sorted
            .iter()
            .position(|r| r.contains(&object.to_string()) && r.contains(&reason.to_string()))
            .unwrap_or_else(|| panic!("no {reason} event for {object} in {sorted:?}"))
    };
    assert!(position("job/early", "Completed") < position("job/late", "SuccessfulCreate"));
    assert!(position("job/early", "SuccessfulCreate") < position("job/late", "Completed"));
}

/// -o wide, field selectors with custom columns, kubectl events --for.
async fn filtered_events(e: &Emulator) {
    let wide = rows(
        &ok(
            e,
            &[
                "get",
                "events",
                "-o",
                "wide",
                "--field-selector",
                "involvedObject.name=early",
            ],
        )
        .await,
    );
    assert_eq!(
        wide[0],
        [
            "LAST",
            "SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST",
            "SEEN",
            "COUNT",
            "NAME"
        ]
    );
    let completed = wide
        .iter()
        .find(|r| r.contains(&"Completed".to_string()))
        .unwrap();
    assert!(
        completed.contains(&"job-controller".to_string()),
        "{completed:?}"
    );
    assert_eq!(completed[completed.len() - 2], "1");

    let columns = "OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message";
    let out = ok(
        e,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=Completed,involvedObject.kind=Job",
            "--sort-by=.lastTimestamp",
            "-o",
            &format!("custom-columns={columns}"),
        ],
    )
    .await;
    assert_eq!(
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>(),
        [
            "OBJECT REASON MESSAGE",
            "early Completed Job completed",
            "late Completed Job completed"
        ]
    );
    let for_job = rows(&ok(e, &["events", "--for", "job/early"]).await);
    assert_eq!(
        for_job[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert_eq!(for_job.len(), 3, "{for_job:?}");
    assert!(
        for_job[1..]
            .iter()
            .all(|r| r.contains(&"Job/early".to_string())),
        "{for_job:?}"
    );
}

/// What get -w --output-watch-events printed.
async fn watched_pod_events(mut watcher: tokio::process::Child) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.start_kill().unwrap();
    let mut seen = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .await
        .unwrap();
    let watched = rows(&seen);
    assert_eq!(
        watched[0],
        ["EVENT", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let kinds: Vec<&str> = watched[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"ADDED"), "{seen}");
    assert_eq!(kinds.last(), Some(&"DELETED"), "{seen}");
    assert!(
        watched
            .iter()
            .any(|r| r[0] == "MODIFIED" && r[3] == "Running"),
        "{seen}"
    );
    assert!(
        watched
            .iter()
            .any(|r| r[0] == "MODIFIED" && r[3] == "Completed"),
        "{seen}"
    );
}

/// A namespace and a Secret: create, get, jsonpath, describe.
async fn secrets(e: &Emulator) {
    assert_eq!(
        ok(e, &["create", "namespace", "work"]).await.trim(),
        "namespace/work created"
    );
    let namespaces = rows(&ok(e, &["get", "namespaces"]).await);
    assert_eq!(namespaces[0], ["NAME", "STATUS", "AGE"]);
    assert_eq!(row(&namespaces, "work")[1], "Active");

    let out = ok(
        e,
        &[
            "-n",
            "work",
            "create",
            "secret",
            "generic",
            "api-key",
            "--from-literal=key=pnu_123",
        ],
    )
    .await;
    assert_eq!(out.trim(), "secret/api-key created");
    let secrets = rows(&ok(e, &["-n", "work", "get", "secrets"]).await);
    assert_eq!(secrets[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(row(&secrets, "api-key")[1..3], ["Opaque", "1"]);
    let encoded = ok(
        e,
        &[
            "-n",
            "work",
            "get",
            "secret",
            "api-key",
            "-o",
            "jsonpath={.data.key}",
        ],
    )
    .await;
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, b"pnu_123");
    let describe = ok(e, &["-n", "work", "describe", "secret", "api-key"]).await;
    assert!(
        describe.contains("Type:  Opaque") && describe.contains("key:  7 bytes"),
        "{describe}"
    );
}

/// A Lease: table, merge and JSON patches, custom columns.
async fn lease_patches(e: &Emulator) {
    assert_eq!(
        ok_with(e, &["apply", "-f", "-"], LEASE).await.trim(),
        "lease.coordination.k8s.io/leader created"
    );
    let leases = rows(&ok(e, &["-n", "work", "get", "leases"]).await);
    assert_eq!(leases[0], ["NAME", "HOLDER", "AGE"]);
    assert_eq!(row(&leases, "leader")[1], "poller-0");
    let out = ok(
        e,
        &[
            "-n",
            "work",
            "patch",
            "lease",
            "leader",
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"poller-1"}}"#,
        ],
    )
    .await;
    assert_eq!(out.trim(), "lease.coordination.k8s.io/leader patched");
    ok(
        e,
        &[
            "-n",
            "work",
            "patch",
            "lease",
            "leader",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/leaseDurationSeconds","value":30}]"#,
        ],
    )
    .await;
    let out = ok(
        e,
        &[
            "-n",
            "work",
            "get",
            "lease",
            "leader",
            "-o",
            "custom-columns=HOLDER:.spec.holderIdentity,SECONDS:.spec.leaseDurationSeconds",
        ],
    )
    .await;
    assert_eq!(rows(&out), [["HOLDER", "SECONDS"], ["poller-1", "30"]]);
}

/// label/annotate refuse to overwrite without --overwrite.
async fn labels_and_annotations(e: &Emulator) {
    assert_eq!(
        ok(e, &["-n", "work", "label", "lease", "leader", "tier=a"])
            .await
            .trim(),
        "lease.coordination.k8s.io/leader labeled"
    );
    let (success, _, err) =
        support::kubectl(e, &["-n", "work", "label", "lease", "leader", "tier=b"]).await;
    assert!(!success);
    assert_eq!(
        err.trim(),
        "error: 'tier' already has a value (a), and --overwrite is false"
    );
    ok(
        e,
        &[
            "-n",
            "work",
            "label",
            "lease",
            "leader",
            "tier=b",
            "--overwrite",
        ],
    )
    .await;
    ok(
        e,
        &["-n", "work", "annotate", "lease", "leader", "owner=poller"],
    )
    .await;
    let (success, _, err) = support::kubectl(
        e,
        &[
            "-n",
            "work",
            "annotate",
            "lease",
            "leader",
            "owner=reporter",
        ],
    )
    .await;
    assert!(!success);
    assert_eq!(err.trim(), "error: --overwrite is false but found the following declared annotation(s): 'owner' already has a value (poller)");
    assert_eq!(
        ok(
            e,
            &[
                "-n",
                "work",
                "annotate",
                "lease",
                "leader",
                "owner=reporter",
                "--overwrite"
            ]
        )
        .await
        .trim(),
        "lease.coordination.k8s.io/leader annotated"
    );
    let out = ok(
        e,
        &[
            "-n",
            "work",
            "get",
            "lease",
            "leader",
            "-o",
            "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner}",
        ],
    )
    .await;
    assert_eq!(out, "b reporter");
}

/// apply --dry-run=server persists nothing; diff shows what apply would change.
async fn dry_run_and_diff(e: &Emulator) {
    // Server-side dry run persists nothing; diff shows what apply would change.
    assert_eq!(
        ok_with(e, &["apply", "--dry-run=server", "-f", "-"], SETTINGS)
            .await
            .trim(),
        "configmap/settings created (server dry run)"
    );
    let (success, _, err) =
        support::kubectl(e, &["-n", "work", "get", "configmap", "settings"]).await;
    assert!(
        !success && err.contains("configmaps \"settings\" not found"),
        "{err}"
    );
    ok_with(e, &["apply", "-f", "-"], SETTINGS).await;
    let changed = SETTINGS.replace("fast", "slow");
    assert_eq!(
        ok_with(e, &["apply", "--dry-run=server", "-f", "-"], &changed)
            .await
            .trim(),
        "configmap/settings configured (server dry run)"
    );
    let (success, diff, err) = support::kubectl_with_input(e, &["diff", "-f", "-"], &changed).await;
    assert!(
        !success && err.is_empty(),
        "diff exits 1 when there are differences: {err}"
    );
    assert!(diff.contains("\n-  mode: fast\n+  mode: slow\n"), "{diff}");
    let (success, diff, _) = support::kubectl_with_input(e, &["diff", "-f", "-"], SETTINGS).await;
    assert!(success && diff.is_empty(), "{diff}");
}

/// explain (OpenAPI v3 schemas) and auth can-i --list.
async fn explain_and_can_i(e: &Emulator) {
    let explain = ok(e, &["explain", "lease.spec.holderIdentity"]).await;
    assert!(explain.starts_with("GROUP:      coordination.k8s.io\nKIND:       Lease\nVERSION:    v1\n\nFIELD: holderIdentity <string>\n"), "{explain}");
    assert!(
        explain.contains("holderIdentity contains the identity of the holder of a current lease."),
        "{explain}"
    );
    let explain = ok(e, &["explain", "jobs.spec"]).await;
    assert!(
        explain.contains("  backoffLimit\t<integer>\n")
            && explain.contains("  template\t<PodTemplateSpec> -required-\n"),
        "{explain}"
    );
    let can_i = rows(&ok(e, &["auth", "can-i", "--list"]).await);
    assert_eq!(
        can_i[0],
        [
            "Resources",
            "Non-Resource",
            "URLs",
            "Resource",
            "Names",
            "Verbs"
        ]
    );
    assert_eq!(can_i[1], ["*.*", "[]", "[]", "[*]"]);
}

/// Deleting the namespace: Terminating, new content refused, then gone.
async fn namespace_deletion(e: &Emulator) {
    // Deleting the namespace: Terminating, new content refused, then gone.
    ok_with(
        e,
        &["apply", "-n", "work", "-f", "-"],
        &slow_pod("lingering", "ignore-sigterm"),
    )
    .await;
    ok(
        e,
        &[
            "-n",
            "work",
            "wait",
            "--for=condition=ready",
            "pod/lingering",
            "--timeout=60s",
        ],
    )
    .await;
    assert_eq!(
        ok(e, &["delete", "namespace", "work", "--wait=false"])
            .await
            .trim(),
        "namespace \"work\" deleted"
    );
    let namespaces = rows(&ok(e, &["get", "namespace", "work"]).await);
    assert_eq!(row(&namespaces, "work")[1], "Terminating");
    let (success, _, err) = support::kubectl(
        e,
        &[
            "-n",
            "work",
            "create",
            "configmap",
            "late",
            "--from-literal=a=b",
        ],
    )
    .await;
    assert!(!success);
    assert!(err.contains("configmaps \"late\" is forbidden: unable to create new content in namespace work because it is being terminated"), "{err}");
    let out = ok(
        e,
        &["wait", "--for=delete", "namespace/work", "--timeout=60s"],
    )
    .await;
    assert_eq!(out.trim(), "namespace/work condition met");
}

/// The agent's Deployments: rollout status reads stored status only.
async fn rollout(e: &Emulator) {
    let out = ok(e, &["apply", "-k", AGENT]).await;
    assert!(
        out.contains("deployment.apps/prefect-k8s-poller created"),
        "{out}"
    );
    let deployments = rows(&ok(e, &["get", "deployments"]).await);
    assert_eq!(
        deployments[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(
        row(&deployments, "prefect-k8s-poller")[1..4],
        ["0/1", "0", "0"]
    );

    // No controller reconciles Deployments: rollout status waits for a status nobody writes…
    let (success, out, err) = support::kubectl(
        e,
        &[
            "rollout",
            "status",
            "deployment/prefect-k8s-poller",
            "--timeout=2s",
        ],
    )
    .await;
    assert!(!success);
    assert!(
        out.contains("Waiting for deployment spec update to be observed..."),
        "{out}"
    );
    assert!(err.contains("timed out waiting for the condition"), "{err}");
    // …until it is stored (what the deployment controller would write).
    let status = r#"{"status":{"observedGeneration":1,"replicas":1,"updatedReplicas":1,"readyReplicas":1,"availableReplicas":1}}"#;
    ok(
        e,
        &[
            "patch",
            "deployment",
            "prefect-k8s-poller",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
    )
    .await;
    let out = ok(
        e,
        &[
            "rollout",
            "status",
            "deployment/prefect-k8s-poller",
            "--timeout=10s",
        ],
    )
    .await;
    assert_eq!(
        out.trim(),
        "deployment \"prefect-k8s-poller\" successfully rolled out"
    );
    let deployments = rows(&ok(e, &["get", "deployment", "prefect-k8s-poller"]).await);
    assert_eq!(
        row(&deployments, "prefect-k8s-poller")[1..4],
        ["1/1", "1", "1"]
    );
}

/// A strategic merge patch merges the container by name.
async fn strategic_patch(e: &Emulator) {
    // A strategic merge patch merges the container by name and bumps the generation.
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"poller","image":"registry.example.com/prefect-k8s:0.2.0"}]}}}}"#;
    ok(
        e,
        &["patch", "deployment", "prefect-k8s-poller", "-p", patch],
    )
    .await;
    let out = ok(e, &["get", "deployment", "prefect-k8s-poller", "-o", "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].name}"]).await;
    assert_eq!(out, "2 registry.example.com/prefect-k8s:0.2.0 health");
    let (success, out, _) = support::kubectl(
        e,
        &[
            "rollout",
            "status",
            "deployment/prefect-k8s-poller",
            "--timeout=1s",
        ],
    )
    .await;
    assert!(
        !success && out.contains("Waiting for deployment spec update to be observed..."),
        "{out}"
    );
}

/// drain evicts through pods/eviction and honours a PodDisruptionBudget.
async fn drain_blocked(e: &Emulator) {
    // drain evicts through pods/eviction and honours a PodDisruptionBudget.
    for name in ["web-0", "web-1"] {
        let pod = slow_pod(name, "hang").replace(&format!("app: {name}"), "app: web");
        ok_with(e, &["apply", "-f", "-"], &pod).await;
        ok(
            e,
            &[
                "wait",
                "--for=condition=ready",
                &format!("pod/{name}"),
                "--timeout=60s",
            ],
        )
        .await;
    }
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec: {minAvailable: 2, selector: {matchLabels: {app: web}}}\n";
    ok_with(e, &["apply", "-f", "-"], pdb).await;
    support::eventually("budget computed", || async {
        let (_, out, _) = support::kubectl(
            e,
            &[
                "get",
                "pdb",
                "web",
                "-o",
                "jsonpath={.status.currentHealthy}",
            ],
        )
        .await;
        (out == "2").then_some(())
    })
    .await;
    let budgets = rows(&ok(e, &["get", "pdb", "web"]).await);
    assert_eq!(
        budgets[0],
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(row(&budgets, "web")[1..4], ["2", "N/A", "0"]);
    let (success, out, err) = support::kubectl(
        e,
        &[
            "drain",
            "kube-emulator-node",
            "--force",
            "--timeout=3s",
            "--pod-selector=app=web",
        ],
    )
    .await;
    assert!(!success);
    assert!(out.contains("node/kube-emulator-node cordoned"), "{out}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
}

/// With the budget relaxed, drain evicts and completes.
async fn drain_allowed(e: &Emulator) {
    let nodes = rows(&ok(e, &["get", "nodes"]).await);
    assert_eq!(
        row(&nodes, "kube-emulator-node")[1],
        "Ready,SchedulingDisabled"
    );
    ok(
        e,
        &[
            "patch",
            "pdb",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"minAvailable":0}}"#,
        ],
    )
    .await;
    let out = ok(
        e,
        &[
            "drain",
            "kube-emulator-node",
            "--force",
            "--timeout=60s",
            "--pod-selector=app=web",
        ],
    )
    .await;
    assert!(
        out.contains("pod/web-0 evicted") && out.contains("pod/web-1 evicted"),
        "{out}"
    );
    assert!(out.contains("node/kube-emulator-node drained"), "{out}");
}
