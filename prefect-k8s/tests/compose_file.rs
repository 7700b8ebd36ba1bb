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

fn compose_file() -> serde_yaml::Value {
    let path = workspace_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("docker-compose.yml exists");
    let mut compose: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
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
