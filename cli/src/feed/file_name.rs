//! File names of `ferry to-file`, from nsq_to_file's `--filename-format` tokens:
//!
//! | token | replaced by |
//! |---|---|
//! | `<TOPIC>` | the topic |
//! | `<HOST>` | this host's name (up to its first dot) |
//! | `<PID>` | this process's id |
//! | `<DATETIME>` | the time of the file's opening, in `--datetime-format` (UTC) |
//! | `<REV>` | empty for the first file of a name, then `-1`, `-2`... so that no file is overwritten |
//!
//! `--datetime-format` takes strftime's `%Y %m %d %H %M %S %j %s %%`.

use std::time::{SystemTime, UNIX_EPOCH};

/// nsq_to_file's default `--filename-format`.
pub const DEFAULT_FORMAT: &str = "<TOPIC>.<HOST><REV>.log";
/// nsq_to_file's default `--datetime-format`.
pub const DEFAULT_DATETIME_FORMAT: &str = "%Y-%m-%d_%H";

/// A `--filename-format` with the tokens that never change during a run filled in.
#[derive(Debug, Clone)]
pub struct NameFormat {
    format: String,
    /// `format` with `<PID>` kept: what names of earlier runs look like.
    pattern: String,
    datetime_format: String,
}

impl NameFormat {
    /// `format` for this host and process; with `gzip`, `.gz` is appended unless the format
    /// already ends with it (as nsq_to_file does).
    pub fn new(format: &str, datetime_format: &str, gzip: bool) -> anyhow::Result<NameFormat> {
        if !format.contains("<TOPIC>") {
            anyhow::bail!("--filename-format {format:?} must contain <TOPIC>");
        }
        if format.contains('/') {
            anyhow::bail!("--filename-format {format:?} must not contain '/'");
        }
        check_datetime_format(datetime_format)?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let host = host.split('.').next().unwrap_or_default();
        let mut pattern = format.replace("<HOST>", host);
        if gzip && !pattern.ends_with(".gz") {
            pattern.push_str(".gz");
        }
        Ok(NameFormat {
            format: pattern.replace("<PID>", &std::process::id().to_string()),
            pattern,
            datetime_format: datetime_format.to_owned(),
        })
    }

    /// Whether names can differ by `<REV>` (else a name clash is an error).
    pub fn has_rev(&self) -> bool {
        self.format.contains("<REV>")
    }

    /// Whether names change with the time (a new name means a new file).
    pub fn has_datetime(&self) -> bool {
        self.format.contains("<DATETIME>")
    }

    /// The name for `topic` at `now`, with `<REV>` left in place.
    pub fn base(&self, topic: &str, now: SystemTime) -> String {
        let mut name = self.format.replace("<TOPIC>", topic);
        if self.has_datetime() {
            name = name.replace("<DATETIME>", &strftime_utc(&self.datetime_format, now));
        }
        name
    }

    /// Whether `name` can be a name of `topic`, from this run or an earlier one (any `<PID>`,
    /// `<DATETIME>` and `<REV>`).
    pub fn matches(&self, topic: &str, name: &str) -> bool {
        let pattern = self.pattern.replace("<TOPIC>", topic);
        let pieces: Vec<&str> = pattern
            .split("<PID>")
            .flat_map(|p| p.split("<DATETIME>"))
            .flat_map(|p| p.split("<REV>"))
            .collect();
        let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
        if pieces.len() == 1 {
            return name == first;
        }
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        for piece in &pieces[1..pieces.len() - 1] {
            match rest.find(piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

/// `base` (from [`NameFormat::base`]) with revision `rev` (0: none).
pub fn with_rev(base: &str, rev: u32) -> String {
    let rev = if rev == 0 {
        String::new()
    } else {
        format!("-{rev}")
    };
    base.replace("<REV>", &rev)
}

fn check_datetime_format(format: &str) -> anyhow::Result<()> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'j' | 's' | '%') => {}
                other => anyhow::bail!(
                    "--datetime-format {format:?}: unsupported %{} (use %Y %m %d %H %M %S %j %s %%)",
                    other.map(String::from).unwrap_or_default()
                ),
            }
        }
    }
    Ok(())
}

/// `format` (checked by `check_datetime_format`) applied to `t` in UTC.
pub fn strftime_utc(format: &str, t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let part = match chars.next() {
            Some('Y') => format!("{year:04}"),
            Some('m') => format!("{month:02}"),
            Some('d') => format!("{day:02}"),
            Some('H') => format!("{:02}", in_day / 3600),
            Some('M') => format!("{:02}", in_day / 60 % 60),
            Some('S') => format!("{:02}", in_day % 60),
            Some('j') => format!("{day_of_year:03}"),
            Some('s') => secs.to_string(),
            Some('%') => "%".to_owned(),
            Some(other) => format!("%{other}"),
            None => "%".to_owned(),
        };
        out.push_str(&part);
    }
    out
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn strftime_in_utc() {
        // 2024-02-29 13:05:09 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_709_211_909);
        assert_eq!(strftime_utc(DEFAULT_DATETIME_FORMAT, t), "2024-02-29_13");
        assert_eq!(strftime_utc("%M:%S %j %%", t), "05:09 060 %");
        assert_eq!(strftime_utc("%Y%m%d", UNIX_EPOCH), "19700101");
        for days in [-1000, 0, 59, 365, 11_016, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn names_follow_nsq_to_file() {
        let f = NameFormat::new("<TOPIC>.<DATETIME><REV>.log", "%Y", true).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(1_709_211_909);
        let base = f.base("orders", t);
        assert_eq!(base, "orders.2024<REV>.log.gz");
        assert_eq!(with_rev(&base, 0), "orders.2024.log.gz");
        assert_eq!(with_rev(&base, 2), "orders.2024-2.log.gz");
        assert!(f.has_rev() && f.has_datetime());
        let f = NameFormat::new(DEFAULT_FORMAT, DEFAULT_DATETIME_FORMAT, false).unwrap();
        assert!(f.base("t", t).starts_with("t."));
        assert!(!f.base("t", t).contains("<HOST>"));
        assert!(NameFormat::new("<HOST>.log", "%Y", false).is_err());
        let f = NameFormat::new("<TOPIC>.<PID>.<DATETIME><REV>.log", "%Y", true).unwrap();
        assert!(f.matches("orders", "orders.123.2024-1.log.gz"));
        assert!(f.matches("orders", "orders.1.2024.log.gz"));
        assert!(!f.matches("orders", "orders2.1.2024.log.gz"));
        assert!(!f.matches("orders", "orders.1.2024.log"));
        let f = NameFormat::new("<TOPIC>.log", "%Y", false).unwrap();
        assert!(f.matches("t", "t.log") && !f.matches("t", "t.log.x"));
        assert!(NameFormat::new("<TOPIC>.log", "%Q", false).is_err());
    }
}
