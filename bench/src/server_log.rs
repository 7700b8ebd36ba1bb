//! Prefect API calls counted at the server: the server is started with
//! `PREFECT_SERVER_LOGGING_LEVEL=INFO`, so uvicorn writes one access line per
//! request to its log; a [`LogMark`] counts the lines written after it, by
//! method and path (ids replaced by `{id}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The server settings that make it log every request.
pub const ACCESS_LOG_ENV: (&str, &str) = ("PREFECT_SERVER_LOGGING_LEVEL", "INFO");

/// A position in the server's log.
#[derive(Clone, Debug)]
pub struct LogMark {
    path: PathBuf,
    offset: u64,
}

/// Requests by `METHOD /api/path`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calls {
    pub by_endpoint: BTreeMap<String, usize>,
}

impl Calls {
    pub fn total(&self) -> usize {
        self.by_endpoint.values().sum()
    }
}

impl LogMark {
    /// The end of the log now.
    pub fn now(path: &Path) -> LogMark {
        let offset = std::fs::metadata(path).map_or(0, |meta| meta.len());
        LogMark {
            path: path.to_owned(),
            offset,
        }
    }

    /// The requests logged since the mark.
    pub fn calls_since(&self) -> Calls {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        let start = usize::try_from(self.offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]);
        let mut calls = Calls::default();
        for endpoint in text.lines().filter_map(endpoint) {
            *calls.by_endpoint.entry(endpoint).or_default() += 1;
        }
        calls
    }
}

/// `POST /api/flow_runs/{id}/set_state` from an access line such as
/// `... uvicorn.access - 127.0.0.1:5000 - "POST /api/flow_runs/<uuid>/set_state HTTP/1.1" 201`.
fn endpoint(line: &str) -> Option<String> {
    let quoted = line.split('"').nth(1)?;
    let mut parts = quoted.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    if !parts.next()?.starts_with("HTTP/") || !target.starts_with("/api/") {
        return None;
    }
    let path = target.split('?').next()?;
    let segments: Vec<&str> = path.split('/').collect();
    let normalized: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, segment)| {
            let after_pools = i > 0 && segments[i - 1] == "work_pools";
            if uuid::Uuid::parse_str(segment).is_ok() {
                "{id}"
            } else if after_pools && !matches!(*segment, "" | "filter" | "count") {
                "{name}"
            } else {
                segment
            }
        })
        .collect();
    Some(format!("{method} {}", normalized.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_are_counted_by_endpoint() {
        let line = r#"12:00:01.123 | INFO    | uvicorn.access - 127.0.0.1:5000 - "POST /api/flow_runs/0b8f3c1e-3f5a-4b7e-9c1d-2a6e8f9b0c11/set_state HTTP/1.1" 201"#;
        assert_eq!(
            endpoint(line).as_deref(),
            Some("POST /api/flow_runs/{id}/set_state")
        );
        assert_eq!(endpoint("INFO something \"quoted\" else"), None);
        let pool = r#"x - "POST /api/work_pools/bench-1/get_scheduled_flow_runs HTTP/1.1" 200"#;
        assert_eq!(
            endpoint(pool).as_deref(),
            Some("POST /api/work_pools/{name}/get_scheduled_flow_runs")
        );
        let get = r#"INFO:     127.0.0.1:1 - "GET /api/health?x=1 HTTP/1.1" 200"#;
        assert_eq!(endpoint(get).as_deref(), Some("GET /api/health"));
    }
}
