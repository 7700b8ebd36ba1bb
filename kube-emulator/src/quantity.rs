//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) parsed to plain numbers so the
//! scheduler can add up requests and compare them with node capacity.

/// Parse a quantity string to a number in base units (cores, bytes, count).
/// Returns `None` when the syntax is invalid.
pub fn parse_quantity(text: &str) -> Option<f64> {
    if !crate::admission::validation::is_valid_quantity(text) {
        return None;
    }
    let suffixes: &[(&str, f64)] = &[
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            // `1E` would be ambiguous with an exponent; the regex only lets `E` through as a suffix
            // when no digits follow, so this is safe.
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("nope"), None);
    }
}
