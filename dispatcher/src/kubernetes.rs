//! Creating a flow run's Job, idempotently.
//!
//! The manifest is sent as rendered JSON (not through typed structs), so what
//! reaches the API server is exactly what prefect-kubernetes would send. The
//! Job's name is derived from the claim, so creating it again after a crash
//! or a redelivery answers 409 AlreadyExists; a Job of that name carrying our
//! flow run's label is then our own Job and counts as created.

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;

/// The label every Job and pod of a flow run carries.
pub const FLOW_RUN_ID_LABEL: &str = "prefect.io/flow-run-id";

/// How creating the Job went, in the terms the dispatcher acts on.
#[derive(Debug)]
pub enum CreateError {
    /// Kubernetes refused the Job for good (invalid spec, missing namespace,
    /// quota, forbidden): the run is Crashed with this message.
    Rejected(String),
    /// Worth retrying later (429, 5xx, timeouts, connection errors).
    Transient(String),
}

/// Creates the Job, or recognises it as already created by us.
pub async fn create_job(
    client: &kube::Client,
    namespace: &str,
    manifest: &serde_json::Value,
    flow_run_id: &str,
) -> Result<CreatedJob, CreateError> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("batch", "v1", "Job"));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object: DynamicObject = serde_json::from_value(manifest.clone()).map_err(|e| {
        CreateError::Rejected(format!("the rendered Job is not a Kubernetes object: {e}"))
    })?;
    let name = object.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(CreatedJob {
            name: created.metadata.name.unwrap_or(name),
            already_existed: false,
        }),
        Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "AlreadyExists" => {
            // Ours from an earlier attempt, or a foreign Job with our name.
            match api.get(&name).await {
                Ok(existing) => {
                    let owner = existing
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(FLOW_RUN_ID_LABEL))
                        .map(String::as_str);
                    if owner == Some(flow_run_id) {
                        Ok(CreatedJob {
                            name,
                            already_existed: true,
                        })
                    } else {
                        Err(CreateError::Rejected(format!(
                            "a Job named {namespace}/{name} already exists and belongs to another flow run ({})",
                            owner.unwrap_or("no flow run label")
                        )))
                    }
                }
                // Deleted in between, or unreadable: try again later.
                Err(e) => Err(CreateError::Transient(format!(
                    "reading existing Job {namespace}/{name}: {e}"
                ))),
            }
        }
        Err(error) => Err(classify(error)),
    }
}

/// The Job that now exists for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedJob {
    pub name: String,
    /// It had been created by an earlier delivery of the same claim.
    pub already_existed: bool,
}

/// Sorts a failed create into "tell the user" and "try again".
pub fn classify(error: kube::Error) -> CreateError {
    match error {
        kube::Error::Api(status) => {
            let code = status.code;
            if code == 429 || code >= 500 || code == 408 {
                return CreateError::Transient(format!(
                    "Kubernetes answered {code} {}: {}",
                    status.reason, status.message
                ));
            }
            let mut message = format!(
                "Kubernetes rejected the Job ({code} {}): {}",
                status.reason, status.message
            );
            if let Some(causes) = status.details.as_ref().map(|d| &d.causes) {
                let fields: Vec<String> = causes
                    .iter()
                    .filter(|c| !c.field.is_empty() && !status.message.contains(&c.field))
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect();
                if !fields.is_empty() {
                    message.push_str(&format!(" [{}]", fields.join("; ")));
                }
            }
            match code {
                404 => message.push_str(". Hint: does the namespace exist?"),
                403 => message.push_str(". Hint: the dispatcher's service account needs permission to create jobs in this namespace."),
                _ if status.message.contains("exceeded quota") => {
                    message.push_str(". Hint: a ResourceQuota in the namespace is full.")
                }
                _ => {}
            }
            CreateError::Rejected(message)
        }
        other => CreateError::Transient(format!("reaching Kubernetes: {other}")),
    }
}
