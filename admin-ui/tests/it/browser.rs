//! Browser tests: headless Chromium, driven through chromedriver (WebDriver, via fantoccini),
//! against the dashboard, a real broker and a real lookupd in this process.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup-test-deps.sh` installs
//! them). Without them the test fails and says so, unless `FERRY_SKIP_BROWSER_TESTS=1`.
//! Screenshots are written under Cargo's test temp dir (`CARGO_TARGET_TMPDIR`).

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::time::Instant;

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The Chromium executable itself (Debian's /usr/bin/chromium is a shell wrapper).
fn chromium_binary() -> Option<PathBuf> {
    let real = PathBuf::from("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real);
    }
    find_program(&["chromium", "chromium-browser", "google-chrome"])
}

/// Starts chromedriver and a headless Chromium session; None if skipping is allowed.
async fn browser() -> Option<(Driver, Client)> {
    let (Some(driver_bin), Some(chrome)) = (
        find_program(&["chromedriver", "chromium-driver"]),
        chromium_binary(),
    ) else {
        if std::env::var("FERRY_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("skipping: chromium/chromedriver not installed");
            return None;
        }
        panic!(
            "chromium and chromedriver are needed (run scripts/setup-test-deps.sh), \
             or set FERRY_SKIP_BROWSER_TESTS=1"
        );
    };
    let port = {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let status = format!("{}/status", driver.url);
    eventually("chromedriver ready", || async {
        let resp = client().get(&status).send().await.ok()?;
        let v: serde_json::Value = resp.json().await.ok()?;
        (v["value"]["ready"] == true).then_some(())
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chrome,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1400,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    Some((driver, client))
}

/// Polls the page until the element at `css` has text `want`.
async fn wait_text(c: &Client, css: &str, want: &str) {
    let end = Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
        {
            if text.trim() == want {
                return;
            }
            last = text;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {css} to read {want:?} (last {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a JavaScript expression until it is true.
async fn wait_js(c: &Client, what: &str, expr: &str) {
    let script = format!("return !!({expr});");
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(v) = c.execute(&script, vec![]).await
            && v == json!(true)
        {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the page's live stream, then marks the document, so that `no reload` can be
/// checked later (`window.__sameDocument`).
async fn live_and_marked(c: &Client) {
    wait_js(
        c,
        "the live stream",
        "document.getElementById('live-status').dataset.state === 'live'",
    )
    .await;
    c.execute("window.__sameDocument = 'yes';", vec![])
        .await
        .unwrap();
}

/// Clicks `css`, finding it again when a live update replaced it between find and click
/// (a stale element).
async fn click(c: &Client, css: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let clicked = match c.find(Locator::Css(css)).await {
            Ok(el) => el.click().await.map(drop),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(_) if Instant::now() < end => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => panic!("cannot click {css}: {e}"),
        }
    }
}

/// Clicks `css`, then answers the confirmation dialog the click opens.
async fn click_and_confirm(c: &Client, css: &str, accept: bool) -> String {
    click(c, css).await;
    let end = Instant::now() + DEADLINE;
    let text = loop {
        match c.get_alert_text().await {
            Ok(t) => break t,
            Err(_) if Instant::now() < end => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => panic!("no confirmation dialog after clicking {css}: {e}"),
        }
    };
    if accept {
        c.accept_alert().await.unwrap();
    } else {
        c.dismiss_alert().await.unwrap();
    }
    text
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test]
async fn dashboard_in_a_real_browser() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let lookupd = start_lookupd().await;
    let broker = start_broker(Some(lookupd.tcp)).await;
    broker.create("browser", Some("alpha")).await;
    broker.create("browser", Some("beta")).await;
    broker.publish("browser", 120).await;
    let l = lookupd.http.to_string();
    let admin = start_admin(|cfg| cfg.lookupd_http_addresses.push(l)).await;
    let topic_url = admin.url("/topics/browser");
    let topic_ready = async || {
        eventually("lookupd lists the broker's topic", || async {
            let v = admin.get_json("/api/topics").await;
            (v["topics"][0]["name"] == "browser").then_some(())
        })
        .await;
    };
    topic_ready().await;

    // Topics list: the topic with its numbers.
    c.goto(&admin.url("/topics")).await.unwrap();
    wait_text(
        &c,
        "tr[data-topic='browser'] td[data-field='messages']",
        "120",
    )
    .await;
    wait_text(
        &c,
        "tr[data-topic='browser'] td[data-field='channel_depth']",
        "240",
    )
    .await;
    wait_text(
        &c,
        "tr[data-topic='browser'] td[data-field='channels']",
        "2",
    )
    .await;

    // Topic page (reached by clicking): both channels' depth.
    click(&c, "tr[data-topic='browser'] a").await;
    wait_js(
        &c,
        "the topic page",
        "location.pathname === '/topics/browser'",
    )
    .await;
    wait_text(&c, "tr[data-channel='alpha'] td[data-field='depth']", "120").await;
    wait_text(&c, "tr[data-channel='beta'] td[data-field='depth']", "120").await;
    // Consuming changes the numbers on the page, with no reload.
    live_and_marked(&c).await;
    let mut consumer = Consumer::subscribe(broker.tcp, "browser", "alpha").await;
    consumer.consume(20).await;
    wait_text(&c, "tr[data-channel='alpha'] td[data-field='depth']", "100").await;
    wait_text(
        &c,
        "tr[data-channel='alpha'] td[data-field='connections']",
        "1",
    )
    .await;
    wait_text(&c, "tr[data-channel='beta'] td[data-field='depth']", "120").await;
    broker.publish("browser", 1000).await;
    wait_text(
        &c,
        "tr[data-channel='beta'] td[data-field='depth']",
        "1,120",
    )
    .await;
    wait_js(&c, "no reload", "window.__sameDocument === 'yes'").await;
    assert_eq!(c.current_url().await.unwrap().as_str(), topic_url);
    // The depth card is the channels' total, like the depth chart (#19).
    wait_text(&c, ".tile [data-field='channel_depth']", "2,220").await;
    wait_text(&c, ".tile [data-field='depth']", "0").await;

    // The charts are drawn and fed with samples.
    wait_js(
        &c,
        "charts with samples",
        "document.querySelector('#chart-rate canvas') && \
         document.querySelector('#chart-depth canvas') && \
         Number(document.getElementById('charts').dataset.points) >= 3",
    )
    .await;
    // The rate chart has redeliveries beside the message rate.
    wait_js(
        &c,
        "requeue and timeout series",
        "window.ferryCharts.rate.series.length === 4 && \
         window.ferryCharts.rate.series[2].label === 'requeued/s' && \
         window.ferryCharts.depth.series[1].label === 'channel depth (total)'",
    )
    .await;
    screenshot(&c, "admin-ui-topic.png").await;

    // Channel page: pause, with a confirmation that can be declined.
    c.goto(&admin.url("/topics/browser/alpha")).await.unwrap();
    wait_text(&c, "#clients-table td[data-field='finished']", "20").await;
    wait_text(&c, "#state", "active").await;
    let question = click_and_confirm(&c, "#btn-pause", false).await;
    assert!(
        question.contains("Pause channel browser/alpha"),
        "{question}"
    );
    assert!(
        !broker
            .channel_stats("browser", "alpha")
            .await
            .unwrap()
            .paused,
        "declining does nothing"
    );
    click_and_confirm(&c, "#btn-pause", true).await;
    eventually("the broker reports the channel paused", || async {
        let ch = broker.channel_stats("browser", "alpha").await?;
        ch.paused.then_some(())
    })
    .await;
    wait_text(
        &c,
        "#action-result strong",
        "pause channel browser/alpha: 1 of 1 nodes OK",
    )
    .await;
    wait_text(&c, "#state", "paused").await;
    wait_text(&c, "#brokers-table td[data-field='state']", "paused").await;
    wait_js(
        &c,
        "the Unpause button",
        "document.getElementById('btn-unpause')",
    )
    .await;
    screenshot(&c, "admin-ui-channel.png").await;

    // Unpause from the page, too.
    click_and_confirm(&c, "#btn-unpause", true).await;
    eventually("the broker reports the channel unpaused", || async {
        let ch = broker.channel_stats("browser", "alpha").await?;
        (!ch.paused).then_some(())
    })
    .await;
    wait_text(&c, "#state", "active").await;

    // What another site could make this browser send (a text/plain POST, no preflight) is
    // refused and changes nothing; the page's own requests carry X-Ferry-Action (#19).
    c.execute(
        "window.__csrf = 'pending'; \
         fetch('/api/topics/browser/alpha', {method: 'POST', headers: {'Content-Type': 'text/plain'}, \
           body: JSON.stringify({action: 'pause'})}).then(function (r) { window.__csrf = r.status; });",
        vec![],
    )
    .await
    .unwrap();
    wait_js(&c, "the text/plain POST refused", "window.__csrf === 415").await;
    assert!(
        !broker
            .channel_stats("browser", "alpha")
            .await
            .unwrap()
            .paused
    );
    wait_text(&c, ".tile [data-field='requeued']", "0").await;

    // Peek: the next message the channel would deliver (the consumer finished 20), in the
    // panel; peeking changes nothing.
    click(&c, "#btn-peek").await;
    wait_text(
        &c,
        "#peek-result tr[data-state='ready'] .peek-body",
        "message 20",
    )
    .await;
    let alpha = broker.channel_stats("browser", "alpha").await.unwrap();
    assert_eq!(alpha.depth, 1100, "{alpha:?}");
    c.execute("document.getElementById('peek').scrollIntoView();", vec![])
        .await
        .unwrap();
    screenshot(&c, "admin-ui-peek.png").await;
    // Back to the top: the sticky header would cover a button scrolled to the top edge.
    c.execute("window.scrollTo(0, 0);", vec![]).await.unwrap();

    // Rewind with the time picker, filled in local time as an operator would: an hour ago,
    // before every message, so all 1,120 are owed again. The page sends it as UTC.
    c.execute(
        "var d = new Date(Date.now() - 3600e3); \
         d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); \
         document.getElementById('rewind-at').value = d.toISOString().slice(0, 19);",
        vec![],
    )
    .await
    .unwrap();
    let question = click_and_confirm(&c, "#btn-rewind", true).await;
    assert!(
        question.contains("Rewind channel browser/alpha"),
        "{question}"
    );
    wait_js(
        &c,
        "the rewind's result",
        "(function () { var s = document.querySelector('#action-result strong'); \
           var t = s ? s.textContent : ''; \
           return t.indexOf('rewind channel browser/alpha (to=') === 0 \
             && /Z\\): 1 of 1 nodes OK$/.test(t); })()",
    )
    .await;
    eventually("the channel owes every message again", || async {
        let ch = broker.channel_stats("browser", "alpha").await?;
        (ch.depth == 1120).then_some(())
    })
    .await;
    wait_text(&c, "#brokers-table td[data-field='depth']", "1,120").await;

    // Nodes and lookup pages render the broker.
    c.goto(&admin.url("/nodes")).await.unwrap();
    wait_text(
        &c,
        &format!("tr[data-node='{}'] td:nth-child(3)", broker.http),
        &broker.http.to_string(),
    )
    .await;
    screenshot(&c, "admin-ui-nodes.png").await;
    c.goto(&admin.url("/lookup")).await.unwrap();
    wait_text(&c, "tr[data-topic='browser'] td:nth-child(2)", "1").await;
    screenshot(&c, "admin-ui-lookup.png").await;
    c.goto(&admin.url("/topics")).await.unwrap();
    wait_text(
        &c,
        "tr[data-topic='browser'] td[data-field='messages']",
        "1,120",
    )
    .await;
    screenshot(&c, "admin-ui-topics.png").await;

    c.close().await.unwrap();
    admin.stop().await;
    broker.stop().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn alert_badges_in_a_real_browser() {
    let Some((_driver, c)) = browser().await else {
        return;
    };
    let broker = start_broker(None).await;
    broker.create("alerting", Some("slow")).await;
    let b = broker.http.to_string();
    let admin = start_admin(|cfg| {
        cfg.broker_http_addresses.push(b);
        cfg.sample_interval = Duration::from_millis(200);
        cfg.alert_depth_rising_samples = 5;
    })
    .await;

    // Open before the alert fires: the badge arrives live, with no reload.
    c.goto(&admin.url("/topics")).await.unwrap();
    live_and_marked(&c).await;
    let publisher = Publisher::start(broker.http, "alerting", Duration::from_millis(100));
    active_alert(&admin, "depth_rising").await;
    wait_text(&c, "#nav-alerts #alerts-count", "1").await;
    wait_js(
        &c,
        "a visible nav badge",
        "(function () { var b = document.getElementById('alerts-count'); \
           var r = b && b.getBoundingClientRect(); \
           return r && r.width > 0 && r.height > 0 \
             && getComputedStyle(b).visibility === 'visible'; })()",
    )
    .await;
    wait_text(
        &c,
        "tr[data-topic='alerting'] [data-field='alerts']",
        "1 alert",
    )
    .await;
    wait_js(&c, "no reload", "window.__sameDocument === 'yes'").await;
    screenshot(&c, "admin-ui-alert-badge.png").await;

    // The alerts page, reached from the navigation, links to the channel.
    click(&c, "#nav-alerts").await;
    wait_js(&c, "the alerts page", "location.pathname === '/alerts'").await;
    wait_text(
        &c,
        "#alerts-table tr[data-rule='depth_rising'] td:nth-child(2)",
        "alerting/slow",
    )
    .await;
    screenshot(&c, "admin-ui-alerts.png").await;

    // Drained: the alert resolves, the badge goes away and the alert moves down.
    drop(publisher);
    broker.empty_channel("alerting", "slow").await;
    wait_js(
        &c,
        "the badge to go",
        "!document.getElementById('alerts-count') \
         && document.querySelector(\"#resolved-table tr[data-rule='depth_rising']\")",
    )
    .await;

    c.close().await.unwrap();
    admin.stop().await;
    broker.stop().await;
}
