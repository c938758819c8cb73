//! The application's side of the audit trail: the next entry of a
//! cascade's chain, made from its record (entries, hashing and
//! verification are `crate::audit`).

use crate::audit::AuditEntry;
use crate::domain::{ContactCheck, StakeholderId, Ts};
use crate::engine::AuditRecord;
use crate::ports::CascadeRecord;

/// What the application adds to an entry besides the engine's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    pub contact_check: Option<ContactCheck>,
    /// The address a message went to, already encrypted.
    pub contact: Option<String>,
    /// An escalation message: every failure it named, the cascade's own
    /// first (kept on the record, by attempt, for acknowledgements).
    pub named: Vec<StakeholderId>,
    /// A cascade's first entry: the locale of the template its person is sent.
    pub locale: Option<String>,
}

/// Makes the next entry of `record`'s chain for `audit` at `now`, and the
/// record with its chain head moved on.
pub fn append(
    record: &CascadeRecord,
    next_cascade: crate::engine::Cascade,
    audit: &AuditRecord,
    now: Ts,
    extras: Extras,
) -> (CascadeRecord, AuditEntry) {
    let Extras {
        contact_check,
        contact,
        named,
        locale,
    } = extras;
    let key = &record.cascade.key;
    let mut entry = AuditEntry {
        incident: key.incident.clone(),
        stakeholder: key.stakeholder.clone(),
        route: key.route.clone(),
        seq: record.audit_seq,
        at: now,
        record: audit.clone(),
        contact_check,
        contact,
        named: named.into(),
        locale,
        prev: record.audit_head.clone(),
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    let mut bundled = record.named.clone();
    if let (Some(attempt), [_own, others @ ..]) = (audit.attempt, &entry.named[..])
        && !others.is_empty()
    {
        bundled.push(crate::ports::Named {
            attempt,
            about: others.into(),
        });
    }
    let next = CascadeRecord {
        cascade: next_cascade,
        audit_seq: record.audit_seq + 1,
        audit_head: entry.hash.clone(),
        contacts: record.contacts.clone(),
        name: record.name.clone(),
        locale: record.locale.clone(),
        ack_code: record.ack_code.clone(),
        escalation: record.escalation.clone(),
        named: bundled,
        needs_review: record.needs_review,
        masked: record.masked.clone(),
    };
    (next, entry)
}
