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

mod replica_lost {
    use super::*;
    use crate::replication::tests::{copy, member, snapshot};

    fn config(after: u64) -> Config {
        let mut c = Config::for_tests();
        c.alert_replica_lost_after = Duration::from_secs(after);
        c
    }

    /// Leader b:1 (node 2) reporting follower c:1 (node 3) at `matched`/`lag` (None: no
    /// matched index), and follower a:1 (node 1) in sync; a:1 and c:1 answer when `answer`.
    fn group(secs: u64, c_matched: Option<u64>, c_lag: u64, answer: bool) -> Snapshot {
        let mut c = member(3, "c:1", "voter", 0, c_lag);
        c.matched = c_matched;
        c.lag = c_matched.map(|_| c_lag);
        let members = vec![
            member(1, "a:1", "voter", 10, 0),
            member(2, "b:1", "leader", 10, 0),
            c,
        ];
        let mut brokers = vec![
            copy("a:1", 1, "follower", Some(2), 5, members.clone()),
            copy("b:1", 2, "leader", Some(2), 5, members),
            copy("c:1", 3, "follower", Some(2), 5, vec![]),
        ];
        if !answer {
            brokers[2].stats = Err("connection refused".into());
        }
        snapshot(secs, brokers)
    }

    /// The active `replica_lost` alerts.
    fn active(alerts: &Alerts) -> Vec<Alert> {
        let v = alerts.view();
        v.active
            .into_iter()
            .filter(|a| a.rule == Rule::ReplicaLost)
            .collect()
    }

    fn replica_alerts(alerts: &Alerts) -> Vec<(Option<String>, AlertState)> {
        let v = alerts.view();
        v.active
            .iter()
            .chain(&v.resolved)
            .filter(|a| a.rule == Rule::ReplicaLost)
            .map(|a| (a.broker.clone(), a.state))
            .collect()
    }

    #[test]
    fn a_lag_that_does_not_move_fires_and_resolves_when_caught_up() {
        let alerts = Alerts::new(&config(10), Webhooks::default());
        alerts.observe(&group(0, Some(7), 3, true));
        alerts.observe(&group(5, Some(7), 3, true));
        assert_eq!(alerts.active_count(), 0, "stuck for 5s only");
        alerts.observe(&group(10, Some(7), 3, true));
        let a = &active(&alerts)[0];
        assert_eq!(a.rule, Rule::ReplicaLost);
        assert_eq!(
            (
                a.topic.as_deref(),
                a.channel.as_deref(),
                a.broker.as_deref()
            ),
            (Some("t"), None, Some("c:1"))
        );
        assert_eq!((a.value.clone(), a.link.as_str()), (3.into(), "/topics/t"));
        assert_eq!(a.subject(), "t@c:1");
        assert!(
            a.text()
                .starts_with("[FIRING] replica_lost t@c:1: replica c:1 of t lost"),
            "{}",
            a.text()
        );
        assert_eq!(alerts.counts().topic("t"), 1, "the topics list's badge");
        alerts.observe(&group(16, Some(10), 0, true));
        assert_eq!(
            replica_alerts(&alerts),
            [(Some("c:1".to_owned()), AlertState::Resolved)]
        );
    }

    #[test]
    fn a_follower_catching_up_is_not_lost() {
        let alerts = Alerts::new(&config(10), Webhooks::default());
        for i in 0..10 {
            // Behind at every sample, but moving.
            alerts.observe(&group(i * 5, Some(100 + i), 50, true));
        }
        assert_eq!(alerts.active_count(), 0);
    }

    #[test]
    fn no_matched_index_or_a_silent_broker_is_lost() {
        let alerts = Alerts::new(&config(10), Webhooks::default());
        alerts.observe(&group(0, None, 0, true));
        alerts.observe(&group(10, None, 0, true));
        assert_eq!(active(&alerts)[0].value, serde_json::Value::Null);
        alerts.observe(&group(11, Some(10), 0, true));
        assert!(active(&alerts).is_empty());
        // The leader still reports it in sync (nothing was written since), but its broker
        // does not answer.
        alerts.observe(&group(20, Some(10), 0, false));
        alerts.observe(&group(30, Some(10), 0, false));
        let a = &active(&alerts)[0];
        assert!(a.summary.contains("does not answer"), "{}", a.summary);
        alerts.observe(&group(31, Some(10), 0, true));
        assert!(active(&alerts).is_empty());
    }

    #[test]
    fn a_group_without_leader_fires_for_the_topic() {
        let alerts = Alerts::new(&config(10), Webhooks::default());
        let leaderless = |secs| {
            snapshot(
                secs,
                vec![
                    copy("a:1", 1, "candidate", None, 5, vec![]),
                    copy("c:1", 3, "follower", None, 5, vec![]),
                ],
            )
        };
        alerts.observe(&leaderless(0));
        alerts.observe(&leaderless(9));
        assert!(active(&alerts).is_empty());
        alerts.observe(&leaderless(10));
        let a = &active(&alerts)[0];
        assert_eq!((a.topic.as_deref(), a.broker.as_deref()), (Some("t"), None));
        assert_eq!(a.subject(), "t");
        assert!(a.summary.contains("no leader"), "{}", a.summary);
        alerts.observe(&group(11, Some(10), 0, true));
        assert_eq!(replica_alerts(&alerts), [(None, AlertState::Resolved)]);
    }

    #[test]
    fn zero_disables_and_a_gone_topic_is_forgotten() {
        let off = Alerts::new(&config(0), Webhooks::default());
        for i in 0..5 {
            off.observe(&group(i * 100, None, 0, true));
        }
        assert!(active(&off).is_empty());
        let alerts = Alerts::new(&config(10), Webhooks::default());
        alerts.observe(&group(0, None, 0, true));
        alerts.observe(&group(10, None, 0, true));
        assert_eq!(active(&alerts).len(), 1);
        alerts.observe(&snapshot(11, vec![]));
        assert!(active(&alerts).is_empty(), "resolved with the topic gone");
    }

    #[test]
    fn channel_rules_count_the_leaders_copy_once() {
        let mut c = config(0);
        c.alert_no_consumer_after = Duration::from_secs(10);
        let alerts = Alerts::new(&c, Webhooks::default());
        alerts.observe(&group(0, Some(10), 0, true));
        alerts.observe(&group(10, Some(10), 0, true));
        let a = &alerts.view().active[0];
        assert_eq!(a.rule, Rule::NoConsumer);
        assert_eq!(
            a.value,
            serde_json::json!(5),
            "the leader's depth, not three replicas' sum"
        );
    }
}
