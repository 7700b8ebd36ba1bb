//! ARCHITECTURE.md and README.md name only flags, environment variables and
//! metrics the binaries have. The known names are taken from the programs
//! themselves: the three services' clap commands, `prefect-k8s`'s help, the
//! names the services' code spells (what `std::env::var` is called with,
//! stream names), and the metrics each service registers.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use service_runtime::metrics::{CallMetrics, MetricsRegistry};
use test_stack::workspace_root;

/// The documents checked for flags and environment variables.
const DOCS: [&str; 2] = ["ARCHITECTURE.md", "README.md"];

/// Programs of others whose flags the docs show (`helm install ... --set`).
const OTHER_PROGRAMS: [&str; 10] = [
    "helm",
    "kubectl",
    "kustomize",
    "docker",
    "nats-server",
    "nats",
    "cargo",
    "prefect",
    "git",
    "curl",
];

/// The code of `doc`: each fenced block and each inline span.
fn code_spans(doc: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join(doc)).unwrap();
    let (mut spans, mut prose, mut block) = (Vec::new(), String::new(), None::<String>);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            match block.take() {
                Some(code) => spans.push(code),
                None => block = Some(String::new()),
            }
        } else if let Some(code) = block.as_mut() {
            code.push_str(line);
            code.push('\n');
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    spans.extend(prose.split('`').skip(1).step_by(2).map(str::to_owned));
    spans
}

/// The flags of `span` that are ours to check: those of each command line
/// (lines joined at a trailing `\\`) that does not run another program.
fn our_flags_in(span: &str) -> Vec<String> {
    let joined = span.replace("\\\n", " ");
    joined
        .lines()
        .filter(|line| {
            let program = line.trim_start().trim_start_matches("$ ");
            let program = program.split_whitespace().next().unwrap_or_default();
            !OTHER_PROGRAMS.contains(&program)
        })
        .flat_map(flags_in)
        .collect()
}

/// Tokens of `text` made of the characters `keep` accepts.
fn tokens(text: &str, keep: impl Fn(char) -> bool) -> Vec<String> {
    text.split(|c: char| !keep(c))
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

fn flags_in(text: &str) -> Vec<String> {
    tokens(text, |c| c.is_ascii_alphanumeric() || c == '-')
        .into_iter()
        .filter_map(|token| {
            let name = token.strip_prefix("--")?;
            let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
            starts_with_letter.then(|| format!("--{}", name.trim_end_matches('-')))
        })
        .collect()
}

/// `PREFECT_API_URL`-like names: capitals, digits and underscores, at least
/// one underscore, starting with a letter.
fn screaming_names_in(text: &str) -> Vec<String> {
    tokens(text, |c| c.is_ascii_alphanumeric() || c == '_')
        .into_iter()
        .filter(|token| {
            token.starts_with(|c: char| c.is_ascii_uppercase())
                && token.contains('_')
                && !token.ends_with('_')
                && token
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

/// The three services' commands, as their binaries parse them.
fn service_commands() -> Vec<clap::Command> {
    vec![
        poller::cli_command(),
        dispatcher::cli_command(),
        reporter::cli_command(),
    ]
}

/// `prefect-k8s`'s help and that of each of its subcommands.
fn operator_help() -> String {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_prefect-k8s"))
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(output.status.success(), "prefect-k8s {args:?} --help");
        String::from_utf8(output.stdout).unwrap()
    };
    let top = run(&["--help"]);
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(subcommands.contains(&"install".to_owned()), "{top}");
    let mut help = top;
    for subcommand in subcommands {
        help.push_str(&run(&[&subcommand, "--help"]));
    }
    help
}

fn known_flags() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = flags_in(&operator_help()).into_iter().collect();
    for command in service_commands() {
        for arg in command.get_arguments() {
            let longs = arg.get_long().into_iter().chain(
                arg.get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(arg.get_visible_aliases().unwrap_or_default()),
            );
            known.extend(longs.map(|long| format!("--{long}")));
        }
    }
    known.extend(["--help", "--version"].map(String::from));
    known
}

/// Every string literal in the services' and the contract's code that is a
/// SCREAMING_CASE name: the variables read with `std::env::var`, their
/// constants, the stream names.
fn names_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for literal in text.split('"').skip(1).step_by(2) {
                    if screaming_names_in(literal).first().map(String::as_str) == Some(literal) {
                        names.insert(literal.to_owned());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    let crates = [
        "proto",
        "prefect-client",
        "service-runtime",
        "job-manifest",
        "poller",
        "dispatcher",
        "reporter",
        "prefect-k8s",
    ];
    for name in crates {
        walk(&workspace_root().join(name).join("src"), &mut names);
    }
    names
}

fn known_environment() -> BTreeSet<String> {
    let mut known = names_in_code();
    for command in service_commands() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                known.insert(env.to_string_lossy().into_owned());
            }
        }
    }
    let help = operator_help();
    for part in help.split("[env: ").skip(1) {
        known.insert(part.split('=').next().unwrap().to_owned());
    }
    known
}

/// Every metric family the three services serve, with the suffixes of their
/// samples.
fn known_metrics() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for service in ["poller", "dispatcher", "reporter"] {
        let mut registry = MetricsRegistry::new(service);
        // A family is served once it has a sample.
        let calls = CallMetrics::register(registry.registry());
        calls.prefect("GET", "/", Some(200), Duration::ZERO);
        calls.kubernetes("create", "jobs", Some(201), Duration::ZERO);
        match service {
            "poller" => drop(poller::metrics::PollerMetrics::register(
                registry.registry(),
            )),
            "dispatcher" => drop(dispatcher::metrics::DispatcherMetrics::register(
                registry.registry(),
            )),
            _ => drop(reporter::service::ReporterMetrics::register(
                registry.registry(),
            )),
        }
        for line in registry.render_text().lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let family = rest.split_whitespace().next().unwrap().to_owned();
            for suffix in [
                "", "_total", "_bucket", "_sum", "_count", "_created", "_info",
            ] {
                known.insert(format!("{family}{suffix}"));
            }
        }
    }
    assert!(known.len() > 30, "{known:?}");
    known
}

#[test]
fn the_docs_name_only_flags_the_binaries_have() {
    let known = known_flags();
    let mut unknown = BTreeSet::new();
    for doc in DOCS {
        for span in code_spans(doc) {
            for flag in our_flags_in(&span) {
                if !known.contains(&flag) {
                    unknown.insert(format!("{doc}: {flag} (in `{span}`)"));
                }
            }
        }
    }
    assert!(unknown.is_empty(), "flags no binary has:\n{unknown:#?}");
}

#[test]
fn the_docs_name_only_environment_variables_the_code_reads() {
    let known = known_environment();
    let mut unknown = BTreeSet::new();
    for doc in DOCS {
        for span in code_spans(doc) {
            for name in screaming_names_in(&span) {
                if !known.contains(&name) {
                    unknown.insert(format!("{doc}: {name} (in `{span}`)"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names no service reads or spells:\n{unknown:#?}"
    );
}

#[test]
fn the_docs_name_only_metrics_the_services_serve() {
    let known = known_metrics();
    let mut unknown = BTreeSet::new();
    for doc in DOCS.iter().chain(&["docs/metrics.md"]) {
        let text = std::fs::read_to_string(workspace_root().join(doc)).unwrap();
        for token in tokens(&text, |c| c.is_ascii_alphanumeric() || c == '_') {
            let metric = token.starts_with("prefect_k8s_") && !token.ends_with('_');
            if metric && !known.contains(&token) {
                unknown.insert(format!("{doc}: {token}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no service serves:\n{unknown:#?}"
    );
}

#[test]
fn the_checks_catch_a_name_that_does_not_exist() {
    assert!(!known_flags().contains("--no-such-flag"));
    assert!(known_flags().contains("--stream-replicas"));
    assert!(known_flags().contains("--ui-port"));
    assert!(!known_environment().contains("PREFECT_K8S_NO_SUCH_SETTING"));
    assert!(known_environment().contains("NATS_STREAM_REPLICAS"));
    assert!(known_environment().contains("PREFECT_API_REQUEST_TIMEOUT"));
    assert!(known_metrics().contains("prefect_k8s_build_info"));
    assert_eq!(
        flags_in("-t, --token, --api-key NAME[:KEY] --nats-tls-ca/-cert"),
        ["--token", "--api-key", "--nats-tls-ca"]
    );
    assert_eq!(
        our_flags_in("helm install x \\\n  --set a=b\nprefect-k8s up --ui-port 1"),
        ["--ui-port"]
    );
    assert_eq!(
        screaming_names_in("PREFECT_API_KEY=x `PREFECT_*` NO_COLOR KEY"),
        ["PREFECT_API_KEY", "NO_COLOR"]
    );
}
