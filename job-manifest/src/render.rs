//! Rendering one flow run's Job: the steps of Prefect's
//! `from_template_and_values` (defaults, job variables, placeholder substitution),
//! prefect-kubernetes' manifest validation, its `prepare_for_flow_run` (env,
//! labels, annotations, image, command), then this agent's own steps (a fixed
//! `metadata.name`, agent defaults, secret references, caller's labels and
//! annotations) and the checks that turn a bad value into an explained error.

use serde_json::{json, Map, Value};

use crate::command_line::split_command;
use crate::environment::{
    apply_secret_references, build_environment, container_env_list, ConfiguredEnv,
};
use crate::error::ManifestError;
use crate::image_reference::check_image_reference;
use crate::job_variables::{
    check_against_schema, expand_dotted_keys, json_type_name, merge_deployment_and_run,
    schema_defaults,
};
use crate::kubernetes_names::{
    check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value,
};
use crate::labels::{base_labels, merge_and_slugify};
use crate::python_text::python_str;
use crate::quantity::{check_container_resources, check_resource_quantity};
use crate::request::{AgentDefaults, RenderRequest, IMAGE_PULL_POLICIES};
use crate::slug::{slugify_label_key, slugify_label_value};
use crate::templating::{apply_values, find_unsupported_references, referenced_variables};

/// The image used when neither the job variables nor the template set one
/// (prefect-kubernetes: `prefecthq/prefect:<prefect version>-python<python version>`).
pub const DEFAULT_IMAGE: &str = "prefecthq/prefect:3.9.1-python3.11";
/// The container `args` used when no command is set.
pub const DEFAULT_COMMAND: [&str; 3] = ["prefect", "flow-run", "execute"];
/// The namespace used when neither job variables nor the template set one.
pub const DEFAULT_NAMESPACE: &str = "default";

const MANIFEST: &str = "job_manifest";
const CONTAINER: &str = "job_manifest.spec.template.spec.containers[0]";

/// A rendered Job, ready to be created.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedJob {
    /// The full `batch/v1` Job manifest.
    pub manifest: Value,
    /// The namespace to create it in (also its `metadata.namespace`).
    pub namespace: String,
    /// Its `metadata.name`.
    pub job_name: String,
}

impl RenderedJob {
    /// Prefect's `infrastructure_pid` for this Job.
    pub fn infrastructure_pid(&self) -> flow_run_proto::InfrastructurePid {
        flow_run_proto::InfrastructurePid::new(&self.namespace, &self.job_name)
    }
}

/// The job configuration after placeholder substitution, typed as
/// `KubernetesWorkerJobConfiguration` types it.
struct JobConfiguration {
    env: ConfiguredEnv,
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    namespace: String,
    job_manifest: Value,
}

fn template_error(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Template {
        field: field.into(),
        reason: reason.into(),
    }
}

fn variable_error(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::JobVariable {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Renders the Job manifest of one flow run. Pure: no I/O.
pub fn render_job_manifest(request: &RenderRequest<'_>) -> Result<RenderedJob, ManifestError> {
    request.agent_defaults.validate()?;
    check_dns1123_label("job_name", request.job_name)?;

    let TemplateParts {
        mut base_config,
        properties,
    } = template_parts(request.base_job_template)?;

    // Defaults: the pool's schema, then the agent's options.
    let mut variables = schema_defaults(&properties);
    apply_agent_scalar_defaults(&mut variables, request.agent_defaults);
    if let Some(default_env) = variables.get("env").filter(|env| is_truthy(env)) {
        let merged = match base_config.get("env") {
            Some(Value::Object(config_env)) => merge_objects(config_env, default_env, "env")?,
            _ => default_env.clone(),
        };
        base_config.insert("env".into(), merged);
    }

    // Job variables: deployment overlaid by flow run, dotted keys expanded, the
    // agent's env and labels below them key by key.
    let merged = merge_deployment_and_run(
        request.deployment_job_variables,
        request.flow_run_job_variables,
    )?;
    let mut job_values = expand_dotted_keys(&merged)?;
    layer_agent_mapping(&mut job_values, "env", &request.agent_defaults.env)?;
    layer_agent_mapping(&mut job_values, "labels", &request.agent_defaults.labels)?;
    check_against_schema(&job_values, &properties)?;
    for (key, value) in job_values {
        variables.insert(key, value);
    }
    check_known_variables(
        &variables,
        &referenced_variables(&Value::Object(base_config.clone())),
    )?;

    if let (Some(Value::Object(config_env)), Some(job_env)) = (
        base_config.get("env"),
        variables.get("env").filter(|env| is_truthy(env)),
    ) {
        let merged = merge_objects(config_env, job_env, "env")?;
        base_config.insert("env".into(), merged);
    }

    let populated = apply_values(&Value::Object(base_config), &variables)
        .unwrap_or_else(|| Value::Object(Map::new()));
    find_unsupported_references(&populated, "job_configuration")?;
    let mut config = JobConfiguration::from_populated(populated)?;
    validate_manifest_structure(&mut config.job_manifest, &config.namespace)?;

    prepare_for_flow_run(&mut config, request)?;
    apply_agent_additions(&mut config.job_manifest, request)?;
    validate_rendered_manifest(&config.job_manifest, &config.namespace)?;

    Ok(RenderedJob {
        manifest: config.job_manifest,
        namespace: config.namespace,
        job_name: request.job_name.to_string(),
    })
}

/// The parts of a base job template that rendering reads.
struct TemplateParts {
    /// `job_configuration`.
    base_config: Map<String, Value>,
    /// The variables' schema `properties` (empty when the schema has none).
    properties: Map<String, Value>,
}

/// The base job template's `job_configuration` and its variables' schema
/// `properties`.
fn template_parts(base_job_template: &Value) -> Result<TemplateParts, ManifestError> {
    let template = base_job_template
        .as_object()
        .ok_or_else(|| template_error("base_job_template", "must be an object"))?;
    let base_config = match template.get("job_configuration") {
        Some(Value::Object(config)) => config.clone(),
        _ => {
            return Err(template_error(
                "job_configuration",
                "the base job template needs a `job_configuration` object",
            ))
        }
    };
    let properties = match template.get("variables") {
        Some(Value::Object(variables)) => match variables.get("properties") {
            None => Map::new(),
            Some(Value::Object(properties)) => properties.clone(),
            Some(_) => return Err(template_error("variables.properties", "must be an object")),
        },
        _ => {
            return Err(template_error(
                "variables",
                "the base job template needs a `variables` object (a JSON schema)",
            ))
        }
    };
    Ok(TemplateParts {
        base_config,
        properties,
    })
}

/// Python truthiness of a JSON value (`{}`, `[]`, `""`, `0`, `false`, `null` are false).
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(object) => !object.is_empty(),
    }
}

/// Python's `dict | dict`.
fn merge_objects(
    base: &Map<String, Value>,
    overlay: &Value,
    field: &str,
) -> Result<Value, ManifestError> {
    let Value::Object(overlay) = overlay else {
        return Err(variable_error(
            format!("job_variables.{field}"),
            format!("must be an object, got {}", json_type_name(overlay)),
        ));
    };
    let mut merged = base.clone();
    for (key, value) in overlay {
        merged.insert(key.clone(), value.clone());
    }
    Ok(Value::Object(merged))
}

fn apply_agent_scalar_defaults(variables: &mut Map<String, Value>, defaults: &AgentDefaults) {
    for (name, value) in [
        ("namespace", &defaults.namespace),
        ("service_account_name", &defaults.service_account_name),
        ("image_pull_policy", &defaults.image_pull_policy),
        ("cpu_request", &defaults.cpu_request),
        ("cpu_limit", &defaults.cpu_limit),
        ("memory_request", &defaults.memory_request),
        ("memory_limit", &defaults.memory_limit),
    ] {
        if let Some(value) = value {
            variables.insert(name.into(), Value::String(value.clone()));
        }
    }
}

/// Puts the agent's `env`/`labels` under the job variable of the same name.
fn layer_agent_mapping(
    values: &mut Map<String, Value>,
    name: &str,
    defaults: &[(String, String)],
) -> Result<(), ManifestError> {
    if defaults.is_empty() {
        return Ok(());
    }
    let mut layered: Map<String, Value> = defaults
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    match values.get(name) {
        None | Some(Value::Null) => {}
        Some(Value::Object(job_values)) => {
            for (key, value) in job_values {
                layered.insert(key.clone(), value.clone());
            }
        }
        Some(other) => {
            return Err(variable_error(
                format!("job_variables.{name}"),
                format!("must be an object, got {}", json_type_name(other)),
            ))
        }
    }
    values.insert(name.into(), Value::Object(layered));
    Ok(())
}

/// Checks the values of the well-known variables the template uses before they
/// are rendered, so the error names the job variable rather than a manifest path.
fn check_known_variables(
    variables: &Map<String, Value>,
    referenced: &[String],
) -> Result<(), ManifestError> {
    // Values that are themselves placeholders are checked after rendering
    // (where unsupported ones are reported as such); unused ones not at all.
    let plain: Map<String, Value> = variables
        .iter()
        .filter(|(name, _)| referenced.contains(name))
        .filter(|(_, value)| !value.as_str().is_some_and(|text| text.contains("{{")))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let variables = &plain;
    if let Some(Value::String(image)) = variables.get("image") {
        check_image_reference("job_variables.image", image)?;
    }
    for name in ["cpu_request", "cpu_limit", "memory_request", "memory_limit"] {
        if let Some(value @ Value::String(_)) = variables.get(name) {
            check_resource_quantity(&format!("job_variables.{name}"), value)?;
        }
    }
    if let Some(Value::String(namespace)) = variables.get("namespace") {
        check_dns1123_label("job_variables.namespace", namespace)?;
    }
    if let Some(Value::String(account)) = variables.get("service_account_name") {
        check_dns1123_subdomain("job_variables.service_account_name", account)?;
    }
    if let Some(Value::String(command)) = variables.get("command") {
        split_command("job_variables.command", command)?;
    }
    if let Some(command) = variables.get("command") {
        check_command_value("job_variables.command", command)?;
    }
    if let Some(Value::Object(labels)) = variables.get("labels") {
        for (key, value) in labels {
            let field = format!("job_variables.labels.{key}");
            let Value::String(value) = value else {
                return Err(variable_error(
                    field,
                    format!("must be a string, got {value}"),
                ));
            };
            let slug_key = slugify_label_key(key);
            check_label_key(&field, &slug_key)?;
            check_label_value(&field, &slug_key, &slugify_label_value(value))?;
        }
    }
    if let Some(Value::Object(annotations)) = variables.get("annotations") {
        for (key, value) in annotations {
            let field = format!("job_variables.annotations.{key}");
            if !value.is_string() {
                return Err(variable_error(
                    field,
                    format!("must be a string, got {value}"),
                ));
            }
            check_label_key(&field, &slugify_label_key(key))?;
        }
    }
    Ok(())
}

fn check_command_value(field: &str, command: &Value) -> Result<(), ManifestError> {
    match command {
        Value::Null | Value::String(_) => Ok(()),
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(()),
        other => Err(variable_error(
            field,
            format!(
                "the command must be a string or a list of strings, got {}",
                json_type_name(other)
            ),
        )),
    }
}

impl JobConfiguration {
    /// Types the populated `job_configuration` as pydantic does for
    /// `KubernetesWorkerJobConfiguration`.
    fn from_populated(populated: Value) -> Result<JobConfiguration, ManifestError> {
        let Value::Object(mut fields) = populated else {
            return Err(template_error("job_configuration", "must be an object"));
        };
        let env = configured_env(fields.shift_remove("env"))?;
        let labels = string_map(fields.shift_remove("labels"), "labels")?;
        let annotations = string_map(fields.shift_remove("annotations"), "annotations")?;
        let namespace = match fields.shift_remove("namespace") {
            None | Some(Value::Null) => DEFAULT_NAMESPACE.to_string(),
            Some(Value::String(namespace)) => namespace,
            Some(other) => {
                return Err(variable_error(
                    "job_variables.namespace",
                    format!("must be a string, got {}", json_type_name(&other)),
                ))
            }
        };
        check_dns1123_label("job_variables.namespace", &namespace)?;
        if let Some(command) = fields.get("command") {
            check_command_value("job_variables.command", command)?;
        }
        if let Some(name) = fields.get("name") {
            if !(name.is_null() || name.is_string()) {
                return Err(variable_error(
                    "job_variables.name",
                    format!("must be a string or null, got {}", json_type_name(name)),
                ));
            }
        }
        if let Some(cluster_config) = fields.get("cluster_config") {
            if !cluster_config.is_null() {
                return Err(variable_error(
                    "job_variables.cluster_config",
                    "a per-deployment cluster config is not supported: this agent creates Jobs \
                     in the cluster it is configured for",
                ));
            }
        }
        let job_manifest = match fields.shift_remove("job_manifest") {
            Some(manifest @ Value::Object(_)) => manifest,
            Some(_) => {
                return Err(template_error(
                    "job_configuration.job_manifest",
                    "must be an object",
                ))
            }
            None => {
                return Err(template_error(
                    "job_configuration.job_manifest",
                    "the job configuration needs a `job_manifest`",
                ))
            }
        };
        Ok(JobConfiguration {
            env,
            labels,
            annotations,
            namespace,
            job_manifest,
        })
    }
}

/// The configuration's `env`: a mapping with its scalar values as Python prints
/// them, or a list of `EnvVar` objects.
fn configured_env(env: Option<Value>) -> Result<ConfiguredEnv, ManifestError> {
    let env = match env {
        None | Some(Value::Null) => ConfiguredEnv::Mapping(Map::new()),
        Some(Value::Object(env)) => {
            let mut coerced = Map::new();
            for (name, value) in env {
                let value = match value {
                    Value::Null => Value::Null,
                    Value::String(text) => Value::String(text),
                    scalar @ (Value::Bool(_) | Value::Number(_)) => {
                        Value::String(python_str(&scalar))
                    }
                    other => {
                        return Err(variable_error(
                            format!("job_variables.env.{name}"),
                            format!(
                                "environment variable values must be strings, got {}",
                                json_type_name(&other)
                            ),
                        ))
                    }
                };
                coerced.insert(name, value);
            }
            ConfiguredEnv::Mapping(coerced)
        }
        Some(Value::Array(items)) => {
            if let Some(index) = items.iter().position(|item| !item.is_object()) {
                return Err(template_error(
                    format!("job_configuration.env[{index}]"),
                    "env list entries must be objects with `name` and `value` or `valueFrom`",
                ));
            }
            ConfiguredEnv::List(items)
        }
        Some(other) => {
            return Err(variable_error(
                "job_variables.env",
                format!(
                    "must be an object of variable name to value, got {}",
                    json_type_name(&other)
                ),
            ))
        }
    };
    Ok(env)
}

fn string_map(value: Option<Value>, name: &str) -> Result<Map<String, Value>, ManifestError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(entries)) => {
            for (key, value) in &entries {
                if !value.is_string() {
                    return Err(variable_error(
                        format!("job_variables.{name}.{key}"),
                        format!("must be a string, got {}", json_type_name(value)),
                    ));
                }
            }
            Ok(entries)
        }
        Some(other) => Err(variable_error(
            format!("job_variables.{name}"),
            format!(
                "must be an object of strings, got {}",
                json_type_name(&other)
            ),
        )),
    }
}

/// The manifest every Job must contain (prefect-kubernetes' `_get_base_job_manifest`).
fn required_manifest() -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"annotations": {}, "labels": {}},
        "spec": {"template": {"spec": {
            "parallelism": 1,
            "completions": 1,
            "restartPolicy": "Never",
            "containers": [{"name": "prefect-job"}]
        }}}
    })
}

fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => left == right,
    }
}

fn python_literal(value: &Value) -> String {
    crate::python_text::python_repr(value)
}

fn compare_required(
    required: &Value,
    actual: &Value,
    pointer: &str,
    missing: &mut Vec<String>,
    incompatible: &mut Vec<String>,
) {
    match (required, actual) {
        (Value::Object(required), Value::Object(actual)) => {
            for (key, required_value) in required {
                let child = format!("{pointer}/{key}");
                match actual.get(key) {
                    None => missing.push(child),
                    Some(actual_value) => compare_required(
                        required_value,
                        actual_value,
                        &child,
                        missing,
                        incompatible,
                    ),
                }
            }
        }
        (Value::Array(required), Value::Array(actual)) => {
            for (index, required_value) in required.iter().enumerate() {
                let child = format!("{pointer}/{index}");
                match actual.get(index) {
                    None => missing.push(child),
                    Some(actual_value) => compare_required(
                        required_value,
                        actual_value,
                        &child,
                        missing,
                        incompatible,
                    ),
                }
            }
        }
        (Value::Object(_), _) => incompatible.push(format!("{pointer} must be an object")),
        (Value::Array(_), _) => incompatible.push(format!("{pointer} must be a list")),
        (required, actual) => {
            if !json_equal(required, actual) {
                incompatible.push(format!(
                    "{pointer} must have value {}",
                    python_literal(required)
                ));
            }
        }
    }
}

fn pointer_to_field(pointer: &str) -> String {
    let mut field = MANIFEST.to_string();
    for part in pointer.split('/').filter(|part| !part.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            field.push_str(&format!("[{part}]"));
        } else {
            field.push('.');
            field.push_str(part);
        }
    }
    field
}

/// prefect-kubernetes' `_validate_job_manifest`: fills `metadata`, its
/// `annotations`, `labels` and `namespace`, then requires the base structure.
/// Unlike prefect-kubernetes, the container named `prefect-job` must be the first.
fn validate_manifest_structure(manifest: &mut Value, namespace: &str) -> Result<(), ManifestError> {
    let object = manifest
        .as_object_mut()
        .ok_or_else(|| template_error(MANIFEST, "must be an object"))?;
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let metadata = metadata
        .as_object_mut()
        .ok_or_else(|| template_error("job_manifest.metadata", "must be an object"))?;
    metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    metadata
        .entry("namespace")
        .or_insert_with(|| Value::String(namespace.to_string()));

    let mut missing = Vec::new();
    let mut incompatible = Vec::new();
    compare_required(
        &required_manifest(),
        manifest,
        "",
        &mut missing,
        &mut incompatible,
    );
    missing.sort();
    incompatible.sort();
    if let Some(first) = missing.first() {
        return Err(template_error(
            pointer_to_field(first),
            format!(
                "Job is missing required attributes at the following paths: {}",
                missing.join(", ")
            ),
        ));
    }
    if let Some(first) = incompatible.first() {
        let pointer = first.split(' ').next().unwrap_or_default();
        return Err(template_error(
            pointer_to_field(pointer),
            format!(
                "Job has incompatible values for the following attributes: {}",
                incompatible.join(", ")
            ),
        ));
    }
    match manifest.pointer("/metadata/namespace") {
        Some(Value::String(manifest_namespace)) if manifest_namespace == namespace => Ok(()),
        Some(other) => Err(template_error(
            "job_manifest.metadata.namespace",
            format!(
                "the manifest's namespace {other} differs from the namespace variable {namespace:?}; \
                 Kubernetes refuses a Job whose namespace differs from the one it is created in"
            ),
        )),
        None => Ok(()),
    }
}

fn container_mut(manifest: &mut Value) -> &mut Map<String, Value> {
    manifest
        .pointer_mut("/spec/template/spec/containers/0")
        .and_then(Value::as_object_mut)
        .expect("structure validated: containers[0] is an object")
}

/// prefect-kubernetes' `prepare_for_flow_run`, minus `generateName`.
fn prepare_for_flow_run(
    config: &mut JobConfiguration,
    request: &RenderRequest<'_>,
) -> Result<(), ManifestError> {
    let flow_run = request.flow_run;
    let backoff_limit = config.job_manifest.pointer("/spec/backoffLimit").cloned();
    let environment = build_environment(
        std::mem::replace(&mut config.env, ConfiguredEnv::Mapping(Map::new())),
        request.settings,
        flow_run,
        backoff_limit.as_ref(),
    );

    let mut labels = base_labels(flow_run);
    for (key, value) in &config.labels {
        labels.insert(key.clone(), value.clone());
    }

    let manifest = &mut config.job_manifest;
    let container = container_mut(manifest);
    let template_env = container.get("env").cloned();
    let env = container_env_list(
        environment,
        template_env.as_ref(),
        &format!("{CONTAINER}.env"),
    )?;
    container.insert("env".into(), Value::Array(env));

    let job_annotations = set_job_labels_and_annotations(manifest, &labels, &config.annotations)?;
    set_image_and_args(container_mut(manifest))?;

    // Job-level metadata name instead of generateName.
    let metadata = manifest
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata validated");
    metadata.shift_remove("generateName");
    metadata.insert("name".into(), Value::String(request.job_name.to_string()));

    set_pod_labels_and_annotations(manifest, &labels, job_annotations)
}

/// Merges `labels` and `annotations` into the Job's own metadata; the Job's
/// annotations as they end up.
fn set_job_labels_and_annotations(
    manifest: &mut Value,
    labels: &Map<String, Value>,
    annotations: &Map<String, Value>,
) -> Result<Map<String, Value>, ManifestError> {
    let job_labels = merge_and_slugify(
        manifest.pointer("/metadata/labels"),
        labels,
        true,
        "job_manifest.metadata.labels",
    )?;
    let job_annotations = merge_and_slugify(
        manifest.pointer("/metadata/annotations"),
        annotations,
        false,
        "job_manifest.metadata.annotations",
    )?;
    let metadata = manifest
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata validated");
    metadata.insert("labels".into(), Value::Object(job_labels));
    metadata.insert("annotations".into(), Value::Object(job_annotations.clone()));
    Ok(job_annotations)
}

/// The default image when the container has none, and its `args` as a list (the
/// default command when unset, a command line split as Python's `shlex` does).
fn set_image_and_args(container: &mut Map<String, Value>) -> Result<(), ManifestError> {
    if !container.contains_key("image") {
        container.insert("image".into(), Value::String(DEFAULT_IMAGE.into()));
    }
    let args_field = format!("{CONTAINER}.args");
    let args = match container.get("args") {
        None | Some(Value::Null) => DEFAULT_COMMAND.iter().map(|word| json!(word)).collect(),
        Some(Value::String(command)) => split_command(&args_field, command)?
            .into_iter()
            .map(Value::String)
            .collect(),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(template_error(
                args_field,
                format!(
                    "the command must be a string or a list, got {}",
                    json_type_name(other)
                ),
            ))
        }
    };
    container.insert("args".into(), Value::Array(args));
    Ok(())
}

/// Labels (and annotations, if any) on the pod template.
fn set_pod_labels_and_annotations(
    manifest: &mut Value,
    labels: &Map<String, Value>,
    job_annotations: Map<String, Value>,
) -> Result<(), ManifestError> {
    let template = manifest
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
        .expect("template validated");
    let mut pod_metadata = match template.shift_remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(metadata)) => metadata,
        Some(_) => {
            return Err(template_error(
                "job_manifest.spec.template.metadata",
                "must be an object",
            ))
        }
    };
    let pod_labels = merge_and_slugify(
        pod_metadata.get("labels"),
        labels,
        true,
        "job_manifest.spec.template.metadata.labels",
    )?;
    pod_metadata.insert("labels".into(), Value::Object(pod_labels));
    if !job_annotations.is_empty() {
        let mut pod_annotations = match pod_metadata.get("annotations") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(existing)) => existing.clone(),
            Some(_) => {
                return Err(template_error(
                    "job_manifest.spec.template.metadata.annotations",
                    "must be an object",
                ))
            }
        };
        for (key, value) in job_annotations {
            pod_annotations.insert(key, value);
        }
        pod_metadata.insert("annotations".into(), Value::Object(pod_annotations));
    }
    template.insert("metadata".into(), Value::Object(pod_metadata));
    Ok(())
}

/// This agent's steps after prefect-kubernetes': image pull secrets, secret
/// references for the API key/auth string, the caller's labels and annotations.
fn apply_agent_additions(
    manifest: &mut Value,
    request: &RenderRequest<'_>,
) -> Result<(), ManifestError> {
    let secrets = &request.agent_defaults.image_pull_secrets;
    if !secrets.is_empty() {
        let pod_spec = manifest
            .pointer_mut("/spec/template/spec")
            .and_then(Value::as_object_mut)
            .expect("pod spec validated");
        if !pod_spec.contains_key("imagePullSecrets") {
            let entries = secrets.iter().map(|name| json!({"name": name})).collect();
            pod_spec.insert("imagePullSecrets".into(), Value::Array(entries));
        }
    }

    if let Some(Value::Array(env)) = container_mut(manifest).get_mut("env") {
        apply_secret_references(env, request.settings);
    }

    for (pointer, entries) in [
        ("/metadata/labels", request.extra_labels),
        ("/spec/template/metadata/labels", request.extra_labels),
        ("/metadata/annotations", request.extra_annotations),
        (
            "/spec/template/metadata/annotations",
            request.extra_annotations,
        ),
    ] {
        if entries.is_empty() {
            continue;
        }
        let (parent_pointer, key) = pointer.rsplit_once('/').expect("pointer has a parent");
        let parent = manifest
            .pointer_mut(parent_pointer)
            .and_then(Value::as_object_mut)
            .expect("metadata objects exist after preparation");
        let target = parent
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("labels and annotations are objects after preparation");
        for (name, value) in entries {
            target.insert(name.clone(), Value::String(value.clone()));
        }
    }
    Ok(())
}

fn check_metadata_maps(metadata: Option<&Value>, field: &str) -> Result<(), ManifestError> {
    let Some(metadata) = metadata else {
        return Ok(());
    };
    if let Some(Value::Object(labels)) = metadata.get("labels") {
        for (key, value) in labels {
            let entry = format!("{field}.labels.{key}");
            check_label_key(&entry, key)?;
            let Value::String(value) = value else {
                return Err(ManifestError::Label {
                    field: entry,
                    reason: format!("the value must be a string, got {value}"),
                });
            };
            check_label_value(&entry, key, value)?;
        }
    }
    if let Some(Value::Object(annotations)) = metadata.get("annotations") {
        for (key, value) in annotations {
            let entry = format!("{field}.annotations.{key}");
            check_label_key(&entry, key)?;
            if !value.is_string() {
                return Err(ManifestError::Label {
                    field: entry,
                    reason: format!("annotation values must be strings, got {value}"),
                });
            }
        }
    }
    Ok(())
}

fn check_containers(pod_spec: &Map<String, Value>, list: &str) -> Result<(), ManifestError> {
    let Some(containers) = pod_spec.get(list) else {
        return Ok(());
    };
    let field = format!("job_manifest.spec.template.spec.{list}");
    let Value::Array(containers) = containers else {
        return Err(template_error(field, "must be a list of containers"));
    };
    for (index, container) in containers.iter().enumerate() {
        let field = format!("{field}[{index}]");
        let Value::Object(container) = container else {
            return Err(template_error(field, "a container must be an object"));
        };
        match container.get("image") {
            None | Some(Value::Null) => {}
            Some(Value::String(image)) => check_image_reference(&format!("{field}.image"), image)?,
            Some(other) => {
                return Err(ManifestError::ImageReference {
                    field: format!("{field}.image"),
                    image: other.to_string(),
                    reason: "must be a string".into(),
                })
            }
        }
        if let Some(policy) = container.get("imagePullPolicy").filter(|p| !p.is_null()) {
            if !policy
                .as_str()
                .is_some_and(|policy| IMAGE_PULL_POLICIES.contains(&policy))
            {
                return Err(template_error(
                    format!("{field}.imagePullPolicy"),
                    format!("{policy} is not one of {}", IMAGE_PULL_POLICIES.join(", ")),
                ));
            }
        }
        if let Some(resources) = container.get("resources").filter(|r| !r.is_null()) {
            check_container_resources(&format!("{field}.resources"), resources)?;
        }
        if let Some(Value::Array(args)) = container.get("args") {
            if let Some(position) = args.iter().position(|arg| !arg.is_string()) {
                return Err(template_error(
                    format!("{field}.args[{position}]"),
                    "container arguments must be strings",
                ));
            }
        }
        if let Some(Value::Array(env)) = container.get("env") {
            for (position, entry) in env.iter().enumerate() {
                let entry_field = format!("{field}.env[{position}]");
                let name = entry
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if name.is_empty()
                    || name.contains('=')
                    || !name.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(variable_error(
                        entry_field,
                        format!("{name:?} is not a valid environment variable name"),
                    ));
                }
                if let Some(value) = entry.get("value").filter(|value| !value.is_null()) {
                    if !value.is_string() {
                        return Err(variable_error(
                            format!("{entry_field} ({name})"),
                            format!("the value must be a string, got {value}"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks the finished manifest with the rules the API server would apply to
/// the fields this renderer touches or users commonly set.
fn validate_rendered_manifest(manifest: &Value, namespace: &str) -> Result<(), ManifestError> {
    check_dns1123_label("job_manifest.metadata.namespace", namespace)?;
    check_metadata_maps(manifest.get("metadata"), "job_manifest.metadata")?;
    check_metadata_maps(
        manifest.pointer("/spec/template/metadata"),
        "job_manifest.spec.template.metadata",
    )?;
    let pod_spec = manifest
        .pointer("/spec/template/spec")
        .and_then(Value::as_object)
        .expect("pod spec validated");
    if let Some(account) = pod_spec.get("serviceAccountName").filter(|a| !a.is_null()) {
        let field = "job_manifest.spec.template.spec.serviceAccountName";
        let account = account
            .as_str()
            .ok_or_else(|| template_error(field, "must be a string"))?;
        check_dns1123_subdomain(field, account)?;
    }
    if let Some(secrets) = pod_spec.get("imagePullSecrets").filter(|s| !s.is_null()) {
        let field = "job_manifest.spec.template.spec.imagePullSecrets";
        let secrets = secrets
            .as_array()
            .ok_or_else(|| template_error(field, "must be a list of {name: ...}"))?;
        for (index, secret) in secrets.iter().enumerate() {
            let entry = format!("{field}[{index}].name");
            let name = secret
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| template_error(entry.clone(), "must be a string"))?;
            check_dns1123_subdomain(&entry, name)?;
        }
    }
    check_containers(pod_spec, "containers")?;
    check_containers(pod_spec, "initContainers")?;
    Ok(())
}
