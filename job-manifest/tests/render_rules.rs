//! One test per rendering rule, through the public API: the prefect-kubernetes
//! rules, this agent's additions (job name, agent defaults, secret references,
//! extra labels/annotations) and the errors a dispatcher turns into `Crashed`.

use job_manifest::{
    default_base_job_template, job_name, render_job_manifest, AgentDefaults, DeploymentContext,
    FlowRunContext, ForwardedSecret, ForwardedSettings, ManifestError, RenderRequest, RenderedJob,
    DEFAULT_IMAGE,
};
use serde_json::{json, Value};
use uuid::Uuid;

struct Inputs {
    template: Value,
    deployment: Value,
    run: Value,
    context: FlowRunContext,
    defaults: AgentDefaults,
    settings: ForwardedSettings,
    job_name: String,
    extra_labels: Vec<(String, String)>,
    extra_annotations: Vec<(String, String)>,
}

impl Inputs {
    fn new(deployment: Value, run: Value) -> Inputs {
        let context = FlowRunContext {
            flow_run_id: Uuid::from_u128(0x1d96b242_11d9_4a53_8b8c_f603d3e7c280),
            flow_run_name: "crimson-otter".into(),
            flow_id: Uuid::from_u128(2),
            flow_name: "my-flow".into(),
            deployment: Some(DeploymentContext {
                id: Uuid::from_u128(3),
                name: "my-deployment".into(),
                updated: None,
            }),
            work_pool_name: "k8s-pool".into(),
            work_pool_id: Uuid::from_u128(4),
            worker_name: "dispatcher-0".into(),
            worker_id: None,
        };
        Inputs {
            template: default_base_job_template(),
            deployment,
            run,
            job_name: job_name(&context.flow_run_name, "0123456789abcdef"),
            context,
            defaults: AgentDefaults::default(),
            settings: ForwardedSettings {
                api_url: Some("http://prefect:4200/api".into()),
                api_key: Some(ForwardedSecret::Value("pnu_key".into())),
                ..Default::default()
            },
            extra_labels: Vec::new(),
            extra_annotations: Vec::new(),
        }
    }

    fn render(&self) -> Result<RenderedJob, ManifestError> {
        render_job_manifest(&RenderRequest {
            base_job_template: &self.template,
            deployment_job_variables: &self.deployment,
            flow_run_job_variables: &self.run,
            flow_run: &self.context,
            agent_defaults: &self.defaults,
            settings: &self.settings,
            job_name: &self.job_name,
            extra_labels: &self.extra_labels,
            extra_annotations: &self.extra_annotations,
        })
    }

    fn manifest(&self) -> Value {
        self.render()
            .unwrap_or_else(|err| panic!("rendering failed: {err}"))
            .manifest
    }

    fn error(&self) -> ManifestError {
        match self.render() {
            Ok(job) => panic!("expected an error, rendered {}", job.manifest),
            Err(err) => err,
        }
    }
}

fn container(manifest: &Value) -> &Value {
    &manifest["spec"]["template"]["spec"]["containers"][0]
}

fn env_value<'m>(manifest: &'m Value, name: &str) -> Option<&'m Value> {
    container(manifest)["env"]
        .as_array()
        .expect("env list")
        .iter()
        .find(|entry| entry["name"] == name)
}

fn env_names(manifest: &Value) -> Vec<String> {
    container(manifest)["env"]
        .as_array()
        .expect("env list")
        .iter()
        .map(|entry| entry["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn defaults_give_the_prefect_kubernetes_job_with_a_fixed_name() {
    let inputs = Inputs::new(json!({}), json!({}));
    let job = inputs.render().expect("rendered");
    let manifest = &job.manifest;
    assert_eq!(manifest["metadata"]["name"], inputs.job_name.as_str());
    assert!(manifest["metadata"].get("generateName").is_none());
    assert_eq!(job.namespace, "default");
    assert_eq!(
        job.infrastructure_pid().to_string(),
        format!("default:{}", inputs.job_name)
    );
    assert_eq!(container(manifest)["image"], DEFAULT_IMAGE);
    assert_eq!(
        container(manifest)["args"],
        json!(["prefect", "flow-run", "execute"])
    );
    assert_eq!(container(manifest)["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        container(manifest)["resources"],
        json!({"limits": {}, "requests": {}})
    );
    assert_eq!(manifest["spec"]["backoffLimit"], 0);
    assert!(manifest["spec"].get("ttlSecondsAfterFinished").is_none());
    assert!(manifest["spec"]["template"]["spec"]
        .get("serviceAccountName")
        .is_none());
    assert_eq!(
        env_names(manifest),
        [
            "PREFECT_API_URL",
            "PREFECT_API_KEY",
            "PREFECT__FLOW_RUN_ID",
            "PREFECT__WORKER_NAME",
            "PREFECT__FLOW_ID",
            "PREFECT__FLOW_NAME",
            "PREFECT__DEPLOYMENT_ID",
            "PREFECT__DEPLOYMENT_NAME",
            "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"
        ]
    );
    assert_eq!(
        env_value(manifest, "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR").expect("set")["value"],
        "reschedule"
    );
    let run_id = inputs.context.flow_run_id.to_string();
    assert_eq!(
        manifest["metadata"]["labels"]["prefect.io/flow-run-id"],
        run_id.as_str()
    );
    assert_eq!(
        manifest["spec"]["template"]["metadata"]["labels"]["prefect.io/flow-run-id"],
        run_id.as_str()
    );
    job.to_typed_job().expect("typed Job");
}

#[test]
fn backoff_limit_above_zero_relinquishes_on_sigterm() {
    let manifest = Inputs::new(
        json!({"backoff_limit": 3, "env": {"PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule"}}),
        json!({}),
    )
    .manifest();
    assert_eq!(manifest["spec"]["backoffLimit"], 3);
    assert_eq!(
        env_value(&manifest, "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR").expect("set")["value"],
        "relinquish"
    );
}

#[test]
fn null_job_variables_are_unset() {
    let manifest = Inputs::new(
        json!({"image": null, "image_pull_policy": null, "finished_job_ttl": null, "namespace": null}),
        json!({}),
    )
    .manifest();
    assert_eq!(container(&manifest)["image"], DEFAULT_IMAGE);
    assert!(container(&manifest).get("imagePullPolicy").is_none());
    assert_eq!(manifest["metadata"]["namespace"], "default");
}

#[test]
fn a_command_list_is_used_as_args() {
    let manifest = Inputs::new(
        json!({"command": ["python", "-c", "print('hi there')"]}),
        json!({}),
    )
    .manifest();
    assert_eq!(
        container(&manifest)["args"],
        json!(["python", "-c", "print('hi there')"])
    );
}

#[test]
fn agent_defaults_apply_below_job_variables() {
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.defaults = AgentDefaults {
        namespace: Some("prefect".into()),
        env: vec![
            ("AGENT_ONLY".into(), "a".into()),
            ("SHARED".into(), "agent".into()),
        ],
        image_pull_secrets: vec!["regcred".into(), "mirror-cred".into()],
        service_account_name: Some("flow-runner".into()),
        image_pull_policy: Some("Always".into()),
        cpu_request: Some("100m".into()),
        cpu_limit: Some("1".into()),
        memory_request: Some("128Mi".into()),
        memory_limit: Some("1Gi".into()),
        labels: vec![("team".into(), "platform".into())],
    };
    let job = inputs.render().expect("rendered");
    let manifest = &job.manifest;
    assert_eq!(job.namespace, "prefect");
    assert_eq!(manifest["metadata"]["namespace"], "prefect");
    assert_eq!(
        manifest["spec"]["template"]["spec"]["serviceAccountName"],
        "flow-runner"
    );
    assert_eq!(
        manifest["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}, {"name": "mirror-cred"}])
    );
    assert_eq!(container(manifest)["imagePullPolicy"], "Always");
    assert_eq!(
        container(manifest)["resources"],
        json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}})
    );
    assert_eq!(
        env_value(manifest, "AGENT_ONLY").expect("set")["value"],
        "a"
    );
    assert_eq!(manifest["metadata"]["labels"]["team"], "platform");

    // Job variables win, key by key for env and labels.
    inputs.deployment = json!({
        "namespace": "team-a",
        "service_account_name": "team-a-runner",
        "cpu_request": "250m",
        "env": {"SHARED": "deployment"},
        "labels": {"team": "a"}
    });
    let manifest = inputs.manifest();
    assert_eq!(manifest["metadata"]["namespace"], "team-a");
    assert_eq!(
        manifest["spec"]["template"]["spec"]["serviceAccountName"],
        "team-a-runner"
    );
    assert_eq!(container(&manifest)["resources"]["requests"]["cpu"], "250m");
    assert_eq!(container(&manifest)["resources"]["limits"]["cpu"], "1");
    assert_eq!(
        env_value(&manifest, "SHARED").expect("set")["value"],
        "deployment"
    );
    assert_eq!(
        env_value(&manifest, "AGENT_ONLY").expect("kept")["value"],
        "a"
    );
    assert_eq!(manifest["metadata"]["labels"]["team"], "a");
}

#[test]
fn image_pull_secrets_of_the_template_are_kept() {
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        ["imagePullSecrets"] = json!([{"name": "pool-cred"}]);
    inputs.defaults.image_pull_secrets = vec!["agent-cred".into()];
    let manifest = inputs.manifest();
    assert_eq!(
        manifest["spec"]["template"]["spec"]["imagePullSecrets"],
        json!([{"name": "pool-cred"}])
    );
}

#[test]
fn api_key_and_auth_string_can_be_secret_references() {
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.settings = ForwardedSettings {
        api_url: Some("http://prefect:4200/api".into()),
        api_key: Some(ForwardedSecret::SecretKeyRef {
            name: "prefect-api".into(),
            key: "key".into(),
        }),
        api_auth_string: Some(ForwardedSecret::SecretKeyRef {
            name: "prefect-auth".into(),
            key: "auth".into(),
        }),
        extra_env: vec![("PREFECT_LOGGING_LEVEL".into(), "DEBUG".into())],
    };
    let manifest = inputs.manifest();
    assert_eq!(
        &env_names(&manifest)[..4],
        [
            "PREFECT_API_URL",
            "PREFECT_API_AUTH_STRING",
            "PREFECT_API_KEY",
            "PREFECT_LOGGING_LEVEL"
        ]
    );
    assert_eq!(
        env_value(&manifest, "PREFECT_API_KEY").expect("set"),
        &json!({"name": "PREFECT_API_KEY", "valueFrom": {"secretKeyRef": {"name": "prefect-api", "key": "key"}}})
    );
    assert_eq!(
        env_value(&manifest, "PREFECT_API_AUTH_STRING").expect("set")["valueFrom"]["secretKeyRef"]
            ["name"],
        "prefect-auth"
    );
    assert!(!manifest.to_string().contains("pnu_key"));
}

#[test]
fn extra_labels_and_annotations_go_on_job_and_pod() {
    let mut inputs = Inputs::new(json!({"annotations": {"user": "x"}}), json!({}));
    inputs.extra_annotations = vec![("prefect.io/claim-key".into(), "run-1:scheduled".into())];
    inputs.extra_labels = vec![("prefect.io/agent".into(), "rust".into())];
    let manifest = inputs.manifest();
    for metadata in [
        &manifest["metadata"],
        &manifest["spec"]["template"]["metadata"],
    ] {
        assert_eq!(
            metadata["annotations"]["prefect.io/claim-key"],
            "run-1:scheduled"
        );
        assert_eq!(metadata["annotations"]["user"], "x");
        assert_eq!(metadata["labels"]["prefect.io/agent"], "rust");
    }
}

#[test]
fn job_names_are_deterministic_dns_labels() {
    let name = job_name("Crimson Otter!", "0123456789abcdef");
    assert_eq!(name, "crimson-otter-0123456789abcdef");
    assert!(name.len() <= 63);
}

fn assert_error(err: &ManifestError, field: &str, words: &[&str]) {
    assert_eq!(err.field(), field, "{err}");
    for word in words {
        assert!(err.message().contains(word), "{word:?} not in: {err}");
    }
}

#[test]
fn invalid_image_is_refused_naming_the_variable() {
    let err = Inputs::new(json!({"image": "Prefecthq/Prefect:3"}), json!({})).error();
    assert_error(
        &err,
        "job_variables.image",
        &["Prefecthq/Prefect:3", "lower case"],
    );
    let err = Inputs::new(json!({}), json!({"image": "python:3 slim"})).error();
    assert_error(&err, "job_variables.image", &["whitespace"]);
    let err = Inputs::new(json!({"image": "python:-bad"}), json!({})).error();
    assert_error(&err, "job_variables.image", &["tag"]);
}

#[test]
fn variables_the_template_does_not_use_are_not_checked() {
    let mut inputs = Inputs::new(json!({"image": "Not A Valid Image"}), json!({}));
    inputs.template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        ["containers"][0]["image"] = json!("python:3.12");
    let manifest = inputs.manifest();
    assert_eq!(container(&manifest)["image"], "python:3.12");
}

#[test]
fn invalid_quantities_are_refused() {
    let err = Inputs::new(json!({"cpu_request": "two cores"}), json!({})).error();
    assert_error(
        &err,
        "job_variables.cpu_request",
        &["two cores", "Kubernetes quantity"],
    );
    let err = Inputs::new(json!({"memory_limit": "1GB"}), json!({})).error();
    assert_error(&err, "job_variables.memory_limit", &["1GB"]);
    let err = Inputs::new(json!({"cpu_request": "2", "cpu_limit": "1"}), json!({})).error();
    assert_error(
        &err,
        "job_manifest.spec.template.spec.containers[0].resources.requests.cpu",
        &["less than or equal"],
    );
    // Quantities hard-coded in a template are checked too.
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        ["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("lots");
    assert_error(
        &inputs.error(),
        "job_manifest.spec.template.spec.containers[0].resources.limits.ephemeral-storage",
        &["lots"],
    );
}

#[test]
fn invalid_names_are_refused() {
    let err = Inputs::new(json!({"namespace": "Team_A"}), json!({})).error();
    assert_error(&err, "job_variables.namespace", &["DNS-1123"]);
    let err = Inputs::new(json!({"service_account_name": "Flow Runner"}), json!({})).error();
    assert_error(&err, "job_variables.service_account_name", &["DNS-1123"]);
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.job_name = "Not_A_Name".into();
    assert_error(&inputs.error(), "job_name", &["DNS-1123"]);
}

#[test]
fn labels_that_stay_invalid_after_slugging_are_refused() {
    let err = Inputs::new(json!({"labels": {"tier": "!!!"}}), json!({})).error();
    assert_error(&err, "job_variables.labels.tier", &["\"!!!\""]);
    let err = Inputs::new(json!({"labels": {"Example.COM/team": "a"}}), json!({})).error();
    assert_error(&err, "job_variables.labels.Example.COM/team", &["prefix"]);
}

#[test]
fn malformed_job_variables_are_refused() {
    let cases = [
        (
            json!({"env": "FOO=bar"}),
            "job_variables.env",
            "must be an object",
        ),
        (
            json!({"env": {"N": {"nested": 1}}}),
            "job_variables.env.N",
            "a string or null",
        ),
        (
            json!({"backoff_limit": "3"}),
            "job_variables.backoff_limit",
            "must be an integer",
        ),
        (
            json!({"backoff_limit": -1}),
            "job_variables.backoff_limit",
            "at least 0",
        ),
        (
            json!({"command": 42}),
            "job_variables.command",
            "a string or null",
        ),
        (
            json!({"command": "echo 'unbalanced"}),
            "job_variables.command",
            "no closing quotation",
        ),
        (
            json!({"finished_job_ttl": "1h"}),
            "job_variables.finished_job_ttl",
            "an integer or null",
        ),
        (
            json!({"image_pull_policy": "Sometimes"}),
            "job_variables.image_pull_policy",
            "one of",
        ),
        (
            json!({"labels": {"a": 1}}),
            "job_variables.labels.a",
            "a string",
        ),
    ];
    for (variables, field, reason) in cases {
        let err = Inputs::new(variables.clone(), json!({})).error();
        assert_error(&err, field, &[reason]);
    }
    let err = Inputs::new(json!(["not", "an", "object"]), json!({})).error();
    assert_error(&err, "job_variables", &["must be an object"]);
}

#[test]
fn prefect_block_and_variable_placeholders_are_not_supported_yet() {
    let err = Inputs::new(
        json!({"env": {"DB": "{{ prefect.blocks.secret.db-password }}"}}),
        json!({}),
    )
    .error();
    assert!(
        matches!(err, ManifestError::UnsupportedPlaceholder { .. }),
        "{err:?}"
    );
    assert!(err.message().contains("not supported"), "{err}");
    let err = Inputs::new(
        json!({"image": "{{ prefect.variables.flow_image }}"}),
        json!({}),
    )
    .error();
    assert!(
        matches!(err, ManifestError::UnsupportedPlaceholder { .. }),
        "{err:?}"
    );
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.template["job_configuration"]["job_manifest"]["metadata"]["labels"] =
        json!({"owner": "{{ $USER }}"});
    assert!(matches!(
        inputs.error(),
        ManifestError::UnsupportedPlaceholder { .. }
    ));
}

#[test]
fn a_cluster_config_is_refused() {
    let err = Inputs::new(
        json!({"cluster_config": {"config": {}, "context_name": "other"}}),
        json!({}),
    )
    .error();
    assert_error(&err, "job_variables.cluster_config", &["not supported"]);
}

#[test]
fn manifest_structure_is_validated_like_prefect_kubernetes() {
    let mut inputs = Inputs::new(json!({}), json!({}));
    let pod_spec =
        &mut inputs.template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"];
    pod_spec
        .as_object_mut()
        .expect("pod spec")
        .shift_remove("completions");
    assert_error(
        &inputs.error(),
        "job_manifest.spec.template.spec.completions",
        &[
            "missing required attributes",
            "/spec/template/spec/completions",
        ],
    );

    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
        ["restartPolicy"] = json!("OnFailure");
    inputs.template["job_configuration"]["job_manifest"]["kind"] = json!("Pod");
    assert_error(
        &inputs.error(),
        "job_manifest.kind",
        &[
            "incompatible values",
            "/kind must have value 'Job'",
            "/spec/template/spec/restartPolicy must have value 'Never'",
        ],
    );

    let mut inputs = Inputs::new(json!({}), json!({}));
    let containers = &mut inputs.template["job_configuration"]["job_manifest"]["spec"]["template"]
        ["spec"]["containers"];
    let mut list = containers.as_array().expect("containers").clone();
    list.insert(0, json!({"name": "sidecar", "image": "busybox"}));
    *containers = Value::Array(list);
    assert_error(
        &inputs.error(),
        "job_manifest.spec.template.spec.containers[0].name",
        &["must have value 'prefect-job'"],
    );

    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs
        .template
        .as_object_mut()
        .expect("template")
        .shift_remove("job_configuration");
    assert_error(&inputs.error(), "job_configuration", &["job_configuration"]);
}

#[test]
fn a_hard_coded_namespace_must_match_the_namespace_variable() {
    let mut inputs = Inputs::new(json!({"namespace": "team-a"}), json!({}));
    inputs.template["job_configuration"]["job_manifest"]["metadata"]["namespace"] = json!("fixed");
    assert_error(
        &inputs.error(),
        "job_manifest.metadata.namespace",
        &["differs"],
    );
}

#[test]
fn invalid_agent_defaults_are_refused_naming_the_option() {
    let mut inputs = Inputs::new(json!({}), json!({}));
    inputs.defaults.cpu_limit = Some("a lot".into());
    assert_error(&inputs.error(), "agent.cpu_limit", &["a lot"]);
}
