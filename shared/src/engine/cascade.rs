//! Cascade state: one per (incident, stakeholder, route).

use crate::domain::{Channel, IncidentId, Millis, Severity, StakeholderId, Tier, Ts};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `Member`: a stakeholder of the incident's group. `Manager`: the bounded
/// escalation cascade to an on-call manager, which never escalates further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Member,
    Manager,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CascadeKey {
    pub incident: IncidentId,
    pub stakeholder: StakeholderId,
    pub route: Route,
}

impl fmt::Display for CascadeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.route {
            Route::Member => write!(f, "{}/{}", self.incident, self.stakeholder),
            Route::Manager => write!(f, "{}/{}!manager", self.incident, self.stakeholder),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CascadeStatus {
    Pending,
    Active,
    Acknowledged,
    Escalated,
    Cancelled,
}

impl CascadeStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CascadeStatus::Acknowledged | CascadeStatus::Escalated | CascadeStatus::Cancelled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CascadeStatus::Pending => "pending",
            CascadeStatus::Active => "active",
            CascadeStatus::Acknowledged => "acknowledged",
            CascadeStatus::Escalated => "escalated",
            CascadeStatus::Cancelled => "cancelled",
        }
    }
}

/// The channel plan snapshotted at start: at most four channels, no repeats.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelPlan {
    len: u8,
    channels: [Channel; 4],
}

impl ChannelPlan {
    pub fn new(channels: &[Channel]) -> Self {
        let mut p = ChannelPlan {
            len: 0,
            channels: [Channel::Voice; 4],
        };
        for &c in channels {
            if p.len < 4 && !p.as_slice().contains(&c) {
                p.channels[usize::from(p.len)] = c;
                p.len += 1;
            }
        }
        p
    }
    pub fn as_slice(&self) -> &[Channel] {
        &self.channels[..usize::from(self.len)]
    }
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for ChannelPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for ChannelPlan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ChannelPlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Channel>::deserialize(d)?;
        if v.len() > 4 {
            return Err(serde::de::Error::custom(
                "a channel plan has at most four channels",
            ));
        }
        Ok(ChannelPlan::new(&v))
    }
}

/// Where an attempt is. Each phase has a due time; the matching timer or the
/// sweep moves it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// A send command is out; waiting for the carrier's answer.
    Sending { since: Ts },
    /// Waiting out the backoff after a transient error.
    Backoff { until: Ts },
    /// Waiting out a carrier's Retry-After.
    Throttled { until: Ts },
    /// Accepted by the carrier; waiting for a receipt.
    AwaitingReceipt { deadline: Ts },
    /// Delivered; waiting for an ACK until the escalation delay ends.
    Holding { until: Ts },
}

impl Phase {
    pub fn due(self) -> Ts {
        match self {
            Phase::Sending { since } => since,
            Phase::Backoff { until } | Phase::Throttled { until } | Phase::Holding { until } => {
                until
            }
            Phase::AwaitingReceipt { deadline } => deadline,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unique within the cascade; with the cascade key, the idempotency key of a send.
    pub id: u32,
    pub channel: Channel,
    /// Transient retries already spent on this channel.
    pub retries: u32,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cascade {
    pub key: CascadeKey,
    pub severity: Severity,
    pub tier: Tier,
    pub plan: ChannelPlan,
    pub status: CascadeStatus,
    /// Bumped by every transition; conditional writes compare it.
    pub version: u64,
    pub created_at: Ts,
    /// Index in `plan` of the next channel not yet started.
    pub next_step: u8,
    pub in_flight: Vec<Attempt>,
    pub consecutive_failures: u32,
    pub next_attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_contact_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Ts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_on: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Ts>,
}

impl Cascade {
    pub fn new(
        key: CascadeKey,
        severity: Severity,
        tier: Tier,
        plan: ChannelPlan,
        now: Ts,
    ) -> Self {
        Cascade {
            key,
            severity,
            tier,
            plan,
            status: CascadeStatus::Pending,
            version: 0,
            created_at: now,
            next_step: 0,
            in_flight: Vec::new(),
            consecutive_failures: 0,
            next_attempt: 1,
            first_contact_at: None,
            acked_at: None,
            acked_on: None,
            ended_at: None,
        }
    }

    /// The earliest time something is due (for the sweep's index); none once terminal.
    pub fn next_due(&self) -> Option<Ts> {
        match self.status {
            CascadeStatus::Pending => Some(self.created_at),
            CascadeStatus::Active => self.in_flight.iter().map(|a| a.phase.due()).min(),
            _ => None,
        }
    }

    /// Whether the sweep should re-drive it: due more than `age` ago.
    pub fn overdue(&self, now: Ts, age: Millis) -> bool {
        self.next_due().is_some_and(|d| d.plus(age) < now)
    }

    pub fn attempt(&self, id: u32) -> Option<&Attempt> {
        self.in_flight.iter().find(|a| a.id == id)
    }
}
