//! The child processes of `prefect-k8s up`, each watched by a task of its own:
//! a child that exits by itself is reported at once on a channel (its name,
//! exit status and the tail of its log), whatever `up` is doing; stopping the
//! stack sends SIGTERM to each child, newest first, then SIGKILL after 10 s.
//! Every child gets `NO_COLOR=1` so its log file holds no colour codes (the
//! Prefect server is also given `PREFECT_LOGGING_COLORS=false`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Lines of a dead child's log shown with the report.
const TAIL_LINES: usize = 20;
/// How long a child may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A child that exited by itself.
#[derive(Debug)]
pub struct ChildExit {
    pub name: String,
    pub status: String,
    pub log: PathBuf,
}

impl ChildExit {
    /// The report shown to the person at the terminal: who exited, how, and the
    /// end of its log.
    pub fn report(&self) -> String {
        let mut report = format!(
            "{} exited unexpectedly ({}). Last lines of {}:",
            self.name,
            self.status,
            self.log.display()
        );
        let tail = tail(&self.log, TAIL_LINES);
        if tail.is_empty() {
            report.push_str("\n  | (the log is empty)");
        }
        for line in tail {
            report.push_str("\n  | ");
            report.push_str(&line);
        }
        report
    }
}

/// The last `lines` lines of a file (none when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|line| line.to_string())
        .collect()
}

/// One watched child: stop it through `stop`, its task ends when it is gone.
struct Watched {
    name: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The stack's children, in start order.
pub struct Children {
    watched: Vec<Watched>,
    logs: PathBuf,
    exits: mpsc::UnboundedSender<ChildExit>,
}

impl Children {
    /// Children logging to `logs/<name>.log`; exits are reported on the receiver.
    pub fn new(logs: PathBuf) -> (Children, mpsc::UnboundedReceiver<ChildExit>) {
        let (exits, receiver) = mpsc::unbounded_channel();
        let children = Children {
            watched: Vec::new(),
            logs,
            exits,
        };
        (children, receiver)
    }

    /// Starts `command` as child `name`, its output in its log file.
    pub fn spawn(&mut self, name: &str, command: &mut Command) -> anyhow::Result<()> {
        let log = self.logs.join(format!("{name}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating the log of {name}"))?;
        let child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().unwrap_or_default();
        println!("  started {name:<14} (pid {pid}, log: {})", log.display());
        let (stop, stopped) = oneshot::channel();
        let exit = ChildExit {
            name: name.to_string(),
            status: String::new(),
            log,
        };
        let task = tokio::spawn(watch(child, exit, stopped, self.exits.clone()));
        self.watched.push(Watched {
            name: name.to_string(),
            stop,
            task,
        });
        Ok(())
    }

    /// Stops every child, newest first.
    pub async fn stop(&mut self) {
        while let Some(watched) = self.watched.pop() {
            let _ = watched.stop.send(());
            let _ = watched.task.await;
            println!("  stopped {}", watched.name);
        }
    }
}

/// Waits for the child to exit (reported) or to be told to stop (SIGTERM, then
/// SIGKILL after the grace).
async fn watch(
    mut child: Child,
    mut exit: ChildExit,
    stop: oneshot::Receiver<()>,
    exits: mpsc::UnboundedSender<ChildExit>,
) {
    tokio::select! {
        status = child.wait() => {
            exit.status = match status {
                Ok(status) => status.to_string(),
                Err(error) => format!("cannot wait for it: {error}"),
            };
            let _ = exits.send(exit);
        }
        _ = stop => terminate(&mut child).await,
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_that_exits_is_reported_with_the_end_of_its_log() {
        let logs = tempfile::tempdir().unwrap();
        let (mut children, mut exits) = Children::new(logs.path().to_path_buf());
        let script = "for i in $(seq 1 30); do echo line $i; done; exit 3";
        children
            .spawn("short-lived", Command::new("sh").args(["-c", script]))
            .unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(30), exits.recv())
            .await
            .expect("reported at once")
            .unwrap();
        let report = exit.report();
        assert!(
            report.starts_with("short-lived exited unexpectedly (exit status: 3)"),
            "{report}"
        );
        assert!(report.contains("  | line 30"), "{report}");
        assert!(report.contains("  | line 11"), "{report}");
        assert!(!report.contains("  | line 10\n"), "{report}");
        children.stop().await;
    }

    #[tokio::test]
    async fn stopped_children_are_not_reported() {
        let logs = tempfile::tempdir().unwrap();
        let (mut children, mut exits) = Children::new(logs.path().to_path_buf());
        children
            .spawn("sleeper", Command::new("sleep").arg("600"))
            .unwrap();
        children.stop().await;
        assert!(exits.try_recv().is_err());
    }
}
