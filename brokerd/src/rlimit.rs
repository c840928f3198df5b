//! The open-file limit (`RLIMIT_NOFILE`): every connection is a descriptor, so at start the
//! soft limit is raised to the hard limit (the soft default, often 1024, is far below
//! `--max-connections`), and a limit still too low for `--max-connections` is reported.

use tracing::{info, warn};

/// Descriptors needed besides client connections: listeners, topic log segments and metadata,
/// lookupd and auth connections, a few HTTP clients.
pub(crate) const HEADROOM: u64 = 64;

/// Raises the soft open-file limit to the hard limit; warns if the result is below
/// `max_connections` + [`HEADROOM`] + the refusals that may be in progress. Returns the soft
/// limit in force afterwards (`None` if it cannot be read).
pub(crate) fn raise_nofile(max_connections: usize) -> Option<u64> {
    let (before, hard) = match ferry_store::os::nofile_limit() {
        Ok(lim) => lim,
        Err(error) => {
            warn!(%error, "cannot read the open-file limit");
            return None;
        }
    };
    let mut soft = before;
    if soft < hard {
        match ferry_store::os::set_nofile_soft_limit(hard, hard) {
            Ok(()) => soft = hard,
            Err(error) => {
                warn!(%error, soft = before, hard, "cannot raise the open-file limit");
            }
        }
    }
    let needed = max_connections as u64 + HEADROOM + crate::limits::REFUSING as u64;
    if soft < needed {
        warn!(
            open_file_limit = soft,
            hard_limit = hard,
            max_connections,
            "open-file limit {soft} (hard limit {}) is below --max-connections={max_connections} \
             + {} for files, listeners and refusals: connections beyond about {} will fail to be \
             accepted; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections",
            hard,
            needed - max_connections as u64,
            soft.saturating_sub(needed - max_connections as u64),
        );
    } else if soft != before {
        info!(from = before, to = soft, "raised the open-file limit");
    }
    Some(soft)
}
