//! Deterministic Job names. prefect-kubernetes lets Kubernetes pick a random
//! suffix (`generateName`); this agent names the Job itself from a claim key (for
//! example the flow run id), so a retried create hits `409 AlreadyExists` instead
//! of making a second Job.

use sha2::{Digest, Sha256};

use crate::slug::{slugify_name, NAME_SLUG_MAX_LENGTH};

/// Name base used when the given one has nothing usable (as prefect-kubernetes).
pub const FALLBACK_NAME_BASE: &str = "prefect-job";
const HASH_HEX_CHARS: usize = 16;

/// `<slug of name_base, at most 45 chars>-<first 16 hex chars of sha256(claim_key)>`:
/// a valid DNS-1123 label of at most 62 characters, the same for the same inputs.
pub fn job_name(name_base: &str, claim_key: &str) -> String {
    let base = slugify_name(name_base, NAME_SLUG_MAX_LENGTH)
        .unwrap_or_else(|| FALLBACK_NAME_BASE.to_string());
    let digest = Sha256::digest(claim_key.as_bytes());
    let hex: String = digest
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>()
        .chars()
        .take(HASH_HEX_CHARS)
        .collect();
    format!("{base}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes_names::check_dns1123_label;

    #[test]
    fn names_are_deterministic_and_valid() {
        let first = job_name("crimson-otter", "1d96b242-11d9-4a53-8b8c-f603d3e7c280");
        let again = job_name("crimson-otter", "1d96b242-11d9-4a53-8b8c-f603d3e7c280");
        assert_eq!(first, again);
        assert!(first.starts_with("crimson-otter-"), "{first}");
        assert_eq!(first.len(), "crimson-otter-".len() + 16);
        assert!(check_dns1123_label("name", &first).is_ok());
        assert_ne!(first, job_name("crimson-otter", "another run"));
    }

    #[test]
    fn the_hash_is_sha256_of_the_claim_key() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(job_name("x", "abc"), "x-ba7816bf8f01cfea");
    }

    #[test]
    fn awkward_bases_still_give_valid_names() {
        for base in ["", "!!!", "Ünïcödé Flow Run", &"Very Long Name ".repeat(10), "-lead-", "a_b.c"] {
            let name = job_name(base, "key");
            assert!(name.len() <= 63, "{name}");
            assert!(check_dns1123_label("name", &name).is_ok(), "{base:?} -> {name}");
        }
        assert_eq!(job_name("!!!", "abc"), "prefect-job-ba7816bf8f01cfea");
    }
}
