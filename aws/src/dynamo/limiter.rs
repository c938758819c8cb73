//! Distributed rate limiter: the same [`AdaptiveLimiter`] the drills and
//! `muster serve` use, its state kept in one item per carrier endpoint
//! (`LIM#<endpoint>` / `BUCKET` in the state table: `state`, the limiter
//! as JSON, and `version`). One algorithm, so drill figures are production
//! figures; this adapter only stores it.
//!
//! Every change is a read (consistent), the pure function, and a put
//! conditional on `version = :read` that sets `version + 1`: two writers can
//! never both apply a change to one state (no token spent twice, no pause
//! lost). A lost race reads again; after [`RACES`] lost races the send is
//! told to come back shortly ([`Admission::Retry`]), never failed, so
//! contention costs a short delay, not an SQS visibility timeout.
//!
//! Accepted sends are counted locally and applied with the process's next
//! change of the same endpoint (one write per send, not two), except while
//! the endpoint is known to be throttling: then the first acceptance is
//! written at once, so every process learns that the carrier takes sends
//! again. A 429 is written at once (it pauses every process).

use super::{Item, get_n, get_s, n, s};
use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use muster::domain::{Millis, Ts};
use muster::policy::Policy;
use muster::ports::{Admission, Lane, RateLimiter};
use muster::ratelimit::{AdaptiveLimiter, Gauge, LimiterConfig, Throttling, Ticket};
use muster::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Lost races on one endpoint's item before a send is told to come back.
pub const RACES: usize = 8;
/// How much later a send that lost every race comes back.
pub const RETRY_AFTER_CONTENTION_MS: Millis = 200;

/// What this process knows of one endpoint between writes.
#[derive(Debug, Default)]
struct Local {
    /// Accepted sends not yet applied to the stored state.
    successes: Vec<Ts>,
    /// The endpoint was throttling when its state was last read.
    throttled: bool,
}

pub struct DynamoLimiter {
    client: Client,
    table: String,
    policy: Arc<Policy>,
    local: Mutex<HashMap<String, Local>>,
}

impl DynamoLimiter {
    pub fn new(client: Client, table: impl Into<String>, policy: Arc<Policy>) -> Self {
        DynamoLimiter {
            client,
            table: table.into(),
            policy,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// The table the limiter items live in.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config(&self, endpoint: &str) -> LimiterConfig {
        self.policy.limiter_config(endpoint)
    }

    /// The stored limiter and its version (`None`: not stored yet).
    async fn read(&self, endpoint: &str) -> Result<Option<(AdaptiveLimiter, u64)>> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("LIM#{endpoint}")))
            .key("sk", s("BUCKET"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk("reading a rate limiter", e))?;
        let Some(item) = resp.item() else {
            return Ok(None);
        };
        let state = limiter_of(item)?;
        Ok(Some((state, get_n(item, "version")?)))
    }

    /// Writes `state` if the stored version is still `version`.
    async fn write(
        &self,
        endpoint: &str,
        version: Option<u64>,
        state: &AdaptiveLimiter,
    ) -> Result<bool> {
        let doc = serde_json::to_string(state)
            .map_err(|e| Error::permanent(format!("encoding a rate limiter: {e}")))?;
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("LIM#{endpoint}")))
            .item("sk", s("BUCKET"))
            .item("state", s(doc))
            .item("version", n(version.map_or(1, |v| v + 1)));
        let req = match version {
            Some(v) => req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
            None => req.condition_expression("attribute_not_exists(pk)"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(map_sdk("writing a rate limiter", e)),
        }
    }

    /// Reads, applies the pending successes and `change`, and writes back
    /// conditionally; `None` when every try lost a race.
    async fn update<T>(
        &self,
        endpoint: &str,
        now: Ts,
        change: impl Fn(&mut AdaptiveLimiter) -> T,
    ) -> Result<Option<T>> {
        for _ in 0..RACES {
            let stored = self.read(endpoint).await?;
            let version = stored.as_ref().map(|(_, v)| *v);
            let mut state = match stored {
                Some((mut state, _)) => {
                    state.reconfigure(self.config(endpoint));
                    state
                }
                None => AdaptiveLimiter::new(self.config(endpoint), now),
            };
            let pending = self
                .local()
                .get(endpoint)
                .map(|l| l.successes.clone())
                .unwrap_or_default();
            for at in &pending {
                state.on_success(*at);
            }
            let out = change(&mut state);
            if self.write(endpoint, version, &state).await? {
                let mut g = self.local();
                let l = g.entry(endpoint.to_string()).or_default();
                l.successes.drain(..pending.len().min(l.successes.len()));
                l.throttled = state.throttled_since().is_some();
                return Ok(Some(out));
            }
        }
        tracing::info!(
            endpoint,
            "rate limiter contended; the send comes back shortly"
        );
        Ok(None)
    }
}

fn limiter_of(item: &Item) -> Result<AdaptiveLimiter> {
    serde_json::from_str(get_s(item, "state")?)
        .map_err(|e| Error::permanent(format!("stored rate limiter is not valid: {e}")))
}

#[async_trait]
impl RateLimiter for DynamoLimiter {
    async fn admit(
        &self,
        endpoint: &str,
        now: Ts,
        ticket: Option<Ticket>,
        lane: Lane,
    ) -> Result<Admission> {
        let decided = self
            .update(endpoint, now, |l| match lane {
                Lane::Member => l.admit(now, ticket),
                Lane::Priority => l.admit_priority(now, ticket),
            })
            .await?;
        Ok(match decided {
            Some(admit) => Admission::Decided(admit),
            None => Admission::Retry {
                at: now.plus(RETRY_AFTER_CONTENTION_MS),
            },
        })
    }

    async fn on_success(&self, endpoint: &str, now: Ts) {
        let write_now = {
            let mut g = self.local();
            let l = g.entry(endpoint.to_string()).or_default();
            l.successes.push(now);
            l.throttled
        };
        if write_now && let Err(e) = self.update(endpoint, now, |_| ()).await {
            tracing::warn!(endpoint, error = %e, "could not record an accepted send in the shared limiter");
        }
    }

    async fn on_throttled(&self, endpoint: &str, now: Ts, retry_after: Option<Millis>) {
        match self
            .update(endpoint, now, |l| l.on_throttled(now, retry_after))
            .await
        {
            Ok(Some(())) => {}
            Ok(None) => {
                tracing::warn!(
                    endpoint,
                    "could not record a throttle in the contended shared limiter"
                )
            }
            Err(e) => {
                tracing::warn!(endpoint, error = %e, "could not record a throttle in the shared limiter")
            }
        }
    }

    async fn throttling(&self, endpoint: &str, now: Ts) -> Result<Option<Throttling>> {
        Ok(self
            .read(endpoint)
            .await?
            .and_then(|(state, _)| state.throttling(now)))
    }

    async fn queue_wait(&self, endpoint: &str, now: Ts) -> Result<Millis> {
        Ok(self
            .read(endpoint)
            .await?
            .map_or(0, |(state, _)| state.queue_wait(now)))
    }

    /// The stored state (this process's accepted sends not yet written are
    /// not in it: they are counted with its next change).
    async fn gauge(&self, endpoint: &str, now: Ts) -> Result<Option<Gauge>> {
        Ok(self
            .read(endpoint)
            .await?
            .map(|(state, _)| state.gauge(now)))
    }
}
