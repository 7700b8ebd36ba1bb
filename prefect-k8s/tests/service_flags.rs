//! The manifests configure each service with names it reads: every
//! environment variable of a container (its own and the settings ConfigMap's)
//! is the `env` of one of the service's flags, and the container's settings,
//! turned into those flags, parse with the service's own clap definitions
//! (`PollerConfig`, `DispatcherConfig`, `ReporterConfig` and the shared
//! Prefect and NATS options) to the values `install` was given. The dispatcher
//! then accepts its Job options as it does at start-up.

mod manifest_tools;

use std::collections::BTreeMap;
use std::ffi::OsStr;

use clap::{Args, FromArgMatches};
use manifest_tools::{container, find, install, parse_stream};
use serde_json::Value;
use service_runtime::nats::NatsOptions;
use service_runtime::prefect::PrefectOptions;

/// Read outside clap: logging (service-runtime's telemetry), the health and
/// metrics addresses (each binary's own flags) and the reporter's Lease
/// namespace fallback.
const READ_OUTSIDE_CLAP: [&str; 5] = [
    "RUST_LOG",
    "LOG_FORMAT",
    "HEALTH_ADDR",
    "METRICS_ADDR",
    "POD_NAMESPACE",
];

/// Stand-in for a value Kubernetes fills in at run time (downward API).
const POD_NAMESPACE_VALUE: &str = "flows";
/// Stand-in for a value read from a Secret.
const SECRET_VALUE: &str = "pnu_from_the_secret";

fn service_cli(service: &'static str) -> clap::Command {
    let command = PrefectOptions::augment_args(clap::Command::new(service));
    match service {
        "poller" => poller::PollerConfig::augment_args(NatsOptions::augment_args(command)),
        "dispatcher" => {
            dispatcher::DispatcherConfig::augment_args(NatsOptions::augment_args(command))
        }
        "reporter" => reporter::service::ReporterConfig::augment_args(command),
        other => panic!("no service {other}"),
    }
}

/// The environment a container starts with: the settings ConfigMap, then its
/// own entries (downward API and Secret values stood in for).
fn container_environment(objects: &[Value], service: &str) -> BTreeMap<String, String> {
    let container = container(objects, "Deployment", &format!("prefect-k8s-{service}"));
    let mut environment = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("a ConfigMap");
        let data = &find(objects, "ConfigMap", name)["data"];
        for (key, value) in data.as_object().expect("data") {
            environment.insert(key.clone(), value.as_str().unwrap().to_owned());
        }
    }
    for entry in container["env"].as_array().into_iter().flatten() {
        let name = entry["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = entry["value"].as_str() {
            value.to_owned()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" {
            POD_NAMESPACE_VALUE.to_owned()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            format!("prefect-k8s-{service}-0")
        } else if entry["valueFrom"]["secretKeyRef"].is_object() {
            SECRET_VALUE.to_owned()
        } else {
            panic!("{service}: unexpected env entry {entry}");
        };
        environment.insert(name, value);
    }
    environment
}

/// The service's command line: each variable as the flag that reads it, then
/// the container's args. Variables the service does not read are returned.
fn command_line(
    cli: &clap::Command,
    service: &str,
    environment: &BTreeMap<String, String>,
    args: &Value,
) -> (Vec<String>, Vec<String>) {
    let mut argv = vec![service.to_owned()];
    let mut unread = Vec::new();
    for (name, value) in environment {
        let flag = cli
            .get_arguments()
            .find(|argument| argument.get_env() == Some(OsStr::new(name)));
        match flag.and_then(|argument| argument.get_long()) {
            Some(long) => argv.push(format!("--{long}={value}")),
            None => unread.push(name.clone()),
        }
    }
    for arg in args.as_array().into_iter().flatten() {
        argv.push(arg.as_str().unwrap().to_owned());
    }
    (argv, unread)
}

fn parse<T: FromArgMatches>(
    service: &'static str,
    objects: &[Value],
) -> (T, PrefectOptions, Vec<String>) {
    let cli = service_cli(service);
    let environment = container_environment(objects, service);
    let container = container(objects, "Deployment", &format!("prefect-k8s-{service}"));
    let (argv, unread) = command_line(&cli, service, &environment, &container["args"]);
    let matches = cli
        .try_get_matches_from(&argv)
        .unwrap_or_else(|error| panic!("{service} rejects {argv:?}:\n{error}"));
    let config = T::from_arg_matches(&matches).expect("the service's settings");
    let prefect = PrefectOptions::from_arg_matches(&matches).expect("the Prefect options");
    (config, prefect, unread)
}

const OPTIONS: &[&str] = &[
    "-t",
    "pnu_from_the_secret",
    "-l",
    "critical",
    "-l",
    "batch",
    "-e",
    "FOO=bar",
    "-e",
    "X=y=z",
    "-a",
    "https://prefect.example.com/api",
    "-i",
    "regcred,mirror",
    "--mem-request",
    "128Mi",
    "--mem-limit",
    "512Mi",
    "--cpu-request",
    "100m",
    "--cpu-limit",
    "1",
    "--image-pull-policy",
    "IfNotPresent",
    "--service-account-name",
    "flow-runner",
    "--work-pool",
    "prod",
    "--rbac",
];

#[test]
fn every_variable_the_manifests_set_is_one_a_service_reads() {
    let objects = parse_stream(&install(OPTIONS));
    let mut read_by_someone = std::collections::BTreeSet::new();
    for service in ["poller", "dispatcher", "reporter"] {
        let cli = service_cli(service);
        let environment = container_environment(&objects, service);
        let container = container(&objects, "Deployment", &format!("prefect-k8s-{service}"));
        let own: Vec<String> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["name"].as_str().unwrap().to_owned())
            .collect();
        let (_, unread) = command_line(&cli, service, &environment, &Value::Null);
        for name in &unread {
            assert!(
                !own.contains(name) || READ_OUTSIDE_CLAP.contains(&name.as_str()),
                "the {service} container sets {name}, which the {service} does not read"
            );
        }
        read_by_someone.extend(
            environment
                .keys()
                .filter(|name| !unread.contains(name))
                .cloned(),
        );
    }
    let settings = &find(&objects, "ConfigMap", "prefect-k8s-settings")["data"];
    for key in settings.as_object().unwrap().keys() {
        assert!(
            read_by_someone.contains(key) || READ_OUTSIDE_CLAP.contains(&key.as_str()),
            "the settings ConfigMap sets {key}, which no service reads"
        );
    }
}

#[test]
fn the_poller_reads_its_pool_queues_and_prefect_settings() {
    let objects = parse_stream(&install(OPTIONS));
    let (config, prefect, _): (poller::PollerConfig, _, _) = parse("poller", &objects);
    assert_eq!(config.pool.work_pool, "prod");
    assert_eq!(config.work_queues, vec!["critical", "batch"]);
    assert_eq!(prefect.api_url, "https://prefect.example.com/api");
    assert_eq!(
        prefect.api_key.as_ref().map(|key| key.expose()),
        Some(SECRET_VALUE)
    );
}

#[test]
fn the_dispatcher_reads_the_job_options_and_accepts_them_as_at_start_up() {
    let objects = parse_stream(&install(OPTIONS));
    let (config, prefect, _): (dispatcher::DispatcherConfig, _, _) = parse("dispatcher", &objects);
    assert_eq!(config.pool.work_pool, "prod");
    let job = &config.job;
    assert_eq!(job.namespace.as_deref(), Some(POD_NAMESPACE_VALUE));
    assert_eq!(job.env, vec!["FOO=bar", "X=y=z"]);
    assert_eq!(job.image_pull_secrets, vec!["regcred", "mirror"]);
    assert_eq!(job.service_account_name.as_deref(), Some("flow-runner"));
    assert_eq!(job.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(job.cpu_request.as_deref(), Some("100m"));
    assert_eq!(job.cpu_limit.as_deref(), Some("1"));
    assert_eq!(job.memory_request.as_deref(), Some("128Mi"));
    assert_eq!(job.memory_limit.as_deref(), Some("512Mi"));
    assert_eq!(
        job.api_key_secret.as_deref(),
        Some("prefect-k8s-api-key:key")
    );
    let client = service_runtime::prefect::client(&prefect, &config.pool.worker_name)
        .expect("a Prefect client from the manifests' settings");
    if let Err(error) = dispatcher::render::JobRenderer::new(client, &config) {
        panic!("the dispatcher refuses the options install wrote: {error}");
    }
}

#[test]
fn the_reporter_watches_the_pods_namespace_and_holds_the_roles_lease() {
    let objects = parse_stream(&install(OPTIONS));
    let (config, _, unread): (reporter::service::ReporterConfig, _, _) =
        parse("reporter", &objects);
    assert_eq!(config.pool.work_pool, "prod");
    assert_eq!(config.namespace.as_deref(), Some(POD_NAMESPACE_VALUE));
    assert!(unread.contains(&reporter::service::config::POD_NAMESPACE_ENV.to_owned()));
    let role = find(&objects, "Role", "prefect-k8s-reporter");
    let named_leases: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|rule| rule["resourceNames"].as_array())
        .flatten()
        .collect();
    assert_eq!(named_leases, vec![&Value::from(config.lease_name())]);
}

/// The NATS options a service parses from its container.
fn nats_options(service: &'static str, objects: &[Value]) -> NatsOptions {
    let cli = service_cli(service);
    let environment = container_environment(objects, service);
    let container = container(objects, "Deployment", &format!("prefect-k8s-{service}"));
    let (argv, _) = command_line(&cli, service, &environment, &container["args"]);
    let matches = cli
        .try_get_matches_from(&argv)
        .expect("the service's flags");
    NatsOptions::from_arg_matches(&matches).expect("the NATS options")
}

#[test]
fn the_poller_and_the_dispatchers_log_in_as_the_users_nats_knows_with_the_inbox_it_allows() {
    let objects = parse_stream(&install(OPTIONS));
    for (service, user) in [
        (
            "poller",
            service_runtime::nats_auth::NatsUser::poller("prod"),
        ),
        (
            "dispatcher",
            service_runtime::nats_auth::NatsUser::dispatcher("prod"),
        ),
    ] {
        let options = nats_options(service, &objects);
        assert_eq!(options.url, "nats://prefect-k8s-nats:4222");
        assert_eq!(options.user.as_deref(), Some(user.name.as_str()));
        assert_eq!(
            options.password.as_ref().map(|p| p.expose()),
            Some(SECRET_VALUE)
        );
        let inbox = format!("{}.>", options.effective_inbox_prefix());
        assert_eq!(
            user.permissions().subscribe,
            vec![inbox],
            "the {service} subscribes where NATS lets it"
        );
    }
}

#[test]
fn with_a_flow_namespace_jobs_go_there_and_the_reporter_watches_there() {
    let mut options = OPTIONS.to_vec();
    options.extend(["-n", "agent", "--flow-namespace", "flows"]);
    let objects = parse_stream(&install(&options));
    let (config, _, _): (dispatcher::DispatcherConfig, _, _) = parse("dispatcher", &objects);
    assert_eq!(config.job.namespace.as_deref(), Some("flows"));
    let (config, _, _): (reporter::service::ReporterConfig, _, _) = parse("reporter", &objects);
    assert_eq!(config.namespace.as_deref(), Some("flows"));
    assert_eq!(
        config.lease_namespace.as_deref(),
        None,
        "the Lease stays in the pod's own namespace (POD_NAMESPACE)"
    );
}
