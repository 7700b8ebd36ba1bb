//! Writing a kubeconfig that kube-rs (`KUBECONFIG`), kubectl and the Python kubernetes client
//! accept: one plain-HTTP cluster, a token user and a context named `kube-emulator`.

use std::path::Path;

/// Render the kubeconfig YAML for `server` with a bearer `token`, trusting `ca_pem` when the
/// server speaks HTTPS.
pub fn render(server: &str, token: &str, namespace: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine;
    let ca = ca_pem
        .map(|pem| {
            format!(
                "\n    certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-emulator
  cluster:
    server: {server}{ca}
contexts:
- name: kube-emulator
  context:
    cluster: kube-emulator
    user: kube-emulator-admin
    namespace: {namespace}
current-context: kube-emulator
preferences: {{}}
users:
- name: kube-emulator-admin
  user:
    token: {token}
"
    )
}

/// Write the kubeconfig to `path` (creating parent directories).
pub fn write(path: &Path, server: &str, token: &str, ca_pem: Option<&str>) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(path, render(server, token, "default", ca_pem))
}
