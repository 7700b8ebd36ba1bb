//! Optional HTTPS serving: a throwaway CA and a serving certificate for `127.0.0.1`/`localhost`
//! generated at start, and an accept loop that terminates TLS before handing connections to the
//! same router. Needed for kubectl in RBAC mode, because client-go only sends kubeconfig
//! credentials over TLS.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::error::EmulatorError;

/// The generated CA and serving certificate.
#[derive(Clone)]
pub struct ServingCertificate {
    /// PEM of the CA that signed the serving certificate (goes into the kubeconfig).
    pub ca_pem: String,
    /// DER of the CA (for kube-rs `root_cert`).
    pub ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn tls_error(err: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Tls(err.to_string())
}

/// Generate a CA and a serving certificate for 127.0.0.1 and localhost.
pub fn generate() -> Result<ServingCertificate, EmulatorError> {
    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-emulator-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().map_err(tls_error)?;
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(tls_error)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(tls_error)?;
    Ok(ServingCertificate {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        cert_der: leaf_cert.der().to_vec(),
        key_der: leaf_key.serialize_der(),
    })
}

/// Serve `router` over TLS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    certificate: &ServingCertificate,
    shutdown: CancellationToken,
) -> Result<(), EmulatorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certificate.key_der.clone().into()),
        )
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(router);
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
