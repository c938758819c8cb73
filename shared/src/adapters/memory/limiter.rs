//! One adaptive limiter per carrier endpoint, in process.

use super::lock;
use crate::domain::{Millis, Ts};
use crate::error::Result;
use crate::policy::Policy;
use crate::ports::{Admit, RateLimiter};
use crate::ratelimit::{AdaptiveLimiter, LimiterConfig, Ticket};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct MemoryLimiter {
    policy: Arc<Policy>,
    limiters: Mutex<BTreeMap<String, AdaptiveLimiter>>,
}

impl MemoryLimiter {
    pub fn new(policy: Arc<Policy>) -> Self {
        MemoryLimiter {
            policy,
            limiters: Mutex::new(BTreeMap::new()),
        }
    }

    fn with<T>(&self, endpoint: &str, now: Ts, f: impl FnOnce(&mut AdaptiveLimiter) -> T) -> T {
        let mut g = lock(&self.limiters);
        if !g.contains_key(endpoint) {
            let cfg = LimiterConfig {
                limit_per_sec: self.policy.rate_limit(endpoint),
                min_per_sec: 1.0,
            };
            g.insert(endpoint.to_string(), AdaptiveLimiter::new(cfg, now));
        }
        match g.get_mut(endpoint) {
            Some(l) => f(l),
            None => unreachable!("inserted above"),
        }
    }

    /// Current pacing rate per endpoint.
    pub fn rates(&self) -> BTreeMap<String, f64> {
        lock(&self.limiters)
            .iter()
            .map(|(k, l)| (k.clone(), l.rate()))
            .collect()
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn admit(&self, endpoint: &str, now: Ts, ticket: Option<Ticket>) -> Result<Admit> {
        Ok(self.with(endpoint, now, |l| l.admit(now, ticket)))
    }
    async fn on_success(&self, endpoint: &str, now: Ts) {
        self.with(endpoint, now, |l| l.on_success(now));
    }
    async fn on_throttled(&self, endpoint: &str, now: Ts, retry_after: Option<Millis>) {
        self.with(endpoint, now, |l| l.on_throttled(now, retry_after));
    }
}
