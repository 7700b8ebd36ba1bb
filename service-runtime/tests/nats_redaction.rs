//! NATS credentials never reach a log line or an error, even at
//! `RUST_LOG=trace`: a password or token given in `NATS_URL` or as
//! `--nats-password` is absent from everything the services' log set-up
//! lets through while connecting, working, failing to connect and failing to
//! parse the URL. (One test in this binary: it sets `RUST_LOG`.)

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use service_runtime::nats::{connect, ensure_streams, NatsOptions};
use service_runtime::nats_auth::{authorization, random_password, NatsUser, POLLER_PASSWORD_ENV};
use test_stack::nats::NatsServer;

/// Everything written to the log, kept for inspection.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_token_appears_in_any_log_line_or_error() {
    std::env::set_var("RUST_LOG", "trace");
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(service_runtime::telemetry::filter())
        .with_writer(log.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let password = random_password();
    let server = NatsServer::start_with_config(
        &authorization(&[NatsUser::poller("p")]),
        &[(POLLER_PASSWORD_ENV, password.as_str())],
    );
    let port = server.port();
    let in_url = NatsOptions::plain(format!(
        "nats://prefect-k8s-poller:{password}@127.0.0.1:{port}"
    ));
    let client = connect(&in_url, "redaction-test").await.expect("connects");
    ensure_streams(&async_nats::jetstream::new(client.clone()), 1)
        .await
        .expect("the credentials in the URL work");
    let as_flags = NatsOptions::with_user(server.url(), "prefect-k8s-poller", &password);
    let client = connect(&as_flags, "redaction-test-2")
        .await
        .expect("connects");
    client.flush().await.expect("the credentials as flags work");

    // A server that is not there, and one refusing the password.
    let closed = test_stack::ports::free_port();
    let _away = connect(
        &NatsOptions::plain(format!("nats://someone:away-{password}@127.0.0.1:{closed}")),
        "away",
    )
    .await;
    let _refused = connect(
        &NatsOptions::plain(format!("nats://tok-{password}@127.0.0.1:{port}")),
        "refused",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unparsable = connect(
        &NatsOptions::plain(format!("nats://u:bad-{password}@no such host:99999999")),
        "unparsable",
    )
    .await
    .expect_err("the URL cannot be parsed");
    let error = format!("{unparsable} {unparsable:?} {as_flags:?} {in_url:?}");
    assert!(!error.contains(&password), "{error}");
    assert!(error.contains("***@no such host"), "{error}");

    let text = String::from_utf8_lossy(&log.0.lock()).into_owned();
    assert!(text.contains("connected to NATS"), "the log was captured");
    assert!(
        text.contains("attempting connection"),
        "async-nats' own lines, with server addresses, were let through:\n{text}"
    );
    assert!(!text.contains(&password), "a password leaked into the log");
}
