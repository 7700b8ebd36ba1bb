//! The table of API resources the emulator serves: group/version, plural and kind names, scope,
//! verbs, subresources, field-selector labels, and the typed k8s-openapi round trip that prunes
//! unknown fields the way a real apiserver's decoder does.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// Static description of one served resource.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name used in URLs.
    pub plural: &'static str,
    /// Singular name for discovery.
    pub singular: &'static str,
    /// Object kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Discovery short names (`po`, `ns`, ...).
    pub short_names: &'static [&'static str],
    /// Discovery categories.
    pub categories: &'static [&'static str],
    /// Verbs advertised in discovery.
    pub verbs: &'static [&'static str],
    /// Served subresources (`status`, `log`, ...).
    pub subresources: &'static [&'static str],
    /// Field selector labels accepted besides `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Typed decode + encode through k8s-openapi; `None` for kinds we keep as raw JSON.
    pub(crate) typed_round_trip: Option<fn(Value) -> Result<Value, serde_json::Error>>,
}

impl ResourceType {
    /// `apiVersion` string: `v1` or `batch/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `jobs.batch` or `pods` as used in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// A stable identifier used as the storage table name.
    pub fn id(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// The storage table key (allocation-free). `events.k8s.io` Events share the core table.
    pub fn table_key(&self) -> (&'static str, &'static str) {
        if self.group == "events.k8s.io" {
            ("", "events")
        } else {
            (self.group, self.plural)
        }
    }

    /// Whether two references name the same resource (all live in [`RESOURCES`]).
    pub fn is(&self, other: &ResourceType) -> bool {
        std::ptr::eq(self, other) || self.table_key() == other.table_key()
    }

    /// `List` kind, e.g. `JobList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether a subresource is served.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether `label` is a supported field selector label for this resource.
    pub fn supports_field_label(&self, label: &str) -> bool {
        label == "metadata.name"
            || (self.namespaced && label == "metadata.namespace")
            || self.field_labels.contains(&label)
    }
}

fn round_trip<K: DeserializeOwned + Serialize>(value: Value) -> Result<Value, serde_json::Error> {
    let typed: K = serde_json::from_value(value)?;
    serde_json::to_value(typed)
}

const CRUD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every served resource. Order is the discovery order.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        subresources: &["status", "finalize"],
        field_labels: &["status.phase"],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::Namespace>),
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &["spec.unschedulable"],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::Node>),
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        verbs: CRUD_VERBS,
        subresources: &["status", "log", "binding", "eviction"],
        field_labels: POD_FIELDS,
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::Pod>),
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: EVENT_FIELDS,
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::Event>),
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &["type"],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::Secret>),
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::ConfigMap>),
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &["token"],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::ServiceAccount>),
    },
    ResourceType {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &["status.successful"],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::batch::v1::Job>),
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::coordination::v1::Lease>),
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::events::v1::Event>),
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::rbac::v1::Role>),
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::rbac::v1::RoleBinding>),
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::rbac::v1::ClusterRole>),
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::Service>),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::core::v1::PersistentVolumeClaim>),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::apps::v1::Deployment>),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        categories: &["all"],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::apps::v1::StatefulSet>),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: Some(
            round_trip::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
        ),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::policy::v1::PodDisruptionBudget>),
    },
    // Stored and served, but no controller reconciles it.
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(round_trip::<k8s_openapi::api::networking::v1::NetworkPolicy>),
    },
    // Served as on a cluster with KEDA's CustomResourceDefinition installed
    // (names, scope and subresources as in the CRD), so clients such as Helm
    // can map and apply the kind; stored as given (no CRD schema is applied:
    // check custom resources against their CRDs yourself), and no KEDA
    // controller reconciles it.
    ResourceType {
        group: "keda.sh",
        version: "v1alpha1",
        plural: "scaledobjects",
        singular: "scaledobject",
        kind: "ScaledObject",
        namespaced: true,
        short_names: &["so"],
        categories: &[],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: None,
    },
    // As above, for the Prometheus Operator's PodMonitor CRD.
    ResourceType {
        group: "monitoring.coreos.com",
        version: "v1",
        plural: "podmonitors",
        singular: "podmonitor",
        kind: "PodMonitor",
        namespaced: true,
        short_names: &["pmon"],
        categories: &["prometheus-operator"],
        verbs: CRUD_VERBS,
        subresources: &["status"],
        field_labels: &[],
        typed_round_trip: None,
    },
    ResourceType {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(
            round_trip::<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview>,
        ),
    },
    ResourceType {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        categories: &[],
        verbs: &["create"],
        subresources: &[],
        field_labels: &[],
        typed_round_trip: Some(
            round_trip::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>,
        ),
    },
];

/// The groups of the custom resources served as on a cluster with their
/// CustomResourceDefinitions installed (KEDA, the Prometheus Operator): a
/// plain cluster, such as the recorded one, does not serve them.
pub const CUSTOM_RESOURCE_GROUPS: [&str; 2] = ["keda.sh", "monitoring.coreos.com"];

/// The API groups (besides core) in discovery order.
pub fn api_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for resource in RESOURCES {
        if !resource.group.is_empty() && !groups.contains(&resource.group) {
            groups.push(resource.group);
        }
    }
    groups
}

/// Look up a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look up by group and plural only (used by controllers).
pub fn by_plural(group: &str, plural: &str) -> &'static ResourceType {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .expect("resource table entry")
}

/// Shorthand for the resources the controllers touch.
pub fn pods() -> &'static ResourceType {
    by_plural("", "pods")
}
/// `batch/v1` jobs.
pub fn jobs() -> &'static ResourceType {
    by_plural("batch", "jobs")
}
/// core/v1 events.
pub fn core_events() -> &'static ResourceType {
    by_plural("", "events")
}
/// namespaces.
pub fn namespaces() -> &'static ResourceType {
    by_plural("", "namespaces")
}
/// nodes.
pub fn nodes() -> &'static ResourceType {
    by_plural("", "nodes")
}
/// secrets.
pub fn secrets() -> &'static ResourceType {
    by_plural("", "secrets")
}
/// configmaps.
pub fn configmaps() -> &'static ResourceType {
    by_plural("", "configmaps")
}
/// serviceaccounts.
pub fn service_accounts() -> &'static ResourceType {
    by_plural("", "serviceaccounts")
}
