//! Waiting on a condition with a deadline instead of sleeping.

use std::time::{Duration, Instant};

use crate::DEADLINE;

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
///
/// `check` is an async closure: `|| async { ... }` or, to use a mutable borrow inside (send
/// a command on a connection, then look), `async || { ... }`.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a plain predicate (an atomic, a lock, a counter): polls `cond` until it
/// holds, sleeping on the runtime between polls.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    eventually(what, async || cond().then_some(())).await
}

/// [`eventually`] outside a runtime (a child process, a blocking thread): polls `check` with
/// thread sleeps.
pub fn eventually_blocking<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}
