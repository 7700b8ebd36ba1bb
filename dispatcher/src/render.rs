//! The Job manifest for a due flow run: the work pool's base job template
//! (cached), the deployment's and run's job variables from the message, and
//! the agent-wide options, rendered by `job-manifest` exactly as
//! prefect-kubernetes 0.8 would, under a name derived from the claim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_run_proto::kubernetes::{
    CLAIM_ANNOTATION, POD_WATCH_TIMEOUT_ANNOTATION, SCALE_UP_TIMEOUT_ANNOTATION,
    SCALE_UP_TIMEOUT_VARIABLE,
};
use flow_run_proto::{FlowRunDue, InfrastructurePid, SubmissionKey};
use job_manifest::{
    AgentDefaults, DeploymentContext, FlowRunContext, ForwardedSecret, ForwardedSettings,
};
use prefect_client::PrefectClient;
use serde_json::Value;
use uuid::Uuid;

use crate::config::{parse_pairs, DispatcherConfig};

/// A rendered Job and where it goes.
#[derive(Debug, Clone)]
pub struct RenderedJob {
    pub pid: InfrastructurePid,
    pub manifest: Value,
}

/// Why a Job could not be rendered.
#[derive(Debug)]
pub enum RenderFailure {
    /// The job variables or template are wrong: the user must fix them.
    Invalid(String),
    /// The template could not be read now; try again.
    Transient(String),
}

/// Renders Jobs for one work pool.
pub struct JobRenderer {
    prefect: PrefectClient,
    work_pool: String,
    worker_name: String,
    defaults: AgentDefaults,
    settings: ForwardedSettings,
    cache_ttl: Duration,
    /// The pool's base job template and when it was read.
    template: tokio::sync::Mutex<Option<(Instant, Arc<Value>)>>,
}

impl JobRenderer {
    /// Validates the agent-wide options once, at start.
    pub fn new(prefect: PrefectClient, config: &DispatcherConfig) -> Result<JobRenderer, String> {
        let job = &config.job;
        let defaults = AgentDefaults {
            namespace: job.namespace.clone(),
            env: parse_pairs("--env", &job.env)?,
            image_pull_secrets: job
                .image_pull_secrets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            service_account_name: job.service_account_name.clone(),
            image_pull_policy: job.image_pull_policy.clone(),
            cpu_request: job.cpu_request.clone(),
            cpu_limit: job.cpu_limit.clone(),
            memory_request: job.memory_request.clone(),
            memory_limit: job.memory_limit.clone(),
            labels: parse_pairs("--job-label", &job.labels)?,
        };
        defaults.validate().map_err(|e| e.to_string())?;
        let api_key = match &job.api_key_secret {
            Some(reference) => {
                let (name, key) = reference
                    .split_once(':')
                    .unwrap_or((reference.as_str(), "value"));
                Some(ForwardedSecret::SecretKeyRef {
                    name: name.to_string(),
                    key: key.to_string(),
                })
            }
            None => config
                .credentials
                .api_key
                .clone()
                .map(ForwardedSecret::Value),
        };
        let settings = ForwardedSettings {
            api_url: Some(
                job.flow_api_url
                    .clone()
                    .unwrap_or_else(|| prefect.api_url().to_string()),
            ),
            api_key,
            api_auth_string: config
                .credentials
                .auth_string
                .clone()
                .map(ForwardedSecret::Value),
            extra_env: Vec::new(),
        };
        Ok(JobRenderer {
            prefect,
            work_pool: config.work_pool.clone(),
            worker_name: config.worker_name.clone(),
            defaults,
            settings,
            cache_ttl: Duration::from_secs(config.template_cache_seconds),
            template: tokio::sync::Mutex::new(None),
        })
    }

    /// The pool's base job template, read at most once per cache period.
    async fn base_job_template(&self) -> Result<Arc<Value>, RenderFailure> {
        let mut cached = self.template.lock().await;
        if let Some((read_at, template)) = cached.as_ref() {
            if read_at.elapsed() < self.cache_ttl {
                return Ok(template.clone());
            }
        }
        let pool = self
            .prefect
            .read_work_pool(&self.work_pool)
            .await
            .map_err(|e| {
                RenderFailure::Transient(format!("reading work pool {}: {e}", self.work_pool))
            })?;
        let template = Arc::new(pool.base_job_template);
        *cached = Some((Instant::now(), template.clone()));
        Ok(template)
    }

    /// Renders the Job for a message, named after its submission key and
    /// annotated with it (and the reporter's pod-watch and scale-up limits).
    pub async fn render(
        &self,
        due: &FlowRunDue,
        key: &SubmissionKey,
    ) -> Result<RenderedJob, RenderFailure> {
        let template = self.base_job_template().await?;
        let invalid = |what: &str, e: String| RenderFailure::Invalid(format!("{what}: {e}"));
        let deployment_variables: Value = serde_json::from_str(&due.deployment_job_variables_json)
            .map_err(|e| invalid("the deployment's job variables are not JSON", e.to_string()))?;
        let run_variables: Value = serde_json::from_str(&due.flow_run_job_variables_json)
            .map_err(|e| invalid("the flow run's job variables are not JSON", e.to_string()))?;
        let context = flow_run_context(due, &self.worker_name).map_err(RenderFailure::Invalid)?;
        let name_base =
            job_manifest::job_name_base(&deployment_variables, &run_variables, &context);
        let job_name = job_manifest::job_name(&name_base, &key.job_name_suffix());
        let mut annotations = vec![(CLAIM_ANNOTATION.to_string(), key.claim_annotation())];
        if let Some(seconds) = pod_watch_timeout(&template, &deployment_variables, &run_variables) {
            annotations.push((
                POD_WATCH_TIMEOUT_ANNOTATION.to_string(),
                seconds.to_string(),
            ));
        }
        if let Some(seconds) = scale_up_timeout(&template, &deployment_variables, &run_variables)
            .map_err(RenderFailure::Invalid)?
        {
            annotations.push((SCALE_UP_TIMEOUT_ANNOTATION.to_string(), seconds.to_string()));
        }
        let request = job_manifest::RenderRequest {
            base_job_template: &template,
            deployment_job_variables: &deployment_variables,
            flow_run_job_variables: &run_variables,
            flow_run: &context,
            agent_defaults: &self.defaults,
            settings: &self.settings,
            job_name: &job_name,
            extra_labels: &[],
            extra_annotations: &annotations,
        };
        let rendered = job_manifest::render_job_manifest(&request)
            .map_err(|e| RenderFailure::Invalid(e.to_string()))?;
        Ok(RenderedJob {
            pid: rendered.infrastructure_pid(),
            manifest: rendered.manifest,
        })
    }
}

/// The `pod_watch_timeout_seconds` job variable: the run's, the
/// deployment's, or the template's default.
fn pod_watch_timeout(template: &Value, deployment: &Value, run: &Value) -> Option<u64> {
    let key = "pod_watch_timeout_seconds";
    [run, deployment]
        .iter()
        .find_map(|vars| vars.get(key))
        .or_else(|| template.pointer(&format!("/variables/properties/{key}/default")))
        .and_then(Value::as_u64)
}

/// The `scale_up_timeout_seconds` job variable (the run's, the deployment's,
/// or the template's default): a whole number of seconds, `0` for no limit.
/// Anything else is refused with a message naming the variable, as the run's
/// crash message says it.
fn scale_up_timeout(
    template: &Value,
    deployment: &Value,
    run: &Value,
) -> Result<Option<u64>, String> {
    let key = SCALE_UP_TIMEOUT_VARIABLE;
    let Some(value) = [run, deployment]
        .iter()
        .find_map(|vars| vars.get(key))
        .or_else(|| template.pointer(&format!("/variables/properties/{key}/default")))
        .filter(|value| !value.is_null())
    else {
        return Ok(None);
    };
    let seconds = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.trim().parse::<u64>().ok(),
        _ => None,
    };
    seconds.map(Some).ok_or_else(|| {
        format!(
            "job variable {key} must be a whole number of seconds (0 for no limit), got {value}"
        )
    })
}

/// The flow run's identity for labels and env, from the message.
fn flow_run_context(due: &FlowRunDue, worker_name: &str) -> Result<FlowRunContext, String> {
    let uuid = |field: &str, text: &str| {
        Uuid::parse_str(text)
            .map_err(|e| format!("{field} {text:?} in the message is not a UUID: {e}"))
    };
    let deployment = if due.deployment_id.is_empty() {
        None
    } else {
        Some(DeploymentContext {
            id: uuid("deployment_id", &due.deployment_id)?,
            name: due.deployment_name.clone(),
            updated: chrono::DateTime::parse_from_rfc3339(&due.deployment_updated)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
        })
    };
    Ok(FlowRunContext {
        flow_run_id: uuid("flow_run_id", &due.flow_run_id)?,
        flow_run_name: due.flow_run_name.clone(),
        flow_id: uuid("flow_id", &due.flow_id)?,
        flow_name: due.flow_name.clone(),
        deployment,
        work_pool_name: due.work_pool_name.clone(),
        work_pool_id: if due.work_pool_id.is_empty() {
            Uuid::nil()
        } else {
            uuid("work_pool_id", &due.work_pool_id)?
        },
        worker_name: worker_name.to_string(),
        worker_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_watch_timeout_comes_from_run_deployment_or_template() {
        let template =
            json!({"variables": {"properties": {"pod_watch_timeout_seconds": {"default": 60}}}});
        assert_eq!(
            pod_watch_timeout(&template, &json!({}), &json!({})),
            Some(60)
        );
        let deployment = json!({"pod_watch_timeout_seconds": 120});
        assert_eq!(
            pod_watch_timeout(&template, &deployment, &json!({})),
            Some(120)
        );
        let run = json!({"pod_watch_timeout_seconds": 5});
        assert_eq!(pod_watch_timeout(&template, &deployment, &run), Some(5));
        assert_eq!(pod_watch_timeout(&json!({}), &json!({}), &json!({})), None);
    }

    #[test]
    fn scale_up_timeout_comes_from_run_deployment_or_template_and_must_be_seconds() {
        let template =
            json!({"variables": {"properties": {"scale_up_timeout_seconds": {"default": 1200}}}});
        let none = json!({});
        assert_eq!(scale_up_timeout(&none, &none, &none), Ok(None));
        assert_eq!(scale_up_timeout(&template, &none, &none), Ok(Some(1200)));
        let deployment = json!({"scale_up_timeout_seconds": 600});
        assert_eq!(
            scale_up_timeout(&template, &deployment, &none),
            Ok(Some(600))
        );
        let run = json!({"scale_up_timeout_seconds": "0"});
        assert_eq!(scale_up_timeout(&template, &deployment, &run), Ok(Some(0)));
        let null = json!({"scale_up_timeout_seconds": null});
        assert_eq!(scale_up_timeout(&none, &null, &none), Ok(None));
        for bad in [json!(-5), json!(2.5), json!("ten minutes"), json!(true)] {
            let run = json!({ "scale_up_timeout_seconds": bad });
            let error = scale_up_timeout(&none, &none, &run).unwrap_err();
            assert!(
                error.contains("scale_up_timeout_seconds must be a whole number of seconds"),
                "{error}"
            );
            assert!(error.contains(&bad.to_string()), "{error}");
        }
    }
}
