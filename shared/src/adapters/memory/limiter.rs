//! One adaptive limiter per carrier endpoint, in process.

use super::lock;
use crate::domain::{Millis, Ts};
use crate::error::Result;
use crate::policy::Policy;
use crate::ports::{Admission, Admit, RateLimiter};
use crate::ratelimit::{AdaptiveLimiter, Gauge, Lane, Throttling, Ticket};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct MemoryLimiter {
    policy: Arc<Policy>,
    limiters: Mutex<BTreeMap<String, AdaptiveLimiter>>,
    /// Per endpoint, its first backlog: the latest slot a waiting send was
    /// given, and whether the backlog has drained since.
    backlog: Mutex<BTreeMap<String, (Ts, bool)>>,
}

impl MemoryLimiter {
    pub fn new(policy: Arc<Policy>) -> Self {
        MemoryLimiter {
            policy,
            limiters: Mutex::new(BTreeMap::new()),
            backlog: Mutex::new(BTreeMap::new()),
        }
    }

    fn with<T>(&self, endpoint: &str, now: Ts, f: impl FnOnce(&mut AdaptiveLimiter) -> T) -> T {
        let mut g = lock(&self.limiters);
        if !g.contains_key(endpoint) {
            let cfg = self.policy.limiter_config(endpoint);
            g.insert(endpoint.to_string(), AdaptiveLimiter::new(cfg, now));
        }
        match g.get_mut(endpoint) {
            Some(l) => f(l),
            None => unreachable!("inserted above"),
        }
    }

    /// Per endpoint, the end of its first backlog (sends waiting for it
    /// without a break since the first one waited): the window of a mass
    /// activation's first contacts.
    pub fn first_backlog_end(&self) -> BTreeMap<String, Ts> {
        lock(&self.backlog)
            .iter()
            .map(|(k, (end, _))| (k.clone(), *end))
            .collect()
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
    async fn admit(
        &self,
        endpoint: &str,
        now: Ts,
        ticket: Option<Ticket>,
        lane: Lane,
    ) -> Result<Admission> {
        let admit = self.with(endpoint, now, |l| match lane {
            Lane::Member => l.admit(now, ticket),
            Lane::Priority => l.admit_priority(now, ticket),
        });
        let mut g = lock(&self.backlog);
        match (g.get_mut(endpoint), admit) {
            (Some((end, drained)), _) if !*drained && now > *end => *drained = true,
            (Some((end, false)), Admit::Wait { until, .. }) => *end = (*end).max(until),
            (None, Admit::Wait { until, .. }) => {
                g.insert(endpoint.to_string(), (until, false));
            }
            _ => {}
        }
        Ok(Admission::Decided(admit))
    }
    async fn on_success(&self, endpoint: &str, now: Ts) {
        self.with(endpoint, now, |l| l.on_success(now));
    }
    async fn on_throttled(&self, endpoint: &str, now: Ts, retry_after: Option<Millis>) {
        self.with(endpoint, now, |l| l.on_throttled(now, retry_after));
    }
    async fn throttling(&self, endpoint: &str, now: Ts) -> Result<Option<Throttling>> {
        Ok(lock(&self.limiters)
            .get(endpoint)
            .and_then(|l| l.throttling(now)))
    }
    async fn queue_wait(&self, endpoint: &str, now: Ts) -> Result<Millis> {
        Ok(lock(&self.limiters)
            .get(endpoint)
            .map_or(0, |l| l.queue_wait(now)))
    }
    async fn gauge(&self, endpoint: &str, now: Ts) -> Result<Option<Gauge>> {
        Ok(lock(&self.limiters).get(endpoint).map(|l| l.gauge(now)))
    }
}
