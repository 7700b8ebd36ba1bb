//! The HTTP front end: one axum fallback handler that parses the request target, applies fault
//! injection and authorization, and dispatches to discovery, the registry verbs, watches and
//! `pods/log`, rendering results as JSON objects, lists, `Table`s, `PartialObjectMetadata` or
//! `Status` errors exactly as kube-apiserver does.

pub mod admin;
pub mod authorization;
pub mod discovery;
pub mod eviction;
pub mod logs;
pub mod openapi;
pub mod printers;
pub mod request;
pub mod table;
mod verbs;
pub mod watch;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::conversion::from_storage;
use crate::error::ApiError;

use request::{ApiPath, Query};

/// Build the router serving the whole API.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new().fallback(handle).with_state(cluster)
}

/// How the client wants objects rendered (from `Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendering {
    /// Full objects.
    Full,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
    /// `meta.k8s.io/v1` `Table`, embedding rows' objects as `includeObject` says.
    Table(table::IncludeObject),
}

fn rendering(headers: &HeaderMap, query: &Query) -> Result<Rendering, ApiError> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .replace(' ', "");
    // The first acceptable entry wins.
    for part in accept.split(',') {
        if part.contains("as=Table") && part.contains("g=meta.k8s.io") {
            if part.contains("v=v1") && !part.contains("v=v1beta1") {
                let include = table::IncludeObject::parse(query.get("includeObject"))?;
                return Ok(Rendering::Table(include));
            }
            continue;
        }
        if part.contains("as=PartialObjectMetadata") {
            return Ok(Rendering::Metadata);
        }
        if part.starts_with("application/json") || part.starts_with("*/*") || part.is_empty() {
            return Ok(Rendering::Full);
        }
    }
    Ok(Rendering::Full)
}

async fn handle(
    State(cluster): State<Arc<Cluster>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = Query::parse(uri.query());
    let path = uri.path().to_string();
    let result = dispatch(&cluster, &method, &path, &query, &headers, body).await;
    match result {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(%method, %path, code = err.code, reason = %err.reason, "request failed");
            error_response(&err)
        }
    }
}

/// Render an [`ApiError`] as a Status response.
pub fn error_response(err: &ApiError) -> Response {
    let mut response = json_response(
        StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &err.to_status(),
        &[],
    );
    if let Some(seconds) = err.retry_after_seconds {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, value);
        }
    }
    response
}

/// A JSON response with optional `Warning` headers.
pub fn json_response(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for warning in warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

fn verb_of(method: &Method, path: &ApiPath, query: &Query) -> &'static str {
    let named = matches!(path, ApiPath::Resource(p) if p.name.is_some());
    match *method {
        Method::GET if query.flag("watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

async fn dispatch(
    cluster: &Arc<Cluster>,
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let api_path = request::parse_path(path)?;
    if let ApiPath::Admin(action) = &api_path {
        return admin::handle(cluster, method, action, &body);
    }
    let verb = verb_of(method, &api_path, query);
    let resource_name = match &api_path {
        ApiPath::Resource(p) => Some(p.resource.plural),
        _ => None,
    };
    let decision = cluster.faults.check(verb, resource_name);
    if let (Some(latency), false) = (decision.latency, decision.latency_after_commit) {
        tokio::time::sleep(latency).await;
    }
    if decision.reset {
        // A body that fails before its first byte makes hyper abort the connection.
        let broken = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected connection reset",
            ))
        });
        return Ok(Response::new(Body::from_stream(broken)));
    }
    if let Some(err) = decision.error {
        return Err(err);
    }
    let served = serve(cluster, verb, api_path, query, headers, body).await;
    if let (Some(latency), true) = (decision.latency, decision.latency_after_commit) {
        tokio::time::sleep(latency).await;
    }
    served
}

/// Serves a request that fault injection let through.
async fn serve(
    cluster: &Arc<Cluster>,
    verb: &str,
    api_path: ApiPath,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user = authorization::authenticate(cluster, headers)?;
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match api_path {
        ApiPath::Version => Ok(json_response(
            StatusCode::OK,
            &discovery::version_info(),
            &[],
        )),
        ApiPath::Health => {
            let mut response = Response::new(Body::from("ok"));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(response)
        }
        ApiPath::CoreVersions => {
            if discovery::wants_aggregated(&accept) {
                return Ok(aggregated_response(discovery::aggregated(true)));
            }
            let url = cluster.server_url.lock().clone();
            let address = url.trim_start_matches("http://").to_string();
            Ok(json_response(
                StatusCode::OK,
                &discovery::core_versions(&address),
                &[],
            ))
        }
        ApiPath::Groups => {
            if discovery::wants_aggregated(&accept) {
                return Ok(aggregated_response(discovery::aggregated(false)));
            }
            Ok(json_response(StatusCode::OK, &discovery::group_list(), &[]))
        }
        ApiPath::Group(group) => discovery::group(&group)
            .map(|v| json_response(StatusCode::OK, &v, &[]))
            .ok_or_else(ApiError::path_not_found),
        ApiPath::GroupVersion(group, version) => discovery::resource_list(&group, &version)
            .map(|v| json_response(StatusCode::OK, &v, &[]))
            .ok_or_else(ApiError::path_not_found),
        ApiPath::Admin(_) => Err(ApiError::path_not_found()),
        ApiPath::OpenApiIndex => Ok(json_response(
            StatusCode::OK,
            &discovery::openapi_v3_index(),
            &[],
        )),
        ApiPath::OpenApiDocument(group, version) => {
            discovery::openapi_v3_document(&group, &version)
                .map(|v| json_response(StatusCode::OK, &v, &[]))
                .ok_or_else(ApiError::path_not_found)
        }
        ApiPath::Resource(rp) => {
            authorization::authorize(cluster, &user, verb, &rp)?;
            verbs::resource_request(cluster, verb, rp, query, headers, body, &user).await
        }
    }
}

fn aggregated_response(body: Value) -> Response {
    let mut response = json_response(StatusCode::OK, &body, &[]);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(discovery::AGGREGATED_V2_MEDIA_TYPE),
    );
    response
}

/// Render one object according to the `Accept` header.
pub fn render_object(
    object: &Value,
    render: Rendering,
    resource: &crate::resources::ResourceType,
) -> Value {
    match render {
        Rendering::Full => from_storage(resource, object),
        Rendering::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        Rendering::Table(include) => table::table(resource, std::slice::from_ref(object), include),
    }
}
