//! Waiting for a condition with a generous deadline, never for a fixed time: a loaded machine
//! only makes the wait longer, never the test wrong.

use std::future::Future;
use std::time::{Duration, Instant};

/// The deadline of waits that do not name one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `check` until it returns `Some`, and returns that; fails the test naming `what` when
/// `timeout` passes first. `check` runs at once, then every 100 ms.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`eventually`] for blocking code (polls every 50 ms on the calling thread).
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_the_check_gives() {
        let mut calls = 0;
        let got = eventually("three calls", Duration::from_secs(10), || {
            calls += 1;
            let done = calls == 3;
            async move { done.then_some(7) }
        })
        .await;
        assert_eq!((got, calls), (7, 3));
    }

    #[test]
    #[should_panic(expected = "never true: not within")]
    fn fails_naming_the_condition_after_the_deadline() {
        eventually_blocking("never true", Duration::from_millis(120), || None::<()>);
    }
}
