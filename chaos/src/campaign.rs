//! One campaign from start to verdict: bring the stack up, start the
//! recorder before any Job can exist, create the backlog, start the
//! services, then run arrivals and the nemesis side by side, heal
//! everything, wait for the system to become quiet (at most the recovery
//! window), check, report, tear down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prefect_client::{ClientConfig, PrefectClient};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checker;
use crate::config::CampaignConfig;
use crate::monitor::{self, Monitor, Observations};
use crate::nemesis::{self, EpisodeLog, FaultKind, Nemesis};
use crate::recorder::{self, Recorder, SharedRecorder};
use crate::report::{FaultOutcome, Summary};
use crate::stack::{Stack, StackError};
use crate::workload::{self, PlannedRun, Workload};

/// The campaign could not be carried out (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("setting up the workload: {0}")]
    Workload(#[from] workload::WorkloadError),
    #[error("{context}: {detail}")]
    Setup {
        context: &'static str,
        detail: String,
    },
}

fn setup(context: &'static str) -> impl FnOnce(String) -> CampaignError {
    move |detail| CampaignError::Setup { context, detail }
}

/// Runs a campaign; returns the report (the exit code is the summary's).
pub async fn run(config: CampaignConfig) -> Result<(Summary, String), CampaignError> {
    let (dir, temp) = work_dir(&config)?;
    let stack = Stack::start(&config, &dir).await?;
    let outcome = drive(&config, stack).await;
    let (mut summary, stack) = outcome?;
    stack.shutdown().await;
    let report = crate::report::render(&summary);
    let _ = std::fs::write(dir.join("report.txt"), &report);
    if summary.exit_code() == 0 && !config.keep && temp {
        let _ = std::fs::remove_dir_all(&dir);
        summary.work_dir = None;
    }
    let report = crate::report::render(&summary);
    Ok((summary, report))
}

fn work_dir(config: &CampaignConfig) -> Result<(PathBuf, bool), CampaignError> {
    if let Some(dir) = &config.work_dir {
        std::fs::create_dir_all(dir).map_err(|e| setup("creating the work dir")(e.to_string()))?;
        return Ok((dir.clone(), false));
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("chaos-{}-", config.seed))
        .tempdir()
        .map_err(|e| setup("creating the work dir")(e.to_string()))?;
    Ok((dir.keep(), true))
}

/// What the phases of a campaign share.
struct Context {
    prefect: PrefectClient,
    kube: kube::Client,
    recorder: SharedRecorder,
    stop_watching: CancellationToken,
    workload: Workload,
}

/// What the fault phase leaves behind.
struct FaultPhase {
    episodes: Vec<EpisodeLog>,
    actions: JoinSet<()>,
    harness_errors: Vec<String>,
    /// When the last arrival and the last heal were done, from `start`.
    ended: Duration,
}

/// Everything between a started stack and the verdict.
async fn drive(
    config: &CampaignConfig,
    mut stack: Stack,
) -> Result<(Summary, Stack), CampaignError> {
    let context = prepare(&stack).await?;
    let plan = workload::plan(
        config.seed,
        config.backlog,
        config.arrival_rate,
        config.duration(),
        config.flow_sleep(),
    );
    let schedule = nemesis::schedule(config);
    write_plan(&stack.dir, &plan, &schedule);
    let (backlog, arrivals): (Vec<PlannedRun>, Vec<PlannedRun>) =
        plan.iter().cloned().partition(|run| run.at.is_zero());
    let mut actions = JoinSet::new();
    for run in backlog {
        create_and_act(&context.workload, run, &mut actions).await;
    }
    tracing::info!(
        backlog = config.backlog,
        "backlog created; starting the services"
    );
    stack.start_services(config)?;
    let stack = Arc::new(stack);
    let start = Instant::now();
    let stop_monitor = CancellationToken::new();
    let monitor = Monitor::start(
        stack.services.clone(),
        context.prefect.clone(),
        stack.pool.clone(),
        context.recorder.clone(),
        start,
        stop_monitor.clone(),
    );
    let mut phase =
        fault_phase(&context, stack.clone(), schedule, arrivals, actions, start).await?;
    let quiet = settle(config, &context, &stack.pool, &mut phase.actions, start).await;
    stop_monitor.cancel();
    let observations = std::mem::take(&mut *monitor.join().await.lock());
    let summary = conclude(
        config,
        &context,
        &stack,
        plan.len(),
        phase,
        observations,
        quiet,
        start,
    )
    .await;
    let stack = Arc::try_unwrap(stack)
        .map_err(|_| setup("tearing down")("the stack is still shared".into()))?;
    Ok((summary, stack))
}

/// Reads every run back and checks it.
#[allow(clippy::too_many_arguments)]
async fn conclude(
    config: &CampaignConfig,
    context: &Context,
    stack: &Stack,
    plan_len: usize,
    phase: FaultPhase,
    observations: Observations,
    quiet: Option<Duration>,
    start: Instant,
) -> Summary {
    let records = context.workload.records.lock().clone();
    let facts = checker::gather(&context.prefect, records).await;
    context.stop_watching.cancel();
    let parts = SummaryParts {
        plan_len,
        facts,
        observations,
        recorder: &context.recorder.lock(),
        workload_errors: context.workload.errors.lock().clone(),
        final_recovery: quiet.map(|quiet| quiet.saturating_sub(phase.ended)),
        elapsed: start.elapsed(),
        phase,
    };
    summarize(config, stack, parts)
}

/// The direct clients, the recorder (listed once) and the workload's pool
/// and deployments.
async fn prepare(stack: &Stack) -> Result<Context, CampaignError> {
    let prefect = direct_client(&stack.prefect_url())?;
    let kube = emulator_client(stack).await?;
    let recorder = SharedRecorder::default();
    let stop_watching = CancellationToken::new();
    let listed = recorder::start(kube.clone(), recorder.clone(), stop_watching.clone());
    tokio::time::timeout(Duration::from_secs(60), listed)
        .await
        .map_err(|_| setup("watching the emulator")("no initial list within 60 s".into()))?;
    let workload = Workload::setup(
        prefect.clone(),
        &stack.prefect_url(),
        &stack.pool,
        &stack.binaries.fake_flow,
    )
    .await?;
    Ok(Context {
        prefect,
        kube,
        recorder,
        stop_watching,
        workload,
    })
}

/// Arrivals and the nemesis side by side, then everything healed.
async fn fault_phase(
    context: &Context,
    stack: Arc<Stack>,
    schedule: Vec<nemesis::Episode>,
    arrivals: Vec<PlannedRun>,
    actions: JoinSet<()>,
    start: Instant,
) -> Result<FaultPhase, CampaignError> {
    let nemesis = Arc::new(Nemesis::new(stack, context.kube.clone(), start));
    let faults = tokio::spawn(nemesis.clone().run(schedule));
    let arrived = tokio::spawn(arrive(context.workload.clone(), arrivals, start, actions));
    let actions = arrived
        .await
        .map_err(|e| setup("creating runs")(e.to_string()))?;
    let episodes = faults
        .await
        .map_err(|e| setup("running the nemesis")(e.to_string()))?;
    let mut harness_errors = Vec::new();
    if let Err(error) = nemesis.heal_everything().await {
        harness_errors.push(format!("healing everything at the end: {error}"));
    }
    Ok(FaultPhase {
        episodes,
        actions,
        harness_errors,
        ended: start.elapsed(),
    })
}

fn direct_client(api_url: &str) -> Result<PrefectClient, CampaignError> {
    let config = ClientConfig::new(api_url)
        .map_err(|e| setup("configuring the Prefect client")(e.to_string()))?;
    PrefectClient::new(config.with_worker_name("chaos-checker"))
        .map_err(|e| setup("configuring the Prefect client")(e.to_string()))
}

/// The checker's own client, straight to the emulator.
async fn emulator_client(stack: &Stack) -> Result<kube::Client, CampaignError> {
    let failed = setup("reading the emulator's kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&stack.emulator_kubeconfig)
        .map_err(|e| failed(e.to_string()))?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| setup("reading the emulator's kubeconfig")(e.to_string()))?;
    kube::Client::try_from(config)
        .map_err(|e| setup("building the Kubernetes client")(e.to_string()))
}

async fn create_and_act(workload: &Workload, run: PlannedRun, actions: &mut JoinSet<()>) {
    if let Some(record) = workload.create(&run).await {
        let workload = workload.clone();
        actions.spawn(async move { workload.act(record, run).await });
    }
}

/// Creates each arrival at its time; returns the pending user actions.
async fn arrive(
    workload: Workload,
    arrivals: Vec<PlannedRun>,
    start: Instant,
    mut actions: JoinSet<()>,
) -> JoinSet<()> {
    for run in arrivals {
        tokio::time::sleep_until(start + run.at).await;
        create_and_act(&workload, run, &mut actions).await;
    }
    actions
}

/// Waits until the system is quiet or the recovery window ends; returns
/// when it became quiet (from `start`). Quiet: every user action done, no
/// run unsettled, and no run stuck — or only final runs whose Jobs or pods
/// linger, unchanged for [`LINGER`] (the checker reports those).
async fn settle(
    config: &CampaignConfig,
    context: &Context,
    pool: &str,
    actions: &mut JoinSet<()>,
    start: Instant,
) -> Option<Duration> {
    let deadline = Instant::now() + config.recovery();
    let mut stable: Option<(Vec<uuid::Uuid>, Instant)> = None;
    let mut calm_since: Option<Instant> = None;
    while Instant::now() < deadline {
        while actions.try_join_next().is_some() {}
        if let Ok((stuck, unsettled)) =
            monitor::probe(&context.prefect, pool, &context.recorder).await
        {
            let stuck: Vec<uuid::Uuid> = stuck.into_keys().collect();
            let calm = unsettled == 0 && actions.is_empty();
            calm_since = if calm {
                calm_since.or(Some(Instant::now()))
            } else {
                None
            };
            let stable_since = match stable.take() {
                Some((before, since)) if before == stuck => since,
                _ => Instant::now(),
            };
            let lingered = stuck.is_empty() || stable_since.elapsed() >= LINGER;
            if let (Some(calm_since), true) = (calm_since, lingered) {
                return Some(calm_since.max(stable_since).duration_since(start));
            }
            stable = Some((stuck, stable_since));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    actions.abort_all();
    None
}

/// How long leftovers of final runs must stay unchanged to count as settled.
const LINGER: Duration = Duration::from_secs(20);

struct SummaryParts<'a> {
    plan_len: usize,
    facts: Vec<checker::RunFacts>,
    phase: FaultPhase,
    observations: Observations,
    recorder: &'a Recorder,
    workload_errors: Vec<String>,
    final_recovery: Option<Duration>,
    elapsed: Duration,
}

fn wall(offset: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(offset).unwrap_or_default()
}

fn summarize(config: &CampaignConfig, stack: &Stack, parts: SummaryParts<'_>) -> Summary {
    let limit_kib = config.rss_limit_mib * 1024;
    let now = chrono::Utc::now();
    let origin = now - chrono::TimeDelta::from_std(parts.elapsed).unwrap_or_default();
    let impairments = impairments(&parts.phase.episodes, origin, &stack.dir.join("logs"));
    let violations = checker::check(
        &parts.facts,
        parts.recorder,
        &parts.observations.rss,
        limit_kib,
        &impairments,
        now,
    );
    let probes = &parts.observations.probes;
    let faults: Vec<FaultOutcome> = parts
        .phase
        .episodes
        .into_iter()
        .map(|log| FaultOutcome {
            recovery: monitor::recovery(probes, log.started, log.healed),
            log,
        })
        .collect();
    let harness_errors = harness_errors(
        parts.phase.harness_errors,
        &faults,
        &parts.facts,
        &parts.workload_errors,
        parts.plan_len,
    );
    let mut notes = notes(
        stack,
        parts.recorder,
        parts.workload_errors.len(),
        parts.observations.probe_errors,
    );
    notes.extend(outcome_notes(&parts.facts, parts.recorder, &impairments));
    Summary {
        seed: config.seed,
        database: stack.database_label.clone(),
        elapsed: parts.elapsed,
        planned_runs: parts.plan_len,
        facts: parts.facts,
        faults,
        final_recovery: parts.final_recovery,
        violations,
        rss: parts.observations.rss,
        rss_limit_mib: config.rss_limit_mib,
        unexpected_exits: parts.observations.unexpected_exits,
        harness_errors,
        notes,
        work_dir: Some(stack.dir.clone()),
    }
}

/// When faults that impair submission held, on the clock of the runs' facts
/// (`origin` is when the campaign started).
/// The faults that could hold up a submission (applied ones; a SIGSTOP only of
/// a dispatcher), and each run's failed attempts from the dispatchers' logs.
fn impairments(
    episodes: &[EpisodeLog],
    origin: chrono::DateTime<chrono::Utc>,
    logs: &std::path::Path,
) -> checker::Impairments {
    let windows = episodes
        .iter()
        .filter(|log| log.error.is_none() && log.kind.impairs_submission())
        .filter(|log| log.kind != FaultKind::StopService || log.detail.contains("dispatcher"))
        .map(|log| (origin + wall(log.started), origin + wall(log.healed)))
        .collect();
    checker::Impairments {
        windows,
        failed_attempts: failed_attempts(logs),
    }
}

/// How many times the dispatchers logged "submission failed; will retry" for
/// each run.
fn failed_attempts(logs: &std::path::Path) -> BTreeMap<uuid::Uuid, usize> {
    let mut attempts = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(logs) else {
        return attempts;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("dispatcher")
        {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| l.contains("submission failed; will retry"))
        {
            if let Some(id) = run_id_in(line) {
                *attempts.entry(id).or_insert(0) += 1;
            }
        }
    }
    attempts
}

/// The `flow_run_id="<uuid>"` of a log line.
fn run_id_in(line: &str) -> Option<uuid::Uuid> {
    let start = line.find("flow_run_id")?;
    line[start..]
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find_map(|word| uuid::Uuid::parse_str(word).ok())
}

/// The notes on outcomes the checker accepts: runs Crashed by a submission timeout
/// that faults held up, and Jobs withdrawn before release.
fn outcome_notes(
    facts: &[checker::RunFacts],
    recorder: &Recorder,
    impairments: &checker::Impairments,
) -> [String; 2] {
    let timed_out: Vec<String> = facts
        .iter()
        .filter(|run| checker::crashed_by_impaired_submission(run, impairments))
        .map(|run| run.record.id.to_string())
        .collect();
    let withdrawn = recorder
        .jobs
        .values()
        .filter(|job| !job.could_run() && job.deleted_at.is_some())
        .count();
    [
        format!(
            "Runs Crashed by the submission timeout while faults held up their submission (faults on for at least {:.0} % of claim to crash, at least {} failed attempts in the dispatchers' logs; accepted by (b) and (f)): {} [{}]",
            checker::IMPAIRED_SHARE * 100.0,
            checker::MIN_FAILED_ATTEMPTS,
            timed_out.len(),
            timed_out.join(", ")
        ),
        format!(
            "Jobs created suspended and withdrawn before release (never ran; not counted by (a)): {withdrawn}"
        ),
    ]
}

/// Faults that could not be applied or healed, runs that could not be
/// read, and run creations when more than a tenth of them failed.
fn harness_errors(
    mut errors: Vec<String>,
    faults: &[FaultOutcome],
    facts: &[checker::RunFacts],
    workload_errors: &[String],
    plan_len: usize,
) -> Vec<String> {
    errors.extend(faults.iter().filter_map(|f| {
        f.log
            .error
            .as_ref()
            .map(|e| format!("{}: {e}", f.log.kind.name()))
    }));
    errors.extend(facts.iter().filter_map(|f| {
        f.read_error
            .as_ref()
            .map(|e| format!("reading run {}: {e}", f.record.id))
    }));
    if workload_errors.len() * 10 > plan_len {
        errors.extend(workload_errors.iter().cloned());
    }
    errors
}

fn notes(
    stack: &Stack,
    recorder: &Recorder,
    workload_errors: usize,
    probe_errors: u64,
) -> Vec<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let proxy = stack.prefect_proxy.counters();
    let kube = stack.kube_proxy.counters();
    vec![
        format!(
            "Prefect proxy: {} forwarded, {} injected errors, {} resets, {} answers dropped after commit, {} blackholed",
            proxy.forwarded.load(Relaxed),
            proxy.errors.load(Relaxed),
            proxy.resets.load(Relaxed),
            proxy.dropped_after_commit.load(Relaxed),
            proxy.blackholed.load(Relaxed)
        ),
        format!("Kubernetes proxy: {} connections, {} reset", kube.connections.load(Relaxed), kube.resets.load(Relaxed)),
        format!(
            "Recorder: {} Jobs, {} pods, {} Events seen; {} (re)lists",
            recorder.jobs.len(),
            recorder.pods.len(),
            recorder.events.len(),
            recorder.relists
        ),
        format!("Run creations that failed: {workload_errors}; failed probes: {probe_errors}"),
    ]
}

/// The plan and the fault schedule, for reproducing a campaign by hand.
fn write_plan(dir: &std::path::Path, plan: &[PlannedRun], schedule: &[nemesis::Episode]) {
    let mut text = String::new();
    for run in plan {
        text.push_str(&format!(
            "run {:>5} at {:>7.1} s {:<16} sleep {} ms action after {} ms\n",
            run.index,
            run.at.as_secs_f64(),
            run.kind.name(),
            run.sleep_ms,
            run.action_delay.as_millis()
        ));
    }
    for episode in schedule {
        text.push_str(&format!(
            "fault at {:>7.1} s {:<26} for {:.1} s\n",
            episode.start.as_secs_f64(),
            episode.kind.name(),
            episode.duration.as_secs_f64()
        ));
    }
    let _ = std::fs::write(dir.join("plan.txt"), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_is_found_in_a_colored_log_line() {
        let line = "\u{1b}[2m2026-11-27T22:32:18Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m submission failed; will retry \u{1b}[3mflow_run_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"12b59f11-6e40-4d75-9fea-895e157e4a8b\" \u{1b}[3merror\u{1b}[0m=x";
        assert_eq!(
            run_id_in(line),
            uuid::Uuid::parse_str("12b59f11-6e40-4d75-9fea-895e157e4a8b").ok()
        );
        assert_eq!(run_id_in("no id here"), None);
    }
}
