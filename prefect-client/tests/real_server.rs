//! The client against a real Prefect 3.9.1 server (shared by the tests of
//! this binary, SQLite): every endpoint the agent uses, and the measured
//! claim contract of the research notes §2.1.

use std::collections::HashSet;

use chrono::{Duration as TimeDelta, Utc};
use flow_run_proto::SubmissionKey;
use prefect_client::{
    log_level, ClaimOutcome, ClientConfig, DeploymentCreate, DeploymentFlowRunCreate, FlowRun,
    FlowRunFilter, LogCreate, PrefectClient, PrefectError, SetStateStatus, StateCreate, StateType,
    WorkPoolCreate, WorkQueueCreate,
};
use serde_json::json;
use test_stack::prefect::{unique_name, PrefectServer};
use uuid::Uuid;

fn client() -> PrefectClient {
    // `RUST_LOG=prefect_client=debug` shows the transport's retries.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = PrefectServer::shared();
    PrefectClient::new(
        ClientConfig::new(&server.api_url())
            .unwrap()
            .with_worker_name("prefect-client-tests")
            .with_product_token("prefect-client-tests/0"),
    )
    .unwrap()
}

/// A pool, a flow and a deployment in it, all uniquely named.
struct Fixture {
    client: PrefectClient,
    pool: String,
    flow_id: Uuid,
    deployment_id: Uuid,
}

impl Fixture {
    async fn new(label: &str) -> Fixture {
        let client = tokio::task::spawn_blocking(client).await.unwrap();
        let pool = unique_name(&format!("pool-{label}"));
        let created = client
            .create_work_pool(&WorkPoolCreate::new(
                &pool,
                "kubernetes",
                job_manifest::default_base_job_template(),
            ))
            .await
            .expect("create pool");
        assert_eq!(created.name, pool);
        let flow = client
            .create_flow(&unique_name(&format!("flow-{label}")))
            .await
            .expect("create flow");
        let mut deployment = DeploymentCreate::new(unique_name("deployment"), flow.id);
        deployment.work_pool_name = Some(pool.clone());
        deployment.entrypoint = Some("flows/hello.py:hello".into());
        deployment.path = Some("/opt/prefect/flows".into());
        deployment.job_variables = Some(json!({"env": {"FROM_DEPLOYMENT": "1"}}));
        let deployment = client
            .create_deployment(&deployment)
            .await
            .expect("create deployment");
        Fixture {
            client,
            pool,
            flow_id: flow.id,
            deployment_id: deployment.id,
        }
    }

    async fn scheduled_run(&self) -> FlowRun {
        let run = self
            .client
            .create_flow_run_from_deployment(
                self.deployment_id,
                &DeploymentFlowRunCreate {
                    job_variables: Some(json!({"env": {"FROM_RUN": "2"}})),
                    ..DeploymentFlowRunCreate::default()
                },
            )
            .await
            .expect("create flow run");
        assert_eq!(run.state_type, Some(StateType::Scheduled));
        run
    }
}

#[tokio::test]
async fn deployment_run_is_returned_by_the_scheduled_runs_poll() {
    let fixture = Fixture::new("poll").await;
    let run = fixture.scheduled_run().await;

    let polled = fixture
        .client
        .get_scheduled_flow_runs(
            &fixture.pool,
            &[],
            Utc::now() + TimeDelta::seconds(10),
            Some(50),
        )
        .await
        .expect("poll");
    assert_eq!(polled.len(), 1, "{polled:#?}");
    let entry = &polled[0];
    assert_eq!(entry.flow_run.id, run.id);
    assert_eq!(entry.flow_run.deployment_id, Some(fixture.deployment_id));
    assert_eq!(entry.flow_run.flow_id, fixture.flow_id);
    // The poll's FlowRun schema has no pool fields and no queue name;
    // reads have them.
    assert_eq!(entry.flow_run.work_pool_name, None);
    assert_eq!(run.work_pool_name.as_deref(), Some(fixture.pool.as_str()));
    assert_eq!(entry.flow_run.work_queue_name, None);
    assert_eq!(run.work_queue_name.as_deref(), Some("default"));
    assert_eq!(entry.flow_run.work_queue_id, Some(entry.work_queue_id));
    assert_eq!(
        entry.flow_run.job_variables,
        Some(json!({"env": {"FROM_RUN": "2"}}))
    );
    let state = entry.flow_run.state.as_ref().expect("run has a state");
    assert_eq!(state.state_type, StateType::Scheduled);
    assert!(entry.flow_run.is_still_scheduled_as(state.id));

    let pool = fixture.client.read_work_pool(&fixture.pool).await.unwrap();
    assert_eq!(entry.work_pool_id, pool.id);
    assert_eq!(Some(entry.work_queue_id), pool.default_queue_id);

    // Runs due later are not returned.
    let early = fixture
        .client
        .get_scheduled_flow_runs(&fixture.pool, &[], Utc::now() - TimeDelta::hours(1), None)
        .await
        .unwrap();
    assert!(early.is_empty(), "{early:#?}");
}

#[tokio::test]
async fn poll_by_queue_name_and_unknown_names_are_not_found() {
    let fixture = Fixture::new("queues").await;
    let queue = fixture
        .client
        .create_work_queue(
            &fixture.pool,
            &WorkQueueCreate {
                name: "high".into(),
                priority: Some(1),
                ..WorkQueueCreate::default()
            },
        )
        .await
        .expect("create queue");
    let read = fixture
        .client
        .read_work_queue(&fixture.pool, "high")
        .await
        .unwrap();
    assert_eq!(read.id, queue.id);
    assert_eq!(read.work_pool_name.as_deref(), Some(fixture.pool.as_str()));

    let run = fixture
        .client
        .create_flow_run_from_deployment(
            fixture.deployment_id,
            &DeploymentFlowRunCreate {
                work_queue_name: Some("high".into()),
                ..DeploymentFlowRunCreate::default()
            },
        )
        .await
        .unwrap();
    let _in_default_queue = fixture.scheduled_run().await;

    let polled = fixture
        .client
        .get_scheduled_flow_runs(&fixture.pool, &["high".to_string()], Utc::now(), None)
        .await
        .unwrap();
    let ids: Vec<Uuid> = polled.iter().map(|entry| entry.flow_run.id).collect();
    assert_eq!(ids, vec![run.id]);
    assert_eq!(polled[0].work_queue_id, queue.id);

    let unknown_queue = fixture
        .client
        .get_scheduled_flow_runs(&fixture.pool, &["nope".to_string()], Utc::now(), None)
        .await;
    assert!(
        matches!(unknown_queue, Err(PrefectError::NotFound { .. })),
        "{unknown_queue:?}"
    );
    let unknown_pool = fixture
        .client
        .get_scheduled_flow_runs(&unique_name("no-such-pool"), &[], Utc::now(), None)
        .await;
    assert!(
        matches!(unknown_pool, Err(PrefectError::NotFound { .. })),
        "{unknown_pool:?}"
    );
}

#[tokio::test]
async fn claim_contract_matches_the_measured_server_behaviour() {
    let fixture = Fixture::new("claim").await;
    let run = fixture.scheduled_run().await;
    let scheduled = run.state.clone().expect("scheduled state");
    let ours = SubmissionKey::new(run.id, scheduled.id).claim_transition_id();

    // Scheduled -> Pending: ACCEPT, written (201).
    let first = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::pending_claim(ours), false)
        .await
        .unwrap();
    assert_eq!(first.status, SetStateStatus::Accept, "{first:#?}");
    assert!(first.new_state_written);
    let ClaimOutcome::Claimed(pending) = first.claim_outcome(ours) else {
        panic!("expected Claimed, got {first:#?}");
    };
    assert_eq!(pending.state_type, StateType::Pending);
    assert_eq!(pending.state_details.transition_id, Some(ours));

    // The same proposal again (a retry, a redelivered message): REJECT with
    // our own Pending state, which counts as our claim.
    let again = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::pending_claim(ours), false)
        .await
        .unwrap();
    assert_eq!(again.status, SetStateStatus::Reject, "{again:#?}");
    assert!(!again.new_state_written);
    assert_eq!(
        again.state.as_ref().map(|state| state.state_type),
        Some(StateType::Pending)
    );
    assert!(matches!(
        again.claim_outcome(ours),
        ClaimOutcome::Claimed(_)
    ));

    // A rival claim with another transition id: ABORT.
    let rival_id = Uuid::new_v4();
    let rival = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::pending_claim(rival_id), false)
        .await
        .unwrap();
    assert_eq!(rival.status, SetStateStatus::Abort, "{rival:#?}");
    assert!(matches!(
        rival.claim_outcome(rival_id),
        ClaimOutcome::Lost { reason: Some(_) }
    ));

    // Pending -> Pending named Submitting is allowed (name change).
    let submitting = fixture
        .client
        .set_flow_run_state(
            run.id,
            &StateCreate::new(StateType::Pending, "Submitting"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(submitting.status, SetStateStatus::Accept, "{submitting:#?}");

    // Once a later state is current, our own claim re-sent is ABORTed too:
    // the duplicate check compares with the current state only.
    let late_repeat = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::pending_claim(ours), false)
        .await
        .unwrap();
    assert_eq!(
        late_repeat.status,
        SetStateStatus::Abort,
        "{late_repeat:#?}"
    );

    let history = fixture.client.read_flow_run_states(run.id).await.unwrap();
    let names: Vec<&str> = history.iter().map(|state| state.display_name()).collect();
    // (The late-runs service may have added "Late" before the claim.)
    assert_eq!(
        history.first().map(|state| state.state_type),
        Some(StateType::Scheduled)
    );
    assert!(names.ends_with(&["Pending", "Submitting"]), "{names:?}");
}

#[tokio::test]
async fn a_claim_on_a_completed_run_is_accepted_so_callers_must_check_first() {
    let fixture = Fixture::new("stale").await;
    let run = fixture.scheduled_run().await;
    let scheduled_state_id = run.state.as_ref().unwrap().id;
    let claim_id = SubmissionKey::new(run.id, scheduled_state_id).claim_transition_id();
    for state in [
        StateCreate::pending_claim(claim_id),
        StateCreate::new(StateType::Running, "Running"),
        StateCreate::new(StateType::Completed, "Completed"),
    ] {
        let result = fixture
            .client
            .set_flow_run_state(run.id, &state, false)
            .await
            .unwrap();
        assert_eq!(
            result.status,
            SetStateStatus::Accept,
            "{state:?}: {result:#?}"
        );
    }

    // What a dispatcher must do with a stale message: read and compare.
    let current = fixture.client.read_flow_run(run.id).await.unwrap();
    assert_eq!(current.state_type, Some(StateType::Completed));
    assert!(!current.is_still_scheduled_as(scheduled_state_id));

    // What the server does if it does not: it accepts a fresh claim on the
    // finished run (§2.1), which would run the flow a second time.
    let stale_claim = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::pending_claim(Uuid::new_v4()), false)
        .await
        .unwrap();
    assert_eq!(
        stale_claim.status,
        SetStateStatus::Accept,
        "{stale_claim:#?}"
    );

    // A Crashed report on an already crashed run is ABORTed (a no-op).
    let crashed = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::crashed("pod vanished"), false)
        .await
        .unwrap();
    assert_eq!(crashed.status, SetStateStatus::Accept, "{crashed:#?}");
    let crashed_again = fixture
        .client
        .set_flow_run_state(run.id, &StateCreate::crashed("pod vanished"), false)
        .await
        .unwrap();
    assert_eq!(
        crashed_again.status,
        SetStateStatus::Abort,
        "{crashed_again:#?}"
    );
}

#[tokio::test]
async fn concurrent_rival_claims_have_exactly_one_winner() {
    let fixture = Fixture::new("race").await;
    let run = fixture.scheduled_run().await;
    let mut claims = Vec::new();
    for _ in 0..6 {
        let client = fixture.client.clone();
        claims.push(tokio::spawn(async move {
            let id = Uuid::new_v4();
            let result = client
                .set_flow_run_state(run.id, &StateCreate::pending_claim(id), false)
                .await
                .expect("claim (503 database-locked answers are retried)");
            result.claim_outcome(id)
        }));
    }
    let mut winners = 0;
    for claim in claims {
        match claim.await.unwrap() {
            ClaimOutcome::Claimed(_) => winners += 1,
            ClaimOutcome::Lost { .. } => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn infrastructure_pid_and_labels_are_recorded() {
    let fixture = Fixture::new("pid").await;
    let run = fixture.scheduled_run().await;
    assert_eq!(run.infrastructure_pid, None);
    fixture
        .client
        .update_flow_run_infrastructure_pid(run.id, "prefect:crimson-otter-x7k2p")
        .await
        .unwrap();
    let mut labels = serde_json::Map::new();
    labels.insert("prefect.worker.type".into(), json!("kubernetes"));
    labels.insert("prefect.work-pool.name".into(), json!(fixture.pool));
    fixture
        .client
        .update_flow_run_labels(run.id, &labels)
        .await
        .unwrap();

    let read = fixture.client.read_flow_run(run.id).await.unwrap();
    assert_eq!(
        read.infrastructure_pid.as_deref(),
        Some("prefect:crimson-otter-x7k2p")
    );
    let read_labels = read.labels.expect("labels");
    assert_eq!(
        read_labels.get("prefect.worker.type"),
        Some(&json!("kubernetes"))
    );
    assert_eq!(
        read_labels.get("prefect.work-pool.name"),
        Some(&json!(fixture.pool))
    );
    // The PATCH touched nothing else.
    assert_eq!(read.state_type, Some(StateType::Scheduled));
}

#[tokio::test]
async fn flow_runs_filter_by_ids_state_and_pool() {
    let fixture = Fixture::new("filter").await;
    let first = fixture.scheduled_run().await;
    let second = fixture.scheduled_run().await;
    let cancelled = fixture.scheduled_run().await;
    let result = fixture
        .client
        .set_flow_run_state(cancelled.id, &StateCreate::cancelled("test"), true)
        .await
        .unwrap();
    assert_eq!(result.status, SetStateStatus::Accept);

    let by_ids = fixture
        .client
        .read_flow_runs_by_ids(&[first.id, second.id, Uuid::new_v4()])
        .await
        .unwrap();
    let ids: HashSet<Uuid> = by_ids.iter().map(|run| run.id).collect();
    assert_eq!(ids, HashSet::from([first.id, second.id]));

    let scheduled_in_pool = fixture
        .client
        .read_flow_runs(
            &FlowRunFilter::default()
                .with_work_pool_names(vec![fixture.pool.clone()])
                .with_state_types(vec![StateType::Scheduled]),
        )
        .await
        .unwrap();
    let ids: HashSet<Uuid> = scheduled_in_pool.iter().map(|run| run.id).collect();
    assert_eq!(ids, HashSet::from([first.id, second.id]));

    let cancelled_by_name = fixture
        .client
        .read_flow_runs(
            &FlowRunFilter::default()
                .with_work_pool_names(vec![fixture.pool.clone()])
                .with_state_types(vec![StateType::Cancelled])
                .with_state_names(vec!["Cancelled".into()]),
        )
        .await
        .unwrap();
    assert_eq!(
        cancelled_by_name
            .iter()
            .map(|run| run.id)
            .collect::<Vec<_>>(),
        vec![cancelled.id]
    );

    let page = fixture
        .client
        .read_flow_runs(
            &FlowRunFilter::default()
                .with_deployment_ids(vec![fixture.deployment_id])
                .with_limit(2)
                .with_offset(1),
        )
        .await
        .unwrap();
    assert_eq!(page.len(), 2);

    let all = fixture
        .client
        .read_all_flow_runs(
            &FlowRunFilter::default().with_deployment_ids(vec![fixture.deployment_id]),
        )
        .await
        .unwrap();
    let ids: HashSet<Uuid> = all.iter().map(|run| run.id).collect();
    assert_eq!(ids, HashSet::from([first.id, second.id, cancelled.id]));
}

#[tokio::test]
async fn deployments_and_flows_are_read_by_id() {
    let fixture = Fixture::new("read").await;
    let deployment = fixture
        .client
        .read_deployment(fixture.deployment_id)
        .await
        .unwrap();
    assert_eq!(deployment.flow_id, fixture.flow_id);
    assert_eq!(
        deployment.work_pool_name.as_deref(),
        Some(fixture.pool.as_str())
    );
    assert_eq!(
        deployment.entrypoint.as_deref(),
        Some("flows/hello.py:hello")
    );
    assert_eq!(
        deployment.job_variables,
        json!({"env": {"FROM_DEPLOYMENT": "1"}})
    );

    let many = fixture
        .client
        .read_deployments_by_ids(&[fixture.deployment_id, Uuid::new_v4()])
        .await
        .unwrap();
    assert_eq!(
        many.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![fixture.deployment_id]
    );

    let flows = fixture
        .client
        .read_flows_by_ids(&[fixture.flow_id])
        .await
        .unwrap();
    assert_eq!(flows.len(), 1);
    let flow = fixture.client.read_flow(fixture.flow_id).await.unwrap();
    assert_eq!(flow.id, fixture.flow_id);

    let missing = fixture.client.read_deployment(Uuid::new_v4()).await;
    assert!(
        matches!(missing, Err(PrefectError::NotFound { .. })),
        "{missing:?}"
    );
    let missing_run = fixture.client.read_flow_run(Uuid::new_v4()).await;
    assert!(
        matches!(missing_run, Err(PrefectError::NotFound { .. })),
        "{missing_run:?}"
    );
    let missing_state = fixture
        .client
        .set_flow_run_state(Uuid::new_v4(), &StateCreate::crashed("x"), false)
        .await;
    assert!(
        matches!(missing_state, Err(PrefectError::NotFound { .. })),
        "{missing_state:?}"
    );
}

#[tokio::test]
async fn work_pool_lifecycle_and_heartbeat() {
    let client = tokio::task::spawn_blocking(client).await.unwrap();
    let name = unique_name("pool-lifecycle");
    let created = client
        .create_work_pool(&WorkPoolCreate::new(&name, "kubernetes", json!({})))
        .await
        .unwrap();
    assert_eq!(created.pool_type, "kubernetes");
    assert_eq!(created.base_job_template, json!({}));

    let duplicate = client
        .create_work_pool(&WorkPoolCreate::new(&name, "kubernetes", json!({})))
        .await;
    assert!(
        matches!(duplicate, Err(PrefectError::Conflict { .. })),
        "{duplicate:?}"
    );

    let template = job_manifest::default_base_job_template();
    client
        .update_work_pool_base_job_template(&name, &template)
        .await
        .unwrap();
    let read = client.read_work_pool(&name).await.unwrap();
    assert_eq!(read.base_job_template, template);
    assert_eq!(read.id, created.id);

    client
        .send_worker_heartbeat(&name, "prefect-client-tests", 30)
        .await
        .unwrap();
    let after_heartbeat = client.read_work_pool(&name).await.unwrap();
    assert_eq!(after_heartbeat.status.as_deref(), Some("READY"));

    let missing = client.read_work_pool(&unique_name("absent")).await;
    assert!(
        matches!(missing, Err(PrefectError::NotFound { .. })),
        "{missing:?}"
    );
    let heartbeat_missing = client
        .send_worker_heartbeat(&unique_name("absent"), "w", 30)
        .await;
    assert!(
        matches!(heartbeat_missing, Err(PrefectError::NotFound { .. })),
        "{heartbeat_missing:?}"
    );

    let reserved = client
        .create_work_pool(&WorkPoolCreate::new(
            unique_name("prefect-reserved"),
            "kubernetes",
            json!({}),
        ))
        .await;
    assert!(
        matches!(reserved, Err(PrefectError::Client { status: 403, .. })),
        "{reserved:?}"
    );
}

#[tokio::test]
async fn logs_are_stored_for_the_flow_run() {
    let fixture = Fixture::new("logs").await;
    let run = fixture.scheduled_run().await;
    let lines = vec![
        LogCreate::for_flow_run(
            run.id,
            "prefect.flow_runs.worker",
            log_level::INFO,
            "Pod scheduled",
        ),
        LogCreate::for_flow_run(
            run.id,
            "prefect.flow_runs.worker",
            log_level::WARNING,
            "Back-off pulling image \"nope:latest\"",
        ),
    ];
    fixture.client.create_logs(&lines).await.unwrap();
    fixture.client.create_logs(&[]).await.unwrap();

    let stored = fixture
        .client
        .read_flow_run_logs(run.id, 10, 0)
        .await
        .unwrap();
    let messages: Vec<(&str, u32)> = stored
        .iter()
        .map(|log| (log.message.as_str(), log.level))
        .collect();
    assert_eq!(
        messages,
        vec![
            ("Pod scheduled", log_level::INFO),
            ("Back-off pulling image \"nope:latest\"", log_level::WARNING)
        ]
    );
}

#[tokio::test]
async fn health_answers() {
    let client = tokio::task::spawn_blocking(client).await.unwrap();
    client.health().await.unwrap();
}

#[tokio::test]
async fn ensure_work_pool_creates_or_fills_an_empty_template() {
    let client = tokio::task::spawn_blocking(client).await.unwrap();
    let template = job_manifest::default_base_job_template();

    let fresh = unique_name("pool-ensure-new");
    let created = client
        .ensure_work_pool(&WorkPoolCreate::new(&fresh, "kubernetes", template.clone()))
        .await
        .unwrap();
    assert_eq!(created.base_job_template, template);
    let again = client
        .ensure_work_pool(&WorkPoolCreate::new(
            &fresh,
            "kubernetes",
            json!({"other": 1}),
        ))
        .await
        .unwrap();
    assert_eq!(again.id, created.id);
    assert_eq!(again.base_job_template, template, "a set template is kept");

    let empty = unique_name("pool-ensure-empty");
    client
        .create_work_pool(&WorkPoolCreate::new(&empty, "kubernetes", json!({})))
        .await
        .unwrap();
    let filled = client
        .ensure_work_pool(&WorkPoolCreate::new(&empty, "kubernetes", template.clone()))
        .await
        .unwrap();
    assert_eq!(filled.base_job_template, template);
}

#[tokio::test]
async fn concurrent_writes_to_the_sqlite_server_all_succeed() {
    let fixture = Fixture::new("writes").await;
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(fixture.scheduled_run().await);
    }
    let mut writes = Vec::new();
    for run in runs {
        let client = fixture.client.clone();
        writes.push(tokio::spawn(async move {
            let claim_id =
                SubmissionKey::new(run.id, run.state.as_ref().unwrap().id).claim_transition_id();
            let claim = client
                .set_flow_run_state(run.id, &StateCreate::pending_claim(claim_id), false)
                .await?;
            client
                .update_flow_run_infrastructure_pid(run.id, &format!("prefect:job-{}", run.id))
                .await?;
            client
                .create_logs(&[LogCreate::for_flow_run(
                    run.id,
                    "prefect.flow_runs.worker",
                    log_level::INFO,
                    "submitted",
                )])
                .await?;
            Ok::<_, PrefectError>((run.id, claim.claim_outcome(claim_id)))
        }));
    }
    for write in writes {
        let (run_id, outcome) = write.await.unwrap().expect("every write succeeds");
        assert!(
            matches!(outcome, ClaimOutcome::Claimed(_)),
            "{run_id}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn running_before_the_scheduled_time_is_answered_with_wait() {
    let fixture = Fixture::new("wait").await;
    let mut scheduled = StateCreate::new(StateType::Scheduled, "Scheduled");
    scheduled.state_details.scheduled_time = Some(Utc::now() + TimeDelta::hours(1));
    let run = fixture
        .client
        .create_flow_run_from_deployment(
            fixture.deployment_id,
            &DeploymentFlowRunCreate {
                state: Some(scheduled),
                ..DeploymentFlowRunCreate::default()
            },
        )
        .await
        .unwrap();

    let not_due = fixture
        .client
        .get_scheduled_flow_runs(&fixture.pool, &[], Utc::now(), None)
        .await
        .unwrap();
    assert!(not_due.is_empty(), "{not_due:#?}");

    let early = fixture
        .client
        .set_flow_run_state(
            run.id,
            &StateCreate::new(StateType::Running, "Running"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(early.status, SetStateStatus::Wait, "{early:#?}");
    let claim_id = Uuid::new_v4();
    match early.claim_outcome(claim_id) {
        ClaimOutcome::Wait { delay_seconds } => assert!(delay_seconds > 3000, "{delay_seconds}"),
        other => panic!("expected Wait, got {other:?}"),
    }
}

/// Polls `read` until it returns `Some`, for up to a minute (the server stores
/// events asynchronously, in batches).
async fn eventually<T, F, Fut>(read: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let within = std::time::Duration::from_secs(60);
    let every = std::time::Duration::from_millis(500);
    test_stack::wait::eventually("the event", within, every, read).await
}

#[tokio::test]
async fn events_are_stored_once_per_id_and_read_back_by_id_and_related_resource() {
    let fixture = Fixture::new("events").await;
    let run = fixture.scheduled_run().await;
    let pod = Uuid::new_v4();
    let event = prefect_client::Event {
        id: Uuid::new_v4(),
        event: "prefect.kubernetes.pod.pending".into(),
        occurred: Utc::now() - TimeDelta::seconds(5),
        resource: [
            (
                "prefect.resource.id".to_string(),
                format!("prefect.kubernetes.pod.{pod}"),
            ),
            ("prefect.resource.name".to_string(), "pod-1".to_string()),
            ("kubernetes.namespace".to_string(), "default".to_string()),
        ]
        .into(),
        related: vec![[
            (
                "prefect.resource.id".to_string(),
                format!("prefect.flow-run.{}", run.id),
            ),
            ("prefect.resource.role".to_string(), "flow-run".to_string()),
            ("prefect.resource.name".to_string(), run.name.clone()),
        ]
        .into()],
        payload: Default::default(),
        follows: None,
    };
    let client = &fixture.client;
    client
        .create_events(std::slice::from_ref(&event))
        .await
        .unwrap();
    // The same id again (a re-send after a lost answer): stored once.
    client
        .create_events(std::slice::from_ref(&event))
        .await
        .unwrap();
    let since = Utc::now() - TimeDelta::hours(1);
    let until = Utc::now() + TimeDelta::hours(1);
    let stored = eventually(|| async {
        let ids = client
            .stored_event_ids(&[event.id, Uuid::new_v4()], since, until)
            .await
            .unwrap();
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    assert_eq!(stored, vec![event.id]);
    let related = prefect_client::EventFilter {
        since: Some(since),
        until: Some(until),
        name_prefixes: Some(vec!["prefect.kubernetes.pod.".into()]),
        related_ids: Some(vec![format!("prefect.flow-run.{}", run.id)]),
        ..Default::default()
    };
    let read = client.read_events(&related).await.unwrap();
    assert_eq!(read.len(), 1, "{read:#?}");
    assert_eq!(read[0].resource, event.resource);
    assert_eq!(read[0].related_in_role("flow-run"), event.related.first());
    assert_eq!(read[0].event, "prefect.kubernetes.pod.pending");
}

#[tokio::test]
async fn runs_are_counted_by_pool_state_and_due_time() {
    let fixture = Fixture::new("count").await;
    let due = fixture.scheduled_run().await;
    let mut later = StateCreate::new(StateType::Scheduled, "Scheduled");
    later.state_details.scheduled_time = Some(Utc::now() + TimeDelta::hours(1));
    fixture
        .client
        .create_flow_run_from_deployment(
            fixture.deployment_id,
            &DeploymentFlowRunCreate {
                state: Some(later),
                ..DeploymentFlowRunCreate::default()
            },
        )
        .await
        .unwrap();
    let in_pool = FlowRunFilter::default().with_work_pool_names(vec![fixture.pool.clone()]);
    let count = |filter: FlowRunFilter| {
        let client = fixture.client.clone();
        async move { client.count_flow_runs(&filter).await.unwrap() }
    };
    let scheduled = in_pool.clone().with_state_types(vec![StateType::Scheduled]);
    assert_eq!(count(scheduled.clone().with_limit(1)).await, 2);
    let now_due = FlowRunFilter {
        scheduled_before: Some(Utc::now()),
        ..scheduled
    };
    assert_eq!(count(now_due).await, 1);
    fixture
        .client
        .set_flow_run_state(due.id, &StateCreate::pending_claim(Uuid::new_v4()), false)
        .await
        .unwrap();
    assert_eq!(
        count(in_pool.with_state_types(vec![StateType::Pending])).await,
        1
    );
}

/// The live event stream brings a run's `prefect.flow-run.Scheduled` event
/// as it happens, only for the pool the filter names, and stays open past the
/// client's request timeout (which bounds only its opening).
#[tokio::test]
async fn the_event_stream_brings_scheduled_runs_of_one_pool_as_they_happen() {
    let fixture = Fixture::new("stream").await;
    let other = Fixture::new("stream-other").await;
    let pool = fixture.client.read_work_pool(&fixture.pool).await.unwrap();
    let server = PrefectServer::shared();
    let short = PrefectClient::new(
        ClientConfig::new(&server.api_url())
            .unwrap()
            .with_request_timeout(std::time::Duration::from_secs(2)),
    )
    .unwrap();
    let filter = prefect_client::EventFilter {
        names: Some(vec!["prefect.flow-run.Scheduled".into()]),
        any_resource_ids: Some(vec![format!("prefect.work-pool.{}", pool.id)]),
        ..Default::default()
    };
    let mut stream = short.subscribe_events(&filter).await.unwrap();
    // Longer than the request timeout: the open stream must survive it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    other.scheduled_run().await;
    let run = fixture.scheduled_run().await;
    let event = stream
        .next_event(std::time::Duration::from_secs(10))
        .await
        .expect("the Scheduled event within 10 s")
        .expect("an event, not the end of the stream");
    assert_eq!(event.event, "prefect.flow-run.Scheduled");
    assert_eq!(
        event.resource_id(),
        Some(format!("prefect.flow-run.{}", run.id).as_str()),
        "the other pool's run is filtered out by the server"
    );
}
