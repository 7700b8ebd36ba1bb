//! The process runtime: a container's `command` + `args` (or `args` alone when there is no
//! command, standing in for the image entrypoint) run as a local child process in its own
//! process group, with the container's resolved env plus the emulator's `PATH` and `HOME`.
//! stdout and stderr go to the pod log; the exit code becomes the terminated state; stop
//! signals map to SIGTERM/SIGKILL of the process group. The image is ignored.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use super::{
    ContainerExit, ContainerLaunch, ContainerRun, ContainerRuntime, PullOutcome, StopSignal,
};
use crate::container_logs::LogStream;

/// The process runtime.
pub struct ProcessRuntime {
    /// Working directory for containers without a usable `workingDir`.
    pub workdir: Option<PathBuf>,
    /// Extra environment appended to every container's env.
    pub extra_env: Vec<(String, String)>,
}

/// Expand `$(VAR)` references like the kubelet does (`$$` escapes a dollar).
pub fn expand_references(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(stripped) = tail.strip_prefix("$$") {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = tail.strip_prefix("$(") {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn string_list(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn pump<R: AsyncRead + Unpin>(reader: R, log: Arc<LogStream>) {
    let mut lines = BufReader::new(reader);
    let mut buffer = String::new();
    loop {
        buffer.clear();
        match lines.read_line(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => log.push(buffer.clone()),
        }
    }
}

impl ContainerRuntime for ProcessRuntime {
    /// The image is not run, but an image no registry has (see
    /// [`super::scripted::image_is_missing`]) still fails to pull.
    fn pull(&self, _pod: &serde_json::Value, container: &serde_json::Value) -> PullOutcome {
        let image = container["image"].as_str().unwrap_or_default();
        if super::scripted::image_is_missing(image) {
            return super::scripted::pull_denied(image);
        }
        PullOutcome::Pulled
    }

    fn start(&self, launch: ContainerLaunch) -> ContainerRun {
        let (exit_tx, exit_rx) = oneshot::channel();
        let (signal_tx, mut signal_rx) = mpsc::channel(4);
        let mut env = launch.env.clone();
        for key in ["PATH", "HOME"] {
            if !env.iter().any(|(k, _)| k == key) {
                if let Ok(value) = std::env::var(key) {
                    env.push((key.to_string(), value));
                }
            }
        }
        env.extend(self.extra_env.iter().cloned());
        let mut argv: Vec<String> = string_list(&launch.container["command"]);
        argv.extend(string_list(&launch.container["args"]));
        let argv: Vec<String> = argv.iter().map(|a| expand_references(a, &env)).collect();
        let workdir = launch.container["workingDir"]
            .as_str()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .or_else(|| self.workdir.clone())
            .unwrap_or_else(std::env::temp_dir);
        let log = launch.log.clone();
        tokio::spawn(async move {
            let exit = run_process(argv, env, workdir, log.clone(), &mut signal_rx).await;
            log.finish();
            let _ = exit_tx.send(exit);
        });
        ContainerRun {
            exit: exit_rx,
            signals: signal_tx,
        }
    }
}

async fn run_process(
    argv: Vec<String>,
    env: Vec<(String, String)>,
    workdir: PathBuf,
    log: Arc<LogStream>,
    signals: &mut mpsc::Receiver<StopSignal>,
) -> ContainerExit {
    let Some(program) = argv.first() else {
        return ContainerExit {
            exit_code: 128,
            reason: "StartError".into(),
            message: Some("failed to create containerd task: no command specified".into()),
        };
    };
    let mut command = container_command(&argv, &env, &workdir);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let message = format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{program}\": {err}"
            );
            log.push(format!("{message}\n"));
            return ContainerExit {
                exit_code: 128,
                reason: "StartError".into(),
                message: Some(message),
            };
        }
    };
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    // If this task is dropped (emulator dropped without shutdown), take the whole process group
    // down, not just the direct child.
    let _group_guard = ProcessGroupGuard(pid);
    let stdout = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, log.clone())));
    let stderr = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, log.clone())));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.recv() => {
                let sig = match signal {
                    Some(StopSignal::Terminate) => Signal::SIGTERM,
                    Some(StopSignal::Kill) | None => Signal::SIGKILL,
                };
                if let Some(pid) = pid {
                    let _ = killpg(pid, sig);
                }
            }
        }
    };
    for pump in [stdout, stderr].into_iter().flatten() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), pump).await;
    }
    exit_of(status)
}

/// The child process for `argv` (non-empty): only the given env, its own process group,
/// stdout and stderr piped, killed when dropped.
fn container_command(argv: &[String], env: &[(String, String)], workdir: &Path) -> Command {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// The terminated state of a process: its exit code, or 128 + the signal that killed it.
fn exit_of(status: std::io::Result<std::process::ExitStatus>) -> ContainerExit {
    match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(9));
            ContainerExit::from_code(code)
        }
        Err(err) => ContainerExit {
            exit_code: 128,
            reason: "Error".into(),
            message: Some(err.to_string()),
        },
    }
}

/// Kills a process group with SIGKILL when dropped.
struct ProcessGroupGuard(Option<Pid>);

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // ESRCH (already gone) is the normal case.
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expand_references;

    #[test]
    fn expands_kubernetes_style_references() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand_references("x$(A)y$(B)$$z", &env), "x1y$(B)$z");
    }
}
