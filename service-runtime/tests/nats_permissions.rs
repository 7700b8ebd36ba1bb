//! The NATS users of `nats_auth::authorization` on a real nats-server 2.9:
//! each service's user can make every call its service makes (the streams'
//! set-up with `ensure_streams`, the pool's consumer with
//! `dispatcher_consumer`, publishing, pulling, acking and dead-lettering as
//! the services do), and anything else — another pool's subject or consumer,
//! someone else's inbox, the streams' administration, reading the work
//! queue — is refused with a permissions violation and changes nothing.
//! Nobody gets in without a password.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::StreamExt;
use parking_lot::Mutex;
use service_runtime::nats::{dispatcher_consumer, ensure_streams, NatsOptions};
use service_runtime::nats_auth::{authorization, random_password, NatsUser};
use test_stack::nats::NatsServer;
use tokio::sync::Notify;

use flow_run_proto::subjects::{self, FLOW_RUNS_STREAM};

const POOL_A: &str = "pool-a";
const POOL_B: &str = "pool-b";

/// Two pools on one server: pool A's users have the default names.
struct Users {
    list: Vec<NatsUser>,
    passwords: Vec<(String, String)>,
}

impl Users {
    fn new() -> Users {
        let list = vec![
            NatsUser::poller(POOL_A),
            NatsUser::dispatcher(POOL_A),
            NatsUser::poller(POOL_B).named("poller-b", "POLLER_B_PASSWORD"),
            NatsUser::dispatcher(POOL_B).named("dispatcher-b", "DISPATCHER_B_PASSWORD"),
        ];
        let passwords = list
            .iter()
            .map(|user| (user.password_env.clone(), random_password()))
            .collect();
        Users { list, passwords }
    }

    fn password_of(&self, name: &str) -> &str {
        let user = self.list.iter().find(|u| u.name == name).expect("a user");
        let (_, password) = self
            .passwords
            .iter()
            .find(|(env, _)| *env == user.password_env)
            .expect("a password");
        password
    }

    fn start_server(&self) -> NatsServer {
        let env: Vec<(&str, &str)> = self
            .passwords
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        NatsServer::start_with_config(&authorization(&self.list), &env)
    }
}

/// A client of one user, connected as the services connect (their inbox
/// prefix), that records the errors the server sends it.
struct Session {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
    news: Arc<Notify>,
}

impl Session {
    async fn open(server: &NatsServer, users: &Users, name: &str) -> Session {
        let options = NatsOptions::with_user(server.url(), name, users.password_of(name));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let news = Arc::new(Notify::new());
        let (sink, notify) = (errors.clone(), news.clone());
        let client = async_nats::ConnectOptions::new()
            .user_and_password(name.into(), users.password_of(name).into())
            .custom_inbox_prefix(options.effective_inbox_prefix())
            .event_callback(move |event| {
                let (sink, notify) = (sink.clone(), notify.clone());
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        sink.lock().push(error.to_string());
                        notify.notify_waiters();
                    }
                }
            })
            .connect(server.url())
            .await
            .unwrap_or_else(|error| panic!("{name} connects: {error}"));
        Session {
            client,
            errors,
            news,
        }
    }

    fn js(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }

    /// Waits for the server to refuse `what` on `subject` (`Publish to` or
    /// `Subscription to`).
    async fn assert_refused(&self, what: &str, subject: &str) {
        let wanted = format!("permissions violation for {what} \"{subject}\"").to_lowercase();
        let seen = || {
            self.errors
                .lock()
                .iter()
                .any(|e| e.to_lowercase().contains(&wanted))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !seen() {
            let waited = tokio::time::timeout_at(deadline, self.news.notified()).await;
            assert!(
                waited.is_ok() || seen(),
                "expected a permissions violation for {what} {subject}; errors: {:?}",
                self.errors.lock()
            );
        }
    }

    /// A core-NATS publish the server must refuse.
    async fn assert_publish_refused(&self, subject: &str) {
        self.client
            .publish(subject.to_owned(), "forged".into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.assert_refused("Publish to", subject).await;
    }

    /// A subscription the server must refuse.
    async fn assert_subscribe_refused(&self, subject: &str) {
        let _subscriber = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        self.assert_refused("Subscription to", subject).await;
    }

    fn assert_no_violation(&self) {
        let errors = self.errors.lock();
        assert!(
            !errors
                .iter()
                .any(|e| e.to_lowercase().contains("violation")),
            "{errors:?}"
        );
    }
}

async fn publish_due(js: &jetstream::Context, pool: &str, id: &str) {
    let message = jetstream::message::PublishMessage::build()
        .payload(id.to_owned().into_bytes().into())
        .message_id(id);
    js.send_publish(subjects::due_subject(pool), message)
        .await
        .expect("publish sent")
        .await
        .expect("stored by JetStream");
}

async fn consumer_of(session: &Session, pool: &str) -> PullConsumer {
    let (flow_runs, _) = ensure_streams(&session.js(), 1).await.expect("streams");
    dispatcher_consumer(&flow_runs, pool, Duration::from_secs(30), 1000)
        .await
        .expect("the pool's consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_connects_without_a_valid_password() {
    let users = Users::new();
    let server = users.start_server();
    let anonymous = async_nats::ConnectOptions::new()
        .connect(server.url())
        .await;
    assert!(
        matches!(&anonymous, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
        "anonymous: {anonymous:?}"
    );
    for (user, password) in [
        ("prefect-k8s-poller", "wrong"),
        (
            "prefect-k8s-poller",
            users.password_of("prefect-k8s-dispatcher"),
        ),
        ("nobody", "x"),
        ("prefect-k8s-poller", ""),
    ] {
        let refused = async_nats::ConnectOptions::new()
            .user_and_password(user.into(), password.into())
            .connect(server.url())
            .await;
        assert!(
            matches!(&refused, Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation),
            "{user}: {refused:?}"
        );
    }
    let token =
        async_nats::ConnectOptions::with_token(users.password_of("prefect-k8s-poller").into())
            .connect(server.url())
            .await;
    assert!(token.is_err(), "a password is no token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_sets_up_the_streams_and_publishes_its_pools_runs_and_nothing_else() {
    let users = Users::new();
    let server = users.start_server();
    let poller = Session::open(&server, &users, "prefect-k8s-poller").await;
    ensure_streams(&poller.js(), 1)
        .await
        .expect("the poller creates the streams");
    ensure_streams(&poller.js(), 1)
        .await
        .expect("and finds them again");
    publish_due(&poller.js(), POOL_A, "run-1:state-1").await;
    poller.assert_no_violation();

    let dead = subjects::dead_subject("undecodable");
    for subject in [
        subjects::due_subject(POOL_B),
        dead,
        format!("$JS.API.STREAM.DELETE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.STREAM.PURGE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.STREAM.UPDATE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.STREAM.MSG.GET.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.STREAM.MSG.DELETE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.DIRECT.GET.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.CONSUMER.CREATE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{FLOW_RUNS_STREAM}.spy"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{FLOW_RUNS_STREAM}.dispatcher-{POOL_A}"),
        format!("$JS.ACK.{FLOW_RUNS_STREAM}.dispatcher-{POOL_A}.1.1.1.1.1"),
        "$JS.API.STREAM.CREATE.OTHER".into(),
        "_INBOX.prefect-k8s-dispatcher.abc".into(),
    ] {
        poller.assert_publish_refused(&subject).await;
    }
    for subject in [
        "flow-runs.>",
        "flow-runs.due.pool-a",
        "_INBOX.>",
        "_INBOX.prefect-k8s-dispatcher.>",
        "$JS.>",
    ] {
        poller.assert_subscribe_refused(subject).await;
    }

    // What reached the work queue: the one run, nothing forged.
    let dispatcher = Session::open(&server, &users, "prefect-k8s-dispatcher").await;
    let mut consumer = consumer_of(&dispatcher, POOL_A).await;
    assert_eq!(consumer.info().await.unwrap().num_pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_pulls_acks_and_dead_letters_for_its_pool_only() {
    let users = Users::new();
    let server = users.start_server();
    let poller = Session::open(&server, &users, "prefect-k8s-poller").await;
    ensure_streams(&poller.js(), 1).await.expect("streams");
    for id in ["r1:s1", "r2:s1", "r3:s1"] {
        publish_due(&poller.js(), POOL_A, id).await;
    }

    let dispatcher = Session::open(&server, &users, "prefect-k8s-dispatcher").await;
    let consumer = consumer_of(&dispatcher, POOL_A).await;
    // As the dispatcher pulls: a stream of batches, with heartbeats.
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(2)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .expect("pulling");
    let first = messages.next().await.unwrap().unwrap();
    first.ack_with(AckKind::Progress).await.unwrap();
    first.double_ack().await.expect("acked, confirmed");
    let second = messages.next().await.unwrap().unwrap();
    second.ack_with(AckKind::Nak(None)).await.unwrap();
    let third = messages.next().await.unwrap().unwrap();
    dispatcher
        .js()
        .publish(subjects::dead_subject("undecodable"), third.payload.clone())
        .await
        .unwrap()
        .await
        .expect("the dead letter is stored");
    third.ack_with(AckKind::Term).await.unwrap();
    drop(messages);
    // The same consumer set up again (as after a lost consumer) and its info.
    let mut again = consumer_of(&dispatcher, POOL_A).await;
    again.info().await.expect("consumer info");
    dispatcher.assert_no_violation();

    let b_consumer = subjects::dispatcher_consumer(POOL_B);
    for subject in [
        subjects::due_subject(POOL_A),
        subjects::due_subject(POOL_B),
        format!("$JS.API.CONSUMER.MSG.NEXT.{FLOW_RUNS_STREAM}.{b_consumer}"),
        format!("$JS.API.CONSUMER.INFO.{FLOW_RUNS_STREAM}.{b_consumer}"),
        format!(
            "$JS.API.CONSUMER.CREATE.{FLOW_RUNS_STREAM}.{b_consumer}.{}",
            subjects::due_subject(POOL_B)
        ),
        format!("$JS.API.CONSUMER.DELETE.{FLOW_RUNS_STREAM}.dispatcher-{POOL_A}"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{FLOW_RUNS_STREAM}.dispatcher-{POOL_A}"),
        format!("$JS.ACK.{FLOW_RUNS_STREAM}.{b_consumer}.1.1.1.1.1"),
        format!("$JS.API.STREAM.DELETE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.STREAM.PURGE.{FLOW_RUNS_STREAM}"),
        format!("$JS.API.STREAM.MSG.GET.{FLOW_RUNS_STREAM}"),
        "_INBOX.prefect-k8s-poller.reply".into(),
    ] {
        dispatcher.assert_publish_refused(&subject).await;
    }
    for subject in [
        "flow-runs.due.>",
        "flow-runs.dead.>",
        "_INBOX.prefect-k8s-poller.>",
    ] {
        dispatcher.assert_subscribe_refused(subject).await;
    }
    // The allowed create subject names pool A's filter; a config asking for
    // pool B's runs under it is refused by nats-server itself.
    let sneaky = serde_json::json!({
        "stream_name": FLOW_RUNS_STREAM,
        "config": {
            "durable_name": "dispatcher-pool-a",
            "filter_subject": subjects::due_subject(POOL_B),
            "ack_policy": "explicit",
        }
    });
    let answer = dispatcher
        .client
        .request(
            format!(
                "$JS.API.CONSUMER.CREATE.{FLOW_RUNS_STREAM}.dispatcher-{POOL_A}.{}",
                subjects::due_subject(POOL_A)
            ),
            serde_json::to_vec(&sneaky).unwrap().into(),
        )
        .await
        .expect("an answer");
    let answer: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap();
    assert!(answer["error"].is_object(), "{answer}");
    // The run nak'ed is still there for pool A; nothing was forged.
    let mut consumer = consumer_of(&dispatcher, POOL_A).await;
    assert_eq!(consumer.info().await.unwrap().num_ack_pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_of_pool_b_cannot_take_pool_as_runs() {
    let users = Users::new();
    let server = users.start_server();
    let poller = Session::open(&server, &users, "prefect-k8s-poller").await;
    ensure_streams(&poller.js(), 1).await.expect("streams");
    publish_due(&poller.js(), POOL_A, "r1:s1").await;
    let dispatcher_a = Session::open(&server, &users, "prefect-k8s-dispatcher").await;
    consumer_of(&dispatcher_a, POOL_A).await;

    let dispatcher_b = Session::open(&server, &users, "dispatcher-b").await;
    let mut own = consumer_of(&dispatcher_b, POOL_B).await;
    assert_eq!(
        own.info().await.unwrap().num_pending,
        0,
        "pool B has no run"
    );
    dispatcher_b.assert_no_violation();

    // Pulling pool A's consumer from a reply inbox of its own.
    let inbox = format!("{}.steal", dispatcher_b.client.new_inbox());
    let mut replies = dispatcher_b.client.subscribe(inbox.clone()).await.unwrap();
    let next = format!("$JS.API.CONSUMER.MSG.NEXT.{FLOW_RUNS_STREAM}.dispatcher-{POOL_A}");
    dispatcher_b
        .client
        .publish_with_reply(next.clone(), inbox, r#"{"batch":1}"#.into())
        .await
        .unwrap();
    dispatcher_b.client.flush().await.unwrap();
    dispatcher_b.assert_refused("Publish to", &next).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), replies.next())
            .await
            .is_err(),
        "no run of pool A reached pool B's dispatcher"
    );
    dispatcher_b
        .assert_subscribe_refused("_INBOX.prefect-k8s-dispatcher.>")
        .await;
    let mut consumer_a = consumer_of(&dispatcher_a, POOL_A).await;
    assert_eq!(consumer_a.info().await.unwrap().num_pending, 1);
}
