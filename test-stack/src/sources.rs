//! The workspace's product code as the source checks read it: every crate's
//! `src/` files (`tests` folders, `tests.rs` and `test_fixtures.rs` left
//! out), and a file's code lines without comments and `#[cfg(test)]` modules.

use std::path::{Path, PathBuf};

/// Every product `.rs` file under `<crate>/src/` of each crate in `root`
/// for which `include(crate_dir)` holds.
pub fn product_sources(root: &Path, include: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).expect("read the workspace") {
        let dir = entry.expect("a workspace entry").path();
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() && include(&dir) {
            walk(&dir.join("src"), &mut files);
        }
    }
    files.sort();
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a source entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if name != "tests" {
                walk(&path, files);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && name != "test_fixtures.rs" {
            files.push(path);
        }
    }
}

/// The file's non-blank code lines, trimmed, with their line numbers;
/// comments and `#[cfg(test)] mod … { … }` blocks left out.
pub fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("read a source file");
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
