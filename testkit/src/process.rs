//! The daemons' binaries as child processes: started with port 0 everywhere, their listening
//! addresses read from the "TCP: listening on" / "HTTP: listening on" log lines (text or JSON
//! logs), stderr drained into [`DaemonProcess::log`], stopped by signal or killed.
//!
//! Tests pass the binary's path: `env!("CARGO_BIN_EXE_brokerd")` in the crate that defines it,
//! [`binary`] from another crate's tests.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// A daemon running as a child process; killed when dropped (a failed test leaves nothing
/// running).
#[derive(Debug)]
pub struct DaemonProcess {
    pub child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// Every line it wrote to stderr so far, ANSI colour codes removed.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The path of another crate's binary `name` in this build's target directory (next to the
/// test executable's `deps/` folder); panics with how to build it if it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo build --bin {name}` first",
        path.display()
    );
    path
}

/// Runs `bin` with `args` and `env`, and waits for it to log both listening addresses.
pub fn spawn(bin: &Path, args: &[&str], env: &[(&str, &Path)]) -> DaemonProcess {
    let (mut tcp, mut http) = (None, None);
    let (child, log, (tcp, http)) = spawn_until(bin, args, env, |line| {
        tcp = tcp.or(listening_on(line, "TCP"));
        http = http.or(listening_on(line, "HTTP"));
        tcp.zip(http)
    });
    DaemonProcess {
        child,
        tcp,
        http,
        log,
    }
}

/// Runs `bin` with `args` and `env` (and `NO_COLOR=1`), collecting its stderr lines (ANSI
/// codes removed) in the returned log, until `found` returns `Some` for a line; panics if it
/// does not within [`DEADLINE`]. Stderr keeps being drained so the child never blocks.
pub fn spawn_until<T>(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
    mut found: impl FnMut(&str) -> Option<T>,
) -> (Child, Arc<Mutex<Vec<String>>>, T) {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(strip_ansi(&line));
        }
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let end = Instant::now() + DEADLINE;
    let value = loop {
        let left = end.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("{} logs what the test waits for: {e}", bin.display()));
        let value = found(&line);
        log.lock().unwrap().push(line);
        if let Some(v) = value {
            break v;
        }
    };
    let sink = log.clone();
    std::thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            sink.lock().unwrap().push(line);
        }
    });
    (child, log, value)
}

/// Sends `signal` (`TERM`, `INT`...) to `child` with kill(1).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal}");
}

/// Waits for `child` to exit within [`DEADLINE`] (killing it and failing if it does not);
/// returns its status. Blocking: call it from `spawn_blocking` in an async test.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pid {} did not exit in time", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address in "`kind`: listening on ADDR", which ends the message (text logs) or is
/// followed by `"` (JSON logs).
pub fn listening_on(line: &str, kind: &str) -> Option<SocketAddr> {
    let rest = line.split(&format!("{kind}: listening on ")).nth(1)?;
    let addr = rest.split('"').next()?.split_whitespace().next()?;
    addr.parse().ok()
}

/// Runs the `brokerd` binary `bin` on `dir` with ports 0, `extra` flags and `env`.
pub fn spawn_brokerd(
    bin: &Path,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> DaemonProcess {
    let data = format!("--data-path={}", dir.display());
    let mut args = vec![
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--grpc-address=127.0.0.1:0",
        &data,
    ];
    args.extend_from_slice(extra);
    spawn(bin, &args, env)
}

/// Runs the `lookupd` binary `bin` with `args` (give `--tcp-address=127.0.0.1:0` and
/// `--http-address=127.0.0.1:0` for free ports).
pub fn spawn_lookupd(bin: &Path, args: &[&str]) -> DaemonProcess {
    spawn(bin, args, &[])
}

/// Removes ANSI escape sequences (colour codes).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl DaemonProcess {
    /// Sends `signal` (`TERM`, `INT`...) with kill(1) and expects a clean exit within
    /// [`DEADLINE`]. Blocking: call it from `spawn_blocking` in an async test.
    pub fn signal_and_wait(mut self, sig: &str) {
        signal(&self.child, sig);
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "exited with {status} on SIG{sig}");
    }

    /// [`signal_and_wait`](Self::signal_and_wait) with `TERM`.
    pub fn sigterm(self) {
        self.signal_and_wait("TERM")
    }

    /// SIGKILL, and reaps the child.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// The lines logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for DaemonProcess {
    /// A test that fails half-way leaves no daemon running behind it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
