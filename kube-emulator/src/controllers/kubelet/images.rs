//! Container images: whether a reference parses the way containerd's does, and the name the
//! kubelet reports in a container's status.

use regex::Regex;

static IMAGE_REFERENCE: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
    Regex::new(r"^((([a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+|localhost)(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")
        .expect("regex")
});

/// Whether the container runtime could parse this image reference.
pub fn is_valid_image_reference(image: &str) -> bool {
    IMAGE_REFERENCE.is_match(image)
}

pub(super) fn normalized_image(image: &str) -> String {
    let mut name = image.to_string();
    let last = name.rsplit('/').next().unwrap_or_default().to_string();
    if !last.contains(':') && !name.contains('@') {
        name.push_str(":latest");
    }
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        if name.contains('/') {
            name = format!("docker.io/{name}");
        } else {
            name = format!("docker.io/library/{name}");
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_checked_like_containerd() {
        assert!(is_valid_image_reference("alpine"));
        assert!(is_valid_image_reference("docker.io/library/alpine:3.20"));
        assert!(is_valid_image_reference(
            "localhost:5000/prefecthq/prefect:3-latest"
        ));
        assert!(!is_valid_image_reference("Alpine"));
        assert!(!is_valid_image_reference("bad image"));
    }

    #[test]
    fn short_images_normalize_to_docker_hub() {
        assert_eq!(
            normalized_image("alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            normalized_image("prefecthq/prefect:3"),
            "docker.io/prefecthq/prefect:3"
        );
    }
}
