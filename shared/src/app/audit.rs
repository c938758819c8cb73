//! Audit entries and their hash chain. Each cascade's entries form a chain:
//! entry `n` holds the hash of entry `n-1` (`prev`), and its own `hash` is
//! SHA-256 over `prev` and the entry's canonical JSON (the entry serialized
//! with `hash` empty). Changing, removing, inserting or reordering any entry
//! breaks the chain at that point.

use super::ContactCheck;
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
    #[serde(flatten)]
    pub record: AuditRecord,
    /// On a cascade's first entry: what the live contact lookup said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_check: Option<ContactCheck>,
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

    /// The hash this entry must carry, given its `prev`: SHA-256 over `prev`,
    /// a newline, and the entry's JSON with `hash` empty (streamed into the
    /// digest, never buffered).
    pub fn compute_hash(&self) -> String {
        let view = HashView {
            incident: &self.incident,
            stakeholder: &self.stakeholder,
            route: self.route,
            seq: self.seq,
            at: self.at,
            record: &self.record,
            contact_check: self.contact_check,
            prev: &self.prev,
            hash: "",
        };
        let mut w = DigestWriter(Sha256::new());
        w.0.update(self.prev.as_bytes());
        w.0.update(b"\n");
        // Serializing plain data into an infallible writer cannot fail.
        let _ = serde_json::to_writer(&mut w, &view);
        hex::encode(w.0.finalize())
    }
}

/// The entry's fields in the entry's order, borrowed: serializes exactly as
/// an `AuditEntry` whose `hash` is empty.
#[derive(Serialize)]
struct HashView<'a> {
    incident: &'a IncidentId,
    stakeholder: &'a StakeholderId,
    route: Route,
    seq: u64,
    at: Ts,
    #[serde(flatten)]
    record: &'a AuditRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_check: Option<ContactCheck>,
    prev: &'a str,
    hash: &'static str,
}

struct DigestWriter(Sha256);

impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Makes the next entry of `record`'s chain for `audit` at `now`, and the
/// record with its chain head moved on.
pub fn append(
    record: &CascadeRecord,
    next_cascade: crate::engine::Cascade,
    audit: &AuditRecord,
    now: Ts,
    contact_check: Option<ContactCheck>,
) -> (CascadeRecord, AuditEntry) {
    let key = &record.cascade.key;
    let mut entry = AuditEntry {
        incident: key.incident.clone(),
        stakeholder: key.stakeholder.clone(),
        route: key.route,
        seq: record.audit_seq,
        at: now,
        record: audit.clone(),
        contact_check,
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
    let mut heads: rustc_hash::FxHashMap<CascadeKey, (u64, String)> = Default::default();
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
