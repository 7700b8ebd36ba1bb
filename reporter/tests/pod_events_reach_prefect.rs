//! Pod phase changes reach the real Prefect server as the prefect-kubernetes
//! observer's `prefect.kubernetes.pod.<phase>` events (read back with
//! `POST /events/filter`): while Prefect refuses them, reporting goes on and
//! they arrive once it takes them again; a new leader sends none that its
//! predecessor sent (counted at an HTTP proxy in front of Prefect).

mod support;

use prefect_client::{ClientConfig, PrefectClient, StateType};
use support::{eventually, JobSpec, Stack};
use test_stack::http_proxy::{Fault, FaultKind, FaultProxy};

fn client_through(proxy: &FaultProxy) -> PrefectClient {
    PrefectClient::new(ClientConfig::new(&proxy.url()).unwrap()).unwrap()
}

fn names(events: &[prefect_client::Event]) -> Vec<String> {
    events.iter().map(|event| event.event.clone()).collect()
}

/// `POST /events` calls (sends) that went through the proxy.
fn sends(proxy: &FaultProxy) -> usize {
    proxy.count(Some("POST"), "/api/events") - proxy.count(Some("POST"), "/api/events/filter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_phases_arrive_once_prefect_takes_events_again_and_reporting_never_waits() {
    let stack = Stack::start().await;
    let proxy = FaultProxy::start(&stack.prefect_server.api_url()).await;
    proxy.add(Fault::new(FaultKind::Status(503)).path("/api/events"));
    let reporter =
        stack.spawn_reporter_with(stack.reporter_config("reporter-a"), client_through(&proxy));
    let spec = JobSpec {
        script: Some("fail:3:0.5".into()),
        ..JobSpec::default()
    };
    let (run, job) = stack.submitted_run(&spec).await;

    let state = stack.final_state(run.id).await;
    assert_eq!(state.state_type, StateType::Crashed, "{state:?}");
    assert!(
        stack.pod_events(run.id).await.is_empty(),
        "no event while Prefect refuses them"
    );
    proxy.clear();
    eventually("the pod's phases arrive as events", || async {
        let names = names(&stack.pod_events(run.id).await);
        names.contains(&"prefect.kubernetes.pod.running".to_string())
            && names.contains(&"prefect.kubernetes.pod.evicted".to_string())
    })
    .await;
    let events = stack.pod_events(run.id).await;
    let pod = &stack.pods_of_job(&job).await[0];
    let uid = pod.metadata.uid.clone().unwrap();
    for event in &events {
        assert_eq!(
            event.resource_id(),
            Some(format!("prefect.kubernetes.pod.{uid}").as_str())
        );
        assert_eq!(
            event.resource["prefect.resource.name"],
            pod.metadata.name.clone().unwrap()
        );
        let flow_run = event.related_in_role("flow-run").expect("the flow run");
        assert_eq!(
            flow_run["prefect.resource.id"],
            format!("prefect.flow-run.{}", run.id)
        );
    }
    let failed = events
        .iter()
        .find(|event| event.event == "prefect.kubernetes.pod.evicted")
        .unwrap();
    // The observer's name for a failure seen live, with the container's reason.
    assert_eq!(failed.resource["kubernetes.reason"], "Error");
    let distinct: std::collections::HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(distinct.len(), events.len(), "{:?}", names(&events));
    reporter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_sends_no_event_its_predecessor_sent() {
    let stack = Stack::start().await;
    let first = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let (run, _) = stack.submitted_run(&JobSpec::script("succeed:0.5")).await;
    eventually("the pod's phases are events", || async {
        names(&stack.pod_events(run.id).await).contains(&"prefect.kubernetes.pod.succeeded".into())
    })
    .await;
    let before = stack.pod_events(run.id).await;
    first.stop().await;

    let proxy = FaultProxy::start(&stack.prefect_server.api_url()).await;
    let second =
        stack.spawn_reporter_with(stack.reporter_config("reporter-b"), client_through(&proxy));
    eventually("the new leader checked what Prefect has", || async {
        second.is_leader() && proxy.count(Some("POST"), "/api/events/filter") > 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(sends(&proxy), 0, "nothing sent again");
    assert_eq!(stack.pod_events(run.id).await, before);

    let (next, _) = stack.submitted_run(&JobSpec::script("succeed:0.5")).await;
    eventually("the new leader sends the next pod's events", || async {
        names(&stack.pod_events(next.id).await).contains(&"prefect.kubernetes.pod.succeeded".into())
    })
    .await;
    assert!(sends(&proxy) > 0);
    second.stop().await;
}
