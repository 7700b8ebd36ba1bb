//! Waiting in tests for something that happens on its own time.

use std::future::Future;
use std::time::Duration;

/// Calls `attempt` every `every` until it returns `Some`, and returns that;
/// panics naming `what` once `within` has passed without one.
pub async fn eventually<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// [`eventually`] for a check that holds or not.
pub async fn until<F, Fut>(what: &str, within: Duration, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, every, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_and_gives_up_in_time() {
        let mut calls = 0;
        let value = eventually(
            "the third call",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                calls += 1;
                let now = calls;
                async move { (now == 3).then_some(now) }
            },
        )
        .await;
        assert_eq!(value, 3);
        let gave_up = tokio::spawn(until(
            "never",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { false },
        ))
        .await;
        assert!(gave_up.unwrap_err().is_panic());
    }
}
