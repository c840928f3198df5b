//! `brokerd`: parses flags and runs the broker until SIGINT or SIGTERM.

use ferry_brokerd::config::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env_args().unwrap_or_else(|e| e.exit());
    ferry_daemon::init_logging(&config.log_level, config.log_format);
    ferry_daemon::main("brokerd", |shutdown| ferry_brokerd::run(config, shutdown))
}
