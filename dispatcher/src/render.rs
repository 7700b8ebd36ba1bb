//! The Job manifest for a due flow run: the work pool's base job template
//! (cached), the deployment's and run's job variables *as Prefect has them*
//! (read at claim time, never taken from the NATS message), and the
//! agent-wide options, rendered by `job-manifest` exactly as
//! prefect-kubernetes 0.8 would, under a name derived from the claim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_run_proto::kubernetes::{
    CLAIM_ANNOTATION, FLOW_RUN_ID_LABEL, POD_WATCH_TIMEOUT_ANNOTATION, RESERVED_PREFIX,
    SCALE_UP_TIMEOUT_ANNOTATION, SCALE_UP_TIMEOUT_VARIABLE, WORK_POOL_NAME_LABEL,
};
use flow_run_proto::{InfrastructurePid, SubmissionKey};
use job_manifest::{
    AgentDefaults, DeploymentContext, FlowRunContext, ForwardedSecret, ForwardedSettings,
};
use prefect_client::PrefectClient;
use prefect_client::{Deployment, FlowRun};
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
    reserved_service_accounts: Vec<String>,
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
        let settings = ForwardedSettings {
            api_url: Some(flow_api_url(&prefect, job.flow_api_url.as_deref())?),
            api_key: forwarded_secret(
                "PREFECT_API_KEY",
                "--api-key-secret",
                job.api_key_secret.as_deref(),
                config.credentials.api_key.is_some(),
            )?,
            api_auth_string: forwarded_secret(
                "PREFECT_API_AUTH_STRING",
                "--api-auth-string-secret",
                job.api_auth_string_secret.as_deref(),
                config.credentials.auth_string.is_some(),
            )?,
            extra_env: config.forwarded_settings.clone(),
        };
        Ok(JobRenderer {
            prefect,
            work_pool: config.pool.work_pool.clone(),
            worker_name: config.pool.worker_name.clone(),
            defaults,
            settings,
            reserved_service_accounts: config.reserved_service_accounts.clone(),
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

    /// Renders the Job of a run, named after its submission key and
    /// annotated with it (and the reporter's pod-watch and scale-up limits).
    pub async fn render(
        &self,
        inputs: &RunInputs<'_>,
        key: &SubmissionKey,
    ) -> Result<RenderedJob, RenderFailure> {
        let template = self.base_job_template().await?;
        let deployment_variables = inputs
            .deployment
            .map_or(Value::Object(Default::default()), |d| {
                d.job_variables.clone()
            });
        let run_variables = inputs.run.job_variables.clone().unwrap_or(Value::Null);
        let context = flow_run_context(inputs, &self.work_pool, &self.worker_name);
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
        let identity = [
            (FLOW_RUN_ID_LABEL, context.flow_run_id.to_string()),
            (
                WORK_POOL_NAME_LABEL,
                job_manifest::slugify_label_value(&context.work_pool_name),
            ),
        ];
        guard(
            &rendered.manifest,
            &self.reserved_service_accounts,
            &identity,
        )
        .map_err(RenderFailure::Invalid)?;
        Ok(RenderedJob {
            pid: rendered.infrastructure_pid(),
            manifest: rendered.manifest,
        })
    }
}

/// Refuses a Job that would run a flow with the agent's identity: one of the
/// agent's ServiceAccounts, or a label with the agent's reserved prefix (by
/// which its own pods are selected, e.g. for NATS access); and one whose
/// `identity` labels (the run and the pool the reporter finds the Job by) are
/// missing or changed, which would hide it from cancellation or tie it to
/// another run. Checked on the rendered manifest, whatever set them (job
/// variables or base job template).
pub fn guard(
    manifest: &Value,
    reserved_accounts: &[String],
    identity: &[(&str, String)],
) -> Result<(), String> {
    let pod_spec = &manifest["spec"]["template"]["spec"];
    for field in ["serviceAccountName", "serviceAccount"] {
        if let Some(account) = pod_spec[field].as_str() {
            if reserved_accounts.iter().any(|reserved| reserved == account) {
                return Err(format!(
                    "service_account_name {account:?} is one of the agent's own ServiceAccounts \
                     ({}): flow runs may not run with the agent's permissions",
                    reserved_accounts.join(", ")
                ));
            }
        }
    }
    let label_maps = [
        &manifest["metadata"]["labels"],
        &manifest["spec"]["template"]["metadata"]["labels"],
    ];
    for labels in label_maps {
        let reserved = labels
            .as_object()
            .into_iter()
            .flat_map(|map| map.keys())
            .find(|key| key.starts_with(RESERVED_PREFIX));
        if let Some(key) = reserved {
            return Err(format!(
                "label {key:?} (from the labels job variable or the base job template): the \
                 {RESERVED_PREFIX} prefix is reserved for the agent's own pods"
            ));
        }
        for (key, expected) in identity {
            let value = labels.get(*key).and_then(Value::as_str);
            if value != Some(expected.as_str()) {
                return Err(format!(
                    "label {key:?} is {value:?} (from the labels job variable or the base job \
                     template): the agent sets it to {expected:?}, the flow run and work pool \
                     the Job belongs to, and it may not be changed"
                ));
            }
        }
    }
    Ok(())
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

/// The default key of a Secret named without one (as the prefect-worker Helm
/// chart names it).
pub const DEFAULT_SECRET_KEY: &str = "key";

/// A credential for flow pods: only ever a reference to a Secret
/// (`NAME[:KEY]`), never its value in the Job. A dispatcher that has the
/// credential but no Secret to give flows refuses to start, rather than
/// writing it into every Job in plain text.
fn forwarded_secret(
    variable: &str,
    flag: &str,
    reference: Option<&str>,
    have_value: bool,
) -> Result<Option<ForwardedSecret>, String> {
    match reference.filter(|r| !r.is_empty()) {
        Some(reference) => {
            let (name, key) = reference
                .split_once(':')
                .unwrap_or((reference, DEFAULT_SECRET_KEY));
            if name.is_empty() || key.is_empty() {
                return Err(format!(
                    "{flag} expects NAME or NAME:KEY, got {reference:?}"
                ));
            }
            Ok(Some(ForwardedSecret::SecretKeyRef {
                name: name.to_string(),
                key: key.to_string(),
            }))
        }
        None if have_value => Err(format!(
            "{variable} is set, so flow pods need it too, but only from a Kubernetes Secret: \
             set {flag} NAME[:KEY] (the Secret holding it; key `{DEFAULT_SECRET_KEY}` by default). \
             It is never written into Jobs in plain text."
        )),
        None => Ok(None),
    }
}

/// The Prefect API URL flow pods get: `--flow-api-url`, else the dispatcher's
/// own, which may not carry credentials (they would be in every Job's env).
fn flow_api_url(prefect: &PrefectClient, flow_api_url: Option<&str>) -> Result<String, String> {
    if let Some(url) = flow_api_url.filter(|url| !url.is_empty()) {
        let parsed = reqwest_url(url)?;
        if prefect_client::url_has_credentials(&parsed) {
            return Err("--flow-api-url may not carry credentials (use a Secret)".into());
        }
        return Ok(url.to_string());
    }
    if prefect_client::url_has_credentials(prefect.api_url()) {
        return Err(format!(
            "the Prefect API URL {} carries credentials, which flow pods would get in plain \
             text: set --flow-api-url to the URL without them",
            prefect.redacted_api_url()
        ));
    }
    Ok(prefect.api_url().to_string())
}

fn reqwest_url(text: &str) -> Result<prefect_client::Url, String> {
    prefect_client::Url::parse(text).map_err(|e| format!("--flow-api-url is not a URL: {e}"))
}

/// What a run's Job is rendered from, as read from Prefect at claim time.
pub struct RunInputs<'a> {
    pub run: &'a FlowRun,
    /// `None` for a run without a deployment.
    pub deployment: Option<&'a Deployment>,
    pub flow_name: &'a str,
}

/// The flow run's identity for labels and env.
fn flow_run_context(inputs: &RunInputs<'_>, work_pool: &str, worker_name: &str) -> FlowRunContext {
    let run = inputs.run;
    FlowRunContext {
        flow_run_id: run.id,
        flow_run_name: run.name.clone(),
        flow_id: run.flow_id,
        flow_name: inputs.flow_name.to_string(),
        deployment: inputs.deployment.map(|deployment| DeploymentContext {
            id: deployment.id,
            name: deployment.name.clone(),
            updated: deployment.updated,
        }),
        work_pool_name: run
            .work_pool_name
            .clone()
            .unwrap_or_else(|| work_pool.to_string()),
        work_pool_id: run.work_pool_id.unwrap_or_else(Uuid::nil),
        worker_name: worker_name.to_string(),
        worker_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reserved() -> Vec<String> {
        flow_run_proto::kubernetes::AGENT_SERVICE_ACCOUNTS
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn flows_may_not_run_as_the_agent() {
        let job = |account: &str| {
            json!({"metadata": {"labels": {"team": "data"}},
                   "spec": {"template": {"spec": {"serviceAccountName": account}}}})
        };
        assert!(guard(&job("flow-runner"), &reserved(), &[]).is_ok());
        let refused = guard(&job("prefect-k8s-dispatcher"), &reserved(), &[]).unwrap_err();
        assert!(refused.contains("\"prefect-k8s-dispatcher\""), "{refused}");
        assert!(refused.contains("agent's own ServiceAccounts"), "{refused}");
        let legacy =
            json!({"spec": {"template": {"spec": {"serviceAccount": "prefect-k8s-reporter"}}}});
        assert!(guard(&legacy, &reserved(), &[]).is_err());
    }

    #[test]
    fn flows_may_not_carry_the_agents_labels() {
        let reserved_label = json!({"prefect-k8s.io/component": "dispatcher"});
        let on_job = json!({"metadata": {"labels": reserved_label}, "spec": {}});
        let on_pod = json!({"spec": {"template": {"metadata": {"labels": reserved_label}}}});
        for job in [on_job, on_pod] {
            let refused = guard(&job, &reserved(), &[]).unwrap_err();
            assert!(refused.contains("prefect-k8s.io/component"), "{refused}");
        }
        // The run and pool labels are the agent's: changed (or dropped), the
        // Job would escape cancellation or speak for another run.
        let identity = [("prefect.io/flow-run-id", "run-1".to_string())];
        let labelled = |value: &str| {
            json!({"metadata": {"labels": {"prefect.io/flow-run-id": value}},
                   "spec": {"template": {"metadata": {"labels": {"prefect.io/flow-run-id": "run-1"}}}}})
        };
        assert!(guard(&labelled("run-1"), &reserved(), &identity).is_ok());
        let refused = guard(&labelled("victim"), &reserved(), &identity).unwrap_err();
        assert!(
            refused.contains("\"victim\"") && refused.contains("\"run-1\""),
            "{refused}"
        );
        let dropped = json!({"metadata": {"labels": {"prefect.io/flow-run-id": "run-1"}}});
        assert!(
            guard(&dropped, &reserved(), &identity).is_err(),
            "the pod's labels lack it"
        );
    }

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
