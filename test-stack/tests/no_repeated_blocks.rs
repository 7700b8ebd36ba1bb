//! No block of 12 or more code lines appears twice in product code (every
//! crate's `src/`, tests and comments aside): shared shapes live in one place
//! (`service_runtime::serve`, `service_runtime::options`, the contract crate)
//! rather than in copies that drift.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The shortest repeated block that fails the test.
const BLOCK: usize = 12;

fn product_sources(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    walk(&path, files);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" && name != "test_fixtures.rs" {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            walk(&dir.join("src"), &mut files);
        }
    }
    files
}

/// The file's non-blank code lines, trimmed, with their line numbers;
/// comments and `#[cfg(test)] mod … { … }` blocks left out.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let next = lines.get(index + 1).copied().unwrap_or_default();
        if line == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            index += 2;
            while index < lines.len() && lines[index] != "}" {
                index += 1;
            }
        } else {
            let trimmed = line.trim();
            if !trimmed.is_empty() && !trimmed.starts_with("//") {
                code.push((index + 1, trimmed.to_owned()));
            }
        }
        index += 1;
    }
    code
}

#[test]
fn no_block_of_twelve_lines_is_repeated_in_product_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = product_sources(root);
    assert!(files.len() > 100, "found only {} files", files.len());
    let mut seen: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    for path in &files {
        let code = code_lines(path);
        for window in code.windows(BLOCK) {
            let block: Vec<String> = window.iter().map(|(_, line)| line.clone()).collect();
            let place = format!(
                "{}:{}",
                path.strip_prefix(root).unwrap().display(),
                window[0].0
            );
            seen.entry(block).or_default().push(place);
        }
    }
    let mut repeated: Vec<String> = seen
        .into_values()
        .filter(|places| places.len() > 1)
        .map(|places| places.join(" and "))
        .collect();
    repeated.sort();
    assert!(
        repeated.is_empty(),
        "{} blocks of {BLOCK} lines repeated, e.g.:\n{}",
        repeated.len(),
        repeated[..repeated.len().min(10)].join("\n")
    );
}
