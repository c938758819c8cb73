//! Cascade state: one per (incident, stakeholder, route).

use crate::domain::{Channel, IncidentId, Millis, Severity, StakeholderId, Tier, Ts};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a cascade exists. `Member`: a stakeholder of the incident's group.
/// `Escalation`: `about`'s cascade failed, and this cascade tells the
/// cascade's stakeholder (an on-call manager, their manager, or the policy's
/// fallback) on the high-priority route. One escalation cascade per (failed
/// person, person told): a chain never names the same person twice, so the
/// key is unique along it.
///
/// Stored, signed and exported as text: `member` or `escalation:<about>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Member,
    Escalation { about: StakeholderId },
}

impl Route {
    pub fn escalation(about: StakeholderId) -> Self {
        Route::Escalation { about }
    }
    pub fn is_escalation(&self) -> bool {
        matches!(self, Route::Escalation { .. })
    }
    /// Whose cascade failure an escalation reports.
    pub fn about(&self) -> Option<&StakeholderId> {
        match self {
            Route::Member => None,
            Route::Escalation { about } => Some(about),
        }
    }
    /// The text form: `member` or `escalation:<about>` (ids never contain `#`, `|` or `/`).
    pub fn encode(&self) -> String {
        match self {
            Route::Member => "member".into(),
            Route::Escalation { about } => format!("escalation:{about}"),
        }
    }
    /// Parses [`Route::encode`]'s form.
    pub fn decode(s: &str) -> Option<Route> {
        match s {
            "member" => Some(Route::Member),
            _ => s
                .strip_prefix("escalation:")
                .and_then(|a| StakeholderId::parse(a).ok())
                .map(Route::escalation),
        }
    }
}

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Route::decode(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid route {:?}: expected \"member\" or \"escalation:<stakeholder id>\"",
                s.chars().take(140).collect::<String>()
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CascadeKey {
    pub incident: IncidentId,
    pub stakeholder: StakeholderId,
    pub route: Route,
}

impl fmt::Display for CascadeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.route {
            Route::Member => write!(f, "{}/{}", self.incident, self.stakeholder),
            Route::Escalation { about } => {
                write!(
                    f,
                    "{}/{}!escalation:{about}",
                    self.incident, self.stakeholder
                )
            }
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
    /// The plan with the channel at `from` moved to just after the one at
    /// `to` (`from < to`); the others keep their order.
    pub fn moved_after(&self, from: usize, to: usize) -> Self {
        let mut v = self.as_slice().to_vec();
        if from < to && to < v.len() {
            let c = v.remove(from);
            v.insert(to, c);
        }
        ChannelPlan::new(&v)
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
    /// Not sent yet, on purpose: the person was contacted on this channel by
    /// another cascade within the hold, or a parallel call goes first. No
    /// retry is spent.
    Deferred { until: Ts },
}

impl Phase {
    pub fn due(self) -> Ts {
        match self {
            Phase::Sending { since } => since,
            Phase::Backoff { until }
            | Phase::Throttled { until }
            | Phase::Holding { until }
            | Phase::Deferred { until } => until,
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
    /// When the carrier (or the endpoint's limiter, paused by the carrier)
    /// first held this attempt back with a 429: throttling is bounded per
    /// person from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_since: Option<Ts>,
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
    /// A member cascade that failed: whom its failure has been escalated to,
    /// in chain order (the open escalation is the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalated_to: Vec<StakeholderId>,
    /// The escalation chain of this member's failure ended without anyone
    /// acknowledging it (ESCALATION_UNDELIVERED was recorded).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalation_undelivered: bool,
    /// Channels that cannot reach this person: refused at send,
    /// UNREACHABLE, or held out by a throttling carrier (not a message
    /// unanswered or unconfirmed). A parallel voice call never calls a dead
    /// voice channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_channels: Vec<Channel>,
    /// Channels known to be busy for this person, until when (learned by
    /// replanning; see `Event::Replan`).
    #[serde(default, skip_serializing_if = "no_busy")]
    pub busy_until: [Option<Ts>; 4],
    /// An ESCALATED cascade's failure was taken up: the next person of its
    /// chain was told, or ESCALATION_UNDELIVERED recorded. Until then (or an
    /// ACK) it stays due, so the sweep re-drives an escalation whose job was
    /// lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_on: bool,
    /// A withdrawn escalation's update notice was offered to the carrier.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noticed: bool,
    /// The key of the answer the person gave, when they gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The last of the incident's updates recorded for this person.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub updated: u32,
    /// Set at creation: the person's quiet hours hold the first message
    /// until then (a severity the policy lets through has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_until: Option<Ts>,
}

fn no_busy(b: &[Option<Ts>; 4]) -> bool {
    b.iter().all(Option::is_none)
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
            escalated_to: Vec::new(),
            escalation_undelivered: false,
            noticed: false,
            response: None,
            updated: 0,
            quiet_until: None,
            handed_on: false,
            dead_channels: Vec::new(),
            busy_until: [None; 4],
        }
    }

    /// The earliest time something is due (for the sweep's index); none once terminal.
    pub fn next_due(&self) -> Option<Ts> {
        match self.status {
            CascadeStatus::Pending => Some(self.created_at),
            CascadeStatus::Active => self.in_flight.iter().map(|a| a.phase.due()).min(),
            CascadeStatus::Escalated if self.escalation_pending() => self.ended_at,
            _ => None,
        }
    }

    /// ESCALATED, and its failure not yet taken up (nobody told next, no
    /// ESCALATION_UNDELIVERED) nor acknowledged.
    pub fn escalation_pending(&self) -> bool {
        self.status == CascadeStatus::Escalated && !self.handed_on && self.acked_at.is_none()
    }

    /// Whether the answer to another message that named this escalation's
    /// failure changes anything: it acknowledges one still running, and one
    /// that had moved up the chain unacknowledged; anything else ended
    /// already and would only be a stale event.
    pub fn takes_bundle_ack(&self) -> bool {
        !self.status.is_terminal()
            || (self.status == CascadeStatus::Escalated
                && self.key.route.is_escalation()
                && self.acked_at.is_none())
    }

    /// Whether the sweep should re-drive it: due more than `age` ago.
    pub fn overdue(&self, now: Ts, age: Millis) -> bool {
        self.next_due().is_some_and(|d| d.plus(age) < now)
    }

    pub fn attempt(&self, id: u32) -> Option<&Attempt> {
        self.in_flight.iter().find(|a| a.id == id)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
