//! A PostgreSQL database of its own for a Prefect server (a campaign, a test
//! of behaviour SQLite does not show): created fresh (unique name) through
//! `psql` at 127.0.0.1:5432, dropped at the end.

use std::process::{Command, Stdio};

/// A database at 127.0.0.1:5432 owned by its creator.
pub struct Database {
    name: String,
}

impl Database {
    /// True when PostgreSQL answers at 127.0.0.1:5432 as user `postgres`.
    pub fn postgres_available() -> bool {
        psql("select 1").is_ok()
    }

    pub fn create(name: &str) -> Result<Database, String> {
        psql(&format!("drop database if exists {name} with (force)"))?;
        psql(&format!("create database {name}"))?;
        Ok(Database {
            name: name.to_owned(),
        })
    }

    /// What the Prefect server's `PREFECT_API_DATABASE_CONNECTION_URL` is.
    pub fn connection_url(&self) -> String {
        format!("postgresql+asyncpg://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Dropped with its owner, even when it ends early.
impl Drop for Database {
    fn drop(&mut self) {
        if let Err(error) = psql(&format!(
            "drop database if exists {} with (force)",
            self.name
        )) {
            tracing::warn!(%error, database = %self.name, "could not drop a test database");
        }
    }
}

fn psql(sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
        ])
        .arg(sql)
        .env("PGCONNECT_TIMEOUT", "3")
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running psql: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
