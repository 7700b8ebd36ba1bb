//! Whatever job variables a message carries, rendering returns a manifest or an
//! error naming a field: it never panics (a dispatcher must not crash on input),
//! and every manifest it returns converts to a typed Job.

use job_manifest::{
    default_base_job_template, render_job_manifest, AgentDefaults, FlowRunContext,
    ForwardedSettings, RenderRequest,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

const KEYS: [&str; 18] = [
    "env",
    "labels",
    "annotations",
    "image",
    "command",
    "namespace",
    "backoff_limit",
    "finished_job_ttl",
    "cpu_request",
    "memory_limit",
    "name",
    "service_account_name",
    "image_pull_policy",
    "env.EXTRA",
    "labels.team",
    "cluster_config",
    "stream_output",
    "unknown",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..5000).prop_map(|n| json!(n)),
        (-10.0f64..10.0).prop_map(|f| json!(f)),
        "[a-zA-Z0-9 ._:/@{}$-]{0,24}".prop_map(Value::String),
        prop_oneof![
            Just("{{ name }}"),
            Just("{{ prefect.blocks.secret.x }}"),
            Just("500m"),
            Just("python:3.12"),
            Just("IfNotPresent"),
            Just("echo 'x"),
        ]
        .prop_map(|text| Value::String(text.to_string())),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[A-Za-z_. /-]{1,8}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn job_variables() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS.to_vec()), json_value()), 0..6).prop_map(
        |entries| {
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect(),
            )
        },
    )
}

fn context() -> FlowRunContext {
    FlowRunContext {
        flow_run_id: Uuid::from_u128(1),
        flow_run_name: "crimson-otter".into(),
        flow_id: Uuid::from_u128(2),
        flow_name: "flow".into(),
        deployment: None,
        work_pool_name: "pool".into(),
        work_pool_id: Uuid::from_u128(3),
        worker_name: "worker".into(),
        worker_id: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rendering_never_panics(deployment in job_variables(), run in job_variables()) {
        let template = default_base_job_template();
        let context = context();
        let defaults = AgentDefaults::default();
        let settings = ForwardedSettings::default();
        let result = render_job_manifest(&RenderRequest {
            base_job_template: &template,
            deployment_job_variables: &deployment,
            flow_run_job_variables: &run,
            flow_run: &context,
            agent_defaults: &defaults,
            settings: &settings,
            job_name: "crimson-otter-0123456789abcdef",
            extra_labels: &[],
            extra_annotations: &[],
        });
        match result {
            Ok(job) => {
                prop_assert!(job.to_typed_job().is_ok(), "typed conversion failed for {}", job.manifest);
            }
            Err(err) => {
                prop_assert!(!err.field().is_empty());
                prop_assert!(!err.message().is_empty());
            }
        }
    }
}
