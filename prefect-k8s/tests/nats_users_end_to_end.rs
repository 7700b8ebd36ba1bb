//! The real poller and dispatcher on the NATS that `prefect-k8s install`
//! configures: nats-server runs the install's `auth.conf` with the passwords
//! of its Secret, and each service logs in as its Deployment says (its
//! `NATS_USER`, the Secret's password). A flow run becomes a Job, again after
//! nats-server restarts (the services reconnect and set up again), and
//! nats-server refuses none of their calls. A client without the password —
//! where a flow-run pod stands — cannot get in, so it cannot publish a
//! `FlowRunDue`: the work queue holds nothing it sent.

mod manifest_tools;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use manifest_tools::{container, env_value, find, install, parse_stream};
use prefect_client::{ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, PrefectClient};
use prost::Message as _;
use serde_json::Value;
use service_runtime::nats::NatsOptions;
use service_runtime::nats_auth::{DISPATCHER_PASSWORD_ENV, POLLER_PASSWORD_ENV};
use test_stack::nats::NatsServer;
use test_stack::prefect::{unique_name, PrefectServer};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(180);

async fn eventually<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    test_stack::wait::eventually(what, PATIENCE, Duration::from_millis(250), attempt).await
}

/// What install prints for the pool: NATS's users and the services' logins.
struct Installed {
    auth_conf: String,
    passwords: Vec<(String, String)>,
    objects: Vec<Value>,
}

impl Installed {
    fn for_pool(pool: &str) -> Installed {
        let objects = parse_stream(&install(&["--rbac", "--work-pool", pool]));
        let auth_conf = find(&objects, "ConfigMap", "prefect-k8s-nats-config")["data"]["auth.conf"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret = &find(&objects, "Secret", "prefect-k8s-nats-auth")["stringData"];
        let passwords = vec![
            (
                POLLER_PASSWORD_ENV.to_owned(),
                secret["poller-password"].as_str().unwrap().to_owned(),
            ),
            (
                DISPATCHER_PASSWORD_ENV.to_owned(),
                secret["dispatcher-password"].as_str().unwrap().to_owned(),
            ),
        ];
        Installed {
            auth_conf,
            passwords,
            objects,
        }
    }

    fn start_nats(&self) -> NatsServer {
        let env: Vec<(&str, &str)> = self
            .passwords
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        NatsServer::start_with_config(&self.auth_conf, &env)
    }

    /// The login a service's Deployment gives it.
    fn login(&self, service: &str, url: &str) -> NatsOptions {
        let container = container(
            &self.objects,
            "Deployment",
            &format!("prefect-k8s-{service}"),
        );
        let user = env_value(container, "NATS_USER").expect("NATS_USER");
        let env = if service == "poller" {
            POLLER_PASSWORD_ENV
        } else {
            DISPATCHER_PASSWORD_ENV
        };
        let password = &self.passwords.iter().find(|(k, _)| k == env).unwrap().1;
        NatsOptions::with_user(url, user, password)
    }
}

/// The work queue's last sequence number, from the monitoring port.
fn work_queue_last_seq(server: &NatsServer) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", server.monitor_port())).unwrap();
    write!(
        stream,
        "GET /jsz?streams=true HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let jsz: Value = serde_json::from_str(body).unwrap();
    jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| {
            account["stream_detail"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|stream| stream["name"] == flow_run_proto::subjects::FLOW_RUNS_STREAM)
        .map(|stream| stream["state"]["last_seq"].as_u64().unwrap())
        .expect("the work queue exists")
}

/// A `FlowRunDue` for a run of the pool, as a forger would write it.
fn forged_message(pool: &str) -> Vec<u8> {
    flow_run_proto::FlowRunDue {
        flow_run_id: Uuid::new_v4().to_string(),
        state_id: Uuid::new_v4().to_string(),
        work_pool_name: pool.to_owned(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Logs in with `credentials` on the raw protocol and, if let in, publishes a
/// forged message; returns what the server answered.
fn publish_raw(server: &NatsServer, credentials: Option<(&str, &str)>, pool: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut connect = serde_json::json!({"verbose": false, "pedantic": false, "headers": true});
    if let Some((user, password)) = credentials {
        connect["user"] = user.into();
        connect["pass"] = password.into();
    }
    let _info = read_answer(&mut stream);
    // A refused login closes the connection: writes may fail after it.
    let _ = write!(stream, "CONNECT {connect}\r\nPING\r\n");
    let answer = read_answer(&mut stream);
    if !answer.contains("PONG") {
        return answer;
    }
    let payload = forged_message(pool);
    let subject = flow_run_proto::subjects::due_subject(pool);
    let mut publish = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
    publish.extend_from_slice(&payload);
    publish.extend_from_slice(b"\r\nPING\r\n");
    let _ = stream.write_all(&publish);
    answer + &read_answer(&mut stream)
}

fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = [0u8; 4096];
    let read = stream.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

async fn job_of_run(kube: &kube::Client, run: Uuid) -> Job {
    let jobs: Api<Job> = Api::default_namespaced(kube.clone());
    eventually("the run's Job", || {
        let jobs = jobs.clone();
        async move {
            jobs.list(&ListParams::default().labels(&format!("prefect.io/flow-run-id={run}")))
                .await
                .ok()
                .and_then(|list| list.items.into_iter().next())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_services_work_as_their_own_nats_users_and_nobody_else_gets_in() {
    service_runtime::telemetry::init();
    let pool = unique_name("nats-users");
    let installed = Installed::for_pool(&pool);
    let mut nats = installed.start_nats();
    let prefect_server = PrefectServer::shared();
    let emulator = kube_emulator::Emulator::start(kube_emulator::EmulatorConfig::fast())
        .await
        .expect("start the Kubernetes API emulator");
    let kube = emulator.client().unwrap();
    let prefect =
        PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
    let shutdown = CancellationToken::new();

    let mut poller_config = poller::PollerConfig::for_pool(&pool);
    poller_config.poll_interval_seconds = 0.5;
    let poller_nats =
        service_runtime::nats::connect(&installed.login("poller", &nats.url()), "poller")
            .await
            .unwrap();
    let poller = tokio::spawn(
        poller::Poller::new(poller_config, prefect.clone(), poller_nats).run(shutdown.clone()),
    );
    let mut dispatcher_config = dispatcher::DispatcherConfig::for_pool(&pool);
    dispatcher_config.job.namespace = Some("default".into());
    dispatcher_config.job.flow_api_url = Some(prefect_server.api_url());
    let dispatcher_nats =
        service_runtime::nats::connect(&installed.login("dispatcher", &nats.url()), "dispatcher")
            .await
            .unwrap();
    let dispatcher = tokio::spawn(
        dispatcher::Dispatcher::new(
            dispatcher_config,
            prefect.clone(),
            kube.clone(),
            dispatcher_nats,
        )
        .run(shutdown.clone()),
    );

    eventually("the poller to create the work pool", || async {
        prefect.read_work_pool(&pool).await.ok().map(|_| ())
    })
    .await;
    let flow = prefect.create_flow(&unique_name("flow")).await.unwrap();
    let deployment = prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(pool.clone()),
            ..DeploymentCreate::new(unique_name("deployment"), flow.id)
        })
        .await
        .unwrap();
    let run = || async {
        prefect
            .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
            .await
            .unwrap()
            .id
    };
    job_of_run(&kube, run().await).await;

    // Where a flow-run pod stands: no password, or a guessed one.
    let before = work_queue_last_seq(&nats);
    for (who, credentials) in [
        ("anonymous", None),
        (
            "the poller's name, a guessed password",
            Some(("prefect-k8s-poller", "guess")),
        ),
    ] {
        let answer = publish_raw(&nats, credentials, &pool);
        assert!(
            answer.contains("Authorization Violation"),
            "{who}: {answer}"
        );
    }
    let refused = async_nats::ConnectOptions::new().connect(nats.url()).await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
        "{refused:?}"
    );
    assert_eq!(
        work_queue_last_seq(&nats),
        before,
        "nothing forged reached the work queue"
    );

    // nats-server restarts: both services log in again and go on.
    nats.restart();
    job_of_run(&kube, run().await).await;
    let log = nats.log();
    assert!(
        !log.contains("Publish Violation") && !log.contains("Subscription Violation"),
        "nats-server refused a call of the services:\n{log}"
    );
    assert!(
        log.contains("authentication error"),
        "the forgers were refused:\n{log}"
    );

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), poller).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the poller stops cleanly"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(30), dispatcher).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the dispatcher stops cleanly"
    );
    emulator.shutdown().await;
}
