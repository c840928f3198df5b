//! `brokerd`: parses flags and runs the broker until SIGINT or SIGTERM.

use ferry_brokerd::config::{Config, LogFormat};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env_args().unwrap_or_else(|e| e.exit());
    init_logging(&config.log_level, config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("brokerd")
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal.cancel();
        });
        ferry_brokerd::run(config, shutdown).await
    })
}

/// Logs to stderr at `level` (an EnvFilter expression), as text or as one JSON object per line
/// (with the current span's fields, e.g. a connection's remote address and client id).
fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
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
