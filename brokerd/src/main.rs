//! `brokerd`: parses flags and runs the broker until SIGINT or SIGTERM.

#![forbid(unsafe_code)]

use ferry_brokerd::config::Config;

fn main() -> anyhow::Result<()> {
    let parsed = Config::from_env_args().unwrap_or_else(|e| e.exit());
    let config = parsed.config;
    ferry_daemon::init_logging(&config.log_level, config.log_format);
    for warning in &parsed.warnings {
        tracing::warn!("{warning}");
    }
    ferry_daemon::main("brokerd", |shutdown| ferry_brokerd::run(config, shutdown))
}
