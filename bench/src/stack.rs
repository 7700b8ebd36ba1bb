//! The real parts every benchmark runs against: a Prefect 3.9.1 server
//! (PostgreSQL by default, logging every request), nats-server, the
//! Kubernetes API emulator (its pods keep running: only submission is
//! measured) and a directory for the processes' logs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use prefect_client::{ClientConfig, PrefectClient};
use test_stack::nats::NatsServer;
use test_stack::postgres::Database;
use test_stack::prefect::{PrefectServer, PrefectServerOptions};

use crate::agents::Endpoints;
use crate::server_log::ACCESS_LOG_ENV;

/// The running parts (stopped on drop).
pub struct BenchStack {
    pub server: PrefectServer,
    pub prefect: PrefectClient,
    pub kube: kube::Client,
    pub endpoints: Endpoints,
    pub database: Option<Database>,
    pub emulator: kube_emulator::Emulator,
    _nats: NatsServer,
}

impl BenchStack {
    /// Starts everything; `database` is `postgres` (127.0.0.1:5432) or
    /// `sqlite`; logs go to `logs`, or a new temp dir that is kept.
    pub async fn start(database: &str, logs: Option<PathBuf>) -> anyhow::Result<BenchStack> {
        let database = match database {
            "postgres" => Some(
                Database::create(&format!("prefect_bench_{}", std::process::id()))
                    .map_err(anyhow::Error::msg)?,
            ),
            "sqlite" => None,
            other => bail!("unknown database {other:?} (postgres or sqlite)"),
        };
        let mut extra_env = vec![(ACCESS_LOG_ENV.0.to_owned(), ACCESS_LOG_ENV.1.to_owned())];
        if let Some(db) = &database {
            extra_env.push((
                "PREFECT_API_DATABASE_CONNECTION_URL".into(),
                db.connection_url(),
            ));
        }
        let server = PrefectServer::start_with(PrefectServerOptions {
            extra_env,
            ..Default::default()
        });
        let prefect = PrefectClient::new(ClientConfig::new(&server.api_url())?)?;
        let nats = NatsServer::start();
        let emulator = kube_emulator::Emulator::start(kube_emulator::EmulatorConfig {
            scripted_default_run: Duration::from_secs(3600),
            ..kube_emulator::EmulatorConfig::fast()
        })
        .await?;
        let logs = match logs {
            Some(dir) => dir,
            None => tempfile::Builder::new()
                .prefix("bench-logs-")
                .tempdir()?
                .keep(),
        };
        std::fs::create_dir_all(&logs)?;
        let endpoints = Endpoints {
            prefect_api_url: server.api_url(),
            nats_url: nats.url(),
            kubeconfig: emulator.kubeconfig_path().to_owned(),
            logs,
        };
        Ok(BenchStack {
            kube: emulator.client()?,
            server,
            prefect,
            endpoints,
            database,
            emulator,
            _nats: nats,
        })
    }

    /// One line on what ran: database, cores, where the logs are.
    pub fn describe(&self) -> String {
        format!(
            "Prefect 3.9.1 on {}; {} cores; logs in {}",
            if self.database.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            self.endpoints.logs.display()
        )
    }
}
