//! The checker: after the recovery window, reads every run's state history
//! and logs from Prefect and every Job and pod the emulator ever held (the
//! recorder), and checks the invariants of issue 9. Each violation names
//! the run and carries its evidence.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flow_run_proto::SubmissionKey;
use futures::StreamExt;
use prefect_client::{FlowRun, Log, PrefectClient, State, StateType};
use uuid::Uuid;

use crate::monitor::{due_at, in_process_retry, RssPeak};
use crate::recorder::{JobEnd, JobRecord, Recorder};
use crate::workload::{ActionOutcome, RunKind, RunRecord};

/// The invariants, (a) to (h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    OneJobPerScheduledState,
    NoRunLost,
    NoPendingOrRunningWithoutJob,
    NoLiveJobForFinalRun,
    NothingAfterCancelled,
    OneCrashPerFailedJob,
    NoEventForwardedTwice,
    RssBounded,
}

impl Invariant {
    pub const ALL: [Invariant; 8] = [
        Invariant::OneJobPerScheduledState,
        Invariant::NoRunLost,
        Invariant::NoPendingOrRunningWithoutJob,
        Invariant::NoLiveJobForFinalRun,
        Invariant::NothingAfterCancelled,
        Invariant::OneCrashPerFailedJob,
        Invariant::NoEventForwardedTwice,
        Invariant::RssBounded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Invariant::OneJobPerScheduledState => "(a) at most one Job per (run, scheduled state)",
            Invariant::NoRunLost => "(b) no run lost (expected final state)",
            Invariant::NoPendingOrRunningWithoutJob => {
                "(c) no Pending/Running run without a live Job"
            }
            Invariant::NoLiveJobForFinalRun => "(d) no live Job or pod for a final run",
            Invariant::NothingAfterCancelled => "(e) nothing after Cancelled",
            Invariant::OneCrashPerFailedJob => "(f) one Crashed per failed Job, none for a success",
            Invariant::NoEventForwardedTwice => "(g) no Event forwarded twice as a log line",
            Invariant::RssBounded => "(h) each service's RSS bounded",
        }
    }
}

/// One broken invariant, with what shows it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: Invariant,
    /// `<run id> (<run name>, <kind>)`, or the service for (h).
    pub subject: String,
    pub evidence: String,
}

/// What Prefect says about one run at the end.
#[derive(Clone, Debug)]
pub struct RunFacts {
    pub record: RunRecord,
    /// `None`: the run does not exist (deleted).
    pub current: Option<FlowRun>,
    /// Oldest first.
    pub states: Vec<State>,
    pub logs: Vec<Log>,
    /// The run could not be read (a harness problem, not a verdict).
    pub read_error: Option<String>,
}

/// The logger of forwarded Kubernetes Events.
pub const EVENT_LOGGER: &str = "prefect_k8s.reporter.kubernetes_events";

/// Reads every recorded run's current state, history and logs.
pub async fn gather(client: &PrefectClient, records: Vec<RunRecord>) -> Vec<RunFacts> {
    futures::stream::iter(records)
        .map(|record| read_run(client, record))
        .buffer_unordered(6)
        .collect()
        .await
}

async fn read_run(client: &PrefectClient, record: RunRecord) -> RunFacts {
    let mut facts = RunFacts {
        current: None,
        states: Vec::new(),
        logs: Vec::new(),
        read_error: None,
        record,
    };
    let id = facts.record.id;
    match client.read_flow_run(id).await {
        Ok(run) => facts.current = Some(run),
        Err(error) if error.is_not_found() => return facts,
        Err(error) => facts.read_error = Some(error.to_string()),
    }
    match client.read_flow_run_states(id).await {
        Ok(mut states) => {
            states.sort_by_key(|state| state.timestamp);
            facts.states = states;
        }
        Err(error) => facts.read_error = Some(error.to_string()),
    }
    match read_logs(client, id).await {
        Ok(logs) => facts.logs = logs,
        Err(error) => facts.read_error = Some(error.to_string()),
    }
    facts
}

async fn read_logs(
    client: &PrefectClient,
    run: Uuid,
) -> Result<Vec<Log>, prefect_client::PrefectError> {
    let mut logs = Vec::new();
    loop {
        let page = client.read_flow_run_logs(run, 200, logs.len()).await?;
        let done = page.len() < 200;
        logs.extend(page);
        if done {
            return Ok(logs);
        }
    }
}

/// What a run of a kind must end as, given what the user did.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    Completed,
    Failed,
    /// Crashed with a message containing this.
    Crashed(&'static str),
    Cancelled,
    Deleted,
}

pub fn expected(record: &RunRecord) -> Expected {
    let natural = match record.kind {
        RunKind::Fail => Expected::Failed,
        RunKind::CrashExit => Expected::Crashed("exit code 3"),
        RunKind::BadImage => Expected::Crashed("ImagePull"),
        _ => Expected::Completed,
    };
    let outcome = record
        .action
        .as_ref()
        .map(|action| (action.what, &action.outcome));
    match outcome {
        Some((
            "cancel",
            ActionOutcome::Answered {
                state: StateType::Cancelling | StateType::Cancelled,
                ..
            },
        )) => Expected::Cancelled,
        Some(("delete", ActionOutcome::Deleted)) => Expected::Deleted,
        _ => natural,
    }
}

/// The crash messages of a submission that did not complete within the
/// submission timeout (the dispatcher's, and the reporter's three).
const SUBMISSION_TIMEOUT_MESSAGES: [&str; 4] = [
    "s of claiming the flow run",
    "no dispatcher released it within",
    "the submission was lost",
    "after the flow run was claimed: it was deleted, or it was never created",
];

/// A run Crashed by the submission timeout is its designed end, not a lost
/// run, when faults on the submission's path (Prefect, Kubernetes, NATS, a
/// dispatcher stopped or killed) were on for at least this share of the time
/// from its claim to its crash, *and* the dispatchers' logs show at least
/// [`MIN_FAILED_ATTEMPTS`] failed attempts of that very run.
pub const IMPAIRED_SHARE: f64 = 0.5;
/// See [`IMPAIRED_SHARE`].
pub const MIN_FAILED_ATTEMPTS: usize = 3;

/// When faults on the submission path were on (wall clock), and how often the
/// dispatchers logged a failed attempt of each run.
#[derive(Clone, Debug, Default)]
pub struct Impairments {
    pub windows: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub failed_attempts: BTreeMap<Uuid, usize>,
}

impl Impairments {
    /// The share of `from..to` covered by at least one window.
    pub fn coverage(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        if to <= from {
            return 0.0;
        }
        let mut windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = self
            .windows
            .iter()
            .map(|(start, end)| ((*start).max(from), (*end).min(to)))
            .filter(|(start, end)| start < end)
            .collect();
        windows.sort();
        let mut covered = chrono::TimeDelta::zero();
        let mut reach = from;
        for (start, end) in windows {
            let start = start.max(reach);
            if end > start {
                covered += end - start;
                reach = end;
            }
        }
        covered.num_milliseconds() as f64 / (to - from).num_milliseconds() as f64
    }
}

/// Every violation, invariant by invariant.
pub fn check(
    facts: &[RunFacts],
    recorder: &Recorder,
    rss: &BTreeMap<String, RssPeak>,
    rss_limit_kib: u64,
    impairments: &Impairments,
    now: DateTime<Utc>,
) -> Vec<Violation> {
    let mut violations = one_job_per_scheduled_state(facts, recorder);
    for run in facts.iter().filter(|run| run.read_error.is_none()) {
        let jobs = recorder.jobs_of(run.record.id);
        if !crashed_by_impaired_submission(run, impairments) {
            violations.extend(no_run_lost(run, now));
            violations.extend(one_crash_per_failed_job(run, &jobs));
        }
        violations.extend(no_pending_or_running_without_job(run, &jobs, recorder));
        violations.extend(no_live_job_for_final_run(run, &jobs, recorder));
        violations.extend(nothing_after_cancelled(run, recorder));
        violations.extend(no_event_forwarded_twice(run, recorder));
    }
    violations.extend(rss_bounded(rss, rss_limit_kib));
    violations
}

fn subject(record: &RunRecord) -> String {
    format!("{} ({}, {})", record.id, record.name, record.kind.name())
}

fn violation(invariant: Invariant, record: &RunRecord, evidence: String) -> Violation {
    Violation {
        invariant,
        subject: subject(record),
        evidence,
    }
}

fn describe_job(job: &JobRecord) -> String {
    let end = match job.ended {
        Some((JobEnd::Complete, _)) => "complete",
        Some((JobEnd::Failed, _)) => "failed",
        None if job.deleted_at.is_some() => "deleted",
        None if job.suspended => "suspended",
        None => "active",
    };
    format!(
        "Job {}/{} (uid {}, seen {}, created {}suspended, {}, {})",
        job.namespace,
        job.name,
        job.uid,
        job.first_seen.format("%H:%M:%S%.3f"),
        if job.created_suspended { "" } else { "not " },
        if job.had_pod {
            "ran a pod"
        } else {
            "never ran a pod"
        },
        end
    )
}

fn describe_state(state: &State) -> String {
    let at = state
        .timestamp
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    match state.message.as_deref().filter(|m| !m.is_empty()) {
        Some(message) => format!("{} at {at}: {}", state.display_name(), first_line(message)),
        None => format!("{} at {at}", state.display_name()),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// The flow ended on its own while its cancellation was under way: its final
/// state (the run's current one) is stamped after the `Cancelling` and before
/// any `Cancelled`. Prefect has no compare-and-set, so the reporter's forced
/// `Cancelled` (sent after a fresh read still showed `Cancelling`) and the
/// flow's own `Completed` or `Failed`, stamped in the pod before it and
/// delayed on its way, can land in either order; whichever lands last is the
/// run's state. The flow's own end is a true outcome, not a lost run (long
/// campaign, ninth run).
fn finished_while_cancelling(run: &RunFacts, current: &State) -> bool {
    if !matches!(current.state_type, StateType::Completed | StateType::Failed) {
        return false;
    }
    let Some(stamped) = current.timestamp else {
        return false;
    };
    let cancelling = run.states.iter().any(|s| {
        s.state_type == StateType::Cancelling && s.timestamp.is_some_and(|at| at < stamped)
    });
    let cancelled_before = run.states.iter().any(|s| {
        s.state_type == StateType::Cancelled && s.timestamp.is_some_and(|at| at <= stamped)
    });
    cancelling && !cancelled_before
}

fn history(run: &RunFacts) -> String {
    run.states
        .iter()
        .map(|s| s.display_name())
        .collect::<Vec<_>>()
        .join(" → ")
}

/// (a) Jobs that could run the flow, grouped by their claim
/// (`<run>:<scheduled state>`). A Job created suspended and withdrawn unreleased,
/// with no pod, is not counted (the report counts those apart).
fn one_job_per_scheduled_state(facts: &[RunFacts], recorder: &Recorder) -> Vec<Violation> {
    let mut by_claim: BTreeMap<String, Vec<&JobRecord>> = BTreeMap::new();
    for job in recorder
        .jobs
        .values()
        .filter(|job| job.could_run() || job.deleted_at.is_none())
    {
        let claim = job
            .claim
            .clone()
            .unwrap_or_else(|| format!("{}/{} (no claim)", job.namespace, job.name));
        by_claim.entry(claim).or_default().push(job);
    }
    by_claim
        .into_iter()
        .filter(|(_, jobs)| jobs.len() > 1)
        .map(|(claim, mut jobs)| {
            jobs.sort_by_key(|job| job.first_seen);
            let run = SubmissionKey::parse(&claim).map(|key| key.flow_run_id);
            let record = facts
                .iter()
                .find(|f| Some(f.record.id) == run)
                .map(|f| &f.record);
            let evidence = format!(
                "{} Jobs for claim {claim}: {}",
                jobs.len(),
                jobs.iter()
                    .map(|job| describe_job(job))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            Violation {
                invariant: Invariant::OneJobPerScheduledState,
                subject: record.map(subject).unwrap_or(claim),
                evidence,
            }
        })
        .collect()
}

/// Ended Crashed by the submission timeout (its only Crashed state) after a
/// claim whose time to the crash was mostly under faults: the designed end
/// of a submission that could not complete, with its reason: (b) and (f)
/// accept it; (a), (c), (d), (e) and (g) still apply.
pub fn crashed_by_impaired_submission(run: &RunFacts, impairments: &Impairments) -> bool {
    let crashes: Vec<&State> = run
        .states
        .iter()
        .filter(|s| s.state_type == StateType::Crashed)
        .collect();
    let [crash] = crashes.as_slice() else {
        return false;
    };
    let current_is_crash = run
        .current
        .as_ref()
        .and_then(|run| run.state.as_ref())
        .is_some_and(|state| state.id == crash.id);
    let message = crash.message.as_deref().unwrap_or("");
    if !current_is_crash
        || !SUBMISSION_TIMEOUT_MESSAGES
            .iter()
            .any(|fragment| message.contains(fragment))
    {
        return false;
    }
    let claimed = run
        .states
        .iter()
        .filter(|s| s.state_type == StateType::Pending && s.name.as_deref() == Some("Pending"))
        .filter(|s| s.timestamp < crash.timestamp)
        .filter_map(|s| s.timestamp)
        .next_back();
    let attempts = impairments
        .failed_attempts
        .get(&run.record.id)
        .copied()
        .unwrap_or(0);
    match (claimed, crash.timestamp) {
        (Some(claimed), Some(crashed)) => {
            attempts >= MIN_FAILED_ATTEMPTS
                && impairments.coverage(claimed, crashed) >= IMPAIRED_SHARE
        }
        _ => false,
    }
}

/// (b) The run ends as its kind expects, or is legitimately still scheduled.
fn no_run_lost(run: &RunFacts, now: DateTime<Utc>) -> Option<Violation> {
    let expected = expected(&run.record);
    let record = &run.record;
    let Some(current) = run.current.as_ref() else {
        return (expected != Expected::Deleted).then(|| {
            violation(
                Invariant::NoRunLost,
                record,
                format!("the run no longer exists (expected {expected:?})"),
            )
        });
    };
    let state = current.state.as_ref()?;
    if !state.state_type.is_final() {
        return lost_while_unsettled(run, current, state, now);
    }
    let ok = match &expected {
        Expected::Completed => state.state_type == StateType::Completed,
        Expected::Failed => state.state_type == StateType::Failed,
        Expected::Cancelled => {
            state.state_type == StateType::Cancelled || finished_while_cancelling(run, state)
        }
        Expected::Deleted => false,
        Expected::Crashed(keyword) => {
            state.state_type == StateType::Crashed
                && state.message.as_deref().unwrap_or("").contains(keyword)
        }
    };
    (!ok).then(|| {
        let evidence = format!(
            "expected {expected:?}, ended {}; history: {}",
            describe_state(state),
            history(run)
        );
        violation(Invariant::NoRunLost, record, evidence)
    })
}

fn lost_while_unsettled(
    run: &RunFacts,
    current: &FlowRun,
    state: &State,
    now: DateTime<Utc>,
) -> Option<Violation> {
    let future =
        state.state_type == StateType::Scheduled && due_at(current).is_some_and(|due| due > now);
    if future {
        return None;
    }
    let waiting = if in_process_retry(current) {
        " (an in-process retry, which only its own pod could carry on)"
    } else {
        ""
    };
    let evidence = format!(
        "still {}{waiting} after the recovery window (expected {:?}); history: {}",
        describe_state(state),
        expected(&run.record),
        history(run)
    );
    Some(violation(Invariant::NoRunLost, &run.record, evidence))
}

/// (c) A Pending or Running run has a Job that exists, is released and
/// unfinished, or a live pod.
fn no_pending_or_running_without_job(
    run: &RunFacts,
    jobs: &[&JobRecord],
    recorder: &Recorder,
) -> Option<Violation> {
    let state = run.current.as_ref()?.state.as_ref()?;
    if !matches!(state.state_type, StateType::Pending | StateType::Running) {
        return None;
    }
    let live_job = jobs.iter().any(|job| job.alive() && !job.suspended);
    let live_pod = recorder
        .pods_of(run.record.id)
        .iter()
        .any(|pod| pod.alive());
    (!live_job && !live_pod).then(|| {
        let known = jobs.iter().map(|job| describe_job(job)).collect::<Vec<_>>();
        let evidence = format!("{}; Jobs: [{}]", describe_state(state), known.join("; "));
        violation(
            Invariant::NoPendingOrRunningWithoutJob,
            &run.record,
            evidence,
        )
    })
}

/// (d) A final (or deleted) run has no unfinished Job and no live pod.
fn no_live_job_for_final_run(
    run: &RunFacts,
    jobs: &[&JobRecord],
    recorder: &Recorder,
) -> Option<Violation> {
    let settled = match run.current.as_ref() {
        None => "deleted".to_owned(),
        Some(current) => {
            let state = current.state.as_ref()?;
            if !state.state_type.is_final() {
                return None;
            }
            describe_state(state)
        }
    };
    let live_jobs: Vec<String> = jobs
        .iter()
        .filter(|job| job.alive())
        .map(|job| describe_job(job))
        .collect();
    let live_pods: Vec<String> = recorder
        .pods_of(run.record.id)
        .iter()
        .filter(|pod| pod.alive())
        .map(|pod| format!("pod {} ({})", pod.name, pod.phase))
        .collect();
    if live_jobs.is_empty() && live_pods.is_empty() {
        return None;
    }
    let evidence = format!(
        "run {settled} but {} {}",
        live_jobs.join("; "),
        live_pods.join("; ")
    );
    Some(violation(
        Invariant::NoLiveJobForFinalRun,
        &run.record,
        evidence,
    ))
}

/// (e) Once Cancelled, no other state.
fn nothing_after_cancelled(run: &RunFacts, recorder: &Recorder) -> Option<Violation> {
    let position = run
        .states
        .iter()
        .position(|s| s.state_type == StateType::Cancelled)?;
    let cancelled_at = run.states[position].timestamp?;
    let after: Vec<String> = run.states[position + 1..]
        .iter()
        .filter(|state| state.state_type != StateType::Cancelled)
        .map(describe_state)
        .collect();
    if after.is_empty() {
        return None;
    }
    let late_pods: Vec<String> = recorder
        .pods_of(run.record.id)
        .iter()
        .filter(|pod| pod.started)
        .map(|pod| {
            format!(
                "{} (seen {})",
                pod.name,
                pod.first_seen.format("%H:%M:%S%.3f")
            )
        })
        .collect();
    let evidence = format!(
        "Cancelled at {} then {}; pods that ran: [{}]; history: {}",
        cancelled_at.format("%H:%M:%S%.3f"),
        after.join(", "),
        late_pods.join(", "),
        history(run)
    );
    Some(violation(
        Invariant::NothingAfterCancelled,
        &run.record,
        evidence,
    ))
}

/// (f) At most one Crashed; none attributed to a Job that succeeded; a
/// failed Job whose flow never reported a final state got one.
fn one_crash_per_failed_job(run: &RunFacts, jobs: &[&JobRecord]) -> Vec<Violation> {
    if run.current.is_none() {
        return Vec::new();
    }
    let crashes: Vec<&State> = run
        .states
        .iter()
        .filter(|s| s.state_type == StateType::Crashed)
        .collect();
    let mut found = Vec::new();
    if crashes.len() > 1 {
        let listed = crashes
            .iter()
            .map(|s| describe_state(s))
            .collect::<Vec<_>>()
            .join("; ");
        found.push(format!(
            "{} Crashed states: {listed}; history: {}",
            crashes.len(),
            history(run)
        ));
    }
    found.extend(crashes_for_succeeded_jobs(run, &crashes, jobs));
    if crashes.is_empty() {
        found.extend(failed_jobs_never_crashed(run, jobs));
    }
    found
        .into_iter()
        .map(|evidence| violation(Invariant::OneCrashPerFailedJob, &run.record, evidence))
        .collect()
}

fn crashes_for_succeeded_jobs(
    run: &RunFacts,
    crashes: &[&State],
    jobs: &[&JobRecord],
) -> Vec<String> {
    crashes
        .iter()
        .filter_map(|crash| {
            let job = crashed_job(crash, jobs)
                .filter(|job| matches!(job.ended, Some((JobEnd::Complete, _))))?;
            Some(format!(
                "Crashed for a Job that succeeded: {}; {}; history: {}",
                describe_state(crash),
                describe_job(job),
                history(run)
            ))
        })
        .collect()
}

fn failed_jobs_never_crashed(run: &RunFacts, jobs: &[&JobRecord]) -> Vec<String> {
    jobs.iter()
        .filter(|job| matches!(job.ended, Some((JobEnd::Failed, _))))
        .filter(|job| !reported_final_after(run, job.first_seen))
        .map(|job| {
            format!(
                "{} failed and the run was never Crashed; history: {}",
                describe_job(job),
                history(run)
            )
        })
        .collect()
}

/// The Job a Crashed message names, else the newest Job before the crash.
fn crashed_job<'a>(crash: &State, jobs: &[&'a JobRecord]) -> Option<&'a JobRecord> {
    let message = crash.message.as_deref().unwrap_or("");
    let named = jobs
        .iter()
        .find(|job| message.contains(&format!("{}/{}", job.namespace, job.name)));
    named.copied().or_else(|| {
        let at = crash.timestamp?;
        jobs.iter().rev().find(|job| job.first_seen <= at).copied()
    })
}

/// The flow (or the user) settled the run after this Job appeared.
fn reported_final_after(run: &RunFacts, since: DateTime<Utc>) -> bool {
    run.states.iter().any(|state| {
        matches!(
            state.state_type,
            StateType::Failed | StateType::Completed | StateType::Cancelled | StateType::Cancelling
        ) && state.timestamp.is_some_and(|at| at >= since)
    })
}

/// (g) Identical forwarded-Event lines (same text, same Event time) beyond
/// the number of distinct Events that could have produced them.
fn no_event_forwarded_twice(run: &RunFacts, recorder: &Recorder) -> Vec<Violation> {
    let mut lines: BTreeMap<(String, DateTime<Utc>), usize> = BTreeMap::new();
    for log in run.logs.iter().filter(|log| log.name == EVENT_LOGGER) {
        *lines
            .entry((log.message.clone(), log.timestamp))
            .or_default() += 1;
    }
    lines
        .into_iter()
        .filter(|((message, _), count)| *count > distinct_events(recorder, message).max(1))
        .map(|((message, at), count)| {
            let evidence = format!("{count}× at {}: {message:?}", at.format("%H:%M:%S%.3f"));
            violation(Invariant::NoEventForwardedTwice, &run.record, evidence)
        })
        .collect()
}

/// Recorded Events with the reason and object a forwarded line names
/// (`Kubernetes event <reason> on <pod|Job> <name>…`).
fn distinct_events(recorder: &Recorder, message: &str) -> usize {
    let mut words = message.split_whitespace().skip(2);
    let (Some(reason), Some(_on), Some(_kind), Some(object)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return 1;
    };
    let object = object.trim_end_matches([',', ':']);
    recorder
        .events
        .values()
        .filter(|event| event.reason == reason && event.object == object)
        .count()
}

/// (h) Peak resident memory of each service under the limit.
fn rss_bounded(rss: &BTreeMap<String, RssPeak>, limit_kib: u64) -> Vec<Violation> {
    rss.iter()
        .filter(|(_, peak)| peak.peak_kib > limit_kib)
        .map(|(service, peak)| Violation {
            invariant: Invariant::RssBounded,
            subject: service.clone(),
            evidence: format!(
                "peak RSS {:.1} MiB at {:.0} s > limit {:.0} MiB",
                peak.peak_kib as f64 / 1024.0,
                peak.at,
                limit_kib as f64 / 1024.0
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::EventRecord;
    use crate::workload::ActionRecord;
    use serde_json::json;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn state(kind: &str, name: &str, seconds: i64, message: &str) -> State {
        serde_json::from_value(json!({
            "id": Uuid::new_v4(), "type": kind, "name": name,
            "timestamp": at(seconds), "message": message,
        }))
        .unwrap()
    }

    fn run(kind: RunKind, states: Vec<State>) -> RunFacts {
        let id = Uuid::from_u128(7);
        let current = serde_json::from_value(json!({
            "id": id, "flow_id": Uuid::nil(), "state": states.last().unwrap(),
        }))
        .unwrap();
        RunFacts {
            record: RunRecord {
                id,
                name: "c1".into(),
                kind,
                created_at: at(0),
                action: None,
            },
            current: Some(current),
            states,
            logs: Vec::new(),
            read_error: None,
        }
    }

    fn job(name: &str, claim: &str, seen: i64, ended: Option<JobEnd>) -> JobRecord {
        JobRecord {
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            name: name.into(),
            run_id: Some(Uuid::from_u128(7)),
            claim: Some(claim.into()),
            first_seen: at(seen),
            created_suspended: true,
            suspended: false,
            ever_released: true,
            had_pod: true,
            ended: ended.map(|end| (end, at(seen + 5))),
            deleted_at: None,
        }
    }

    fn recorder(jobs: Vec<JobRecord>) -> Recorder {
        Recorder {
            jobs: jobs.into_iter().map(|job| (job.uid.clone(), job)).collect(),
            ..Recorder::default()
        }
    }

    fn violations(facts: &[RunFacts], recorder: &Recorder) -> Vec<Invariant> {
        let now = at(1000);
        check(
            facts,
            recorder,
            &BTreeMap::new(),
            1,
            &Impairments::default(),
            now,
        )
        .into_iter()
        .map(|v| v.invariant)
        .collect()
    }

    #[test]
    fn a_clean_completed_run_breaks_nothing() {
        let facts = [run(
            RunKind::Complete,
            vec![
                state("SCHEDULED", "Scheduled", 0, ""),
                state("PENDING", "Pending", 1, ""),
                state("RUNNING", "Running", 2, ""),
                state("COMPLETED", "Completed", 9, ""),
            ],
        )];
        let jobs = recorder(vec![job("a", "7:s1", 1, Some(JobEnd::Complete))]);
        assert_eq!(violations(&facts, &jobs), []);
    }

    #[test]
    fn two_jobs_for_one_claim_and_running_after_cancelled_are_caught() {
        let facts = [run(
            RunKind::CancelRunning,
            vec![
                state("RUNNING", "Running", 2, ""),
                state("CANCELLED", "Cancelled", 5, ""),
                state("RUNNING", "Running", 6, ""),
                state("COMPLETED", "Completed", 9, ""),
            ],
        )];
        let jobs = recorder(vec![
            job("a", "7:s1", 1, Some(JobEnd::Complete)),
            job("b", "7:s1", 4, Some(JobEnd::Complete)),
        ]);
        let found = violations(&facts, &jobs);
        assert!(
            found.contains(&Invariant::OneJobPerScheduledState),
            "{found:?}"
        );
        assert!(
            found.contains(&Invariant::NothingAfterCancelled),
            "{found:?}"
        );
    }

    #[test]
    fn a_submission_timeout_is_accepted_only_when_faults_covered_most_of_it() {
        let facts = [run(
            RunKind::Complete,
            vec![
                state("SCHEDULED", "Scheduled", 0, ""),
                state("PENDING", "Pending", 100, ""),
                state(
                    "CRASHED",
                    "Crashed",
                    820,
                    "Kubernetes Job default/a was created suspended and no dispatcher released it within 720 s.",
                ),
            ],
        )];
        let recorder = recorder(Vec::new());
        let check_with = |windows: Vec<(i64, i64)>, attempts: usize| {
            let impairments = Impairments {
                windows: windows.into_iter().map(|(a, b)| (at(a), at(b))).collect(),
                failed_attempts: [(Uuid::from_u128(7), attempts)].into(),
            };
            check(
                &facts,
                &recorder,
                &BTreeMap::new(),
                1,
                &impairments,
                at(1000),
            )
            .into_iter()
            .map(|v| v.invariant)
            .collect::<Vec<_>>()
        };
        // Faults for 300 of the 720 s (two overlapping windows count once).
        assert_eq!(
            check_with(vec![(100, 300), (200, 400)], 5),
            [Invariant::NoRunLost]
        );
        let most = vec![(100, 300), (200, 400), (500, 700)];
        assert_eq!(check_with(most.clone(), 5), []);
        // Faults were on, but the dispatchers did not keep failing on this run.
        assert_eq!(check_with(most, 1), [Invariant::NoRunLost]);
    }

    #[test]
    fn a_second_job_withdrawn_before_release_is_not_a_second_job_but_a_released_one_is() {
        let facts = [run(
            RunKind::BadImage,
            vec![
                state("PENDING", "Pending", 1, ""),
                state("CRASHED", "Crashed", 9, "ImagePullBackOff"),
            ],
        )];
        let mut withdrawn = job("b", "7:s1", 12, None);
        withdrawn.ever_released = false;
        withdrawn.had_pod = false;
        withdrawn.suspended = true;
        withdrawn.deleted_at = Some(at(13));
        let first = job("a", "7:s1", 1, Some(JobEnd::Failed));
        let found = violations(&facts, &recorder(vec![first.clone(), withdrawn.clone()]));
        assert!(
            !found.contains(&Invariant::OneJobPerScheduledState),
            "{found:?}"
        );
        // Released once, even if never seen with a pod: it could have run.
        withdrawn.ever_released = true;
        let found = violations(&facts, &recorder(vec![first, withdrawn]));
        assert!(
            found.contains(&Invariant::OneJobPerScheduledState),
            "{found:?}"
        );
    }

    #[test]
    fn a_crash_naming_a_job_that_succeeded_is_caught_and_one_for_a_failed_job_is_not() {
        let message =
            "Kubernetes Job default/a completed, but the flow run did not report a final state.";
        let facts = [run(
            RunKind::Complete,
            vec![
                state("PENDING", "Pending", 1, ""),
                state("CRASHED", "Crashed", 20, message),
            ],
        )];
        let jobs = recorder(vec![
            job("a", "7:s1", 1, Some(JobEnd::Complete)),
            job("b", "7:s2", 15, None),
        ]);
        let found = violations(&facts, &jobs);
        assert!(
            found.contains(&Invariant::OneCrashPerFailedJob),
            "{found:?}"
        );
        assert!(found.contains(&Invariant::NoRunLost), "{found:?}");

        let message = "Kubernetes Job default/a failed: BackoffLimitExceeded. Pod a-x: exit code 3";
        let facts = [run(
            RunKind::CrashExit,
            vec![
                state("PENDING", "Pending", 1, ""),
                state("CRASHED", "Crashed", 20, message),
            ],
        )];
        let jobs = recorder(vec![job("a", "7:s1", 1, Some(JobEnd::Failed))]);
        assert_eq!(violations(&facts, &jobs), []);
    }

    #[test]
    fn a_failed_job_needs_a_crash_unless_the_flow_reported_failed() {
        let failed_by_flow = [run(
            RunKind::Fail,
            vec![
                state("RUNNING", "Running", 2, ""),
                state("FAILED", "Failed", 8, ""),
            ],
        )];
        let jobs = recorder(vec![job("a", "7:s1", 1, Some(JobEnd::Failed))]);
        assert_eq!(violations(&failed_by_flow, &jobs), []);
        let never_crashed = [run(
            RunKind::CrashExit,
            vec![state("PENDING", "Pending", 1, "")],
        )];
        let found = violations(&never_crashed, &jobs);
        assert!(
            found.contains(&Invariant::OneCrashPerFailedJob),
            "{found:?}"
        );
        assert!(found.contains(&Invariant::NoRunLost), "{found:?}");
        assert!(
            found.contains(&Invariant::NoPendingOrRunningWithoutJob),
            "{found:?}"
        );
    }

    /// The user's cancel of a Running run, accepted (Cancelling) at 3 s.
    fn accepted_cancel() -> ActionRecord {
        ActionRecord {
            at: at(3),
            what: "cancel",
            seen_before: "Running".into(),
            outcome: ActionOutcome::Answered {
                status: "Accept".into(),
                state: StateType::Cancelling,
                state_name: "Cancelling".into(),
            },
        }
    }

    #[test]
    fn a_flow_that_ended_on_its_own_while_being_cancelled_keeps_its_end() {
        let cancel = accepted_cancel();
        let completed = state("COMPLETED", "Completed", 9, "");
        // Stamped in the pod before the reporter's Cancelled, landed after it.
        let mut raced = run(
            RunKind::CancelRunning,
            vec![
                state("RUNNING", "Running", 2, ""),
                state("CANCELLING", "Cancelling", 3, ""),
                completed.clone(),
                state("CANCELLED", "Cancelled", 10, ""),
            ],
        );
        raced.current.as_mut().unwrap().state = Some(completed);
        raced.record.action = Some(cancel.clone());
        assert_eq!(violations(&[raced], &recorder(vec![])), []);
        // A Completed stamped after the Cancelled is something after Cancelled.
        let late = state("COMPLETED", "Completed", 12, "");
        let mut after = run(
            RunKind::CancelRunning,
            vec![
                state("RUNNING", "Running", 2, ""),
                state("CANCELLING", "Cancelling", 3, ""),
                state("CANCELLED", "Cancelled", 10, ""),
                late,
            ],
        );
        after.record.action = Some(cancel);
        let found = violations(&[after], &recorder(vec![]));
        assert!(found.contains(&Invariant::NoRunLost), "{found:?}");
    }

    #[test]
    fn an_accepted_cancellation_expects_cancelled_and_a_deleted_run_no_live_job() {
        let mut cancelled = run(
            RunKind::CancelRunning,
            vec![
                state("RUNNING", "Running", 2, ""),
                state("COMPLETED", "Completed", 9, ""),
            ],
        );
        cancelled.record.action = Some(accepted_cancel());
        assert_eq!(expected(&cancelled.record), Expected::Cancelled);
        let mut deleted = run(
            RunKind::Delete,
            vec![state("SCHEDULED", "Scheduled", 0, "")],
        );
        deleted.current = None;
        deleted.record.action = Some(ActionRecord {
            at: at(3),
            what: "delete",
            seen_before: "Pending".into(),
            outcome: ActionOutcome::Deleted,
        });
        let mut suspended = job("a", "7:s1", 1, None);
        suspended.suspended = true;
        assert_eq!(
            violations(&[deleted], &recorder(vec![suspended])),
            [Invariant::NoLiveJobForFinalRun]
        );
        assert_eq!(
            violations(&[cancelled], &recorder(vec![])),
            [Invariant::NoRunLost]
        );
    }

    #[test]
    fn identical_event_lines_count_once_per_recorded_event() {
        let line = |seconds| Log {
            id: Uuid::new_v4(),
            name: EVENT_LOGGER.into(),
            level: 20,
            message: "Kubernetes event Pulled on pod a-x, container \"prefect-job\": pulled".into(),
            timestamp: at(seconds),
            flow_run_id: Some(Uuid::from_u128(7)),
        };
        let mut facts = run(
            RunKind::Complete,
            vec![state("COMPLETED", "Completed", 9, "")],
        );
        facts.logs = vec![line(3), line(3), line(4)];
        let mut recorded = recorder(vec![]);
        assert_eq!(
            violations(std::slice::from_ref(&facts), &recorded),
            [Invariant::NoEventForwardedTwice]
        );
        for uid in ["e1", "e2"] {
            let event = EventRecord {
                uid: uid.into(),
                kind: "Pod".into(),
                object: "a-x".into(),
                reason: "Pulled".into(),
                count: 1,
            };
            recorded.events.insert(uid.into(), event);
        }
        assert_eq!(violations(&[facts], &recorded), []);
    }
}
