//! Placeholder until the adaptive limiter lands.
use crate::domain::{Millis, Ts};
use serde::{Deserialize, Serialize};
pub struct LimiterConfig {
    pub limit_per_sec: f64,
    pub min_per_sec: f64,
}
#[derive(Debug)]
pub enum Admit {
    Granted,
    Wait { until: Ts, ticket: Ticket },
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub slot: Ts,
    pub epoch: u32,
}
pub struct AdaptiveLimiter {
    next: Ts,
    interval: f64,
}
impl AdaptiveLimiter {
    pub fn new(cfg: LimiterConfig, now: Ts) -> Self {
        AdaptiveLimiter {
            next: now,
            interval: 1000.0 / cfg.limit_per_sec,
        }
    }
    pub fn admit(&mut self, now: Ts, ticket: Option<Ticket>) -> Admit {
        if ticket.is_some_and(|t| t.slot <= now) {
            return Admit::Granted;
        }
        if self.next <= now {
            self.next = now.plus(self.interval as u64);
            return Admit::Granted;
        }
        let slot = self.next;
        self.next = slot.plus(self.interval as u64);
        Admit::Wait {
            until: slot,
            ticket: Ticket { slot, epoch: 0 },
        }
    }
    pub fn on_success(&mut self, _now: Ts) {}
    pub fn on_throttled(&mut self, _now: Ts, _retry_after: Option<Millis>) {}
    pub fn rate(&self) -> f64 {
        1000.0 / self.interval
    }
    pub fn paused_until(&self) -> Option<Ts> {
        None
    }
}
pub struct CarrierBucket {
    tokens: f64,
    cap: f64,
    burst: f64,
    last: Ts,
    ra: Millis,
}
impl CarrierBucket {
    pub fn new(capacity_per_sec: f64, burst: f64, retry_after: Millis, now: Ts) -> Self {
        CarrierBucket {
            tokens: burst,
            cap: capacity_per_sec,
            burst,
            last: now,
            ra: retry_after,
        }
    }
    pub fn offer(&mut self, now: Ts) -> Result<(), Millis> {
        self.tokens =
            (self.tokens + now.since(self.last) as f64 * self.cap / 1000.0).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.ra)
        }
    }
}
