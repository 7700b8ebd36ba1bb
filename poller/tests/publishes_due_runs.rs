//! The poller against the real Prefect server and a real nats-server: due
//! runs become one message each (which run, in which scheduled state, of
//! which pool: the dispatcher reads the rest from Prefect), and polling again
//! does not publish them again.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use flow_run_proto::{subjects, FlowRunDue};
use futures::StreamExt;
use poller::{publish::Publisher, PollerConfig};
use prefect_client::{
    ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, PrefectClient, StateCreate, StateType,
    WorkQueueCreate,
};
use prost::Message;
use serde_json::json;
use test_stack::nats::NatsServer;
use test_stack::prefect::{unique_name, PrefectServer};

/// A flow and a deployment of it in `pool`, uniquely named.
async fn deployment_in(prefect: &PrefectClient, pool: &str) -> prefect_client::Deployment {
    let flow = prefect.create_flow(&unique_name("flow")).await.unwrap();
    prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(pool.to_owned()),
            ..DeploymentCreate::new(unique_name("deployment"), flow.id)
        })
        .await
        .unwrap()
}

async fn read_all(js: &jetstream::Context) -> Vec<FlowRunDue> {
    let stream = js.get_stream(subjects::FLOW_RUNS_STREAM).await.unwrap();
    // An ephemeral, non-acking view: a WorkQueue allows one consumer per
    // subject, and this test has no dispatcher.
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(Ok(message)) = messages.next().await {
        out.push(FlowRunDue::decode(message.payload.as_ref()).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_runs_are_published_once_naming_run_state_and_pool() {
    let prefect_server = PrefectServer::shared();
    let nats_server = NatsServer::start();
    let prefect =
        PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
    let nats = async_nats::connect(nats_server.url()).await.unwrap();
    let js = jetstream::new(nats);
    service_runtime::nats::ensure_streams(&js, 1).await.unwrap();

    let mut config = PollerConfig::for_pool(unique_name("pool"));
    config.pool.worker_name = "poller-under-test".into();
    let pool = poller::pool::ensure_work_pool(&prefect, &config)
        .await
        .unwrap();
    assert_eq!(pool.pool_type, "kubernetes");
    assert_eq!(
        pool.base_job_template,
        serde_json::from_str::<serde_json::Value>(poller::pool::DEFAULT_BASE_JOB_TEMPLATE).unwrap(),
        "a new pool gets prefect-kubernetes 0.8's default template"
    );

    let flow = prefect.create_flow(&unique_name("flow")).await.unwrap();
    let deployment = prefect
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(config.pool.work_pool.clone()),
            job_variables: Some(json!({"image": "example/flows:1", "env": {"A": "1"}})),
            ..DeploymentCreate::new(unique_name("deployment"), flow.id)
        })
        .await
        .unwrap();
    let run = prefect
        .create_flow_run_from_deployment(
            deployment.id,
            &DeploymentFlowRunCreate {
                job_variables: Some(json!({"env": {"B": "2"}})),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let publisher = Publisher::new(js.clone(), 1);
    let first = poller::poll_once(&prefect, &publisher, &config, pool.id)
        .await
        .unwrap();
    assert_eq!(first.found, 1);
    assert_eq!(first.published, 1);
    // The same scheduled state polled again is a duplicate.
    let second = poller::poll_once(&prefect, &publisher, &config, pool.id)
        .await
        .unwrap();
    assert_eq!(second.found, 1);
    assert_eq!(second.published, 0, "re-polling publishes nothing new");

    let messages = read_all(&js).await;
    assert_eq!(messages.len(), 1);
    let due = &messages[0];
    assert_eq!(due.flow_run_id, run.id.to_string());
    assert_eq!(due.state_id, run.state.as_ref().unwrap().id.to_string());
    assert_eq!(due.flow_run_name, run.name);
    assert_eq!(due.work_pool_name, config.pool.work_pool);
    assert_eq!(due.work_pool_id, pool.id.to_string());
    assert_eq!(due.poller_name, "poller-under-test");
    assert!(!due.scheduled_time.is_empty());
    assert!(!due.published_at.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_select_work_queues() {
    let prefect_server = PrefectServer::shared();
    let nats_server = NatsServer::start();
    let prefect =
        PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
    let js = jetstream::new(async_nats::connect(nats_server.url()).await.unwrap());
    service_runtime::nats::ensure_streams(&js, 1).await.unwrap();

    let mut config = PollerConfig::for_pool(unique_name("pool"));
    let pool = poller::pool::ensure_work_pool(&prefect, &config)
        .await
        .unwrap();
    for queue in ["gpu", "cpu"] {
        prefect
            .create_work_queue(
                &config.pool.work_pool,
                &WorkQueueCreate {
                    name: queue.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let flow = prefect.create_flow(&unique_name("flow")).await.unwrap();
    let mut runs = Vec::new();
    for queue in ["gpu", "cpu"] {
        let deployment = prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(config.pool.work_pool.clone()),
                work_queue_name: Some(queue.into()),
                ..DeploymentCreate::new(unique_name(queue), flow.id)
            })
            .await
            .unwrap();
        runs.push(
            prefect
                .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
                .await
                .unwrap(),
        );
    }
    // The seed agent's `--label gpu`: only the gpu queue's run.
    config.work_queues = vec!["gpu".into()];
    let outcome = poller::poll_once(&prefect, &Publisher::new(js.clone(), 1), &config, pool.id)
        .await
        .unwrap();
    assert_eq!(outcome.published, 1);
    let messages = read_all(&js).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].flow_run_id, runs[0].id.to_string());
    assert_eq!(messages[0].work_queue_name, "gpu");
}

/// Issue 9, scenario 6: with no dispatcher taking them, more due runs than a
/// page must not make the poller poll (and re-publish) in a loop: a page of
/// runs already queued waits for the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_page_of_queued_runs_is_not_polled_in_a_loop() {
    let prefect_server = PrefectServer::shared();
    let nats_server = NatsServer::start();
    let proxy = test_stack::http_proxy::FaultProxy::start(&prefect_server.api_url()).await;
    let prefect = PrefectClient::new(ClientConfig::new(&proxy.url()).unwrap()).unwrap();
    let direct = PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
    let nats = async_nats::connect(nats_server.url()).await.unwrap();

    let mut config = PollerConfig::for_pool(unique_name("pool"));
    config.limit = 2;
    config.poll_interval_seconds = 1.0;
    poller::pool::ensure_work_pool(&direct, &config)
        .await
        .unwrap();
    let deployment = deployment_in(&direct, &config.pool.work_pool).await;
    for _ in 0..6 {
        direct
            .create_flow_run_from_deployment(deployment.id, &DeploymentFlowRunCreate::default())
            .await
            .unwrap();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running =
        tokio::spawn(poller::Poller::new(config.clone(), prefect, nats).run(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let polls = proxy.count(Some("POST"), "get_scheduled_flow_runs");
    // One poll per tick, plus one immediate re-poll after a page of new runs.
    assert!(
        (2..=12).contains(&polls),
        "{polls} polls in 5 s at a 1 s interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_prefect_at_start_is_waited_for_and_a_bad_key_is_not() {
    use test_stack::http_proxy::{Fault, FaultKind, FaultProxy};
    use tokio_util::sync::CancellationToken;
    let prefect_server = PrefectServer::shared();
    let proxy = FaultProxy::start(&prefect_server.api_url()).await;
    proxy.add(
        Fault::new(FaultKind::Status(500))
            .path("work_pools")
            .times(2),
    );
    proxy.add(
        Fault::new(FaultKind::Status(503))
            .path("work_pools")
            .times(1),
    );
    let prefect = PrefectClient::new(ClientConfig::new(&proxy.url()).unwrap()).unwrap();
    let config = PollerConfig::for_pool(unique_name("pool"));
    let shutdown = CancellationToken::new();
    let health = service_runtime::health::Health::detached();
    let pool = tokio::time::timeout(
        Duration::from_secs(30),
        poller::pool::ensure_work_pool_patiently(&prefect, &config, &health, &shutdown),
    )
    .await
    .expect("the pool is ensured once Prefect answers")
    .unwrap()
    .expect("not shut down");
    assert_eq!(pool.name, config.pool.work_pool);
    assert!(
        proxy.count(None, "work_pools") >= 4,
        "three failed reads, then the read or create that worked"
    );

    // A refused key is not waited for: the poller ends with the error.
    proxy.add(Fault::new(FaultKind::Status(401)).path("work_pools"));
    let refused =
        poller::pool::ensure_work_pool_patiently(&prefect, &config, &health, &shutdown).await;
    assert!(refused.is_err(), "{refused:?}");

    // Shutdown ends the wait.
    proxy.clear();
    proxy.add(Fault::new(FaultKind::Status(500)).path("work_pools"));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        poller::pool::ensure_work_pool_patiently(&prefect, &config, &health, &shutdown),
    )
    .await
    .expect("shutdown ends the wait");
    assert!(matches!(stopped, Ok(None)), "{stopped:?}");
}

/// A pool with one deployment, a nats-server, and a poller configured by
/// `configure` (not started).
struct Fixture {
    _nats_server: NatsServer,
    nats_url: String,
    prefect: PrefectClient,
    js: jetstream::Context,
    config: PollerConfig,
    deployment: prefect_client::Deployment,
}

impl Fixture {
    async fn new(configure: impl FnOnce(&mut PollerConfig)) -> Fixture {
        let prefect_server = PrefectServer::shared();
        let nats_server = NatsServer::start();
        let nats_url = nats_server.url().to_owned();
        let prefect =
            PrefectClient::new(ClientConfig::new(&prefect_server.api_url()).unwrap()).unwrap();
        let js = jetstream::new(async_nats::connect(&nats_url).await.unwrap());
        let mut config = PollerConfig::for_pool(unique_name("pool"));
        configure(&mut config);
        poller::pool::ensure_work_pool(&prefect, &config)
            .await
            .unwrap();
        let deployment = deployment_in(&prefect, &config.pool.work_pool).await;
        Fixture {
            _nats_server: nats_server,
            nats_url,
            prefect,
            js,
            config,
            deployment,
        }
    }

    /// Starts the poller; cancel the token and await the handle to stop it.
    async fn start_poller(
        &self,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<Result<(), poller::PollerError>>,
    ) {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let nats = async_nats::connect(&self.nats_url).await.unwrap();
        let poller = poller::Poller::new(self.config.clone(), self.prefect.clone(), nats);
        (shutdown.clone(), tokio::spawn(poller.run(shutdown)))
    }

    /// Whether a message was published within `wait`; polls every 20 ms.
    async fn first_message_within(&self, wait: Duration) -> bool {
        let started = std::time::Instant::now();
        while started.elapsed() < wait {
            let published = self.js.get_stream(subjects::FLOW_RUNS_STREAM).await.ok();
            if let Some(mut stream) = published {
                if stream.info().await.unwrap().state.messages > 0 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// A poller whose timed polls are a minute apart, started on an empty pool,
/// then a run created due now: how long until it is published (`None`: not
/// within `wait`).
async fn publication_delay(poll_on_events: bool, wait: Duration) -> Option<Duration> {
    let fixture = Fixture::new(|config| {
        config.poll_interval_seconds = 60.0;
        config.poll_on_events = poll_on_events;
    })
    .await;
    let (shutdown, running) = fixture.start_poller().await;
    // The first timed poll happens at start; the stream opens meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let created = std::time::Instant::now();
    fixture
        .prefect
        .create_flow_run_from_deployment(fixture.deployment.id, &DeploymentFlowRunCreate::default())
        .await
        .unwrap();
    let published = fixture.first_message_within(wait).await;
    let delay = published.then(|| created.elapsed());
    shutdown.cancel();
    running.await.unwrap().unwrap();
    delay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_created_due_now_is_published_at_once_through_the_event_stream() {
    let delay = publication_delay(true, Duration::from_secs(10)).await;
    let delay = delay.expect("published within 10 s, with the next timed poll a minute away");
    assert!(delay < Duration::from_secs(2), "published after {delay:?}");
    // Without the event stream the same run waits for the next timed poll.
    assert_eq!(publication_delay(false, Duration::from_secs(5)).await, None);
}

/// A run scheduled `prefetch` + 20 s ahead, seen by the poll at start (the
/// look-ahead), with timed polls a minute apart and no event stream: it is
/// published at its time minus the prefetch, not at the next timed poll.
async fn published_ahead_at_its_time(prefetch: u64) {
    let fixture = Fixture::new(|config| {
        config.poll_interval_seconds = 60.0;
        config.poll_on_events = false;
        config.prefetch_seconds = prefetch;
    })
    .await;
    let prefetch = chrono::Duration::seconds(prefetch as i64);
    let due = chrono::Utc::now() + prefetch + chrono::Duration::seconds(20);
    let mut scheduled = StateCreate::new(StateType::Scheduled, "Scheduled");
    scheduled.state_details.scheduled_time = Some(due);
    let run = DeploymentFlowRunCreate {
        state: Some(scheduled),
        ..DeploymentFlowRunCreate::default()
    };
    fixture
        .prefect
        .create_flow_run_from_deployment(fixture.deployment.id, &run)
        .await
        .unwrap();

    let (shutdown, running) = fixture.start_poller().await;
    // The poller makes its streams just before its first poll.
    while fixture
        .js
        .get_stream(subjects::FLOW_RUNS_STREAM)
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let publish_at = due - prefetch;
    let margin = publish_at - chrono::Utc::now();
    assert!(
        margin > chrono::Duration::seconds(10),
        "premise: the first poll comes well before the run is due (only {margin} left)"
    );
    let published = fixture.first_message_within(Duration::from_secs(35)).await;
    let published_at = chrono::Utc::now();
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert!(
        published,
        "published within 15 s of its time; the next timed poll is a minute after the first"
    );
    let early = publish_at - published_at;
    let late = published_at - publish_at;
    assert!(
        early < chrono::Duration::milliseconds(500),
        "published {early} before its time minus the prefetch"
    );
    assert!(
        late < chrono::Duration::seconds(5),
        "published {late} after its time minus the prefetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_seen_ahead_is_published_at_its_time_not_at_the_next_poll() {
    published_ahead_at_its_time(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_seen_ahead_is_published_at_its_time_minus_the_prefetch() {
    published_ahead_at_its_time(5).await;
}
