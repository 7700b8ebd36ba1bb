//! A backlog: a `kubernetes` work pool (with our default base job template),
//! a flow, one deployment in the pool and its flow runs, all due now.

use futures::{StreamExt, TryStreamExt};
use prefect_client::{DeploymentCreate, DeploymentFlowRunCreate, PrefectClient, WorkPoolCreate};
use test_stack::prefect::unique_name;
use uuid::Uuid;

/// Runs created at once.
const CREATES_IN_FLIGHT: usize = 8;

/// A pool and its due runs.
#[derive(Clone, Debug)]
pub struct Backlog {
    pub pool: String,
    pub deployment: Uuid,
    pub runs: Vec<Uuid>,
}

impl Backlog {
    /// A fresh pool with `runs` runs due now.
    pub async fn create(prefect: &PrefectClient, runs: usize) -> anyhow::Result<Backlog> {
        let pool = unique_name("bench");
        let template = serde_json::from_str(poller::pool::DEFAULT_BASE_JOB_TEMPLATE)?;
        prefect
            .create_work_pool(&WorkPoolCreate::new(&pool, "kubernetes", template))
            .await?;
        let flow = prefect.create_flow(&unique_name("bench-flow")).await?;
        let deployment = prefect
            .create_deployment(&DeploymentCreate {
                work_pool_name: Some(pool.clone()),
                ..DeploymentCreate::new(unique_name("bench"), flow.id)
            })
            .await?
            .id;
        let runs = futures::stream::iter(0..runs)
            .map(|_| async move {
                prefect
                    .create_flow_run_from_deployment(
                        deployment,
                        &DeploymentFlowRunCreate::default(),
                    )
                    .await
                    .map(|run| run.id)
            })
            .buffer_unordered(CREATES_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Backlog {
            pool,
            deployment,
            runs,
        })
    }
}
