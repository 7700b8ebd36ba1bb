//! Events: kube-runtime's `Recorder` writes `events.k8s.io/v1` Events, which a real cluster
//! also serves as core/v1 Events (one storage); repeats are merge-patched as a series.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::Resource;
use kube_emulator::RuntimeKind;

#[tokio::test]
async fn recorder_events_are_visible_in_both_api_versions() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "subject"}})).unwrap();
    let cm = cms.create(&PostParams::default(), &cm).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "dispatcher".into(),
            instance: Some("dispatcher-0".into()),
        },
    );
    let event = RecordedEvent {
        type_: EventType::Normal,
        reason: "Dispatched".into(),
        note: Some("flow run handed to the cluster".into()),
        action: "Dispatch".into(),
        secondary: None,
    };
    let reference = cm.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    // A repeat becomes a series patch on the same Event.
    recorder.publish(&event, &reference).await.unwrap();

    let core: Api<Event> = Api::namespaced(client.clone(), "default");
    let seen = core
        .list(&ListParams::default().fields("involvedObject.name=subject"))
        .await
        .unwrap();
    assert_eq!(seen.items.len(), 1, "{:?}", seen.items);
    let stored = &seen.items[0];
    assert_eq!(stored.reason.as_deref(), Some("Dispatched"));
    assert_eq!(
        stored.message.as_deref(),
        Some("flow run handed to the cluster")
    );
    assert_eq!(stored.reporting_component.as_deref(), Some("dispatcher"));
    assert!(
        stored.series.is_some(),
        "the repeat is recorded as a series"
    );

    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "default");
    let listed = v1.list(&ListParams::default()).await.unwrap();
    let same = listed
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Dispatched"))
        .expect("served as events.k8s.io/v1");
    assert_eq!(
        same.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("subject")
    );
    assert_eq!(same.note.as_deref(), Some("flow run handed to the cluster"));
    emulator.shutdown().await;
}

#[tokio::test]
async fn events_expire_after_the_event_ttl() {
    let emulator = kube_emulator::Emulator::start(kube_emulator::EmulatorConfig {
        event_ttl: std::time::Duration::from_secs(1),
        ..kube_emulator::EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(emulator.client().unwrap(), "default");
    let event: Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "short-lived"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Test", "message": "expires", "type": "Normal",
        "lastTimestamp": kube_emulator::time::now_rfc3339()
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    support::eventually("the event expires", || async {
        events
            .get_opt("short-lived")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    emulator.shutdown().await;
}
