//! [`Emulator`]: start the API server and simulated control plane on 127.0.0.1, expose its URL,
//! kubeconfig and a ready `kube::Client`, and shut everything down on [`Emulator::shutdown`] or
//! drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::api;
use crate::api::authorization::{service_account_token, ADMIN_TOKEN};
use crate::cluster::Cluster;
use crate::config::EmulatorConfig;
use crate::controllers;
use crate::error::EmulatorError;
use crate::kubeconfig;
use crate::tls;

/// A running emulator.
pub struct Emulator {
    cluster: Arc<Cluster>,
    address: SocketAddr,
    kubeconfig_path: PathBuf,
    _kubeconfig_dir: Option<tempfile::TempDir>,
    server: Option<JoinHandle<()>>,
    controllers: Vec<JoinHandle<()>>,
    /// The generated CA when serving HTTPS.
    certificate: Option<tls::ServingCertificate>,
}

impl Emulator {
    /// Bind, write the kubeconfig, start the controllers and serve.
    pub async fn start(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
        let address = listener.local_addr()?;
        let certificate = if config.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let scheme = if certificate.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{address}");
        let (kubeconfig_path, kubeconfig_dir) = match &config.kubeconfig_path {
            Some(path) => (path.clone(), None),
            None => {
                let dir = tempfile::tempdir()?;
                (dir.path().join("kubeconfig"), Some(dir))
            }
        };
        kubeconfig::write(
            &kubeconfig_path,
            &url,
            ADMIN_TOKEN,
            certificate.as_ref().map(|c| c.ca_pem.as_str()),
        )?;
        let cluster = Cluster::new(config);
        *cluster.server_url.lock() = url.clone();
        let controllers = controllers::spawn_all(&cluster);
        let router = api::router(cluster.clone());
        let shutdown = cluster.shutdown.clone();
        let server = match &certificate {
            Some(certificate) => {
                let certificate = certificate.clone();
                tokio::spawn(async move {
                    if let Err(err) = tls::serve(listener, router, &certificate, shutdown).await {
                        tracing::error!(%err, "kube-emulator TLS server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await;
                if let Err(err) = served {
                    tracing::error!(%err, "kube-emulator server failed");
                }
            }),
        };
        tracing::info!(%url, kubeconfig = %kubeconfig_path.display(), "kube-emulator serving");
        Ok(Self {
            cluster,
            address,
            kubeconfig_path,
            _kubeconfig_dir: kubeconfig_dir,
            server: Some(server),
            controllers,
            certificate,
        })
    }

    /// `http://127.0.0.1:<port>` (or `https://` with `tls`).
    pub fn url(&self) -> String {
        let scheme = if self.certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.address)
    }

    /// PEM of the CA that signed the serving certificate, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.certificate.as_ref().map(|c| c.ca_pem.as_str())
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Path of the kubeconfig written at start (admin credentials, namespace `default`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A `kube::Client` configured like one built from the kubeconfig (admin user).
    pub fn client(&self) -> Result<kube::Client, EmulatorError> {
        self.client_with_token(ADMIN_TOKEN)
    }

    /// A client authenticating as ServiceAccount `namespace/name` (for RBAC mode).
    pub fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client, EmulatorError> {
        self.client_with_token(&service_account_token(namespace, name))
    }

    /// The bearer token of ServiceAccount `namespace/name`.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        service_account_token(namespace, name)
    }

    /// Write a kubeconfig for ServiceAccount `namespace/name` to `path`.
    pub fn write_service_account_kubeconfig(
        &self,
        path: &Path,
        namespace: &str,
        name: &str,
    ) -> Result<(), EmulatorError> {
        std::fs::write(
            path,
            kubeconfig::render(
                &self.url(),
                &service_account_token(namespace, name),
                namespace,
                self.ca_pem(),
            ),
        )?;
        Ok(())
    }

    fn client_with_token(&self, token: &str) -> Result<kube::Client, EmulatorError> {
        let mut config = kube::Config::new(
            self.url()
                .parse()
                .map_err(|e: http::uri::InvalidUri| EmulatorError::Client(e.to_string()))?,
        );
        config.default_namespace = "default".into();
        config.auth_info.token = Some(token.to_string().into());
        if let Some(certificate) = &self.certificate {
            config.root_cert = Some(vec![certificate.ca_der.clone()]);
        }
        kube::Client::try_from(config).map_err(|e| EmulatorError::Client(e.to_string()))
    }

    /// Forget watch history (watches resuming from older resourceVersions get 410) and cut
    /// open watches. Returns the compaction resourceVersion.
    pub fn compact(&self) -> u64 {
        let rv = self.cluster.store.compact();
        self.cluster.cut_watches();
        rv
    }

    /// Cut every open watch stream.
    pub fn cut_watches(&self) {
        self.cluster.cut_watches();
    }

    /// Replace the fault-injection settings.
    pub fn set_faults(&self, settings: crate::faults::FaultSettings) {
        self.cluster.faults.set(settings);
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.cluster.store.resource_version()
    }

    /// Stop serving and stop the controllers (kills process-runtime children).
    pub async fn shutdown(mut self) {
        self.cluster.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
        }
        for handle in self.controllers.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), handle).await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cluster.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
        }
        for handle in self.controllers.drain(..) {
            handle.abort();
        }
    }
}
