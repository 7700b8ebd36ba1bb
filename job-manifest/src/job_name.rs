//! Deterministic Job names. prefect-kubernetes lets Kubernetes pick a random
//! suffix (`generateName`); this agent names the Job itself with a suffix derived
//! from the submission (`flow_run_proto::SubmissionKey::job_name_suffix`), so a
//! retried create hits `409 AlreadyExists` instead of making a second Job.

use serde_json::{json, Map, Value};

use crate::job_variables::{expand_dotted_keys, merge_deployment_and_run};
use crate::request::FlowRunContext;
use crate::slug::{slugify_name, NAME_SLUG_MAX_LENGTH};
use crate::templating::apply_values;

/// Name base used when the given one has nothing usable (as prefect-kubernetes).
pub const FALLBACK_NAME_BASE: &str = "prefect-job";

/// `<slug of name_base, at most 45 chars>-<suffix>`: with a suffix of at most 16
/// lowercase hex characters, a valid DNS-1123 label of at most 62 characters.
pub fn job_name(name_base: &str, suffix: &str) -> String {
    let base = slugify_name(name_base, NAME_SLUG_MAX_LENGTH)
        .unwrap_or_else(|| FALLBACK_NAME_BASE.to_string());
    format!("{base}-{suffix}")
}

/// What prefect-kubernetes names the Job after (before its random suffix): the
/// `name` job variable (the flow run's over the deployment's), with its
/// `{{ ctx.flow.* }}` / `{{ ctx.flow_run.* }}` placeholders rendered, or else the
/// flow run's name. Pass it to [`job_name`]. Only these context fields are known:
/// `ctx.flow.id`, `ctx.flow.name`, `ctx.flow_run.id`, `ctx.flow_run.name`,
/// `ctx.flow_run.flow_id`, `ctx.flow_run.deployment_id`, `ctx.flow_run.work_pool_name`;
/// other placeholders render as nothing. Malformed job variables give the flow
/// run's name (rendering reports them).
pub fn job_name_base(
    deployment_job_variables: &Value,
    flow_run_job_variables: &Value,
    flow_run: &FlowRunContext,
) -> String {
    let name = merge_deployment_and_run(deployment_job_variables, flow_run_job_variables)
        .and_then(|merged| expand_dotted_keys(&merged))
        .ok()
        .and_then(|variables| variables.get("name").cloned());
    let Some(Value::String(template)) = name else {
        return flow_run.flow_run_name.clone();
    };
    let context = json!({
        "ctx": {
            "flow": {"id": flow_run.flow_id.to_string(), "name": flow_run.flow_name},
            "flow_run": {
                "id": flow_run.flow_run_id.to_string(),
                "name": flow_run.flow_run_name,
                "flow_id": flow_run.flow_id.to_string(),
                "deployment_id": flow_run.deployment.as_ref().map(|d| d.id.to_string()),
                "work_pool_name": flow_run.work_pool_name,
            }
        }
    });
    let values: Map<String, Value> = context.as_object().cloned().unwrap_or_default();
    match apply_values(&Value::String(template), &values) {
        Some(Value::String(rendered)) if !rendered.is_empty() => rendered,
        Some(other) if !other.is_null() && !other.is_string() => {
            crate::python_text::python_str(&other)
        }
        _ => flow_run.flow_run_name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes_names::check_dns1123_label;
    use uuid::Uuid;

    fn flow_run() -> FlowRunContext {
        FlowRunContext {
            flow_run_id: Uuid::from_u128(1),
            flow_run_name: "crimson-otter".into(),
            flow_id: Uuid::from_u128(2),
            flow_name: "etl".into(),
            deployment: None,
            work_pool_name: "pool".into(),
            worker_name: "w".into(),
            work_pool_id: Uuid::from_u128(3),
            worker_id: None,
        }
    }

    #[test]
    fn name_base_follows_the_name_variable() {
        let run = flow_run();
        assert_eq!(job_name_base(&json!({}), &json!({}), &run), "crimson-otter");
        assert_eq!(
            job_name_base(&json!({"name": "nightly"}), &json!({}), &run),
            "nightly"
        );
        assert_eq!(
            job_name_base(&json!({"name": "nightly"}), &json!({"name": "adhoc"}), &run),
            "adhoc"
        );
        assert_eq!(
            job_name_base(
                &json!({"name": "{{ ctx.flow.name }}-{{ ctx.flow_run.name }}"}),
                &json!({}),
                &run
            ),
            "etl-crimson-otter"
        );
        assert_eq!(
            job_name_base(&json!({"name": ""}), &json!({}), &run),
            "crimson-otter"
        );
        assert_eq!(
            job_name_base(
                &json!({"name": "{{ ctx.flow_run.tags }}"}),
                &json!({}),
                &run
            ),
            "crimson-otter"
        );
        assert_eq!(
            job_name_base(&json!({"name": null}), &Value::Null, &run),
            "crimson-otter"
        );
    }

    #[test]
    fn names_are_the_slugged_base_and_the_suffix() {
        let name = job_name("Crimson Otter!", "ba7816bf8f01cfea");
        assert_eq!(name, "crimson-otter-ba7816bf8f01cfea");
        assert!(check_dns1123_label("name", &name).is_ok());
    }

    #[test]
    fn awkward_bases_still_give_valid_names() {
        for base in [
            "",
            "!!!",
            "Ünïcödé Flow Run",
            &"Very Long Name ".repeat(10),
            "-lead-",
            "a_b.c",
        ] {
            let name = job_name(base, "0123456789abcdef");
            assert!(name.len() <= 63, "{name}");
            assert!(
                check_dns1123_label("name", &name).is_ok(),
                "{base:?} -> {name}"
            );
        }
        assert_eq!(job_name("!!!", "ba7816bf"), "prefect-job-ba7816bf");
    }
}
