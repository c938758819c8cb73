//! The cascade state machine: a pure function from (cascade, event, policy,
//! now) to the next state, the commands to carry out and exactly one audit
//! record. No I/O, no clock, no randomness: the same inputs always give the
//! same decision, so every stage can re-derive what to do from stored state.
//!
//! Fences: every event that names an attempt applies only while that attempt
//! is in flight and in the phase the event expects (a send result only while
//! `Sending`, a receipt-timeout timer only while `AwaitingReceipt`, ...). Any
//! other event is stale: the state is unchanged except for its version, and
//! the audit record says so. Terminal states absorb every event.
//!
//! # Rules
//!
//! Numbered so that tests name the rule they state (`engine::tests`,
//! `shared/tests/engine_props.rs`); every default is the policy's and
//! configurable.
//!
//! 1. **Channel plan.** The severity's channel order (default voice, SMS,
//!    email, push), filtered by what the person has and prefers (and has
//!    not opted out of), fixed at start. A channel whose queue wait is past
//!    the bound (the severity x tier hold) is moved later for that person,
//!    audited with the waits; a channel another cascade holds for the same
//!    person moves after the next free one.
//! 2. **One at a time.** One attempt in flight per person, except rule 6
//!    (and rule 5's parallel call).
//! 3. **Transient errors and throttling.** A transient send error (5xx,
//!    network, gateway timeout) retries the same channel at most 3 times,
//!    after min(15 s x 2^n, 120 s); a 4th fails the channel. A carrier's 429
//!    is back-pressure, not the person's fault: the send waits (rate
//!    limiter, Retry-After) without spending the retry budget, audited; a
//!    wait past the throttling bound fails that channel for that person.
//! 4. **Channel failure.** FAILED, UNREACHABLE or no receipt within 120 s
//!    of acceptance (CHANNEL_TIMEOUT): the channel failed; the next one is
//!    tried.
//! 5. **Delivered, not acknowledged.** Hold for the severity x tier delay
//!    (P1 at most 90 s, P3 15 min), then the next channel; by policy, an SMS
//!    delivered without an answer also places a voice call beside the next
//!    channel.
//! 6. **Bounded parallelism.** At most 2 attempts in flight, only after
//!    UNREACHABLE (the next two channels go together); voice and SMS are
//!    otherwise never in flight together.
//! 7. **Hard failure.** 3 consecutive channel failures, every channel
//!    tried without an acknowledgement, or no usable channel: ESCALATED and
//!    CASCADE_FAILURE. The failure is named to a manager on the priority
//!    route, who climbs a bounded chain when they do not acknowledge; a
//!    chain exhausted is ESCALATION_UNDELIVERED, never silence; a late
//!    acknowledgement withdraws the escalation (and tells those it reached);
//!    one answer to a bundled message acknowledges every failure it named.
//! 8. **Acknowledgement.** An ACK on any channel at any time is terminal
//!    (ACKNOWLEDGED); later timers and receipts change nothing. DELIVERED is
//!    never an acknowledgement.
//! 9. **Close.** Every open cascade of a closed incident is CANCELLED; so
//!    is every open member cascade once the incident's quorum is reached,
//!    when its trigger says `stopOnQuorum` (escalations go on).
//! 10. **Reconciliation.** A cascade whose next due time is more than 5 min
//!     past is re-driven by the sweep (a forced transition, audited as
//!     REDRIVEN).
//!
//! Invariants (`invariants`, checked on every transition by the tests, the
//! property tests and every drill): terminal states absorb; at most 3
//! retries per channel; at most 2 attempts in flight; nothing is sent
//! after ACK or CANCEL; every transition has exactly one audit record.

mod cascade;
mod decide;
pub mod invariants;
pub mod tally;
#[cfg(test)]
mod tests;

pub use cascade::{Attempt, Cascade, CascadeKey, CascadeStatus, ChannelPlan, Phase, Route};
pub use decide::{decide, timer_is_live};
pub use decide::{hold_delay, queue_bound, route_severity, throttle_bound};
pub use tally::{StateCounts, Tally};

use crate::domain::{Channel, Millis, StakeholderId, Ts};
use serde::{Deserialize, Serialize};

/// What a carrier said when asked to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SendOutcome {
    Accepted,
    /// 429 or equivalent: platform back-pressure; the retry budget is not
    /// spent. `since`: when throttling began holding this send back, if the
    /// endpoint's limiter, paused by the carrier, held it before this answer.
    Throttled {
        retry_after_ms: Millis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Ts>,
    },
    /// 5xx, network error, gateway timeout.
    Transient,
    /// Permanent refusal for this address (invalid number, suppressed address).
    Failed,
    Unreachable,
}

/// A delivery receipt from the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Delivered,
    Failed,
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Backoff after a transient error has elapsed: send again.
    Retry,
    /// Carrier Retry-After has elapsed: send again.
    ThrottleWait,
    /// No receipt within the receipt timeout after acceptance.
    ReceiptTimeout,
    /// DELIVERED without ACK for the escalation delay.
    EscalationHold,
    /// A deferred send's wait is over (see `Phase::Deferred`).
    DeferredStart,
}

/// When each channel is free again for this person, as the dispatcher sees
/// it; `None` or a time not after now: free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelWaits {
    pub free_at: [Option<Ts>; 4],
    pub cause: WaitCause,
}

/// Why a channel is not free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitCause {
    /// Another cascade of the same incident contacted the person on it within the hold.
    #[default]
    Contact,
    /// The carrier endpoint is paused by 429s (an escalation never waits for it).
    Throttled,
    /// The carrier endpoint's queue: a member send asking now would wait
    /// past the queue-wait bound ([`queue_bound`]) while another channel of
    /// the person's plan has room sooner (capacity-aware plans). `free_at`
    /// holds each channel's expected slot; the waits are not the person's,
    /// so the cascade does not keep them.
    Queue,
}

impl ChannelWaits {
    pub fn busy_until(&self, channel: Channel, now: Ts) -> Option<Ts> {
        self.free_at[channel.index()].filter(|t| *t > now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    Start,
    SendResult {
        attempt: u32,
        result: SendOutcome,
    },
    Receipt {
        attempt: u32,
        status: ReceiptStatus,
    },
    Ack {
        channel: Channel,
        attempt: Option<u32>,
    },
    /// The person answered with one of the incident's options (`key`). One
    /// that acknowledges is an acknowledgement with its key recorded; one
    /// that does not ends the cascade as RESPONDED and names the person at
    /// once to their manager, with the answer.
    Respond {
        channel: Channel,
        attempt: Option<u32>,
        key: String,
        acknowledges: bool,
    },
    Timer {
        attempt: u32,
        kind: TimerKind,
    },
    /// The reconciliation sweep found the cascade overdue.
    Reconcile,
    Cancel,
    /// Member only: the incident's quorum was reached and its trigger asked
    /// to stop there (`stopOnQuorum`): the cascade is cancelled, audited so.
    QuorumStop,
    /// The person opted out of a channel (an SMS STOP): it is dropped from
    /// the rest of the plan. An attempt already sent on it runs its course.
    OptOut {
        channel: Channel,
    },
    /// The attempt's channel is busy for this person (see [`ChannelWaits`]):
    /// the attempt moves to the next channel of the plan that is free, the
    /// busy one after it; with none free it waits for its own channel.
    Replan {
        attempt: u32,
        waits: ChannelWaits,
    },
    /// Acknowledged by the person's answer to a message of another of their
    /// cascades that named this one's subject too (a bundled escalation).
    BundleAck {
        channel: Channel,
        message: String,
    },
    /// Escalation only: its failure was acknowledged late, by the person it
    /// is about (`by: None`) or by someone told before on the chain; the
    /// escalation is withdrawn.
    Withdraw {
        by: Option<StakeholderId>,
    },
    /// Member only, after CASCADE_FAILURE: the failure was escalated to `to`.
    EscalationStarted {
        to: StakeholderId,
    },
    /// Member only, after CASCADE_FAILURE: nobody on the escalation chain
    /// acknowledged it, or there was no chain (`reason`).
    EscalationUndelivered {
        reason: String,
    },
    /// After CASCADE_FAILURE: the failure was taken up, by the next person
    /// of the chain (an escalation, or the chain ended, recorded on the
    /// failed member), or it no longer needs to be, the incident being
    /// closed (`closed`, any route).
    HandedOn {
        closed: bool,
    },
    /// Member only, any state: update `seq` of the incident (the all-clear:
    /// `all_clear`) was offered to the carrier on `channel`; `None`: the
    /// person has no channel an update goes on, so none was sent. Recorded
    /// once per update; the cascade's state does not change.
    Update {
        seq: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        all_clear: bool,
        channel: Option<Channel>,
        accepted: bool,
    },
    /// A withdrawn escalation's follow-up notice ("X has acknowledged") was
    /// offered to the carrier on `channel`; `None`: its person has no
    /// channel for an update but a phone to call, so none was sent.
    Notice {
        channel: Option<Channel>,
        accepted: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    Send {
        attempt: u32,
        channel: Channel,
    },
    ArmTimer {
        at: Ts,
        attempt: u32,
        kind: TimerKind,
    },
    /// Name this failure to the next person of its escalation chain, on the
    /// high-priority route.
    EscalateToManager,
    EmitCascadeFailure,
    /// A member who failed acknowledged after all: withdraw the open
    /// escalations about them.
    WithdrawEscalations,
    /// A withdrawn escalation had reached the person told: send them an
    /// update that the subject has acknowledged.
    NotifyWithdrawn,
}

/// What a transition was, for the audit trail. Stable snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditKind {
    CascadeStarted,
    SendAccepted,
    Throttled,
    RetryScheduled,
    RetrySent,
    ThrottleResumed,
    Delivered,
    ChannelFailed,
    ChannelUnreachable,
    ChannelTimeout,
    NotAcknowledged,
    Acknowledged,
    AckAfterEnd,
    CascadeFailure,
    Cancelled,
    StaleIgnored,
    Redriven,
    OptOut,
    ChannelThrottledOut,
    PlanChanged,
    Deferred,
    DeferredSent,
    EscalationStarted,
    EscalationUndelivered,
    Withdrawn,
    NoticeSent,
    NoticeFailed,
    Responded,
    UpdateSent,
    UpdateFailed,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Responded => "RESPONDED",
            AuditKind::UpdateSent => "UPDATE_SENT",
            AuditKind::UpdateFailed => "UPDATE_FAILED",
            AuditKind::CascadeStarted => "CASCADE_STARTED",
            AuditKind::SendAccepted => "SEND_ACCEPTED",
            AuditKind::Throttled => "THROTTLED",
            AuditKind::RetryScheduled => "RETRY_SCHEDULED",
            AuditKind::RetrySent => "RETRY_SENT",
            AuditKind::ThrottleResumed => "THROTTLE_RESUMED",
            AuditKind::Delivered => "DELIVERED",
            AuditKind::ChannelFailed => "CHANNEL_FAILED",
            AuditKind::ChannelUnreachable => "CHANNEL_UNREACHABLE",
            AuditKind::ChannelTimeout => "CHANNEL_TIMEOUT",
            AuditKind::NotAcknowledged => "NOT_ACKNOWLEDGED",
            AuditKind::Acknowledged => "ACKNOWLEDGED",
            AuditKind::AckAfterEnd => "ACK_AFTER_END",
            AuditKind::CascadeFailure => "CASCADE_FAILURE",
            AuditKind::Cancelled => "CANCELLED",
            AuditKind::StaleIgnored => "STALE_IGNORED",
            AuditKind::Redriven => "REDRIVEN",
            AuditKind::OptOut => "OPT_OUT",
            AuditKind::ChannelThrottledOut => "CHANNEL_THROTTLED_OUT",
            AuditKind::PlanChanged => "PLAN_CHANGED",
            AuditKind::Deferred => "DEFERRED",
            AuditKind::DeferredSent => "DEFERRED_SENT",
            AuditKind::EscalationStarted => "ESCALATION_STARTED",
            AuditKind::EscalationUndelivered => "ESCALATION_UNDELIVERED",
            AuditKind::Withdrawn => "WITHDRAWN",
            AuditKind::NoticeSent => "NOTICE_SENT",
            AuditKind::NoticeFailed => "NOTICE_FAILED",
        }
    }
}

/// The engine's account of one transition. The application adds incident,
/// cascade, sequence, time and hash chain to make an audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub kind: AuditKind,
    /// For CASCADE_FAILURE and REDRIVEN: what led to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<AuditKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub status: CascadeStatus,
    /// Channels whose first attempt this transition started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<Channel>,
    pub in_flight: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The key of the answer this transition records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The next state; its version is always the input's plus one.
    pub next: Cascade,
    pub commands: Vec<Command>,
    pub audit: AuditRecord,
}
