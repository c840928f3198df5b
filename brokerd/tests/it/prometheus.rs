//! `deploy/` checked by the real tools: `promtool` checks and unit-tests the alerting rules, and
//! a real Prometheus server scrapes a real brokerd every second, fires the depth-rising alert
//! for a channel nobody consumes, and evaluates every query of the Grafana dashboard.
//! (`scripts/setup-test-deps.sh` installs Debian's `prometheus` package, which has both tools.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn tool(name: &str) -> &str {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is missing: run scripts/setup-test-deps.sh (scripts/test.sh does) to install \
         Debian's prometheus package"
    );
    name
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = deploy().join("prometheus");
    let out = run_ok(Command::new(tool("promtool")).current_dir(&dir).args([
        "check",
        "rules",
        "ferry-rules.yml",
    ]));
    assert!(out.contains("SUCCESS: 10 rules found"), "{out}");
    let out = run_ok(Command::new(tool("promtool")).current_dir(&dir).args([
        "test",
        "rules",
        "ferry-rules.test.yml",
    ]));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts Prometheus in `dir`, scraping `target` every second as job `ferry-brokerd`, with the
/// rules file at `rules`.
fn start_prometheus(dir: &Path, target: std::net::SocketAddr, rules: &Path) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: ferry-brokerd\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        addr: ([127, 0, 0, 1], port).into(),
    }
}

async fn get_json(url: &str) -> Option<Value> {
    let resp = reqwest::get(url).await.ok()?;
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_fires_depth_rising_and_evaluates_the_dashboard() {
    let b = crate::common::start(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    // The rules as shipped, with their time windows scaled from minutes to seconds so the
    // alert fires within the test: `[2m]` -> `[6s]`, `for: 5m` -> `for: 4s`.
    let rules = std::fs::read_to_string(deploy().join("prometheus/ferry-rules.yml"))
        .unwrap()
        .replace("[2m]", "[6s]")
        .replace("for: 5m", "for: 4s");
    let rules_path = tmp.path().join("ferry-rules.yml");
    std::fs::write(&rules_path, rules).unwrap();
    let prom = start_prometheus(tmp.path(), b.http, &rules_path);

    // A channel nobody consumes, published to every 100 ms.
    let (code, _) = b
        .http("POST", "/channel/create?topic=backlog&channel=stuck", b"")
        .await;
    assert_eq!(code, 200);
    let http = b.http;
    let publisher = tokio::spawn(async move {
        loop {
            crate::common::http(http, "POST", "/pub?topic=backlog", b"more").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let alerts_url = format!("http://{}/api/v1/alerts", prom.addr);
    let end = tokio::time::Instant::now() + Duration::from_secs(90);
    let alert = loop {
        let firing = get_json(&alerts_url).await.and_then(|v| {
            v["data"]["alerts"].as_array()?.iter().find_map(|a| {
                (a["labels"]["alertname"] == "FerryChannelDepthRising"
                    && a["labels"]["topic"] == "backlog"
                    && a["labels"]["channel"] == "stuck"
                    && a["state"] == "firing")
                    .then(|| a.clone())
            })
        });
        if let Some(a) = firing {
            break a;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "FerryChannelDepthRising did not fire; last answer: {:?}",
            get_json(&alerts_url).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(alert["labels"]["job"], "ferry-brokerd", "{alert}");

    // Every query of the Grafana dashboard parses and evaluates; those over series this broker
    // has now return data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/ferry-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut with_data = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$topic", ".*")
                .replace("$__rate_interval", "10s");
            let mut url =
                reqwest::Url::parse(&format!("http://{}/api/v1/query", prom.addr)).unwrap();
            url.query_pairs_mut().append_pair("query", &expr);
            let answer = get_json(url.as_str()).await.expect("prometheus answers");
            assert_eq!(answer["status"], "success", "{expr}: {answer}");
            if answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                with_data += 1;
            }
        }
    }
    assert!(
        with_data >= 8,
        "only {with_data} dashboard queries returned data"
    );
    publisher.abort();
    drop(prom);
    b.stop().await;
}
