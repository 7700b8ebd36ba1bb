//! The contract is written once: no crate but this one spells a label, an
//! annotation, the `infrastructure_pid` format or the claim-key format in its
//! code. Reads every other crate's `src/` (tests and comments aside) and fails
//! on a copy, naming the file and line.

use std::path::{Path, PathBuf};

use flow_run_proto::kubernetes::{
    CLAIM_ANNOTATION, FLOW_RUN_ID_LABEL, FORWARDED_COUNT_ANNOTATION, POD_WATCH_TIMEOUT_ANNOTATION,
    SCALE_UP_TIMEOUT_ANNOTATION, WORK_POOL_NAME_LABEL,
};

/// Every `.rs` file under the `src/` of each workspace crate but this one.
fn product_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = test_stack::sources::product_sources(&root, |dir| {
        dir.file_name().is_some_and(|name| name != "proto")
    });
    assert!(files.len() > 50, "found only {} source files", files.len());
    files
}

#[test]
fn labels_and_annotations_are_spelled_only_in_the_contract_crate() {
    let literals = [
        FLOW_RUN_ID_LABEL,
        WORK_POOL_NAME_LABEL,
        CLAIM_ANNOTATION,
        POD_WATCH_TIMEOUT_ANNOTATION,
        SCALE_UP_TIMEOUT_ANNOTATION,
        FORWARDED_COUNT_ANNOTATION,
    ];
    let mut copies = Vec::new();
    for path in product_sources() {
        for (number, line) in test_stack::sources::code_lines(&path) {
            for literal in literals {
                if line.contains(&format!("\"{literal}")) {
                    copies.push(format!("{}:{number}: {}", path.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        copies.is_empty(),
        "use flow_run_proto::kubernetes instead of these copies:\n{}",
        copies.join("\n")
    );
}

/// Whether `line` holds a string literal that is exactly two placeholders
/// joined by a colon (`"{}:{}"`, `"{namespace}:{name}"`): how a pid or a
/// claim key would be written.
fn joins_two_values(line: &str) -> bool {
    line.split('"').skip(1).step_by(2).any(|literal| {
        let Some((left, right)) = literal.split_once(':') else {
            return false;
        };
        let placeholder = |part: &str| {
            part.strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .is_some_and(|name| {
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                })
        };
        placeholder(left) && placeholder(right)
    })
}

#[test]
fn the_pid_and_claim_formats_are_written_and_parsed_only_in_the_contract_crate() {
    // `<a>:<b>` built or split near a pid, a claim or the ids of a submission.
    let subjects = [
        "pid",
        "claim",
        "namespace",
        "job_name",
        "flow_run_id",
        "state_id",
    ];
    let splits = ["split(':')", "split_once(':')", "rsplit_once(':')"];
    let mut copies = Vec::new();
    for path in product_sources() {
        let lines = test_stack::sources::code_lines(&path);
        for (at, (number, line)) in lines.iter().enumerate() {
            if !joins_two_values(line) && !splits.iter().any(|split| line.contains(split)) {
                continue;
            }
            let window = &lines[at.saturating_sub(3)..(at + 4).min(lines.len())];
            let near = |word: &str| window.iter().any(|(_, l)| l.contains(word));
            if subjects.iter().any(|word| near(word)) {
                copies.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        copies.is_empty(),
        "use flow_run_proto::InfrastructurePid or SubmissionKey instead of these:\n{}",
        copies.join("\n")
    );
}

#[test]
fn the_format_check_knows_a_pid_format_when_it_sees_one() {
    assert!(joins_two_values(r#"let pid = format!("{}:{}", ns, name);"#));
    assert!(joins_two_values(r#"format!("{namespace}:{job.name}")"#));
    assert!(!joins_two_values(
        r#"format!("system:serviceaccount:{namespace}:{name}")"#
    ));
    assert!(!joins_two_values(r#"format!("{SECRET}:{KEY}")"#));
}

#[test]
fn the_scan_sees_the_code_it_must_see() {
    // The dispatcher writes the claim annotation through the constant; were
    // the scan blind (wrong root, every line dropped), both tests above
    // would pass vacuously.
    let uses = product_sources()
        .iter()
        .flat_map(|path| test_stack::sources::code_lines(path))
        .filter(|(_, line)| line.contains("CLAIM_ANNOTATION"))
        .count();
    assert!(uses >= 2, "CLAIM_ANNOTATION used {uses} times");
}
