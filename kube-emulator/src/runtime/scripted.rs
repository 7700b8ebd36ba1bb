//! The scripted runtime: container outcomes follow rules, so tests can script any fate without
//! real processes.
//!
//! Rules, first match wins:
//! 1. Annotation `kube-emulator.io/script-<container>` or `kube-emulator.io/script` on the pod.
//! 2. The image name: contains `pull-error` or `does-not-exist` -> `pull-error`; contains
//!    `oom` -> `oom`; contains `hang` -> `hang`; contains `fail` -> `fail:1`; contains `evict`
//!    -> `evict`.
//! 3. Otherwise `succeed` after the configured default run time.
//!
//! Script syntax (`<action>[:<arg>][:<seconds>]`):
//! * `succeed[:<seconds>]` - exit 0 (`Completed`) after the run time.
//! * `fail:<code>[:<seconds>]` - exit with `code` (`Error`).
//! * `oom[:<seconds>]` - exit 137 with reason `OOMKilled`.
//! * `pull-error` - the image never pulls: `ErrImagePull` then `ImagePullBackOff`.
//! * `hang` - run until stopped (exit 143 on SIGTERM, 137 on SIGKILL).
//! * `evict[:<seconds>]` - the container runs until the kubelet evicts the pod (memory
//!   pressure) after `<seconds>` (the run time by default).
//! * `ignore-sigterm` - like `hang` but only SIGKILL stops it.
//!
//! Every container logs one line `scripted container <name>: <action>` when it starts, plus
//! the text of annotation `kube-emulator.io/log` if present.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{
    ContainerExit, ContainerLaunch, ContainerRun, ContainerRuntime, PodFate, PullOutcome,
    StopSignal,
};

/// A parsed script.
#[derive(Debug, Clone, PartialEq)]
pub enum Script {
    /// Exit 0 after the duration.
    Succeed(Duration),
    /// Exit with a code after the duration.
    Fail(i32, Duration),
    /// OOMKilled after the duration.
    Oom(Duration),
    /// Image pull fails.
    PullError,
    /// Runs until stopped.
    Hang,
    /// Runs until SIGKILL.
    IgnoreSigterm,
    /// Pod evicted after the duration.
    Evict(Duration),
}

fn seconds(text: Option<&str>, default: Duration) -> Duration {
    text.and_then(|t| t.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(default, Duration::from_secs_f64)
}

/// Parse a script string; unknown text means `succeed`.
pub fn parse_script(text: &str, default_run: Duration) -> Script {
    let parts: Vec<&str> = text.trim().split(':').collect();
    match parts.first().copied().unwrap_or_default() {
        "fail" | "exit" => {
            let code = parts.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            Script::Fail(code, seconds(parts.get(2).copied(), default_run))
        }
        "oom" => Script::Oom(seconds(parts.get(1).copied(), default_run)),
        "pull-error" => Script::PullError,
        "hang" => Script::Hang,
        "ignore-sigterm" => Script::IgnoreSigterm,
        "evict" => Script::Evict(seconds(parts.get(1).copied(), default_run)),
        _ => Script::Succeed(seconds(parts.get(1).copied(), default_run)),
    }
}

/// The script for a container of a pod.
pub fn script_for(pod: &Value, container: &Value, default_run: Duration) -> Script {
    let name = container["name"].as_str().unwrap_or_default();
    let annotations = pod.pointer("/metadata/annotations");
    let annotation = annotations
        .and_then(|a| a.get(format!("kube-emulator.io/script-{name}")))
        .or_else(|| annotations.and_then(|a| a.get("kube-emulator.io/script")))
        .and_then(Value::as_str);
    if let Some(text) = annotation {
        return parse_script(text, default_run);
    }
    let image = container["image"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    if image_is_missing(&image) {
        Script::PullError
    } else if image.contains("oom") {
        Script::Oom(default_run)
    } else if image.contains("hang") {
        Script::Hang
    } else if image.contains("fail") {
        Script::Fail(1, default_run)
    } else if image.contains("evict") {
        Script::Evict(default_run)
    } else {
        Script::Succeed(default_run)
    }
}

/// Images no registry has, in either runtime: names containing `pull-error`
/// or `does-not-exist`.
pub fn image_is_missing(image: &str) -> bool {
    let image = image.to_lowercase();
    image.contains("pull-error") || image.contains("does-not-exist")
}

/// containerd's answer to a pull of an image the registry does not have.
pub fn pull_denied(image: &str) -> PullOutcome {
    PullOutcome::Fails(format!(
        "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"
    ))
}

/// The scripted runtime.
pub struct ScriptedRuntime {
    /// Run time when the script does not say.
    pub default_run: Duration,
}

impl ContainerRuntime for ScriptedRuntime {
    fn pull(&self, pod: &Value, container: &Value) -> PullOutcome {
        match script_for(pod, container, self.default_run) {
            Script::PullError => pull_denied(container["image"].as_str().unwrap_or_default()),
            _ => PullOutcome::Pulled,
        }
    }

    fn pod_fate(&self, pod: &Value) -> PodFate {
        let containers = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in &containers {
            if let Script::Evict(after) = script_for(pod, c, self.default_run) {
                return PodFate::EvictAfterMillis(after.as_millis() as u64);
            }
        }
        PodFate::Normal
    }

    fn start(&self, launch: ContainerLaunch) -> ContainerRun {
        let script = script_for(&launch.pod, &launch.container, self.default_run);
        let (exit_tx, exit_rx) = oneshot::channel();
        let (signal_tx, mut signal_rx) = mpsc::channel(4);
        let name = launch.container["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        launch
            .log
            .push(format!("scripted container {name}: {script:?}\n"));
        if let Some(text) = launch
            .pod
            .pointer("/metadata/annotations/kube-emulator.io~1log")
            .and_then(Value::as_str)
        {
            for line in text.lines() {
                launch.log.push(format!("{line}\n"));
            }
        }
        tokio::spawn(async move {
            let (run_for, natural_exit) = match script {
                Script::Succeed(d) => (Some(d), ContainerExit::from_code(0)),
                Script::Fail(code, d) => (Some(d), ContainerExit::from_code(code)),
                Script::Oom(d) => (
                    Some(d),
                    ContainerExit {
                        exit_code: 137,
                        reason: "OOMKilled".into(),
                        message: None,
                    },
                ),
                // An evicted container runs until the kubelet's eviction kills it, so the
                // eviction never races with a natural exit.
                Script::PullError | Script::Hang | Script::IgnoreSigterm | Script::Evict(_) => {
                    (None, ContainerExit::from_code(0))
                }
            };
            let ignores_term = script == Script::IgnoreSigterm;
            let finished = async {
                match run_for {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::pin!(finished);
            let exit = loop {
                tokio::select! {
                    _ = &mut finished => break natural_exit,
                    signal = signal_rx.recv() => match signal {
                        Some(StopSignal::Terminate) if !ignores_term => break ContainerExit::from_code(143),
                        Some(StopSignal::Terminate) => continue,
                        Some(StopSignal::Kill) | None => break ContainerExit::from_code(137),
                    },
                }
            };
            launch.log.finish();
            let _ = exit_tx.send(exit);
        });
        ContainerRun {
            exit: exit_rx,
            signals: signal_tx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotation_wins_over_image() {
        let pod = json!({"metadata": {"annotations": {"kube-emulator.io/script": "fail:3:0.1"}}});
        let container = json!({"name": "c", "image": "oom"});
        assert_eq!(
            script_for(&pod, &container, Duration::from_secs(1)),
            Script::Fail(3, Duration::from_millis(100))
        );
    }

    #[test]
    fn image_names_select_outcomes() {
        let pod = json!({"metadata": {}});
        let d = Duration::from_secs(1);
        assert_eq!(
            script_for(&pod, &json!({"image": "registry/pull-error:1"}), d),
            Script::PullError
        );
        assert_eq!(
            script_for(&pod, &json!({"image": "busybox"}), d),
            Script::Succeed(d)
        );
    }
}
