//! Giving freed memory back to the system after many connections closed.
//!
//! glibc's malloc keeps what a burst of connections freed in its heaps (one per thread that
//! allocated), so without help RSS stays at its peak long after the connections are gone.
//! After every [`TRIM_AFTER`] closed connections, one `malloc_trim(0)` runs [`TRIM_DELAY`]
//! later on a blocking thread (so a mass disconnect is trimmed about once, after it is over);
//! it returns the free pages of every heap. The heap is the process's, so the bookkeeping is
//! too (statics, shared by brokers in one process). Elsewhere than glibc this is a no-op.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Closed connections that trigger a trim.
const TRIM_AFTER: u64 = 1024;
/// Delay between the triggering close and the trim.
const TRIM_DELAY: Duration = Duration::from_secs(1);

static CLOSED: AtomicU64 = AtomicU64::new(0);
static SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Records one closed connection; every [`TRIM_AFTER`]th schedules a trim unless one is
/// already scheduled. Outside a tokio runtime it only counts.
pub(crate) fn connection_closed() {
    if !(CLOSED.fetch_add(1, Relaxed) + 1).is_multiple_of(TRIM_AFTER) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if SCHEDULED.swap(true, Relaxed) {
        return;
    }
    rt.spawn(async {
        tokio::time::sleep(TRIM_DELAY).await;
        // A trim waits on every heap's lock; keep it off the worker threads.
        let _ = tokio::task::spawn_blocking(trim).await;
        SCHEDULED.store(false, Relaxed);
    });
}

fn trim() {
    ferry_store::os::release_free_heap();
}
