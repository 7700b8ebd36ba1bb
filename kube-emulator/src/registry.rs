//! The verbs with apiserver semantics on top of the store: create (with `generateName`),
//! replace and status replace, patch (merge/strategic/JSON/apply), delete (preconditions, grace
//! periods, propagation finalizers, `deletionTimestamp`) and deletecollection. HTTP handlers and
//! the simulated controllers both write through here, so they race through the same checks.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::admission::{self, FieldValidation, WriteContext};
use crate::error::ApiError;
use crate::patch::{apply_patch, PatchKind};
use crate::resources::{self, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{current_rv_of, Store};
use crate::time::{format_time, now_rfc3339};

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are orphaned (ownerReference removed).
    Orphan,
    /// Owner removed now, dependents deleted afterwards.
    Background,
    /// Dependents deleted first, then the owner.
    Foreground,
}

/// Parsed `DeleteOptions`.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy` (or legacy `orphanDependents`).
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Parse a `DeleteOptions` JSON body (empty body = defaults) and merge query parameters.
    pub fn parse(body: &[u8], query: &crate::api::request::Query) -> Result<Self, ApiError> {
        let mut options = Self::default();
        let text = std::str::from_utf8(body).unwrap_or_default().trim();
        if !text.is_empty() {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?;
            if !value.is_object() {
                return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
            }
            options.grace_period_seconds = value.get("gracePeriodSeconds").and_then(Value::as_i64);
            if let Some(policy) = value.get("propagationPolicy").and_then(Value::as_str) {
                options.propagation = Some(parse_propagation(policy)?);
            }
            if let Some(orphan) = value.get("orphanDependents").and_then(Value::as_bool) {
                options.propagation = Some(if orphan {
                    Propagation::Orphan
                } else {
                    Propagation::Background
                });
            }
            options.precondition_uid = value
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from);
            options.precondition_resource_version = value
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            options.dry_run = value
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        }
        if let Some(grace) = query.get("gracePeriodSeconds") {
            options.grace_period_seconds = Some(grace.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds {grace:?}"))
            })?);
        }
        if let Some(policy) = query.get("propagationPolicy") {
            options.propagation = Some(parse_propagation(policy)?);
        }
        if query.get("dryRun") == Some("All") {
            options.dry_run = true;
        }
        Ok(options)
    }
}

fn parse_propagation(policy: &str) -> Result<Propagation, ApiError> {
    match policy {
        "Orphan" => Ok(Propagation::Orphan),
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        other => Err(ApiError::invalid_options(format!(
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        ))),
    }
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum DeleteOutcome {
    /// The object is gone; carries its last state.
    Removed(Arc<Value>),
    /// The object still exists with `deletionTimestamp` (finalizers or a grace period pending).
    Pending(Arc<Value>),
}

/// Finalizer names used by the garbage collector.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// Foreground deletion finalizer.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The apiserver verbs over a [`Store`].
pub struct Registry {
    /// The underlying store.
    pub store: Arc<Store>,
}

impl Registry {
    /// Wrap a store.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// GET one object.
    pub fn get(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.store
            .get(resource, namespace, name)
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// List objects matching selectors, returning the list RV.
    pub fn list(
        &self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (u64, Vec<Arc<Value>>) {
        let (rv, items) = self.store.list(resource, namespace);
        let items = items
            .into_iter()
            .filter(|o| labels.matches(o) && fields.matches(o))
            .collect();
        (rv, items)
    }

    /// Create an object (already decoded). `namespace` is the URL namespace ("" for cluster scope).
    pub fn create(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        mut object: Value,
        ctx: &WriteContext,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        if resource.namespaced {
            let body_ns = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !body_ns.is_empty() && body_ns != namespace {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            object["metadata"]["namespace"] = json!(namespace);
        } else if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        let uid = uuid::Uuid::new_v4().to_string();
        let generate_name = object
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let has_name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name && !generate_name.is_empty() {
            object["metadata"]["name"] = json!(admission::generate_name(&generate_name));
        }
        admission::stamp_new_object(&mut object, &uid);
        admission::default_on_create(resource, &mut object, &uid);
        admission::validate(resource, &object, None)?;
        if resource.namespaced {
            // Admission sees the name the client sent (empty with generateName).
            let requested = if has_name {
                object["metadata"]["name"].as_str().unwrap_or_default()
            } else {
                ""
            };
            self.check_namespace_accepts(resource, requested, namespace)?;
        }
        admission::record_manager(&mut object, resource, ctx);
        if dry_run {
            return Ok(Arc::new(object));
        }
        // The apiserver retries generated-name collisions a few times.
        let mut attempt = 0;
        loop {
            match self.store.insert(resource, object.clone()) {
                Err(err)
                    if err.code == 409 && !has_name && !generate_name.is_empty() && attempt < 8 =>
                {
                    attempt += 1;
                    object["metadata"]["name"] = json!(admission::generate_name(&generate_name));
                }
                other => return other,
            }
        }
    }

    fn check_namespace_accepts(
        &self,
        resource: &'static ResourceType,
        name: &str,
        namespace: &str,
    ) -> Result<(), ApiError> {
        match self.store.get(resources::namespaces(), "", namespace) {
            None => Err(ApiError::not_found(resources::namespaces(), namespace)),
            Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(ApiError::namespace_terminating(resource, name, namespace))
            }
            Some(_) => Ok(()),
        }
    }

    /// PUT: replace an object or its status. Returns the stored object.
    #[allow(clippy::too_many_arguments)]
    pub fn replace(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        object: Value,
        subresource: Option<&str>,
        ctx: &WriteContext,
        dry_run: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let body_name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let requested_rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let subresource = subresource.map(str::to_string);
        let result = self.write(resource, namespace, name, dry_run, |current| {
            if !requested_rv.is_empty() && requested_rv != current_rv_of(current).to_string() {
                return Err(ApiError::stale_resource_version(resource, name));
            }
            prepare_update(resource, current, object, subresource.as_deref(), ctx)
        })?;
        Ok(result)
    }

    /// PATCH. Returns the stored object and whether it was created (apply only).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        patch: Value,
        subresource: Option<&str>,
        ctx: &WriteContext,
        field_validation: FieldValidation,
        force: bool,
        dry_run: bool,
    ) -> Result<(Arc<Value>, bool, Vec<String>), ApiError> {
        if kind == PatchKind::Apply && self.store.get(resource, namespace, name).is_none() {
            if subresource.is_some() {
                return Err(ApiError::not_found(resource, name));
            }
            let mut apply_ctx = ctx.clone();
            apply_ctx.fields_v1 = Some(crate::apply::to_fields_v1(&crate::apply::applied_fields(
                &patch,
            )));
            let decoded = admission::decode_value(resource, patch, field_validation)?;
            let mut object = crate::conversion::to_storage(resource, decoded.object);
            object["metadata"]["name"] = json!(name);
            let created = self.create(resource, namespace, object, &apply_ctx, dry_run)?;
            return Ok((created, true, decoded.warnings));
        }
        let requested_rv = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        let subresource = subresource.map(str::to_string);
        let mut warnings = Vec::new();
        let stored = self.write(resource, namespace, name, dry_run, |current| {
            if let Some(rv) = &requested_rv {
                if *rv != current_rv_of(current).to_string() {
                    return Err(ApiError::stale_resource_version(resource, name));
                }
            }
            // Patches apply to the served version; storage may differ (events.k8s.io).
            let served = crate::conversion::from_storage(resource, current);
            let patched = apply_patch(&served, &patch, kind)?;
            let decoded = admission::decode_value(resource, patched, field_validation)?;
            warnings = decoded.warnings;
            let object = crate::conversion::to_storage(resource, decoded.object);
            let mut next = prepare_update(resource, current, object, subresource.as_deref(), ctx)?;
            // Server-side apply: conflicts with other appliers' fields, and ownership.
            if kind == PatchKind::Apply {
                let merged = crate::conversion::from_storage(resource, &next);
                next["metadata"]["managedFields"] = crate::apply::check_and_record(
                    resource,
                    name,
                    &served,
                    &merged,
                    &patch,
                    &ctx.manager,
                    force,
                )?;
            }
            Ok(next)
        })?;
        Ok((stored, false, warnings))
    }

    /// Run an update through the store and finish deletion if it removed the last finalizer.
    fn write<F>(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        dry_run: bool,
        mutate: F,
    ) -> Result<Arc<Value>, ApiError>
    where
        F: FnOnce(&Value) -> Result<Value, ApiError>,
    {
        if dry_run {
            let current = self.get(resource, namespace, name)?;
            return mutate(&current).map(Arc::new);
        }
        let stored = self.store.update(resource, namespace, name, |current| {
            mutate(current).map(Some)
        })?;
        Ok(self
            .finish_deletion_if_ready(resource, &stored)
            .unwrap_or(stored))
    }

    /// Internal read-modify-write for controllers: `mutate` edits a copy of the object in place.
    /// Returns `Ok(None)` if the object does not exist.
    pub fn modify<F>(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        ctx: &WriteContext,
        mutate: F,
    ) -> Result<Option<Arc<Value>>, ApiError>
    where
        F: FnOnce(&mut Value),
    {
        let result = self.store.update(resource, namespace, name, |current| {
            let mut next = current.clone();
            mutate(&mut next);
            if next == *current {
                return Ok(None);
            }
            admission::record_manager(&mut next, resource, ctx);
            Ok(Some(next))
        });
        match result {
            Ok(stored) => Ok(Some(
                self.finish_deletion_if_ready(resource, &stored)
                    .unwrap_or(stored),
            )),
            Err(err) if err.code == 404 => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Remove a finalizer (as a strategic-merge `$deleteFromPrimitiveList` patch would).
    pub fn remove_finalizer(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        finalizer: &str,
        manager: &str,
    ) -> Result<Option<Arc<Value>>, ApiError> {
        self.modify(
            resource,
            namespace,
            name,
            &WriteContext::update(manager),
            |obj| {
                if let Some(list) = obj
                    .pointer_mut("/metadata/finalizers")
                    .and_then(Value::as_array_mut)
                {
                    list.retain(|f| f != finalizer);
                    if list.is_empty() {
                        obj["metadata"]
                            .as_object_mut()
                            .expect("metadata")
                            .remove("finalizers");
                    }
                }
            },
        )
    }

    /// If the object is being deleted, has no finalizers left and no grace period pending,
    /// remove it from storage. Returns the last state when removed.
    fn finish_deletion_if_ready(
        &self,
        resource: &'static ResourceType,
        object: &Value,
    ) -> Option<Arc<Value>> {
        object.pointer("/metadata/deletionTimestamp")?;
        let has_finalizers = object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            return None;
        }
        // A Namespace goes once its `spec.finalizers` (the namespace controller's) are gone.
        if resource.is(resources::namespaces())
            && object
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty())
        {
            return None;
        }
        let grace = object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace != 0 {
            return None;
        }
        let (namespace, name) = crate::store::object_key(object);
        let uid = object.pointer("/metadata/uid").and_then(Value::as_str);
        self.store.remove(resource, &namespace, &name, uid)
    }

    /// DELETE one object.
    pub fn delete(
        &self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<DeleteOutcome, ApiError> {
        let current = self.get(resource, namespace, name)?;
        check_delete_preconditions(resource, name, &current, options)?;
        let propagation = options.propagation.unwrap_or(if resource.group == "batch" {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
        let grace = self.grace_period(resource, &current, options);
        let gc_finalizer = match propagation {
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Background => None,
        };
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let is_namespace = resource.plural == "namespaces" && resource.group.is_empty();
        let immediate = grace == 0 && !has_finalizers && gc_finalizer.is_none() && !is_namespace;
        if options.dry_run {
            return Ok(if immediate {
                DeleteOutcome::Removed(current)
            } else {
                DeleteOutcome::Pending(current)
            });
        }
        if immediate {
            let uid = current.pointer("/metadata/uid").and_then(Value::as_str);
            return match self.store.remove(resource, namespace, name, uid) {
                Some(last) => Ok(DeleteOutcome::Removed(last)),
                None => Err(ApiError::not_found(resource, name)),
            };
        }
        // Graceful or finalizer-gated deletion: mark the object.
        let now = chrono::Utc::now();
        let stored = self.store.update(resource, namespace, name, |obj| {
            Ok(Some(mark_for_deletion(
                obj,
                grace,
                gc_finalizer,
                is_namespace,
                now,
            )))
        })?;
        match self.finish_deletion_if_ready(resource, &stored) {
            Some(last) => Ok(DeleteOutcome::Removed(last)),
            None => Ok(DeleteOutcome::Pending(stored)),
        }
    }

    fn grace_period(
        &self,
        resource: &ResourceType,
        object: &Value,
        options: &DeleteOptions,
    ) -> i64 {
        if !(resource.plural == "pods" && resource.group.is_empty()) {
            return 0;
        }
        let phase = object
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let scheduled = object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !scheduled || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        options
            .grace_period_seconds
            .or_else(|| {
                object
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// DELETE a collection; returns the deleted (or now terminating) objects.
    pub fn delete_collection(
        &self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        options: &DeleteOptions,
    ) -> Result<(u64, Vec<Arc<Value>>), ApiError> {
        let (_, items) = self.list(resource, namespace, labels, fields);
        let mut deleted = Vec::new();
        for item in items {
            let (ns, name) = crate::store::object_key(&item);
            match self.delete(resource, &ns, &name, options) {
                Ok(DeleteOutcome::Removed(obj)) | Ok(DeleteOutcome::Pending(obj)) => {
                    deleted.push(obj)
                }
                Err(err) if err.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        Ok((self.store.resource_version(), deleted))
    }
}

/// Build the object to store for an update of `current` with the decoded `new` body.
fn prepare_update(
    resource: &'static ResourceType,
    current: &Value,
    new: Value,
    subresource: Option<&str>,
    ctx: &WriteContext,
) -> Result<Value, ApiError> {
    let name = current
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    check_uid_precondition(resource, name, current, &new)?;
    let mut next = if subresource == Some("status") {
        let mut next = current.clone();
        next["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
        next
    } else if subresource == Some("finalize") {
        // `namespaces/finalize` changes only `spec.finalizers`.
        let mut next = current.clone();
        next["spec"]["finalizers"] = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        next
    } else {
        updated_object(resource, current, new)
    };
    if let Some(meta) = next["metadata"].as_object_mut() {
        if meta
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            meta.remove("finalizers");
        }
    }
    admission::validate(resource, &next, Some(current))?;
    if next == *current {
        return Ok(next);
    }
    admission::record_manager(&mut next, resource, ctx);
    let _ = now_rfc3339;
    Ok(next)
}

/// DELETE's preconditions: the object's uid and resourceVersion, when given.
fn check_delete_preconditions(
    resource: &'static ResourceType,
    name: &str,
    current: &Value,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    if let Some(uid) = &options.precondition_uid {
        let actual = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &options.precondition_resource_version {
        let actual = current_rv_of(current).to_string();
        if *rv != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"),
            ));
        }
    }
    Ok(())
}

/// The object marked for graceful or finalizer-gated deletion: `deletionTimestamp` and the
/// grace period, the generation bump, the garbage collector's finalizer, a Namespace
/// Terminating.
fn mark_for_deletion(
    obj: &Value,
    grace: i64,
    gc_finalizer: Option<&str>,
    is_namespace: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut next = obj.clone();
    let meta = next["metadata"].as_object_mut().expect("metadata");
    let first_mark = !meta.contains_key("deletionTimestamp");
    let existing_grace = meta
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    // A shorter grace period may replace a longer one, never the reverse.
    if first_mark || existing_grace.is_some_and(|g| grace < g) {
        meta.insert(
            "deletionTimestamp".into(),
            json!(format_time(now + chrono::Duration::seconds(grace))),
        );
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if first_mark {
        if let Some(generation) = meta.get("generation").and_then(Value::as_i64) {
            if generation > 0 {
                meta.insert("generation".into(), json!(generation + 1));
            }
        }
    }
    if let Some(finalizer) = gc_finalizer {
        if first_mark {
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                if !list.iter().any(|f| f == finalizer) {
                    list.push(json!(finalizer));
                }
            }
        }
    }
    if is_namespace {
        next["status"]["phase"] = json!("Terminating");
    }
    next
}

/// An update's `metadata.uid`, when set, must be the object's.
fn check_uid_precondition(
    resource: &'static ResourceType,
    name: &str,
    current: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str) {
        let actual = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !uid.is_empty() && uid != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// The object an update of the object itself (not a subresource) stores: the system metadata
/// and status carried over, a Secret normalized, a Namespace's finalizers kept, the generation
/// bumped when the spec changed.
fn updated_object(resource: &'static ResourceType, current: &Value, mut new: Value) -> Value {
    admission::carry_system_metadata(&mut new, current);
    if resource.has_subresource("status") {
        match current.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    if resource.plural == "secrets" {
        admission::defaults::normalize_secret(&mut new);
    }
    if resource.is(resources::namespaces()) {
        // Only the finalize subresource changes a Namespace's finalizers.
        new["spec"]["finalizers"] = current
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
    }
    if new.get("spec").is_some() && new.get("spec") != current.get("spec") {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    new
}
