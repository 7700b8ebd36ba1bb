//! The repository builds and tests on its own. The people who build the
//! project keep reference material in a folder beside the checkout; a user's
//! clone has no such folder, so no tracked file may point into it or climb out
//! of the workspace to read anything (CI had the folder, so CI stayed green
//! while a fresh clone's `./scripts/test.sh` failed).

use std::path::Path;
use std::process::Command;

/// The reference folder's name; the patterns are built from it so that this
/// file does not itself name a path into it.
const REFERENCE_DIR: &str = "shared";

/// What no tracked file may contain: a path into the reference folder, or a
/// path appended to a crate's manifest dir that climbs above the workspace.
fn forbidden() -> Vec<String> {
    let mut patterns = vec![format!("../{REFERENCE_DIR}")];
    for sub in ["k8s-transcripts", "schemas", "research", "seed", "hooks"] {
        patterns.push(format!("{REFERENCE_DIR}/{sub}"));
    }
    patterns.push(format!("{REFERENCE_DIR}/README"));
    // `concat!(env!("CARGO_MANIFEST_DIR"), "/../../x")` leaves the workspace:
    // every crate sits one level below the root.
    patterns.push("\"/../../".to_string());
    patterns
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-stack sits in the workspace")
}

fn tracked_files() -> Vec<String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(workspace_root())
        .output()
        .expect("git runs (the tests run from a git checkout)");
    assert!(
        out.status.success(),
        "git ls-files failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("file names are UTF-8")
        .split('\0')
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// `(file, line number, line)` of every forbidden reference in `text`.
fn offences(file: &str, text: &str, patterns: &[String]) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| patterns.iter().any(|p| line.contains(p.as_str())))
        .map(|(i, line)| format!("{file}:{}: {}", i + 1, line.trim()))
        .collect()
}

#[test]
fn no_tracked_file_reads_outside_the_repository() {
    let patterns = forbidden();
    let files = tracked_files();
    assert!(
        files.iter().any(|f| f == "Cargo.toml"),
        "git ls-files did not list the workspace: {files:?}"
    );
    let mut found = Vec::new();
    // This file spells the patterns out to look for them.
    let this_file = "test-stack/tests/self_contained.rs";
    for file in files.iter().filter(|file| *file != this_file) {
        // Binary files (none read a path) are skipped.
        if let Ok(text) = std::fs::read_to_string(workspace_root().join(file)) {
            found.extend(offences(file, &text, &patterns));
        }
    }
    assert!(
        found.is_empty(),
        "tracked files point outside the repository (copy what they need into the repo, \
         with its licence):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_looks_for() {
    let patterns = forbidden();
    let bad = format!(
        "ok line\nlet p = \"../{REFERENCE_DIR}/schemas/x.json\";\n\
         concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/../../{REFERENCE_DIR}/x\")\n"
    );
    assert_eq!(offences("f.rs", &bad, &patterns).len(), 2);
    assert!(offences("f.rs", "resources:\n  - ../../base\n", &patterns).is_empty());
}
