//! Least privilege, read from the Roles `prefect-k8s install --rbac` prints
//! (the same as `deploy/`): the poller can do nothing in Kubernetes, the
//! dispatcher only create, read, release (patch) and withdraw (delete) Jobs, the reporter only watch, read logs,
//! delete Jobs and hold its Lease. Checked with the RBAC matching rules of the
//! API server (verbs, API groups, resources with subresources, resource names).
//! With `--flow-namespace`, the Job permissions are there and nothing else of
//! the agent is. On the network, only the poller and the dispatchers reach
//! the bundled NATS's client port, and only NATS nodes its cluster port.

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
    allowed_in(objects, namespace, namespace, account, request)
}

/// Whether the ServiceAccount `account` of `account_namespace` may make
/// `request` in `namespace`.
fn allowed_in(
    objects: &[Value],
    namespace: &str,
    account_namespace: &str,
    account: &str,
    request: Request<'_>,
) -> bool {
    objects
        .iter()
        .filter(|object| object["kind"] == "RoleBinding")
        .filter(|binding| binding["metadata"]["namespace"] == namespace)
        .filter(|binding| {
            binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|subject| {
                    subject["kind"] == "ServiceAccount"
                        && subject["name"] == account
                        && subject["namespace"] == account_namespace
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

#[test]
fn with_a_flow_namespace_the_job_permissions_are_there_and_nothing_else() {
    let objects = parse_stream(&install(&[
        "--rbac",
        "-n",
        "agent",
        "--flow-namespace",
        "flows",
    ]));
    let dispatcher = "prefect-k8s-dispatcher";
    let reporter = "prefect-k8s-reporter";
    let can = |namespace: &str, account: &str, probe: Request<'_>| {
        allowed_in(&objects, namespace, "agent", account, probe)
    };
    assert!(can("flows", dispatcher, request("create", "batch", "jobs")));
    assert!(!can(
        "agent",
        dispatcher,
        request("create", "batch", "jobs")
    ));
    for needed in [
        request("watch", "batch", "jobs"),
        request("delete", "batch", "jobs"),
        request("watch", "", "pods"),
        request("get", "", "pods/log"),
        request("patch", "", "events"),
    ] {
        assert!(can("flows", reporter, needed), "{needed:?} in flows");
        assert!(!can("agent", reporter, needed), "{needed:?} not in agent");
    }
    let lease = Request {
        name: Some("prefect-k8s-reporter"),
        ..request("update", "coordination.k8s.io", "leases")
    };
    assert!(
        can("agent", reporter, lease),
        "the Lease stays with the agent"
    );
    assert!(!can("flows", reporter, lease));
    assert!(!can(
        "flows",
        reporter,
        request("create", "coordination.k8s.io", "leases")
    ));
    for account in ["prefect-k8s-poller", dispatcher, reporter] {
        for refused in [
            request("get", "", "secrets"),
            request("create", "", "pods"),
            request("create", "", "pods/exec"),
            request("create", "", "serviceaccounts/token"),
        ] {
            assert!(!can("flows", account, refused), "{account} {refused:?}");
        }
    }
    let in_flows: Vec<String> = objects
        .iter()
        .filter(|object| object["metadata"]["namespace"] == "flows")
        .map(|object| {
            format!(
                "{} {}",
                object["kind"].as_str().unwrap(),
                object["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        in_flows,
        [
            "Role prefect-k8s-dispatcher",
            "Role prefect-k8s-reporter",
            "RoleBinding prefect-k8s-dispatcher",
            "RoleBinding prefect-k8s-reporter",
        ],
        "nothing else of the agent is in the flow namespace"
    );
    let dispatcher_pod = container(&objects, "Deployment", dispatcher);
    assert_eq!(env_value(dispatcher_pod, "NAMESPACE"), Some("flows"));
    let reporter_pod = container(&objects, "Deployment", reporter);
    assert_eq!(
        env_value(reporter_pod, "PREFECT_K8S_REPORTER_NAMESPACE"),
        Some("flows")
    );
}

/// Whether a selector (`matchLabels`, `matchExpressions` with `In`) selects
/// a pod with these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let labels_match = selector["matchLabels"]
        .as_object()
        .is_none_or(|wanted| wanted.iter().all(|(key, value)| &labels[key] == value));
    let expressions_match = selector["matchExpressions"]
        .as_array()
        .is_none_or(|expressions| {
            expressions.iter().all(|expression| {
                assert_eq!(expression["operator"], "In", "{expression}");
                expression["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|value| &labels[expression["key"].as_str().unwrap()] == value)
            })
        });
    assert!(
        selector["matchLabels"].is_object() || selector["matchExpressions"].is_array(),
        "an empty selector selects every pod: {selector}"
    );
    labels_match && expressions_match
}

/// The sources a NetworkPolicy lets reach `port`.
fn sources_of(policy: &Value, port: u64) -> Vec<Value> {
    let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
    let rules: Vec<&Value> = rules
        .iter()
        .filter(|rule| {
            rule["ports"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p["port"] == port))
        })
        .collect();
    assert!(!rules.is_empty(), "some pods may reach port {port}");
    rules
        .iter()
        .flat_map(|rule| {
            rule["from"]
                .as_array()
                .unwrap_or_else(|| panic!("port {port} is not open to all"))
                .clone()
        })
        .collect()
}

fn pod_labels<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
}

#[test]
fn only_the_poller_and_the_dispatchers_reach_the_bundled_nats() {
    let objects = rbac_objects("default");
    let policy = find(&objects, "NetworkPolicy", "prefect-k8s-nats");
    let nats_pod = pod_labels(&objects, "StatefulSet", "prefect-k8s-nats");
    assert!(
        selects(&policy["spec"]["podSelector"], nats_pod),
        "the policy covers the NATS pods"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let reaches = |port: u64, labels: &Value| {
        sources_of(policy, port).iter().any(|source| {
            source["namespaceSelector"].is_null() && selects(&source["podSelector"], labels)
        })
    };
    for deployment in ["prefect-k8s-poller", "prefect-k8s-dispatcher"] {
        let labels = pod_labels(&objects, "Deployment", deployment);
        assert!(reaches(4222, labels), "{deployment} may reach NATS");
        assert!(
            !reaches(6222, labels),
            "{deployment} may not join the cluster"
        );
    }
    let reporter = pod_labels(&objects, "Deployment", "prefect-k8s-reporter");
    assert!(!reaches(4222, reporter), "the reporter does not use NATS");
    assert!(reaches(6222, nats_pod), "NATS nodes route to each other");
    // A flow-run pod may carry any label but a `prefect-k8s.io/` one (the
    // dispatcher refuses those): the agent's other labels, from its
    // deployment's name or its `labels` job variable, do not let it in.
    let flow_run_pod = serde_json::json!({
        "prefect.io/flow-run-id": "x",
        "job-name": "y",
        "app.kubernetes.io/name": "prefect-k8s",
        "app.kubernetes.io/part-of": "prefect-k8s",
        "app.kubernetes.io/component": "dispatcher",
    });
    for port in [4222, 6222] {
        assert!(
            !reaches(port, &flow_run_pod),
            "flow-run pods may not reach port {port}"
        );
    }
}
