//! kube-runtime's watcher and reflector against the emulator: the store stays in sync under
//! churn, relists after an in-stream 410 (forced compaction), and resumes after cut streams.

mod support;

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube_emulator::RuntimeKind;
use serde_json::json;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"churn": "yes"}}, "data": {"n": "0"}}),
    )
    .unwrap()
}

async fn names_in_cluster(api: &Api<ConfigMap>) -> BTreeSet<String> {
    api.list(&kube::api::ListParams::default().labels("churn=yes"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect()
}

async fn reflector_converges(compact_midway: bool, streaming_list: bool) {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let client = emulator.client().unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default().labels("churn=yes");
    if streaming_list {
        config = config.streaming_lists();
    }
    let stream = reflector(writer, watcher(api.clone(), config)).applied_objects();
    let driver = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let _ = item;
        }
    });
    reader.wait_until_ready().await.unwrap();
    for round in 0..40 {
        let name = format!("cm-{}", round % 12);
        match round % 3 {
            0 => {
                let _ = api.create(&PostParams::default(), &config_map(&name)).await;
            }
            1 => {
                let _ = api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"n": round.to_string()}})),
                    )
                    .await;
            }
            _ => {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
        }
        if round == 20 {
            if compact_midway {
                emulator.compact();
            } else {
                emulator.cut_watches();
            }
        }
    }
    let expected = names_in_cluster(&api).await;
    support::eventually("reflector matches the cluster", || {
        let reader = reader.clone();
        let expected = expected.clone();
        async move {
            let seen: BTreeSet<String> = reader
                .state()
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            (seen == expected).then_some(())
        }
    })
    .await;
    driver.abort();
    emulator.shutdown().await;
}

#[tokio::test]
async fn reflector_stays_in_sync_under_churn_and_cut_streams() {
    reflector_converges(false, false).await;
}

#[tokio::test]
async fn reflector_relists_after_compaction() {
    reflector_converges(true, false).await;
}

#[tokio::test]
async fn streaming_list_reflector_gets_the_initial_events_bookmark() {
    reflector_converges(false, true).await;
}

#[tokio::test]
async fn stale_resource_version_yields_in_stream_410() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let api: Api<ConfigMap> = Api::namespaced(emulator.client().unwrap(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    let old_rv = created.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &config_map("b"))
        .await
        .unwrap();
    emulator.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    let first = stream.next().await.expect("an event").expect("parsed");
    match first {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    emulator.shutdown().await;
}

#[tokio::test]
async fn deleted_events_carry_last_state_and_bookmarks_arrive() {
    let emulator = support::start(RuntimeKind::Scripted).await;
    let api: Api<ConfigMap> = Api::namespaced(emulator.client().unwrap(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("gone"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    // Headers arrive before any event: the watch call returns even though nothing happened yet.
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &rv)
        .await
        .unwrap()
        .boxed();
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    let mut saw_delete = false;
    let mut saw_bookmark = false;
    while !(saw_delete && saw_bookmark) {
        match stream.next().await.expect("event").expect("parsed") {
            WatchEvent::Deleted(cm) => {
                assert_eq!(cm.data.unwrap().get("n").map(String::as_str), Some("0"));
                assert_ne!(cm.metadata.resource_version.as_deref(), Some(rv.as_str()));
                saw_delete = true;
            }
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                saw_bookmark = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_is_told_to_relist() {
    let emulator = kube_emulator::Emulator::start(kube_emulator::EmulatorConfig {
        watch_buffer: 16,
        ..kube_emulator::EmulatorConfig::fast()
    })
    .await
    .unwrap();
    let http = support::http_client(&emulator);
    let url = format!("{}/api/v1/namespaces/default/configmaps", emulator.url());
    // Open a watch and do not read it while a burst of large writes happens.
    let mut response = http.get(format!("{url}?watch=true")).send().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emulator.client().unwrap(), "default");
    let payload = "x".repeat(16 * 1024);
    for i in 0..1500 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("burst-{i}")}, "data": {"blob": payload}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    // Now drain: the stream ends with an ERROR 410 instead of silently skipping events.
    let mut tail = Vec::new();
    while let Ok(Some(chunk)) =
        tokio::time::timeout(std::time::Duration::from_secs(20), response.chunk())
            .await
            .unwrap()
    {
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let text = String::from_utf8_lossy(&tail);
    let last = text.trim_end().rsplit('\n').next().unwrap_or_default();
    assert!(
        last.contains("\"type\":\"ERROR\"") && last.contains("\"code\":410"),
        "{last}"
    );
    emulator.shutdown().await;
}
