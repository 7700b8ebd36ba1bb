//! Reading back log lines that share timestamps, against a real Prefect 3.9.1
//! server on PostgreSQL (SQLite when PostgreSQL is not at 127.0.0.1:5432, where
//! the ties below are read in a stable order anyway). Prefect sorts logs by
//! timestamp alone; on PostgreSQL offset pages over equal timestamps skip
//! lines at page boundaries, and the reporter's check of which Event lines a
//! failed send stored relies on this read missing nothing.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use prefect_client::{log_level, ClientConfig, LogCreate, PrefectClient};
use test_stack::postgres::Database;
use test_stack::prefect::{PrefectServer, PrefectServerOptions};
use uuid::Uuid;

const RUNS: usize = 3;
const SECONDS: i64 = 3;
const LINES_PER_RUN_AND_SECOND: usize = 150;

fn server() -> (PrefectServer, Option<Database>) {
    let database = if Database::postgres_available() {
        Some(Database::create(&format!("logs_read_back_{}", std::process::id())).unwrap())
    } else {
        eprintln!("PostgreSQL is not at 127.0.0.1:5432: this test runs on SQLite");
        None
    };
    let extra_env = database
        .iter()
        .map(|db| {
            let url = db.connection_url();
            ("PREFECT_API_DATABASE_CONNECTION_URL".to_owned(), url)
        })
        .collect();
    let options = PrefectServerOptions {
        extra_env,
        ..PrefectServerOptions::default()
    };
    (PrefectServer::start_with(options), database)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_sharing_timestamps_are_all_read_back_once() {
    let (server, _database) = server();
    let client = PrefectClient::new(ClientConfig::new(&server.api_url()).unwrap()).unwrap();
    let runs: Vec<Uuid> = (0..RUNS).map(|_| Uuid::new_v4()).collect();
    // Stamped to the second, as Kubernetes stamps Events.
    let start = chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let mut sent = HashSet::new();
    for second in 0..SECONDS {
        let mut batch = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            for n in 0..LINES_PER_RUN_AND_SECOND {
                let message = format!("run {r} second {second} line {n}");
                let mut line = LogCreate::for_flow_run(*run, "tie", log_level::INFO, &message);
                line.timestamp = start + TimeDelta::seconds(second);
                sent.insert((*run, message));
                batch.push(line);
            }
        }
        client.create_logs(&batch).await.unwrap();
    }

    let read = client
        .read_logs_between(
            &runs,
            start - TimeDelta::seconds(1),
            start + TimeDelta::seconds(SECONDS),
        )
        .await
        .unwrap();
    let got: HashSet<(Uuid, String)> = read
        .into_iter()
        .map(|log| (log.flow_run_id.unwrap(), log.message))
        .collect();
    let missing = sent.difference(&got).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} lines not read back",
        sent.len()
    );
    assert_eq!(got.len(), sent.len());
}
