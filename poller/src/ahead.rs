//! The look-ahead: the runs due within one more poll interval after the
//! prefetch, so that the poller polls at each one's time (minus the
//! prefetch) instead of up to a poll interval later.
//!
//! The times are publish times: scheduled time − prefetch. They are read
//! after a poll, from the end of what that poll covered, and kept until a
//! poll covers them; a poll at a kept time publishes its run through the
//! ordinary due read.

use chrono::{DateTime, Utc};
use prefect_client::{PrefectClient, MAX_PAGE_SIZE};

use crate::{due, PollerConfig};

/// The longest look-ahead, whatever the poll interval.
pub const MAX_LOOK_AHEAD: std::time::Duration = std::time::Duration::from_secs(60);

/// Publish times of the runs seen ahead, earliest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ahead {
    times: Vec<DateTime<Utc>>,
    /// The read came back as a full page: the server orders a page by queue
    /// priority before time, so earlier runs of a lower-priority queue may be
    /// missing, and each poll at a kept time reads again.
    pub partial: bool,
}

impl Ahead {
    /// From the scheduled times of a read (`page_full`: it filled a page).
    pub fn new(
        scheduled: Vec<DateTime<Utc>>,
        prefetch: chrono::Duration,
        page_full: bool,
    ) -> Ahead {
        let mut times: Vec<_> = scheduled.into_iter().map(|at| at - prefetch).collect();
        times.sort_unstable();
        times.dedup();
        Ahead {
            times,
            partial: page_full,
        }
    }

    /// The next time to poll at.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.times.first().copied()
    }

    /// Drops the times a poll that began at `covered` (wall clock) has read:
    /// its due read reached `covered` + prefetch.
    pub fn covered_until(&mut self, covered: DateTime<Utc>) {
        self.times.retain(|at| *at > covered);
    }
}

/// Reads the runs scheduled from `from` + prefetch to one more poll interval
/// (at most [`MAX_LOOK_AHEAD`]) later. `None` when the read failed (the
/// times read before still hold; the timed polls remain).
pub async fn read(
    prefect: &PrefectClient,
    config: &PollerConfig,
    from: DateTime<Utc>,
) -> Option<Ahead> {
    let prefetch = chrono::Duration::seconds(config.prefetch_seconds as i64);
    let span = config.poll_interval().min(MAX_LOOK_AHEAD);
    let after = from + prefetch;
    let before = after + chrono::Duration::from_std(span).unwrap_or_default();
    let runs = prefect
        .get_scheduled_flow_runs_between(
            &config.pool.work_pool,
            &config.work_queues,
            Some(after),
            before,
            Some(MAX_PAGE_SIZE),
        )
        .await;
    match runs {
        Ok(runs) => Some(Ahead::new(
            due::times(&runs),
            prefetch,
            runs.len() >= MAX_PAGE_SIZE,
        )),
        Err(error) => {
            tracing::warn!(%error, "reading the runs ahead failed; they wait for the timed polls");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn times_are_scheduled_minus_prefetch_earliest_first() {
        let ahead = Ahead::new(
            vec![at("2026-11-28T12:00:30Z"), at("2026-11-28T12:00:25Z")],
            chrono::Duration::seconds(5),
            false,
        );
        assert_eq!(ahead.next(), Some(at("2026-11-28T12:00:20Z")));
    }

    #[test]
    fn a_poll_drops_the_times_it_covered_and_keeps_the_rest() {
        let mut ahead = Ahead::new(
            vec![
                at("2026-11-28T12:00:01Z"),
                at("2026-11-28T12:00:02Z"),
                at("2026-11-28T12:00:03Z"),
            ],
            chrono::Duration::zero(),
            false,
        );
        ahead.covered_until(at("2026-11-28T12:00:02Z"));
        assert_eq!(ahead.next(), Some(at("2026-11-28T12:00:03Z")));
        ahead.covered_until(at("2026-11-28T12:00:03Z"));
        assert_eq!(ahead.next(), None);
    }
}
