//! Incident and cascade store in memory, with DynamoDB's semantics: creates
//! are conditional on absence, transitions on the stored version, and a
//! transition and its audit entry land together or not at all. A due-time
//! index plays the part of the sparse GSI the sweep reads.

use super::lock;
use crate::audit::{AuditEntry, ChainHead, ExportLine, Seal};
use crate::domain::{Channel, Incident, IncidentId, Millis, PhoneNumber, StakeholderId, Ts};
use crate::engine::{CascadeKey, ChannelWaits, ReceiptStatus, Tally};
use crate::error::{Error, Result};
use crate::ports::{
    CascadeRecord, CascadeStore, ContactEntry, ContactLedger, HELD_RECEIPTS, IncidentStore,
    NumberIndex, Page, Reservation, SealStore, SendClaim,
};
use async_trait::async_trait;
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Mutex;

/// Send claims kept before expired ones are dropped (then at each power
/// of two).
const CLAIMS_PRUNE_AT: usize = 1 << 14;

/// Provider message ids with held receipts kept at most (receipts for
/// messages never sent are held too, so the set is bounded: the oldest
/// is dropped first).
const HELD_IDS: usize = 1 << 16;

#[derive(Default)]
struct Inner {
    incidents: HashMap<IncidentId, Incident>,
    cascades: HashMap<CascadeKey, CascadeRecord>,
    order: HashMap<IncidentId, Vec<CascadeKey>>,
    audit: HashMap<IncidentId, Vec<AuditEntry>>,
    due: BTreeSet<(Ts, CascadeKey)>,
    refs: HashMap<String, (CascadeKey, u32)>,
    /// Receipts that came before their message's reference, and the ids in
    /// the order they were first held (the oldest is dropped when full).
    held: HashMap<String, Vec<ReceiptStatus>>,
    held_order: std::collections::VecDeque<String>,
    /// Send claims: (cascade, attempt, phase start) -> lease end.
    claims: HashMap<(CascadeKey, u32, Ts), Ts>,
    seals: HashMap<IncidentId, Vec<Seal>>,
    by_person: HashMap<(IncidentId, StakeholderId), Vec<CascadeKey>>,
    /// Per person told, their escalation cascades not yet ended, oldest first.
    open_escalations: HashMap<(IncidentId, StakeholderId), BTreeSet<(Ts, CascadeKey)>>,
    contacts: HashMap<(IncidentId, StakeholderId, Channel), ContactEntry>,
    tallies: HashMap<IncidentId, Tally>,
    /// Every entry and seal in the order written (the SIEM export's log).
    written: Vec<Written>,
}

/// Where one written line is kept: its incident and index.
enum Written {
    Entry(IncidentId, usize),
    Seal(IncidentId, usize),
}

impl Inner {
    fn record_entry(&mut self, entry: &AuditEntry) {
        let entries = self.audit.entry(entry.incident.clone()).or_default();
        entries.push(entry.clone());
        let at = entries.len() - 1;
        self.written
            .push(Written::Entry(entry.incident.clone(), at));
    }
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every incident's tally as kept (drill reports check it against a
    /// recount).
    pub fn tallies(&self) -> Vec<(IncidentId, Tally)> {
        let g = lock(&self.inner);
        g.tallies.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Every cascade of every incident (drill reports).
    pub fn all_cascades(&self) -> Vec<CascadeRecord> {
        let g = lock(&self.inner);
        let mut ids: Vec<_> = g.order.keys().cloned().collect();
        ids.sort();
        ids.iter()
            .flat_map(|i| g.order[i].iter().map(|k| g.cascades[k].clone()))
            .collect()
    }

    /// Every cascade of every incident, borrowed for `f` (drill reports at
    /// any size, without a copy).
    pub fn with_cascades<R>(&self, f: impl FnOnce(&[&CascadeRecord]) -> R) -> R {
        self.with_all(|_, records| f(records))
    }

    /// Every audit entry of every incident (in write order per incident)
    /// and every cascade, borrowed for `f` under one lock.
    pub fn with_all<R>(&self, f: impl FnOnce(&[&AuditEntry], &[&CascadeRecord]) -> R) -> R {
        let g = lock(&self.inner);
        let mut ids: Vec<_> = g.order.keys().collect();
        ids.sort();
        let records: Vec<&CascadeRecord> = ids
            .iter()
            .flat_map(|i| g.order[*i].iter().map(|k| &g.cascades[k]))
            .collect();
        let mut ids: Vec<_> = g.audit.keys().collect();
        ids.sort();
        let entries: Vec<&AuditEntry> = ids.iter().flat_map(|id| g.audit[*id].iter()).collect();
        f(&entries, &records)
    }

    /// Visits every audit entry of every incident, in write order per incident.
    pub fn for_each_audit(&self, mut f: impl FnMut(&AuditEntry)) {
        let g = lock(&self.inner);
        let mut ids: Vec<_> = g.audit.keys().cloned().collect();
        ids.sort();
        for id in ids {
            g.audit[&id].iter().for_each(&mut f);
        }
    }

    /// Verifies every incident's audit chains in place.
    pub fn verify_audit(&self) -> Result<usize, crate::audit::ChainBreak> {
        let g = lock(&self.inner);
        let mut ids: Vec<_> = g.audit.keys().cloned().collect();
        ids.sort();
        crate::audit::verify_chains(ids.iter().flat_map(|id| g.audit[id].iter()))
    }

    /// Every seal of every incident.
    pub fn all_seals(&self) -> Vec<Seal> {
        let g = lock(&self.inner);
        let mut ids: Vec<_> = g.seals.keys().cloned().collect();
        ids.sort();
        ids.iter().flat_map(|i| g.seals[i].clone()).collect()
    }

    /// Every incident, in id order.
    pub fn all_incidents(&self) -> Vec<Incident> {
        let g = lock(&self.inner);
        let mut v: Vec<Incident> = g.incidents.values().cloned().collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }

    /// Up to `max` entries and seals in the order they were written, from
    /// position `from` of the log, and the position after them (the SIEM
    /// export's cursor).
    pub fn written_since(&self, from: usize, max: usize) -> (Vec<ExportLine>, usize) {
        let g = lock(&self.inner);
        let end = g.written.len().min(from.saturating_add(max));
        let lines = g
            .written
            .get(from..end)
            .unwrap_or_default()
            .iter()
            .filter_map(|w| match w {
                Written::Entry(i, n) => g
                    .audit
                    .get(i)?
                    .get(*n)
                    .cloned()
                    .map(|e| ExportLine::Entry(Box::new(e))),
                Written::Seal(i, n) => g
                    .seals
                    .get(i)?
                    .get(*n)
                    .cloned()
                    .map(|seal| ExportLine::Seal { seal }),
            })
            .collect();
        (lines, end.max(from))
    }

    pub fn audit_len(&self) -> usize {
        lock(&self.inner).audit.values().map(Vec::len).sum()
    }
}

fn cursor_offset(cursor: Option<String>) -> Result<usize> {
    match cursor {
        None => Ok(0),
        Some(c) => c
            .parse()
            .map_err(|_| Error::invalid("cursor", "not a cursor this store issued")),
    }
}

#[async_trait]
impl IncidentStore for MemoryStore {
    async fn open_incidents(&self) -> Result<Vec<IncidentId>> {
        let g = lock(&self.inner);
        let mut v: Vec<IncidentId> = g
            .incidents
            .values()
            .filter(|i| i.status == crate::domain::IncidentStatus::Open)
            .map(|i| i.id().clone())
            .collect();
        v.sort();
        Ok(v)
    }

    async fn recent_incidents(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<crate::ports::Page<Incident>> {
        use crate::ports::IncidentCursor;
        let after = cursor.as_deref().map(IncidentCursor::decode).transpose()?;
        let all: Vec<Incident> = lock(&self.inner).incidents.values().cloned().collect();
        Ok(IncidentCursor::page(all, after.as_ref(), limit))
    }

    async fn create_incident(&self, incident: &Incident) -> Result<()> {
        let mut g = lock(&self.inner);
        if g.incidents.contains_key(incident.id()) {
            return Err(Error::Conflict(format!(
                "incident {} exists",
                incident.id()
            )));
        }
        g.incidents.insert(incident.id().clone(), incident.clone());
        Ok(())
    }

    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        Ok(lock(&self.inner).incidents.get(id).cloned())
    }

    async fn update_incident(&self, incident: &Incident, expected_version: u64) -> Result<()> {
        let mut g = lock(&self.inner);
        match g.incidents.get_mut(incident.id()) {
            Some(cur) if cur.version == expected_version => {
                *cur = incident.clone();
                Ok(())
            }
            Some(cur) => Err(Error::Conflict(format!(
                "incident {} is at version {}, not {expected_version}",
                incident.id(),
                cur.version
            ))),
            None => Err(Error::NotFound(format!("incident {}", incident.id()))),
        }
    }
}

#[async_trait]
impl CascadeStore for MemoryStore {
    async fn create_cascade(&self, record: &CascadeRecord, audit: &AuditEntry) -> Result<()> {
        let mut g = lock(&self.inner);
        let key = &record.cascade.key;
        if g.cascades.contains_key(key) {
            return Err(Error::Conflict(format!("cascade {key} exists")));
        }
        if let Some(due) = record.cascade.next_due() {
            g.due.insert((due, key.clone()));
        }
        g.order
            .entry(key.incident.clone())
            .or_default()
            .push(key.clone());
        g.by_person
            .entry((key.incident.clone(), key.stakeholder.clone()))
            .or_default()
            .push(key.clone());
        if key.route.is_escalation() && !record.cascade.status.is_terminal() {
            g.open_escalations
                .entry((key.incident.clone(), key.stakeholder.clone()))
                .or_default()
                .insert((record.cascade.created_at, key.clone()));
        }
        g.record_entry(audit);
        g.tallies
            .entry(key.incident.clone())
            .or_default()
            .add(&Tally::of(&record.cascade, record.needs_review));
        g.cascades.insert(key.clone(), record.clone());
        Ok(())
    }

    async fn get_cascade(&self, key: &CascadeKey) -> Result<Option<CascadeRecord>> {
        Ok(lock(&self.inner).cascades.get(key).cloned())
    }

    async fn transition(
        &self,
        before: &CascadeRecord,
        record: &CascadeRecord,
        audit: &AuditEntry,
    ) -> Result<()> {
        let expected_version = before.cascade.version;
        let mut guard = lock(&self.inner);
        let g = &mut *guard;
        let key = &record.cascade.key;
        let Some(cur) = g.cascades.get_mut(key) else {
            return Err(Error::NotFound(format!("cascade {key}")));
        };
        if cur.cascade.version != expected_version {
            return Err(Error::Conflict(format!(
                "cascade {key} is at version {}, not {expected_version}",
                cur.cascade.version
            )));
        }
        let (old_due, new_due) = (cur.cascade.next_due(), record.cascade.next_due());
        let ended = !cur.cascade.status.is_terminal() && record.cascade.status.is_terminal();
        let change = Tally::change(
            Some((&cur.cascade, cur.needs_review)),
            (&record.cascade, record.needs_review),
        );
        *cur = record.clone();
        if !change.is_zero() {
            g.tallies
                .entry(key.incident.clone())
                .or_default()
                .add(&change);
        }
        if ended
            && key.route.is_escalation()
            && let Some(open) = g
                .open_escalations
                .get_mut(&(key.incident.clone(), key.stakeholder.clone()))
        {
            open.remove(&(record.cascade.created_at, key.clone()));
        }
        if old_due != new_due {
            if let Some(d) = old_due {
                g.due.remove(&(d, key.clone()));
            }
            if let Some(d) = new_due {
                g.due.insert((d, key.clone()));
            }
        }
        g.record_entry(audit);
        Ok(())
    }

    async fn tally(&self, incident: &IncidentId) -> Result<Tally> {
        Ok(lock(&self.inner)
            .tallies
            .get(incident)
            .copied()
            .unwrap_or_default())
    }

    async fn list_cascades(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeRecord>> {
        let from = cursor_offset(cursor)?;
        let g = lock(&self.inner);
        let keys = g.order.get(incident).map(Vec::as_slice).unwrap_or_default();
        let items: Vec<_> = keys
            .iter()
            .skip(from)
            .take(limit)
            .filter_map(|k| g.cascades.get(k).cloned())
            .collect();
        let end = from.saturating_add(limit);
        Ok(Page {
            items,
            next: (end < keys.len()).then(|| end.to_string()),
        })
    }

    async fn overdue(
        &self,
        due_before: Ts,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<CascadeKey>> {
        let g = lock(&self.inner);
        let start = match cursor {
            None => Bound::Unbounded,
            Some(c) => {
                let (ts, key): (Ts, CascadeKey) = serde_json::from_str(&c)
                    .map_err(|_| Error::invalid("cursor", "not a cursor this store issued"))?;
                Bound::Excluded((ts, key))
            }
        };
        let mut items = Vec::new();
        let mut last = None;
        for (ts, key) in g.due.range((start, Bound::Unbounded)) {
            if *ts > due_before || items.len() == limit {
                break;
            }
            items.push(key.clone());
            last = Some((*ts, key.clone()));
        }
        let next = if items.len() == limit {
            last.and_then(|l| serde_json::to_string(&l).ok())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn person_cascades(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
    ) -> Result<Vec<CascadeRecord>> {
        let g = lock(&self.inner);
        let keys = g
            .by_person
            .get(&(incident.clone(), stakeholder.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(keys
            .iter()
            .filter_map(|k| g.cascades.get(k).cloned())
            .collect())
    }

    async fn open_escalations(
        &self,
        incident: &IncidentId,
        stakeholder: &StakeholderId,
        limit: usize,
    ) -> Result<Vec<crate::ports::OpenEscalation>> {
        let g = lock(&self.inner);
        let Some(open) = g
            .open_escalations
            .get(&(incident.clone(), stakeholder.clone()))
        else {
            return Ok(Vec::new());
        };
        Ok(open
            .iter()
            .take(limit)
            .filter_map(|(_, k)| g.cascades.get(k).map(crate::ports::OpenEscalation::of))
            .collect())
    }

    async fn audit_trail(&self, incident: &IncidentId) -> Result<Vec<AuditEntry>> {
        Ok(lock(&self.inner)
            .audit
            .get(incident)
            .cloned()
            .unwrap_or_default())
    }

    async fn audit_page(
        &self,
        incident: &IncidentId,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<AuditEntry>> {
        let from = cursor_offset(cursor)?;
        let g = lock(&self.inner);
        let all = g.audit.get(incident).map(Vec::as_slice).unwrap_or_default();
        let end = from.saturating_add(limit).min(all.len());
        Ok(Page {
            items: all.get(from.min(end)..end).unwrap_or_default().to_vec(),
            next: (end < all.len()).then(|| end.to_string()),
        })
    }

    async fn put_message_ref(
        &self,
        provider_message_id: &str,
        key: &CascadeKey,
        attempt: u32,
    ) -> Result<Vec<ReceiptStatus>> {
        let mut g = lock(&self.inner);
        g.refs
            .insert(provider_message_id.to_string(), (key.clone(), attempt));
        Ok(g.held.remove(provider_message_id).unwrap_or_default())
    }

    async fn hold_receipt(
        &self,
        provider_message_id: &str,
        status: ReceiptStatus,
    ) -> Result<Option<(CascadeKey, u32)>> {
        let mut g = lock(&self.inner);
        if let Some(r) = g.refs.get(provider_message_id) {
            return Ok(Some(r.clone()));
        }
        if !g.held.contains_key(provider_message_id) {
            // Ids whose reference came were removed from the map already.
            while g.held.len() >= HELD_IDS || g.held_order.len() >= 2 * HELD_IDS {
                let Some(old) = g.held_order.pop_front() else {
                    break;
                };
                g.held.remove(&old);
            }
            g.held_order.push_back(provider_message_id.to_string());
        }
        let held = g.held.entry(provider_message_id.to_string()).or_default();
        if held.len() < HELD_RECEIPTS {
            held.push(status);
        }
        Ok(None)
    }

    async fn get_message_ref(
        &self,
        provider_message_id: &str,
    ) -> Result<Option<(CascadeKey, u32)>> {
        Ok(lock(&self.inner).refs.get(provider_message_id).cloned())
    }

    async fn claim_send(
        &self,
        record: &CascadeRecord,
        attempt: u32,
        phase_since: Ts,
        now: Ts,
        lease: Millis,
    ) -> Result<SendClaim> {
        let key = &record.cascade.key;
        let mut g = lock(&self.inner);
        if g.cascades.get(key).map(|r| r.cascade.version) != Some(record.cascade.version) {
            return Ok(SendClaim::Changed);
        }
        // Claims past their lease say nothing any more: dropped now and then
        // so the map holds about the sends of the last lease.
        if g.claims.len() >= CLAIMS_PRUNE_AT && g.claims.len().is_power_of_two() {
            g.claims.retain(|_, until| *until > now);
        }
        let until = g
            .claims
            .entry((key.clone(), attempt, phase_since))
            .or_insert(Ts(0));
        if *until > now {
            return Ok(SendClaim::Held);
        }
        *until = now.plus(lease);
        Ok(SendClaim::Claimed)
    }
}

#[async_trait]
impl NumberIndex for MemoryStore {
    async fn open_cascades_for_number(&self, number: &PhoneNumber) -> Result<Vec<CascadeRecord>> {
        let g = lock(&self.inner);
        let mut out: Vec<CascadeRecord> = g
            .cascades
            .values()
            .filter(|r| !r.cascade.status.is_terminal())
            .filter(|r| {
                r.contacts.phone.as_ref() == Some(number) || r.contacts.sms.as_ref() == Some(number)
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (a.cascade.created_at, &a.cascade.key).cmp(&(b.cascade.created_at, &b.cascade.key))
        });
        Ok(out)
    }
}

#[async_trait]
impl ContactLedger for MemoryStore {
    async fn reserve(
        &self,
        incident: &IncidentId,
        person: &StakeholderId,
        channel: Channel,
        holder: &CascadeKey,
        now: Ts,
        hold: Millis,
    ) -> Result<Reservation> {
        let mut g = lock(&self.inner);
        let slot = (incident.clone(), person.clone(), channel);
        if g.contacts.get(&slot).is_none_or(|e| e.admits(holder, now)) {
            g.contacts.insert(
                slot,
                ContactEntry {
                    holder: holder.clone(),
                    until: now.plus(hold),
                },
            );
            return Ok(Reservation::Granted);
        }
        let mut waits = ChannelWaits::default();
        for c in Channel::ALL {
            if let Some(e) = g.contacts.get(&(incident.clone(), person.clone(), c))
                && !e.admits(holder, now)
            {
                waits.free_at[c.index()] = Some(e.until);
            }
        }
        Ok(Reservation::Busy(waits))
    }
}

#[async_trait]
impl SealStore for MemoryStore {
    async fn chain_heads(&self, incident: &IncidentId) -> Result<Vec<ChainHead>> {
        let g = lock(&self.inner);
        let keys = g.order.get(incident).map(Vec::as_slice).unwrap_or_default();
        Ok(keys
            .iter()
            .filter_map(|k| g.cascades.get(k))
            .filter(|r| r.audit_seq > 0)
            .map(|r| ChainHead {
                route: r.cascade.key.route.clone(),
                stakeholder: r.cascade.key.stakeholder.clone(),
                seq: r.audit_seq - 1,
                hash: r.audit_head.clone(),
            })
            .collect())
    }

    async fn put_seal(&self, seal: &Seal) -> Result<()> {
        let mut g = lock(&self.inner);
        let seals = g.seals.entry(seal.incident.clone()).or_default();
        seals.push(seal.clone());
        let at = seals.len() - 1;
        g.written.push(Written::Seal(seal.incident.clone(), at));
        Ok(())
    }

    async fn seals(&self, incident: &IncidentId) -> Result<Vec<Seal>> {
        Ok(lock(&self.inner)
            .seals
            .get(incident)
            .cloned()
            .unwrap_or_default())
    }
}
