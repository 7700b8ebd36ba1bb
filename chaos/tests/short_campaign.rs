//! The short fault campaign of issue 9, as the test command runs it: the
//! real services as processes, a fixed seed, every nemesis kind at least
//! once, at most five minutes of campaign. Passes when the campaign finds no
//! violation (exit 0) and every fault kind was injected.
//!
//! Uses PostgreSQL at 127.0.0.1:5432 when it answers, else SQLite (the
//! report says which). The services' binaries are built here, with the
//! profile of this test binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Every fault kind the campaign knows, by its report name.
const FAULT_KINDS: [&str; 19] = [
    "sigkill-poller",
    "sigkill-dispatcher",
    "sigkill-reporter",
    "sigstop-service",
    "sigkill-nats",
    "prefect-latency",
    "prefect-500",
    "prefect-503",
    "prefect-reset",
    "prefect-drop-after-commit",
    "prefect-blackhole",
    "kube-job-create-latency",
    "kube-429",
    "kube-500",
    "kube-503",
    "kube-watch-cut",
    "kube-compaction-410",
    "kube-blackhole",
    "kube-connection-reset",
];

fn build_services(bin_dir: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--bins",
            "-p",
            "poller",
            "-p",
            "dispatcher",
            "-p",
            "reporter",
            "-p",
            "kube-emulator",
        ])
        .current_dir(workspace);
    if bin_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(
        build.status().expect("run cargo build").success(),
        "the services build"
    );
}

#[test]
fn a_short_campaign_finds_no_violation_and_injects_every_fault_kind() {
    let campaign = Path::new(env!("CARGO_BIN_EXE_campaign"));
    let bin_dir = campaign.parent().unwrap();
    build_services(bin_dir);
    let started = Instant::now();
    let output = Command::new(campaign)
        .args([
            "--seed",
            "9",
            "--database",
            "auto",
            "--duration-seconds",
            "100",
        ])
        .args([
            "--backlog",
            "15",
            "--arrival-rate",
            "0.3",
            "--recovery-seconds",
            "75",
        ])
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("run the campaign");
    let elapsed = started.elapsed();
    let report = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    println!("{report}");
    assert!(
        elapsed <= Duration::from_secs(300),
        "the campaign took {elapsed:?}"
    );
    let faults = report
        .lines()
        .find_map(|line| line.strip_prefix("faults: "))
        .unwrap_or_else(|| panic!("no report (exit {:?}):\n{log}", output.status.code()));
    for kind in FAULT_KINDS {
        let count: u32 = faults
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(kind)?.strip_prefix('='))
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        assert!(count > 0, "{kind} was never injected: {faults}");
    }
    assert_eq!(
        output.status.code(),
        Some(0),
        "the campaign found violations (1) or failed (2); report above"
    );
}
