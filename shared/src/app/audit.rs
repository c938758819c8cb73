//! Audit entries and their hash chain. Each cascade's entries form a chain:
//! entry `n` holds the hash of entry `n-1` (`prev`), and its own `hash` is
//! SHA-256 over `prev` and the entry's canonical JSON (the entry serialized
//! with `hash` empty). Changing, removing, inserting or reordering any entry
//! breaks the chain at that point.

use crate::domain::{IncidentId, StakeholderId, Ts};
use crate::engine::{AuditRecord, CascadeKey, Route};
use crate::ports::CascadeRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry as stored and exported (JSON lines, stable field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub incident: IncidentId,
    pub stakeholder: StakeholderId,
    pub route: Route,
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at: Ts,
    /// The same instant, RFC 3339.
    pub time: String,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev: String,
    pub hash: String,
}

impl AuditEntry {
    pub fn key(&self) -> CascadeKey {
        CascadeKey {
            incident: self.incident.clone(),
            stakeholder: self.stakeholder.clone(),
            route: self.route,
        }
    }

    /// The hash this entry must carry, given its `prev`.
    pub fn compute_hash(&self) -> String {
        let mut body = self.clone();
        body.hash = String::new();
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(self.prev.as_bytes());
        h.update(b"\n");
        h.update(&json);
        hex::encode(h.finalize())
    }
}

/// Makes the next entry of `record`'s chain for `audit` at `now`, and the
/// record with its chain head moved on.
pub fn append(
    record: &CascadeRecord,
    next_cascade: crate::engine::Cascade,
    audit: &AuditRecord,
    now: Ts,
) -> (CascadeRecord, AuditEntry) {
    let key = &record.cascade.key;
    let mut entry = AuditEntry {
        incident: key.incident.clone(),
        stakeholder: key.stakeholder.clone(),
        route: key.route,
        seq: record.audit_seq,
        at: now,
        time: now.rfc3339(),
        record: audit.clone(),
        prev: record.audit_head.clone(),
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    let next = CascadeRecord {
        cascade: next_cascade,
        audit_seq: record.audit_seq + 1,
        audit_head: entry.hash.clone(),
        contacts: record.contacts.clone(),
        name: record.name.clone(),
        ack_code: record.ack_code.clone(),
        about: record.about.clone(),
        needs_review: record.needs_review,
    };
    (next, entry)
}

/// A break found by [`verify_chains`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based position of the entry in the input.
    pub line: usize,
    pub cascade: String,
    pub seq: u64,
    pub problem: String,
}

/// Checks every cascade's chain in `entries` (in input order): sequence
/// numbers from 0 without gaps, each `prev` the hash before it, each `hash`
/// correct. Returns the first break.
pub fn verify_chains<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<usize, ChainBreak> {
    use std::collections::HashMap;
    let mut heads: HashMap<CascadeKey, (u64, String)> = HashMap::new();
    let mut n = 0;
    for (i, e) in entries.into_iter().enumerate() {
        n += 1;
        let key = e.key();
        let brk = |problem: String| ChainBreak {
            line: i + 1,
            cascade: key.to_string(),
            seq: e.seq,
            problem,
        };
        let (want_seq, want_prev) = heads
            .get(&key)
            .map(|(s, h)| (s + 1, h.as_str()))
            .unwrap_or((0, GENESIS));
        if e.seq != want_seq {
            return Err(brk(format!(
                "sequence {} where {} was expected (entry missing, inserted or out of order)",
                e.seq, want_seq
            )));
        }
        if e.prev != want_prev {
            return Err(brk(
                "prev does not match the hash of the entry before it".into()
            ));
        }
        if e.compute_hash() != e.hash {
            return Err(brk(
                "hash does not match the entry's content (entry modified)".into(),
            ));
        }
        heads.insert(key, (e.seq, e.hash.clone()));
    }
    Ok(n)
}
