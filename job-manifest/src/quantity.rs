//! Kubernetes resource quantities (`500m`, `2`, `1.5`, `128Mi`, `1e3`), checked
//! with the API server's grammar:
//!
//! ```text
//! quantity := [ "+" | "-" ] number [ suffix ]
//! number   := digits | digits "." [ digits ] | "." digits
//! suffix   := "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"      (binary)
//!           | "m" | "k" | "M" | "G" | "T" | "P" | "E"      (decimal)
//!           | ( "e" | "E" ) [ "+" | "-" ] digits            (exponent)
//! ```
//!
//! Container requests and limits must also be non-negative, and a request may
//! not exceed the limit of the same resource.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::error::ManifestError;

static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$",
    )
    .expect("valid regex")
});

fn quantity_error(field: &str, value: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Quantity {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses a quantity string to its approximate numeric value (for comparisons).
pub fn parse_quantity(field: &str, text: &str) -> Result<f64, ManifestError> {
    let caps = QUANTITY.captures(text).ok_or_else(|| {
        quantity_error(
            field,
            text,
            "must be a Kubernetes quantity: a number with an optional suffix, e.g. 500m, 2, 1.5, 128Mi, 1Gi",
        )
    })?;
    let number: f64 = caps[1]
        .parse()
        .map_err(|_| quantity_error(field, text, "the number does not parse"))?;
    let multiplier = match caps.get(2).map(|m| m.as_str()) {
        None => 1.0,
        Some("Ki") => 1024f64,
        Some("Mi") => 1024f64.powi(2),
        Some("Gi") => 1024f64.powi(3),
        Some("Ti") => 1024f64.powi(4),
        Some("Pi") => 1024f64.powi(5),
        Some("Ei") => 1024f64.powi(6),
        Some("m") => 1e-3,
        Some("k") => 1e3,
        Some("M") => 1e6,
        Some("G") => 1e9,
        Some("T") => 1e12,
        Some("P") => 1e15,
        Some("E") => 1e18,
        Some(exponent) => {
            let power: i32 = exponent[1..]
                .parse()
                .map_err(|_| quantity_error(field, text, "the exponent is out of range"))?;
            10f64.powi(power)
        }
    };
    Ok(number * multiplier)
}

/// Checks one request or limit value (a string or a JSON number) and returns its
/// numeric value.
pub fn check_resource_quantity(field: &str, value: &Value) -> Result<f64, ManifestError> {
    let parsed = match value {
        Value::String(text) => parse_quantity(field, text)?,
        Value::Number(number) => number
            .as_f64()
            .ok_or_else(|| quantity_error(field, &number.to_string(), "not a finite number"))?,
        other => {
            return Err(quantity_error(
                field,
                &other.to_string(),
                "must be a string such as \"500m\" or \"1Gi\", or a number",
            ))
        }
    };
    if parsed < 0.0 {
        return Err(quantity_error(
            field,
            &display_value(value),
            "must be greater than or equal to 0",
        ));
    }
    Ok(parsed)
}

fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Checks a container's `resources` object: every quantity under `limits` and
/// `requests`, and that no request exceeds its limit.
pub fn check_container_resources(field: &str, resources: &Value) -> Result<(), ManifestError> {
    let Some(resources) = resources.as_object() else {
        return Err(quantity_error(
            field,
            &resources.to_string(),
            "resources must be an object",
        ));
    };
    let mut parsed_limits = Vec::new();
    for section in ["limits", "requests"] {
        let Some(entries) = resources.get(section) else {
            continue;
        };
        let section_field = format!("{field}.{section}");
        let Some(entries) = entries.as_object() else {
            return Err(quantity_error(
                &section_field,
                &entries.to_string(),
                "must be an object of resource name to quantity",
            ));
        };
        for (resource, value) in entries {
            let entry_field = format!("{section_field}.{resource}");
            let amount = check_resource_quantity(&entry_field, value)?;
            if section == "limits" {
                parsed_limits.push((resource.clone(), amount, display_value(value)));
            } else if let Some((_, limit, limit_text)) =
                parsed_limits.iter().find(|(name, _, _)| name == resource)
            {
                if amount > *limit {
                    return Err(quantity_error(
                        &entry_field,
                        &display_value(value),
                        format!("the request must be less than or equal to the {resource} limit ({limit_text})"),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_kubernetes_grammar() {
        let cases = [
            ("500m", 0.5),
            ("2", 2.0),
            ("1.5", 1.5),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            (".5", 0.5),
            ("5.", 5.0),
            ("+1k", 1000.0),
        ];
        for (text, value) in cases {
            let parsed = parse_quantity("q", text).unwrap_or_else(|err| panic!("{text}: {err}"));
            assert!((parsed - value).abs() < 1e-9 * value.max(1.0), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_quantities() {
        for text in [
            "", "abc", "1 Gi", "1gi", "1GB", "1.2.3", "m", "1e", "0.5 cpu", "1KiB",
        ] {
            let err = parse_quantity("job_variables.cpu_request", text).expect_err(text);
            assert_eq!(err.field(), "job_variables.cpu_request");
            assert!(err.to_string().contains("Kubernetes quantity"), "{err}");
        }
    }

    #[test]
    fn container_resources_are_checked_entry_by_entry() {
        assert!(check_container_resources(
            "r",
            &json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": 0.5, "memory": "512Mi"}})
        )
        .is_ok());
        let err = check_container_resources("r", &json!({"requests": {"cpu": "lots"}}))
            .expect_err("invalid");
        assert_eq!(err.field(), "r.requests.cpu");
        let err = check_container_resources("r", &json!({"limits": {"memory": "-1Gi"}}))
            .expect_err("negative");
        assert!(
            err.to_string().contains("greater than or equal to 0"),
            "{err}"
        );
        let err = check_container_resources(
            "r",
            &json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "1"}}),
        )
        .expect_err("request above limit");
        assert!(err.to_string().contains("cpu limit (500m)"), "{err}");
    }
}
