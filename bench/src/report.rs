//! Figures of one agent draining one backlog, and the Markdown tables that
//! set them side by side, as ratios to the bare claim of the same backlog.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::procs::Usage;
use crate::server_log::Calls;

/// The name of the bare-claim row, the ratios' reference.
pub const SERVER_LIMIT: &str = "server-limit";
/// The bare claim followed by the pid update (what any agent must write).
pub const CLAIM_AND_PID: &str = "claim+pid";

/// One agent draining one backlog.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub agent: String,
    pub runs: usize,
    /// From the agent's start to the last Job (the last claim for the bare claim).
    pub elapsed: Duration,
    /// When each Job appeared, from the agent's start (none for the bare claim).
    pub job_times: Vec<Duration>,
    /// Jobs created (more than `runs`: duplicates); claims accepted for the bare claim.
    pub done: usize,
    /// The agent's processes (none for the bare claim, which runs in the benchmark).
    pub processes: Vec<(String, Usage)>,
    pub server_cpu: Duration,
    pub calls: Calls,
}

impl Measurement {
    pub fn runs_per_second(&self) -> f64 {
        self.runs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn per_run(&self, value: f64) -> f64 {
        value / self.runs.max(1) as f64
    }

    fn server_cpu_ms_per_run(&self) -> f64 {
        self.per_run(self.server_cpu.as_secs_f64() * 1000.0)
    }

    fn agent_cpu(&self) -> Duration {
        self.processes.iter().map(|(_, usage)| usage.cpu).sum()
    }

    /// `first / median / last` Job, in seconds.
    fn job_times(&self) -> String {
        let times = &self.job_times;
        match (times.first(), times.get(times.len() / 2), times.last()) {
            (Some(first), Some(median), Some(last)) => format!(
                "{:.1} / {:.1} / {:.1}",
                first.as_secs_f64(),
                median.as_secs_f64(),
                last.as_secs_f64()
            ),
            _ => "—".into(),
        }
    }

    /// Peak RSS per kind of process: `dispatcher 31.0–33.2, poller 13.1, …`.
    fn peak_rss(&self) -> String {
        let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (name, usage) in &self.processes {
            let kind = name
                .rsplit_once('-')
                .filter(|(_, n)| n.parse::<u32>().is_ok());
            let kind = kind.map_or(name.as_str(), |(kind, _)| kind);
            by_kind.entry(kind).or_default().push(usage.peak_rss_mib());
        }
        let parts: Vec<String> = by_kind
            .into_iter()
            .map(|(kind, mibs)| {
                let low = mibs.iter().copied().fold(f64::MAX, f64::min);
                let high = mibs.iter().copied().fold(0.0, f64::max);
                if mibs.len() > 1 {
                    format!("{kind} ×{} {low:.1}–{high:.1}", mibs.len())
                } else {
                    format!("{kind} {high:.1}")
                }
            })
            .collect();
        if parts.is_empty() {
            "—".into()
        } else {
            parts.join(", ")
        }
    }
}

/// The main table, one row per measurement, with ratios to the bare claim of
/// the same backlog size.
pub fn table(measurements: &[Measurement]) -> String {
    let mut out = String::from(
        "| agent | runs | runs/s | × server limit | first / median / last Job (s) | Jobs or claims | Prefect calls per run | server CPU per run (ms) | × bare claim's | agent CPU (s) | peak RSS (MiB) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for m in measurements {
        let limit = measurements
            .iter()
            .find(|l| l.agent == SERVER_LIMIT && l.runs == m.runs);
        let ratio = |value: f64, of: fn(&Measurement) -> f64| {
            limit.map_or("—".into(), |l| format!("{:.2}", value / of(l).max(1e-9)))
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {:.2} | {:.1} | {} | {:.1} | {} |\n",
            m.agent,
            m.runs,
            m.runs_per_second(),
            ratio(m.runs_per_second(), Measurement::runs_per_second),
            m.job_times(),
            m.done,
            m.per_run(m.calls.total() as f64),
            m.server_cpu_ms_per_run(),
            ratio(
                m.server_cpu_ms_per_run(),
                Measurement::server_cpu_ms_per_run
            ),
            m.agent_cpu().as_secs_f64(),
            m.peak_rss(),
        ));
    }
    out
}

/// Prefect calls per run by endpoint, one column per measurement.
pub fn calls_table(measurements: &[Measurement]) -> String {
    let endpoints: std::collections::BTreeSet<&String> = measurements
        .iter()
        .flat_map(|m| m.calls.by_endpoint.keys())
        .collect();
    let mut out = String::from("| endpoint |");
    let mut rule = String::from("| --- |");
    for m in measurements {
        out.push_str(&format!(" {} ({}) |", m.agent, m.runs));
        rule.push_str(" ---: |");
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for endpoint in endpoints {
        out.push_str(&format!("| `{endpoint}` |"));
        for m in measurements {
            let count = m.calls.by_endpoint.get(endpoint).copied().unwrap_or(0);
            out.push_str(&format!(" {:.2} |", m.per_run(count as f64)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(agent: &str, seconds: u64, server_ms: u64) -> Measurement {
        Measurement {
            agent: agent.into(),
            runs: 100,
            elapsed: Duration::from_secs(seconds),
            job_times: vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(3),
            ],
            done: 100,
            processes: vec![
                (
                    "dispatcher-1".into(),
                    Usage {
                        cpu: Duration::from_secs(1),
                        peak_rss: 30 << 20,
                    },
                ),
                (
                    "dispatcher-2".into(),
                    Usage {
                        cpu: Duration::from_secs(1),
                        peak_rss: 32 << 20,
                    },
                ),
                (
                    "poller".into(),
                    Usage {
                        cpu: Duration::from_secs(1),
                        peak_rss: 13 << 20,
                    },
                ),
            ],
            server_cpu: Duration::from_millis(server_ms),
            calls: Calls::default(),
        }
    }

    #[test]
    fn rows_carry_ratios_to_the_bare_claim_of_the_same_size() {
        let table = table(&[
            measurement(SERVER_LIMIT, 4, 1000),
            measurement("prefect-k8s", 5, 1500),
        ]);
        let row = table
            .lines()
            .find(|l| l.starts_with("| prefect-k8s"))
            .unwrap();
        assert!(row.contains("| 20.0 | 0.80 |"), "{row}");
        assert!(row.contains("| 15.0 | 1.50 |"), "{row}");
        assert!(
            row.contains("dispatcher ×2 30.0–32.0, poller 13.0"),
            "{row}"
        );
        assert!(row.contains("1.0 / 2.0 / 3.0"), "{row}");
    }
}
