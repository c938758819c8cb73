//! Carriers as operators see them: each channel's endpoint, its told
//! limit, the pace the limiter sends at, the wait a send asking now would
//! have, the carrier's pause and its answers counted (read from the rate
//! limiter's state, which the dispatchers keep).

use crate::domain::{Channel, Millis, Ts};
use crate::error::Result;
use crate::ports::Deps;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CarrierView {
    pub channel: Channel,
    /// The sender's endpoint (the limiter's key).
    pub endpoint: String,
    /// Whether anything has been sent on the endpoint; when not, the
    /// figures below are the policy's and nothing is counted.
    pub active: bool,
    /// Sends per second the carrier takes, as told by the policy.
    pub limit_per_sec: f64,
    /// Sends per second the limiter paces at now (below the limit after
    /// the carrier throttled).
    pub pace_per_sec: f64,
    /// How long a send asking now would wait for its slot.
    pub queue_wait_ms: Millis,
    /// End of the carrier's Retry-After pause, while it runs (epoch ms,
    /// like every time in the API).
    pub paused_until: Option<Ts>,
    /// Sends the carrier accepted, and 429s it answered, as the limiter
    /// state holds them (on DynamoDB a dispatcher adds its latest accepted
    /// sends with its next change of the endpoint).
    pub accepted: u64,
    pub throttled: u64,
}

/// One view per channel, in the channels' order.
pub async fn carriers(deps: &Deps) -> Result<Vec<CarrierView>> {
    let now = deps.clock.now();
    let mut out = Vec::with_capacity(Channel::ALL.len());
    for channel in Channel::ALL {
        let endpoint = deps.senders.get(channel).endpoint().to_string();
        let gauge = deps.limiter.gauge(&endpoint, now).await?;
        let told = deps.policy.limiter_config(&endpoint);
        out.push(match gauge {
            Some(g) => CarrierView {
                channel,
                endpoint,
                active: true,
                limit_per_sec: g.limit_per_sec,
                pace_per_sec: g.pace_per_sec,
                queue_wait_ms: g.queue_wait,
                paused_until: g.paused_until,
                accepted: g.accepted,
                throttled: g.throttled,
            },
            None => CarrierView {
                channel,
                endpoint,
                active: false,
                limit_per_sec: told.limit_per_sec,
                pace_per_sec: told.limit_per_sec,
                queue_wait_ms: 0,
                paused_until: None,
                accepted: 0,
                throttled: 0,
            },
        });
    }
    Ok(out)
}
