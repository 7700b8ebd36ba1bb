//! The key test: for a set of job-variable cases, the manifest this crate renders
//! equals, field by field, the one prefect-kubernetes 0.8.0 itself renders
//! (`tests/reference_render.py`, run with the project virtualenv's Python).
//!
//! The Job's name is compared as far as it can be: Python's `generateName` must
//! equal our `metadata.name` without its 16-character hash (Kubernetes adds a
//! random suffix there). Ignored on purpose: env entries Python forwards from its
//! own profile
//! (`PREFECT_HOME`, `PREFECT_SERVER_EPHEMERAL_ENABLED`), and keys whose value is
//! `null` (Prefect writes `null` for an unset value, this crate drops the key;
//! Kubernetes reads both as unset).
//!
//! The virtualenv is `$PREFECT_K8S_VENV`, else `<workspace>/.venv`; without it the
//! test fails with instructions (it never skips).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use job_manifest::{
    default_base_job_template, job_name, job_name_base, render_job_manifest, slugify_label_key,
    slugify_label_value, slugify_name, AgentDefaults, DeploymentContext, FlowRunContext,
    ForwardedSecret, ForwardedSettings, RenderRequest,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

const FLOW_RUN_ID: &str = "1d96b242-11d9-4a53-8b8c-f603d3e7c280";
const FLOW_ID: &str = "c2418aa2-f94a-4d9c-9917-655d9b7feab7";
const DEPLOYMENT_ID: &str = "5e0c1f0a-3a57-4c4e-9d0e-2f8b1c6d7e90";
const WORK_POOL_ID: &str = "f37dc2d7-bcc9-4123-a2e8-3f9986c71c15";
const DEPLOYMENT_UPDATED: &str = "2026-11-26T17:45:12.345678Z";
const API_URL: &str = "http://prefect-server:4200/api";
const API_KEY: &str = "pnu_reference_test_key";
const AUTH_STRING: &str = "admin:reference-pass";

/// Env entries the Python process forwards from its own (temporary) profile.
const PROFILE_ONLY_ENV: [&str; 2] = ["PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_ENABLED"];

/// How the Prefect settings reach the Job in a group of cases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SettingsMode {
    /// URL and API key as plain values.
    PlainKey,
    /// URL, API key and auth string, both secrets as `secretKeyRef`s.
    SecretRefs,
}

struct Case {
    name: &'static str,
    base_job_template: Option<Value>,
    /// `None`: the flow run has no deployment.
    deployment_job_variables: Option<Value>,
    flow_run_job_variables: Value,
    flow_run_name: &'static str,
    flow_name: &'static str,
    deployment_name: &'static str,
    settings: SettingsMode,
    /// What the Python manifest must contain for the case to test what it says:
    /// (JSON pointer, expected value).
    must_have: Vec<(&'static str, Value)>,
    /// Agent defaults for the Rust side; the Python side gets the equivalent job
    /// variables under the deployment's instead.
    agent_defaults: AgentDefaults,
    agent_equivalent_job_variables: Value,
}

impl Case {
    fn new(name: &'static str, deployment: Value, run: Value) -> Case {
        Case {
            name,
            base_job_template: None,
            deployment_job_variables: Some(deployment),
            flow_run_job_variables: run,
            flow_run_name: "crimson-otter",
            flow_name: "my-flow",
            deployment_name: "my-deployment",
            settings: SettingsMode::PlainKey,
            must_have: Vec::new(),
            agent_defaults: AgentDefaults::default(),
            agent_equivalent_job_variables: json!({}),
        }
    }

    fn expecting(mut self, pointer: &'static str, value: Value) -> Case {
        self.must_have.push((pointer, value));
        self
    }

    fn python_input(&self) -> Value {
        let deployment_job_variables = self.deployment_job_variables.as_ref().map(|variables| {
            let mut merged = self.agent_equivalent_job_variables.clone();
            for (key, value) in variables.as_object().expect("job variables object") {
                match (
                    merged.get_mut(key).and_then(Value::as_object_mut),
                    value.as_object(),
                ) {
                    (Some(below), Some(above)) => {
                        for (name, entry) in above {
                            below.insert(name.clone(), entry.clone());
                        }
                    }
                    _ => merged[key] = value.clone(),
                }
            }
            merged
        });
        json!({
            "base_job_template": self.base_job_template,
            "deployment_job_variables": deployment_job_variables,
            "flow_run_job_variables": self.flow_run_job_variables,
            "flow_run": {"id": FLOW_RUN_ID, "name": self.flow_run_name},
            "flow": {"id": FLOW_ID, "name": self.flow_name},
            "deployment": {"id": DEPLOYMENT_ID, "name": self.deployment_name, "updated": DEPLOYMENT_UPDATED},
            "work_pool": {"id": WORK_POOL_ID, "name": "k8s-pool"},
            "worker_name": "worker-1",
            "api_key_secret": (self.settings == SettingsMode::SecretRefs)
                .then(|| json!({"name": "prefect-api", "key": "api-key"})),
            "auth_string_secret": (self.settings == SettingsMode::SecretRefs)
                .then(|| json!({"name": "prefect-auth", "key": "auth-string"})),
        })
    }

    fn flow_run_context(&self) -> FlowRunContext {
        let updated: DateTime<Utc> = DEPLOYMENT_UPDATED.parse().expect("timestamp");
        FlowRunContext {
            flow_run_id: FLOW_RUN_ID.parse().expect("uuid"),
            flow_run_name: self.flow_run_name.into(),
            flow_id: FLOW_ID.parse().expect("uuid"),
            flow_name: self.flow_name.into(),
            deployment: self
                .deployment_job_variables
                .as_ref()
                .map(|_| DeploymentContext {
                    id: DEPLOYMENT_ID.parse().expect("uuid"),
                    name: self.deployment_name.into(),
                    updated: Some(updated),
                }),
            work_pool_name: "k8s-pool".into(),
            work_pool_id: WORK_POOL_ID.parse::<Uuid>().expect("uuid"),
            worker_name: "worker-1".into(),
            worker_id: None,
        }
    }

    fn forwarded_settings(&self) -> ForwardedSettings {
        match self.settings {
            SettingsMode::PlainKey => ForwardedSettings {
                api_url: Some(API_URL.into()),
                api_key: Some(ForwardedSecret::Value(API_KEY.into())),
                api_auth_string: None,
                extra_env: vec![],
            },
            SettingsMode::SecretRefs => ForwardedSettings {
                api_url: Some(API_URL.into()),
                api_key: Some(ForwardedSecret::SecretKeyRef {
                    name: "prefect-api".into(),
                    key: "api-key".into(),
                }),
                api_auth_string: Some(ForwardedSecret::SecretKeyRef {
                    name: "prefect-auth".into(),
                    key: "auth-string".into(),
                }),
                extra_env: vec![],
            },
        }
    }

    fn render_with_rust(&self) -> (Value, String) {
        let template = self
            .base_job_template
            .clone()
            .unwrap_or_else(default_base_job_template);
        let deployment = self.deployment_job_variables.clone().unwrap_or(Value::Null);
        let context = self.flow_run_context();
        let defaults = self.agent_defaults.clone();
        let settings = self.forwarded_settings();
        let base = job_name_base(&deployment, &self.flow_run_job_variables, &context);
        let name = job_name(&base, "0123456789abcdef");
        let rendered = render_job_manifest(&RenderRequest {
            base_job_template: &template,
            deployment_job_variables: &deployment,
            flow_run_job_variables: &self.flow_run_job_variables,
            flow_run: &context,
            agent_defaults: &defaults,
            settings: &settings,
            job_name: &name,
            extra_labels: &[],
            extra_annotations: &[],
        })
        .unwrap_or_else(|err| panic!("case {}: rendering failed: {err}", self.name));
        rendered
            .to_typed_job()
            .unwrap_or_else(|err| panic!("case {}: typed conversion failed: {err}", self.name));
        assert_eq!(
            rendered.manifest.pointer("/metadata/name"),
            Some(&Value::String(name.clone())),
            "case {}",
            self.name
        );
        assert_eq!(
            rendered.infrastructure_pid().to_string(),
            format!("{}:{name}", rendered.namespace)
        );
        (rendered.manifest, rendered.namespace)
    }
}

fn custom_base_job_template() -> Value {
    let mut template = default_base_job_template();
    let properties = template
        .pointer_mut("/variables/properties")
        .and_then(Value::as_object_mut)
        .expect("properties");
    properties.insert(
        "gpu_count".into(),
        json!({"type": "integer", "default": 1, "title": "GPUs"}),
    );
    properties.insert(
        "env".into(),
        json!({
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "default": {"POOL_DEFAULT": "from-pool", "OVERRIDDEN": "pool"}
        }),
    );
    template["job_configuration"]["job_manifest"] = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": "{{ name }}-",
            "namespace": "{{ namespace }}",
            "labels": {"team": "data-platform", "cost-center": "{{ namespace }}-jobs"},
            "annotations": {"owner": "platform team"}
        },
        "spec": {
            "backoffLimit": "{{ backoff_limit }}",
            "ttlSecondsAfterFinished": "{{ finished_job_ttl }}",
            "activeDeadlineSeconds": 7200,
            "template": {
                "metadata": {
                    "labels": {"sidecar.istio.io/inject": "false"},
                    "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
                },
                "spec": {
                    "parallelism": 1,
                    "completions": 1,
                    "restartPolicy": "Never",
                    "serviceAccountName": "{{ service_account_name }}",
                    "nodeSelector": {"node-pool": "flows"},
                    "tolerations": [
                        {"key": "dedicated", "operator": "Equal", "value": "flows", "effect": "NoSchedule"},
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "volumes": [
                        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "config", "configMap": {"name": "flow-config"}}
                    ],
                    "initContainers": [
                        {"name": "fetch-code", "image": "alpine/git:2.45", "args": ["clone", "--depth=1", "https://example.com/repo.git", "/scratch/repo"],
                         "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}
                    ],
                    "containers": [
                        {
                            "name": "prefect-job",
                            "image": "{{ image }}",
                            "imagePullPolicy": "{{ image_pull_policy }}",
                            "args": "{{ command }}",
                            "env": [
                                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                                {"name": "FROM_TEMPLATE", "value": "template"},
                                {"name": "OVERRIDDEN", "value": "template"}
                            ],
                            "resources": {
                                "limits": {"cpu": "{{ cpu_limit }}", "memory": "{{ memory_limit }}", "nvidia.com/gpu": "{{ gpu_count }}"},
                                "requests": {"cpu": "{{ cpu_request }}", "memory": "{{ memory_request }}"}
                            },
                            "volumeMounts": [
                                {"name": "scratch", "mountPath": "/scratch"},
                                {"name": "config", "mountPath": "/etc/flow", "readOnly": true}
                            ]
                        },
                        {
                            "name": "log-shipper",
                            "image": "fluent/fluent-bit:3.1",
                            "args": ["--pool={{ namespace }}", "--run={{ name }}"],
                            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch", "readOnly": true}]
                        }
                    ]
                }
            }
        }
    });
    template
}

fn cases() -> Vec<Case> {
    vec![
        Case::new("defaults", json!({}), json!({}))
            .expecting("/spec/template/spec/containers/0/image", json!("prefecthq/prefect:3.9.1-python3.11"))
            .expecting("/spec/template/spec/containers/0/args", json!(["prefect", "flow-run", "execute"])),
        Case::new(
            "env with null values",
            json!({"env": {"FOO": "bar", "EMPTY": "", "DROPPED": null, "RUN_DROPS": "deployment", "PREFECT_API_KEY": null}}),
            json!({"env": {"RUN_DROPS": null, "RUN_ONLY": "1", "PREFECT_API_URL": "http://override:4200/api"}}),
        )
        .expecting("/spec/template/spec/containers/0/env/1", json!({"name": "PREFECT_API_URL", "value": "http://override:4200/api"})),
        Case {
            flow_run_name: "Crimson Otter #42",
            flow_name: "My Flow: Nightly ETL",
            deployment_name: "Nightly ETL (prod) — ünïcode",
            ..Case::new(
                "labels that need slugging",
                json!({
                    "labels": {
                        "My Label!": "Hello World/ok",
                        "team": "Data Science & ML",
                        "example.com/owner": "Jane Doe <jane@example.com>",
                        "app.kubernetes.io/name": "custom name",
                        "long": "x".repeat(80),
                        "__under__": "--dashes--"
                    },
                    "annotations": {"a/b c": "free text: stays as is", "note": "1,000 runs"}
                }),
                json!({}),
            )
            .expecting("/metadata/labels/My-Label", json!("Hello-World-ok"))
            .expecting("/metadata/annotations/a~1b-c", json!("free text: stays as is"))
        },
        Case::new(
            "command as a string",
            json!({"command": "python -m my_module --flag 'quoted arg' \"double \\\"q\\\"\" back\\ slash", "name": "{{ ctx.flow.name }}/{{ ctx.flow_run.name }}"}),
            json!({}),
        )
        .expecting("/spec/template/spec/containers/0/args/4", json!("quoted arg")),
        Case::new(
            "finished_job_ttl and backoff_limit",
            json!({"finished_job_ttl": 3600, "backoff_limit": 2}),
            json!({}),
        )
        .expecting("/spec/ttlSecondsAfterFinished", json!(3600)),
        Case::new(
            "resources and pod options",
            json!({
                "cpu_request": "500m", "cpu_limit": "2", "memory_request": "256Mi", "memory_limit": "1Gi",
                "image": "registry.example.com:5000/team/flow:2026.11",
                "image_pull_policy": "Always",
                "service_account_name": "flow-runner",
                "namespace": "prefect-flows"
            }),
            json!({"memory_limit": "2Gi"}),
        )
        .expecting("/spec/template/spec/containers/0/resources/limits/memory", json!("2Gi"))
        .expecting("/metadata/namespace", json!("prefect-flows")),
        Case {
            base_job_template: Some(custom_base_job_template()),
            ..Case::new(
                "customised job_manifest with extra containers, volumes and tolerations",
                json!({
                    "image": "ghcr.io/acme/flows:1.4.2",
                    "gpu_count": 2,
                    "cpu_request": "1",
                    "env": {"OVERRIDDEN": "deployment", "FROM_DEPLOYMENT": "yes"},
                    "labels": {"team": "ml"},
                    "name": "gpu-job"
                }),
                json!({"env": {"FROM_RUN": "run"}, "namespace": "gpu"}),
            )
            .expecting("/spec/template/spec/containers/1/name", json!("log-shipper"))
            .expecting("/spec/template/spec/tolerations/1/key", json!("nvidia.com/gpu"))
            .expecting("/spec/template/spec/volumes/0/name", json!("scratch"))
        },
        Case {
            settings: SettingsMode::SecretRefs,
            ..Case::new(
                "api key and auth string as secret references",
                json!({"env": {"EXTRA": "1"}}),
                json!({}),
            )
            .expecting("/spec/template/spec/containers/0/env/2/valueFrom/secretKeyRef/name", json!("prefect-auth"))
        },
        Case {
            deployment_job_variables: None,
            ..Case::new(
                "flow run without deployment, dotted env keys",
                json!({}),
                json!({"env.EXTRA": "dotted", "image": "python:3.12-slim"}),
            )
        },
        Case::new(
            "flow run variables override the deployment's",
            json!({"env": {"A": "1", "B": "2"}, "image": "repo/a:1", "labels": {"stage": "dev"}, "env.D": "dotted"}),
            json!({"env": {"B": "3"}, "env.C": "4", "image": "repo/b:2", "labels": {"stage": "prod"}}),
        ),
        Case {
            base_job_template: Some({
                let mut template = default_base_job_template();
                template["job_configuration"]["env"] = json!([
                    {"name": "FROM_CONFIG", "value": "config"},
                    {"name": "SECRET_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "token"}}},
                    {"name": "PREFECT_API_URL", "value": "http://from-config:4200/api"}
                ]);
                template
            }),
            ..Case::new(
                "job configuration env as a list with valueFrom",
                json!({"backoff_limit": 1}),
                json!({}),
            )
            .expecting("/spec/template/spec/containers/0/env/1/value", json!("http://from-config:4200/api"))
        },
        Case::new(
            "null job variables",
            json!({"image_pull_policy": null, "finished_job_ttl": null, "service_account_name": null, "cpu_limit": null, "command": null, "labels": {"a": "b"}}),
            json!({"backoff_limit": 0}),
        )
        .expecting("/spec/template/spec/containers/0/imagePullPolicy", Value::Null),
        Case {
            agent_defaults: AgentDefaults {
                namespace: Some("agent-ns".into()),
                env: vec![("AGENT_ENV".into(), "agent".into()), ("SHARED".into(), "agent".into())],
                service_account_name: Some("agent-sa".into()),
                image_pull_policy: Some("Never".into()),
                cpu_request: Some("250m".into()),
                cpu_limit: Some("1500m".into()),
                memory_request: Some("64Mi".into()),
                memory_limit: Some("512Mi".into()),
                labels: vec![("agent-label".into(), "yes".into())],
                ..AgentDefaults::default()
            },
            agent_equivalent_job_variables: json!({
                "namespace": "agent-ns",
                "env": {"AGENT_ENV": "agent", "SHARED": "agent"},
                "service_account_name": "agent-sa",
                "image_pull_policy": "Never",
                "cpu_request": "250m",
                "cpu_limit": "1500m",
                "memory_request": "64Mi",
                "memory_limit": "512Mi",
                "labels": {"agent-label": "yes"}
            }),
            ..Case::new(
                "agent defaults equal the same job variables",
                json!({"env": {"SHARED": "deployment"}, "labels": {"team": "a"}}),
                json!({}),
            )
            .expecting("/spec/template/spec/serviceAccountName", json!("agent-sa"))
        },
    ]
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

fn reference_python() -> PathBuf {
    let venv = std::env::var_os("PREFECT_K8S_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join(".venv"));
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "the reference virtualenv is missing: {} does not exist.\n\
         Create it with:\n  python3 -m venv {venv}\n  {venv}/bin/pip install prefect==3.9.1 prefect-kubernetes==0.8.0\n\
         or point PREFECT_K8S_VENV at an existing one.",
        python.display(),
        venv = venv.display()
    );
    python
}

/// Renders `cases` (all with the same settings) with prefect-kubernetes.
fn render_with_python(
    python: &PathBuf,
    mode: SettingsMode,
    cases: &[&Case],
) -> Vec<(Value, String)> {
    let prefect_home = tempfile::tempdir().expect("temporary PREFECT_HOME");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference_render.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", prefect_home.path())
        .env("PREFECT_HOME", prefect_home.path())
        .env("PREFECT_API_URL", API_URL)
        .env("PREFECT_API_KEY", API_KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if mode == SettingsMode::SecretRefs {
        command.env("PREFECT_API_AUTH_STRING", AUTH_STRING);
    }
    let mut child = command.spawn().expect("start the reference renderer");
    let input = Value::Array(cases.iter().map(|case| case.python_input()).collect());
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write cases");
    let output = child.wait_with_output().expect("reference renderer output");
    assert!(
        output.status.success(),
        "the reference renderer failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("reference JSON");
    results
        .into_iter()
        .map(|result| {
            (
                result["manifest"].clone(),
                result["namespace"].as_str().expect("namespace").to_string(),
            )
        })
        .collect()
}

/// Removes `null`-valued keys everywhere.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter(|(_, child)| !child.is_null())
                .map(|(key, child)| (key.clone(), without_nulls(child)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn normalise_python(manifest: &Value) -> Value {
    let mut manifest = without_nulls(manifest);
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.shift_remove("generateName");
    }
    if let Some(Value::Array(env)) = manifest.pointer_mut("/spec/template/spec/containers/0/env") {
        env.retain(|entry| {
            !entry
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| PROFILE_ONLY_ENV.contains(&name))
        });
    }
    manifest
}

fn normalise_rust(manifest: &Value) -> Value {
    let mut manifest = without_nulls(manifest);
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.shift_remove("name");
    }
    manifest
}

fn differences(path: &str, expected: &Value, actual: &Value, found: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            for (key, expected_child) in expected {
                let child = format!("{path}.{key}");
                match actual.get(key) {
                    Some(actual_child) => differences(&child, expected_child, actual_child, found),
                    None => found.push(format!(
                        "{child}: missing in Rust (Python: {expected_child})"
                    )),
                }
            }
            for (key, actual_child) in actual {
                if !expected.contains_key(key) {
                    found.push(format!("{path}.{key}: only in Rust ({actual_child})"));
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            for index in 0..expected.len().max(actual.len()) {
                let child = format!("{path}[{index}]");
                match (expected.get(index), actual.get(index)) {
                    (Some(e), Some(a)) => differences(&child, e, a, found),
                    (Some(e), None) => {
                        found.push(format!("{child}: missing in Rust (Python: {e})"))
                    }
                    (None, Some(a)) => found.push(format!("{child}: only in Rust ({a})")),
                    (None, None) => {}
                }
            }
        }
        (expected, actual) if expected != actual => {
            found.push(format!("{path}: Python {expected}, Rust {actual}"));
        }
        _ => {}
    }
}

#[test]
fn manifests_match_prefect_kubernetes_field_by_field() {
    let python = reference_python();
    let cases = cases();
    let mut failures = Vec::new();
    let mut compared = 0;
    for mode in [SettingsMode::PlainKey, SettingsMode::SecretRefs] {
        let group: Vec<&Case> = cases.iter().filter(|case| case.settings == mode).collect();
        if group.is_empty() {
            continue;
        }
        let references = render_with_python(&python, mode, &group);
        assert_eq!(references.len(), group.len(), "one reference per case");
        for (case, (python_manifest, python_namespace)) in group.iter().zip(references) {
            let (rust_manifest, rust_namespace) = case.render_with_rust();
            let mut found = Vec::new();
            // The name part before our hash is what Python puts before Kubernetes'
            // random suffix.
            let rust_name = rust_manifest["metadata"]["name"].as_str().expect("name");
            let rust_prefix = &rust_name[..rust_name.len() - 16];
            if python_manifest["metadata"]["generateName"] != rust_prefix {
                found.push(format!(
                    "name: Python generateName {}, Rust name {rust_name}",
                    python_manifest["metadata"]["generateName"]
                ));
            }
            for (pointer, expected) in &case.must_have {
                if python_manifest.pointer(pointer) != Some(expected) {
                    found.push(format!(
                        "the case does not exercise what it claims: Python's {pointer} is {:?}, expected {expected}",
                        python_manifest.pointer(pointer)
                    ));
                }
            }
            if python_namespace != rust_namespace {
                found.push(format!(
                    "namespace: Python {python_namespace}, Rust {rust_namespace}"
                ));
            }
            differences(
                "manifest",
                &normalise_python(&python_manifest),
                &normalise_rust(&rust_manifest),
                &mut found,
            );
            if let Some(dir) = std::env::var_os("JOB_MANIFEST_DUMP_DIR") {
                let stem = case.name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
                let dir = PathBuf::from(dir);
                std::fs::write(
                    dir.join(format!("{stem}.python.json")),
                    serde_json::to_string_pretty(&python_manifest).expect("json"),
                )
                .expect("dump");
                std::fs::write(
                    dir.join(format!("{stem}.rust.json")),
                    serde_json::to_string_pretty(&rust_manifest).expect("json"),
                )
                .expect("dump");
            }
            if !found.is_empty() {
                failures.push(format!("case {:?}:\n  {}", case.name, found.join("\n  ")));
            }
            compared += 1;
        }
    }
    assert_eq!(compared, cases.len(), "every case was compared");
    assert!(
        failures.is_empty(),
        "manifests differ from prefect-kubernetes 0.8.0:\n{}",
        failures.join("\n")
    );
}

/// Random texts built from pieces that exercise every slug rule.
fn random_texts(count: usize) -> Vec<String> {
    const PIECES: [&str; 28] = [
        "a", "Z", "7", "-", "_", ".", "/", " ", "'", ",", "1,000", "&amp;", "&lt;", "&#39;",
        "&#x41;", "é", "Ü", "ß", "ñ", "--", "__", "..", ":", "+", "@", "Flow", "run", "!",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let length = (next() % 24) as usize;
            (0..length)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect::<String>()
        })
        .chain([
            "x".repeat(70),
            format!("{}-{}", "a".repeat(44), "b".repeat(30)),
            format!("{}/{}", "p".repeat(260), "n".repeat(70)),
        ])
        .collect()
}

#[test]
fn slugs_match_python_slugify_on_random_text() {
    let python = reference_python();
    let texts = random_texts(400);
    let prefect_home = tempfile::tempdir().expect("temporary PREFECT_HOME");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference_render.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", prefect_home.path())
        .env("PREFECT_HOME", prefect_home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reference renderer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!({"slugify": texts}).to_string().as_bytes())
        .expect("write texts");
    let output = child.wait_with_output().expect("reference output");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: Vec<(Option<String>, String, String)> =
        serde_json::from_slice(&output.stdout).expect("reference JSON");
    assert_eq!(expected.len(), texts.len());
    let mut mismatches = Vec::new();
    for (text, (name, key, value)) in texts.iter().zip(expected) {
        let ours = (
            slugify_name(text, 45),
            slugify_label_key(text),
            slugify_label_value(text),
        );
        if ours != (name.clone(), key.clone(), value.clone()) {
            mismatches.push(format!(
                "{text:?}: Python {:?}, Rust {ours:?}",
                (name, key, value)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "slugs differ:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn the_comparison_reports_every_difference() {
    let python = json!({"a": {"b": 1, "gone": 2}, "list": [1, 2], "n": null});
    let rust = json!({"a": {"b": 3, "extra": 4}, "list": [1]});
    let mut found = Vec::new();
    differences(
        "m",
        &without_nulls(&python),
        &without_nulls(&rust),
        &mut found,
    );
    assert_eq!(
        found,
        [
            "m.a.b: Python 1, Rust 3",
            "m.a.gone: missing in Rust (Python: 2)",
            "m.a.extra: only in Rust (4)",
            "m.list[1]: missing in Rust (Python: 2)",
        ]
    );
}

#[test]
fn python_reference_is_the_pinned_version() {
    let python = reference_python();
    let output = Command::new(&python)
        .args([
            "-c",
            "import prefect, importlib.metadata as m; print(prefect.__version__, m.version('prefect-kubernetes'))",
        ])
        .env("PREFECT_HOME", tempfile::tempdir().expect("tempdir").path())
        .output()
        .expect("run python");
    let versions = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        versions.trim(),
        "3.9.1 0.8.0",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
