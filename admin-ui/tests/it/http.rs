//! HTTP-level tests of every page, JSON endpoint, event stream and action, against real
//! brokers and lookup daemons in this process, nsqd-shaped fixtures, and broken nodes.

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn channel<'a>(topic_view: &'a Value, name: &str) -> &'a Value {
    topic_view["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no channel {name} in {topic_view}"))
}

#[tokio::test]
async fn views_sum_two_brokers_found_through_lookupd() {
    let c = cluster("orders", 1500).await;
    let mut consumer = Consumer::subscribe(c.b1.tcp, "orders", "ch1").await;
    consumer.consume(100).await;

    // Topics list.
    let topics = c.admin.get_json("/api/topics").await;
    let row = &topics["topics"][0];
    assert_eq!(row["name"], "orders");
    assert_eq!(row["brokers"], 2);
    assert_eq!(row["channels"], 2);
    assert_eq!(row["messages"], 3000);
    assert_eq!(topics["errors"], json!([]));

    // Topic: per broker rows and channels summed over brokers.
    let t = eventually("consumed messages counted", || async {
        let t = c.admin.get_json("/api/topics/orders").await;
        (channel(&t, "ch1")["depth"] == 2900).then_some(t)
    })
    .await;
    assert_eq!(t["exists"], true);
    assert_eq!(t["total"]["messages"], 3000);
    assert_eq!(channel(&t, "ch2")["depth"], 3000);
    assert_eq!(channel(&t, "ch1")["in_flight"], 0);
    assert_eq!(channel(&t, "ch1")["connections"], 1);
    let nodes: Vec<&str> = t["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["node"].as_str().unwrap())
        .collect();
    assert!(nodes.contains(&c.b1.http.to_string().as_str()), "{nodes:?}");
    assert!(nodes.contains(&c.b2.http.to_string().as_str()), "{nodes:?}");

    // Channel: per broker rows and the client connection.
    let ch = c.admin.get_json("/api/topics/orders/ch1").await;
    assert_eq!(ch["total"]["depth"], 2900);
    assert_eq!(ch["brokers"].as_array().unwrap().len(), 2);
    let client = &ch["clients"][0];
    assert_eq!(client["hostname"], "consumer.test");
    assert_eq!(client["user_agent"], "admin-ui-test/1.0");
    assert_eq!(client["finished"], 100);
    assert_eq!(client["node"], c.b1.http.to_string());

    // Nodes and lookup.
    let nodes = c.admin.get_json("/api/nodes").await;
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for n in list {
        assert_eq!(n["ok"], true, "{n}");
        assert_eq!(n["broadcast_address"], "127.0.0.1");
        assert!(n["tcp_port"].as_u64().unwrap() > 0);
        assert!(n["version"].as_str().unwrap().starts_with("ferry-"));
        assert_eq!(n["topics"], json!(["orders"]));
    }
    let lookup = c.admin.get_json("/api/lookup").await;
    assert_eq!(lookup["topics"][0]["name"], "orders");
    assert_eq!(lookup["topics"][0]["producers"], 2);
    assert_eq!(lookup["topics"][0]["channels"], json!(["ch1", "ch2"]));

    // The HTML pages show the same, formatted.
    let (status, html) = c.admin.get("/topics").await;
    assert_eq!(status, 200);
    assert!(html.contains("href=\"/topics/orders\""), "{html}");
    assert!(html.contains("3,000"), "{html}");
    let (_, html) = c.admin.get("/topics/orders").await;
    assert!(html.contains("data-channel=\"ch1\""));
    assert!(html.contains("2,900"));
    assert!(html.contains("id=\"chart-rate\""));
    assert!(html.contains("sse-connect=\"/events?view=topic&#38;topic=orders\""));
    let (_, html) = c.admin.get("/topics/orders/ch1").await;
    assert!(html.contains("admin-ui-test/1.0"));
    assert!(html.contains("consumer.test"));
    let (_, html) = c.admin.get("/nodes").await;
    assert!(html.contains(&c.b2.http.to_string()));
    let (_, html) = c.admin.get("/lookup").await;
    assert!(html.contains("id=\"create-form\""));
    assert!(html.contains("ch2"));
    c.stop().await;
}

#[tokio::test]
async fn actions_apply_to_every_broker_and_lookupd() {
    let c = cluster("jobs", 10).await;
    let post = |path: &str, action: &str| {
        let path = path.to_owned();
        let body = json!({ "action": action });
        let admin = &c.admin;
        async move { admin.send(Method::POST, &path, Some(body), &[]).await }
    };

    // Channel pause / unpause on both brokers.
    let (status, body) = post("/api/topics/jobs/ch1", "pause").await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["outcomes"].as_array().unwrap().len(), 2);
    for b in [&c.b1, &c.b2] {
        assert!(b.channel_stats("jobs", "ch1").await.unwrap().paused);
        assert!(!b.channel_stats("jobs", "ch2").await.unwrap().paused);
    }
    let t = c.admin.get_json("/api/topics/jobs").await;
    assert_eq!(channel(&t, "ch1")["paused"], true, "cache was invalidated");
    let (status, _) = post("/api/topics/jobs/ch1", "unpause").await;
    assert_eq!(status, 200);
    assert!(!c.b2.channel_stats("jobs", "ch1").await.unwrap().paused);

    // Channel empty.
    let (status, _) = post("/api/topics/jobs/ch2", "empty").await;
    assert_eq!(status, 200);
    for b in [&c.b1, &c.b2] {
        assert_eq!(b.channel_stats("jobs", "ch2").await.unwrap().depth, 0);
        assert_eq!(b.channel_stats("jobs", "ch1").await.unwrap().depth, 10);
    }

    // Topic pause / unpause.
    let (status, _) = post("/api/topics/jobs", "pause").await;
    assert_eq!(status, 200);
    for b in [&c.b1, &c.b2] {
        assert!(b.topic_stats("jobs").await.unwrap().paused);
    }
    let (status, _) = post("/api/topics/jobs", "unpause").await;
    assert_eq!(status, 200);
    assert!(!c.b1.topic_stats("jobs").await.unwrap().paused);

    // Topic empty: the topic's own backlog (a topic without channels keeps one).
    c.b1.publish("backlog", 4).await;
    let (status, body) = post("/api/topics/backlog", "empty").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.b1.topic_stats("backlog").await.unwrap().depth, 0);

    // Channel delete: brokers and lookupd.
    let (status, body) = c
        .admin
        .send(Method::DELETE, "/api/topics/jobs/ch2", None, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let roles: Vec<&str> = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "broker").count(), 2);
    assert_eq!(roles.iter().filter(|r| **r == "lookupd").count(), 1);
    for b in [&c.b1, &c.b2] {
        assert!(b.channel_stats("jobs", "ch2").await.is_none());
    }
    let channels = c.lookupd.get("/channels?topic=jobs").await;
    assert_eq!(channels["channels"], json!(["ch1"]));

    // Topic delete: brokers and lookupd.
    let (status, body) = c
        .admin
        .send(Method::DELETE, "/api/topics/jobs", None, &[])
        .await;
    assert_eq!(status, 200, "{body}");
    for b in [&c.b1, &c.b2] {
        assert!(b.topic_stats("jobs").await.is_none());
    }
    eventually("lookupd forgets the topic", || async {
        let topics = c.lookupd.get("/topics").await;
        (!topics["topics"].as_array()?.contains(&json!("jobs"))).then_some(())
    })
    .await;
    let (status, _) = c.admin.get("/api/topics/jobs").await;
    assert_eq!(status, 404);

    // Create (on the lookupd), from a form body as the page sends it (with its header).
    let resp = client()
        .post(c.admin.url("/api/topics"))
        .header("X-Ferry-Action", "1")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("topic=fresh&channel=first")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        c.lookupd.get("/channels?topic=fresh").await["channels"],
        json!(["first"])
    );
    let lookup = c.admin.get_json("/api/lookup").await;
    let fresh = lookup["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fresh")
        .unwrap();
    assert_eq!(fresh["producers"], 0, "registered, no broker holds it");

    // An htmx request gets the result as HTML.
    let resp = client()
        .post(c.admin.url("/api/topics/backlog"))
        .header("HX-Request", "true")
        .header("X-Ferry-Action", "1")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("action=pause")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("pause topic backlog: 1 of 1 nodes OK"),
        "{html}"
    );
    c.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let b = start_broker(None).await;
    b.create("t", Some("c")).await;
    let addr = b.http.to_string();
    let admin = start_admin(|c| c.broker_http_addresses.push(addr)).await;
    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics/t",
            Some(json!({"action": "explode"})),
            &[],
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"message":"INVALID_ACTION"}"#)
    );
    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics/bad%20name",
            Some(json!({"action": "pause"})),
            &[],
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (400, r#"{"message":"INVALID_TOPIC"}"#)
    );
    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics/nosuch",
            Some(json!({"action": "pause"})),
            &[],
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = admin.get("/api/topics/nosuch/nochannel").await;
    assert_eq!(status, 404);
    let (status, _) = admin.get("/events?view=nonsense").await;
    assert_eq!(status, 400);
    // With no lookupd, create goes to the configured brokers.
    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics",
            Some(json!({"topic": "made", "channel": "here"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(b.channel_stats("made", "here").await.is_some());
    admin.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn unreachable_and_broken_nodes_are_shown_as_errors() {
    let good = start_broker(None).await;
    good.publish("alive", 3).await;
    let dead = dead_addr().await;
    let failing = FakeNode::start(500, "{\"message\":\"INTERNAL\"}".into(), "{}".into()).await;
    let garbage = FakeNode::start(200, "<html>not json</html>".into(), "{}".into()).await;
    let dead_lookupd = dead_addr().await;
    let addrs = [
        good.http.to_string(),
        dead.to_string(),
        failing.addr.to_string(),
        garbage.addr.to_string(),
    ];
    let admin = start_admin(|c| {
        c.broker_http_addresses.extend(addrs);
        c.lookupd_http_addresses.push(dead_lookupd.to_string());
    })
    .await;

    let topics = admin.get_json("/api/topics").await;
    assert_eq!(topics["topics"][0]["name"], "alive");
    assert_eq!(topics["topics"][0]["depth"], 3);
    let errors: Vec<String> = topics["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("lookupd ") && e.contains(&dead_lookupd.to_string()))
    );
    assert!(errors.iter().any(|e| e.contains(&dead.to_string())));
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&failing.addr.to_string()) && e.contains("HTTP 500"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains(&garbage.addr.to_string()) && e.contains("invalid JSON"))
    );

    for page in [
        "/topics",
        "/topics/alive",
        "/topics/alive/none",
        "/nodes",
        "/lookup",
    ] {
        let (status, html) = admin.get(page).await;
        assert_eq!(status, 200, "{page}");
        assert!(html.contains("node-errors"), "{page} shows the errors");
        let shown = if page == "/lookup" {
            dead_lookupd
        } else {
            dead
        };
        assert!(html.contains(&shown.to_string()), "{page}");
    }
    let nodes = admin.get_json("/api/nodes").await;
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list.iter().filter(|n| n["ok"] == true).count(), 1);
    let lookup = admin.get_json("/api/lookup").await;
    assert_eq!(lookup["errors"].as_array().unwrap().len(), 1);

    // An action reaches the good broker and reports the dead lookupd it could not ask.
    let (status, body) = admin
        .send(Method::DELETE, "/api/topics/alive", None, &[])
        .await;
    assert_eq!(status, 502, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    let outcomes = report["outcomes"].as_array().unwrap();
    assert!(
        outcomes
            .iter()
            .any(|o| o["role"] == "broker" && o["ok"] == true)
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o["role"] == "lookupd" && o["ok"] == false)
    );
    assert!(good.topic_stats("alive").await.is_none());
    admin.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn nsqd_shaped_stats_render() {
    let fixture = nsqd_fixture();
    let info = json!({"version": "1.2.1", "broadcast_address": "nsqd-a", "hostname": "nsqd-a.prod",
        "http_port": 4151, "tcp_port": 4150, "start_time": 1_700_000_000})
    .to_string();
    let plain = FakeNode::start(200, fixture.clone(), info.clone()).await;
    // Older nsqd wraps every reply in an envelope.
    let wrapped_body = format!(r#"{{"status_code":200,"status_txt":"OK","data":{fixture}}}"#);
    let wrapped_info = format!(r#"{{"status_code":200,"status_txt":"OK","data":{info}}}"#);
    let wrapped = FakeNode::start(200, wrapped_body, wrapped_info).await;
    let addrs = [plain.addr.to_string(), wrapped.addr.to_string()];
    let admin = start_admin(|c| c.broker_http_addresses.extend(addrs)).await;

    let topics = admin.get_json("/api/topics").await;
    assert_eq!(topics["errors"], json!([]));
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["events", "orders"]);
    assert_eq!(topics["topics"][0]["depth"], 500);
    assert_eq!(topics["topics"][1]["channel_depth"], 2 * (1_234_567 + 5));

    let t = admin.get_json("/api/topics/orders").await;
    let billing = channel(&t, "billing");
    assert_eq!(billing["in_flight"], 34);
    assert_eq!(billing["deferred"], 6);
    assert_eq!(billing["requeued"], 84);
    assert_eq!(billing["timed_out"], 14);
    assert_eq!(billing["connections"], 2);
    assert_eq!(billing["e2e"][0]["label"], "p99");
    assert_eq!(billing["e2e"][1]["label"], "p99.9");
    assert_eq!(channel(&t, "audit")["paused"], true);
    // nsqd has no disk figure for a topic: hidden, not shown as 0.
    assert_eq!(t["total"]["disk_bytes"], Value::Null, "{t}");

    let (status, html) = admin.get("/topics/orders").await;
    assert_eq!(status, 200);
    assert!(html.contains("2,469,134"), "depth formatted");
    assert!(html.contains("p99 12.3ms"));
    assert!(!html.contains("Disk used"), "{html}");
    assert!(html.contains("Topic backlog"), "{html}");
    assert!(html.contains("badge paused"));
    let (_, html) = admin.get("/topics/orders/billing").await;
    assert!(html.contains("go-nsq/1.1.0"));
    assert!(html.contains("worker-1.prod"));
    assert!(html.contains("TLS TLS1.3"));
    assert!(html.contains("snappy"));
    assert!(html.contains("9,876,400"), "finished");
    let (_, html) = admin.get("/topics/events").await;
    assert!(html.contains("No channels"));

    let nodes = admin.get_json("/api/nodes").await;
    for n in nodes["nodes"].as_array().unwrap() {
        assert_eq!(n["version"], "1.2.1");
        assert_eq!(n["hostname"], "nsqd-a.prod");
        assert_eq!(n["tcp_port"], 4150);
        assert_eq!(n["ok"], true);
    }
    admin.stop().await;
}

#[tokio::test]
async fn actions_need_an_admin_user_when_configured() {
    let b = start_broker(None).await;
    b.create("guarded", Some("c")).await;
    let addr = b.http.to_string();
    let admin = start_admin(|c| {
        c.broker_http_addresses.push(addr);
        c.admin_users = vec!["alice".into()];
    })
    .await;
    let pause = Some(json!({"action": "pause"}));
    let (status, body) = admin
        .send(Method::POST, "/api/topics/guarded/c", pause.clone(), &[])
        .await;
    assert_eq!((status, body.as_str()), (403, r#"{"message":"FORBIDDEN"}"#));
    let (status, _) = admin
        .send(
            Method::POST,
            "/api/topics/guarded/c",
            pause.clone(),
            &[("X-Forwarded-User", "mallory")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .send(Method::DELETE, "/api/topics/guarded", None, &[])
        .await;
    assert_eq!(status, 403);
    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics",
            Some(json!({"topic": "x"})),
            &[("HX-Request", "true")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("restricted to admin users"), "{body}");
    assert!(!b.channel_stats("guarded", "c").await.unwrap().paused);
    assert!(b.topic_stats("guarded").await.is_some());

    // Read-only pages show no action buttons; an admin's do.
    let (_, html) = admin.get("/topics/guarded/c").await;
    assert!(!html.contains("btn-pause"));
    assert!(html.contains("read-only"));
    let resp = client()
        .get(admin.url("/topics/guarded/c"))
        .header("X-Forwarded-User", "alice")
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains("btn-pause"));

    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics/guarded/c",
            pause,
            &[("X-Forwarded-User", "alice")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(b.channel_stats("guarded", "c").await.unwrap().paused);
    admin.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn history_and_live_events() {
    let b = start_broker(None).await;
    b.create("live", Some("c")).await;
    b.publish("live", 5).await;
    let addr = b.http.to_string();
    let admin = start_admin(|c| c.broker_http_addresses.push(addr)).await;

    // The sampler records points; a publish between samples shows as a rate.
    eventually("two samples", || async {
        let h = admin.get_json("/api/history/live/c").await;
        (h["t"].as_array()?.len() >= 2).then_some(())
    })
    .await;
    b.publish("live", 50).await;
    let h = eventually("a positive rate", || async {
        let h = admin.get_json("/api/history/live").await;
        h["rate"]
            .as_array()?
            .iter()
            .any(|r| r.as_f64().is_some_and(|r| r > 0.0))
            .then_some(h)
    })
    .await;
    assert_eq!(h["depth"].as_array().unwrap().last().unwrap(), 55);
    let t = admin.get_json("/api/topics/live").await;
    assert!(t["rate"].is_number() || t["rate"].is_null());
    assert_eq!(admin.get_json("/api/history/none").await["t"], json!([]));

    // The event stream sends the fragments, then only what changed.
    let mut resp = client()
        .get(admin.url("/events?view=channel&topic=live&channel=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    read_until(&mut resp, &mut text, "event: live").await;
    read_until(&mut resp, &mut text, "event: toolbar").await;
    read_until(&mut resp, &mut text, "event: history").await;
    assert!(text.contains("data-field=\"depth\">55<"), "{text}");
    b.publish("live", 1000).await;
    read_until(&mut resp, &mut text, "1,055").await;

    // Shutdown ends open streams instead of waiting for them.
    admin.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn static_files_and_ping() {
    let admin = start_admin(|_| {}).await;
    for (file, ctype) in [
        ("htmx.min.js", "text/javascript"),
        ("htmx-ext-sse.min.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("THIRD-PARTY-LICENSES.md", "text/plain"),
    ] {
        let resp = client()
            .get(admin.url(&format!("/static/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(ctype), "{file}: {ct}");
        assert!(!resp.bytes().await.unwrap().is_empty());
    }
    assert_eq!(admin.get("/static/nope.js").await.0, 404);
    assert_eq!(admin.get("/ping").await, (200, "OK".to_owned()));
    // No brokers configured: an empty, working dashboard.
    let (status, html) = admin.get("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("No topics yet"));
    admin.stop().await;
}

/// Reads the event stream into `text` until it contains `needle`.
async fn read_until(resp: &mut reqwest::Response, text: &mut String, needle: &str) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !text.contains(needle) {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let chunk = tokio::time::timeout(left, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {text}"))
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn an_action_reports_a_broker_that_lookupd_lists_but_cannot_be_reached() {
    let good = start_broker(None).await;
    good.create("split", Some("c")).await;
    let dead = dead_addr().await;
    let producer = |addr: std::net::SocketAddr| {
        json!({"remote_address": addr.to_string(), "hostname": "h", "broadcast_address": "127.0.0.1",
               "tcp_port": 1, "http_port": addr.port(), "version": "1.3.0"})
    };
    let node = |addr| {
        let mut p = producer(addr);
        p["topics"] = json!(["split"]);
        p["tombstones"] = json!([false]);
        p
    };
    // A lookupd (nsqlookupd's JSON) that still lists a broker nobody can reach.
    let lookupd = FakeNode::serve(
        200,
        vec![
            (
                "/nodes",
                json!({"producers": [node(good.http), node(dead)]}).to_string(),
            ),
            ("/topics", json!({"topics": ["split"]}).to_string()),
            ("/channels", json!({"channels": ["c"]}).to_string()),
            (
                "/lookup",
                json!({"channels": ["c"], "producers": [producer(good.http), producer(dead)]})
                    .to_string(),
            ),
        ],
    )
    .await;
    let l = lookupd.addr.to_string();
    let admin = start_admin(|c| c.lookupd_http_addresses.push(l)).await;

    let nodes = admin.get_json("/api/nodes").await;
    let dead_row = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["http_address"] == dead.to_string())
        .expect("the dead broker is listed");
    assert_eq!(dead_row["ok"], false);
    assert_eq!(dead_row["topics"], json!(["split"]), "from lookupd");

    let (status, body) = admin
        .send(
            Method::POST,
            "/api/topics/split/c",
            Some(json!({"action": "pause"})),
            &[],
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["ok"], false);
    let outcome = |addr: std::net::SocketAddr| {
        report["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["node"] == addr.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("no outcome for {addr}: {report}"))
    };
    assert_eq!(outcome(good.http)["ok"], true);
    assert_eq!(outcome(dead)["ok"], false);
    assert!(
        outcome(dead)["detail"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string())
    );
    assert!(good.channel_stats("split", "c").await.unwrap().paused);

    // The page shows the partial failure.
    let resp = client()
        .post(admin.url("/api/topics/split/c"))
        .header("HX-Request", "true")
        .header("X-Ferry-Action", "1")
        .body("action=unpause")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let html = resp.text().await.unwrap();
    assert!(html.contains("1 of 2 nodes OK"), "{html}");
    assert!(html.contains("alert error"), "{html}");
    admin.stop().await;
    good.stop().await;
}

/// Issue #19: a browser sends a `text/plain` or form POST to any site without a preflight;
/// such a request, or one from a foreign `Origin`, must not act.
#[tokio::test]
async fn cross_site_requests_are_refused_and_change_nothing() {
    let b = start_broker(None).await;
    b.create("csrf", Some("c")).await;
    let addr = b.http.to_string();
    let admin = start_admin(|c| c.broker_http_addresses.push(addr)).await;
    let own_origin = format!("http://{}", admin.http);
    let post = |path: &str, content_type: &str, body: &str, headers: &[(&str, &str)]| {
        let mut req = client()
            .post(admin.url(path))
            .header("Content-Type", content_type)
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let paused = || async { b.channel_stats("csrf", "c").await.unwrap().paused };

    // What a cross-site <form> or fetch(..., {mode: "no-cors"}) can send: refused.
    let pause_json = r#"{"action":"pause"}"#;
    let (status, body) = post("/api/topics/csrf/c", "text/plain", pause_json, &[]).await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("JSON_OR_X_FERRY_ACTION_REQUIRED"), "{body}");
    let form = "application/x-www-form-urlencoded";
    let (status, _) = post("/api/topics/csrf/c", form, "action=pause", &[]).await;
    assert_eq!(status, 415);
    let multipart = "multipart/form-data; boundary=x";
    let (status, _) = post("/api/topics/csrf/c", multipart, "--x--", &[]).await;
    assert_eq!(status, 415);
    // The #17 actions and create are guarded the same way.
    let (status, _) = post(
        "/api/topics/csrf/c",
        form,
        "action=config&max_attempts=3",
        &[],
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = post("/api/topics/csrf/c", form, "action=rewind&to=earliest", &[]).await;
    assert_eq!(status, 415);
    let (status, _) = post("/api/topics", form, "topic=planted", &[]).await;
    assert_eq!(status, 415);

    // A foreign Origin is refused even with JSON or the header, and for DELETE.
    let evil = ("Origin", "http://evil.example");
    let json_ct = "application/json";
    let (status, body) = post("/api/topics/csrf/c", json_ct, pause_json, &[evil]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("FOREIGN_ORIGIN"), "{body}");
    let marked = [evil, ("X-Ferry-Action", "1")];
    let (status, _) = post("/api/topics/csrf/c", form, "action=pause", &marked).await;
    assert_eq!(status, 403);
    let (status, html) = post(
        "/api/topics/csrf/c",
        form,
        "action=pause",
        &[evil, ("X-Ferry-Action", "1"), ("HX-Request", "true")],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        html.contains("another site"),
        "htmx gets an explanation: {html}"
    );
    let (status, _) = admin
        .send(reqwest::Method::DELETE, "/api/topics/csrf", None, &[evil])
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .send(
            reqwest::Method::DELETE,
            "/api/topics/csrf",
            None,
            &[("Origin", "null")],
        )
        .await;
    assert_eq!(status, 403);

    // Nothing changed on the broker.
    let ch = b.channel_stats("csrf", "c").await.unwrap();
    assert!(!ch.paused, "{ch:?}");
    assert_eq!(ch.max_attempts, 0, "{ch:?}");
    assert!(b.topic_stats("csrf").await.is_some(), "not deleted");
    assert!(b.topic_stats("planted").await.is_none(), "not created");

    // The proper requests work: the page's (form + header + own Origin), and JSON.
    let page = [
        ("X-Ferry-Action", "1"),
        ("HX-Request", "true"),
        ("Origin", own_origin.as_str()),
    ];
    let (status, html) = post("/api/topics/csrf/c", form, "action=pause", &page).await;
    assert_eq!(status, 200, "{html}");
    assert!(paused().await);
    let (status, body) = post(
        "/api/topics/csrf/c",
        json_ct,
        r#"{"action":"unpause"}"#,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!paused().await);
    // Reading is not affected.
    let (status, _) = admin.get("/api/topics/csrf").await;
    assert_eq!(status, 200);
    admin.stop().await;
    b.stop().await;
}

/// Issue #19: the topic page's depth card and chart show the same number (the channels'
/// total), the topic's own backlog is shown apart, nsqd's "memory + disk" is gone; the
/// channel page shows requeued and timed out, and charts redeliveries.
#[tokio::test]
async fn topic_and_channel_pages_say_what_their_numbers_mean() {
    let b = start_broker(None).await;
    b.create("shown", Some("c")).await;
    b.create("shown", Some("d")).await;
    b.publish("shown", 15).await;
    // A topic with no channel keeps its messages for the first one.
    b.create("waiting", None).await;
    b.publish("waiting", 7).await;
    let addr = b.http.to_string();
    let admin = start_admin(|c| c.broker_http_addresses.push(addr)).await;

    let t = admin.get_json("/api/topics/shown").await;
    assert_eq!(t["total"]["channel_depth"], 30, "{t}");
    assert_eq!(t["total"]["depth"], 0, "{t}");
    assert_eq!(t["brokers"][0]["channel_depth"], 30, "{t}");
    assert!(t["total"].get("memory_depth").is_none(), "{t}");
    // What Ferry has instead: the disk its log takes (from the broker's /metrics).
    let disk = t["total"]["disk_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{t}"));
    assert!(disk > 0, "{t}");
    assert_eq!(t["brokers"][0]["disk_bytes"], disk, "{t}");
    // The chart plots the same number as the card.
    eventually("the depth chart shows the channels' total", || async {
        let h = admin.get_json("/api/history/shown").await;
        (h["depth"].as_array()?.last()? == 30).then_some(())
    })
    .await;
    let (_, html) = admin.get("/topics/shown").await;
    assert_html(
        &html,
        &[
            "Channel depth (total)",
            r#"<span class="v" data-field="channel_depth">30</span>"#,
            "Topic backlog",
            "kept for a first channel",
            "Disk used",
            r#"data-field="disk_bytes">"#,
        ],
        &["Memory + Disk", "0 + 0"],
    );

    let t = admin.get_json("/api/topics/waiting").await;
    assert_eq!(t["total"]["depth"], 7, "{t}");
    assert_eq!(t["total"]["channel_depth"], 0, "{t}");
    let (_, html) = admin.get("/topics/waiting").await;
    assert!(
        html.contains(r#"<span class="v" data-field="depth">7</span>"#),
        "{html}"
    );
    let (_, html) = admin.get("/topics").await;
    assert!(html.contains("Topic backlog"), "{html}");

    // A consumer that keeps requeueing: the channel is stuck redelivering.
    let mut consumer = Consumer::subscribe(b.tcp, "shown", "c").await;
    consumer.ready(1).await;
    for _ in 0..5 {
        let m = consumer.message().await;
        consumer.requeue(m.id).await;
    }
    let ch = eventually("requeues counted", || async {
        let ch = admin.get_json("/api/topics/shown/c").await;
        (ch["total"]["requeued"].as_u64()? >= 4).then_some(ch)
    })
    .await;
    assert_eq!(ch["total"]["timed_out"], 0, "{ch}");
    let (_, html) = admin.get("/topics/shown/c").await;
    assert_html(
        &html,
        &[
            r#"<span class="k">Requeued</span>"#,
            r#"<span class="k">Timed out</span>"#,
            r#"data-field="timed_out">0</span>"#,
            "redeliveries (requeued, timed out)",
        ],
        &["Memory + Disk"],
    );
    // Keep requeueing until a sample interval sees it as a rate.
    let end = tokio::time::Instant::now() + DEADLINE;
    let h = loop {
        let m = consumer.message().await;
        consumer.requeue(m.id).await;
        let h = admin.get_json("/api/history/shown/c").await;
        let rates = h["requeue_rate"].as_array().unwrap();
        if rates.iter().any(|r| r.as_f64().is_some_and(|r| r > 0.0)) {
            break h;
        }
        assert!(tokio::time::Instant::now() < end, "no requeue rate: {h}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        h["timeout_rate"].as_array().unwrap().len(),
        h["t"].as_array().unwrap().len()
    );
    admin.stop().await;
    b.stop().await;
}

/// Asserts that `html` contains every one of `has` and none of `lacks`.
fn assert_html(html: &str, has: &[&str], lacks: &[&str]) {
    for needle in has {
        assert!(html.contains(needle), "no {needle:?} in {html}");
    }
    for needle in lacks {
        assert!(!html.contains(needle), "{needle:?} in {html}");
    }
}
