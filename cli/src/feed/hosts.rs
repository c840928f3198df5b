//! Choosing a destination per message among several (`--mode`), as nsq_to_http and
//! nsq_to_nsq do.
//!
//! - `round-robin`: each message goes to the next destination in turn.
//! - `hostpool`: messages go to the first destination that is up; one that failed is left
//!   out for a while (1 s, doubling at each further failure up to 60 s), and when every
//!   destination is out, the one due back first is tried.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// How messages are spread over destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Each message to the next destination in turn.
    RoundRobin,
    /// To the first healthy destination; failed ones are avoided for a while.
    Hostpool,
}

/// The destinations' health, shared by every task sending messages.
#[derive(Debug)]
pub struct Hosts {
    mode: Mode,
    next: AtomicUsize,
    /// Per destination: (left out until, delay of the next leaving out). A `std` mutex: held
    /// only to read or update these numbers.
    health: Mutex<Vec<(Option<Instant>, Duration)>>,
}

impl Hosts {
    /// `count` destinations (at least 1) chosen by `mode`.
    pub fn new(mode: Mode, count: usize) -> Hosts {
        Hosts {
            mode,
            next: AtomicUsize::new(0),
            health: Mutex::new(vec![(None, FIRST_RETRY); count.max(1)]),
        }
    }

    /// Index of the destination of the next message.
    pub fn pick(&self) -> usize {
        let health = self.lock();
        match self.mode {
            Mode::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % health.len(),
            Mode::Hostpool => {
                let now = Instant::now();
                health
                    .iter()
                    .position(|(out_until, _)| out_until.is_none_or(|t| t <= now))
                    .unwrap_or_else(|| {
                        (0..health.len())
                            .min_by_key(|&i| health[i].0)
                            .unwrap_or_default()
                    })
            }
        }
    }

    /// Records the outcome of sending to destination `i`.
    pub fn report(&self, i: usize, ok: bool) {
        let mut health = self.lock();
        let Some(h) = health.get_mut(i) else {
            return;
        };
        if ok {
            *h = (None, FIRST_RETRY);
        } else {
            *h = (Some(Instant::now() + h.1), (h.1 * 2).min(MAX_RETRY));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Option<Instant>, Duration)>> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_turns() {
        let hosts = Hosts::new(Mode::RoundRobin, 3);
        hosts.report(1, false);
        let picks: Vec<usize> = (0..6).map(|_| hosts.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn hostpool_avoids_failed_destinations() {
        let hosts = Hosts::new(Mode::Hostpool, 3);
        assert_eq!(hosts.pick(), 0);
        hosts.report(0, false);
        assert_eq!(hosts.pick(), 1);
        hosts.report(1, false);
        hosts.report(2, false);
        // Every one is out: the one due back first.
        assert_eq!(hosts.pick(), 0);
        hosts.report(1, true);
        assert_eq!(hosts.pick(), 1);
    }
}
