//! Topic retention and channel delivery settings (Ferry #17) as the pages show them, and the
//! formats they are shown in.
//!
//! A setting lives on each broker separately; a topic or channel held by several brokers keeps
//! each distinct value ([`Distinct`]) and shows, field by field, the value they agree on, or
//! "mixed". Values print in the forms
//! brokerd accepts back (`24h`, `1h30m`, `10GB`, `512MiB`), so a form can be prefilled with
//! them; `0` means off and prints as "off".

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::nsq::{ChannelStats, TopicStats};

/// One setting over the brokers that answered: each distinct value once, in the order met
/// (serialized as a list; one value when they agree).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Distinct<T>(pub Vec<T>);

impl<T> Default for Distinct<T> {
    fn default() -> Self {
        Distinct(Vec::new())
    }
}

impl<T: PartialEq> Distinct<T> {
    /// Adds one broker's value.
    pub fn add(&mut self, value: T) {
        if !self.0.contains(&value) {
            self.0.push(value);
        }
    }
}

impl<T: fmt::Display> fmt::Display for Distinct<T> {
    /// The values, separated by " / ".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" / ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl<T> Distinct<T> {
    /// One field, `show(value)`: what every value shows, else "mixed"; "–" with no value.
    fn show(&self, show: fn(&T) -> String) -> String {
        let mut shown = self.0.iter().map(show);
        let Some(first) = shown.next() else {
            return "–".into();
        };
        if shown.all(|s| s == first) {
            first
        } else {
            "mixed".into()
        }
    }
}

impl Distinct<Retention> {
    /// See [`Retention::time`].
    pub fn time(&self) -> String {
        self.show(Retention::time)
    }

    /// See [`Retention::size`].
    pub fn size(&self) -> String {
        self.show(Retention::size)
    }
}

impl Distinct<ChannelSettings> {
    /// See [`ChannelSettings::max_age`].
    pub fn max_age(&self) -> String {
        self.show(ChannelSettings::max_age)
    }

    /// See [`ChannelSettings::max_attempts`].
    pub fn max_attempts(&self) -> String {
        self.show(ChannelSettings::max_attempts)
    }

    /// See [`ChannelSettings::dead_letter_topic`].
    pub fn dead_letter_topic(&self) -> String {
        self.show(|s| s.dead_letter_topic().to_owned())
    }

    /// The dead-letter topic every broker has, if any (for a link to it).
    pub fn dead_letter_link(&self) -> Option<&str> {
        let first = self.0.first()?.dead_letter_topic.as_deref()?;
        self.0
            .iter()
            .all(|s| s.dead_letter_topic.as_deref() == Some(first))
            .then_some(first)
    }
}

/// A topic's retention on one broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Messages older than this are deleted (ms; 0 = off).
    pub ms: u64,
    /// The log is kept under this many bytes (0 = off).
    pub bytes: u64,
}

impl Retention {
    /// The topic's retention.
    pub fn of(t: &TopicStats) -> Retention {
        Retention {
            ms: t.retention_ms,
            bytes: t.retention_bytes,
        }
    }

    /// "24h" or "off".
    pub fn time(&self) -> String {
        off_or(self.ms, duration_ms)
    }

    /// "10GB" or "off".
    pub fn size(&self) -> String {
        off_or(self.bytes, size)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "time {}, size {}", self.time(), self.size())
    }
}

/// A channel's delivery settings on one broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelSettings {
    /// Oldest a message may be when delivered; older ones expire (ms; 0 = off).
    pub max_age_ms: u64,
    /// Deliveries before a message is dead-lettered (0 = unlimited).
    pub max_attempts: u64,
    /// Where dead letters go.
    pub dead_letter_topic: Option<String>,
}

impl ChannelSettings {
    /// The channel's settings.
    pub fn of(c: &ChannelStats) -> ChannelSettings {
        ChannelSettings {
            max_age_ms: c.max_age_ms,
            max_attempts: u64::from(c.max_attempts),
            dead_letter_topic: c.dead_letter_topic.clone().filter(|t| !t.is_empty()),
        }
    }

    /// "10m" or "off".
    pub fn max_age(&self) -> String {
        off_or(self.max_age_ms, duration_ms)
    }

    /// "5" or "unlimited".
    pub fn max_attempts(&self) -> String {
        match self.max_attempts {
            0 => "unlimited".into(),
            n => n.to_string(),
        }
    }

    /// The dead-letter topic, or "–".
    pub fn dead_letter_topic(&self) -> &str {
        self.dead_letter_topic.as_deref().unwrap_or("–")
    }
}

impl fmt::Display for ChannelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max age {}, max attempts {}",
            self.max_age(),
            self.max_attempts()
        )?;
        if let Some(t) = &self.dead_letter_topic {
            write!(f, ", dead letters to {t}")?;
        }
        Ok(())
    }
}

fn off_or(v: u64, show: fn(u64) -> String) -> String {
    if v == 0 { "off".into() } else { show(v) }
}

/// Milliseconds in Go's duration form without zero parts: "24h", "1h30m", "1s500ms".
pub fn duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0".into();
    }
    let parts = [
        (ms / 3_600_000, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1000 % 60, "s"),
        (ms % 1000, "ms"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// Bytes in the largest exact unit brokerd parses: "10GB", "512MiB", "1500".
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 8] = [
        (1 << 40, "TiB"),
        (1_000_000_000_000, "TB"),
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1000, "KB"),
    ];
    match UNITS
        .iter()
        .find(|(unit, _)| bytes > 0 && bytes.is_multiple_of(*unit))
    {
        Some((unit, name)) => format!("{}{name}", bytes / unit),
        None => bytes.to_string(),
    }
}

/// Unix milliseconds as "2026-12-05 10:00:00 UTC"; 0 is "–".
pub fn time_ms(ms: u64) -> String {
    if ms == 0 {
        return "–".into();
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// How long before now `ms` was ("3h 5m ago"), or until when it is ahead ("in 12s").
pub fn relative_ms(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let secs = |d: u64| i64::try_from(d / 1000).unwrap_or(i64::MAX);
    if ms <= now {
        format!("{} ago", crate::views::short_duration(secs(now - ms)))
    } else {
        format!("in {}", crate::views::short_duration(secs(ms - now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_brokerd_parses_them() {
        assert_eq!(duration_ms(86_400_000), "24h");
        assert_eq!(duration_ms(5_400_000), "1h30m");
        assert_eq!(duration_ms(600_000), "10m");
        assert_eq!(duration_ms(1500), "1s500ms");
        assert_eq!(duration_ms(0), "0");
    }

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        assert_eq!(size(10_000_000_000), "10GB");
        assert_eq!(size(512 << 20), "512MiB");
        assert_eq!(size(1 << 40), "1TiB");
        assert_eq!(size(1024), "1KiB");
        assert_eq!(size(1500), "1500");
        assert_eq!(size(0), "0");
    }

    #[test]
    fn settings_show_off_and_unlimited() {
        let r = Retention { ms: 0, bytes: 0 };
        assert_eq!((r.time(), r.size()), ("off".into(), "off".into()));
        let c = ChannelSettings::default();
        assert_eq!(c.to_string(), "max age off, max attempts unlimited");
        let c = ChannelSettings {
            max_age_ms: 600_000,
            max_attempts: 5,
            dead_letter_topic: Some("t.dead".into()),
        };
        assert_eq!(
            c.to_string(),
            "max age 10m, max attempts 5, dead letters to t.dead"
        );
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(time_ms(1_764_900_000_000), "2025-12-05 02:00:00 UTC");
        assert_eq!(time_ms(0), "–");
        assert!(relative_ms(1).ends_with(" ago"));
    }

    #[test]
    fn agreement_over_brokers_is_per_field() {
        let mut d = Distinct::default();
        assert_eq!(d.max_age(), "–");
        let s = |max_attempts, topic: Option<&str>| ChannelSettings {
            max_age_ms: 600_000,
            max_attempts,
            dead_letter_topic: topic.map(str::to_owned),
        };
        d.add(s(5, Some("t.dead")));
        d.add(s(5, Some("t.dead")));
        assert_eq!(d.0.len(), 1);
        assert_eq!(d.dead_letter_link(), Some("t.dead"));
        d.add(s(3, Some("t.dead")));
        assert_eq!(
            (d.max_age(), d.max_attempts()),
            ("10m".into(), "mixed".into())
        );
        assert_eq!(d.dead_letter_link(), Some("t.dead"));
        d.add(s(3, None));
        assert_eq!(d.dead_letter_link(), None);
        assert_eq!(d.dead_letter_topic(), "mixed");
    }
}
