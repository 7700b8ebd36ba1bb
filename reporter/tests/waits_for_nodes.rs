//! Runs wait for the nodes that are coming (issue 16), end to end: the emulator plays the
//! node autoscaler (cluster-autoscaler's and Karpenter's Events), a real reporter decides,
//! the real Prefect server records. A pod whose node comes after three pod-watch timeouts
//! runs to `Completed`; an autoscaler that cannot help crashes the run at once with its
//! reason; a scale-up that never brings a node crashes it at the scale-up limit.

mod support;

use std::time::{Duration, Instant};

use kube_emulator::{
    AutoscalerConfig, AutoscalerStyle, EmulatorConfig, NodeCapacity, NodeGroup, Provisioning,
};
use prefect_client::StateType;
use support::{JobSpec, Stack};

/// The pod-watch timeout of the tests' Jobs.
const POD_WATCH_SECONDS: u64 = 2;

/// An emulator whose own node (8 cpu) is too small for the tests' pods (12 cpu) and whose
/// autoscaler grows node group `gpu` (16-cpu nodes).
fn emulator(style: AutoscalerStyle, max_size: u32, provisioning: Provisioning) -> EmulatorConfig {
    EmulatorConfig {
        autoscaler: Some(AutoscalerConfig {
            style,
            node_groups: vec![NodeGroup {
                name: "gpu".into(),
                node_capacity: NodeCapacity {
                    cpu: "16".into(),
                    memory: "64Gi".into(),
                    pods: 110,
                },
                initial_size: 0,
                max_size,
                provisioning,
            }],
            scan_interval: Duration::from_millis(200),
        }),
        ..EmulatorConfig::fast()
    }
}

fn big_pod(script: &str) -> JobSpec {
    JobSpec {
        cpu_request: Some("12".into()),
        pod_watch_timeout_seconds: Some(POD_WATCH_SECONDS),
        ..JobSpec::script(script)
    }
}

async fn log_messages(stack: &Stack, run: uuid::Uuid) -> Vec<String> {
    stack
        .logs(run)
        .await
        .into_iter()
        .map(|log| log.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_node_comes_after_three_pod_watch_timeouts_runs_to_completed() {
    let node_delay = Duration::from_secs(3 * POD_WATCH_SECONDS + 1);
    for (style, waiting_line) in [
        (
            AutoscalerStyle::ClusterAutoscaler,
            "Waiting for a new node: scale-up of nodegroup gpu 0→1 triggered",
        ),
        (
            AutoscalerStyle::Karpenter,
            "Waiting for a new node: Karpenter nominated nodeclaim/gpu-",
        ),
    ] {
        let stack = Stack::start_with(emulator(style, 2, Provisioning::After(node_delay))).await;
        let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
        let submitted = Instant::now();
        let (run, job) = stack.submitted_run(&big_pod("succeed:3")).await;
        stack.wait_for_running_pod(&job).await;
        let waited = submitted.elapsed();
        // The flow in the pod reports itself, as `prefect flow-run execute` does.
        stack
            .set_state(run.id, StateType::Running, "Running", false)
            .await;
        stack
            .set_state(run.id, StateType::Completed, "Completed", false)
            .await;
        let state = stack.final_state(run.id).await;
        assert_eq!(
            state.state_type,
            StateType::Completed,
            "{style:?}: {:?}",
            state.message
        );
        assert!(
            waited >= Duration::from_secs(3 * POD_WATCH_SECONDS),
            "{style:?}: the pod waited {waited:?}, more than three pod-watch timeouts"
        );
        assert!(
            stack
                .states_of(run.id, StateType::Crashed, None)
                .await
                .is_empty(),
            "{style:?}: never crashed while the node was coming"
        );
        support::eventually("the run's logs say what it waits for", || async {
            log_messages(&stack, run.id)
                .await
                .iter()
                .any(|line| line.starts_with(waiting_line))
        })
        .await;
        reporter.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaler_that_cannot_help_crashes_the_run_at_once_with_its_reason() {
    for (style, reason) in [
        (
            AutoscalerStyle::ClusterAutoscaler,
            "cluster-autoscaler will not add a node for it: NotTriggerScaleUp: pod didn't \
             trigger scale-up: 1 max node group size reached.",
        ),
        (
            AutoscalerStyle::Karpenter,
            "Karpenter will not add a node for it: FailedScheduling: Failed to schedule pod, \
             node limits have been exhausted for nodepool.",
        ),
    ] {
        let stack = Stack::start_with(emulator(style, 0, Provisioning::Never)).await;
        let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
        let spec = JobSpec {
            pod_watch_timeout_seconds: Some(120),
            ..big_pod("hang")
        };
        let submitted = Instant::now();
        let (run, job) = stack.submitted_run(&spec).await;
        let state = stack.final_state(run.id).await;
        let message = state.message.clone().unwrap_or_default();
        assert_eq!(state.state_type, StateType::Crashed, "{style:?}: {message}");
        assert!(
            submitted.elapsed() < Duration::from_secs(60),
            "{style:?}: at once, not after the pod-watch timeout (120 s)"
        );
        assert!(message.contains(reason), "{style:?}: {message}");
        assert!(
            message.contains(&job),
            "{style:?}: names the Job: {message}"
        );
        assert!(
            message.contains("The scheduler says: 0/1 nodes are available: 1 Insufficient cpu."),
            "{style:?}: {message}"
        );
        reporter.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_that_never_brings_a_node_crashes_the_run_at_the_scale_up_limit() {
    let stack = Stack::start_with(emulator(
        AutoscalerStyle::ClusterAutoscaler,
        2,
        Provisioning::Never,
    ))
    .await;
    let reporter = stack.spawn_reporter(stack.reporter_config("reporter-a"));
    let limit = 6;
    let spec = JobSpec {
        scale_up_timeout_seconds: Some(limit),
        ..big_pod("hang")
    };
    let submitted = Instant::now();
    let (run, job) = stack.submitted_run(&spec).await;
    let state = stack.final_state(run.id).await;
    let message = state.message.clone().unwrap_or_default();
    assert_eq!(state.state_type, StateType::Crashed, "{message}");
    // Event times have whole seconds: the limit counts from the second of the
    // TriggeredScaleUp, up to a second before the Event.
    assert!(
        submitted.elapsed() >= Duration::from_secs(limit - 1),
        "not before the scale-up limit ({:?})",
        submitted.elapsed()
    );
    assert!(
        message.contains(&format!(
            "was not scheduled: cluster-autoscaler was bringing a new node (scale-up of \
             nodegroup gpu 0→1 triggered), but no node took the pod within {limit} s \
             (scale_up_timeout_seconds)."
        )),
        "{message}"
    );
    // The run is crashed for a reason that will not heal: nothing of it keeps running.
    support::eventually("the crashed run's Job is deleted", || async {
        !stack.job_exists(&job).await
    })
    .await;
    reporter.stop().await;
}
