//! `ferry dev`: a whole Ferry on this machine in one process, for development: a lookupd, a
//! broker registered with it and the admin dashboard reading lookupd, on loopback, with the
//! broker's data under the current directory.
//!
//! Each daemon is the real one (`ferry_lookupd::Server`, `ferry_brokerd::Server`,
//! `ferry_admin_ui::Server`) with its built-in defaults; only the addresses and the data path are
//! set here.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use ferry_daemon::DaemonConfig as _;
use tokio_util::sync::CancellationToken;

/// Flags of `ferry dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the broker keeps its data (created if missing; reused on the next start).
    #[arg(long, default_value = "ferry-data", value_name = "DIR")]
    pub data_path: PathBuf,

    /// The broker's TCP address (NSQ clients connect here). Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:4150", value_name = "ADDR")]
    pub broker_tcp_address: SocketAddr,

    /// The broker's HTTP address.
    #[arg(long, default_value = "127.0.0.1:4151", value_name = "ADDR")]
    pub broker_http_address: SocketAddr,

    /// The broker's gRPC address (`proto/ferry/v1/broker.proto`).
    #[arg(long, default_value = "127.0.0.1:4153", value_name = "ADDR")]
    pub broker_grpc_address: SocketAddr,

    /// lookupd's TCP address (brokers register here).
    #[arg(long, default_value = "127.0.0.1:4160", value_name = "ADDR")]
    pub lookupd_tcp_address: SocketAddr,

    /// lookupd's HTTP address (consumers and tools ask here).
    #[arg(long, default_value = "127.0.0.1:4161", value_name = "ADDR")]
    pub lookupd_http_address: SocketAddr,

    /// The admin dashboard's HTTP address.
    #[arg(long, default_value = "127.0.0.1:4171", value_name = "ADDR")]
    pub admin_http_address: SocketAddr,

    /// Log level of the daemons (error, warn, info, debug, trace).
    #[arg(long, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
}

/// The addresses the daemons listen on, once bound.
#[derive(Debug, Clone, Copy)]
pub struct DevAddrs {
    /// Broker TCP.
    pub broker_tcp: SocketAddr,
    /// Broker HTTP.
    pub broker_http: SocketAddr,
    /// Broker gRPC.
    pub broker_grpc: SocketAddr,
    /// lookupd TCP.
    pub lookupd_tcp: SocketAddr,
    /// lookupd HTTP.
    pub lookupd_http: SocketAddr,
    /// admin-ui HTTP.
    pub admin_http: SocketAddr,
}

/// The banner `ferry dev` prints once everything listens.
pub fn banner(addrs: &DevAddrs, data_path: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Ferry dev stack is up (broker data in {}):",
        data_path.display()
    );
    let _ = writeln!(
        s,
        "  brokerd   TCP {}   HTTP http://{}   gRPC {}",
        addrs.broker_tcp, addrs.broker_http, addrs.broker_grpc
    );
    let _ = writeln!(
        s,
        "  lookupd   TCP {}   HTTP http://{}",
        addrs.lookupd_tcp, addrs.lookupd_http
    );
    let _ = writeln!(s, "  admin-ui  HTTP http://{}", addrs.admin_http);
    let _ = writeln!(s);
    let _ = writeln!(s, "Try it:");
    let _ = writeln!(
        s,
        "  ferry pub --broker-tcp-address {} --topic hello 'hi there'",
        addrs.broker_tcp
    );
    let _ = writeln!(
        s,
        "  ferry tail --lookupd-http-address {} --topic hello",
        addrs.lookupd_http
    );
    let _ = writeln!(s, "  curl 'http://{}/stats?format=json'", addrs.broker_http);
    let _ = writeln!(s, "Ctrl-C stops everything.");
    s
}

/// Starts lookupd, brokerd and admin-ui, calls `ready` with their addresses, and runs until
/// `shutdown`.
pub async fn run(
    args: &DevArgs,
    shutdown: CancellationToken,
    ready: impl FnOnce(&DevAddrs),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_path)
        .with_context(|| format!("cannot create {}", args.data_path.display()))?;

    let mut lookupd_cfg =
        ferry_lookupd::config::Config::from_args(["lookupd"]).context("lookupd defaults")?;
    lookupd_cfg.tcp_address = args.lookupd_tcp_address;
    lookupd_cfg.http_address = args.lookupd_http_address;
    lookupd_cfg.broadcast_address = Some(args.lookupd_tcp_address.ip().to_string());
    let lookupd = ferry_lookupd::Server::bind(lookupd_cfg)
        .await
        .context("cannot start lookupd")?;

    let mut broker_cfg =
        ferry_brokerd::config::Config::from_args(["brokerd"]).context("brokerd defaults")?;
    broker_cfg.tcp_address = args.broker_tcp_address;
    broker_cfg.http_address = args.broker_http_address;
    broker_cfg.grpc_address = args.broker_grpc_address;
    broker_cfg.broadcast_address = Some(args.broker_tcp_address.ip().to_string());
    broker_cfg.data_path = args.data_path.clone();
    broker_cfg.lookupd_tcp_addresses = vec![lookupd.tcp_addr().to_string()];
    let broker = ferry_brokerd::Server::bind(broker_cfg)
        .await
        .context("cannot start brokerd")?;

    let mut admin_cfg =
        ferry_admin_ui::config::Config::from_args(["admin-ui"]).context("admin-ui defaults")?;
    admin_cfg.http_address = args.admin_http_address;
    admin_cfg.lookupd_http_addresses = vec![lookupd.http_addr().to_string()];
    let admin = ferry_admin_ui::Server::bind(admin_cfg)
        .await
        .context("cannot start admin-ui")?;

    let addrs = DevAddrs {
        broker_tcp: broker.tcp_addr(),
        broker_http: broker.http_addr(),
        broker_grpc: broker.grpc_addr(),
        lookupd_tcp: lookupd.tcp_addr(),
        lookupd_http: lookupd.http_addr(),
        admin_http: admin.http_addr(),
    };
    // The dashboard and the broker stop first (the broker unregisters and flushes), then lookupd.
    let lookupd_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin.run(shutdown.child_token()));
    let broker_task = tokio::spawn(broker.run(shutdown.child_token()));
    let lookupd_task = tokio::spawn(lookupd.run(lookupd_stop.clone()));
    ready(&addrs);

    let admin_result = admin_task.await.context("admin-ui task failed")?;
    let broker_result = broker_task.await.context("brokerd task failed")?;
    lookupd_stop.cancel();
    let lookupd_result = lookupd_task.await.context("lookupd task failed")?;
    broker_result.context("brokerd failed")?;
    lookupd_result.context("lookupd failed")?;
    admin_result.context("admin-ui failed")?;
    Ok(())
}
