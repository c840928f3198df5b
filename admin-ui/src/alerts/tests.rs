//! The rules and the alert lifecycle on made-up snapshots.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::cluster::{BrokerSnap, LookupdData, LookupdSnap};
use crate::nsq::{ChannelStats, Producer, Stats, TopicStats};

fn config() -> Config {
    let mut c = Config::for_tests();
    c.alert_depth_rising_samples = 3;
    c.alert_no_consumer_after = Duration::from_secs(10);
    c.alert_retry_rate = 5.0;
    c.alert_dead_letters = Duration::from_secs(10);
    c.alert_broker_down_samples = 2;
    c.alert_broker_missing_samples = 2;
    c.alert_max_resolved = 2;
    c
}

fn channel(depth: u64, clients: u64, retries: u64, dead: u64) -> ChannelStats {
    ChannelStats {
        channel_name: "c".into(),
        depth,
        client_count: clients,
        requeue_count: retries,
        dead_lettered_count: dead,
        ..ChannelStats::default()
    }
}

fn snap(secs: u64, ch: Option<ChannelStats>) -> Snapshot {
    let stats = match ch {
        Some(ch) => Ok(Stats {
            health: "OK".into(),
            topics: vec![TopicStats {
                topic_name: "t".into(),
                channels: vec![ch],
                ..TopicStats::default()
            }],
            ..Stats::default()
        }),
        None => Err("connection refused".into()),
    };
    Snapshot {
        taken: UNIX_EPOCH + Duration::from_secs(secs),
        lookupds: Vec::new(),
        brokers: vec![BrokerSnap {
            addr: "b:4151".into(),
            producer: None,
            info: None,
            stats,
            disk_bytes: Default::default(),
        }],
    }
}

fn rules(alerts: &Alerts) -> Vec<(&'static str, AlertState)> {
    let v = alerts.view();
    v.active
        .iter()
        .chain(&v.resolved)
        .map(|a| (a.rule.name(), a.state))
        .collect()
}

#[test]
fn depth_rising_fires_after_n_rises_and_resolves_when_it_falls() {
    let alerts = Alerts::new(&config(), Webhooks::default());
    for (i, depth) in [1, 2, 3, 4].into_iter().enumerate() {
        alerts.observe(&snap(i as u64, Some(channel(depth, 1, 0, 0))));
        assert_eq!(alerts.active_count(), usize::from(i == 3), "sample {i}");
    }
    let a = &alerts.view().active[0];
    assert_eq!((a.rule, a.value.clone()), (Rule::DepthRising, 4.into()));
    assert_eq!(a.link, "/topics/t/c");
    assert_eq!(alerts.counts().topic("t"), 1);
    assert_eq!(alerts.counts().channel("t", "c"), 1);
    // A flat sample keeps it; a fall resolves it.
    alerts.observe(&snap(4, Some(channel(4, 1, 0, 0))));
    assert_eq!(alerts.active_count(), 1);
    alerts.observe(&snap(5, Some(channel(2, 1, 0, 0))));
    assert_eq!(rules(&alerts), [("depth_rising", AlertState::Resolved)]);
    assert_eq!(alerts.view().resolved[0].resolved_ms, Some(5000));
}

#[test]
fn no_consumer_retry_rate_and_dead_letters() {
    let alerts = Alerts::new(&config(), Webhooks::default());
    alerts.observe(&snap(0, Some(channel(5, 0, 0, 0))));
    alerts.observe(&snap(5, Some(channel(5, 0, 0, 0))));
    assert_eq!(alerts.active_count(), 0, "not yet 10s without a consumer");
    // 60 requeues in 5s (12/s > 5/s) and a dead letter.
    alerts.observe(&snap(10, Some(channel(5, 0, 60, 1))));
    let mut active: Vec<_> = alerts.view().active.iter().map(|a| a.rule).collect();
    active.sort();
    assert_eq!(
        active,
        [Rule::NoConsumer, Rule::RetryRate, Rule::DeadLetters]
    );
    // A consumer arrives, retries stop: the dead-letter alert stays for its window.
    alerts.observe(&snap(15, Some(channel(5, 1, 60, 1))));
    let active: Vec<_> = alerts.view().active.iter().map(|a| a.rule).collect();
    assert_eq!(active, [Rule::DeadLetters]);
    alerts.observe(&snap(21, Some(channel(5, 1, 60, 1))));
    assert_eq!(alerts.active_count(), 0);
    assert_eq!(alerts.view().resolved.len(), 2, "bounded");
}

#[test]
fn broker_down_after_n_failed_samples_and_missing_from_lookupd() {
    let alerts = Alerts::new(&config(), Webhooks::default());
    alerts.observe(&snap(0, None));
    assert_eq!(alerts.active_count(), 0);
    alerts.observe(&snap(1, None));
    let a = &alerts.view().active[0];
    assert_eq!(a.rule, Rule::BrokerDown);
    assert_eq!(a.broker.as_deref(), Some("b:4151"));
    assert!(
        a.text().starts_with("[FIRING] broker_down b:4151: "),
        "{}",
        a.text()
    );
    alerts.observe(&snap(2, Some(channel(0, 0, 0, 0))));
    assert_eq!(alerts.active_count(), 0);

    // Listed by lookupd, then not.
    let with_lookupd = |secs, listed: bool| {
        let mut s = snap(secs, Some(channel(0, 0, 0, 0)));
        let producers = if listed {
            vec![Producer {
                broadcast_address: "b".into(),
                http_port: 4151,
                ..Producer::default()
            }]
        } else {
            Vec::new()
        };
        s.lookupds.push(LookupdSnap {
            addr: "l:4161".into(),
            result: Ok(LookupdData {
                producers,
                topics: Vec::new(),
            }),
        });
        s
    };
    alerts.observe(&with_lookupd(3, true));
    alerts.observe(&with_lookupd(4, false));
    assert_eq!(alerts.active_count(), 0);
    alerts.observe(&with_lookupd(5, false));
    assert_eq!(alerts.view().active[0].rule, Rule::BrokerMissing);
    alerts.observe(&with_lookupd(6, true));
    assert_eq!(alerts.active_count(), 0);
}
