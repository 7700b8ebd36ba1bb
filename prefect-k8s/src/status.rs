//! The one-line live status of `prefect-k8s up`: how many of the pool's runs
//! are due, submitted (claimed, Pending), running and finished. On a terminal
//! the line is rewritten in place (a carriage return, no escape codes);
//! otherwise (a pipe, a log file) it is printed again only when it changes.

use std::io::{IsTerminal, Write};

use prefect_client::{FlowRunFilter, PrefectClient, PrefectError, StateType};

/// Counts of the pool's runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub due: u64,
    pub submitted: u64,
    pub running: u64,
    pub finished: u64,
}

impl RunCounts {
    /// Reads the counts from Prefect (four `POST /flow_runs/count`).
    pub async fn read(prefect: &PrefectClient, pool: &str) -> Result<RunCounts, PrefectError> {
        let in_pool = FlowRunFilter::default().with_work_pool_names(vec![pool.to_string()]);
        let count = |types: Vec<StateType>| {
            let filter = in_pool.clone().with_state_types(types);
            async move { prefect.count_flow_runs(&filter).await }
        };
        let due = FlowRunFilter {
            scheduled_before: Some(chrono::Utc::now()),
            ..in_pool.clone().with_state_types(vec![StateType::Scheduled])
        };
        Ok(RunCounts {
            due: prefect.count_flow_runs(&due).await?,
            submitted: count(vec![StateType::Pending]).await?,
            running: count(vec![StateType::Running, StateType::Cancelling]).await?,
            finished: count(vec![
                StateType::Completed,
                StateType::Failed,
                StateType::Crashed,
                StateType::Cancelled,
            ])
            .await?,
        })
    }

    /// `status: due 0 | submitted 1 | running 0 | finished 2`.
    pub fn line(&self) -> String {
        format!(
            "status: due {} | submitted {} | running {} | finished {}",
            self.due, self.submitted, self.running, self.finished
        )
    }
}

/// Prints lines and keeps the status line under them.
pub struct StatusLine {
    terminal: bool,
    shown: String,
}

impl StatusLine {
    pub fn new() -> StatusLine {
        StatusLine {
            terminal: std::io::stdout().is_terminal(),
            shown: String::new(),
        }
    }

    /// Shows `status` (a terminal: in place; else: once per change).
    pub fn show(&mut self, status: &str) {
        if status == self.shown {
            return;
        }
        if self.terminal {
            let padding = self
                .shown
                .chars()
                .count()
                .saturating_sub(status.chars().count());
            print!("\r{status}{}", " ".repeat(padding));
            let _ = std::io::stdout().flush();
        } else {
            println!("  {status}");
        }
        self.shown = status.to_string();
    }

    /// Prints a line above the status line.
    pub fn println(&mut self, text: &str) {
        if self.terminal && !self.shown.is_empty() {
            print!("\r{}\r", " ".repeat(self.shown.chars().count()));
            println!("{text}");
            print!("{}", self.shown);
            let _ = std::io::stdout().flush();
        } else {
            println!("{text}");
        }
    }

    /// Ends the status line (before other output or exit).
    pub fn finish(&mut self) {
        if self.terminal && !self.shown.is_empty() {
            println!();
        }
        self.shown.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_names_each_count() {
        let counts = RunCounts {
            due: 3,
            submitted: 1,
            running: 2,
            finished: 7,
        };
        assert_eq!(
            counts.line(),
            "status: due 3 | submitted 1 | running 2 | finished 7"
        );
    }
}
