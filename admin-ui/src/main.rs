//! `admin-ui`: parses flags and runs the dashboard until SIGINT or SIGTERM.

use ferry_admin_ui::config::Config;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env_args().unwrap_or_else(|e| e.exit());
    init_logging(&config.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("admin-ui")
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal.cancel();
        });
        ferry_admin_ui::run(config, shutdown).await
    })
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
