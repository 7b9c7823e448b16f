//! Exponential backoff with jitter, shared by every source's reconnect state machine.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff: `min`, doubling per failure up to `max`, each delay scaled by a random
/// factor in `1 ± jitter` so that many devices restarting together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// Default jitter: ±20 %.
    pub const DEFAULT_JITTER: f64 = 0.2;

    /// A backoff from `min` to `max` with ±20 % jitter. `max` below `min` is raised to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_jitter(min, max, Self::DEFAULT_JITTER)
    }

    /// A backoff with an explicit jitter fraction in `0.0..=1.0`.
    pub fn with_jitter(min: Duration, max: Duration, jitter: f64) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: jitter.clamp(0.0, 1.0),
            next: min,
        }
    }

    /// The delay before the next attempt; each call doubles the following one up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter);
        base.mul_f64(factor).min(self.max)
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The largest delay this backoff gives.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut backoff =
            Backoff::with_jitter(Duration::from_millis(100), Duration::from_millis(500), 0.0);
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut backoff = Backoff::new(Duration::from_millis(1000), Duration::from_secs(10));
        let first = backoff.next_delay();
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(backoff.next_delay() <= Duration::from_secs(10));
        }
    }
}
