//! `docker-compose.yml` is valid against the Compose Specification's schema
//! (`tests/testdata/compose-spec.json`, Apache-2.0, licence beside it; with the `jsonschema`
//! package of the project virtualenv) and agrees with the Dockerfile: the
//! build targets exist, the programs it starts are the ones the image holds.

mod manifest_tools;

use std::process::Command;

use manifest_tools::{run_ok, venv_python, workspace_root};

/// The programs the image is built with.
const IMAGE_BINARIES: [&str; 5] = [
    "poller",
    "dispatcher",
    "reporter",
    "kube-emulator",
    "prefect-k8s",
];

fn compose_file() -> serde_norway::Value {
    let path = workspace_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml exists");
    let mut compose: serde_norway::Value = serde_norway::from_str(&text).expect("YAML");
    compose.apply_merge().expect("merge keys resolve");
    compose
}

#[test]
fn compose_file_is_valid_against_the_compose_spec_schema() {
    let schema = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/compose-spec.json"
    ));
    assert!(
        schema.is_file(),
        "{} is missing: the Compose Specification schema is needed by this test",
        schema.display()
    );
    let report = run_ok(
        Command::new(venv_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/validate_compose.py"
            ))
            .arg(schema)
            .arg(workspace_root().join("docker-compose.yml")),
        "validating docker-compose.yml (python tests/validate_compose.py)",
    );
    assert!(report.contains("valid against"), "{report}");
}

#[test]
fn compose_runs_the_whole_stack_from_the_dockerfiles_targets() {
    let dockerfile =
        std::fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile exists");
    let compose = compose_file();
    let services = compose["services"].as_mapping().expect("services");
    for name in [
        "nats",
        "postgres",
        "prefect-server",
        "kube-emulator",
        "poller",
        "dispatcher",
        "reporter",
    ] {
        assert!(
            services.contains_key(name),
            "docker-compose.yml has no {name}"
        );
    }
    for (name, service) in services {
        if let Some(target) = service["build"]["target"].as_str() {
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "service {name:?} builds target {target:?}, which the Dockerfile lacks"
            );
        }
    }
    for service in ["poller", "dispatcher", "reporter"] {
        let entrypoint = &compose["services"][service]["entrypoint"][0];
        assert_eq!(
            entrypoint.as_str(),
            Some(format!("/usr/local/bin/{service}").as_str()),
            "{service} runs its own program from the image"
        );
    }
    assert_eq!(compose["services"]["dispatcher"]["deploy"]["replicas"], 2);
    assert_eq!(
        compose["services"]["prefect-server"]["image"],
        "prefecthq/prefect:3.9.1-python3.11"
    );
    for binary in IMAGE_BINARIES {
        assert!(
            dockerfile.contains(&format!("--bin {binary}")),
            "the Dockerfile does not build {binary}"
        );
    }
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "the runtime image runs as the non-root user the manifests require"
    );
}

/// `${VAR:?message}` or `${VAR:-default}`: the variable's name.
fn variable_of(value: &serde_norway::Value) -> String {
    let text = value.as_str().expect("a string");
    let inner = text
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{text} is a variable"));
    inner.split([':', '?', '-']).next().unwrap().to_owned()
}

#[test]
fn compose_gives_the_poller_and_the_dispatchers_their_own_nats_users_and_nobody_else() {
    use service_runtime::nats_auth::{
        DISPATCHER_PASSWORD_ENV, DISPATCHER_USER, POLLER_PASSWORD_ENV, POLLER_USER,
    };
    let compose = compose_file();
    let services = &compose["services"];
    for (service, user, variable) in [
        ("poller", POLLER_USER, POLLER_PASSWORD_ENV),
        ("dispatcher", DISPATCHER_USER, DISPATCHER_PASSWORD_ENV),
    ] {
        let environment = &services[service]["environment"];
        assert_eq!(environment["NATS_USER"].as_str(), Some(user));
        let password = &environment["NATS_PASSWORD"];
        assert!(
            password.as_str().unwrap().contains(":?"),
            "the {service}'s password is required, never a default"
        );
        assert_eq!(variable_of(password), variable);
        assert_eq!(
            variable_of(&services["nats"]["environment"][variable]),
            variable,
            "nats-server reads the same variable"
        );
    }
    assert!(services["reporter"]["environment"]["NATS_PASSWORD"].is_null());
    for port in services["nats"]["ports"].as_sequence().unwrap() {
        assert!(
            port.as_str().unwrap().starts_with("127.0.0.1:"),
            "NATS is published on this machine only: {port:?}"
        );
    }
}

#[test]
fn the_env_one_liner_and_the_nats_auth_service_make_a_nats_that_admits_the_poller() {
    let text = std::fs::read_to_string(workspace_root().join("docker-compose.yml")).unwrap();
    let one_liner = text
        .lines()
        .find_map(|line| line.strip_prefix("#   for user in"))
        .map(|rest| format!("for user in{rest}"))
        .expect("the .env one-liner at the top of docker-compose.yml");
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("sh")
            .args(["-c", &one_liner])
            .current_dir(dir.path()),
        ".env one-liner",
    );
    let env_file = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    let variables: Vec<(String, String)> = env_file
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').expect("NAME=value");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    assert_eq!(variables.len(), 2, "{env_file}");
    for (name, value) in &variables {
        assert!(
            service_runtime::nats_auth::is_config_safe_password(value),
            "{name} is read by nats-server as it is"
        );
    }
    // The nats-auth service's command, with compose's default pool.
    let compose = compose_file();
    let command: Vec<String> = compose["services"]["nats-auth"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|arg| {
            let arg = arg.as_str().unwrap();
            let arg = arg.replace("${PREFECT_K8S_WORK_POOL:-kubernetes}", "kubernetes");
            arg.replace("/nats-auth/", &format!("{}/", dir.path().display()))
        })
        .collect();
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_prefect-k8s")).args(&command),
        "the nats-auth service",
    );
    let users = service_runtime::nats_auth::agent_users("kubernetes");
    let written = std::fs::read_to_string(dir.path().join("auth.conf")).unwrap();
    assert_eq!(written, service_runtime::nats_auth::authorization(&users));
    let env: Vec<(&str, &str)> = variables
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let server = test_stack::nats::NatsServer::start_with_config(&written, &env);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let password = &variables
            .iter()
            .find(|(k, _)| k == service_runtime::nats_auth::POLLER_PASSWORD_ENV)
            .unwrap()
            .1;
        let poller = async_nats::ConnectOptions::with_user_and_password(
            service_runtime::nats_auth::POLLER_USER.into(),
            password.clone(),
        )
        .connect(server.url())
        .await
        .expect("the poller logs in with the .env password");
        poller.flush().await.unwrap();
        let anonymous = async_nats::ConnectOptions::new()
            .connect(server.url())
            .await;
        assert!(anonymous.is_err(), "no anonymous access");
    });
}
