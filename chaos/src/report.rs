//! The campaign's plain-text report: runs by kind (with how they ended),
//! faults by kind (with their longest recovery), violations per invariant,
//! the longest recovery, each service's peak RSS, then every violation with
//! its evidence, services that died by themselves and harness errors. Also
//! one machine-readable `faults:` line and the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::checker::{Invariant, RunFacts, Violation};
use crate::monitor::RssPeak;
use crate::nemesis::{EpisodeLog, FaultKind};
use crate::workload::RunKind;

/// One fault episode with its measured recovery.
#[derive(Clone, Debug)]
pub struct FaultOutcome {
    pub log: EpisodeLog,
    /// `None`: not recovered before the checker ran.
    pub recovery: Option<Duration>,
}

/// Everything the report shows.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub database: String,
    pub elapsed: Duration,
    pub planned_runs: usize,
    pub facts: Vec<RunFacts>,
    pub faults: Vec<FaultOutcome>,
    /// From the last heal (or the last arrival) to a quiet system.
    pub final_recovery: Option<Duration>,
    pub violations: Vec<Violation>,
    pub rss: BTreeMap<String, RssPeak>,
    pub rss_limit_mib: u64,
    pub unexpected_exits: Vec<(Duration, String)>,
    pub harness_errors: Vec<String>,
    pub notes: Vec<String>,
    pub work_dir: Option<PathBuf>,
}

impl Summary {
    /// 2 on harness errors, 1 on violations, else 0.
    pub fn exit_code(&self) -> i32 {
        if !self.harness_errors.is_empty() {
            2
        } else if !self.violations.is_empty() {
            1
        } else {
            0
        }
    }
}

/// Most violations printed in full; the rest are counted.
const MAX_LISTED: usize = 300;

pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fault campaign, seed {}: {:.0} s, {} runs ({} planned), {} faults; Prefect on {}",
        summary.seed,
        summary.elapsed.as_secs_f64(),
        summary.facts.len(),
        summary.planned_runs,
        summary.faults.len(),
        summary.database
    );
    runs_table(&mut out, summary);
    faults_table(&mut out, summary);
    invariants_table(&mut out, summary);
    longest_recovery(&mut out, summary);
    rss_table(&mut out, summary);
    details(&mut out, summary);
    let _ = writeln!(out, "\n{}", faults_line(summary));
    let _ = writeln!(out, "violations: {}", summary.violations.len());
    let _ = writeln!(out, "exit: {}", summary.exit_code());
    out
}

fn runs_table(out: &mut String, summary: &Summary) {
    let _ = writeln!(
        out,
        "\nRuns by kind\n  {:<18} {:>5}  {:>10}  ended as",
        "kind", "runs", "violating"
    );
    for kind in RunKind::ALL {
        let runs: Vec<&RunFacts> = summary
            .facts
            .iter()
            .filter(|f| f.record.kind == kind)
            .collect();
        let violating = runs
            .iter()
            .filter(|run| {
                summary
                    .violations
                    .iter()
                    .any(|v| v.subject.starts_with(&run.record.id.to_string()))
            })
            .count();
        let _ = writeln!(
            out,
            "  {:<18} {:>5}  {:>10}  {}",
            kind.name(),
            runs.len(),
            violating,
            ended_as(&runs)
        );
    }
}

fn ended_as(runs: &[&RunFacts]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for run in runs {
        let state = match &run.current {
            None => "deleted".to_owned(),
            Some(current) => current
                .state
                .as_ref()
                .map_or("-".into(), |s| s.display_name().to_owned()),
        };
        *counts.entry(state).or_default() += 1;
    }
    counts
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn faults_table(out: &mut String, summary: &Summary) {
    let _ = writeln!(
        out,
        "\nFaults by kind\n  {:<26} {:>5}  {:>16}  {:>13}",
        "kind", "count", "longest recovery", "not recovered"
    );
    for kind in FaultKind::ALL {
        let mine: Vec<&FaultOutcome> = summary
            .faults
            .iter()
            .filter(|f| f.log.kind == kind)
            .collect();
        let longest = mine.iter().filter_map(|f| f.recovery).max();
        let not_recovered = mine.iter().filter(|f| f.recovery.is_none()).count();
        let _ = writeln!(
            out,
            "  {:<26} {:>5}  {:>16}  {:>13}",
            kind.name(),
            mine.len(),
            longest.map_or("-".into(), seconds),
            not_recovered
        );
    }
}

fn invariants_table(out: &mut String, summary: &Summary) {
    let _ = writeln!(out, "\nViolations per invariant");
    for invariant in Invariant::ALL {
        let count = summary
            .violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .count();
        let _ = writeln!(out, "  {:<52} {:>5}", invariant.label(), count);
    }
}

fn longest_recovery(out: &mut String, summary: &Summary) {
    let longest = summary
        .faults
        .iter()
        .filter_map(|fault| fault.recovery.map(|r| (r, fault)))
        .max_by_key(|(recovery, _)| *recovery);
    let _ = writeln!(out);
    match longest {
        Some((recovery, fault)) => {
            let _ = writeln!(
                out,
                "Longest recovery: {} after {} ({}) healed at {:.0} s",
                seconds(recovery),
                fault.log.kind.name(),
                fault.log.detail,
                fault.log.healed.as_secs_f64()
            );
        }
        None => {
            let _ = writeln!(out, "Longest recovery: -");
        }
    }
    let not_recovered = summary
        .faults
        .iter()
        .filter(|f| f.recovery.is_none())
        .count();
    let _ = writeln!(
        out,
        "Faults not recovered from before the check: {not_recovered}"
    );
    let _ = writeln!(
        out,
        "Final recovery (last heal to quiet): {}",
        summary
            .final_recovery
            .map_or("not quiet within the recovery window".into(), seconds)
    );
}

fn rss_table(out: &mut String, summary: &Summary) {
    let _ = writeln!(
        out,
        "\nRSS peak per service (limit {} MiB)",
        summary.rss_limit_mib
    );
    for (service, peak) in &summary.rss {
        let _ = writeln!(
            out,
            "  {:<14} {:>8.1} MiB at {:>5.0} s ({} samples)",
            service,
            peak.peak_kib as f64 / 1024.0,
            peak.at,
            peak.samples
        );
    }
}

fn details(out: &mut String, summary: &Summary) {
    if !summary.violations.is_empty() {
        let _ = writeln!(out, "\nViolations");
        for violation in summary.violations.iter().take(MAX_LISTED) {
            let code = &violation.invariant.label()[..3];
            let _ = writeln!(
                out,
                "  {code} {}: {}",
                violation.subject, violation.evidence
            );
        }
        if summary.violations.len() > MAX_LISTED {
            let _ = writeln!(
                out,
                "  … and {} more",
                summary.violations.len() - MAX_LISTED
            );
        }
    }
    list(
        out,
        "Services that died by themselves (restarted)",
        summary
            .unexpected_exits
            .iter()
            .map(|(at, what)| format!("{:.0} s: {what}", at.as_secs_f64())),
    );
    list(
        out,
        "Harness errors",
        summary.harness_errors.iter().cloned(),
    );
    list(out, "Notes", summary.notes.iter().cloned());
    if let Some(dir) = &summary.work_dir {
        let _ = writeln!(out, "\nLogs and the plan are in {}", dir.display());
    }
}

fn list(out: &mut String, title: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}");
    for item in items {
        let _ = writeln!(out, "  {item}");
    }
}

/// `faults: sigkill-poller=1 …` for scripts and the test.
fn faults_line(summary: &Summary) -> String {
    let counts: Vec<String> = FaultKind::ALL
        .iter()
        .map(|kind| {
            format!(
                "{}={}",
                kind.name(),
                summary
                    .faults
                    .iter()
                    .filter(|f| f.log.kind == *kind)
                    .count()
            )
        })
        .collect();
    format!("faults: {}", counts.join(" "))
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
