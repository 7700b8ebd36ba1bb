//! `--flow-namespace`: flow-run Jobs in a namespace of their own. The
//! dispatcher's default Job namespace and its Role to create Jobs move there;
//! the reporter watches only there, and its Role to watch Jobs, pods and
//! Events, read pod logs and delete Jobs is there, while its Lease stays with
//! the agent. The API key Secret is copied there for the flow-run pods'
//! references. Nothing else of the agent is granted in that namespace.

use serde_norway::Value;

use super::{
    container_mut, namespace_object, object_mut, set_env, InstallOptions, API_KEY_SECRET,
    BASE_NAMESPACE, DISPATCHER, REPORTER,
};

/// The API group of the reporter's Lease rules, which stay with the agent.
const LEASES_GROUP: &str = "coordination.k8s.io";

/// The flow namespace, when it is not the agent's own.
pub(super) fn flow_namespace(args: &InstallOptions) -> Option<&str> {
    args.flow_namespace
        .as_deref()
        .filter(|flows| *flows != args.namespace)
}

/// Points the services and their Roles at the flow namespace. Runs once
/// every object is in the agent's namespace.
pub(super) fn apply(objects: &mut Vec<Value>, args: &InstallOptions) -> anyhow::Result<()> {
    let Some(flows) = flow_namespace(args) else {
        return Ok(());
    };
    set_env(container_mut(objects, DISPATCHER)?, "NAMESPACE", flows);
    set_env(
        container_mut(objects, REPORTER)?,
        "PREFECT_K8S_REPORTER_NAMESPACE",
        flows,
    );
    if args.rbac {
        for kind in ["Role", "RoleBinding"] {
            object_mut(objects, kind, DISPATCHER)?["metadata"]["namespace"] = Value::from(flows);
        }
        split_reporter_role(objects, flows)?;
    }
    copy_api_key_secret(objects, flows);
    if flows != BASE_NAMESPACE {
        objects.push(namespace_object(flows));
    }
    Ok(())
}

/// The reporter's Role keeps its Lease rules; the rest go to a Role of the
/// same name in the flow namespace, bound to the same ServiceAccount.
fn split_reporter_role(objects: &mut Vec<Value>, flows: &str) -> anyhow::Result<()> {
    let role = object_mut(objects, "Role", REPORTER)?;
    let rules = match role.get("rules") {
        Some(Value::Sequence(rules)) => rules.clone(),
        _ => Vec::new(),
    };
    let (leases, watching): (Vec<Value>, Vec<Value>) = rules.into_iter().partition(|rule| {
        rule["apiGroups"]
            .as_sequence()
            .is_some_and(|groups| groups.iter().any(|g| g == LEASES_GROUP))
    });
    role["rules"] = Value::Sequence(leases);
    let mut flow_role = role.clone();
    flow_role["metadata"]["namespace"] = Value::from(flows);
    flow_role["rules"] = Value::Sequence(watching);
    let mut flow_binding = object_mut(objects, "RoleBinding", REPORTER)?.clone();
    flow_binding["metadata"]["namespace"] = Value::from(flows);
    objects.push(flow_role);
    objects.push(flow_binding);
    Ok(())
}

/// Flow-run pods reference the API key in their own namespace.
fn copy_api_key_secret(objects: &mut Vec<Value>, flows: &str) {
    let copy = objects
        .iter()
        .find(|object| object["kind"] == "Secret" && object["metadata"]["name"] == API_KEY_SECRET)
        .cloned();
    if let Some(mut secret) = copy {
        secret["metadata"]["namespace"] = Value::from(flows);
        objects.push(secret);
    }
}
