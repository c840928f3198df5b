//! Wall-clock time as Unix nanoseconds: message timestamps, deadlines and deferrals use it so that
//! due times survive a restart.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_ns() / 1_000_000_000
}
