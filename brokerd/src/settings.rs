//! Per-topic and per-channel settings (retention, message age limit, dead letters) and the
//! parsing of what operators type for them: durations, byte sizes and points in a topic's
//! history.
//!
//! Settings are stored per topic and channel as `Option`s ([`TopicSettings`],
//! [`ChannelSettings`], persisted in the topic's `meta.dat`): `None` means the broker's default
//! ([`Defaults`], from its flags) applies, so changing a flag changes every topic that has no
//! setting of its own.

use std::time::Duration;

pub use ferry_store::{ChannelSettings, TopicSettings};

use crate::config::Config;

/// The broker-wide defaults of the settings (`--retention`, `--retention-bytes`,
/// `--max-attempts`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults {
    /// `--retention`.
    pub retention: Duration,
    /// `--retention-bytes`.
    pub retention_bytes: u64,
    /// `--max-attempts`.
    pub max_attempts: u16,
}

impl Defaults {
    /// The defaults a broker's configuration sets.
    pub fn from_config(c: &Config) -> Defaults {
        Defaults {
            retention: c.retention,
            retention_bytes: c.retention_bytes,
            max_attempts: c.max_attempts,
        }
    }
}

/// A topic's retention in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep finished-with segments this long (zero: no time bound).
    pub time: Duration,
    /// Keep at most this many bytes of them (0: no byte bound).
    pub bytes: u64,
}

impl Retention {
    /// The topic's settings over the broker's defaults.
    pub fn effective(s: &TopicSettings, d: &Defaults) -> Retention {
        Retention {
            time: s.retention_ns.map_or(d.retention, Duration::from_nanos),
            bytes: s.retention_bytes.unwrap_or(d.retention_bytes),
        }
    }

    /// True when finished-with segments are kept at all.
    pub fn is_on(&self) -> bool {
        !self.time.is_zero() || self.bytes > 0
    }
}

/// A channel's settings in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Messages older than this are dropped, not delivered (zero: no limit).
    pub max_age: Duration,
    /// Deliveries after which a REQ or timeout dead-letters a message (0: unlimited).
    pub max_attempts: u16,
    /// Where dead letters go (`None` when `max_attempts` is 0 or no valid name exists).
    pub dead_letter_topic: Option<String>,
}

impl ChannelLimits {
    /// The channel's settings over the broker's defaults. The broker-wide `--max-attempts`
    /// does not apply to the channels of a dead-letter topic (`*.dead`), so dead letters do
    /// not cascade into `T.dead.dead` unless asked for.
    pub fn effective(topic: &str, s: &ChannelSettings, d: &Defaults) -> ChannelLimits {
        let inherited = if is_dead_letter_topic(topic) {
            0
        } else {
            d.max_attempts
        };
        let max_attempts = s
            .max_attempts
            .map_or(inherited, |n| u16::try_from(n).unwrap_or(u16::MAX));
        let dead_letter_topic = match max_attempts {
            0 => None,
            _ => s
                .dead_letter_topic
                .clone()
                .or_else(|| default_dead_letter_topic(topic)),
        };
        ChannelLimits {
            max_age: s.max_age_ns.map_or(Duration::ZERO, Duration::from_nanos),
            max_attempts: if dead_letter_topic.is_some() {
                max_attempts
            } else {
                0
            },
            dead_letter_topic,
        }
    }
}

/// True for a topic named like a dead-letter topic (`*.dead`, ephemeral or not).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    let base = topic.strip_suffix("#ephemeral").unwrap_or(topic);
    base.ends_with(".dead")
}

/// `<topic>.dead` (`<base>.dead#ephemeral` for an ephemeral topic), if that is a valid name.
pub fn default_dead_letter_topic(topic: &str) -> Option<String> {
    let name = match topic.strip_suffix("#ephemeral") {
        Some(base) => format!("{base}.dead#ephemeral"),
        None => format!("{topic}.dead"),
    };
    ferry_proto::names::is_valid_topic_name(&name).then_some(name)
}

/// A point in a topic's history, as `to=` (rewind) and `start=` (channel create) give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The oldest retained message.
    Earliest,
    /// After the newest message.
    Latest,
    /// The first message published at or after this time (ns since the Unix epoch).
    At(i64),
}

/// Parses `earliest`, `latest`, an RFC 3339 time, a Unix time in milliseconds or a negative
/// duration (`-1h`: an hour before `now_ns`).
pub fn parse_point(s: &str, now_ns: i64) -> Result<Point, String> {
    let t = s.trim();
    match t {
        "earliest" => return Ok(Point::Earliest),
        "latest" => return Ok(Point::Latest),
        "" => return Err("empty; expected earliest, latest, an RFC 3339 time, a Unix time in ms or a negative duration like -1h".into()),
        _ => {}
    }
    if let Some(ago) = t.strip_prefix('-') {
        let d =
            humantime::parse_duration(ago).map_err(|e| format!("invalid duration {t:?}: {e}"))?;
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(Point::At(now_ns.saturating_sub(ns)));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = t
            .parse()
            .map_err(|e| format!("invalid Unix time {t:?}: {e}"))?;
        return Ok(Point::At(ms.saturating_mul(1_000_000)));
    }
    let at = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
        format!("invalid time {t:?}: {e} (expected earliest, latest, an RFC 3339 time such as 2026-12-05T10:00:00Z, a Unix time in ms or a negative duration like -1h)")
    })?;
    at.timestamp_nanos_opt()
        .map(Point::At)
        .ok_or_else(|| format!("invalid time {t:?}: out of range"))
}

/// Parses a duration setting (`10m`, `24h`, `1h30m`; a bare number is milliseconds; `0` off).
pub fn parse_duration_setting(s: &str) -> Result<Duration, String> {
    ferry_daemon::parse_duration(s.trim())
}

/// Formats a duration for JSON answers as Go and nsqd write them: `24h`, `1h30m`, `10m`,
/// `1.5s`, `250ms`, `0s` (so the answer parses back as the same setting).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}us", d.as_micros())
        };
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s_ms > 0 {
        if s_ms % 1000 == 0 {
            out.push_str(&format!("{}s", s_ms / 1000));
        } else {
            let frac = format!("{:03}", s_ms % 1000);
            out.push_str(&format!("{}.{}s", s_ms / 1000, frac.trim_end_matches('0')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000_000;

    #[test]
    fn points() {
        assert_eq!(parse_point("earliest", NOW), Ok(Point::Earliest));
        assert_eq!(parse_point("latest", NOW), Ok(Point::Latest));
        assert_eq!(
            parse_point("-1h", NOW),
            Ok(Point::At(NOW - 3_600_000_000_000))
        );
        assert_eq!(
            parse_point("1700000000000", NOW),
            Ok(Point::At(1_700_000_000_000_000_000))
        );
        assert_eq!(
            parse_point("2023-11-14T22:13:20Z", NOW),
            Ok(Point::At(1_700_000_000_000_000_000))
        );
        assert_eq!(
            parse_point("2023-11-15T00:13:20+02:00", NOW),
            Ok(Point::At(1_700_000_000_000_000_000))
        );
        for bad in ["", "yesterday", "-soon", "2023-13-01T00:00:00Z"] {
            assert!(parse_point(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_format_go_style_and_parse_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(10 * 60), "10m"),
            (Duration::from_secs(24 * 3600), "24h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1.5s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration_setting(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn dead_letter_defaults() {
        let d = Defaults {
            max_attempts: 5,
            ..Defaults::default()
        };
        let none = ChannelSettings::default();
        let l = ChannelLimits::effective("orders", &none, &d);
        assert_eq!(l.max_attempts, 5);
        assert_eq!(l.dead_letter_topic.as_deref(), Some("orders.dead"));
        // The broker default does not cascade into dead-letter topics.
        assert_eq!(
            ChannelLimits::effective("orders.dead", &none, &d).max_attempts,
            0
        );
        let eph = ChannelLimits::effective("t#ephemeral", &none, &d);
        assert_eq!(eph.dead_letter_topic.as_deref(), Some("t.dead#ephemeral"));
        // A name with no room for ".dead" dead-letters nowhere: unlimited.
        let long = "x".repeat(64);
        assert_eq!(ChannelLimits::effective(&long, &none, &d).max_attempts, 0);
        let own = ChannelSettings {
            max_attempts: Some(0),
            ..ChannelSettings::default()
        };
        assert_eq!(ChannelLimits::effective("orders", &own, &d).max_attempts, 0);
    }
}
