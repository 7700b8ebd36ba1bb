//! `POST pods/{name}/eviction` (policy/v1 or v1beta1 `Eviction`) as kube-apiserver's eviction
//! REST handler: terminal, pending and terminating pods are deleted without consulting
//! budgets; otherwise the one PodDisruptionBudget selecting the pod must allow a disruption
//! (its status, kept by the disruption controller, is checked and decremented atomically, the
//! pod recorded in `disruptedPods`), else 429 `Cannot evict pod as it would violate the pod's
//! disruption budget.`; unhealthy pods follow `unhealthyPodEvictionPolicy`. An approved
//! eviction adds the `DisruptionTarget` condition and deletes the pod with the Eviction's
//! `deleteOptions`.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use super::json_response;
use super::request::Query;
use crate::cluster::Cluster;
use crate::controllers::disruption::{self, pdbs};
use crate::controllers::pod_status::{has_true_condition, set_condition};
use crate::error::ApiError;
use crate::registry::DeleteOptions;
use crate::resources;
use crate::store::current_rv_of;
use crate::time::format_time;

/// Refuse once this many approved evictions wait for the controller (`MaxDisruptedPodSize`).
const MAX_DISRUPTED_PODS: usize = 2000;

/// Handle an eviction request.
pub fn evict(
    cluster: &Arc<Cluster>,
    namespace: &str,
    name: &str,
    body: &[u8],
    query: &Query,
) -> Result<Response, ApiError> {
    let mut options = eviction_options(name, body, query)?;
    let pods = resources::pods();
    let pod = cluster.registry.get(pods, namespace, name)?;
    if can_ignore_budgets(&pod) {
        if enforces_resource_version(&pod) && options.precondition_resource_version.is_none() {
            options.precondition_resource_version = Some(current_rv_of(&pod).to_string());
        }
        delete_with_condition(cluster, namespace, name, &options)?;
        return Ok(success());
    }
    let (_, all) = cluster.store.list(pdbs(), Some(namespace));
    let budgets: Vec<&Arc<Value>> = all
        .iter()
        .filter(|p| disruption::selects(p, &pod))
        .collect();
    if budgets.len() > 1 {
        return Err(ApiError::failure(
            500,
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut unhealthy_allowed = false;
    if let Some(pdb) = budgets.first() {
        unhealthy_allowed = !has_true_condition(&pod, "Ready") && unhealthy_may_go(pdb);
        if !unhealthy_allowed {
            take_disruption(cluster, pdb, name, options.dry_run)?;
        }
    }
    let caller_rv = options.precondition_resource_version.is_some();
    if unhealthy_allowed {
        options.precondition_resource_version = Some(current_rv_of(&pod).to_string());
    }
    match delete_with_condition(cluster, namespace, name, &options) {
        Err(err) if err.code == 409 && unhealthy_allowed && !caller_rv => {
            let pdb_name = crate::store::object_key(budgets[0]).1;
            Err(still_processing(&pdb_name))
        }
        Err(err) => Err(err),
        Ok(()) => Ok(success()),
    }
}

fn success() -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &[],
    )
}

/// Decode the Eviction and merge its `deleteOptions` with the request's `dryRun`.
fn eviction_options(name: &str, body: &[u8], query: &Query) -> Result<DeleteOptions, ApiError> {
    let eviction: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    // A body without apiVersion/kind is decoded as the subresource's kind (kube-rs sends one).
    let api_version = eviction["apiVersion"].as_str().unwrap_or("policy/v1");
    let kind = eviction["kind"].as_str().unwrap_or("Eviction");
    if kind != "Eviction" || !matches!(api_version, "policy/v1" | "policy/v1beta1") {
        return Err(ApiError::bad_request(format!(
            "not a Eviction object: {api_version}, Kind={kind}"
        )));
    }
    if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let delete_options = eviction
        .get("deleteOptions")
        .filter(|o| o.is_object())
        .map(|o| serde_json::to_vec(o).unwrap_or_default())
        .unwrap_or_default();
    let mut options = DeleteOptions::parse(&delete_options, &Query::default())?;
    // `propagateDryRun`: either side may set it; both must then agree.
    let in_body: Vec<String> = eviction
        .pointer("/deleteOptions/dryRun")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let in_query: Vec<String> = query.get("dryRun").into_iter().map(String::from).collect();
    if !in_body.is_empty() && !in_query.is_empty() && in_body != in_query {
        return Err(ApiError::bad_request(format!(
            "Non-matching dry-run options in request and content: [{}] and [{}]",
            in_query.join(" "),
            in_body.join(" ")
        )));
    }
    options.dry_run = in_body.iter().chain(&in_query).any(|v| v == "All");
    Ok(options)
}

/// `canIgnorePDB`: terminal, pending or terminating pods are evicted without budgets.
fn can_ignore_budgets(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// `shouldEnforceResourceVersion`: a pod that could become ready is deleted only at the
/// version that was checked.
fn enforces_resource_version(pod: &Value) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    !matches!(phase, "Succeeded" | "Failed") && pod.pointer("/metadata/deletionTimestamp").is_none()
}

/// An unready pod may go without spending the budget: `AlwaysAllow`, or (the default
/// `IfHealthyBudget`) when the application is healthy enough.
fn unhealthy_may_go(pdb: &Value) -> bool {
    if pdb
        .pointer("/spec/unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        == Some("AlwaysAllow")
    {
        return true;
    }
    let field = |f: &str| {
        pdb.pointer(&format!("/status/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    field("currentHealthy") >= field("desiredHealthy") && field("desiredHealthy") > 0
}

fn still_processing(pdb_name: &str) -> ApiError {
    ApiError::disruption_budget(
        format!("The disruption budget {pdb_name} is still being processed by the server."),
        10,
    )
}

/// `checkAndDecrement`, atomically against the stored budget.
fn take_disruption(
    cluster: &Cluster,
    pdb: &Value,
    pod_name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let (namespace, pdb_name) = crate::store::object_key(pdb);
    let check = |current: &Value| -> Result<Value, ApiError> {
        let status = current.get("status").cloned().unwrap_or_else(|| json!({}));
        let int = |f: &str| status.get(f).and_then(Value::as_i64).unwrap_or(0);
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if int("observedGeneration") < generation {
            return Err(still_processing(&pdb_name));
        }
        let forbidden = |why: &str| {
            ApiError::forbidden(
                pdbs(),
                Some(&pdb_name),
                format!("poddisruptionbudget.policy \"{pdb_name}\" is forbidden: {why}"),
            )
        };
        if int("disruptionsAllowed") < 0 {
            return Err(forbidden("pdb disruptions allowed is negative"));
        }
        let disrupted = status
            .get("disruptedPods")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(forbidden(
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if int("disruptionsAllowed") == 0 {
            return Err(ApiError::disruption_budget(
                format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    int("desiredHealthy"),
                    int("currentHealthy")
                ),
                0,
            ));
        }
        let mut next = current.clone();
        let allowed = int("disruptionsAllowed") - 1;
        next["status"]["disruptionsAllowed"] = json!(allowed);
        if allowed == 0 {
            let observed = next["status"]["observedGeneration"].clone();
            disruption::set_condition(
                &mut next["status"],
                "False",
                "InsufficientPods",
                "",
                &observed,
            );
        }
        next["status"]["disruptedPods"][pod_name] = json!(format_time(chrono::Utc::now()));
        Ok(next)
    };
    if dry_run {
        let current = cluster.registry.get(pdbs(), &namespace, &pdb_name)?;
        return check(&current).map(|_| ());
    }
    cluster
        .store
        .update(pdbs(), &namespace, &pdb_name, |current| {
            check(current).map(Some)
        })
        .map(|_| ())
}

/// `addConditionAndDeletePod`: `DisruptionTarget=True` (reason `EvictionByEvictionAPI`), then
/// the delete with the Eviction's options.
fn delete_with_condition(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let pods = resources::pods();
    let mut options = options.clone();
    if !options.dry_run {
        let updated = cluster.store.update(pods, namespace, name, |current| {
            check_preconditions(current, name, &options)?;
            let mut next = current.clone();
            set_condition(
                &mut next,
                "DisruptionTarget",
                "True",
                Some("EvictionByEvictionAPI"),
                Some("Eviction API: evicting"),
            );
            Ok(Some(next))
        })?;
        if options.precondition_resource_version.is_some() {
            options.precondition_resource_version = Some(current_rv_of(&updated).to_string());
        }
    }
    cluster
        .registry
        .delete(pods, namespace, name, &options)
        .map(|_| ())
}

fn check_preconditions(pod: &Value, name: &str, options: &DeleteOptions) -> Result<(), ApiError> {
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(wanted) = options
        .precondition_uid
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        if wanted != uid {
            return Err(ApiError::pod_precondition_conflict(name, &format!(
                "the UID in the precondition ({wanted}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
            )));
        }
    }
    let rv = current_rv_of(pod).to_string();
    if let Some(wanted) = options
        .precondition_resource_version
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        if wanted != rv {
            return Err(ApiError::pod_precondition_conflict(name, &format!(
                "the ResourceVersion in the precondition ({wanted}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
            )));
        }
    }
    Ok(())
}
