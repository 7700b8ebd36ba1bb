//! What runs in a flow-run pod during a campaign: a cheap stand-in for
//! Prefect's engine (`prefect flow-run execute`) speaking the same state
//! protocol to the same server.
//!
//! It proposes `Running` (`force=false`); WAIT is honoured by sleeping
//! `details.delay_seconds` and proposing again, any other answer than ACCEPT
//! ends the process with 0 without running (as the engine's Abort does). Then
//! it sleeps (the flow's work) and proposes its final state per
//! [`Behaviour`]. Semantics checked against prefect 3.9.1 by
//! `tests/fake_flow.rs`:
//!
//! * an in-process retry is Prefect's own: `Failed` on a run with retries
//!   left is answered REJECT with a SCHEDULED `AwaitingRetry` state
//!   (`retry_type: in_process`, excluded from `get_scheduled_flow_runs`);
//!   the engine then proposes `Running` again (WAIT until the retry time);
//! * a reschedule is the run going back to SCHEDULED `AwaitingRetry` (what
//!   the engine does on SIGTERM with `reschedule` behaviour): the poller
//!   publishes the new state and it needs a Job of its own. Only the run's
//!   first execution reschedules (by `run_count`), the next one completes.

use std::time::Duration;

use prefect_client::{
    OrchestrationResult, PrefectClient, PrefectError, SetStateStatus, StateCreate, StateType,
};
use uuid::Uuid;

/// Exit code of [`Behaviour::ExitNonzeroBeforeRunning`]; the reporter's
/// crash message must name it.
pub const EARLY_EXIT_CODE: i32 = 3;

/// What the fake flow does once it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Behaviour {
    /// Running, sleep, Completed, exit 0.
    Complete,
    /// Running, sleep, Failed, exit 1.
    Fail,
    /// Running, sleep, Failed (answered AwaitingRetry), Running again,
    /// sleep, Completed, exit 0. The run needs `retries >= 1`.
    RetryInProcess,
    /// First execution: Running, then SCHEDULED `AwaitingRetry`, exit 0.
    /// Later executions behave as `complete`.
    Reschedule,
    /// Exit with [`EARLY_EXIT_CODE`] before proposing anything (a broken
    /// image entrypoint).
    ExitNonzeroBeforeRunning,
}

impl Behaviour {
    /// The `--behaviour` value on the command line.
    pub fn as_arg(self) -> &'static str {
        match self {
            Behaviour::Complete => "complete",
            Behaviour::Fail => "fail",
            Behaviour::RetryInProcess => "retry-in-process",
            Behaviour::Reschedule => "reschedule",
            Behaviour::ExitNonzeroBeforeRunning => "exit-nonzero-before-running",
        }
    }
}

/// How the fake flow ended; [`FlowExit::code`] is the process exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlowExit {
    /// Completed was proposed (whatever the answer).
    Completed,
    /// Failed was proposed and not turned into a retry.
    Failed,
    /// Running was not accepted: the engine's Abort.
    NotAccepted(String),
    /// The run was put back to SCHEDULED.
    Rescheduled,
    /// Exited before reporting anything.
    EarlyExit,
}

impl FlowExit {
    pub fn code(&self) -> i32 {
        match self {
            FlowExit::Completed | FlowExit::NotAccepted(_) | FlowExit::Rescheduled => 0,
            FlowExit::Failed => 1,
            FlowExit::EarlyExit => EARLY_EXIT_CODE,
        }
    }
}

/// The flow's failures: Prefect could not be reached or the run is gone.
#[derive(Debug, thiserror::Error)]
pub enum FakeFlowError {
    #[error("PREFECT__FLOW_RUN_ID is missing or not a UUID")]
    NoRunId,
    #[error("Prefect API: {0}")]
    Prefect(#[from] PrefectError),
}

/// One execution of the flow run `run_id`.
pub async fn execute(
    client: &PrefectClient,
    run_id: Uuid,
    behaviour: Behaviour,
    work: Duration,
) -> Result<FlowExit, FakeFlowError> {
    if behaviour == Behaviour::ExitNonzeroBeforeRunning {
        return Ok(FlowExit::EarlyExit);
    }
    if let Some(refused) = propose_running(client, run_id).await? {
        return Ok(FlowExit::NotAccepted(refused));
    }
    if behaviour == Behaviour::Reschedule && first_execution(client, run_id).await? {
        propose(client, run_id, scheduled_awaiting_retry()).await?;
        return Ok(FlowExit::Rescheduled);
    }
    tokio::time::sleep(work).await;
    match behaviour {
        Behaviour::Fail => fail(client, run_id).await,
        Behaviour::RetryInProcess => fail_then_retry(client, run_id, work).await,
        _ => complete(client, run_id).await,
    }
}

/// Proposes Running until it is not WAITed; `Some(reason)` when refused.
async fn propose_running(
    client: &PrefectClient,
    run_id: Uuid,
) -> Result<Option<String>, FakeFlowError> {
    loop {
        let result = propose(
            client,
            run_id,
            StateCreate::new(StateType::Running, "Running"),
        )
        .await?;
        match result.status {
            SetStateStatus::Accept => return Ok(None),
            SetStateStatus::Wait => {
                let delay = result.details.delay_seconds.unwrap_or(1).clamp(0, 600);
                tokio::time::sleep(Duration::from_secs(delay as u64)).await;
            }
            SetStateStatus::Reject | SetStateStatus::Abort => return Ok(Some(describe(&result))),
        }
    }
}

async fn first_execution(client: &PrefectClient, run_id: Uuid) -> Result<bool, FakeFlowError> {
    Ok(client.read_flow_run(run_id).await?.run_count <= 1)
}

async fn complete(client: &PrefectClient, run_id: Uuid) -> Result<FlowExit, FakeFlowError> {
    propose(
        client,
        run_id,
        StateCreate::new(StateType::Completed, "Completed"),
    )
    .await?;
    Ok(FlowExit::Completed)
}

async fn fail(client: &PrefectClient, run_id: Uuid) -> Result<FlowExit, FakeFlowError> {
    let failed = StateCreate::new(StateType::Failed, "Failed").with_message("fake-flow failed");
    propose(client, run_id, failed).await?;
    Ok(FlowExit::Failed)
}

/// Failed; on an AwaitingRetry answer, run again in this process.
async fn fail_then_retry(
    client: &PrefectClient,
    run_id: Uuid,
    work: Duration,
) -> Result<FlowExit, FakeFlowError> {
    let failed = StateCreate::new(StateType::Failed, "Failed").with_message("first attempt failed");
    let answer = propose(client, run_id, failed).await?;
    let retried = answer.status == SetStateStatus::Reject
        && answer
            .state
            .as_ref()
            .is_some_and(|state| state.state_type == StateType::Scheduled);
    if !retried {
        return Ok(FlowExit::Failed);
    }
    if let Some(refused) = propose_running(client, run_id).await? {
        return Ok(FlowExit::NotAccepted(refused));
    }
    tokio::time::sleep(work).await;
    complete(client, run_id).await
}

fn scheduled_awaiting_retry() -> StateCreate {
    let mut state = StateCreate::new(StateType::Scheduled, "AwaitingRetry");
    state.state_details.scheduled_time = Some(chrono::Utc::now());
    state
}

async fn propose(
    client: &PrefectClient,
    run_id: Uuid,
    state: StateCreate,
) -> Result<OrchestrationResult, FakeFlowError> {
    let name = state.name.clone().unwrap_or_default();
    let result = client.set_flow_run_state(run_id, &state, false).await?;
    println!("fake-flow: proposed {name}: {}", describe(&result));
    Ok(result)
}

fn describe(result: &OrchestrationResult) -> String {
    let state = result
        .state
        .as_ref()
        .map(|state| state.display_name().to_owned())
        .unwrap_or_else(|| "-".into());
    let reason = result.details.reason.as_deref().unwrap_or("");
    format!("{:?} (state {state}) {reason}", result.status)
}

/// The run id the dispatcher put in the pod's environment.
pub fn run_id_from_env() -> Result<Uuid, FakeFlowError> {
    std::env::var("PREFECT__FLOW_RUN_ID")
        .ok()
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
        .ok_or(FakeFlowError::NoRunId)
}
