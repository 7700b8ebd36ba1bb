//! The workload: a seeded plan of flow runs (a backlog due before the
//! services start, then a steady Poisson arrival rate), each of a
//! [`RunKind`] that fixes what its pod does and what the user does to it
//! (cancel at a random moment, delete, reschedule, retry), and the driver
//! that creates them on Prefect and carries those actions out. Everything
//! done is kept as [`RunRecord`]s for the checker.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prefect_client::{DeploymentCreate, PrefectClient, StateType, WorkPoolCreate};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fake_flow::Behaviour;
use crate::prefect_api::UserApi;

/// What a run's pod does and what the user does to the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunKind {
    /// The flow completes.
    Complete,
    /// The flow reports Failed and its pod exits 1.
    Fail,
    /// The pod exits 3 before the flow reports anything.
    CrashExit,
    /// The image cannot be pulled.
    BadImage,
    /// The flow fails once and Prefect retries it in the same pod (retries: 1).
    RetryInProcess,
    /// The flow puts its run back to SCHEDULED once; the retry needs its own Job.
    FlowReschedule,
    /// Cancelled 0–1.5 s after creation (mostly before the claim).
    CancelEarly,
    /// Cancelled as soon as it is seen Pending (between claim and Job).
    CancelPending,
    /// Cancelled while Running.
    CancelRunning,
    /// Deleted by the user 0–10 s after creation.
    Delete,
    /// Rescheduled (forced SCHEDULED, 3 s later) 0–1 s after creation.
    UserReschedule,
    /// Once Completed, retried from the UI (forced SCHEDULED AwaitingRetry).
    UserRetry,
}

impl RunKind {
    pub const ALL: [RunKind; 12] = [
        RunKind::Complete,
        RunKind::Fail,
        RunKind::CrashExit,
        RunKind::BadImage,
        RunKind::RetryInProcess,
        RunKind::FlowReschedule,
        RunKind::CancelEarly,
        RunKind::CancelPending,
        RunKind::CancelRunning,
        RunKind::Delete,
        RunKind::UserReschedule,
        RunKind::UserRetry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunKind::Complete => "complete",
            RunKind::Fail => "fail",
            RunKind::CrashExit => "exit-nonzero",
            RunKind::BadImage => "bad-image",
            RunKind::RetryInProcess => "retry-in-process",
            RunKind::FlowReschedule => "flow-reschedule",
            RunKind::CancelEarly => "cancel-early",
            RunKind::CancelPending => "cancel-pending",
            RunKind::CancelRunning => "cancel-running",
            RunKind::Delete => "delete",
            RunKind::UserReschedule => "user-reschedule",
            RunKind::UserRetry => "user-retry",
        }
    }

    /// Relative frequency after the first round of every kind.
    fn weight(self) -> u32 {
        match self {
            RunKind::Complete => 30,
            RunKind::CancelPending | RunKind::UserReschedule | RunKind::UserRetry => 4,
            _ => 6,
        }
    }

    pub fn behaviour(self) -> Behaviour {
        match self {
            RunKind::Fail => Behaviour::Fail,
            RunKind::CrashExit => Behaviour::ExitNonzeroBeforeRunning,
            RunKind::RetryInProcess => Behaviour::RetryInProcess,
            RunKind::FlowReschedule => Behaviour::Reschedule,
            _ => Behaviour::Complete,
        }
    }

    /// A flow long enough to be cancelled while it runs.
    fn sleep_floor_ms(self) -> u64 {
        if self == RunKind::CancelRunning {
            8000
        } else {
            0
        }
    }
}

/// One run of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    pub index: usize,
    pub kind: RunKind,
    /// When it is created, from the start of the campaign (zero: the backlog).
    pub at: Duration,
    pub sleep_ms: u64,
    /// Delay of the user's action where the kind has a timed one.
    pub action_delay: Duration,
}

/// The seeded plan: the backlog, then arrivals until `duration`. The first
/// runs go through every kind once (in seeded order), so even a short
/// campaign has each.
pub fn plan(
    seed: u64,
    backlog: usize,
    rate: f64,
    duration: Duration,
    sleep: (u64, u64),
) -> Vec<PlannedRun> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x776f_726b);
    let mut kinds = RunKind::ALL.to_vec();
    kinds.shuffle(&mut rng);
    let mut times = vec![Duration::ZERO; backlog];
    times.extend(arrivals(&mut rng, rate, duration));
    times
        .into_iter()
        .enumerate()
        .map(|(index, at)| {
            let kind = kinds
                .get(index)
                .copied()
                .unwrap_or_else(|| weighted_kind(&mut rng));
            planned(&mut rng, index, kind, at, sleep)
        })
        .collect()
}

fn arrivals(rng: &mut StdRng, rate: f64, duration: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    if rate <= 0.0 {
        return times;
    }
    let mut at = 0.0;
    loop {
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        at += -uniform.ln() / rate;
        if at >= duration.as_secs_f64() {
            return times;
        }
        times.push(Duration::from_secs_f64(at));
    }
}

fn weighted_kind(rng: &mut StdRng) -> RunKind {
    let total: u32 = RunKind::ALL.iter().map(|kind| kind.weight()).sum();
    let mut pick = rng.random_range(0..total);
    for kind in RunKind::ALL {
        if pick < kind.weight() {
            return kind;
        }
        pick -= kind.weight();
    }
    RunKind::Complete
}

fn planned(
    rng: &mut StdRng,
    index: usize,
    kind: RunKind,
    at: Duration,
    sleep: (u64, u64),
) -> PlannedRun {
    let sleep_ms = rng
        .random_range(sleep.0..=sleep.1)
        .max(kind.sleep_floor_ms());
    let action_ms = match kind {
        RunKind::CancelEarly => rng.random_range(0..1500),
        RunKind::Delete => rng.random_range(0..10_000),
        RunKind::UserReschedule => rng.random_range(0..1000),
        RunKind::CancelRunning => rng.random_range(0..sleep_ms / 2),
        _ => 0,
    };
    PlannedRun {
        index,
        kind,
        at,
        sleep_ms,
        action_delay: Duration::from_millis(action_ms),
    }
}

/// What the user did to a run and what Prefect answered.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRecord {
    pub at: DateTime<Utc>,
    /// "cancel", "delete", "reschedule", "retry".
    pub what: &'static str,
    /// The run's state just before (as the user saw it).
    pub seen_before: String,
    pub outcome: ActionOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ActionOutcome {
    /// Prefect's answer: status and the state the run is in after it.
    Answered {
        status: String,
        state: StateType,
        state_name: String,
    },
    /// `DELETE` removed the run.
    Deleted,
    /// The moment never came (e.g. never seen Pending) or the call failed.
    NotDone(String),
}

/// A created run and what happened to it from the user's side.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    pub id: Uuid,
    pub name: String,
    pub kind: RunKind,
    pub created_at: DateTime<Utc>,
    pub action: Option<ActionRecord>,
}

/// Every run created so far.
pub type Records = Arc<parking_lot::Mutex<Vec<RunRecord>>>;

/// Failures setting up or creating runs.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("Prefect: {0}")]
    Prefect(#[from] prefect_client::PrefectError),
    #[error("{0}")]
    User(#[from] crate::prefect_api::UserApiError),
}

/// Creates runs and acts on them as a user, straight against the server.
#[derive(Clone)]
pub struct Workload {
    client: PrefectClient,
    user: UserApi,
    deployments: Arc<HashMap<RunKind, Uuid>>,
    fake_flow: Arc<str>,
    pub records: Records,
    /// Calls that failed although the server was healthy.
    pub errors: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Workload {
    /// Creates the pool, the flow and one deployment per kind.
    pub async fn setup(
        client: PrefectClient,
        api_url: &str,
        pool: &str,
        fake_flow: &Path,
    ) -> Result<Workload, WorkloadError> {
        let template = serde_json::from_str(job_manifest::DEFAULT_BASE_JOB_TEMPLATE)
            .expect("the default template is JSON");
        client
            .ensure_work_pool(&WorkPoolCreate::new(pool, "kubernetes", template))
            .await?;
        let flow = client.create_flow("chaos-flow").await?;
        let fake_flow: Arc<str> = quote(&fake_flow.display().to_string()).into();
        let mut deployments = HashMap::new();
        for kind in RunKind::ALL {
            let deployment = DeploymentCreate {
                work_pool_name: Some(pool.to_owned()),
                job_variables: Some(deployment_variables(&fake_flow, kind)),
                ..DeploymentCreate::new(format!("chaos-{}", kind.name()), flow.id)
            };
            deployments.insert(kind, client.create_deployment(&deployment).await?.id);
        }
        Ok(Workload {
            client,
            user: UserApi::new(api_url),
            deployments: Arc::new(deployments),
            fake_flow,
            records: Records::default(),
            errors: Arc::default(),
        })
    }

    /// Creates the planned run (retrying a few times) and records it.
    pub async fn create(&self, run: &PlannedRun) -> Option<RunRecord> {
        let body = self.run_body(run);
        let deployment = self.deployments[&run.kind];
        for attempt in 1..=5 {
            match self.user.create_run(deployment, &body).await {
                Ok(created) => return Some(self.remember(created.id, created.name, run.kind)),
                Err(error) if attempt == 5 => self
                    .errors
                    .lock()
                    .push(format!("creating run {}: {error}", run.index)),
                Err(_) => tokio::time::sleep(Duration::from_secs(attempt)).await,
            }
        }
        None
    }

    fn remember(&self, id: Uuid, name: String, kind: RunKind) -> RunRecord {
        let record = RunRecord {
            id,
            name,
            kind,
            created_at: Utc::now(),
            action: None,
        };
        self.records.lock().push(record.clone());
        record
    }

    fn run_body(&self, run: &PlannedRun) -> Value {
        let command = format!(
            "{} --behaviour {} --sleep-ms {}",
            self.fake_flow,
            run.kind.behaviour().as_arg(),
            run.sleep_ms
        );
        let mut body = json!({
            "name": format!("c{:05}-{}", run.index, run.kind.name()),
            "job_variables": {"command": command},
        });
        if run.kind == RunKind::RetryInProcess {
            body["empirical_policy"] = json!({"retries": 1, "retry_delay": 2});
        }
        body
    }

    /// Carries out the run's user action, if its kind has one.
    pub async fn act(&self, record: RunRecord, run: PlannedRun) {
        let action = match run.kind {
            RunKind::CancelEarly => self.cancel_after(&record, run.action_delay).await,
            RunKind::CancelPending => self.cancel_when_pending(&record).await,
            RunKind::CancelRunning => self.cancel_while_running(&record, run.action_delay).await,
            RunKind::Delete => self.delete_after(&record, run.action_delay).await,
            RunKind::UserReschedule => self.reschedule_after(&record, run.action_delay).await,
            RunKind::UserRetry => self.retry_when_completed(&record).await,
            _ => return,
        };
        if let Some(entry) = self.records.lock().iter_mut().find(|r| r.id == record.id) {
            entry.action = Some(action);
        }
    }

    async fn cancel_after(&self, record: &RunRecord, delay: Duration) -> ActionRecord {
        tokio::time::sleep(delay).await;
        let seen = self.state_name(record.id).await;
        self.cancel(record, seen).await
    }

    async fn cancel_when_pending(&self, record: &RunRecord) -> ActionRecord {
        let wanted = [StateType::Pending, StateType::Running];
        match self
            .wait_for(record.id, &wanted, Duration::from_millis(100))
            .await
        {
            Some(seen) => self.cancel(record, seen).await,
            None => not_done("cancel", "never seen Pending or Running"),
        }
    }

    async fn cancel_while_running(&self, record: &RunRecord, delay: Duration) -> ActionRecord {
        let wanted = [StateType::Running];
        let Some(seen) = self
            .wait_for(record.id, &wanted, Duration::from_millis(250))
            .await
        else {
            return not_done("cancel", "never seen Running");
        };
        tokio::time::sleep(delay).await;
        self.cancel(record, seen).await
    }

    async fn cancel(&self, record: &RunRecord, seen_before: String) -> ActionRecord {
        let state = json!({"type": "CANCELLING", "name": "Cancelling"});
        self.propose("cancel", record, state, false, seen_before)
            .await
    }

    async fn delete_after(&self, record: &RunRecord, delay: Duration) -> ActionRecord {
        tokio::time::sleep(delay).await;
        let seen_before = self.state_name(record.id).await;
        let outcome = match self.user.delete_run(record.id).await {
            Ok(true) => ActionOutcome::Deleted,
            Ok(false) => ActionOutcome::NotDone("already gone".into()),
            Err(error) => ActionOutcome::NotDone(error.to_string()),
        };
        ActionRecord {
            at: Utc::now(),
            what: "delete",
            seen_before,
            outcome,
        }
    }

    async fn reschedule_after(&self, record: &RunRecord, delay: Duration) -> ActionRecord {
        tokio::time::sleep(delay).await;
        let seen = self.state_name(record.id).await;
        let at = Utc::now() + chrono::TimeDelta::seconds(3);
        let state = json!({"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": at}});
        self.propose("reschedule", record, state, true, seen).await
    }

    async fn retry_when_completed(&self, record: &RunRecord) -> ActionRecord {
        let wanted = [StateType::Completed];
        let Some(seen) = self
            .wait_for(record.id, &wanted, Duration::from_millis(500))
            .await
        else {
            return not_done("retry", "never seen Completed");
        };
        let state = json!({"type": "SCHEDULED", "name": "AwaitingRetry", "state_details": {"scheduled_time": Utc::now()}});
        self.propose("retry", record, state, true, seen).await
    }

    async fn propose(
        &self,
        what: &'static str,
        record: &RunRecord,
        state: Value,
        force: bool,
        seen_before: String,
    ) -> ActionRecord {
        let outcome = match self.user.set_state(record.id, state, force).await {
            Ok(answer) => match answer.state {
                Some(state) => ActionOutcome::Answered {
                    status: format!("{:?}", answer.status),
                    state: state.state_type,
                    state_name: state.display_name().to_owned(),
                },
                None => ActionOutcome::NotDone(format!("{:?} without a state", answer.status)),
            },
            Err(error) => ActionOutcome::NotDone(error.to_string()),
        };
        ActionRecord {
            at: Utc::now(),
            what,
            seen_before,
            outcome,
        }
    }

    /// Polls the run until its state is one of `wanted` (at most 3 minutes);
    /// returns that state's name.
    async fn wait_for(&self, run: Uuid, wanted: &[StateType], every: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        while tokio::time::Instant::now() < deadline {
            if let Ok(current) = self.client.read_flow_run(run).await {
                let state = current.state.as_ref()?;
                if wanted.contains(&state.state_type) {
                    return Some(state.display_name().to_owned());
                }
                if state.state_type.is_final() && !wanted.iter().any(|w| w.is_final()) {
                    return None;
                }
            }
            tokio::time::sleep(every).await;
        }
        None
    }

    async fn state_name(&self, run: Uuid) -> String {
        match self.client.read_flow_run(run).await {
            Ok(current) => current
                .state
                .map(|state| state.display_name().to_owned())
                .unwrap_or_else(|| "-".into()),
            Err(error) => format!("unreadable: {error}"),
        }
    }
}

fn not_done(what: &'static str, why: &str) -> ActionRecord {
    ActionRecord {
        at: Utc::now(),
        what,
        seen_before: "-".into(),
        outcome: ActionOutcome::NotDone(why.into()),
    }
}

fn deployment_variables(fake_flow: &str, kind: RunKind) -> Value {
    let command = format!("{fake_flow} --behaviour {}", kind.behaviour().as_arg());
    let mut variables = json!({"command": command, "pod_watch_timeout_seconds": 60});
    if kind == RunKind::BadImage {
        variables["image"] = json!("registry.invalid/chaos/pull-error:1");
    }
    variables
}

/// Single-quotes a path for the shell-like split of the `command` variable.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_a_function_of_the_seed_and_starts_with_every_kind() {
        let make = |seed| plan(seed, 5, 0.5, Duration::from_secs(60), (1000, 3000));
        assert_eq!(make(7), make(7));
        assert_ne!(make(7), make(8));
        let first: std::collections::BTreeSet<_> = make(7)
            .iter()
            .take(RunKind::ALL.len())
            .map(|run| run.kind)
            .collect();
        assert_eq!(first.len(), RunKind::ALL.len());
        assert!(
            make(7)[..5].iter().all(|run| run.at.is_zero()),
            "the backlog is due at once"
        );
    }

    #[test]
    fn runs_cancelled_while_running_run_long_enough() {
        let runs = plan(3, 0, 2.0, Duration::from_secs(300), (100, 200));
        let cancelled: Vec<_> = runs
            .iter()
            .filter(|run| run.kind == RunKind::CancelRunning)
            .collect();
        assert!(!cancelled.is_empty());
        assert!(cancelled
            .iter()
            .all(|run| run.sleep_ms >= 8000 && run.action_delay.as_millis() < 4000));
    }
}
