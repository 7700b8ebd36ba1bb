//! Renders the Kubernetes Job manifest of a Prefect flow run exactly as
//! prefect-kubernetes 0.8.0 (prefect 3.9.1) does, so existing work pools and
//! deployments work unchanged, with the seed agent's agent-wide defaults layered
//! under the job variables.
//!
//! Pure functions, no I/O. The entry point is [`render_job_manifest`]; the Job's
//! name comes from [`job_name`], fed with [`job_name_base`]. The test
//! `tests/reference_comparison.rs` compares the output with prefect-kubernetes
//! itself, field by field.
//!
//! Deliberate differences from prefect-kubernetes:
//! - the Job gets a fixed `metadata.name` (name base + hash of a claim key)
//!   instead of `generateName`, so a retried create cannot make a second Job;
//! - a job variable set to `null` is unset: its whole-value placeholder removes the
//!   key (Prefect writes `null`, which Kubernetes reads as unset, except that a
//!   `null` image stays `null` there and the Job is rejected; here the default
//!   image is used, and a `null` namespace means `default` instead of an error);
//! - `command` may also be a list of strings (used as `args` as is);
//! - the `prefect-job` container must be the first one (prefect-kubernetes also
//!   accepts it elsewhere, then configures whichever container is first);
//! - `{{ prefect.blocks.* }}`, `{{ prefect.variables.* }}`, `{{ $ENV }}`
//!   placeholders, block references and a per-deployment `cluster_config` are
//!   refused with an error instead of being resolved;
//! - bad images, quantities (and requests above limits), names, labels and a
//!   namespace that differs from the manifest's are refused with an error naming
//!   the field, instead of failing later in Kubernetes or the kubelet;
//! - non-ASCII text is transliterated for slugs with `deunicode` where Python uses
//!   text-unidecode, and only the `amp`, `lt`, `gt`, `quot`, `nbsp` named HTML
//!   entities are decoded; the default image is always
//!   `prefecthq/prefect:3.9.1-python3.11`.

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
pub use slug::{slugify_label_key, slugify_label_value, slugify_name};
pub use typed_job::typed_job;

/// prefect-kubernetes 0.8.0's default base job template (`{"job_configuration",
/// "variables"}`) as JSON text, exactly as `KubernetesWorker.get_default_base_job_template()`
/// returns it; the template a new `kubernetes` work pool is created with.
pub const DEFAULT_BASE_JOB_TEMPLATE: &str = include_str!("default-base-job-template.json");

/// [`DEFAULT_BASE_JOB_TEMPLATE`], parsed.
pub fn default_base_job_template() -> Value {
    serde_json::from_str(DEFAULT_BASE_JOB_TEMPLATE)
        .expect("the bundled default base job template is valid JSON")
}
