//! The fault proxies over real sockets: each Prefect fault mode as a client
//! sees it (and whether the server saw the request), and the TCP proxy's
//! blackhole (bytes held, then delivered at heal) and reset.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use chaos::prefect_proxy::{PrefectFault, PrefectProxy};
use chaos::tcp_proxy::{TcpFault, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP server counting `POST /api/commit` calls.
async fn counting_server() -> (SocketAddr, Arc<AtomicU64>) {
    let commits = Arc::new(AtomicU64::new(0));
    let counter = commits.clone();
    let app = axum::Router::new().route(
        "/api/commit",
        post(move || {
            let counter = counter.clone();
            async move { counter.fetch_add(1, Ordering::SeqCst).to_string() }
        }),
    );
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, commits)
}

fn client() -> reqwest::Client {
    chaos::prefect_api::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn commit(proxy: &PrefectProxy) -> Result<u16, reqwest::Error> {
    let url = format!("{}/commit", proxy.api_url());
    Ok(client().post(url).send().await?.status().as_u16())
}

#[tokio::test]
async fn prefect_faults_look_to_the_client_as_they_should() {
    let (upstream, commits) = counting_server().await;
    let proxy = PrefectProxy::start(upstream).await.unwrap();
    assert_eq!(commit(&proxy).await.unwrap(), 200);

    proxy.set(PrefectFault::Error {
        status: 503,
        rate: 1.0,
    });
    assert_eq!(commit(&proxy).await.unwrap(), 503);
    proxy.set(PrefectFault::Reset { rate: 1.0 });
    assert!(commit(&proxy).await.is_err(), "reset");
    assert_eq!(
        commits.load(Ordering::SeqCst),
        1,
        "neither reached the server"
    );

    proxy.set(PrefectFault::DropAfterCommit { rate: 1.0 });
    let error = commit(&proxy).await.unwrap_err();
    assert!(!error.is_timeout(), "closed, not hung: {error}");
    assert_eq!(commits.load(Ordering::SeqCst), 2, "the server committed it");

    proxy.set(PrefectFault::Blackhole);
    assert!(commit(&proxy).await.unwrap_err().is_timeout());
    proxy.set(PrefectFault::Latency(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    assert_eq!(commit(&proxy).await.unwrap(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        proxy.counters().dropped_after_commit.load(Ordering::SeqCst),
        1
    );
}

/// A TCP server echoing every byte back.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn read_some(stream: &mut TcpStream, within: Duration) -> std::io::Result<Vec<u8>> {
    let mut buffer = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buffer)).await {
        Ok(read) => Ok(buffer[..read?].to_vec()),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[tokio::test]
async fn the_tcp_proxy_holds_bytes_in_a_blackhole_and_resets_connections() {
    let proxy = TcpProxy::start(echo_server().await).await.unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(b"one").await.unwrap();
    assert_eq!(
        read_some(&mut stream, Duration::from_secs(2))
            .await
            .unwrap(),
        b"one"
    );

    proxy.set(TcpFault::Blackhole);
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"two").await.unwrap();
    let held = read_some(&mut stream, Duration::from_millis(500)).await;
    assert_eq!(held.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    proxy.set(TcpFault::Pass);
    assert_eq!(
        read_some(&mut stream, Duration::from_secs(2))
            .await
            .unwrap(),
        b"two"
    );

    proxy.set(TcpFault::Reset);
    let reset = read_some(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(
        reset.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    let answer = read_some(&mut refused, Duration::from_secs(2)).await;
    assert_eq!(
        answer.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
}
