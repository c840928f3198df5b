//! `lookupd`: parses flags and runs the lookup daemon until SIGINT or SIGTERM.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    ferry_daemon::run_daemon("lookupd", ferry_lookupd::run)
}
