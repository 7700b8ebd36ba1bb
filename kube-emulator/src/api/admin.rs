//! Emulator control endpoints under `/admin/` (not part of the Kubernetes API): forced
//! compaction, cutting watch streams, fault settings, and object counts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::json;

use super::json_response;
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::faults::FaultSettings;
use crate::resources::RESOURCES;

/// Handle `/admin/{action}`.
pub fn handle(
    cluster: &Arc<Cluster>,
    method: &Method,
    action: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    match (method.as_str(), action) {
        ("POST", "compact") => {
            let rv = cluster.store.compact();
            cluster.cut_watches();
            Ok(json_response(
                StatusCode::OK,
                &json!({"compactedResourceVersion": rv.to_string()}),
                &[],
            ))
        }
        ("POST", "cut-watches") => {
            cluster.cut_watches();
            Ok(json_response(StatusCode::OK, &json!({"cut": true}), &[]))
        }
        ("GET", "faults") => Ok(json_response(
            StatusCode::OK,
            &json!(cluster.faults.get()),
            &[],
        )),
        ("PUT", "faults") | ("POST", "faults") => {
            let settings: FaultSettings = if body.is_empty() {
                FaultSettings::default()
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid fault settings: {e}")))?
            };
            cluster.faults.set(settings.clone());
            Ok(json_response(StatusCode::OK, &json!(settings), &[]))
        }
        ("DELETE", "faults") => {
            cluster.faults.set(FaultSettings::default());
            Ok(json_response(
                StatusCode::OK,
                &json!(FaultSettings::default()),
                &[],
            ))
        }
        ("GET", "stats") => {
            let mut counts = serde_json::Map::new();
            for r in RESOURCES {
                counts.insert(r.id(), json!(cluster.store.count(r)));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"resourceVersion": cluster.store.resource_version().to_string(), "objects": counts}),
                &[],
            ))
        }
        _ => Err(ApiError::path_not_found()),
    }
}
