//! The HTTP reverse proxy in front of the Prefect server. The services reach
//! Prefect only through it (the workload, the checker and the flow pods go
//! straight to the server); the nemesis switches its [`PrefectFault`]:
//! latency, 500/503 answers, connection resets, the answer dropped after the
//! server committed the request, and a blackhole that accepts and never
//! answers until healed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::RngExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does to the requests it receives.
#[derive(Clone, Debug, PartialEq)]
pub enum PrefectFault {
    /// Forward everything.
    Pass,
    /// Wait this long before forwarding each request.
    Latency(Duration),
    /// Answer `status` (500 or 503) instead of forwarding, with probability `rate`.
    Error { status: u16, rate: f64 },
    /// Reset the client's connection (RST) instead of forwarding, with probability `rate`.
    Reset { rate: f64 },
    /// Forward a mutating request (POST/PUT/PATCH/DELETE), wait for the
    /// server's answer (it has committed), then close the client's
    /// connection without answering; with probability `rate`.
    DropAfterCommit { rate: f64 },
    /// Accept and never answer; held requests lose their connection at heal.
    Blackhole,
}

/// What the proxy did, for the report.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    pub forwarded: AtomicU64,
    pub errors: AtomicU64,
    pub resets: AtomicU64,
    pub dropped_after_commit: AtomicU64,
    pub blackholed: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    mode: watch::Receiver<PrefectFault>,
    counters: ProxyCounters,
}

/// A running proxy; stops when dropped.
pub struct PrefectProxy {
    addr: SocketAddr,
    mode: watch::Sender<PrefectFault>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl PrefectProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<PrefectProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, receiver) = watch::channel(PrefectFault::Pass);
        let shared = Arc::new(Shared {
            upstream,
            client: Client::builder(TokioExecutor::new()).build_http(),
            mode: receiver,
            counters: ProxyCounters::default(),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), shutdown.clone()));
        Ok(PrefectProxy {
            addr,
            mode,
            shared,
            shutdown,
        })
    }

    /// `http://<addr>/api`: the API URL the services are given.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn set(&self, fault: PrefectFault) {
        self.mode.send_replace(fault);
    }

    pub fn counters(&self) -> &ProxyCounters {
        &self.shared.counters
    }
}

impl Drop for PrefectProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
            Err(error) => tracing::warn!(%error, "prefect proxy: accept failed"),
        }
    }
}

/// Why the proxy closed a connection instead of answering.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("connection reset by the nemesis")]
    Reset,
    #[error("answer dropped after the server committed")]
    AfterCommit,
    #[error("blackhole healed")]
    Blackholed,
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(ResettableStream {
        inner: stream,
        reset: reset.clone(),
    });
    let service =
        hyper::service::service_fn(move |request| handle(request, shared.clone(), reset.clone()));
    // A service error makes hyper drop the connection without an answer.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let fault = shared.mode.borrow().clone();
    let counters = &shared.counters;
    match fault {
        PrefectFault::Latency(delay) => tokio::time::sleep(delay).await,
        PrefectFault::Error { status, rate } if roll(rate) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return Ok(injected_error(status));
        }
        PrefectFault::Reset { rate } if roll(rate) => {
            counters.resets.fetch_add(1, Ordering::Relaxed);
            reset.store(true, Ordering::SeqCst);
            return Err(Dropped::Reset);
        }
        PrefectFault::DropAfterCommit { rate } if mutating(request.method()) && roll(rate) => {
            let _ = forward(request, &shared).await;
            counters
                .dropped_after_commit
                .fetch_add(1, Ordering::Relaxed);
            return Err(Dropped::AfterCommit);
        }
        PrefectFault::Blackhole => {
            counters.blackholed.fetch_add(1, Ordering::Relaxed);
            wait_while_blackholed(shared.mode.clone()).await;
            return Err(Dropped::Blackholed);
        }
        _ => {}
    }
    Ok(forward(request, &shared).await)
}

async fn wait_while_blackholed(mut mode: watch::Receiver<PrefectFault>) {
    let _ = mode
        .wait_for(|fault| *fault != PrefectFault::Blackhole)
        .await;
}

/// Forwards one request; 502 when the server cannot be reached.
async fn forward(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    match try_forward(request, shared).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "prefect proxy: upstream failed");
            plain(StatusCode::BAD_GATEWAY, "upstream failed")
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn try_forward(
    request: Request<Incoming>,
    shared: &Shared,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{}{path}", shared.upstream).parse()?;
    parts.headers.remove(http::header::HOST);
    let upstream = Request::from_parts(parts, Full::new(body));
    let (mut parts, body) = shared.client.request(upstream).await?.into_parts();
    let body = body.collect().await?.to_bytes();
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn injected_error(status: u16) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    plain(status, r#"{"detail":"injected by the chaos proxy"}"#)
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn roll(rate: f64) -> bool {
    rand::rng().random::<f64>() < rate
}

/// A client connection that closes with RST instead of FIN once `reset` is
/// set (SO_LINGER 0 at drop).
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            reset_on_close(&self.inner);
        }
    }
}

/// SO_LINGER 0: the close that follows sends RST. Tokio deprecates
/// `set_linger` because a *non-zero* linger blocks on drop; zero does not.
pub(crate) fn reset_on_close(stream: &TcpStream) {
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
