//! Repeated warnings, held back: an occurrence that recurs on every poll (a register the device
//! rejects, a reply that does not decode) is logged the first time and then at most once per
//! [`REPEAT_INTERVAL`] per key, with the number of occurrences held back in between. Metrics are
//! not throttled: an event counts every occurrence.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The shortest time between two log lines of one repeated occurrence.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// Per key: when it was last logged and how many occurrences were held back since. Keys come
/// from the configuration (a device and an address), so the table is bounded by it.
#[derive(Debug)]
pub struct Throttle<K> {
    interval: Duration,
    last: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq> Default for Throttle<K> {
    fn default() -> Self {
        Self::new(REPEAT_INTERVAL)
    }
}

impl<K: Hash + Eq> Throttle<K> {
    /// A throttle logging each key at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
        }
    }

    /// One occurrence of `key` at `now`: `Some(held back)` when it is to be logged, with the
    /// number of occurrences held back since the last line (0 the first time); `None` when it is
    /// held back.
    pub fn admit(&mut self, key: K, now: Instant) -> Option<u64> {
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < self.interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let released = std::mem::take(held);
                *at = now;
                Some(released)
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_logged_once_per_interval_with_what_was_held_back() {
        let mut throttle = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(throttle.admit("a", start), Some(0));
        assert_eq!(throttle.admit("a", start + Duration::from_secs(1)), None);
        assert_eq!(throttle.admit("a", start + Duration::from_secs(59)), None);
        // Another key is not held back by the first.
        assert_eq!(throttle.admit("b", start + Duration::from_secs(2)), Some(0));
        assert_eq!(
            throttle.admit("a", start + Duration::from_secs(60)),
            Some(2)
        );
        assert_eq!(throttle.admit("a", start + Duration::from_secs(61)), None);
        assert_eq!(
            throttle.admit("a", start + Duration::from_secs(120)),
            Some(1)
        );
    }
}
