//! Error types: [`ApiError`] is a Kubernetes `Status` failure as the API server returns it
//! (code, reason, message, details), and [`EmulatorError`] covers starting and stopping the emulator.

use serde_json::{json, Value};

use crate::resources::ResourceType;

/// A failed API request, rendered on the wire as a `kind: Status` body with the same code,
/// reason and message a real kube-apiserver uses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`, `AlreadyExists`, `Invalid`.
    pub reason: String,
    /// Human readable `Status.message`.
    pub message: String,
    /// `Status.details`, when the real server fills it.
    pub details: Option<Box<Value>>,
    /// Seconds for the `Retry-After` header (429, 503, 504).
    pub retry_after_seconds: Option<u64>,
}

/// One entry of `Status.details.causes` for 422 Invalid responses.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// The path of the field, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The message without the field prefix, e.g. `Required value`.
    pub message: String,
}

impl FieldCause {
    /// `field: Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    /// `field: Invalid value: <value>: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {}: {detail}", render_value(value)),
        }
    }

    /// `field: Unsupported value: <value>: supported values: ...`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                render_value(value),
                list.join(", ")
            ),
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {detail}"),
        }
    }

    fn full_message(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// Values are quoted like Go's `%q` for strings and printed plainly otherwise.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            retry_after_seconds: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    fn resource_details(resource: &ResourceType, name: &str) -> Value {
        let mut details = json!({ "name": name, "kind": resource.plural });
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        details
    }

    /// 404 `jobs.batch "x" not found`.
    pub fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", resource.qualified_plural(), name),
        )
        .with_details(Self::resource_details(resource, name))
    }

    /// 404 for a path that is not served at all.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 `jobs.batch "x" already exists` (prefixed when the existing object is terminating).
    pub fn already_exists(resource: &ResourceType, name: &str, terminating: bool) -> Self {
        let prefix = if terminating {
            "object is being deleted: "
        } else {
            ""
        };
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{prefix}{} \"{}\" already exists",
                resource.qualified_plural(),
                name
            ),
        )
        .with_details(Self::resource_details(resource, name))
    }

    /// 409 Conflict: `Operation cannot be fulfilled on jobs.batch "x": <why>`.
    pub fn conflict(resource: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                resource.qualified_plural(),
                name,
                why
            ),
        )
        .with_details(Self::resource_details(resource, name))
    }

    /// The optimistic-lock conflict message of the real apiserver.
    pub fn stale_resource_version(resource: &ResourceType, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with causes; the message lists every cause like the real server.
    pub fn invalid(resource: &ResourceType, name: &str, causes: Vec<FieldCause>) -> Self {
        let rendered: Vec<String> = causes.iter().map(FieldCause::full_message).collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = json!({ "name": name, "kind": resource.kind });
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        details["causes"] = Value::Array(
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        );
        let qualified_kind = if resource.group.is_empty() {
            resource.kind.to_string()
        } else {
            format!("{}.{}", resource.kind, resource.group)
        };
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(details)
    }

    /// 422 Invalid for request options (no object involved), e.g. bad `resourceVersionMatch`.
    pub fn invalid_options(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 Forbidden with the RBAC wording.
    pub fn forbidden(
        resource: &ResourceType,
        name: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        let mut details = json!({ "kind": resource.plural });
        if let Some(name) = name {
            details["name"] = json!(name);
        }
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        Self::new(403, "Forbidden", message).with_details(details)
    }

    /// 403 for creating in a terminating namespace.
    pub fn namespace_terminating(resource: &ResourceType, name: &str, namespace: &str) -> Self {
        // Admission runs before generateName is resolved: a generated name is not in the message.
        let subject = if name.is_empty() {
            resource.qualified_plural()
        } else {
            format!("{} \"{}\"", resource.qualified_plural(), name)
        };
        let mut err = Self::forbidden(
            resource,
            Some(name).filter(|n| !n.is_empty()),
            format!(
                "{subject} is forbidden: unable to create new content in namespace {namespace} because it is being terminated"
            ),
        );
        if let Some(details) = err.details.as_mut() {
            details["causes"] = json!([{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace"
            }]);
        }
        err
    }

    /// 429 refusing an eviction: `Cannot evict pod as it would violate the pod's disruption
    /// budget.` with a `DisruptionBudget` cause; `retry_after_seconds` 0 sends no Retry-After.
    pub fn disruption_budget(cause: String, retry_after_seconds: u64) -> Self {
        let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
        let mut err = Self::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
        if retry_after_seconds > 0 {
            details["retryAfterSeconds"] = json!(retry_after_seconds);
            err.retry_after_seconds = Some(retry_after_seconds);
        }
        err.with_details(details)
    }

    /// 409 from a precondition the eviction handler checks itself (`Operation cannot be
    /// fulfilled on Pod "x": ...`, the group resource spelled `Pod` as in the real handler).
    pub fn pod_precondition_conflict(name: &str, detail: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on Pod \"{name}\": {detail}"),
        )
        .with_details(json!({"name": name, "kind": "Pod"}))
    }

    /// A failure `Status` with an arbitrary code and no reason (the eviction handler's
    /// "more than one PodDisruptionBudget" answer).
    pub fn failure(code: u16, message: impl Into<String>) -> Self {
        Self::new(code, "", message)
    }

    /// 405 for verbs a resource does not support.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message).with_details(json!({}))
    }

    /// 406 when the `Accept` header asks for something we cannot produce.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 415 for a PATCH content type we do not know.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type}"),
        )
    }

    /// 415 for a create/update body we cannot decode (protobuf, CBOR).
    pub fn unsupported_body_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; got {content_type}"),
        )
    }

    /// 410 Expired (stale resourceVersion or continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after_seconds: u64) -> Self {
        let mut err = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        )
        .with_details(json!({ "retryAfterSeconds": retry_after_seconds }));
        err.retry_after_seconds = Some(retry_after_seconds);
        err
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({ "causes": [{ "message": message }] }))
    }

    /// 503 ServiceUnavailable.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504 for a resourceVersion from the future.
    pub fn resource_version_too_large(requested: u64, current: u64) -> Self {
        let mut err = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }));
        err.retry_after_seconds = Some(1);
        err
    }

    /// The `kind: Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            status.as_object_mut().expect("status").remove("reason");
        }
        if let Some(details) = &self.details {
            status["details"] = (**details).clone();
        }
        status
    }
}

/// Errors from starting, running or stopping an [`crate::Emulator`].
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// Binding the listener or writing the kubeconfig failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Building a kube client from the emulator's kubeconfig failed.
    #[error("kube client error: {0}")]
    Client(String),
    /// Generating the serving certificate or configuring TLS failed.
    #[error("TLS setup error: {0}")]
    Tls(String),
}
