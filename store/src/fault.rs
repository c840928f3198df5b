//! Power-loss simulation support for tests: a record of what each completed sync made durable.
//!
//! When the environment variable [`SYNC_LOG_ENV`] names a file when the process first syncs,
//! every completed sync appends one line per file it covered: `<path>\t<durable length>\n`.
//! A test that SIGKILLs the broker then "cuts the power" by keeping, of each file, only the
//! bytes some completed sync covered (see `brokerd/tests/it/power_loss.rs`). Files present when
//! a log is opened are recorded at their full length (they survived the previous cut).
//!
//! Unset (production), this costs one cached environment lookup per sync.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The variable naming the record file.
pub const SYNC_LOG_ENV: &str = "FERRY_TEST_SYNC_LOG";

fn sink() -> Option<&'static Mutex<File>> {
    static SINK: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let path = std::env::var_os(SYNC_LOG_ENV)?;
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => Some(Mutex::new(f)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open {SYNC_LOG_ENV}; not recording syncs");
                None
            }
        }
    })
    .as_ref()
}

/// True when syncs are being recorded.
pub(crate) fn enabled() -> bool {
    sink().is_some()
}

/// Records that the first `len` bytes of `path` are durable.
pub(crate) fn record_synced(path: &Path, len: u64) {
    if let Some(sink) = sink() {
        let line = format!("{}\t{len}\n", path.display());
        // One write per line (O_APPEND): lines from concurrent syncs never interleave.
        let _ = sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(line.as_bytes());
    }
}
