//! Renders the Kubernetes Job manifest of a Prefect flow run exactly as
//! prefect-kubernetes 0.8.0 (prefect 3.9.1) does, so existing work pools and
//! deployments work unchanged, with the seed agent's agent-wide defaults layered
//! under the job variables.
//!
//! Pure functions, no I/O. The entry point is [`render_job_manifest`]; Job names
//! come from [`job_name`] (with [`job_name_base`] for the part before the hash). Deliberate differences from prefect-kubernetes:
//! the Job gets a fixed `metadata.name` instead of `generateName`; a `null` value
//! of a whole-value placeholder removes the key (Prefect writes `null`); the
//! `prefect-job` container must be the first one; `{{ prefect.blocks.* }}`,
//! `{{ prefect.variables.* }}`, `{{ $ENV }}` placeholders and a per-deployment
//! `cluster_config` are refused with an error; and bad images, quantities, names
//! and labels are refused with an error naming the field instead of failing later
//! in Kubernetes.

mod command_line;
mod environment;
mod error;
mod image_reference;
mod job_name;
mod job_variables;
mod kubernetes_names;
mod labels;
mod python_text;
mod quantity;
mod render;
mod request;
mod slug;
mod templating;
mod typed_job;

use serde_json::Value;

pub use error::ManifestError;
pub use job_name::{job_name, job_name_base};
pub use labels::PREFECT_VERSION;
pub use render::{
    render_job_manifest, RenderedJob, DEFAULT_COMMAND, DEFAULT_IMAGE, DEFAULT_NAMESPACE,
};
pub use request::{
    AgentDefaults, DeploymentContext, FlowRunContext, ForwardedSecret, ForwardedSettings,
    RenderRequest, IMAGE_PULL_POLICIES,
};
pub use typed_job::typed_job;

/// prefect-kubernetes 0.8.0's default base job template (`{"job_configuration",
/// "variables"}`), exactly as `KubernetesWorker.get_default_base_job_template()`
/// returns it; the template a new `kubernetes` work pool is created with.
pub fn default_base_job_template() -> Value {
    serde_json::from_str(include_str!("default-base-job-template.json"))
        .expect("the bundled default base job template is valid JSON")
}
