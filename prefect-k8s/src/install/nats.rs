//! The bundled NATS's users: `auth.conf` in its ConfigMap names the poller
//! and the dispatchers of `--work-pool` with the subjects they may use
//! (`service_runtime::nats_auth`), and the Secret `prefect-k8s-nats-auth`
//! holds their passwords (and the cluster routes'), freshly generated at
//! each run unless `--existing-nats-secret` keeps the one in the cluster.
//!
//! Generated passwords change at every run, so the pods that read them (NATS,
//! the poller, the dispatchers) carry an annotation that changes with them:
//! `kubectl apply` then restarts them together on the new passwords, rather
//! than leaving a restarted dispatcher with a password NATS does not know.

use serde_norway::{Mapping, Value};
use service_runtime::nats_auth;

use super::{object_mut, InstallOptions, BASE_NAMESPACE, DISPATCHER, NATS_COMPONENT, POLLER};

/// The Secret with the NATS passwords, and its keys.
pub(super) const NATS_AUTH_SECRET: &str = "prefect-k8s-nats-auth";
pub(super) const PASSWORD_KEYS: [&str; 3] =
    ["poller-password", "dispatcher-password", "route-password"];
/// The ConfigMap with nats.conf and auth.conf.
const NATS_CONFIG_MAP: &str = "prefect-k8s-nats-config";
const NATS_STATEFUL_SET: &str = "prefect-k8s-nats";
/// Pod-template annotation that changes with generated passwords.
pub(super) const GENERATION_ANNOTATION: &str = "prefect-k8s.io/nats-auth-generation";

/// Writes the users of `--work-pool` and, unless told to keep the Secret in
/// the cluster, a new Secret. Nothing when NATS is not bundled.
pub(super) fn apply(objects: &mut Vec<Value>, args: &InstallOptions) -> anyhow::Result<()> {
    if args.nats_url.is_some() {
        return Ok(());
    }
    let users = nats_auth::agent_users(&args.work_pool);
    let config = object_mut(objects, "ConfigMap", NATS_CONFIG_MAP)?;
    config["data"]["auth.conf"] = Value::from(nats_auth::authorization(&users));
    if args.existing_nats_secret {
        return Ok(());
    }
    let generation = generation_id();
    for (kind, name) in [
        ("StatefulSet", NATS_STATEFUL_SET),
        ("Deployment", POLLER),
        ("Deployment", DISPATCHER),
    ] {
        let template = &mut object_mut(objects, kind, name)?["spec"]["template"];
        template["metadata"]["annotations"][GENERATION_ANNOTATION] =
            Value::from(generation.as_str());
    }
    objects.push(secret_with_new_passwords());
    Ok(())
}

/// A random id, not derived from the passwords.
fn generation_id() -> String {
    nats_auth::random_password()[..16].to_owned()
}

fn secret_with_new_passwords() -> Value {
    let text = format!(
        "apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {NATS_AUTH_SECRET}\n  namespace: {BASE_NAMESPACE}\n  \
         labels:\n    app.kubernetes.io/name: prefect-k8s\n    \
         app.kubernetes.io/part-of: prefect-k8s\n    \
         app.kubernetes.io/component: {NATS_COMPONENT}\n\
         type: Opaque\n"
    );
    let mut secret: Value = serde_norway::from_str(&text).expect("a constant Secret parses");
    let mut data = Mapping::new();
    for key in PASSWORD_KEYS {
        data.insert(key.into(), nats_auth::random_password().into());
    }
    secret["stringData"] = Value::Mapping(data);
    secret
}
