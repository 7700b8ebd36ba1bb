//! Authentication and RBAC authorization (opt-in with `--authorization rbac`). Bearer tokens map
//! to users: the admin token to `kubernetes-admin` in `system:masters`, and tokens minted by
//! [`service_account_token`] to `system:serviceaccount:<ns>:<name>`. Roles, ClusterRoles and
//! their bindings are read from the store on every request and enforced with the real 403 wording.

use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::json_response;
use super::request::ResourcePath;
use crate::cluster::Cluster;
use crate::config::AuthorizationMode;
use crate::error::ApiError;
use crate::resources::{self, ResourceType};

/// The token written into the emulator's kubeconfig.
pub const ADMIN_TOKEN: &str = "kube-emulator-admin-token";

const SERVICE_ACCOUNT_TOKEN_PREFIX: &str = "kube-emulator-sa.";

/// The bearer token that authenticates as ServiceAccount `namespace/name`.
pub fn service_account_token(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_TOKEN_PREFIX}{namespace}.{name}")
}

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name (`system:serviceaccount:ns:sa` for service accounts).
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// For ServiceAccounts: (namespace, name).
    pub service_account: Option<(String, String)>,
}

impl User {
    fn admin() -> Self {
        Self {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            service_account: None,
        }
    }

    fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// Map the `Authorization` header to a user, then apply `Impersonate-User`/`Impersonate-Group`
/// (kubectl `--as`/`--as-group`) when the caller is a superuser.
pub fn authenticate(cluster: &Cluster, headers: &HeaderMap) -> Result<User, ApiError> {
    let user = authenticate_token(cluster, headers)?;
    let Some(target) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return Ok(user);
    };
    if cluster.config.authorization == AuthorizationMode::Rbac && !user.is_superuser() {
        let resource = resources::by_plural("", "serviceaccounts");
        return Err(ApiError::forbidden(
            resource,
            None,
            format!(
                "users \"{target}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                user.name
            ),
        ));
    }
    let mut groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let service_account = target
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, name)| (ns.to_string(), name.to_string()));
    if let Some((ns, _)) = &service_account {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{ns}"));
    }
    groups.push("system:authenticated".into());
    Ok(User {
        name: target.to_string(),
        groups,
        service_account,
    })
}

fn authenticate_token(cluster: &Cluster, headers: &HeaderMap) -> Result<User, ApiError> {
    if cluster.config.authorization == AuthorizationMode::AlwaysAllow {
        return Ok(User::admin());
    }
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        None => Ok(User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            service_account: None,
        }),
        Some(ADMIN_TOKEN) => Ok(User::admin()),
        Some(token) => {
            let rest = token
                .strip_prefix(SERVICE_ACCOUNT_TOKEN_PREFIX)
                .ok_or_else(unauthorized)?;
            let (namespace, name) = rest.split_once('.').ok_or_else(unauthorized)?;
            if cluster
                .store
                .get(resources::service_accounts(), namespace, name)
                .is_none()
            {
                return Err(unauthorized());
            }
            Ok(User {
                name: format!("system:serviceaccount:{namespace}:{name}"),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{namespace}"),
                    "system:authenticated".into(),
                ],
                service_account: Some((namespace.to_string(), name.to_string())),
            })
        }
    }
}

fn unauthorized() -> ApiError {
    let mut err = ApiError::bad_request("Unauthorized");
    err.code = 401;
    err.reason = "Unauthorized".into();
    err
}

fn subject_matches(subject: &Value, user: &User) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => user.service_account.as_ref().is_some_and(|(ns, sa)| {
            sa == name && subject["namespace"].as_str() == Some(ns.as_str())
        }),
        _ => false,
    }
}

fn rule_allows(
    rule: &Value,
    verb: &str,
    resource: &ResourceType,
    subresource: Option<&str>,
    name: Option<&str>,
) -> bool {
    let contains = |field: &str, wanted: &str| {
        rule[field]
            .as_array()
            .is_some_and(|list| list.iter().any(|v| v == "*" || v == wanted))
    };
    let resource_name = match subresource {
        Some(sub) => format!("{}/{}", resource.plural, sub),
        None => resource.plural.to_string(),
    };
    let names_ok = match rule["resourceNames"].as_array() {
        Some(list) if !list.is_empty() => name.is_some_and(|n| list.iter().any(|v| v == n)),
        _ => true,
    };
    contains("verbs", verb)
        && contains("apiGroups", resource.group)
        && (contains("resources", &resource_name)
            || rule["resources"].as_array().is_some_and(|l| {
                l.iter().any(|v| {
                    v.as_str() == Some(&format!("{}/*", resource.plural)) && subresource.is_some()
                })
            }))
        && names_ok
}

fn role_rules(cluster: &Cluster, role_ref: &Value, binding_namespace: Option<&str>) -> Vec<Value> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match (role_ref["kind"].as_str(), binding_namespace) {
        (Some("ClusterRole"), _) => cluster.store.get(
            resources::by_plural("rbac.authorization.k8s.io", "clusterroles"),
            "",
            name,
        ),
        (Some("Role"), Some(ns)) => cluster.store.get(
            resources::by_plural("rbac.authorization.k8s.io", "roles"),
            ns,
            name,
        ),
        _ => None,
    };
    role.and_then(|r| r["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether `user` may perform `verb` on the resource (RBAC evaluation).
pub fn allowed(
    cluster: &Cluster,
    user: &User,
    verb: &str,
    resource: &ResourceType,
    namespace: Option<&str>,
    subresource: Option<&str>,
    name: Option<&str>,
) -> bool {
    if cluster.config.authorization == AuthorizationMode::AlwaysAllow || user.is_superuser() {
        return true;
    }
    let check = |rules: Vec<Value>| {
        rules
            .iter()
            .any(|r| rule_allows(r, verb, resource, subresource, name))
    };
    let (_, cluster_bindings) = cluster.store.list(
        resources::by_plural("rbac.authorization.k8s.io", "clusterrolebindings"),
        None,
    );
    for binding in cluster_bindings {
        if binding["subjects"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
            && check(role_rules(cluster, &binding["roleRef"], None))
        {
            return true;
        }
    }
    if let Some(ns) = namespace {
        let (_, bindings) = cluster.store.list(
            resources::by_plural("rbac.authorization.k8s.io", "rolebindings"),
            Some(ns),
        );
        for binding in bindings {
            if binding["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
                && check(role_rules(cluster, &binding["roleRef"], Some(ns)))
            {
                return true;
            }
        }
    }
    false
}

/// Enforce RBAC for a resource request; 403 worded like kube-apiserver.
pub fn authorize(
    cluster: &Cluster,
    user: &User,
    verb: &str,
    rp: &ResourcePath,
) -> Result<(), ApiError> {
    let namespace = if rp.resource.namespaced {
        rp.namespace.as_deref()
    } else {
        None
    };
    if allowed(
        cluster,
        user,
        verb,
        rp.resource,
        namespace,
        rp.subresource.as_deref(),
        rp.name.as_deref(),
    ) {
        return Ok(());
    }
    let resource_text = match &rp.subresource {
        Some(sub) => format!("{}/{}", rp.resource.plural, sub),
        None => rp.resource.plural.to_string(),
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let subject = match &rp.name {
        Some(name) => format!("{} \"{}\"", rp.resource.qualified_plural(), name),
        None => rp.resource.qualified_plural(),
    };
    Err(ApiError::forbidden(
        rp.resource,
        rp.name.as_deref(),
        format!(
            "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource_text}\" in API group \"{}\" {scope}",
            user.name, rp.resource.group
        ),
    ))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
pub fn self_subject_access_review(
    cluster: &Arc<Cluster>,
    user: &User,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut review: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let attrs = review
        .pointer("/spec/resourceAttributes")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let group = attrs["group"].as_str().unwrap_or_default();
    let plural = attrs["resource"].as_str().unwrap_or_default();
    let version = attrs["version"]
        .as_str()
        .filter(|v| !v.is_empty())
        .unwrap_or("v1");
    let allowed_now = match resources::find(group, version, plural) {
        Some(resource) => allowed(
            cluster,
            user,
            attrs["verb"].as_str().unwrap_or_default(),
            resource,
            attrs["namespace"].as_str().filter(|n| !n.is_empty()),
            attrs["subresource"].as_str().filter(|s| !s.is_empty()),
            attrs["name"].as_str().filter(|n| !n.is_empty()),
        ),
        None => {
            cluster.config.authorization == AuthorizationMode::AlwaysAllow || user.is_superuser()
        }
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    review["status"] = if allowed_now {
        json!({"allowed": true, "reason": "RBAC: allowed"})
    } else {
        json!({"allowed": false})
    };
    Ok(json_response(StatusCode::CREATED, &review, &[]))
}

/// The rules bound to `user` (ClusterRoleBindings, and RoleBindings in `namespace`), split into
/// resource and non-resource rules as the RBAC rule resolver reports them.
fn bound_rules(cluster: &Cluster, user: &User, namespace: &str) -> (Vec<Value>, Vec<Value>) {
    let mut rules = Vec::new();
    let mut collect = |plural: &str, ns: Option<&str>| {
        let (_, bindings) = cluster.store.list(
            resources::by_plural("rbac.authorization.k8s.io", plural),
            ns,
        );
        for binding in bindings {
            if binding["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
            {
                rules.extend(role_rules(cluster, &binding["roleRef"], ns));
            }
        }
    };
    collect("clusterrolebindings", None);
    collect("rolebindings", Some(namespace));
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for rule in rules {
        let non_empty = |field: &str| rule[field].as_array().is_some_and(|a| !a.is_empty());
        if non_empty("resources") {
            let mut entry = json!({"verbs": rule["verbs"], "apiGroups": rule["apiGroups"], "resources": rule["resources"]});
            if non_empty("resourceNames") {
                entry["resourceNames"] = rule["resourceNames"].clone();
            }
            resource_rules.push(entry);
        }
        if non_empty("nonResourceURLs") {
            non_resource_rules
                .push(json!({"verbs": rule["verbs"], "nonResourceURLs": rule["nonResourceURLs"]}));
        }
    }
    (resource_rules, non_resource_rules)
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i --list`):
/// with RBAC, the caller's bound rules in `spec.namespace`; always-allow answers `*` for
/// everything, as that authorizer's rule resolver does.
pub fn self_subject_rules_review(
    cluster: &Arc<Cluster>,
    user: &User,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut review: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let namespace = review
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if namespace.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let (resource_rules, non_resource_rules) =
        if cluster.config.authorization == AuthorizationMode::AlwaysAllow {
            (
                vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
                vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
            )
        } else {
            bound_rules(cluster, user, &namespace)
        };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectRulesReview");
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    review["status"] = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false
    });
    Ok(json_response(StatusCode::CREATED, &review, &[]))
}
