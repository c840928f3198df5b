//! `brokerd`: parses flags and runs the broker until SIGINT or SIGTERM.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    ferry_daemon::run_daemon("brokerd", ferry_brokerd::run)
}
