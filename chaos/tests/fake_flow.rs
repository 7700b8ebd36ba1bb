//! `fake-flow` against a real Prefect 3.9.1 server: each behaviour leaves the
//! state history Prefect's engine would, and the server semantics the
//! campaign's checker relies on hold (in-process retries are not offered to
//! workers, a reschedule is; Running is accepted on a Cancelled run and
//! refused on a Cancelling one).

use std::process::Command;
use std::time::Duration;

use chaos::prefect_api::UserApi;
use prefect_client::{
    ClientConfig, DeploymentCreate, PrefectClient, StateCreate, StateType, WorkPoolCreate,
};
use serde_json::json;
use test_stack::prefect::{unique_name, PrefectServer};
use uuid::Uuid;

struct Fixture {
    server: &'static PrefectServer,
    client: PrefectClient,
    user: UserApi,
    pool: String,
    deployment: Uuid,
}

async fn fixture() -> Fixture {
    let server = tokio::task::spawn_blocking(PrefectServer::shared)
        .await
        .unwrap();
    let client = PrefectClient::new(ClientConfig::new(&server.api_url()).unwrap()).unwrap();
    let pool = unique_name("fake-flow");
    let template = serde_json::from_str(job_manifest::DEFAULT_BASE_JOB_TEMPLATE).unwrap();
    client
        .create_work_pool(&WorkPoolCreate::new(&pool, "kubernetes", template))
        .await
        .unwrap();
    let flow = client.create_flow(&unique_name("flow")).await.unwrap();
    let deployment = client
        .create_deployment(&DeploymentCreate {
            work_pool_name: Some(pool.clone()),
            ..DeploymentCreate::new(unique_name("deployment"), flow.id)
        })
        .await
        .unwrap();
    Fixture {
        server,
        client,
        user: UserApi::new(&server.api_url()),
        pool,
        deployment: deployment.id,
    }
}

impl Fixture {
    /// A run, claimed as a dispatcher would (Pending).
    async fn claimed_run(&self, retries: Option<u32>) -> Uuid {
        let mut body = json!({});
        if let Some(retries) = retries {
            body["empirical_policy"] = json!({"retries": retries, "retry_delay": 3});
        }
        // The shared server answers 503 when its database is busy (a loaded
        // machine); a user would try again.
        let mut attempts = 0;
        let run = loop {
            match self.user.create_run(self.deployment, &body).await {
                Ok(run) => break run,
                Err(chaos::prefect_api::UserApiError::Status { status, .. })
                    if status.is_server_error() && attempts < 5 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => panic!("creating a run: {error}"),
            }
        };
        self.claim(run.id).await;
        run.id
    }

    async fn claim(&self, run: Uuid) {
        let pending = StateCreate::pending_claim(Uuid::new_v4());
        let answer = self
            .client
            .set_flow_run_state(run, &pending, false)
            .await
            .unwrap();
        assert!(answer.new_state_written, "claim of {run}: {answer:?}");
    }

    fn fake_flow(&self, run: Uuid, behaviour: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fake-flow"));
        command
            .args(["--behaviour", behaviour, "--sleep-ms", "200"])
            .env("PREFECT_API_URL", self.server.api_url())
            .env("PREFECT__FLOW_RUN_ID", run.to_string());
        command
    }

    async fn run_flow(&self, run: Uuid, behaviour: &str) -> i32 {
        let mut command = self.fake_flow(run, behaviour);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        output.status.code().unwrap_or(-1)
    }

    /// `TYPE/Name` of each state, oldest first.
    async fn history(&self, run: Uuid) -> Vec<String> {
        let mut states = self.client.read_flow_run_states(run).await.unwrap();
        states.sort_by_key(|state| state.timestamp);
        states
            .iter()
            .map(|state| format!("{}/{}", state.state_type.as_str(), state.display_name()))
            .collect()
    }

    async fn offered_to_workers(&self, run: Uuid) -> bool {
        let due = chrono::Utc::now() + chrono::TimeDelta::seconds(3600);
        self.client
            .get_scheduled_flow_runs(&self.pool, &[], due, None)
            .await
            .unwrap()
            .iter()
            .any(|entry| entry.flow_run.id == run)
    }

    async fn wait_for_state(&self, run: Uuid, name: &str) {
        for _ in 0..200 {
            let current = self.client.read_flow_run(run).await.unwrap();
            if current.state.as_ref().map(|s| s.display_name()) == Some(name) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{run} never reached {name}");
    }
}

#[tokio::test]
async fn complete_fail_and_early_exit_report_as_the_engine_does() {
    let fx = fixture().await;
    let run = fx.claimed_run(None).await;
    assert_eq!(fx.run_flow(run, "complete").await, 0);
    assert_eq!(
        fx.history(run).await,
        [
            "SCHEDULED/Scheduled",
            "PENDING/Pending",
            "RUNNING/Running",
            "COMPLETED/Completed"
        ]
    );
    let run = fx.claimed_run(None).await;
    assert_eq!(fx.run_flow(run, "fail").await, 1);
    assert_eq!(fx.history(run).await.last().unwrap(), "FAILED/Failed");
    let run = fx.claimed_run(None).await;
    assert_eq!(fx.run_flow(run, "exit-nonzero-before-running").await, 3);
    assert_eq!(fx.history(run).await.last().unwrap(), "PENDING/Pending");
}

#[tokio::test]
async fn an_in_process_retry_is_not_offered_to_workers_and_completes_in_the_same_pod() {
    let fx = fixture().await;
    let run = fx.claimed_run(Some(1)).await;
    let mut command = fx.fake_flow(run, "retry-in-process");
    let child = tokio::task::spawn_blocking(move || command.output());
    fx.wait_for_state(run, "AwaitingRetry").await;
    let current = fx.client.read_flow_run(run).await.unwrap();
    assert_eq!(current.empirical_policy["retry_type"], "in_process");
    assert!(
        !fx.offered_to_workers(run).await,
        "an in-process retry is the pod's"
    );
    let output = child.await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let history = fx.history(run).await;
    assert_eq!(
        history[2..],
        [
            "RUNNING/Running",
            "SCHEDULED/AwaitingRetry",
            "RUNNING/Running",
            "COMPLETED/Completed"
        ],
        "{history:?}"
    );
}

#[tokio::test]
async fn a_reschedule_is_offered_again_and_the_next_execution_completes() {
    let fx = fixture().await;
    let run = fx.claimed_run(None).await;
    assert_eq!(fx.run_flow(run, "reschedule").await, 0);
    let current = fx.client.read_flow_run(run).await.unwrap();
    let state = current.state.unwrap();
    assert_eq!(
        (state.state_type, state.display_name()),
        (StateType::Scheduled, "AwaitingRetry")
    );
    assert!(
        fx.offered_to_workers(run).await,
        "a rescheduled run needs a new Job"
    );
    fx.claim(run).await;
    assert_eq!(fx.run_flow(run, "reschedule").await, 0);
    assert_eq!(fx.history(run).await.last().unwrap(), "COMPLETED/Completed");
}

#[tokio::test]
async fn running_is_accepted_on_a_cancelled_run_and_refused_on_a_cancelling_one() {
    let fx = fixture().await;
    let cancelling = fx.claimed_run(None).await;
    let state = json!({"type": "CANCELLING", "name": "Cancelling"});
    fx.user.set_state(cancelling, state, false).await.unwrap();
    assert_eq!(fx.run_flow(cancelling, "complete").await, 0);
    assert_eq!(
        fx.history(cancelling).await.last().unwrap(),
        "CANCELLING/Cancelling"
    );

    let cancelled = fx.claimed_run(None).await;
    let state = json!({"type": "CANCELLED", "name": "Cancelled"});
    fx.user.set_state(cancelled, state, true).await.unwrap();
    assert_eq!(fx.run_flow(cancelled, "complete").await, 0);
    let history = fx.history(cancelled).await;
    assert_eq!(
        history[3..],
        ["RUNNING/Running", "COMPLETED/Completed"],
        "prefect 3.9.1 lets a pod run a cancelled run: {history:?}"
    );
}
