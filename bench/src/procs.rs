//! CPU time and peak resident memory of processes, read from `/proc` (Linux).

use std::time::Duration;

/// What one process has used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User and system CPU time.
    pub cpu: Duration,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub peak_rss: u64,
}

impl Usage {
    /// Peak RSS in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss as f64 / (1024.0 * 1024.0)
    }
}

/// `pid`'s usage; `None` once it is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Usage {
        cpu: parse_stat(&stat)?.cpu,
        peak_rss: peak_rss(&status)?,
    })
}

/// CPU time of every live process in process group `pgid` (a server and the
/// workers it spawned).
pub fn group_cpu(pgid: u32) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .filter(|stat| stat.pgrp == pgid)
        .map(|stat| stat.cpu)
        .sum()
}

struct Stat {
    pgrp: u32,
    cpu: Duration,
}

/// `/proc/<pid>/stat`: fields after the command name (which may hold spaces
/// and parentheses, so the split is at the last `)`).
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state(3) ppid(4) pgrp(5) ... utime(14) stime(15): index = field - 3.
    let pgrp = fields.get(2)?.parse().ok()?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Stat {
        pgrp,
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64),
    })
}

/// `USER_HZ`, the unit of `/proc` CPU times: 100 on every Linux ABI.
fn clock_ticks() -> u64 {
    100
}

fn peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.pgrp, 42);
        assert_eq!(
            parsed.cpu,
            Duration::from_secs_f64(300.0 / clock_ticks() as f64)
        );
    }

    #[test]
    fn this_process_has_a_peak_rss_and_is_in_its_group() {
        let me = usage(std::process::id()).unwrap();
        assert!(me.peak_rss > 1024 * 1024);
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        // Spend a little CPU so the group's time is not zero.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(group_cpu(pgid) > Duration::ZERO);
    }
}
