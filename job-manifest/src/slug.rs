//! Slugs for Kubernetes names, label keys and label values, reproducing
//! prefect-kubernetes' `_slugify_name`, `_slugify_label_key` and
//! `_slugify_label_value`, which are built on python-slugify's (legacy) pipeline.
//!
//! The pipeline for a text: `'` -> `-`; transliterate to ASCII; decode HTML
//! entities (`&amp;`, `&#38;`, `&#x26;`); lower-case when asked; drop `'`; drop a
//! `,` between two digits; replace every run of disallowed characters by `-`;
//! collapse `--`; strip `-`; cut at the maximum length and strip `-` again.
//!
//! Known gap: python-slugify uses the text-unidecode tables for non-ASCII text and
//! knows every HTML 4 named entity; here transliteration uses `deunicode` and only the
//! named entities `amp`, `lt`, `gt`, `quot` and `nbsp` are decoded. For ASCII text
//! without other named entities the output is identical.

use std::sync::LazyLock;

use regex::Regex;

/// Longest slug used as a job name base; leaves room for a suffix within 63 chars.
pub const NAME_SLUG_MAX_LENGTH: usize = 45;
/// Longest label value and label key name part.
pub const LABEL_NAME_MAX_LENGTH: usize = 63;
/// Longest label key prefix.
pub const LABEL_PREFIX_MAX_LENGTH: usize = 253;

static NAME_DISALLOWED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^a-zA-Z0-9-]+").expect("valid regex"));
static LABEL_DISALLOWED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^a-zA-Z0-9\-_.]+").expect("valid regex"));
static LABEL_PREFIX_DISALLOWED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^a-zA-Z0-9\-.]+").expect("valid regex"));
static NAMED_ENTITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"&(amp|lt|gt|quot|nbsp);").expect("valid regex"));
static DECIMAL_ENTITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"&#(\d+);").expect("valid regex"));
static HEX_ENTITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"&#x([\da-fA-F]+);").expect("valid regex"));
static COMMA_BETWEEN_DIGITS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d),(\d)").expect("valid regex"));
static DASH_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-{2,}").expect("valid regex"));

/// python-slugify's `slugify(text, max_length, regex_pattern, lowercase)` with
/// the other arguments at their defaults.
fn python_slugify(text: &str, disallowed: &Regex, lowercase: bool, max_length: usize) -> String {
    let text = text.replace('\'', "-");
    let text = if text.is_ascii() {
        text
    } else {
        deunicode::deunicode(&text)
    };
    let text = decode_entities(&text);
    // Entities can produce non-ASCII characters again (`&#233;`).
    let text = if text.is_ascii() {
        text
    } else {
        deunicode::deunicode(&text)
    };
    let text = if lowercase { text.to_lowercase() } else { text };
    let text = text.replace('\'', "");
    let text = remove_commas_between_digits(&text);
    let text = disallowed.replace_all(&text, "-");
    let text = DASH_RUN.replace_all(&text, "-");
    let text = text.trim_matches('-');
    truncate_slug(text, max_length)
}

/// python-slugify's `smart_truncate` without word boundaries: cut, then strip `-`.
fn truncate_slug(text: &str, max_length: usize) -> String {
    let text = text.trim_matches('-');
    if max_length == 0 || text.chars().count() < max_length {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_length).collect();
    cut.trim_matches('-').to_string()
}

fn remove_commas_between_digits(text: &str) -> String {
    // Python uses look-arounds, so overlapping cases like "1,2,3" lose every comma;
    // repeat until nothing changes to get the same result.
    let mut current = text.to_string();
    loop {
        let next = COMMA_BETWEEN_DIGITS
            .replace_all(&current, "$1$2")
            .into_owned();
        if next == current {
            return current;
        }
        current = next;
    }
}

fn decode_entities(text: &str) -> String {
    let text = NAMED_ENTITY.replace_all(text, |caps: &regex::Captures<'_>| {
        match &caps[1] {
            "amp" => "&",
            "lt" => "<",
            "gt" => ">",
            "quot" => "\"",
            _ => "\u{a0}",
        }
        .to_string()
    });
    let decimal_ok = DECIMAL_ENTITY.captures_iter(&text).all(|caps| {
        caps[1]
            .parse::<u32>()
            .ok()
            .and_then(char::from_u32)
            .is_some()
    });
    let text = if decimal_ok {
        DECIMAL_ENTITY
            .replace_all(&text, |caps: &regex::Captures<'_>| {
                caps[1]
                    .parse::<u32>()
                    .ok()
                    .and_then(char::from_u32)
                    .map(String::from)
                    .unwrap_or_default()
            })
            .into_owned()
    } else {
        text.into_owned()
    };
    let hex_ok = HEX_ENTITY.captures_iter(&text).all(|caps| {
        u32::from_str_radix(&caps[1], 16)
            .ok()
            .and_then(char::from_u32)
            .is_some()
    });
    if hex_ok {
        HEX_ENTITY
            .replace_all(&text, |caps: &regex::Captures<'_>| {
                u32::from_str_radix(&caps[1], 16)
                    .ok()
                    .and_then(char::from_u32)
                    .map(String::from)
                    .unwrap_or_default()
            })
            .into_owned()
    } else {
        text
    }
}

/// `_slugify_name`: lower-case `[a-z0-9-]`, at most `max_length` characters;
/// `None` when nothing is left.
pub fn slugify_name(name: &str, max_length: usize) -> Option<String> {
    let slug = python_slugify(name, &NAME_DISALLOWED, true, max_length);
    (!slug.is_empty()).then_some(slug)
}

/// `_slugify_label_value`: `[a-zA-Z0-9-_.]`, at most 63 characters, starting and
/// ending with an alphanumeric; the original text when the slug would be empty
/// (so Kubernetes, or our validation, reports it).
pub fn slugify_label_value(value: &str) -> String {
    let slug = python_slugify(value, &LABEL_DISALLOWED, false, LABEL_NAME_MAX_LENGTH);
    let slug = slug.trim_matches(|c| c == '_' || c == '-' || c == '.');
    if slug.is_empty() {
        value.to_string()
    } else {
        slug.to_string()
    }
}

/// `_slugify_label_key`: an optional `prefix/` (`[a-zA-Z0-9-.]`, at most 253
/// characters) and a name (`[a-zA-Z0-9-_.]`, at most 63 characters); each part
/// falls back to the original text when its slug would be empty.
pub fn slugify_label_key(key: &str) -> String {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_slug = python_slugify(name, &LABEL_DISALLOWED, false, LABEL_NAME_MAX_LENGTH);
    let name_slug = non_empty_or(
        name_slug.trim_matches(|c| c == '_' || c == '-' || c == '.'),
        name,
    );
    match prefix {
        // Python tests the prefix for truthiness: an empty prefix is dropped.
        Some(prefix) if !prefix.is_empty() => {
            let prefix_slug = python_slugify(
                prefix,
                &LABEL_PREFIX_DISALLOWED,
                false,
                LABEL_PREFIX_MAX_LENGTH,
            );
            let prefix_slug = non_empty_or(
                prefix_slug.trim_matches(|c| c == '_' || c == '-' || c == '.'),
                prefix,
            );
            format!("{prefix_slug}/{name_slug}")
        }
        _ => name_slug,
    }
}

fn non_empty_or(slug: &str, original: &str) -> String {
    if slug.is_empty() {
        original.to_string()
    } else {
        slug.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below were produced by prefect-kubernetes 0.8.0 itself.
    #[test]
    fn label_values_match_prefect_kubernetes() {
        let cases = [
            ("Héllo Wörld", "Hello-World"),
            ("ß straße", "ss-strasse"),
            ("x&amp;y", "x-y"),
            ("1,000 runs", "1000-runs"),
            ("a__b..c", "a__b..c"),
            ("--a--", "a"),
            ("_x_", "x"),
            ("É", "E"),
            ("ﬁ", "fi"),
            ("Hello World/ok", "Hello-World-ok"),
            (
                "2026-11-27T04:00:01.123456+00:00",
                "2026-11-27T04-00-01.123456-00-00",
            ),
            ("!!!", "!!!"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(slugify_label_value(input), expected, "input {input:?}");
        }
    }

    #[test]
    fn label_values_are_cut_at_63_characters() {
        let long = "A".repeat(70);
        assert_eq!(slugify_label_value(&long), "A".repeat(63));
        // A cut that ends on a separator drops it.
        let dashed = format!("{}-{}", "a".repeat(62), "b".repeat(5));
        assert_eq!(slugify_label_value(&dashed), "a".repeat(62));
    }

    #[test]
    fn names_are_lower_case_and_cut_at_45() {
        assert_eq!(
            slugify_name("My Flow Run", 45).as_deref(),
            Some("my-flow-run")
        );
        assert_eq!(slugify_name("a__b..c", 45).as_deref(), Some("a-b-c"));
        assert_eq!(slugify_name(&"A".repeat(70), 45), Some("a".repeat(45)));
        assert_eq!(slugify_name("!!!", 45), None);
    }

    #[test]
    fn label_keys_slug_prefix_and_name_separately() {
        assert_eq!(slugify_label_key("My Label!"), "My-Label");
        assert_eq!(slugify_label_key("a/b c"), "a/b-c");
        assert_eq!(
            slugify_label_key("Ex.com/Héllo Wörld"),
            "Ex.com/Hello-World"
        );
        assert_eq!(slugify_label_key("pre_fix/x"), "pre-fix/x");
        assert_eq!(slugify_label_key("/x y"), "x-y");
        assert_eq!(
            slugify_label_key("prefect.io/flow-run-id"),
            "prefect.io/flow-run-id"
        );
    }
}

#[cfg(test)]
mod transliteration_tests {
    use super::*;

    // Non-ASCII text goes through `deunicode` where Python uses text-unidecode;
    // these common cases agree (expected values from prefect-kubernetes 0.8.0).
    #[test]
    fn common_non_ascii_text_matches_python() {
        assert_eq!(slugify_label_value("日本語"), "Ri-Ben-Yu");
        assert_eq!(
            slugify_label_value("Nightly ETL (prod) — ünïcode"),
            "Nightly-ETL-prod-unicode"
        );
        assert_eq!(
            slugify_name("Ünïcödé Flow", 45).as_deref(),
            Some("unicode-flow")
        );
    }
}
