//! Container images: whether a reference parses the way containerd's does, the name the
//! kubelet reports in a container's status, and the simulated pull (ErrImagePull, then
//! ImagePullBackOff with a doubling back-off; the Pulling/Pulled events).

use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use super::PodWorker;

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

impl PodWorker {
    /// A container whose image reference does not parse: InvalidImageName.
    pub(super) fn report_invalid_image(&self, index: usize, cname: &str, image: &str) {
        let message = format!("Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format");
        if self.set_waiting(index, "InvalidImageName", Some(&message)) {
            self.event("Warning", "InspectFailed", &message, Some(cname));
            self.event("Warning", "Failed", "Error: InvalidImageName", Some(cname));
        }
    }

    /// A failed pull: ErrImagePull the first time, ImagePullBackOff on the retries.
    pub(super) fn report_pull_failure(
        &self,
        index: usize,
        cname: &str,
        image: &str,
        error: &str,
        pull_failures: u32,
    ) {
        let (reason, message) = if pull_failures == 0 {
            ("ErrImagePull", error.to_string())
        } else {
            (
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\""),
            )
        };
        // Back-off events repeat on every retry (aggregated into `count`).
        let changed = self.set_waiting(index, reason, Some(&message));
        if changed || reason == "ImagePullBackOff" {
            if reason == "ErrImagePull" {
                self.event(
                    "Normal",
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                    Some(cname),
                );
                self.event(
                    "Warning",
                    "Failed",
                    &format!("Failed to pull image \"{image}\": {error}"),
                    Some(cname),
                );
                self.event("Warning", "Failed", "Error: ErrImagePull", Some(cname));
            } else {
                self.event("Normal", "BackOff", &message, Some(cname));
                self.event("Warning", "Failed", "Error: ImagePullBackOff", Some(cname));
            }
        }
    }

    /// How long stage 2 waits before checking again. The kubelet's image back-off doubles up
    /// to five minutes; configuration errors are retried at the base interval.
    pub(super) fn retry_wait(&self, pull_blocked: bool, pull_failures: u32) -> Duration {
        let base = self
            .cluster
            .config
            .image_pull_backoff
            .max(Duration::from_millis(50));
        if pull_blocked {
            (base * 2u32.saturating_pow(pull_failures.saturating_sub(1).min(16)))
                .min(Duration::from_secs(300))
        } else {
            base
        }
    }

    /// Every container can start: the Pulled (or Pulling + Pulled) events of its image.
    pub(super) fn report_images_pulled(&self, containers: &[Value]) {
        for c in containers {
            let image = c["image"].as_str().unwrap_or_default();
            let cname = c["name"].as_str().unwrap_or_default();
            if c["imagePullPolicy"] == "IfNotPresent" || c["imagePullPolicy"] == "Never" {
                self.event(
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                    Some(cname),
                );
            } else {
                self.event(
                    "Normal",
                    "Pulling",
                    &format!("Pulling image \"{image}\""),
                    Some(cname),
                );
                self.event("Normal", "Pulled", &format!("Successfully pulled image \"{image}\" in 1.2s (1.2s including waiting). Image size: 3623807 bytes."), Some(cname));
            }
        }
    }
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
