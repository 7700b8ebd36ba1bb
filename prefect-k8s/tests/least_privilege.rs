//! Least privilege, read from the Roles `prefect-k8s install --rbac` prints
//! (the same as `deploy/`): the poller can do nothing in Kubernetes, the
//! dispatcher only create, read, release (patch) and withdraw (delete) Jobs, the reporter only watch, read logs,
//! delete Jobs and hold its Lease. Checked with the RBAC matching rules of the
//! API server (verbs, API groups, resources with subresources, resource names).
//! On the network, only the agent's pods reach the bundled NATS.

mod manifest_tools;

use manifest_tools::{container, env_value, find, install, parse_stream};
use serde_json::Value;

/// One request: verb, API group, resource (`pods/log` for a subresource),
/// and the object's name where the request has one.
#[derive(Debug, Clone, Copy)]
struct Request<'a> {
    verb: &'a str,
    group: &'a str,
    resource: &'a str,
    name: Option<&'a str>,
}

const fn request<'a>(verb: &'a str, group: &'a str, resource: &'a str) -> Request<'a> {
    Request {
        verb,
        group,
        resource,
        name: None,
    }
}

fn listed(rule: &Value, field: &str, wanted: &str) -> bool {
    rule[field]
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item == "*" || item == wanted))
}

fn rule_allows(rule: &Value, request: Request<'_>) -> bool {
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => request
            .name
            .is_some_and(|name| names.iter().any(|n| n == name)),
        _ => true,
    };
    listed(rule, "verbs", request.verb)
        && listed(rule, "apiGroups", request.group)
        && listed(rule, "resources", request.resource)
        && names_ok
}

/// Whether the ServiceAccount `account` (in `namespace`) may make `request`
/// in `namespace`, through the RoleBindings among `objects`.
fn allowed(objects: &[Value], namespace: &str, account: &str, request: Request<'_>) -> bool {
    objects
        .iter()
        .filter(|object| object["kind"] == "RoleBinding")
        .filter(|binding| binding["metadata"]["namespace"] == namespace)
        .filter(|binding| {
            binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|subject| {
                    subject["kind"] == "ServiceAccount"
                        && subject["name"] == account
                        && subject["namespace"] == namespace
                })
            })
        })
        .filter_map(|binding| {
            assert_eq!(binding["roleRef"]["kind"], "Role", "only namespaced Roles");
            objects.iter().find(|object| {
                object["kind"] == "Role"
                    && object["metadata"]["name"] == binding["roleRef"]["name"]
                    && object["metadata"]["namespace"] == namespace
            })
        })
        .flat_map(|role| role["rules"].as_array().cloned().unwrap_or_default())
        .any(|rule| rule_allows(&rule, request))
}

fn rbac_objects(namespace: &str) -> Vec<Value> {
    parse_stream(&install(&["--rbac", "-n", namespace]))
}

#[test]
fn nothing_cluster_wide_is_granted() {
    let objects = rbac_objects("default");
    for object in &objects {
        let kind = object["kind"].as_str().unwrap();
        assert!(
            !matches!(kind, "ClusterRole" | "ClusterRoleBinding"),
            "{kind} {} grants more than one namespace",
            object["metadata"]["name"]
        );
    }
}

#[test]
fn the_poller_has_no_kubernetes_permissions_and_no_token() {
    let objects = rbac_objects("default");
    let account = "prefect-k8s-poller";
    assert!(
        !objects.iter().any(|object| object["kind"] == "RoleBinding"
            && object["subjects"]
                .as_array()
                .is_some_and(|subjects| subjects.iter().any(|s| s["name"] == account))),
        "nothing is bound to the poller"
    );
    for probe in [
        request("get", "", "pods"),
        request("list", "batch", "jobs"),
        request("create", "batch", "jobs"),
        request("get", "coordination.k8s.io", "leases"),
    ] {
        assert!(!allowed(&objects, "default", account, probe), "{probe:?}");
    }
    assert_eq!(
        find(&objects, "ServiceAccount", account)["automountServiceAccountToken"],
        false
    );
    let pod = &find(&objects, "Deployment", account)["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account);
    assert_eq!(pod["automountServiceAccountToken"], false);
}

#[test]
fn the_dispatcher_may_create_read_release_and_withdraw_jobs_and_nothing_else() {
    let objects = rbac_objects("default");
    let account = "prefect-k8s-dispatcher";
    for needed in [
        request("create", "batch", "jobs"),
        request("get", "batch", "jobs"),
        request("patch", "batch", "jobs"),
        request("delete", "batch", "jobs"),
    ] {
        assert!(allowed(&objects, "default", account, needed), "{needed:?}");
    }
    for refused in [
        request("list", "", "pods"),
        request("get", "", "pods"),
        request("list", "batch", "jobs"),
        request("watch", "batch", "jobs"),
        request("update", "batch", "jobs"),
        request("create", "", "pods"),
        request("get", "", "secrets"),
        request("get", "", "pods/log"),
        request("create", "coordination.k8s.io", "leases"),
    ] {
        assert!(
            !allowed(&objects, "default", account, refused),
            "{refused:?}"
        );
    }
    let role = find(&objects, "Role", account);
    assert_eq!(
        role["rules"].as_array().unwrap().len(),
        1,
        "one rule: {role}"
    );
}

#[test]
fn the_reporter_may_watch_read_logs_delete_jobs_and_hold_its_lease_only() {
    let objects = rbac_objects("default");
    let account = "prefect-k8s-reporter";
    let lease = env_value(
        container(&objects, "Deployment", account),
        "PREFECT_K8S_LEASE_NAME",
    )
    .expect("the reporter names its Lease");
    for needed in [
        request("get", "batch", "jobs"),
        request("list", "batch", "jobs"),
        request("watch", "batch", "jobs"),
        request("delete", "batch", "jobs"),
        request("get", "", "pods"),
        request("list", "", "pods"),
        request("watch", "", "pods"),
        request("list", "", "events"),
        request("watch", "", "events"),
        request("patch", "", "events"),
        request("get", "", "pods/log"),
        request("create", "coordination.k8s.io", "leases"),
        Request {
            name: Some(lease),
            ..request("get", "coordination.k8s.io", "leases")
        },
        Request {
            name: Some(lease),
            ..request("update", "coordination.k8s.io", "leases")
        },
    ] {
        assert!(allowed(&objects, "default", account, needed), "{needed:?}");
    }
    for refused in [
        request("create", "batch", "jobs"),
        request("update", "batch", "jobs"),
        request("patch", "batch", "jobs"),
        request("create", "", "pods"),
        request("delete", "", "pods"),
        request("patch", "", "pods"),
        request("delete", "", "events"),
        request("get", "", "secrets"),
        request("create", "", "pods/exec"),
        Request {
            name: Some("someone-elses-lease"),
            ..request("update", "coordination.k8s.io", "leases")
        },
        request("delete", "coordination.k8s.io", "leases"),
    ] {
        assert!(
            !allowed(&objects, "default", account, refused),
            "{refused:?}"
        );
    }
}

#[test]
fn flow_run_jobs_go_where_the_roles_are() {
    for namespace in ["default", "flows"] {
        let objects = rbac_objects(namespace);
        let dispatcher = container(&objects, "Deployment", "prefect-k8s-dispatcher");
        let job_namespace = dispatcher["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == "NAMESPACE")
            .expect("the dispatcher is told the Jobs' namespace");
        assert_eq!(
            job_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace",
            "Jobs go to the dispatcher's own namespace"
        );
        assert_eq!(
            find(&objects, "Deployment", "prefect-k8s-dispatcher")["metadata"]["namespace"],
            namespace
        );
        assert!(allowed(
            &objects,
            namespace,
            "prefect-k8s-dispatcher",
            request("create", "batch", "jobs")
        ));
        let reporter = container(&objects, "Deployment", "prefect-k8s-reporter");
        let watched = reporter["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == "PREFECT_K8S_REPORTER_NAMESPACE")
            .expect("the reporter watches one namespace, not the cluster");
        assert_eq!(
            watched["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert!(allowed(
            &objects,
            namespace,
            "prefect-k8s-reporter",
            request("watch", "", "pods")
        ));
    }
}

/// Whether a `matchLabels` selector selects a pod with these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|wanted| wanted.iter().all(|(key, value)| &labels[key] == value))
}

#[test]
fn only_the_agents_pods_reach_the_bundled_nats() {
    let objects = rbac_objects("default");
    let policy = find(&objects, "NetworkPolicy", "prefect-k8s-nats");
    let nats_pod = &find(&objects, "StatefulSet", "prefect-k8s-nats")["spec"]["template"]
        ["metadata"]["labels"];
    assert!(
        selects(&policy["spec"]["podSelector"], nats_pod),
        "the policy covers the NATS pods"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    let client_rules: Vec<&Value> = rules
        .iter()
        .filter(|rule| {
            rule["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|port| port["port"] == 4222))
        })
        .collect();
    assert!(
        !client_rules.is_empty(),
        "some pods may reach the client port"
    );
    for rule in client_rules {
        let sources = rule["from"]
            .as_array()
            .expect("the client port is not open to all");
        for deployment in [
            "prefect-k8s-poller",
            "prefect-k8s-dispatcher",
            "prefect-k8s-reporter",
        ] {
            let labels =
                &find(&objects, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"];
            assert!(
                sources
                    .iter()
                    .any(|source| selects(&source["podSelector"], labels)),
                "{deployment} may reach NATS"
            );
        }
        let flow_run_pod = serde_json::json!({"prefect.io/flow-run-id": "x", "job-name": "y"});
        assert!(
            !sources
                .iter()
                .any(|source| selects(&source["podSelector"], &flow_run_pod)),
            "flow-run pods may not reach NATS"
        );
    }
}
