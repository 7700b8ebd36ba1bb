//! Watch streams: chunked newline-delimited `WatchEvent`s with headers flushed up front;
//! start points (current state, a resourceVersion, or `sendInitialEvents` with the
//! `k8s.io/initial-events-end` bookmark); selector transitions as ADDED/DELETED; periodic
//! BOOKMARKs; 410 Expired as an in-stream ERROR event; `timeoutSeconds`; and cuts on demand.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::request::{Query, ResourcePath};
use super::{render_object, Rendering};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Change, ChangeKind};

/// Which objects a watch sees.
struct WatchFilter {
    resource: &'static ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                != Some(ns.as_str())
            {
                return false;
            }
        }
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event (type, object) a change produces for this watch, if any.
    fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
        if !change.resource.is(self.resource) {
            return None;
        }
        match change.kind {
            ChangeKind::Added => self
                .matches(&change.object)
                .then(|| ("ADDED", (*change.object).clone())),
            ChangeKind::Deleted => {
                let previous = change.previous.as_deref().unwrap_or(&change.object);
                self.matches(previous)
                    .then(|| ("DELETED", (*change.object).clone()))
            }
            ChangeKind::Modified => {
                let was = change.previous.as_deref().is_some_and(|p| self.matches(p));
                let is = self.matches(&change.object);
                match (was, is) {
                    (true, true) => Some(("MODIFIED", (*change.object).clone())),
                    (false, true) => Some(("ADDED", (*change.object).clone())),
                    (true, false) => {
                        // The previous content with the new resourceVersion.
                        let mut last = change.previous.as_deref().cloned().unwrap_or_default();
                        last["metadata"]["resourceVersion"] =
                            json!(change.resource_version.to_string());
                        Some(("DELETED", last))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

fn bookmark(resource: &ResourceType, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut object =
        json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata});
    // Go serializes an empty Pod this way; keep the shape of real bookmarks.
    if resource.plural == "pods" && resource.group.is_empty() {
        object["spec"] = json!({"containers": null});
        object["status"] = json!({});
    }
    object
}

fn expired_status(message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Expired", "code": 410
    })
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text =
        serde_json::to_string(&json!({"type": event_type, "object": object})).unwrap_or_default();
    text.push('\n');
    Bytes::from(text)
}

/// Start a watch; the response (headers) is returned at once and events follow in the body.
pub fn watch(
    cluster: Arc<Cluster>,
    rp: ResourcePath,
    labels: LabelSelector,
    fields: FieldSelector,
    query: &Query,
    render: Rendering,
) -> Result<Response, ApiError> {
    let send_initial = query.get("sendInitialEvents").map(|v| v == "true");
    let bookmarks = query.flag("allowWatchBookmarks");
    let rv_param = query.get("resourceVersion").unwrap_or_default().to_string();
    check_watch_options(query, send_initial, bookmarks)?;
    let requested_rv: Option<u64> = if rv_param.is_empty() {
        None
    } else {
        Some(rv_param.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {rv_param:?}"))
        })?)
    };
    // Without timeoutSeconds the apiserver picks a random duration in [min-request-timeout,
    // 2 x min-request-timeout) (default 1800 s) so long-lived watches are rebalanced.
    let timeout = query
        .integer("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64))
        .or_else(|| {
            use rand::RngExt;
            Some(Duration::from_secs(rand::rng().random_range(1800..3600)))
        });
    let filter = WatchFilter {
        resource: rp.resource,
        namespace: rp.namespace.clone(),
        labels,
        fields,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let task_cluster = cluster.clone();
    // Subscribe before returning so no change between now and the first poll is lost.
    let start = beginning(&cluster, &rp, send_initial, requested_rv);
    let cut = cluster.watch_cut.subscribe();
    tokio::spawn(async move {
        let stream = WatchStream {
            cluster: task_cluster,
            filter,
            tx,
            render,
        };
        stream.run(start, timeout, bookmarks, cut).await;
    });
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// `sendInitialEvents` needs `resourceVersionMatch=NotOlderThan` (and bookmarks when true);
/// without it, `resourceVersionMatch` is refused.
fn check_watch_options(
    query: &Query,
    send_initial: Option<bool>,
    bookmarks: bool,
) -> Result<(), ApiError> {
    if send_initial.is_some() {
        if query.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid_options(
                "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if send_initial == Some(true) && !bookmarks {
            return Err(ApiError::invalid_options(
                "ListOptions.meta.k8s.io \"\" is invalid: allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
    } else if query
        .get("resourceVersionMatch")
        .is_some_and(|m| !m.is_empty())
    {
        return Err(ApiError::invalid_options(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    Ok(())
}

/// Where the watch starts: the current state (subscribed atomically), the history after a
/// resourceVersion, or Expired when that history is gone.
fn beginning(
    cluster: &Cluster,
    rp: &ResourcePath,
    send_initial: Option<bool>,
    requested_rv: Option<u64>,
) -> WatchBeginning {
    if send_initial == Some(true) || requested_rv.is_none() || requested_rv == Some(0) {
        let state = cluster
            .store
            .watch_with_state(rp.resource, rp.namespace.as_deref());
        WatchBeginning::State {
            objects: state.objects,
            receiver: state.receiver,
            rv: state.resource_version,
            initial_events_end: send_initial == Some(true),
        }
    } else {
        let rv = requested_rv.unwrap_or_default();
        match cluster.store.watch_from(rv) {
            Ok(start) => WatchBeginning::History {
                backlog: start.backlog,
                receiver: start.receiver,
                rv,
            },
            Err(_) => WatchBeginning::Expired(rv),
        }
    }
}

enum WatchBeginning {
    State {
        objects: Vec<Arc<Value>>,
        receiver: broadcast::Receiver<Arc<Change>>,
        rv: u64,
        initial_events_end: bool,
    },
    History {
        backlog: Vec<Arc<Change>>,
        receiver: broadcast::Receiver<Arc<Change>>,
        rv: u64,
    },
    Expired(u64),
}

/// The task writing one watch's events into its response body.
struct WatchStream {
    cluster: Arc<Cluster>,
    filter: WatchFilter,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    render: Rendering,
}

impl WatchStream {
    async fn run(
        &self,
        start: WatchBeginning,
        timeout: Option<Duration>,
        bookmarks: bool,
        cut: tokio::sync::watch::Receiver<u64>,
    ) {
        let Some((receiver, last_rv)) = self.begin(start).await else {
            return;
        };
        self.follow(receiver, last_rv, timeout, bookmarks, cut)
            .await;
    }

    /// An event's line, its object rendered as the client asked (not ERROR or BOOKMARK).
    fn event_line(&self, event_type: &str, object: &Value) -> Bytes {
        let rendered = if event_type == "ERROR" || event_type == "BOOKMARK" {
            object.clone()
        } else {
            render_object(object, self.render, self.filter.resource)
        };
        line(event_type, &rendered)
    }

    /// Send a line; false once the client is gone.
    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(Ok(line)).await.is_ok()
    }

    /// The events before the live ones: the current objects (and the initial-events-end
    /// bookmark) or the history's, or the Expired error. Returns the receiver of live changes
    /// and the last resourceVersion sent, or None when the watch is over.
    async fn begin(
        &self,
        start: WatchBeginning,
    ) -> Option<(broadcast::Receiver<Arc<Change>>, u64)> {
        let resource = self.filter.resource;
        match start {
            WatchBeginning::Expired(rv) => {
                if self.cluster.faults.get().silent_watch_expiry {
                    return None;
                }
                let _ = self
                    .send(self.event_line(
                        "ERROR",
                        &expired_status(&format!(
                        "The resourceVersion for the provided watch is too old. (requested {rv})"
                    )),
                    ))
                    .await;
                None
            }
            WatchBeginning::State {
                objects,
                receiver,
                rv,
                initial_events_end,
            } => {
                for object in objects.iter().filter(|o| self.filter.matches(o)) {
                    if !self.send(self.event_line("ADDED", object)).await {
                        return None;
                    }
                }
                if initial_events_end
                    && !self
                        .send(line("BOOKMARK", &bookmark(resource, rv, true)))
                        .await
                {
                    return None;
                }
                Some((receiver, rv))
            }
            WatchBeginning::History {
                backlog,
                receiver,
                rv,
            } => {
                let mut last = rv;
                for change in backlog {
                    last = change.resource_version;
                    if let Some((event_type, object)) = self.filter.event_for(&change) {
                        if !self.send(self.event_line(event_type, &object)).await {
                            return None;
                        }
                    }
                }
                Some((receiver, last))
            }
        }
    }

    /// Live changes (and periodic bookmarks) until the timeout, a cut, shutdown, the client
    /// leaving, or a watcher too slow for the buffer.
    async fn follow(
        &self,
        mut receiver: broadcast::Receiver<Arc<Change>>,
        mut last_rv: u64,
        timeout: Option<Duration>,
        bookmarks: bool,
        mut cut: tokio::sync::watch::Receiver<u64>,
    ) {
        let resource = self.filter.resource;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark_timer = tokio::time::interval(self.cluster.config.watch_bookmark_interval);
        bookmark_timer.tick().await;
        loop {
            let sleep_until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                received = receiver.recv() => match received {
                    Ok(change) => {
                        if change.resource_version <= last_rv {
                            continue;
                        }
                        last_rv = change.resource_version;
                        if let Some((event_type, object)) = self.filter.event_for(&change) {
                            if !self.send(self.event_line(event_type, &object)).await {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // A watcher too slow for the buffer is told to relist, like the apiserver
                        // closing a blocked cache watcher.
                        let _ = self.send(self.event_line("ERROR", &expired_status(&format!(
                            "too old resource version: {last_rv} ({})", self.cluster.store.resource_version()
                        )))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmark_timer.tick(), if bookmarks => {
                    if !self.send(line("BOOKMARK", &bookmark(resource, last_rv, false))).await {
                        return;
                    }
                }
                _ = sleep_until_deadline => return,
                _ = cut.changed() => return,
                _ = self.cluster.shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}
