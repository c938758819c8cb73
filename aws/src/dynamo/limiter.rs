//! Distributed rate limiter: one token bucket item per carrier endpoint,
//! `LIM#<endpoint>` / `BUCKET` in the state table, with `tokens` (in
//! thousandths; negative while slots are booked ahead), `at` (ms of the last
//! refill), `rate` (thousandths of a token per second, adapted),
//! `paused_until` (ms) and `epoch` (bumped by every throttle).
//!
//! A process takes tokens in chunks of up to [`CHUNK`] with one read and one
//! write conditional on `at` being what it read (a lost race re-reads), and
//! spends them locally for at most [`LEASE_MS`], so the table sees about one
//! write per `CHUNK` sends while tokens are available.
//!
//! Bookings, as in the memory `AdaptiveLimiter`: a send that finds no token
//! books the next one. It takes a token the bucket does not have yet (the
//! bucket goes into debt) and gets a [`Ticket`] for the instant that token
//! will have refilled, with the bucket's epoch. Waiting jobs therefore hold
//! distinct, increasing slots across every process, and never a herd. A job
//! that comes back with a ticket of the current epoch is granted at or after
//! its slot without taking another token (one consistent read checks the
//! epoch). A throttle (429) sets `paused_until` from `Retry-After` (or
//! [`DEFAULT_PAUSE_MS`]), halves `rate` (not below the floor), empties the
//! bucket (voiding the debt) and bumps the epoch, which voids every booked
//! ticket: holders book again when they come back, in the order of their old
//! slots. Every process honours the pause at its next chunk, and drops its
//! own lease at once. The rate recovers additively ([`RECOVERY_PER_SEC`] per
//! second) up to the policy's limit.

use super::{Item, get_n, n, s};
use crate::error::map_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use muster::domain::{Millis, Ts};
use muster::policy::Policy;
use muster::ports::{Admit, RateLimiter};
use muster::ratelimit::Ticket;
use muster::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Tokens taken from the table at once.
pub const CHUNK: u64 = 10;
/// How long a process may spend a chunk.
pub const LEASE_MS: u64 = 1_000;
/// Pause after a 429 without `Retry-After`.
pub const DEFAULT_PAUSE_MS: u64 = 1_000;
/// Rate recovered per second after a halving, in tokens per second.
pub const RECOVERY_PER_SEC: f64 = 1.0;
/// Floor of the adapted rate, in tokens per second.
pub const MIN_RATE: f64 = 1.0;
const RACES: usize = 4;
/// Epoch of a bucket item written before epochs were kept.
const FIRST_EPOCH: u32 = 1;
/// Epoch of a ticket that books nothing (a local pause): never current.
const UNBOOKED: u32 = 0;

#[derive(Debug, Clone, Copy, Default)]
struct Lease {
    tokens: u64,
    expires: Ts,
    paused_until: Ts,
}

pub struct DynamoLimiter {
    client: Client,
    table: String,
    policy: Arc<Policy>,
    leases: Mutex<HashMap<String, Lease>>,
}

/// The bucket as stored, in thousandths.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: i64,
    at: Ts,
    rate: u64,
    paused_until: Ts,
    epoch: u32,
}

fn get_i(it: &Item, name: &str) -> Result<i64> {
    match it.get(name) {
        Some(aws_sdk_dynamodb::types::AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| Error::permanent(format!("attribute {name} is not an integer"))),
        _ => Err(Error::permanent(format!(
            "stored item lacks number attribute {name}"
        ))),
    }
}

/// What taking from the bucket gave.
enum Took {
    /// Tokens to spend now.
    Tokens(u64),
    /// A slot booked for later.
    Booked(Ticket),
}

impl DynamoLimiter {
    pub fn new(client: Client, table: impl Into<String>, policy: Arc<Policy>) -> Self {
        DynamoLimiter {
            client,
            table: table.into(),
            policy,
            leases: Mutex::new(HashMap::new()),
        }
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limit(&self, endpoint: &str) -> u64 {
        (self.policy.rate_limit(endpoint) * 1000.0) as u64
    }

    async fn read(&self, endpoint: &str) -> Result<Option<Bucket>> {
        let resp = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("LIM#{endpoint}")))
            .key("sk", s("BUCKET"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_sdk("reading a rate limit bucket", e))?;
        resp.item()
            .map(|it: &Item| {
                Ok(Bucket {
                    tokens: get_i(it, "tokens")?,
                    at: Ts(get_n(it, "at")?),
                    rate: get_n(it, "rate")?,
                    paused_until: Ts(get_n(it, "paused_until")?),
                    epoch: match it.get("epoch") {
                        Some(_) => u32::try_from(get_n(it, "epoch")?)
                            .map_err(|_| Error::permanent("bucket epoch out of range"))?,
                        None => FIRST_EPOCH,
                    },
                })
            })
            .transpose()
    }

    /// Writes `next` if the stored bucket is still `prev` (by its `at`).
    async fn write(&self, endpoint: &str, prev: Option<Bucket>, next: Bucket) -> Result<bool> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("LIM#{endpoint}")))
            .item("sk", s("BUCKET"))
            .item("tokens", n(next.tokens))
            .item("at", n(next.at.0))
            .item("rate", n(next.rate))
            .item("paused_until", n(next.paused_until.0))
            .item("epoch", n(next.epoch));
        req = match prev {
            Some(p) => req
                .condition_expression("#at = :at")
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":at", n(p.at.0)),
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
            Err(e) => Err(map_sdk("writing a rate limit bucket", e)),
        }
    }

    /// The bucket refilled to `now`, its rate recovered toward the limit.
    fn refill(&self, endpoint: &str, b: Option<Bucket>, now: Ts) -> Bucket {
        let limit = self.limit(endpoint);
        match b {
            None => Bucket {
                tokens: i64::try_from(limit).unwrap_or(i64::MAX),
                at: now,
                rate: limit,
                paused_until: Ts(0),
                epoch: FIRST_EPOCH,
            },
            Some(b) => {
                let from = b.at.max(b.paused_until);
                let elapsed = now.since(from);
                let rate = (b.rate + (RECOVERY_PER_SEC * elapsed as f64) as u64).min(limit);
                // Burst capacity: one second at the current rate.
                let gained = i64::try_from(rate.saturating_mul(elapsed) / 1000).unwrap_or(i64::MAX);
                let cap = i64::try_from(rate.max(1000)).unwrap_or(i64::MAX);
                let tokens = b.tokens.saturating_add(gained).min(cap);
                Bucket {
                    tokens,
                    at: now.max(b.at),
                    rate,
                    paused_until: b.paused_until,
                    epoch: b.epoch,
                }
            }
        }
    }

    /// Takes up to a chunk from the table, or books the next token.
    async fn take(&self, endpoint: &str, now: Ts) -> Result<Took> {
        for _ in 0..RACES {
            let prev = self.read(endpoint).await?;
            let b = self.refill(endpoint, prev, now);
            let paused = b.paused_until > now;
            let whole = if paused { 0 } else { b.tokens.max(0) / 1000 };
            let (next, took) = if whole > 0 {
                let take = whole.min(CHUNK as i64);
                let next = Bucket {
                    tokens: b.tokens - take * 1000,
                    ..b
                };
                (next, Took::Tokens(take as u64))
            } else {
                // Book: the token after the debt already booked, refilled
                // from the end of any pause.
                let next = Bucket {
                    tokens: b.tokens - 1000,
                    ..b
                };
                let missing = u64::try_from(-next.tokens).unwrap_or(0);
                let wait = (missing * 1000).div_ceil(b.rate.max(1));
                let slot = now.max(b.paused_until).plus(wait.max(1));
                (
                    next,
                    Took::Booked(Ticket {
                        slot,
                        epoch: b.epoch,
                    }),
                )
            };
            if self.write(endpoint, prev, next).await? {
                return Ok(took);
            }
        }
        Err(Error::Conflict(format!(
            "rate limit bucket {endpoint} kept changing"
        )))
    }

    async fn pause(&self, endpoint: &str, now: Ts, retry_after: Option<Millis>) -> Result<()> {
        let until = now.plus(retry_after.unwrap_or(DEFAULT_PAUSE_MS));
        {
            let mut g = self.lease();
            let l = g.entry(endpoint.to_string()).or_default();
            l.tokens = 0;
            l.paused_until = l.paused_until.max(until);
        }
        let min = (MIN_RATE * 1000.0) as u64;
        for _ in 0..RACES {
            let prev = self.read(endpoint).await?;
            let b = self.refill(endpoint, prev, now);
            let next = Bucket {
                tokens: 0,
                at: b.at,
                rate: (b.rate / 2).max(min),
                paused_until: b.paused_until.max(until),
                epoch: b.epoch.wrapping_add(1).max(FIRST_EPOCH),
            };
            if self.write(endpoint, prev, next).await? {
                return Ok(());
            }
        }
        Err(Error::Conflict(format!(
            "rate limit bucket {endpoint} kept changing"
        )))
    }
}

#[async_trait]
impl RateLimiter for DynamoLimiter {
    async fn admit(&self, endpoint: &str, now: Ts, ticket: Option<Ticket>) -> Result<Admit> {
        {
            let mut g = self.lease();
            let l = g.entry(endpoint.to_string()).or_default();
            if l.paused_until > now {
                let until = l.paused_until;
                return Ok(Admit::Wait {
                    until,
                    ticket: Ticket {
                        slot: until,
                        epoch: UNBOOKED,
                    },
                });
            }
        }
        // A booked slot of the current epoch: granted at its slot, without
        // another token; a ticket of an older epoch books again below.
        if let Some(t) = ticket.filter(|t| t.epoch != UNBOOKED) {
            let current = self.read(endpoint).await?.map(|b| b.epoch);
            if current == Some(t.epoch) {
                return Ok(if now >= t.slot {
                    Admit::Granted
                } else {
                    Admit::Wait {
                        until: t.slot,
                        ticket: t,
                    }
                });
            }
        }
        {
            let mut g = self.lease();
            let l = g.entry(endpoint.to_string()).or_default();
            if l.tokens > 0 && now < l.expires {
                l.tokens -= 1;
                return Ok(Admit::Granted);
            }
        }
        match self.take(endpoint, now).await? {
            Took::Tokens(took) => {
                let mut g = self.lease();
                let l = g.entry(endpoint.to_string()).or_default();
                l.tokens = took.saturating_sub(1);
                l.expires = now.plus(LEASE_MS);
                Ok(Admit::Granted)
            }
            Took::Booked(ticket) => Ok(Admit::Wait {
                until: ticket.slot,
                ticket,
            }),
        }
    }

    async fn on_success(&self, _endpoint: &str, _now: Ts) {}

    async fn on_throttled(&self, endpoint: &str, now: Ts, retry_after: Option<Millis>) {
        if let Err(e) = self.pause(endpoint, now, retry_after).await {
            tracing::warn!(endpoint, error = %e, "could not record a throttle in the shared bucket; paused locally");
        }
    }
}
