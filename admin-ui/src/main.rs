//! `admin-ui`: parses flags and runs the dashboard until SIGINT or SIGTERM.

#![forbid(unsafe_code)]

use ferry_admin_ui::config::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env_args().unwrap_or_else(|e| e.exit());
    ferry_daemon::init_logging(&config.log_level, ferry_daemon::LogFormat::Text);
    ferry_daemon::main("admin-ui", |shutdown| ferry_admin_ui::run(config, shutdown))
}
