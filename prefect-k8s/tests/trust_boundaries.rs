//! Issue 10's trust boundaries, black-box on the Kubernetes API emulator with
//! RBAC on (the `prefect-k8s install --rbac` objects applied, each service
//! with its own ServiceAccount's token), a real Prefect server and
//! nats-server, the services as their real binaries:
//!
//! - a forged or edited `FlowRunDue` (a run of another pool, job variables in
//!   the message) creates no Job and renders nothing from the message;
//! - a flow asking for one of the agent's ServiceAccounts ends Crashed;
//! - a pid naming a Job the agent did not create for the run deletes nothing;
//! - the finished-Job sweep leaves other pools' Jobs alone;
//! - with every supported way of giving the API key and the auth string,
//!   neither appears in any Job or in any service's output.

mod agent_stack;
mod manifest_tools;

use std::process::Command;
use std::time::Duration;

use agent_stack::{binary, eventually, Stack, API_KEY, AUTH_STRING, NAMESPACE};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use prefect_client::{DeploymentFlowRunCreate, FlowRun, StateCreate, StateType, WorkPoolCreate};
use serde_json::{json, Value};
use test_stack::prefect::unique_name;
use uuid::Uuid;

/// A `FlowRunDue` as an older or forged publisher would write it: the run's
/// ids plus job variables in the message's former fields 14 and 15.
fn forged_message(run: &FlowRun, pool: &str, job_variables: &Value) -> Vec<u8> {
    let message = flow_run_proto::FlowRunDue {
        flow_run_id: run.id.to_string(),
        state_id: run.state.as_ref().unwrap().id.to_string(),
        flow_run_name: run.name.clone(),
        work_pool_name: pool.to_string(),
        ..Default::default()
    };
    let mut bytes = prost::Message::encode_to_vec(&message);
    for field in [14u8, 15] {
        let text = job_variables.to_string();
        bytes.push(field << 3 | 2);
        prost::encoding::encode_varint(text.len() as u64, &mut bytes);
        bytes.extend_from_slice(text.as_bytes());
    }
    bytes
}

async fn publish(stack: &Stack, pool: &str, payload: Vec<u8>) {
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.publish(flow_run_proto::subjects::due_subject(pool), payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_edited_messages_create_nothing_and_render_nothing() {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[]);
    stack.wait_for_pool().await;
    // A run of another pool, pushed onto this pool's queue.
    let other_pool = unique_name("other-pool");
    stack
        .prefect
        .create_work_pool(&WorkPoolCreate::new(&other_pool, "kubernetes", json!({})))
        .await
        .unwrap();
    let foreign = stack
        .run_of(&stack.deployment_in(&other_pool, json!({})).await)
        .await;
    let evil = json!({"image": "evil.example/miner:1", "command": "mine"});
    let pool = stack.pool.clone();
    publish(&stack, &pool, forged_message(&foreign, &pool, &evil)).await;
    // A run of this pool, announced with job variables in the message.
    let deployment = stack
        .deployment_in(&pool, json!({"image": "example/flows:1"}))
        .await;
    let ours = stack.run_of(&deployment).await;
    publish(&stack, &pool, forged_message(&ours, &pool, &evil)).await;
    let job = eventually("the run of this pool gets its Job", || async {
        stack.jobs_of(ours.id).await.pop()
    })
    .await;
    let text = serde_json::to_string(&job).unwrap();
    assert!(text.contains("example/flows:1"), "rendered from Prefect");
    assert!(
        !text.contains("evil.example") && !text.contains("mine"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stack.jobs_of(foreign.id).await.is_empty(),
        "another pool's run"
    );
    let foreign_state = stack.prefect.read_flow_run(foreign.id).await.unwrap();
    assert_eq!(
        foreign_state.state.unwrap().state_type,
        StateType::Scheduled,
        "another pool's run was not claimed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_asking_for_an_agent_service_account_ends_crashed() {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[]);
    stack.wait_for_pool().await;
    let pool = stack.pool.clone();
    for account in ["prefect-k8s-dispatcher", "prefect-k8s-reporter"] {
        let deployment = stack
            .deployment_in(&pool, json!({"service_account_name": account}))
            .await;
        let run = stack.run_of(&deployment).await;
        let state = eventually("the run ends Crashed", || async {
            let state = stack.prefect.read_flow_run(run.id).await.ok()?.state?;
            (state.state_type == StateType::Crashed).then_some(state)
        })
        .await;
        let message = state.message.unwrap_or_default();
        assert!(message.contains(account), "{message}");
        assert!(message.contains("agent's own ServiceAccounts"), "{message}");
        assert!(
            stack.jobs_of(run.id).await.is_empty(),
            "no Job for {account}"
        );
    }
}

/// A flow whose `labels` job variable would rename its run or pool (hiding
/// its Job from cancellation, or speaking for another run) ends Crashed
/// naming the label, and gets no Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_relabelling_its_run_or_pool_ends_crashed() {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[]);
    stack.wait_for_pool().await;
    let pool = stack.pool.clone();
    for label in ["prefect.io/flow-run-id", "prefect.io/work-pool-name"] {
        let deployment = stack
            .deployment_in(&pool, json!({"labels": {label: "somebody-else"}}))
            .await;
        let run = stack.run_of(&deployment).await;
        let state = eventually("the run ends Crashed", || async {
            let state = stack.prefect.read_flow_run(run.id).await.ok()?.state?;
            (state.state_type == StateType::Crashed).then_some(state)
        })
        .await;
        let message = state.message.unwrap_or_default();
        assert!(message.contains(label), "{message}");
        assert!(message.contains("may not be changed"), "{message}");
        assert!(stack.jobs_of(run.id).await.is_empty(), "no Job for {label}");
    }
}

/// A Job of `pool_label`'s pool for `run`, as the dispatcher would create it.
fn job_of(name: &str, run: Uuid, pool_label: &str, claimed: bool, finished: bool) -> Job {
    let mut annotations = serde_json::Map::new();
    if claimed {
        let key = flow_run_proto::SubmissionKey::new(run, Uuid::new_v4());
        annotations.insert("prefect-k8s.io/claim".into(), json!(key.claim_annotation()));
    }
    let script = if finished { "succeed:0.1" } else { "hang" };
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations,
            "labels": {"prefect.io/flow-run-id": run.to_string(),
                       "prefect.io/work-pool-name": pool_label}},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"kube-emulator.io/script": script},
                         "labels": {"prefect.io/flow-run-id": run.to_string()}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "prefect-job", "image": "busybox"}]}}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_naming_a_foreign_job_deletes_nothing() {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[]);
    stack.wait_for_pool().await;
    let pool = stack.pool.clone();
    // Someone else's Job in the namespace (not created by the agent for this run).
    let victim = job_of("victim", Uuid::new_v4(), "someone-else", false, false);
    stack
        .admin_jobs()
        .create(&PostParams::default(), &victim)
        .await
        .unwrap();
    // A run of this pool (created Pending, so no dispatcher submits it) whose pid
    // a user points at that Job, then cancels.
    let deployment = stack.deployment_in(&pool, json!({})).await;
    let run = stack
        .prefect
        .create_flow_run_from_deployment(
            deployment.id,
            &DeploymentFlowRunCreate {
                state: Some(StateCreate::new(StateType::Pending, "Pending")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stack
        .prefect
        .update_flow_run_infrastructure_pid(run.id, &format!("{NAMESPACE}:victim"))
        .await
        .unwrap();
    let cancelling = StateCreate::new(StateType::Cancelling, "Cancelling");
    stack
        .prefect
        .set_flow_run_state(run.id, &cancelling, true)
        .await
        .unwrap();
    let state = eventually("the run is Cancelled", || async {
        let state = stack.prefect.read_flow_run(run.id).await.ok()?.state?;
        (state.state_type == StateType::Cancelled).then_some(state)
    })
    .await;
    assert!(
        state.message.unwrap_or_default().contains("not deleted"),
        "the message says nothing was deleted"
    );
    assert!(
        stack
            .admin_jobs()
            .get_opt("victim")
            .await
            .unwrap()
            .is_some(),
        "the foreign Job is still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_leaves_other_pools_jobs_alone() {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[("PREFECT_K8S_DELETE_FINISHED_JOBS_AFTER", "1")]);
    stack.wait_for_pool().await;
    let ours_label = job_manifest::slugify_label_value(&stack.pool);
    let jobs = [
        ("ours", ours_label.as_str(), true),
        ("other-pools", "another-pool", true),
        ("unclaimed", ours_label.as_str(), false),
    ];
    for (name, label, claimed) in jobs {
        let job = job_of(name, Uuid::new_v4(), label, claimed, true);
        stack
            .admin_jobs()
            .create(&PostParams::default(), &job)
            .await
            .unwrap();
    }
    eventually("our finished Job is swept", || async {
        stack
            .admin_jobs()
            .get_opt("ours")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for kept in ["other-pools", "unclaimed"] {
        assert!(
            stack.admin_jobs().get_opt(kept).await.unwrap().is_some(),
            "{kept} must not be swept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_and_the_auth_string_never_reach_a_job_or_a_log() {
    let mut stack = Stack::start().await;
    stack.spawn_agent(&[]);
    stack.wait_for_pool().await;
    let pool = stack.pool.clone();
    let deployment = stack.deployment_in(&pool, json!({})).await;
    let run = stack.run_of(&deployment).await;
    let job = eventually("the run's Job", || async {
        stack.jobs_of(run.id).await.pop()
    })
    .await;
    let env =
        &serde_json::to_value(&job).unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
    let reference = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|var| var["name"] == name)
            .map(|var| var["valueFrom"]["secretKeyRef"].clone())
    };
    assert_eq!(
        reference("PREFECT_API_KEY"),
        Some(json!({"name": "prefect-api-key", "key": "key"}))
    );
    assert_eq!(
        reference("PREFECT_API_AUTH_STRING"),
        Some(json!({"name": "prefect-auth", "key": "auth-string"}))
    );
    // A dispatcher with the credentials but no Secret to give flows refuses to start.
    let refused = Command::new(binary("dispatcher"))
        .env("PREFECT_API_URL", stack.prefect_server.api_url())
        .env("PREFECT_API_KEY", API_KEY)
        .env("NATS_URL", stack.nats.url())
        .env("KUBECONFIG", stack.emulator.kubeconfig_path())
        .env(
            "HEALTH_ADDR",
            format!("127.0.0.1:{}", test_stack::ports::free_port()),
        )
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&refused.stderr).to_string()
        + &String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{refusal}");
    assert!(refusal.contains("--api-key-secret"), "{refusal}");
    eventually("the dispatcher logs the submission", || async {
        stack
            .output_of_every_service()
            .contains("flow run submitted")
            .then_some(())
    })
    .await;
    // Nothing anywhere spells a secret.
    let all_jobs = stack
        .admin_jobs()
        .list(&ListParams::default())
        .await
        .unwrap();
    let everything =
        serde_json::to_string(&all_jobs).unwrap() + &stack.output_of_every_service() + &refusal;
    for secret in [API_KEY, AUTH_STRING, "Tru5tB0undaryPassw0rd"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}
