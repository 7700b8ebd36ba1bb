//! The labels prefect-kubernetes puts on every Job and pod template
//! (`prefect.io/flow-run-id`, ..., `app.kubernetes.io/name`), in its order, and
//! the merge-then-slugify step applied to label and annotation maps.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use serde_json::{Map, Value};

use crate::error::ManifestError;
use crate::request::FlowRunContext;
use crate::slug::{slugify_label_key, slugify_label_value};

/// The Prefect version whose behaviour is reproduced (`prefect.io/version`).
pub const PREFECT_VERSION: &str = "3.9.1";

fn text(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

/// Python's `datetime.isoformat()` of a UTC time: microseconds only when
/// non-zero, offset `+00:00`.
pub fn python_isoformat(time: &DateTime<Utc>) -> String {
    let micros = time.nanosecond() / 1_000 % 1_000_000;
    let seconds = time.to_rfc3339_opts(SecondsFormat::Secs, false);
    let (stamp, _) = seconds
        .rsplit_once('+')
        .expect("rfc3339 UTC output carries +00:00");
    if micros == 0 {
        format!("{stamp}+00:00")
    } else {
        format!("{stamp}.{micros:06}+00:00")
    }
}

/// The labels prefect-kubernetes adds (before the `labels` job variable), unslugged.
pub fn base_labels(flow_run: &FlowRunContext) -> Map<String, Value> {
    let version = slugify_label_value(PREFECT_VERSION);
    let mut labels = Map::new();
    labels.insert(
        flow_run_proto::kubernetes::FLOW_RUN_ID_LABEL.into(),
        text(flow_run.flow_run_id.to_string()),
    );
    labels.insert(
        "prefect.io/flow-run-name".into(),
        text(flow_run.flow_run_name.clone()),
    );
    labels.insert("prefect.io/version".into(), text(version.clone()));
    labels.insert("app.kubernetes.io/managed-by".into(), text("prefect"));
    labels.insert("app.kubernetes.io/part-of".into(), text("prefect"));
    labels.insert("app.kubernetes.io/version".into(), text(version));
    labels.insert(
        flow_run_proto::kubernetes::WORK_POOL_NAME_LABEL.into(),
        text(flow_run.work_pool_name.clone()),
    );
    labels.insert(
        "prefect.io/work-pool-id".into(),
        text(flow_run.work_pool_id.to_string()),
    );
    labels.insert(
        "prefect.io/worker-name".into(),
        text(flow_run.worker_name.clone()),
    );
    labels.insert(
        "prefect.io/flow-id".into(),
        text(flow_run.flow_id.to_string()),
    );
    labels.insert(
        "prefect.io/flow-name".into(),
        text(flow_run.flow_name.clone()),
    );
    labels.insert(
        "app.kubernetes.io/name".into(),
        text(slugify_label_value(&flow_run.flow_name)),
    );
    if let Some(deployment) = &flow_run.deployment {
        labels.insert(
            "prefect.io/deployment-id".into(),
            text(deployment.id.to_string()),
        );
        labels.insert(
            "prefect.io/deployment-name".into(),
            text(deployment.name.clone()),
        );
        if let Some(updated) = &deployment.updated {
            labels.insert(
                "prefect.io/deployment-updated".into(),
                text(python_isoformat(updated)),
            );
        }
        // Replaces the flow name in place, as the Python dict update does.
        labels.insert(
            "app.kubernetes.io/name".into(),
            text(slugify_label_value(&deployment.name)),
        );
    }
    labels
}

/// `{**existing, **overlay}` with keys (and, for labels, values) slugified.
/// `field` names the map in errors; every value must be a string.
pub fn merge_and_slugify(
    existing: Option<&Value>,
    overlay: &Map<String, Value>,
    slug_values: bool,
    field: &str,
) -> Result<Map<String, Value>, ManifestError> {
    let mut merged = match existing {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(existing)) => existing.clone(),
        Some(other) => {
            return Err(ManifestError::Template {
                field: field.to_string(),
                reason: format!("must be an object of strings, got {other}"),
            })
        }
    };
    for (key, value) in overlay {
        merged.insert(key.clone(), value.clone());
    }
    let mut slugged = Map::new();
    for (key, value) in merged {
        let Value::String(value) = value else {
            return Err(ManifestError::Label {
                field: format!("{field}.{key}"),
                reason: format!("the value must be a string, got {value}"),
            });
        };
        let value = if slug_values {
            slugify_label_value(&value)
        } else {
            value
        };
        slugged.insert(slugify_label_key(&key), Value::String(value));
    }
    Ok(slugged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::DeploymentContext;
    use chrono::TimeZone;
    use serde_json::json;
    use uuid::Uuid;

    fn flow_run(deployment: Option<DeploymentContext>) -> FlowRunContext {
        FlowRunContext {
            flow_run_id: Uuid::from_u128(1),
            flow_run_name: "crimson-otter".into(),
            flow_id: Uuid::from_u128(2),
            flow_name: "my flow".into(),
            deployment,
            work_pool_name: "pool".into(),
            work_pool_id: Uuid::from_u128(4),
            worker_name: "worker-1".into(),
            worker_id: None,
        }
    }

    #[test]
    fn isoformat_matches_python() {
        let whole = Utc
            .with_ymd_and_hms(2026, 11, 27, 4, 0, 1)
            .single()
            .expect("time");
        assert_eq!(python_isoformat(&whole), "2026-11-27T04:00:01+00:00");
        let fractional = whole + chrono::Duration::microseconds(123_456);
        assert_eq!(
            python_isoformat(&fractional),
            "2026-11-27T04:00:01.123456+00:00"
        );
    }

    #[test]
    fn deployment_name_replaces_flow_name_in_app_name() {
        let without = base_labels(&flow_run(None));
        assert_eq!(without["app.kubernetes.io/name"], "my-flow");
        assert!(!without.contains_key("prefect.io/deployment-id"));

        let with = base_labels(&flow_run(Some(DeploymentContext {
            id: Uuid::from_u128(3),
            name: "My Deployment".into(),
            updated: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single(),
        })));
        assert_eq!(with["app.kubernetes.io/name"], "My-Deployment");
        assert_eq!(
            with["prefect.io/deployment-updated"],
            "2026-01-02T03:04:05+00:00"
        );
        let keys: Vec<&String> = with.keys().collect();
        let app_name = keys.iter().position(|k| *k == "app.kubernetes.io/name");
        let deployment_id = keys.iter().position(|k| *k == "prefect.io/deployment-id");
        assert!(
            app_name < deployment_id,
            "app name keeps the flow labels' position"
        );
    }

    #[test]
    fn merge_slugifies_keys_and_label_values() {
        let overlay = json!({"My Label!": "Hello World/ok", "team": "data"});
        let merged = merge_and_slugify(
            Some(&json!({"team": "old", "keep": "x"})),
            overlay.as_object().expect("object"),
            true,
            "metadata.labels",
        )
        .expect("merged");
        assert_eq!(
            Value::Object(merged),
            json!({"team": "data", "keep": "x", "My-Label": "Hello-World-ok"})
        );
        let annotations = merge_and_slugify(
            None,
            json!({"a/b c": "free text: ok"})
                .as_object()
                .expect("object"),
            false,
            "metadata.annotations",
        )
        .expect("merged");
        assert_eq!(
            Value::Object(annotations),
            json!({"a/b-c": "free text: ok"})
        );
    }

    #[test]
    fn non_string_label_values_are_rejected() {
        let err = merge_and_slugify(
            Some(&json!({"n": 1})),
            &Map::new(),
            true,
            "job_manifest.metadata.labels",
        )
        .expect_err("number");
        assert_eq!(err.field(), "job_manifest.metadata.labels.n");
    }
}
