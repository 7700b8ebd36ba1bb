//! [`FaultProxy`]: an HTTP reverse proxy between a service and a real server
//! (Prefect), counting requests and injecting faults on the matching ones:
//! an error status, latency, no answer at all, a reset connection, or the
//! request forwarded and the answer dropped (the server committed, the client
//! never hears it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// What happens to a matching request.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this status and a small JSON body, without forwarding.
    Status(u16),
    /// Wait this long, then forward.
    Latency(Duration),
    /// Never answer (the client's own timeout ends it).
    Blackhole,
    /// Close the connection without forwarding or answering.
    Reset,
    /// Forward, then close the connection instead of answering.
    DropAfterForward,
}

/// A fault on the requests whose method and path match.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    /// `None`: any method.
    pub method: Option<String>,
    /// Matches when the path (with query) contains this text; `None`: any.
    pub path_contains: Option<String>,
    /// Applies to this many matching requests, then goes; `None`: until cleared.
    pub times: Option<u32>,
}

impl Fault {
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            method: None,
            path_contains: None,
            times: None,
        }
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_uppercase());
        self
    }

    pub fn path(mut self, contains: &str) -> Self {
        self.path_contains = Some(contains.to_string());
        self
    }

    pub fn times(mut self, times: u32) -> Self {
        self.times = Some(times);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
    }
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    /// `(method, path with query)` of every request received.
    seen: Vec<(String, String)>,
}

impl State {
    /// The fault for this request, if any (using up one of its `times`).
    fn take_fault(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let index = self.faults.iter().position(|f| f.matches(method, path))?;
        let fault = &mut self.faults[index];
        let kind = fault.kind.clone();
        if let Some(times) = fault.times.as_mut() {
            *times -= 1;
            if *times == 0 {
                self.faults.remove(index);
            }
        }
        Some(kind)
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    port: u16,
    upstream_path: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies to `upstream` (e.g. `http://127.0.0.1:4200/api`) on a free port.
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = reqwest::Url::parse(upstream).expect("upstream is a URL");
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let origin = format!(
            "{}://{}:{}",
            upstream.scheme(),
            upstream.host_str().expect("upstream host"),
            upstream.port_or_known_default().expect("upstream port")
        );
        let task = tokio::spawn(serve(listener, origin, state.clone()));
        FaultProxy {
            port,
            upstream_path: upstream.path().trim_end_matches('/').to_string(),
            state,
            task,
        }
    }

    /// The proxy's URL with the upstream's path (what a client is given).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.upstream_path)
    }

    /// Adds a fault (earlier faults match first).
    pub fn add(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.state.lock().faults.clear();
    }

    /// How many requests with this method (any when `None`) had a path containing `path`.
    pub fn count(&self, method: Option<&str>, path: &str) -> usize {
        let method = method.map(str::to_uppercase);
        self.state
            .lock()
            .seen
            .iter()
            .filter(|(m, p)| method.as_deref().is_none_or(|x| x == m) && p.contains(path))
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, origin: String, state: Arc<Mutex<State>>) {
    // reqwest is built without a default TLS provider in this workspace; the
    // proxy may start before any client of the test has installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (client, origin, state) = (client.clone(), origin.clone(), state.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(request, client.clone(), origin.clone(), state.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Answer = Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>>;

async fn handle(
    request: Request<Incoming>,
    client: reqwest::Client,
    origin: String,
    state: Arc<Mutex<State>>,
) -> Answer {
    let method = request.method().as_str().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let fault = {
        let mut state = state.lock();
        state.seen.push((method.clone(), path.clone()));
        state.take_fault(&method, &path)
    };
    match fault {
        Some(FaultKind::Status(code)) => return Ok(status(code)),
        Some(FaultKind::Blackhole) => {
            std::future::pending::<()>().await;
        }
        Some(FaultKind::Reset) => return Err("fault: connection reset".into()),
        Some(FaultKind::Latency(delay)) => tokio::time::sleep(delay).await,
        Some(FaultKind::DropAfterForward) | None => {}
    }
    let answer = forward(request, &client, &origin, &path).await?;
    if fault == Some(FaultKind::DropAfterForward) {
        return Err("fault: answer dropped after the server committed".into());
    }
    Ok(answer)
}

async fn forward(
    request: Request<Incoming>,
    client: &reqwest::Client,
    origin: &str,
    path: &str,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut outbound = client.request(parts.method, format!("{origin}{path}"));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            outbound = outbound.header(name, value);
        }
    }
    let upstream = outbound.body(body).send().await?;
    let mut answer = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if name != hyper::header::TRANSFER_ENCODING && name != hyper::header::CONNECTION {
            answer = answer.header(name, value);
        }
    }
    let bytes = upstream.bytes().await?;
    Ok(answer.body(Full::new(bytes))?)
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let body = format!("{{\"detail\": \"injected fault {code}\"}}");
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
