//! Captured container output for `pods/log`: one append-only stream per container run, keyed by
//! pod uid and container name, with the previous run kept for `previous=true`, and a notifier so
//! `follow=true` readers stream new lines until the container exits.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// One line of output with its capture time.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// When the line was captured.
    pub time: DateTime<Utc>,
    /// The line including its trailing newline (if it had one).
    pub text: String,
}

/// The kubelet rotates container logs at 10 MiB; we keep at most this much per run.
const MAX_BYTES_PER_RUN: usize = 10 * 1024 * 1024;

/// Output of one container run.
#[derive(Debug, Default)]
pub struct LogStream {
    lines: Mutex<Vec<LogLine>>,
    /// Lines dropped from the front by rotation (keeps `lines_from` indices stable).
    dropped: Mutex<(usize, usize)>,
    finished: Mutex<bool>,
    notify: Notify,
}

impl LogStream {
    /// Append a line, dropping the oldest lines beyond the rotation size.
    pub fn push(&self, text: impl Into<String>) {
        let text = text.into();
        {
            let mut lines = self.lines.lock();
            let mut dropped = self.dropped.lock();
            dropped.1 += text.len();
            lines.push(LogLine {
                time: Utc::now(),
                text,
            });
            let mut cut = 0;
            while dropped.1 > MAX_BYTES_PER_RUN && cut < lines.len() {
                dropped.1 -= lines[cut].text.len();
                cut += 1;
            }
            if cut > 0 {
                lines.drain(..cut);
                dropped.0 += cut;
            }
        }
        self.notify.notify_waiters();
    }

    /// Mark the run as finished (followers stop).
    pub fn finish(&self) {
        *self.finished.lock() = true;
        self.notify.notify_waiters();
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        *self.finished.lock()
    }

    /// Lines from absolute index `from` (rotated-away lines are skipped).
    pub fn lines_from(&self, from: usize) -> Vec<LogLine> {
        let lines = self.lines.lock();
        let offset = self.dropped.lock().0;
        let start = from.saturating_sub(offset);
        lines
            .get(start..)
            .map(<[LogLine]>::to_vec)
            .unwrap_or_default()
    }

    /// Lines from absolute index `from` and the absolute index to continue from.
    pub fn lines_since(&self, from: usize) -> (Vec<LogLine>, usize) {
        let lines = self.lines.lock();
        let offset = self.dropped.lock().0;
        let start = from.saturating_sub(offset);
        let fresh = lines
            .get(start..)
            .map(<[LogLine]>::to_vec)
            .unwrap_or_default();
        (fresh, offset + lines.len())
    }

    /// Absolute index one past the last line.
    pub fn len(&self) -> usize {
        let lines = self.lines.lock();
        lines.len() + self.dropped.lock().0
    }

    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait until something new arrives or the stream finishes.
    pub async fn changed(&self, seen: usize) {
        loop {
            let notified = self.notify.notified();
            if self.len() > seen || self.is_finished() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct ContainerRuns {
    current: Option<Arc<LogStream>>,
    previous: Option<Arc<LogStream>>,
}

/// All captured logs.
#[derive(Default)]
pub struct ContainerLogs {
    runs: Mutex<HashMap<(String, String), ContainerRuns>>,
}

impl ContainerLogs {
    /// Start a new run of `container` in pod `pod_uid`; the old current run becomes `previous`.
    pub fn start_run(&self, pod_uid: &str, container: &str) -> Arc<LogStream> {
        let stream = Arc::new(LogStream::default());
        let mut runs = self.runs.lock();
        let entry = runs
            .entry((pod_uid.to_string(), container.to_string()))
            .or_default();
        entry.previous = entry.current.take();
        entry.current = Some(stream.clone());
        stream
    }

    /// The current (or previous) run's stream.
    pub fn stream(&self, pod_uid: &str, container: &str, previous: bool) -> Option<Arc<LogStream>> {
        let runs = self.runs.lock();
        let entry = runs.get(&(pod_uid.to_string(), container.to_string()))?;
        if previous {
            entry.previous.clone()
        } else {
            entry.current.clone()
        }
    }

    /// Drop everything captured for a pod (when it is removed).
    pub fn forget_pod(&self, pod_uid: &str) {
        self.runs.lock().retain(|(uid, _), _| uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_lines_and_stable_indices() {
        let stream = LogStream::default();
        let line = "x".repeat(1024 * 1024);
        for _ in 0..12 {
            stream.push(line.clone());
        }
        stream.push("last\n");
        assert_eq!(stream.len(), 13);
        let (kept, next) = stream.lines_since(0);
        assert!(kept.len() < 13, "old lines were rotated away");
        assert_eq!(kept.last().map(|l| l.text.as_str()), Some("last\n"));
        assert_eq!(next, 13);
        assert!(stream.lines_since(13).0.is_empty());
    }
}
