//! The flow run container's environment, in prefect-kubernetes' order:
//! forwarded Prefect settings, `PREFECT__FLOW_RUN_ID`, attribution
//! (`PREFECT__WORKER_ID/NAME`, `PREFECT__FLOW_ID/NAME`, `PREFECT__DEPLOYMENT_ID/NAME`),
//! then the `env` job variable, which overrides any of them in place and drops
//! those it sets to `null`; then `PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR`
//! (`reschedule` when `backoffLimit` is 0 and the user did not set it, otherwise
//! `relinquish`). The result becomes the container's `env` list, keeping
//! `valueFrom` entries and appending a hard-coded template list de-duplicated.

use serde_json::{json, Map, Value};

use crate::error::ManifestError;
use crate::request::{FlowRunContext, ForwardedSecret, ForwardedSettings};

pub const SIGTERM_BEHAVIOR: &str = "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR";
pub const API_KEY: &str = "PREFECT_API_KEY";
pub const API_AUTH_STRING: &str = "PREFECT_API_AUTH_STRING";
pub const API_URL: &str = "PREFECT_API_URL";

/// The `env` field of the job configuration: Prefect accepts a mapping (the
/// usual `{{ env }}`) or a Kubernetes-style list hard-coded in the template.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfiguredEnv {
    Mapping(Map<String, Value>),
    List(Vec<Value>),
}

/// The settings part of the environment. A secret reference is a placeholder
/// value here; [`apply_secret_references`] swaps it for `valueFrom` at the end,
/// by name, as prefect-kubernetes does.
fn settings_env(settings: &ForwardedSettings) -> Map<String, Value> {
    let mut env = Map::new();
    if let Some(url) = &settings.api_url {
        env.insert(API_URL.into(), Value::String(url.clone()));
    }
    for (name, secret) in [
        (API_AUTH_STRING, &settings.api_auth_string),
        (API_KEY, &settings.api_key),
    ] {
        match secret {
            Some(ForwardedSecret::Value(value)) => {
                env.insert(name.into(), Value::String(value.clone()));
            }
            Some(ForwardedSecret::SecretKeyRef { .. }) => {
                env.insert(name.into(), Value::String(String::new()));
            }
            None => {}
        }
    }
    for (name, value) in &settings.extra_env {
        env.insert(name.clone(), Value::String(value.clone()));
    }
    env
}

fn attribution_env(flow_run: &FlowRunContext) -> Map<String, Value> {
    let mut env = Map::new();
    env.insert(
        "PREFECT__FLOW_RUN_ID".into(),
        Value::String(flow_run.flow_run_id.to_string()),
    );
    if let Some(worker_id) = flow_run.worker_id {
        env.insert(
            "PREFECT__WORKER_ID".into(),
            Value::String(worker_id.to_string()),
        );
    }
    env.insert(
        "PREFECT__WORKER_NAME".into(),
        Value::String(flow_run.worker_name.clone()),
    );
    env.insert(
        "PREFECT__FLOW_ID".into(),
        Value::String(flow_run.flow_id.to_string()),
    );
    if !flow_run.flow_name.is_empty() {
        env.insert(
            "PREFECT__FLOW_NAME".into(),
            Value::String(flow_run.flow_name.clone()),
        );
    }
    if let Some(deployment) = &flow_run.deployment {
        env.insert(
            "PREFECT__DEPLOYMENT_ID".into(),
            Value::String(deployment.id.to_string()),
        );
        if !deployment.name.is_empty() {
            env.insert(
                "PREFECT__DEPLOYMENT_NAME".into(),
                Value::String(deployment.name.clone()),
            );
        }
    }
    env
}

/// Builds the final environment (mapping or list form) from the configured env.
pub fn build_environment(
    configured: ConfiguredEnv,
    settings: &ForwardedSettings,
    flow_run: &FlowRunContext,
    backoff_limit: Option<&Value>,
) -> ConfiguredEnv {
    let (user_env, value_from_entries) = match configured {
        ConfiguredEnv::Mapping(mapping) => (mapping, Vec::new()),
        ConfiguredEnv::List(items) => {
            let value_from: Vec<Value> = items
                .iter()
                .filter(|item| item.get("valueFrom").is_some())
                .cloned()
                .collect();
            let mut mapping = Map::new();
            for item in &items {
                if let (Some(Value::String(name)), Some(value)) =
                    (item.get("name"), item.get("value"))
                {
                    mapping.insert(name.clone(), value.clone());
                }
            }
            (mapping, value_from)
        }
    };

    let mut env = settings_env(settings);
    for (name, value) in attribution_env(flow_run).into_iter().chain(user_env) {
        env.insert(name, value);
    }
    env.retain(|_, value| !value.is_null());

    let mut environment = if value_from_entries.is_empty() {
        ConfiguredEnv::Mapping(env)
    } else {
        let mut list: Vec<Value> = env
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        list.extend(value_from_entries);
        ConfiguredEnv::List(list)
    };
    configure_eviction_handling(&mut environment, backoff_limit);
    environment
}

/// Python's `backoffLimit == 0` (also true for `0.0` and `false`).
fn is_zero(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Number(number)) => number.as_f64() == Some(0.0),
        Some(Value::Bool(false)) => true,
        _ => false,
    }
}

fn is_truthy_text(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::String(text)) => !text.is_empty(),
        Some(_) => true,
    }
}

fn configure_eviction_handling(environment: &mut ConfiguredEnv, backoff_limit: Option<&Value>) {
    let reschedule = is_zero(backoff_limit);
    match environment {
        ConfiguredEnv::Mapping(env) => {
            if reschedule {
                if !is_truthy_text(env.get(SIGTERM_BEHAVIOR)) {
                    env.insert(SIGTERM_BEHAVIOR.into(), Value::String("reschedule".into()));
                }
            } else {
                env.insert(SIGTERM_BEHAVIOR.into(), Value::String("relinquish".into()));
            }
        }
        ConfiguredEnv::List(items) => {
            let present = items
                .iter()
                .any(|item| item.get("name").and_then(Value::as_str) == Some(SIGTERM_BEHAVIOR));
            if reschedule {
                if !present {
                    items.push(json!({"name": SIGTERM_BEHAVIOR, "value": "reschedule"}));
                }
            } else {
                items.retain(|item| {
                    item.get("name").and_then(Value::as_str) != Some(SIGTERM_BEHAVIOR)
                });
                items.push(json!({"name": SIGTERM_BEHAVIOR, "value": "relinquish"}));
            }
        }
    }
}

/// The container `env` list: the generated entries, then the entries of an env
/// list hard-coded in the template whose names were not generated.
pub fn container_env_list(
    environment: ConfiguredEnv,
    template_env: Option<&Value>,
    field: &str,
) -> Result<Vec<Value>, ManifestError> {
    let generated: Vec<Value> = match environment {
        ConfiguredEnv::Mapping(env) => env
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
        ConfiguredEnv::List(items) => items,
    };
    let Some(Value::Array(template_items)) = template_env else {
        return Ok(generated);
    };
    let mut generated_names = Vec::with_capacity(generated.len());
    for (index, item) in generated.iter().enumerate() {
        match item.get("name").and_then(Value::as_str) {
            Some(name) => generated_names.push(name.to_string()),
            None => {
                return Err(ManifestError::Template {
                    field: format!("job_configuration.env[{index}]"),
                    reason: "every env entry needs a string `name`".into(),
                })
            }
        }
    }
    let mut combined = generated;
    for (index, item) in template_items.iter().enumerate() {
        if !item.is_object() {
            return Err(ManifestError::Template {
                field: format!("{field}[{index}]"),
                reason: "env entries must be objects with a `name`".into(),
            });
        }
        let name = item.get("name").and_then(Value::as_str);
        if !name.is_some_and(|name| generated_names.iter().any(|generated| generated == name)) {
            combined.push(item.clone());
        }
    }
    Ok(combined)
}

/// Replaces the entries named `PREFECT_API_KEY` / `PREFECT_API_AUTH_STRING` by
/// `valueFrom.secretKeyRef` when the settings say so.
pub fn apply_secret_references(env: &mut [Value], settings: &ForwardedSettings) {
    for (name, secret) in [
        (API_KEY, &settings.api_key),
        (API_AUTH_STRING, &settings.api_auth_string),
    ] {
        let Some(ForwardedSecret::SecretKeyRef {
            name: secret_name,
            key,
        }) = secret
        else {
            continue;
        };
        for entry in env.iter_mut() {
            if entry.get("name").and_then(Value::as_str) == Some(name) {
                *entry = json!({
                    "name": name,
                    "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::DeploymentContext;
    use uuid::Uuid;

    fn flow_run(with_deployment: bool) -> FlowRunContext {
        FlowRunContext {
            flow_run_id: Uuid::from_u128(1),
            flow_run_name: "crimson-otter".into(),
            flow_id: Uuid::from_u128(2),
            flow_name: "my-flow".into(),
            deployment: with_deployment.then(|| DeploymentContext {
                id: Uuid::from_u128(3),
                name: "dep".into(),
                updated: None,
            }),
            work_pool_name: "pool".into(),
            work_pool_id: Uuid::from_u128(4),
            worker_name: "worker-1".into(),
            worker_id: None,
        }
    }

    fn settings() -> ForwardedSettings {
        ForwardedSettings {
            api_url: Some("http://prefect:4200/api".into()),
            api_key: Some(ForwardedSecret::Value("key".into())),
            api_auth_string: None,
            extra_env: vec![],
        }
    }

    fn names(environment: &ConfiguredEnv) -> Vec<String> {
        match environment {
            ConfiguredEnv::Mapping(env) => env.keys().cloned().collect(),
            ConfiguredEnv::List(items) => items
                .iter()
                .map(|item| item["name"].as_str().expect("name").to_string())
                .collect(),
        }
    }

    fn mapping(value: Value) -> ConfiguredEnv {
        ConfiguredEnv::Mapping(value.as_object().cloned().expect("object"))
    }

    #[test]
    fn order_is_settings_run_attribution_user_then_sigterm() {
        let environment = build_environment(
            mapping(
                json!({"FOO": "bar", "PREFECT_API_URL": "http://override", "GONE": null, "PREFECT_API_KEY": null}),
            ),
            &settings(),
            &flow_run(true),
            Some(&json!(0)),
        );
        assert_eq!(
            names(&environment),
            [
                "PREFECT_API_URL",
                "PREFECT__FLOW_RUN_ID",
                "PREFECT__WORKER_NAME",
                "PREFECT__FLOW_ID",
                "PREFECT__FLOW_NAME",
                "PREFECT__DEPLOYMENT_ID",
                "PREFECT__DEPLOYMENT_NAME",
                "FOO",
                SIGTERM_BEHAVIOR
            ]
        );
        let ConfiguredEnv::Mapping(env) = environment else {
            panic!("mapping expected")
        };
        assert_eq!(env[API_URL], "http://override");
        assert_eq!(env[SIGTERM_BEHAVIOR], "reschedule");
    }

    #[test]
    fn sigterm_behavior_rules() {
        let user_set = build_environment(
            mapping(json!({SIGTERM_BEHAVIOR: "exit"})),
            &settings(),
            &flow_run(false),
            Some(&json!(0)),
        );
        let ConfiguredEnv::Mapping(env) = user_set else {
            panic!()
        };
        assert_eq!(env[SIGTERM_BEHAVIOR], "exit");

        for backoff in [Some(json!(3)), None] {
            let forced = build_environment(
                mapping(json!({SIGTERM_BEHAVIOR: "exit"})),
                &settings(),
                &flow_run(false),
                backoff.as_ref(),
            );
            let ConfiguredEnv::Mapping(env) = forced else {
                panic!()
            };
            assert_eq!(env[SIGTERM_BEHAVIOR], "relinquish");
        }
    }

    #[test]
    fn list_env_keeps_value_from_entries() {
        let environment = build_environment(
            ConfiguredEnv::List(vec![
                json!({"name": "PLAIN", "value": "1"}),
                json!({"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
            ]),
            &settings(),
            &flow_run(false),
            Some(&json!(2)),
        );
        let names = names(&environment);
        assert_eq!(names.last().map(String::as_str), Some(SIGTERM_BEHAVIOR));
        assert!(names.contains(&"PLAIN".to_string()));
        assert_eq!(names.iter().filter(|n| *n == "SECRET").count(), 1);
    }

    #[test]
    fn template_env_list_is_appended_without_duplicates() {
        let env = container_env_list(
            mapping(json!({"A": "1", "B": "2"})),
            Some(
                &json!([{"name": "B", "value": "template"}, {"name": "C", "valueFrom": {"x": 1}}]),
            ),
            "containers[0].env",
        )
        .expect("combined");
        assert_eq!(
            Value::Array(env),
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "valueFrom": {"x": 1}}])
        );
    }

    #[test]
    fn secret_references_replace_values_by_name() {
        let mut env = vec![
            json!({"name": API_KEY, "value": ""}),
            json!({"name": "OTHER", "value": "x"}),
        ];
        let settings = ForwardedSettings {
            api_key: Some(ForwardedSecret::SecretKeyRef {
                name: "prefect-api".into(),
                key: "key".into(),
            }),
            ..Default::default()
        };
        apply_secret_references(&mut env, &settings);
        assert_eq!(
            env[0],
            json!({"name": API_KEY, "valueFrom": {"secretKeyRef": {"name": "prefect-api", "key": "key"}}})
        );
        assert_eq!(env[1], json!({"name": "OTHER", "value": "x"}));
    }
}
