//! Issue 3's acceptance: flow runs become exactly one correct Job each,
//! through the poller, JetStream and the dispatchers, with the real
//! nats-server, the real Prefect server and the Kubernetes API emulator.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use async_nats::jetstream;
use dispatcher::DispatchStats;
use flow_run_proto::{subjects, DeadLetter, FlowRunDue};
use futures::StreamExt;
use prefect_client::{StateCreate, StateType};
use prost::Message;
use serde_json::json;
use support::{eventually, Stack};

fn scripted() -> kube_emulator::RuntimeKind {
    kube_emulator::RuntimeKind::Scripted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_run_becomes_exactly_one_job() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    let stats = stack.spawn_dispatcher(stack.dispatcher_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let run = stack.run_of(&deployment, None).await;

    eventually("the run's infrastructure_pid is recorded", || async {
        stack.run(run.id).await.infrastructure_pid.is_some()
    })
    .await;
    eventually("the run's Job exists", || async {
        !stack.jobs_of(run.id).await.is_empty()
    })
    .await;

    let jobs = stack.jobs_of(run.id).await;
    assert_eq!(jobs.len(), 1, "exactly one Job");
    let job = &jobs[0];
    let name = job.metadata.name.clone().unwrap();
    let namespace = job.metadata.namespace.clone().unwrap();
    let pid = stack.run(run.id).await.infrastructure_pid.unwrap();
    assert_eq!(pid, format!("{namespace}:{name}"), "the pid names the Job");
    assert_eq!(namespace, "default", "the template's default namespace");
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("prefect.io/flow-run-id"),
        Some(&run.id.to_string())
    );
    assert_eq!(
        labels.get("prefect.io/deployment-id"),
        Some(&deployment.id.to_string())
    );
    let container = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(container.name, "prefect-job");
    assert_eq!(
        container.args.clone().unwrap_or_default(),
        vec!["prefect", "flow-run", "execute"]
    );
    let env: HashMap<String, String> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect();
    assert_eq!(env.get("PREFECT__FLOW_RUN_ID"), Some(&run.id.to_string()));
    assert_eq!(
        env.get("PREFECT_API_URL"),
        Some(&stack.prefect_server.api_url())
    );

    // The run was claimed by us and is no longer Scheduled: later polls must
    // not produce another Job.
    let state = stack.run(run.id).await.state.unwrap();
    assert_ne!(state.state_type, StateType::Scheduled);
    eventually("a few more polls have happened", || async {
        DispatchStats::get(&stats.submitted) >= 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        stack.jobs_of(run.id).await.len(),
        1,
        "still exactly one Job"
    );
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_runs_with_two_pollers_and_three_dispatchers_make_two_hundred_jobs() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let runs = stack.runs_of(&deployment, 200).await;
    let mut second = stack.poller_config();
    second.pool.worker_name = "prefect-k8s-second".into();
    stack.spawn_poller(second).await;
    let mut all_stats = Vec::new();
    for replica in 0..3 {
        let mut config = stack.dispatcher_config();
        config.pool.worker_name = format!("dispatcher-{replica}");
        config.concurrency = 8;
        all_stats.push(stack.spawn_dispatcher(config).await);
    }

    eventually("every run has a Job", || async {
        stack.all_flow_run_jobs().await.len() >= 200
    })
    .await;
    // Let redeliveries and later polls settle, then count again.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let jobs = stack.all_flow_run_jobs().await;
    let mut per_run: HashMap<String, usize> = HashMap::new();
    for job in &jobs {
        let id = job.metadata.labels.as_ref().unwrap()["prefect.io/flow-run-id"].clone();
        *per_run.entry(id).or_default() += 1;
    }
    assert_eq!(jobs.len(), 200, "200 Jobs in all");
    for run in &runs {
        assert_eq!(
            per_run.get(&run.to_string()),
            Some(&1),
            "run {run} has exactly one Job"
        );
    }
    let submitted: u64 = all_stats
        .iter()
        .map(|s| DispatchStats::get(&s.submitted))
        .sum();
    assert!(submitted >= 200);
    stack.stop_services().await;
}

/// Waits until every run has a Job, lets redeliveries and later polls
/// settle, then checks there is exactly one Job per run and no more.
async fn assert_every_run_gets_exactly_one_job(stack: &Stack, runs: &[uuid::Uuid]) {
    eventually("every run has a Job", || async {
        stack.all_flow_run_jobs().await.len() >= runs.len()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(stack.all_flow_run_jobs().await.len(), runs.len());
    assert_one_job_per_run(stack, runs).await;
}

/// Every run has exactly one Job, and none is left Pending without one.
async fn assert_one_job_per_run(stack: &Stack, runs: &[uuid::Uuid]) {
    for run in runs {
        let jobs = stack.jobs_of(*run).await;
        assert_eq!(jobs.len(), 1, "run {run} has exactly one Job");
        let current = stack.run(*run).await;
        let pid = current.infrastructure_pid.clone().expect("pid recorded");
        assert_eq!(
            pid,
            format!(
                "{}:{}",
                jobs[0].metadata.namespace.clone().unwrap(),
                jobs[0].metadata.name.clone().unwrap()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilling_a_dispatcher_mid_batch_leaves_exactly_one_job_per_run() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let runs = stack.runs_of(&deployment, 60).await;

    // A real dispatcher process, killed with SIGKILL once it has started.
    let mut child = stack.dispatcher_process(&["--ack-wait-seconds", "10", "--concurrency", "16"]);
    eventually("the first Jobs exist", || async {
        !stack.all_flow_run_jobs().await.is_empty()
    })
    .await;
    child.kill().expect("SIGKILL the dispatcher");
    let _ = child.wait();
    let created_before_kill = stack.all_flow_run_jobs().await.len();
    assert!(
        created_before_kill < runs.len(),
        "the kill came mid-way ({created_before_kill} Jobs)"
    );

    // A surviving replica picks up the rest, including claims the dead one
    // made but did not finish.
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
    assert_every_run_gets_exactly_one_job(&stack, &runs).await;
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_nats_server_loses_and_duplicates_nothing() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let runs = stack.runs_of(&deployment, 30).await;
    // Messages are in the stream, no dispatcher yet: restart the broker.
    let js = jetstream::new(stack.nats_client().await);
    eventually("the poller published every run", || async {
        match js.get_stream(subjects::FLOW_RUNS_STREAM).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|i| i.state.messages >= 30)
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    stack.nats.restart();
    let stats = stack.spawn_dispatcher(stack.dispatcher_config()).await;
    eventually("half the runs have Jobs", || async {
        stack.all_flow_run_jobs().await.len() >= 15
    })
    .await;
    // And once more while dispatching.
    stack.nats.restart();
    assert_every_run_gets_exactly_one_job(&stack, &runs).await;
    assert!(DispatchStats::get(&stats.submitted) >= runs.len() as u64);
    stack.stop_services().await;
}

/// A stack with a dispatcher and no poller (the test publishes the messages
/// itself), the streams, the pool and a deployment in it.
async fn dispatcher_without_poller() -> (
    Stack,
    std::sync::Arc<DispatchStats>,
    jetstream::Context,
    prefect_client::Deployment,
) {
    let mut stack = Stack::start(scripted()).await;
    let stats = stack.spawn_dispatcher(stack.dispatcher_config()).await;
    let js = jetstream::new(stack.nats_client().await);
    service_runtime::nats::ensure_streams(&js, 1).await.unwrap();
    // The pool must exist for the deployment.
    stack
        .prefect
        .create_work_pool(&prefect_client::WorkPoolCreate::new(
            &stack.pool,
            "kubernetes",
            serde_json::from_str(poller::pool::DEFAULT_BASE_JOB_TEMPLATE).unwrap(),
        ))
        .await
        .unwrap();
    let deployment = stack.deployment(json!({})).await;
    (stack, stats, js, deployment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_finished_runs_create_no_job_and_change_no_state() {
    let (mut stack, stats, js, deployment) = dispatcher_without_poller().await;

    let finals = [
        StateCreate::new(StateType::Completed, "Completed"),
        StateCreate::new(StateType::Failed, "Failed"),
        StateCreate::crashed("crashed for the test"),
    ];
    let mut cases = Vec::new();
    for final_state in finals {
        let run = stack.run_of(&deployment, None).await;
        let scheduled = run.state.clone().unwrap();
        stack
            .prefect
            .set_flow_run_state(run.id, &final_state, true)
            .await
            .expect("force the run final");
        let final_state_id = stack.run(run.id).await.state.unwrap().id;
        // A message published while the run was Scheduled, redelivered now.
        publish_due(&stack, &js, &run, scheduled.id).await;
        cases.push((run.id, final_state_id));
    }
    eventually("the dispatcher handled the three messages", || async {
        DispatchStats::get(&stats.skipped) >= 3
    })
    .await;
    for (run, final_state_id) in cases {
        assert!(
            stack.jobs_of(run).await.is_empty(),
            "no Job for finished run {run}"
        );
        let state = stack.run(run).await.state.unwrap();
        assert_eq!(
            state.id, final_state_id,
            "the finished state of {run} is untouched"
        );
    }
    assert_eq!(stats.submitted.load(Ordering::Relaxed), 0);
    stack.stop_services().await;
}

/// Publishes a message for `run` as the poller would have when the run was in `state`.
async fn publish_due(
    stack: &Stack,
    js: &jetstream::Context,
    run: &prefect_client::FlowRun,
    state: uuid::Uuid,
) {
    let message = FlowRunDue {
        flow_run_id: run.id.to_string(),
        state_id: state.to_string(),
        state_name: "Scheduled".into(),
        flow_run_name: run.name.clone(),
        work_pool_name: stack.pool.clone(),
        ..Default::default()
    };
    js.publish(
        subjects::due_subject(&stack.pool),
        message.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Prefect's late-runs service moves an overdue run to a Scheduled state named Late.
fn late() -> StateCreate {
    StateCreate::new(StateType::Scheduled, "Late")
}

/// One proposer per run: a message only ever claims the very state it was
/// published for. A run gone Late while its message was queued is left to the
/// message the poller publishes for the Late state (claiming it under the old
/// message too would let two messages propose, and a late proposal can reopen
/// a finished run); the old message is dropped, and its run keeps its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_run_went_late_is_dropped_and_the_late_states_own_message_claims_it() {
    let (mut stack, stats, js, deployment) = dispatcher_without_poller().await;
    let queued = stack.run_of(&deployment, None).await;
    let published = queued.state.clone().unwrap().id;
    stack
        .prefect
        .set_flow_run_state(queued.id, &late(), true)
        .await
        .unwrap();
    publish_due(&stack, &js, &queued, published).await;
    eventually("the old message is dropped", || async {
        DispatchStats::get(&stats.skipped) >= 1
    })
    .await;
    assert!(
        stack.jobs_of(queued.id).await.is_empty(),
        "no Job from the old message"
    );
    let state = stack.run(queued.id).await.state.unwrap();
    assert_eq!(
        state.name.as_deref(),
        Some("Late"),
        "the old message did not claim"
    );
    // The Late state's own message (what the poller publishes) claims it.
    publish_due(&stack, &js, &queued, state.id).await;
    eventually("the Late run has its Job", || async {
        stack.jobs_of(queued.id).await.len() == 1
    })
    .await;
    assert_eq!(
        stack.run(queued.id).await.state.unwrap().state_type,
        StateType::Pending
    );
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_job_variables_crash_the_run_with_a_message_naming_them() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
    stack.wait_for_pool().await;
    let bad_image = stack
        .deployment(json!({"image": "Not A Valid/Image:!!"}))
        .await;
    let bad_cpu = stack.deployment(json!({"cpu_request": "a lot"})).await;
    let image_run = stack.run_of(&bad_image, None).await;
    let cpu_run = stack.run_of(&bad_cpu, None).await;

    for (run, needle) in [(image_run.id, "image"), (cpu_run.id, "cpu_request")] {
        eventually("the run is Crashed", || async {
            stack.run(run).await.state.map(|s| s.state_type) == Some(StateType::Crashed)
        })
        .await;
        let message = stack
            .run(run)
            .await
            .state
            .unwrap()
            .message
            .unwrap_or_default();
        assert!(
            message.contains(needle),
            "the message names {needle}: {message}"
        );
        assert!(
            stack.jobs_of(run).await.is_empty(),
            "no Job for an invalid run"
        );
    }
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_is_dead_lettered_and_the_dispatcher_keeps_serving() {
    let mut stack = Stack::start(scripted()).await;
    let stats = stack.spawn_dispatcher(stack.dispatcher_config()).await;
    let js = jetstream::new(stack.nats_client().await);
    service_runtime::nats::ensure_streams(&js, 1).await.unwrap();
    js.publish(
        subjects::due_subject(&stack.pool),
        b"\x0a\xff\xff garbage".to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    eventually("the garbage is dead-lettered", || async {
        DispatchStats::get(&stats.dead_lettered) >= 1
    })
    .await;
    let dead = js.get_stream(subjects::DEAD_LETTER_STREAM).await.unwrap();
    let consumer = dead
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let letter = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .expect("a dead letter")
        .unwrap();
    let letter = DeadLetter::decode(letter.payload.as_ref()).unwrap();
    assert_eq!(
        letter.payload,
        b"\x0a\xff\xff garbage".to_vec(),
        "the original bytes are kept"
    );
    assert!(
        letter.reason.contains("not a FlowRunDue"),
        "{}",
        letter.reason
    );

    // The same dispatcher still serves real runs.
    stack.spawn_poller(stack.poller_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let run = stack.run_of(&deployment, None).await;
    eventually("the run's Job exists", || async {
        stack.jobs_of(run.id).await.len() == 1
    })
    .await;
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_hands_back_in_flight_work() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let runs = stack.runs_of(&deployment, 40).await;
    let mut child = stack.dispatcher_process(&["--ack-wait-seconds", "30", "--concurrency", "8"]);
    eventually("the first Jobs exist", || async {
        !stack.all_flow_run_jobs().await.is_empty()
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the dispatcher exits cleanly on SIGTERM: {status}"
    );

    // Handed-back messages go to the next replica at once (no ack wait).
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
    assert_every_run_gets_exactly_one_job(&stack, &runs).await;
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_reaches_pods_only_as_a_secret_reference() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    let mut config = stack.dispatcher_config();
    config.credentials.api_key = Some("pnu_never_in_a_manifest".into());
    config.job.api_key_secret = Some("prefect-api-key:key".into());
    config.job.namespace = Some("default".into());
    config.job.env = vec!["TEAM=data".into()];
    config.job.image_pull_secrets = vec!["regcred".into()];
    config.job.service_account_name = Some("flow-runner".into());
    config.job.cpu_request = Some("250m".into());
    config.job.memory_limit = Some("1Gi".into());
    stack.spawn_dispatcher(config).await;
    stack.wait_for_pool().await;
    // Job variables override the agent-wide defaults.
    let deployment = stack.deployment(json!({"cpu_request": "500m"})).await;
    let run = stack.run_of(&deployment, None).await;
    eventually("the run's Job exists", || async {
        stack.jobs_of(run.id).await.len() == 1
    })
    .await;

    let job = stack.jobs_of(run.id).await.remove(0);
    let text = serde_json::to_string(&job).unwrap();
    assert!(
        !text.contains("pnu_never_in_a_manifest"),
        "the key is not in the Job"
    );
    let pod = job.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let env = container.env.clone().unwrap_or_default();
    let key = env
        .iter()
        .find(|e| e.name == "PREFECT_API_KEY")
        .expect("PREFECT_API_KEY is set");
    let reference = key
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("prefect-api-key", "key")
    );
    assert!(env
        .iter()
        .any(|e| e.name == "TEAM" && e.value.as_deref() == Some("data")));
    assert_eq!(pod.service_account_name.as_deref(), Some("flow-runner"));
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    let resources = container.resources.clone().unwrap();
    assert_eq!(
        resources.requests.unwrap()["cpu"].0,
        "500m",
        "the job variable wins"
    );
    assert_eq!(
        resources.limits.unwrap()["memory"].0,
        "1Gi",
        "the agent default applies"
    );
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_refusal_crashes_the_run_with_the_apis_reason() {
    let mut stack = Stack::start(scripted()).await;
    stack.spawn_poller(stack.poller_config()).await;
    stack.spawn_dispatcher(stack.dispatcher_config()).await;
    stack.wait_for_pool().await;
    // Valid as a name, but no such namespace exists: the API answers 404.
    let deployment = stack
        .deployment(json!({"namespace": "no-such-namespace"}))
        .await;
    let run = stack.run_of(&deployment, None).await;
    eventually("the run is Crashed", || async {
        stack.run(run.id).await.state.map(|s| s.state_type) == Some(StateType::Crashed)
    })
    .await;
    let message = stack
        .run(run.id)
        .await
        .state
        .unwrap()
        .message
        .unwrap_or_default();
    assert!(
        message.contains("NotFound"),
        "the API's reason is named: {message}"
    );
    assert!(
        message.contains("no-such-namespace"),
        "the namespace is named: {message}"
    );
    assert!(stack.jobs_of(run.id).await.is_empty());
    stack.stop_services().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_server_errors_are_retried_and_make_exactly_one_job() {
    let mut stack = Stack::start(scripted()).await;
    // The next three Job creations fail with 500 (which kube-rs does not
    // retry itself, so the dispatcher's own retry is what is tested).
    stack.emulator.set_faults(kube_emulator::FaultSettings {
        fail_next: 3,
        error_code: 500,
        verb: Some("create".into()),
        resource: Some("jobs".into()),
        ..Default::default()
    });
    stack.spawn_poller(stack.poller_config()).await;
    let stats = stack.spawn_dispatcher(stack.dispatcher_config()).await;
    stack.wait_for_pool().await;
    let deployment = stack.deployment(json!({})).await;
    let runs = vec![
        stack.run_of(&deployment, None).await.id,
        stack.run_of(&deployment, None).await.id,
    ];
    assert_every_run_gets_exactly_one_job(&stack, &runs).await;
    assert!(
        DispatchStats::get(&stats.retried) >= 3,
        "the failures were retried"
    );
    for run in &runs {
        let state = stack.run(*run).await.state.unwrap();
        assert_ne!(
            state.state_type,
            StateType::Crashed,
            "a transient error never crashes a run"
        );
    }
    stack.stop_services().await;
}
