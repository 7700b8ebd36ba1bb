//! `PREFECT_API_SSL_CERT_FILE`: the client trusts the certificate authorities
//! of that PEM bundle for the API's TLS, as Prefect's own client does. The
//! "API" is a small rustls server on loopback whose certificate is signed by
//! a CA made for the test: without the bundle the handshake fails (unknown
//! issuer), with it `/health` answers.

use std::sync::Arc;

use prefect_client::{ClientConfig, PrefectClient, PrefectError, RetryPolicy};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA (its PEM) and a serving certificate and key for 127.0.0.1 it signed.
struct Certificates {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn certificates() -> Certificates {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "prefect-client test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Certificates {
        ca_pem: ca_cert.pem(),
        cert_der: leaf.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Serves HTTPS on loopback, answering every request `200 {}`; its URL.
async fn https_server(certificates: &Certificates) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificates.cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certificates.key_der.clone().into()),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    url
}

/// A client configured from the environment; a failed handshake is not retried.
fn client(url: &str) -> Result<PrefectClient, PrefectError> {
    let config = ClientConfig::new(url)?.with_retry(RetryPolicy::no_retries());
    PrefectClient::new(config.with_env_settings()?)
}

// One test: it sets the process environment, which tests running in parallel
// in the same binary would see.
#[tokio::test]
async fn the_api_is_trusted_through_prefect_api_ssl_cert_file() {
    let certificates = certificates();
    let url = https_server(&certificates).await;
    let dir = tempfile::tempdir().unwrap();

    std::env::remove_var("PREFECT_API_SSL_CERT_FILE");
    let untrusted = client(&url).unwrap().health().await;
    assert!(
        matches!(untrusted, Err(PrefectError::Transport(_))),
        "the test CA is not a system root: {untrusted:?}"
    );

    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &certificates.ca_pem).unwrap();
    std::env::set_var("PREFECT_API_SSL_CERT_FILE", &bundle);
    client(&url)
        .unwrap()
        .health()
        .await
        .expect("the API is trusted through the bundle");

    let not_pem = dir.path().join("not-a-bundle.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    std::env::set_var("PREFECT_API_SSL_CERT_FILE", &not_pem);
    let error = client(&url).unwrap_err().to_string();
    assert!(error.contains("PREFECT_API_SSL_CERT_FILE"), "{error}");
    assert!(error.contains("not-a-bundle.pem"), "{error}");

    std::env::set_var("PREFECT_API_SSL_CERT_FILE", dir.path().join("missing.pem"));
    let error = client(&url).unwrap_err().to_string();
    assert!(
        error.contains("cannot read PREFECT_API_SSL_CERT_FILE"),
        "{error}"
    );
    std::env::remove_var("PREFECT_API_SSL_CERT_FILE");
}
