//! What one cascade counts for in its incident's status. Stores keep an
//! incident's [`Tally`] as its cascades change: the write that creates a
//! cascade adds `Tally::of(cascade)`, a transition adds the difference
//! between the cascade after and before, in the same atomic write. So the
//! status of a 100,000-person incident reads a few counters, never every
//! cascade, and the counts are exactly those of the stored cascades.

use super::{Cascade, CascadeStatus};
use crate::domain::{Channel, Tier};
use serde::Serialize;

fn state_index(s: CascadeStatus) -> usize {
    match s {
        CascadeStatus::Pending => 0,
        CascadeStatus::Active => 1,
        CascadeStatus::Acknowledged => 2,
        CascadeStatus::Escalated => 3,
        CascadeStatus::Cancelled => 4,
    }
}

const MEMBER: usize = 0;
const ESCALATION: usize = MEMBER + 5;
const TIER: usize = ESCALATION + 5;
const ACKED_ON: usize = TIER + 5 * Tier::COUNT;
const TRYING: usize = ACKED_ON + 4;
const REVIEW: usize = TRYING + 4;
const CONTACTED: usize = REVIEW + 1;
const UNDELIVERED: usize = CONTACTED + 1;
const HANDOFF: usize = UNDELIVERED + 1;
/// Number of counters in a tally.
pub const SLOTS: usize = HANDOFF + 1;

/// Counters of an incident's cascades (members by state, tier and channel;
/// escalations by state). Counters are signed so that a difference is a
/// tally too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally(pub [i64; SLOTS]);

impl Default for Tally {
    fn default() -> Self {
        Tally([0; SLOTS])
    }
}

impl Tally {
    /// What one cascade counts for.
    pub fn of(c: &Cascade, needs_review: bool) -> Tally {
        let mut t = Tally::default();
        let s = state_index(c.status);
        t.0[HANDOFF] = i64::from(c.escalation_pending());
        if c.key.route.is_escalation() {
            t.0[ESCALATION + s] = 1;
        } else {
            t.0[MEMBER + s] = 1;
            t.0[TIER + 5 * c.tier.index() + s] = 1;
            if let Some(ch) = c.acked_on {
                t.0[ACKED_ON + ch.index()] = 1;
            }
            for ch in Channel::ALL {
                if c.in_flight.iter().any(|a| a.channel == ch) {
                    t.0[TRYING + ch.index()] = 1;
                }
            }
            t.0[REVIEW] = i64::from(needs_review);
            t.0[CONTACTED] = i64::from(c.first_contact_at.is_some());
            t.0[UNDELIVERED] = i64::from(c.escalation_undelivered);
        }
        t
    }

    /// What a write that turns `before` into `after` adds.
    pub fn change(before: Option<(&Cascade, bool)>, after: (&Cascade, bool)) -> Tally {
        let mut t = Tally::of(after.0, after.1);
        if let Some((c, review)) = before {
            t.sub(&Tally::of(c, review));
        }
        t
    }

    pub fn add(&mut self, other: &Tally) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    pub fn sub(&mut self, other: &Tally) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a -= b;
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }

    /// The counters that are not zero, by name (a store's attribute names).
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != 0)
            .map(|(i, n)| (NAMES[i], *n))
    }

    /// Adds the counter called `name`; false for a name no tally has.
    pub fn add_named(&mut self, name: &str, n: i64) -> bool {
        match NAMES.iter().position(|x| *x == name) {
            Some(i) => {
                self.0[i] += n;
                true
            }
            None => false,
        }
    }

    fn states(&self, base: usize) -> StateCounts {
        let n = |i: usize| self.0[base + i].max(0) as u64;
        StateCounts {
            pending: n(0),
            active: n(1),
            acknowledged: n(2),
            escalated: n(3),
            cancelled: n(4),
        }
    }

    /// Member cascades (one per person of the group) by state.
    pub fn members(&self) -> StateCounts {
        self.states(MEMBER)
    }

    /// Escalation cascades (managers told of a failure) by state.
    pub fn escalations(&self) -> StateCounts {
        self.states(ESCALATION)
    }

    /// Member cascades of one tier by state.
    pub fn tier(&self, tier: Tier) -> StateCounts {
        self.states(TIER + 5 * tier.index())
    }

    /// Members who acknowledged on `channel`.
    pub fn acknowledged_on(&self, channel: Channel) -> u64 {
        self.0[ACKED_ON + channel.index()].max(0) as u64
    }

    /// Members with a message on `channel` in flight now.
    pub fn trying(&self, channel: Channel) -> u64 {
        self.0[TRYING + channel.index()].max(0) as u64
    }

    /// Members whose contact lookup failed at start (directory data used).
    pub fn needs_review(&self) -> u64 {
        self.0[REVIEW].max(0) as u64
    }

    /// Members a first message has reached a carrier for.
    pub fn contacted(&self) -> u64 {
        self.0[CONTACTED].max(0) as u64
    }

    /// Members whose failure no one in their escalation chain acknowledged.
    pub fn undelivered(&self) -> u64 {
        self.0[UNDELIVERED].max(0) as u64
    }

    /// Failed cascades (of either route) whose failure has not been taken up yet.
    pub fn awaiting_escalation(&self) -> u64 {
        self.0[HANDOFF].max(0) as u64
    }

    /// Cascades of either route not yet ended, and failures not yet handed on.
    pub fn open(&self) -> u64 {
        let (m, e) = (self.members(), self.escalations());
        m.pending + m.active + e.pending + e.active + self.awaiting_escalation()
    }
}

/// Counter names, in slot order: `m_<state>` members, `e_<state>`
/// escalations, `t<tier>_<state>`, `ack_<channel>`, `try_<channel>`,
/// `review`, `contacted`, `undelivered`, `handoff`.
const NAMES: [&str; SLOTS] = [
    "m_pending",
    "m_active",
    "m_acknowledged",
    "m_escalated",
    "m_cancelled",
    "e_pending",
    "e_active",
    "e_acknowledged",
    "e_escalated",
    "e_cancelled",
    "t1_pending",
    "t1_active",
    "t1_acknowledged",
    "t1_escalated",
    "t1_cancelled",
    "t2_pending",
    "t2_active",
    "t2_acknowledged",
    "t2_escalated",
    "t2_cancelled",
    "t3_pending",
    "t3_active",
    "t3_acknowledged",
    "t3_escalated",
    "t3_cancelled",
    "ack_voice",
    "ack_sms",
    "ack_email",
    "ack_push",
    "try_voice",
    "try_sms",
    "try_email",
    "try_push",
    "review",
    "contacted",
    "undelivered",
    "handoff",
];

/// Cascades by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub pending: u64,
    pub active: u64,
    pub acknowledged: u64,
    pub escalated: u64,
    pub cancelled: u64,
}

impl StateCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.active + self.acknowledged + self.escalated + self.cancelled
    }

    pub fn plus(&self, o: &StateCounts) -> StateCounts {
        StateCounts {
            pending: self.pending + o.pending,
            active: self.active + o.active,
            acknowledged: self.acknowledged + o.acknowledged,
            escalated: self.escalated + o.escalated,
            cancelled: self.cancelled + o.cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_name() {
        let mut names: Vec<&str> = NAMES.to_vec();
        assert_eq!(NAMES[TIER + 5 + 2], "t2_acknowledged");
        assert_eq!(NAMES[TRYING], "try_voice");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SLOTS);
        let mut t = Tally::default();
        assert!(t.add_named("t2_acknowledged", 3) && !t.add_named("t4_active", 1));
        assert_eq!(t.tier(Tier::TWO).acknowledged, 3);
        assert_eq!(
            t.nonzero().collect::<Vec<_>>(),
            vec![("t2_acknowledged", 3)]
        );
    }
}
