//! The dispatcher's Kubernetes calls, each under a deadline: creating a flow
//! run's Job *suspended*, releasing it (unsuspending) once the run is known
//! to be still ours, and withdrawing (deleting) it when it is not.
//!
//! Why suspended first: a Job created for a run that was cancelled (or
//! crashed) while the create was in flight must never start a pod, because
//! Prefect accepts `Running` on a Cancelled or Crashed run. A suspended Job
//! has no pods; it is released only after a read of the run *that happened
//! after the Job existed* shows the run still claimed. Any cancellation after
//! that read finds the Job and deletes it.
//!
//! The manifest is sent as rendered JSON (not through typed structs), so what
//! reaches the API server is exactly what prefect-kubernetes would send, plus
//! `spec.suspend`. The Job's name is derived from the submission key, so
//! creating it again answers 409 AlreadyExists; a Job of that name carrying
//! our claim annotation is then our own Job.

use std::time::Duration;

use flow_run_proto::kubernetes::{CLAIM_ANNOTATION, FLOW_RUN_ID_LABEL};
use flow_run_proto::{InfrastructurePid, SubmissionKey};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;

/// How creating or releasing the Job went, in the terms the dispatcher acts on.
#[derive(Debug)]
pub enum CreateError {
    /// Kubernetes refused the Job for good (invalid spec, missing namespace,
    /// quota, forbidden): the run is Crashed with this message.
    Rejected(String),
    /// Worth retrying later (429, 5xx, timeouts, connection errors).
    Transient(String),
}

/// Reads and conditional deletes a withdrawal tries before giving up for now.
const WITHDRAW_ATTEMPTS: usize = 3;

/// What [`Jobs::withdraw`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// Deleted while still suspended: it never had a pod.
    Deleted,
    /// Already gone.
    Gone,
    /// Released meanwhile by another delivery: left alone.
    Released,
}

/// The Job that exists for the run after [`Jobs::create_suspended`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingJob {
    /// It had been created by an earlier delivery of the same submission.
    pub already_existed: bool,
    /// It is suspended: it waits for [`Jobs::release`].
    pub suspended: bool,
}

/// Kubernetes calls of one dispatcher, each bounded by `timeout`.
#[derive(Clone)]
pub struct Jobs {
    client: kube::Client,
    timeout: Duration,
}

fn job_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("batch", "v1", "Job"))
}

impl Jobs {
    pub fn new(client: kube::Client, timeout: Duration) -> Self {
        Jobs { client, timeout }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &job_resource())
    }

    async fn bounded<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(CallError::Kube),
            Err(_) => Err(CallError::Deadline(format!(
                "{what}: no answer from Kubernetes within {} s",
                self.timeout.as_secs()
            ))),
        }
    }

    /// Creates the Job suspended at `pid`, or recognises it as already
    /// created for this submission.
    pub async fn create_suspended(
        &self,
        pid: &InfrastructurePid,
        manifest: &serde_json::Value,
        key: &SubmissionKey,
    ) -> Result<ExistingJob, CreateError> {
        let mut object: DynamicObject = serde_json::from_value(manifest.clone()).map_err(|e| {
            CreateError::Rejected(format!("the rendered Job is not a Kubernetes object: {e}"))
        })?;
        object.metadata.name = Some(pid.job_name.clone());
        object.metadata.namespace = Some(pid.namespace.clone());
        set_suspend(&mut object, true);
        let api = self.api(&pid.namespace);
        let created = self
            .bounded(
                "creating the Job",
                api.create(&PostParams::default(), &object),
            )
            .await;
        match created {
            Ok(_) => Ok(ExistingJob {
                already_existed: false,
                suspended: true,
            }),
            Err(CallError::Kube(kube::Error::Api(status)))
                if status.code == 409 && status.reason == "AlreadyExists" =>
            {
                self.existing(pid, key).await
            }
            Err(error) => Err(error.classify()),
        }
    }

    /// A Job of the submission's name that already exists: ours when it
    /// carries the submission's claim (or, for Jobs made before the claim
    /// annotation, the run's label).
    async fn existing(
        &self,
        pid: &InfrastructurePid,
        key: &SubmissionKey,
    ) -> Result<ExistingJob, CreateError> {
        let found = self
            .bounded(
                "reading the existing Job",
                self.api(&pid.namespace).get_opt(&pid.job_name),
            )
            .await
            .map_err(CallError::classify)?;
        // Deleted in between: create again at the next delivery.
        let Some(job) = found else {
            return Err(CreateError::Transient(format!(
                "Job {} was deleted while being created",
                pid
            )));
        };
        let claim = job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CLAIM_ANNOTATION));
        let run = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(FLOW_RUN_ID_LABEL));
        let ours = match claim {
            Some(claim) => *claim == key.claim_annotation(),
            None => run.is_some_and(|run| *run == key.flow_run_id.to_string()),
        };
        if !ours {
            return Err(CreateError::Rejected(format!(
                "a Job named {}/{} already exists and belongs to another submission ({})",
                pid.namespace,
                pid.job_name,
                claim.or(run).map_or("no flow run label", String::as_str)
            )));
        }
        let suspended = job.data["spec"]["suspend"].as_bool() == Some(true);
        Ok(ExistingJob {
            already_existed: true,
            suspended,
        })
    }

    /// Lets the suspended Job start its pod. `Ok(false)`: the Job is gone
    /// (deleted by a cancellation in between).
    pub async fn release(&self, pid: &InfrastructurePid) -> Result<bool, CreateError> {
        let patch = serde_json::json!({"spec": {"suspend": false}});
        let api = self.api(&pid.namespace);
        let patched = self
            .bounded(
                "releasing the Job",
                api.patch(
                    &pid.job_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await;
        match patched {
            Ok(_) => Ok(true),
            Err(CallError::Kube(kube::Error::Api(status))) if status.code == 404 => Ok(false),
            Err(error) => Err(error.classify()),
        }
    }

    /// Deletes a Job that must not run (its run was cancelled or moved on
    /// while it was being created), but only while it is still suspended:
    /// another delivery of the same message may have released it meanwhile,
    /// on a read that found the run ours, and then its pod is the run's (a
    /// fast flow may already be between in-process retries, which looks like
    /// "moved on"). The delete carries the resourceVersion of the read that
    /// saw the Job suspended; a change in between is read again.
    pub async fn withdraw(&self, pid: &InfrastructurePid) -> Result<Withdrawal, CreateError> {
        let api = self.api(&pid.namespace);
        for _ in 0..WITHDRAW_ATTEMPTS {
            let read = self.bounded("reading the Job", api.get_opt(&pid.job_name));
            let Some(job) = read.await.map_err(CallError::classify)? else {
                return Ok(Withdrawal::Gone);
            };
            if job.data["spec"]["suspend"].as_bool() != Some(true) {
                return Ok(Withdrawal::Released);
            }
            let params = DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                preconditions: Some(kube::api::Preconditions {
                    resource_version: job.metadata.resource_version.clone(),
                    uid: job.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match self
                .bounded("deleting the Job", api.delete(&pid.job_name, &params))
                .await
            {
                Ok(_) => return Ok(Withdrawal::Deleted),
                Err(CallError::Kube(kube::Error::Api(status))) if status.code == 404 => {
                    return Ok(Withdrawal::Gone)
                }
                Err(CallError::Kube(kube::Error::Api(status))) if status.code == 409 => continue,
                Err(error) => return Err(error.classify()),
            }
        }
        Err(CreateError::Transient(format!(
            "Job {pid} kept changing while being withdrawn"
        )))
    }

    /// Whether the Job exists (for a claim that is about to time out).
    pub async fn exists(&self, pid: &InfrastructurePid) -> Result<bool, CreateError> {
        self.bounded(
            "reading the Job",
            self.api(&pid.namespace).get_opt(&pid.job_name),
        )
        .await
        .map(|job| job.is_some())
        .map_err(CallError::classify)
    }
}

fn set_suspend(object: &mut DynamicObject, suspend: bool) {
    if let Some(spec) = object.data.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.insert("suspend".into(), serde_json::Value::Bool(suspend));
    }
}

/// Whether the rendered manifest itself asks for a suspended Job (the user's
/// choice, which the dispatcher then leaves alone).
pub fn template_suspends(manifest: &serde_json::Value) -> bool {
    manifest["spec"]["suspend"].as_bool() == Some(true)
}

/// A failed call: Kubernetes' answer, or none in time.
enum CallError {
    Kube(kube::Error),
    Deadline(String),
}

impl CallError {
    fn classify(self) -> CreateError {
        match self {
            CallError::Kube(error) => classify(error),
            CallError::Deadline(message) => CreateError::Transient(message),
        }
    }
}

/// Sorts a failed call into "tell the user" and "try again".
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_suspend_flag_is_set_on_the_spec_and_a_template_may_ask_for_it() {
        let manifest = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": {"template": {}}});
        let mut object: DynamicObject = serde_json::from_value(manifest.clone()).unwrap();
        set_suspend(&mut object, true);
        assert_eq!(object.data["spec"]["suspend"], json!(true));
        assert!(!template_suspends(&manifest));
        assert!(template_suspends(&json!({"spec": {"suspend": true}})));
    }
}
