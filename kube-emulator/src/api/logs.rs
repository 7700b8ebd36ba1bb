//! `GET pods/{name}/log`: container selection and the real error messages (multi-container
//! without `container`, waiting containers, missing previous run), `tailLines`, `limitBytes`,
//! `timestamps`, `sinceSeconds`, `previous`, and `follow` streaming until the container exits.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::request::Query;
use crate::cluster::Cluster;
use crate::container_logs::{LogLine, LogStream};
use crate::error::ApiError;
use crate::resources;

fn render_line(line: &LogLine, timestamps: bool) -> String {
    if timestamps {
        format!(
            "{} {}",
            line.time
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            line.text
        )
    } else {
        line.text.clone()
    }
}

/// Serve a pod log request.
pub async fn pod_log(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let pod = cluster.registry.get(resources::pods(), namespace, name)?;
    let container = choose_container(&pod, name, query)?;
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let options = LogOptions::parse(query)?;
    let stream = cluster.logs.stream(uid, &container, options.previous);
    let Some(stream) = stream else {
        return Err(not_started(&pod, name, &container, options.previous));
    };
    let (lines, next_line) = stream.lines_since(0);
    let text = options.render(lines);
    let mut response = if options.follow && !stream.is_finished() && !options.previous {
        follow(cluster, stream, text, next_line, options.timestamps)
    } else {
        Response::new(Body::from(text))
    };
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}

/// The names of the pod's containers at `pointer` (`/spec/containers`, `/spec/initContainers`).
fn container_names(pod: &Value, pointer: &str) -> Vec<String> {
    pod.pointer(pointer)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The container whose log is asked for: `container`, or the only one.
fn choose_container(pod: &Value, name: &str, query: &Query) -> Result<String, ApiError> {
    let containers = container_names(pod, "/spec/containers");
    let init_containers = container_names(pod, "/spec/initContainers");
    match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers
                .iter()
                .chain(init_containers.iter())
                .any(|n| n == c)
            {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            Ok(c.to_string())
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The error for a container without a log: no previous run, or not started yet.
fn not_started(pod: &Value, name: &str, container: &str, previous: bool) -> ApiError {
    if previous {
        return ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        ));
    }
    let reason = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|s| s["name"] == container))
        .and_then(|s| s.pointer("/state/waiting/reason"))
        .and_then(Value::as_str)
        .unwrap_or("ContainerCreating");
    let detail = match reason {
        "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image".to_string(),
        other => other.to_string(),
    };
    ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{name}\" is waiting to start: {detail}"
    ))
}

/// The query parameters of a log request.
struct LogOptions {
    previous: bool,
    follow: bool,
    timestamps: bool,
    tail: Option<i64>,
    limit_bytes: Option<usize>,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl LogOptions {
    fn parse(query: &Query) -> Result<LogOptions, ApiError> {
        let previous = query.flag("previous");
        let follow = query.flag("follow");
        let timestamps = query.flag("timestamps");
        let tail = query.integer("tailLines")?;
        let limit_bytes = query
            .integer("limitBytes")?
            .filter(|l| *l > 0)
            .map(|l| l as usize);
        let since = query
            .integer("sinceSeconds")?
            .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s));
        Ok(LogOptions {
            previous,
            follow,
            timestamps,
            tail,
            limit_bytes,
            since,
        })
    }

    /// The text of the lines written so far: `sinceSeconds`, `tailLines`, `timestamps`, then
    /// `limitBytes`.
    fn render(&self, mut lines: Vec<LogLine>) -> String {
        if let Some(since) = self.since {
            lines.retain(|l| l.time >= since);
        }
        if let Some(tail) = self.tail {
            let tail = tail.max(0) as usize;
            if lines.len() > tail {
                lines.drain(..lines.len() - tail);
            }
        }
        let mut text: String = lines
            .iter()
            .map(|l| render_line(l, self.timestamps))
            .collect();
        if let Some(limit) = self.limit_bytes {
            if text.len() > limit {
                let mut cut = limit;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
        }
        text
    }
}

/// `follow`: a streaming body with `text`, then each new line until the container exits.
fn follow(
    cluster: &Cluster,
    stream: Arc<LogStream>,
    text: String,
    next_line: usize,
    timestamps: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let seen = next_line;
    let shutdown = cluster.shutdown.clone();
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        let mut seen = seen;
        loop {
            tokio::select! {
                _ = stream.changed(seen) => {}
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
            }
            let (fresh, next) = stream.lines_since(seen);
            seen = next;
            let chunk: String = fresh.iter().map(|l| render_line(l, timestamps)).collect();
            if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if stream.is_finished() && stream.len() <= seen {
                return;
            }
        }
    });
    Response::new(Body::from_stream(ReceiverStream::new(rx)))
}
