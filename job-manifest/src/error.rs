//! The one error type of the crate. Every variant names the field it is about
//! (`field()`), and its `Display` says what is wrong and why, in words fit for a
//! flow run's `Crashed` state message.

/// Why a Job manifest could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// A job variable (deployment or flow run) has the wrong type or value.
    #[error("invalid job variable `{field}`: {reason}")]
    JobVariable { field: String, reason: String },

    /// The work pool's base job template is malformed or produces an invalid Job.
    #[error("invalid base job template at `{field}`: {reason}")]
    Template { field: String, reason: String },

    /// A placeholder that needs the Prefect API or the worker's environment.
    #[error(
        "`{field}` uses the {kind} placeholder {placeholder}; {kind} placeholders are not \
         supported yet by this agent, put the value in the job variables instead"
    )]
    UnsupportedPlaceholder {
        field: String,
        placeholder: String,
        kind: &'static str,
    },

    /// An image reference that does not follow the container image reference grammar.
    #[error("invalid image reference {image:?} at `{field}`: {reason}")]
    ImageReference {
        field: String,
        image: String,
        reason: String,
    },

    /// A Kubernetes resource quantity that does not parse or is out of range.
    #[error("invalid resource quantity {value:?} at `{field}`: {reason}")]
    Quantity {
        field: String,
        value: String,
        reason: String,
    },

    /// A label or annotation key, or a label value, that Kubernetes would reject.
    #[error("invalid label or annotation at `{field}`: {reason}")]
    Label { field: String, reason: String },

    /// A Kubernetes object name (namespace, service account, job, secret) that is
    /// not a valid DNS-1123 name.
    #[error("invalid name {value:?} at `{field}`: {reason}")]
    ObjectName {
        field: String,
        value: String,
        reason: String,
    },

    /// An agent-wide option (from the dispatcher's configuration) is invalid.
    #[error("invalid agent option `{field}`: {reason}")]
    AgentOption { field: String, reason: String },

    /// The manifest does not deserialize as a `batch/v1` Job.
    #[error("the rendered manifest is not a valid batch/v1 Job: {reason}")]
    TypedJob { reason: String },
}

impl ManifestError {
    /// The field the error is about: a job variable (`job_variables.image`), a
    /// manifest path (`job_manifest.spec.template.spec.containers[0].image`), a
    /// template path or an agent option.
    pub fn field(&self) -> &str {
        match self {
            ManifestError::JobVariable { field, .. }
            | ManifestError::Template { field, .. }
            | ManifestError::UnsupportedPlaceholder { field, .. }
            | ManifestError::ImageReference { field, .. }
            | ManifestError::Quantity { field, .. }
            | ManifestError::Label { field, .. }
            | ManifestError::ObjectName { field, .. }
            | ManifestError::AgentOption { field, .. } => field,
            ManifestError::TypedJob { .. } => "job_manifest",
        }
    }

    /// The human-readable message (same as `Display`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// Re-labels a validation error found in an agent option.
    pub(crate) fn into_agent_option(self, option: &str) -> ManifestError {
        ManifestError::AgentOption {
            field: option.to_string(),
            reason: match &self {
                ManifestError::ImageReference { reason, image, .. } => {
                    format!("invalid image reference {image:?}: {reason}")
                }
                ManifestError::Quantity { reason, value, .. } => {
                    format!("invalid resource quantity {value:?}: {reason}")
                }
                ManifestError::ObjectName { reason, value, .. } => {
                    format!("invalid name {value:?}: {reason}")
                }
                ManifestError::Label { reason, .. }
                | ManifestError::JobVariable { reason, .. }
                | ManifestError::Template { reason, .. }
                | ManifestError::AgentOption { reason, .. }
                | ManifestError::TypedJob { reason } => reason.clone(),
                ManifestError::UnsupportedPlaceholder { .. } => self.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_reason() {
        let err = ManifestError::Quantity {
            field: "job_variables.cpu_request".into(),
            value: "lots".into(),
            reason: "not a Kubernetes quantity".into(),
        };
        assert_eq!(err.field(), "job_variables.cpu_request");
        assert_eq!(
            err.message(),
            "invalid resource quantity \"lots\" at `job_variables.cpu_request`: not a Kubernetes quantity"
        );
    }

    #[test]
    fn agent_option_errors_keep_the_reason() {
        let err = ManifestError::ObjectName {
            field: "namespace".into(),
            value: "Bad_NS".into(),
            reason: "must be lower case".into(),
        }
        .into_agent_option("--namespace");
        assert_eq!(err.field(), "--namespace");
        assert!(err.message().contains("must be lower case"), "{err}");
    }
}
