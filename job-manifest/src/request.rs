//! What a caller hands the renderer: the flow run's identity, the agent-wide
//! defaults (the seed agent's `--namespace`, `--env`, `--image-pull-secrets`, ...)
//! and the Prefect settings to forward into the Job's environment.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::error::ManifestError;
use crate::kubernetes_names::{
    check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value,
};
use crate::quantity::check_resource_quantity;

/// The deployment a flow run was created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentContext {
    pub id: Uuid,
    pub name: String,
    /// The deployment's `updated` timestamp (label `prefect.io/deployment-updated`).
    pub updated: Option<DateTime<Utc>>,
}

/// Identity of the flow run being submitted, and of who submits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRunContext {
    pub flow_run_id: Uuid,
    pub flow_run_name: String,
    pub flow_id: Uuid,
    pub flow_name: String,
    /// `None` for a flow run without a deployment.
    pub deployment: Option<DeploymentContext>,
    pub work_pool_name: String,
    pub work_pool_id: Uuid,
    pub worker_name: String,
    /// The worker's backend id, when the worker registered one (`PREFECT__WORKER_ID`).
    pub worker_id: Option<Uuid>,
}

/// Agent-wide defaults (the seed agent's options). Each one applies only when
/// the deployment's and the flow run's job variables do not set the same thing:
/// the scalar ones act as the default of the work pool variable of the same name,
/// `env` and `labels` are merged key by key under the job variables, and the
/// image pull secrets go to the pod's `imagePullSecrets` unless the rendered
/// manifest already has that field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentDefaults {
    /// Default for the `namespace` variable.
    pub namespace: Option<String>,
    /// Environment variables for every flow run container, in this order.
    pub env: Vec<(String, String)>,
    /// Secret names for `spec.template.spec.imagePullSecrets`.
    pub image_pull_secrets: Vec<String>,
    /// Default for the `service_account_name` variable.
    pub service_account_name: Option<String>,
    /// Default for the `image_pull_policy` variable (`Always`, `IfNotPresent`, `Never`).
    pub image_pull_policy: Option<String>,
    /// Default for the `cpu_request` variable.
    pub cpu_request: Option<String>,
    /// Default for the `cpu_limit` variable.
    pub cpu_limit: Option<String>,
    /// Default for the `memory_request` variable.
    pub memory_request: Option<String>,
    /// Default for the `memory_limit` variable.
    pub memory_limit: Option<String>,
    /// Labels for every Job and pod, below the `labels` job variable.
    pub labels: Vec<(String, String)>,
}

/// Allowed values of `imagePullPolicy`.
pub const IMAGE_PULL_POLICIES: [&str; 3] = ["IfNotPresent", "Always", "Never"];

impl AgentDefaults {
    /// Checks every option with the same rules as job variables, so a dispatcher
    /// can refuse a bad configuration at start-up. Errors name the option
    /// (`agent.cpu_request`, `agent.namespace`, ...).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if let Some(namespace) = &self.namespace {
            check_dns1123_label("namespace", namespace)
                .map_err(|err| err.into_agent_option("agent.namespace"))?;
        }
        if let Some(account) = &self.service_account_name {
            check_dns1123_subdomain("service_account_name", account)
                .map_err(|err| err.into_agent_option("agent.service_account_name"))?;
        }
        if let Some(policy) = &self.image_pull_policy {
            if !IMAGE_PULL_POLICIES.contains(&policy.as_str()) {
                return Err(ManifestError::AgentOption {
                    field: "agent.image_pull_policy".into(),
                    reason: format!(
                        "{policy:?} is not one of {}",
                        IMAGE_PULL_POLICIES.join(", ")
                    ),
                });
            }
        }
        for secret in &self.image_pull_secrets {
            check_dns1123_subdomain("image_pull_secrets", secret)
                .map_err(|err| err.into_agent_option("agent.image_pull_secrets"))?;
        }
        for (option, value) in [
            ("agent.cpu_request", &self.cpu_request),
            ("agent.cpu_limit", &self.cpu_limit),
            ("agent.memory_request", &self.memory_request),
            ("agent.memory_limit", &self.memory_limit),
        ] {
            if let Some(value) = value {
                check_resource_quantity(option, &Value::String(value.clone()))
                    .map_err(|err| err.into_agent_option(option))?;
            }
        }
        for (name, _) in &self.env {
            if name.is_empty() || name.contains('=') {
                return Err(ManifestError::AgentOption {
                    field: "agent.env".into(),
                    reason: format!("{name:?} is not a valid environment variable name"),
                });
            }
        }
        for (key, value) in &self.labels {
            check_label_key("agent.labels", key)
                .and_then(|()| check_label_value("agent.labels", key, value))
                .map_err(|err| err.into_agent_option("agent.labels"))?;
        }
        Ok(())
    }
}

/// How a secret Prefect setting reaches the flow run container.
#[derive(Clone, PartialEq, Eq)]
pub enum ForwardedSecret {
    /// Written into the manifest as a plain `value` (what prefect-kubernetes does
    /// without its secret options).
    Value(String),
    /// Written as `valueFrom.secretKeyRef` (prefect-kubernetes'
    /// `..._SECRET_NAME` / `..._SECRET_KEY` settings).
    SecretKeyRef { name: String, key: String },
}

impl fmt::Debug for ForwardedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardedSecret::Value(_) => f.write_str("Value(<redacted>)"),
            ForwardedSecret::SecretKeyRef { name, key } => f
                .debug_struct("SecretKeyRef")
                .field("name", name)
                .field("key", key)
                .finish(),
        }
    }
}

/// The Prefect settings the worker forwards to every flow run container (first
/// in its env, before `PREFECT__FLOW_RUN_ID`). Order: `PREFECT_API_URL`,
/// `PREFECT_API_AUTH_STRING`, `PREFECT_API_KEY` (Prefect's settings order), then
/// `extra_env`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedSettings {
    pub api_url: Option<String>,
    pub api_key: Option<ForwardedSecret>,
    pub api_auth_string: Option<ForwardedSecret>,
    /// Further settings to forward, e.g. `PREFECT_LOGGING_LEVEL`.
    pub extra_env: Vec<(String, String)>,
}

/// Everything [`crate::render_job_manifest`] needs for one flow run.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    /// The work pool's `base_job_template` (`{"job_configuration", "variables"}`).
    pub base_job_template: &'a Value,
    /// The deployment's `job_variables` (object, or `null`).
    pub deployment_job_variables: &'a Value,
    /// The flow run's `job_variables` (object, or `null`); override the deployment's.
    pub flow_run_job_variables: &'a Value,
    pub flow_run: &'a FlowRunContext,
    pub agent_defaults: &'a AgentDefaults,
    pub settings: &'a ForwardedSettings,
    /// `metadata.name` of the Job (replaces prefect-kubernetes' `generateName`);
    /// see [`crate::job_name`].
    pub job_name: &'a str,
    /// Labels put on the Job and its pod template after everything else.
    pub extra_labels: &'a [(String, String)],
    /// Annotations put on the Job and its pod template after everything else
    /// (e.g. `prefect.io/claim-key`).
    pub extra_annotations: &'a [(String, String)],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_agent_defaults_pass() {
        let defaults = AgentDefaults {
            namespace: Some("prefect".into()),
            env: vec![("A".into(), "1".into())],
            image_pull_secrets: vec!["regcred".into()],
            service_account_name: Some("flow-runner".into()),
            image_pull_policy: Some("Always".into()),
            cpu_request: Some("100m".into()),
            cpu_limit: Some("1".into()),
            memory_request: Some("128Mi".into()),
            memory_limit: Some("1Gi".into()),
            labels: vec![("team".into(), "data".into())],
        };
        assert_eq!(defaults.validate(), Ok(()));
    }

    #[test]
    fn invalid_agent_defaults_name_the_option() {
        let cases = [
            (
                AgentDefaults {
                    cpu_request: Some("lots".into()),
                    ..Default::default()
                },
                "agent.cpu_request",
            ),
            (
                AgentDefaults {
                    namespace: Some("Prefect_NS".into()),
                    ..Default::default()
                },
                "agent.namespace",
            ),
            (
                AgentDefaults {
                    image_pull_policy: Some("Sometimes".into()),
                    ..Default::default()
                },
                "agent.image_pull_policy",
            ),
            (
                AgentDefaults {
                    labels: vec![("bad key!".into(), "v".into())],
                    ..Default::default()
                },
                "agent.labels",
            ),
        ];
        for (defaults, field) in cases {
            let err = defaults.validate().expect_err(field);
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn debug_output_hides_secret_values() {
        let settings = ForwardedSettings {
            api_url: Some("http://prefect:4200/api".into()),
            api_key: Some(ForwardedSecret::Value("pnu_secret".into())),
            ..Default::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("pnu_secret"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }
}
