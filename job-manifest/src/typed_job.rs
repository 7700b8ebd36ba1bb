//! Conversion of a rendered manifest into `k8s_openapi`'s typed `Job`, for
//! callers that create it through a typed client; failure means the manifest
//! does not match the Kubernetes API schema.

use k8s_openapi::api::batch::v1::Job;
use serde_json::Value;

use crate::error::ManifestError;
use crate::render::RenderedJob;

impl RenderedJob {
    /// The manifest as a typed `batch/v1` Job.
    pub fn to_typed_job(&self) -> Result<Job, ManifestError> {
        typed_job(&self.manifest)
    }
}

/// Deserializes `manifest` as a `batch/v1` Job.
pub fn typed_job(manifest: &Value) -> Result<Job, ManifestError> {
    serde_json::from_value(manifest.clone()).map_err(|err| ManifestError::TypedJob {
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_minimal_job_converts() {
        let job = typed_job(&json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "prefect-job", "image": "python:3", "resources": {"limits": {"cpu": 1}}}
            ]}}}
        }))
        .expect("typed");
        assert_eq!(job.metadata.name.as_deref(), Some("x"));
    }

    #[test]
    fn a_wrongly_typed_field_is_reported() {
        let err = typed_job(&json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "x"},
            "spec": {"backoffLimit": "two", "template": {"spec": {"containers": []}}}
        }))
        .expect_err("backoffLimit must be an integer");
        assert_eq!(err.field(), "job_manifest");
        assert!(
            err.to_string().contains("not a valid batch/v1 Job"),
            "{err}"
        );
    }
}
