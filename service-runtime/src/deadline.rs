//! Deadlines checked before a call starts, for calls that must not land late
//! (a claim, a state put back): `tokio::time::timeout` polls its future before
//! its timer, so a task frozen past the deadline (SIGSTOP, a starved runtime)
//! would still send the request on waking; [`before`] does not start it.

use std::future::Future;

use tokio::time::Instant;

/// `work`'s output, unless `deadline` passes first. The deadline is checked
/// before `work` is polled each time, so work not yet started is never started
/// after it. (A request already handed to the connection before a freeze can
/// still go out on waking.)
pub async fn before<T>(deadline: Instant, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        _ = tokio::time::sleep_until(deadline) => None,
        done = work => Some(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn work_whose_deadline_passed_while_frozen_is_never_started() {
        let deadline = Instant::now() + Duration::from_secs(5);
        // The task wakes only after the deadline (a SIGSTOP, a starved runtime).
        tokio::time::advance(Duration::from_secs(6)).await;
        let sent = AtomicBool::new(false);
        let request = async { sent.store(true, Ordering::SeqCst) };
        assert_eq!(before(deadline, request).await, None);
        assert!(!sent.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn work_within_its_deadline_is_done_and_answered() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let answer = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        };
        assert_eq!(before(deadline, answer).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_outlasts_its_deadline_is_cut() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let slow = tokio::time::sleep(Duration::from_secs(6));
        assert_eq!(before(deadline, slow).await, None);
    }
}
