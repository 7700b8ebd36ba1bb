//! The real tools the manifest tests run: the `prefect-k8s` binary under
//! test, `kubectl kustomize`, PyPI's `kubernetes-validate` and the Python of
//! the project virtualenv. A missing tool fails the test with what to install;
//! nothing is skipped.

#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The Kubernetes version whose schemas the manifests are checked against
/// (the one the workspace's k8s-openapi targets).
pub const KUBERNETES_VERSION: &str = "1.36.0";

pub use test_stack::workspace_root;

/// `$PREFECT_K8S_VENV`, else `<workspace>/.venv` (as scripts/install-deps.sh).
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("PREFECT_K8S_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".venv"),
    }
}

fn venv_program(name: &str, what: &str) -> PathBuf {
    let path = venv_dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: {what} is needed by this test; run scripts/install-deps.sh",
        path.display()
    );
    path
}

/// The project virtualenv's Python.
pub fn venv_python() -> PathBuf {
    venv_program("python", "the project virtualenv's Python")
}

fn kubectl() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .map(|dir| dir.join("kubectl"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("kubectl is not on PATH: install it (Debian: kubernetes-client) or run scripts/install-deps.sh")
        })
}

/// Runs a command, panicking with its output unless it succeeds; returns stdout.
pub fn run_ok(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: cannot start {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `prefect-k8s install <args>`; its YAML stream.
pub fn install(args: &[&str]) -> String {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
            .arg("install")
            .args(args)
            .env_remove("PREFECT_API_KEY")
            .env_remove("PREFECT_API_URL"),
        &format!("prefect-k8s install {}", args.join(" ")),
    )
}

/// `prefect-k8s install <args>` that must fail; its stderr.
pub fn install_refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
        .arg("install")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("prefect-k8s runs");
    assert!(
        !output.status.success(),
        "prefect-k8s install {} should fail; it printed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        output.stdout.is_empty(),
        "a refused install prints no manifest"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The oldest kustomize (major version) that reads `deploy/`: inline
/// `patches:` entries arrived with kustomize v4 (kubectl 1.21).
const OLDEST_KUSTOMIZE_MAJOR: u32 = 4;

/// kubectl, checked to embed a kustomize that reads `deploy/`.
pub fn kubectl_with_kustomize() -> PathBuf {
    let kubectl = kubectl();
    let version = run_ok(
        Command::new(&kubectl).args(["version", "--client", "-o", "json"]),
        "kubectl version --client",
    );
    let version: Value = serde_json::from_str(&version).expect("kubectl version prints JSON");
    let kustomize = version["kustomizeVersion"].as_str().unwrap_or("none");
    let major = kustomize
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok());
    assert!(
        major.is_some_and(|major| major >= OLDEST_KUSTOMIZE_MAJOR),
        "{} embeds kustomize {kustomize}; deploy/ needs kustomize v{OLDEST_KUSTOMIZE_MAJOR} or later \
         (kubectl 1.21 or later; Debian 12's kubernetes-client 1.20 is too old)",
        kubectl.display()
    );
    kubectl
}

/// `kubectl kustomize <dir>` (offline: the kustomize built into kubectl).
pub fn kustomize(dir: &Path) -> String {
    run_ok(
        Command::new(kubectl_with_kustomize())
            .arg("kustomize")
            .arg(dir),
        &format!("kubectl kustomize {}", dir.display()),
    )
}

/// Validates a YAML stream offline, strictly (unknown fields are errors):
/// Kubernetes' own kinds against the Kubernetes schemas with
/// `kubernetes-validate`, custom resources (KEDA's, the Prometheus
/// Operator's) against the CRDs copied into `tests/testdata/crds`.
pub fn assert_valid_kubernetes(yaml: &str, label: &str) {
    let groups = custom_resource_groups();
    let (custom, core): (Vec<Value>, Vec<Value>) = parse_stream(yaml)
        .into_iter()
        .partition(|object| groups.iter().any(|group| group == api_group(object)));
    assert_valid_core_kubernetes(&core, label);
    if !custom.is_empty() {
        assert_valid_custom_resources(&custom, label);
    }
}

/// The API group of an object (`""` for the core group).
fn api_group(object: &Value) -> &str {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/crds")
}

/// The groups of the CustomResourceDefinitions in `tests/testdata/crds`.
fn custom_resource_groups() -> Vec<String> {
    let entries = std::fs::read_dir(crd_dir()).expect("tests/testdata/crds");
    entries
        .map(|entry| std::fs::read_to_string(entry.expect("entry").path()).expect("CRD file"))
        .flat_map(|text| parse_stream(&text))
        .filter_map(|crd| crd["spec"]["group"].as_str().map(str::to_owned))
        .collect()
}

fn to_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|object| format!("---\n{}", serde_norway::to_string(object).expect("YAML")))
        .collect()
}

fn assert_valid_core_kubernetes(objects: &[Value], label: &str) {
    let validator = venv_program("kubernetes-validate", "PyPI's kubernetes-validate");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, to_stream(objects)).expect("write manifests");
    let output = Command::new(validator)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{label}: not valid Kubernetes {KUBERNETES_VERSION}:\n{report}"
    );
    let passed = report.matches(" passed for resource ").count();
    assert_eq!(
        passed,
        objects.len(),
        "{label}: every one of the {} objects must be checked:\n{report}",
        objects.len()
    );
}

fn assert_valid_custom_resources(objects: &[Value], label: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("custom-resources.yaml");
    std::fs::write(&file, to_stream(objects)).expect("write manifests");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validate_custom_resources.py");
    let output = Command::new(venv_python())
        .arg(script)
        .arg(crd_dir())
        .arg(&file)
        .output()
        .expect("validate_custom_resources.py runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{label}: custom resources not valid against their CRDs:\n{report}"
    );
    assert_eq!(
        report.matches(" passed").count(),
        objects.len(),
        "{label}: every custom resource must be checked:\n{report}"
    );
}

/// The documents of a YAML stream (empty documents dropped).
pub fn parse_stream(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("every document is YAML"))
        .filter(|value: &Value| !value.is_null())
        .collect()
}

/// `Kind/namespace/name` of an object.
pub fn object_key(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The Secret with the NATS passwords `install` generates at each run.
pub const NATS_AUTH_SECRET: &str = "prefect-k8s-nats-auth";
/// The pod annotation that changes with generated passwords.
pub const NATS_AUTH_GENERATION: &str = "prefect-k8s.io/nats-auth-generation";

/// An install stream without what `install` generates afresh at each run
/// (the Secret with new NATS passwords and the pod annotation that changes
/// with them), to compare with kustomize's renderings, which have neither.
pub fn without_generated_nats_auth(yaml: &str) -> String {
    let mut kept = Vec::new();
    for mut object in parse_stream(yaml) {
        if object["kind"] == "Secret" && object["metadata"]["name"] == NATS_AUTH_SECRET {
            continue;
        }
        let template = object
            .pointer_mut("/spec/template/metadata")
            .and_then(Value::as_object_mut);
        if let Some(template) = template {
            if let Some(annotations) = template
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(NATS_AUTH_GENERATION);
                if annotations.is_empty() {
                    template.remove("annotations");
                }
            }
        }
        kept.push(serde_norway::to_string(&object).expect("YAML"));
    }
    kept.join("---\n")
}

/// The objects of a stream by key, with every container's `env` sorted by
/// name: kustomize inserts patched entries first, `install` appends them, and
/// without `$(VAR)` references the order means nothing.
pub fn objects_by_key(yaml: &str) -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    for mut object in parse_stream(yaml) {
        sort_env_lists(&mut object);
        let key = object_key(&object);
        assert!(
            objects.insert(key.clone(), object).is_none(),
            "{key} appears twice"
        );
    }
    objects
}

fn sort_env_lists(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "env" {
                    if let Value::Array(entries) = child {
                        entries.sort_by(|a, b| {
                            a["name"]
                                .as_str()
                                .unwrap_or("")
                                .cmp(b["name"].as_str().unwrap_or(""))
                        });
                    }
                }
                sort_env_lists(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_env_lists),
        _ => {}
    }
}

/// Asserts two renderings hold the same objects, naming the differences.
pub fn assert_same_objects(left: &str, left_label: &str, right: &str, right_label: &str) {
    let left_objects = objects_by_key(left);
    let right_objects = objects_by_key(right);
    let keys: std::collections::BTreeSet<&String> =
        left_objects.keys().chain(right_objects.keys()).collect();
    let mut differences = Vec::new();
    for key in keys {
        match (left_objects.get(key), right_objects.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => differences.push(format!(
                "{key} differs:\n{left_label}: {}\n{right_label}: {}",
                serde_json::to_string_pretty(a).unwrap(),
                serde_json::to_string_pretty(b).unwrap()
            )),
            (Some(_), None) => differences.push(format!("{key} only in {left_label}")),
            (None, Some(_)) => differences.push(format!("{key} only in {right_label}")),
            (None, None) => unreachable!(),
        }
    }
    assert!(
        differences.is_empty(),
        "{left_label} and {right_label} differ:\n{}",
        differences.join("\n")
    );
}

/// The one object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

/// The first container of a workload's pod template.
pub fn container<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]
}

/// The plain value of a container's environment variable.
pub fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|entry| entry["name"] == name)
        .and_then(|entry| entry["value"].as_str())
}
