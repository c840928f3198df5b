//! `lookupd`: parses flags and runs the lookup daemon until SIGINT or SIGTERM.

use ferry_lookupd::config::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env_args().unwrap_or_else(|e| e.exit());
    ferry_daemon::init_logging(&config.log_level, config.log_format);
    ferry_daemon::main("lookupd", |shutdown| ferry_lookupd::run(config, shutdown))
}
