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
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return None;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the `rlimit` we pass, which lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            warn!(
                error = %std::io::Error::last_os_error(),
                soft = before,
                hard = lim.rlim_max,
                "cannot raise the open-file limit"
            );
        }
    }
    let soft = lim.rlim_cur;
    let needed = max_connections as u64 + HEADROOM + crate::limits::REFUSING as u64;
    if soft < needed {
        warn!(
            open_file_limit = soft,
            hard_limit = lim.rlim_max,
            max_connections,
            "open-file limit {soft} (hard limit {}) is below --max-connections={max_connections} \
             + {} for files, listeners and refusals: connections beyond about {} will fail to be \
             accepted; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower --max-connections",
            lim.rlim_max,
            needed - max_connections as u64,
            soft.saturating_sub(needed - max_connections as u64),
        );
    } else if soft != before {
        info!(from = before, to = soft, "raised the open-file limit");
    }
    Some(soft)
}
