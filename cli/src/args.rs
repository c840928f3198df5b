//! Argument parsers and defaults shared by `ferry`'s subcommands.

use std::num::NonZeroUsize;
use std::time::Duration;

/// Parses a Go-style duration such as `"10s"`, `"500ms"`, `"2m"` or `"1m30s"` (via `humantime`).
///
/// A bare number is refused, except `"0"`: `--runfor 10` is ambiguous (Go's `flag.Duration`
/// refuses it too), so the error says to add a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {s:?}: missing unit (e.g. \"{s}s\" or \"{s}ms\")"
        ));
    }
    humantime::parse_duration(s).map_err(|err| format!("invalid duration {s:?}: {err}"))
}

/// Like [`parse_duration`], but zero is refused.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err(format!("invalid duration {s:?}: must be greater than 0")),
        duration => Ok(duration),
    }
}

/// Parses a size such as `"10GB"` (10^9 bytes), `"512MiB"` (2^29) or `"1024"` (bytes) into
/// bytes; `"0"` means off. Units: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB
/// (powers of 1024), in any case.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let bad = |why: &str| format!("invalid size {s:?}: {why} (e.g. 10GB, 512MiB, 1024)");
    if number.is_empty() {
        return Err(bad(
            "a whole number of bytes with an optional unit is expected",
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(bad(
                "unknown unit; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB",
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| bad("too large"))
}

/// Checks a point in a topic's log given to `ferry rewind --to`: `earliest`, an RFC 3339 time
/// (`2026-12-05T10:00:00Z`, `...+02:00`), Unix time in milliseconds, or a negative duration
/// (`-1h`: that long ago). Returns it trimmed, as given: the broker reads the same grammar and
/// has the last word; this only turns away what is obviously wrong, with a reason.
pub fn parse_log_time(s: &str) -> Result<String, String> {
    let s = s.trim();
    let expected = "expected earliest, an RFC 3339 time (2026-12-05T10:00:00Z), Unix time in \
                    milliseconds or a negative duration (-1h)";
    if s == "earliest" {
        return Ok(s.to_owned());
    }
    if s == "latest" {
        return Err(format!(
            "invalid time {s:?}: a channel cannot be rewound to its end (`ferry empty` drops \
             its messages); {expected}"
        ));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u64>() {
            // Below 10^11 ms (March 1973) it is almost surely seconds.
            Ok(ms) if ms != 0 && ms < 100_000_000_000 => Err(format!(
                "invalid time {s:?}: looks like Unix seconds; give milliseconds ({s}000)"
            )),
            Ok(_) => Ok(s.to_owned()),
            Err(_) => Err(format!("invalid time {s:?}: too large")),
        };
    }
    if let Some(ago) = s.strip_prefix('-') {
        return match parse_positive_duration(ago) {
            Ok(_) => Ok(s.to_owned()),
            Err(e) => Err(format!("invalid time {s:?}: {e}")),
        };
    }
    if humantime::parse_duration(s).is_ok() {
        return Err(format!(
            "invalid time {s:?}: a duration must be negative (how long ago), e.g. -{s}"
        ));
    }
    match parse_rfc3339(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(format!("invalid time {s:?}: {e}; {expected}")),
    }
}

/// An RFC 3339 time with `Z` or a `+HH:MM`/`-HH:MM` offset (humantime knows only `Z`); a space
/// for the `T` and lower case `t`/`z` are RFC 3339 too.
fn parse_rfc3339(s: &str) -> Result<std::time::SystemTime, String> {
    let s = &s.replacen(' ', "T", 1).to_ascii_uppercase();
    let Some((local, offset)) = split_offset(s)? else {
        return humantime::parse_rfc3339(s).map_err(|e| e.to_string());
    };
    let t = humantime::parse_rfc3339(&format!("{local}Z")).map_err(|e| e.to_string())?;
    // The local time is UTC + offset.
    let utc = if offset >= 0 {
        t.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        t.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    utc.ok_or_else(|| "out of range".to_owned())
}

/// `("2026-12-05T10:00:00", 7200)` from `"2026-12-05T10:00:00+02:00"`; `None` without an offset.
fn split_offset(s: &str) -> Result<Option<(&str, i64)>, String> {
    let Some(at) = s
        .len()
        .checked_sub(6)
        .filter(|&i| i >= 19 && s.is_char_boundary(i))
    else {
        return Ok(None);
    };
    let (local, offset) = s.split_at(at);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Ok(None),
    };
    let hours_minutes = offset[1..]
        .split_once(':')
        .and_then(|(h, m)| Some((h.parse::<i64>().ok()?, m.parse::<i64>().ok()?)))
        .filter(|&(h, m)| (0..24).contains(&h) && (0..60).contains(&m));
    match hours_minutes {
        Some((h, m)) => Ok(Some((local, sign * (h * 3600 + m * 60)))),
        None => Err(format!("bad UTC offset {offset:?}")),
    }
}

/// The number of CPUs this process may use (at least 1): the default connection count, as in
/// nsq's bench tools (`runtime.GOMAXPROCS(0)`).
pub fn default_connections() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .try_into()
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("250us", Duration::from_micros(250)),
            (" 3s ", Duration::from_secs(3)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        let err = parse_duration("10").unwrap_err();
        assert!(err.contains("missing unit"), "{err}");
        for text in ["", "ten seconds", "10x", "-1s"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        let err = parse_positive_duration("0s").unwrap_err();
        assert!(err.contains("greater than 0"), "{err}");
        assert_eq!(parse_positive_duration("1s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4 kib"), Ok(4096));
        for bad in ["", "GB", "10XB", "1.5GB", "-1", "99999999999TB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_size("10XB").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn log_times() {
        for good in [
            "earliest",
            "2026-12-05T10:00:00Z",
            "2026-12-05T10:00:00.250Z",
            "2026-12-05T10:00:00+02:00",
            "2026-12-05T10:00:00-05:30",
            "2026-12-05 10:00:00z",
            "1764900000000",
            "0",
            "-1h",
            "-1h30m",
            " -30m ",
        ] {
            assert_eq!(parse_log_time(good), Ok(good.trim().to_owned()), "{good:?}");
        }
        for (bad, why) in [
            ("yesterday", "expected earliest"),
            ("1h", "must be negative"),
            ("-1", "missing unit"),
            ("-", "invalid duration"),
            ("latest", "ferry empty"),
            ("1764900000", "Unix seconds"),
            ("2026-13-05T10:00:00Z", "expected earliest"),
            ("2026-12-05T10:00:00+25:00", "bad UTC offset"),
            ("", "expected earliest"),
        ] {
            let err = parse_log_time(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let plus2 = parse_rfc3339("2026-12-05T10:00:00+02:00").unwrap();
        let utc = parse_rfc3339("2026-12-05T08:00:00Z").unwrap();
        assert_eq!(plus2, utc);
        let minus = parse_rfc3339("2026-12-05T03:30:00-04:30").unwrap();
        assert_eq!(minus, utc);
    }

    #[test]
    fn at_least_one_connection() {
        assert!(default_connections() >= 1);
    }
}
