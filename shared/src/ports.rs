//! Ports: the narrow capabilities the use cases in `app` need, one trait
//! each, held as `Arc<dyn Trait>` in [`Deps`]. The memory adapters implement
//! them for drills, tests and `muster serve`; the AWS adapters for Lambda.
//!
//! Contract shared by every store: writes are conditional. `create_*` fails
//! with `Error::Conflict` when the item exists; `transition` and
//! `update_incident` fail with `Error::Conflict` unless the stored version
//! equals `expected_version`. A cascade transition and the audit entry that
//! records it are written atomically: both or neither.

use crate::audit::{AuditEntry, ChainHead, Seal};
use crate::domain::{
    Address, Channel, ContactMethods, Group, GroupId, Incident, IncidentId, Millis, PhoneNumber,
    Severity, Stakeholder, StakeholderId, Ts,
};
use crate::engine::{Cascade, CascadeKey, Decision, Event, ReceiptStatus, Tally, TimerKind};
use crate::error::Result;
use crate::policy::Policy;
use crate::ratelimit::Ticket;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A cascade as stored: engine state plus what the application keeps beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeRecord {
    pub cascade: Cascade,
    /// Contacts snapshotted when the cascade started (PII: encrypted at rest in AWS).
    pub contacts: ContactMethods,
    pub name: String,
    /// The locale of the message template the person is sent, chosen by
    /// their directory locale when the cascade started (none: the
    /// default): it picks the text and the voice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Code a stakeholder can reply with ("ACK 4821").
    pub ack_code: String,
    /// For an escalation cascade: where it stands in its failure's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationInfo>,
    /// For an escalation cascade: the other failures its messages named
    /// (bundled), by attempt; an ACK of that message acknowledges them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named: Vec<Named>,
    /// The contact lookup at start failed; directory data used.
    #[serde(default)]
    pub needs_review: bool,
    /// The contacts as the status shows them, masked when the cascade was
    /// created (so a status page never decrypts a contact).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<(Channel, String)>,
    /// Audit chain head: sequence number of the next entry and hash of the last.
    pub audit_seq: u64,
    pub audit_head: String,
}

/// An escalation cascade's place in the chain of the failure it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationInfo {
    /// 1 for the first person told (the group's on-call manager), 2 for the next...
    pub level: u32,
    /// The failed person first, then everyone told so far, this cascade's
    /// stakeholder last. Nobody appears twice.
    pub chain: Vec<StakeholderId>,
    /// The failed person's name, for the messages.
    pub about_name: String,
    /// The answer they gave (its label), when they answered one that does
    /// not acknowledge ("I need help"): the message says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// The other failures one message of an escalation cascade named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub attempt: u32,
    /// Shared, not copied, each time the record is read.
    pub about: std::sync::Arc<[StakeholderId]>,
}

/// One escalation cascade still open, as a bundle names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEscalation {
    pub key: CascadeKey,
    /// The failed person's name (their id when the directory had none).
    pub about_name: String,
    /// The person answered one that does not acknowledge ("I need help"):
    /// their escalation is told on its own, with the answer, never bundled.
    pub answered: bool,
}

impl OpenEscalation {
    pub fn of(rec: &CascadeRecord) -> Self {
        Self {
            key: rec.cascade.key.clone(),
            about_name: rec.about_name(),
            answered: rec.escalation.as_ref().is_some_and(|e| e.answer.is_some()),
        }
    }
}

impl CascadeRecord {
    /// The masked form of every contact of a snapshot, as [`Self::masked`] keeps it.
    pub fn mask(contacts: &ContactMethods) -> Vec<(Channel, String)> {
        Channel::ALL
            .iter()
            .filter_map(|ch| contacts.address(*ch).map(|a| (*ch, a.masked())))
            .collect()
    }

    /// For an escalation cascade, the failed person's name for messages
    /// (their id when the directory had none).
    pub fn about_name(&self) -> String {
        match (&self.escalation, self.cascade.key.route.about()) {
            (Some(e), _) if !e.about_name.is_empty() => e.about_name.clone(),
            (_, Some(about)) => about.to_string(),
            _ => String::new(),
        }
    }

    /// Who an acknowledgement of `attempt` (or of no particular message)
    /// also covers: the failures that message named, or every failure any
    /// message of the cascade named.
    pub fn bundled(&self, attempt: Option<u32>) -> Vec<StakeholderId> {
        let mut out: Vec<StakeholderId> = Vec::new();
        for n in &self.named {
            if attempt.is_none_or(|a| a == n.attempt) {
                for id in n.about.iter() {
                    if !out.contains(id) {
                        out.push(id.clone());
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Creates the incident; `Conflict` if one with this id exists.
    async fn create_incident(&self, incident: &Incident) -> Result<()>;
    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>>;
    /// Replaces the incident if its stored version is `expected_version`.
    async fn update_incident(&self, incident: &Incident, expected_version: u64) -> Result<()>;
    /// Incidents still open (sealed again periodically; their expansion
    /// checked by the sweep).
    async fn open_incidents(&self) -> Result<Vec<IncidentId>>;
    /// Incidents, the open ones first, then the ended ones; each part newest
    /// first; a page at a time (`cursor`: the `next` of the page before;
    /// one not made by this store is `Invalid`).
    async fn recent_incidents(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<Incident>>;
}

/// Where a page of [`IncidentStore::recent_incidents`] ends: the incident's
/// part (open or ended), trigger time and id. Written `o.TS.ID` or `c.TS.ID`.
/// Ordered as the list is: open ones first, then newest first, then (for
/// one millisecond) by id descending, which is also the order of a
/// descending key `<ms>#<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentCursor {
    pub ended: bool,
    pub triggered_at: std::cmp::Reverse<Ts>,
    pub id: IncidentId,
}

impl Ord for IncidentCursor {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ended, self.triggered_at, std::cmp::Reverse(&self.id)).cmp(&(
            other.ended,
            other.triggered_at,
            std::cmp::Reverse(&other.id),
        ))
    }
}

impl PartialOrd for IncidentCursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl IncidentCursor {
    pub fn of(incident: &Incident) -> Self {
        IncidentCursor {
            ended: incident.status != crate::domain::IncidentStatus::Open,
            triggered_at: std::cmp::Reverse(incident.triggered_at),
            id: incident.id().clone(),
        }
    }

    /// One page of `incidents` (any order): those after `after` in list
    /// order, at most `limit`, with the cursor of the next page when more
    /// are left.
    pub fn page(
        incidents: Vec<Incident>,
        after: Option<&IncidentCursor>,
        limit: usize,
    ) -> Page<Incident> {
        let mut all: Vec<(IncidentCursor, Incident)> = incidents
            .into_iter()
            .map(|i| (IncidentCursor::of(&i), i))
            .filter(|(c, _)| after.is_none_or(|a| c > a))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let limit = limit.max(1);
        let next = (all.len() > limit).then(|| all[limit - 1].0.encode());
        Page {
            items: all.into_iter().take(limit).map(|(_, i)| i).collect(),
            next,
        }
    }

    pub fn encode(&self) -> String {
        let part = if self.ended { 'c' } else { 'o' };
        format!("{part}.{}.{}", self.triggered_at.0.0, self.id)
    }

    pub fn decode(s: &str) -> Result<Self> {
        let bad = || crate::error::Error::invalid("cursor", "not a cursor this API returned");
        let mut parts = s.splitn(3, '.');
        let ended = match parts.next() {
            Some("o") => false,
            Some("c") => true,
            _ => return Err(bad()),
        };
        let at: u64 = parts
            .next()
            .filter(|t| (1..=19).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        let id = parts
            .next()
            .and_then(|i| IncidentId::parse(i).ok())
            .ok_or_else(bad)?;
        Ok(IncidentCursor {
            ended,
            triggered_at: std::cmp::Reverse(Ts(at)),
            id,
        })
    }
}

/// Receipts kept per provider message id before its reference is written
/// (a carrier reports each message's outcome once or twice; more is noise).
pub const HELD_RECEIPTS: usize = 4;

#[async_trait]
pub trait CascadeStore: Send + Sync {
    /// Creates the cascade with its first audit entry; `Conflict` if it exists.
    async fn create_cascade(&self, record: &CascadeRecord, audit: &AuditEntry) -> Result<()>;
    async fn get_cascade(&self, key: &CascadeKey) -> Result<Option<CascadeRecord>>;
    /// Replaces `before` by `after` if the stored version is still
    /// `before`'s, appends `audit` and adds the change to the incident's
    /// [`Tally`], atomically.
    async fn transition(
        &self,
        before: &CascadeRecord,
        after: &CascadeRecord,
        audit: &AuditEntry,
    ) -> Result<()>;
    /// The incident's counters: what [`Tally::of`] gives summed over its
    /// cascades as stored, kept by every create and transition (in the
    /// same atomic write), so it reads no cascade.
    async fn tally(&self, incident: &IncidentId) -> Result<Tally>;
    /// How many partitions [`Self::list_part`] reads the incident's
    /// cascades from (jobs can work through them side by side).
    fn parts(&self) -> u16 {
        1
    }
    /// The cascades of partition `part` (below [`Self::parts`]), a page at
    /// a time, as [`Self::list_cascades`] gives them. Every cascade is in
    /// exactly one partition.
    async fn list_part(
        &self,
        incident: &IncidentId,
        part: u16,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>> {
        if part == 0 {
            self.list_cascades(incident, cursor, limit).await
        } else {
            Ok(Page {
                items: Vec::new(),
                next: None,
            })
        }
    }
    /// The incident's cascades, in a stable order, a page at a time. A
    /// store may return records without their contacts (`contacts` empty;
    /// [`CascadeRecord::masked`] is there): [`Self::get_cascade`] has them.
    async fn list_cascades(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>>;
    /// Cascades whose next due time is at or before `due_before` (the sweep's index).
    async fn overdue(
        &self,
        due_before: Ts,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeKey>>;
    /// Every cascade of one person in one incident (their member cascade
    /// and the escalations they were told), in a stable order.
    async fn person_cascades(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
    ) -> Result<Vec<CascadeRecord>>;
    /// The escalation cascades of one person told that have not ended,
    /// oldest first, at most `limit` (a store with an index of them
    /// answers without reading the person's other cascades).
    async fn open_escalations(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
        limit: usize,
    ) -> Result<Vec<OpenEscalation>> {
        let mut open: Vec<CascadeRecord> = self
            .person_cascades(incident, stakeholder)
            .await?
            .into_iter()
            .filter(|r| r.cascade.key.route.is_escalation() && !r.cascade.status.is_terminal())
            .collect();
        open.sort_by(|a, b| {
            (a.cascade.created_at, &a.cascade.key).cmp(&(b.cascade.created_at, &b.cascade.key))
        });
        open.truncate(limit);
        Ok(open.iter().map(OpenEscalation::of).collect())
    }
    /// Every audit entry of an incident, per cascade in sequence order.
    async fn audit_trail(&self, incident: &IncidentId) -> Result<Vec<AuditEntry>>;
    /// The incident's audit entries a page at a time, in a stable order
    /// (each cascade's entries in sequence).
    async fn audit_page(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<AuditEntry>>;
    /// Maps a provider's message id to the attempt it carried, and gives
    /// back the receipts held for that id (see `hold_receipt`): a carrier
    /// can report on a message before its answer to the send has reached
    /// Muster.
    async fn put_message_ref(
        &self,
        provider_message_id: &str,
        key: &CascadeKey,
        attempt: u32,
    ) -> Result<Vec<ReceiptStatus>>;
    async fn get_message_ref(&self, provider_message_id: &str)
    -> Result<Option<(CascadeKey, u32)>>;
    /// Keeps a receipt for a provider message id with no reference yet, for
    /// `put_message_ref` to hand back (at most [`HELD_RECEIPTS`] per id;
    /// more are dropped). Returns the reference instead when it was written
    /// meanwhile: the caller applies the receipt itself. One of the two
    /// always sees the other (each writes, then reads the other's write,
    /// in one linearisable record), so an early receipt is applied at
    /// least once and a duplicate is the engine's to ignore.
    async fn hold_receipt(
        &self,
        provider_message_id: &str,
        status: ReceiptStatus,
    ) -> Result<Option<(CascadeKey, u32)>>;
    /// Claims the send of `attempt` in its sending phase that began at
    /// `phase_since`, for `lease` from `now`, if the cascade is still at
    /// `record`'s version: the act of sending comes after a conditional
    /// write like every act, so two workers handed the same job at once (a
    /// queue's at-least-once delivery) never both tell the person, and a
    /// worker whose read another has overtaken decides again.
    async fn claim_send(
        &self,
        record: &CascadeRecord,
        attempt: u32,
        phase_since: Ts,
        now: Ts,
        lease: Millis,
    ) -> Result<SendClaim>;
}

/// The answer to [`CascadeStore::claim_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendClaim {
    /// This worker sends.
    Claimed,
    /// Another worker claimed this send and its lease runs.
    Held,
    /// The cascade changed since it was read (or is gone): read again.
    Changed,
}

/// Capability: open cascades by the number they text or call, for SMS
/// replies and opt-outs. (On AWS: lookup items keyed by a keyed hash of the
/// number, never the number itself.)
#[async_trait]
pub trait NumberIndex: Send + Sync {
    /// Open cascades that text or call `number` (from their contact
    /// snapshots), oldest first.
    async fn open_cascades_for_number(&self, number: &PhoneNumber) -> Result<Vec<CascadeRecord>>;
}

/// Capability: storage for incident seals.
#[async_trait]
pub trait SealStore: Send + Sync {
    /// Every cascade's chain head.
    async fn chain_heads(&self, incident: &IncidentId) -> Result<Vec<ChainHead>>;
    /// Stores an incident seal (never replaced: seals accumulate).
    async fn put_seal(&self, seal: &Seal) -> Result<()>;
    async fn seals(&self, incident: &IncidentId) -> Result<Vec<Seal>>;
}

/// Sealing: a signer and where seals are kept.
#[derive(Clone)]
pub struct Sealing {
    pub signer: Arc<dyn SealSigner>,
    pub store: Arc<dyn SealStore>,
}

/// A group without its member list (which may be large).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub id: GroupId,
    pub name: String,
    pub on_call_manager: Option<StakeholderId>,
    /// Channel order of escalation cascades (empty: the policy's manager route).
    pub escalation_channels: Vec<Channel>,
    pub size: u32,
}

#[async_trait]
pub trait Directory: Send + Sync {
    async fn group(&self, id: &GroupId) -> Result<Option<GroupSummary>>;
    /// The group's members, in order (read once, when an incident is triggered).
    async fn members(&self, id: &GroupId) -> Result<Vec<StakeholderId>>;
    async fn stakeholder(&self, id: &StakeholderId) -> Result<Option<Stakeholder>>;
}

/// Directory writes, for provisioning (SCIM) and imports. Removing a person
/// also removes them from every group.
#[async_trait]
pub trait DirectoryAdmin: Directory {
    async fn put_stakeholder(&self, person: Stakeholder) -> Result<()>;
    async fn remove_stakeholder(&self, id: &StakeholderId) -> Result<bool>;
    async fn list_stakeholders(&self) -> Result<Vec<Stakeholder>>;
    /// The people whose [`Stakeholder::scim_user_name`] equals `user_name`,
    /// ignoring ASCII case (SCIM's rule for `userName`), sorted. Adapters
    /// answer from an index; the default reads the whole directory.
    async fn find_by_user_name(&self, user_name: &str) -> Result<Vec<StakeholderId>> {
        Ok(with_user_name(&self.list_stakeholders().await?, user_name))
    }
    /// Whether someone has this id, without reading their contact details.
    async fn contains(&self, id: &StakeholderId) -> Result<bool> {
        Ok(self.stakeholder(id).await?.is_some())
    }
    async fn get_group(&self, id: &GroupId) -> Result<Option<Group>>;
    async fn put_group(&self, group: Group) -> Result<()>;
    async fn remove_group(&self, id: &GroupId) -> Result<bool>;
    async fn list_groups(&self) -> Result<Vec<Group>>;
    /// Marks (or clears) an SMS opt-out for every stakeholder texted at
    /// `number`; returns whom it changed.
    async fn set_sms_opt_out(
        &self,
        number: &PhoneNumber,
        opted_out: bool,
    ) -> Result<Vec<StakeholderId>>;
}

/// The ids, sorted, of `people` whose SCIM `userName` is `user_name` in any
/// ASCII case ([`DirectoryAdmin::find_by_user_name`] without an index).
pub fn with_user_name<'a>(
    people: impl IntoIterator<Item = &'a Stakeholder>,
    user_name: &str,
) -> Vec<StakeholderId> {
    let mut ids: Vec<StakeholderId> = people
        .into_iter()
        .filter(|p| p.scim_user_name().eq_ignore_ascii_case(user_name))
        .map(|p| p.id.clone())
        .collect();
    ids.sort();
    ids
}

/// Envelope encryption of contact details under a per-stakeholder data key,
/// bound to the incident (additional authenticated data). Erasing a person's
/// key (GDPR) makes every address recorded for them unreadable; the audit
/// chains, which hash the ciphertext, still verify.
#[async_trait]
pub trait ContactVault: Send + Sync {
    async fn encrypt(
        &self,
        stakeholder: &StakeholderId,
        incident: &IncidentId,
        plaintext: &str,
    ) -> Result<String>;
    /// `Ok(None)` when the person's key was erased.
    async fn decrypt(
        &self,
        stakeholder: &StakeholderId,
        incident: &IncidentId,
        ciphertext: &str,
    ) -> Result<Option<String>>;
    /// Destroys the person's key; true if there was one.
    async fn erase(&self, stakeholder: &StakeholderId) -> Result<bool>;
}

pub use crate::audit::SignerInfo;

/// Signs incident seals.
#[async_trait]
pub trait SealSigner: Send + Sync {
    fn describe(&self) -> SignerInfo;
    async fn sign(&self, message: &[u8]) -> Result<String>;
}

/// Why a live contact lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("the contact source did not answer in time")]
    Timeout,
    #[error("the contact source is unavailable: {0}")]
    Unavailable(String),
}

/// The system of record for contact details (an HRIS or IdP), asked live
/// when a cascade starts, because the directory may be hours stale.
#[async_trait]
pub trait ContactLookup: Send + Sync {
    /// The person's current contacts; `Ok(None)` if the source does not know them.
    async fn lookup(
        &self,
        id: &StakeholderId,
    ) -> std::result::Result<Option<ContactMethods>, LookupError>;
}

/// Work for `dispatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "job")]
pub enum Job {
    /// Turn these members of the incident's group (snapshotted when it was
    /// triggered, at most `EXPAND_CHUNK` of them) into cascades.
    Expand {
        incident: IncidentId,
        members: Vec<StakeholderId>,
    },
    /// Send attempt `attempt` of a cascade.
    Send {
        key: CascadeKey,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
    },
    /// A cascade failed: name `about`'s failure to the next person of its
    /// escalation chain (`chain`: the failed person, then everyone told so far).
    Escalate {
        incident: IncidentId,
        about: StakeholderId,
        chain: Vec<StakeholderId>,
    },
    /// `about`'s failure was acknowledged late (by them, or by someone
    /// told whose escalation had already moved up the chain): withdraw the
    /// open escalation about them.
    Withdraw {
        incident: IncidentId,
        about: StakeholderId,
        /// Who acknowledged: `None`, the person it is about.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<StakeholderId>,
    },
    /// A withdrawn escalation had reached its person: tell them the update.
    Notice {
        key: CascadeKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
    },
    /// An escalation cascade was acknowledged (`attempt`: the message
    /// answered): acknowledge the failures that message also named.
    ShareAck {
        key: CascadeKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    /// Tell the incident's origin (PagerDuty, Jira, ServiceNow) a
    /// milestone of its progress; `attempt`: deliveries tried before.
    WriteBack {
        incident: IncidentId,
        milestone: crate::domain::Milestone,
        #[serde(default, skip_serializing_if = "is_zero_u32")]
        attempt: u32,
    },
    /// Forward audit lines to the SIEM receivers named in `sinks` (empty:
    /// every one configured); `attempt`: deliveries tried before.
    Export {
        lines: Vec<crate::audit::ExportLine>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sinks: Vec<String>,
        #[serde(default, skip_serializing_if = "is_zero_u32")]
        attempt: u32,
    },
    /// Fan update `seq` of the incident out: queue an [`Job::Update`] for
    /// each person of one page of store partition `part` from `cursor`
    /// who gets it, then go on with the next page.
    Updates {
        incident: IncidentId,
        seq: u32,
        part: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// Send update `seq` of the incident to the person of cascade `key`.
    Update {
        key: CascadeKey,
        seq: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
    },
    /// A closed incident's audit grew after its last seal: seal it again.
    Reseal { incident: IncidentId },
    /// The incident's quorum was reached and its trigger stops there:
    /// cancel one page of the open member cascades of store partition
    /// `part` from `cursor`, then go on with the next page.
    Stop {
        incident: IncidentId,
        part: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// A closing incident: cancel one page of the open cascades of store
    /// partition `part` from `cursor`, then go on with the next page.
    Close {
        incident: IncidentId,
        /// The pass (`Incident::close_passes`) the job belongs to.
        pass: u8,
        part: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
}

impl Job {
    /// Jobs of the high-priority route: everything about escalations. They
    /// take the queue's priority lane and the limiter's reserved share, so
    /// they never wait behind a mass activation's member sends.
    pub fn is_priority(&self) -> bool {
        match self {
            // Progress notes never go before a person's message.
            Job::Expand { .. }
            | Job::WriteBack { .. }
            | Job::Export { .. }
            | Job::Updates { .. }
            | Job::Update { .. }
            | Job::Reseal { .. } => false,
            Job::Send { key, .. } => key.route.is_escalation(),
            Job::Escalate { .. }
            | Job::Withdraw { .. }
            | Job::Notice { .. }
            | Job::ShareAck { .. }
            | Job::Stop { .. }
            | Job::Close { .. } => true,
        }
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Why a progress note did not reach the incident's origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Worth trying again later: 429, 5xx, a timeout, no connection.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The source refused it (another 4xx: credentials, a record that is
    /// gone): trying again will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// No credentials for this source are configured.
    #[error("not configured")]
    NotConfigured,
}

/// Progress written back to the system an incident came from: a PagerDuty
/// incident note, a Jira comment, a ServiceNow work note. Notes carry
/// stakeholder ids, never contact details.
#[async_trait]
pub trait SourceNotes: Send + Sync {
    async fn post(
        &self,
        origin: &crate::domain::Origin,
        text: &str,
    ) -> std::result::Result<(), NoteError>;
}

/// Why audit lines did not reach a SIEM receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Worth trying again later: no connection, a timeout, 429, 5xx.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The receiver refused the lines (credentials, a certificate, another
    /// 4xx): the settings need fixing; the lines are kept and tried again.
    #[error("refused: {0}")]
    Refused(String),
}

/// A SIEM receiver of the audit trail (syslog over TLS, Splunk HEC). A
/// delivery succeeds only once the receiver has taken every line; lines
/// may be delivered more than once (each carries its dedup key).
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// The receiver's name in configuration and jobs: `syslog`, `hec`.
    fn name(&self) -> &str;
    async fn deliver(
        &self,
        lines: &[crate::audit::ExportLine],
    ) -> std::result::Result<(), ExportError>;
}

#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Enqueues jobs, each visible after its delay. Jobs for which
    /// [`Job::is_priority`] holds go to the priority lane, which is always
    /// served first.
    async fn enqueue(&self, jobs: Vec<(Job, Millis)>) -> Result<()>;
    /// Approximate number of jobs waiting (visible or delayed).
    async fn backlog(&self) -> Result<u64>;
}

/// A timer for one attempt of one cascade; its fence is (attempt, kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerMsg {
    pub key: CascadeKey,
    pub attempt: u32,
    pub kind: TimerKind,
    pub at: Ts,
}

#[async_trait]
pub trait Timers: Send + Sync {
    /// Arms timers. Never cancelled: a timer whose fence no longer matches is a no-op.
    async fn arm(&self, timers: Vec<TimerMsg>) -> Result<()>;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Ts;
}

/// Ack codes and other identifiers the use cases mint.
pub trait IdGen: Send + Sync {
    /// A four-digit code for SMS replies ("ACK 4821").
    fn ack_code(&self) -> String;
}

/// One message to one person on one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub key: CascadeKey,
    pub attempt: u32,
    pub channel: Channel,
    pub severity: Severity,
    pub to: Address,
    pub subject: String,
    pub body: String,
    pub ack_code: String,
}

impl OutboundMessage {
    /// The attempt number of a notice: an update about a cascade that has
    /// ended (no attempt of the cascade, which are numbered from 1).
    pub const NOTICE: u32 = 0;
    /// Update `n` of the incident is "attempt" `UPDATE_BASE + n`: no
    /// attempt of the cascade either.
    pub const UPDATE_BASE: u32 = 1 << 30;

    /// Whether this is a message outside the cascade's attempts (a notice
    /// or an update): it asks nothing and is sent after the cascade ended.
    pub fn is_notice(&self) -> bool {
        self.attempt == Self::NOTICE || self.attempt > Self::UPDATE_BASE
    }

    /// Idempotency key of the send: the same attempt is never two messages.
    pub fn idempotency_key(&self) -> String {
        format!("{}#{}", self.key, self.attempt)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_message_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("throttled by the carrier")]
    Throttled { retry_after: Option<Millis> },
    #[error("transient send failure: {0}")]
    Transient(String),
    #[error("send refused: {0}")]
    Failed(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
}

#[async_trait]
pub trait ChannelSender: Send + Sync {
    /// Carrier endpoint name, the unit of rate limiting ("sms", "voice-us", ...).
    fn endpoint(&self) -> &str;
    async fn send(&self, msg: &OutboundMessage) -> std::result::Result<Accepted, SendError>;
    /// Whether a person can answer a message sent this way (an SMS from a
    /// sender id cannot be replied to, so it must not ask for a reply).
    fn accepts_replies(&self) -> bool {
        true
    }
}

/// Result of asking the rate limiter for one send.
pub use crate::ratelimit::{Admit, Gauge, Lane, Throttling};

/// What [`RateLimiter::admit`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The limiter's decision.
    Decided(Admit),
    /// The limiter's shared state changed under every try (a store under
    /// contention): ask again at `at`, with the ticket held.
    Retry { at: Ts },
}

/// A reservation of one channel to one person, within one incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactEntry {
    pub holder: CascadeKey,
    /// Until when nobody else may use the channel for this person.
    pub until: Ts,
}

impl ContactEntry {
    /// Whether `holder` may use the channel at `now`: the entry is its own,
    /// or the other holder's hold is over.
    pub fn admits(&self, holder: &CascadeKey, now: Ts) -> bool {
        &self.holder == holder || self.until <= now
    }
}

/// What [`ContactLedger::reserve`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Granted,
    /// Another cascade holds the channel; when each channel is free.
    Busy(crate::engine::ChannelWaits),
}

/// Capability: one person, one contact at a time. Before a call or an SMS
/// (the channels that ring a phone) goes to a person, the sending cascade
/// reserves that channel for them for its hold; another cascade of the same
/// incident that wants the same channel while the reservation runs is told
/// when it is free. Reservations are atomic: on AWS a conditional write.
#[async_trait]
pub trait ContactLedger: Send + Sync {
    /// Reserves `channel` of `person` for `holder` from `now` until
    /// `now + hold`, unless another holder's reservation is still running.
    async fn reserve(
        &self,
        incident: &IncidentId,
        person: &StakeholderId,
        channel: Channel,
        holder: &CascadeKey,
        now: Ts,
        hold: Millis,
    ) -> Result<Reservation>;
}

/// The channels the contact ledger guards: a second call or SMS within the
/// hold is what confuses a person; a second email or push is not.
pub fn guarded(channel: Channel) -> bool {
    matches!(channel, Channel::Voice | Channel::Sms)
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Asks to send one message on `endpoint` now (see `ratelimit`): the
    /// priority lane takes the next free slot ahead of booked member sends,
    /// within its reserved share.
    async fn admit(
        &self,
        endpoint: &str,
        now: Ts,
        ticket: Option<Ticket>,
        lane: Lane,
    ) -> Result<Admission>;
    async fn on_success(&self, endpoint: &str, now: Ts);
    async fn on_throttled(&self, endpoint: &str, now: Ts, retry_after: Option<Millis>);
    /// Whether the carrier is throttling the endpoint (a 429 and nothing
    /// accepted since), and until when it is paused.
    async fn throttling(&self, endpoint: &str, now: Ts) -> Result<Option<Throttling>>;
    /// How long a member send asking now would wait on `endpoint`
    /// (`AdaptiveLimiter::queue_wait`), booking nothing.
    async fn queue_wait(&self, endpoint: &str, now: Ts) -> Result<Millis>;
    /// The endpoint's limit, pace, wait, pause and counted answers; `None`
    /// for an endpoint nothing has been sent on.
    async fn gauge(&self, endpoint: &str, now: Ts) -> Result<Option<Gauge>>;
}

/// What happened, for metrics and for drills' live invariant checks.
pub trait Observer: Send + Sync {
    fn transition(&self, _before: &Cascade, _event: &Event, _decision: &Decision) {}
    fn send(&self, _channel: Channel, _severity: Severity, _outcome: SendOutcomeKind) {}
    /// A send is offered to its carrier after waiting `waited` ms from
    /// ready (rate limiter queue, carrier pauses).
    fn offered(&self, _channel: Channel, _waited: Millis) {}
    fn stale_job(&self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcomeKind {
    Accepted,
    Throttled,
    Transient,
    Failed,
    Unreachable,
    NoAddress,
}

/// No metrics.
pub struct NoObserver;
impl Observer for NoObserver {}

/// The channel senders, one per channel.
#[derive(Clone)]
pub struct Senders {
    pub voice: Arc<dyn ChannelSender>,
    pub sms: Arc<dyn ChannelSender>,
    pub email: Arc<dyn ChannelSender>,
    pub push: Arc<dyn ChannelSender>,
}

impl Senders {
    pub fn get(&self, channel: Channel) -> &Arc<dyn ChannelSender> {
        match channel {
            Channel::Voice => &self.voice,
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
            Channel::Push => &self.push,
        }
    }
}

/// Everything a use case may touch.
#[derive(Clone)]
pub struct Deps {
    pub policy: Arc<Policy>,
    pub incidents: Arc<dyn IncidentStore>,
    pub cascades: Arc<dyn CascadeStore>,
    pub directory: Arc<dyn Directory>,
    pub queue: Arc<dyn WorkQueue>,
    pub timers: Arc<dyn Timers>,
    pub senders: Senders,
    pub limiter: Arc<dyn RateLimiter>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdGen>,
    pub observer: Arc<dyn Observer>,
    /// Live contact validation; `None` uses the directory as it is.
    pub contacts: Option<Arc<dyn ContactLookup>>,
    /// One-click acknowledgement links for email and push; `None`: no links.
    pub ack_links: Option<Arc<dyn AckLinks>>,
    /// Contact addresses in the audit trail, encrypted; `None`: not recorded.
    pub vault: Option<Arc<dyn ContactVault>>,
    /// Incident seals; `None`: incidents are not sealed.
    pub sealing: Option<Sealing>,
    /// Open cascades by number (SMS replies, opt-outs). Required: a
    /// deployment that receives texts cannot run without it, so a missing
    /// one is a wiring error, not a reply failed at run time.
    pub numbers: Arc<dyn NumberIndex>,
    /// Directory writes (SMS opt-outs, provisioning). Required for the same
    /// reason.
    pub admin: Arc<dyn DirectoryAdmin>,
    /// One person, one contact at a time across their cascades.
    pub ledger: Arc<dyn ContactLedger>,
    /// Progress notes to incidents' origins; `None`: not written back
    /// (the jobs that would carry them are dropped, logged).
    pub notes: Option<Arc<dyn SourceNotes>>,
    /// SIEM receivers the audit trail is forwarded to; empty: none.
    pub siem: Vec<Arc<dyn AuditSink>>,
}

/// Mints the signed one-click acknowledgement link of a cascade.
pub trait AckLinks: Send + Sync {
    /// The link for `key` in a message on `channel`.
    fn link(&self, key: &CascadeKey, channel: Channel, now: Ts) -> String;
}
