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
    fn at_least_one_connection() {
        assert!(default_connections() >= 1);
    }
}
