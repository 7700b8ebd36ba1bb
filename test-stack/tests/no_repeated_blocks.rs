//! No block of 12 or more code lines appears twice in product code (every
//! crate's `src/`, tests and comments aside): shared shapes live in one place
//! (`service_runtime::serve`, `service_runtime::options`, the contract crate)
//! rather than in copies that drift.

use std::collections::HashMap;
use std::path::Path;

use test_stack::sources::{code_lines, product_sources};

/// The shortest repeated block that fails the test.
const BLOCK: usize = 12;

#[test]
fn no_block_of_twelve_lines_is_repeated_in_product_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = product_sources(root, |_| true);
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
