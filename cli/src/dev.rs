//! `ferry dev`: a whole Ferry on this machine in one process, for development: a lookupd, a
//! broker registered with it (or three, `--replicas 3`) and the admin dashboard reading
//! lookupd, on loopback, with the brokers' data under the current directory.
//!
//! Each daemon is the real one (`ferry_lookupd::Server`, `ferry_brokerd::Server`,
//! `ferry_admin_ui::Server`) with its built-in defaults; only the addresses, the data paths
//! and, with `--replicas 3`, `default_replicas` are set here.
//!
//! With `--replicas 3` the three brokers form replicated topics (`ferry create --topic T`),
//! and stdin takes `stop N` / `start N` to stop broker N (its Raft groups lose that member,
//! a follower takes over if it led) and bring it back on the same ports and data: failover
//! without leaving the command. Each broker has its own shutdown token, so stopping one
//! leaves the others running; `ferry dev` itself stops them all on its shutdown.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ferry_daemon::DaemonConfig as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// First port of brokers 2 and 3 with `--replicas 3`: 4154-4156 and 4157-4159 sit between
/// broker 1's 4150-4153 and lookupd's 4160.
pub const MORE_BROKERS_PORT: u16 = 4154;

/// How long `ferry dev --replicas 3` waits for lookupd to list every broker before it says
/// it is up (a replicated topic needs them all registered).
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// Flags of `ferry dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the broker keeps its data (created if missing; reused on the next start). With
    /// `--replicas 3`, broker N keeps its data in DIR/broker-N.
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

    /// Run 3 brokers instead of 1, each topic created by `ferry create` (or `POST
    /// /topic/create`) replicated on all three; broker 1 keeps the addresses above, brokers
    /// 2 and 3 take the ports from `--more-brokers-port`.
    #[arg(long, default_value_t = 1, value_parser = parse_dev_replicas, value_name = "N")]
    pub replicas: usize,

    /// With `--replicas 3`: broker 2 listens on TCP PORT, HTTP PORT+1 and gRPC PORT+2, broker
    /// 3 on PORT+3, PORT+4 and PORT+5 (on broker 1's IP). 0 picks free ports.
    #[arg(long, default_value_t = MORE_BROKERS_PORT, value_name = "PORT")]
    pub more_brokers_port: u16,

    /// lookupd's TCP address (brokers register here).
    #[arg(long, default_value = "127.0.0.1:4160", value_name = "ADDR")]
    pub lookupd_tcp_address: SocketAddr,

    /// lookupd's HTTP address (consumers and tools ask here).
    #[arg(long, default_value = "127.0.0.1:4161", value_name = "ADDR")]
    pub lookupd_http_address: SocketAddr,

    /// The admin dashboard's HTTP address.
    #[arg(long, default_value = "127.0.0.1:4171", value_name = "ADDR")]
    pub admin_http_address: SocketAddr,

    /// Log level of the daemons (error, warn, info, debug, trace), or a tracing filter
    /// (`warn,openraft=info`). With `--replicas 3` the default `warn` leaves out the Raft
    /// library's own messages, which repeat every 200 ms while a broker is stopped.
    #[arg(long, default_value = DEFAULT_LOG_LEVEL, value_name = "LEVEL")]
    pub log_level: String,
}

/// `--log-level`'s default.
const DEFAULT_LOG_LEVEL: &str = "warn";

impl DevArgs {
    /// The tracing filter for `--log-level` (see its help).
    pub fn log_filter(&self) -> String {
        if self.replicas > 1 && self.log_level == DEFAULT_LOG_LEVEL {
            format!("{DEFAULT_LOG_LEVEL},openraft=off")
        } else {
            self.log_level.clone()
        }
    }
}

/// `--replicas`: 1 or 3 (5 brokers would need ports past lookupd's).
fn parse_dev_replicas(s: &str) -> Result<usize, String> {
    match s.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("ferry dev runs 1 or 3 brokers, not {s:?}")),
    }
}

/// One broker's addresses, once bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerAddrs {
    /// TCP (NSQ clients).
    pub tcp: SocketAddr,
    /// HTTP.
    pub http: SocketAddr,
    /// gRPC.
    pub grpc: SocketAddr,
}

/// The addresses the daemons listen on, once bound.
#[derive(Debug, Clone)]
pub struct DevAddrs {
    /// The brokers, broker 1 first.
    pub brokers: Vec<BrokerAddrs>,
    /// lookupd TCP.
    pub lookupd_tcp: SocketAddr,
    /// lookupd HTTP.
    pub lookupd_http: SocketAddr,
    /// admin-ui HTTP.
    pub admin_http: SocketAddr,
}

/// The banner `ferry dev` prints once everything listens.
pub fn banner(addrs: &DevAddrs, data_path: &Path) -> String {
    let mut s = String::new();
    let b1 = addrs.brokers[0];
    let replicated = addrs.brokers.len() > 1;
    let _ = writeln!(
        s,
        "Ferry dev stack is up (broker data in {}):",
        data_path.display()
    );
    if replicated {
        for (i, b) in addrs.brokers.iter().enumerate() {
            let _ = writeln!(
                s,
                "  brokerd-{}  TCP {}   HTTP http://{}   gRPC {}",
                i + 1,
                b.tcp,
                b.http,
                b.grpc
            );
        }
    } else {
        let _ = writeln!(
            s,
            "  brokerd   TCP {}   HTTP http://{}   gRPC {}",
            b1.tcp, b1.http, b1.grpc
        );
    }
    let _ = writeln!(
        s,
        "  lookupd   TCP {}   HTTP http://{}",
        addrs.lookupd_tcp, addrs.lookupd_http
    );
    let _ = writeln!(s, "  admin-ui  HTTP http://{}", addrs.admin_http);
    let _ = writeln!(s);
    let _ = writeln!(s, "Try it:");
    if replicated {
        let _ = writeln!(
            s,
            "  ferry create --broker-http-address {} --topic hello    # {} replicas (a first PUB makes 1)",
            b1.http,
            addrs.brokers.len()
        );
    }
    let _ = writeln!(
        s,
        "  ferry pub --broker-tcp-address {} --topic hello 'hi there'",
        b1.tcp
    );
    let _ = writeln!(
        s,
        "  ferry tail --lookupd-http-address {} --topic hello",
        addrs.lookupd_http
    );
    let _ = writeln!(s, "  curl 'http://{}/stats?format=json'", b1.http);
    if replicated {
        let _ = writeln!(s, "Try failover (on a topic made by `ferry create`):");
        let _ = writeln!(
            s,
            "  curl -s 'http://{}/stats?format=json&topic=hello'    # replication: role, leader, replicas",
            b1.http
        );
        let _ = writeln!(
            s,
            "  type `stop N` + Enter here to stop broker N (the leader, say): another leads within ~3 s; `start N` brings it back"
        );
    }
    let _ = writeln!(s, "Ctrl-C stops everything.");
    s
}

/// One broker of the stack: its config (addresses set to what it bound, so a restart comes
/// back on the same ports) and, while it runs, its stop token and task.
struct DevBroker {
    config: ferry_brokerd::config::Config,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
}

impl DevBroker {
    /// Binds and starts serving; afterwards `config` holds the bound addresses.
    async fn start(&mut self, shutdown: &CancellationToken) -> anyhow::Result<BrokerAddrs> {
        let server = ferry_brokerd::Server::bind(self.config.clone())
            .await
            .context("cannot start brokerd")?;
        let addrs = BrokerAddrs {
            tcp: server.tcp_addr(),
            http: server.http_addr(),
            grpc: server.grpc_addr(),
        };
        self.config.tcp_address = addrs.tcp;
        self.config.http_address = addrs.http;
        self.config.grpc_address = addrs.grpc;
        let stop = shutdown.child_token();
        self.running = Some((stop.clone(), tokio::spawn(server.run(stop))));
        Ok(addrs)
    }

    /// Stops it (if running) and waits until its data is persisted.
    async fn stop(&mut self) -> anyhow::Result<()> {
        let Some((stop, task)) = self.running.take() else {
            return Ok(());
        };
        stop.cancel();
        task.await.context("brokerd task failed")?
    }
}

/// The config of broker `n` (1-based) of the stack.
fn broker_config(
    args: &DevArgs,
    n: usize,
    lookupd_tcp: SocketAddr,
) -> anyhow::Result<ferry_brokerd::config::Config> {
    let mut cfg =
        ferry_brokerd::config::Config::from_args(["brokerd"]).context("brokerd defaults")?;
    let ip = args.broker_tcp_address.ip();
    if n == 1 {
        cfg.tcp_address = args.broker_tcp_address;
        cfg.http_address = args.broker_http_address;
        cfg.grpc_address = args.broker_grpc_address;
    } else {
        let port = |offset: usize| -> anyhow::Result<u16> {
            if args.more_brokers_port == 0 {
                return Ok(0);
            }
            u16::try_from(usize::from(args.more_brokers_port) + 3 * (n - 2) + offset)
                .ok()
                .context("--more-brokers-port is too high")
        };
        cfg.tcp_address = SocketAddr::new(ip, port(0)?);
        cfg.http_address = SocketAddr::new(ip, port(1)?);
        cfg.grpc_address = SocketAddr::new(ip, port(2)?);
    }
    cfg.broadcast_address = Some(ip.to_string());
    cfg.data_path = if args.replicas == 1 {
        args.data_path.clone()
    } else {
        args.data_path.join(format!("broker-{n}"))
    };
    cfg.default_replicas = args.replicas;
    cfg.lookupd_tcp_addresses = vec![lookupd_tcp.to_string()];
    Ok(cfg)
}

/// Starts lookupd, the brokers and admin-ui, calls `ready` with their addresses, and runs
/// until `shutdown` (taking `stop N` / `start N` on stdin with `--replicas 3`).
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

    let mut brokers = Vec::new();
    let mut broker_addrs = Vec::new();
    for n in 1..=args.replicas {
        let mut broker = DevBroker {
            config: broker_config(args, n, lookupd.tcp_addr())?,
            running: None,
        };
        let addrs = broker
            .start(&shutdown)
            .await
            .with_context(|| format!("broker {n}"))?;
        broker_addrs.push(addrs);
        brokers.push(broker);
    }

    let mut admin_cfg =
        ferry_admin_ui::config::Config::from_args(["admin-ui"]).context("admin-ui defaults")?;
    admin_cfg.http_address = args.admin_http_address;
    admin_cfg.lookupd_http_addresses = vec![lookupd.http_addr().to_string()];
    let admin = ferry_admin_ui::Server::bind(admin_cfg)
        .await
        .context("cannot start admin-ui")?;

    let addrs = DevAddrs {
        brokers: broker_addrs,
        lookupd_tcp: lookupd.tcp_addr(),
        lookupd_http: lookupd.http_addr(),
        admin_http: admin.http_addr(),
    };
    // The dashboard and the brokers stop first (they unregister and flush), then lookupd.
    let lookupd_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin.run(shutdown.child_token()));
    let lookupd_task = tokio::spawn(lookupd.run(lookupd_stop.clone()));
    if args.replicas > 1 {
        wait_registered(addrs.lookupd_http, args.replicas).await;
    }
    ready(&addrs);

    let control = if args.replicas > 1 {
        Some(read_stdin_commands())
    } else {
        None
    };
    let broker_result = serve(&mut brokers, control, &shutdown).await;
    let admin_result = admin_task.await.context("admin-ui task failed")?;
    lookupd_stop.cancel();
    let lookupd_result = lookupd_task.await.context("lookupd task failed")?;
    broker_result.context("brokerd failed")?;
    lookupd_result.context("lookupd failed")?;
    admin_result.context("admin-ui failed")?;
    Ok(())
}

/// Runs `stop N` / `start N` commands until `shutdown`, then stops every broker; the first
/// broker error, if any.
async fn serve(
    brokers: &mut [DevBroker],
    mut control: Option<tokio::sync::mpsc::Receiver<String>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let line = tokio::select! {
            () = shutdown.cancelled() => break,
            line = async { control.as_mut()?.recv().await }, if control.is_some() => line,
        };
        let Some(line) = line else {
            control = None; // stdin closed: nothing more to read.
            continue;
        };
        if let Err(e) = command(brokers, &line, shutdown).await {
            println!("{e:#}");
        }
    }
    let mut first_error = None;
    for broker in brokers.iter_mut() {
        if let Err(e) = broker.stop().await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One line typed on stdin: `stop N` or `start N`.
async fn command(
    brokers: &mut [DevBroker],
    line: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let count = brokers.len();
    let usage = || format!("type `stop N` or `start N` (N = 1..{count})");
    let (verb, n) = match words[..] {
        [] => return Ok(()),
        [verb, n] => (verb, n.parse::<usize>().with_context(usage)?),
        _ => anyhow::bail!(usage()),
    };
    let broker = n
        .checked_sub(1)
        .and_then(|i| brokers.get_mut(i))
        .ok_or_else(|| anyhow::anyhow!("no broker {n}: there are {count}"))?;
    match verb {
        "stop" if broker.running.is_none() => println!("broker {n} is already stopped"),
        "stop" => {
            broker.stop().await.with_context(|| format!("broker {n}"))?;
            println!("broker {n} stopped (`start {n}` brings it back)");
        }
        "start" if broker.running.is_some() => println!("broker {n} is already running"),
        "start" => {
            let a = broker
                .start(shutdown)
                .await
                .with_context(|| format!("broker {n}"))?;
            println!("broker {n} started: TCP {}   HTTP http://{}", a.tcp, a.http);
        }
        _ => anyhow::bail!(usage()),
    }
    Ok(())
}

/// Lines typed on stdin, read on a thread of their own (a blocking read cannot be
/// cancelled; the thread ends with the process, or at end of input).
fn read_stdin_commands() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (up to [`REGISTER_WAIT`]) until lookupd lists `count` brokers, so a replicated
/// topic can be created as soon as the banner is out; says so if they do not all register.
async fn wait_registered(lookupd_http: SocketAddr, count: usize) {
    let url = format!("http://{lookupd_http}/nodes");
    let listed = async || -> Option<usize> {
        let v: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        Some(v["producers"].as_array()?.len())
    };
    let end = tokio::time::Instant::now() + REGISTER_WAIT;
    while tokio::time::Instant::now() < end {
        if listed().await >= Some(count) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "ferry dev: lookupd does not list all {count} brokers yet; a replicated topic cannot be \
         created until it does"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> DevAddrs {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        DevAddrs {
            brokers: (0..n as u16)
                .map(|i| {
                    let base = if i == 0 { 4150 } else { 4154 + 3 * (i - 1) };
                    BrokerAddrs {
                        tcp: a(base),
                        http: a(base + 1),
                        grpc: a(if i == 0 { 4153 } else { base + 2 }),
                    }
                })
                .collect(),
            lookupd_tcp: a(4160),
            lookupd_http: a(4161),
            admin_http: a(4171),
        }
    }

    #[test]
    fn one_broker_banner_is_unchanged() {
        let text = banner(&addrs(1), Path::new("ferry-data"));
        assert!(text.contains(
            "  brokerd   TCP 127.0.0.1:4150   HTTP http://127.0.0.1:4151   gRPC 127.0.0.1:4153\n"
        ));
        assert!(!text.contains("failover"), "{text}");
    }

    #[test]
    fn three_brokers_banner_lists_each_and_failover() {
        let text = banner(&addrs(3), Path::new("ferry-data"));
        for line in [
            "  brokerd-1  TCP 127.0.0.1:4150   HTTP http://127.0.0.1:4151   gRPC 127.0.0.1:4153",
            "  brokerd-2  TCP 127.0.0.1:4154   HTTP http://127.0.0.1:4155   gRPC 127.0.0.1:4156",
            "  brokerd-3  TCP 127.0.0.1:4157   HTTP http://127.0.0.1:4158   gRPC 127.0.0.1:4159",
            "Try failover (on a topic made by `ferry create`):",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn more_brokers_take_consecutive_ports() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            dev: DevArgs,
        }
        let args = P::try_parse_from(["dev", "--replicas", "3"]).unwrap().dev;
        let lookupd = SocketAddr::from(([127, 0, 0, 1], 4160));
        let c3 = broker_config(&args, 3, lookupd).unwrap();
        assert_eq!(c3.tcp_address.port(), 4157);
        assert_eq!(c3.http_address.port(), 4158);
        assert_eq!(c3.grpc_address.port(), 4159);
        assert_eq!(c3.default_replicas, 3);
        assert_eq!(c3.data_path, Path::new("ferry-data/broker-3"));
        let c1 = broker_config(&args, 1, lookupd).unwrap();
        assert_eq!(c1.http_address.port(), 4151);
        assert!(P::try_parse_from(["dev", "--replicas", "2"]).is_err());
        let single = P::try_parse_from(["dev"]).unwrap().dev;
        let c = broker_config(&single, 1, lookupd).unwrap();
        assert_eq!(
            (c.data_path.as_path(), c.default_replicas),
            (Path::new("ferry-data"), 1)
        );
    }
}
