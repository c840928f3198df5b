//! Ferry #17 through the dashboard, against real brokers (and a lookupd) in this process:
//! topic retention and channel settings applied on every broker, rewinding a consumed channel,
//! peeking (bodies escaped), the admin guard on all of them, and the expired and
//! dead-lettered counts.

use std::time::{Duration, SystemTime};

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Posts a JSON action and expects every node to have done it.
async fn act(admin: &TestAdmin, path: &str, body: Value) -> Value {
    let (status, text) = admin.send(Method::POST, path, Some(body), &[]).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn outcomes(report: &Value) -> &Vec<Value> {
    report["outcomes"].as_array().unwrap()
}

const HTMX: (&str, &str) = ("HX-Request", "true");
/// What the dashboard's htmx sends with every request (`hx-headers`).
const ACTION: (&str, &str) = ("X-Ferry-Action", "1");

/// Posts a form as the page does (htmx) and expects every node to have done it: the HTML.
async fn submit(admin: &TestAdmin, path: &str, form: &[(&str, &str)]) -> String {
    let (status, html) = admin.post_form(path, form, &[HTMX, ACTION]).await;
    assert_eq!(status, 200, "{html}");
    html
}

#[tokio::test]
async fn settings_forms_change_every_broker() {
    let c = cluster("conf", 1).await;

    // Topic retention, as JSON.
    let body = json!({"action": "config", "retention": "24h", "retention_bytes": "10GB"});
    let report = act(&c.admin, "/api/topics/conf", body).await;
    assert_eq!(outcomes(&report).len(), 2, "{report}");
    for o in outcomes(&report) {
        assert_eq!(o["detail"], "now retention time 24h, size 10GB", "{o}");
    }
    for b in [&c.b1, &c.b2] {
        let cfg = b.get("/topic/config?topic=conf").await;
        assert_eq!(cfg["retention_ms"], 86_400_000, "{cfg}");
        assert_eq!(cfg["retention_bytes"], 10_000_000_000u64, "{cfg}");
    }
    let t = c.admin.get_json("/api/topics/conf").await;
    assert_eq!(
        t["total"]["retention"],
        json!([{"ms": 86_400_000, "bytes": 10_000_000_000u64}])
    );
    assert!(
        t["total"]["oldest_timestamp_ms"].as_u64().unwrap() > 0,
        "{t}"
    );
    let (_, html) = c.admin.get("/topics/conf").await;
    assert!(
        html.contains(r#"data-field="retention_time">24h<"#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-field="retention_size">10GB<"#),
        "{html}"
    );
    assert!(html.contains(r#"id="retention-form""#), "{html}");

    // Channel settings, as the page's form sends them (htmx, form-encoded).
    let form = [
        ("action", "config"),
        ("max_age", "10m"),
        ("max_attempts", "5"),
        ("dead_letter_topic", "conf.dead"),
    ];
    let html = submit(&c.admin, "/api/topics/conf/ch1", &form).await;
    assert!(
        html.contains("now max age 10m, max attempts 5, dead letters to conf.dead"),
        "{html}"
    );
    for b in [&c.b1, &c.b2] {
        let cfg = b.get("/channel/config?topic=conf&channel=ch1").await;
        assert_eq!(cfg["max_age_ms"], 600_000, "{cfg}");
        assert_eq!(cfg["max_attempts"], 5, "{cfg}");
        assert_eq!(cfg["dead_letter_topic"], "conf.dead", "{cfg}");
        let other = b.get("/channel/config?topic=conf&channel=ch2").await;
        assert_eq!(other["max_attempts"], 0, "only ch1 changed: {other}");
    }
    // A blank field keeps its setting; JSON may give a number.
    let body = json!({"action": "config", "max_age": "", "max_attempts": 3});
    act(&c.admin, "/api/topics/conf/ch1", body).await;
    let cfg = c.b2.get("/channel/config?topic=conf&channel=ch1").await;
    assert_eq!(
        (&cfg["max_age_ms"], &cfg["max_attempts"]),
        (&json!(600_000), &json!(3))
    );
    let ch = c.admin.get_json("/api/topics/conf/ch1").await;
    let settings = ch["total"]["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 1, "both brokers agree: {ch}");
    assert_eq!(settings[0]["max_attempts"], 3, "{ch}");
    let (_, html) = c.admin.get("/topics/conf/ch1").await;
    assert!(html.contains(r#"data-field="max_age">10m<"#), "{html}");
    assert!(
        html.contains(r#"<a href="/topics/conf.dead">conf.dead</a>"#),
        "{html}"
    );

    // A broker refuses a bad value and says why; admin-ui refuses an empty change.
    let body = json!({"action": "config", "max_age": "soon"});
    let (status, text) = c
        .admin
        .send(Method::POST, "/api/topics/conf/ch1", Some(body), &[])
        .await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("INVALID_MAX_AGE"), "{text}");
    let body = json!({"action": "config", "retention": " "});
    let (status, text) = c
        .admin
        .send(Method::POST, "/api/topics/conf", Some(body), &[])
        .await;
    assert_eq!(
        (status, text.as_str()),
        (400, r#"{"message":"MISSING_ARG_SETTING"}"#)
    );
    let body = json!({"action": "rewind", "to": "earliest"});
    let (status, _) = c
        .admin
        .send(Method::POST, "/api/topics/conf", Some(body), &[])
        .await;
    assert_eq!(status, 400, "a topic is not rewound");
    let cfg = c.b1.get("/channel/config?topic=conf&channel=ch1").await;
    assert_eq!(cfg["max_age_ms"], 600_000, "{cfg}");
    c.stop().await;
}

#[tokio::test]
async fn rewind_redelivers_a_consumed_channel() {
    let c = cluster("replay", 10).await;
    for b in [&c.b1, &c.b2] {
        let mut consumer = Consumer::subscribe(b.tcp, "replay", "ch1").await;
        consumer.consume(10).await;
        eventually("the channel consumed", || async {
            let ch = b.channel_stats("replay", "ch1").await?;
            (ch.depth == 0 && ch.in_flight_count == 0).then_some(())
        })
        .await;
    }

    // To a time (what the page's time picker sends): an hour ago, before every message.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let to = humantime::format_rfc3339_seconds(hour_ago).to_string();
    let report = act(
        &c.admin,
        "/api/topics/replay/ch1",
        json!({"action": "rewind", "to": to}),
    )
    .await;
    assert_eq!(outcomes(&report).len(), 2, "{report}");
    assert_eq!(report["params"], json!({ "to": to }));
    for o in outcomes(&report) {
        assert_eq!(o["answer"]["owed"], 10, "{o}");
        assert!(o["answer"]["first_timestamp_ms"].as_u64().is_some(), "{o}");
        assert!(o["detail"].as_str().unwrap().ends_with(": 10 owed"), "{o}");
    }
    for b in [&c.b1, &c.b2] {
        let ch = b.channel_stats("replay", "ch1").await.unwrap();
        assert_eq!(ch.depth, 10, "redelivered: {ch:?}");
        let ch2 = b.channel_stats("replay", "ch2").await.unwrap();
        assert_eq!(ch2.depth, 10, "ch2 untouched: {ch2:?}");
    }
    let ch = c.admin.get_json("/api/topics/replay/ch1").await;
    assert_eq!(ch["total"]["depth"], 20, "{ch}");

    // Consume again, then the quick choices as the page's buttons send them.
    let mut consumer = Consumer::subscribe(c.b1.tcp, "replay", "ch1").await;
    consumer.consume(10).await;
    drop(consumer);
    eventually("b1's ch1 consumed again", || async {
        let ch = c.b1.channel_stats("replay", "ch1").await?;
        (ch.depth == 0 && ch.in_flight_count == 0).then_some(())
    })
    .await;
    let form = [("action", "rewind"), ("to", "earliest")];
    let html = submit(&c.admin, "/api/topics/replay/ch1", &form).await;
    assert!(
        html.contains("rewind channel replay/ch1 (to=earliest): 2 of 2 nodes OK"),
        "{html}"
    );
    assert!(html.contains(": 10 owed"), "{html}");
    let ch = c.b1.channel_stats("replay", "ch1").await.unwrap();
    assert_eq!(ch.depth, 10, "{ch:?}");
    let form = [("action", "rewind"), ("to", "-1h")];
    let html = submit(&c.admin, "/api/topics/replay/ch1", &form).await;
    assert!(html.contains("(to=-1h): 2 of 2 nodes OK"), "{html}");

    // A bad time is the brokers' to judge; a missing one admin-ui's.
    let body = json!({"action": "rewind", "to": "yesterday-ish"});
    let (status, text) = c
        .admin
        .send(Method::POST, "/api/topics/replay/ch1", Some(body), &[])
        .await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("INVALID_TO"), "{text}");
    let body = json!({"action": "rewind"});
    let (status, text) = c
        .admin
        .send(Method::POST, "/api/topics/replay/ch1", Some(body), &[])
        .await;
    assert_eq!(
        (status, text.as_str()),
        (400, r#"{"message":"MISSING_ARG_TO"}"#)
    );
    c.stop().await;
}

/// One broker given directly, with `topic`/`channel` created, and the dashboard.
async fn one_broker(topic: &str, channel: &str, admin_users: &[&str]) -> (TestBroker, TestAdmin) {
    let b = start_broker(None).await;
    b.create(topic, Some(channel)).await;
    let addr = b.http.to_string();
    let users: Vec<String> = admin_users.iter().map(|u| u.to_string()).collect();
    let admin = start_admin(|c| {
        c.broker_http_addresses.push(addr);
        c.admin_users = users;
    })
    .await;
    (b, admin)
}

#[tokio::test]
async fn peek_shows_the_next_messages_escaped() {
    let (b, admin) = one_broker("peeked", "c", &[]).await;
    b.publish_body("peeked", "<script>alert(1)</script>").await;
    b.publish("peeked", 3).await;

    let (status, html) = admin
        .send(Method::GET, "/api/peek/peeked/c?n=2", None, &[HTMX])
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(html.contains("message 0"), "{html}");
    assert!(!html.contains("message 1"), "n=2: {html}");
    assert!(html.contains(r#"data-state="ready""#), "{html}");

    let v = admin.get_json("/api/peek/peeked/c").await;
    let p = &v["brokers"][0]["peek"];
    let bodies: Vec<&str> = p["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            "<script>alert(1)</script>",
            "message 0",
            "message 1",
            "message 2"
        ]
    );
    assert_eq!(p["depth"], 4, "{p}");
    assert_eq!(v["brokers"][0]["node"], b.http.to_string());

    // Peeking changes nothing; an in-flight message shows with its deadline.
    let ch = b.channel_stats("peeked", "c").await.unwrap();
    assert_eq!(ch.depth, 4, "{ch:?}");
    let mut consumer = Consumer::subscribe(b.tcp, "peeked", "c").await;
    consumer.hold(1).await;
    let v = eventually("the held message in flight", || async {
        let v = admin.get_json("/api/peek/peeked/c").await;
        (v["brokers"][0]["peek"]["in_flight"].as_array()?.len() == 1).then_some(v)
    })
    .await;
    let held = &v["brokers"][0]["peek"]["in_flight"][0];
    assert_eq!(held["body"], "<script>alert(1)</script>", "{held}");
    assert_eq!(held["state"], "in_flight", "{held}");
    let (_, html) = admin
        .send(Method::GET, "/api/peek/peeked/c", None, &[HTMX])
        .await;
    assert!(html.contains("deadline in "), "{html}");

    // Bad n, unknown channel.
    for n in ["0", "101", "x"] {
        let (status, text) = admin.get(&format!("/api/peek/peeked/c?n={n}")).await;
        assert_eq!((status, text.as_str()), (400, r#"{"message":"INVALID_N"}"#));
    }
    let (status, _) = admin.get("/api/peek/peeked/nope").await;
    assert_eq!(status, 404);
    let (_, html) = admin.get("/topics/peeked/c").await;
    assert!(html.contains(r#"id="btn-peek""#), "{html}");
    drop(consumer);
    admin.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn peek_and_the_new_actions_need_an_admin_user() {
    let (b, admin) = one_broker("guarded", "c", &["alice"]).await;
    b.publish_body("guarded", "secret").await;
    let mallory = [("X-Forwarded-User", "mallory")];
    let alice = [("X-Forwarded-User", "alice")];

    let (status, text) = admin.get("/api/peek/guarded/c").await;
    assert_eq!((status, text.as_str()), (403, r#"{"message":"FORBIDDEN"}"#));
    let (status, html) = admin
        .send(
            Method::GET,
            "/api/peek/guarded/c",
            None,
            &[HTMX, mallory[0]],
        )
        .await;
    assert_eq!(status, 403);
    assert!(html.contains("restricted to admin users"), "{html}");
    assert!(!html.contains("secret"), "{html}");
    let refused = [
        (
            "/api/topics/guarded",
            json!({"action": "config", "retention": "1h"}),
        ),
        (
            "/api/topics/guarded/c",
            json!({"action": "config", "max_attempts": 2}),
        ),
        (
            "/api/topics/guarded/c",
            json!({"action": "rewind", "to": "earliest"}),
        ),
    ];
    for (path, body) in &refused {
        let (status, text) = admin
            .send(Method::POST, path, Some(body.clone()), &mallory)
            .await;
        assert_eq!(status, 403, "{path} {body}: {text}");
    }
    let cfg = b.get("/channel/config?topic=guarded&channel=c").await;
    assert_eq!(cfg["max_attempts"], 0, "{cfg}");
    let cfg = b.get("/topic/config?topic=guarded").await;
    assert_ne!(cfg["retention_ms"], 3_600_000, "{cfg}");

    // The pages tell a read-only user that peeking needs permission, and offer no forms.
    let (_, html) = admin.get("/topics/guarded/c").await;
    assert!(html.contains(r#"id="peek-denied""#), "{html}");
    assert!(html.contains("needs permission"), "{html}");
    for id in ["btn-peek", "settings-form", "rewind-form"] {
        assert!(!html.contains(id), "{id} shown to a read-only user");
    }
    let (_, html) = admin.get("/topics/guarded").await;
    assert!(!html.contains("retention-form"), "{html}");

    // An admin user may.
    let resp = client()
        .get(admin.url("/topics/guarded/c"))
        .header(alice[0].0, alice[0].1)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    for id in [
        "btn-peek",
        "settings-form",
        "rewind-form",
        "btn-rewind-earliest",
    ] {
        assert!(html.contains(id), "{id} missing for an admin: {html}");
    }
    let (status, text) = admin
        .send(Method::GET, "/api/peek/guarded/c", None, &alice)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("secret"), "{text}");
    let (path, body) = &refused[1];
    let (status, text) = admin
        .send(Method::POST, path, Some(body.clone()), &alice)
        .await;
    assert_eq!(status, 200, "{text}");
    let cfg = b.get("/channel/config?topic=guarded&channel=c").await;
    assert_eq!(cfg["max_attempts"], 2, "{cfg}");
    admin.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn expired_and_dead_lettered_counts_reach_the_channel_api() {
    let (b, admin) = one_broker("counts", "old", &[]).await;
    b.create("counts", Some("retry")).await;
    b.create("counts.dead", Some("dlq")).await;
    b.publish("counts", 3).await;

    // Every message is older than 1ms by the time a consumer asks: all expire.
    let body = json!({"action": "config", "max_age": "1ms"});
    act(&admin, "/api/topics/counts/old", body).await;
    let mut old = Consumer::subscribe(b.tcp, "counts", "old").await;
    old.ready(10).await;
    let expired = eventually("the old channel's messages expire", || async {
        let ch = b.channel_stats("counts", "old").await?;
        (ch.expired_count == 3).then_some(ch)
    })
    .await;
    assert_eq!(expired.depth, 0, "{expired:?}");

    // One attempt allowed: a requeued message is dead-lettered.
    let body = json!({"action": "config", "max_attempts": 1, "dead_letter_topic": "counts.dead"});
    act(&admin, "/api/topics/counts/retry", body).await;
    let mut retry = Consumer::subscribe(b.tcp, "counts", "retry").await;
    retry.ready(1).await;
    let m = retry.message().await;
    retry.requeue(m.id).await;
    eventually("a dead letter", || async {
        let ch = b.channel_stats("counts", "retry").await?;
        (ch.dead_lettered_count >= 1).then_some(())
    })
    .await;
    let dead = b.channel_stats("counts", "retry").await.unwrap();

    // The dashboard shows the brokers' counts: channel API, topic API, pages.
    let ch = eventually("the counts in the channel API", || async {
        let ch = admin.get_json("/api/topics/counts/old").await;
        (ch["total"]["expired"] == 3).then_some(ch)
    })
    .await;
    assert_eq!(ch["brokers"][0]["expired"], 3, "{ch}");
    assert_eq!(ch["total"]["dead_lettered"], 0, "{ch}");
    let ch = admin.get_json("/api/topics/counts/retry").await;
    assert_eq!(
        ch["total"]["dead_lettered"], dead.dead_lettered_count,
        "{ch}"
    );
    let t = admin.get_json("/api/topics/counts").await;
    let rows = t["channels"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(row("old")["expired"], 3, "{t}");
    assert_eq!(
        row("retry")["dead_lettered"],
        dead.dead_lettered_count,
        "{t}"
    );
    let (_, html) = admin.get("/topics/counts/old").await;
    assert!(html.contains(r#"data-field="expired">3<"#), "{html}");
    assert!(html.contains(r#"data-field="max_age">1ms<"#), "{html}");

    // The dead letter, peeked on the dead-letter topic, says where it came from.
    let (status, html) = admin
        .send(Method::GET, "/api/peek/counts.dead/dlq", None, &[HTMX])
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("dead letter from counts/retry after 1 attempts"),
        "{html}"
    );
    drop((old, retry));
    admin.stop().await;
    b.stop().await;
}
