//! Parsing of request targets: the URL path into a discovery endpoint or a resource reference
//! (group, version, namespace, resource, name, subresource), and the query string (kube-rs sends
//! `?&a=b`, bare `?`, and percent-encoding) into a [`Query`]. Never panics on any input.

use percent_encoding::percent_decode_str;

use crate::error::ApiError;
use crate::resources::{self, ResourceType};

/// Decoded query parameters, in order. Empty keys are dropped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parse a raw query string (without the leading `?`).
    pub fn parse(raw: Option<&str>) -> Self {
        let mut pairs = Vec::new();
        for piece in raw.unwrap_or_default().split('&') {
            if piece.is_empty() {
                continue;
            }
            let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
            let key = decode_component(key);
            if key.is_empty() {
                continue;
            }
            pairs.push((key, decode_component(value)));
        }
        Self { pairs }
    }

    /// The last value of `key` (later parameters win, as in Go's `url.Values.Get`... which takes
    /// the first; the apiserver's conversion takes the first too).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1") | Some("True"))
    }

    /// An integer parameter; a malformed value is a 400.
    pub fn integer(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(text) => text.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value {text:?} for query parameter {key}"))
            }),
        }
    }
}

fn decode_component(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// A reference to a resource collection, object or subresource.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    /// The resource type.
    pub resource: &'static ResourceType,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource (`status`, `log`, ...), if any.
    pub subresource: Option<String>,
}

/// What a path addresses.
#[derive(Debug, Clone)]
pub enum ApiPath {
    /// `/version`.
    Version,
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    GroupVersion(String, String),
    /// A resource endpoint.
    Resource(ResourcePath),
    /// `/admin/...` emulator control endpoints.
    Admin(String),
    /// `/openapi/v3` index.
    OpenApiIndex,
    /// `/openapi/v3/<api/v1 | apis/group/version>`.
    OpenApiDocument(String, String),
}

/// Parse a URL path (no query) into an [`ApiPath`].
pub fn parse_path(path: &str) -> Result<ApiPath, ApiError> {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_component)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["version"] => Ok(ApiPath::Version),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(ApiPath::Health),
        ["admin", rest @ ..] => Ok(ApiPath::Admin(rest.join("/"))),
        ["openapi", "v3"] => Ok(ApiPath::OpenApiIndex),
        ["openapi", "v3", "api", version] => Ok(ApiPath::OpenApiDocument(
            String::new(),
            (*version).to_string(),
        )),
        ["openapi", "v3", "apis", group, version] => Ok(ApiPath::OpenApiDocument(
            (*group).to_string(),
            (*version).to_string(),
        )),
        ["api"] => Ok(ApiPath::CoreVersions),
        ["apis"] => Ok(ApiPath::Groups),
        ["api", "v1"] => Ok(ApiPath::GroupVersion(String::new(), "v1".into())),
        ["apis", group] => Ok(ApiPath::Group((*group).to_string())),
        ["apis", group, version] => Ok(ApiPath::GroupVersion(
            (*group).to_string(),
            (*version).to_string(),
        )),
        ["api", "v1", rest @ ..] => parse_resource_path("", "v1", rest),
        ["apis", group, version, rest @ ..] => parse_resource_path(group, version, rest),
        _ => Err(ApiError::path_not_found()),
    }
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Result<ApiPath, ApiError> {
    let lookup =
        |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::path_not_found);
    let build = |resource: &'static ResourceType,
                 namespace: Option<&str>,
                 name: Option<&str>,
                 sub: Option<&str>| {
        if let Some(sub) = sub {
            if !resource.has_subresource(sub) {
                return Err(ApiError::path_not_found());
            }
        }
        Ok(ApiPath::Resource(ResourcePath {
            resource,
            namespace: namespace.map(String::from),
            name: name.map(String::from),
            subresource: sub.map(String::from),
        }))
    };
    match rest {
        // /namespaces/{ns}/{plural}[/{name}[/{sub}]] for namespaced resources.
        ["namespaces", ns, plural, tail @ ..] if group_has_namespaced(group, version, plural) => {
            let resource = lookup(plural)?;
            match tail {
                [] => build(resource, Some(ns), None, None),
                [name] => build(resource, Some(ns), Some(name), None),
                [name, sub] => build(resource, Some(ns), Some(name), Some(sub)),
                _ => Err(ApiError::path_not_found()),
            }
        }
        [plural] => build(lookup(plural)?, None, None, None),
        [plural, name] => {
            let resource = lookup(plural)?;
            if resource.namespaced {
                return Err(ApiError::path_not_found());
            }
            build(resource, None, Some(name), None)
        }
        [plural, name, sub] => {
            let resource = lookup(plural)?;
            if resource.namespaced {
                return Err(ApiError::path_not_found());
            }
            build(resource, None, Some(name), Some(sub))
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn group_has_namespaced(group: &str, version: &str, plural: &str) -> bool {
    resources::find(group, version, plural).is_some_and(|r| r.namespaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_rs_query_strings_parse() {
        let q = Query::parse(Some("&watch=true&labelSelector=job-name%3Dx&&"));
        assert_eq!(q.get("watch"), Some("true"));
        assert_eq!(q.get("labelSelector"), Some("job-name=x"));
        assert_eq!(Query::parse(Some("")), Query::default());
    }

    #[test]
    fn namespaced_paths_resolve() {
        let ApiPath::Resource(p) = parse_path("/api/v1/namespaces/default/pods/p1/log").unwrap()
        else {
            panic!("expected resource path");
        };
        assert_eq!(p.resource.plural, "pods");
        assert_eq!(p.subresource.as_deref(), Some("log"));
        let ApiPath::Resource(p) = parse_path("/api/v1/namespaces/default").unwrap() else {
            panic!("expected resource path");
        };
        assert_eq!(p.resource.plural, "namespaces");
        assert_eq!(p.name.as_deref(), Some("default"));
        let ApiPath::Resource(p) = parse_path("/api/v1/namespaces/x/status").unwrap() else {
            panic!("expected resource path");
        };
        assert_eq!(p.subresource.as_deref(), Some("status"));
    }
}
