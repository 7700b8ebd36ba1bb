//! `deploy/` and `prefect-k8s install`: every rendering is valid Kubernetes
//! (offline, with PyPI's `kubernetes-validate`, strict), every pod is
//! hardened and probed, the two install routes print the same objects, and
//! each seed option lands where the services read it.

mod manifest_tools;

use std::path::{Path, PathBuf};

use manifest_tools::{
    assert_same_objects, assert_valid_kubernetes, container, env_value, find, install,
    install_refused, kustomize, objects_by_key, parse_stream, without_generated_nats_auth,
    workspace_root, NATS_AUTH_GENERATION, NATS_AUTH_SECRET,
};
use serde_json::Value;

/// The overlays this change ships; any other directory in deploy/overlays is
/// validated too.
const SHIPPED_OVERLAYS: [&str; 5] = [
    "external-nats",
    "nats-cluster",
    "api-key",
    "keda",
    "pod-monitor",
];

/// The URL overlays/external-nats points at.
const EXAMPLE_NATS_URL: &str = "nats://nats.example.internal:4222";

/// Option sets covering every option of `install`, alone and together.
const OPTION_MATRIX: &[&[&str]] = &[
    &[],
    &["--rbac"],
    &["-l", "a", "-l", "b"],
    &["-e", "FOO=bar", "-e", "EMPTY=", "-e", "URL=http://x/?a=b"],
    &["-t", "pnu_matrix_token"],
    &["--nats-url", EXAMPLE_NATS_URL],
    &["--latest"],
    &[
        "--mem-request",
        "256Mi",
        "--mem-limit",
        "1Gi",
        "--cpu-request",
        "500m",
        "--cpu-limit",
        "2",
    ],
    &["-n", "other"],
    &["-n", "other", "--rbac"],
    &["--existing-nats-secret"],
    &["--flow-namespace", "flows"],
    &[
        "-n",
        "agent",
        "--flow-namespace",
        "flows",
        "--rbac",
        "-t",
        "pnu_flows",
    ],
    &[
        "-i",
        "regcred",
        "-i",
        "mirror",
        "--image-pull-policy",
        "Always",
        "--service-account-name",
        "flows",
    ],
    &[
        "-a",
        "https://api.prefect.cloud/api/accounts/a/workspaces/w",
        "--work-pool",
        "k8s-prod",
        "--dispatchers",
        "4",
        "--max-dispatchers",
        "20",
        "--image",
        "registry.example.com/team/prefect-k8s:0.1.0",
    ],
    &[
        "-t",
        "pnu_all_options",
        "-l",
        "critical",
        "-e",
        "A=1",
        "-a",
        "https://prefect.example.com/api",
        "-n",
        "flows",
        "-i",
        "regcred",
        "--rbac",
        "--latest",
        "--mem-request",
        "128Mi",
        "--mem-limit",
        "512Mi",
        "--cpu-request",
        "100m",
        "--cpu-limit",
        "1",
        "--image-pull-policy",
        "IfNotPresent",
        "--service-account-name",
        "flow-runner",
        "--work-pool",
        "prod",
        "--dispatchers",
        "3",
        "--nats-url",
        "nats://nats.flows.svc:4222",
    ],
];

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

fn overlays_on_disk() -> Vec<PathBuf> {
    let dir = deploy_dir().join("overlays");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    for shipped in SHIPPED_OVERLAYS {
        assert!(
            overlays.iter().any(|path| path.ends_with(shipped)),
            "deploy/overlays/{shipped} is missing"
        );
    }
    overlays
}

/// What the house requires of every pod the manifests run.
fn assert_pods_hardened(yaml: &str, label: &str) {
    let objects = parse_stream(yaml);
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|object| matches!(object["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .collect();
    assert!(!workloads.is_empty(), "{label}: no workload");
    for workload in workloads {
        let name = format!("{label}: {}", manifest_tools::object_key(workload));
        let pod = &workload["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["enableServiceLinks"], false, "{name}");
        let containers = pod["containers"].as_array().expect("containers");
        for container in containers {
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(
                security["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"][bound][resource].is_string(),
                        "{name}: resources.{bound}.{resource} missing"
                    );
                }
            }
            assert!(
                container["livenessProbe"].is_object(),
                "{name}: liveness probe"
            );
            assert!(
                container["readinessProbe"].is_object(),
                "{name}: readiness probe"
            );
            if let Some(health) = env_value(container, "HEALTH_ADDR") {
                let port: u64 = health
                    .rsplit(':')
                    .next()
                    .and_then(|port| port.parse().ok())
                    .expect("HEALTH_ADDR has a port");
                for probe in ["livenessProbe", "readinessProbe"] {
                    assert_eq!(
                        container[probe]["grpc"]["port"].as_u64(),
                        Some(port),
                        "{name}: {probe} must be gRPC health on HEALTH_ADDR's port"
                    );
                }
            }
        }
    }
}

#[test]
fn kustomize_base_and_every_overlay_are_valid_hardened_kubernetes() {
    let base = kustomize(&deploy_dir());
    assert_valid_kubernetes(&base, "kubectl kustomize deploy/");
    assert_pods_hardened(&base, "deploy/");
    for overlay in overlays_on_disk() {
        let label = format!("kubectl kustomize {}", overlay.display());
        let rendered = kustomize(&overlay);
        assert_valid_kubernetes(&rendered, &label);
        assert_pods_hardened(&rendered, &label);
    }
}

#[test]
fn install_is_valid_hardened_kubernetes_for_every_option_set() {
    for options in OPTION_MATRIX {
        let label = format!("prefect-k8s install {}", options.join(" "));
        let stream = install(options);
        assert!(
            stream.starts_with("# prefect-k8s ") && stream.contains("\n---\n"),
            "{label}: a commented multi-document stream"
        );
        assert_valid_kubernetes(&stream, &label);
        assert_pods_hardened(&stream, &label);
    }
}

#[test]
fn install_with_rbac_prints_exactly_what_kustomize_renders_from_deploy() {
    assert_same_objects(
        &without_generated_nats_auth(&install(&["--rbac"])),
        "prefect-k8s install --rbac (without its NATS Secret)",
        &kustomize(&deploy_dir()),
        "kubectl kustomize deploy/",
    );
    assert_same_objects(
        &install(&["--rbac", "--existing-nats-secret"]),
        "prefect-k8s install --rbac --existing-nats-secret",
        &kustomize(&deploy_dir()),
        "kubectl kustomize deploy/",
    );
}

#[test]
fn install_without_rbac_is_the_base_without_roles_but_with_service_accounts() {
    let with_rbac = objects_by_key(&install(&["--rbac"]));
    let without = objects_by_key(&install(&[]));
    let expected: Vec<&String> = with_rbac
        .keys()
        .filter(|key| !key.starts_with("Role/") && !key.starts_with("RoleBinding/"))
        .collect();
    assert_eq!(without.keys().collect::<Vec<_>>(), expected);
    assert!(with_rbac.keys().any(|key| key.starts_with("Role/")));
    for account in ["poller", "dispatcher", "reporter"] {
        assert!(
            without.contains_key(&format!("ServiceAccount/default/prefect-k8s-{account}")),
            "the {account}'s ServiceAccount is printed without --rbac"
        );
    }
}

#[test]
fn install_with_nats_url_prints_what_the_external_nats_overlay_renders() {
    let stream = install(&["--rbac", "--nats-url", EXAMPLE_NATS_URL]);
    assert_same_objects(
        &stream,
        "prefect-k8s install --rbac --nats-url",
        &kustomize(&deploy_dir().join("overlays/external-nats")),
        "kubectl kustomize deploy/overlays/external-nats",
    );
    let objects = parse_stream(&stream);
    assert!(
        !objects.iter().any(|object| object["kind"] == "StatefulSet"),
        "no bundled NATS with --nats-url"
    );
    assert_eq!(
        find(&objects, "ConfigMap", "prefect-k8s-settings")["data"]["NATS_URL"],
        EXAMPLE_NATS_URL
    );
}

#[test]
fn install_with_token_prints_the_api_key_overlay_plus_the_secret_and_the_key_only_there() {
    let token = "pnu_only_in_the_secret_0123456789";
    let stream = install(&["--rbac", "-t", token]);
    assert_eq!(
        stream.matches(token).count(),
        1,
        "the key is printed once, in the Secret:\n{stream}"
    );
    let objects = parse_stream(&stream);
    let secret = find(&objects, "Secret", "prefect-k8s-api-key");
    assert_eq!(secret["stringData"]["key"], token);
    let without_secret: Vec<Value> = parse_stream(&without_generated_nats_auth(&stream))
        .into_iter()
        .filter(|object| object["kind"] != "Secret")
        .collect();
    let without_secret = without_secret
        .iter()
        .map(|object| serde_norway::to_string(object).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    assert_same_objects(
        &without_secret,
        "prefect-k8s install --rbac -t (without its Secret)",
        &kustomize(&deploy_dir().join("overlays/api-key")),
        "kubectl kustomize deploy/overlays/api-key",
    );
    for deployment in [
        "prefect-k8s-poller",
        "prefect-k8s-dispatcher",
        "prefect-k8s-reporter",
    ] {
        let env = &container(&objects, "Deployment", deployment)["env"];
        let key_ref = env
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == "PREFECT_API_KEY")
            .unwrap_or_else(|| panic!("{deployment} reads PREFECT_API_KEY"));
        assert_eq!(
            key_ref["valueFrom"]["secretKeyRef"]["name"], "prefect-k8s-api-key",
            "{deployment}"
        );
    }
}

#[test]
fn install_never_prints_a_key_it_was_not_given() {
    let key = "pnu_from_the_callers_environment";
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
        .args(["install", "--rbac"])
        .env("PREFECT_API_KEY", key)
        .env("PREFECT__CLOUD__AGENT__AUTH_TOKEN", key)
        .output()
        .expect("prefect-k8s runs");
    assert!(output.status.success());
    let stream = String::from_utf8(output.stdout).unwrap();
    assert!(!stream.contains(key), "a key from the environment leaked");
    assert!(
        !parse_stream(&stream)
            .iter()
            .any(|object| object["kind"] == "Secret"
                && object["metadata"]["name"] != NATS_AUTH_SECRET),
        "no API key Secret without -t"
    );
}

/// The password Secret's values, by key.
fn nats_passwords(objects: &[Value]) -> Vec<(String, String)> {
    find(objects, "Secret", NATS_AUTH_SECRET)["stringData"]
        .as_object()
        .expect("stringData")
        .iter()
        .map(|(key, value)| (key.clone(), value.as_str().unwrap().to_owned()))
        .collect()
}

fn generation_of(objects: &[Value], kind: &str, name: &str) -> Option<String> {
    find(objects, kind, name)["spec"]["template"]["metadata"]["annotations"][NATS_AUTH_GENERATION]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn install_prints_fresh_nats_passwords_once_each_in_their_secret_and_restarts_their_users() {
    let first = install(&["--rbac"]);
    let second = install(&["--rbac"]);
    let (objects, again) = (parse_stream(&first), parse_stream(&second));
    let passwords = nats_passwords(&objects);
    let keys: Vec<&str> = passwords.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        ["poller-password", "dispatcher-password", "route-password"]
    );
    for (key, password) in &passwords {
        assert!(
            service_runtime::nats_auth::is_config_safe_password(password),
            "{key}"
        );
        assert_eq!(
            first.matches(password.as_str()).count(),
            1,
            "{key} only in the Secret"
        );
        assert!(
            !second.contains(password.as_str()),
            "{key} is new at each run"
        );
    }
    let generation = generation_of(&objects, "StatefulSet", "prefect-k8s-nats");
    assert!(generation.is_some());
    assert_ne!(
        generation,
        generation_of(&again, "StatefulSet", "prefect-k8s-nats")
    );
    for deployment in ["prefect-k8s-poller", "prefect-k8s-dispatcher"] {
        assert_eq!(
            generation_of(&objects, "Deployment", deployment),
            generation,
            "{deployment}"
        );
    }
    assert_eq!(
        generation_of(&objects, "Deployment", "prefect-k8s-reporter"),
        None,
        "the reporter does not use NATS"
    );
    for options in [
        &["--existing-nats-secret"][..],
        &["--nats-url", EXAMPLE_NATS_URL][..],
    ] {
        let kept = parse_stream(&install(options));
        assert!(
            !kept
                .iter()
                .any(|o| o["kind"] == "Secret" || o.to_string().contains(NATS_AUTH_GENERATION)),
            "install {}: no new passwords",
            options.join(" ")
        );
    }
}

#[test]
fn each_nats_user_gets_its_password_from_the_secret_and_nats_the_generated_users() {
    let objects = parse_stream(&install(&["--rbac", "--work-pool", "prod"]));
    let reference = |entry: &Value| {
        let key = &entry["valueFrom"]["secretKeyRef"];
        assert_eq!(key["name"], NATS_AUTH_SECRET, "{entry}");
        key["key"].as_str().unwrap().to_owned()
    };
    let env_entry = |container: &Value, name: &str| -> Value {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name)
            .unwrap_or_else(|| panic!("{name} is set"))
            .clone()
    };
    for (service, user) in [
        ("poller", service_runtime::nats_auth::POLLER_USER),
        ("dispatcher", service_runtime::nats_auth::DISPATCHER_USER),
    ] {
        let container = container(&objects, "Deployment", &format!("prefect-k8s-{service}"));
        assert_eq!(env_value(container, "NATS_USER"), Some(user));
        assert_eq!(
            reference(&env_entry(container, "NATS_PASSWORD")),
            format!("{service}-password")
        );
    }
    let reporter = container(&objects, "Deployment", "prefect-k8s-reporter");
    assert_eq!(
        env_value(reporter, "NATS_USER"),
        None,
        "the reporter has no NATS user"
    );
    let nats = container(&objects, "StatefulSet", "prefect-k8s-nats");
    for (variable, key) in [
        (
            service_runtime::nats_auth::POLLER_PASSWORD_ENV,
            "poller-password",
        ),
        (
            service_runtime::nats_auth::DISPATCHER_PASSWORD_ENV,
            "dispatcher-password",
        ),
    ] {
        assert_eq!(reference(&env_entry(nats, variable)), key);
    }
    let config = &find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"];
    assert!(config["nats.conf"]
        .as_str()
        .unwrap()
        .contains("\ninclude auth.conf\n"));
    let users = service_runtime::nats_auth::agent_users("prod");
    assert_eq!(
        config["auth.conf"],
        service_runtime::nats_auth::authorization(&users),
        "install writes the users of its --work-pool"
    );
    let base = parse_stream(&kustomize(&deploy_dir()));
    let users = service_runtime::nats_auth::agent_users("kubernetes");
    assert_eq!(
        find(&base, "ConfigMap", "prefect-k8s-nats-config")["data"]["auth.conf"],
        service_runtime::nats_auth::authorization(&users),
        "deploy/base/nats.yaml holds `prefect-k8s nats-auth`'s output for its pool"
    );
}

#[test]
fn nats_auth_prints_the_users_of_a_work_pool() {
    let printed = manifest_tools::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_prefect-k8s")).args([
            "nats-auth",
            "--work-pool",
            "my-pool",
        ]),
        "prefect-k8s nats-auth",
    );
    let users = service_runtime::nats_auth::agent_users("my-pool");
    assert_eq!(printed, service_runtime::nats_auth::authorization(&users));
}

/// `from` relative to `to`'s directory, for a kustomization's `resources`
/// (kustomize accepts no absolute path there).
fn relative_path(from_dir: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from_dir.components().collect();
    let to_parts: Vec<_> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &to_parts[common..] {
        relative.push(part);
    }
    relative
}

#[test]
fn install_in_another_namespace_prints_what_a_kustomize_namespace_overlay_renders() {
    let overlay = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let base = relative_path(overlay.path(), &deploy_dir().join("base"));
    std::fs::write(
        overlay.path().join("namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n  labels:\n    app.kubernetes.io/part-of: prefect-k8s\n",
    )
    .unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: other\nresources:\n  - namespace.yaml\n  - {}\n",
            base.display()
        ),
    )
    .unwrap();
    let stream = without_generated_nats_auth(&install(&["--rbac", "-n", "other"]));
    assert_same_objects(
        &stream,
        "prefect-k8s install --rbac -n other",
        &kustomize(overlay.path()),
        "kustomize with `namespace: other`",
    );
    let objects = parse_stream(&stream);
    assert_eq!(objects[0]["kind"], "Namespace", "the namespace comes first");
    for binding in objects
        .iter()
        .filter(|object| object["kind"] == "RoleBinding")
    {
        assert_eq!(binding["subjects"][0]["namespace"], "other");
    }
}

#[test]
fn each_seed_option_reaches_the_setting_the_services_read() {
    let stream = install(&[
        "-l",
        "high",
        "-l",
        "low",
        "-e",
        "FOO=bar",
        "-e",
        "X=y=z",
        "-a",
        "https://prefect.example.com/api",
        "-i",
        "regcred,mirror",
        "--mem-request",
        "256Mi",
        "--mem-limit",
        "1Gi",
        "--cpu-request",
        "500m",
        "--cpu-limit",
        "2",
        "--image-pull-policy",
        "Always",
        "--service-account-name",
        "flows",
        "--work-pool",
        "prod",
        "--dispatchers",
        "12",
        "--latest",
    ]);
    let objects = parse_stream(&stream);
    let settings = &find(&objects, "ConfigMap", "prefect-k8s-settings")["data"];
    assert_eq!(
        settings["PREFECT_API_URL"],
        "https://prefect.example.com/api"
    );
    assert_eq!(settings["PREFECT_K8S_WORK_POOL"], "prod");

    let poller = container(&objects, "Deployment", "prefect-k8s-poller");
    assert_eq!(
        env_value(poller, "PREFECT_K8S_WORK_QUEUES"),
        Some("high,low")
    );

    let dispatcher = container(&objects, "Deployment", "prefect-k8s-dispatcher");
    assert_eq!(
        dispatcher["args"],
        serde_json::json!(["--env", "FOO=bar", "--env", "X=y=z"])
    );
    for (name, value) in [
        ("IMAGE_PULL_SECRETS", "regcred,mirror"),
        ("JOB_MEM_REQUEST", "256Mi"),
        ("JOB_MEM_LIMIT", "1Gi"),
        ("JOB_CPU_REQUEST", "500m"),
        ("JOB_CPU_LIMIT", "2"),
        ("IMAGE_PULL_POLICY", "Always"),
        ("SERVICE_ACCOUNT_NAME", "flows"),
    ] {
        assert_eq!(
            env_value(dispatcher, name),
            Some(value),
            "dispatcher {name}"
        );
    }
    let autoscaler = &find(
        &objects,
        "HorizontalPodAutoscaler",
        "prefect-k8s-dispatcher",
    )["spec"];
    assert_eq!(autoscaler["minReplicas"], 12);
    assert_eq!(
        autoscaler["maxReplicas"], 12,
        "the maximum follows a larger minimum"
    );

    for deployment in [
        "prefect-k8s-poller",
        "prefect-k8s-dispatcher",
        "prefect-k8s-reporter",
    ] {
        let pod = &find(&objects, "Deployment", deployment)["spec"]["template"]["spec"];
        assert_eq!(
            pod["imagePullSecrets"],
            serde_json::json!([{"name": "regcred"}, {"name": "mirror"}]),
            "{deployment} pulls with the secrets, as the seed's agent pod did"
        );
        assert_eq!(pod["containers"][0]["image"], "prefect-k8s:latest");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    }
    let nats = container(&objects, "StatefulSet", "prefect-k8s-nats");
    assert_eq!(
        nats["image"], "nats:2.9",
        "--latest is about our image only"
    );
}

#[test]
fn the_defaults_are_the_seed_agents_where_it_had_one() {
    let objects = parse_stream(&install(&[]));
    let settings = &find(&objects, "ConfigMap", "prefect-k8s-settings")["data"];
    assert_eq!(settings["PREFECT_K8S_WORK_POOL"], "kubernetes");
    assert!(objects.iter().all(
        |object| object["kind"] == "Namespace" || object["metadata"]["namespace"] == "default"
    ));
    let poller = container(&objects, "Deployment", "prefect-k8s-poller");
    assert_eq!(
        env_value(poller, "PREFECT_K8S_WORK_QUEUES"),
        None,
        "all queues"
    );
    let dispatcher = container(&objects, "Deployment", "prefect-k8s-dispatcher");
    assert!(dispatcher.get("args").is_none());
    assert_eq!(
        env_value(dispatcher, "PREFECT_K8S_API_KEY_SECRET"),
        None,
        "no Secret to reference without -t"
    );
    let reporter = find(&objects, "Deployment", "prefect-k8s-reporter");
    assert_eq!(reporter["spec"]["replicas"], 2);
    let poller = find(&objects, "Deployment", "prefect-k8s-poller");
    assert_eq!(poller["spec"]["replicas"], 1);
    assert_eq!(
        find(
            &objects,
            "HorizontalPodAutoscaler",
            "prefect-k8s-dispatcher"
        )["spec"]["minReplicas"],
        2
    );
    let nats = find(&objects, "StatefulSet", "prefect-k8s-nats");
    assert_eq!(
        nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "data"
    );
}

#[test]
fn bad_options_are_refused_with_the_option_named_and_nothing_printed() {
    for (args, expected) in [
        (&["--cpu-request", "lots"][..], "cpu_request"),
        (&["--mem-limit", "1GB!"][..], "memory_limit"),
        (&["-e", "NOVALUE"][..], "--env"),
        (&["-e", "=x"][..], "--env"),
        (&["-n", "Not_A_Namespace"][..], "namespace"),
        (
            &["--image-pull-policy", "Sometimes"][..],
            "image_pull_policy",
        ),
        (&["-l", "a,b"][..], "--label"),
        (
            &["--dispatchers", "5", "--max-dispatchers", "2"][..],
            "--max-dispatchers",
        ),
        (&["--latest", "--image", "x:1"][..], "--image"),
        (&["--dispatchers", "0"][..], "--dispatchers"),
        (&["--flow-namespace", "Not_A_Namespace"][..], "namespace"),
    ] {
        let stderr = install_refused(args);
        assert!(
            stderr.contains(expected),
            "install {}: the error should name {expected}:\n{stderr}",
            args.join(" ")
        );
    }
}

#[test]
fn help_lists_the_seed_agents_install_options() {
    let help = manifest_tools::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_prefect-k8s")).args(["install", "--help"]),
        "prefect-k8s install --help",
    );
    for option in [
        "-t, --token",
        "-l, --label",
        "-e, --env",
        "-a, --api",
        "-n, --namespace",
        "-i, --image-pull-secrets",
        "--rbac",
        "--latest",
        "--mem-request",
        "--mem-limit",
        "--cpu-request",
        "--cpu-limit",
        "--image-pull-policy",
        "--service-account-name",
        "--work-pool",
        "--dispatchers",
        "--nats-url",
        "--existing-nats-secret",
        "--flow-namespace",
        "--image",
    ] {
        assert!(
            help.contains(option),
            "install --help lacks {option}:\n{help}"
        );
    }
}

/// The YAML blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_overlay_in_docs_install_md_renders_valid_manifests_as_described() {
    let docs = std::fs::read_to_string(workspace_root().join("docs/install.md"))
        .expect("docs/install.md exists");
    for command in [
        "kubectl kustomize deploy/\n",
        "kubectl kustomize deploy/overlays/nats-cluster\n",
    ] {
        assert!(docs.contains(command), "the docs show {command:?}");
    }
    let blocks = yaml_blocks(&docs);
    let overlay = blocks
        .iter()
        .find(|block| block.contains("kind: Kustomization"))
        .expect("docs/install.md shows an overlay");
    // As the docs say: the overlay next to the repository checked out as prefect-k8s/.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    std::os::unix::fs::symlink(workspace_root(), dir.path().join("prefect-k8s")).unwrap();
    let overlay_dir = dir.path().join("my-prefect-k8s");
    std::fs::create_dir(&overlay_dir).unwrap();
    std::fs::write(overlay_dir.join("kustomization.yaml"), overlay).unwrap();
    // The NATS users beside it, with the command the docs give.
    let users_command = docs
        .lines()
        .find(|line| line.starts_with("prefect-k8s nats-auth --work-pool my-pool"))
        .expect("docs/install.md writes the overlay's NATS users");
    let args: Vec<&str> = users_command.split_whitespace().collect();
    manifest_tools::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
            .args(&args[1..])
            .current_dir(dir.path()),
        users_command,
    );
    let rendered = kustomize(&overlay_dir);
    assert_valid_kubernetes(&rendered, "the overlay of docs/install.md");
    let objects = parse_stream(&rendered);
    assert!(objects
        .iter()
        .all(|object| object["metadata"]["namespace"] == "prefect"));
    for deployment in [
        "prefect-k8s-poller",
        "prefect-k8s-dispatcher",
        "prefect-k8s-reporter",
    ] {
        assert_eq!(
            container(&objects, "Deployment", deployment)["image"],
            "registry.example.com/prefect-k8s:0.1.0"
        );
    }
    assert_eq!(
        find(&objects, "ConfigMap", "prefect-k8s-settings")["data"]["PREFECT_K8S_WORK_POOL"],
        "my-pool"
    );
    let dispatcher = container(&objects, "Deployment", "prefect-k8s-dispatcher");
    assert_eq!(
        env_value(dispatcher, "PREFECT_K8S_API_KEY_SECRET"),
        Some("prefect-k8s-api-key:key")
    );
    let nats_config = &find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"];
    let users = service_runtime::nats_auth::agent_users("my-pool");
    assert_eq!(
        nats_config["auth.conf"],
        service_runtime::nats_auth::authorization(&users),
        "NATS lets the services of my-pool in"
    );
    assert!(nats_config["nats.conf"]
        .as_str()
        .unwrap()
        .contains("include auth.conf"));
}
