//! Alerts (#18) end to end: real brokers and lookupd in this process, the dashboard sampling
//! every 200ms, and a webhook receiver on 127.0.0.1:0.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

#[tokio::test]
async fn rising_depth_fires_and_resolves_with_webhooks() {
    let broker = start_broker(None).await;
    broker.create("rising", Some("slow")).await;
    let hook = WebhookReceiver::start(0).await;
    let (b, url) = (broker.http.to_string(), hook.url.clone());
    let admin = start_admin(|c| {
        c.broker_http_addresses.push(b);
        c.sample_interval = Duration::from_millis(200);
        c.alert_depth_rising_samples = 5;
        c.alert_webhook_urls.push(url);
    })
    .await;
    let publisher = Publisher::start(broker.http, "rising", Duration::from_millis(100));

    // Firing: on /api/alerts, /alerts, the topics list, the topic's row, and the webhook.
    let alert = active_alert(&admin, "depth_rising").await;
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["topic"], "rising");
    assert_eq!(alert["channel"], "slow");
    assert_eq!(alert["broker"], Value::Null);
    assert!(alert["value"].as_u64().unwrap() >= 5, "{alert}");
    assert_eq!(alert["link"], "/topics/rising/slow");
    let (status, page) = admin.get("/alerts").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-rule="depth_rising""#), "{page}");
    assert!(page.contains(r#"href="/topics/rising/slow""#), "{page}");
    assert!(page.contains(r#"id="alerts-count""#), "nav badge: {page}");
    let topics = admin.get_json("/api/topics").await;
    assert_eq!(topics["topics"][0]["alerts"], 1, "{topics}");
    let (_, topic_page) = admin.get("/topics/rising").await;
    assert!(
        topic_page.contains(r#"data-field="alerts""#),
        "row badge: {topic_page}"
    );
    let fired = hook.notification("depth_rising", "firing").await;
    let text = |n: &Value| n["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text(&fired).starts_with("[FIRING] depth_rising rising/slow: "),
        "{fired}"
    );
    assert_eq!(fired["topic"], "rising");
    assert_eq!(fired["channel"], "slow");
    assert_eq!(fired["broker"], Value::Null);
    assert!(fired["value"].is_u64(), "{fired}");
    assert_eq!(fired["since"], alert["since"]);
    assert!(fired["since"].as_str().unwrap().ends_with('Z'), "{fired}");

    // Drained: the depth falls, the alert resolves.
    drop(publisher);
    broker.empty_channel("rising", "slow").await;
    let resolved = hook.notification("depth_rising", "resolved").await;
    assert!(text(&resolved).starts_with("[RESOLVED] "), "{resolved}");
    assert_eq!(resolved["since"], fired["since"]);
    assert!(resolved["resolved"].is_string(), "{resolved}");
    let v = admin.get_json("/api/alerts").await;
    assert!(
        !v["active"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "depth_rising"),
        "{v}"
    );
    assert_eq!(v["resolved"][0]["rule"], "depth_rising", "{v}");
    let (_, page) = admin.get("/alerts").await;
    assert!(page.contains(r#"id="resolved-table""#), "{page}");

    admin.stop().await;
    broker.stop().await;
}

#[tokio::test]
async fn stopped_broker_is_down_and_missing_and_the_webhook_is_retried() {
    let lookupd = start_lookupd().await;
    let broker = start_broker(Some(lookupd.tcp)).await;
    broker.create("t", Some("c")).await;
    // The receiver fails the first two POSTs: the notification arrives on the third try.
    let hook = WebhookReceiver::start(2).await;
    let (l, b, url) = (
        lookupd.http.to_string(),
        broker.http.to_string(),
        hook.url.clone(),
    );
    let admin = start_admin(|c| {
        c.lookupd_http_addresses.push(l);
        c.broker_http_addresses.push(b);
        c.sample_interval = Duration::from_millis(200);
        c.alert_webhook_urls.push(url);
    })
    .await;
    let addr = broker.http.to_string();
    eventually("lookupd lists the broker", || async {
        let v = lookupd.get("/nodes").await;
        (v["producers"].as_array()?.len() == 1).then_some(())
    })
    .await;
    eventually("the broker is seen healthy", || async {
        let v = admin.get_json("/api/nodes").await;
        (v["nodes"][0]["ok"] == true).then_some(())
    })
    .await;
    assert_eq!(
        admin.get_json("/api/alerts").await["active"],
        serde_json::json!([])
    );

    broker.stop().await;
    let down = active_alert(&admin, "broker_down").await;
    assert_eq!(down["broker"], addr.as_str());
    assert!(
        down["value"].as_str().unwrap().starts_with("unreachable: "),
        "{down}"
    );
    assert_eq!(down["link"], "/nodes");
    let missing = active_alert(&admin, "broker_missing").await;
    assert_eq!(missing["broker"], addr.as_str());

    let fired = hook.notification("broker_down", "firing").await;
    assert_eq!(fired["broker"], addr.as_str());
    assert!(
        hook.requests() >= 3,
        "two failures, then the retry that worked"
    );
    hook.notification("broker_missing", "firing").await;

    admin.stop().await;
    lookupd.stop().await;
}

#[tokio::test]
async fn no_consumer_expired_and_dead_letter_rules_on_a_real_broker() {
    let broker = start_broker(None).await;
    for channel in ["old", "retry"] {
        broker.create("jobs", Some(channel)).await;
    }
    broker.create("jobs.dead", Some("dlq")).await;
    broker.publish("jobs", 3).await;
    let b = broker.http.to_string();
    let admin = start_admin(|c| {
        c.broker_http_addresses.push(b);
        c.sample_interval = Duration::from_millis(200);
        c.alert_depth_rising_samples = 0;
        c.alert_no_consumer_after = Duration::from_millis(400);
    })
    .await;

    // Messages waiting and nobody subscribed.
    for channel in ["old", "retry"] {
        let a = listed_alert(&admin, "active", "no_consumer", Some(("jobs", channel))).await;
        assert_eq!(a["value"], 3, "{a}");
    }

    // Expiry: every message is older than 1ms when a consumer asks.
    let post = |path: String| async move {
        let resp = client().post(path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    };
    let url = |q: &str| format!("http://{}/channel/config?topic=jobs&{q}", broker.http);
    post(url("channel=old&max_age=1ms")).await;
    let mut old = Consumer::subscribe(broker.tcp, "jobs", "old").await;
    old.ready(10).await;
    let expired = listed_alert(&admin, "active", "expired", Some(("jobs", "old"))).await;
    assert_eq!(expired["value"], 3, "{expired}");
    listed_alert(&admin, "resolved", "no_consumer", Some(("jobs", "old"))).await;

    // Dead letters: one attempt allowed, and the consumer requeues.
    post(url(
        "channel=retry&max_attempts=1&dead_letter_topic=jobs.dead",
    ))
    .await;
    let mut retry = Consumer::subscribe(broker.tcp, "jobs", "retry").await;
    retry.ready(1).await;
    let m = retry.message().await;
    retry.requeue(m.id).await;
    let dead = listed_alert(&admin, "active", "dead_letters", Some(("jobs", "retry"))).await;
    assert!(dead["value"].as_u64().unwrap() >= 1, "{dead}");
    assert!(
        dead["summary"]
            .as_str()
            .unwrap()
            .contains("dead-lettered on jobs/retry"),
        "{dead}"
    );
    listed_alert(&admin, "resolved", "no_consumer", Some(("jobs", "retry"))).await;
    let t = admin.get_json("/api/topics/jobs").await;
    let retry_row = t["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retry")
        .unwrap();
    assert_eq!(retry_row["alerts"], 1, "{t}");

    drop((old, retry));
    admin.stop().await;
    broker.stop().await;
}

#[tokio::test]
async fn unhealthy_broker_is_down() {
    // A broker that answers, but whose health (the same as its /ping) is not OK.
    let stats = r#"{"version":"ferry-test","health":"NOK - no space left on device","topics":[]}"#;
    let node = FakeNode::start(200, stats.into(), "{}".into()).await;
    let addr = node.addr.to_string();
    let a = addr.clone();
    let admin = start_admin(|c| {
        c.broker_http_addresses.push(a);
        c.sample_interval = Duration::from_millis(200);
    })
    .await;
    let down = active_alert(&admin, "broker_down").await;
    assert_eq!(down["broker"], addr.as_str());
    assert_eq!(down["value"], "unhealthy: NOK - no space left on device");
    let (_, page) = admin.get("/alerts").await;
    assert!(page.contains("no space left on device"), "{page}");
    admin.stop().await;
}
