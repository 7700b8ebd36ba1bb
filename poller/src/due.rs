//! From one batched poll to messages: the deployments and flows of all runs
//! are read with one filter call each, so the cost to Prefect does not grow
//! with the number of runs beyond the poll itself.

use std::collections::{BTreeSet, HashMap};

use flow_run_proto::FlowRunDue;
use prefect_client::{Deployment, Flow, PrefectClient, WorkerFlowRunResponse};
use uuid::Uuid;

/// Builds one message per run.
pub async fn messages_for(
    prefect: &PrefectClient,
    work_pool_name: &str,
    work_pool_id: Uuid,
    poller_name: &str,
    runs: Vec<WorkerFlowRunResponse>,
) -> Result<Vec<FlowRunDue>, prefect_client::PrefectError> {
    let deployment_ids: Vec<Uuid> = runs
        .iter()
        .filter_map(|r| r.flow_run.deployment_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let flow_ids: Vec<Uuid> = runs
        .iter()
        .map(|r| r.flow_run.flow_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let deployments: HashMap<Uuid, Deployment> = if deployment_ids.is_empty() {
        HashMap::new()
    } else {
        prefect
            .read_deployments_by_ids(&deployment_ids)
            .await?
            .into_iter()
            .map(|d| (d.id, d))
            .collect()
    };
    let flows: HashMap<Uuid, Flow> = prefect
        .read_flows_by_ids(&flow_ids)
        .await?
        .into_iter()
        .map(|f| (f.id, f))
        .collect();
    let published_at = chrono::Utc::now().to_rfc3339();
    Ok(runs
        .into_iter()
        .map(|response| {
            let run = response.flow_run;
            let deployment = run
                .deployment_id
                .as_ref()
                .and_then(|id| deployments.get(id));
            let flow = flows.get(&run.flow_id);
            let state = run.state.as_ref();
            FlowRunDue {
                flow_run_id: run.id.to_string(),
                state_id: state.map(|s| s.id.to_string()).unwrap_or_default(),
                state_name: state
                    .map(|s| s.display_name().to_string())
                    .unwrap_or_default(),
                flow_run_name: run.name.clone(),
                flow_id: run.flow_id.to_string(),
                flow_name: flow.map(|f| f.name.clone()).unwrap_or_default(),
                deployment_id: run.deployment_id.map(|d| d.to_string()).unwrap_or_default(),
                deployment_name: deployment.map(|d| d.name.clone()).unwrap_or_default(),
                deployment_updated: deployment
                    .and_then(|d| d.updated)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                    .unwrap_or_default(),
                work_pool_name: work_pool_name.to_string(),
                work_pool_id: work_pool_id.to_string(),
                work_queue_name: run.work_queue_name.clone().unwrap_or_default(),
                work_queue_id: response.work_queue_id.to_string(),
                deployment_job_variables_json: deployment
                    .map(|d| json_object_text(Some(&d.job_variables)))
                    .unwrap_or_else(|| "{}".into()),
                flow_run_job_variables_json: json_object_text(run.job_variables.as_ref()),
                scheduled_time: run
                    .next_scheduled_start_time
                    .or(run.expected_start_time)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                published_at: published_at.clone(),
                poller_name: poller_name.to_string(),
            }
        })
        .collect())
}

/// A JSON object's text; anything else (null, absent) becomes `{}`.
fn json_object_text(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(value) if value.is_object() => value.to_string(),
        _ => "{}".to_string(),
    }
}
