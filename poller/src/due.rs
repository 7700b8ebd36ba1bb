//! From one poll to messages. A message only says which run is due in which
//! scheduled state: the dispatcher reads everything it renders from Prefect
//! itself, so a poll is one Prefect call whatever the number of runs.

use flow_run_proto::FlowRunDue;
use prefect_client::WorkerFlowRunResponse;
use uuid::Uuid;

/// Builds one message per run.
pub fn messages_for(
    work_pool_name: &str,
    work_pool_id: Uuid,
    poller_name: &str,
    runs: Vec<WorkerFlowRunResponse>,
) -> Vec<FlowRunDue> {
    let published_at = chrono::Utc::now().to_rfc3339();
    runs.into_iter()
        .map(|response| {
            let run = response.flow_run;
            let state = run.state.as_ref();
            FlowRunDue {
                flow_run_id: run.id.to_string(),
                state_id: state.map(|s| s.id.to_string()).unwrap_or_default(),
                state_name: state
                    .map(|s| s.display_name().to_string())
                    .unwrap_or_default(),
                flow_run_name: run.name.clone(),
                work_pool_name: work_pool_name.to_string(),
                work_pool_id: work_pool_id.to_string(),
                work_queue_name: run.work_queue_name.clone().unwrap_or_default(),
                work_queue_id: response.work_queue_id.to_string(),
                scheduled_time: run
                    .next_scheduled_start_time
                    .or(run.expected_start_time)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                published_at: published_at.clone(),
                poller_name: poller_name.to_string(),
            }
        })
        .collect()
}
