//! Who may do what on NATS: one user per service, allowed exactly the
//! subjects that service's code uses (found by running the poller and the
//! dispatcher against nats-server 2.9.10 with `-DV` tracing, and checked by
//! the permissions tests) and nothing else. The reporter has no NATS user: it
//! does not use NATS. There is no anonymous access.
//!
//! The nats-server `authorization` block is generated here and only here:
//! `prefect-k8s install`, `prefect-k8s up`, `prefect-k8s nats-auth`, the
//! bundled NATS of `deploy/base` (a test keeps it equal) and the tests all
//! print what [`authorization`] returns. Passwords are not in it: nats-server
//! reads each from an environment variable (`$PREFECT_K8S_NATS_..._PASSWORD`),
//! which Kubernetes fills from the Secret `prefect-k8s-nats-auth`.

use std::fmt::Write as _;

use flow_run_proto::subjects::{self, DEAD_LETTER_STREAM, DEAD_PREFIX, FLOW_RUNS_STREAM};
use rand::distr::{Alphanumeric, Distribution};
use rand::seq::IndexedRandom;

/// The poller's NATS user and the variable nats-server reads its password from.
pub const POLLER_USER: &str = "prefect-k8s-poller";
pub const POLLER_PASSWORD_ENV: &str = "PREFECT_K8S_NATS_POLLER_PASSWORD";
/// The dispatchers' NATS user (shared by every replica) and its password's variable.
pub const DISPATCHER_USER: &str = "prefect-k8s-dispatcher";
pub const DISPATCHER_PASSWORD_ENV: &str = "PREFECT_K8S_NATS_DISPATCHER_PASSWORD";
/// The user the nodes of a NATS cluster authenticate their routes with.
pub const ROUTE_USER: &str = "prefect-k8s-route";
pub const ROUTE_PASSWORD_ENV: &str = "PREFECT_K8S_NATS_ROUTE_PASSWORD";

/// The JetStream API prefix the services use (no domain).
const API: &str = "$JS.API";

/// Which service a NATS user is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Poller,
    Dispatcher,
}

/// One NATS user of the agent: a service of one work pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsUser {
    pub name: String,
    pub service: Service,
    pub work_pool: String,
    /// The environment variable nats-server reads the password from.
    pub password_env: String,
}

/// Subjects a user may publish to and subscribe to (allow lists: anything
/// else is refused with a permissions violation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl NatsUser {
    /// The poller of `work_pool`, as the manifests name it.
    pub fn poller(work_pool: &str) -> NatsUser {
        NatsUser {
            name: POLLER_USER.into(),
            service: Service::Poller,
            work_pool: work_pool.into(),
            password_env: POLLER_PASSWORD_ENV.into(),
        }
    }

    /// The dispatchers of `work_pool`, as the manifests name them.
    pub fn dispatcher(work_pool: &str) -> NatsUser {
        NatsUser {
            name: DISPATCHER_USER.into(),
            service: Service::Dispatcher,
            work_pool: work_pool.into(),
            password_env: DISPATCHER_PASSWORD_ENV.into(),
        }
    }

    /// The same user under another name and password variable (several pools
    /// on one NATS).
    pub fn named(self, name: &str, password_env: &str) -> NatsUser {
        NatsUser {
            name: name.into(),
            password_env: password_env.into(),
            ..self
        }
    }

    /// What this user may do.
    pub fn permissions(&self) -> Permissions {
        let mut publish = stream_setup();
        match self.service {
            Service::Poller => publish.push(subjects::due_subject(&self.work_pool)),
            Service::Dispatcher => publish.extend(dispatcher_subjects(&self.work_pool)),
        }
        Permissions {
            publish,
            subscribe: vec![format!("{}.>", inbox_prefix(Some(&self.name)))],
        }
    }
}

/// The poller and the dispatchers of one work pool, with the default names.
pub fn agent_users(work_pool: &str) -> Vec<NatsUser> {
    vec![NatsUser::poller(work_pool), NatsUser::dispatcher(work_pool)]
}

/// Both services look the two streams up and create them if missing
/// (`service_runtime::nats::ensure_streams`); nobody may update, purge or
/// delete them, or read or delete their messages through the API.
fn stream_setup() -> Vec<String> {
    [FLOW_RUNS_STREAM, DEAD_LETTER_STREAM]
        .iter()
        .flat_map(|stream| {
            [
                format!("{API}.STREAM.INFO.{stream}"),
                format!("{API}.STREAM.CREATE.{stream}"),
            ]
        })
        .collect()
}

/// A dispatcher creates (or updates) its pool's durable consumer with the
/// pool's filter (async-nats 0.49 sends `CONSUMER.CREATE.<stream>.<consumer>.
/// <filter>`, which nats-server 2.9 checks against the config's filter),
/// reads its info (after a reconnect), pulls from it, acks its messages and
/// publishes dead letters.
fn dispatcher_subjects(work_pool: &str) -> Vec<String> {
    let consumer = subjects::dispatcher_consumer(work_pool);
    let filter = subjects::due_subject(work_pool);
    vec![
        format!("{API}.CONSUMER.CREATE.{FLOW_RUNS_STREAM}.{consumer}.{filter}"),
        format!("{API}.CONSUMER.INFO.{FLOW_RUNS_STREAM}.{consumer}"),
        format!("{API}.CONSUMER.MSG.NEXT.{FLOW_RUNS_STREAM}.{consumer}"),
        format!("$JS.ACK.{FLOW_RUNS_STREAM}.{consumer}.>"),
        format!("{DEAD_PREFIX}.>"),
    ]
}

/// The reply-inbox prefix of a user: `_INBOX.<user as a subject token>`, so
/// that no other user may read its replies; `_INBOX` without a user.
pub fn inbox_prefix(user: Option<&str>) -> String {
    match user.filter(|user| !user.is_empty()) {
        Some(user) => format!("_INBOX.{}", subjects::pool_token(user)),
        None => "_INBOX".into(),
    }
}

/// The nats-server `authorization` block for these users.
pub fn authorization(users: &[NatsUser]) -> String {
    let mut pools: Vec<String> = Vec::new();
    for user in users {
        let pool = format!("{:?}", user.work_pool);
        if !pools.contains(&pool) {
            pools.push(pool);
        }
    }
    let mut text = format!(
        "# The NATS users of the prefect-k8s agent, work pool {}: one per service,\n\
         # each allowed the subjects its code uses and nothing else; no anonymous\n\
         # access. Printed by `prefect-k8s nats-auth`; see docs/install.md,\n\
         # \"Security model\". nats-server reads the passwords from its environment.\n\
         authorization {{\n  users = [\n",
        pools.join(", ")
    );
    for user in users {
        write_user(&mut text, user);
    }
    text.push_str("  ]\n}\n");
    text
}

fn write_user(text: &mut String, user: &NatsUser) {
    let permissions = user.permissions();
    let _ = write!(
        text,
        "    {{\n      user: {:?}\n      password: ${}\n      permissions: {{\n",
        user.name, user.password_env
    );
    write_list(text, "publish", &permissions.publish);
    write_list(text, "subscribe", &permissions.subscribe);
    text.push_str("      }\n    }\n");
}

fn write_list(text: &mut String, kind: &str, subjects: &[String]) {
    let _ = writeln!(text, "        {kind}: {{ allow: [");
    for subject in subjects {
        let _ = writeln!(text, "          {subject:?}");
    }
    text.push_str("        ] }\n");
}

/// A fresh password nats-server reads unchanged from an environment
/// variable: 32 letters and digits (about 190 bits), starting with a letter
/// (a value such as `10k` or `true` would be read as a number or a boolean).
pub fn random_password() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let first = *LETTERS.choose(&mut rng).expect("letters") as char;
    std::iter::once(first)
        .chain(Alphanumeric.sample_iter(&mut rng).take(31).map(char::from))
        .collect()
}

/// Whether nats-server reads `password` from an environment variable as the
/// same string: letters and digits only, starting with a letter.
pub fn is_config_safe_password(password: &str) -> bool {
    password.starts_with(|c: char| c.is_ascii_alphabetic())
        && password.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poller_may_publish_only_its_pools_due_runs_and_set_up_the_streams() {
        let permissions = NatsUser::poller("k8s-prod").permissions();
        assert!(permissions
            .publish
            .contains(&"flow-runs.due.k8s-prod".to_string()));
        assert!(permissions.publish.iter().all(|s| !s.contains('*')
            && !s.starts_with("flow-runs.dead")
            && !s.contains("CONSUMER")));
        assert_eq!(
            permissions.subscribe,
            vec!["_INBOX.prefect-k8s-poller.>".to_string()]
        );
    }

    #[test]
    fn a_dispatcher_may_use_only_its_pools_consumer() {
        let permissions = NatsUser::dispatcher("a").permissions();
        assert!(permissions
            .publish
            .contains(&"$JS.API.CONSUMER.MSG.NEXT.PREFECT_K8S_FLOW_RUNS.dispatcher-a".to_string()));
        assert!(permissions
            .publish
            .iter()
            .all(|s| !s.starts_with("flow-runs.due") && !s.contains("dispatcher-b")));
        assert!(permissions.publish.iter().all(|s| !s.contains("DELETE")
            && !s.contains("PURGE")
            && !s.contains("UPDATE")
            && !s.contains("MSG.GET")));
    }

    #[test]
    fn the_block_names_each_user_with_its_password_variable() {
        let block = authorization(&agent_users("kubernetes"));
        assert!(block.contains(
            "user: \"prefect-k8s-poller\"\n      password: $PREFECT_K8S_NATS_POLLER_PASSWORD\n"
        ));
        assert!(block.contains("password: $PREFECT_K8S_NATS_DISPATCHER_PASSWORD\n"));
        assert!(block.contains("\"$JS.ACK.PREFECT_K8S_FLOW_RUNS.dispatcher-kubernetes.>\""));
        let odd = authorization(&agent_users("pool\nwith newline"));
        assert!(
            !odd.contains("pool\nwith"),
            "a pool name cannot break out of its comment"
        );
    }

    #[test]
    fn generated_passwords_are_read_back_unchanged_by_nats_server() {
        for _ in 0..100 {
            let password = random_password();
            assert_eq!(password.len(), 32);
            assert!(is_config_safe_password(&password), "{password}");
        }
        assert_ne!(random_password(), random_password());
        for unsafe_password in ["10k", "123", "a b", "\"q\"", "", "p@ss"] {
            assert!(!is_config_safe_password(unsafe_password));
        }
    }
}
