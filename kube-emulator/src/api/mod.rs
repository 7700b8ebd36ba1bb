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
pub mod watch;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::Router;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::admission::{self, FieldValidation, WriteContext};
use crate::cluster::Cluster;
use crate::conversion::{from_storage, to_storage};
use crate::error::ApiError;
use crate::patch::PatchKind;
use crate::registry::{DeleteOptions, DeleteOutcome};
use crate::selectors::{FieldSelector, LabelSelector};

use request::{ApiPath, Query, ResourcePath};

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
            resource_request(cluster, verb, rp, query, headers, body, &user).await
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

fn field_manager(
    query: &Query,
    headers: &HeaderMap,
    default_operation: &'static str,
) -> WriteContext {
    let manager = query
        .get("fieldManager")
        .map(String::from)
        .or_else(|| {
            headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.split('/').next().unwrap_or("unknown").to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    WriteContext {
        manager,
        operation: default_operation,
        subresource: None,
        fields_v1: None,
    }
}

fn dry_run(query: &Query) -> bool {
    query.get("dryRun") == Some("All")
}

fn selectors(rp: &ResourcePath, query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())?;
    let mut fields =
        FieldSelector::parse(query.get("fieldSelector").unwrap_or_default(), rp.resource)?;
    if let Some(ns) = &rp.namespace {
        // Namespaced collections behave like an implicit metadata.namespace selector.
        let _ = ns;
        fields.requirements.retain(|_| true);
    }
    Ok((labels, fields))
}

#[allow(clippy::too_many_arguments)]
async fn resource_request(
    cluster: &Arc<Cluster>,
    verb: &str,
    rp: ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
    user: &authorization::User,
) -> Result<Response, ApiError> {
    let resource = rp.resource;
    let namespace = rp.namespace.clone().unwrap_or_default();
    let render = rendering(headers, query)?;
    if !resource.verbs.contains(&verb) && rp.subresource.is_none() {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    if resource.namespaced
        && rp.namespace.is_none()
        && rp.name.is_none()
        && !matches!(verb, "list" | "watch")
    {
        return Err(ApiError::path_not_found());
    }
    let field_validation = FieldValidation::parse(query.get("fieldValidation"))?;
    let mut body = body;
    if matches!(verb, "create" | "update" | "delete" | "deletecollection") && !body.is_empty() {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if content_type.contains("protobuf") {
            // kubectl's typed generators send a few simple kinds as protobuf,
            // and client-go's typed clients their DeleteOptions.
            let object = crate::protobuf::decode(&body, content_type)?;
            body = Bytes::from(serde_json::to_vec(&object).unwrap_or_default());
        } else if content_type.contains("cbor") {
            return Err(ApiError::unsupported_body_type(content_type));
        }
    }
    match (verb, rp.name.as_deref(), rp.subresource.as_deref()) {
        ("watch", None, None) => {
            let (labels, fields) = selectors(&rp, query)?;
            watch::watch(cluster.clone(), rp.clone(), labels, fields, query, render)
        }
        ("list", None, None) => list(cluster, &rp, query, render),
        ("get", Some(name), None) | ("get", Some(name), Some("status")) => {
            let object = cluster.registry.get(resource, &namespace, name)?;
            let mut body = render_object(&object, render, resource);
            if matches!(render, Rendering::Table(_)) {
                body["metadata"]["resourceVersion"] = object["metadata"]["resourceVersion"].clone();
            }
            Ok(json_response(StatusCode::OK, &body, &[]))
        }
        ("get", Some(name), Some("log")) => logs::pod_log(cluster, &namespace, name, query).await,
        ("create", None, None) => {
            if resource.kind == "SelfSubjectAccessReview" {
                return authorization::self_subject_access_review(cluster, user, &body);
            }
            if resource.kind == "SelfSubjectRulesReview" {
                return authorization::self_subject_rules_review(cluster, user, &body);
            }
            let decoded = admission::decode_body(resource, &body, field_validation)?;
            let ctx = field_manager(query, headers, "Update");
            let created = cluster.registry.create(
                resource,
                &namespace,
                to_storage(resource, decoded.object),
                &ctx,
                dry_run(query),
            )?;
            Ok(json_response(
                StatusCode::CREATED,
                &from_storage(resource, &created),
                &decoded.warnings,
            ))
        }
        ("create", Some(name), Some("eviction")) => {
            eviction::evict(cluster, &namespace, name, &body, query)
        }
        ("create", Some(name), Some("binding")) => bind(cluster, &namespace, name, &body),
        ("create", Some(name), Some("token")) => token_request(cluster, &namespace, name, &body),
        ("update", Some(name), sub @ (None | Some("status") | Some("finalize"))) => {
            let decoded = admission::decode_body(resource, &body, field_validation)?;
            let mut ctx = field_manager(query, headers, "Update");
            if sub == Some("status") {
                ctx.subresource = Some("status");
            }
            let stored = cluster.registry.replace(
                resource,
                &namespace,
                name,
                to_storage(resource, decoded.object),
                sub,
                &ctx,
                dry_run(query),
            )?;
            Ok(json_response(
                StatusCode::OK,
                &from_storage(resource, &stored),
                &decoded.warnings,
            ))
        }
        ("patch", Some(name), sub @ (None | Some("status"))) => {
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = PatchKind::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            let patch_body: Value = if kind == PatchKind::Apply {
                serde_norway::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            let operation = if kind == PatchKind::Apply {
                "Apply"
            } else {
                "Update"
            };
            let mut ctx = field_manager(query, headers, operation);
            if kind == PatchKind::Apply && query.get("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::invalid_options(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            if query.get("force").is_some() && kind != PatchKind::Apply {
                return Err(ApiError::invalid_options(
                    "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            if sub == Some("status") {
                ctx.subresource = Some("status");
            }
            let (stored, created, warnings) = cluster.registry.patch(
                resource,
                &namespace,
                name,
                kind,
                patch_body,
                sub,
                &ctx,
                field_validation,
                query.flag("force"),
                dry_run(query),
            )?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(
                status,
                &from_storage(resource, &stored),
                &warnings,
            ))
        }
        ("delete", Some(name), None) => {
            let options = DeleteOptions::parse(&body, query)?;
            match cluster
                .registry
                .delete(resource, &namespace, name, &options)?
            {
                DeleteOutcome::Pending(object) => Ok(json_response(
                    StatusCode::OK,
                    &from_storage(resource, &object),
                    &[],
                )),
                DeleteOutcome::Removed(object) => {
                    if resource.plural == "pods" && resource.group.is_empty() {
                        return Ok(json_response(StatusCode::OK, &object, &[]));
                    }
                    let mut details = json!({
                        "name": name,
                        "kind": resource.plural,
                        "uid": object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                    });
                    if !resource.group.is_empty() {
                        details["group"] = json!(resource.group);
                    }
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                        &[],
                    ))
                }
            }
        }
        ("deletecollection", None, None) => {
            let (labels, fields) = selectors(&rp, query)?;
            let options = DeleteOptions::parse(&body, query)?;
            let (rv, items) = cluster.registry.delete_collection(
                resource,
                rp.namespace.as_deref(),
                &labels,
                &fields,
                &options,
            )?;
            let items: Vec<Value> = items
                .iter()
                .map(|o| list_item(&from_storage(resource, o)))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
                &[],
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// A list item: the object without `kind`/`apiVersion`.
fn list_item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Some(map) = item.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    item
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

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    snapshot: u64,
    offset: usize,
}

fn list(
    cluster: &Arc<Cluster>,
    rp: &ResourcePath,
    query: &Query,
    render: Rendering,
) -> Result<Response, ApiError> {
    let resource = rp.resource;
    if query.get("sendInitialEvents").is_some() {
        return Err(ApiError::invalid_options(
            "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list",
        ));
    }
    let rv_match = query.get("resourceVersionMatch");
    let requested_rv = query.get("resourceVersion").unwrap_or_default();
    if rv_match.is_some_and(|m| !m.is_empty()) && requested_rv.is_empty() {
        return Err(ApiError::invalid_options(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if rv_match == Some("Exact") && (requested_rv == "0" || requested_rv.is_empty()) {
        return Err(ApiError::invalid_options(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
        ));
    }
    if let Ok(rv) = requested_rv.parse::<u64>() {
        let current = cluster.store.resource_version();
        if rv > current {
            return Err(ApiError::resource_version_too_large(rv, current));
        }
    }
    let limit = query
        .integer("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let (rv, items, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ContinueToken>(&bytes).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
            let (rv, items) = cluster.store.snapshot(decoded.snapshot).ok_or_else(|| {
                ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
            })?;
            (rv, items, decoded.offset)
        }
        None => {
            let (labels, fields) = selectors(rp, query)?;
            let (rv, items) =
                cluster
                    .registry
                    .list(resource, rp.namespace.as_deref(), &labels, &fields);
            (rv, items, 0)
        }
    };
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let page = &items[offset.min(items.len())..end];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        let snapshot = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
                .map(|t| t.snapshot)
                .unwrap_or_default(),
            None => cluster.store.save_snapshot(rv, items.clone()),
        };
        let token = ContinueToken {
            rv,
            snapshot,
            offset: end,
        };
        metadata["continue"] = json!(base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&token).unwrap_or_default()));
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    let body = match render {
        Rendering::Table(include) => {
            let mut t = table::table(resource, page, include);
            t["metadata"] = metadata;
            t
        }
        Rendering::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": page.iter().map(|o| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"].clone()})).collect::<Vec<_>>(),
        }),
        Rendering::Full => json!({
            "kind": resource.list_kind(),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": page.iter().map(|o| list_item(&from_storage(resource, o))).collect::<Vec<_>>(),
        }),
    };
    Ok(json_response(StatusCode::OK, &body, &[]))
}

/// `POST serviceaccounts/{name}/token`: a TokenRequest answered with the emulator's token for
/// that ServiceAccount (what `kubectl create token` calls).
fn token_request(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    cluster
        .registry
        .get(crate::resources::service_accounts(), namespace, name)?;
    let mut request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    let seconds = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": null});
    if request.get("spec").is_none() {
        request["spec"] = json!({"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": seconds});
    }
    request["status"] = json!({
        "token": authorization::service_account_token(namespace, name),
        "expirationTimestamp": crate::time::format_time(chrono::Utc::now() + chrono::Duration::seconds(seconds)),
    });
    Ok(json_response(StatusCode::CREATED, &request, &[]))
}

/// `POST pods/{name}/binding`: set `spec.nodeName`.
fn bind(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let binding: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    crate::controllers::scheduler::bind_pod(cluster, namespace, name, &node)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    ))
}
