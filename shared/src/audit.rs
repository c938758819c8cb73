//! Audit entries and their hash chain. Each cascade's entries form a chain:
//! entry `n` holds the hash of entry `n-1` (`prev`), and its own `hash` is
//! SHA-256 over `prev` and the entry's canonical JSON (the entry serialized
//! with `hash` empty). Changing, removing, inserting or reordering any entry
//! breaks the chain at that point.
//!
//! Below the ports: stores hold these entries and seals, verifiers (`muster
//! audit verify`, the memory store's checks, drills) read them; making the
//! next entry of a cascade's record is the application's (`app::audit`).

use crate::domain::{ContactCheck, IncidentId, StakeholderId, Ts};
use crate::engine::{AuditRecord, CascadeKey, Route};
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
    /// On SEND_ACCEPTED: the address the message went to, encrypted under the
    /// stakeholder's data key (never plaintext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// On an escalation's SEND_ACCEPTED: every failure the message named, the
    /// cascade's own first.
    #[serde(default, skip_serializing_if = "<[StakeholderId]>::is_empty")]
    pub named: std::sync::Arc<[StakeholderId]>,
    /// On a cascade's first entry: the locale of the message template its
    /// person is sent (none: the default `messageTemplate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    pub prev: String,
    pub hash: String,
}

impl AuditEntry {
    pub fn key(&self) -> CascadeKey {
        CascadeKey {
            incident: self.incident.clone(),
            stakeholder: self.stakeholder.clone(),
            route: self.route.clone(),
        }
    }

    /// The hash this entry must carry, given its `prev`: SHA-256 over `prev`,
    /// a newline, and the entry's JSON with `hash` empty (serialized into a
    /// buffer kept per thread, then hashed in one pass).
    pub fn compute_hash(&self) -> String {
        let view = HashView {
            incident: &self.incident,
            stakeholder: &self.stakeholder,
            route: &self.route,
            seq: self.seq,
            at: self.at,
            record: &self.record,
            contact_check: self.contact_check,
            contact: self.contact.as_deref(),
            named: &self.named,
            locale: self.locale.as_deref(),
            prev: &self.prev,
            hash: "",
        };
        // Serialized into a reused buffer, then hashed in one pass.
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            buf.clear();
            buf.extend_from_slice(self.prev.as_bytes());
            buf.push(b'\n');
            // Serializing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &view);
            hex::encode(Sha256::digest(&buf[..]))
        })
    }
}

/// The entry's fields in the entry's order, borrowed: serializes exactly as
/// an `AuditEntry` whose `hash` is empty.
#[derive(Serialize)]
struct HashView<'a> {
    incident: &'a IncidentId,
    stakeholder: &'a StakeholderId,
    route: &'a Route,
    seq: u64,
    at: Ts,
    #[serde(flatten)]
    record: &'a AuditRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_check: Option<ContactCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<&'a str>,
    #[serde(skip_serializing_if = "<[StakeholderId]>::is_empty")]
    named: &'a [StakeholderId],
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
    prev: &'a str,
    hash: &'static str,
}

thread_local! {
    static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
}

/// Who signs seals, as a verifier needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerInfo {
    /// `ed25519` or `ecdsa-p256-sha256`.
    pub algorithm: String,
    pub key_id: String,
    /// The public key a verifier checks with (hex).
    pub public_key: String,
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

/// A signed statement of every chain head of an incident at one moment:
/// written when the incident closes and periodically while it is open. With
/// it, a verifier detects what a hash chain alone cannot: entries removed
/// from the end of a chain, or a whole chain removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub incident: IncidentId,
    /// Milliseconds since the Unix epoch.
    pub at: Ts,
    pub chains: u64,
    pub entries: u64,
    /// SHA-256 over the sorted lines `route|stakeholder|seq|hash`.
    pub heads_digest: String,
    pub algorithm: String,
    pub key_id: String,
    pub public_key: String,
    pub signature: String,
}

impl Seal {
    /// The seal of `digest` at `at`, by `signer`, not signed yet.
    pub fn unsigned(incident: IncidentId, at: Ts, digest: HeadsDigest, signer: SignerInfo) -> Seal {
        Seal {
            incident,
            at,
            chains: digest.chains,
            entries: digest.entries,
            heads_digest: digest.digest,
            algorithm: signer.algorithm,
            key_id: signer.key_id,
            public_key: signer.public_key,
            signature: String::new(),
        }
    }

    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "muster-seal-v1|{}|{}|{}|{}|{}",
            self.incident, self.at.0, self.chains, self.entries, self.heads_digest
        )
        .into_bytes()
    }
}

/// The head of one cascade's chain: its last entry's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub route: Route,
    pub stakeholder: StakeholderId,
    pub seq: u64,
    pub hash: String,
}

/// What a seal states about an incident's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadsDigest {
    pub chains: u64,
    pub entries: u64,
    /// SHA-256 over the sorted lines `route|stakeholder|seq|hash`.
    pub digest: String,
}

/// The heads digest of an incident's entries.
pub fn heads_digest<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> HeadsDigest {
    let mut heads: std::collections::BTreeMap<(String, &StakeholderId), (u64, &str)> =
        Default::default();
    for e in entries {
        let slot = heads
            .entry((e.route.encode(), &e.stakeholder))
            .or_insert((0, ""));
        if e.seq >= slot.0 {
            *slot = (e.seq, &e.hash);
        }
    }
    digest_heads(
        heads
            .into_iter()
            .map(|((r, w), (seq, h))| (r, w, seq, h))
            .collect(),
    )
}

/// The same digest from the chain heads the cascade records hold (no need
/// to read the entries).
pub fn heads_digest_of(heads: &[ChainHead]) -> HeadsDigest {
    digest_heads(
        heads
            .iter()
            .map(|h| (h.route.encode(), &h.stakeholder, h.seq, h.hash.as_str()))
            .collect(),
    )
}

/// SHA-256 over the sorted lines `route|stakeholder|seq|hash`.
fn digest_heads(mut heads: Vec<(String, &StakeholderId, u64, &str)>) -> HeadsDigest {
    heads.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let entries = heads.iter().map(|h| h.2 + 1).sum();
    let mut h = Sha256::new();
    for (route, who, seq, hash) in &heads {
        h.update(format!("{route}|{who}|{seq}|{hash}\n").as_bytes());
    }
    HeadsDigest {
        chains: heads.len() as u64,
        entries,
        digest: hex::encode(h.finalize()),
    }
}

/// Checks a seal's signature against the public key it names: `ed25519`
/// (raw 32-byte key, 64-byte signature) or `ecdsa-p256-sha256` (DER
/// SubjectPublicKeyInfo key, DER signature over SHA-256 of the message, as
/// KMS signs with ECDSA_SHA_256).
pub fn verify_seal_signature(seal: &Seal) -> Result<(), String> {
    match seal.algorithm.as_str() {
        "ed25519" => verify_ed25519(seal),
        "ecdsa-p256-sha256" => verify_ecdsa_p256(seal),
        other => Err(format!("unsupported seal algorithm {other:?}")),
    }
}

fn verify_ed25519(seal: &Seal) -> Result<(), String> {
    let key: [u8; 32] = hex::decode(&seal.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("the public key is not 32 bytes of hex")?;
    let sig: [u8; 64] = hex::decode(&seal.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or("the signature is not 64 bytes of hex")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| "the public key is not a valid Ed25519 key")?;
    key.verify_strict(&seal.message(), &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| "the signature does not match".to_string())
}

fn verify_ecdsa_p256(seal: &Seal) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};
    use p256::pkcs8::DecodePublicKey;
    let key = hex::decode(&seal.public_key).map_err(|_| "the public key is not hex")?;
    let key = VerifyingKey::from_public_key_der(&key)
        .map_err(|_| "the public key is not a P-256 SubjectPublicKeyInfo (DER)")?;
    let sig = hex::decode(&seal.signature).map_err(|_| "the signature is not hex")?;
    let sig = DerSignature::from_bytes(&sig).map_err(|_| "the signature is not DER ECDSA")?;
    key.verify(&seal.message(), &sig)
        .map_err(|_| "the signature does not match".to_string())
}

/// A line of an exported trail: an entry, or a seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    Seal { seal: Seal },
    Entry(Box<AuditEntry>),
}

impl ExportLine {
    pub fn incident(&self) -> &IncidentId {
        match self {
            ExportLine::Seal { seal } => &seal.incident,
            ExportLine::Entry(e) => &e.incident,
        }
    }

    /// The time the line records.
    pub fn at(&self) -> Ts {
        match self {
            ExportLine::Seal { seal } => seal.at,
            ExportLine::Entry(e) => e.at,
        }
    }

    /// The entry's kind (`CASCADE_STARTED`...), or `SEAL`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExportLine::Seal { .. } => "SEAL",
            ExportLine::Entry(e) => e.record.kind.as_str(),
        }
    }

    /// The key a receiver deduplicates on, the same however often the line
    /// is delivered: an entry's own hash; for a seal, SHA-256 of the
    /// statement it signs (incident, time, chains, entries, heads digest).
    pub fn dedup_key(&self) -> String {
        match self {
            ExportLine::Seal { seal } => hex::encode(Sha256::digest(seal.message())),
            ExportLine::Entry(e) => e.hash.clone(),
        }
    }

    /// The line as exported (`muster audit verify` reads it).
    pub fn to_json(&self) -> String {
        // Plain structs of strings and numbers: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The result of verifying an exported trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub entries: usize,
    pub chains: u64,
    /// Incidents whose latest seal matched the trail.
    pub sealed: Vec<IncidentId>,
    /// Incidents with entries but no seal.
    pub unsealed: Vec<IncidentId>,
}

/// Verifies an exported trail: every chain, then, per incident, the latest
/// seal: its signature, and that it covers exactly the chain heads present
/// (so removing entries from the end of a chain, or a whole chain, fails).
pub fn verify_export(lines: &[ExportLine]) -> Result<Verified, ChainBreak> {
    let entries: Vec<&AuditEntry> = lines
        .iter()
        .filter_map(|l| {
            if let ExportLine::Entry(e) = l {
                Some(e.as_ref())
            } else {
                None
            }
        })
        .collect();
    let n = verify_chains(entries.iter().copied())?;
    let mut by_incident: std::collections::BTreeMap<&IncidentId, Vec<&AuditEntry>> =
        Default::default();
    for e in &entries {
        by_incident.entry(&e.incident).or_default().push(e);
    }
    let mut latest: std::collections::BTreeMap<&IncidentId, (usize, &Seal)> = Default::default();
    for (i, l) in lines.iter().enumerate() {
        if let ExportLine::Seal { seal } = l
            && latest
                .get(&seal.incident)
                .is_none_or(|(_, s)| s.at <= seal.at)
        {
            latest.insert(&seal.incident, (i + 1, seal));
        }
    }
    let mut out = Verified {
        entries: n,
        chains: 0,
        sealed: vec![],
        unsealed: vec![],
    };
    for (incident, es) in &by_incident {
        let HeadsDigest {
            chains,
            entries: count,
            digest,
        } = heads_digest(es.iter().copied());
        out.chains += chains;
        let Some((line, seal)) = latest.get(incident) else {
            out.unsealed.push((*incident).clone());
            continue;
        };
        let brk = |problem: String| ChainBreak {
            line: *line,
            cascade: incident.to_string(),
            seq: 0,
            problem,
        };
        verify_seal_signature(seal).map_err(|p| brk(format!("seal: {p}")))?;
        if seal.heads_digest != digest || seal.chains != chains || seal.entries != count {
            return Err(brk(format!(
                "the seal covers {} entries in {} chains, the trail has {count} in {chains}, or their heads differ (entries removed or added after sealing)",
                seal.entries, seal.chains
            )));
        }
        out.sealed.push((*incident).clone());
    }
    Ok(out)
}

#[cfg(test)]
mod seal_tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    /// DER SubjectPublicKeyInfo of a P-256 key, as KMS `GetPublicKey` gives it.
    fn spki_hex(key: &SigningKey) -> String {
        const PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
        format!(
            "{PREFIX}{}",
            hex::encode(key.verifying_key().to_encoded_point(false).as_bytes())
        )
    }

    fn ecdsa_seal() -> (SigningKey, Seal) {
        let key = SigningKey::from_bytes(&[7u8; 32].into()).unwrap_or_else(|e| panic!("{e}"));
        let mut seal = Seal {
            incident: IncidentId::parse("INC-EC").unwrap_or_else(|e| panic!("{e}")),
            at: Ts(1_700_000_000_000),
            chains: 2,
            entries: 5,
            heads_digest: "ab".repeat(32),
            algorithm: "ecdsa-p256-sha256".into(),
            key_id: "arn:aws:kms:eu-west-1:123456789012:key/test".into(),
            public_key: spki_hex(&key),
            signature: String::new(),
        };
        let sig: Signature = key.sign(&seal.message());
        seal.signature = hex::encode(sig.to_der().as_bytes());
        (key, seal)
    }

    #[test]
    fn ecdsa_p256_seals_verify_and_tampering_fails() {
        let (_, seal) = ecdsa_seal();
        assert_eq!(verify_seal_signature(&seal), Ok(()));
        let mut more = seal.clone();
        more.entries = 6;
        assert_eq!(
            verify_seal_signature(&more),
            Err("the signature does not match".to_string())
        );
        let mut other_key = seal.clone();
        let stranger = SigningKey::from_bytes(&[9u8; 32].into()).unwrap_or_else(|e| panic!("{e}"));
        other_key.public_key = spki_hex(&stranger);
        assert!(verify_seal_signature(&other_key).is_err());
        let mut raw_sig = seal.clone();
        raw_sig.signature = "00".repeat(64);
        assert!(verify_seal_signature(&raw_sig).is_err());
        let mut unknown = seal;
        unknown.algorithm = "rsa".into();
        assert!(verify_seal_signature(&unknown).is_err());
    }
}
