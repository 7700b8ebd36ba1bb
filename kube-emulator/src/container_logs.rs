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

/// Output of one container run.
#[derive(Debug, Default)]
pub struct LogStream {
    lines: Mutex<Vec<LogLine>>,
    finished: Mutex<bool>,
    notify: Notify,
}

impl LogStream {
    /// Append a line.
    pub fn push(&self, text: impl Into<String>) {
        self.lines.lock().push(LogLine {
            time: Utc::now(),
            text: text.into(),
        });
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

    /// Lines from index `from`.
    pub fn lines_from(&self, from: usize) -> Vec<LogLine> {
        let lines = self.lines.lock();
        lines
            .get(from..)
            .map(<[LogLine]>::to_vec)
            .unwrap_or_default()
    }

    /// Wait until something new arrives or the stream finishes.
    pub async fn changed(&self, seen: usize) {
        loop {
            let notified = self.notify.notified();
            if self.lines.lock().len() > seen || self.is_finished() {
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
