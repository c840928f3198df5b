//! The built-in rules, as a pure state machine: [`Rules::evaluate`] takes one cluster
//! [`Snapshot`] (the sampler's, every `--sample-interval`) and returns every condition that
//! holds at that moment, as [`Finding`]s. It keeps only what the rules need between samples
//! (the previous counts, streaks, since-times), per channel and per broker; time comes from
//! the snapshot, so tests drive it with made-up snapshots.
//!
//! Channels are summed over the brokers that answered, like the pages. A channel or broker
//! that is no longer seen is forgotten (its findings stop, so its alerts resolve), except a
//! broker missing from lookupd, which is remembered for `forget_after` (`--history`).
//!
//! | rule | holds when |
//! |---|---|
//! | `depth_rising` | depth rose at N samples in a row; until it falls or stays flat N samples |
//! | `no_consumer` | depth > 0 and no client, continuously for the duration |
//! | `retry_rate` | (timeouts + requeues) per second between two samples above the rate |
//! | `dead_letters`, `expired` | the count went up within the window |
//! | `broker_down` | `/stats` failed or health not OK at N samples in a row |
//! | `broker_missing` | listed by no lookupd that answered, at N samples in a row |
//! | `replica_lost` | a replicated topic's member stuck (no `matched`, or a lag that does not move), or no leader, for the duration (`replica.rs`) |

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::replica::ReplicaRule;
use crate::cluster::Snapshot;
use crate::config::Config;

/// Which rule an alert comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A channel's depth keeps rising.
    DepthRising,
    /// Messages wait and nobody consumes them.
    NoConsumer,
    /// Timeouts plus requeues per second above the limit.
    RetryRate,
    /// Messages were dead-lettered.
    DeadLetters,
    /// Messages expired (max age).
    Expired,
    /// A broker is unreachable or unhealthy.
    BrokerDown,
    /// A broker is not registered with lookupd.
    BrokerMissing,
    /// A replicated topic's member stopped following its leader, or the group has no leader.
    ReplicaLost,
}

impl Rule {
    /// The name in JSON and notifications.
    pub fn name(self) -> &'static str {
        match self {
            Rule::DepthRising => "depth_rising",
            Rule::NoConsumer => "no_consumer",
            Rule::RetryRate => "retry_rate",
            Rule::DeadLetters => "dead_letters",
            Rule::Expired => "expired",
            Rule::BrokerDown => "broker_down",
            Rule::BrokerMissing => "broker_missing",
            Rule::ReplicaLost => "replica_lost",
        }
    }
}

/// What an alert is about: a channel, a broker, or a replicated topic's member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A channel (over every broker holding it).
    Channel {
        /// Topic name.
        topic: String,
        /// Channel name.
        channel: String,
    },
    /// A broker's HTTP address.
    Broker(String),
    /// A replicated topic: one of its members (by HTTP address), or the whole group (None:
    /// it has no leader).
    Replica {
        /// Topic name.
        topic: String,
        /// The member's HTTP address.
        address: Option<String>,
    },
}

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The measured value (a depth, a rate, a count, or a broker's error).
    pub value: Value,
    /// One line for people.
    pub summary: String,
}

/// The rules' thresholds; 0 disables a rule.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// `--alert-depth-rising-samples`.
    pub depth_rising_samples: u32,
    /// `--alert-no-consumer-after`.
    pub no_consumer_after: Duration,
    /// `--alert-retry-rate`.
    pub retry_rate: f64,
    /// `--alert-dead-letters`.
    pub dead_letters: Duration,
    /// `--alert-expired`.
    pub expired: Duration,
    /// `--alert-broker-down-samples`.
    pub broker_down_samples: u32,
    /// `--alert-broker-missing-samples`.
    pub broker_missing_samples: u32,
    /// `--alert-replica-lost-after`.
    pub replica_lost_after: Duration,
    /// How long a broker lookupd stopped listing is remembered (`--history`).
    pub forget_after: Duration,
    /// Brokers given with `--broker-http-address` (always expected in lookupd).
    pub configured_brokers: Vec<String>,
}

impl Thresholds {
    /// The thresholds `config` sets.
    pub fn new(config: &Config) -> Thresholds {
        Thresholds {
            depth_rising_samples: config.alert_depth_rising_samples,
            no_consumer_after: config.alert_no_consumer_after,
            retry_rate: config.alert_retry_rate,
            dead_letters: config.alert_dead_letters,
            expired: config.alert_expired,
            broker_down_samples: config.alert_broker_down_samples,
            broker_missing_samples: config.alert_broker_missing_samples,
            replica_lost_after: config.alert_replica_lost_after,
            forget_after: config.history,
            configured_brokers: config
                .broker_http_addresses
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
        }
    }
}

/// One channel summed over brokers, at one sample.
#[derive(Debug, Clone, Copy, Default)]
struct ChannelSample {
    depth: u64,
    clients: u64,
    retries: u64,
    dead_lettered: u64,
    expired: u64,
}

/// A count that went up recently (dead letters, expiry).
#[derive(Debug, Clone, Copy, Default)]
struct Recent {
    last_increase: Option<SystemTime>,
    /// Increase since the episode began.
    added: u64,
}

impl Recent {
    fn observe(&mut self, before: u64, now_count: u64, now: SystemTime, window: Duration) {
        if !self.holds(now, window) {
            self.added = 0;
        }
        if now_count > before {
            self.last_increase = Some(now);
            self.added += now_count - before;
        }
    }

    fn holds(&self, now: SystemTime, window: Duration) -> bool {
        !window.is_zero()
            && self
                .last_increase
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() < window)
    }
}

/// What the rules remember about a channel.
#[derive(Debug, Clone)]
struct ChannelTrack {
    last: ChannelSample,
    taken: SystemTime,
    rising: u32,
    flat: u32,
    depth_alert: bool,
    unconsumed_since: Option<SystemTime>,
    dead: Recent,
    expired: Recent,
}

/// What the rules remember about a broker.
#[derive(Debug, Clone, Default)]
struct BrokerTrack {
    down: u32,
    missing: u32,
    /// Last time a lookupd listed it (None: only configured).
    listed_at: Option<SystemTime>,
}

/// The rules' memory between samples.
#[derive(Debug)]
pub struct Rules {
    t: Thresholds,
    channels: HashMap<(String, String), ChannelTrack>,
    brokers: HashMap<String, BrokerTrack>,
    replicas: ReplicaRule,
}

impl Rules {
    /// Rules with thresholds `t` and nothing seen yet.
    pub fn new(t: Thresholds) -> Rules {
        Rules {
            t,
            channels: HashMap::new(),
            brokers: HashMap::new(),
            replicas: ReplicaRule::default(),
        }
    }

    /// Every condition that holds at `snapshot`.
    pub fn evaluate(&mut self, snapshot: &Snapshot) -> BTreeMap<(Rule, Subject), Finding> {
        let mut out = BTreeMap::new();
        self.channels_rules(snapshot, &mut out);
        self.broker_rules(snapshot, &mut out);
        self.replicas
            .evaluate(snapshot, self.t.replica_lost_after, &mut out);
        out
    }

    fn channels_rules(
        &mut self,
        snapshot: &Snapshot,
        out: &mut BTreeMap<(Rule, Subject), Finding>,
    ) {
        let now = snapshot.taken;
        let samples = channel_samples(snapshot);
        self.channels.retain(|key, _| samples.contains_key(key));
        for (key, s) in samples {
            let subject = Subject::Channel {
                topic: key.0.clone(),
                channel: key.1.clone(),
            };
            let name = format!("{}/{}", key.0, key.1);
            let Some(track) = self.channels.get_mut(&key) else {
                self.channels.insert(
                    key,
                    ChannelTrack {
                        last: s,
                        taken: now,
                        rising: 0,
                        flat: 0,
                        depth_alert: false,
                        unconsumed_since: (s.depth > 0 && s.clients == 0).then_some(now),
                        dead: Recent::default(),
                        expired: Recent::default(),
                    },
                );
                continue;
            };
            let t = &self.t;
            let mut found = |rule: Rule, value: Value, summary: String| {
                out.insert((rule, subject.clone()), Finding { value, summary });
            };
            // Depth rising.
            match s.depth.cmp(&track.last.depth) {
                std::cmp::Ordering::Greater => (track.rising, track.flat) = (track.rising + 1, 0),
                std::cmp::Ordering::Equal => (track.rising, track.flat) = (0, track.flat + 1),
                std::cmp::Ordering::Less => {
                    (track.rising, track.flat, track.depth_alert) = (0, 0, false)
                }
            }
            let n = t.depth_rising_samples;
            if n == 0 || s.depth == 0 || track.flat >= n {
                track.depth_alert = false;
            } else if track.rising >= n {
                track.depth_alert = true;
            }
            if track.depth_alert {
                found(
                    Rule::DepthRising,
                    s.depth.into(),
                    format!(
                        "depth of {name} keeps rising ({n} samples in a row), now {}",
                        s.depth
                    ),
                );
            }
            // No consumer.
            if s.depth > 0 && s.clients == 0 {
                let since = *track.unconsumed_since.get_or_insert(now);
                let waited = now.duration_since(since).unwrap_or_default();
                if !t.no_consumer_after.is_zero() && waited >= t.no_consumer_after {
                    found(
                        Rule::NoConsumer,
                        s.depth.into(),
                        format!(
                            "{name} has {} messages waiting and no consumer for {}",
                            s.depth,
                            humantime::format_duration(Duration::from_secs(waited.as_secs()))
                        ),
                    );
                }
            } else {
                track.unconsumed_since = None;
            }
            // Retry rate.
            let dt = now.duration_since(track.taken).unwrap_or_default();
            if t.retry_rate > 0.0 && !dt.is_zero() {
                let rate = s.retries.saturating_sub(track.last.retries) as f64 / dt.as_secs_f64();
                if rate > t.retry_rate {
                    let rate = (rate * 10.0).round() / 10.0;
                    found(
                        Rule::RetryRate,
                        rate.into(),
                        format!(
                            "{name}: {rate}/s timeouts + requeues (limit {}/s)",
                            t.retry_rate
                        ),
                    );
                }
            }
            // Dead letters and expiry.
            let counts = [
                (
                    Rule::DeadLetters,
                    &mut track.dead,
                    track.last.dead_lettered,
                    s.dead_lettered,
                    t.dead_letters,
                    "dead-lettered",
                ),
                (
                    Rule::Expired,
                    &mut track.expired,
                    track.last.expired,
                    s.expired,
                    t.expired,
                    "expired",
                ),
            ];
            for (rule, recent, before, count, window, what) in counts {
                recent.observe(before, count, now, window);
                if recent.holds(now, window) {
                    found(
                        rule,
                        recent.added.into(),
                        format!(
                            "{} messages {what} on {name} within {}",
                            recent.added,
                            humantime::format_duration(window)
                        ),
                    );
                }
            }
            track.last = s;
            track.taken = now;
        }
    }

    fn broker_rules(&mut self, snapshot: &Snapshot, out: &mut BTreeMap<(Rule, Subject), Finding>) {
        let now = snapshot.taken;
        // Down: asked, and failed or unhealthy.
        for b in &snapshot.brokers {
            let track = self.brokers.entry(b.addr.clone()).or_default();
            let problem = match &b.stats {
                Err(e) => Some(format!("unreachable: {e}")),
                Ok(s) if !(s.health.is_empty() || s.health == "OK") => {
                    Some(format!("unhealthy: {}", s.health))
                }
                Ok(_) => None,
            };
            let Some(problem) = problem else {
                track.down = 0;
                continue;
            };
            track.down += 1;
            let n = self.t.broker_down_samples;
            if n > 0 && track.down >= n {
                out.insert(
                    (Rule::BrokerDown, Subject::Broker(b.addr.clone())),
                    Finding {
                        value: problem.clone().into(),
                        summary: format!("broker {} is {problem}", b.addr),
                    },
                );
            }
        }
        // Missing: expected, but no lookupd that answered lists it.
        let answered: Vec<_> = snapshot
            .lookupds
            .iter()
            .filter_map(|l| l.result.as_ref().ok())
            .collect();
        if answered.is_empty() {
            // No lookupd configured, or none answered: nothing to compare with.
            return;
        }
        for addr in answered
            .iter()
            .flat_map(|d| d.producers.iter().map(|p| p.http_address()))
        {
            let track = self.brokers.entry(addr).or_default();
            track.listed_at = Some(now);
            track.missing = 0;
        }
        for addr in &self.t.configured_brokers {
            self.brokers.entry(addr.clone()).or_default();
        }
        let configured = &self.t.configured_brokers;
        let forget_after = self.t.forget_after;
        self.brokers.retain(|addr, track| {
            configured.contains(addr)
                || track
                    .listed_at
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() < forget_after)
                || snapshot.brokers.iter().any(|b| b.addr == *addr)
        });
        let n = self.t.broker_missing_samples;
        for (addr, track) in &mut self.brokers {
            if track.listed_at == Some(now) {
                continue;
            }
            let expected = configured.contains(addr) || track.listed_at.is_some();
            if !expected {
                continue;
            }
            track.missing += 1;
            if n > 0 && track.missing >= n {
                out.insert(
                    (Rule::BrokerMissing, Subject::Broker(addr.clone())),
                    Finding {
                        value: Value::String(addr.clone()),
                        summary: format!("broker {addr} is not registered with any lookupd"),
                    },
                );
            }
        }
    }
}

/// Per (topic, channel): the sums over the brokers that answered.
fn channel_samples(snapshot: &Snapshot) -> BTreeMap<(String, String), ChannelSample> {
    let mut out: BTreeMap<(String, String), ChannelSample> = BTreeMap::new();
    // A replicated topic once (its leader's copy: only the leader delivers).
    for (_, topic) in crate::replication::counted(snapshot) {
        for ch in &topic.channels {
            let s = out
                .entry((topic.topic_name.clone(), ch.channel_name.clone()))
                .or_default();
            s.depth += ch.depth;
            s.clients += ch.client_count.max(ch.clients.len() as u64);
            s.retries += ch.timeout_count + ch.requeue_count;
            s.dead_lettered += ch.dead_lettered_count;
            s.expired += ch.expired_count;
        }
    }
    out
}
