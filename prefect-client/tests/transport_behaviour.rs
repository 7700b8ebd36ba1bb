//! Retry, header and CSRF behaviour of the transport, against a tiny
//! scripted HTTP/1.1 server on loopback: each incoming request gets the
//! next scripted reaction, and every request is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prefect_client::{
    ClientConfig, PrefectClient, PrefectError, RetryPolicy, SetStateStatus, StateCreate,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use uuid::Uuid;

/// What the scripted server does with one request.
#[derive(Clone)]
enum Reaction {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Close the connection without answering.
    Hangup,
    /// Answer only after this long.
    Stall(Duration, u16, String),
}

fn respond(status: u16, body: &str) -> Reaction {
    Reaction::Respond {
        status,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn respond_with(status: u16, headers: Vec<(&'static str, String)>, body: &str) -> Reaction {
    Reaction::Respond {
        status,
        headers,
        body: body.to_string(),
    }
}

#[derive(Clone, Debug)]
struct RecordedRequest {
    method: String,
    path: String,
    /// Lower-cased header names.
    headers: HashMap<String, String>,
    body: String,
    received: Instant,
}

struct ScriptedServer {
    url: String,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl ScriptedServer {
    /// Serves `script` in order; requests beyond it get 500.
    async fn start(script: Vec<Reaction>) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    // Keep-alive: several requests may arrive on one connection.
                    while let Some(request) = read_request(&mut stream).await {
                        recorded.lock().unwrap().push(request);
                        let reaction = script
                            .lock()
                            .unwrap()
                            .next()
                            .unwrap_or_else(|| respond(500, "script exhausted"));
                        let (status, headers, body) = match reaction {
                            Reaction::Hangup => return,
                            Reaction::Stall(wait, status, body) => {
                                tokio::time::sleep(wait).await;
                                (status, Vec::new(), body)
                            }
                            Reaction::Respond {
                                status,
                                headers,
                                body,
                            } => (status, headers, body),
                        };
                        let mut answer = format!(
                            "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                            body.len()
                        );
                        for (name, value) in headers {
                            answer.push_str(&format!("{name}: {value}\r\n"));
                        }
                        answer.push_str("\r\n");
                        answer.push_str(&body);
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedServer { url, requests }
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<RecordedRequest> {
    let mut request_line = String::new();
    if stream.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let received = Instant::now();
    let mut parts = request_line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(RecordedRequest {
        method,
        path,
        headers,
        body: String::from_utf8(body).ok()?,
        received,
    })
}

/// Fast retries so tests do not wait on backoff.
fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
        jitter_factor: 0.2,
    }
}

fn client_for(server: &ScriptedServer, retry: RetryPolicy) -> PrefectClient {
    PrefectClient::new(
        ClientConfig::new(&server.url)
            .unwrap()
            .with_retry(retry)
            .with_request_timeout(Duration::from_millis(500)),
    )
    .unwrap()
}

const CSRF_DISABLED: &str = r#"{"detail":"CSRF protection is disabled."}"#;

fn accept_body() -> String {
    format!(
        r#"{{"status":"ACCEPT","state":{{"id":"{}","type":"PENDING","name":"Pending","timestamp":"2026-11-27T05:00:00.000000Z","message":null,"data":null,"state_details":{{}}}},"details":{{"type":"accept_details"}}}}"#,
        Uuid::new_v4()
    )
}

#[tokio::test]
async fn database_locked_503_is_retried_with_the_same_body() {
    let server = ScriptedServer::start(vec![
        respond(422, CSRF_DISABLED),
        respond(503, r#"{"exception_message":"Service Unavailable"}"#),
        respond(503, "database is locked"),
        respond_with(201, Vec::new(), &accept_body()),
    ])
    .await;
    let client = client_for(&server, fast_retries(5));
    let flow_run_id = Uuid::new_v4();
    let result = client
        .set_flow_run_state(
            flow_run_id,
            &StateCreate::pending_claim(Uuid::new_v4()),
            false,
        )
        .await
        .unwrap();
    assert_eq!(result.status, SetStateStatus::Accept);
    assert!(result.new_state_written);

    let requests = server.requests();
    let proposals: Vec<&RecordedRequest> = requests
        .iter()
        .filter(|request| request.path.ends_with("/set_state"))
        .collect();
    assert_eq!(proposals.len(), 3);
    assert!(proposals
        .iter()
        .all(|request| request.body == proposals[0].body));
    let body: serde_json::Value = serde_json::from_str(&proposals[0].body).unwrap();
    assert!(body["state"]["state_details"]["transition_id"].is_string());
    assert_eq!(body["force"], false);
}

#[tokio::test]
async fn retry_after_is_waited_for_at_least() {
    let server = ScriptedServer::start(vec![
        respond_with(429, vec![("retry-after", "1".into())], "{}"),
        respond(200, "true"),
    ])
    .await;
    // Backoff alone would wait about 5 ms.
    let client = client_for(&server, fast_retries(3));
    client.health().await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].received - requests[0].received;
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
}

#[tokio::test]
async fn maintenance_answers_do_not_consume_the_retry_budget() {
    let maintenance = || {
        respond_with(
            503,
            vec![
                ("prefect-maintenance", "true".into()),
                ("retry-after", "0".into()),
            ],
            "{}",
        )
    };
    let server = ScriptedServer::start(vec![
        maintenance(),
        maintenance(),
        maintenance(),
        respond(503, "{}"),
        respond(200, "true"),
    ])
    .await;
    let client = client_for(&server, fast_retries(1));
    client.health().await.unwrap();
    assert_eq!(server.requests().len(), 5);
}

#[tokio::test]
async fn exhausted_retries_return_a_retryable_server_error() {
    let server = ScriptedServer::start(vec![respond(502, "bad gateway"); 3]).await;
    let client = client_for(&server, fast_retries(2));
    let error = client.health().await.unwrap_err();
    assert!(
        matches!(error, PrefectError::Server { status: 502, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = ScriptedServer::start(vec![
        respond(404, r#"{"detail":"Flow run not found"}"#),
        respond(200, "true"),
    ])
    .await;
    let client = client_for(&server, fast_retries(5));
    let error = client.read_flow_run(Uuid::new_v4()).await.unwrap_err();
    assert!(
        matches!(&error, PrefectError::NotFound { detail } if detail == "Flow run not found"),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn dropped_connections_and_timeouts_are_retried() {
    let server = ScriptedServer::start(vec![
        Reaction::Hangup,
        Reaction::Stall(Duration::from_secs(2), 200, "true".into()),
        respond(200, "true"),
    ])
    .await;
    let client = client_for(&server, fast_retries(3));
    client.health().await.unwrap();
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn unreachable_server_is_a_retryable_transport_error() {
    let port = test_stack::ports::free_port();
    let client = PrefectClient::new(
        ClientConfig::new(&format!("http://127.0.0.1:{port}/api"))
            .unwrap()
            .with_retry(fast_retries(1)),
    )
    .unwrap();
    let error = client.health().await.unwrap_err();
    assert!(matches!(error, PrefectError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn fixed_headers_and_bearer_auth_are_sent() {
    let server = ScriptedServer::start(vec![respond(200, "true")]).await;
    let client = PrefectClient::new(
        ClientConfig::new(&server.url)
            .unwrap()
            .with_api_key("pnu_testkey")
            .with_worker_name("dispatcher-7")
            .with_product_token("prefect-k8s/0.1.0"),
    )
    .unwrap();
    client.health().await.unwrap();
    let request = &server.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/api/health");
    assert_eq!(request.headers["authorization"], "Bearer pnu_testkey");
    assert_eq!(request.headers["x-prefect-api-version"], "0.8.4");
    assert_eq!(
        request.headers["user-agent"],
        "prefect/3.9.1 (API 0.8.4) prefect-k8s/0.1.0"
    );
    assert_eq!(request.headers["x-prefect-worker-name"], "dispatcher-7");
}

#[tokio::test]
async fn auth_string_is_sent_as_basic_instead_of_the_key() {
    let server = ScriptedServer::start(vec![respond(200, "true")]).await;
    let client = PrefectClient::new(
        ClientConfig::new(&server.url)
            .unwrap()
            .with_api_key("pnu_testkey")
            .with_auth_string("admin:s3cret"),
    )
    .unwrap();
    client.health().await.unwrap();
    let request = &server.requests()[0];
    // base64("admin:s3cret")
    assert_eq!(request.headers["authorization"], "Basic YWRtaW46czNjcmV0");
    assert!(!request.headers.contains_key("x-prefect-worker-name"));
}

#[tokio::test]
async fn csrf_token_is_fetched_sent_and_refreshed_when_invalid() {
    let token = |value: &str| {
        respond(
            200,
            &format!(r#"{{"token":"{value}","client":"c","expiration":"2999-01-01T00:00:00Z"}}"#),
        )
    };
    let server = ScriptedServer::start(vec![
        token("first-token"),
        respond(
            403,
            r#"{"detail":"Invalid CSRF token or client identifier."}"#,
        ),
        token("second-token"),
        respond(204, ""),
        respond(204, ""),
        respond(200, "true"),
    ])
    .await;
    let client = client_for(&server, fast_retries(3));
    let run = Uuid::new_v4();
    client
        .update_flow_run_infrastructure_pid(run, "ns:job")
        .await
        .unwrap();
    client
        .update_flow_run_infrastructure_pid(run, "ns:job")
        .await
        .unwrap();
    client.health().await.unwrap();

    let requests = server.requests();
    let summary: Vec<(String, String, Option<String>)> = requests
        .iter()
        .map(|request| {
            let path = request.path.split('?').next().unwrap().to_string();
            (
                request.method.clone(),
                path,
                request.headers.get("prefect-csrf-token").cloned(),
            )
        })
        .collect();
    let patch_path = format!("/api/flow_runs/{run}");
    assert_eq!(
        summary,
        vec![
            ("GET".into(), "/api/csrf-token".into(), None),
            (
                "PATCH".into(),
                patch_path.clone(),
                Some("first-token".into())
            ),
            ("GET".into(), "/api/csrf-token".into(), None),
            (
                "PATCH".into(),
                patch_path.clone(),
                Some("second-token".into())
            ),
            ("PATCH".into(), patch_path, Some("second-token".into())),
            ("GET".into(), "/api/health".into(), None),
        ]
    );
    // One client id throughout, in the query and the header.
    let client_id = requests[1].headers["prefect-csrf-client"].clone();
    assert!(requests[0].path.ends_with(&format!("?client={client_id}")));
    assert_eq!(requests[4].headers["prefect-csrf-client"], client_id);
}

#[tokio::test]
async fn csrf_disabled_answer_switches_the_handshake_off() {
    let server = ScriptedServer::start(vec![
        respond(422, CSRF_DISABLED),
        respond(204, ""),
        respond(204, ""),
    ])
    .await;
    let client = client_for(&server, fast_retries(0));
    let run = Uuid::new_v4();
    for _ in 0..2 {
        client
            .update_flow_run_infrastructure_pid(run, "ns:job")
            .await
            .unwrap();
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests[1..]
        .iter()
        .all(|request| request.method == "PATCH"
            && !request.headers.contains_key("prefect-csrf-token")));
    assert_eq!(requests[1].body, r#"{"infrastructure_pid":"ns:job"}"#);
}
