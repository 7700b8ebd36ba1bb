//! [`Cluster`]: the shared state of one emulator instance — store, registry, captured logs,
//! fault settings, watch-cut signal and configuration — handed to the HTTP layer and controllers.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admission::WriteContext;
use crate::config::{EmulatorConfig, NodeCapacity};
use crate::container_logs::ContainerLogs;
use crate::faults::Faults;
use crate::registry::Registry;
use crate::resources;
use crate::store::Store;

/// A Ready Node as a kubelet registers it, with `capacity` as both capacity and
/// allocatable and `labels` besides the well-known ones.
pub fn node_object(name: &str, capacity: &NodeCapacity, labels: &[(&str, &str)]) -> Value {
    let now = crate::time::now_rfc3339();
    let mut node_labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    });
    for (key, value) in labels {
        node_labels[*key] = json!(value);
    }
    let resources =
        json!({"cpu": capacity.cpu, "memory": capacity.memory, "pods": capacity.pods.to_string()});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available"},
                {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure"},
                {"type": "PIDPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": "KubeletReady", "message": "kubelet is posting ready status"}
            ],
            "addresses": [
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "Hostname", "address": name}
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "6.1.0",
                "osImage": "kube-emulator", "containerRuntimeVersion": "emulator://1.0.0",
                "kubeletVersion": "v1.36.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"
            }
        }
    })
}

/// Everything one emulator instance shares between tasks.
pub struct Cluster {
    /// Configuration.
    pub config: EmulatorConfig,
    /// The object store.
    pub store: Arc<Store>,
    /// Verbs with apiserver semantics.
    pub registry: Registry,
    /// Captured container output.
    pub logs: ContainerLogs,
    /// Fault injection.
    pub faults: Faults,
    /// Bumped to cut every open watch stream.
    pub watch_cut: watch::Sender<u64>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// The server URL (set once bound).
    pub server_url: parking_lot::Mutex<String>,
    /// Aggregation index of events recorded by the simulated components: correlation key ->
    /// event name.
    pub recorded_events: parking_lot::Mutex<std::collections::HashMap<String, String>>,
}

impl Cluster {
    /// A new cluster with the system namespaces, their default ServiceAccounts and the node.
    pub fn new(config: EmulatorConfig) -> Arc<Self> {
        let store = Arc::new(Store::new(config.watch_history, config.watch_buffer));
        let (watch_cut, _) = watch::channel(0);
        let cluster = Arc::new(Self {
            registry: Registry::new(store.clone()),
            store,
            logs: ContainerLogs::default(),
            faults: Faults::default(),
            watch_cut,
            shutdown: CancellationToken::new(),
            server_url: parking_lot::Mutex::new(String::new()),
            recorded_events: parking_lot::Mutex::new(std::collections::HashMap::new()),
            config,
        });
        cluster.bootstrap();
        cluster
    }

    fn bootstrap(&self) {
        let ctx = WriteContext::update("kube-apiserver");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = self.registry.create(
                resources::namespaces(),
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                &ctx,
                false,
            );
            self.ensure_namespace_defaults(ns);
        }
        let node = node_object(
            &self.config.node_name,
            &self.config.node_capacity,
            &[("node-role.kubernetes.io/control-plane", "")],
        );
        let _ = self
            .registry
            .create(resources::nodes(), "", node, &ctx, false);
        self.bootstrap_cluster_roles(&ctx);
    }

    /// The default user-facing ClusterRoles (`cluster-admin`, `admin`, `edit`, `view`, rules
    /// approximating the real bootstrap policy for the kinds served here) and the
    /// `cluster-admin` binding for `system:masters`.
    fn bootstrap_cluster_roles(&self, ctx: &WriteContext) {
        let cluster_roles = resources::by_plural("rbac.authorization.k8s.io", "clusterroles");
        let bindings = resources::by_plural("rbac.authorization.k8s.io", "clusterrolebindings");
        let read = json!(["get", "list", "watch"]);
        let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
        let workloads = json!({
            "": ["pods", "pods/log", "pods/status", "events", "configmaps", "services", "persistentvolumeclaims", "serviceaccounts"],
            "apps": ["deployments", "deployments/status", "statefulsets", "statefulsets/status"],
            "batch": ["jobs", "jobs/status"],
            "autoscaling": ["horizontalpodautoscalers"],
            "policy": ["poddisruptionbudgets"],
            "networking.k8s.io": ["networkpolicies"],
            "coordination.k8s.io": ["leases"],
            "events.k8s.io": ["events"]
        });
        let mut view_rules = Vec::new();
        let mut edit_rules = Vec::new();
        for (group, resources) in workloads.as_object().expect("table") {
            view_rules.push(json!({"apiGroups": [group], "resources": resources, "verbs": read}));
            let mut all: Vec<Value> = read.as_array().expect("verbs").clone();
            all.extend(write.as_array().expect("verbs").iter().cloned());
            edit_rules.push(json!({"apiGroups": [group], "resources": resources, "verbs": all}));
        }
        edit_rules.push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "delete", "deletecollection", "patch", "update"]}));
        view_rules.push(json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}));
        let mut admin_rules = edit_rules.clone();
        admin_rules.push(json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["*"]}));
        admin_rules.push(json!({"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]}));
        let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        for (name, rules) in [
            (
                "cluster-admin",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
            ),
            ("admin", Value::Array(admin_rules)),
            ("edit", Value::Array(edit_rules)),
            ("view", Value::Array(view_rules)),
        ] {
            let _ = self.registry.create(
                cluster_roles,
                "",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": name, "labels": labels}, "rules": rules}),
                ctx,
                false,
            );
        }
        // Every authenticated user may ask what it can do (`kubectl auth can-i`).
        let _ = self.registry.create(
            cluster_roles,
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "system:basic-user", "labels": labels},
                   "rules": [{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]}),
            ctx,
            false,
        );
        let _ = self.registry.create(
            bindings,
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "system:basic-user", "labels": labels},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:basic-user"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
            ctx,
            false,
        );
        let _ = self.registry.create(
            bindings,
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "cluster-admin", "labels": labels},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
            ctx,
            false,
        );
    }

    /// Create the namespace's `default` ServiceAccount and `kube-root-ca.crt` ConfigMap (what
    /// the ServiceAccount and root-CA publisher controllers do).
    pub fn ensure_namespace_defaults(&self, namespace: &str) {
        let ctx = WriteContext::update("kube-controller-manager");
        let _ = self.registry.create(
            resources::service_accounts(),
            namespace,
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
            &ctx,
            false,
        );
        let _ = self.registry.create(
            resources::configmaps(),
            namespace,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"},
                   "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nkube-emulator has no TLS\n-----END CERTIFICATE-----\n"}}),
            &ctx,
            false,
        );
    }

    /// Cut every open watch stream (clients resume from their last resourceVersion).
    pub fn cut_watches(&self) {
        self.watch_cut.send_modify(|generation| *generation += 1);
    }
}
