//! Requests on resource paths: the registry verbs (get, list, create, update, patch, delete,
//! deletecollection) and the subresources served here (`binding`, `token`; `log` and
//! `eviction` are their own modules), rendered as kube-apiserver does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::request::{Query, ResourcePath};
use super::{
    authorization, eviction, json_response, logs, render_object, rendering, table, watch, Rendering,
};
use crate::admission::{self, FieldValidation, WriteContext};
use crate::cluster::Cluster;
use crate::conversion::{from_storage, to_storage};
use crate::error::ApiError;
use crate::patch::PatchKind;
use crate::registry::{DeleteOptions, DeleteOutcome};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};

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
pub(super) async fn resource_request(
    cluster: &Arc<Cluster>,
    verb: &str,
    rp: ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    body: Bytes,
    user: &authorization::User,
) -> Result<Response, ApiError> {
    let namespace = rp.namespace.clone().unwrap_or_default();
    let render = rendering(headers, query)?;
    check_verb(verb, &rp)?;
    let field_validation = FieldValidation::parse(query.get("fieldValidation"))?;
    let body = decode_body_encoding(verb, headers, body)?;
    let call = ResourceCall {
        cluster,
        rp,
        namespace,
        query,
        headers,
        body,
        render,
        field_validation,
    };
    let (namespace, body) = (&call.namespace, &call.body);
    match (
        verb,
        call.rp.name.as_deref(),
        call.rp.subresource.as_deref(),
    ) {
        ("watch", None, None) => call.watch(),
        ("list", None, None) => list(cluster, &call.rp, query, render),
        ("get", Some(name), None) | ("get", Some(name), Some("status")) => call.get(name),
        ("get", Some(name), Some("log")) => logs::pod_log(cluster, namespace, name, query).await,
        ("create", None, None) => call.create(user),
        ("create", Some(name), Some("eviction")) => {
            eviction::evict(cluster, namespace, name, body, query)
        }
        ("create", Some(name), Some("binding")) => bind(cluster, namespace, name, body),
        ("create", Some(name), Some("token")) => token_request(cluster, namespace, name, body),
        ("update", Some(name), sub @ (None | Some("status") | Some("finalize"))) => {
            call.update(name, sub)
        }
        ("patch", Some(name), sub @ (None | Some("status"))) => call.patch(name, sub),
        ("delete", Some(name), None) => call.delete(name),
        ("deletecollection", None, None) => call.delete_collection(),
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The verb must be one the resource serves, and a namespaced resource's named or
/// cluster-wide-only requests need a namespace.
fn check_verb(verb: &str, rp: &ResourcePath) -> Result<(), ApiError> {
    let resource = rp.resource;
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
    Ok(())
}

/// A write's body as JSON: protobuf is decoded, CBOR refused.
fn decode_body_encoding(verb: &str, headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
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
    Ok(body)
}

/// A request on a resource, object or subresource, with what its verb needs.
struct ResourceCall<'a> {
    cluster: &'a Arc<Cluster>,
    rp: ResourcePath,
    namespace: String,
    query: &'a Query,
    headers: &'a HeaderMap,
    /// The body as JSON.
    body: Bytes,
    render: Rendering,
    field_validation: FieldValidation,
}

impl ResourceCall<'_> {
    fn watch(&self) -> Result<Response, ApiError> {
        let (labels, fields) = selectors(&self.rp, self.query)?;
        watch::watch(
            self.cluster.clone(),
            self.rp.clone(),
            labels,
            fields,
            self.query,
            self.render,
        )
    }

    fn get(&self, name: &str) -> Result<Response, ApiError> {
        let resource = self.rp.resource;
        let object = self.cluster.registry.get(resource, &self.namespace, name)?;
        let mut body = render_object(&object, self.render, resource);
        if matches!(self.render, Rendering::Table(_)) {
            body["metadata"]["resourceVersion"] = object["metadata"]["resourceVersion"].clone();
        }
        Ok(json_response(StatusCode::OK, &body, &[]))
    }

    fn create(&self, user: &authorization::User) -> Result<Response, ApiError> {
        let (cluster, resource, query) = (self.cluster, self.rp.resource, self.query);
        if resource.kind == "SelfSubjectAccessReview" {
            return authorization::self_subject_access_review(cluster, user, &self.body);
        }
        if resource.kind == "SelfSubjectRulesReview" {
            return authorization::self_subject_rules_review(cluster, user, &self.body);
        }
        let decoded = admission::decode_body(resource, &self.body, self.field_validation)?;
        let ctx = field_manager(query, self.headers, "Update");
        let created = cluster.registry.create(
            resource,
            &self.namespace,
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

    fn update(&self, name: &str, sub: Option<&str>) -> Result<Response, ApiError> {
        let resource = self.rp.resource;
        let decoded = admission::decode_body(resource, &self.body, self.field_validation)?;
        let mut ctx = field_manager(self.query, self.headers, "Update");
        if sub == Some("status") {
            ctx.subresource = Some("status");
        }
        let stored = self.cluster.registry.replace(
            resource,
            &self.namespace,
            name,
            to_storage(resource, decoded.object),
            sub,
            &ctx,
            dry_run(self.query),
        )?;
        Ok(json_response(
            StatusCode::OK,
            &from_storage(resource, &stored),
            &decoded.warnings,
        ))
    }

    fn patch(&self, name: &str, sub: Option<&str>) -> Result<Response, ApiError> {
        let (resource, query) = (self.rp.resource, self.query);
        let content_type = self
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let kind = PatchKind::from_content_type(content_type)
            .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
        let patch_body: Value = if kind == PatchKind::Apply {
            serde_norway::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        } else {
            serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
        };
        let operation = if kind == PatchKind::Apply {
            "Apply"
        } else {
            "Update"
        };
        let mut ctx = field_manager(query, self.headers, operation);
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
        let (stored, created, warnings) = self.cluster.registry.patch(
            resource,
            &self.namespace,
            name,
            kind,
            patch_body,
            sub,
            &ctx,
            self.field_validation,
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

    fn delete(&self, name: &str) -> Result<Response, ApiError> {
        let resource = self.rp.resource;
        let options = DeleteOptions::parse(&self.body, self.query)?;
        match self
            .cluster
            .registry
            .delete(resource, &self.namespace, name, &options)?
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

    fn delete_collection(&self) -> Result<Response, ApiError> {
        let resource = self.rp.resource;
        let (labels, fields) = selectors(&self.rp, self.query)?;
        let options = DeleteOptions::parse(&self.body, self.query)?;
        let (rv, items) = self.cluster.registry.delete_collection(
            resource,
            self.rp.namespace.as_deref(),
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
    check_list_options(cluster, query)?;
    let limit = query
        .integer("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let (rv, items, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => continued_list(cluster, token)?,
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
    let body = list_body(resource, page, metadata, render);
    Ok(json_response(StatusCode::OK, &body, &[]))
}

/// The list options a list refuses: `sendInitialEvents`, `resourceVersionMatch` without a
/// usable `resourceVersion`, a `resourceVersion` from the future.
fn check_list_options(cluster: &Cluster, query: &Query) -> Result<(), ApiError> {
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
    Ok(())
}

/// The snapshot a `continue` token points into, and where the next page starts.
fn continued_list(
    cluster: &Cluster,
    token: &str,
) -> Result<(u64, Vec<Arc<Value>>, usize), ApiError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<ContinueToken>(&bytes).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: illegal base64 data"))?;
    let (rv, items) = cluster.store.snapshot(decoded.snapshot).ok_or_else(|| {
        ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
    })?;
    Ok((rv, items, decoded.offset))
}

/// A page of a list as the client asked for it: a `Table`, a `PartialObjectMetadataList` or
/// the resource's list kind.
fn list_body(
    resource: &ResourceType,
    page: &[Arc<Value>],
    metadata: Value,
    render: Rendering,
) -> Value {
    match render {
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
    }
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
