//! From one poll to messages. A message only says which run is due in which
//! scheduled state: the dispatcher reads everything it renders from Prefect
//! itself, so a poll is one Prefect call whatever the number of runs.

use chrono::{DateTime, Utc};
use flow_run_proto::FlowRunDue;
use prefect_client::WorkerFlowRunResponse;
use uuid::Uuid;

/// The scheduled times of `runs`.
pub fn times(runs: &[WorkerFlowRunResponse]) -> Vec<DateTime<Utc>> {
    runs.iter().filter_map(scheduled_time).collect()
}

fn scheduled_time(response: &WorkerFlowRunResponse) -> Option<DateTime<Utc>> {
    let run = &response.flow_run;
    run.next_scheduled_start_time.or(run.expected_start_time)
}

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
            let scheduled = scheduled_time(&response);
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
                scheduled_time: scheduled.map(|t| t.to_rfc3339()).unwrap_or_default(),
                published_at: published_at.clone(),
                poller_name: poller_name.to_string(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run_at(scheduled: Option<&str>) -> WorkerFlowRunResponse {
        serde_json::from_value(json!({
            "work_pool_id": Uuid::new_v4(),
            "work_queue_id": Uuid::new_v4(),
            "flow_run": {
                "id": Uuid::new_v4(),
                "name": "crimson-otter",
                "flow_id": Uuid::new_v4(),
                "next_scheduled_start_time": scheduled,
            },
        }))
        .expect("a worker flow run response")
    }

    #[test]
    fn times_of_the_runs_that_have_one() {
        let at = |text: &str| -> DateTime<Utc> { text.parse().unwrap() };
        let runs = vec![
            run_at(Some("2026-11-28T12:00:14Z")),
            run_at(None),
            run_at(Some("2026-11-28T12:00:12Z")),
        ];
        assert_eq!(
            times(&runs),
            [at("2026-11-28T12:00:14Z"), at("2026-11-28T12:00:12Z")]
        );
    }
}
