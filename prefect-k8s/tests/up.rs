//! The README's first command, as a person at a terminal runs it: `prefect-k8s
//! up --exit-after-demo` starts nats-server, the Prefect server with its UI,
//! the emulator, the poller, two dispatchers and the reporter, runs the demo
//! flow in a process "pod" under a live status line and exits 0 once the run
//! is Completed, its log files free of colour codes. The services log in to
//! NATS as their own users, and none of their calls is refused. A part that
//! dies during the demo is reported at once with the end of its log, and
//! `up` stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `up` starts the services' binaries from beside its own: build them.
fn build_binaries() {
    let build = Command::new(env!("CARGO"))
        .args(["build", "--bins"])
        .current_dir(root())
        .status()
        .expect("run cargo build");
    assert!(build.success(), "the workspace's binaries build");
}

/// `prefect-k8s up` with these arguments, its stdout read line by line.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(state: &Path, args: &[&str]) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
            .args(["up", "--exit-after-demo", "--state-dir"])
            .arg(state)
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run prefect-k8s up");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("up| {line}");
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Up {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`; that line.
    fn wait_for_line(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} in time; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for `up` to exit (within `timeout`); its status and every line it printed.
    fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("up did not exit in time; saw:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

/// The URL's page over plain HTTP/1.1: the status line and the body.
fn http_get(url: &str) -> String {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the UI");
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

#[test]
fn up_runs_the_demo_flow_to_completed_with_the_ui_on_and_a_live_status() {
    build_binaries();
    let state = tempfile::tempdir().unwrap();
    let mut up = Up::start(state.path(), &["--demo-timeout", "240"]);
    let ui = up.wait_for_line("Prefect UI:", Duration::from_secs(240));
    let url = ui.split_whitespace().last().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{ui}");
    let page = http_get(&url);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_lowercase().contains("<html"),
        "the UI's page: {page}"
    );

    let (status, stdout) = up.finish(Duration::from_secs(300));
    assert!(status.success(), "prefect-k8s up failed\n{stdout}");
    assert!(
        stdout.contains("Demo flow run reached Completed."),
        "{stdout}"
    );
    let nats_log = std::fs::read_to_string(state.path().join("logs/nats-server.log"))
        .expect("nats-server's log");
    assert!(
        nats_log.contains("Using configuration file") && !nats_log.contains("Violation"),
        "NATS runs with the agent's users and refuses none of the services' calls:\n{nats_log}"
    );
    assert!(
        stdout.contains("status: due 0 | submitted 0 | running 0 | finished 1"),
        "the live status counts the finished run:\n{stdout}"
    );
    for service in [
        "poller",
        "dispatcher-1",
        "dispatcher-2",
        "reporter",
        "kube-emulator",
        "prefect-server",
        "nats-server",
    ] {
        assert!(
            stdout.contains(&format!("stopped {service}")),
            "{service} was stopped: {stdout}"
        );
    }
    let logs = state.path().join("logs");
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap();
        assert!(
            !text.is_empty() || path.ends_with("kube-emulator.log"),
            "{path:?} is empty"
        );
        assert!(
            !text.contains(&0x1b),
            "{} holds colour codes:\n{}",
            path.display(),
            String::from_utf8_lossy(&text)
        );
    }
}

#[test]
fn a_part_that_dies_during_the_demo_is_reported_at_once_with_its_log() {
    build_binaries();
    let state = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ui_port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let mut up = Up::start(
        state.path(),
        &["--demo-timeout", "600", "--ui-port", &ui_port],
    );
    let started = up.wait_for_line("started reporter", Duration::from_secs(240));
    let pid: i32 = started
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {started:?}"));
    up.wait_for_line("Demo flow run", Duration::from_secs(240));
    // The reporter has logged by now; kill it as the OOM killer would.
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the reporter");

    let (status, stdout) = up.finish(Duration::from_secs(120));
    assert!(!status.success(), "{stdout}");
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "reported at once, not after the demo timeout"
    );
    assert!(
        stdout.contains("reporter exited unexpectedly (signal: 9 (SIGKILL))"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  | ") && stdout.contains("reporter starting"),
        "its log's end: {stdout}"
    );
    assert!(
        stdout.contains("stopped dispatcher-1"),
        "the rest stopped: {stdout}"
    );
}
