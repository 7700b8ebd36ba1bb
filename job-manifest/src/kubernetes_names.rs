//! Kubernetes name rules: DNS-1123 labels and subdomains (namespaces, job,
//! service account and secret names) and label/annotation keys and label values,
//! as the API server validates them.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::ManifestError;

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("valid regex"));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("valid regex")
});
static QUALIFIED_NAME_PART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("valid regex")
});

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;

fn name_error(field: &str, value: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::ObjectName {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A DNS-1123 label (namespaces, job names): at most 63 lower-case alphanumerics
/// or `-`, starting and ending with an alphanumeric.
pub fn check_dns1123_label(field: &str, value: &str) -> Result<(), ManifestError> {
    if value.is_empty() {
        return Err(name_error(field, value, "must not be empty"));
    }
    if value.len() > DNS1123_LABEL_MAX {
        return Err(name_error(
            field,
            value,
            format!("must be at most {DNS1123_LABEL_MAX} characters (DNS-1123 label)"),
        ));
    }
    if !DNS1123_LABEL.is_match(value) {
        return Err(name_error(
            field,
            value,
            "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain (service accounts, secrets): dot-separated DNS-1123
/// labels, at most 253 characters.
pub fn check_dns1123_subdomain(field: &str, value: &str) -> Result<(), ManifestError> {
    if value.is_empty() {
        return Err(name_error(field, value, "must not be empty"));
    }
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(name_error(
            field,
            value,
            format!("must be at most {DNS1123_SUBDOMAIN_MAX} characters (DNS-1123 subdomain)"),
        ));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        return Err(name_error(
            field,
            value,
            "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

fn label_error(field: &str, reason: String) -> ManifestError {
    ManifestError::Label {
        field: field.to_string(),
        reason,
    }
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain,
/// the name at most 63 characters of `[A-Za-z0-9-_.]` with alphanumeric ends.
pub fn check_label_key(field: &str, key: &str) -> Result<(), ManifestError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if check_dns1123_subdomain(field, prefix).is_err() {
            return Err(label_error(
                field,
                format!(
                    "key {key:?}: the prefix {prefix:?} must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.')"
                ),
            ));
        }
    }
    if name.is_empty() || name.len() > LABEL_VALUE_MAX || !QUALIFIED_NAME_PART.is_match(name) {
        return Err(label_error(
            field,
            format!(
                "key {key:?}: the name part must be 1-63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9-_.]` with
/// alphanumeric ends.
pub fn check_label_value(field: &str, key: &str, value: &str) -> Result<(), ManifestError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > LABEL_VALUE_MAX || !QUALIFIED_NAME_PART.is_match(value) {
        return Err(label_error(
            field,
            format!(
                "value {value:?} of label {key:?} must be at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        assert!(check_dns1123_label("namespace", "prefect-jobs").is_ok());
        assert!(check_dns1123_label("namespace", "a").is_ok());
        for bad in ["", "Prefect", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            let err = check_dns1123_label("namespace", bad).expect_err(bad);
            assert_eq!(err.field(), "namespace");
        }
    }

    #[test]
    fn dns1123_subdomains() {
        assert!(check_dns1123_subdomain("sa", "prefect.worker-sa").is_ok());
        for bad in ["", "Worker", "a..b", ".a", "a_b"] {
            assert!(check_dns1123_subdomain("sa", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_label_key("labels", "prefect.io/flow-run-id").is_ok());
        assert!(check_label_key("labels", "My_Label.x").is_ok());
        assert!(check_label_key("labels", "Example.com/x").is_err());
        assert!(check_label_key("labels", "a/").is_err());
        assert!(check_label_key("labels", "-a").is_err());
        assert!(check_label_value("labels", "k", "").is_ok());
        assert!(check_label_value("labels", "k", "Hello-World_1.0").is_ok());
        let err = check_label_value("labels", "k", "!!!").expect_err("invalid");
        assert!(err.to_string().contains("\"!!!\""), "{err}");
        assert!(check_label_value("labels", "k", &"a".repeat(64)).is_err());
    }
}
