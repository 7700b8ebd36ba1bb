//! Label selectors (equality and set-based, the grammar of apimachinery's `labels.Parse`) and
//! field selectors (`=`, `==`, `!=`, comma-AND, backslash escapes), parsed from query strings and
//! evaluated against stored JSON objects.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::ResourceType;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelRequirement {
    /// `k=v` / `k==v`.
    Equals(String, String),
    /// `k!=v` (matches objects without `k`).
    NotEquals(String, String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)` (matches objects without `k`).
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    DoesNotExist(String),
    /// `k>N`.
    GreaterThan(String, i64),
    /// `k<N`.
    LessThan(String, i64),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    /// ANDed requirements.
    pub requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parse the `labelSelector` query parameter. Errors are 400 BadRequest like the real server.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut parser = LabelParser {
            chars: input.chars().collect(),
            pos: 0,
            input,
        };
        parser.parse()
    }

    /// Build from a `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
    pub fn from_label_selector_object(selector: &Value) -> Self {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push(LabelRequirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for expr in exprs {
                let key = expr["key"].as_str().unwrap_or_default().to_string();
                let values: Vec<String> = expr["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                match expr["operator"].as_str().unwrap_or_default() {
                    "In" => requirements.push(LabelRequirement::In(key, values)),
                    "NotIn" => requirements.push(LabelRequirement::NotIn(key, values)),
                    "Exists" => requirements.push(LabelRequirement::Exists(key)),
                    "DoesNotExist" => requirements.push(LabelRequirement::DoesNotExist(key)),
                    _ => {}
                }
            }
        }
        Self { requirements }
    }

    /// Whether the selector matches nothing-restricting (empty).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Evaluate against a label map.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
            LabelRequirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            LabelRequirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }

    /// Evaluate against an object's `metadata.labels`.
    pub fn matches(&self, object: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        self.matches_labels(&object_labels(object))
    }
}

/// `metadata.labels` of a JSON object as a map.
pub fn object_labels(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

struct LabelParser<'a> {
    chars: Vec<char>,
    pos: usize,
    input: &'a str,
}

impl LabelParser<'_> {
    fn error(&self, detail: &str) -> ApiError {
        ApiError::bad_request(format!(
            "unable to parse requirement: {detail} in selector {:?}",
            self.input
        ))
    }

    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].is_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn is_token_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        while self.pos < self.chars.len() && Self::is_token_char(self.chars[self.pos]) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn parse(&mut self) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        loop {
            self.skip_ws();
            if self.peek().is_none() {
                break;
            }
            requirements.push(self.requirement()?);
            self.skip_ws();
            match self.peek() {
                None => break,
                Some(',') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek().is_none() {
                        return Err(self.error("found '', expected: identifier after ','"));
                    }
                }
                Some(c) => return Err(self.error(&format!("found '{c}', expected: ',' or end"))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    fn requirement(&mut self) -> Result<LabelRequirement, ApiError> {
        self.skip_ws();
        if self.peek() == Some('!') {
            self.pos += 1;
            self.skip_ws();
            let key = self.token();
            validate_selector_key(&key).map_err(|e| self.error(&e))?;
            return Ok(LabelRequirement::DoesNotExist(key));
        }
        let key = self.token();
        validate_selector_key(&key).map_err(|e| self.error(&e))?;
        self.skip_ws();
        match self.peek() {
            None | Some(',') => Ok(LabelRequirement::Exists(key)),
            Some('=') => {
                self.pos += 1;
                if self.peek() == Some('=') {
                    self.pos += 1;
                }
                let value = self.value()?;
                Ok(LabelRequirement::Equals(key, value))
            }
            Some('!') => {
                self.pos += 1;
                if self.peek() != Some('=') {
                    return Err(self.error("found '!', expected: '!='"));
                }
                self.pos += 1;
                let value = self.value()?;
                Ok(LabelRequirement::NotEquals(key, value))
            }
            Some('>') | Some('<') => {
                let greater = self.peek() == Some('>');
                self.pos += 1;
                let value = self.value()?;
                let number = value.parse::<i64>().map_err(|_| {
                    self.error(&format!(
                        "for 'Gt', 'Lt' operators, the value must be an integer, got {value:?}"
                    ))
                })?;
                Ok(if greater {
                    LabelRequirement::GreaterThan(key, number)
                } else {
                    LabelRequirement::LessThan(key, number)
                })
            }
            Some(_) => {
                let word = self.token();
                let values = match word.as_str() {
                    "in" | "notin" => self.value_set()?,
                    other => {
                        return Err(self.error(&format!(
                            "found '{other}', expected: in, notin, =, ==, !=, gt, lt"
                        )))
                    }
                };
                if word == "in" {
                    Ok(LabelRequirement::In(key, values))
                } else {
                    Ok(LabelRequirement::NotIn(key, values))
                }
            }
        }
    }

    fn value(&mut self) -> Result<String, ApiError> {
        self.skip_ws();
        let value = self.token();
        validate_label_value(&value).map_err(|e| self.error(&e))?;
        Ok(value)
    }

    fn value_set(&mut self) -> Result<Vec<String>, ApiError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error("expected '(' after set operator"));
        }
        self.pos += 1;
        let mut values = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                Some(',') => {
                    self.pos += 1;
                }
                Some(c) if Self::is_token_char(c) => {
                    let value = self.token();
                    validate_label_value(&value).map_err(|e| self.error(&e))?;
                    values.push(value);
                }
                _ => return Err(self.error("expected ')' to close the value set")),
            }
        }
        Ok(values)
    }
}

/// Validate a label key (`[prefix/]name`); returns the problem text on failure.
pub fn validate_selector_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("found '', expected: identifier".to_string());
    }
    crate::admission::validation::label_key_problems(key)
        .into_iter()
        .next()
        .map_or(Ok(()), Err)
}

fn validate_label_value(value: &str) -> Result<(), String> {
    crate::admission::validation::label_value_problem(value).map_or(Ok(()), Err)
}

/// Field selector operator.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRequirement {
    /// The field label, e.g. `status.phase`.
    pub field: String,
    /// Operator.
    pub op: FieldOp,
    /// Unescaped value.
    pub value: String,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    /// ANDed requirements.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parse the `fieldSelector` query parameter and check labels are supported by `resource`.
    pub fn parse(input: &str, resource: &ResourceType) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, op, raw_value) = if let Some(i) = find_unescaped(term, "!=") {
                (&term[..i], FieldOp::NotEquals, &term[i + 2..])
            } else if let Some(i) = find_unescaped(term, "==") {
                (&term[..i], FieldOp::Equals, &term[i + 2..])
            } else if let Some(i) = find_unescaped(term, "=") {
                (&term[..i], FieldOp::Equals, &term[i + 1..])
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            let field = field.trim().to_string();
            if !resource.supports_field_label(&field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push(FieldRequirement {
                field,
                op,
                value: unescape_field_value(raw_value),
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Evaluate against an object.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|req| {
            let actual = field_value(object, &req.field);
            match req.op {
                FieldOp::Equals => actual == req.value,
                FieldOp::NotEquals => actual != req.value,
            }
        })
    }

    /// The value of `metadata.name=X` if the selector pins one name (used by `wait` style watches).
    pub fn pinned_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == "metadata.name" && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }
}

/// The string value of a field label on an object, as the apiserver's field-set conversion renders it.
pub fn field_value(object: &Value, field: &str) -> String {
    match field {
        // Jobs expose `status.successful` from `status.succeeded`.
        "status.successful" => object
            .pointer("/status/succeeded")
            .map(render_scalar)
            .unwrap_or_else(|| "0".to_string()),
        "status.podIPs" => object
            .pointer("/status/podIPs/0/ip")
            .map(render_scalar)
            .unwrap_or_default(),
        "source" => object
            .pointer("/source/component")
            .map(render_scalar)
            .unwrap_or_default(),
        "spec.hostNetwork" | "spec.unschedulable" => object
            .pointer(&format!("/{}", field.replace('.', "/")))
            .map(render_scalar)
            .unwrap_or_else(|| "false".to_string()),
        other => object
            .pointer(&format!("/{}", other.replace('.', "/")))
            .map(render_scalar)
            .unwrap_or_default(),
    }
}

fn render_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    if escaped {
        current.push('\\');
    }
    parts.push(current);
    parts
}

fn find_unescaped(term: &str, needle: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if term[i..].starts_with(needle) {
            return Some(i);
        }
    }
    None
}

fn unescape_field_value(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_selector_matches_like_the_apiserver() {
        let selector = LabelSelector::parse("env in (a, b),tier!=web,!gone,app").unwrap();
        let object = json!({"metadata": {"labels": {"env": "a", "app": "x"}}});
        assert!(selector.matches(&object));
        let object = json!({"metadata": {"labels": {"env": "c", "app": "x"}}});
        assert!(!selector.matches(&object));
    }

    #[test]
    fn notin_matches_missing_key() {
        let selector = LabelSelector::parse("env notin (prod)").unwrap();
        assert!(selector.matches(&json!({"metadata": {}})));
    }

    #[test]
    fn invalid_selector_is_bad_request() {
        let err = LabelSelector::parse("a b").unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn unsupported_field_label_is_rejected() {
        let err = FieldSelector::parse("spec.foo=bar", crate::resources::pods()).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.foo");
    }

    #[test]
    fn field_selector_handles_escapes_and_not_equals() {
        let selector = FieldSelector::parse(
            "metadata.name=a\\,b,status.phase!=Running",
            crate::resources::pods(),
        )
        .unwrap();
        assert!(
            selector.matches(&json!({"metadata": {"name": "a,b"}, "status": {"phase": "Pending"}}))
        );
    }
}
