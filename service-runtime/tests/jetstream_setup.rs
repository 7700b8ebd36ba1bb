//! The streams and the shared consumer against a real nats-server: services
//! that start at the same moment all get them, and the settings that make
//! the work queue lossless are the ones the server holds.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use service_runtime::nats::{dispatcher_consumer, ensure_streams, NatsOptions};
use test_stack::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_starting_together_all_get_the_streams_and_the_consumer() {
    let server = NatsServer::start();
    let mut starts = Vec::new();
    for replica in 0..8 {
        let url = server.url();
        starts.push(tokio::spawn(async move {
            let client = service_runtime::nats::connect(
                &NatsOptions::plain(url),
                &format!("replica-{replica}"),
            )
            .await
            .expect("connect");
            let js = jetstream::new(client);
            let (flow_runs, _) = ensure_streams(&js, 1).await.expect("streams");
            dispatcher_consumer(&flow_runs, "pool-a", Duration::from_secs(30), 1000)
                .await
                .expect("consumer");
        }));
    }
    for start in starts {
        start.await.expect("every replica starts");
    }

    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut flow_runs = js
        .get_stream(flow_run_proto::subjects::FLOW_RUNS_STREAM)
        .await
        .unwrap();
    let config = flow_runs.info().await.unwrap().config.clone();
    assert_eq!(config.retention, stream::RetentionPolicy::WorkQueue);
    assert_eq!(
        config.discard,
        stream::DiscardPolicy::New,
        "a full stream refuses, never drops"
    );
    assert_eq!(
        config.max_age,
        Duration::ZERO,
        "unprocessed runs never expire"
    );
    assert_eq!(config.storage, stream::StorageType::File);
    let mut consumer = flow_runs
        .get_consumer::<jetstream::consumer::pull::Config>("dispatcher-pool-a")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.config.max_deliver, -1,
        "the server never parks a run silently"
    );
    assert_eq!(info.config.filter_subject, "flow-runs.due.pool-a");
}

/// Scenario 7 of issue 9: a changed ack wait (or max ack pending) must reach
/// a consumer that already exists, not only a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_consumer_settings_reach_an_existing_consumer() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let (flow_runs, _) = ensure_streams(&js, 1).await.expect("streams");
    dispatcher_consumer(&flow_runs, "pool-b", Duration::from_secs(60), 1000)
        .await
        .expect("consumer");
    let mut consumer = dispatcher_consumer(&flow_runs, "pool-b", Duration::from_secs(20), 2000)
        .await
        .expect("consumer with new settings");
    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(20));
    assert_eq!(info.config.max_ack_pending, 2000);
}
