//! The result of a benchmark run and its one-line summary.
//!
//! ```text
//! writer: 3,912,400 msgs in 10.00s = 391,240 msgs/s, 74.6 MB/s (200-byte messages, MPUB batches of 200, 2 connections)
//! ```
//!
//! MB is 2^20 bytes, as in nsq's `bench_writer` and `bench_reader`, so the numbers compare
//! directly with theirs. Bytes are message bodies only (no framing).

use std::fmt;
use std::time::Duration;

pub use super::latency::LatencyReport;

/// Which tool produced a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `ferry bench writer`.
    Writer,
    /// `ferry bench reader`.
    Reader,
    /// `ferry bench latency`.
    Latency,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Latency => "latency",
        })
    }
}

/// What one connection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionReport {
    /// Messages counted: acknowledged by the broker (writer) or received in the run (reader).
    pub msgs: u64,
    /// Body bytes of those messages.
    pub bytes: u64,
    /// Reader: messages received after the run stopped, finished but not counted.
    pub after_stop: u64,
    /// Reader: `E_FIN_FAILED` errors (a FIN raced a message timeout).
    pub fin_failed: u64,
}

/// The result of one benchmark run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Writer or reader.
    pub role: Role,
    /// Messages counted over all connections.
    pub msgs: u64,
    /// Body bytes over all connections.
    pub bytes: u64,
    /// Measured time: from the moment every connection was ready to the end of the run (for
    /// `--expect`, to the moment the last expected message arrived).
    pub elapsed: Duration,
    /// The run's parameters, for the summary: `"200-byte messages, ..., 2 connections"`.
    pub detail: String,
    /// Reader: `--expect`.
    pub expected: Option<u64>,
    /// One entry per connection, in connection order.
    pub connections: Vec<ConnectionReport>,
    /// Latency mode: the percentiles.
    pub latency: Option<LatencyReport>,
}

impl Report {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        per_sec(self.msgs as f64, self.elapsed)
    }

    /// Body throughput in MB/s, MB being 2^20 bytes (as in nsq's bench tools).
    pub fn mb_per_sec(&self) -> f64 {
        per_sec(self.bytes as f64 / 1_048_576.0, self.elapsed)
    }

    /// With `--expect`: why the run falls short (fewer messages than expected).
    pub fn shortfall(&self) -> Option<String> {
        let expected = self.expected?;
        (self.msgs < expected).then(|| {
            format!(
                "{}: received only {} of the {} expected messages in {:.2}s",
                self.role,
                thousands(self.msgs),
                thousands(expected),
                self.elapsed.as_secs_f64()
            )
        })
    }

    /// The summary, preceded by one line per connection if `verbose`; each line ends in `\n`.
    pub fn render(&self, verbose: bool) -> String {
        let mut out = String::new();
        if verbose {
            for (i, conn) in self.connections.iter().enumerate() {
                out.push_str(&format!("  connection {i}: {} msgs", thousands(conn.msgs)));
                if conn.after_stop > 0 {
                    out.push_str(&format!(
                        ", {} more finished after the run",
                        thousands(conn.after_stop)
                    ));
                }
                if conn.fin_failed > 0 {
                    out.push_str(&format!(", {} E_FIN_FAILED", thousands(conn.fin_failed)));
                }
                out.push('\n');
            }
        }
        out.push_str(&self.to_string());
        out.push('\n');
        if let Some(latency) = &self.latency {
            out.push_str(&latency.table());
        }
        out
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        let value = match &self.latency {
            Some(latency) => latency.to_json(self.elapsed),
            None => serde_json::json!({
                "mode": self.role.to_string(),
                "msgs": self.msgs,
                "bytes": self.bytes,
                "elapsed_s": self.elapsed.as_secs_f64(),
                "msgs_per_s": self.msgs_per_sec(),
                "mb_per_s": self.mb_per_sec(),
            }),
        };
        value.to_string()
    }
}

impl fmt::Display for Report {
    /// The one-line summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(latency) = &self.latency {
            return write!(
                f,
                "{}: {} published, {} received in {:.2}s ({})",
                self.role,
                thousands(latency.published),
                thousands(self.msgs),
                self.elapsed.as_secs_f64(),
                self.detail
            );
        }
        write!(
            f,
            "{}: {} msgs in {:.2}s = {} msgs/s, {:.1} MB/s ({})",
            self.role,
            thousands(self.msgs),
            self.elapsed.as_secs_f64(),
            thousands(self.msgs_per_sec().round() as u64),
            self.mb_per_sec(),
            self.detail
        )
    }
}

fn per_sec(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

/// `n` with a comma every three digits: `3912400` → `"3,912,400"`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `"200-byte messages"`, or `"10-200-byte messages"` when sizes vary, or `"no messages"`.
pub(crate) fn size_range(min: u64, max: u64, msgs: u64) -> String {
    match msgs {
        0 => "no messages".to_owned(),
        _ if min == max => format!("{min}-byte messages"),
        _ => format!("{min}-{max}-byte messages"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer_report() -> Report {
        Report {
            role: Role::Writer,
            msgs: 3_912_400,
            bytes: 3_912_400 * 200,
            elapsed: Duration::from_secs(10),
            detail: "200-byte messages, MPUB batches of 200, 2 connections".to_owned(),
            expected: None,
            latency: None,
            connections: vec![
                ConnectionReport {
                    msgs: 1_956_200,
                    bytes: 1_956_200 * 200,
                    ..ConnectionReport::default()
                };
                2
            ],
        }
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            writer_report().to_string(),
            "writer: 3,912,400 msgs in 10.00s = 391,240 msgs/s, 74.6 MB/s \
             (200-byte messages, MPUB batches of 200, 2 connections)"
        );
    }

    #[test]
    fn verbose_adds_a_line_per_connection() {
        let mut report = writer_report();
        report.connections[1].after_stop = 12;
        report.connections[1].fin_failed = 3;
        let text = report.render(true);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "  connection 0: 1,956,200 msgs");
        assert_eq!(
            lines[1],
            "  connection 1: 1,956,200 msgs, 12 more finished after the run, 3 E_FIN_FAILED"
        );
        assert_eq!(report.render(false), format!("{report}\n"));
    }

    #[test]
    fn zero_elapsed_does_not_divide_by_zero() {
        let report = Report {
            elapsed: Duration::ZERO,
            ..writer_report()
        };
        assert_eq!(report.msgs_per_sec(), 0.0);
        assert_eq!(report.mb_per_sec(), 0.0);
    }

    #[test]
    fn shortfall_only_when_expect_is_missed() {
        let mut report = writer_report();
        report.role = Role::Reader;
        assert_eq!(report.shortfall(), None);
        report.expected = Some(3_912_400);
        assert_eq!(report.shortfall(), None);
        report.expected = Some(4_000_000);
        assert_eq!(
            report.shortfall().unwrap(),
            "reader: received only 3,912,400 of the 4,000,000 expected messages in 10.00s"
        );
    }

    #[test]
    fn thousands_separators() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (12_345, "12,345"),
            (391_240, "391,240"),
            (1_000_000, "1,000,000"),
            (u64::MAX, "18,446,744,073,709,551,615"),
        ];
        for (n, want) in cases {
            assert_eq!(thousands(n), want);
        }
    }

    #[test]
    fn message_sizes() {
        assert_eq!(size_range(0, 0, 0), "no messages");
        assert_eq!(size_range(200, 200, 5), "200-byte messages");
        assert_eq!(size_range(10, 200, 5), "10-200-byte messages");
    }
}
