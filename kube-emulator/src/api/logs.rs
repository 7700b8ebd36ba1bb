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
use crate::container_logs::LogLine;
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
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let init_containers: Vec<String> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
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
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
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
    let stream = cluster.logs.stream(uid, &container, previous);
    let Some(stream) = stream else {
        if previous {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        let reason = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find(|s| s["name"] == container.as_str()))
            .and_then(|s| s.pointer("/state/waiting/reason"))
            .and_then(Value::as_str)
            .unwrap_or("ContainerCreating");
        let detail = match reason {
            "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image".to_string(),
            other => other.to_string(),
        };
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {detail}"
        )));
    };
    let (mut lines, next_line) = stream.lines_since(0);
    if let Some(since) = since {
        lines.retain(|l| l.time >= since);
    }
    if let Some(tail) = tail {
        let tail = tail.max(0) as usize;
        if lines.len() > tail {
            lines.drain(..lines.len() - tail);
        }
    }
    let mut text: String = lines.iter().map(|l| render_line(l, timestamps)).collect();
    if let Some(limit) = limit_bytes {
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    let mut response = if follow && !stream.is_finished() && !previous {
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
