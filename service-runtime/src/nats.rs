//! NATS: how a service connects (`NATS_URL` and credentials/TLS options) and
//! the JetStream streams and consumers all services agree on.
//!
//! - `PREFECT_K8S_FLOW_RUNS`: a WorkQueue stream on `flow-runs.due.>`, file
//!   storage, no age or count limit (an unprocessed run is never dropped),
//!   a 10 minute duplicate window keyed on `<flow run id>:<state id>`.
//! - `PREFECT_K8S_DEAD_LETTERS`: a Limits stream on `flow-runs.dead.>` kept 14
//!   days, where undecodable or hopeless messages are parked.
//! - One durable pull consumer per work pool, `dispatcher-<pool>`, filtered to
//!   that pool's subject and shared by every dispatcher replica of the pool.
//!
//! Credentials in `NATS_URL` are taken out of it before it reaches the client
//! library; errors and `Debug` show the URL redacted. A user's replies come on
//! an inbox of its own (`_INBOX.<user>`), which its NATS permissions name
//! (see [`crate::nats_auth`]).

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use flow_run_proto::subjects;

use prefect_client::Secret;

use crate::nats_url::{ServerList, UrlCredentials};

pub use crate::nats_url::redacted as redacted_url;

/// How to reach NATS. Flags with environment fallbacks. `Debug` never shows
/// the password (a [`Secret`]) nor credentials in the URL (redacted here,
/// the one field that needs it).
#[derive(Clone, clap::Args)]
pub struct NatsOptions {
    /// NATS server URL(s), comma separated. Credentials in a URL
    /// (`nats://user:password@host`, `nats://token@host`) are used unless
    /// --nats-user is given, and never shown.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub url: String,
    /// A NATS credentials file (JWT + nkey seed).
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds_file: Option<PathBuf>,
    /// User name for user/password authentication.
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    /// Password for user/password authentication.
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<Secret>,
    /// A CA certificate (PEM) to verify the server; implies TLS.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    #[arg(long = "nats-tls-cert", env = "NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long = "nats-tls-key", env = "NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Subject prefix of this client's reply inboxes (default: `_INBOX.<user>`
    /// with --nats-user, else `_INBOX`); its NATS permissions must let it
    /// subscribe to `<prefix>.>`.
    #[arg(long = "nats-inbox-prefix", env = "NATS_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &redacted_url(&self.url))
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

impl NatsOptions {
    /// Options for a plain, unauthenticated server at `url` (tests, local dev).
    pub fn plain(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            creds_file: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: None,
        }
    }

    /// Options for user/password authentication at `url`.
    pub fn with_user(url: impl Into<String>, user: &str, password: &str) -> Self {
        NatsOptions {
            user: Some(user.to_owned()),
            password: Some(Secret::from(password)),
            ..NatsOptions::plain(url)
        }
    }

    /// The reply-inbox prefix: the flag, else `_INBOX.<user>` for the user
    /// who logs in (or, without a login, the one named by --nats-user), else
    /// `_INBOX`.
    pub fn effective_inbox_prefix(&self) -> String {
        if let Some(prefix) = self.inbox_prefix.as_deref().filter(|p| !p.is_empty()) {
            return prefix.to_owned();
        }
        let user = match self.login() {
            Some(UrlCredentials::UserPassword { user, .. }) => Some(user),
            Some(UrlCredentials::Token(_)) => None,
            None => self.user.clone(),
        };
        crate::nats_auth::inbox_prefix(user.as_deref())
    }

    /// The credentials sent: --nats-user with --nats-password, else those in
    /// the URL.
    fn login(&self) -> Option<UrlCredentials> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(UrlCredentials::UserPassword {
                user: user.clone(),
                password: password.expose().to_owned(),
            }),
            _ => ServerList::parse(&self.url).credentials,
        }
    }
}

/// Errors reaching NATS or setting up streams.
#[derive(Debug, thiserror::Error)]
pub enum NatsSetupError {
    #[error("reading NATS credentials file {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `url` is redacted: no userinfo, no token.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("creating JetStream stream {name}: {message}")]
    Stream { name: String, message: String },
    #[error("creating JetStream consumer {name}: {message}")]
    Consumer { name: String, message: String },
}

/// Connects, retrying in the background while the server is away: the first
/// connection attempt is retried too, so services can start before NATS.
/// Errors show the URL redacted.
pub async fn connect(
    options: &NatsOptions,
    client_name: &str,
) -> Result<async_nats::Client, NatsSetupError> {
    let servers = ServerList::parse(&options.url);
    let connect = connect_options(options, client_name).await?;
    connect
        .connect(servers.servers.as_str())
        .await
        .map_err(|source| NatsSetupError::Connect {
            url: redacted_url(&options.url),
            source,
        })
}

async fn connect_options(
    options: &NatsOptions,
    client_name: &str,
) -> Result<async_nats::ConnectOptions, NatsSetupError> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(client_name)
        .custom_inbox_prefix(options.effective_inbox_prefix())
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move { log_event(event) });
    if let Some(path) = &options.creds_file {
        connect =
            connect
                .credentials_file(path)
                .await
                .map_err(|source| NatsSetupError::Credentials {
                    path: path.clone(),
                    source,
                })?;
    }
    connect = match options.login() {
        Some(UrlCredentials::UserPassword { user, password }) => {
            connect.user_and_password(user, password)
        }
        Some(UrlCredentials::Token(token)) => connect.token(token),
        None => connect,
    };
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(connect)
}

/// Connection events as log lines. A server error (a refused login, a
/// permissions violation) is a warning: it means a misconfiguration.
fn log_event(event: async_nats::Event) {
    match event {
        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
        async_nats::Event::Connected => tracing::info!("connected to NATS"),
        async_nats::Event::ServerError(error) => {
            tracing::warn!(%error, "the NATS server refused a request of ours")
        }
        other => tracing::debug!(event = %other, "NATS event"),
    }
}

/// Stream settings of the due-runs work queue, stored on `replicas` servers
/// (1 for a single server; 3 for a three-node JetStream cluster).
pub fn flow_runs_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::FLOW_RUNS_STREAM.to_string(),
        subjects: vec![format!("{}.>", subjects::DUE_PREFIX)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: Duration::from_secs(600),
        // Back-pressure instead of loss: never drop an unprocessed run.
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Stream settings of the dead-letter stream.
pub fn dead_letter_stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: subjects::DEAD_LETTER_STREAM.to_string(),
        subjects: vec![format!("{}.>", subjects::DEAD_PREFIX)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        max_age: Duration::from_secs(14 * 24 * 3600),
        ..Default::default()
    }
}

/// Creates both streams if they are missing; leaves existing ones as they are.
///
/// Services start together (a poller and several dispatchers), so two may
/// race to create a stream: the loser's create fails (as "subjects overlap"
/// on 2.9) while the stream now exists. A failed create is therefore followed
/// by another look-up before it counts as an error. `replicas` applies when a
/// stream is created; an existing stream keeps its own.
pub async fn ensure_streams(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<(stream::Stream, stream::Stream), NatsSetupError> {
    let flow_runs = ensure_stream(js, flow_runs_stream_config(replicas)).await?;
    let dead = ensure_stream(js, dead_letter_stream_config(replicas)).await?;
    Ok((flow_runs, dead))
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NatsSetupError> {
    const ATTEMPTS: u32 = 5;
    let name = config.name.clone();
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                last_error = error.to_string();
                if let Ok(stream) = js.get_stream(&name).await {
                    return Ok(stream);
                }
                tracing::debug!(stream = %name, attempt, error = %last_error, "stream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
        }
    }
    Err(NatsSetupError::Stream {
        name,
        message: last_error,
    })
}

/// The shared durable pull consumer of a work pool's dispatchers.
///
/// `ack_wait` is how long a dispatcher may hold a message without acking or
/// sending progress before the server hands it to another replica.
/// `max_deliver` is unlimited: a run is never parked silently by the server;
/// the dispatcher itself dead-letters a message it has failed too often.
pub async fn dispatcher_consumer(
    flow_runs: &stream::Stream,
    work_pool: &str,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> Result<consumer::PullConsumer, NatsSetupError> {
    let name = subjects::dispatcher_consumer(work_pool);
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subjects::due_subject(work_pool),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait,
        max_deliver: -1,
        max_ack_pending,
        ..Default::default()
    };
    // Create, or update an existing durable to these settings (nats-server
    // 2.9 updates the editable fields of a durable re-created under its
    // name). Replicas start together and race to create it; the loser looks
    // it up again (see `ensure_stream`).
    let mut last_error = String::new();
    for attempt in 1..=5u64 {
        match flow_runs.create_consumer(config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(error) => {
                last_error = error.to_string();
                if let Ok(consumer) = flow_runs.get_consumer(&name).await {
                    tracing::warn!(consumer = %name, error = %last_error,
                        "could not update the consumer's settings; using it as it is");
                    return Ok(consumer);
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
    Err(NatsSetupError::Consumer {
        name,
        message: last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let mut options = NatsOptions::plain("nats://127.0.0.1:4222");
        options.user = Some("agent".into());
        options.password = Some("s3cr3t-pass".into());
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cr3t-pass"), "{shown}");
        assert!(shown.contains("agent"));
        let in_url = NatsOptions::plain("nats://agent:url-pass@nats:4222,nats://tok3n@nats-1:4222");
        let shown = format!("{in_url:?}");
        assert!(
            !shown.contains("url-pass") && !shown.contains("tok3n"),
            "{shown}"
        );
    }

    #[test]
    fn each_user_gets_an_inbox_of_its_own() {
        assert_eq!(
            NatsOptions::plain("nats://h:4222").effective_inbox_prefix(),
            "_INBOX"
        );
        let poller = NatsOptions::with_user("nats://h:4222", "prefect-k8s-poller", "x");
        assert_eq!(poller.effective_inbox_prefix(), "_INBOX.prefect-k8s-poller");
        let in_url = NatsOptions::plain("nats://prefect-k8s-dispatcher:pw@h:4222");
        assert_eq!(
            in_url.effective_inbox_prefix(),
            "_INBOX.prefect-k8s-dispatcher"
        );
        let half = NatsOptions {
            user: Some("prefect-k8s-poller".into()),
            ..NatsOptions::plain("nats://in-url:pw@h:4222")
        };
        assert_eq!(
            half.effective_inbox_prefix(),
            "_INBOX.in-url",
            "a user without a password does not log in; the URL's does"
        );
        let chosen = NatsOptions {
            inbox_prefix: Some("_R.mine".into()),
            ..poller
        };
        assert_eq!(chosen.effective_inbox_prefix(), "_R.mine");
    }

    #[test]
    fn streams_keep_every_run_on_the_configured_replicas() {
        let queue = flow_runs_stream_config(3);
        assert_eq!(queue.num_replicas, 3);
        assert_eq!(queue.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(queue.discard, stream::DiscardPolicy::New);
        assert_eq!(queue.max_age, Duration::ZERO);
        assert_eq!(dead_letter_stream_config(0).num_replicas, 1);
    }
}
