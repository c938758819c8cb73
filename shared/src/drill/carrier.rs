//! The simulated carrier's hidden capacity, for drills and the limiter's
//! own simulations.

use crate::domain::{Millis, Ts};

/// A carrier's hidden capacity: a token bucket of `capacity_per_sec` with
/// `burst` tokens (e.g. answers 429 "after 150 messages" with burst 150).
/// Starts full.
#[derive(Debug, Clone)]
pub struct CarrierBucket {
    capacity_per_sec: f64,
    burst: f64,
    retry_after: Millis,
    tokens: f64,
    last: Ts,
}

impl CarrierBucket {
    /// Tolerance for float rounding in the refill: a bucket refilled for
    /// exactly one token's time accepts.
    const EPSILON: f64 = 1e-9;

    pub fn new(capacity_per_sec: f64, burst: f64, retry_after: Millis, now: Ts) -> Self {
        CarrierBucket {
            capacity_per_sec,
            burst,
            retry_after,
            tokens: burst,
            last: now,
        }
    }

    /// Ok(()) if accepted, Err(retry_after) if it answers 429.
    pub fn offer(&mut self, now: Ts) -> Result<(), Millis> {
        self.refill(now);
        if self.tokens >= 1.0 - Self::EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(self.retry_after)
        }
    }

    /// The carrier's capacity changes at `now` (tokens earned until then
    /// accrue at the old capacity).
    pub fn set_capacity(&mut self, now: Ts, capacity_per_sec: f64) {
        self.refill(now);
        self.capacity_per_sec = capacity_per_sec;
    }

    fn refill(&mut self, now: Ts) {
        let earned = now.since(self.last) as f64 * self.capacity_per_sec / 1000.0;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = self.last.max(now);
    }
}
