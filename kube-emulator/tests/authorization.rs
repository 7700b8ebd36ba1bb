//! RBAC mode: ServiceAccount tokens, Roles/Bindings created through the API and enforced, and
//! 403 Forbidden worded like kube-apiserver's.

mod support;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube_emulator::{AuthorizationMode, Emulator, EmulatorConfig};
use serde_json::json;

#[tokio::test]
async fn service_accounts_are_limited_to_their_role() {
    let emulator = Emulator::start(EmulatorConfig {
        authorization: AuthorizationMode::Rbac,
        ..EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let admin = emulator.client().unwrap();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "observer"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]})).unwrap();
    Api::<Role>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding =
        serde_json::from_value(json!({"metadata": {"name": "observer-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "observer", "namespace": "default"}]}))
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let observer = emulator
        .service_account_client("default", "observer")
        .unwrap();
    Api::<Pod>::namespaced(observer.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let err = Api::<Job>::namespaced(observer.clone(), "default")
        .create(
            &PostParams::default(),
            &support::job("nope", "busybox", &["true"], 0),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                status.message,
                "jobs.batch is forbidden: User \"system:serviceaccount:default:observer\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"default\""
            );
        }
        other => panic!("{other:?}"),
    }
    let err = Api::<Pod>::namespaced(observer, "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn kubectl_authenticates_over_tls_in_rbac_mode() {
    let emulator = Emulator::start(EmulatorConfig {
        authorization: AuthorizationMode::Rbac,
        tls: true,
        ..EmulatorConfig::fast()
    })
    .await
    .unwrap();
    assert!(emulator.url().starts_with("https://"));
    // kube-rs trusts the generated CA.
    let admin = emulator.client().unwrap();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin, "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let kubectl = |args: Vec<String>| {
        let kubeconfig = emulator.kubeconfig_path().to_path_buf();
        async move {
            let output = tokio::process::Command::new("kubectl")
                .env("KUBECONFIG", kubeconfig)
                .args(&args)
                .output()
                .await
                .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    // client-go only sends kubeconfig credentials over TLS; with them kubectl is the admin.
    let (ok, out, err) = kubectl(vec!["get".into(), "namespaces".into()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("kube-system"), "{out}");
    // kubectl's typed generators send protobuf; the simple kinds are decoded.
    for args in [
        vec!["create", "namespace", "flows"],
        vec!["-n", "flows", "create", "serviceaccount", "agent"],
        vec![
            "-n",
            "flows",
            "create",
            "secret",
            "generic",
            "api-key",
            "--from-literal=key=pnu_1",
        ],
        vec![
            "-n",
            "flows",
            "create",
            "configmap",
            "settings",
            "--from-literal=a=b",
        ],
    ] {
        let (ok, _, err) = kubectl(args.iter().map(|s| s.to_string()).collect()).await;
        assert!(ok, "kubectl {args:?}: {err}");
    }
    let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (ok, out, err) = kubectl(strings(&["-n", "flows", "create", "token", "agent"])).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), emulator.service_account_token("flows", "agent"));
    let (_, out, _) = kubectl(strings(&["auth", "can-i", "create", "jobs", "-n", "flows"])).await;
    assert_eq!(out.trim(), "yes");
    let (_, out, _) = kubectl(strings(&[
        "auth",
        "can-i",
        "create",
        "jobs",
        "-n",
        "flows",
        "--as=system:serviceaccount:flows:agent",
    ]))
    .await;
    assert_eq!(out.trim(), "no");
    // `auth can-i --list` (a SelfSubjectRulesReview) shows the rules bound in the namespace.
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "runner"},
        "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}]}))
    .unwrap();
    Api::<Role>::namespaced(emulator.client().unwrap(), "flows")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "runner"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runner"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "flows"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(emulator.client().unwrap(), "flows")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let (ok, out, err) = kubectl(strings(&[
        "auth",
        "can-i",
        "--list",
        "-n",
        "flows",
        "--as=system:serviceaccount:flows:agent",
    ]))
    .await;
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "Resources",
            "Non-Resource",
            "URLs",
            "Resource",
            "Names",
            "Verbs"
        ]
    );
    assert!(
        lines.contains(&vec!["jobs.batch", "[]", "[]", "[create", "get]"]),
        "{out}"
    );
    assert!(
        lines.contains(&vec![
            "selfsubjectrulesreviews.authorization.k8s.io",
            "[]",
            "[]",
            "[create]"
        ]),
        "{out}"
    );
    assert!(!out.contains("*.*"), "{out}");
    let token = emulator.service_account_token("default", "robot");
    let (ok, _, err) = kubectl(vec![
        "get".into(),
        "pods".into(),
        format!("--token={token}"),
    ])
    .await;
    assert!(!ok);
    assert!(
        err.contains("User \"system:serviceaccount:default:robot\" cannot list resource \"pods\""),
        "{err}"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn default_cluster_roles_can_be_bound() {
    let emulator = Emulator::start(EmulatorConfig {
        authorization: AuthorizationMode::Rbac,
        ..EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let admin = emulator.client().unwrap();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "viewer"}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "viewer-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "default"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin, "default")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let viewer = emulator
        .service_account_client("default", "viewer")
        .unwrap();
    Api::<Job>::namespaced(viewer.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let err = Api::<Job>::namespaced(viewer, "default")
        .create(
            &PostParams::default(),
            &support::job("nope", "busybox", &["true"], 0),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    emulator.shutdown().await;
}
