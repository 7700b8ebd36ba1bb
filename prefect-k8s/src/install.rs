//! `prefect-k8s install`: prints the agent's Kubernetes manifests as one
//! multi-document YAML stream, for `prefect-k8s install … | kubectl apply -f -`.
//!
//! The manifests are the kustomize base in `deploy/base`, embedded in the
//! binary, with the options applied. With no option but `--rbac` the output
//! is exactly what `kubectl kustomize deploy/` renders (the tests check it),
//! so the two install routes cannot drift apart.
//!
//! The options are the seed agent's (`prefect agent kubernetes install`):
//! `-t/--token`, `-l/--label`, `-e/--env`, `-a/--api`, `-n/--namespace`,
//! `-i/--image-pull-secrets`, `--rbac`, `--latest`, the flow-run Job's
//! `--mem-request/--mem-limit/--cpu-request/--cpu-limit`,
//! `--image-pull-policy` and `--service-account-name`; and ours:
//! `--work-pool`, `--dispatchers`, `--max-dispatchers`, `--nats-url`,
//! `--existing-nats-secret`, `--flow-namespace`, `--image`.
//!
//! Besides the base, it prints the Secret `prefect-k8s-nats-auth` with fresh
//! NATS passwords ([`nats`]), and the API key Secret with `-t`.
//!
//! As with the seed, without `--rbac` no Role or RoleBinding is printed: the
//! ServiceAccounts are, and whoever administers the cluster grants them what
//! `--rbac` would (see `deploy/base/{dispatcher,reporter}.yaml`).

use std::fmt;
use std::io::Write;

use anyhow::{anyhow, bail, Context};
use serde_norway::{Mapping, Value};

mod flows;
mod nats;

/// The kustomize base (`deploy/base`), in the order of its kustomization.
const BASE_MANIFESTS: [(&str, &str); 5] = [
    (
        "settings.yaml",
        include_str!("../../deploy/base/settings.yaml"),
    ),
    ("poller.yaml", include_str!("../../deploy/base/poller.yaml")),
    (
        "dispatcher.yaml",
        include_str!("../../deploy/base/dispatcher.yaml"),
    ),
    (
        "reporter.yaml",
        include_str!("../../deploy/base/reporter.yaml"),
    ),
    ("nats.yaml", include_str!("../../deploy/base/nats.yaml")),
];

/// The namespace the base's objects are in.
const BASE_NAMESPACE: &str = "default";
/// The ConfigMap every service reads its settings from.
const SETTINGS_CONFIG_MAP: &str = "prefect-k8s-settings";
/// The Secret holding the Prefect API key, and its key.
const API_KEY_SECRET: &str = "prefect-k8s-api-key";
const API_KEY_SECRET_KEY: &str = "key";
/// Deployment names; each has one container named after its service.
const POLLER: &str = "prefect-k8s-poller";
const DISPATCHER: &str = "prefect-k8s-dispatcher";
const REPORTER: &str = "prefect-k8s-reporter";
/// The `app.kubernetes.io/component` of the bundled NATS's objects.
const NATS_COMPONENT: &str = "nats";
/// The image repository the base names (its tag is the crate version).
const IMAGE_REPOSITORY: &str = "prefect-k8s";
/// The most dispatchers the autoscaler may run unless told otherwise.
const DEFAULT_MAX_DISPATCHERS: u32 = 10;

/// Arguments of `prefect-k8s install` (boxed: the options are many, and the
/// CLI's command enum stays small).
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub options: Box<InstallOptions>,
}

/// Options of `prefect-k8s install`.
#[derive(Clone, clap::Args)]
pub struct InstallOptions {
    /// A Prefect API key. It goes into the Secret `prefect-k8s-api-key`, which
    /// the services read and flow-run pods reference (never into a Job as
    /// plain text). Without it, no Secret is printed.
    #[arg(
        short = 't',
        long = "token",
        visible_alias = "api-key",
        value_name = "KEY"
    )]
    pub token: Option<prefect_client::Secret>,
    /// A work queue the poller serves (repeatable; none means all queues of
    /// the pool). The seed agent called these labels.
    #[arg(
        short = 'l',
        long = "label",
        visible_alias = "work-queue",
        value_name = "QUEUE"
    )]
    pub labels: Vec<String>,
    /// An environment variable for every flow run, `KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The Prefect API URL (PREFECT_API_URL); default: a Prefect server in the
    /// same namespace, http://prefect-server:4200/api.
    #[arg(short = 'a', long = "api", value_name = "URL")]
    pub api_url: Option<String>,
    /// Namespace of the agent and of its flow-run Jobs (created unless it is
    /// `default`).
    #[arg(
        short = 'n',
        long = "namespace",
        default_value = BASE_NAMESPACE,
        value_name = "NAMESPACE"
    )]
    pub namespace: String,
    /// Image pull secrets for the agent's pods and the flow-run pods (repeat
    /// or comma-separate).
    #[arg(
        short = 'i',
        long = "image-pull-secrets",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub image_pull_secrets: Vec<String>,
    /// Print the per-service Roles and RoleBindings (least privilege) too.
    #[arg(long)]
    pub rbac: bool,
    /// Use the agent image tagged `latest` (pulled on every start).
    #[arg(long, conflicts_with = "image")]
    pub latest: bool,
    /// Memory request of flow-run containers.
    #[arg(
        long = "mem-request",
        visible_alias = "memory-request",
        value_name = "QUANTITY"
    )]
    pub mem_request: Option<String>,
    /// Memory limit of flow-run containers.
    #[arg(
        long = "mem-limit",
        visible_alias = "memory-limit",
        value_name = "QUANTITY"
    )]
    pub mem_limit: Option<String>,
    /// CPU request of flow-run containers.
    #[arg(long = "cpu-request", value_name = "QUANTITY")]
    pub cpu_request: Option<String>,
    /// CPU limit of flow-run containers.
    #[arg(long = "cpu-limit", value_name = "QUANTITY")]
    pub cpu_limit: Option<String>,
    /// imagePullPolicy of flow-run containers: Always, IfNotPresent or Never.
    #[arg(long = "image-pull-policy", value_name = "POLICY")]
    pub image_pull_policy: Option<String>,
    /// ServiceAccount of flow-run pods (not of the agent's own pods).
    #[arg(long = "service-account-name", value_name = "NAME")]
    pub service_account_name: Option<String>,
    /// The Prefect work pool to serve.
    #[arg(long = "work-pool", short = 'p', default_value = "kubernetes")]
    pub work_pool: String,
    /// The fewest dispatchers the HorizontalPodAutoscaler keeps.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub dispatchers: u32,
    /// The most dispatchers the HorizontalPodAutoscaler starts (default: 10,
    /// or --dispatchers if that is more).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_dispatchers: Option<u32>,
    /// Use this NATS (JetStream enabled) instead of the bundled StatefulSet.
    /// The services log in with the Secret `prefect-k8s-nats-auth` if you
    /// create it (see `prefect-k8s nats-auth`); none is printed.
    #[arg(long = "nats-url", value_name = "URL")]
    pub nats_url: Option<String>,
    /// Print no Secret `prefect-k8s-nats-auth`: keep the one in the cluster
    /// (a previous install's, or yours), and with it the NATS passwords.
    /// Without it, every run prints new passwords and the pods that use them
    /// restart together on `kubectl apply`.
    #[arg(long = "existing-nats-secret")]
    pub existing_nats_secret: bool,
    /// Run flow-run Jobs in this namespace instead of the agent's: the
    /// dispatcher's and the reporter's Roles for Jobs, pods and Events are
    /// there, and nothing else of the agent (created unless `default`).
    #[arg(long = "flow-namespace", value_name = "NAMESPACE")]
    pub flow_namespace: Option<String>,
    /// The agent image, e.g. registry.example.com/prefect-k8s:0.1.0.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

impl fmt::Debug for InstallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallOptions")
            .field("token", &self.token)
            .field("labels", &self.labels)
            .field("env", &self.env.len())
            .field("api_url", &self.api_url)
            .field("namespace", &self.namespace)
            .field("image_pull_secrets", &self.image_pull_secrets)
            .field("rbac", &self.rbac)
            .field("latest", &self.latest)
            .field("work_pool", &self.work_pool)
            .field("dispatchers", &self.dispatchers)
            .field(
                "nats_url",
                &self
                    .nats_url
                    .as_deref()
                    .map(service_runtime::nats::redacted_url),
            )
            .field("existing_nats_secret", &self.existing_nats_secret)
            .field("flow_namespace", &self.flow_namespace)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// Prints the manifests on stdout.
pub fn run(args: InstallArgs) -> anyhow::Result<()> {
    let stream = render_stream(&args.options)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(stream.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the manifests to stdout")
}

/// The manifests as a multi-document YAML stream.
pub fn render_stream(args: &InstallOptions) -> anyhow::Result<String> {
    let mut stream = format!(
        "# prefect-k8s {} install: apply with `kubectl apply -f -`\n",
        env!("CARGO_PKG_VERSION")
    );
    for object in render_objects(args)? {
        stream.push_str("---\n");
        stream.push_str(&serde_norway::to_string(&object).context("writing YAML")?);
    }
    Ok(stream)
}

/// The manifests, in the order `kubectl apply` should create them.
pub fn render_objects(args: &InstallOptions) -> anyhow::Result<Vec<Value>> {
    check_options(args)?;
    let mut objects = base_objects()?;
    if !args.rbac {
        objects.retain(|object| !matches!(kind(object), "Role" | "RoleBinding"));
    }
    apply_settings(&mut objects, args)?;
    apply_work_queues(&mut objects, &args.labels)?;
    apply_job_options(&mut objects, args)?;
    apply_dispatcher_count(&mut objects, args)?;
    apply_image(&mut objects, args)?;
    apply_image_pull_secrets(&mut objects, &args.image_pull_secrets)?;
    if let Some(nats_url) = &args.nats_url {
        objects.retain(|object| component(object) != Some(NATS_COMPONENT));
        set_config(&mut objects, "NATS_URL", nats_url)?;
    }
    nats::apply(&mut objects, args)?;
    if let Some(token) = &args.token {
        objects.push(api_key_secret(token.expose()));
        let dispatcher = container_mut(&mut objects, DISPATCHER)?;
        set_env(
            dispatcher,
            "PREFECT_K8S_API_KEY_SECRET",
            &format!("{API_KEY_SECRET}:{API_KEY_SECRET_KEY}"),
        );
    }
    if args.namespace != BASE_NAMESPACE {
        for object in &mut objects {
            move_to_namespace(object, &args.namespace);
        }
        objects.push(namespace_object(&args.namespace));
    }
    flows::apply(&mut objects, args)?;
    objects.sort_by_key(|object| apply_order(kind(object)));
    Ok(objects)
}

/// Refuses what the dispatcher would refuse at start-up (same rules) and what
/// cannot be written into the manifests unambiguously.
fn check_options(args: &InstallOptions) -> anyhow::Result<()> {
    let env =
        service_runtime::options::parse_pairs("--env", &args.env).map_err(anyhow::Error::msg)?;
    let agent_namespace = job_manifest::AgentDefaults {
        namespace: Some(args.namespace.clone()),
        ..Default::default()
    };
    agent_namespace
        .validate()
        .map_err(|error| anyhow!("invalid option: {error}"))?;
    let defaults = job_manifest::AgentDefaults {
        namespace: Some(
            args.flow_namespace
                .clone()
                .unwrap_or_else(|| args.namespace.clone()),
        ),
        env,
        image_pull_secrets: args.image_pull_secrets.clone(),
        service_account_name: args.service_account_name.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        cpu_request: args.cpu_request.clone(),
        cpu_limit: args.cpu_limit.clone(),
        memory_request: args.mem_request.clone(),
        memory_limit: args.mem_limit.clone(),
        labels: Vec::new(),
    };
    defaults
        .validate()
        .map_err(|error| anyhow!("invalid option: {error}"))?;
    if let Some(queue) = args
        .labels
        .iter()
        .find(|queue| queue.is_empty() || queue.contains(','))
    {
        bail!("--label {queue:?}: a work queue name must be non-empty and contain no comma");
    }
    if args.work_pool.trim().is_empty() {
        bail!("--work-pool must not be empty");
    }
    if args
        .token
        .as_ref()
        .is_some_and(|token| token.expose().is_empty())
    {
        bail!("--token must not be empty");
    }
    if args.image.as_deref().is_some_and(str::is_empty) {
        bail!("--image must not be empty");
    }
    if let Some(max) = args.max_dispatchers {
        if max < args.dispatchers {
            bail!(
                "--max-dispatchers {max} is less than --dispatchers {}",
                args.dispatchers
            );
        }
    }
    Ok(())
}

/// `-e KEY=VALUE` pairs, split on the first `=`.
/// Every object of the embedded base.
fn base_objects() -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for (file, text) in BASE_MANIFESTS {
        for document in serde_norway::Deserializer::from_str(text) {
            let object = serde::Deserialize::deserialize(document)
                .with_context(|| format!("parsing deploy/base/{file}"))?;
            if !matches!(object, Value::Null) {
                objects.push(object);
            }
        }
    }
    Ok(objects)
}

fn apply_settings(objects: &mut [Value], args: &InstallOptions) -> anyhow::Result<()> {
    if let Some(api_url) = &args.api_url {
        set_config(objects, "PREFECT_API_URL", api_url)?;
    }
    set_config(objects, "PREFECT_K8S_WORK_POOL", &args.work_pool)
}

fn apply_work_queues(objects: &mut [Value], queues: &[String]) -> anyhow::Result<()> {
    if !queues.is_empty() {
        let poller = container_mut(objects, POLLER)?;
        set_env(poller, "PREFECT_K8S_WORK_QUEUES", &queues.join(","));
    }
    Ok(())
}

/// The flow-run Job options, as the dispatcher's environment and `--env` flags.
fn apply_job_options(objects: &mut [Value], args: &InstallOptions) -> anyhow::Result<()> {
    let dispatcher = container_mut(objects, DISPATCHER)?;
    let pull_secrets = args
        .image_pull_secrets
        .iter()
        .filter(|name| !name.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    let variables = [
        (
            "IMAGE_PULL_SECRETS",
            Some(pull_secrets).filter(|s| !s.is_empty()),
        ),
        ("SERVICE_ACCOUNT_NAME", args.service_account_name.clone()),
        ("IMAGE_PULL_POLICY", args.image_pull_policy.clone()),
        ("JOB_CPU_REQUEST", args.cpu_request.clone()),
        ("JOB_CPU_LIMIT", args.cpu_limit.clone()),
        ("JOB_MEM_REQUEST", args.mem_request.clone()),
        ("JOB_MEM_LIMIT", args.mem_limit.clone()),
    ];
    for (name, value) in variables {
        if let Some(value) = value {
            set_env(dispatcher, name, &value);
        }
    }
    if !args.env.is_empty() {
        let flags = args
            .env
            .iter()
            .flat_map(|pair| [Value::from("--env"), Value::from(pair.as_str())])
            .collect();
        dispatcher["args"] = Value::Sequence(flags);
    }
    Ok(())
}

fn apply_dispatcher_count(objects: &mut [Value], args: &InstallOptions) -> anyhow::Result<()> {
    let autoscaler = object_mut(objects, "HorizontalPodAutoscaler", DISPATCHER)?;
    let max = args
        .max_dispatchers
        .unwrap_or(DEFAULT_MAX_DISPATCHERS)
        .max(args.dispatchers);
    autoscaler["spec"]["minReplicas"] = Value::from(args.dispatchers);
    autoscaler["spec"]["maxReplicas"] = Value::from(max);
    Ok(())
}

fn apply_image(objects: &mut [Value], args: &InstallOptions) -> anyhow::Result<()> {
    let image = match (&args.image, args.latest) {
        (Some(image), _) => image.clone(),
        (None, true) => format!("{IMAGE_REPOSITORY}:latest"),
        (None, false) => return Ok(()),
    };
    for deployment in [POLLER, DISPATCHER, REPORTER] {
        let container = container_mut(objects, deployment)?;
        container["image"] = Value::from(image.as_str());
        if args.latest {
            container["imagePullPolicy"] = Value::from("Always");
        }
    }
    Ok(())
}

/// As the seed agent did: the agent's own pods pull with the secrets too.
fn apply_image_pull_secrets(objects: &mut [Value], names: &[String]) -> anyhow::Result<()> {
    let references: Vec<Value> = names
        .iter()
        .filter(|name| !name.is_empty())
        .map(|name| {
            let mut reference = Mapping::new();
            reference.insert("name".into(), name.as_str().into());
            Value::Mapping(reference)
        })
        .collect();
    if references.is_empty() {
        return Ok(());
    }
    for deployment in [POLLER, DISPATCHER, REPORTER] {
        let pod = &mut object_mut(objects, "Deployment", deployment)?["spec"]["template"]["spec"];
        pod["imagePullSecrets"] = Value::Sequence(references.clone());
    }
    Ok(())
}

fn api_key_secret(token: &str) -> Value {
    let text = format!(
        "apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {API_KEY_SECRET}\n  namespace: {BASE_NAMESPACE}\n  \
         labels:\n    app.kubernetes.io/name: prefect-k8s\n    \
         app.kubernetes.io/part-of: prefect-k8s\n    \
         app.kubernetes.io/component: settings\n\
         type: Opaque\n"
    );
    let mut secret: Value = serde_norway::from_str(&text).expect("a constant Secret parses");
    let mut data = Mapping::new();
    data.insert(API_KEY_SECRET_KEY.into(), token.into());
    secret["stringData"] = Value::Mapping(data);
    secret
}

fn namespace_object(namespace: &str) -> Value {
    let mut object: Value = serde_norway::from_str(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  labels:\n    \
         app.kubernetes.io/part-of: prefect-k8s\n",
    )
    .expect("a constant Namespace parses");
    object["metadata"]["name"] = Value::from(namespace);
    object
}

/// Puts a namespaced object (and a RoleBinding's ServiceAccounts) in `namespace`.
fn move_to_namespace(object: &mut Value, namespace: &str) {
    if object["metadata"].get("namespace").is_some() {
        object["metadata"]["namespace"] = Value::from(namespace);
    }
    if let Some(Value::Sequence(subjects)) = object.get_mut("subjects") {
        for subject in subjects {
            if subject["kind"] == "ServiceAccount" {
                subject["namespace"] = Value::from(namespace);
            }
        }
    }
}

/// Namespaces first, then what pods need (accounts, permissions, settings),
/// then the workloads, then what refers to them.
fn apply_order(kind: &str) -> usize {
    const ORDER: [&str; 12] = [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ];
    ORDER
        .iter()
        .position(|known| *known == kind)
        .unwrap_or(ORDER.len())
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn component(object: &Value) -> Option<&str> {
    object["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
}

fn object_mut<'a>(
    objects: &'a mut [Value],
    kind: &str,
    name: &str,
) -> anyhow::Result<&'a mut Value> {
    objects
        .iter_mut()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .ok_or_else(|| anyhow!("deploy/base has no {kind} {name}"))
}

/// The one container of a Deployment of the base.
fn container_mut<'a>(objects: &'a mut [Value], deployment: &str) -> anyhow::Result<&'a mut Value> {
    let object = object_mut(objects, "Deployment", deployment)?;
    match object["spec"]["template"]["spec"].get_mut("containers") {
        Some(Value::Sequence(containers)) if !containers.is_empty() => Ok(&mut containers[0]),
        _ => Err(anyhow!(
            "deploy/base: Deployment {deployment} has no container"
        )),
    }
}

fn set_config(objects: &mut [Value], key: &str, value: &str) -> anyhow::Result<()> {
    let settings = object_mut(objects, "ConfigMap", SETTINGS_CONFIG_MAP)?;
    settings["data"][key] = Value::from(value);
    Ok(())
}

/// Sets a plain `env` entry of a container, replacing one of the same name.
fn set_env(container: &mut Value, name: &str, value: &str) {
    let mut entry = Mapping::new();
    entry.insert("name".into(), name.into());
    entry.insert("value".into(), value.into());
    if !matches!(container.get("env"), Some(Value::Sequence(_))) {
        container["env"] = Value::Sequence(Vec::new());
    }
    let Some(Value::Sequence(env)) = container.get_mut("env") else {
        unreachable!("env was just made a sequence");
    };
    match env.iter_mut().find(|existing| existing["name"] == name) {
        Some(existing) => *existing = Value::Mapping(entry),
        None => env.push(Value::Mapping(entry)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        install: InstallArgs,
    }

    fn parse(args: &[&str]) -> InstallOptions {
        *Cli::try_parse_from(std::iter::once("install").chain(args.iter().copied()))
            .expect("arguments parse")
            .install
            .options
    }

    #[test]
    fn the_base_names_the_image_of_this_version() {
        let objects = base_objects().unwrap();
        let expected = format!("{IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"));
        for deployment in [POLLER, DISPATCHER, REPORTER] {
            let mut objects = objects.clone();
            let image = container_mut(&mut objects, deployment).unwrap()["image"].clone();
            assert_eq!(image, Value::from(expected.as_str()), "{deployment}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let args = parse(&["-t", "pnu_very_secret"]);
        let shown = format!("{args:?}");
        assert!(!shown.contains("pnu_very_secret"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }

    #[test]
    fn set_env_replaces_an_entry_of_the_same_name() {
        let mut container: Value =
            serde_norway::from_str("name: x\nenv:\n  - name: A\n    value: '1'\n").unwrap();
        set_env(&mut container, "A", "2");
        set_env(&mut container, "B", "3");
        let expected: Value = serde_norway::from_str(
            "name: x\nenv:\n  - name: A\n    value: '2'\n  - name: B\n    value: '3'\n",
        )
        .unwrap();
        assert_eq!(container, expected);
    }

    #[test]
    fn max_dispatchers_below_the_minimum_is_refused() {
        let error = render_objects(&parse(&["--dispatchers", "5", "--max-dispatchers", "3"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("--max-dispatchers"), "{error}");
    }
}
