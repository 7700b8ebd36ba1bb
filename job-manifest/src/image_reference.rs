//! Container image references checked against the grammar of the reference
//! library used by container runtimes (`distribution/reference`):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component { "/" path-component }
//! domain     := domain-component { "." domain-component } [ ":" port ]
//! path-component := [a-z0-9]+ { ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ }
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}
//! ```
//!
//! A kubelet that cannot parse the image leaves the pod in `InvalidImageName`
//! forever; checking before the Job is created turns that into an immediate,
//! explained failure.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::ManifestError;

static DOMAIN_COMPONENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$").expect("valid regex")
});
static IPV6_HOST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[[a-fA-F0-9:]+\]$").expect("valid regex"));
static PATH_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$").expect("valid regex"));
// The grammar's `\w` is Go's, ASCII only. Rust's `\w` is Unicode: it would
// accept tags the kubelet rejects, and its 128 bounded copies of the Unicode
// class compiled to about 20 MB of heap, the dispatcher's peak memory.
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("valid regex"));
static DIGEST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
        .expect("valid regex")
});

const NAME_MAX_LENGTH: usize = 255;

fn image_error(field: &str, image: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::ImageReference {
        field: field.to_string(),
        image: image.to_string(),
        reason: reason.into(),
    }
}

/// Checks `image` and names `field` in the error.
pub fn check_image_reference(field: &str, image: &str) -> Result<(), ManifestError> {
    if image.is_empty() {
        return Err(image_error(field, image, "must not be empty"));
    }
    if image.chars().any(char::is_whitespace) {
        return Err(image_error(field, image, "must not contain whitespace"));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        if !DIGEST.is_match(digest) {
            return Err(image_error(
                field,
                image,
                format!("digest {digest:?} must be <algorithm>:<at least 32 hex digits>, e.g. sha256:..."),
            ));
        }
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |index| index + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(index) => (
            &rest[..last_slash + index],
            Some(&rest[last_slash + index + 1..]),
        ),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        if !TAG.is_match(tag) {
            return Err(image_error(
                field,
                image,
                format!(
                    "tag {tag:?} must be 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
                ),
            ));
        }
    }
    check_name(field, image, name)
}

fn check_name(field: &str, image: &str, name: &str) -> Result<(), ManifestError> {
    if name.is_empty() {
        return Err(image_error(field, image, "the repository name is missing"));
    }
    if name.len() > NAME_MAX_LENGTH {
        return Err(image_error(
            field,
            image,
            format!("the repository name must be at most {NAME_MAX_LENGTH} characters"),
        ));
    }
    let components: Vec<&str> = name.split('/').collect();
    // Like the reference grammar, the first of several components may be a
    // registry host ("registry.example.com:5000", "localhost", "MyRegistry").
    let path = if components.len() > 1 && is_domain(components[0]) {
        &components[1..]
    } else {
        &components[..]
    };
    for component in path {
        if component.is_empty() {
            return Err(image_error(
                field,
                image,
                "the repository name has an empty path component ('//' or a leading or trailing '/')",
            ));
        }
        if PATH_COMPONENT.is_match(component) {
            continue;
        }
        let reason = if component.chars().any(|c| c.is_ascii_uppercase()) {
            format!("repository name component {component:?} must be lower case")
        } else {
            format!(
                "repository name component {component:?} may only contain lower-case letters, digits and single '.', '_' or '__' or runs of '-' between them"
            )
        };
        return Err(image_error(field, image, reason));
    }
    Ok(())
}

fn is_domain(component: &str) -> bool {
    let (host, port) = if component.starts_with('[') {
        match component.rfind(']') {
            Some(end) => (&component[..=end], component[end + 1..].strip_prefix(':')),
            None => return false,
        }
    } else {
        match component.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (component, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if IPV6_HOST.is_match(host) {
        return true;
    }
    !host.is_empty() && host.split('.').all(|part| DOMAIN_COMPONENT.is_match(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_references() {
        for image in [
            "prefecthq/prefect:3.9.1-python3.11",
            "python",
            "python:3.12-slim",
            "docker.io/library/python:3",
            "registry.example.com:5000/team/flow:v1.2",
            "localhost/flow",
            "ghcr.io/org/repo__x/y-z:tag_1",
            "[::1]:5000/flow:1",
            "repo/flow@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "repo/flow:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(check_image_reference("image", image).is_ok(), "{image}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("", "must not be empty"),
            ("prefecthq/prefect: 3", "whitespace"),
            ("prefecthq/Prefect:3", "must be lower case"),
            ("prefecthq/prefect:-bad", "tag"),
            ("prefecthq/prefect:a/b", "lower"),
            ("prefecthq//prefect", "empty path component"),
            ("prefecthq/prefect@sha256:xyz", "digest"),
            ("prefect..hq/x", "may only contain"),
            (":tag", "repository name is missing"),
            ("prefecthq/prefect:caf\u{e9}", "tag"),
            ("prefecthq/prefect:\u{661}", "tag"),
        ];
        for (image, reason) in cases {
            let err = check_image_reference("job_variables.image", image).expect_err(image);
            assert_eq!(err.field(), "job_variables.image");
            assert!(err.to_string().contains(reason), "{image}: {err}");
        }
    }

    #[test]
    fn an_upper_case_registry_host_is_a_domain() {
        assert!(check_image_reference("image", "MyRegistry/flow:1").is_ok());
        assert!(check_image_reference("image", "MyRepo").is_err());
    }
}
