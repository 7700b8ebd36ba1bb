//! The work pool the poller serves: created with prefect-kubernetes 0.8's
//! default base job template when missing (so existing deployments work
//! unchanged), given that template when its own is empty, and heartbeated
//! so Prefect shows the worker online and the pool ready.

use std::time::Duration;

use prefect_client::{PrefectClient, WorkPool, WorkPoolCreate};
use service_runtime::health::Health;
use tokio_util::sync::CancellationToken;

use crate::{PollerConfig, PollerError};

/// prefect-kubernetes 0.8.0's default base job template, exactly (one copy, in `job-manifest`).
pub use job_manifest::DEFAULT_BASE_JOB_TEMPLATE;

/// The template to create the pool with: the configured file or the default.
pub fn base_job_template(config: &PollerConfig) -> Result<serde_json::Value, PollerError> {
    let text = match &config.base_job_template {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| PollerError::Template(format!("{}: {e}", path.display())))?,
        None => DEFAULT_BASE_JOB_TEMPLATE.to_string(),
    };
    let template: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PollerError::Template(e.to_string()))?;
    if template.get("job_configuration").is_none() || template.get("variables").is_none() {
        return Err(PollerError::Template(
            "a base job template needs `job_configuration` and `variables`".into(),
        ));
    }
    Ok(template)
}

/// Reads the pool, creating it or filling its empty template as needed.
pub async fn ensure_work_pool(
    prefect: &PrefectClient,
    config: &PollerConfig,
) -> Result<WorkPool, PollerError> {
    let template = base_job_template(config)?;
    let pool = match prefect.read_work_pool(&config.pool.work_pool).await {
        Ok(pool) => pool,
        Err(e) if e.is_not_found() => {
            tracing::info!(work_pool = %config.pool.work_pool, "work pool not found; creating it (type kubernetes)");
            match prefect
                .create_work_pool(&WorkPoolCreate::new(
                    &config.pool.work_pool,
                    "kubernetes",
                    template.clone(),
                ))
                .await
            {
                Ok(pool) => pool,
                // Another poller created it first.
                Err(prefect_client::PrefectError::Conflict { .. }) => {
                    prefect.read_work_pool(&config.pool.work_pool).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let empty = pool
        .base_job_template
        .as_object()
        .map(|o| o.is_empty())
        .unwrap_or(true);
    if empty {
        tracing::info!(work_pool = %config.pool.work_pool, "work pool has no base job template; setting the default");
        prefect
            .update_work_pool_base_job_template(&config.pool.work_pool, &template)
            .await?;
        return Ok(prefect.read_work_pool(&config.pool.work_pool).await?);
    }
    if pool.pool_type != "kubernetes" {
        tracing::warn!(work_pool = %pool.name, pool_type = %pool.pool_type, "work pool is not of type kubernetes");
    }
    Ok(pool)
}

/// [`ensure_work_pool`], tried again while Prefect fails in a way that goes
/// away by itself (unreachable, 5xx, 429), with a backoff from 1 s to 30 s:
/// a server restarting under the poller is waited for, not a reason to exit.
/// Each attempt is a liveness beat (waiting is progress; readiness stays off).
/// `None` when `shutdown` comes first; other errors (a bad API key, a bad
/// template) end the poller at once.
pub async fn ensure_work_pool_patiently(
    prefect: &PrefectClient,
    config: &PollerConfig,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<Option<WorkPool>, PollerError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        health.beat();
        match ensure_work_pool(prefect, config).await {
            Ok(pool) => return Ok(Some(pool)),
            Err(PollerError::Prefect(error)) if error.is_retryable() => {
                tracing::warn!(work_pool = %config.pool.work_pool, %error, retry_in = ?backoff, "reading the work pool failed; will retry");
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Heartbeats until cancelled. A failed heartbeat is logged; the next one
/// comes at the next interval.
pub async fn heartbeat_loop(
    prefect: PrefectClient,
    config: PollerConfig,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(config.heartbeat_interval());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(error) = prefect
            .send_worker_heartbeat(
                &config.pool.work_pool,
                &config.pool.worker_name,
                config.heartbeat_seconds.min(u32::MAX as u64) as u32,
            )
            .await
        {
            tracing::warn!(%error, "worker heartbeat failed");
        }
    }
}
